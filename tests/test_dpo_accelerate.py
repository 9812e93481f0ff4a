"""DPO beyond one CPU process: under `accelerate launch` a step takes the profile's batch over every process and
gives one process's losses; FSDP-sharded weights gather whole; LoRA trains a low-rank update and says so."""

import json
import os
import socket
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch

import accelerate_dpo_script as script
import dpo_toxicity.dpo as dpo_module
from dpo_toxicity.dpo import DPOSettings, _batch_split, dpo_folder, settings_for, train_dpo
from dpo_toxicity.models import load_model

# Two processes add a step's micro-batch gradients in another order than one process does (an all-reduce, not one
# running sum), so the steps agree to float32 round-off, not bit for bit; measured: 6e-8 at most on the losses.
TOLERANCE = dict(rtol=1e-5, atol=1e-6)
HISTORY_COLUMNS = [
    "loss",
    "reward_margin",
    "reward_accuracy",
    "log_prob_chosen",
    "log_prob_rejected",
    "gradient_norm",
    "learning_rate",
]


pytestmark = pytest.mark.usefixtures("one_thread")


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@pytest.fixture(scope="module")
def launched(tmp_path_factory) -> dict:
    """The script's output from two processes on the CPU (gloo), started by `accelerate launch`."""
    folder = tmp_path_factory.mktemp("accelerate")
    # No GPU, no user's accelerate config (HF_HOME holds the default one): the same two CPU processes everywhere.
    env = {**os.environ, "CUDA_VISIBLE_DEVICES": "", "HF_HOME": str(folder / "hf"), "OMP_NUM_THREADS": "1"}
    command = [
        sys.executable,
        "-m",
        "accelerate.commands.launch",
        "--multi_gpu",
        "--num_processes",
        "2",
        "--num_machines",
        "1",
        "--mixed_precision",
        "no",
        "--dynamo_backend",
        "no",
        "--main_process_port",
        str(free_port()),
        str(Path(script.__file__)),
        str(folder / "out.json"),
    ]
    completed = subprocess.run(command, env=env, capture_output=True, text=True, timeout=300)
    assert completed.returncode == 0, completed.stdout[-2000:] + completed.stderr[-4000:]
    return json.loads((folder / "out.json").read_text())


@pytest.fixture(scope="module")
def alone() -> dict:
    return script.histories()


@pytest.mark.parametrize("run", list(script.RUNS))
def test_two_launched_processes_take_the_steps_of_one_at_the_same_batch(launched, alone, run):
    two, one = launched["runs"][run], alone[run]
    assert two["split"] == [2, 2, 2] and one["split"] == [1, 2, 4]  # processes x pairs per pass x accumulation = 8
    assert two["history"]["step"] == one["history"]["step"] == [1, 2, 3, 4]
    for column in HISTORY_COLUMNS:
        np.testing.assert_allclose(two["history"][column], one["history"][column], **TOLERANCE, err_msg=column)
    assert one["history"]["loss"][-1] < one["history"]["loss"][0] - 0.1  # it trained
    assert two["validation"]["step"] == one["validation"]["step"] == [0, 2, 4]
    np.testing.assert_allclose(two["validation"]["perplexity"], one["validation"]["perplexity"], **TOLERANCE)


def test_fsdp_sharded_weights_gather_whole_in_every_process(launched):
    assert launched["fsdp_gather_error"] == 0.0


@pytest.mark.parametrize("processes, split", [(1, (2, 4)), (2, (2, 2)), (4, (2, 1)), (8, (1, 1))])
def test_a_step_of_eight_pairs_splits_into_passes_and_accumulation_over_the_processes(processes, split):
    assert _batch_split(8, processes) == split
    pairs_per_pass, accumulation = split
    assert pairs_per_pass * processes * accumulation == 8


def test_a_batch_that_does_not_split_over_the_processes_is_refused():
    with pytest.raises(ValueError, match="does not split over 3 processes"):
        _batch_split(8, 3)


def test_a_trainer_running_in_fewer_processes_than_launched_is_refused(monkeypatch):
    monkeypatch.setattr(dpo_module, "_processes", lambda: 2)  # as a launcher's WORLD_SIZE would say
    with pytest.raises(RuntimeError, match="--multi_gpu"):
        train_dpo(load_model("tiny-llama", device="cpu"), script.PAIRS, script.SETTINGS)


def test_lora_trains_a_low_rank_update_against_the_base_as_reference_and_names_it(monkeypatch, tmp_path):
    import trl

    monkeypatch.setenv("DPO_TOX_CACHE", str(tmp_path))
    lm = load_model("tiny-llama", device="cpu")
    settings = replace(script.SETTINGS, lora_rank=2, precompute_reference=False, max_perplexity_rise=None)
    references, train = [], trl.DPOTrainer.train
    monkeypatch.setattr(trl.DPOTrainer, "train", lambda self: (references.append(self.ref_model), train(self))[1])
    result = train_dpo(lm, script.PAIRS, settings)
    assert references == [None]  # the adapters switched off are the reference: no copy of the model
    assert result.history.loss.iloc[0] == pytest.approx(np.log(2), abs=1e-5)
    assert result.history.loss.iloc[-1] < result.history.loss.iloc[0]
    base, tuned = lm.model.state_dict(), result.model.model.state_dict()
    assert tuned.keys() == base.keys()  # merged: a plain model, no adapter weights left
    assert "forward" not in result.model.model.__dict__  # nor trl's fused head
    assert torch.equal(tuned["model.embed_tokens.weight"], base["model.embed_tokens.weight"])
    update = tuned["model.layers.0.mlp.down_proj.weight"] - base["model.layers.0.mlp.down_proj.weight"]
    singular_values = torch.linalg.svdvals(update)
    assert singular_values[0] > 0 and singular_values[2:].max() < 1e-3 * singular_values[0]  # rank 2
    assert "LoRA rank 2" in result.model.spec.description
    assert result.settings.as_dict()["lora_rank"] == 2
    assert dpo_folder(lm, script.PAIRS, settings) != dpo_folder(lm, script.PAIRS, replace(settings, lora_rank=None))


def test_full_fine_tuning_keeps_the_settings_record_it_had_before_lora():
    assert "lora_rank" not in DPOSettings().as_dict()
    assert DPOSettings.from_dict(DPOSettings().as_dict()) == DPOSettings()
    assert DPOSettings.from_dict(DPOSettings(lora_rank=8).as_dict()).lora_rank == 8
    with pytest.raises(ValueError, match="lora_rank must be positive"):
        DPOSettings(lora_rank=0)


def test_a_run_switches_to_lora_through_the_environment_and_only_there(monkeypatch):
    lm = load_model("tiny-llama", device="cpu")
    monkeypatch.delenv(dpo_module.LORA_RANK_ENV, raising=False)
    full_tuning = settings_for(lm, "ci")
    assert full_tuning.lora_rank is None
    monkeypatch.setenv(dpo_module.LORA_RANK_ENV, "16")
    assert settings_for(lm, "ci") == replace(full_tuning, lora_rank=16)
    monkeypatch.setenv(dpo_module.LORA_RANK_ENV, "sixteen")
    with pytest.raises(ValueError, match="DPO_TOX_LORA_RANK must be a LoRA rank"):
        settings_for(lm, "ci")
