"""One run's artefacts, each computed once and cached: probe → preference pairs → DPO model → neuron statistics.

A *run* is one model under one profile; its artefacts live in ``artefact_dir(model, profile)``. Chapters 1 to
3 compute them step by step, with their figures, through :func:`fit_probe`, :func:`generate_pairs` and
:func:`neuron_statistics` (chapter 2 also trains the DPO model). Every later chapter gets what it needs through
one path that loads what exists and computes what is missing with the same functions, so a chapter runs even
where an earlier one did not, and an interrupted run resumes from its last finished artefact: :func:`run_probe`
for the probe (chapters 2 and 3), :func:`run_dpo` for the DPO model (chapter 3), generating the preference pairs
first where chapter 2 has not, and :func:`model_run` for all of a model's artefacts (chapters 4 and 5, and
chapter 5's second model, which no earlier chapter runs).

A saved artefact is reused only if it was computed from what the run has now: a probe from the model's weights
and the profile's Jigsaw sample (:func:`saved_probe`), neuron statistics from both models' weights, the probe and
the prompts (:func:`saved_statistics`). Anything else, left by an earlier profile size, DPO model or code, is
computed again rather than silently mixed into this run; so is a saved file that cannot be read (truncated, or
edited by hand), with a warning naming it. Saved preference pairs are reused as they are; their generations are
cached by their inputs (:mod:`~dpo_toxicity.pairs`), so generating them again costs little where nothing changed.

The model registered as the default model's companion (chapter 5's second model) is trained on the default
model's preference pairs (:func:`pairs_model_for`), as the EMNLP version trained Llama, Gemma and Mistral on the
GPT-2 pairs instead of generating pairs per model; every chapter run on it reuses that DPO model.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from . import data
from .activations import pooled_final_states
from .architectures import all_value_vectors
from .artefacts import (
    BASE_ACTIVATIONS_FILE,
    DPO_ACTIVATIONS_FILE,
    HELDOUT_PAIRS_FILE,
    NEURON_TABLE_FILE,
    PAIRS_FILE,
    PROBE_FILE,
    STATISTICS_INPUTS_FILE,
)
from .attribution import NeuronActivations, load_neuron_table, mean_neuron_activations, neuron_table, save_neuron_table
from .dpo import DPOResult, run_dpo_model
from .models import DEFAULT_MODEL, LoadedModel, load_model, model_spec
from .pairs import (
    GeneratorQuality,
    PreferencePair,
    PromptSets,
    SteeringDirections,
    candidate_generators,
    choose_generator,
    chosen_continuations,
    continuation_perplexity,
    contrastive_direction,
    measure_generator,
    prompt_sets,
    quality_table,
    rejected_continuations,
    save_pairs,
)
from .paths import artefact_dir, cache_dir, written_atomically
from .probe import Probe, ProbeMetrics, metrics_dict, train_probe
from .profiles import Profile, profile_named
from .result_cache import digest, discard_unreadable, source_hash
from .scoring import OfflineScorer, ToxicityScorer

PROBE_REGULARISATION = 0.01  # chapter 1 explains the choice; its parameter cell starts from this value


@dataclass
class ProbeFit:
    """A probe fitted on balanced Jigsaw train comments and scored on held-out test comments."""

    probe: Probe
    train_metrics: ProbeMetrics
    test_metrics: ProbeMetrics
    test_features: np.ndarray
    test_labels: np.ndarray


def fit_probe(
    lm: LoadedModel, settings: Profile, regularisation: float = PROBE_REGULARISATION, progress: bool = True
) -> ProbeFit:
    """Fit the toxicity probe on the profile's Jigsaw sample, evaluate it, and save it as the run's probe.

    Features are the final-norm states mean-pooled over each comment's first ``probe_max_tokens`` tokens.
    """
    train = data.balanced_sample(data.jigsaw("train"), settings.probe_train_per_class, seed=0)
    test = data.balanced_sample(data.jigsaw("test"), settings.probe_test_per_class, seed=0)
    train_features = pooled_final_states(
        lm,
        train.text.tolist(),
        settings.probe_max_tokens,
        settings.batch_size,
        progress="train features" if progress else None,
    )
    test_features = pooled_final_states(
        lm,
        test.text.tolist(),
        settings.probe_max_tokens,
        settings.batch_size,
        progress="test features" if progress else None,
    )
    train_labels, test_labels = train.label.to_numpy(), test.label.to_numpy()
    probe = train_probe(train_features, train_labels, lm.name, lm.weights_hash, regularisation=regularisation)
    train_metrics = probe.evaluate(train_features, train_labels)
    test_metrics = probe.evaluate(test_features, test_labels)
    probe.info.update(
        profile=settings.name,
        sample=probe_sample(settings),
        test=metrics_dict(test_metrics),
        train=metrics_dict(train_metrics),
    )
    probe.save(artefact_dir(lm.name, settings.name) / PROBE_FILE)
    return ProbeFit(probe, train_metrics, test_metrics, test_features, test_labels)


def probe_sample(settings: Profile) -> dict:
    """The Jigsaw sample a probe is fitted on under ``settings``: what makes a saved probe this profile's."""
    return {
        "train_per_class": settings.probe_train_per_class,
        "test_per_class": settings.probe_test_per_class,
        "max_tokens": settings.probe_max_tokens,
    }


def _read_or_discard(path: Path, read):
    """``read(path)``, or None when the file cannot be read: then it is deleted, with a warning, to be computed anew."""
    try:
        return read(path)
    except Exception as error:
        discard_unreadable(path, error)
        return None


def saved_probe(lm: LoadedModel, settings: Profile) -> Probe | None:
    """The run's saved probe if it was fitted on ``lm``'s weights and the profile's current sample, else None
    (also, with a warning, when its file cannot be read).

    The regularisation is not compared: chapter 1 may choose another, and the later chapters use its probe.
    """
    path = artefact_dir(lm.name, settings.name) / PROBE_FILE
    if not path.is_file():
        return None
    probe = _read_or_discard(path, Probe.load)
    current = (
        probe is not None
        and probe.weights_hash == lm.weights_hash
        and probe.info.get("sample") == probe_sample(settings)
    )
    return probe if current else None


def run_probe(lm: LoadedModel, settings: Profile, progress: bool = True) -> Probe:
    """The run's probe: the saved one where it is current (:func:`saved_probe`), else fitted and saved with
    :data:`PROBE_REGULARISATION` (:func:`fit_probe`). Raises ``ProbeWidthError`` when its width is not ``lm``'s."""
    probe = saved_probe(lm, settings) or fit_probe(lm, settings, progress=progress).probe
    probe.check_width(lm.shape[2])
    return probe


@dataclass
class PairGeneration:
    """A run's preference pairs and the generator trial that chose their rejected side (chapter 2).

    ``prompts``: the trial, training and held-out prompts, drawn from ``sentences`` WikiText-2 validation
    sentences; ``qualities``: each candidate generator on the trial prompts, in the order compared; ``winner``: the
    one chosen; ``trial_chosen`` and ``trial_rejected`` (by generator label): the trial's continuations;
    ``chosen_perplexity``: the base model's median perplexity of ``trial_chosen``. DPO trains on ``pairs``, never on
    ``heldout``; the score arrays hold the scorer's toxicity of each side of them, pair by pair.
    """

    prompts: PromptSets
    sentences: int
    qualities: list[GeneratorQuality]
    winner: GeneratorQuality
    trial_chosen: list[str]
    trial_rejected: dict[str, list[str]]
    chosen_perplexity: float
    pairs: list[PreferencePair]
    heldout: list[PreferencePair]
    chosen_scores: np.ndarray
    rejected_scores: np.ndarray
    heldout_chosen_scores: np.ndarray
    heldout_rejected_scores: np.ndarray

    def generator_table(self) -> pd.DataFrame:
        """The generator trial, one row per candidate (:func:`~dpo_toxicity.pairs.quality_table`)."""
        return quality_table(self.qualities, self.chosen_perplexity)

    def examples(self, count: int = 3) -> pd.DataFrame:
        """The first ``count`` trial prompts, their chosen continuation and each generator's rejected one."""
        trial = {"prompt": self.prompts.trial[:count], "chosen": self.trial_chosen[:count]}
        return pd.DataFrame(trial | {label: texts[:count] for label, texts in self.trial_rejected.items()})

    def __repr__(self) -> str:
        return (
            f"PairGeneration({len(self.pairs)} pairs and {len(self.heldout)} held-out pairs by "
            f"{self.winner.settings.label!r}: toxicity {self.rejected_scores.mean():.3f} rejected, "
            f"{self.chosen_scores.mean():.3f} chosen)"
        )


def generate_pairs(
    lm: LoadedModel,
    probe: Probe,
    settings: Profile,
    scorer: ToxicityScorer | None = None,
    generator_samples: int = 4,
    max_rejected_perplexity_ratio: float = 2.5,
    max_rejected_repetition: float = 0.1,
    contrastive_comments_per_class: int = 150,
    progress: bool = True,
) -> PairGeneration:
    """Generate ``lm``'s preference pairs and held-out pairs and save them in the run's artefact folder
    (:data:`~dpo_toxicity.artefacts.PAIRS_FILE`, :data:`~dpo_toxicity.artefacts.HELDOUT_PAIRS_FILE`).

    The candidate generators (:func:`~dpo_toxicity.pairs.candidate_generators`, best-of-``generator_samples``)
    continue the profile's trial prompts (:func:`~dpo_toxicity.pairs.prompt_sets`); a contrastive push follows the
    direction from ``contrastive_comments_per_class`` non-toxic to as many toxic Jigsaw train comments (seed 3).
    The winner is the largest toxicity gap by ``scorer`` (default: the offline scorer) among generators whose
    median rejected perplexity is at most ``max_rejected_perplexity_ratio`` times plain samples' and whose bigram
    repetition is at most ``max_rejected_repetition`` (``ValueError`` when none is); it then makes the training
    pairs and, in calls of their own, the held-out pairs. Every generation is kept in ``cache_dir("generations")``,
    so a second call, or one after an interruption, reads them back. The defaults are chapter 2's parameters.
    """
    scorer = scorer or OfflineScorer()
    sentences = data.wikitext2_validation_sentences()
    prompts = prompt_sets(sentences, settings.generator_trial_prompts, settings.pair_prompts, settings.mediation_pairs)
    comments = data.balanced_sample(data.jigsaw("train"), contrastive_comments_per_class, seed=3)
    toxic, non_toxic = comments[comments.label == 1].text.tolist(), comments[comments.label == 0].text.tolist()
    candidates = candidate_generators(lm.shape[0], settings.pair_new_tokens, generator_samples)
    contrastive_layers = sorted({c.steer_layer for c in candidates if c.push == "contrastive"})
    directions = SteeringDirections(
        probe=probe.unit_direction(lm.shape[2]),
        contrastive={layer: contrastive_direction(lm, toxic, non_toxic, layer) for layer in contrastive_layers},
    )
    generations = cache_dir("generations")  # finished generations are kept: a re-run resumes after the last one
    batch, new_tokens = settings.generation_batch_size, settings.pair_new_tokens

    def label(text: str) -> str | None:
        return text if progress else None

    trial_chosen = chosen_continuations(lm, prompts.trial, new_tokens, batch_size=batch, cache=generations)
    qualities, trial_rejected = [], {}
    for candidate in candidates:
        trial_rejected[candidate.label] = rejected_continuations(
            lm, prompts.trial, probe, candidate, directions, batch, progress=label(candidate.label), cache=generations
        )
        qualities.append(
            measure_generator(lm, prompts.trial, trial_chosen, trial_rejected[candidate.label], candidate, scorer)
        )
    chosen_perplexity = float(np.median(continuation_perplexity(lm, prompts.trial, trial_chosen)))
    plain_samples = next(q for q in qualities if q.settings.push == "none")
    winner = choose_generator(
        qualities, max_rejected_perplexity_ratio * plain_samples.perplexity_rejected, max_rejected_repetition
    )
    folder = artefact_dir(lm.name, settings.name)

    def pairs_on(prompt_set: list[str], file: str, name: str) -> tuple[list[PreferencePair], np.ndarray, np.ndarray]:
        chosen = chosen_continuations(
            lm, prompt_set, new_tokens, batch_size=batch, progress=label(f"{name}chosen"), cache=generations
        )
        rejected = rejected_continuations(
            lm,
            prompt_set,
            probe,
            winner.settings,
            directions,
            batch,
            progress=label(f"{name}rejected"),
            cache=generations,
        )
        made = [PreferencePair(p, c, r) for p, c, r in zip(prompt_set, chosen, rejected)]
        save_pairs(made, folder / file)
        return made, scorer.score(chosen), scorer.score(rejected)

    pairs, chosen_scores, rejected_scores = pairs_on(prompts.training, PAIRS_FILE, "")
    heldout, *heldout_scores = pairs_on(prompts.heldout, HELDOUT_PAIRS_FILE, "held-out ")
    return PairGeneration(
        prompts,
        len(sentences),
        qualities,
        winner,
        trial_chosen,
        trial_rejected,
        chosen_perplexity,
        pairs,
        heldout,
        chosen_scores,
        rejected_scores,
        *heldout_scores,
    )


def pairs_model_for(model: str) -> str:
    """The run whose preference pairs train ``model``'s DPO model unless a chapter names another: the default
    model's for the model registered as its companion (chapter 5's second model, so that every chapter run on that
    model reuses the DPO model chapter 5 trains), ``model``'s own for every other model."""
    return DEFAULT_MODEL if model != DEFAULT_MODEL and model_spec(DEFAULT_MODEL).companion == model else model


def run_dpo(lm: LoadedModel, settings: Profile, pairs_model: str | None = None, progress: bool = True) -> DPOResult:
    """The run's DPO model (:func:`~dpo_toxicity.dpo.run_dpo_model`, from the cache or trained), on the preference
    pairs of ``pairs_model`` (default: :func:`pairs_model_for`), the first ``companion_pairs`` of the profile when
    they are another model's.

    Where that run has no pairs or no held-out pairs yet, both are generated first: :func:`generate_pairs` at
    chapter 2's defaults, on ``lm`` or on the pairs model (loaded for it), with that model's probe
    (:func:`run_probe`).
    """
    pairs_model = pairs_model or pairs_model_for(lm.name)
    folder = artefact_dir(pairs_model, settings.name)
    if not all((folder / file).is_file() for file in (PAIRS_FILE, HELDOUT_PAIRS_FILE)):
        source = lm if pairs_model == lm.name else load_model(pairs_model)
        generate_pairs(
            source, run_probe(source, settings, progress=progress), settings.sized_for(source), progress=progress
        )
    borrowed = pairs_model != lm.name
    return run_dpo_model(
        lm,
        settings.name,
        pairs_model=pairs_model,
        progress=progress,
        max_pairs=settings.companion_pairs if borrowed else None,
    )


@dataclass
class NeuronStatistics:
    """Mean neuron activations of the base and DPO models and the per-neuron table built from them."""

    base: NeuronActivations
    dpo: NeuronActivations
    table: pd.DataFrame

    def __repr__(self) -> str:
        return f"NeuronStatistics({len(self.table)} neurons; base {self.base}; DPO {self.dpo})"


def attribution_prompts(settings: Profile) -> list[str]:
    """The challenge prompts whose continuations the neuron statistics average over (the evaluation subset)."""
    return data.seeded_subset(data.challenge_prompts(), settings.eval_prompts, seed=0)


def mediation_prompts(settings: Profile) -> list[str]:
    """The challenge prompts of the mediation's behaviour items: a seeded subset of ``mediation_prompts`` of those
    the neuron statistics do not average over (:func:`attribution_prompts`), so the items test the neuron sets on
    prompts they were not chosen on. Raises ``ValueError`` when too few prompts are left."""
    used = set(attribution_prompts(settings))
    unused = [prompt for prompt in data.challenge_prompts() if prompt not in used]
    if len(unused) < settings.mediation_prompts:
        raise ValueError(
            f"Profile {settings.name!r} leaves {len(unused)} challenge prompts outside the neuron "
            f"statistics' {len(used)}, fewer than its mediation_prompts ({settings.mediation_prompts}): "
            "lower one of eval_prompts or mediation_prompts."
        )
    return data.seeded_subset(unused, settings.mediation_prompts, seed=1)


def neuron_statistics(
    lm: LoadedModel, dpo_lm: LoadedModel, probe: Probe, settings: Profile, progress: bool = True
) -> NeuronStatistics:
    """Mean activations of both models on the profile's challenge prompts and the neuron table along the probe;
    all three are saved in the run's artefact folder."""
    prompts = attribution_prompts(settings)
    base = mean_neuron_activations(
        lm, prompts, batch_size=settings.generation_batch_size, progress="base" if progress else None
    )
    dpo = mean_neuron_activations(
        dpo_lm, prompts, batch_size=settings.generation_batch_size, progress="DPO" if progress else None
    )
    folder = artefact_dir(lm.name, settings.name)
    (folder / STATISTICS_INPUTS_FILE).unlink(missing_ok=True)  # it vouches for the old files until the new are all in
    base.save(folder / BASE_ACTIVATIONS_FILE)
    dpo.save(folder / DPO_ACTIVATIONS_FILE)
    table = neuron_table(
        base,
        dpo,
        all_value_vectors(lm.model),
        all_value_vectors(dpo_lm.model),
        probe.unit_direction(lm.shape[2]).double(),
    )
    save_neuron_table(table, folder / NEURON_TABLE_FILE)
    with written_atomically(folder / STATISTICS_INPUTS_FILE) as partial:  # last: it vouches for the files above
        partial.write_text(json.dumps({"inputs": statistics_inputs(lm, dpo_lm, probe, settings)}))
    return NeuronStatistics(base, dpo, table)


def statistics_inputs(lm: LoadedModel, dpo_lm: LoadedModel, probe: Probe, settings: Profile) -> str:
    """Digest of what the neuron statistics depend on: both models' weights, the probe's direction, the
    attribution prompts and the source of the modules that compute them."""
    return digest(
        {
            "base": lm.weights_hash,
            "dpo": dpo_lm.weights_hash,
            "probe": probe.direction,
            "prompts": attribution_prompts(settings),
            "code": source_hash("attribution.py", "activations.py"),
        }
    )


def saved_statistics(lm: LoadedModel, dpo_lm: LoadedModel, probe: Probe, settings: Profile) -> NeuronStatistics | None:
    """The run's saved neuron statistics if they were computed from these models, probe and prompts, else None
    (also when they predate the record of their inputs, and, with a warning, when a file cannot be read)."""
    folder = artefact_dir(lm.name, settings.name)
    record = folder / STATISTICS_INPUTS_FILE
    if not record.is_file():
        return None
    recorded = _read_or_discard(record, lambda path: json.loads(path.read_text())["inputs"])
    if recorded != statistics_inputs(lm, dpo_lm, probe, settings):
        return None
    loaded = [
        _read_or_discard(folder / BASE_ACTIVATIONS_FILE, NeuronActivations.load),
        _read_or_discard(folder / DPO_ACTIVATIONS_FILE, NeuronActivations.load),
        _read_or_discard(folder / NEURON_TABLE_FILE, load_neuron_table),
    ]
    return None if any(part is None for part in loaded) else NeuronStatistics(*loaded)


@dataclass
class ModelRun:
    """Everything the later chapters need about one model: the model, its probe, its DPO model and statistics."""

    lm: LoadedModel
    settings: Profile
    probe: Probe
    dpo: DPOResult
    statistics: NeuronStatistics
    pairs_model: str

    @property
    def dpo_lm(self) -> LoadedModel:
        return self.dpo.model

    @property
    def table(self) -> pd.DataFrame:
        return self.statistics.table

    def __repr__(self) -> str:
        return (
            f"ModelRun({self.lm.name}, profile {self.settings.name}: {self.probe}; DPO on {self.pairs_model}'s "
            f"pairs; {len(self.table)} neurons)"
        )


def model_run(model: str, profile: str, pairs_model: str | None = None, progress: bool = True) -> ModelRun:
    """Load, or compute and cache, every artefact of ``model`` under ``profile``.

    ``pairs_model`` names the run whose preference pairs train the DPO model (default: :func:`pairs_model_for`,
    ``model`` itself unless it is the default model's companion); borrowed pairs are cut to the profile's
    ``companion_pairs``. A missing or outdated probe is fitted (:func:`run_probe`), missing pairs generated and a
    missing DPO model trained (:func:`run_dpo`), missing or outdated neuron statistics (:func:`saved_statistics`)
    computed; all are saved for the next call.
    """
    settings = profile_named(profile)
    lm = load_model(model)
    probe = run_probe(lm, settings, progress=progress)
    pairs_model = pairs_model or pairs_model_for(lm.name)
    dpo = run_dpo(lm, settings, pairs_model=pairs_model, progress=progress)
    statistics = saved_statistics(lm, dpo.model, probe, settings) or neuron_statistics(
        lm, dpo.model, probe, settings, progress=progress
    )
    return ModelRun(lm, settings, probe, dpo, statistics, pairs_model)
