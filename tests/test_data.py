"""Offline data loaders: sizes, labels, and a clear error for a missing file."""

import pytest

from dpo_toxicity import data
from dpo_toxicity.paths import MissingDataError


def test_challenge_prompts_are_the_papers_1199():
    prompts = data.challenge_prompts()
    assert len(prompts) == 1199 and all(isinstance(p, str) and p for p in prompts)


def test_jigsaw_pools_have_the_documented_sizes_and_labels():
    train, test = data.jigsaw("train"), data.jigsaw("test")
    assert len(train) == 5000 and len(test) == 1200
    assert set(train.label) == {0, 1}
    assert (train[train.pool.str.contains(".ok.")].label == 0).all()


def test_balanced_sample_is_balanced_and_seeded():
    train = data.jigsaw("train")
    first = data.balanced_sample(train, 50, seed=1)
    assert first.label.value_counts().to_dict() == {0: 50, 1: 50}
    assert first.text.tolist() == data.balanced_sample(train, 50, seed=1).text.tolist()
    with pytest.raises(ValueError, match="only"):
        data.balanced_sample(train, 10_000)


def test_missing_data_file_names_the_file_and_the_override(monkeypatch, tmp_path):
    monkeypatch.setenv("DPO_TOX_DATA", str(tmp_path))
    with pytest.raises(MissingDataError) as error:
        data.challenge_prompts()
    assert "rtp/challenge_prompts.jsonl" in str(error.value) and "DPO_TOX_DATA" in str(error.value)


def test_unknown_jigsaw_split_is_rejected():
    with pytest.raises(ValueError, match="train"):
        data.jigsaw("validation")


def test_wikitext_sources_are_disjoint_and_clean():
    paragraphs = data.wikitext2_validation_paragraphs()
    sentences = data.wikitext2_validation_sentences()
    assert len(paragraphs) > 200 and len(sentences) > 2000
    assert not any("<unk>" in p or " @-@ " in p for p in paragraphs + sentences)
    assert all(len(p.split()) >= 30 for p in paragraphs)
    test_text = data.wikitext2_test_text()
    assert "Robert Boulter" in test_text[:200]
    assert paragraphs[0][:80] not in test_text


def test_seeded_subset_keeps_order():
    items = list(range(100))
    subset = data.seeded_subset(items, 10, seed=2)
    assert subset == sorted(subset) and len(subset) == 10
    assert data.seeded_subset(items, None) == items
