"""Neurons as key-value memories: value vectors compared with the toxic direction, and read in vocabulary space.

Neuron ``i`` of layer ``l`` writes ``m_i v_i`` into the residual stream. Lee et al. call a neuron *toxic*
when its value vector ``v_i`` points along the probe: they rank all neurons by ``cos(v_i, w)``, and read a
vector in vocabulary space by the logit lens, the top tokens of ``W_U v`` (no final norm, as in their
Table 1).

Whether a direction "promotes toxic tokens" is measured, not read off a list: :func:`logit_lens_enrichment`
counts how many of a vector's top logit-lens tokens a token classifier flags (a boolean mask over the
vocabulary, from :func:`vocabulary` and a scorer) and places that count among random vectors' (random
directions for the probe, random neurons for value vectors).

Everything here is vectorised over neurons: one matrix-vector product per layer.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import torch

from .architectures import all_value_vectors, architecture_of, submodule
from .models import LoadedModel


def value_vector_cosines(lm: LoadedModel, direction: torch.Tensor) -> torch.Tensor:
    """``cos(v_i, direction)`` for every neuron: ``[n_layers, d_mlp]`` float32."""
    values = all_value_vectors(lm.model).cpu()  # [L, d_mlp, d_model]
    unit = (direction.float() / direction.float().norm()).cpu()
    return (values @ unit) / values.norm(dim=-1).clamp_min(1e-12)


def rank_neurons(scores: torch.Tensor, top: int | None = None, descending: bool = True) -> pd.DataFrame:
    """Neurons sorted by ``scores`` ``[n_layers, d_mlp]``: a table of ``layer``, ``neuron``, ``score``, ``rank``."""
    n_layers, d_mlp = scores.shape
    flat = scores.flatten()
    order = torch.argsort(flat, descending=descending)
    if top is not None:
        order = order[:top]
    return pd.DataFrame(
        {
            "rank": range(1, len(order) + 1),
            "layer": (order // d_mlp).numpy(),
            "neuron": (order % d_mlp).numpy(),
            "score": flat[order].numpy(),
        }
    )


def _unembedding(lm: LoadedModel) -> torch.Tensor:
    return submodule(lm.model, architecture_of(lm.model).unembedding).weight.detach().float().cpu()


def logit_lens_tokens(lm: LoadedModel, vectors: torch.Tensor, top: int = 10) -> list[list[str]]:
    """The ``top`` tokens of ``W_U v`` for each row of ``vectors`` ``[n, d_model]``, decoded to strings."""
    unembedding = _unembedding(lm)
    logits = vectors.float().cpu() @ unembedding.T  # [n, vocab]
    ids = torch.topk(logits, top, dim=-1).indices
    return [[lm.tokenizer.decode([token]) for token in row.tolist()] for row in ids]


def neuron_value_vectors(lm: LoadedModel, table: pd.DataFrame) -> torch.Tensor:
    """Value vectors ``[len(table), d_model]`` of the neurons listed (columns ``layer``, ``neuron``)."""
    values = all_value_vectors(lm.model).cpu()
    return values[torch.tensor(table["layer"].to_numpy()), torch.tensor(table["neuron"].to_numpy())]


def sample_neurons(lm: LoadedModel, count: int, seed: int = 0) -> pd.DataFrame:
    """``count`` distinct neurons drawn uniformly over all layers with a fixed seed: columns ``layer``, ``neuron``."""
    n_layers, d_mlp, _ = lm.shape
    flat = torch.randperm(n_layers * d_mlp, generator=torch.Generator().manual_seed(seed))[:count]
    return pd.DataFrame({"layer": (flat // d_mlp).numpy(), "neuron": (flat % d_mlp).numpy()})


def vocabulary(lm: LoadedModel) -> list[str]:
    """Every row of the unembedding decoded as a token string, in row order (what a token classifier reads)."""
    return lm.tokenizer.batch_decode([[token] for token in range(_unembedding(lm).shape[0])])


def flagged_top_tokens(
    lm: LoadedModel, vectors: torch.Tensor, flagged: torch.Tensor, top: int, rows_per_chunk: int = 256
) -> np.ndarray:
    """For each row of ``vectors`` ``[n, d_model]``, the fraction of its ``top`` logit-lens tokens that ``flagged``
    (a boolean mask over the unembedding's rows) marks: ``[n]`` float64. Rows go through the unembedding
    ``rows_per_chunk`` at a time, so memory stays at that many logits per token."""
    unembedding, flagged = _unembedding(lm), torch.as_tensor(flagged, dtype=torch.bool)
    if flagged.shape != (unembedding.shape[0],):
        raise ValueError(f"flagged marks {tuple(flagged.shape)} tokens; the unembedding has {unembedding.shape[0]}.")
    fractions = [
        flagged[torch.topk(chunk.float().cpu() @ unembedding.T, top, dim=-1).indices].double().mean(-1)
        for chunk in vectors.split(rows_per_chunk)
    ]
    return torch.cat(fractions).numpy()


def logit_lens_enrichment(
    lm: LoadedModel, vectors: torch.Tensor, null_vectors: torch.Tensor, flagged: torch.Tensor, top: int = 50
) -> pd.Series:
    """How much more often the top logit-lens tokens of ``vectors`` are flagged than those of random vectors.

    ``share`` is the fraction of flagged tokens among the ``top`` tokens of each row of ``vectors``, averaged over
    the rows; ``null_mean`` the same for one row of ``null_vectors`` on average, and ``null_sd`` the standard
    deviation of that average over ``len(vectors)`` rows (the rows' SD over ``sqrt(len(vectors))``); ``z`` is
    ``(share − null_mean) / null_sd`` (infinite when no random vector varies and ``share`` lies above them).
    Flagged tokens are rare, so the null is skewed: read ``z`` as a distance, not a p-value.
    """
    observed = flagged_top_tokens(lm, vectors, flagged, top)
    null = flagged_top_tokens(lm, null_vectors, flagged, top)
    share, null_mean = float(observed.mean()), float(null.mean())
    null_sd = float(null.std(ddof=1) / np.sqrt(len(observed)))
    z = (share - null_mean) / null_sd if null_sd > 0 else (np.inf if share > null_mean else 0.0)
    return pd.Series({"share": share, "null_mean": null_mean, "null_sd": null_sd, "z": float(z)})
