"""Neuron cosines are vectorised correctly, ranking is right, the logit lens reads tokens and counts flagged ones."""

import pytest
import torch

from dpo_toxicity.architectures import architecture_of, decoder_layers, submodule, value_vectors
from dpo_toxicity.neurons import (
    flagged_top_tokens,
    logit_lens_enrichment,
    logit_lens_tokens,
    neuron_value_vectors,
    rank_neurons,
    sample_neurons,
    value_vector_cosines,
    vocabulary,
)


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


def test_vocabulary_decodes_every_unembedding_row(tiny):
    words = vocabulary(tiny)
    assert len(words) == submodule(tiny.model, architecture_of(tiny.model).unembedding).weight.shape[0]
    assert words[150] == tiny.tokenizer.decode([150])


def test_sample_neurons_are_distinct_seeded_and_inside_the_model(tiny):
    sample = sample_neurons(tiny, 10, seed=3)
    assert len(set(zip(sample.layer, sample.neuron))) == 10
    assert sample.layer.between(0, tiny.shape[0] - 1).all() and sample.neuron.between(0, tiny.shape[1] - 1).all()
    assert sample.equals(sample_neurons(tiny, 10, seed=3)) and not sample.equals(sample_neurons(tiny, 10, seed=4))


def test_flagged_top_tokens_count_the_marked_tokens_among_each_rows_top(tiny):
    unembedding = submodule(tiny.model, architecture_of(tiny.model).unembedding).weight.detach()
    flagged = torch.zeros(unembedding.shape[0], dtype=torch.bool)
    flagged[150] = True
    # a token's own unembedding row has that token on top (see the logit-lens test above)
    fractions = flagged_top_tokens(tiny, unembedding[[150, 151]], flagged, top=1, rows_per_chunk=1)
    assert fractions.tolist() == [1.0, 0.0]
    with pytest.raises(ValueError, match="unembedding"):
        flagged_top_tokens(tiny, unembedding[[150]], flagged[:10], top=1)


def test_logit_lens_enrichment_places_the_vectors_among_the_null(tiny):
    unembedding = submodule(tiny.model, architecture_of(tiny.model).unembedding).weight.detach()
    flagged = torch.zeros(unembedding.shape[0], dtype=torch.bool)
    flagged[150] = True
    result = logit_lens_enrichment(tiny, unembedding[[150]], unembedding[[150, 151, 152, 153]], flagged, top=1)
    assert (result.share, result.null_mean, result.null_sd) == (1.0, 0.25, 0.5)  # null fractions 1, 0, 0, 0
    assert result.z == pytest.approx(1.5)
    never = logit_lens_enrichment(tiny, unembedding[[150]], unembedding[[151, 152]], flagged, top=1)
    assert never.z == float("inf")  # no random vector is ever flagged
