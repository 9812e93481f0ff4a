"""Neuron cosines are vectorised correctly, ranking is right, and the logit lens reads tokens."""

import torch

from dpo_toxicity.architectures import architecture_of, decoder_layers, submodule, value_vectors
from dpo_toxicity.neurons import logit_lens_tokens, neuron_value_vectors, rank_neurons, value_vector_cosines


def test_vectorised_cosines_equal_a_per_neuron_loop(tiny):
    direction = torch.randn(tiny.shape[2], generator=torch.Generator().manual_seed(0))
    cosines = value_vector_cosines(tiny, direction * 3.0)
    arch = architecture_of(tiny.model)
    for layer in range(len(decoder_layers(tiny.model, arch))):
        values = value_vectors(tiny.model, layer)
        for neuron in (0, 7, values.shape[0] - 1):
            expected = torch.nn.functional.cosine_similarity(values[neuron], direction, dim=0)
            torch.testing.assert_close(cosines[layer, neuron], expected, rtol=1e-5, atol=1e-6)


def test_rank_neurons_orders_by_score_and_locates_neurons():
    scores = torch.tensor([[0.1, 0.9, -0.2], [0.5, -0.8, 0.3]])
    table = rank_neurons(scores, top=3)
    assert table[["layer", "neuron"]].values.tolist() == [[0, 1], [1, 0], [1, 2]]
    assert rank_neurons(scores, descending=False).iloc[0][["layer", "neuron"]].tolist() == [1, 1]


def test_neuron_value_vectors_pick_the_listed_neurons(tiny):
    table = rank_neurons(torch.randn(tiny.shape[0], tiny.shape[1]), top=4)
    picked = neuron_value_vectors(tiny, table)
    for row, (layer, neuron) in enumerate(table[["layer", "neuron"]].values):
        torch.testing.assert_close(picked[row], value_vectors(tiny.model, int(layer))[int(neuron)].float())


def test_logit_lens_of_an_unembedding_row_returns_its_token(tiny):
    unembedding = submodule(tiny.model, architecture_of(tiny.model).unembedding).weight
    token = 150
    top = logit_lens_tokens(tiny, unembedding[token][None, :], top=3)[0]
    assert top[0] == tiny.tokenizer.decode([token])
