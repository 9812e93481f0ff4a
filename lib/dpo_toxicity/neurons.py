"""Neurons as key-value memories: value vectors compared with the toxic direction, and read in vocabulary space.

Neuron ``i`` of layer ``l`` writes ``m_i v_i`` into the residual stream. Lee et al. call a neuron *toxic*
when its value vector ``v_i`` points along the probe: they rank all neurons by ``cos(v_i, w)``, and read a
vector in vocabulary space by the logit lens, the top tokens of ``W_U v`` (no final norm, as in their
Table 1).

Everything here is vectorised over neurons: one matrix-vector product per layer.
"""

from __future__ import annotations

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


def logit_lens_tokens(lm: LoadedModel, vectors: torch.Tensor, top: int = 10) -> list[list[str]]:
    """The ``top`` tokens of ``W_U v`` for each row of ``vectors`` ``[n, d_model]``, decoded to strings."""
    unembedding = submodule(lm.model, architecture_of(lm.model).unembedding).weight.detach().float().cpu()
    logits = vectors.float().cpu() @ unembedding.T  # [n, vocab]
    ids = torch.topk(logits, top, dim=-1).indices
    return [[lm.tokenizer.decode([token]) for token in row.tolist()] for row in ids]


def neuron_value_vectors(lm: LoadedModel, table: pd.DataFrame) -> torch.Tensor:
    """Value vectors ``[len(table), d_model]`` of the neurons listed (columns ``layer``, ``neuron``)."""
    values = all_value_vectors(lm.model).cpu()
    return values[torch.tensor(table["layer"].to_numpy()), torch.tensor(table["neuron"].to_numpy())]
