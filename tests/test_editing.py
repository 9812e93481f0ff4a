"""Activation editing: the selection rule, the direction of every edit, and the toxic embedding direction."""

import numpy as np
import pandas as pd
import pytest
import torch

from dpo_toxicity.architectures import architecture_of, submodule
from dpo_toxicity.editing import (
    CLEAN_SEEDS,
    TOXIC_SEEDS,
    EditSettings,
    edit_intervention,
    edit_selection,
    toxic_embedding_direction,
)
from dpo_toxicity.interventions import ScaleNeurons, SetNeurons

rng = np.random.default_rng(0)
NEURONS = pd.DataFrame(
    {"layer": np.repeat([0, 1], 200), "neuron": np.tile(np.arange(200), 2), "activation_base": rng.normal(size=400)}
)
COSINE = rng.uniform(-0.3, 0.3, size=400)


def groups_of(cosine, activation):
    return np.select([(cosine > 0) & (activation >= 0), cosine > 0, activation >= 0], ["TP", "TN", "AP"], "AN")


def test_each_group_keeps_a_fraction_beta_strongest_for_tp_an_weakest_for_tn_ap():
    selection = edit_selection(NEURONS, COSINE, beta=0.5)
    groups = groups_of(COSINE, NEURONS["activation_base"].to_numpy())
    for group in ("TP", "TN", "AP", "AN"):
        members = np.abs(COSINE[groups == group])
        chosen = selection.loc[selection["group"] == group, "cosine"].abs().to_numpy()
        assert len(chosen) == int(0.5 * len(members))
        expected = np.sort(members)[::-1][: len(chosen)] if group in ("TP", "AN") else np.sort(members)[: len(chosen)]
        np.testing.assert_allclose(np.sort(chosen), np.sort(expected))


@pytest.mark.parametrize("mode", ["clamp", "scale"])
def test_every_edit_lowers_the_write_along_the_representation(mode):
    selection = edit_selection(NEURONS, COSINE, beta=0.6)
    edit = edit_intervention(selection, EditSettings(alpha=0.05, beta=0.6, representation="probe", mode=mode))
    if mode == "clamp":
        assert isinstance(edit, SetNeurons)
        edited = edit.neurons["value"].to_numpy()
    else:
        assert isinstance(edit, ScaleNeurons)
        edited = edit.neurons["factor"].to_numpy() * selection["activation_base"].to_numpy()
    change = (edited - selection["activation_base"].to_numpy()) * selection["cosine"].to_numpy()
    assert (change <= 0).all() and (change < 0).mean() > 0.99


def test_bad_settings_and_mismatched_cosines_are_rejected():
    with pytest.raises(ValueError, match="alpha"):
        EditSettings(alpha=1.5, beta=0.5, representation="probe")
    with pytest.raises(ValueError, match="beta"):
        EditSettings(alpha=0.05, beta=0, representation="probe")
    with pytest.raises(ValueError, match="mode"):
        EditSettings(alpha=0.05, beta=0.5, representation="probe", mode="shift")
    with pytest.raises(ValueError, match="cosine has 3 values"):
        edit_selection(NEURONS, COSINE[:3], beta=0.5)


def test_toxic_embedding_direction_is_the_difference_of_seed_means(tiny):
    unembedding = submodule(tiny.model, architecture_of(tiny.model).unembedding).weight.detach().float()

    def mean_row(words):
        return torch.stack(
            [unembedding[tiny.tokenizer(w, add_special_tokens=False).input_ids].mean(0) for w in words]
        ).mean(0)

    direction = toxic_embedding_direction(tiny)
    assert direction.shape == (tiny.shape[2],)
    torch.testing.assert_close(direction, mean_row(TOXIC_SEEDS) - mean_row(CLEAN_SEEDS))
