"""Token-wise patching reproduces the source run; the margin equals plain PyTorch's; bad input is refused."""

import copy
import dataclasses

import nnsight
import numpy as np
import pandas as pd
import pytest
import torch

from dpo_toxicity.activations import traced
from dpo_toxicity.architectures import architecture_of, decoder_layers, output_projection, submodule
from dpo_toxicity.interventions import PatchNeurons, SetNeurons
from dpo_toxicity.mediation import (
    MarginItems,
    check_neuron_set,
    margins,
    mediation_table,
    patched_perplexity,
    patching_margins,
    random_like,
    recovered_fraction,
    with_random_sets,
)

ITEMS = MarginItems(
    "toy",
    prompts=((1, 17, 42, 8, 99), (1, 5), (1, 33, 34, 35)),
    preferred=((7, 8, 9), (11,), (12, 13, 14, 15, 16)),
    dispreferred=((70, 80), (110, 111, 112), (120,)),
)
INPUT_SIDE = {
    "gpt2": ("mlp.c_fc",),
    "llama": ("mlp.gate_proj", "mlp.up_proj"),
    "gemma3": ("mlp.gate_proj", "mlp.up_proj"),
}


def every_neuron(lm) -> pd.DataFrame:
    n_layers, d_mlp, _ = lm.shape
    return pd.DataFrame({"layer": np.repeat(np.arange(n_layers), d_mlp), "neuron": np.tile(np.arange(d_mlp), n_layers)})


def input_side_copy(lm):
    """A copy of ``lm`` whose MLPs' input-side weights (keys, gates, up projections) differ, all else equal."""
    model = copy.deepcopy(lm.model)
    arch = architecture_of(model)
    generator = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for block in decoder_layers(model, arch):
            for path in INPUT_SIDE[arch.family]:
                weight = submodule(block, path).weight
                weight.add_(0.5 * torch.randn(weight.shape, generator=generator))
    return dataclasses.replace(lm, model=model, weights_hash=f"{lm.weights_hash}-copy")


@pytest.fixture(params=["tiny-gpt2", "tiny-llama", "tiny-gemma3"])
def pair(request, tiny_models):
    lm = tiny_models[request.param]
    return lm, input_side_copy(lm)


def plain_margin(lm, prompt, preferred, dispreferred) -> float:
    """One item's margin from two unpadded plain-PyTorch forward passes."""

    def log_prob(continuation):
        ids = torch.tensor([list(prompt) + continuation])
        with torch.no_grad():
            logits = lm.model(input_ids=ids).logits[0].float()
        predicting = torch.log_softmax(logits[len(prompt) - 1 : -1], dim=-1)
        return float(predicting.gather(1, torch.tensor(continuation)[:, None]).sum())

    return log_prob(list(preferred)) - log_prob(list(dispreferred))


def test_batched_padded_margins_equal_plain_pytorch(tiny):
    expected = [plain_margin(tiny, *item) for item in zip(ITEMS.prompts, ITEMS.preferred, ITEMS.dispreferred)]
    np.testing.assert_allclose(margins(tiny, ITEMS, batch_size=2), expected, atol=1e-4)
    np.testing.assert_allclose(margins(tiny, ITEMS, batch_size=1), expected, atol=1e-4)


def test_patching_every_neuron_from_the_copy_reproduces_the_copys_logits(pair):
    lm, other = pair
    arch = architecture_of(lm.model)
    ids = torch.tensor([[1, 17, 42, 8, 99, 7, 8, 9]])
    encoding = {"input_ids": ids, "attention_mask": torch.ones_like(ids)}
    n_layers = lm.shape[0]
    source_model = traced(other)
    with torch.inference_mode():
        with source_model.trace(encoding):
            source = nnsight.save(
                {layer: output_projection(source_model, arch, layer).input for layer in range(n_layers)}
            )
    with torch.no_grad():
        expected = other.model(**encoding).logits
        unpatched = lm.model(**encoding).logits
    assert not torch.allclose(expected, unpatched, atol=1e-3)  # the copies really differ
    model = traced(lm)
    with torch.inference_mode():
        with model.trace(encoding):
            PatchNeurons(every_neuron(lm), dict(source)).apply(model, arch)
            patched = model.output.logits.save()
    torch.testing.assert_close(patched, expected, atol=1e-5, rtol=1e-4)


def test_denoising_and_noising_every_neuron_recover_all_of_the_shift(pair):
    lm, other = pair
    result = patching_margins(lm, other, ITEMS, {"all": every_neuron(lm), "none": every_neuron(lm).iloc[:0]})
    np.testing.assert_allclose(result.denoised["all"], result.dpo, atol=1e-4)
    np.testing.assert_allclose(result.noised["all"], result.base, atol=1e-4)
    np.testing.assert_allclose(result.denoised["none"], result.base, atol=1e-5)
    np.testing.assert_allclose(result.noised["none"], result.dpo, atol=1e-5)
    table = mediation_table(result, {"all": len(every_neuron(lm)), "none": 0})
    assert table.loc["all", "denoising"] == pytest.approx(1, abs=1e-3)
    assert table.loc["all", "noising"] == pytest.approx(1, abs=1e-3)
    assert table.loc["none", "denoising"] == pytest.approx(0, abs=1e-3)


def test_the_source_models_own_fraction_is_one_and_the_targets_zero():
    rng = np.random.default_rng(0)
    base, dpo = rng.normal(size=50), rng.normal(size=50) + 2
    assert recovered_fraction(base, dpo, dpo)[0] == pytest.approx(1)
    assert recovered_fraction(base, base, dpo)[0] == pytest.approx(0)
    half, low, high = recovered_fraction(base, (base + dpo) / 2, dpo)
    assert half == pytest.approx(0.5) and low <= 0.5 <= high


def test_margins_apply_an_intervention_at_every_position(tiny):
    n_layers, d_mlp, _ = tiny.shape
    ablate = SetNeurons.ablate(every_neuron(tiny).query("layer == 0"))
    assert not np.allclose(margins(tiny, ITEMS, ablate), margins(tiny, ITEMS), atol=1e-4)


def test_random_sets_keep_each_layers_count_and_differ_by_seed():
    neurons = pd.DataFrame({"layer": [0, 0, 0, 2, 5], "neuron": [1, 2, 3, 4, 5]})
    first, second = random_like(neurons, d_mlp=64, seed=0), random_like(neurons, d_mlp=64, seed=1)
    assert first.groupby("layer").size().to_dict() == {0: 3, 2: 1, 5: 1}
    assert not first.duplicated().any()
    assert not first.equals(second)
    assert random_like(neurons.iloc[:0], d_mlp=64, seed=0).empty


def test_bad_neuron_sets_and_items_raise_clear_errors(tiny, tmp_path):
    n_layers, d_mlp, _ = tiny.shape
    with pytest.raises(ValueError, match="layers \\[7\\] do not exist"):
        check_neuron_set(pd.DataFrame({"layer": [7], "neuron": [0]}), tiny.shape)
    with pytest.raises(ValueError, match="outside"):
        check_neuron_set(pd.DataFrame({"layer": [0], "neuron": [d_mlp]}), tiny.shape)
    with pytest.raises(ValueError, match="empty dispreferred continuation"):
        MarginItems("bad", ((1, 2),), ((3,),), ((),))
    with pytest.raises(ValueError, match="do not exist"):
        patching_margins(tiny, tiny, ITEMS, {"bad": pd.DataFrame({"layer": [n_layers], "neuron": [0]})}, cache=tmp_path)
    assert not list(tmp_path.iterdir())  # nothing half-written


def test_patched_perplexity_of_every_neuron_is_the_other_models(pair):
    lm, other = pair
    text = " ".join(["the cat sat on the mat and looked at the dog"] * 12)
    table = patched_perplexity(
        lm, other, text, {"all": every_neuron(lm), "none of them": every_neuron(lm).iloc[:0]}, window=48, max_windows=2
    )
    assert table.loc["none", "denoised PPL"] != pytest.approx(table.loc["none", "noised PPL"], rel=1e-3)
    assert table.loc["all", "denoised PPL"] == pytest.approx(table.loc["none", "noised PPL"], rel=1e-4)
    assert table.loc["all", "noised PPL"] == pytest.approx(table.loc["none", "denoised PPL"], rel=1e-4)
    assert table.loc["none of them", "denoised PPL"] == pytest.approx(table.loc["none", "denoised PPL"], rel=1e-6)


def test_the_table_summarises_random_draws_beside_their_set(pair):
    lm, other = pair
    some = every_neuron(lm).iloc[::3]
    sets = with_random_sets({"some": some}, d_mlp=lm.shape[1], draws=3)
    assert len(sets) == 4 and all(len(neurons) == len(some) for neurons in sets.values())
    table = mediation_table(patching_margins(lm, other, ITEMS, sets), {"some": len(some)})
    assert list(table.index) == ["some"] and table.loc["some", "random draws"] == 3
    assert np.isfinite(table.loc["some", "random mean"]) and table.loc["some", "random sd"] > 0


def test_sets_left_out_of_noised_are_patched_one_way_only(pair):
    lm, other = pair
    some = every_neuron(lm).iloc[::5]
    result = patching_margins(lm, other, ITEMS, {"some": some, "other": some.iloc[:3]}, noised=["some"])
    assert set(result.denoised) == {"some", "other"} and set(result.noised) == {"some"}
    assert np.isnan(mediation_table(result, {"some": len(some), "other": 3}).loc["other", "noising"])
    with pytest.raises(ValueError, match="not in sets"):
        patching_margins(lm, other, ITEMS, {"some": some}, noised=["absent"])
