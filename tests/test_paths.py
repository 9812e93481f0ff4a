"""Atomic writes: a file appears whole or not at all."""

import pytest
import torch

from dpo_toxicity.attribution import NeuronActivations
from dpo_toxicity.paths import written_atomically


def test_a_completed_write_replaces_the_target_and_leaves_no_temporary(tmp_path):
    target = tmp_path / "nested" / "table.csv.gz"
    with written_atomically(target) as partial:
        assert partial.suffix == ".gz" and partial != target
        partial.write_text("new")
    assert target.read_text() == "new"
    assert [p.name for p in target.parent.iterdir()] == ["table.csv.gz"]


def test_a_failed_write_leaves_the_old_file_and_no_temporary(tmp_path):
    target = tmp_path / "pairs.jsonl"
    target.write_text("old")
    with pytest.raises(RuntimeError):
        with written_atomically(target) as partial:
            partial.write_text("half")
            raise RuntimeError("interrupted")
    assert target.read_text() == "old"
    assert [p.name for p in tmp_path.iterdir()] == ["pairs.jsonl"]


def test_neuron_activations_round_trip(tmp_path):
    saved = NeuronActivations(torch.randn(2, 3, dtype=torch.float64), torch.randn(2, 4, dtype=torch.float64), 7)
    loaded = NeuronActivations.load(saved.save(tmp_path / "activations.pt"))
    assert torch.equal(loaded.mean, saved.mean) and torch.equal(loaded.mean_mlp_output, saved.mean_mlp_output)
    assert loaded.count == 7 and [p.name for p in tmp_path.iterdir()] == ["activations.pt"]
