"""DPO on a tiny random model: the margin grows, the base model is untouched, the cache round-trips."""

import json
import re
from dataclasses import replace

import numpy as np
import pytest
import torch
from tiny_prompts import PROMPTS

import dpo_toxicity.dpo as dpo_module
from dpo_toxicity import data
from dpo_toxicity.activations import neuron_activations
from dpo_toxicity.artefacts import DPO_RECORD_FILE, HELDOUT_PAIRS_FILE, PAIRS_FILE
from dpo_toxicity.dpo import (
    PAPER_GPT2_SETTINGS,
    DPOSettings,
    completion_log_probs,
    dpo_folder,
    dpo_model,
    preference_pairs,
    train_dpo,
    validation_perplexity,
    validation_windows,
)
from dpo_toxicity.models import load_model
from dpo_toxicity.pairs import PreferencePair

# A fixed toxic-ish rejected continuation and a fixed polite chosen one, so a few steps can separate them.
PAIRS = [PreferencePair(prompt, " for the kind words.", " you stupid idiot, I hate you.") for prompt in PROMPTS[:8]]
FAST = DPOSettings(learning_rate=1e-3, batch_size=4, epochs=3, seed=0)  # 6 steps


pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def lm():
    return load_model("tiny-llama", device="cpu")


@pytest.fixture(scope="module")
def trained(lm):
    return train_dpo(lm, PAIRS, FAST)


def test_training_lowers_the_loss_and_widens_the_reward_margin(trained):
    history = trained.history
    assert list(history.index) == list(range(1, 7))
    assert history.loss.iloc[0] == pytest.approx(np.log(2), abs=1e-5)  # step 1 sees the reference itself
    assert history.reward_margin.iloc[0] == pytest.approx(0.0, abs=1e-5)
    assert history.loss.iloc[-1] < history.loss.iloc[0] - 0.1
    assert history.reward_margin.iloc[-1] > 0.2
    assert history.reward_accuracy.iloc[-1] == 1.0
    assert (history.reward_chosen.iloc[-1] > 0) and (history.reward_rejected.iloc[-1] < 0)


def test_dpo_model_prefers_chosen_over_rejected_more_than_the_base(lm, trained):
    base = completion_log_probs(lm, PAIRS, FAST)
    tuned = completion_log_probs(trained.model, PAIRS, FAST)
    gain = (tuned.chosen - tuned.rejected) - (base.chosen - base.rejected)
    assert (gain > 0).all()
    assert (tuned.chosen > base.chosen).all() and (tuned.rejected < base.rejected).all()


@pytest.mark.parametrize("name", ["tiny-gpt2", "tiny-llama", "tiny-gemma2", "tiny-gemma3"])
def test_log_probs_match_what_trl_computes(name):
    # With one batch holding every pair, trl's first logged log-probs are the reference's means over all pairs.
    lm = load_model(name, device="cpu")
    settings = DPOSettings(batch_size=len(PAIRS))
    varied = [PreferencePair(p.prompt, f" {p.prompt.lower()} again.", p.rejected) for p in PAIRS]
    first = train_dpo(lm, varied, settings).history.iloc[0]
    ours = completion_log_probs(lm, varied, settings)
    assert ours.chosen.mean() == pytest.approx(first.log_prob_chosen, abs=1e-4)
    assert ours.rejected.mean() == pytest.approx(first.log_prob_rejected, abs=1e-4)


def test_base_model_is_unchanged_and_the_dpo_model_is_frozen(lm):
    neuron_activations(lm, ["Thank you."], max_tokens=8)  # nnsight now wraps the base model's modules
    before = {name: tensor.clone() for name, tensor in lm.model.state_dict().items()}
    forward_before = lm.model.__dict__.get("forward")
    result = train_dpo(lm, PAIRS[:4], DPOSettings(learning_rate=1e-3, batch_size=4))
    after = lm.model.state_dict()
    assert all(torch.equal(before[name], after[name]) for name in before)
    assert lm.model.__dict__.get("forward") is forward_before
    assert not lm.model.training and not any(p.requires_grad for p in lm.model.parameters())
    dpo = result.model
    assert dpo.model is not lm.model and dpo.tokenizer is lm.tokenizer
    assert dpo.name == "tiny-llama-dpo" and dpo.weights_hash.startswith("dpo-")
    assert not dpo.model.training and not any(p.requires_grad for p in dpo.model.parameters())
    assert "forward" not in dpo.model.__dict__  # neither trl's fused head nor nnsight's wrapper is left on it
    assert lm.tokenizer.padding_side == "left"
    changed = [name for name in before if not torch.equal(before[name], dpo.model.state_dict()[name])]
    assert changed


def test_a_frozen_reference_copy_gives_the_precomputed_references_steps(lm, monkeypatch):
    import trl

    references, train = [], trl.DPOTrainer.train
    monkeypatch.setattr(
        trl.DPOTrainer,
        "train",
        lambda self: (
            references.append(
                (self.args.precompute_ref_log_probs, self.ref_model is not None and not self.ref_model.training)
            ),
            train(self),
        )[1],
    )
    precomputed = train_dpo(lm, PAIRS, FAST)
    on_the_fly = train_dpo(lm, PAIRS, replace(FAST, precompute_reference=False))
    assert references == [(True, False), (False, True)]  # a pass and no copy, then a frozen copy and no pass
    assert len(on_the_fly.history) == len(precomputed.history) == 6
    assert on_the_fly.history["loss"].iloc[-1] < on_the_fly.history["loss"].iloc[0]  # it trained
    for column in ("loss", "reward_margin", "log_prob_rejected"):
        np.testing.assert_allclose(on_the_fly.history[column], precomputed.history[column], rtol=1e-4, atol=1e-5)
    for name, tensor in precomputed.model.model.state_dict().items():
        torch.testing.assert_close(on_the_fly.model.model.state_dict()[name], tensor, rtol=1e-4, atol=1e-6)


def test_the_base_weights_are_set_aside_during_training_and_come_back_tied(monkeypatch):
    import trl

    tied_lm = load_model("tiny-gemma3", device="cpu")  # Gemma 3 ties its unembedding to its embedding

    def embeddings_tied():
        return tied_lm.model.get_input_embeddings().weight is tied_lm.model.get_output_embeddings().weight

    held, train = [], trl.DPOTrainer.train
    monkeypatch.setattr(
        trl.DPOTrainer,
        "train",
        lambda self: (held.append(sum(p.numel() for p in tied_lm.model.parameters())), train(self))[1],
    )
    assert embeddings_tied()
    before = {name: p.detach().clone() for name, p in tied_lm.model.named_parameters()}
    train_dpo(tied_lm, PAIRS[:4], DPOSettings(learning_rate=1e-3, batch_size=4))
    assert held == [0]
    assert embeddings_tied()
    after = dict(tied_lm.model.named_parameters())
    assert after.keys() == before.keys() and all(torch.equal(after[n], before[n]) for n in before)


def test_training_again_on_the_same_pairs_gives_the_same_weights_bit_for_bit(lm, trained):
    # A bundle run carried to another machine trains its DPO model again and reuses rows cached with the first.
    again = dict(train_dpo(lm, PAIRS, FAST).model.model.named_parameters())
    first = dict(trained.model.model.named_parameters())
    assert again.keys() == first.keys()
    assert all(torch.equal(again[name], first[name]) for name in first)
    assert not all(torch.equal(first[name], parameter) for name, parameter in lm.model.named_parameters())


def test_accumulating_micro_batches_gives_the_same_steps(lm, monkeypatch):
    import trl

    import dpo_toxicity.dpo as dpo_module

    passes, train = [], trl.DPOTrainer.train
    monkeypatch.setattr(
        trl.DPOTrainer,
        "train",
        lambda self: (
            passes.append((self.args.per_device_train_batch_size, self.args.gradient_accumulation_steps)),
            train(self),
        )[1],
    )
    monkeypatch.setattr(dpo_module, "MICRO_BATCH_PAIRS", 4)
    whole = train_dpo(lm, PAIRS, FAST).history
    monkeypatch.setattr(dpo_module, "MICRO_BATCH_PAIRS", 1)
    accumulated = train_dpo(lm, PAIRS, FAST).history
    assert passes == [(FAST.batch_size, 1), (1, FAST.batch_size)]
    assert len(whole) == len(accumulated) == 6
    np.testing.assert_allclose(accumulated["loss"], whole["loss"], rtol=1e-4, atol=1e-5)


def test_cache_round_trips_without_retraining(lm, tmp_path, monkeypatch):
    monkeypatch.setenv("DPO_TOX_CACHE", str(tmp_path))
    first = dpo_model(lm, PAIRS, FAST)
    assert not first.from_cache and first.folder == dpo_folder(lm, PAIRS, FAST)
    second = dpo_model(lm, PAIRS, FAST)
    assert second.from_cache and second.folder == first.folder
    first_weights, second_weights = first.model.model.state_dict(), second.model.model.state_dict()
    assert all(torch.equal(first_weights[name], second_weights[name]) for name in first_weights)
    assert second.history.equals(first.history)
    assert second.validation.equals(first.validation) and list(first.validation.index) == [0, 5, 6]
    assert (second.kept_step, second.planned_steps, second.validation_seconds) == (
        first.kept_step,
        first.planned_steps,
        first.validation_seconds,
    )
    assert (second.training_seconds, second.settings, second.n_pairs) == (first.training_seconds, FAST, len(PAIRS))
    assert second.model.weights_hash == first.model.weights_hash
    assert not second.model.model.training and second.model.tokenizer is lm.tokenizer
    assert [path.name for path in (tmp_path / "dpo").iterdir()] == [first.folder.name]  # no staging folder left
    record = json.loads((first.folder / DPO_RECORD_FILE).read_text())
    assert record["base_weights_hash"] == lm.weights_hash


def test_cache_key_follows_pairs_and_settings(lm, tmp_path, monkeypatch):
    monkeypatch.setenv("DPO_TOX_CACHE", str(tmp_path))
    folder = dpo_folder(lm, PAIRS, FAST)
    assert dpo_folder(lm, [dict(prompt=p.prompt, chosen=p.chosen, rejected=p.rejected) for p in PAIRS], FAST) == folder
    assert dpo_folder(lm, PAIRS[:-1], FAST) != folder
    assert dpo_folder(lm, PAIRS, DPOSettings(learning_rate=1e-3, batch_size=4, epochs=3, seed=1)) != folder
    assert dpo_folder(load_model("tiny-llama", device="cpu", seed=1), PAIRS, FAST) != folder


def test_an_unfinished_cache_folder_is_retrained(lm, tmp_path, monkeypatch):
    monkeypatch.setenv("DPO_TOX_CACHE", str(tmp_path))
    settings = DPOSettings(learning_rate=1e-3, batch_size=4)
    folder = dpo_folder(lm, PAIRS[:4], settings)
    folder.mkdir(parents=True)
    (folder / "config.json").write_text("{}")  # what an interrupted writer could have left
    result = dpo_model(lm, PAIRS[:4], settings)
    assert not result.from_cache and (folder / DPO_RECORD_FILE).is_file()
    assert dpo_model(lm, PAIRS[:4], settings).from_cache


def truncate(path):
    """Cut a saved file in half, as an interrupted copy or a full disk would."""
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])


def drop_history(path):
    """Edit a record by hand, leaving valid JSON without one of its fields."""
    record = json.loads(path.read_text())
    del record["history"]
    path.write_text(json.dumps(record))


@pytest.mark.parametrize(
    "broken, damage",
    [(DPO_RECORD_FILE, truncate), (DPO_RECORD_FILE, drop_history), ("model.safetensors", truncate)],
    ids=["truncated record", "edited record", "truncated weights"],
)
def test_an_unreadable_cache_folder_is_reported_by_path_and_retrained(lm, tmp_path, monkeypatch, broken, damage):
    monkeypatch.setenv("DPO_TOX_CACHE", str(tmp_path))
    settings = DPOSettings(learning_rate=1e-3, batch_size=4)
    first = dpo_model(lm, PAIRS[:4], settings)
    damage(first.folder / broken)
    record = re.escape(str(first.folder / DPO_RECORD_FILE))
    with pytest.warns(UserWarning, match=f"{record} cannot be read .*computed again"):
        again = dpo_model(lm, PAIRS[:4], settings)
    assert not again.from_cache and again.folder == first.folder
    assert all(
        torch.equal(again.model.model.state_dict()[name], weights)
        for name, weights in first.model.model.state_dict().items()
    )
    assert dpo_model(lm, PAIRS[:4], settings).from_cache


def test_settings_are_hashable_and_serialisable():
    assert hash(DPOSettings()) == hash(DPOSettings()) and DPOSettings() != PAPER_GPT2_SETTINGS
    values = json.loads(json.dumps(PAPER_GPT2_SETTINGS.as_dict()))
    assert DPOSettings.from_dict(values) == PAPER_GPT2_SETTINGS
    with pytest.raises(ValueError, match="Unknown DPOSettings fields"):
        DPOSettings.from_dict({"beta": 0.1, "lr": 1e-5})
    with pytest.raises(ValueError, match="batch_size"):
        DPOSettings(batch_size=0)
    with pytest.raises(ValueError, match="max_perplexity_rise must be 0 or more"):
        DPOSettings(max_perplexity_rise=-0.1)
    with pytest.raises(ValueError, match="validation_every"):
        DPOSettings(validation_every=0)


def test_pairs_accept_objects_and_mappings():
    class Row:
        prompt, chosen, rejected = "A", " b", " c"

    assert (
        preference_pairs([Row(), {"prompt": "A", "chosen": " b", "rejected": " c"}])
        == [PreferencePair("A", " b", " c")] * 2
    )


@pytest.mark.parametrize(
    "pairs, message",
    [
        ([], "non-empty"),
        ([{"prompt": "A", "chosen": " b"}], "pair 0 has no string field 'rejected'"),
        ([PreferencePair("A", " b", " c"), object()], "pair 1 has no string field 'prompt'"),
        ([{"prompt": "A", "chosen": " b", "rejected": 3}], "'rejected'"),
        ([PreferencePair("A", "", " c")], "empty continuation"),
    ],
)
def test_bad_pairs_raise_a_clear_error(lm, pairs, message):
    with pytest.raises(ValueError, match=message):
        train_dpo(lm, pairs, FAST)


def test_long_texts_are_truncated_to_the_token_budgets(lm):
    settings = DPOSettings(max_prompt_tokens=4, max_completion_tokens=3)
    long = PreferencePair(
        "The quick brown fox jumps over the lazy dog.",
        " Thank you, friend, for the kind words.",
        " You are a stupid idiot and I hate you.",
    )
    short = PreferencePair(
        lm.tokenizer.decode(lm.tokenizer(long.prompt)["input_ids"][-4:]),
        lm.tokenizer.decode(lm.tokenizer(long.chosen)["input_ids"][:3]),
        lm.tokenizer.decode(lm.tokenizer(long.rejected)["input_ids"][:3]),
    )
    np.testing.assert_allclose(completion_log_probs(lm, [long], settings), completion_log_probs(lm, [short], settings))


def test_run_dpo_model_reads_the_runs_pairs_and_names_chapter_2_when_missing(lm, tmp_path, monkeypatch):
    from dpo_toxicity.dpo import run_dpo_model, settings_for
    from dpo_toxicity.pairs import save_pairs
    from dpo_toxicity.paths import artefact_dir

    monkeypatch.setenv("DPO_TOX_CACHE", str(tmp_path))
    with pytest.raises(FileNotFoundError, match="02_dpo"):
        run_dpo_model(lm, "ci")
    save_pairs(PAIRS, artefact_dir(lm.name, "ci") / PAIRS_FILE)
    assert run_dpo_model(lm, "ci").folder == dpo_folder(lm, PAIRS, settings_for(lm, "ci"))


def test_heldout_pairs_are_read_from_their_own_file_and_name_chapter_2_when_missing(tmp_path, monkeypatch):
    from dpo_toxicity.dpo import heldout_pairs
    from dpo_toxicity.pairs import save_pairs
    from dpo_toxicity.paths import artefact_dir

    monkeypatch.setenv("DPO_TOX_CACHE", str(tmp_path))
    save_pairs(PAIRS, artefact_dir("some-model", "ci") / PAIRS_FILE)
    with pytest.raises(FileNotFoundError, match=r"02_dpo.*'some-model'.*'ci'"):
        heldout_pairs("some-model", "ci")
    held_out = [PreferencePair("Another prompt", " a calm reply.", " a rude reply.")]
    save_pairs(held_out, artefact_dir("some-model", "ci") / HELDOUT_PAIRS_FILE)
    assert heldout_pairs("some-model", "ci") == held_out
    with pytest.raises(FileNotFoundError):
        heldout_pairs("some-model", "full")


def test_run_dpo_model_can_train_on_another_runs_pairs(lm, tmp_path, monkeypatch):
    from dpo_toxicity.dpo import run_dpo_model, settings_for
    from dpo_toxicity.pairs import save_pairs
    from dpo_toxicity.paths import artefact_dir

    monkeypatch.setenv("DPO_TOX_CACHE", str(tmp_path))
    save_pairs(PAIRS, artefact_dir(lm.name, "ci") / PAIRS_FILE)
    with pytest.raises(FileNotFoundError, match="'default-model'"):
        run_dpo_model(lm, "ci", pairs_model="default-model")
    save_pairs(PAIRS[:3], artefact_dir("default-model", "ci") / PAIRS_FILE)
    settings = settings_for(lm, "ci")
    assert run_dpo_model(lm, "ci", pairs_model="default-model").folder == dpo_folder(lm, PAIRS[:3], settings)
    first_two = run_dpo_model(lm, "ci", pairs_model="default-model", max_pairs=2)
    assert first_two.n_pairs == 2 and first_two.folder == dpo_folder(lm, PAIRS[:2], settings)


def test_the_learning_rate_is_the_models_times_the_profiles_factor_and_the_reference_and_cadence_the_profiles(lm):
    from dataclasses import replace

    from dpo_toxicity.dpo import settings_for
    from dpo_toxicity.profiles import CI, FULL

    default_rate = DPOSettings().learning_rate
    assert FULL.dpo_rate_factor < 1  # the long profile lowers the rate, or this test could not tell the two apart
    assert not FULL.precompute_dpo_reference  # and keeps a reference copy, unlike the ci profile and the default
    assert CI.dpo_validation_every != FULL.dpo_validation_every  # the two profiles check at different cadences
    long_run = DPOSettings(
        learning_rate=default_rate * FULL.dpo_rate_factor,
        precompute_reference=False,
        validation_every=FULL.dpo_validation_every,
    )
    short_run = DPOSettings(validation_every=CI.dpo_validation_every)  # the spec names no rate: the default's
    assert settings_for(lm, "ci") == short_run
    assert settings_for(lm, "full") == long_run
    tuned = replace(lm, spec=replace(lm.spec, dpo_learning_rate=2e-5))
    assert settings_for(tuned, "ci") == replace(short_run, learning_rate=2e-5)
    assert settings_for(tuned, "full") == replace(long_run, learning_rate=2e-5 * FULL.dpo_rate_factor)
    with pytest.raises(ValueError, match="Unknown profile 'nope'"):
        settings_for(lm, "nope")


def test_training_leaves_trls_unembedding_switch_as_it_was(trained):
    # train_dpo makes trl unembed only the continuations while it trains; other trl users must see trl's own choice.
    import trl.trainer.utils

    assert trl.trainer.utils._use_triton(torch.device("cpu")) is False


def test_the_stopping_rule_stops_at_the_first_check_over_budget_and_keeps_the_last_within(lm, monkeypatch):
    # Scripted perplexities at steps 0, 2, 4: +5 % is within a 10 % budget, +15 % is not.
    scripted, snapshots = [100.0, 105.0, 115.0], []

    def measure(model, windows):
        snapshots.append({name: tensor.detach().clone() for name, tensor in model.state_dict().items()})
        return scripted[len(snapshots) - 1]

    monkeypatch.setattr(dpo_module, "validation_perplexity", measure)
    result = train_dpo(lm, PAIRS, replace(FAST, max_perplexity_rise=0.10, validation_every=2))
    assert (result.steps, result.kept_step, result.planned_steps) == (4, 2, 6)
    assert result.validation["perplexity"].to_dict() == {0: 100.0, 2: 105.0, 4: 115.0}
    assert result.perplexity_limit == pytest.approx(110.0)
    kept = result.model.model.state_dict()
    assert all(torch.equal(kept[name], snapshots[1][name]) for name in kept)  # step 2's weights, not step 4's
    assert not all(torch.equal(kept[name], snapshots[2][name]) for name in kept)


def test_without_a_budget_every_planned_step_is_trained_and_kept(lm, monkeypatch):
    monkeypatch.setattr(dpo_module, "validation_perplexity", lambda model, windows: pytest.fail("checked"))
    result = train_dpo(lm, PAIRS, replace(FAST, max_perplexity_rise=None))
    assert (result.steps, result.kept_step, result.planned_steps) == (6, 6, 6)
    assert result.validation.empty and result.perplexity_limit is None


@pytest.mark.parametrize("name", ["tiny-llama", "tiny-gemma3"])
def test_validation_perplexity_equals_plain_cross_entropy_in_train_mode_after(name):
    from trl.trainer.utils import add_fused_lm_head

    model = load_model(name, device="cpu").model
    policy = dpo_module._trainable_copy(model)
    add_fused_lm_head(policy)
    windows = validation_windows(load_model(name, device="cpu").tokenizer, 2, window=64)
    with torch.no_grad():
        losses = [torch.nn.functional.cross_entropy(model(window).logits[0, :-1], window[0, 1:]) for window in windows]
    with dpo_module._unembed_continuations_only():
        assert validation_perplexity(policy, windows) == pytest.approx(
            float(torch.stack(losses).mean().exp()), rel=1e-5
        )
    assert policy.training


def test_without_trls_triton_switch_the_unembedding_patch_warns_and_changes_nothing(monkeypatch):
    import trl.trainer.utils

    monkeypatch.delattr(trl.trainer.utils, "_use_triton")
    monkeypatch.setattr(trl, "__version__", "1.13.0")
    with pytest.warns(UserWarning, match=r"trl 1\.13\.0 has no trl\.trainer\.utils\._use_triton"):
        with dpo_module._unembed_continuations_only():
            pass
    assert not hasattr(trl.trainer.utils, "_use_triton")


def test_without_trls_fused_head_validation_perplexity_warns_and_equals_the_fused_one(lm, monkeypatch):
    import trl.trainer.utils

    windows = validation_windows(lm.tokenizer, 2, window=64)
    fused = dpo_module._trainable_copy(lm.model)
    trl.trainer.utils.add_fused_lm_head(fused)
    expected = validation_perplexity(fused, windows)
    monkeypatch.delattr(trl.trainer.utils, "add_fused_lm_head")
    monkeypatch.setattr(trl, "__version__", "1.13.0")
    with pytest.warns(UserWarning, match=r"trl 1\.13\.0 has no fused LM head"):
        assert validation_perplexity(lm.model, windows) == pytest.approx(expected, rel=1e-5)


def test_log_probs_under_another_trl_release_warn_that_its_tokenisation_may_differ(lm, monkeypatch):
    import trl

    monkeypatch.setattr(trl, "__version__", "1.13.0")
    with pytest.warns(UserWarning, match=r"tokenises pairs as trl 1\.16 does; trl 1\.13\.0"):
        completion_log_probs(lm, PAIRS[:1], FAST)


def test_validation_windows_come_from_the_validation_split_not_the_test_split(lm):
    windows = validation_windows(lm.tokenizer, 3, window=128)
    assert [tuple(window.shape) for window in windows] == [(1, 128)] * 3
    text = lm.tokenizer.decode(windows[1][0])[20:120]
    assert text in "\n\n".join(data.wikitext2_validation_paragraphs())
    assert text not in data.wikitext2_test_text()
    with pytest.raises(ValueError, match="lower DPOSettings.validation_windows"):
        validation_windows(lm.tokenizer, 10**6)
