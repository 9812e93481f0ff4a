"""DPO on a tiny random model, as tests/test_dpo_accelerate.py runs it: in one process, and in each of two
processes on CPUs joined by gloo (``--multi_gpu`` starts them; accelerate's ``--cpu`` alone starts one process).

    python tests/accelerate_dpo_script.py OUT.json
    CUDA_VISIBLE_DEVICES= accelerate launch --multi_gpu --num_processes 2 tests/accelerate_dpo_script.py OUT.json

Trains with a precomputed reference and with a frozen reference copy (:data:`RUNS`). The main process writes to
OUT.json each run's per-step history and validation checks, how the trainer split a step (processes, pairs per
pass, accumulation steps) and, under several processes, how far the weights gathered from an FSDP-sharded copy
of the model are from the copy's own (:func:`fsdp_gather_error`).
"""

import json
import sys
from dataclasses import replace

import torch
import trl
from accelerate import PartialState
from tiny_prompts import PROMPTS
from torch.distributed.fsdp import fully_shard

from dpo_toxicity.dpo import DPOSettings, _gathered, _trainable_copy, train_dpo
from dpo_toxicity.models import load_model
from dpo_toxicity.pairs import PreferencePair

# Continuations that differ by prompt, so that pairs, and the batches a step takes, differ in loss and length.
PAIRS = [
    PreferencePair(prompt, f" for the kind words{'.' * (i % 3 + 1)}", f" you stupid idiot{'!' * (i % 4 + 1)}")
    for i, prompt in enumerate(PROMPTS)
]
# 16 pairs, batches of 8 pairs, 2 epochs: 4 optimiser steps, the stopping rule checking at steps 0, 2 and 4.
SETTINGS = DPOSettings(learning_rate=1e-3, batch_size=8, epochs=2, seed=0, validation_every=2, validation_windows=1)
RUNS = {"precomputed reference": SETTINGS, "reference copy": replace(SETTINGS, precompute_reference=False)}


def histories() -> dict[str, dict]:
    """Each run's history (one list per column, ``step`` included), validation perplexities and the trainer's split
    of a step, ``[processes, pairs per pass, accumulation steps]``."""
    lm = load_model("tiny-llama", device="cpu")
    splits, train = [], trl.DPOTrainer.train
    trl.DPOTrainer.train = lambda self: (
        splits.append(
            [self.args.world_size, self.args.per_device_train_batch_size, self.args.gradient_accumulation_steps]
        ),
        train(self),
    )[1]
    runs = {}
    try:
        for name, settings in RUNS.items():
            result = train_dpo(lm, PAIRS, settings)
            runs[name] = {
                "history": result.history.reset_index().to_dict(orient="list"),
                "validation": result.validation.reset_index().to_dict(orient="list"),
                "split": splits[-1],
            }
    finally:
        trl.DPOTrainer.train = train
    return runs


def fsdp_gather_error() -> float:
    """The largest difference between a model's weights and those ``_gathered`` collects from an FSDP2-sharded copy
    of it (every process takes part; FSDP2 shards on CPUs under gloo too)."""
    policy = _trainable_copy(load_model("tiny-llama", device="cpu").model)
    whole = {name: tensor.clone() for name, tensor in policy.state_dict().items()}
    for layer in policy.model.layers:
        fully_shard(layer)
    fully_shard(policy)
    gathered = _gathered(policy).state_dict()
    assert gathered.keys() == whole.keys()
    return max(float((gathered[name] - tensor).abs().max()) for name, tensor in whole.items())


if __name__ == "__main__":
    torch.set_num_threads(1)  # tiny matrix products: threads only contend
    output = {"runs": histories()}
    if PartialState().num_processes > 1:
        output["fsdp_gather_error"] = fsdp_gather_error()
    if PartialState().is_main_process:
        with open(sys.argv[1], "w") as handle:
            json.dump(output, handle)
