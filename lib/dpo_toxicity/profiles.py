"""Run profiles: the sizes a chapter runs at, chosen by one name.

``ci`` fits the whole book into CI on 2 CPU cores (a fixed, seeded subset of every data set); ``full`` runs
at the paper's sizes (or the largest the offline data allows), for long CPU runs or a user's GPU; ``colab``
sits between them, sized for one Colab GPU (a T4, 16 GB) running ``gpt2-medium`` through the book in about an
hour. Every chapter takes the profile's name as a papermill parameter and reads its sizes from here, so the
sizes of a run are stated in one place and printed in each chapter's provenance.

A profile's ``batch_size`` and ``generation_batch_size`` are the batches on the CPU. On a GPU,
:meth:`Profile.sized_for` scales both to the free memory and the models' width; chapters call it once, right
after loading their models, and use the sized profile from there on (off CUDA it is the profile itself)::

    lm = load_model(model)
    settings = settings.sized_for(lm)
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, replace
from typing import TYPE_CHECKING

import torch

if TYPE_CHECKING:
    from .models import LoadedModel

# On CUDA a profile's batch size is taken to fit in this much free memory for a model of this residual width
# (GPT-2-medium's); the batch grows with free memory and shrinks with width, as activations and KV caches do.
REFERENCE_FREE_BYTES = 4 * 2**30
REFERENCE_WIDTH = 1024
MAX_GPU_BATCH = 128


class UnknownProfileError(ValueError):
    """The requested profile name is not in :data:`PROFILES`."""


@dataclass(frozen=True)
class Profile:
    """Sizes of one run. ``None`` means "all the data there is".

    ``probe_train_per_class`` / ``probe_test_per_class``: Jigsaw comments per label (balanced) used to fit
    and to evaluate the probe; ``probe_max_tokens``: tokens kept per comment; ``batch_size``: texts per
    forward pass; ``generation_batch_size``: sequences per ``generate`` call, greedy or sampled, larger because
    a decoding step is too small a matrix product to keep 2 CPU cores busy at batch 16 (64 prompts took 11.7 s
    at batch 16 and 7.3 s at 64 on SmolLM2) and because no continuation depends on the batch it is generated
    in (padding round-off aside; sampled ones draw from per-row seeds). ``eval_prompts``: challenge prompts
    scored for toxicity (a seeded subset of the 1,199); ``perplexity_windows``: 1,024-token WikiText-2 test
    windows; ``f1_paragraphs``: WikiText-2 validation paragraphs for F1. ``pair_prompts``: DPO preference pairs generated; ``generator_trial_prompts``: prompts
    on which the rejected-side generators are compared; ``pair_new_tokens``: continuation length of a pair.
    ``table_eval_prompts``, ``table_perplexity_windows``, ``table_f1_paragraphs``: the smaller evaluation of
    chapters whose tables have many rows (one evaluation per intervention). ``edit_alphas`` x ``edit_betas``:
    the activation-editing sweep of chapter 5 (the paper's grid is alpha {0.01, 0.05} x beta {0.5, 0.55, 0.6}).
    ``companion_pairs``: how many of another model's preference pairs (the first ones) a model trains its DPO
    model on when it borrows them, as chapter 5's second model does; ``None``: all of them.
    ``dpo_rate_factor``: what DPO's learning rate is multiplied by. A model's rate (its spec's, else
    ``DPOSettings``'s default) is sized for the few dozen steps of the ``ci`` profile, whose linear decay brings it
    down within them; a profile with hundreds of planned steps keeps it near its peak for longer, and a factor
    below 1 lets the stopping rule spend its perplexity budget over more of the pairs, for every model alike.
    ``precompute_dpo_reference``: whether DPO computes the reference log-probs of every pair before its first step
    (``DPOSettings.precompute_reference``): right where every planned step runs and memory is tight (``ci``), wasted
    where the stopping rule ends training long before the last pair (``full``, ``colab``), which keep a frozen
    reference copy beside the policy instead.
    ``dpo_validation_every``: every how many DPO steps the stopping rule checks validation perplexity
    (``DPOSettings.validation_every``). A check costs two 1,024-token forward passes (26 s on Gemma 3 270M on 2 CPU
    cores, as long as a training step), and a coarser cadence only keeps an earlier step when the budget breaks
    between checks: right where every planned step stays far within it (``ci``), not where the rule decides the run.
    ``complete_tables``: whether the tables of chapters 4 and 5 hold every row of the paper's design; ``False``
    keeps the rows that test a claim and leaves out those that refine one (chapter 4's ablations at N scaled to
    the model's neuron count, chapter 5's patches of single groups and of partial sets of groups).
    ``mediation_prompts``: challenge prompts, none of them among the neuron statistics' (``eval_prompts``), whose
    base and DPO greedy continuations make the mediation's behaviour items (:mod:`~dpo_toxicity.mediation`);
    ``mediation_pairs``: preference pairs chapter 2 generates beside the training pairs and DPO never trains on,
    the mediation's preference items; ``mediation_random_draws``: random neuron sets drawn per set size, the null
    band a patched set's recovered fraction is read against.
    ``second_model``: whether chapter 5 repeats its analyses on the default model's registered companion (Gemma 3
    270M for SmolLM2), the paper's claim "across models"; ``False`` runs the default model only (a reader can still
    name a second model in the chapter's parameters).
    """

    name: str
    probe_train_per_class: int | None
    probe_test_per_class: int | None
    probe_max_tokens: int
    batch_size: int
    generation_batch_size: int
    eval_prompts: int | None
    perplexity_windows: int | None
    f1_paragraphs: int | None
    pair_prompts: int
    generator_trial_prompts: int
    pair_new_tokens: int
    table_eval_prompts: int | None
    table_perplexity_windows: int | None
    table_f1_paragraphs: int | None
    edit_alphas: tuple[float, ...]
    edit_betas: tuple[float, ...]
    companion_pairs: int | None
    dpo_rate_factor: float
    precompute_dpo_reference: bool
    dpo_validation_every: int
    complete_tables: bool
    mediation_prompts: int
    mediation_pairs: int
    mediation_random_draws: int
    second_model: bool

    def sizes(self) -> dict:
        """The profile as a plain mapping, for provenance tables."""
        return asdict(self)

    def batch_size_for(self, device: torch.device | str, width: int) -> int:
        """Texts per forward pass on ``device`` for a model whose residual stream is ``width`` wide.

        Off CUDA: the profile's ``batch_size``, so a CPU run is fixed by the profile alone. On CUDA:
        ``batch_size`` times (free memory / :data:`REFERENCE_FREE_BYTES`) times (:data:`REFERENCE_WIDTH` /
        ``width``), rounded down to a power of two, between 1 and :data:`MAX_GPU_BATCH`. Free memory is read
        when this is called: call it after the model is loaded, so its weights are not counted as free.
        Batching changes results only by padding round-off, except where texts are sampled (the random draws
        follow the batch shape).
        """
        device = torch.device(device)
        if device.type != "cuda":
            return self.batch_size
        return _gpu_batch(self.batch_size, torch.cuda.mem_get_info(device)[0], width)

    def sized_for(self, lm: LoadedModel, *others: LoadedModel) -> Profile:
        """The profile with ``batch_size`` and ``generation_batch_size`` for ``lm`` and ``others`` (loaded models
        on ``lm``'s device).

        Off CUDA: the profile itself. On CUDA: both scaled as :meth:`batch_size_for` scales ``batch_size``, by the
        device's free memory (read once, now: call it after every model of the run is loaded) and the widest
        model's residual width. The name and every other size stay the profile's, so its artefacts are shared.
        """
        device = torch.device(lm.device)
        if device.type != "cuda":
            return self
        free_bytes = torch.cuda.mem_get_info(device)[0]
        width = max(model.shape[2] for model in (lm, *others))
        return replace(
            self,
            batch_size=_gpu_batch(self.batch_size, free_bytes, width),
            generation_batch_size=_gpu_batch(self.generation_batch_size, free_bytes, width),
        )


def _gpu_batch(cpu_batch: int, free_bytes: int, width: int) -> int:
    """``cpu_batch`` scaled by free memory and width (see :meth:`Profile.batch_size_for`): a power of two between 1
    and :data:`MAX_GPU_BATCH`."""
    scaled = int(cpu_batch * (free_bytes / REFERENCE_FREE_BYTES) * (REFERENCE_WIDTH / width))
    batch = max(1, min(MAX_GPU_BATCH, scaled))
    return 1 << (batch.bit_length() - 1)


# The paper's activation-editing grid (v3 section 6).
PAPER_EDIT_ALPHAS = (0.01, 0.05)
PAPER_EDIT_BETAS = (0.5, 0.55, 0.6)

# DPO's learning rate in the long profiles, relative to a model's CI-sized rate (see Profile.dpo_rate_factor).
LONG_RUN_RATE_FACTOR = 1 / 3

# Sized for CI's 40 minutes on 2 CPU cores (a fresh-clone `.ci/run`: install, tests, every chapter, site check,
# Colab check) while keeping DPO's drop and the mediation distinguishable from zero; the second model, a third of
# that time on Gemma 3's 262k-token vocabulary, is left to the published full run. bench/README.md records the runs
# and trials behind each size.
CI = Profile(
    name="ci",
    probe_train_per_class=300,
    probe_test_per_class=100,
    probe_max_tokens=64,
    batch_size=16,
    generation_batch_size=100,
    eval_prompts=200,
    perplexity_windows=8,
    f1_paragraphs=100,
    pair_prompts=192,
    generator_trial_prompts=16,
    pair_new_tokens=20,
    table_eval_prompts=64,
    table_perplexity_windows=1,
    table_f1_paragraphs=16,
    edit_alphas=PAPER_EDIT_ALPHAS[-1:],
    edit_betas=PAPER_EDIT_BETAS[:1],
    companion_pairs=64,
    dpo_rate_factor=1.0,
    precompute_dpo_reference=True,
    dpo_validation_every=10,
    complete_tables=False,
    mediation_prompts=28,
    mediation_pairs=8,
    mediation_random_draws=2,
    second_model=False,
)
# The paper's sizes for the probe, the pairs, DPO and the base-vs-DPO comparison (999 of the 1,199 challenge
# prompts, the other 200 held out for the mediation) but perplexity, read on the first 64 of WikiText-2's 298 test
# windows (65k tokens, both models on the same ones), and smaller table rows; bench/README.md records the timings
# and DPO runs behind them.
FULL = Profile(
    name="full",
    probe_train_per_class=2000,
    probe_test_per_class=580,
    probe_max_tokens=128,
    batch_size=32,
    generation_batch_size=132,
    eval_prompts=999,
    perplexity_windows=64,
    f1_paragraphs=None,
    pair_prompts=2000,
    generator_trial_prompts=100,
    pair_new_tokens=32,
    table_eval_prompts=400,
    table_perplexity_windows=4,
    table_f1_paragraphs=128,
    edit_alphas=PAPER_EDIT_ALPHAS,
    edit_betas=PAPER_EDIT_BETAS,
    companion_pairs=None,
    dpo_rate_factor=LONG_RUN_RATE_FACTOR,
    precompute_dpo_reference=False,
    dpo_validation_every=5,
    complete_tables=True,
    # The mediation's interval narrows as 1/sqrt(items): CI's 36 items read the four groups within +-8 points, and
    # 128 items within about +-4, far inside the +-15 its claims need. Each batch costs 2 passes, 2 per named set
    # and 1 per random set (bench stage token_patching), so items and draws are what the run's time buys.
    mediation_prompts=96,
    mediation_pairs=32,
    mediation_random_draws=10,
    second_model=True,
)

# Sized for one Colab T4 (16 GB) running gpt2-medium in about an hour: 999 of the 1,199 challenge prompts for the
# main evaluations, a few hundred for each table row, 1,000 preference pairs; 580 held-out comments per class
# (the test pools hold 584 labelled toxic); otherwise the full profile.
COLAB = replace(
    FULL,
    name="colab",
    generation_batch_size=64,
    pair_prompts=1000,
    table_eval_prompts=300,
    table_perplexity_windows=32,
    table_f1_paragraphs=100,
    mediation_prompts=200,
    mediation_pairs=200,
    mediation_random_draws=20,
)

PROFILES: dict[str, Profile] = {profile.name: profile for profile in (CI, FULL, COLAB)}


def profile_named(name: str) -> Profile:
    """The profile called ``name``; :class:`UnknownProfileError` lists the known ones otherwise."""
    if name not in PROFILES:
        raise UnknownProfileError(f"Unknown profile {name!r}; use one of {sorted(PROFILES)} (e.g. --profile ci).")
    return PROFILES[name]
