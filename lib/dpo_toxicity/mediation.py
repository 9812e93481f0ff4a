r"""Mediation by activation patching, read on a teacher-forced margin: how much of DPO's change does a neuron set carry?

**The metric.** An *item* is a prompt :math:`x` and two continuations, a preferred :math:`y^+` and a dispreferred
:math:`y^-`. A model's *margin* on it is

.. math:: \mu(x) = \log p(y^+ \mid x) - \log p(y^- \mid x),

each log-probability summed over the continuation's tokens, read from one teacher-forced forward pass (no
generation). A model's *score* is the mean margin over items. Two item sets:

* *behaviour items* (:func:`behaviour_items`): challenge prompts, :math:`y^+` the DPO model's greedy
  continuation and :math:`y^-` the base model's, kept where they differ: what DPO changed in what the model says;
* *preference items* (:func:`preference_items`): held-out preference pairs (chosen, rejected) DPO never trained on.

The base model scores 0 % and the DPO model 100 % of DPO's shift; an intervention's **recovered fraction** is
``(score − base) / (DPO − base)`` (:func:`recovered_fraction`), with a paired bootstrap interval over items. The
margin is a difference of log-probabilities, roughly linear in the logits, as Heimersheim & Nanda (2024) and
Zhang & Nanda (ICLR 2024) recommend for patching.

**Patching token by token, both directions** (:func:`patching_margins`). *Denoising* (sufficiency) runs the base
model with a neuron set's activations replaced, at every position, by the DPO model's activations on the same
tokens; *noising* (necessity) runs the DPO model with the set's activations replaced by the base model's. The
source run's activations are captured once per batch and reused by every set. A set's fraction means something
only beside what random sets of its size recover: :func:`random_like` draws sets with the same number of neurons
in every layer.

Example::

    items = behaviour_items(lm, dpo_lm, prompts)
    result = patching_margins(lm, dpo_lm, items, {"all four groups": table[table.group_by_delta.isin(REDUCING)]})
    recovered_fraction(result.base, result.denoised["all four groups"], result.dpo)   # (fraction, low, high)

Limits: a margin scores two fixed continuations, not what the patched model would generate; it measures DPO's
shift on these items, which the generated-toxicity metric of :mod:`~dpo_toxicity.evaluation` complements.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import nnsight
import numpy as np
import pandas as pd
import torch
from tqdm import tqdm

from .activations import traced
from .architectures import architecture_of, output_projection
from .evaluation import NEW_TOKENS, PERPLEXITY_WINDOW, PROMPT_TOKENS, greedy_continuations, share_of_drop
from .interventions import PatchNeurons, fingerprint
from .models import LoadedModel
from .result_cache import cached_json

# The modules whose code decides a margin: a cached result is keyed by their source.
MEDIATION_CODE = ("mediation.py", "interventions.py", "architectures.py", "activations.py")


@dataclass(frozen=True)
class MarginItems:
    """Token ids of items ``(prompt, preferred, dispreferred)``, one tuple per item in each field.

    Raises ``ValueError`` for fields of different lengths, no items, an empty prompt or an empty continuation,
    naming the item.
    """

    name: str
    prompts: tuple[tuple[int, ...], ...]
    preferred: tuple[tuple[int, ...], ...]
    dispreferred: tuple[tuple[int, ...], ...]

    def __post_init__(self) -> None:
        if not len(self.prompts) == len(self.preferred) == len(self.dispreferred):
            raise ValueError(
                f"{self.name}: {len(self.prompts)} prompts, {len(self.preferred)} preferred and "
                f"{len(self.dispreferred)} dispreferred continuations; each item needs all three."
            )
        if not self.prompts:
            raise ValueError(f"{self.name}: no items; a margin needs at least one (prompt, y+, y-) item.")
        for index, parts in enumerate(zip(self.prompts, self.preferred, self.dispreferred)):
            for part, ids in zip(("prompt", "preferred continuation", "dispreferred continuation"), parts):
                if len(ids) == 0:
                    raise ValueError(
                        f"{self.name}: item {index} has an empty {part}; every item needs a prompt "
                        "and two non-empty continuations."
                    )

    def __len__(self) -> int:
        return len(self.prompts)

    def __add__(self, other: MarginItems) -> MarginItems:
        """Both item sets in one (their items in order), to be patched in one run and read apart by index."""
        return MarginItems(
            f"{self.name} + {other.name}",
            self.prompts + other.prompts,
            self.preferred + other.preferred,
            self.dispreferred + other.dispreferred,
        )

    def __repr__(self) -> str:
        tokens = sum(len(p) for p in self.prompts) + sum(len(c) for c in self.preferred + self.dispreferred)
        return f"MarginItems({self.name!r}: {len(self)} items, {tokens:,} tokens)"


def _prompt_ids(lm: LoadedModel, prompts: Sequence[str], prompt_tokens: int) -> list[tuple[int, ...]]:
    """Each prompt tokenised as generation tokenises it (special tokens, cut to ``prompt_tokens``)."""
    ids = lm.tokenizer(list(prompts), truncation=True, max_length=prompt_tokens).input_ids
    return [tuple(row) for row in ids]


def behaviour_items(
    lm: LoadedModel,
    dpo_lm: LoadedModel,
    prompts: Sequence[str],
    batch_size: int = 16,
    prompt_tokens: int = PROMPT_TOKENS,
    new_tokens: int = NEW_TOKENS,
    progress: bool = False,
    cache: Path | None = None,
) -> MarginItems:
    """Items whose preferred side is the DPO model's greedy continuation and dispreferred side the base model's,
    on ``prompts`` (cut to ``prompt_tokens``), kept where the two differ. With ``cache`` the continuations are
    generated once per pair of models and prompts."""

    def generate() -> dict:
        label = (lambda name: f"{name} greedy continuations") if progress else (lambda name: None)
        return {
            name: greedy_continuations(model, list(prompts), None, prompt_tokens, new_tokens, batch_size, label(name))
            for name, model in (("base", lm), ("DPO", dpo_lm))
        }

    parts = {
        "base": lm.weights_hash,
        "dpo": dpo_lm.weights_hash,
        "prompts": list(prompts),
        "prompt_tokens": prompt_tokens,
        "new_tokens": new_tokens,
    }
    generated = cached_json(cache, parts, generate, code=("evaluation.py", "activations.py"))
    base, dpo = generated["base"], generated["DPO"]
    kept = [i for i in range(len(prompts)) if base[i] != dpo[i]]
    prompt_ids = _prompt_ids(lm, prompts, prompt_tokens)
    return MarginItems(
        "behaviour",
        tuple(prompt_ids[i] for i in kept),
        tuple(tuple(dpo[i]) for i in kept),
        tuple(tuple(base[i]) for i in kept),
    )


def preference_items(lm: LoadedModel, pairs: Sequence, prompt_tokens: int = PROMPT_TOKENS) -> MarginItems:
    """Items from preference pairs (objects with ``prompt``, ``chosen``, ``rejected``): preferred = chosen."""

    def continuation(text: str) -> tuple[int, ...]:
        return tuple(lm.tokenizer(text, add_special_tokens=False).input_ids)

    return MarginItems(
        "preference",
        tuple(_prompt_ids(lm, [pair.prompt for pair in pairs], prompt_tokens)),
        tuple(continuation(pair.chosen) for pair in pairs),
        tuple(continuation(pair.rejected) for pair in pairs),
    )


# ---------------------------------------------------------------------------------------------------------------
# Margins of one batch


@dataclass(frozen=True)
class _Batch:
    """Items ``indices`` as ``2 × len(indices)`` left-padded sequences: every preferred continuation, then every
    dispreferred one. Continuations end every row, so the last ``keep`` positions' logits predict all of them."""

    indices: np.ndarray
    encoding: dict
    continuations: list[tuple[int, ...]]
    keep: int

    def on(self, device: torch.device) -> dict:
        """The encoding on ``device``."""
        return {name: tensor.to(device) for name, tensor in self.encoding.items()}


def _batches(items: MarginItems, batch_size: int, pad_id: int) -> list[_Batch]:
    lengths = [len(p) + max(len(a), len(b)) for p, a, b in zip(items.prompts, items.preferred, items.dispreferred)]
    order = np.argsort(lengths, kind="stable")  # similar lengths together: little padding
    batches = []
    for start in range(0, len(order), batch_size):
        indices = order[start : start + batch_size]
        continuations = [items.preferred[i] for i in indices] + [items.dispreferred[i] for i in indices]
        rows = [items.prompts[i] + c for i, c in zip(np.concatenate([indices, indices]), continuations)]
        width = max(len(row) for row in rows)
        ids = torch.full((len(rows), width), pad_id, dtype=torch.long)
        mask = torch.zeros((len(rows), width), dtype=torch.long)
        for row, tokens in enumerate(rows):
            ids[row, width - len(tokens) :] = torch.tensor(tokens)
            mask[row, width - len(tokens) :] = 1
        keep = max(len(c) for c in continuations) + 1
        batches.append(_Batch(indices, {"input_ids": ids, "attention_mask": mask}, continuations, keep))
    return batches


def _batch_margins(logits: torch.Tensor, batch: _Batch) -> np.ndarray:
    """Per-item margins from the last ``batch.keep`` positions' logits ``[2n, keep, vocab]``."""
    log_probs = torch.log_softmax(logits.float(), dim=-1)
    sums = []
    for row, continuation in enumerate(batch.continuations):
        count = len(continuation)
        # Position keep-1 is the last token, which predicts nothing; the count before it predict the continuation.
        predicting = log_probs[row, batch.keep - 1 - count : batch.keep - 1]
        sums.append(float(predicting.gather(1, torch.tensor(continuation, device=logits.device)[:, None]).sum()))
    sums = np.array(sums, dtype=np.float64)
    n = len(batch.indices)
    return sums[:n] - sums[n:]


def margins(
    lm: LoadedModel,
    items: MarginItems,
    intervention=None,
    batch_size: int = 16,
    progress: str | None = None,
    cache: Path | None = None,
) -> np.ndarray:
    """Per-item margin ``log p(y+|x) − log p(y−|x)`` of ``lm`` with ``intervention`` applied (see
    :mod:`~dpo_toxicity.interventions`; every position of each teacher-forced pass), ``[len(items)]`` float64.
    With ``cache`` a result for the same weights, items and intervention is read back."""
    parts = {"weights": lm.weights_hash, "items": items, "intervention": fingerprint(intervention)}
    return np.array(
        cached_json(
            cache, parts, lambda: _margins(lm, items, intervention, batch_size, progress).tolist(), code=MEDIATION_CODE
        )
    )


def _margins(lm: LoadedModel, items: MarginItems, intervention, batch_size: int, progress: str | None) -> np.ndarray:
    model, arch = traced(lm), architecture_of(lm.model)
    result = np.empty(len(items), dtype=np.float64)
    for batch in tqdm(
        _batches(items, batch_size, lm.tokenizer.pad_token_id), desc=progress or "margins", disable=progress is None
    ):
        logits = _logits(model, arch, batch.on(lm.device), batch.keep, intervention)
        result[batch.indices] = _batch_margins(logits, batch)
    return result


def _logits(model, arch, encoding, keep: int, intervention=None) -> torch.Tensor:
    """One pass's last ``keep`` positions' logits (all with ``keep=0``), with ``intervention`` applied."""
    with torch.inference_mode():
        with model.trace(encoding, logits_to_keep=keep):
            if intervention is not None:
                intervention.apply(model, arch)
            logits = model.output.logits.save()
    return logits


# ---------------------------------------------------------------------------------------------------------------
# Neuron sets


def check_neuron_set(neurons: pd.DataFrame, shape: tuple[int, int, int], name: str = "neuron set") -> None:
    """Raise ``ValueError`` unless ``neurons`` lists distinct (``layer``, ``neuron``) pairs inside a model of
    ``shape`` ``(n_layers, d_mlp, d_model)``."""
    n_layers, d_mlp, _ = shape
    missing = {"layer", "neuron"} - set(neurons.columns)
    if missing:
        raise ValueError(f"{name}: a neuron set needs columns layer and neuron; missing {sorted(missing)}.")
    layers, indices = neurons["layer"].to_numpy(), neurons["neuron"].to_numpy()
    bad_layers = sorted(set(layers[(layers < 0) | (layers >= n_layers)].tolist()))
    if bad_layers:
        raise ValueError(f"{name}: layers {bad_layers} do not exist; the model has layers 0..{n_layers - 1}.")
    bad = neurons[(indices < 0) | (indices >= d_mlp)]
    if len(bad):
        raise ValueError(
            f"{name}: neuron indices {sorted(bad['neuron'].unique().tolist())[:5]} lie outside "
            f"0..{d_mlp - 1} (the model's MLP width)."
        )
    if neurons.duplicated(["layer", "neuron"]).any():
        raise ValueError(f"{name}: a (layer, neuron) pair is listed twice.")


def random_like(neurons: pd.DataFrame, d_mlp: int, seed: int) -> pd.DataFrame:
    """A random neuron set with as many neurons in every layer as ``neurons`` (drawn uniformly, without
    replacement, within each layer): the null a set's recovered fraction is compared with."""
    rng = np.random.default_rng(seed)
    drawn = [pd.DataFrame({"layer": pd.Series(dtype=int), "neuron": pd.Series(dtype=int)})]
    for layer, count in neurons.groupby("layer").size().items():
        chosen = np.sort(rng.choice(d_mlp, size=int(count), replace=False))
        drawn.append(pd.DataFrame({"layer": int(layer), "neuron": chosen}))
    return pd.concat(drawn, ignore_index=True)


RANDOM_DRAW = " · random draw "  # a random set's name: its named set's, this mark, and the draw's number


def with_random_sets(
    sets: Mapping[str, pd.DataFrame], d_mlp: int, draws: int, seed: int = 0
) -> dict[str, pd.DataFrame]:
    """``sets`` followed by ``draws`` :func:`random_like` sets of each (named ``<set> · random draw <k>``)."""
    extended = dict(sets)
    for index, (name, neurons) in enumerate(sets.items()):
        for draw in range(draws):
            extended[f"{name}{RANDOM_DRAW}{draw + 1}"] = random_like(neurons, d_mlp, seed=seed + 1000 * index + draw)
    return extended


# ---------------------------------------------------------------------------------------------------------------
# Patching both ways


@dataclass
class PatchingMargins:
    """Per-item margins of the base and DPO models, and of every set patched both ways.

    ``denoised[name]``: the base model with the set's activations taken from the DPO model's run;
    ``noised[name]``: the DPO model with them taken from the base model's run (for the sets patched both ways).
    """

    items: int
    base: np.ndarray
    dpo: np.ndarray
    denoised: dict[str, np.ndarray]
    noised: dict[str, np.ndarray]

    def to_json(self) -> dict:
        return {
            "items": self.items,
            "base": self.base.tolist(),
            "dpo": self.dpo.tolist(),
            "denoised": {k: v.tolist() for k, v in self.denoised.items()},
            "noised": {k: v.tolist() for k, v in self.noised.items()},
        }

    @classmethod
    def from_json(cls, record: Mapping) -> PatchingMargins:
        return cls(
            record["items"],
            np.array(record["base"]),
            np.array(record["dpo"]),
            {k: np.array(v) for k, v in record["denoised"].items()},
            {k: np.array(v) for k, v in record["noised"].items()},
        )

    def __repr__(self) -> str:
        shift = float((self.dpo - self.base).mean())
        return f"PatchingMargins({self.items} items, DPO's shift {shift:.3f} nats, {len(self.denoised)} sets)"


def _checked_layers(sets: Mapping[str, pd.DataFrame], shape: tuple[int, int, int]) -> list[int]:
    """Every layer the sets name, sorted, after :func:`check_neuron_set` has checked each set against ``shape``."""
    for name, neurons in sets.items():
        check_neuron_set(neurons, shape, name)
    return sorted({int(layer) for neurons in sets.values() for layer in neurons["layer"].unique()})


def _capture(model, arch, encoding, keep: int, layers: list[int]):
    """One unpatched pass: the chosen layers' neuron activations and the kept logits."""
    with torch.inference_mode():
        with model.trace(encoding, logits_to_keep=keep):
            activations = nnsight.save({layer: output_projection(model, arch, layer).input for layer in layers})
            logits = model.output.logits.save()
    return dict(activations), logits


def patching_margins(
    lm: LoadedModel,
    dpo_lm: LoadedModel,
    items: MarginItems,
    sets: Mapping[str, pd.DataFrame],
    batch_size: int = 16,
    progress: str | None = None,
    cache: Path | None = None,
    noised: Sequence[str] | None = None,
) -> PatchingMargins:
    """Margins of both models and of every neuron set in ``sets`` patched token by token: denoised, and also
    noised for the sets named in ``noised`` (default: all of them; random null sets need only one direction).

    Per batch: one pass of each model captures its activations (and its own margins), then each set costs one
    patched pass per direction. Every set is checked against the model's shape before any work. With ``cache``
    a finished result (same weights, items and sets) is read back.
    """
    arch = architecture_of(lm.model)
    if architecture_of(dpo_lm.model) != arch or dpo_lm.shape != lm.shape:
        raise ValueError(
            f"{lm.name} and {dpo_lm.name} differ in architecture or shape; patching needs two runs of the same network."
        )
    layers = _checked_layers(sets, lm.shape)
    noised = list(sets) if noised is None else list(noised)
    unknown = sorted(set(noised) - set(sets))
    if unknown:
        raise ValueError(f"noised names sets that are not in sets: {unknown}.")
    parts = {
        "base": lm.weights_hash,
        "dpo": dpo_lm.weights_hash,
        "items": items,
        "noised": noised,
        "sets": {name: neurons[["layer", "neuron"]].reset_index(drop=True) for name, neurons in sets.items()},
    }
    record = cached_json(
        cache,
        parts,
        lambda: _patching_margins(lm, dpo_lm, items, sets, layers, noised, batch_size, progress).to_json(),
        code=MEDIATION_CODE,
    )
    return PatchingMargins.from_json(record)


def _patching_margins(lm, dpo_lm, items, sets, layers, noised, batch_size, progress) -> PatchingMargins:
    arch = architecture_of(lm.model)
    base_model, dpo_model = traced(lm), traced(dpo_lm)
    n = len(items)
    base, dpo = np.empty(n), np.empty(n)
    denoised = {name: np.empty(n) for name in sets}
    noised = {name: np.empty(n) for name in noised}
    batches = _batches(items, batch_size, lm.tokenizer.pad_token_id)
    steps = tqdm(
        total=len(batches) * (2 + len(sets) + len(noised)), desc=progress or "patching", disable=progress is None
    )
    for batch in batches:
        encoding = batch.on(lm.device)
        base_acts, logits = _capture(base_model, arch, encoding, batch.keep, layers)
        base[batch.indices] = _batch_margins(logits, batch)
        dpo_acts, logits = _capture(dpo_model, arch, encoding, batch.keep, layers)
        dpo[batch.indices] = _batch_margins(logits, batch)
        steps.update(2)
        for name, neurons in sets.items():
            logits = _logits(base_model, arch, encoding, batch.keep, PatchNeurons(neurons, dpo_acts))
            denoised[name][batch.indices] = _batch_margins(logits, batch)
            steps.update(1)
            if name in noised:
                logits = _logits(dpo_model, arch, encoding, batch.keep, PatchNeurons(neurons, base_acts))
                noised[name][batch.indices] = _batch_margins(logits, batch)
                steps.update(1)
    steps.close()
    return PatchingMargins(n, base, dpo, denoised, noised)


def patched_perplexity(
    lm: LoadedModel,
    dpo_lm: LoadedModel,
    text: str,
    sets: Mapping[str, pd.DataFrame],
    max_windows: int | None = None,
    window: int = PERPLEXITY_WINDOW,
    progress: str | None = None,
) -> pd.DataFrame:
    """Perplexity on ``text`` (non-overlapping ``window``-token windows, the first ``max_windows``) of the base model
    with each set denoised and of the DPO model with each set noised, activations taken token by token from the
    other model's run of the same window: whether patching real activations keeps each model intact. Index: the
    sets, then ``"none"`` (each model unpatched); columns ``denoised PPL`` and ``noised PPL``."""
    arch = architecture_of(lm.model)
    layers = _checked_layers(sets, lm.shape)
    tokens = torch.tensor(lm.tokenizer(text, add_special_tokens=False).input_ids, dtype=torch.long)
    starts = [start for start in range(0, len(tokens) - 1, window)][:max_windows]
    models = {"denoised": traced(lm), "noised": traced(dpo_lm)}  # the model each direction patches
    nll = {(name, direction): 0.0 for name in [*sets, "none"] for direction in models}
    count = 0
    for start in tqdm(starts, desc=progress or "patched perplexity", disable=progress is None):
        ids = tokens[start : start + window][None, :].to(lm.device)
        encoding = {"input_ids": ids, "attention_mask": torch.ones_like(ids)}
        targets = ids[0, 1:]

        def window_nll(logits: torch.Tensor) -> float:
            return float(torch.nn.functional.cross_entropy(logits[0, :-1].float(), targets, reduction="sum"))

        captured = {}
        for direction, target in models.items():
            captured[direction], logits = _capture(target, arch, encoding, 0, layers)
            nll[("none", direction)] += window_nll(logits)
        for direction, target in models.items():
            source = captured["noised" if direction == "denoised" else "denoised"]
            for name, neurons in sets.items():
                patched = _logits(target, arch, encoding, 0, PatchNeurons(neurons, source))
                nll[(name, direction)] += window_nll(patched)
        count += len(targets)
    return pd.DataFrame(
        {
            f"{direction} PPL": {name: float(np.exp(nll[(name, direction)] / count)) for name in [*sets, "none"]}
            for direction in models
        }
    )


# ---------------------------------------------------------------------------------------------------------------
# Fractions


def recovered_fraction(base: np.ndarray, row: np.ndarray, dpo: np.ndarray, seed: int = 0) -> tuple[float, float, float]:
    """``mean(row − base) / mean(dpo − base)`` over paired items with a 95 % bootstrap interval (items resampled
    jointly): ``(fraction, low, high)``. The DPO model's own margins give 1, the base model's 0. For noising,
    ``recovered_fraction(dpo, noised, base)`` is the fraction of DPO's shift that the patch removes."""
    return share_of_drop(base, row, dpo, seed=seed)


def mediation_table(result: PatchingMargins, sizes: Mapping[str, int], items: slice = slice(None)) -> pd.DataFrame:
    """One row per named set (random draws are summarised, not listed): its size, the denoising fraction
    (sufficiency) and the noising fraction (necessity; NaN for a set patched one way), each with its 95 % interval,
    and the mean and SD of the denoising fraction over the set's random draws (:func:`with_random_sets`; NaN
    without draws). ``items`` selects the items the fractions are read on (one item set of a combined run)."""
    base, dpo = result.base[items], result.dpo[items]

    rows = []
    for name in (name for name in result.denoised if RANDOM_DRAW not in name):
        denoise = recovered_fraction(base, result.denoised[name][items], dpo)
        noise = recovered_fraction(dpo, result.noised[name][items], base) if name in result.noised else (np.nan,) * 3
        draws = np.array(
            [
                recovered_fraction(base, result.denoised[other][items], dpo)[0]
                for other in result.denoised
                if other.startswith(f"{name}{RANDOM_DRAW}")
            ]
        )
        rows.append(
            {
                "set": name,
                "neurons": sizes[name],
                "denoising": denoise[0],
                "denoising low": denoise[1],
                "denoising high": denoise[2],
                "noising": noise[0],
                "noising low": noise[1],
                "noising high": noise[2],
                "random draws": len(draws),
                "random mean": draws.mean() if len(draws) else np.nan,
                "random sd": draws.std(ddof=1) if len(draws) > 1 else np.nan,
            }
        )
    return pd.DataFrame(rows).set_index("set")
