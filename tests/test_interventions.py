"""Interventions through nnsight equal the same edit made in plain PyTorch (hooks or edited weights)."""

import copy

import pandas as pd
import pytest
import torch

from conftest import PROMPTS
from dpo_toxicity.activations import encode, traced
from dpo_toxicity.architectures import architecture_of, decoder_layers, output_projection, submodule
from dpo_toxicity.evaluation import greedy_continuations
from dpo_toxicity.interventions import ScaleKeys, ScaleNeurons, SetNeurons, SteerResidual

NEURONS = pd.DataFrame({"layer": [0, 1, 1], "neuron": [3, 5, 100], "value": [1.5, -2.0, 0.25]})


def nnsight_logits(lm, intervention):
    model, arch = traced(lm), architecture_of(lm.model)
    with torch.inference_mode():
        with model.trace(encode(lm, PROMPTS, 64)):
            intervention.apply(model, arch)
            logits = model.output.logits.save()
    return logits


def plain_logits(model, lm, hooks=()):
    encoding = encode(lm, PROMPTS, 64)
    handles = [module.register_forward_pre_hook(hook) for module, hook in hooks]
    try:
        with torch.no_grad():
            return model(**encoding, position_ids=(encoding["attention_mask"].cumsum(-1) - 1).clamp_min(0)).logits
    finally:
        for handle in handles:
            handle.remove()


def setting_hook(layer, last_only=False):
    rows = NEURONS[NEURONS.layer == layer]

    def hook(module, args):
        activations = args[0].clone()
        target = activations[:, -1:] if last_only else activations
        target[..., torch.tensor(rows.neuron.values)] = torch.tensor(rows.value.values, dtype=activations.dtype)
        return (activations,)

    return hook


@pytest.mark.parametrize("positions", ["all", "last"])
def test_set_neurons_equals_a_plain_pre_hook(tiny, positions):
    arch = architecture_of(tiny.model)
    hooks = [(output_projection(tiny.model, arch, layer), setting_hook(layer, positions == "last")) for layer in (0, 1)]
    expected = plain_logits(tiny.model, tiny, hooks)
    ours = nnsight_logits(tiny, SetNeurons(NEURONS, positions=positions))
    torch.testing.assert_close(ours, expected, rtol=1e-5, atol=1e-5)
    assert not torch.allclose(ours, plain_logits(tiny.model, tiny), atol=1e-4)  # the edit did something


def test_ablation_equals_zeroing_the_value_vectors(tiny):
    arch = architecture_of(tiny.model)
    edited = copy.deepcopy(tiny.model)
    for layer, neuron in NEURONS[["layer", "neuron"]].values:
        weight = output_projection(edited, arch, int(layer)).weight
        if arch.value_vectors_are_rows:
            weight.data[int(neuron)] = 0
        else:
            weight.data[:, int(neuron)] = 0
    torch.testing.assert_close(
        nnsight_logits(tiny, SetNeurons.ablate(NEURONS)), plain_logits(edited, tiny), rtol=1e-5, atol=1e-5
    )


def test_scaling_neurons_equals_scaling_their_value_vectors(tiny):
    arch = architecture_of(tiny.model)
    factors = NEURONS.rename(columns={"value": "factor"})
    edited = copy.deepcopy(tiny.model)
    for layer, neuron, factor in factors[["layer", "neuron", "factor"]].values:
        weight = output_projection(edited, arch, int(layer)).weight
        if arch.value_vectors_are_rows:
            weight.data[int(neuron)] *= factor
        else:
            weight.data[:, int(neuron)] *= factor
    ours = nnsight_logits(tiny, ScaleNeurons(factors))
    torch.testing.assert_close(ours, plain_logits(edited, tiny), rtol=1e-5, atol=1e-5)
    assert not torch.allclose(ours, plain_logits(tiny.model, tiny), atol=1e-4)


def test_patching_clamps_to_the_named_column(tiny):
    table = NEURONS.rename(columns={"value": "activation_dpo"}).assign(activation_base=0.0)
    patch = SetNeurons.patch(table, positions="last")
    assert patch.positions == "last"
    assert patch.neurons["value"].tolist() == NEURONS["value"].tolist()
    assert SetNeurons.patch(table, column="activation_base").neurons["value"].eq(0).all()


def test_scale_keys_equals_scaling_the_key_weights(tiny):
    arch = architecture_of(tiny.model)
    edited = copy.deepcopy(tiny.model)
    for layer, neuron in NEURONS[["layer", "neuron"]].values:
        weight = submodule(decoder_layers(edited, arch)[int(layer)], arch.key_projection).weight
        if arch.value_vectors_are_rows:  # GPT-2 Conv1D: keys are columns
            weight.data[:, int(neuron)] *= 5.0
        else:
            weight.data[int(neuron)] *= 5.0
    torch.testing.assert_close(
        nnsight_logits(tiny, ScaleKeys(NEURONS, 5.0)), plain_logits(edited, tiny), rtol=1e-4, atol=1e-4
    )


def test_steering_equals_a_hook_on_the_final_norm(tiny):
    arch = architecture_of(tiny.model)
    vector = torch.randn(tiny.shape[2], generator=torch.Generator().manual_seed(1))
    encoding = encode(tiny, PROMPTS, 64)
    handle = submodule(tiny.model, arch.final_norm).register_forward_hook(lambda m, i, output: output + vector)
    try:
        with torch.no_grad():
            expected = tiny.model(
                **encoding, position_ids=(encoding["attention_mask"].cumsum(-1) - 1).clamp_min(0)
            ).logits
    finally:
        handle.remove()
    torch.testing.assert_close(nnsight_logits(tiny, SteerResidual(vector)), expected, rtol=1e-5, atol=1e-5)


def test_intervened_generation_equals_generate_with_a_plain_hook(tiny):
    arch = architecture_of(tiny.model)
    ours = greedy_continuations(tiny, PROMPTS, SetNeurons(NEURONS), new_tokens=6, batch_size=1)
    handles = [
        output_projection(tiny.model, arch, layer).register_forward_pre_hook(setting_hook(layer)) for layer in (0, 1)
    ]
    try:
        expected = []
        for prompt in PROMPTS:
            encoding = encode(tiny, [prompt], 32)
            with torch.no_grad():
                out = tiny.model.generate(
                    **encoding,
                    max_new_tokens=6,
                    min_new_tokens=6,
                    do_sample=False,
                    pad_token_id=tiny.tokenizer.pad_token_id,
                )
            expected.append(out[0, encoding["input_ids"].shape[1] :].tolist())
    finally:
        for handle in handles:
            handle.remove()
    assert ours == expected


def test_interventions_leave_nothing_behind(tiny):
    before = plain_logits(tiny.model, tiny)
    nnsight_logits(tiny, SetNeurons.ablate(NEURONS))
    torch.testing.assert_close(plain_logits(tiny.model, tiny), before)


def test_bad_neuron_tables_are_rejected(tiny):
    with pytest.raises(ValueError, match="missing"):
        SetNeurons(NEURONS.drop(columns="value"))
    with pytest.raises(ValueError, match="twice"):
        SetNeurons(pd.concat([NEURONS, NEURONS]))
    with pytest.raises(ValueError, match="positions"):
        SetNeurons(NEURONS, positions="first")
    with pytest.raises(ValueError, match="do not exist"):
        nnsight_logits(tiny, SetNeurons(NEURONS.assign(layer=[0, 1, 7])))


def test_steering_a_block_output_equals_a_hook_on_that_block(tiny):
    arch = architecture_of(tiny.model)
    vector = torch.randn(tiny.shape[2], generator=torch.Generator().manual_seed(2))
    encoding = encode(tiny, PROMPTS, 64)

    def hook(module, inputs, output):
        if isinstance(output, tuple):
            return (output[0] + vector, *output[1:])
        return output + vector

    handle = decoder_layers(tiny.model, arch)[0].register_forward_hook(hook)
    try:
        with torch.no_grad():
            expected = tiny.model(
                **encoding, position_ids=(encoding["attention_mask"].cumsum(-1) - 1).clamp_min(0)
            ).logits
    finally:
        handle.remove()
    torch.testing.assert_close(nnsight_logits(tiny, SteerResidual(vector, layer=0)), expected, rtol=1e-5, atol=1e-5)
