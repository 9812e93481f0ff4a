"""One run's artefacts, each computed once and cached: probe → DPO model → neuron statistics.

A *run* is one model under one profile; its artefacts live in ``artefact_dir(model, profile)``. Chapters 1 to
3 compute them step by step, with their figures, through :func:`fit_probe` and :func:`neuron_statistics`
(chapter 2 writes the preference pairs and trains the DPO model). A chapter that needs the artefacts of a
model the earlier chapters did not run, such as chapter 5's second model, calls :func:`model_run`: it loads
what exists and computes what is missing with the same functions, so an interrupted run resumes from its last
finished artefact. A saved artefact is reused only if it was computed from what the run has now: a probe from
the model's weights and the profile's Jigsaw sample (:func:`saved_probe`), neuron statistics from both models'
weights, the probe and the prompts (:func:`saved_statistics`). Anything else, left by an earlier profile size,
DPO model or code, is computed again rather than silently mixed into this run.

The second model is trained on the default model's preference pairs (``pairs_model``), as the EMNLP version
trained Llama, Gemma and Mistral on the GPT-2 pairs instead of generating pairs per model.
"""

from __future__ import annotations

import json
from dataclasses import dataclass

import numpy as np
import pandas as pd

from . import data
from .activations import pooled_final_states
from .architectures import all_value_vectors
from .attribution import NeuronActivations, load_neuron_table, mean_neuron_activations, neuron_table, save_neuron_table
from .dpo import DPOResult, run_dpo_model
from .models import LoadedModel, load_model
from .paths import artefact_dir, written_atomically
from .probe import Probe, ProbeMetrics, metrics_dict, train_probe
from .profiles import Profile
from .profiles import profile as run_profile
from .result_cache import digest, source_hash

PROBE_FILE = "probe.npz"
BASE_ACTIVATIONS_FILE = "activations_base.pt"
DPO_ACTIVATIONS_FILE = "activations_dpo.pt"
NEURON_TABLE_FILE = "neuron_table.csv.gz"
STATISTICS_INPUTS_FILE = "neuron_statistics.json"  # the digest of what the three files above were computed from
PROBE_REGULARISATION = 0.01  # chapter 1 explains the choice; its parameter cell starts from this value


@dataclass
class ProbeFit:
    """A probe fitted on balanced Jigsaw train comments and scored on held-out test comments."""

    probe: Probe
    train_metrics: ProbeMetrics
    test_metrics: ProbeMetrics
    test_features: np.ndarray
    test_labels: np.ndarray


def fit_probe(lm: LoadedModel, settings: Profile, regularisation: float = PROBE_REGULARISATION,
              progress: bool = True) -> ProbeFit:
    """Fit the toxicity probe on the profile's Jigsaw sample, evaluate it, and save it as the run's probe.

    Features are the final-norm states mean-pooled over each comment's first ``probe_max_tokens`` tokens.
    """
    train = data.balanced_sample(data.jigsaw("train"), settings.probe_train_per_class, seed=0)
    test = data.balanced_sample(data.jigsaw("test"), settings.probe_test_per_class, seed=0)
    train_features = pooled_final_states(lm, train.text.tolist(), settings.probe_max_tokens, settings.batch_size,
                                         progress="train features" if progress else None)
    test_features = pooled_final_states(lm, test.text.tolist(), settings.probe_max_tokens, settings.batch_size,
                                        progress="test features" if progress else None)
    train_labels, test_labels = train.label.to_numpy(), test.label.to_numpy()
    probe = train_probe(train_features, train_labels, lm.name, lm.weights_hash, regularisation=regularisation)
    train_metrics = probe.evaluate(train_features, train_labels)
    test_metrics = probe.evaluate(test_features, test_labels)
    probe.info.update(profile=settings.name, sample=probe_sample(settings), test=metrics_dict(test_metrics),
                      train=metrics_dict(train_metrics))
    probe.save(artefact_dir(lm.name, settings.name) / PROBE_FILE)
    return ProbeFit(probe, train_metrics, test_metrics, test_features, test_labels)


def probe_sample(settings: Profile) -> dict:
    """The Jigsaw sample a probe is fitted on under ``settings``: what makes a saved probe this profile's."""
    return {"train_per_class": settings.probe_train_per_class, "test_per_class": settings.probe_test_per_class,
            "max_tokens": settings.probe_max_tokens}


def saved_probe(lm: LoadedModel, settings: Profile) -> Probe | None:
    """The run's saved probe if it was fitted on ``lm``'s weights and the profile's current sample, else None.

    The regularisation is not compared: chapter 1 may choose another, and the later chapters use its probe.
    """
    path = artefact_dir(lm.name, settings.name) / PROBE_FILE
    if not path.is_file():
        return None
    probe = Probe.load(path)
    current = probe.weights_hash == lm.weights_hash and probe.info.get("sample") == probe_sample(settings)
    return probe if current else None


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
        raise ValueError(f"Profile {settings.name!r} leaves {len(unused)} challenge prompts outside the neuron "
                         f"statistics' {len(used)}, fewer than its mediation_prompts ({settings.mediation_prompts}): "
                         "lower one of eval_prompts or mediation_prompts.")
    return data.seeded_subset(unused, settings.mediation_prompts, seed=1)


def neuron_statistics(lm: LoadedModel, dpo_lm: LoadedModel, probe: Probe, settings: Profile,
                      progress: bool = True) -> NeuronStatistics:
    """Mean activations of both models on the profile's challenge prompts and the neuron table along the probe;
    all three are saved in the run's artefact folder."""
    prompts = attribution_prompts(settings)
    base = mean_neuron_activations(lm, prompts, batch_size=settings.generation_batch_size,
                                   progress="base" if progress else None)
    dpo = mean_neuron_activations(dpo_lm, prompts, batch_size=settings.generation_batch_size,
                                  progress="DPO" if progress else None)
    folder = artefact_dir(lm.name, settings.name)
    (folder / STATISTICS_INPUTS_FILE).unlink(missing_ok=True)  # it vouches for the old files until the new are all in
    base.save(folder / BASE_ACTIVATIONS_FILE)
    dpo.save(folder / DPO_ACTIVATIONS_FILE)
    table = neuron_table(base, dpo, all_value_vectors(lm.model), all_value_vectors(dpo_lm.model),
                         probe.unit_direction(lm.shape[2]).double())
    save_neuron_table(table, folder / NEURON_TABLE_FILE)
    with written_atomically(folder / STATISTICS_INPUTS_FILE) as partial:  # last: it vouches for the files above
        partial.write_text(json.dumps({"inputs": statistics_inputs(lm, dpo_lm, probe, settings)}))
    return NeuronStatistics(base, dpo, table)


def statistics_inputs(lm: LoadedModel, dpo_lm: LoadedModel, probe: Probe, settings: Profile) -> str:
    """Digest of what the neuron statistics depend on: both models' weights, the probe's direction, the
    attribution prompts and the source of the modules that compute them."""
    return digest({"base": lm.weights_hash, "dpo": dpo_lm.weights_hash, "probe": probe.direction,
                   "prompts": attribution_prompts(settings), "code": source_hash("attribution.py", "activations.py")})


def saved_statistics(lm: LoadedModel, dpo_lm: LoadedModel, probe: Probe, settings: Profile) -> NeuronStatistics | None:
    """The run's saved neuron statistics if they were computed from these models, probe and prompts, else None
    (also when they predate the record of their inputs)."""
    folder = artefact_dir(lm.name, settings.name)
    record = folder / STATISTICS_INPUTS_FILE
    current = statistics_inputs(lm, dpo_lm, probe, settings)
    if not record.is_file() or json.loads(record.read_text())["inputs"] != current:
        return None
    return NeuronStatistics(NeuronActivations.load(folder / BASE_ACTIVATIONS_FILE),
                            NeuronActivations.load(folder / DPO_ACTIVATIONS_FILE),
                            load_neuron_table(folder / NEURON_TABLE_FILE))


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
        return (f"ModelRun({self.lm.name}, profile {self.settings.name}: {self.probe}; DPO on {self.pairs_model}'s "
                f"pairs; {len(self.table)} neurons)")


def model_run(model: str, profile: str, pairs_model: str | None = None, progress: bool = True) -> ModelRun:
    """Load, or compute and cache, every artefact of ``model`` under ``profile``.

    ``pairs_model`` names the run whose preference pairs train the DPO model (default: ``model`` itself, whose
    pairs chapter 2 generates); those pairs must exist, and borrowed ones are cut to the profile's
    ``companion_pairs``. A missing or outdated probe (:func:`saved_probe`) is fitted with
    :data:`PROBE_REGULARISATION`, missing or outdated neuron statistics (:func:`saved_statistics`) are computed;
    both are saved for the next call.
    """
    settings = run_profile(profile)
    lm = load_model(model)
    probe = saved_probe(lm, settings) or fit_probe(lm, settings, progress=progress).probe
    probe.check_width(lm.shape[2])
    pairs_model = pairs_model or lm.name
    borrowed = pairs_model != lm.name
    dpo = run_dpo_model(lm, settings.name, pairs_model=pairs_model, progress=progress,
                        max_pairs=settings.companion_pairs if borrowed else None)
    statistics = (saved_statistics(lm, dpo.model, probe, settings)
                  or neuron_statistics(lm, dpo.model, probe, settings, progress=progress))
    return ModelRun(lm, settings, probe, dpo, statistics, pairs_model)
