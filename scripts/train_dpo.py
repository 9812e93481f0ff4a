"""Train a model's DPO model for a profile, in one process or in every process of `accelerate launch`.

Chapter 2 writes a model's preference pairs, then trains its DPO model in the chapter's kernel, on one device.
Where full fine-tuning does not fit one GPU (the 7-8B models), train it here over several GPUs once chapter 2 has
written the pairs; every chapter then reloads it from the cache, since the settings are the chapters' own
(``dpo.settings_for``) and so is the cache key::

    accelerate launch --config_file configs/accelerate/fsdp.yaml scripts/train_dpo.py \\
        --model meta-llama/Llama-3.1-8B --profile full
    # chapter 5's second model, trained on the first model's pairs:
    accelerate launch --config_file configs/accelerate/fsdp.yaml scripts/train_dpo.py \\
        --model mistralai/Mistral-7B-v0.1 --pairs-model meta-llama/Llama-3.1-8B --profile full

An optimiser step takes the DPO batch over all processes (``dpo.train_dpo``). ``book/running_at_scale.md`` gives
the whole sequence.
"""

import argparse
import os

from dpo_toxicity.dpo import run_dpo_model
from dpo_toxicity.models import load_model
from dpo_toxicity.profiles import profile_named


def main() -> None:
    parser = argparse.ArgumentParser(description="Train a model's DPO model for a profile (see the module docstring).")
    parser.add_argument("--model", required=True, help="a name from dpo_toxicity.models.MODELS")
    parser.add_argument("--profile", default="full", help="ci, full or colab (default: full)")
    parser.add_argument("--pairs-model", help="the model whose chapter-2 pairs to train on (default: --model)")
    args = parser.parse_args()
    main_process = os.environ.get("RANK", "0") == "0"  # launchers number their processes in RANK
    lm = load_model(args.model)
    borrowed = args.pairs_model not in (None, args.model)
    # As chapter 5 trains its second model: on the first companion_pairs of the borrowed pairs.
    max_pairs = profile_named(args.profile).companion_pairs if borrowed else None
    result = run_dpo_model(lm, args.profile, pairs_model=args.pairs_model, progress=main_process, max_pairs=max_pairs)
    if main_process:
        print(result)


if __name__ == "__main__":
    main()
