"""Preference-pair generators: settings checks, the best-of-n selection, fluency measures and the criterion."""

import math

import numpy as np
import pytest
import torch

from conftest import PROMPTS
from dpo_toxicity import data
from dpo_toxicity.activations import encode, pooled_final_states
from dpo_toxicity.pairs import (
    GeneratorQuality,
    GeneratorSettings,
    PreferencePair,
    RowSeededSampler,
    SteeringDirections,
    bigram_repetition,
    choose_generator,
    contrastive_direction,
    continuation_perplexity,
    fresh_prompts,
    load_pairs,
    prompt_sets,
    rejected_continuations,
    sampled_continuations,
    save_pairs,
)
from dpo_toxicity.probe import Probe


def random_probe(lm, seed=0):
    direction = np.random.default_rng(seed).normal(size=lm.shape[2]).astype(np.float32)
    return Probe(direction, 0.0, lm.name, lm.weights_hash)


def test_generator_settings_reject_nonsense():
    with pytest.raises(ValueError, match="push"):
        GeneratorSettings("x", push="pplm")
    with pytest.raises(ValueError, match="steer_layer"):
        GeneratorSettings("x", push="contrastive", steer_strength=0.3)
    with pytest.raises(ValueError, match="samples"):
        GeneratorSettings("x", samples=0)


def test_best_of_n_keeps_the_sample_the_probe_scores_most_toxic(tiny):
    probe = random_probe(tiny)
    settings = GeneratorSettings("best of 3", samples=3, new_tokens=6, seed=4)
    directions = SteeringDirections(probe.unit_direction(), {})
    chosen = rejected_continuations(tiny, PROMPTS[:2], probe, settings, directions, batch_size=4)
    candidates = sampled_continuations(tiny, PROMPTS[:2], settings, batch_size=4)
    for pick, group in zip(chosen, candidates):
        scores = probe.predict_proba(pooled_final_states(tiny, group, max_tokens=14))
        assert pick == group[int(np.argmax(scores))]


def test_sampling_is_seeded(tiny):
    settings = GeneratorSettings("s", samples=2, new_tokens=5, seed=7)
    assert sampled_continuations(tiny, PROMPTS, settings) == sampled_continuations(tiny, PROMPTS, settings)


def test_sampled_continuations_do_not_depend_on_the_batch(tiny):
    settings = GeneratorSettings("s", samples=2, new_tokens=5, seed=3)
    one_by_one = sampled_continuations(tiny, PROMPTS, settings, batch_size=1)
    assert sampled_continuations(tiny, PROMPTS, settings, batch_size=3) == one_by_one
    assert sampled_continuations(tiny, PROMPTS, settings, batch_size=64) == one_by_one
    assert sampled_continuations(tiny, PROMPTS, GeneratorSettings("s", samples=2, new_tokens=5, seed=4)) != one_by_one


def test_row_seeded_sampler_draws_from_the_softmax_of_the_top_k():
    rows, temperature = 4000, 2.0
    logits = torch.tensor([2.0, 1.0, 0.0, -1.0, 5.0]).repeat(rows, 1)
    drawn = RowSeededSampler(list(range(rows)), temperature, top_k=3)(None, logits).argmax(-1)
    frequencies = torch.bincount(drawn, minlength=5).double() / rows
    expected = torch.softmax(torch.tensor([2.0, 1.0, -1e9, -1e9, 5.0], dtype=torch.float64) / temperature, -1)
    assert frequencies[[2, 3]].sum() == 0  # outside the top 3: never drawn
    assert torch.allclose(frequencies, expected, atol=0.03)


def test_row_seeded_sampler_needs_one_seed_per_row():
    with pytest.raises(ValueError, match="2 seeds for a batch of 3 rows"):
        RowSeededSampler([0, 1], 1.0, 5)(None, torch.zeros(3, 10))


def test_contrastive_direction_points_from_non_toxic_to_toxic(tiny):
    toxic, calm = [PROMPTS[0]] * 2, [PROMPTS[1], PROMPTS[2]]
    direction = contrastive_direction(tiny, toxic, calm, layer=0)
    assert math.isclose(float(direction.norm()), 1.0, rel_tol=1e-5)


def test_continuation_perplexity_scores_only_the_continuation(tiny):
    prompt, continuation = "Thank you, friend.", " The quick brown fox."
    ours = continuation_perplexity(tiny, [prompt], [continuation])[0]
    ids = encode(tiny, [prompt + continuation], 64)["input_ids"]
    n = len(tiny.tokenizer(continuation, add_special_tokens=False).input_ids)
    with torch.no_grad():
        log_probs = torch.log_softmax(tiny.model(ids).logits[0, :-1], -1).gather(-1, ids[0, 1:, None])[:, 0]
    assert math.isclose(ours, math.exp(-log_probs[-n:].mean().item()), rel_tol=1e-4)


def test_bigram_repetition():
    assert bigram_repetition("a b c d") == 0.0
    assert bigram_repetition("fuck you fuck you fuck you") == pytest.approx(1 - 2 / 5)
    assert bigram_repetition("!!!") == 0.0


def quality(label, gap, perplexity, repetition):
    return GeneratorQuality(GeneratorSettings(label), 0.1, 0.1 + gap, 0.5, perplexity, repetition)


def test_choose_generator_takes_the_largest_gap_among_fluent_generators():
    qualities = [
        quality("degenerate", 0.6, 80.0, 0.4),
        quality("fluent", 0.2, 20.0, 0.02),
        quality("mild", 0.1, 10.0, 0.0),
    ]
    assert choose_generator(qualities, max_perplexity=30, max_repetition=0.1).settings.label == "fluent"
    with pytest.raises(ValueError, match="No generator"):
        choose_generator(qualities, max_perplexity=5, max_repetition=0.1)


def test_pairs_round_trip(tmp_path):
    pairs = [PreferencePair("p", " c", " r"), PreferencePair("q\n", " ü", ' "x"')]
    save_pairs(pairs, tmp_path / "pairs.jsonl")
    assert load_pairs(tmp_path / "pairs.jsonl") == pairs


def test_generations_are_read_back_from_the_cache_for_the_same_inputs_only(tiny_models, tmp_path, monkeypatch):
    import dpo_toxicity.pairs as pairs

    lm = tiny_models["tiny-llama"]
    probe = random_probe(lm)
    settings = GeneratorSettings("best of 2", samples=2, new_tokens=4, seed=1)
    directions = SteeringDirections(probe.unit_direction(), {})
    rejected = rejected_continuations(lm, PROMPTS, probe, settings, directions, batch_size=4, cache=tmp_path)
    chosen = pairs.chosen_continuations(lm, PROMPTS, new_tokens=4, cache=tmp_path)
    monkeypatch.setattr(pairs, "greedy_continuations", lambda *args, **kwargs: pytest.fail("generated again"))
    monkeypatch.setattr(pairs, "sampled_continuations", lambda *args, **kwargs: pytest.fail("sampled again"))
    assert rejected_continuations(lm, PROMPTS, probe, settings, directions, batch_size=4, cache=tmp_path) == rejected
    assert pairs.chosen_continuations(lm, PROMPTS, new_tokens=4, cache=tmp_path) == chosen
    with pytest.raises(pytest.fail.Exception, match="sampled again"):  # another probe: another key
        rejected_continuations(
            lm, PROMPTS, random_probe(lm, seed=1), settings, directions, batch_size=4, cache=tmp_path
        )


SENTENCES = [f"Sentence number {i}." for i in range(30)]


def test_heldout_prompts_are_neither_training_nor_trial_prompts():
    sets = prompt_sets(SENTENCES, trial=4, training=10, heldout=6)
    assert (len(sets.trial), len(sets.training), len(sets.heldout)) == (4, 10, 6)
    assert not set(sets.training) & set(sets.trial)
    assert not set(sets.heldout) & (set(sets.training) | set(sets.trial))
    assert len(set(sets.heldout)) == 6 and set(sets.heldout) <= set(SENTENCES)
    assert prompt_sets(SENTENCES, trial=4, training=10, heldout=6) == sets  # seeded


def test_the_heldout_prompts_leave_the_trial_and_training_prompts_as_they_were():
    without = prompt_sets(SENTENCES, trial=4, training=10, heldout=0)
    with_heldout = prompt_sets(SENTENCES, trial=4, training=10, heldout=12)
    assert without.heldout == []
    assert (with_heldout.trial, with_heldout.training) == (without.trial, without.training)


def test_heldout_prompts_stop_where_the_sentences_run_out():
    sets = prompt_sets(SENTENCES, trial=4, training=20, heldout=10)
    assert sorted(sets.heldout) == sorted(set(SENTENCES) - set(sets.trial) - set(sets.training))
    assert fresh_prompts(SENTENCES, 5, exclude=SENTENCES[:28], seed=0) == SENTENCES[28:]


def test_training_prompts_are_those_the_chapter_drew_before_heldout_pairs_existed():
    sentences = data.wikitext2_validation_sentences()
    trial = data.seeded_subset(sentences, 16, seed=1)
    training = [s for s in data.seeded_subset(sentences, 192 + 16, seed=2) if s not in set(trial)][:192]
    sets = prompt_sets(sentences, trial=16, training=192, heldout=32)
    assert (sets.trial, sets.training) == (trial, training)
