"""How long each stage of the book takes, how much memory it needs, and what two design choices cost.

The book runs on 2 CPU cores in CI, so its sizes (``dpo_toxicity.profiles``) are set by what each stage costs.
This script measures that cost on a real model (the offline default ``smollm2-135m``) at small, fixed,
seeded sizes, calling the same library functions the chapters call:

1. ``probe_features``: pooled final-norm states of Jigsaw comments (chapter 1's probe input);
2. ``pair_generation``: chosen (greedy) and rejected (contrastive push at a third of the depth, probe-selected
   best-of-n) continuations of WikiText-2 sentences, contrastive direction included (chapter 2);
3. ``dpo_step``: trl's DPO on synthetic pairs (a WikiText-2 sentence, the next sentence as chosen, a toxic
   comment as rejected); the per-item figure is seconds per optimiser step, the reference pass apart;
4. ``evaluation_generation``: 20 greedy tokens after challenge prompts (the toxicity metric's generation);
5. ``perplexity``: 1,024-token WikiText-2 test windows;
6. ``neuron_statistics``: mean neuron activations over the generation positions, then the neuron table;
7. ``patched_evaluation``: the generation of 4 with a fixed set of neurons set to constants (``SetNeurons``).
8. ``full_table_row``: one row of chapters 4 and 5's tables at the ``full`` profile's sizes (toxicity and F1
   generations, perplexity windows, scoring) with the neurons of 7 set to constants: those chapters evaluate one
   such row per intervention, so this is what their full-size run costs per row on the machine at hand.
9. ``token_patching``: the mediation's teacher-forced margins (:mod:`dpo_toxicity.mediation`) on
   ``margin_items`` items of 20-token continuations after challenge prompts: one unpatched pass, then one
   neuron set (half the neurons of every layer) patched token by token in both directions. Per item: seconds per
   item and pass, the unit that chapters 4 and 5's mediation costs scale with (passes = 2 + 2 x sets).

Each stage runs in a fresh Python process (this script again, with ``--stage``), so its peak resident
memory (``ru_maxrss``: the model, the data and the stage's own work) is its own and not the maximum of
everything run before it. Times cover the stage's work only, not imports or loading the model.

Five comparisons justify choices the book makes and a sixth bounds what a faster implementation could
gain, each measured in its own process too:

a. ``nnsight_vs_hook``: every intervention goes through nnsight. Its generation with neurons set to
   constants is timed against plain ``transformers`` ``generate`` with a PyTorch forward pre-hook on the MLP
   output projection making the same edit, on the same batch (a second copy of the model, so that nnsight's
   wrapping cannot touch the baseline); plain generation and nnsight generation without an edit separate
   nnsight's own overhead from the edit's. One warm-up each, then the median of ``repeats`` interleaved runs;
   the greedy token ids of the two edited runs must be identical.
b. ``loop_vs_vectorised``: the neuron table is one matrix product per layer. It is timed against a plain
   Python loop computing ``P_i = m̄_i (v_i · w/|w|)`` one neuron at a time over the first ``loop_neurons``
   neurons, extrapolated (and labelled so) to all neurons; both must give the same ``P_i``. The table
   computes more than ``P_i`` (cosines, both models' projections, groups), so the ratio understates the gain.
c. ``greedy_batch``: generation (every evaluation, chapter 3's statistics, the preference pairs) runs at the
   profiles' ``generation_batch_size`` rather than the forward-pass ``batch_size``; timed on greedy generation
   of ``comparison_prompts`` x 4 prompts at both batch sizes, median of ``repeats``, with the share of prompts
   whose tokens agree (padding round-off aside, all).
d. ``dpo_unembedding``: DPO makes trl unembed only the continuation positions on the CPU
   (``dpo._unembed_continuations_only``); timed against trl's own choice, which unembeds every position there,
   on the same pairs, with both runs' losses (they must agree).
e. ``dpo_reference``: the ``ci`` profile precomputes DPO's reference log-probs for every pair, the long
   profiles run a frozen reference copy on each step's pairs (``Profile.precompute_dpo_reference``); timed both
   ways on the same pairs, with the share of the planned steps below which the copy costs less (the stopping
   rule trains about a quarter of the full profile's) and both runs' losses (they must agree).
f. ``compute_ceiling``: how far the full profile's largest cost, perplexity over 1,024-token windows, is from
   what the machine can do. A plain forward pass of one window is timed against a square float32 matrix
   product, each converted to floating-point operations per second (the forward's count: 2 per weight per token
   plus the attention matrices', ``window_flops``); ``perplexity`` on the same window is timed too, so the
   library's own cost (nnsight's trace, saving the logits, the loss) shows apart from the model's. One batch of
   greedy generation of challenge prompts (a table row's other cost) gets a lower bound on its rate
   (``generation_flops``).

The JSON written (default ``_build/bench/benchmark.json``) holds the machine, the sizes, every stage's
seconds, peak RSS, items and seconds per item, every comparison, and the targets with whether they are met.

Usage::

    .venv/bin/python bench/benchmark.py                      # smollm2-135m, default sizes
    .venv/bin/python bench/benchmark.py --scale 2 --model gemma3-270m --output /tmp/bench.json
    .venv/bin/python bench/benchmark.py --threads 1                 # on a machine shared with other work
"""

from __future__ import annotations

import argparse
import contextlib
import importlib.metadata
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Callable, ClassVar

import numpy as np
import pandas as pd
import torch

from dpo_toxicity import data, dpo
from dpo_toxicity.activations import encode, pooled_final_states
from dpo_toxicity.architectures import all_value_vectors, architecture_of, output_projection
from dpo_toxicity.attribution import NeuronActivations, mean_neuron_activations, neuron_table, unit_directions
from dpo_toxicity.book.provenance import git_commit, hardware, peak_memory_gib
from dpo_toxicity.dpo import DPOResult, DPOSettings, train_dpo
from dpo_toxicity.evaluation import (
    NEW_TOKENS,
    PERPLEXITY_WINDOW,
    PROMPT_TOKENS,
    evaluation_suite,
    greedy_continuations,
    perplexity,
)
from dpo_toxicity.interventions import SetNeurons
from dpo_toxicity.mediation import MarginItems, margins, patching_margins
from dpo_toxicity.models import DEFAULT_MODEL, MODELS, LoadedModel, load_model
from dpo_toxicity.pairs import (
    PreferencePair,
    SteeringDirections,
    candidate_generators,
    chosen_continuations,
    contrastive_direction,
    rejected_continuations,
)
from dpo_toxicity.probe import train_probe
from dpo_toxicity.profiles import FULL
from dpo_toxicity.scoring import OfflineScorer

MAX_HOOK_RATIO = 1.15  # nnsight-edited generation / plain generate with a hook
MAX_PEAK_GIB = 8e9 / 2**30  # 8 GB
ACTIVATIONS_FILE = "activations.pt"  # written by neuron_statistics, read by loop_vs_vectorised


@dataclass(frozen=True)
class Sizes:
    """The sizes of one benchmark run; :meth:`scaled` multiplies the item counts listed in ``SCALED``.

    Small enough for the whole run to take about ten minutes on 2 CPU cores: a batch or two (``batch_size``
    for forward passes, the profiles' larger ``generation_batch_size`` for generation) of prompts per generation
    stage, two optimiser steps of DPO, ``repeats`` timed runs of each comparison.
    """

    probe_comments: int = 64
    probe_tokens: int = 64
    pair_prompts: int = 8
    pair_new_tokens: int = 24
    contrastive_comments_per_class: int = 20
    generator_samples: int = 4
    steer_strength: float = 0.2
    dpo_pairs: int = 16
    dpo_batch: int = 8
    eval_prompts: int = 32
    perplexity_windows: int = 2
    statistics_prompts: int = 32
    patched_neurons: int = 200
    margin_items: int = 32
    comparison_prompts: int = 16
    loop_neurons: int = 2000
    repeats: int = 3
    batch_size: int = 16
    generation_batch_size: int = 64

    SCALED: ClassVar[tuple[str, ...]] = (
        "probe_comments",
        "pair_prompts",
        "dpo_pairs",
        "eval_prompts",
        "perplexity_windows",
        "statistics_prompts",
        "comparison_prompts",
        "margin_items",
    )

    def scaled(self, factor: int) -> Sizes:
        """These sizes with every item count in ``SCALED`` multiplied by ``factor``."""
        return replace(self, **{name: getattr(self, name) * factor for name in self.SCALED})


@dataclass
class Measured:
    """What one stage measured: wall ``seconds`` for ``items`` of ``unit``, and stage-specific ``details``."""

    seconds: float
    items: int
    unit: str
    details: dict | None = None


class Stopwatch:
    """``with Stopwatch() as watch: ...`` leaves the block's wall time in ``watch.seconds``."""

    def __enter__(self) -> Stopwatch:
        self.start = time.perf_counter()
        return self

    def __exit__(self, *exception) -> None:
        self.seconds = time.perf_counter() - self.start


def median_seconds(run: Callable[[], object], repeats: int) -> tuple[float, object]:
    """Median wall time of ``repeats`` calls of ``run`` after one untimed warm-up, and the last call's result."""
    result = run()
    times = []
    for _ in range(repeats):
        with Stopwatch() as watch:
            result = run()
        times.append(watch.seconds)
    return statistics.median(times), result


def patched_neurons(lm: LoadedModel, count: int, seed: int = 0) -> pd.DataFrame:
    """``count`` distinct seeded (layer, neuron) pairs with seeded constants (columns layer, neuron, value)."""
    n_layers, d_mlp, _ = lm.shape
    rng = np.random.default_rng(seed)
    flat = np.sort(rng.choice(n_layers * d_mlp, size=count, replace=False))
    return pd.DataFrame({"layer": flat // d_mlp, "neuron": flat % d_mlp, "value": rng.normal(0.0, 1.0, count)})


def random_direction(lm: LoadedModel, seed: int = 0) -> torch.Tensor:
    """A seeded ``[d_model]`` direction standing in for the probe (timings do not depend on it)."""
    return torch.randn(lm.shape[2], generator=torch.Generator().manual_seed(seed))


# The nine stages. Each takes the loaded model, the sizes and a work folder, and returns what it measured.


def probe_features(lm: LoadedModel, sizes: Sizes, workdir: Path) -> Measured:
    """Pooled final-norm states of balanced Jigsaw comments (the probe's features)."""
    comments = data.balanced_sample(data.jigsaw("train"), sizes.probe_comments // 2, seed=0).text.tolist()
    with Stopwatch() as watch:
        pooled_final_states(lm, comments, sizes.probe_tokens, sizes.batch_size, progress="probe features")
    return Measured(watch.seconds, len(comments), "comments")


def pair_generation(lm: LoadedModel, sizes: Sizes, workdir: Path) -> Measured:
    """Chapter 2's pairs: contrastive direction, greedy chosen side, pushed best-of-n rejected side.

    The probe that ranks the best-of-n samples is fitted, untimed, on the same few comments (chapter 1's work).
    """
    comments = data.balanced_sample(data.jigsaw("train"), sizes.contrastive_comments_per_class, seed=3)
    features = pooled_final_states(lm, comments.text.tolist(), sizes.probe_tokens, sizes.batch_size)
    probe = train_probe(features, comments.label.to_numpy(), lm.name, lm.weights_hash)
    prompts = data.seeded_subset(data.wikitext2_validation_sentences(), sizes.pair_prompts, seed=2)
    generator = next(
        candidate
        for candidate in candidate_generators(lm.shape[0], sizes.pair_new_tokens, sizes.generator_samples)
        if candidate.push == "contrastive"
        and candidate.samples == sizes.generator_samples
        and candidate.steer_strength == sizes.steer_strength
    )
    with Stopwatch() as watch:
        toxic, non_toxic = (comments[comments.label == label].text.tolist() for label in (1, 0))
        directions = SteeringDirections(
            probe=probe.unit_direction(lm.shape[2]),
            contrastive={generator.steer_layer: contrastive_direction(lm, toxic, non_toxic, generator.steer_layer)},
        )
        batch = sizes.generation_batch_size
        chosen_continuations(lm, prompts, sizes.pair_new_tokens, batch_size=batch, progress="chosen")
        rejected_continuations(lm, prompts, probe, generator, directions, batch, progress="rejected")
    return Measured(watch.seconds, len(prompts), "pairs", {"generator": generator.label})


def synthetic_pairs(sizes: Sizes) -> list[PreferencePair]:
    """A WikiText-2 sentence, the next sentence as chosen, a toxic Jigsaw comment as rejected."""
    sentences = data.seeded_subset(data.wikitext2_validation_sentences(), 2 * sizes.dpo_pairs, seed=4)
    comments = data.balanced_sample(data.jigsaw("train"), sizes.dpo_pairs, seed=5)
    toxic = comments[comments.label == 1].text.tolist()
    return [
        PreferencePair(sentences[2 * i], " " + sentences[2 * i + 1], " " + toxic[i]) for i in range(sizes.dpo_pairs)
    ]


def dpo_step(lm: LoadedModel, sizes: Sizes, workdir: Path) -> Measured:
    """trl DPO on synthetic pairs without the stopping rule; per item = seconds per optimiser step (the reference
    pass reported apart)."""
    pairs = synthetic_pairs(sizes)
    result = train_dpo(lm, pairs, DPOSettings(batch_size=sizes.dpo_batch, max_perplexity_rise=None), progress=True)
    return Measured(
        result.training_seconds,
        result.steps,
        "optimiser steps",
        {"pairs": len(pairs), "batch_size": sizes.dpo_batch, "reference_seconds": result.reference_seconds},
    )


def evaluation_generation(lm: LoadedModel, sizes: Sizes, workdir: Path) -> Measured:
    """20 greedy tokens after each of a seeded subset of challenge prompts."""
    prompts = data.seeded_subset(data.challenge_prompts(), sizes.eval_prompts, seed=0)
    with Stopwatch() as watch:
        greedy_continuations(lm, prompts, batch_size=sizes.generation_batch_size, progress="generate")
    return Measured(watch.seconds, len(prompts), "prompts")


def perplexity_windows(lm: LoadedModel, sizes: Sizes, workdir: Path) -> Measured:
    """Perplexity over the first WikiText-2 test windows."""
    text = data.wikitext2_test_text()
    with Stopwatch() as watch:
        result = perplexity(lm, text, max_windows=sizes.perplexity_windows, progress="perplexity")
    return Measured(watch.seconds, sizes.perplexity_windows, "windows", {"tokens": result.tokens})


def neuron_statistics(lm: LoadedModel, sizes: Sizes, workdir: Path) -> Measured:
    """Mean neuron activations over generation positions and the neuron table (the model stands in for DPO).

    Stores the activations in ``workdir`` for the loop-versus-vectorised comparison.
    """
    prompts = data.seeded_subset(data.challenge_prompts(), sizes.statistics_prompts, seed=0)
    with Stopwatch() as watch:
        activations = mean_neuron_activations(
            lm, prompts, batch_size=sizes.generation_batch_size, progress="activations"
        )
        values = all_value_vectors(lm.model)
        neuron_table(activations, activations, values, values, random_direction(lm))
    activations.save(workdir / ACTIVATIONS_FILE)
    return Measured(watch.seconds, len(prompts), "prompts")


def patched_evaluation(lm: LoadedModel, sizes: Sizes, workdir: Path) -> Measured:
    """The generation of ``evaluation_generation`` with neurons set to constants through nnsight."""
    prompts = data.seeded_subset(data.challenge_prompts(), sizes.eval_prompts, seed=0)
    intervention = SetNeurons(patched_neurons(lm, sizes.patched_neurons))
    with Stopwatch() as watch:
        greedy_continuations(
            lm, prompts, intervention, batch_size=sizes.generation_batch_size, progress="patched generate"
        )
    return Measured(watch.seconds, len(prompts), "prompts", {"neurons": len(intervention)})


def full_table_row(lm: LoadedModel, sizes: Sizes, workdir: Path) -> Measured:
    """One table row at the ``full`` profile's table sizes, with the neurons of ``patched_evaluation`` set."""
    suite = evaluation_suite(FULL, OfflineScorer(), many_rows=True)
    intervention = SetNeurons(patched_neurons(lm, sizes.patched_neurons))
    with Stopwatch() as watch:
        suite.evaluate(lm, "full table row", intervention, progress=False)
    details = {
        "toxicity_prompts": len(suite.toxicity_prompts),
        "f1_paragraphs": len(suite.f1_paragraphs),
        "perplexity_windows": suite.perplexity_windows,
        "neurons": len(intervention),
    }
    return Measured(watch.seconds, 1, "rows", details)


def token_patching(lm: LoadedModel, sizes: Sizes, workdir: Path) -> Measured:
    """Margins of ``margin_items`` items unpatched, then half of every layer's neurons patched both ways."""
    prompts = data.seeded_subset(data.challenge_prompts(), sizes.margin_items, seed=0)
    rng = np.random.default_rng(0)
    vocabulary = len(lm.tokenizer)
    items = MarginItems(
        "bench",
        tuple(tuple(ids) for ids in lm.tokenizer(prompts, truncation=True, max_length=32).input_ids),
        *(tuple(tuple(rng.integers(100, vocabulary, 20).tolist()) for _ in prompts) for _ in range(2)),
    )
    n_layers, d_mlp, _ = lm.shape
    half = pd.DataFrame(
        {"layer": np.repeat(np.arange(n_layers), d_mlp // 2), "neuron": np.tile(np.arange(0, d_mlp, 2), n_layers)}
    )
    with Stopwatch() as unpatched:
        margins(lm, items, batch_size=sizes.batch_size)
    with Stopwatch() as patched:  # 2 capture passes and 2 patched passes
        patching_margins(lm, lm, items, {"half": half}, batch_size=sizes.batch_size)
    passes = 5
    return Measured(
        unpatched.seconds + patched.seconds,
        len(items) * passes,
        "item-passes",
        {
            "unpatched_pass_seconds": unpatched.seconds,
            "capture_and_patch_seconds": patched.seconds,
            "patched_neurons": len(half),
        },
    )


# Comparison a: nnsight against a plain PyTorch hook.


@contextlib.contextmanager
def neurons_set_by_hooks(lm: LoadedModel, neurons: pd.DataFrame):
    """Within the block, forward pre-hooks on ``lm``'s output projections set ``neurons`` (layer, neuron, value)
    to their values at every position: :class:`SetNeurons` without nnsight. The hooks go when the block ends."""
    arch = architecture_of(lm.model)
    handles = []
    for layer, rows in neurons.groupby("layer"):
        index = torch.tensor(rows["neuron"].to_numpy(), device=lm.device)
        values = torch.tensor(rows["value"].to_numpy(), dtype=lm.model.dtype, device=lm.device)

        def edit(module, args, index=index, values=values):
            args[0][..., index] = values  # the neuron activations, [batch, seq, d_mlp], edited in place

        handles.append(output_projection(lm.model, arch, int(layer)).register_forward_pre_hook(edit))
    try:
        yield
    finally:
        for handle in handles:
            handle.remove()


def plain_greedy(lm: LoadedModel, prompts: list[str]) -> list[list[int]]:
    """The generation of ``greedy_continuations`` for one batch with ``transformers``' own ``generate``."""
    encoding = encode(lm, prompts, PROMPT_TOKENS)
    with torch.inference_mode():
        generated = lm.model.generate(
            **encoding,
            max_new_tokens=NEW_TOKENS,
            min_new_tokens=NEW_TOKENS,
            do_sample=False,
            pad_token_id=lm.tokenizer.pad_token_id,
        )
    return generated[:, encoding["input_ids"].shape[1] :].tolist()


def nnsight_vs_hook(lm: LoadedModel, sizes: Sizes, workdir: Path) -> Measured:
    """Median seconds of one batch's generation: plain, plain + hook, nnsight, nnsight + ``SetNeurons``."""
    plain_lm = load_model(lm.name, lm.device)  # never wrapped by nnsight
    prompts = data.seeded_subset(data.challenge_prompts(), sizes.comparison_prompts, seed=1)
    # In greedy_continuations' order (shortest first), so that its one batch is this batch row for row.
    lengths = [len(ids) for ids in lm.tokenizer(prompts, truncation=True, max_length=PROMPT_TOKENS).input_ids]
    prompts = [prompts[i] for i in np.argsort(lengths, kind="stable")]
    neurons = patched_neurons(lm, sizes.patched_neurons)
    intervention = SetNeurons(neurons)

    def plain_hooked():
        with neurons_set_by_hooks(plain_lm, neurons):
            return plain_greedy(plain_lm, prompts)

    runs = {
        "plain_generate": lambda: plain_greedy(plain_lm, prompts),
        "plain_generate_hook": plain_hooked,
        "nnsight_generate": lambda: greedy_continuations(lm, prompts, batch_size=len(prompts)),
        "nnsight_generate_set_neurons": lambda: greedy_continuations(
            lm, prompts, intervention, batch_size=len(prompts)
        ),
    }
    tokens = {name: run() for name, run in runs.items()}  # warm-up
    times = {name: [] for name in runs}
    for repeat in range(sizes.repeats):  # interleaved, so that a slow spell of the machine hits every variant
        print(f"  repeat {repeat + 1}/{sizes.repeats}", flush=True)
        for name, run in runs.items():
            with Stopwatch() as watch:
                tokens[name] = run()
            times[name].append(watch.seconds)
    seconds = {name: statistics.median(values) for name, values in times.items()}
    details = {
        "prompts": len(prompts),
        "neurons": len(neurons),
        "repeats": sizes.repeats,
        "median_seconds": seconds,
        "edited_vs_hook": seconds["nnsight_generate_set_neurons"] / seconds["plain_generate_hook"],
        "nnsight_vs_plain": seconds["nnsight_generate"] / seconds["plain_generate"],
        "hook_vs_plain": seconds["plain_generate_hook"] / seconds["plain_generate"],
        "identical_token_ids_edited": tokens["nnsight_generate_set_neurons"] == tokens["plain_generate_hook"],
        "identical_token_ids_unedited": tokens["nnsight_generate"] == tokens["plain_generate"],
        "edit_changes_tokens": tokens["plain_generate_hook"] != tokens["plain_generate"],
    }
    return Measured(seconds["nnsight_generate_set_neurons"], len(prompts), "prompts", details)


# Comparison b: the vectorised neuron table against a loop over neurons.


def looped_projections(
    activations: NeuronActivations, values: torch.Tensor, unit: torch.Tensor, count: int
) -> np.ndarray:
    """``P_i = m̄_i (v_i · ŵ)`` for the first ``count`` neurons (layer-major order), one neuron at a time."""
    d_mlp = values.shape[1]
    projections = np.empty(count)
    for flat in range(count):
        layer, neuron = divmod(flat, d_mlp)
        projections[flat] = float(activations.mean[layer, neuron]) * float(values[layer, neuron].double() @ unit)
    return projections


def loop_vs_vectorised(lm: LoadedModel, sizes: Sizes, workdir: Path) -> Measured:
    """Seconds of the neuron table for all neurons against a per-neuron loop, extrapolated to all neurons."""
    activations = NeuronActivations.load(workdir / ACTIVATIONS_FILE)
    values = all_value_vectors(lm.model)
    direction = random_direction(lm)
    n_neurons = values.shape[0] * values.shape[1]
    count = min(sizes.loop_neurons, n_neurons)
    table_seconds, table = median_seconds(
        lambda: neuron_table(activations, activations, values, values, direction), sizes.repeats
    )
    loop_seconds, looped = median_seconds(
        lambda: looped_projections(activations, values, unit_directions(direction)[0], count), sizes.repeats
    )
    extrapolated = loop_seconds * n_neurons / count
    difference = np.abs(looped - table["projection_base"].to_numpy()[:count])
    details = {
        "neurons": n_neurons,
        "loop_neurons_timed": count,
        "neuron_table_seconds": table_seconds,
        "loop_seconds_timed": loop_seconds,
        "loop_seconds_all_neurons_extrapolated": extrapolated,
        "loop_vs_vectorised_extrapolated": extrapolated / table_seconds,
        "max_abs_difference": float(difference.max()),
        "same_values": bool(np.allclose(looped, table["projection_base"].to_numpy()[:count], rtol=1e-9, atol=1e-12)),
    }
    return Measured(table_seconds, n_neurons, "neurons", details)


# Comparison c: greedy generation at the greedy batch size against the sampling batch size.


def greedy_batch(lm: LoadedModel, sizes: Sizes, workdir: Path) -> Measured:
    """Median seconds of greedy generation of the same prompts at ``batch_size`` and ``generation_batch_size``."""
    prompts = data.seeded_subset(data.challenge_prompts(), 4 * sizes.comparison_prompts, seed=2)
    seconds, tokens = {}, {}
    for batch in (sizes.batch_size, sizes.generation_batch_size):
        seconds[batch], tokens[batch] = median_seconds(
            lambda batch=batch: greedy_continuations(lm, prompts, batch_size=batch), sizes.repeats
        )
    small, large = sizes.batch_size, sizes.generation_batch_size
    details = {
        "prompts": len(prompts),
        "median_seconds_by_batch": {str(batch): value for batch, value in seconds.items()},
        "small_vs_large_batch": seconds[small] / seconds[large],
        "share_of_prompts_with_identical_tokens": float(
            np.mean([a == b for a, b in zip(tokens[small], tokens[large])])
        ),
    }
    return Measured(seconds[large], len(prompts), "prompts", details)


def compared_dpo_runs(results: dict[str, DPOResult]) -> dict:
    """What every DPO comparison reports of its runs (trained on the same pairs): pairs, seconds per step, the
    reference pass's seconds, each step's loss, and whether the losses agree (they must)."""
    first, *others = results.values()
    return {
        "pairs": first.n_pairs,
        "seconds_per_step": {name: result.training_seconds / result.steps for name, result in results.items()},
        "reference_seconds": {name: result.reference_seconds for name, result in results.items()},
        "losses": {name: result.history["loss"].tolist() for name, result in results.items()},
        "same_losses": all(
            bool(np.allclose(other.history["loss"], first.history["loss"], atol=1e-4)) for other in others
        ),
    }


# Comparison d: DPO with trl unembedding every position against the continuations only.


def dpo_unembedding(lm: LoadedModel, sizes: Sizes, workdir: Path) -> Measured:
    """Seconds per DPO step and of the reference pass, unembedding every position (trl's choice on a CPU) or
    only the continuations (the book's), on the same pairs; the losses of both runs."""
    pairs = synthetic_pairs(sizes)
    settings = DPOSettings(batch_size=sizes.dpo_batch, max_perplexity_rise=None)
    results = {"continuations_only": train_dpo(lm, pairs, settings)}
    with contextlib.ExitStack() as restore:  # trl's own choice, for the baseline only
        restore.callback(setattr, dpo, "_unembed_continuations_only", dpo._unembed_continuations_only)
        dpo._unembed_continuations_only = contextlib.nullcontext
        results["every_position"] = train_dpo(lm, pairs, settings)
    details = compared_dpo_runs(results)
    per_step = details["seconds_per_step"]
    details["every_position_vs_continuations_only"] = per_step["every_position"] / per_step["continuations_only"]
    return Measured(
        results["continuations_only"].training_seconds, results["continuations_only"].steps, "optimiser steps", details
    )


# Comparison e: DPO's reference log-probs precomputed for every pair against a frozen reference copy per step.


def dpo_reference(lm: LoadedModel, sizes: Sizes, workdir: Path) -> Measured:
    """Seconds per DPO step with the reference log-probs precomputed (the ``ci`` profile's choice) or computed at
    each step by a frozen copy (the long profiles'), the precompute's seconds per pair, and the share of the
    planned steps below which the copy is the cheaper of the two: ``pass seconds per pair * batch / (copy step -
    precomputed step)``, which does not depend on the number of pairs (more than 1: the copy is always cheaper).
    Both runs' losses must agree."""
    pairs = synthetic_pairs(sizes)
    settings = DPOSettings(batch_size=sizes.dpo_batch, max_perplexity_rise=None)
    results = {
        "precomputed": train_dpo(lm, pairs, settings),
        "frozen_copy": train_dpo(lm, pairs, replace(settings, precompute_reference=False)),
    }
    details = compared_dpo_runs(results)
    per_step = details["seconds_per_step"]
    pass_per_pair = results["precomputed"].reference_seconds / len(pairs)
    extra_per_step = per_step["frozen_copy"] - per_step["precomputed"]
    details |= {
        "precomputed_pass_seconds_per_pair": pass_per_pair,
        "frozen_copy_vs_precomputed_step": per_step["frozen_copy"] / per_step["precomputed"],
        "break_even_share_of_steps": pass_per_pair * sizes.dpo_batch / extra_per_step
        if extra_per_step > 0
        else float("inf"),
    }
    return Measured(results["frozen_copy"].training_seconds, results["frozen_copy"].steps, "optimiser steps", details)


# Comparison f: a perplexity window's forward pass and a batch of generation against the machine's matmul rate.

CEILING_MATRIX = 2048  # side of the square float32 product that stands for the machine's peak


def weight_counts(lm: LoadedModel) -> tuple[int, int]:
    """Weights every token passes through except the unembedding (the input embedding is a lookup, not
    counted), and the unembedding's, counted once whether or not it is tied to the input embedding."""
    embedding = lm.model.get_input_embeddings().weight
    unembedding = lm.model.get_output_embeddings().weight
    body = sum(p.numel() for p in lm.model.parameters() if p is not embedding and p is not unembedding)
    return body, unembedding.numel()


def window_flops(lm: LoadedModel, tokens: int) -> float:
    """Floating-point operations of one forward pass over ``tokens`` tokens, every position unembedded (as
    perplexity needs): 2 per weight per token, plus the attention scores and their weighted sum (2 x 2 x
    tokens^2 x width per layer, counted in full although a causal kernel may skip the masked half)."""
    body, unembedding = weight_counts(lm)
    n_layers, _, width = lm.shape
    return 2.0 * (body + unembedding) * tokens + 4.0 * n_layers * tokens**2 * width


def generation_flops(lm: LoadedModel, batch: int, prompt_tokens: int, new_tokens: int) -> float:
    """A lower bound on the floating-point operations of greedy generation with a KV cache: the padded prompt
    and every new token but the last pass through the body, only positions that emit a token are unembedded,
    and attention (under 1 % at these lengths) is left out; a higher true count only raises the true rate."""
    body, unembedding = weight_counts(lm)
    return 2.0 * batch * (body * (prompt_tokens + new_tokens - 1) + unembedding * new_tokens)


def compute_ceiling(lm: LoadedModel, sizes: Sizes, workdir: Path) -> Measured:
    """Seconds of one window's plain forward pass, of ``perplexity`` on it and of one batch of greedy generation
    (a table row's main costs), against a square matrix product, and the rates they imply."""
    window = PERPLEXITY_WINDOW
    text = data.wikitext2_test_text()
    ids = lm.tokenizer(text[: 20 * window], return_tensors="pt").input_ids[:, :window].to(lm.device)  # ~4 chars/token
    prompts = data.seeded_subset(data.challenge_prompts(), sizes.generation_batch_size, seed=3)
    padded_prompt = encode(lm, prompts, PROMPT_TOKENS)["input_ids"].shape[1]
    square = torch.randn(CEILING_MATRIX, CEILING_MATRIX)
    with torch.inference_mode():
        matmul_seconds, _ = median_seconds(lambda: square @ square, sizes.repeats)
        forward_seconds, _ = median_seconds(lambda: lm.model(input_ids=ids), sizes.repeats)
    window_text = lm.tokenizer.decode(ids[0])
    perplexity_seconds, _ = median_seconds(lambda: perplexity(lm, window_text, max_windows=1), sizes.repeats)
    generation_seconds, _ = median_seconds(
        lambda: greedy_continuations(lm, prompts, batch_size=sizes.generation_batch_size), sizes.repeats
    )
    rates = {
        "square_matmul": 2.0 * CEILING_MATRIX**3 / matmul_seconds,
        "plain_forward": window_flops(lm, window) / forward_seconds,
        "greedy_generation_lower_bound": generation_flops(lm, len(prompts), padded_prompt, NEW_TOKENS)
        / generation_seconds,
    }
    details = {
        "window_tokens": window,
        "generation": {"prompts": len(prompts), "padded_prompt_tokens": padded_prompt, "new_tokens": NEW_TOKENS},
        "median_seconds": {
            "square_matmul": matmul_seconds,
            "plain_forward": forward_seconds,
            "perplexity_one_window": perplexity_seconds,
            "greedy_generation": generation_seconds,
        },
        "gflops_per_second": {name: rate / 1e9 for name, rate in rates.items()},
        "forward_vs_matmul_rate": rates["plain_forward"] / rates["square_matmul"],
        "generation_vs_matmul_rate_lower_bound": rates["greedy_generation_lower_bound"] / rates["square_matmul"],
        "perplexity_vs_plain_forward": perplexity_seconds / forward_seconds,
    }
    return Measured(forward_seconds, 1, "windows", details)


@dataclass(frozen=True)
class Stage:
    """One measurement, run in its own process; ``comparison`` ones are reported apart from the stages."""

    name: str
    run: Callable[[LoadedModel, Sizes, Path], Measured]
    comparison: bool = False


STAGES = (
    Stage("probe_features", probe_features),
    Stage("pair_generation", pair_generation),
    Stage("dpo_step", dpo_step),
    Stage("evaluation_generation", evaluation_generation),
    Stage("perplexity", perplexity_windows),
    Stage("neuron_statistics", neuron_statistics),
    Stage("patched_evaluation", patched_evaluation),
    Stage("full_table_row", full_table_row),
    Stage("token_patching", token_patching),
    Stage("nnsight_vs_hook", nnsight_vs_hook, comparison=True),
    Stage("loop_vs_vectorised", loop_vs_vectorised, comparison=True),  # after neuron_statistics: reads its file
    Stage("greedy_batch", greedy_batch, comparison=True),
    Stage("dpo_unembedding", dpo_unembedding, comparison=True),
    Stage("dpo_reference", dpo_reference, comparison=True),
    Stage("compute_ceiling", compute_ceiling, comparison=True),
)


def run_stage(stage: Stage, model: str, sizes: Sizes, workdir: Path) -> None:
    """In this process: load ``model``, run ``stage`` and write its result and peak RSS to ``workdir``."""
    lm = load_model(model)
    measured = stage.run(lm, sizes, workdir)
    record = asdict(measured) | {
        "seconds_per_item": measured.seconds / measured.items,
        "peak_rss_gib": peak_memory_gib(),
    }
    (workdir / f"{stage.name}.json").write_text(json.dumps(record, indent=1))


def stage_in_subprocess(stage: Stage, model: str, scale: int, workdir: Path) -> dict:
    """Run ``stage`` in a fresh Python process (this script with ``--stage``, at this process's torch thread
    count) and return its record."""
    command = [
        sys.executable,
        str(Path(__file__).resolve()),
        "--stage",
        stage.name,
        "--model",
        model,
        "--scale",
        str(scale),
        "--workdir",
        str(workdir),
        "--threads",
        str(torch.get_num_threads()),
    ]
    subprocess.run(command, check=True)
    return json.loads((workdir / f"{stage.name}.json").read_text())


def machine() -> dict:
    """The facts a timing depends on: CPUs, torch threads, package versions and the git commit."""
    versions = {name: importlib.metadata.version(name) for name in ("torch", "transformers", "nnsight", "trl")}
    return {
        "hardware": hardware(),
        "cpu_count": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "python": sys.version.split()[0],
        "versions": versions,
        "git_commit": git_commit(),
        "hf_hub_offline": os.environ.get("HF_HUB_OFFLINE", ""),
        "load_average_1_5_15_min": os.getloadavg(),  # other work on the machine slows every stage
    }


def target(name: str, measured: float, limit: float, unit: str) -> dict:
    """A target as reported: the measured value against its upper ``limit``."""
    return {"name": name, "measured": measured, "limit": limit, "unit": unit, "met": bool(measured <= limit)}


def summary(report: dict) -> str:
    """A short table of the stages, the comparisons and the targets."""
    lines = [f"{'stage':<24}{'seconds':>9}{'peak GiB':>10}{'items':>7}  per item"]
    for name, stage in report["stages"].items():
        lines.append(
            f"{name:<24}{stage['seconds']:>9.1f}{stage['peak_rss_gib']:>10.2f}{stage['items']:>7}  "
            f"{stage['seconds_per_item']:.3f} s / {stage['unit'].rstrip('s')}"
        )
    hook = report["comparisons"]["nnsight_vs_hook"]["details"]
    loop = report["comparisons"]["loop_vs_vectorised"]["details"]
    batch = report["comparisons"]["greedy_batch"]["details"]
    unembedding = report["comparisons"]["dpo_unembedding"]["details"]
    reference = report["comparisons"]["dpo_reference"]["details"]
    ceiling = report["comparisons"]["compute_ceiling"]["details"]
    lines += [
        "median seconds: " + ", ".join(f"{name} {value:.2f}" for name, value in hook["median_seconds"].items()),
        f"nnsight edit / hook {hook['edited_vs_hook']:.2f}x, identical ids {hook['identical_token_ids_edited']}",
        f"loop (extrapolated) / neuron_table {loop['loop_vs_vectorised_extrapolated']:.0f}x, "
        f"same values {loop['same_values']}",
        f"greedy generation, sampling batch / greedy batch {batch['small_vs_large_batch']:.2f}x, "
        f"identical tokens for {batch['share_of_prompts_with_identical_tokens']:.0%} of prompts",
        f"DPO step, every position / continuations only {unembedding['every_position_vs_continuations_only']:.2f}x, "
        f"same losses {unembedding['same_losses']}",
        f"DPO step, frozen reference copy / precomputed {reference['frozen_copy_vs_precomputed_step']:.2f}x; the copy "
        f"is cheaper below {reference['break_even_share_of_steps']:.0%} of the planned steps, "
        f"same losses {reference['same_losses']}",
        f"perplexity window forward {ceiling['gflops_per_second']['plain_forward']:.0f} GFLOP/s, "
        f"{ceiling['forward_vs_matmul_rate']:.0%} of a square matmul's "
        f"{ceiling['gflops_per_second']['square_matmul']:.0f}; perplexity() / plain forward "
        f"{ceiling['perplexity_vs_plain_forward']:.2f}x; greedy generation at least "
        f"{ceiling['generation_vs_matmul_rate_lower_bound']:.0%} of the matmul's rate",
    ]
    lines += [
        f"target {t['name']}: {t['measured']:.2f} <= {t['limit']:.2f} {t['unit']}: {'met' if t['met'] else 'NOT met'}"
        for t in report["targets"]
    ]
    return "\n".join(lines)


def benchmark(model: str, scale: int, output: Path) -> dict:
    """Run every stage and comparison in its own process, write the JSON report to ``output`` and return it."""
    sizes = Sizes().scaled(scale)
    facts = machine()  # before the run: its load average is the machine's, not the benchmark's
    records = {}
    with tempfile.TemporaryDirectory(prefix="bench-") as scratch:
        for number, stage in enumerate(STAGES, start=1):
            print(f"[{number}/{len(STAGES)}] {stage.name}", flush=True)
            records[stage.name] = stage_in_subprocess(stage, model, scale, Path(scratch))
    stages = {stage.name: records[stage.name] for stage in STAGES if not stage.comparison}
    comparisons = {stage.name: records[stage.name] for stage in STAGES if stage.comparison}
    peak = max(stage["peak_rss_gib"] for stage in stages.values())
    report = {
        "machine": facts,
        "model": model,
        "scale": scale,
        "sizes": asdict(sizes),
        "stages": stages,
        "comparisons": comparisons,
        "targets": [
            target(
                "nnsight_edited_generation_vs_plain_hook",
                comparisons["nnsight_vs_hook"]["details"]["edited_vs_hook"],
                MAX_HOOK_RATIO,
                "x",
            ),
            target("peak_rss_max_over_stages", peak, MAX_PEAK_GIB, "GiB (8 GB)"),
        ],
    }
    output.parent.mkdir(parents=True, exist_ok=True)
    output.write_text(json.dumps(report, indent=1))
    return report


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default=DEFAULT_MODEL, choices=sorted(MODELS), help="registered model name")
    parser.add_argument("--scale", type=int, default=1, help="multiply the item counts by this (default 1)")
    parser.add_argument("--output", type=Path, default=Path("_build/bench/benchmark.json"), help="JSON report path")
    parser.add_argument(
        "--threads",
        type=int,
        help="torch threads in every stage (default: torch's choice, one per core); 1 on a machine "
        "shared with other work, where more threads than free cores slow torch many-fold",
    )
    parser.add_argument(
        "--stage",
        choices=[stage.name for stage in STAGES],
        help="run only this stage, in this process, writing its result to --workdir (internal)",
    )
    parser.add_argument("--workdir", type=Path, help="with --stage: where results and shared files go")
    args = parser.parse_args()
    if args.scale < 1:
        parser.error("--scale must be a positive integer.")
    if args.threads is not None:
        if args.threads < 1:
            parser.error("--threads must be a positive integer.")
        torch.set_num_threads(args.threads)
    if args.stage is not None:
        if args.workdir is None:
            parser.error("--stage needs --workdir.")
        stage = next(stage for stage in STAGES if stage.name == args.stage)
        run_stage(stage, args.model, Sizes().scaled(args.scale), args.workdir)
        return
    if os.environ.get("HF_HUB_OFFLINE") != "1":
        print("warning: HF_HUB_OFFLINE is not 1; generation may wait on the network (make bench sets it)")
    report = benchmark(args.model, args.scale, args.output)
    print(summary(report))
    print(f"written: {args.output}")


if __name__ == "__main__":
    main()
