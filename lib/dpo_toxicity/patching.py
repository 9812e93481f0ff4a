"""Group activation patching: the neuron sets of the EMNLP version's causal test.

If DPO works through the four groups of neurons whose projection onto the probe fell (TP−, TN+, AP+, AN−, grouped
by ``Δ > 0`` as in the v3 notebooks), patching all four should reproduce DPO's effect, and patching the few most
toxic neurons should not. Two ways of patching a set:

* the paper's: each neuron clamped, in the pre-trained model, to its post-DPO *mean* activation, a constant at
  every position (:func:`group_patch`, :func:`toxic_neurons_patch`, through
  :meth:`~dpo_toxicity.interventions.SetNeurons.patch`);
* the field's: each neuron's activation replaced, token by token, by the DPO model's activation on the same tokens
  (and the reverse), on the sets :func:`mediation_sets` names (see :mod:`~dpo_toxicity.mediation`).
"""

from __future__ import annotations

from dataclasses import dataclass

import pandas as pd

from .attribution import REDUCING
from .interventions import SetNeurons


@dataclass(frozen=True)
class PatchSet:
    """A named union of reducing groups (labels of :data:`~dpo_toxicity.attribution.REDUCING`)."""

    name: str
    groups: tuple[str, ...]


PATCH_SETS = (
    PatchSet("TP−", ("TP-",)),
    PatchSet("TN+", ("TN+",)),
    PatchSet("AP+", ("AP+",)),
    PatchSet("AN−", ("AN-",)),
    PatchSet("TP− + AN−", ("TP-", "AN-")),
    PatchSet("TP− + AN− + TN+", ("TP-", "AN-", "TN+")),
    PatchSet("all four groups", REDUCING),
)
ALL_GROUPS = PATCH_SETS[-1]


def group_patch(
    table: pd.DataFrame, patch_set: PatchSet, grouping: str = "delta", positions: str = "all"
) -> SetNeurons:
    """Clamp every neuron of ``patch_set``'s groups (column ``group_by_<grouping>`` of a neuron table) to its
    post-DPO mean activation."""
    members = table[table[f"group_by_{grouping}"].isin(patch_set.groups)]
    suffix = "" if positions == "all" else f", {positions} position only"
    return SetNeurons.patch(members, positions=positions, name=f"patch {patch_set.name}{suffix}")


def toxic_neurons_patch(table: pd.DataFrame, top: int = 256) -> SetNeurons:
    """Clamp the ``top`` neurons by cosine with the probe to their post-DPO means (the repository's
    ``*_256_patch.csv``: reading (b) of the "toxic neurons explain 2.5 % to 24 %" statistic)."""
    return SetNeurons.patch(table.nlargest(top, "cosine"), name=f"patch top {top} toxic neurons")


def mediation_sets(table: pd.DataFrame, complete: bool, toxic: tuple[int, ...] = (128, 256)) -> dict[str, pd.DataFrame]:
    """The neuron sets patched token by token (columns ``layer``, ``neuron``), by name: the four groups together,
    TP− alone and the top ``toxic`` neurons by cosine with the probe (the largest always; all of them with
    ``complete``); with ``complete`` also each other group alone, the partial sets of :data:`PATCH_SETS` and every
    dampened toxic neuron (TP− by activation change, chapter 4's patch)."""

    def members(groups: tuple[str, ...], grouping: str = "delta") -> pd.DataFrame:
        return table.loc[table[f"group_by_{grouping}"].isin(groups), ["layer", "neuron"]]

    chosen = PATCH_SETS if complete else (PATCH_SETS[0], ALL_GROUPS)
    sets = {patch_set.name: members(patch_set.groups) for patch_set in chosen}
    for top in toxic if complete else toxic[-1:]:
        sets[f"top {top} toxic"] = table.nlargest(top, "cosine")[["layer", "neuron"]]
    if complete:
        sets["dampened toxic (TP− by activation change)"] = members(("TP-",), "activation_change")
    return sets


# The sets every profile compares with random sets of their size: those the claims ledger judges.
NULL_CONTROLLED = (ALL_GROUPS.name, "top 256 toxic")
