"""Group activation patching: the neuron sets of the EMNLP version's causal test (``paper-protocol.md`` §5).

Each set's neurons are clamped, in the pre-trained model, to their post-DPO mean activations (a constant,
:meth:`~dpo_toxicity.interventions.SetNeurons.patch`). If DPO works through the four groups of neurons whose
projection onto the probe fell (TP−, TN+, AP+, AN−, grouped by ``Δ > 0`` as in the v3 notebooks), patching
all four should reproduce DPO's toxicity drop, and patching the few most toxic neurons should not.
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


def group_patch(table: pd.DataFrame, patch_set: PatchSet, grouping: str = "delta",
                positions: str = "all") -> SetNeurons:
    """Clamp every neuron of ``patch_set``'s groups (column ``group_by_<grouping>`` of a neuron table) to its
    post-DPO mean activation."""
    members = table[table[f"group_by_{grouping}"].isin(patch_set.groups)]
    suffix = "" if positions == "all" else f", {positions} position only"
    return SetNeurons.patch(members, positions=positions, name=f"patch {patch_set.name}{suffix}")


def toxic_neurons_patch(table: pd.DataFrame, top: int = 256) -> SetNeurons:
    """Clamp the ``top`` neurons by cosine with the probe to their post-DPO means (the repository's
    ``*_256_patch.csv``: reading (b) of the "toxic neurons explain 2.5 % to 24 %" statistic)."""
    return SetNeurons.patch(table.nlargest(top, "cosine"), name=f"patch top {top} toxic neurons")
