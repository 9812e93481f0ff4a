"""nnsight reads against plain PyTorch, padding invariance, and the neuron decomposition of the MLP output."""

import numpy as np
import torch

from conftest import PROMPTS
from dpo_toxicity.activations import encode, pooled_final_states, read_layers
from dpo_toxicity.architectures import architecture_of, decoder_layers, output_projection, submodule, value_vectors


def hooked_reads(lm, texts, max_tokens=128):
    """The same reads as read_layers, taken with plain forward hooks on the Hugging Face model."""
    arch = architecture_of(lm.model)
    encoding = encode(lm, texts, max_tokens)
    captured_in, captured_out, handles = {}, {}, []
    for layer in range(len(decoder_layers(lm.model, arch))):

        def hook(module, inputs, output, layer=layer):
            captured_in[layer], captured_out[layer] = inputs[0], output

        handles.append(output_projection(lm.model, arch, layer).register_forward_hook(hook))
    position_ids = (encoding["attention_mask"].cumsum(-1) - 1).clamp_min(0)
    try:
        with torch.no_grad():
            lm.model(**encoding, position_ids=position_ids)
    finally:
        for handle in handles:
            handle.remove()
    return [captured_in[i] for i in sorted(captured_in)], [captured_out[i] for i in sorted(captured_out)], encoding


def test_nnsight_neuron_activations_equal_plain_forward_hooks(tiny):
    reads = read_layers(tiny, PROMPTS)
    hooked_neurons, hooked_outputs, encoding = hooked_reads(tiny, PROMPTS)
    mask = encoding["attention_mask"].bool()
    assert len(reads.neurons) == len(hooked_neurons) == 2
    for ours, reference in zip(reads.neurons + reads.mlp_outputs, hooked_neurons + hooked_outputs):
        assert ours.shape == reference.shape
        torch.testing.assert_close(ours[mask], reference[mask], rtol=0, atol=1e-6)


def test_left_padded_batch_equals_single_prompt_runs(tiny):
    batch = read_layers(tiny, PROMPTS)
    for row, prompt in enumerate(PROMPTS):
        alone = read_layers(tiny, [prompt])
        length = alone.neurons[0].shape[1]
        assert int(batch.mask[row].sum()) == length
        for layer, single in enumerate(alone.neurons):
            # left padding puts the prompt's real tokens in the last `length` positions
            torch.testing.assert_close(batch.neurons[layer][row, -length:], single[0], rtol=1e-4, atol=1e-5)


def test_neuron_writes_sum_to_the_mlp_output(tiny):
    reads = read_layers(tiny, PROMPTS)
    arch = architecture_of(tiny.model)
    for layer, (activations, output) in enumerate(zip(reads.neurons, reads.mlp_outputs)):
        values = value_vectors(tiny.model, layer)  # [d_mlp, d_model]
        writes = activations @ values
        bias = output_projection(tiny.model, arch, layer).bias
        if bias is not None:
            writes = writes + bias
        torch.testing.assert_close(writes, output, rtol=1e-4, atol=1e-5)


def test_pooled_states_do_not_depend_on_batch_companions(tiny):
    short = PROMPTS[1]
    alone = pooled_final_states(tiny, [short], max_tokens=64, batch_size=4)
    with_long = pooled_final_states(tiny, [PROMPTS[0], short, PROMPTS[2]], max_tokens=64, batch_size=4)
    np.testing.assert_allclose(with_long[1], alone[0], rtol=1e-4, atol=1e-5)


def test_pooled_states_are_the_masked_mean_of_the_final_norm_output(tiny):
    arch = architecture_of(tiny.model)
    encoding = encode(tiny, [PROMPTS[0]], max_tokens=64)
    with torch.no_grad():
        hidden = {}
        handle = submodule(tiny.model, arch.final_norm).register_forward_hook(
            lambda module, inputs, output: hidden.setdefault("out", output)
        )
        tiny.model(**encoding)
        handle.remove()
    expected = hidden["out"][0].mean(0).numpy()
    np.testing.assert_allclose(
        pooled_final_states(tiny, [PROMPTS[0]], max_tokens=64)[0], expected, rtol=1e-4, atol=1e-5
    )


def test_pooled_states_keep_input_order_after_length_sorting(tiny):
    texts = [PROMPTS[0], PROMPTS[1], PROMPTS[2], PROMPTS[1]]
    pooled = pooled_final_states(tiny, texts, max_tokens=64, batch_size=2)
    np.testing.assert_allclose(pooled[1], pooled[3], rtol=1e-5, atol=1e-6)
    assert not np.allclose(pooled[0], pooled[1])
