"""The null control the paper lacks: the same attribution along random directions instead of the probe.

The four-group shares of :mod:`~dpo_toxicity.attribution` answer "how does the reduction along ``ŵ`` split
between TP, TN, AP and AN neurons?". They do not show that anything about ``ŵ`` matters: if DPO shrinks
``|m̄_i|`` for most neurons, whatever their alignment, then *any* direction sees reductions from neurons that
write positively along it and activate less (its "TP-") and from neurons that write negatively and activate
less negatively (its "AN-"), and shares much like the probe's. A quick trial on SmolLM2-135M found exactly
that: 50 random unit directions gave shares of 30/19/19/32 % against the probe's 32.5/18.5/16.6/32.4 %, while
the *net* reduction along the probe (+14.0) stood about 3 SD above the random directions' (−1.2 ± 5.0).

So every statistic is recomputed for ``k`` directions, each one defining its own groups (by the sign of the
cosine with *that* direction), and the probe's value is placed in that null distribution (z-score and
empirical percentile). Random unit directions are Gaussian vectors normalised, which is uniform on the sphere;
:func:`orthogonal_direction` gives a direction with no component along the probe.

The computation is vectorised over neurons and directions: per chunk of a layer's neurons, one
``[neurons, d_model] × [d_model, k]`` product per model, then float64 sums.

Example::

    null = null_shares(base, dpo, values_base, values_dpo, random_directions(200, d_model, seed=0))
    null_summary(group_shares(table), null)    # observed, null mean, SD, z, percentile per statistic
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import torch
from scipy import stats

from .attribution import GROUPS, GroupShares, NeuronActivations, alignment_chunks, group_index, unit_directions

STATISTICS = ("share_tp", "share_tn", "share_ap", "share_an", "net", "positive_total", "net_over_positive_total")


def random_directions(count: int, d_model: int, seed: int = 0) -> torch.Tensor:
    """``count`` unit vectors drawn uniformly on the sphere of ``R^d_model``: ``[count, d_model]`` float64."""
    generator = torch.Generator().manual_seed(seed)
    return unit_directions(torch.randn(count, d_model, generator=generator, dtype=torch.float64))


def orthogonal_direction(direction: torch.Tensor, seed: int = 0) -> torch.Tensor:
    """A random unit vector orthogonal to ``direction``: ``[d_model]`` float64."""
    unit = unit_directions(direction)[0]
    draw = random_directions(1, unit.shape[0], seed)[0]
    return unit_directions(draw - (draw @ unit) * unit)[0]


def null_shares(
    base: NeuronActivations,
    dpo: NeuronActivations,
    value_vectors_base: torch.Tensor,
    value_vectors_dpo: torch.Tensor,
    directions: torch.Tensor,
) -> pd.DataFrame:
    """The ``Δ``-grouping statistics of :meth:`GroupShares.statistics` for each row of ``directions``.

    ``directions`` is ``[k, d_model]`` (any norms). Returns ``k`` rows with the columns of :data:`STATISTICS`;
    for a single direction the row equals ``group_shares(neuron_table(...)).statistics()``.
    """
    units = unit_directions(directions)
    count = units.shape[0]
    group_sums = torch.zeros(len(GROUPS), count, dtype=torch.float64)
    positive_total = torch.zeros(count, dtype=torch.float64)
    net = torch.zeros(count, dtype=torch.float64)
    chunks = zip(alignment_chunks(value_vectors_base, units), alignment_chunks(value_vectors_dpo, units))
    for (layer, neurons, alignment_base), (_, _, alignment_dpo) in chunks:
        activation_base = base.mean[layer, neurons].double()[:, None]  # [neurons, 1]
        activation_dpo = dpo.mean[layer, neurons].double()[:, None]
        delta = activation_base * alignment_base - activation_dpo * alignment_dpo  # [neurons, k]
        index = group_index(alignment_base, activation_base).long()  # cosine and alignment share their sign
        reducing = delta.clamp_min(0)
        group_sums.scatter_add_(0, index, reducing)
        positive_total += reducing.sum(0)
        net += delta.sum(0)
    shares = group_sums / group_sums.sum(0)
    columns = {f"share_{group.lower()}": shares[row].numpy() for row, group in enumerate(GROUPS)}
    columns |= {
        "net": net.numpy(),
        "positive_total": positive_total.numpy(),
        "net_over_positive_total": (net / positive_total).numpy(),
    }
    return pd.DataFrame(columns, index=pd.RangeIndex(count, name="direction"))


def null_summary(observed: GroupShares, null: pd.DataFrame) -> pd.DataFrame:
    """Where the observed statistics fall among the null directions'.

    Rows = :data:`STATISTICS`; columns ``observed``, ``null_mean``, ``null_sd``, ``z`` ((observed − mean) / SD)
    and ``percentile`` (percent of null values below the observed one, ties counted half).
    """
    if observed.grouping != "delta":
        raise ValueError("The null control uses the delta grouping; pass group_shares(table, 'delta').")
    values = observed.statistics()
    rows = []
    for name in STATISTICS:
        sample = null[name].to_numpy(np.float64)
        mean, sd = sample.mean(), sample.std(ddof=1)
        rows.append(
            {
                "statistic": name,
                "observed": values[name],
                "null_mean": mean,
                "null_sd": sd,
                "z": (values[name] - mean) / sd,
                "percentile": stats.percentileofscore(sample, values[name], kind="mean"),
            }
        )
    return pd.DataFrame(rows).set_index("statistic")


def specificity(z: float) -> str:
    """A plain-words verdict on a z-score against the null: ``"not specific"`` (|z| < 2), ``"marginal"``
    (2 ≤ |z| < 3: with several statistics tested at once, one such z is expected by chance) or ``"specific"``."""
    if abs(z) < 2:
        return "not specific"
    return "marginal" if abs(z) < 3 else "specific"
