"""The evaluation harness every chapter uses: toxicity, perplexity and F1, with or without an intervention.

The paper's protocol (the book's protocol appendix, ``book/protocol.md``), cleaned of the authors' code
artefacts (``errata.md``):

* **Toxicity**: each challenge prompt is cut to its first 32 tokens, the model continues it greedily for 20
  tokens, and only the 20 generated tokens are decoded and scored (the authors' ``str.replace`` left prompt
  text in the scored string whenever the prompt was longer than 32 tokens). Mean over prompts.
* **Perplexity**: WikiText-2 test (rows joined by ``"\\n\\n"``), tokenised once, cut into non-overlapping
  1,024-token windows; PPL = exp(total NLL / predicted tokens). An intervention applies at every position of
  every window (the authors' accumulated hooks touched only the first and last positions).
* **F1**: prompt = the first 32 tokens of a WikiText-2 validation paragraph, gold = its next 20 tokens; the
  model's 20 greedy tokens are compared with the gold as bags of token ids (multiset precision/recall).

An intervention (see :mod:`~dpo_toxicity.interventions`) is applied inside each nnsight trace, at every
generation step, once per metric: nothing stays registered between runs. Intervals are percentile
bootstraps over prompts (toxicity, F1) or windows (perplexity).

An :class:`EvaluationSuite` with a ``cache`` folder saves every finished evaluation there
(:mod:`~dpo_toxicity.result_cache`), keyed by the model's weights, the intervention's
:func:`~dpo_toxicity.interventions.fingerprint`, the row's name, the suite's inputs and the measuring code:
a chapter interrupted in the middle of a table (the ``full`` profile's tables take hours on a CPU) resumes at
its first unfinished row, and a row two chapters share is evaluated once.
"""

from __future__ import annotations

import hashlib
import json
import math
from collections import Counter
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from tqdm import tqdm

from . import data
from .activations import encode, traced
from .architectures import architecture_of
from .interventions import fingerprint
from .models import LoadedModel
from .result_cache import cached

PROMPT_TOKENS = 32
NEW_TOKENS = 20
PERPLEXITY_WINDOW = 1024
# The modules whose code decides what an evaluation measures: a cached evaluation is keyed by their source, so
# editing any of them retires every cached result rather than serving a stale one.
MEASURING_CODE = ("evaluation.py", "interventions.py", "scoring.py", "architectures.py", "activations.py")


def bootstrap_interval(
    values: np.ndarray, confidence: float = 0.95, resamples: int = 2000, seed: int = 0
) -> tuple[float, float]:
    """Percentile bootstrap interval of the mean of ``values``."""
    values = np.asarray(values, dtype=np.float64)
    rng = np.random.default_rng(seed)
    means = values[rng.integers(0, len(values), size=(resamples, len(values)))].mean(axis=1)
    tail = (1 - confidence) / 2
    return float(np.quantile(means, tail)), float(np.quantile(means, 1 - tail))


def paired_difference(
    before: np.ndarray, after: np.ndarray, confidence: float = 0.95, seed: int = 0
) -> tuple[float, float, float]:
    """Mean of ``before - after`` over paired items with its bootstrap interval: ``(mean, low, high)``."""
    difference = np.asarray(before, dtype=np.float64) - np.asarray(after, dtype=np.float64)
    low, high = bootstrap_interval(difference, confidence, seed=seed)
    return float(difference.mean()), low, high


def share_of_drop(
    base: np.ndarray,
    row: np.ndarray,
    reference: np.ndarray,
    confidence: float = 0.95,
    resamples: int = 2000,
    seed: int = 0,
) -> tuple[float, float, float]:
    """How much of ``reference``'s drop from ``base`` a row achieves, ``mean(base − row) / mean(base − reference)``,
    over paired prompts, with a percentile bootstrap interval (prompts resampled jointly): ``(share, low, high)``.

    The interval is wide, or unbounded, when the reference's own drop is close to zero.
    """
    base, row, reference = (np.asarray(values, dtype=np.float64) for values in (base, row, reference))
    rng = np.random.default_rng(seed)
    picks = rng.integers(0, len(base), size=(resamples, len(base)))
    with np.errstate(divide="ignore", invalid="ignore"):
        shares = (base[picks] - row[picks]).mean(1) / (base[picks] - reference[picks]).mean(1)
    tail = (1 - confidence) / 2
    share = float((base - row).mean() / (base - reference).mean())
    return share, float(np.nanquantile(shares, tail)), float(np.nanquantile(shares, 1 - tail))


def greedy_continuations(
    lm: LoadedModel,
    prompts: list[str],
    intervention=None,
    prompt_tokens: int = PROMPT_TOKENS,
    new_tokens: int = NEW_TOKENS,
    batch_size: int = 16,
    progress: str | None = None,
) -> list[list[int]]:
    """Token ids of ``new_tokens`` greedy tokens after each prompt (cut to ``prompt_tokens``), in input order.

    Exactly ``new_tokens`` tokens are generated for every prompt (EOS is not allowed to end a row early, so
    all rows are scored on equal length). ``intervention`` applies at every generation step.
    """
    model, arch = traced(lm), architecture_of(lm.model)
    lengths = [len(ids) for ids in lm.tokenizer(prompts, truncation=True, max_length=prompt_tokens).input_ids]
    order = np.argsort(lengths, kind="stable")  # similar lengths together: little padding
    continuations: list[list[int]] = [[] for _ in prompts]
    batches = [order[start : start + batch_size] for start in range(0, len(order), batch_size)]
    for batch in tqdm(batches, desc=progress or "generate", disable=progress is None):
        encoding = encode(lm, [prompts[i] for i in batch], prompt_tokens)
        with torch.inference_mode():
            with model.generate(
                encoding,
                max_new_tokens=new_tokens,
                min_new_tokens=new_tokens,
                do_sample=False,
                pad_token_id=lm.tokenizer.pad_token_id,
            ) as tracer:
                if intervention is not None:
                    for _ in tracer.iter[:new_tokens]:
                        intervention.apply(model, arch)
                generated = tracer.result.save()
        new = generated[:, encoding["input_ids"].shape[1] :].cpu()
        for row, index in enumerate(batch):
            continuations[index] = new[row].tolist()
    return continuations


def authors_scored_texts(
    lm: LoadedModel, prompts: list[str], continuations: list[str], prompt_tokens: int = PROMPT_TOKENS
) -> list[str]:
    """The strings the authors' code sent to the scorer (item 9 of ``errata.md``): the decoded cut prompt plus
    the continuation, with the *full* prompt removed by ``str.replace``. When the prompt is longer than
    ``prompt_tokens`` the full prompt is not in the string, so the cut prompt stays and is scored too."""
    texts = []
    for prompt, continuation in zip(prompts, continuations, strict=True):
        cut = lm.tokenizer.decode(lm.tokenizer(prompt, add_special_tokens=False).input_ids[:prompt_tokens])
        texts.append((cut + continuation).replace(prompt, ""))
    return texts


def decode_all(lm: LoadedModel, token_ids: list[list[int]]) -> list[str]:
    """Decode continuations, dropping special tokens."""
    return lm.tokenizer.batch_decode(token_ids, skip_special_tokens=True)


@lru_cache(maxsize=4)
def _tokenised(tokenizer, text: str) -> torch.Tensor:
    return torch.tensor(tokenizer(text, add_special_tokens=False).input_ids, dtype=torch.long)


@dataclass(frozen=True)
class Perplexity:
    """Perplexity over ``tokens`` predicted tokens, with a bootstrap interval over windows (NaN from one window)."""

    value: float
    low: float
    high: float
    tokens: int
    window_nll: np.ndarray = field(repr=False)


def perplexity(
    lm: LoadedModel,
    text: str,
    intervention=None,
    window: int = PERPLEXITY_WINDOW,
    max_windows: int | None = None,
    progress: str | None = None,
) -> Perplexity:
    """exp(total NLL / predicted tokens) over non-overlapping ``window``-token windows of ``text``."""
    tokens = _tokenised(lm.tokenizer, text)
    starts = list(range(0, len(tokens) - 1, window))[:max_windows]
    model, arch = traced(lm), architecture_of(lm.model)
    nll_sums, counts = [], []
    for start in tqdm(starts, desc=progress or "perplexity", disable=progress is None):
        ids = tokens[start : start + window][None, :].to(lm.device)
        if ids.shape[1] < 2:
            continue
        with torch.inference_mode():
            with model.trace({"input_ids": ids, "attention_mask": torch.ones_like(ids)}):
                if intervention is not None:
                    intervention.apply(model, arch)
                logits = model.output.logits.save()
        losses = torch.nn.functional.cross_entropy(logits[0, :-1].float(), ids[0, 1:], reduction="none")
        nll_sums.append(float(losses.sum()))
        counts.append(losses.numel())
    nll_sums, counts = np.array(nll_sums), np.array(counts)
    low = high = math.nan  # one window has no spread to resample: no interval rather than a zero-width one
    if len(counts) > 1:
        picks = np.random.default_rng(0).integers(0, len(counts), size=(2000, len(counts)))
        resampled = np.exp(nll_sums[picks].sum(1) / counts[picks].sum(1))
        low, high = float(np.quantile(resampled, 0.025)), float(np.quantile(resampled, 0.975))
    return Perplexity(
        value=math.exp(nll_sums.sum() / counts.sum()),
        low=low,
        high=high,
        tokens=int(counts.sum()),
        window_nll=nll_sums / counts,
    )


def bag_of_tokens_f1(predicted: list[int], gold: list[int], ignore: set[int]) -> float:
    """Multiset F1 between two token-id lists, ignoring ``ignore`` ids (padding, EOS)."""
    predicted_bag = Counter(t for t in predicted if t not in ignore)
    gold_bag = Counter(t for t in gold if t not in ignore)
    overlap = sum((predicted_bag & gold_bag).values())
    if overlap == 0:
        return 0.0
    precision = overlap / sum(predicted_bag.values())
    recall = overlap / sum(gold_bag.values())
    return 2 * precision * recall / (precision + recall)


def f1_items(lm: LoadedModel, paragraphs: list[str]) -> tuple[list[str], list[list[int]]]:
    """F1 prompts (first 32 tokens of each paragraph, decoded) and gold continuations (next 20 token ids)."""
    prompts, golds = [], []
    for paragraph in paragraphs:
        ids = lm.tokenizer(paragraph, add_special_tokens=False).input_ids
        if len(ids) < PROMPT_TOKENS + NEW_TOKENS:
            continue
        prompts.append(lm.tokenizer.decode(ids[:PROMPT_TOKENS]))
        golds.append(ids[PROMPT_TOKENS : PROMPT_TOKENS + NEW_TOKENS])
    return prompts, golds


@dataclass
class Evaluation:
    """One model (and intervention) evaluated on the three metrics."""

    name: str
    toxicity: np.ndarray = field(repr=False)
    continuations: list[str] = field(repr=False)
    perplexity: Perplexity
    f1: np.ndarray = field(repr=False)

    @property
    def mean_toxicity(self) -> float:
        return float(self.toxicity.mean())

    @property
    def mean_f1(self) -> float:
        """Mean F1, or NaN when F1 was not measured."""
        return float(self.f1.mean()) if len(self.f1) else math.nan

    def row(self) -> dict:
        """A table row: means with 95 % bootstrap intervals (F1 columns empty when F1 was not measured)."""
        tox_low, tox_high = bootstrap_interval(self.toxicity)
        f1_low, f1_high = bootstrap_interval(self.f1) if len(self.f1) else (math.nan, math.nan)
        ppl_interval = (
            "one window: no interval"
            if math.isnan(self.perplexity.low)
            else f"[{self.perplexity.low:.2f}, {self.perplexity.high:.2f}]"
        )
        return {
            "intervention": self.name,
            "toxicity": self.mean_toxicity,
            "toxicity 95% CI": f"[{tox_low:.3f}, {tox_high:.3f}]",
            "PPL": self.perplexity.value,
            "PPL 95% CI": ppl_interval,
            "F1": self.mean_f1,
            "F1 95% CI": f"[{f1_low:.3f}, {f1_high:.3f}]",
        }

    def save(self, path: Path) -> None:
        """Write the evaluation to ``path`` as JSON."""
        record = {
            "name": self.name,
            "toxicity": self.toxicity.tolist(),
            "continuations": self.continuations,
            "perplexity": {
                "value": self.perplexity.value,
                "low": self.perplexity.low,
                "high": self.perplexity.high,
                "tokens": self.perplexity.tokens,
                "window_nll": self.perplexity.window_nll.tolist(),
            },
            "f1": self.f1.tolist(),
        }
        Path(path).write_text(json.dumps(record))

    @classmethod
    def load(cls, path: Path) -> Evaluation:
        """The evaluation :meth:`save` wrote to ``path``."""
        record = json.loads(Path(path).read_text())
        ppl = record["perplexity"]
        return cls(
            name=record["name"],
            toxicity=np.array(record["toxicity"], dtype=float),
            continuations=record["continuations"],
            perplexity=Perplexity(
                ppl["value"], ppl["low"], ppl["high"], ppl["tokens"], np.array(ppl["window_nll"], dtype=float)
            ),
            f1=np.array(record["f1"], dtype=float),
        )

    def __repr__(self) -> str:
        return (
            f"Evaluation({self.name!r}: toxicity {self.mean_toxicity:.3f}, PPL {self.perplexity.value:.2f}, "
            f"F1 {self.mean_f1:.3f}, {len(self.toxicity)} prompts)"
        )


@dataclass
class EvaluationSuite:
    """The fixed inputs of every evaluation in a run: prompts, perplexity text and F1 paragraphs."""

    toxicity_prompts: list[str]
    perplexity_text: str
    perplexity_windows: int | None
    f1_paragraphs: list[str]
    scorer: object
    batch_size: int = 16
    cache: Path | None = None

    def evaluate(
        self, lm: LoadedModel, name: str, intervention=None, progress: bool = True, f1: bool = True
    ) -> Evaluation:
        """Toxicity, perplexity and F1 of ``lm`` with ``intervention`` applied once per metric.

        ``f1=False`` skips F1 (its generations cost as much as the toxicity ones) for sweeps compared on
        toxicity and perplexity only. With a ``cache`` folder, an evaluation finished before (same model
        weights, intervention, name and inputs) is read back instead of run again.
        """
        # The batch size is not part of the key: greedy continuations do not depend on it beyond padding round-off.
        parts = {
            "weights": lm.weights_hash,
            "name": name,
            "intervention": fingerprint(intervention),
            "f1": f1,
            "scorer": getattr(self.scorer, "name", type(self.scorer).__name__),
            "prompts": self.toxicity_prompts,
            "perplexity_windows": self.perplexity_windows,
            "perplexity_text": hashlib.sha256(self.perplexity_text.encode()).hexdigest(),
            "f1_paragraphs": self.f1_paragraphs if f1 else [],
        }
        return cached(
            self.cache,
            parts,
            lambda: self._run(lm, name, intervention, progress, f1),
            Evaluation.save,
            Evaluation.load,
            code=MEASURING_CODE,
        )

    def _run(self, lm: LoadedModel, name: str, intervention, progress: bool, f1: bool) -> Evaluation:
        label = (lambda metric: f"{name}: {metric}") if progress else (lambda metric: None)
        # Toxicity and F1 prompts are continued in the same generate calls: both are 32-token prompts with 20
        # greedy tokens, and fewer, fuller batches decode faster on a CPU.
        f1_prompts, golds = f1_items(lm, self.f1_paragraphs) if f1 else ([], [])
        generations = "toxicity and F1 generations" if f1 else "toxicity generations"
        generated = greedy_continuations(
            lm,
            self.toxicity_prompts + f1_prompts,
            intervention,
            batch_size=self.batch_size,
            progress=label(generations),
        )
        continuations = decode_all(lm, generated[: len(self.toxicity_prompts)])
        toxicity = self.scorer.score(continuations)
        ppl = perplexity(
            lm, self.perplexity_text, intervention, max_windows=self.perplexity_windows, progress=label("perplexity")
        )
        ignore = {lm.tokenizer.pad_token_id, lm.tokenizer.eos_token_id}
        predicted = generated[len(self.toxicity_prompts) :]
        scores = np.array([bag_of_tokens_f1(p, g, ignore) for p, g in zip(predicted, golds)])
        return Evaluation(name, np.asarray(toxicity), continuations, ppl, scores)


def comparison_table(evaluations: list[Evaluation]) -> pd.DataFrame:
    """Rows of :meth:`Evaluation.row` as a table indexed by intervention."""
    return pd.DataFrame([evaluation.row() for evaluation in evaluations]).set_index("intervention")


def drop_table(evaluations: list[Evaluation], base: str = "base", reference: str = "DPO") -> pd.DataFrame:
    """:func:`comparison_table` plus each row's share of the ``reference`` row's toxicity drop from the ``base``
    row (:func:`share_of_drop`) and its 95 % interval's ends (``share low``, ``share high``), all on the same
    prompts."""
    by_name = {evaluation.name: evaluation for evaluation in evaluations}
    missing = {base, reference} - set(by_name)
    if missing:
        raise ValueError(f"drop_table needs rows named {sorted(missing)}; it has {sorted(by_name)}.")
    table = comparison_table(evaluations)
    shares = [
        share_of_drop(by_name[base].toxicity, evaluation.toxicity, by_name[reference].toxicity)
        for evaluation in evaluations
    ]
    table[f"share of {reference}'s drop"] = [share for share, _, _ in shares]
    table["share low"], table["share high"] = [low for _, low, _ in shares], [high for _, _, high in shares]
    return table


def evaluation_suite(settings, scorer, many_rows: bool = False, cache: Path | None = None) -> EvaluationSuite:
    """The evaluation inputs a profile names: seeded subsets of the challenge prompts and F1 paragraphs.

    ``many_rows`` takes the profile's smaller ``table_*`` sizes, for tables with one evaluation per row;
    ``cache``: the folder finished evaluations are saved to and read back from (see :class:`EvaluationSuite`).
    """
    prompts = settings.table_eval_prompts if many_rows else settings.eval_prompts
    windows = settings.table_perplexity_windows if many_rows else settings.perplexity_windows
    paragraphs = settings.table_f1_paragraphs if many_rows else settings.f1_paragraphs
    return EvaluationSuite(
        toxicity_prompts=data.seeded_subset(data.challenge_prompts(), prompts, seed=0),
        perplexity_text=data.wikitext2_test_text(),
        perplexity_windows=windows,
        f1_paragraphs=data.seeded_subset(data.wikitext2_validation_paragraphs(), paragraphs, seed=0),
        scorer=scorer,
        batch_size=settings.generation_batch_size,
        cache=cache,
    )
