"""Group patching clamps exactly the neurons of the named groups to their post-DPO means."""

import numpy as np
import pandas as pd

from dpo_toxicity.attribution import LABELS
from dpo_toxicity.patching import (
    ALL_GROUPS,
    NULL_CONTROLLED,
    PATCH_SETS,
    group_patch,
    mediation_sets,
    toxic_neurons_patch,
)

rng = np.random.default_rng(0)
TABLE = pd.DataFrame(
    {
        "layer": np.repeat([0, 1, 2], 100),
        "neuron": np.tile(np.arange(100), 3),
        "cosine": rng.uniform(-1, 1, 300),
        "activation_dpo": rng.normal(size=300),
        "group_by_delta": rng.choice(LABELS, 300),
        "group_by_activation_change": rng.choice(LABELS, 300),
    }
)


def test_each_set_patches_its_groups_members_to_their_post_dpo_means():
    for patch_set in PATCH_SETS:
        patch = group_patch(TABLE, patch_set)
        expected = TABLE[TABLE["group_by_delta"].isin(patch_set.groups)]
        assert len(patch) == len(expected) > 0
        np.testing.assert_array_equal(patch.neurons["value"], expected["activation_dpo"])
        assert patch.positions == "all"
    assert set(ALL_GROUPS.groups) == {"TP-", "TN+", "AP+", "AN-"}  # the reducing groups, not the opposing ones


def test_the_last_position_variant_and_the_other_grouping_are_honoured():
    patch = group_patch(TABLE, ALL_GROUPS, grouping="activation_change", positions="last")
    assert patch.positions == "last" and "last position" in patch.name
    assert len(patch) == TABLE["group_by_activation_change"].isin(ALL_GROUPS.groups).sum()


def test_toxic_neurons_patch_takes_the_highest_cosines():
    patch = toxic_neurons_patch(TABLE, top=10)
    top = TABLE.nlargest(10, "cosine")
    assert sorted(zip(patch.neurons["layer"], patch.neurons["neuron"])) == sorted(zip(top["layer"], top["neuron"]))


def test_mediation_sets_name_the_groups_the_toxic_neurons_and_the_dampened_ones():
    small = mediation_sets(TABLE, complete=False)
    assert list(small) == ["TP−", "all four groups", "top 256 toxic"]
    assert len(small["all four groups"]) == TABLE["group_by_delta"].isin(ALL_GROUPS.groups).sum()
    top = TABLE.nlargest(256, "cosine")
    assert sorted(zip(*small["top 256 toxic"].to_numpy().T)) == sorted(zip(top["layer"], top["neuron"]))
    complete = mediation_sets(TABLE, complete=True)
    assert {"TN+", "AP+", "AN−", "TP− + AN−", "top 128 toxic"} <= set(complete) and set(small) <= set(complete)
    dampened = complete["dampened toxic (TP− by activation change)"]
    assert len(dampened) == (TABLE["group_by_activation_change"] == "TP-").sum()
    assert set(NULL_CONTROLLED) <= set(small)
