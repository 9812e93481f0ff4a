"""Activation editing: the EMNLP version's tuning-free imitation of DPO (``book/protocol.md``).

From the pre-trained model alone, every neuron gets its cosine ``c_i`` with a *toxicity representation* ``r``
(the probe, or the toxic token-embedding direction of :func:`toxic_embedding_direction`) and its mean
activation ``m̄_i`` before DPO. Their signs split the neurons into TP (``c > 0, m̄ > 0``), TN (``c > 0, m̄ < 0``),
AP (``c < 0, m̄ > 0``) and AN (``c < 0, m̄ < 0``). In each group a fraction ``β`` is selected, as the authors'
code does it: in TP and AN the neurons with the *largest* ``|c|``, in AP and TN those with the *smallest*
``|c|`` (item 14 of ``errata.md`` flags the second rule as possibly unintended). Selected TP and AN neurons are set to
``(1 − α) m̄``, selected AP and TN neurons to ``(1 + α) m̄``: in all four groups the write along ``r``,
``m_i (v_i · r̂)``, goes down. No weight changes.

Two readings of "set": ``clamp`` assigns the constant ``(1 ∓ α) m̄_i`` at every position (the authors' code,
:class:`~dpo_toxicity.interventions.SetNeurons`); ``scale`` multiplies each token's own activation by
``1 ∓ α`` (:class:`~dpo_toxicity.interventions.ScaleNeurons`), the "distributed shift" the abstract describes.
The GPT-2-only filter of the authors' code (dropping neurons above the 80th percentile of ``m̄``) is not applied.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd
import torch

from .architectures import architecture_of, submodule
from .attribution import GROUPS, group_index
from .interventions import ScaleNeurons, SetNeurons
from .models import LoadedModel

TOXIC_SEEDS = ("fuck", "shit", "crap", "damn", "asshole")
CLEAN_SEEDS = ("hello", "thanks", "friend", "peace", "welcome")
SHRUNK_GROUPS = ("TP", "AN")  # toxic write shrinks: (1 − α) m̄, strongest |cos| first
GROWN_GROUPS = ("TN", "AP")  # anti-toxic write grows: (1 + α) m̄, weakest |cos| first (the authors' code)
MODES = ("clamp", "scale")


def toxic_embedding_direction(lm: LoadedModel) -> torch.Tensor:
    """``mean(E[toxic seeds]) − mean(E[clean seeds])`` over unembedding rows ``E`` (``[d_model]``, float32).

    A word that the tokenizer splits is the mean of its pieces' rows, as in the authors' code; the words are
    encoded bare, without a leading space. For GPT-2 the unembedding is the tied token embedding.
    """
    unembedding = submodule(lm.model, architecture_of(lm.model).unembedding).weight.detach().float().cpu()

    def word_row(word: str) -> torch.Tensor:
        ids = lm.tokenizer(word, add_special_tokens=False).input_ids
        return unembedding[ids].mean(0)

    toxic = torch.stack([word_row(word) for word in TOXIC_SEEDS]).mean(0)
    clean = torch.stack([word_row(word) for word in CLEAN_SEEDS]).mean(0)
    return toxic - clean


@dataclass(frozen=True)
class EditSettings:
    """One activation edit: strength ``alpha``, fraction ``beta`` of each group, and how the edit is applied."""

    alpha: float
    beta: float
    representation: str
    mode: str = "clamp"

    def __post_init__(self) -> None:
        if not 0 < self.alpha < 1:
            raise ValueError(f"alpha must lie in (0, 1), not {self.alpha}.")
        if not 0 < self.beta <= 1:
            raise ValueError(f"beta must lie in (0, 1], not {self.beta}.")
        if self.mode not in MODES:
            raise ValueError(f"mode must be one of {MODES}, not {self.mode!r}.")

    @property
    def label(self) -> str:
        return f"edit ({self.representation}, α {self.alpha}, β {self.beta}, {self.mode})"


def edit_selection(neurons: pd.DataFrame, cosine: np.ndarray, beta: float) -> pd.DataFrame:
    """The neurons an edit touches, with their group and the sign of their change.

    ``neurons`` has one row per neuron with ``layer``, ``neuron`` and ``activation_base`` (the pre-DPO mean);
    ``cosine`` is each row's cosine with the toxicity representation. Returns those columns plus ``cosine``,
    ``group`` and ``shrink`` (True for TP/AN). Each group keeps ``floor(beta × size)`` neurons.
    """
    if len(cosine) != len(neurons):
        raise ValueError(f"cosine has {len(cosine)} values for {len(neurons)} neurons.")
    frame = neurons[["layer", "neuron", "activation_base"]].assign(cosine=np.asarray(cosine, dtype=np.float64))
    frame["group"] = np.array(GROUPS)[group_index(frame["cosine"].to_numpy(), frame["activation_base"].to_numpy())]
    frame["strength"] = frame["cosine"].abs()
    kept = []
    for group in GROUPS:
        members = frame[frame["group"] == group]
        count = int(beta * len(members))
        pick = members.nlargest if group in SHRUNK_GROUPS else members.nsmallest
        kept.append(pick(count, "strength"))
    selection = pd.concat(kept).drop(columns="strength").sort_values(["layer", "neuron"], ignore_index=True)
    selection["shrink"] = selection["group"].isin(SHRUNK_GROUPS)
    return selection


def edit_intervention(
    selection: pd.DataFrame, settings: EditSettings, positions: str = "all"
) -> SetNeurons | ScaleNeurons:
    """The intervention that applies ``settings`` to the neurons of :func:`edit_selection`.

    ``positions="last"`` clamps only the last position of each forward call, as the authors' hooks did
    (a ``scale`` edit always applies everywhere).
    """
    factor = np.where(selection["shrink"], 1 - settings.alpha, 1 + settings.alpha)
    if settings.mode == "clamp":
        values = selection[["layer", "neuron"]].assign(value=factor * selection["activation_base"].to_numpy())
        return SetNeurons(values, positions=positions, name=settings.label)
    if positions != "all":
        raise ValueError("A scale edit multiplies every position's activation; positions must be 'all'.")
    return ScaleNeurons(selection[["layer", "neuron"]].assign(factor=factor), name=settings.label)
