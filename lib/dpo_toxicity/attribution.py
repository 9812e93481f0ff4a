"""Attributing DPO's toxicity reduction to neurons: projections ``P_i``, reductions ``Δ_i`` and four groups.

**Projection.** Neuron ``i`` writes ``m_i v_i`` into the residual stream. Averaged over the challenge prompts
and the positions at which the model produces its 20 greedy tokens, its write along the unit probe direction
``ŵ`` is its *toxicity projection*

    P_i = m̄_i (v_i · ŵ) = m̄_i |v_i| cos(v_i, ŵ).

Each model is measured on its own greedy continuation: ``P_i^pre`` uses the pre-DPO model's ``m̄_i`` and
``v_i``, ``P_i^dpo`` the DPO model's; ``ŵ`` is the same. The per-neuron *reduction* is
``Δ_i = P_i^pre − P_i^dpo``: positive when the neuron writes less toxicity after DPO. Since DPO barely moves
the weights, ``Δ_i ≈ (m̄_i^pre − m̄_i^dpo)(v_i · ŵ)``: a reduction is an activation change times an alignment
(:func:`parameter_cosines` measures how little the weights move).

**Two totals.** Summed over all neurons, ``Δ`` gives the *net* reduction of the MLPs' write along ``ŵ``. The
paper divides by another total, the sum over the neurons with ``Δ_i > 0`` only (GPT-2: 47.96 against a net of
7.22): DPO moves many neurons both ways, and the question "who carries the reduction?" is asked of the
neurons that reduce. Both are reported; the gap between them is the reduction that other neurons undo.

**Four groups** by the signs of the pre-DPO cosine and the pre-DPO mean activation: ``TP`` (toxic-aligned,
positively activated: cos > 0, m̄ ≥ 0), ``TN`` (cos > 0, m̄ < 0), ``AP`` (anti-toxic-aligned: cos ≤ 0, m̄ ≥ 0)
and ``AN`` (cos ≤ 0, m̄ < 0). A TP neuron reduces toxicity by activating less (``TP-``), a TN neuron by
activating more negatively (``TN+``), an AP neuron by activating more (``AP+``), an AN neuron by activating less
negatively (``AN-``); the opposite moves give the opposing groups ``TP+``, ``TN-``, ``AP-``, ``AN+``. The
authors' code assigns a neuron to a reducing group in two ways, both kept here:

* ``group_by_delta``: reducing when ``Δ_i > 0`` (the v1 figure notebook and all v3 notebooks);
* ``group_by_activation_change``: reducing when ``m̄^pre − m̄^dpo`` has the sign that lowers the write
  (v1 ``group_neurons.ipynb``, whose sums give the abstract's 31.8 %).

A group's *share* is its ``ΣΔ`` over the four reducing groups' ``ΣΔ``; under the ``Δ`` grouping that
denominator is ``Σ_{Δ>0} Δ`` and the shares sum to one.

**Why a null control** (:mod:`~dpo_toxicity.null_control`). The shares say how a reduction along ``ŵ``
splits, not whether there is one along ``ŵ`` in particular. A quick trial on SmolLM2-135M found that 50
random unit directions give shares of 30/19/19/32 % against the probe's 32.5/18.5/16.6/32.4 %: the share
pattern mostly reflects DPO shrinking ``|m̄|`` across many neurons, whatever the direction. The *net*
reduction along the probe, however, stood about 3 SD above the random directions'.

Neuron activations are the input of the MLP output projection (see :mod:`~dpo_toxicity.architectures`);
everything is vectorised over neurons and summed in float64.

Example::

    base = mean_neuron_activations(lm_base, prompts)
    dpo = mean_neuron_activations(lm_dpo, prompts)
    table = neuron_table(base, dpo, all_value_vectors(lm_base.model), all_value_vectors(lm_dpo.model), w)
    group_shares(table)          # GroupShares(delta: TP- 32.5 %, TN+ 18.5 %, ...)
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from scipy import stats
from tqdm import tqdm

from .activations import encode, traced
from .architectures import architecture_of, output_projection
from .evaluation import NEW_TOKENS, PROMPT_TOKENS
from .models import LoadedModel
from .paths import written_atomically

GROUPS = ("TP", "TN", "AP", "AN")
REDUCING = ("TP-", "TN+", "AP+", "AN-")  # aligned with GROUPS
OPPOSING = ("TP+", "TN-", "AP-", "AN+")
LABELS = REDUCING + OPPOSING
GROUPINGS = ("delta", "activation_change")
NEURONS_PER_CHUNK = 4096


@dataclass
class NeuronActivations:
    """Mean neuron activations and mean MLP outputs of one model over prompts × generation positions.

    ``mean`` is ``[n_layers, d_mlp]`` (``m̄_i``), ``mean_mlp_output`` is ``[n_layers, d_model]`` (the output of the
    MLP output projection, bias included, before any post-MLP norm); both float64 on the CPU. ``count`` is
    the number of positions averaged (prompts × generation steps).
    """

    mean: torch.Tensor
    mean_mlp_output: torch.Tensor
    count: int

    def save(self, path: Path) -> Path:
        """Write the three fields with ``torch.save`` (tensors and an int only: loads with ``weights_only``),
        atomically."""
        with written_atomically(path) as partial:
            torch.save({"mean": self.mean, "mean_mlp_output": self.mean_mlp_output, "count": self.count}, partial)
        return Path(path)

    @classmethod
    def load(cls, path: Path) -> "NeuronActivations":
        """Read what :meth:`save` wrote."""
        return cls(**torch.load(Path(path), weights_only=True))

    def __repr__(self) -> str:
        n_layers, d_mlp = self.mean.shape
        positive = float((self.mean >= 0).double().mean())
        return (
            f"NeuronActivations({n_layers} layers × {d_mlp} neurons over {self.count} positions; "
            f"{100 * positive:.1f} % of mean activations ≥ 0)"
        )


def mean_neuron_activations(
    lm: LoadedModel,
    prompts: list[str],
    prompt_tokens: int = PROMPT_TOKENS,
    new_tokens: int = NEW_TOKENS,
    batch_size: int = 16,
    intervention=None,
    progress: str | None = None,
) -> NeuronActivations:
    """Mean activation of every neuron at the positions where ``lm`` produces its greedy continuation.

    Each prompt is cut to ``prompt_tokens`` tokens and continued greedily for exactly ``new_tokens`` tokens
    (the generation of :func:`~dpo_toxicity.evaluation.greedy_continuations`). At every generation step the
    activation at the last position of that forward call is read: with the KV cache that is the prompt's last
    token at step 0 and generated tokens 1 … ``new_tokens``−1 afterwards (the v1 protocol). Left padding keeps
    the last position real in every row, so no mask is needed.

    ``intervention`` (see :mod:`~dpo_toxicity.interventions`) applies at every step; the reads run after it,
    so an ablated neuron reads 0 and the MLP output is the ablated one.
    """
    model, arch = traced(lm), architecture_of(lm.model)
    n_layers, d_mlp, d_model = lm.shape
    neuron_sums = torch.zeros(n_layers, d_mlp, dtype=torch.float64, device=lm.device)
    output_sums = torch.zeros(n_layers, d_model, dtype=torch.float64, device=lm.device)
    lengths = [len(ids) for ids in lm.tokenizer(prompts, truncation=True, max_length=prompt_tokens).input_ids]
    order = np.argsort(lengths, kind="stable")  # similar lengths together: little padding
    batches = [order[start : start + batch_size] for start in range(0, len(order), batch_size)]
    for batch in tqdm(batches, desc=progress or "mean activations", disable=progress is None):
        encoding = encode(lm, [prompts[i] for i in batch], prompt_tokens)
        if not bool(encoding["attention_mask"][:, -1].all()):
            raise ValueError("The tokenizer must pad on the left: the last position is read in every row.")
        with torch.inference_mode():
            with model.generate(
                max_new_tokens=new_tokens,
                min_new_tokens=new_tokens,
                do_sample=False,
                pad_token_id=lm.tokenizer.pad_token_id,
            ) as tracer:
                # Two blocks: the intervention edits a layer before the reader (a whole-batch block) sees it.
                with tracer.invoke(encoding):
                    if intervention is not None:
                        for _ in tracer.iter[:new_tokens]:
                            intervention.apply(model, arch)
                with tracer.invoke():
                    for _ in tracer.iter[:new_tokens]:
                        for layer in range(n_layers):
                            projection = output_projection(model, arch, layer)
                            neuron_sums[layer] += projection.input[:, -1].sum(0, dtype=torch.float64)
                            output_sums[layer] += projection.output[:, -1].sum(0, dtype=torch.float64)
    count = len(prompts) * new_tokens
    return NeuronActivations(neuron_sums.cpu() / count, output_sums.cpu() / count, count)


def unit_directions(directions: torch.Tensor) -> torch.Tensor:
    """Rows of ``directions`` (``[k, d_model]`` or one ``[d_model]`` vector) scaled to unit norm, float64 CPU."""
    directions = torch.as_tensor(directions).detach().to("cpu", torch.float64)
    directions = directions.reshape(-1, directions.shape[-1])
    return directions / directions.norm(dim=-1, keepdim=True)


def alignment_chunks(value_vectors: torch.Tensor, units: torch.Tensor, neurons_per_chunk: int = NEURONS_PER_CHUNK):
    """Yield ``(layer, neurons, alignments)``: ``v_i · u`` for a slice of one layer's neurons and every unit row.

    ``value_vectors`` is ``[n_layers, d_mlp, d_model]`` and ``units`` ``[k, d_model]``; ``alignments`` is
    ``[len(neurons), k]`` float64. One matrix product per chunk keeps memory at ``neurons_per_chunk × d_model``
    float64 values whatever the model's size.
    """
    n_layers, d_mlp, _ = value_vectors.shape
    for layer in range(n_layers):
        for start in range(0, d_mlp, neurons_per_chunk):
            neurons = slice(start, min(start + neurons_per_chunk, d_mlp))
            chunk = value_vectors[layer, neurons].detach().to("cpu", torch.float64)
            yield layer, neurons, chunk @ units.T


def _alignments(value_vectors: torch.Tensor, unit: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """``v_i · ŵ`` and ``|v_i|`` for every neuron: two ``[n_layers, d_mlp]`` float64 tensors."""
    alignment = torch.empty(value_vectors.shape[:2], dtype=torch.float64)
    norms = torch.empty(value_vectors.shape[:2], dtype=torch.float64)
    for layer, neurons, chunk in alignment_chunks(value_vectors, unit):
        alignment[layer, neurons] = chunk[:, 0]
        norms[layer, neurons] = value_vectors[layer, neurons].detach().to("cpu", torch.float64).norm(dim=-1)
    return alignment, norms


def group_index(cosine: np.ndarray, activation: np.ndarray) -> np.ndarray:
    """Index into :data:`GROUPS` (TP 0, TN 1, AP 2, AN 3) from the signs of cosine and pre-DPO activation."""
    return 2 * (cosine <= 0) + (activation < 0)


def neuron_table(
    base: NeuronActivations,
    dpo: NeuronActivations,
    value_vectors_base: torch.Tensor,
    value_vectors_dpo: torch.Tensor,
    direction: torch.Tensor,
) -> pd.DataFrame:
    """One row per neuron: cosine, mean activations, projections, reduction ``Δ`` and group labels.

    ``value_vectors_*`` are ``[n_layers, d_mlp, d_model]`` (:func:`~dpo_toxicity.architectures.all_value_vectors`);
    ``direction`` is the probe vector (any norm). Columns: ``layer``, ``neuron``, ``cosine`` (pre-DPO value
    vector vs ``direction``), ``activation_base``, ``activation_dpo``, ``activation_change`` (base − dpo),
    ``projection_base``, ``projection_dpo``, ``delta`` (``projection_base − projection_dpo``), ``group`` (TP, TN,
    AP, AN), ``group_by_delta`` and ``group_by_activation_change`` (one of :data:`LABELS`).
    """
    unit = unit_directions(direction)
    alignment_base, norms = _alignments(value_vectors_base, unit)
    alignment_dpo, _ = _alignments(value_vectors_dpo, unit)
    n_layers, d_mlp = alignment_base.shape
    cosine = (alignment_base / norms.clamp_min(1e-300)).numpy()
    activation_base, activation_dpo = base.mean.double().numpy(), dpo.mean.double().numpy()
    projection_base = activation_base * alignment_base.numpy()
    projection_dpo = activation_dpo * alignment_dpo.numpy()
    delta = projection_base - projection_dpo
    change = activation_base - activation_dpo
    index = group_index(cosine, activation_base)
    toxic_aligned = cosine > 0
    lowers_write = np.where(toxic_aligned, change > 0, change < 0)
    table = pd.DataFrame(
        {
            "layer": np.repeat(np.arange(n_layers), d_mlp),
            "neuron": np.tile(np.arange(d_mlp), n_layers),
            "cosine": cosine.ravel(),
            "activation_base": activation_base.ravel(),
            "activation_dpo": activation_dpo.ravel(),
            "activation_change": change.ravel(),
            "projection_base": projection_base.ravel(),
            "projection_dpo": projection_dpo.ravel(),
            "delta": delta.ravel(),
            "group": np.array(GROUPS)[index].ravel(),
            "group_by_delta": _labels(index, delta > 0),
            "group_by_activation_change": _labels(index, lowers_write),
        }
    )
    return _categorical(table)


def _labels(index: np.ndarray, reducing: np.ndarray) -> np.ndarray:
    return np.where(reducing, np.array(REDUCING)[index], np.array(OPPOSING)[index]).ravel()


def _categorical(table: pd.DataFrame) -> pd.DataFrame:
    """Group columns as categoricals with every label present (groupby then lists empty groups too)."""
    table["group"] = pd.Categorical(table["group"], categories=GROUPS)
    for column in ("group_by_delta", "group_by_activation_change"):
        table[column] = pd.Categorical(table[column], categories=LABELS)
    return table


def save_neuron_table(table: pd.DataFrame, path: Path) -> Path:
    """Write a neuron table as ``.parquet`` or ``.csv.gz`` (chosen by the suffix), atomically."""
    path = Path(path)
    with written_atomically(path) as partial:
        if path.suffix == ".parquet":
            table.to_parquet(partial, index=False)
        else:
            table.to_csv(partial, index=False, compression="gzip" if path.suffix == ".gz" else None)
    return path


def load_neuron_table(path: Path) -> pd.DataFrame:
    """Read a table written by :func:`save_neuron_table`."""
    path = Path(path)
    table = pd.read_parquet(path) if path.suffix == ".parquet" else pd.read_csv(path)
    return _categorical(table)


def _grouping_column(grouping: str) -> str:
    if grouping not in GROUPINGS:
        raise ValueError(f"grouping must be one of {GROUPINGS}, not {grouping!r}.")
    return f"group_by_{grouping}"


@dataclass(frozen=True)
class GroupShares:
    """``ΣΔ`` and neuron counts of the eight groups (reducing first), with the positive and net totals.

    ``reduction_total`` is the four reducing groups' ``ΣΔ`` (equal to ``positive_total = Σ_{Δ>0} Δ`` under the
    ``delta`` grouping); ``shares`` divides each reducing group's ``ΣΔ`` by it. ``net`` is ``ΣΔ`` over all
    neurons.
    """

    grouping: str
    delta_sums: pd.Series
    neuron_counts: pd.Series
    positive_total: float
    net: float

    @property
    def reduction_total(self) -> float:
        return float(self.delta_sums[list(REDUCING)].sum())

    @property
    def shares(self) -> pd.Series:
        return self.delta_sums[list(REDUCING)] / self.reduction_total

    def statistics(self) -> pd.Series:
        """The statistics the null control compares: four shares, ``net``, ``positive_total`` and their ratio."""
        values = {f"share_{group.lower()}": share for group, share in zip(GROUPS, self.shares)}
        values |= {
            "net": self.net,
            "positive_total": self.positive_total,
            "net_over_positive_total": self.net / self.positive_total,
        }
        return pd.Series(values, dtype=float)

    def table(self) -> pd.DataFrame:
        """Rows = the eight groups; columns ``group``, ``reducing``, ``neurons``, ``delta_sum``, ``share``
        (``delta_sum / reduction_total``, negative for the opposing groups)."""
        return pd.DataFrame(
            {
                "group": list(GROUPS) * 2,
                "reducing": [True] * 4 + [False] * 4,
                "neurons": self.neuron_counts.to_numpy(),
                "delta_sum": self.delta_sums.to_numpy(),
                "share": self.delta_sums.to_numpy() / self.reduction_total,
            },
            index=pd.Index(LABELS, name="label"),
        )

    def __repr__(self) -> str:
        shares = ", ".join(f"{label} {100 * share:.1f} %" for label, share in self.shares.items())
        return (
            f"GroupShares({self.grouping}: {shares}; reduction total {self.reduction_total:.4g}, "
            f"positive total {self.positive_total:.4g}, net {self.net:.4g}, "
            f"{int(self.neuron_counts.sum())} neurons)"
        )


def group_shares(table: pd.DataFrame, grouping: str = "delta") -> GroupShares:
    """Sum ``Δ`` per group of a :func:`neuron_table` under ``grouping`` (``"delta"`` or ``"activation_change"``)."""
    column = _grouping_column(grouping)
    grouped = table.groupby(column, observed=False)["delta"]
    delta = table["delta"].to_numpy(np.float64)
    return GroupShares(
        grouping=grouping,
        delta_sums=grouped.sum().reindex(LABELS).astype(np.float64),
        neuron_counts=grouped.size().reindex(LABELS).astype(int),
        positive_total=float(delta[delta > 0].sum()),
        net=float(delta.sum()),
    )


def toxic_neuron_share(table: pd.DataFrame, top: int = 128, grouping: str = "activation_change") -> pd.Series:
    """The "toxic neurons" part of the reduction: the ``top`` neurons by cosine that are in ``TP-``.

    Reading (a) of the paper's "toxic neurons account for only …" (item 1 of ``errata.md``; GPT-2, ``top = 128``:
    ΣΔ = 2.333 = 4.9 % of Σ_{Δ>0} Δ). Returns ``neurons`` (how many of the ``top`` are ``TP-``), ``delta_sum``
    and ``share`` (``delta_sum / Σ_{Δ>0} Δ``).
    """
    highest = table.nlargest(top, "cosine")
    dampened = highest[highest[_grouping_column(grouping)] == "TP-"]
    delta = table["delta"]
    delta_sum = float(dampened["delta"].sum())
    return pd.Series(
        {"neurons": len(dampened), "delta_sum": delta_sum, "share": delta_sum / float(delta[delta > 0].sum())}
    )


def top_ranked_group_shares(table: pd.DataFrame, top: int = 100, grouping: str = "delta") -> pd.Series:
    """Each reducing group's part of ``ΣΔ`` over the ``top`` neurons with the largest ``Δ`` (Figure 2b's first bins).

    The paper's Figure 2b shows TP− carrying most of the reduction among the top-ranked neurons, the other
    groups taking over further down the ranking. Shares are over the ``top`` neurons' total ``Δ``, indexed by
    :data:`REDUCING`; under the ``delta`` grouping they sum to one.
    """
    highest = table.nlargest(top, "delta")
    sums = highest.groupby(_grouping_column(grouping), observed=False)["delta"].sum()
    return sums.reindex(list(REDUCING)).fillna(0.0) / float(highest["delta"].sum())


def layer_projection(mean_mlp_output: torch.Tensor, direction: torch.Tensor) -> torch.Tensor:
    """Per-layer projection of the mean MLP output onto the unit ``direction``: ``[n_layers]`` float64.

    The paper's Figure 1a; it equals ``Σ_i m̄_i (v_i · ŵ)`` over the layer plus ``b · ŵ`` for biased projections.
    """
    return mean_mlp_output.double().cpu() @ unit_directions(direction)[0]


def per_layer_reduction(table: pd.DataFrame, grouping: str = "delta") -> pd.DataFrame:
    """Per layer: ``ΣΔ`` of each reducing group, ``reduced`` (``Σ_{Δ>0} Δ``) and ``increased`` (``Σ_{Δ<0} Δ``)."""
    column = _grouping_column(grouping)
    groups = table.pivot_table(index="layer", columns=column, values="delta", aggfunc="sum", observed=False)
    result = groups.reindex(columns=list(REDUCING)).fillna(0.0)
    result.columns = list(REDUCING)
    delta = table["delta"]
    result["reduced"] = delta.where(delta > 0, 0.0).groupby(table["layer"]).sum()
    result["increased"] = delta.where(delta < 0, 0.0).groupby(table["layer"]).sum()
    return result


def layer_cancellation(table: pd.DataFrame) -> float:
    """How much of each layer's reduction its own increases leave standing: ``Σ_l |Σ_{i∈l} Δ_i| / Σ_{Δ>0} Δ``.

    0 when every layer's positive and negative ``Δ`` cancel exactly, 1 when no neuron has ``Δ < 0``. Figure 3
    (right) of the paper shows them nearly cancelling layer by layer; it is never below the overall
    ``|net| / positive total``, which sums before taking the magnitude.
    """
    layers = per_layer_reduction(table)
    return float((layers["reduced"] + layers["increased"]).abs().sum() / layers["reduced"].sum())


def relative_activation_change(table: pd.DataFrame, lower: float = 10, upper: float = 90) -> pd.Series:
    """``100 (m̄^pre − m̄^dpo) / m̄^pre`` per neuron, clipped to its ``lower``–``upper`` percentiles.

    Positive means the activation's magnitude shrank. Neurons with ``m̄^pre`` near zero give huge ratios,
    hence the clipping (the authors' 10th–90th percentile). Percentiles are taken over the finite ratios.
    """
    with np.errstate(divide="ignore", invalid="ignore"):
        ratio = 100 * table["activation_change"].to_numpy() / table["activation_base"].to_numpy()
    low, high = np.percentile(ratio[np.isfinite(ratio)], [lower, upper])
    return pd.Series(np.clip(ratio, low, high), index=table.index, name="relative_activation_change")


def activation_change_summary(table: pd.DataFrame, grouping: str = "delta") -> pd.DataFrame:
    """Mean, SD and median of the clipped relative activation change over all neurons and per reducing group."""
    relative = relative_activation_change(table)
    labels = table[_grouping_column(grouping)]
    parts = [("all", relative)] + [(label, relative[labels == label]) for label in REDUCING]
    return pd.DataFrame(
        [
            {
                "group": name,
                "neurons": len(values),
                "mean": values.mean(),
                "sd": values.std(),
                "median": values.median(),
            }
            for name, values in parts
        ]
    ).set_index("group")


def magnitude_shrink_shares(table: pd.DataFrame, grouping: str = "delta") -> pd.Series:
    """Per reducing group, the fraction of its neurons whose mean activation shrinks in magnitude under DPO.

    ``|m̄^dpo| < |m̄^pre|``, indexed by :data:`REDUCING`. The EMNLP version reads its distributions as TP− and AN−
    shrinking ``|m̄|`` and TN+ and AP+ growing it; with the weights nearly unchanged the groups' definitions imply
    as much for every neuron whose activation keeps its sign, so this checks how many cross zero.
    """
    shrinks = table["activation_dpo"].abs() < table["activation_base"].abs()
    return shrinks.groupby(table[_grouping_column(grouping)], observed=False).mean().reindex(list(REDUCING))


def activation_falls(table: pd.DataFrame, top: int = 100) -> pd.Series:
    """Whether the ``top`` neurons most aligned with the probe activate less after DPO than neurons at large.

    A neuron's activation *falls* when ``m̄^pre − m̄^dpo > 0``; for a toxic-aligned neuron that lowers its write
    along the probe, whatever the sign of ``m̄`` (Lee et al.: the toxic neurons' activations drop after DPO).
    Returns ``share`` (of the ``top`` by cosine), ``share_all`` (of all neurons) and ``z``, the one-sided
    binomial z-score ``(share − share_all) / sqrt(share_all (1 − share_all) / top)``: how far the toxic
    neurons stand from what DPO does to any ``top`` neurons.
    """
    share = float((table.nlargest(top, "cosine")["activation_change"] > 0).mean())
    share_all = float((table["activation_change"] > 0).mean())
    z = (share - share_all) / np.sqrt(share_all * (1 - share_all) / top)
    return pd.Series({"share": share, "share_all": share_all, "z": float(z)})


def activation_change_correlations(table: pd.DataFrame) -> pd.DataFrame:
    """Pearson ``r`` (and two-sided ``p``) of the activation change with the cosine and with ``m̄^pre``.

    Rows: absolute change vs cosine, clipped relative change vs cosine, absolute change vs pre-DPO activation.
    The paper finds ``r ≈ 0`` with the cosine: DPO's activation shifts do not single out toxic-aligned neurons.
    """
    relative = relative_activation_change(table)
    pairs = [
        ("activation_change", table["activation_change"], "cosine", table["cosine"]),
        ("relative_activation_change", relative, "cosine", table["cosine"]),
        ("activation_change", table["activation_change"], "activation_base", table["activation_base"]),
    ]
    rows = []
    for x_name, x, y_name, y in pairs:
        finite = np.isfinite(x.to_numpy()) & np.isfinite(y.to_numpy())
        result = stats.pearsonr(x[finite], y[finite])
        rows.append({"x": x_name, "y": y_name, "r": float(result.statistic), "p": float(result.pvalue)})
    return pd.DataFrame(rows)


def parameter_cosines(model_a: torch.nn.Module, model_b: torch.nn.Module, chunk: int = 2**22) -> pd.Series:
    """The cosine between each parameter tensor of two models of one architecture, by parameter name (float64).

    Lee et al. find every tensor of GPT-2-medium at a cosine above 0.99 before and after DPO: DPO barely moves the
    weights, which is why ``Δ_i`` is an activation change times an alignment. Sums run in float64 over slices of
    ``chunk`` values, so memory stays small even for a 262k-token embedding. Two all-zero tensors count as equal
    (cosine 1). Raises ``ValueError`` when the models' parameter names differ.
    """
    parameters_b = dict(model_b.named_parameters())
    names_a = [name for name, _ in model_a.named_parameters()]
    if sorted(names_a) != sorted(parameters_b):
        raise ValueError("The two models have different parameters; compare a model with its own DPO copy.")
    cosines = {}
    for name, tensor_a in model_a.named_parameters():
        dot = norm_a = norm_b = 0.0
        for part_a, part_b in zip(
            tensor_a.detach().flatten().split(chunk), parameters_b[name].detach().flatten().split(chunk)
        ):
            part_a, part_b = part_a.to("cpu", torch.float64), part_b.to("cpu", torch.float64)
            dot += float(part_a @ part_b)
            norm_a += float(part_a @ part_a)
            norm_b += float(part_b @ part_b)
        cosines[name] = 1.0 if norm_a == norm_b == 0 else dot / max(np.sqrt(norm_a * norm_b), 1e-300)
    return pd.Series(cosines, name="cosine", dtype=np.float64)
