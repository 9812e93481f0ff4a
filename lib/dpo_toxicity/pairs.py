"""Preference pairs for DPO: a non-toxic and a toxic continuation of the same WikiText-2 prompt.

Lee et al. build 24,576 pairs from WikiText-2 sentences: *chosen* = GPT-2's greedy continuation, *rejected* =
a toxic continuation from PPLM with the probe as attribute model. PPLM's per-token gradient steps are too slow
on a CPU, so the book compares cheaper generators of the rejected side. A generator combines a **push** (none;
the probe direction added to the final-norm output; or a *contrastive* direction, the difference of the mean
residual streams of toxic and non-toxic Jigsaw comments at a middle layer, added there) with a **decoder**
(greedy, or best-of-n: sample ``n`` continuations and keep the one the probe scores most toxic).

Pushing the last layer along the probe acts only on the next-token logits (``W_U w``): on SmolLM2 the probe's
logit lens is mostly punctuation, and that push yields runs of "!?" rather than toxic words. A push at a
middle layer is processed by the rest of the network, like PPLM's perturbation of the past: the text becomes
toxic and stays on topic; best-of-n then keeps the candidate the probe finds most toxic.

:func:`compare_generators` measures, on the same prompts, what DPO data needs: the toxicity gap between
rejected and chosen (scored by the independent offline scorer, not by the probe that guided the choice), the
base model's perplexity of the rejected text given its prompt (fluency), and its bigram repetition rate.
:func:`choose_generator` applies the stated criterion: the largest gap among fluent generators.

Steering strengths are fractions of the typical per-token norm of the residual stream at the steered site,
so that a setting transfers between models.

The prompts are WikiText-2 validation sentences in three disjoint, seeded sets (:func:`prompt_sets`): the
generator trial's, the training pairs', and those of *held-out* pairs that the same generator makes but DPO never
trains on (the mediation's preference items). Each set is generated in calls of its own, so adding held-out pairs
changes neither the training pairs nor their cached generations.

Given a ``cache`` folder, :func:`rejected_continuations` and :func:`chosen_continuations` save what they
generate (see :mod:`~dpo_toxicity.result_cache`): the ``full`` profile generates for an hour, and a chapter
re-run after an interruption reads the finished generators and pairs back.
"""

from __future__ import annotations

import json
import re
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from tqdm import tqdm
from transformers import LogitsProcessor, LogitsProcessorList

from .activations import encode, pooled_final_states, pooled_states, traced, typical_token_norm
from .architectures import architecture_of
from .data import seeded_subset
from .evaluation import decode_all, greedy_continuations
from .interventions import SteerResidual
from .models import LoadedModel
from .paths import written_atomically
from .probe import Probe
from .result_cache import cached_json

PUSHES = ("none", "probe", "contrastive")


@dataclass(frozen=True)
class PreferencePair:
    """One DPO example: a prompt, the preferred (non-toxic) and the dispreferred (toxic) continuation."""

    prompt: str
    chosen: str
    rejected: str


def fresh_prompts(sentences: list[str], size: int, exclude: list[str], seed: int) -> list[str]:
    """A seeded choice of ``size`` of ``sentences`` none of which is in ``exclude``, in the sentences' order.

    Draws ``size + len(exclude)`` sentences (:func:`~dpo_toxicity.data.seeded_subset`) and keeps the first
    ``size`` of them not in ``exclude``; fewer only when the sentences run out.
    """
    excluded = set(exclude)
    return [s for s in seeded_subset(sentences, size + len(exclude), seed=seed) if s not in excluded][:size]


@dataclass(frozen=True)
class PromptSets:
    """Chapter 2's three disjoint sets of prompts: ``trial`` (the generators are compared on them), ``training``
    (the preference pairs DPO trains on) and ``heldout`` (pairs made alike that DPO never trains on)."""

    trial: list[str]
    training: list[str]
    heldout: list[str]


def prompt_sets(sentences: list[str], trial: int, training: int, heldout: int) -> PromptSets:
    """Seeded, disjoint prompt sets of these sizes: the trial's (seed 1), the training pairs' (seed 2, none of the
    trial's) and the held-out pairs' (seed 4, none of either). Held-out prompts are drawn last, so their number
    leaves the other two as they are; there are fewer of them than ``heldout`` when the sentences run out (the
    ``full`` profile's 100 trial and 2,000 training prompts leave 170 of WikiText-2 validation's 2,270).
    """
    trial_prompts = seeded_subset(sentences, trial, seed=1)
    training_prompts = fresh_prompts(sentences, training, trial_prompts, seed=2)
    heldout_prompts = fresh_prompts(sentences, heldout, trial_prompts + training_prompts, seed=4)
    return PromptSets(trial_prompts, training_prompts, heldout_prompts)


@dataclass(frozen=True)
class GeneratorSettings:
    """How rejected continuations are generated.

    ``push``: ``"none"``, ``"probe"`` (final-norm output) or ``"contrastive"`` (output of block
    ``steer_layer``); ``steer_strength``: the push's norm as a fraction of the typical residual norm there;
    ``samples``: 1 for greedy decoding, ``n`` for probe-selected best-of-n sampling (temperature, top-k).
    """

    label: str
    push: str = "none"
    steer_strength: float = 0.0
    steer_layer: int | None = None
    samples: int = 1
    new_tokens: int = 24
    prompt_tokens: int = 32
    temperature: float = 1.0
    top_k: int = 50
    seed: int = 0

    def __post_init__(self) -> None:
        if self.push not in PUSHES:
            raise ValueError(f"Unknown push {self.push!r}; use one of {PUSHES}.")
        if self.push == "contrastive" and self.steer_layer is None:
            raise ValueError("A contrastive push needs steer_layer (the block whose output is pushed).")
        if self.samples < 1:
            raise ValueError("samples must be at least 1 (1 = greedy).")


@dataclass(frozen=True)
class SteeringDirections:
    """Unit directions a push can use: the probe's (final norm) and contrastive ones per layer."""

    probe: torch.Tensor
    contrastive: dict


def contrastive_direction(lm: LoadedModel, toxic: list[str], non_toxic: list[str], layer: int) -> torch.Tensor:
    """Unit vector of mean(toxic) - mean(non-toxic) pooled residual streams after block ``layer``."""
    difference = pooled_states(lm, toxic, layer=layer).mean(0) - pooled_states(lm, non_toxic, layer=layer).mean(0)
    vector = torch.as_tensor(difference, dtype=torch.float32)
    return vector / vector.norm()


def push_for(lm: LoadedModel, settings: GeneratorSettings, directions: SteeringDirections, prompts: list[str]):
    """The :class:`SteerResidual` a generator setting asks for (``None`` without a push)."""
    if settings.push == "none" or settings.steer_strength == 0:
        return None
    layer = None if settings.push == "probe" else settings.steer_layer
    unit = directions.probe if settings.push == "probe" else directions.contrastive[layer]
    scale = settings.steer_strength * typical_token_norm(lm, prompts, layer)
    return SteerResidual(unit * scale, layer=layer, name=settings.label)


class RowSeededSampler(LogitsProcessor):
    """Top-k sampling at a temperature in which every row draws from its own seeded random stream.

    Gumbel-max: adding independent Gumbel noise to the top-k logits / temperature and taking the argmax is an
    exact draw from their softmax. Each row's noise comes from a generator seeded by ``seeds[row]``, so a
    continuation depends on its own seed and prompt only, not on which rows share its batch: the batch can be
    sized for speed (on a CPU, or scaled to a GPU's memory) without changing the text. Returns scores that
    are 0 at the drawn token and -inf elsewhere, for ``generate`` to pick greedily (``do_sample=False``).
    Runs after ``generate``'s own processors (``min_new_tokens`` has already masked EOS).
    """

    def __init__(self, seeds: list[int], temperature: float, top_k: int):
        self.generators = [torch.Generator().manual_seed(seed) for seed in seeds]
        self.temperature = temperature
        self.top_k = top_k

    def __call__(self, input_ids: torch.Tensor, scores: torch.Tensor) -> torch.Tensor:
        if len(self.generators) != scores.shape[0]:
            raise ValueError(f"{len(self.generators)} seeds for a batch of {scores.shape[0]} rows.")
        top = torch.topk(scores.float() / self.temperature, min(self.top_k, scores.shape[-1]), dim=-1)
        uniform = torch.stack([torch.rand(top.values.shape[-1], generator=g) for g in self.generators])
        gumbel = -torch.log(-torch.log(uniform.clamp_min(torch.finfo(torch.float32).tiny)))
        drawn = top.indices.gather(-1, (top.values + gumbel.to(top.values.device)).argmax(-1, keepdim=True))
        return torch.full_like(scores, -torch.inf).scatter(-1, drawn, 0.0)


def sampled_continuations(
    lm: LoadedModel,
    prompts: list[str],
    settings: GeneratorSettings,
    intervention=None,
    batch_size: int = 16,
    progress: str | None = None,
) -> list[list[str]]:
    """``settings.samples`` sampled continuations per prompt, with ``intervention`` at every step.

    Continuation ``j`` of prompt ``i`` draws from its own stream (:class:`RowSeededSampler`, seed
    ``settings.seed``, ``i``, ``j``): the texts do not depend on ``batch_size`` (rows per ``generate`` call).
    """
    model, arch = traced(lm), architecture_of(lm.model)
    repeated = [prompt for prompt in prompts for _ in range(settings.samples)]
    row_seeds = [settings.seed * 1_000_003 + row for row in range(len(repeated))]
    texts: list[str] = []
    for start in tqdm(range(0, len(repeated), batch_size), desc=progress or "sample", disable=progress is None):
        encoding = encode(lm, repeated[start : start + batch_size], settings.prompt_tokens)
        sampler = RowSeededSampler(row_seeds[start : start + batch_size], settings.temperature, settings.top_k)
        with torch.inference_mode():
            with model.generate(
                encoding,
                max_new_tokens=settings.new_tokens,
                min_new_tokens=settings.new_tokens,
                do_sample=False,
                logits_processor=LogitsProcessorList([sampler]),
                pad_token_id=lm.tokenizer.pad_token_id,
            ) as tracer:
                if intervention is not None:
                    for _ in tracer.iter[: settings.new_tokens]:
                        intervention.apply(model, arch)
                generated = tracer.result.save()
        texts += decode_all(lm, generated[:, encoding["input_ids"].shape[1] :].cpu().tolist())
    return [texts[i * settings.samples : (i + 1) * settings.samples] for i in range(len(prompts))]


# The modules whose code decides what a generator produces (keys of cached generations).
GENERATING_CODE = ("pairs.py", "evaluation.py", "activations.py", "interventions.py", "architectures.py")


def rejected_continuations(
    lm: LoadedModel,
    prompts: list[str],
    probe: Probe,
    settings: GeneratorSettings,
    directions: SteeringDirections,
    batch_size: int = 16,
    progress: str | None = None,
    cache: Path | None = None,
) -> list[str]:
    """The rejected side for each prompt, generated as ``settings`` says; read back from ``cache`` when this
    model, these prompts, probe, directions and settings generated them before (``batch_size``, rows per
    generation, changes nothing but padding round-off)."""
    parts = {
        "weights": lm.weights_hash,
        "prompts": prompts,
        "probe": [probe.direction, probe.bias],
        "settings": settings,
        "directions": directions,
    }
    return cached_json(
        cache,
        parts,
        lambda: _rejected(lm, prompts, probe, settings, directions, batch_size, progress),
        code=GENERATING_CODE,
    )


def _rejected(
    lm: LoadedModel,
    prompts: list[str],
    probe: Probe,
    settings: GeneratorSettings,
    directions: SteeringDirections,
    batch_size: int,
    progress: str | None,
) -> list[str]:
    push = push_for(lm, settings, directions, prompts)
    if settings.samples == 1:
        ids = greedy_continuations(lm, prompts, push, settings.prompt_tokens, settings.new_tokens, batch_size, progress)
        return decode_all(lm, ids)
    candidates = sampled_continuations(lm, prompts, settings, push, batch_size, progress)
    flat = [text for group in candidates for text in group]
    features = pooled_final_states(lm, flat, max_tokens=settings.new_tokens + 8, batch_size=batch_size)
    scores = probe.predict_proba(features).reshape(len(prompts), settings.samples)
    return [group[int(best)] for group, best in zip(candidates, scores.argmax(axis=1))]


def chosen_continuations(
    lm: LoadedModel,
    prompts: list[str],
    new_tokens: int,
    prompt_tokens: int = 32,
    batch_size: int = 16,
    progress: str | None = None,
    cache: Path | None = None,
) -> list[str]:
    """The chosen side: the model's own greedy continuation (Lee et al.); read back from ``cache`` when this
    model continued these prompts before."""
    parts = {"weights": lm.weights_hash, "prompts": prompts, "new_tokens": new_tokens, "prompt_tokens": prompt_tokens}

    def generate() -> list[str]:
        return decode_all(lm, greedy_continuations(lm, prompts, None, prompt_tokens, new_tokens, batch_size, progress))

    return cached_json(cache, parts, generate, code=GENERATING_CODE)


def continuation_perplexity(
    lm: LoadedModel, prompts: list[str], continuations: list[str], batch_size: int = 16
) -> np.ndarray:
    """Per pair, the model's perplexity of the continuation given its prompt (continuation tokens only)."""
    model = traced(lm)
    values = np.empty(len(prompts))
    for start in range(0, len(prompts), batch_size):
        batch_prompts = prompts[start : start + batch_size]
        batch_continuations = continuations[start : start + batch_size]
        encoding = encode(lm, [p + c for p, c in zip(batch_prompts, batch_continuations)], max_tokens=256)
        continuation_lengths = [
            max(1, len(lm.tokenizer(c, add_special_tokens=False).input_ids)) for c in batch_continuations
        ]
        with torch.inference_mode():
            with model.trace(encoding):
                logits = model.output.logits.save()
        log_probs = torch.log_softmax(logits[:, :-1].float(), dim=-1)
        token_log_probs = log_probs.gather(-1, encoding["input_ids"][:, 1:, None])[..., 0]
        for row, length in enumerate(continuation_lengths):
            values[start + row] = float(torch.exp(-token_log_probs[row, -length:].mean()))
    return values


def bigram_repetition(text: str) -> float:
    """1 - distinct/total word bigrams of lower-cased ``\\w+`` words (0 = no repeated bigram)."""
    words = re.findall(r"\w+", text.lower())
    bigrams = list(zip(words, words[1:]))
    return 0.0 if not bigrams else 1.0 - len(set(bigrams)) / len(bigrams)


@dataclass(frozen=True)
class GeneratorQuality:
    """What a rejected-side generator achieves on a set of prompts (see module docstring)."""

    settings: GeneratorSettings
    toxicity_chosen: float
    toxicity_rejected: float
    rejected_more_toxic: float
    perplexity_rejected: float
    repetition_rejected: float

    @property
    def toxicity_gap(self) -> float:
        return self.toxicity_rejected - self.toxicity_chosen


def measure_generator(lm, prompts, chosen, rejected, settings, scorer) -> GeneratorQuality:
    """Score one generator's rejected side against the chosen side on the same prompts."""
    chosen_scores, rejected_scores = scorer.score(chosen), scorer.score(rejected)
    return GeneratorQuality(
        settings=settings,
        toxicity_chosen=float(chosen_scores.mean()),
        toxicity_rejected=float(rejected_scores.mean()),
        rejected_more_toxic=float((rejected_scores > chosen_scores).mean()),
        perplexity_rejected=float(np.median(continuation_perplexity(lm, prompts, rejected))),
        repetition_rejected=float(np.mean([bigram_repetition(text) for text in rejected])),
    )


def quality_table(qualities: list[GeneratorQuality], chosen_perplexity: float) -> pd.DataFrame:
    """The comparison as a table, one row per generator setting."""
    rows = []
    for quality in qualities:
        rows.append(
            {
                "generator": quality.settings.label,
                "push": quality.settings.push,
                "steer layer": quality.settings.steer_layer,
                "steer strength": quality.settings.steer_strength,
                "samples": quality.settings.samples,
                "toxicity chosen": quality.toxicity_chosen,
                "toxicity rejected": quality.toxicity_rejected,
                "gap": quality.toxicity_gap,
                "rejected > chosen": quality.rejected_more_toxic,
                "median PPL rejected": quality.perplexity_rejected,
                "median PPL chosen": chosen_perplexity,
                "bigram repetition": quality.repetition_rejected,
            }
        )
    return pd.DataFrame(rows)


def choose_generator(
    qualities: list[GeneratorQuality], max_perplexity: float, max_repetition: float
) -> GeneratorQuality:
    """The largest toxicity gap among generators whose rejected text stays fluent.

    Fluent = median base-model perplexity at most ``max_perplexity`` and bigram repetition at most
    ``max_repetition``. Raises ``ValueError`` when no generator qualifies (the chapter must then say so
    rather than train on degenerate text).
    """
    fluent = [
        q for q in qualities if q.perplexity_rejected <= max_perplexity and q.repetition_rejected <= max_repetition
    ]
    if not fluent:
        raise ValueError(
            f"No generator kept perplexity <= {max_perplexity} and repetition <= {max_repetition}; "
            "loosen the bounds or add a generator."
        )
    return max(fluent, key=lambda q: q.toxicity_gap)


def save_pairs(pairs: list[PreferencePair], path) -> None:
    """Write pairs as JSON lines (``prompt``, ``chosen``, ``rejected``), atomically."""
    with written_atomically(path) as partial, open(partial, "w", encoding="utf-8") as handle:
        for pair in pairs:
            handle.write(json.dumps(asdict(pair)) + "\n")


def load_pairs(path) -> list[PreferencePair]:
    """Read pairs written by :func:`save_pairs`."""
    with open(path, encoding="utf-8") as handle:
        return [PreferencePair(**json.loads(line)) for line in handle if line.strip()]


def candidate_generators(n_layers: int, new_tokens: int, samples: int = 4) -> list[GeneratorSettings]:
    """The generators the pairs chapter compares: each push with greedy and with best-of-``samples`` decoding.

    The contrastive push acts on the block a third of the way up (layer 10 of SmolLM2's 30): early enough for
    the rest of the network to turn it into words, late enough for the toxic/non-toxic difference to be
    semantic (a trial at two thirds of the depth produced token soup).
    """
    layer = n_layers // 3
    return [
        GeneratorSettings("probe push, greedy", "probe", 0.5, new_tokens=new_tokens),
        GeneratorSettings(f"best of {samples}", samples=samples, new_tokens=new_tokens),
        GeneratorSettings("contrastive push 0.3, greedy", "contrastive", 0.3, layer, new_tokens=new_tokens),
        GeneratorSettings(f"contrastive push 0.2, best of {samples}", "contrastive", 0.2, layer, samples, new_tokens),
        GeneratorSettings(f"contrastive push 0.3, best of {samples}", "contrastive", 0.3, layer, samples, new_tokens),
    ]
