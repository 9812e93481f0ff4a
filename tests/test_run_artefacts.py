"""A run's saved probe and neuron statistics are reused only when they were computed from what the run has now;
the shared path computes what is missing or unreadable (the preference pairs too) and loads the rest."""

import ast
import inspect
import re
from dataclasses import replace

import jupytext
import numpy as np
import pandas as pd
import pytest
import torch

import dpo_toxicity.dpo as dpo_module
import dpo_toxicity.pairs as pairs_module
import dpo_toxicity.run_artefacts as run_artefacts
from dpo_toxicity import data
from dpo_toxicity.artefacts import (
    BASE_ACTIVATIONS_FILE,
    HELDOUT_PAIRS_FILE,
    NEURON_TABLE_FILE,
    PAIRS_FILE,
    PROBE_FILE,
    STATISTICS_INPUTS_FILE,
)
from dpo_toxicity.dpo import dpo_folder, settings_for
from dpo_toxicity.models import load_model
from dpo_toxicity.pairs import (
    PreferencePair,
    SteeringDirections,
    candidate_generators,
    choose_generator,
    chosen_continuations,
    continuation_perplexity,
    contrastive_direction,
    load_pairs,
    measure_generator,
    prompt_sets,
    rejected_continuations,
    save_pairs,
)
from dpo_toxicity.paths import artefact_dir, cache_dir, project_root
from dpo_toxicity.profiles import CI
from dpo_toxicity.run_artefacts import (
    fit_probe,
    generate_pairs,
    model_run,
    neuron_statistics,
    pairs_model_for,
    run_dpo,
    run_probe,
    saved_probe,
    saved_statistics,
)
from dpo_toxicity.scoring import OfflineScorer

TINY = replace(
    CI,
    probe_train_per_class=4,
    probe_test_per_class=2,
    probe_max_tokens=8,
    batch_size=4,
    eval_prompts=3,
    generation_batch_size=3,
    generator_trial_prompts=2,
    pair_prompts=3,
    mediation_pairs=2,
    pair_new_tokens=4,
    companion_pairs=2,
)


@pytest.fixture(autouse=True)
def cache(tmp_path, monkeypatch):
    monkeypatch.setenv("DPO_TOX_CACHE", str(tmp_path))


@pytest.fixture(scope="module")
def models():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # tiny matrix products are far slower on 2 contended threads
    yield load_model("tiny-llama", seed=0), load_model("tiny-llama", seed=1)
    torch.set_num_threads(threads)


def test_a_saved_probe_is_reused_only_for_the_same_weights_and_sample(models):
    lm, other = models
    assert saved_probe(lm, TINY) is None
    fitted = fit_probe(lm, TINY, progress=False).probe
    reused = saved_probe(lm, TINY)
    np.testing.assert_array_equal(reused.direction, fitted.direction)
    assert saved_probe(lm, replace(TINY, probe_train_per_class=5)) is None
    assert saved_probe(lm, replace(TINY, probe_max_tokens=16)) is None
    assert saved_probe(other, TINY) is None  # same name, other weights
    assert saved_probe(lm, replace(TINY, name="full")) is None  # another profile's folder


def test_saved_statistics_follow_both_models_the_probe_and_the_prompts(models):
    lm, dpo_lm = models
    probe = fit_probe(lm, TINY, progress=False).probe
    computed = neuron_statistics(lm, dpo_lm, probe, TINY, progress=False)
    reused = saved_statistics(lm, dpo_lm, probe, TINY)
    pd.testing.assert_frame_equal(reused.table, computed.table)
    torch.testing.assert_close(reused.dpo.mean, computed.dpo.mean)
    assert saved_statistics(lm, lm, probe, TINY) is None  # another DPO model
    assert saved_statistics(lm, dpo_lm, replace(probe, direction=-probe.direction), TINY) is None
    assert saved_statistics(lm, dpo_lm, probe, replace(TINY, eval_prompts=4)) is None
    (artefact_dir(lm.name, TINY.name) / STATISTICS_INPUTS_FILE).unlink()  # statistics saved before the record
    assert saved_statistics(lm, dpo_lm, probe, TINY) is None


def test_an_interrupted_recomputation_leaves_no_record_vouching_for_a_mix_of_old_and_new_files(models, monkeypatch):
    lm, dpo_lm = models
    probe = fit_probe(lm, TINY, progress=False).probe
    neuron_statistics(lm, dpo_lm, probe, TINY, progress=False)

    def interrupted(table, path):
        raise KeyboardInterrupt

    monkeypatch.setattr(run_artefacts, "save_neuron_table", interrupted)
    with pytest.raises(KeyboardInterrupt):
        neuron_statistics(lm, lm, probe, TINY, progress=False)  # the activation files are the new model's by now
    assert saved_statistics(lm, dpo_lm, probe, TINY) is None


def truncate(path):
    """Cut a saved file in half, as an interrupted copy or a full disk would."""
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])


def refuse(*args, **kwargs):
    raise AssertionError("computed again")


def test_run_probe_fits_a_missing_probe_then_reuses_it(models, monkeypatch):
    lm, _ = models
    fitted = run_probe(lm, TINY, progress=False)
    assert (artefact_dir(lm.name, TINY.name) / PROBE_FILE).is_file()
    monkeypatch.setattr(run_artefacts, "fit_probe", refuse)
    np.testing.assert_array_equal(run_probe(lm, TINY).direction, fitted.direction)


def test_an_unreadable_probe_is_reported_by_path_and_fitted_again(models):
    lm, _ = models
    fitted = fit_probe(lm, TINY, progress=False).probe
    path = artefact_dir(lm.name, TINY.name) / PROBE_FILE
    truncate(path)
    with pytest.warns(UserWarning, match=f"{re.escape(str(path))} cannot be read .*computed again"):
        assert saved_probe(lm, TINY) is None
    assert not path.exists()
    np.testing.assert_array_equal(run_probe(lm, TINY, progress=False).direction, fitted.direction)
    assert saved_probe(lm, TINY) is not None


@pytest.mark.parametrize("broken", [STATISTICS_INPUTS_FILE, BASE_ACTIVATIONS_FILE, NEURON_TABLE_FILE])
def test_unreadable_statistics_are_reported_by_path_and_computed_again(models, broken):
    lm, dpo_lm = models
    probe = fit_probe(lm, TINY, progress=False).probe
    computed = neuron_statistics(lm, dpo_lm, probe, TINY, progress=False)
    path = artefact_dir(lm.name, TINY.name) / broken
    truncate(path)
    with pytest.warns(UserWarning, match=f"{re.escape(str(path))} cannot be read .*computed again"):
        assert saved_statistics(lm, dpo_lm, probe, TINY) is None
    again = neuron_statistics(lm, dpo_lm, probe, TINY, progress=False)
    pd.testing.assert_frame_equal(again.table, computed.table)
    pd.testing.assert_frame_equal(saved_statistics(lm, dpo_lm, probe, TINY).table, computed.table)


def test_model_run_computes_every_missing_artefact_then_loads_them_all(models, monkeypatch):
    lm, _ = models
    monkeypatch.setattr(run_artefacts, "profile_named", lambda name: TINY)
    monkeypatch.setattr(run_artefacts, "load_model", lambda name: lm)
    pairs = [
        PreferencePair(prompt, " for the kind words.", " you stupid idiot.")
        for prompt in ["The quick brown fox", "Thank you, friend,", "I hate", "You are"]
    ]
    save_pairs(pairs, artefact_dir(lm.name, TINY.name) / PAIRS_FILE)  # chapter 2's, used as they are
    save_pairs(pairs[:1], artefact_dir(lm.name, TINY.name) / HELDOUT_PAIRS_FILE)

    first = model_run(lm.name, TINY.name, progress=False)  # no probe, DPO model or statistics yet
    assert not first.dpo.from_cache and first.dpo.n_pairs == len(pairs)
    for compute in ("fit_probe", "neuron_statistics"):
        monkeypatch.setattr(run_artefacts, compute, refuse)
    monkeypatch.setattr(dpo_module, "train_dpo", refuse)
    again = model_run(lm.name, TINY.name, progress=False)
    np.testing.assert_array_equal(again.probe.direction, first.probe.direction)
    assert again.dpo.from_cache and again.dpo_lm.weights_hash == first.dpo_lm.weights_hash
    pd.testing.assert_frame_equal(again.table, first.table)
    torch.testing.assert_close(again.statistics.dpo.mean, first.statistics.dpo.mean)


@pytest.fixture(scope="module")
def scorer():
    return OfflineScorer()


def chapter_2_cells(
    lm,
    probe,
    settings,
    scorer,
    generator_samples,
    max_rejected_perplexity_ratio,
    max_rejected_repetition,
    contrastive_comments_per_class,
):
    """Chapter 2's code for the pairs as it stood before :func:`generate_pairs` (its cells, one after the other):
    the reference the function must reproduce."""
    sentences = data.wikitext2_validation_sentences()
    prompts = prompt_sets(sentences, settings.generator_trial_prompts, settings.pair_prompts, settings.mediation_pairs)
    trial_prompts, pair_prompts = prompts.trial, prompts.training
    comments = data.balanced_sample(data.jigsaw("train"), contrastive_comments_per_class, seed=3)
    candidates = candidate_generators(lm.shape[0], settings.pair_new_tokens, generator_samples)
    contrastive_layers = sorted({c.steer_layer for c in candidates if c.push == "contrastive"})
    directions = SteeringDirections(
        probe=probe.unit_direction(lm.shape[2]),
        contrastive={
            layer: contrastive_direction(
                lm, comments[comments.label == 1].text.tolist(), comments[comments.label == 0].text.tolist(), layer
            )
            for layer in contrastive_layers
        },
    )
    generations = cache_dir("generations")
    trial_chosen = chosen_continuations(
        lm, trial_prompts, settings.pair_new_tokens, batch_size=settings.generation_batch_size, cache=generations
    )
    qualities, trial_rejected = [], {}
    for candidate in candidates:
        trial_rejected[candidate.label] = rejected_continuations(
            lm,
            trial_prompts,
            probe,
            candidate,
            directions,
            settings.generation_batch_size,
            progress=candidate.label,
            cache=generations,
        )
        qualities.append(
            measure_generator(lm, trial_prompts, trial_chosen, trial_rejected[candidate.label], candidate, scorer)
        )
    chosen_perplexity = float(np.median(continuation_perplexity(lm, trial_prompts, trial_chosen)))
    plain_samples = next(q for q in qualities if q.settings.push == "none")
    winner = choose_generator(
        qualities, max_rejected_perplexity_ratio * plain_samples.perplexity_rejected, max_rejected_repetition
    )
    examples = pd.DataFrame({"prompt": trial_prompts[:3], "chosen": trial_chosen[:3]})
    for candidate in candidates:
        examples[candidate.label] = trial_rejected[candidate.label][:3]
    chosen = chosen_continuations(
        lm,
        pair_prompts,
        settings.pair_new_tokens,
        batch_size=settings.generation_batch_size,
        progress="chosen",
        cache=generations,
    )
    rejected = rejected_continuations(
        lm,
        pair_prompts,
        probe,
        winner.settings,
        directions,
        settings.generation_batch_size,
        progress="rejected",
        cache=generations,
    )
    pairs = [PreferencePair(p, c, r) for p, c, r in zip(pair_prompts, chosen, rejected)]
    save_pairs(pairs, artefact_dir(lm.name, settings.name) / PAIRS_FILE)
    chosen_scores, rejected_scores = scorer.score(chosen), scorer.score(rejected)
    heldout_chosen = chosen_continuations(
        lm,
        prompts.heldout,
        settings.pair_new_tokens,
        batch_size=settings.generation_batch_size,
        progress="held-out chosen",
        cache=generations,
    )
    heldout_rejected = rejected_continuations(
        lm,
        prompts.heldout,
        probe,
        winner.settings,
        directions,
        settings.generation_batch_size,
        progress="held-out rejected",
        cache=generations,
    )
    heldout = [PreferencePair(p, c, r) for p, c, r in zip(prompts.heldout, heldout_chosen, heldout_rejected)]
    save_pairs(heldout, artefact_dir(lm.name, settings.name) / HELDOUT_PAIRS_FILE)
    return dict(
        qualities=qualities,
        winner=winner,
        chosen_perplexity=chosen_perplexity,
        examples=examples,
        pairs=pairs,
        heldout=heldout,
        chosen_scores=chosen_scores,
        rejected_scores=rejected_scores,
        heldout_chosen_scores=scorer.score(heldout_chosen),
        heldout_rejected_scores=scorer.score(heldout_rejected),
        sentences=len(sentences),
    )


def saved_files(folder):
    """Every file under ``folder`` by relative path, with its bytes."""
    return {str(path.relative_to(folder)): path.read_bytes() for path in sorted(folder.rglob("*")) if path.is_file()}


def test_generate_pairs_does_what_chapter_2s_cells_did_and_reads_its_generations_back(
    models, scorer, tmp_path, monkeypatch
):
    lm, _ = models
    probe = run_probe(lm, TINY, progress=False)
    options = dict(
        generator_samples=2,
        max_rejected_perplexity_ratio=50.0,
        max_rejected_repetition=1.0,
        contrastive_comments_per_class=4,
    )
    monkeypatch.setenv("DPO_TOX_CACHE", str(tmp_path / "cells"))
    cells = chapter_2_cells(lm, probe, TINY, scorer, **options)
    monkeypatch.setenv("DPO_TOX_CACHE", str(tmp_path / "function"))
    generation = generate_pairs(lm, probe, TINY, scorer, progress=False, **options)

    assert generation.pairs == cells["pairs"] and len(generation.pairs) == TINY.pair_prompts
    assert generation.heldout == cells["heldout"] and len(generation.heldout) == TINY.mediation_pairs
    assert (generation.qualities, generation.winner) == (cells["qualities"], cells["winner"])
    assert (generation.chosen_perplexity, generation.sentences) == (cells["chosen_perplexity"], cells["sentences"])
    for scores in ("chosen_scores", "rejected_scores", "heldout_chosen_scores", "heldout_rejected_scores"):
        np.testing.assert_array_equal(getattr(generation, scores), cells[scores])
    pd.testing.assert_frame_equal(generation.examples(), cells["examples"])
    # The same files under the same names: the pairs, the held-out pairs and every cached generation.
    saved = {kind: saved_files(tmp_path / kind) for kind in ("cells", "function")}
    assert {name for name in saved["cells"] if name.startswith("generations/")}  # the cells did cache generations
    assert saved["function"] == saved["cells"]
    folder = artefact_dir(lm.name, TINY.name)
    assert load_pairs(folder / PAIRS_FILE) == generation.pairs
    assert load_pairs(folder / HELDOUT_PAIRS_FILE) == generation.heldout

    for generator in ("greedy_continuations", "sampled_continuations"):
        monkeypatch.setattr(pairs_module, generator, refuse)
    again = generate_pairs(lm, probe, TINY, scorer, progress=False, **options)
    assert (again.pairs, again.heldout, again.qualities) == (generation.pairs, generation.heldout, generation.qualities)


def test_generate_pairs_defaults_are_chapter_2s_parameters():
    notebook = jupytext.read(project_root() / "book" / "02_dpo.py", fmt="py:percent")
    (cell,) = [cell for cell in notebook.cells if "parameters" in cell.metadata.get("tags", [])]
    parameters = {node.targets[0].id: ast.literal_eval(node.value) for node in ast.parse(cell.source).body}
    defaults = {
        name: parameter.default
        for name, parameter in inspect.signature(generate_pairs).parameters.items()
        if name in parameters
    }
    assert defaults == {
        name: parameters[name]
        for name in (
            "generator_samples",
            "max_rejected_perplexity_ratio",
            "max_rejected_repetition",
            "contrastive_comments_per_class",
        )
    }


def test_model_run_generates_missing_pairs_and_trains_on_them(models, monkeypatch):
    lm, _ = models
    monkeypatch.setattr(run_artefacts, "profile_named", lambda name: TINY)
    monkeypatch.setattr(run_artefacts, "load_model", lambda name: lm)
    run = model_run(lm.name, TINY.name, progress=False)  # no pairs: chapter 2 has not run
    folder = artefact_dir(lm.name, TINY.name)
    pairs = load_pairs(folder / PAIRS_FILE)
    assert len(pairs) == TINY.pair_prompts and len(load_pairs(folder / HELDOUT_PAIRS_FILE)) == TINY.mediation_pairs
    assert run.pairs_model == lm.name and not run.dpo.from_cache
    assert run.dpo.folder == dpo_folder(lm, pairs, settings_for(lm, TINY.name))

    monkeypatch.setattr(run_artefacts, "generate_pairs", refuse)  # saved pairs are used as they are
    assert run_dpo(lm, TINY, progress=False).folder == run.dpo.folder


def test_the_default_models_companion_borrows_its_pairs_and_every_other_model_uses_its_own():
    assert pairs_model_for("gemma3-270m") == "smollm2-135m"  # SmolLM2's registered companion
    assert pairs_model_for("smollm2-135m") == "smollm2-135m"
    assert pairs_model_for("gpt2-medium") == "gpt2-medium"
    assert pairs_model_for("tiny-llama") == "tiny-llama"


def test_the_companion_trains_on_the_default_models_pairs_generated_where_missing(models, monkeypatch):
    lm, _ = models  # tiny-llama, registered as tiny-gpt2's companion
    default = load_model("tiny-gpt2")
    monkeypatch.setattr(run_artefacts, "DEFAULT_MODEL", default.name)
    monkeypatch.setattr(run_artefacts, "profile_named", lambda name: TINY)
    monkeypatch.setattr(run_artefacts, "load_model", lambda name: {lm.name: lm, default.name: default}[name])
    assert pairs_model_for(lm.name) == default.name and pairs_model_for(default.name) == default.name

    dpo = run_dpo(lm, TINY, progress=False)  # as chapter 3 obtains it: the default model's pairs, made now
    pairs = load_pairs(artefact_dir(default.name, TINY.name) / PAIRS_FILE)
    assert len(pairs) == TINY.pair_prompts and (artefact_dir(default.name, TINY.name) / PROBE_FILE).is_file()
    assert not (artefact_dir(lm.name, TINY.name) / PAIRS_FILE).exists()
    assert dpo.n_pairs == TINY.companion_pairs
    assert dpo.folder == dpo_folder(lm, pairs[: TINY.companion_pairs], settings_for(lm, TINY.name))

    monkeypatch.setattr(run_artefacts, "generate_pairs", refuse)
    monkeypatch.setattr(dpo_module, "train_dpo", refuse)
    run = model_run(lm.name, TINY.name, progress=False)  # as chapter 4 obtains it
    assert run.pairs_model == default.name and run.dpo.folder == dpo.folder
    chapter_5 = run_dpo(lm, TINY, pairs_model=default.name, progress=False)  # chapter 5's second model
    assert chapter_5.from_cache and chapter_5.folder == dpo.folder
