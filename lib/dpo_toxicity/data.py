"""Loaders for the offline copies of the paper's data sets (the folder :func:`~dpo_toxicity.paths.data_root` finds).

* :func:`challenge_prompts`: the 1,199 RealToxicityPrompts "challenge" prompts of Lee et al. and Yang et al.
* :func:`jigsaw`: Jigsaw toxic-comment pools for the probe (5,000 train, 1,200 held-out test comments).
* :func:`wikitext2_test_text`: WikiText-2 raw test split joined as Lee et al.'s perplexity code joins it.
* :func:`wikitext2_validation_paragraphs`: WikiText-2 validation paragraphs, a prompt source disjoint from
  the perplexity split.

Each loader raises :class:`~dpo_toxicity.paths.MissingDataError` naming the file when it is absent.
"""

from __future__ import annotations

import json

import numpy as np
import pandas as pd

from .paths import MissingDataError, data_file, data_root

JIGSAW_POOLS = {
    "train": ["train.a.ok.1k", "train.b.ok.1k", "train.a.bad.1k", "train.b.bad.1k", "train.c.bad.1k"],
    "test": ["test.a.ok.200", "test.b.ok.200", "test.c.ok.200", "test.a.bad.200", "test.b.bad.200", "test.c.bad.200"],
}


def challenge_prompts() -> list[str]:
    """The 1,199 challenge prompts, in file order."""
    path = data_file("rtp/challenge_prompts.jsonl")
    with open(path, encoding="utf-8") as handle:
        return [json.loads(line)["prompt"] for line in handle if line.strip()]


def jigsaw(split: str) -> pd.DataFrame:
    """Jigsaw comments of one split (``"train"`` or ``"test"``) with columns ``text``, ``label``, ``pool``.

    ``label`` is the Kaggle ``toxic`` column, as in the authors' probe code; the "bad" pools hold comments
    with any of the six Jigsaw labels, so about 5 % of them are labelled 0 (obscene or insulting but not
    marked toxic).
    """
    if split not in JIGSAW_POOLS:
        raise ValueError(f"Unknown Jigsaw split {split!r}; use one of {sorted(JIGSAW_POOLS)}.")
    frames = []
    for pool in JIGSAW_POOLS[split]:
        frame = pd.read_csv(data_file(f"jigsaw/{pool}.csv"))
        frames.append(pd.DataFrame({"text": frame["comment_text"], "label": frame["toxic"].astype(int), "pool": pool}))
    return pd.concat(frames, ignore_index=True)


def balanced_sample(frame: pd.DataFrame, per_class: int | None, seed: int = 0) -> pd.DataFrame:
    """``per_class`` rows of each label (all rows when ``None``), drawn with a fixed seed, shuffled."""
    if per_class is None:
        return frame.sample(frac=1.0, random_state=seed).reset_index(drop=True)
    parts = []
    for label, group in frame.groupby("label"):
        if len(group) < per_class:
            raise ValueError(f"Asked for {per_class} comments with label {label}, but only {len(group)} exist.")
        parts.append(group.sample(per_class, random_state=seed))
    return pd.concat(parts).sample(frac=1.0, random_state=seed).reset_index(drop=True)


def wikitext2_test_text() -> str:
    """The WikiText-2 raw test split as one string: Hugging Face rows joined by ``"\\n\\n"`` (Lee et al.)."""
    path = data_file("wikitext2/wikitext2_raw_test_hf_rows.jsonl")
    with open(path, encoding="utf-8") as handle:
        return "\n\n".join(json.loads(line)["text"] for line in handle)


def wikitext2_validation_paragraphs(min_words: int = 40) -> list[str]:
    """Paragraphs of the WikiText-2 validation split with at least ``min_words`` words (headings dropped).

    The file is the tokenised release (`` @-@ ``, ``<unk>``): each paragraph is cut before its first
    ``<unk>`` (a rare word the release replaced), kept if what remains has ``min_words`` words, and its
    tokeniser spacing undone so it reads as plain text.
    """
    path = data_file("wikitext2/pytorch_examples_valid.txt")
    paragraphs = []
    with open(path, encoding="utf-8") as handle:
        for line in handle:
            text = line.strip().split("<unk>")[0].strip()
            if text.startswith("=") or len(text.split()) < min_words:
                continue
            paragraphs.append(_detokenise(text))
    return paragraphs


def wikitext2_validation_sentences(min_words: int = 8, max_words: int = 40) -> list[str]:
    """Sentences of the WikiText-2 validation split (no ``<unk>``, ``min_words`` to ``max_words`` words).

    Lee et al.'s DPO prompts are WikiText-2 sentences; the validation split keeps them apart from the
    test split that perplexity is measured on.
    """
    path = data_file("wikitext2/pytorch_examples_valid.txt")
    sentences = []
    with open(path, encoding="utf-8") as handle:
        for line in handle:
            text = line.strip()
            if not text or text.startswith("="):
                continue
            for sentence in text.split(" . "):
                if "<unk>" in sentence or not min_words <= len(sentence.split()) <= max_words:
                    continue
                sentences.append(_detokenise(sentence.strip()) + ".")
    return sentences


def _detokenise(text: str) -> str:
    """Undo WikiText's spacing around punctuation (`` @-@ `` -> ``-``, `` , `` -> ``,``)."""
    for spaced, plain in [
        (" @-@ ", "-"),
        (" @,@ ", ","),
        (" @.@ ", "."),
        (" ,", ","),
        (" .", "."),
        (" ;", ";"),
        (" :", ":"),
        (" 's", "'s"),
        ("( ", "("),
        (" )", ")"),
    ]:
        text = text.replace(spaced, plain)
    return text


def seeded_subset(items: list, size: int | None, seed: int = 0) -> list:
    """A fixed random subset of ``size`` items in their original order (all of them when ``None``)."""
    if size is None or size >= len(items):
        return list(items)
    chosen = np.sort(np.random.default_rng(seed).choice(len(items), size=size, replace=False))
    return [items[i] for i in chosen]


__all__ = [
    "MissingDataError",
    "balanced_sample",
    "challenge_prompts",
    "data_root",
    "jigsaw",
    "seeded_subset",
    "wikitext2_test_text",
    "wikitext2_validation_paragraphs",
    "wikitext2_validation_sentences",
]
