"""Peak memory of the book's stages on random models of growing size, extrapolated to the paper's models.

The paper's models cannot be loaded here (no hub, no GPU), so ``book/running_at_scale.md`` sizes their machines
from this measurement. Each stage runs on random Llama-family models (``dpo_toxicity.models``' tiny Llama, made
wider and deeper) in a fresh process (this script again, with ``--stage``), in float32 on the CPU, through the
library functions the chapters call:

1. ``weights``: the model loaded;
2. ``features``: pooled final states of 64 Jigsaw comments, 16 per pass, 64 tokens each (chapter 1);
3. ``neuron_means``: mean neuron activations over 20 greedy tokens after 32 challenge prompts, 16 at a time
   (chapter 3; the heaviest inference of the book per prompt: generation with nnsight reading every MLP);
4. ``dpo_full``: DPO on 16 pairs, a step of 8 pairs, reference log-probs precomputed (the ``ci`` profile);
5. ``dpo_full_copy``: the same with a frozen reference copy (the long profiles);
6. ``dpo_lora``: the same as 4 with LoRA adapters of rank 16 (``DPOSettings.lora_rank``).

A stage's figure is its process's peak resident memory (``VmHWM``, reset through ``/proc/self/clear_refs`` once
the imports are done) minus the resident memory at that point: the model, the data and the stage's own work.
Fitting ``bytes = a + b * parameters`` over the sizes separates a fixed part ``a`` (libraries' buffers, data) from
the per-parameter part ``b``; ``b`` times a paper model's parameter count is the extrapolation. It leaves out
what does not grow with the parameter count (activations grow with batch x tokens x width, logits with the
vocabulary), small next to the weights at the batch sizes here. Prints a Markdown table.

    python bench/memory_scaling.py            # about 15 minutes on 2 CPU cores
"""

from __future__ import annotations

import argparse
import json
import re
import subprocess
import sys
from pathlib import Path

import numpy as np

# (width, layers) of the random models measured; MLP width 3 x width, 64-wide heads, 4 query heads per KV head.
SIZES = [(256, 4), (512, 8), (768, 12), (1024, 12)]
STAGES = ["weights", "features", "neuron_means", "dpo_full", "dpo_full_copy", "dpo_lora"]
STAGE_LABELS = {
    "weights": "model loaded (float32)",
    "features": "forward passes (chapter 1's features)",
    "neuron_means": "generation reading every MLP (chapter 3)",
    "dpo_full": "DPO, full fine-tuning, reference precomputed",
    "dpo_full_copy": "DPO, full fine-tuning, reference copy",
    "dpo_lora": "DPO, LoRA rank 16",
}
# Published configurations of the paper's models (hidden, MLP, layers, heads, KV heads, head width, vocabulary,
# tied embeddings); their parameter counts are counted below on the meta device, not typed.
PAPER_MODELS = {
    "GPT-2-medium": ("gpt2", 1024, 4096, 24, 16, 16, 64, 50257, True),
    "Gemma-2-2B": ("gemma2", 2304, 9216, 26, 8, 4, 256, 256000, True),
    "Mistral-7B": ("mistral", 4096, 14336, 32, 32, 8, 128, 32000, False),
    "Llama-3.1-8B": ("llama", 4096, 14336, 32, 32, 8, 128, 128256, False),
}


def _resident_kib(field: str) -> int:
    return int(re.search(rf"{field}:\s+(\d+)", Path("/proc/self/status").read_text()).group(1))


def _random_llama(width: int, layers: int):
    """A LoadedModel: a random Llama of ``width`` x ``layers`` with the tiny models' tokenizer."""
    import torch
    import transformers

    from dpo_toxicity.models import TINY_SPECIAL_TOKENS, LoadedModel, _use_left_padding, model_spec, tiny_tokenizer

    tokenizer = tiny_tokenizer()
    _use_left_padding(tokenizer)
    config = transformers.LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=width,
        intermediate_size=3 * width,
        num_hidden_layers=layers,
        num_attention_heads=width // 64,
        num_key_value_heads=max(1, width // 256),
        max_position_embeddings=1024,
        **TINY_SPECIAL_TOKENS,
    )
    torch.manual_seed(0)
    model = transformers.AutoModelForCausalLM.from_config(config, dtype=torch.float32).eval().requires_grad_(False)
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    return LoadedModel(model_spec("tiny-llama"), model, tokenizer, f"random-{width}x{layers}")


def run_stage(stage: str, width: int, layers: int) -> dict:
    """Run one stage in this process; its peak memory above the resident memory before the model was built."""
    import torch
    from dataclasses import replace

    from dpo_toxicity import data
    from dpo_toxicity.activations import pooled_final_states
    from dpo_toxicity.attribution import mean_neuron_activations
    from dpo_toxicity.dpo import DPOSettings, train_dpo
    from dpo_toxicity.pairs import PreferencePair

    torch.set_num_threads(1)
    comments = data.balanced_sample(data.jigsaw("train"), 32, seed=0).text.tolist()
    prompts = data.challenge_prompts()[:32]
    sentences = data.wikitext2_validation_paragraphs()[:17]
    pairs = [
        PreferencePair(sentences[i][:200], " " + sentences[i + 1][:120], " " + comments[i][:120]) for i in range(16)
    ]
    before = _resident_kib("VmRSS")
    Path("/proc/self/clear_refs").write_text("5")  # peak resident memory starts again from here
    lm = _random_llama(width, layers)
    settings = DPOSettings(batch_size=8, validation_every=1, validation_windows=1)
    if stage == "features":
        pooled_final_states(lm, comments, max_tokens=64, batch_size=16)
    elif stage == "neuron_means":
        mean_neuron_activations(lm, prompts, batch_size=16)
    elif stage == "dpo_full":
        train_dpo(lm, pairs, settings)
    elif stage == "dpo_full_copy":
        train_dpo(lm, pairs, replace(settings, precompute_reference=False))
    elif stage == "dpo_lora":
        train_dpo(lm, pairs, replace(settings, lora_rank=16))
    parameters = lm.model.num_parameters()
    return {
        "stage": stage,
        "width": width,
        "layers": layers,
        "parameters": parameters,
        "peak_bytes": (_resident_kib("VmHWM") - before) * 1024,
    }


def paper_parameters() -> dict[str, int]:
    """Parameter counts of the paper's models, counted from their configurations on the meta device."""
    import torch
    import transformers

    counts = {}
    for name, (family, hidden, mlp, layers, heads, kv_heads, head_dim, vocab, tied) in PAPER_MODELS.items():
        if family == "gpt2":
            config = transformers.GPT2Config(n_embd=hidden, n_inner=mlp, n_layer=layers, n_head=heads, vocab_size=vocab)
        else:
            config_class = {
                "gemma2": transformers.Gemma2Config,
                "mistral": transformers.MistralConfig,
                "llama": transformers.LlamaConfig,
            }[family]
            config = config_class(
                hidden_size=hidden,
                intermediate_size=mlp,
                num_hidden_layers=layers,
                num_attention_heads=heads,
                num_key_value_heads=kv_heads,
                head_dim=head_dim,
                vocab_size=vocab,
                tie_word_embeddings=tied,
            )
        with torch.device("meta"):
            counts[name] = transformers.AutoModelForCausalLM.from_config(config).num_parameters()
    return counts


def table(results: list[dict], counts: dict[str, int]) -> str:
    """The Markdown table: per stage, the fit's bytes per parameter and fixed part, the largest measured peak,
    and the extrapolation to each paper model in GiB."""
    names = list(counts)
    lines = [
        "| stage | bytes per parameter (fit) | fixed part (MiB) | measured at "
        f"{max(r['parameters'] for r in results) / 1e6:.0f}M parameters (MiB) | "
        + " | ".join(f"{name} ({counts[name] / 1e9:.2f}B), extrapolated (GiB)" for name in names)
        + " |",
        "|" + "---|" * (4 + len(names)),
    ]
    for stage in STAGES:
        rows = [r for r in results if r["stage"] == stage]
        slope, intercept = np.polyfit([r["parameters"] for r in rows], [r["peak_bytes"] for r in rows], 1)
        largest = max(rows, key=lambda r: r["parameters"])["peak_bytes"]
        lines.append(
            f"| {STAGE_LABELS[stage]} | {slope:.1f} | {intercept / 2**20:.0f} | {largest / 2**20:.0f} | "
            + " | ".join(f"{slope * counts[name] / 2**30:.0f}" for name in names)
            + " |"
        )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description="Peak memory by stage, extrapolated to the paper's models.")
    parser.add_argument("--stage", choices=STAGES, help="run one stage in this process (used by the script)")
    parser.add_argument("--width", type=int)
    parser.add_argument("--layers", type=int)
    parser.add_argument("--output", type=Path, default=Path("_build/bench/memory_scaling.json"))
    args = parser.parse_args()
    if args.stage:
        print(json.dumps(run_stage(args.stage, args.width, args.layers)))
        return
    results = []
    for stage in STAGES:
        for width, layers in SIZES:
            completed = subprocess.run(
                [sys.executable, __file__, "--stage", stage, "--width", str(width), "--layers", str(layers)],
                capture_output=True,
                text=True,
                check=True,
            )
            results.append(json.loads(completed.stdout.strip().splitlines()[-1]))
            print(f"{stage} {width}x{layers}: {results[-1]['peak_bytes'] / 2**20:.0f} MiB", file=sys.stderr)
    counts = paper_parameters()
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(json.dumps({"results": results, "paper_parameters": counts}, indent=1))
    print(table(results, counts))


if __name__ == "__main__":
    main()
