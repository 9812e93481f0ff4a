"""The evaluation harness: batched generation equals single runs, perplexity equals Hugging Face's loss, F1."""

import math
from dataclasses import replace

import numpy as np
import pandas as pd
import pytest
import torch

from conftest import PROMPTS
from dpo_toxicity.evaluation import (
    bag_of_tokens_f1,
    bootstrap_interval,
    greedy_continuations,
    paired_difference,
    perplexity,
)
from dpo_toxicity.interventions import SetNeurons

TEXT = " ".join(PROMPTS * 6)


def test_batched_greedy_generation_equals_one_prompt_at_a_time(tiny):
    batched = greedy_continuations(tiny, PROMPTS, new_tokens=5, batch_size=3)
    single = [greedy_continuations(tiny, [prompt], new_tokens=5, batch_size=1)[0] for prompt in PROMPTS]
    assert batched == single
    assert all(len(ids) == 5 for ids in batched)


def test_prompts_are_cut_to_their_first_tokens(tiny):
    long_prompt = PROMPTS[0] * 3
    cut = tiny.tokenizer.decode(tiny.tokenizer(long_prompt).input_ids[:8])
    assert greedy_continuations(tiny, [long_prompt], prompt_tokens=8, new_tokens=4) == greedy_continuations(
        tiny, [cut], prompt_tokens=8, new_tokens=4
    )


def test_perplexity_equals_huggingface_loss_on_one_window(tiny):
    ids = torch.tensor(tiny.tokenizer(TEXT, add_special_tokens=False).input_ids)[None, :100]
    text = tiny.tokenizer.decode(ids[0])
    ours = perplexity(tiny, text, window=1024)
    with torch.no_grad():
        loss = tiny.model(ids, labels=ids).loss
    assert ours.tokens == ids.shape[1] - 1
    assert math.isclose(ours.value, math.exp(loss.item()), rel_tol=1e-4)


def test_perplexity_pools_windows_by_token_count(tiny):
    whole = perplexity(tiny, TEXT, window=40)
    nll = whole.window_nll
    assert len(nll) > 2 and whole.low <= whole.value <= whole.high
    assert math.isclose(perplexity(tiny, TEXT, window=40, max_windows=1).value, math.exp(nll[0]), rel_tol=1e-6)


def test_one_perplexity_window_gives_no_interval(tiny):
    single = perplexity(tiny, TEXT, window=40, max_windows=1)
    assert math.isnan(single.low) and math.isnan(single.high) and not math.isnan(single.value)


def test_perplexity_sees_the_intervention(tiny):
    ablate = SetNeurons.ablate(pd.DataFrame({"layer": [0, 1] * 32, "neuron": list(range(64))}))
    assert perplexity(tiny, TEXT, ablate, window=64).value != perplexity(tiny, TEXT, window=64).value


def test_bag_of_tokens_f1_counts_multisets():
    assert bag_of_tokens_f1([1, 2, 2, 3], [2, 2, 4, 5], ignore=set()) == 0.5
    assert bag_of_tokens_f1([1, 1, 0], [1, 0], ignore={0}) == 2 * (0.5 * 1.0) / 1.5
    assert bag_of_tokens_f1([7], [8], ignore=set()) == 0.0


def test_bootstrap_intervals_cover_the_mean_and_shrink_with_data():
    rng = np.random.default_rng(0)
    small, large = rng.normal(size=50), rng.normal(size=5000)
    low, high = bootstrap_interval(small)
    assert low < small.mean() < high
    large_low, large_high = bootstrap_interval(large)
    assert large_high - large_low < (high - low) / 5
    mean, low, high = paired_difference(large + 1.0, large)
    assert math.isclose(mean, 1.0) and low <= 1.0 <= high


class _LengthScorer:
    """Scores a continuation by its length: deterministic, no model."""

    def score(self, texts):
        return np.array([len(text) / 100 for text in texts])


def test_a_suite_can_skip_f1_and_its_row_says_so(tiny):
    from dpo_toxicity.evaluation import EvaluationSuite

    paragraph = " ".join(PROMPTS * 2)  # over 52 tokens (an F1 item), under the tiny models' 256 positions
    suite = EvaluationSuite(PROMPTS[:2], paragraph, 1, [paragraph], _LengthScorer(), batch_size=2)
    with_f1 = suite.evaluate(tiny, "with F1", progress=False)
    without = suite.evaluate(tiny, "without F1", progress=False, f1=False)
    assert len(with_f1.f1) == 1 and len(without.f1) == 0
    assert math.isnan(without.row()["F1"]) and not math.isnan(with_f1.row()["F1"])
    np.testing.assert_allclose(without.toxicity, with_f1.toxicity)
    assert without.perplexity.value == with_f1.perplexity.value
    assert with_f1.row()["PPL 95% CI"] == "one window: no interval"


def test_a_suite_generates_toxicity_and_f1_continuations_as_separate_calls_would(tiny):
    from dpo_toxicity.evaluation import EvaluationSuite, decode_all, f1_items

    paragraphs = [" ".join(PROMPTS * 2), " ".join(reversed(PROMPTS * 2))]
    suite = EvaluationSuite(PROMPTS, paragraphs[0], 1, paragraphs, _LengthScorer(), batch_size=8)
    evaluation = suite.evaluate(tiny, "merged", progress=False)
    assert evaluation.continuations == decode_all(tiny, greedy_continuations(tiny, PROMPTS, batch_size=1))
    f1_prompts, golds = f1_items(tiny, paragraphs)
    ignore = {tiny.tokenizer.pad_token_id, tiny.tokenizer.eos_token_id}
    separate = [
        bag_of_tokens_f1(p, g, ignore) for p, g in zip(greedy_continuations(tiny, f1_prompts, batch_size=1), golds)
    ]
    assert len(golds) == 2
    np.testing.assert_allclose(evaluation.f1, separate)


def test_share_of_drop_is_the_ratio_of_mean_drops_with_an_interval_around_it():
    from dpo_toxicity.evaluation import share_of_drop

    rng = np.random.default_rng(1)
    base = rng.uniform(0.3, 0.9, size=400)
    reference = base - 0.2 + rng.normal(scale=0.05, size=400)
    half = base - 0.1 + rng.normal(scale=0.05, size=400)
    share, low, high = share_of_drop(base, half, reference)
    assert math.isclose(share, (base - half).mean() / (base - reference).mean())
    assert low < share < high and 0.4 < low and high < 0.6
    assert share_of_drop(base, reference, reference)[0] == 1.0


def test_the_authors_scored_text_keeps_a_cut_prompt_but_not_a_whole_one(tiny):
    from dpo_toxicity.evaluation import authors_scored_texts

    short, long = PROMPTS[0], " ".join(PROMPTS * 3)
    assert len(tiny.tokenizer(long).input_ids) > 32 >= len(tiny.tokenizer(short).input_ids)
    texts = authors_scored_texts(tiny, [short, long], [" and then", " and so"])
    cut = tiny.tokenizer.decode(tiny.tokenizer(long, add_special_tokens=False).input_ids[:32])
    assert texts == [" and then", cut + " and so"]


def _cached_suite(folder):
    from dpo_toxicity.evaluation import EvaluationSuite

    paragraph = " ".join(PROMPTS * 2)
    return EvaluationSuite(PROMPTS[:2], paragraph, 1, [paragraph], _LengthScorer(), batch_size=2, cache=folder)


def test_a_cached_evaluation_is_read_back_without_running_the_model(tiny_models, tmp_path, monkeypatch):
    import dpo_toxicity.evaluation as evaluation

    tiny = tiny_models["tiny-llama"]  # the cache does not depend on the architecture

    ablation = SetNeurons.ablate(pd.DataFrame({"layer": [0], "neuron": [1]}))
    first = _cached_suite(tmp_path).evaluate(tiny, "ablate", ablation, progress=False)
    assert len(list(tmp_path.glob("*.json"))) == 1
    monkeypatch.setattr(evaluation, "greedy_continuations", lambda *args, **kwargs: pytest.fail("ran the model"))
    same_ablation = SetNeurons.ablate(pd.DataFrame({"layer": [0], "neuron": [1]}))
    again = _cached_suite(tmp_path).evaluate(tiny, "ablate", same_ablation, progress=False)
    np.testing.assert_array_equal(again.toxicity, first.toxicity)
    np.testing.assert_array_equal(again.f1, first.f1)
    np.testing.assert_array_equal(again.perplexity.window_nll, first.perplexity.window_nll)
    assert again.continuations == first.continuations and again.row() == first.row()


@pytest.mark.parametrize("change", ["intervention", "name", "f1", "prompts"])
def test_a_different_evaluation_is_not_served_from_the_cache(tiny_models, tmp_path, change):
    tiny = tiny_models["tiny-llama"]
    ablation = SetNeurons.ablate(pd.DataFrame({"layer": [0], "neuron": [1]}))
    other_ablation = SetNeurons.ablate(pd.DataFrame({"layer": [0], "neuron": [2]}))
    suite = _cached_suite(tmp_path)
    suite.evaluate(tiny, "row", ablation, progress=False)
    if change == "intervention":
        suite.evaluate(tiny, "row", other_ablation, progress=False)
    elif change == "name":
        suite.evaluate(tiny, "another row", ablation, progress=False)
    elif change == "f1":
        suite.evaluate(tiny, "row", ablation, progress=False, f1=False)
    else:
        replace(suite, toxicity_prompts=PROMPTS[1:]).evaluate(tiny, "row", ablation, progress=False)
    assert len(list(tmp_path.glob("*.json"))) == 2


def test_intervention_fingerprints_follow_what_the_intervention_does():
    from dpo_toxicity.interventions import ScaleNeurons, fingerprint

    neurons = pd.DataFrame({"layer": [0, 1], "neuron": [3, 4]})
    assert fingerprint(SetNeurons.ablate(neurons)) == fingerprint(SetNeurons.ablate(neurons.copy()))
    assert fingerprint(SetNeurons.ablate(neurons)) != fingerprint(SetNeurons.ablate(neurons.iloc[:1]))
    patched = neurons.assign(activation_dpo=[0.5, 0.25])
    assert fingerprint(SetNeurons.patch(patched)) != fingerprint(SetNeurons.patch(patched, positions="last"))
    moved = patched.assign(activation_dpo=[0.5, 0.3])
    assert fingerprint(SetNeurons.patch(patched)) != fingerprint(SetNeurons.patch(moved))
    assert fingerprint(SetNeurons.ablate(neurons)) != fingerprint(ScaleNeurons(neurons.assign(factor=0.0)))
    assert fingerprint(None) == "none"
    with pytest.raises(TypeError, match="dataclasses"):
        fingerprint(lambda model, arch: None)
