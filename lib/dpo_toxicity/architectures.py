"""The one table of architecture-specific facts: where each site the book reads lives in each model family.

The paper reads a handful of sites, which this module names once (after TransformerLens's habit of one
canonical name per activation):

``neuron activations``
    ``m_i``, the input of the MLP's output projection: post-GELU for GPT-2, ``act(gate(x)) * up(x)`` for the
    gated MLPs of Llama, Gemma and Mistral. Shape ``[batch, seq, d_mlp]``.
``value vectors``
    ``v_i``, what neuron ``i`` writes per unit of activation: a row of GPT-2's ``c_proj.weight`` (a Conv1D,
    stored ``[d_mlp, d_model]``) or a column of ``down_proj.weight`` (a Linear, stored ``[d_model, d_mlp]``).
``MLP output``
    the output of that projection, ``sum_i m_i v_i`` (+ bias for GPT-2).
``final norm``
    the norm before the unembedding; its output is the "last-layer residual stream" the probe reads
    (Hugging Face's ``hidden_states[-1]``).
``post-MLP norm``
    Gemma 2 and 3 pass the MLP output through an RMSNorm before adding it to the residual stream, so a
    neuron's write there is not exactly ``m_i v_i``; the paper ignores this norm and so does the book's
    projection, which the chapters say where it matters.

Adding a family is adding a row to :data:`ARCHITECTURES`, keyed by the Hugging Face ``config.model_type``.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch


@dataclass(frozen=True)
class Architecture:
    """Module paths (relative to the Hugging Face ``*ForCausalLM``) of the sites one family exposes.

    ``layers`` is the ``ModuleList`` of decoder blocks; the other MLP paths are relative to one block.
    ``key_projection`` is the module whose weight rows (or Conv1D columns) are the neurons' key vectors: the
    input of the nonlinearity (GPT-2's ``c_fc``; the *gate* of a gated MLP, whose activation ``act(gate . x)``
    plays the role of GPT-2's ``GELU(k . x)``; the linear ``up`` factor is left alone).
    """

    family: str
    layers: str
    output_projection: str
    key_projection: str
    final_norm: str
    unembedding: str
    value_vectors_are_rows: bool
    post_mlp_norm: str | None = None


GPT2 = Architecture(
    family="gpt2",
    layers="transformer.h",
    output_projection="mlp.c_proj",
    key_projection="mlp.c_fc",
    final_norm="transformer.ln_f",
    unembedding="lm_head",
    value_vectors_are_rows=True,
)
LLAMA = Architecture(
    family="llama",
    layers="model.layers",
    output_projection="mlp.down_proj",
    key_projection="mlp.gate_proj",
    final_norm="model.norm",
    unembedding="lm_head",
    value_vectors_are_rows=False,
)
MISTRAL = Architecture(
    family="mistral",
    layers="model.layers",
    output_projection="mlp.down_proj",
    key_projection="mlp.gate_proj",
    final_norm="model.norm",
    unembedding="lm_head",
    value_vectors_are_rows=False,
)
GEMMA2 = Architecture(
    family="gemma2",
    layers="model.layers",
    output_projection="mlp.down_proj",
    key_projection="mlp.gate_proj",
    final_norm="model.norm",
    unembedding="lm_head",
    value_vectors_are_rows=False,
    post_mlp_norm="post_feedforward_layernorm",
)
GEMMA3 = Architecture(
    family="gemma3",
    layers="model.layers",
    output_projection="mlp.down_proj",
    key_projection="mlp.gate_proj",
    final_norm="model.norm",
    unembedding="lm_head",
    value_vectors_are_rows=False,
    post_mlp_norm="post_feedforward_layernorm",
)

ARCHITECTURES: dict[str, Architecture] = {
    "gpt2": GPT2,
    "llama": LLAMA,
    "mistral": MISTRAL,
    "gemma2": GEMMA2,
    "gemma3_text": GEMMA3,
}


class UnsupportedArchitectureError(ValueError):
    """The model's ``config.model_type`` has no row in :data:`ARCHITECTURES`."""


def architecture_of(model: torch.nn.Module) -> Architecture:
    """The :class:`Architecture` row for a Hugging Face causal LM, from its ``config.model_type``."""
    model_type = model.config.model_type
    if model_type not in ARCHITECTURES:
        raise UnsupportedArchitectureError(
            f"No architecture row for model_type {model_type!r}; supported: {sorted(ARCHITECTURES)}. "
            "Add a row to dpo_toxicity.architectures.ARCHITECTURES naming its MLP and norm modules."
        )
    return ARCHITECTURES[model_type]


def submodule(root: torch.nn.Module, dotted: str):
    """``root.a.b.c`` for ``dotted == "a.b.c"``; works on plain modules and on nnsight envoys alike."""
    node = root
    for part in dotted.split("."):
        node = getattr(node, part)
    return node


def decoder_layers(root, arch: Architecture):
    """The decoder blocks of ``root`` (a Hugging Face model or its nnsight wrapper), in order."""
    return submodule(root, arch.layers)


def output_projection(root, arch: Architecture, layer: int):
    """The MLP output projection of block ``layer``: its input is the neuron activations."""
    return submodule(decoder_layers(root, arch)[layer], arch.output_projection)


def residual_site(model, arch, layer: int | None):
    """The envoy whose output is the residual stream read or steered at ``layer``.

    ``None`` is the final norm's output (what the probe reads); an integer is the output of that decoder
    block (the residual stream after it).
    """
    return submodule(model, arch.final_norm) if layer is None else decoder_layers(model, arch)[layer]


def hidden_output(output) -> torch.Tensor:
    """The hidden-state tensor of a module output (decoder blocks of some families return a tuple)."""
    return output[0] if isinstance(output, tuple) else output


def value_vectors(model: torch.nn.Module, layer: int) -> torch.Tensor:
    """The value vectors of one layer as a ``[d_mlp, d_model]`` tensor (row ``i`` is ``v_i``), a view."""
    arch = architecture_of(model)
    weight = output_projection(model, arch, layer).weight
    return weight if arch.value_vectors_are_rows else weight.T


def all_value_vectors(model: torch.nn.Module) -> torch.Tensor:
    """Every layer's value vectors stacked as ``[n_layers, d_mlp, d_model]`` (float32 copy)."""
    arch = architecture_of(model)
    n_layers = len(decoder_layers(model, arch))
    return torch.stack([value_vectors(model, layer).detach().float() for layer in range(n_layers)])
