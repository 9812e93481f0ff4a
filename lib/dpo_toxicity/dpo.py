r"""Direct preference optimisation (DPO): how the book makes its own "DPO model".

The paper studies what DPO changes inside a model that it has taught to be less toxic. DPO (Rafailov et al.
2023) fine-tunes a policy :math:`\pi_\theta` on pairs :math:`(x, y^+, y^-)` of a prompt, a preferred
("chosen") and a dispreferred ("rejected") continuation, with no reward model and no sampling:

.. math::

    r_\theta(x, y) = \beta \log \frac{\pi_\theta(y \mid x)}{\pi_\text{ref}(y \mid x)}, \qquad
    L_\text{DPO} = -\,\mathbb{E}\,\log \sigma\big(r_\theta(x, y^+) - r_\theta(x, y^-)\big).

:math:`\log \pi(y \mid x)` is the sum of the log-probabilities of the continuation's tokens given the prompt.
The **reference** :math:`\pi_\text{ref}` is the starting model, frozen: the implicit reward
:math:`r_\theta` measures how far training has moved a continuation's probability, and the loss asks only that
the chosen continuation gain more than the rejected one (the *margin* :math:`r^+ - r^-` grows). :math:`\beta`
sets how much a log-ratio counts, so how far the policy drifts from the reference before the loss saturates.
Each pair's gradient is weighted by :math:`\sigma(r^- - r^+)`: pairs already in the right order stop pulling.
At the first step the policy is the reference, every reward is 0 and the loss is :math:`\log 2 \approx 0.693`.

Here the preference data are the book's own pairs (a WikiText-2 prompt, the model's greedy continuation as
``chosen``, a toxic continuation as ``rejected``; see ``pairs``), and :func:`train_dpo` runs trl's
``DPOTrainer`` on a *copy* of the model, so the base model stays usable beside the DPO model in one kernel.
:func:`dpo_model` adds a cache keyed by the base weights, the pairs and the settings.

What we keep from the paper and what we change (:class:`DPOSettings` holds the values; the paper's GPT-2
recipe is :data:`PAPER_GPT2_SETTINGS`):

* kept: the sigmoid DPO loss with :math:`\beta = 0.1` (Lee et al. and v3); prompt and continuation truncated
  to 64 tokens each (Lee); one pass over the pairs (Lee's loop has no epoch loop); a float32 policy (Lee).
* changed, the optimiser: AdamW at learning rate 3e-5, batch 8, learning rate decaying linearly to 0, no
  warm-up, gradient norm clipped at 1 (trl's defaults). Lee trained GPT-2 with RMSprop at 1e-6, batch 4, a
  150-step warm-up and clipping at 10, over about 6,000 steps (24,576 pairs); v3 raised the rate to 1e-5. A CPU
  run has a few hundred pairs, so a few dozen steps: it would end inside Lee's warm-up, before the learning
  rate reached its value. On 240 of the book's own pairs (the ci profile's number before it fell to 192), v3's
  1e-5 moved SmolLM2-135M little (toxicity -10 %, perplexity +0.1 % on 200 challenge prompts), 3e-5 over two
  passes a lot (-40 %, +19 %); 3e-5 over one pass, the default, gave -28 % at +7 % and keeps the CI run short
  (the paper's GPT-2: -54 % at +8 %). Batch 8 halves the number of optimiser steps at a similar cost per pair.
  A profile with hundreds of steps scales the rate down (``Profile.dpo_rate_factor``, see :func:`settings_for`):
  on the full profile's 2,000 pairs, 3e-5 spent the perplexity budget in 15 steps (-27 % toxicity), a third of
  it, 1e-5, in 55 (-31.5 %).
* changed, the reference: Lee kept an fp16 copy of the reference. By default trl precomputes the reference
  log-probs of every pair in one pass before training, in float32, and keeps no second model in memory. But the
  pass covers every pair, and the stopping rule may end training long before the last: on the full profile's
  2,000 pairs it stopped after 60 of 250 steps, so three quarters of an 11-minute pass went to pairs never
  trained on. ``DPOSettings.precompute_reference=False`` keeps a frozen float32 copy of the model as the
  reference instead, run on each step's pairs only (:func:`settings_for` takes the choice from the profile).
  ``make bench``'s ``dpo_reference`` comparison measures both on the same pairs: the same losses, a step 1.2 to
  1.4 times as long with the copy on SmolLM2 (two runs of 2 steps each), so the copy is the cheaper while fewer
  than about four fifths of the planned steps run, or at any share in the faster of the two runs.
* changed, early stopping: Lee stopped on a validation loss; :class:`PerplexityBudget` stops once the policy's
  perplexity on WikiText-2 validation text rises more than 10 % above the reference's and keeps the last weights
  within that budget. Without it, the full profile's 2,000 pairs (250 steps) cut toxicity 52 % but raised test
  perplexity 76 %: the loss was near 0 by step 30 and later steps only widened margins.
* not reproduced: v3's extra KL term (gamma times a per-token KL to the reference).
* conventions of trl that differ from the paper's code: the prompt's tokens are masked out of
  :math:`\log \pi(y \mid x)` (Lee's code sums them too, but they cancel between chosen and rejected) and
  EOS is appended to every continuation and scored (Lee's code masks every token with GPT-2's EOS id, 50256).

Preference pairs come as :class:`~dpo_toxicity.pairs.PreferencePair` objects, any object with ``prompt``,
``chosen`` and ``rejected`` string attributes, or mappings with those keys. The continuations are appended to
the prompt as they are, so a continuation normally starts with a space.

Example::

    lm = load_model("smollm2-135m")
    result = dpo_model(lm, pairs)          # trains once, later calls reload from the cache in seconds
    result.model                           # a LoadedModel named "smollm2-135m-dpo"
    result.history[["loss", "reward_margin", "reward_accuracy"]]

On a CPU the copy trains in float32 (bfloat16 is several times slower there). On a CUDA device (a user's GPU)
it trains there, in float32 with autocast to the card's native 16-bit type, and comes back in the base model's
dtype. Full fine-tuning keeps about 16 bytes per parameter (float32 weights, gradients and AdamW's two moments),
so the paper's 7-8B models need more memory than one 80 GB GPU has. :func:`train_dpo` therefore also runs in
every process of ``accelerate launch``, for instance with FSDP sharding those bytes over the GPUs
(``configs/accelerate/fsdp.yaml``; ``book/running_at_scale.md`` gives the commands), at the same batch per
optimiser step; or, on one GPU, ``DPOSettings.lora_rank`` trains LoRA adapters instead, a change of protocol.
"""

from __future__ import annotations

import contextlib
import copy
import json
import math
import os
import shutil
import tempfile
import time
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, fields, replace
from pathlib import Path

import datasets
import numpy as np
import pandas as pd
import torch
import transformers
import trl
import trl.trainer.utils as trl_trainer_utils
from accelerate import PartialState
from accelerate.utils import broadcast_object_list, get_int_from_env
from torch.distributed.checkpoint.state_dict import StateDictOptions, get_model_state_dict
from torch.distributed.tensor import DTensor
from transformers import AutoModelForCausalLM

from . import data
from .artefacts import DPO_RECORD_FILE, HELDOUT_PAIRS_FILE, PAIRS_FILE
from .evaluation import PERPLEXITY_WINDOW
from .models import LoadedModel, native_dtype
from .pairs import PreferencePair, load_pairs
from .paths import artefact_dir, cache_dir
from .profiles import profile_named
from .result_cache import digest, discard_unreadable

# Pairs per forward and backward pass; an optimiser step accumulates the gradients of DPOSettings.batch_size
# pairs, so the step is the same (round-off aside) at a quarter of the activation memory: the logits of a
# 262k-token vocabulary (Gemma 3) make a pass's activations the largest item of chapter 5's memory peak after the
# weights. On Gemma 3 270M, 3 steps of 8 pairs gave the same losses to 5 decimals in the same time at 2 pairs per
# pass, with a peak of 6.70 GiB against 7.29 GiB at 4 and 8.47 GiB at 8 (the base weights set aside in each).
MICRO_BATCH_PAIRS = 2
# The trl release whose internals this module relies on: its tokenisation (copied by _tokenize_like_trl), its fused
# LM head and its Triton switch. Under another release, missing ones fall back to trl's public behaviour and a
# tokenisation that may differ is flagged, each with a warning naming the release.
TRL_RELEASE = "1.16"


@dataclass(frozen=True)
class DPOSettings:
    """The hyper-parameters of one DPO run (hashable; :meth:`as_dict` serialises it for cache keys).

    ``optimizer`` and ``learning_rate_schedule`` take the names of ``transformers.TrainingArguments``'s
    ``optim`` and ``lr_scheduler_type`` ("adamw_torch", "rmsprop"; "linear", "constant_with_warmup").
    Prompts keep their last ``max_prompt_tokens`` tokens and continuations their first
    ``max_completion_tokens`` tokens. ``batch_size`` counts pairs per optimiser step.

    The stopping rule (see :class:`PerplexityBudget`): every ``validation_every`` steps, the policy's perplexity on
    ``validation_windows`` WikiText-2 *validation* windows is compared with the reference's; training stops at the
    first check above ``(1 + max_perplexity_rise)`` times the reference's and keeps the last checked weights within
    it. ``max_perplexity_rise=None`` trains every step of every epoch.

    ``precompute_reference``: whether the reference log-probs of every pair are computed in one pass before the
    first step (no second model in memory) or by a frozen copy of the model on each step's pairs (no work on
    pairs an early stop leaves untrained). Both give the same losses, round-off aside.

    ``lora_rank``: ``None`` (the default) fine-tunes every weight, as the paper did. A rank trains peft's LoRA
    adapters of that rank on every linear layer but the unembedding instead, and merges them into the weights
    after training: a change of protocol (the DPO model differs from the base by a low-rank update per matrix),
    for a model whose full fine-tuning does not fit one GPU. Its reference is the policy with the adapters off,
    never a copy. The learning rate is not rescaled for adapters; the book has not tuned one for them.
    :func:`settings_for` takes the rank from the environment variable ``DPO_TOX_LORA_RANK``.
    """

    beta: float = 0.1
    learning_rate: float = 3e-5
    optimizer: str = "adamw_torch"
    batch_size: int = 8
    epochs: int = 1
    learning_rate_schedule: str = "linear"
    warmup_steps: int = 0
    max_gradient_norm: float = 1.0
    max_prompt_tokens: int = 64
    max_completion_tokens: int = 64
    seed: int = 42
    max_perplexity_rise: float | None = 0.10
    validation_every: int = 5
    validation_windows: int = 2
    precompute_reference: bool = True
    lora_rank: int | None = None

    def __post_init__(self) -> None:
        positive = (
            "beta",
            "learning_rate",
            "batch_size",
            "epochs",
            "max_gradient_norm",
            "max_prompt_tokens",
            "max_completion_tokens",
            "validation_every",
            "validation_windows",
        )
        for name in positive:
            if not getattr(self, name) > 0:
                raise ValueError(f"DPOSettings.{name} must be positive, got {getattr(self, name)!r}.")
        if self.warmup_steps < 0:
            raise ValueError(f"DPOSettings.warmup_steps must be 0 or more, got {self.warmup_steps!r}.")
        if self.lora_rank is not None and not self.lora_rank > 0:
            raise ValueError(
                f"DPOSettings.lora_rank must be positive (8 or 16 are usual), or None to fine-tune every "
                f"weight; got {self.lora_rank!r}."
            )
        if self.max_perplexity_rise is not None and not self.max_perplexity_rise >= 0:
            raise ValueError(
                f"DPOSettings.max_perplexity_rise must be 0 or more (0.10 allows a 10 % rise), or None to train "
                f"every step; got {self.max_perplexity_rise!r}."
            )

    def as_dict(self) -> dict:
        """The settings as a JSON-serialisable mapping (field order kept; ``lora_rank`` only when set)."""
        values = asdict(self)
        if values["lora_rank"] is None:  # full fine-tuning keeps the cache key it had before LoRA was an option
            del values["lora_rank"]
        return values

    @classmethod
    def from_dict(cls, values: Mapping) -> DPOSettings:
        """The inverse of :meth:`as_dict`; unknown keys raise ``ValueError``."""
        known = {field.name for field in fields(cls)}
        unknown = sorted(set(values) - known)
        if unknown:
            raise ValueError(f"Unknown DPOSettings fields {unknown}; known: {sorted(known)}.")
        return cls(**values)


# Lee et al.'s recipe for GPT-2 medium (their Table 8 and config.yaml), for runs with the paper's data and time.
PAPER_GPT2_SETTINGS = DPOSettings(
    learning_rate=1e-6,
    optimizer="rmsprop",
    batch_size=4,
    learning_rate_schedule="constant_with_warmup",
    warmup_steps=150,
    max_gradient_norm=10.0,
)

# trl's per-step log names -> the history's column names.
HISTORY_COLUMNS = {
    "loss": "loss",
    "rewards/margins": "reward_margin",
    "rewards/accuracies": "reward_accuracy",
    "rewards/chosen": "reward_chosen",
    "rewards/rejected": "reward_rejected",
    "logps/chosen": "log_prob_chosen",
    "logps/rejected": "log_prob_rejected",
    "learning_rate": "learning_rate",
    "grad_norm": "gradient_norm",
    "epoch": "epoch",
}


@dataclass
class DPOResult:
    r"""A DPO-trained model and how its training went.

    ``model``: the DPO model (eval mode, no gradients, the base model's tokenizer and device), named
    ``"<base>-dpo"`` with a weights hash that names its cache key. ``history``: one row per optimiser step,
    indexed by ``step`` (1, 2, ...), with columns ``loss``, ``reward_margin``, ``reward_accuracy``,
    ``reward_chosen``, ``reward_rejected`` (batch means of :math:`r_\theta`, beta times a log-ratio),
    ``log_prob_chosen``, ``log_prob_rejected`` (batch means of the policy's summed log-probs),
    ``learning_rate``, ``gradient_norm`` (before clipping) and ``epoch``; each row is measured on the step's batch
    *before* its update, so row 1 shows the reference (loss log 2, rewards 0). ``reference_seconds``: wall time
    of tokenising and precomputing the reference log-probs (tokenising only, without a precomputed reference);
    ``training_seconds``: wall time of the optimiser steps (with the reference's forward passes, when it is not
    precomputed) and of the stopping rule's checks (both as measured when the model was trained, also when it
    comes from the cache); ``validation_seconds``: the checks' share of it.

    The stopping rule (:class:`PerplexityBudget`) fills ``validation``, the validation perplexity at each checked
    step (indexed by ``step``, 0 being the reference), and sets ``kept_step``, the step whose weights ``model``
    holds: the last step trained when no check broke the budget, else the last checked step within it (0: the
    reference's weights). ``planned_steps`` is what the pairs, batch and epochs allow. Without a budget,
    ``validation`` is empty and ``kept_step`` is the last step.
    """

    model: LoadedModel
    history: pd.DataFrame
    settings: DPOSettings
    base_name: str
    base_weights_hash: str
    n_pairs: int
    reference_seconds: float
    training_seconds: float
    validation: pd.DataFrame
    kept_step: int
    planned_steps: int
    validation_seconds: float
    from_cache: bool = False
    folder: Path | None = None

    @property
    def steps(self) -> int:
        """Optimiser steps trained, those after ``kept_step`` included."""
        return len(self.history)

    @property
    def perplexity_limit(self) -> float | None:
        """The validation perplexity the budget allowed (``None`` without a budget)."""
        if self.settings.max_perplexity_rise is None:
            return None
        return (1 + self.settings.max_perplexity_rise) * float(self.validation["perplexity"].loc[0])

    def __repr__(self) -> str:
        last = self.history.iloc[-1]
        origin = f"loaded from {self.folder}" if self.from_cache else "trained now"
        kept = f"kept step {self.kept_step} of {self.steps} trained ({self.planned_steps} planned)"
        if self.settings.lora_rank is not None:
            kept = f"LoRA rank {self.settings.lora_rank}, {kept}"
        return (
            f"DPOResult({self.base_name} -> {self.model.name}: {self.n_pairs} pairs, {kept}, in "
            f"{self.training_seconds:.0f} s (+{self.reference_seconds:.0f} s reference); last step loss "
            f"{last.loss:.3f}, reward margin {last.reward_margin:.3f}, accuracy {last.reward_accuracy:.2f}; {origin})"
        )


def preference_pairs(pairs: Sequence) -> list[PreferencePair]:
    """Check and normalise ``pairs`` (objects or mappings with string ``prompt``/``chosen``/``rejected``).

    Raises ``ValueError`` for an empty sequence, a missing field, a non-string field or an empty continuation,
    naming the offending pair's index.
    """
    if isinstance(pairs, (str, bytes, Mapping)) or len(pairs) == 0:
        raise ValueError("DPO needs a non-empty sequence of preference pairs (prompt, chosen, rejected).")
    normalised = []
    for index, pair in enumerate(pairs):
        values = []
        for name in ("prompt", "chosen", "rejected"):
            value = pair.get(name) if isinstance(pair, Mapping) else getattr(pair, name, None)
            if not isinstance(value, str):
                raise ValueError(
                    f"Preference pair {index} has no string field {name!r} (got {type(value).__name__}); a pair "
                    "needs string 'prompt', 'chosen' and 'rejected' fields or keys."
                )
            values.append(value)
        if not values[1] or not values[2]:
            raise ValueError(f"Preference pair {index} has an empty continuation; DPO needs text to compare.")
        normalised.append(PreferencePair(*values))
    return normalised


def truncate_pair(pair: PreferencePair, tokenizer, settings: DPOSettings) -> PreferencePair:
    """The pair with its prompt cut to its last and its continuations to their first N tokens (by ``settings``)."""

    def keep(text: str, n_tokens: int, from_end: bool) -> str:
        ids = tokenizer(text, add_special_tokens=False)["input_ids"]
        if len(ids) <= n_tokens:
            return text
        return tokenizer.decode(ids[-n_tokens:] if from_end else ids[:n_tokens])

    return PreferencePair(
        keep(pair.prompt, settings.max_prompt_tokens, from_end=True),
        keep(pair.chosen, settings.max_completion_tokens, from_end=False),
        keep(pair.rejected, settings.max_completion_tokens, from_end=False),
    )


def _max_length(settings: DPOSettings) -> int:
    """trl's cap on prompt + continuation tokens: both budgets, plus EOS and a BOS some tokenizers add."""
    return settings.max_prompt_tokens + settings.max_completion_tokens + 2


def _tokenize_like_trl(tokenizer, pair: PreferencePair, max_length: int) -> tuple[list[int], list[int], int]:
    """``(prompt+chosen ids, prompt+rejected ids, prompt length)`` exactly as trl 1.16's ``DPOTrainer`` builds them.

    trl appends EOS to each continuation, tokenises prompt and prompt+continuation separately, takes the
    shared prefix as the prompt (tokens can merge across the boundary) and keeps the first ``max_length``
    tokens of each sequence.
    """
    eos = tokenizer.eos_token

    def with_eos(text: str) -> str:
        return text if text.endswith(eos) else text + eos

    prompt_ids = tokenizer(pair.prompt)["input_ids"]
    chosen_ids = tokenizer(pair.prompt + with_eos(pair.chosen))["input_ids"]
    rejected_ids = tokenizer(pair.prompt + with_eos(pair.rejected))["input_ids"]
    prompt_length = min(_common_prefix(prompt_ids, chosen_ids), _common_prefix(prompt_ids, rejected_ids))
    return chosen_ids[:max_length], rejected_ids[:max_length], prompt_length


def _common_prefix(first: list[int], second: list[int]) -> int:
    length = 0
    for a, b in zip(first, second):
        if a != b:
            break
        length += 1
    return length


@torch.no_grad()
def completion_log_probs(lm: LoadedModel, pairs: Sequence, settings: DPOSettings = DPOSettings()) -> pd.DataFrame:
    """``log pi(chosen | prompt)`` and ``log pi(rejected | prompt)`` of ``lm`` for every pair, in nats.

    Sums over the continuation's tokens (EOS included), with the same truncation and tokenisation as training,
    so ``beta * (policy - reference)`` of two models' results is the implicit DPO reward of each pair. Returns
    a DataFrame with float64 columns ``chosen`` and ``rejected``, one row per pair.
    """
    pairs = [truncate_pair(pair, lm.tokenizer, settings) for pair in preference_pairs(pairs)]
    if trl.__version__.split(".")[:2] != TRL_RELEASE.split("."):
        warnings.warn(
            f"completion_log_probs tokenises pairs as trl {TRL_RELEASE} does; trl {trl.__version__} may "
            "split prompt and continuation elsewhere, so these log-probs may differ from training's.",
            stacklevel=3,
        )
    tokenized = [_tokenize_like_trl(lm.tokenizer, pair, _max_length(settings)) for pair in pairs]
    columns = []
    for which in (0, 1):  # chosen, then rejected
        sequences = [(entry[which], entry[2]) for entry in tokenized]
        columns.append(
            np.concatenate(
                [
                    _summed_log_probs(lm, sequences[start : start + settings.batch_size])
                    for start in range(0, len(sequences), settings.batch_size)
                ]
            )
        )
    return pd.DataFrame({"chosen": columns[0], "rejected": columns[1]})


def _summed_log_probs(lm: LoadedModel, sequences: list[tuple[list[int], int]]) -> np.ndarray:
    """Sum of log p(token | earlier tokens) over each sequence's tokens after its first ``prompt_length``."""
    width = max(len(ids) for ids, _ in sequences)
    # Right padding keeps every real token at its natural position (GPT-2's absolute positions stay right).
    input_ids = torch.full((len(sequences), width), lm.tokenizer.pad_token_id, dtype=torch.long)
    attention_mask = torch.zeros_like(input_ids)
    completion_mask = torch.zeros_like(input_ids, dtype=torch.bool)
    for row, (ids, prompt_length) in enumerate(sequences):
        input_ids[row, : len(ids)] = torch.tensor(ids)
        attention_mask[row, : len(ids)] = 1
        completion_mask[row, prompt_length : len(ids)] = True
    input_ids, attention_mask = input_ids.to(lm.device), attention_mask.to(lm.device)
    logits = lm.model(input_ids=input_ids, attention_mask=attention_mask, use_cache=False).logits.float()
    # Position t predicts token t + 1: logits[:, :-1] (batch, width-1, vocab) against input_ids[:, 1:].
    token_log_probs = torch.log_softmax(logits[:, :-1], dim=-1).gather(-1, input_ids[:, 1:, None])[..., 0]
    mask = completion_mask[:, 1:].to(lm.device)
    return (token_log_probs * mask).sum(dim=1).double().cpu().numpy()


def validation_windows(tokenizer, count: int, window: int = PERPLEXITY_WINDOW) -> list[torch.Tensor]:
    """The first ``count`` windows of ``window`` tokens of the WikiText-2 validation paragraphs (joined by blank
    lines), as ``(1, window)`` id tensors, for the stopping rule.

    The validation split, never the test split the book reports perplexity on: the stopping step is chosen on
    these windows, so the test perplexity stays an honest measurement. F1 is scored on openings of the same
    paragraphs; the first windows cover a few of them, a weak link for one stopping step chosen on 2,048 tokens.
    Raises ``ValueError`` when the paragraphs hold fewer windows than asked.
    """
    ids = tokenizer("\n\n".join(data.wikitext2_validation_paragraphs()), add_special_tokens=False)["input_ids"]
    pieces = [ids[start : start + window] for start in range(0, len(ids), window)]
    pieces = [piece for piece in pieces if len(piece) == window]
    if len(pieces) < count:
        raise ValueError(
            f"WikiText-2 validation holds {len(pieces)} full windows, fewer than the {count} asked; "
            "lower DPOSettings.validation_windows."
        )
    return [torch.tensor([piece], dtype=torch.long) for piece in pieces[:count]]


@torch.no_grad()
def validation_perplexity(policy: transformers.PreTrainedModel, windows: Sequence[torch.Tensor]) -> float:
    """exp(mean next-token NLL) of ``policy`` over ``windows``, in eval mode (its mode is restored after).

    ``policy`` must carry trl's fused LM head (``DPOTrainer`` adds it to the model it trains): the log-probs are
    computed in chunks, never as a full ``(tokens, vocabulary)`` logits matrix, which for Gemma 3's 262k-token
    vocabulary would add 1 GiB per 1,024-token window to the peak of DPO training. Under a trl without that head
    (``trl.trainer.utils.add_fused_lm_head``) the model's own loss gives the same value from the full logits.
    """
    fused = hasattr(trl_trainer_utils, "add_fused_lm_head")
    if not fused:
        warnings.warn(
            f"trl {trl.__version__} has no fused LM head (trl {TRL_RELEASE} has): validation perplexity "
            "is computed from full logits, which raises DPO training's memory peak.",
            stacklevel=3,
        )
    was_training = policy.training
    policy.eval()
    try:
        nll, count = 0.0, 0
        device = next(policy.parameters()).device
        for window in windows:
            ids = window.to(device)
            if fused:
                output = policy(input_ids=ids, labels=ids, fused_lm_head=True)
                nll += float(-output.log_probs.double().sum())
                count += int(output.label_mask.sum())
            else:  # the loss is the mean NLL of every token after the first
                nll += float(policy(input_ids=ids, labels=ids).loss) * (ids.shape[1] - 1)
                count += ids.shape[1] - 1
    finally:
        policy.train(was_training)
    return math.exp(nll / count)


class PerplexityBudget(transformers.TrainerCallback):
    """A stopping rule for DPO: stop once the policy's validation perplexity exceeds ``1 + budget`` times the
    reference's, and keep the last checked weights within it.

    DPO's loss alone has no stopping point: once pairs are ranked, the margin keeps widening by pushing the
    rejected continuations' probability down, and with it the language model's other predictions. On SmolLM2 and
    2,000 pairs the loss was near 0 by step 30 while 220 more steps raised test perplexity 76 %. Lee et al. stopped
    on a validation loss; this rule stops on the quantity the paper reports beside toxicity.

    ``measure(policy)`` returns a perplexity. It runs before the first step (step 0, the reference), every
    ``every`` steps and after the last step. A check within the budget writes the policy's weights to
    ``checkpoint`` (on disk: a second copy of the weights in memory would raise DPO's peak); the first check
    above it stops training. :meth:`restore` then loads the kept weights, when later steps were trained.
    """

    def __init__(self, measure, budget: float, every: int, checkpoint: Path) -> None:
        self.measure, self.budget, self.every, self.checkpoint = measure, budget, every, checkpoint
        self.perplexities: dict[int, float] = {}
        self.kept_step = 0
        self.seconds = 0.0

    def on_train_begin(self, args, state, control, model=None, **kwargs):
        self._check(0, model)

    def on_step_end(self, args, state, control, model=None, **kwargs):
        step = state.global_step
        if (step % self.every == 0 or step == state.max_steps) and not self._check(step, model):
            control.should_training_stop = True

    def _check(self, step: int, model) -> bool:
        start = time.perf_counter()
        perplexity = self.measure(model)
        self.perplexities[step] = perplexity
        within = perplexity <= (1 + self.budget) * self.perplexities[0]
        if within:
            torch.save(model.state_dict(), self.checkpoint)
            self.kept_step = step
        self.seconds += time.perf_counter() - start
        return within

    def restore(self, model, last_step: int) -> None:
        """Load the kept weights into ``model`` unless its weights, after ``last_step``, are the kept ones."""
        if self.kept_step != last_step:
            model.load_state_dict(torch.load(self.checkpoint, mmap=True, weights_only=True))

    def table(self) -> pd.DataFrame:
        """The checks as a DataFrame indexed by ``step`` with a ``perplexity`` column."""
        return _validation_frame(self.perplexities)


def _validation_frame(perplexities: Mapping[int, float]) -> pd.DataFrame:
    frame = pd.DataFrame({"perplexity": pd.Series(perplexities, dtype="float64")})
    frame.index = frame.index.astype("int64").rename("step")
    return frame


def _processes() -> int:
    """How many processes train together: the world size a launcher (``accelerate launch``, ``torchrun``, MPI)
    sets, read from the variables accelerate reads it from; 1 without a launcher."""
    return get_int_from_env(["WORLD_SIZE", "PMI_SIZE", "OMPI_COMM_WORLD_SIZE", "MV2_COMM_WORLD_SIZE"], 1)


def _batch_split(batch_size: int, processes: int) -> tuple[int, int]:
    """``(pairs per forward pass in each process, gradient accumulation steps)`` such that an optimiser step takes
    ``batch_size`` pairs: pairs per pass x ``processes`` x accumulation steps = ``batch_size``, with passes of at
    most :data:`MICRO_BATCH_PAIRS` pairs. Raises ``ValueError`` when ``processes`` does not divide ``batch_size``.
    """
    if batch_size % processes:
        raise ValueError(
            f"DPO's batch of {batch_size} pairs does not split over {processes} processes; launch a "
            f"number of processes that divides it, or set DPOSettings.batch_size to a multiple of "
            f"{processes}."
        )
    per_process = batch_size // processes
    micro_batch = math.gcd(per_process, MICRO_BATCH_PAIRS)
    return micro_batch, per_process // micro_batch


def _pairs_dataset(pairs: Sequence[PreferencePair], scratch: Path, process_index: int) -> datasets.Dataset:
    """The pairs as a dataset held in a file of the main process's ``scratch`` folder (one file per process).

    trl writes the precomputed reference log-probs beside the dataset's file and every process reads them from
    there; for a dataset held in memory it picks a temporary folder of each process's own, where the other
    processes find nothing. Call it once the trainer's config has set up the processes (it broadcasts the folder).
    """
    folder = [str(scratch)]
    broadcast_object_list(folder, from_process=0)
    path = Path(folder[0]) / f"pairs-{process_index}.arrow"
    return datasets.Dataset.from_list([asdict(pair) for pair in pairs]).map(cache_file_name=str(path))


def _lora_config(rank: int):
    """peft's LoRA adapters of ``rank`` on every linear layer but the unembedding, scaled by alpha = 2 x rank (a
    common choice), without dropout (the book's models train without it)."""
    try:
        import peft  # an optional extra: full fine-tuning, the default, runs without it
    except ImportError as error:
        raise ImportError(
            "DPOSettings.lora_rank needs peft: pip install 'dpo-toxicity[lora]', or the pinned requirements.txt."
        ) from error
    return peft.LoraConfig(
        r=rank, lora_alpha=2 * rank, lora_dropout=0.0, target_modules="all-linear", task_type="CAUSAL_LM"
    )


def _gathered(policy: transformers.PreTrainedModel) -> transformers.PreTrainedModel:
    """``policy`` with every weight whole in this process: ``policy`` itself, unless FSDP sharded it over the
    processes (its parameters are then DTensors); then a new float32 module, on the CPU, holding the weights
    gathered from every process. Under FSDP every process must call it (the gathering is collective).
    """
    if not any(isinstance(parameter, DTensor) for parameter in policy.parameters()):
        return policy
    weights = get_model_state_dict(policy, options=StateDictOptions(full_state_dict=True))
    whole = AutoModelForCausalLM.from_config(copy.deepcopy(policy.config), dtype=torch.float32)
    whole.load_state_dict(weights)
    whole.generation_config = copy.deepcopy(policy.generation_config)
    return whole


def _trainable_copy(
    model: transformers.PreTrainedModel, device: torch.device | None = None
) -> transformers.PreTrainedModel:
    """A fresh float32 module with ``model``'s weights, in train mode with gradients on, on ``device`` (default:
    ``model``'s).

    Built from the config and a state dict rather than ``copy.deepcopy``: nnsight replaces the ``forward`` of
    every module it wraps, and a deep copy would carry those wrappers into training.
    """
    trainable = AutoModelForCausalLM.from_config(copy.deepcopy(model.config), dtype=torch.float32)
    trainable.load_state_dict(model.state_dict())
    trainable.generation_config = copy.deepcopy(model.generation_config)
    return trainable.to(device or model.device).train().requires_grad_(True)


@contextlib.contextmanager
def _weights_set_aside(model: transformers.PreTrainedModel, folder: Path):
    """Hold ``model``'s parameters in a file under ``folder`` while the block runs, and put them back after it.

    DPO trains a copy and never runs the base model, whose weights would otherwise sit in memory beside the
    copy's weights, gradients and optimiser states (1 GiB for Gemma 3 270M in float32, a ninth of chapter 5's
    peak). Each parameter keeps its identity (tied weights stay tied, nnsight's wrappers stay valid) and gets
    back its exact values, on success or on error.
    """
    parameters = dict(model.named_parameters())  # tied parameters are listed once
    path = folder / "base-parameters.pt"
    torch.save({name: parameter.data for name, parameter in parameters.items()}, path)
    for parameter in parameters.values():
        parameter.data = torch.empty(0, dtype=parameter.dtype, device=parameter.device)
    try:
        yield
    finally:
        saved = torch.load(path, map_location=next(iter(parameters.values())).device, weights_only=True)
        for name, parameter in parameters.items():
            parameter.data = saved[name]
        path.unlink()


def _frozen(
    policy: transformers.PreTrainedModel, lm: LoadedModel, weights_hash: str, settings: DPOSettings, n_pairs: int
) -> LoadedModel:
    """The trained policy as a :class:`LoadedModel` beside ``lm``: eval mode, no gradients, ``lm``'s dtype."""
    # trl (fused log-prob head) and accelerate (autocast) patch `forward` on the instance; drop the patch.
    policy.__dict__.pop("forward", None)
    policy = policy.to(device=lm.device, dtype=lm.model.dtype).eval().requires_grad_(False)
    policy.generation_config.pad_token_id = lm.tokenizer.pad_token_id
    lora = "" if settings.lora_rank is None else f"; LoRA rank {settings.lora_rank}, merged, not full fine-tuning"
    spec = replace(
        lm.spec,
        name=f"{lm.name}-dpo",
        description=f"{lm.spec.description}; DPO-trained by the book on {n_pairs} pairs "
        f"(beta {settings.beta}, {settings.optimizer} at {settings.learning_rate:g}{lora})",
    )
    return LoadedModel(spec, policy, lm.tokenizer, weights_hash, lm.device)


def _history(log_history: list[dict]) -> pd.DataFrame:
    """trl's per-step logs (the entries with a ``loss``) as a DataFrame indexed by step."""
    rows = [entry for entry in log_history if "loss" in entry and "step" in entry]
    frame = pd.DataFrame(rows).set_index("step")
    return frame[list(HISTORY_COLUMNS)].rename(columns=HISTORY_COLUMNS).astype("float64")


class _StepProgress(transformers.ProgressCallback):
    """The optimiser-step progress bar, without printing every step's log (the history keeps it)."""

    def on_log(self, args, state, control, logs=None, **kwargs):
        return None


@contextlib.contextmanager
def _quiet(progress: bool):
    """Silence trl's deprecation warnings and datasets' bars; unless ``progress``, also trl's reference-pass bar
    and transformers' bars for saving and loading weights. Everything is restored on exit.
    """
    datasets_bars = datasets.is_progress_bar_enabled()
    transformers_bars = transformers.utils.logging.is_progress_bar_enabled()
    previous = os.environ.get("TQDM_DISABLE")
    datasets.disable_progress_bars()  # a bar per preprocessing pass, each done in a blink
    if not progress:
        transformers.utils.logging.disable_progress_bar()
        os.environ["TQDM_DISABLE"] = "1"  # trl's reference-log-prob loop reads this
    try:
        with warnings.catch_warnings():
            # trl 1.16 still sets and reads transformers 5's deprecated `gradient_checkpointing` names.
            warnings.filterwarnings(
                "ignore", message=".*gradient_checkpointing.* is deprecated", category=FutureWarning
            )
            yield
    finally:
        if datasets_bars:
            datasets.enable_progress_bars()
        if transformers_bars:
            transformers.utils.logging.enable_progress_bar()
        if previous is None:
            os.environ.pop("TQDM_DISABLE", None)
        else:
            os.environ["TQDM_DISABLE"] = previous


@contextlib.contextmanager
def _unembed_continuations_only():
    """Make trl's fused LM head unembed only the continuation positions, on every device; restored on exit.

    trl 1.16 unembeds every position of a batch (prompt and padding too, their results then discarded) unless
    the device runs Triton kernels, to keep tile shapes fixed for compiling back ends; it reads that choice
    through ``trl.trainer.utils._use_triton``. On a CPU the discarded positions are most of the unembedding, the
    largest matrix product of a model with a big vocabulary: on Gemma 3 270M (262k tokens) unembedding only the
    continuations took a step from 25.7 s to 17.0 s and the reference pass from 26 s to 20 s, with the same
    losses to five decimals (the log-probs are those of the positions scored either way).
    """
    device_runs_triton = getattr(trl_trainer_utils, "_use_triton", None)
    if device_runs_triton is None:
        warnings.warn(
            f"trl {trl.__version__} has no trl.trainer.utils._use_triton (trl {TRL_RELEASE} has): DPO "
            "unembeds every position, as that trl chooses, which is slower on a CPU.",
            stacklevel=3,
        )
        yield
        return
    trl_trainer_utils._use_triton = lambda device: True
    try:
        yield
    finally:
        trl_trainer_utils._use_triton = device_runs_triton


def _cache_key(lm: LoadedModel, pairs: Sequence[PreferencePair], settings: DPOSettings) -> str:
    """Hex digest of what determines a DPO model: base model, pairs, settings and the trl version."""
    return digest(
        {
            "model": lm.name,
            "weights_hash": lm.weights_hash,
            "pairs": [[pair.prompt, pair.chosen, pair.rejected] for pair in pairs],
            "settings": settings.as_dict(),
            "trl": trl.__version__,
        }
    )


def train_dpo(
    lm: LoadedModel, pairs: Sequence, settings: DPOSettings = DPOSettings(), progress: bool = False
) -> DPOResult:
    """Train a DPO copy of ``lm`` on ``pairs`` with trl's ``DPOTrainer``; ``lm`` itself is left unchanged.

    The reference is ``lm`` as it is: its log-probs of every pair are precomputed before the first step, or, with
    ``settings.precompute_reference`` off, computed at each step by a frozen copy of it. Only the continuation
    positions are unembedded (see :func:`_unembed_continuations_only`). With
    ``settings.max_perplexity_rise`` set, :class:`PerplexityBudget` may stop training early and the returned model
    holds the weights of its ``kept_step``.
    Uses the CUDA device when ``lm`` lives on one, with autocast to the card's native 16-bit type
    (:func:`~dpo_toxicity.models.native_dtype`), else the CPU in float32. ``progress`` shows progress bars
    for the reference pass and the optimiser steps. trl seeds Python's, NumPy's and torch's global random
    generators with ``settings.seed``. Raises ``ValueError`` for bad pairs (see :func:`preference_pairs`).

    Run in one process, or in every process of ``accelerate launch`` (each calling it alike): an optimiser step
    takes ``settings.batch_size`` pairs in all, split over the processes (see :func:`_batch_split`), so the
    steps are those of one process, round-off aside. Every process returns the same result.
    """
    pairs = [truncate_pair(pair, lm.tokenizer, settings) for pair in preference_pairs(pairs)]
    on_cuda = lm.device.type == "cuda"
    processes = _processes()
    # Launched, the copies start on the CPU: FSDP moves each process's shard of them to its GPU, which would
    # otherwise hold whole float32 copies beside the 16-bit model first (DDP's trainer moves them whole).
    copies_on = torch.device("cpu") if processes > 1 else lm.device
    policy = _trainable_copy(lm.model, copies_on)
    # Under LoRA the reference is the policy with its adapters off: no copy.
    keep_copy = not settings.precompute_reference and settings.lora_rank is None
    reference = _trainable_copy(lm.model, copies_on).eval().requires_grad_(False) if keep_copy else None
    micro_batch, accumulation = _batch_split(settings.batch_size, processes)
    autocast = native_dtype(lm.device)[0]  # float32 (no autocast) on the CPU
    with (
        tempfile.TemporaryDirectory(prefix="dpo-trainer-") as scratch,
        _quiet(progress),
        _unembed_continuations_only(),
        _weights_set_aside(lm.model, Path(scratch)),
    ):
        config = trl.DPOConfig(
            output_dir=scratch,
            beta=settings.beta,
            learning_rate=settings.learning_rate,
            optim=settings.optimizer,
            per_device_train_batch_size=micro_batch,
            gradient_accumulation_steps=accumulation,
            precompute_ref_batch_size=settings.batch_size,
            num_train_epochs=settings.epochs,
            lr_scheduler_type=settings.learning_rate_schedule,
            warmup_steps=settings.warmup_steps,
            max_grad_norm=settings.max_gradient_norm,
            max_length=_max_length(settings),
            seed=settings.seed,
            precompute_ref_log_probs=settings.precompute_reference,
            # trl's defaults assume a GPU: bf16 (5 times slower on this CPU) and activation checkpointing.
            bf16=autocast is torch.bfloat16,
            fp16=autocast is torch.float16,
            use_cpu=not on_cuda,
            gradient_checkpointing=False,
            dataloader_pin_memory=on_cuda,
            ddp_find_unused_parameters=False,  # every weight trained takes part in each step: skip DDP's search
            logging_steps=1,
            save_strategy="no",
            report_to="none",
        )
        if config.world_size != processes:
            raise RuntimeError(
                f"The launcher started {processes} processes but trl's trainer runs in {config.world_size}, so a step "
                f"would not take {settings.batch_size} pairs. On CPUs launch with `accelerate launch --multi_gpu "
                f"--num_processes N` (gloo); FSDP needs GPUs."
            )
        dataset = _pairs_dataset(pairs, Path(scratch), config.process_index)
        start = time.perf_counter()
        # trl writes the pad token onto the tokenizer it is given: hand it a copy, not the book's tokenizer.
        trainer = trl.DPOTrainer(
            model=policy,
            ref_model=reference,
            args=config,
            train_dataset=dataset,
            processing_class=copy.deepcopy(lm.tokenizer),
            peft_config=None if settings.lora_rank is None else _lora_config(settings.lora_rank),
        )
        reference_seconds = time.perf_counter() - start
        # transformers prints every step's log dictionary, with or without its progress bar.
        trainer.remove_callback(transformers.PrinterCallback)
        trainer.remove_callback(transformers.ProgressCallback)
        if progress:
            trainer.add_callback(_StepProgress)
        budget = None
        if settings.max_perplexity_rise is not None:
            # A model with a shorter context than a perplexity window (the tiny test models) gets shorter windows.
            window = min(PERPLEXITY_WINDOW, lm.model.config.max_position_embeddings)
            windows = validation_windows(lm.tokenizer, settings.validation_windows, window)
            budget = PerplexityBudget(
                lambda model: validation_perplexity(model, windows),
                settings.max_perplexity_rise,
                settings.validation_every,
                Path(scratch) / "kept-policy.pt",
            )
            trainer.add_callback(budget)
        trainer.train()
        if budget is not None:
            budget.restore(trainer.model, trainer.state.global_step)  # the policy, or its LoRA wrapper
        if settings.lora_rank is not None:
            policy = trainer.model.merge_and_unload()
        policy = _gathered(policy)
        training_seconds = time.perf_counter() - start - reference_seconds
    history = _history(trainer.state.log_history)
    return DPOResult(
        model=_frozen(
            policy,
            lm,
            weights_hash=f"dpo-{_cache_key(lm, pairs, settings)[:16]}",
            settings=settings,
            n_pairs=len(pairs),
        ),
        history=history,
        settings=settings,
        base_name=lm.name,
        base_weights_hash=lm.weights_hash,
        n_pairs=len(pairs),
        reference_seconds=reference_seconds,
        training_seconds=training_seconds,
        validation=budget.table() if budget is not None else _validation_frame({}),
        kept_step=budget.kept_step if budget is not None else trainer.state.global_step,
        planned_steps=trainer.state.max_steps,
        validation_seconds=budget.seconds if budget is not None else 0.0,
    )


def dpo_folder(lm: LoadedModel, pairs: Sequence, settings: DPOSettings = DPOSettings()) -> Path:
    """The cache folder of the DPO model of ``lm`` on ``pairs`` with ``settings`` (it may not exist yet)."""
    pairs = [truncate_pair(pair, lm.tokenizer, settings) for pair in preference_pairs(pairs)]
    key = _cache_key(lm, pairs, settings)
    return cache_dir("dpo") / f"{lm.name.replace('/', '--')}-{key[:20]}"


def dpo_model(
    lm: LoadedModel, pairs: Sequence, settings: DPOSettings = DPOSettings(), cache: bool = True, progress: bool = False
) -> DPOResult:
    """The DPO model of ``lm`` on ``pairs``: reloaded from the cache when it was trained before, else trained.

    The cache folder (:func:`dpo_folder`) holds the model (``save_pretrained``), its tokenizer and
    ``dpo.json`` (settings, sizes, timings, history, versions). It is written under a temporary name and
    renamed when complete, so an interrupted run leaves nothing that looks finished; a folder that cannot be read
    back (a truncated or hand-edited ``dpo.json`` or weights file) is reported by path and trained again
    (:func:`~dpo_toxicity.result_cache.discard_unreadable`). ``cache=False`` always trains and writes nothing.
    Under ``accelerate launch`` the main process writes the folder while the others wait.
    """
    if not cache:
        return train_dpo(lm, pairs, settings, progress)
    folder = dpo_folder(lm, pairs, settings)
    if (folder / DPO_RECORD_FILE).is_file():
        try:
            with _quiet(progress):
                return _load(lm, folder)
        except Exception as error:  # a truncated or hand-edited record or weights file: train again
            discard_unreadable(folder / DPO_RECORD_FILE, error)  # without its record the folder is unfinished
    result = train_dpo(lm, pairs, settings, progress)
    processes = PartialState()  # the trainer's: one process, or every process of a launch
    if processes.is_main_process:
        with _quiet(progress):
            _save(result, folder)
    processes.wait_for_everyone()
    result.folder = folder
    return result


# A run's switch to LoRA (DPOSettings.lora_rank), for a machine whose GPU cannot hold full fine-tuning: set in the
# environment, so that a book build (`DPO_TOX_LORA_RANK=16 python -m dpo_toxicity.book ...`) and every chapter in
# it pick it up alike.
LORA_RANK_ENV = "DPO_TOX_LORA_RANK"


def settings_for(lm: LoadedModel, profile_name: str) -> DPOSettings:
    """The DPO settings of ``lm`` under profile ``profile_name``: the defaults, with a learning rate of the model's
    rate (its spec's where it names one, the registry in :mod:`~dpo_toxicity.models` holding the model-specific
    facts; else the default's) times the profile's ``dpo_rate_factor``, the profile's choice of a precomputed
    reference (``precompute_dpo_reference``) and its stopping rule's cadence (``dpo_validation_every``), and the
    LoRA rank the environment variable :data:`LORA_RANK_ENV` names (unset: full fine-tuning). Raises
    ``UnknownProfileError`` for an unknown profile and ``ValueError`` for a rank that is not a positive integer."""
    profile = profile_named(profile_name)
    model_rate = DPOSettings.learning_rate if lm.spec.dpo_learning_rate is None else lm.spec.dpo_learning_rate
    rank = os.environ.get(LORA_RANK_ENV, "")
    if rank and not (rank.isdigit() and int(rank) > 0):
        raise ValueError(
            f"{LORA_RANK_ENV} must be a LoRA rank (a positive integer such as 16), or unset to fine-tune "
            f"every weight; got {rank!r}."
        )
    return DPOSettings(
        learning_rate=model_rate * profile.dpo_rate_factor,
        precompute_reference=profile.precompute_dpo_reference,
        validation_every=profile.dpo_validation_every,
        lora_rank=int(rank) if rank else None,
    )


def run_dpo_model(
    lm: LoadedModel,
    profile_name: str,
    pairs_model: str | None = None,
    progress: bool = False,
    max_pairs: int | None = None,
) -> DPOResult:
    """The DPO model of ``lm`` under profile ``profile_name``, trained with :func:`settings_for` on
    the preference pairs chapter 2 wrote for ``pairs_model`` (default: ``lm`` itself; the first ``max_pairs`` of
    them, or all), reloaded from the cache or trained again.

    Raises ``FileNotFoundError`` naming chapter 2 when that run has written no pairs.
    """
    pairs_model = pairs_model or lm.name
    path = artefact_dir(pairs_model, profile_name) / PAIRS_FILE
    if not path.is_file():
        raise FileNotFoundError(
            f"No preference pairs at {path}. Run chapter 2 (book/02_dpo.py) with model {pairs_model!r} and profile "
            f"{profile_name!r} first."
        )
    return dpo_model(lm, load_pairs(path)[:max_pairs], settings_for(lm, profile_name), progress=progress)


def heldout_pairs(model: str, profile: str) -> list[PreferencePair]:
    """The held-out preference pairs chapter 2 wrote for ``model`` under profile ``profile``: the training pairs'
    generator on prompts that are neither the training pairs' nor the generator trial's, so DPO never saw them.

    Raises ``FileNotFoundError`` naming chapter 2 when that run has written none.
    """
    path = artefact_dir(model, profile) / HELDOUT_PAIRS_FILE
    if not path.is_file():
        raise FileNotFoundError(
            f"No held-out preference pairs at {path}. Run chapter 2 (book/02_dpo.py) with model {model!r} and "
            f"profile {profile!r} first."
        )
    return load_pairs(path)


def _save(result: DPOResult, folder: Path) -> None:
    record = {
        "base_name": result.base_name,
        "base_weights_hash": result.base_weights_hash,
        "weights_hash": result.model.weights_hash,
        "description": result.model.spec.description,
        "settings": result.settings.as_dict(),
        "n_pairs": result.n_pairs,
        "reference_seconds": result.reference_seconds,
        "training_seconds": result.training_seconds,
        "history": result.history.reset_index().to_dict(orient="list"),
        "validation": result.validation.reset_index().to_dict(orient="list"),
        "kept_step": result.kept_step,
        "planned_steps": result.planned_steps,
        "validation_seconds": result.validation_seconds,
        "versions": {"trl": trl.__version__, "transformers": transformers.__version__, "torch": torch.__version__},
    }
    staging = Path(tempfile.mkdtemp(prefix=f".{folder.name}.", dir=folder.parent))
    try:
        result.model.model.save_pretrained(staging)
        result.model.tokenizer.save_pretrained(staging)
        (staging / DPO_RECORD_FILE).write_text(json.dumps(record, indent=1))
        if folder.exists():  # an unfinished folder, or a concurrent run's: this one is complete
            shutil.rmtree(folder)
        staging.rename(folder)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise


def _load(lm: LoadedModel, folder: Path) -> DPOResult:
    record = json.loads((folder / DPO_RECORD_FILE).read_text())
    model = AutoModelForCausalLM.from_pretrained(folder, dtype=lm.model.dtype)
    model.generation_config.pad_token_id = lm.tokenizer.pad_token_id
    model = model.to(lm.device).eval().requires_grad_(False)
    spec = replace(lm.spec, name=f"{lm.name}-dpo", description=record["description"])
    history = pd.DataFrame(record["history"]).set_index("step").astype("float64")
    return DPOResult(
        model=LoadedModel(spec, model, lm.tokenizer, record["weights_hash"], lm.device),
        history=history,
        settings=DPOSettings.from_dict(record["settings"]),
        base_name=record["base_name"],
        base_weights_hash=record["base_weights_hash"],
        n_pairs=record["n_pairs"],
        reference_seconds=record["reference_seconds"],
        training_seconds=record["training_seconds"],
        validation=_validation_frame(dict(zip(record["validation"]["step"], record["validation"]["perplexity"]))),
        kept_step=record["kept_step"],
        planned_steps=record["planned_steps"],
        validation_seconds=record["validation_seconds"],
        from_cache=True,
        folder=folder,
    )
