"""Reading activations through nnsight: neuron activations, MLP outputs, pooled last-layer states.

Every read goes through ``nnsight.TransformersModel`` wrapped around the already-loaded Hugging Face model
(:func:`traced`), so the same code runs on the offline models, the hub models and the tiny test models.
Batches are tokenised here (truncation to ``max_tokens``, left padding) and handed to nnsight as an
encoding; nnsight derives ``position_ids`` from the attention mask, which keeps GPT-2's absolute positions
right under left padding (the trap of nnsight #672 / transformers #21080).

Reading the final norm's output stops the forward pass there (``tracer.stop()``): the probe never needs the
unembedding, which for Gemma 3's 262k-token vocabulary costs more than the rest of the model.

Example::

    lm = load_model("tiny-llama")
    acts = neuron_activations(lm, ["You idiot!", "Thanks"])    # [n_layers] x [2, seq, d_mlp]
    feats = pooled_final_states(lm, texts, max_tokens=64)      # [n_texts, d_model] float32 numpy
"""

from __future__ import annotations

from dataclasses import dataclass

import nnsight
import numpy as np
import torch
from tqdm import tqdm

from .architectures import architecture_of, decoder_layers, hidden_output, output_projection, residual_site
from .models import LoadedModel

_TRACED: dict[int, nnsight.TransformersModel] = {}


def traced(lm: LoadedModel) -> nnsight.TransformersModel:
    """The nnsight wrapper of ``lm`` (built once per model object, no hub access)."""
    key = id(lm.model)
    if key not in _TRACED:
        _TRACED[key] = nnsight.TransformersModel(lm.model, tokenizer=lm.tokenizer)
    return _TRACED[key]


def encode(lm: LoadedModel, texts: list[str], max_tokens: int):
    """Tokenise a batch: truncate each text to ``max_tokens`` tokens, pad on the left, on ``lm``'s device."""
    if not texts:
        raise ValueError("encode() needs at least one text.")
    return lm.tokenizer(list(texts), return_tensors="pt", padding=True, truncation=True, max_length=max_tokens).to(
        lm.device
    )


@dataclass
class LayerReads:
    """One batch's reads: per-layer neuron activations and MLP outputs, and the attention mask.

    ``neurons[l]`` is ``[batch, seq, d_mlp]``; ``mlp_outputs[l]`` is ``[batch, seq, d_model]`` (the output of the
    MLP's output projection, before any post-MLP norm); ``mask`` is ``[batch, seq]`` (1 = real token).
    """

    neurons: list[torch.Tensor]
    mlp_outputs: list[torch.Tensor]
    mask: torch.Tensor


def read_layers(lm: LoadedModel, texts: list[str], max_tokens: int = 128) -> LayerReads:
    """Neuron activations and MLP outputs of every layer for one left-padded batch, in one forward pass."""
    arch = architecture_of(lm.model)
    model = traced(lm)
    encoding = encode(lm, texts, max_tokens)
    n_layers = len(decoder_layers(lm.model, arch))
    with torch.inference_mode():
        with model.trace(encoding) as tracer:
            neurons, outputs = [], []
            for layer in range(n_layers):
                projection = output_projection(model, arch, layer)
                neurons.append(projection.input)
                outputs.append(projection.output)
            neurons = nnsight.save(neurons)
            outputs = nnsight.save(outputs)
            tracer.stop()
    return LayerReads(list(neurons), list(outputs), encoding["attention_mask"])


def neuron_activations(lm: LoadedModel, texts: list[str], max_tokens: int = 128) -> list[torch.Tensor]:
    """Per-layer neuron activations ``[batch, seq, d_mlp]`` (input of the MLP output projection)."""
    return read_layers(lm, texts, max_tokens).neurons


def _residual_states(lm: LoadedModel, encoding, layer: int | None) -> torch.Tensor:
    """Residual stream at ``layer`` (see :func:`residual_site`), ``[batch, seq, d_model]``; the forward
    stops there, before the unembedding."""
    arch = architecture_of(lm.model)
    model = traced(lm)
    with torch.inference_mode():
        with model.trace(encoding) as tracer:
            states = residual_site(model, arch, layer).output.save()
            tracer.stop()
    return hidden_output(states)


def pooled_states(
    lm: LoadedModel,
    texts: list[str],
    max_tokens: int = 64,
    batch_size: int = 16,
    progress: str | None = None,
    layer: int | None = None,
) -> np.ndarray:
    """Mean over real (non-padding) positions of the residual stream at ``layer``: ``[len(texts), d_model]``.

    With ``layer=None`` this is the final-norm output, the probe's input: Lee et al.'s "last-layer residual
    stream averaged over all timesteps". Unlike the authors' code, padding positions are masked out of the
    mean, so a text's features do not depend on what it was batched with. Texts are processed in order of
    token length to waste little compute on padding; rows come back in the input order.
    """
    lengths = [len(ids) for ids in lm.tokenizer(list(texts), truncation=True, max_length=max_tokens).input_ids]
    order = np.argsort(lengths, kind="stable")
    pooled = np.empty((len(texts), lm.shape[2]), dtype=np.float32)
    batches = [order[start : start + batch_size] for start in range(0, len(order), batch_size)]
    for batch in tqdm(batches, desc=progress or "pooled states", disable=progress is None):
        encoding = encode(lm, [texts[i] for i in batch], max_tokens)
        states = _residual_states(lm, encoding, layer).float()
        mask = encoding["attention_mask"].unsqueeze(-1).float()
        pooled[batch] = ((states * mask).sum(1) / mask.sum(1)).cpu().numpy()
    return pooled


def pooled_final_states(
    lm: LoadedModel, texts: list[str], max_tokens: int = 64, batch_size: int = 16, progress: str | None = None
) -> np.ndarray:
    """:func:`pooled_states` of the final-norm output: the probe's features."""
    return pooled_states(lm, texts, max_tokens, batch_size, progress, layer=None)


def typical_token_norm(lm: LoadedModel, texts: list[str], layer: int | None = None, max_tokens: int = 32) -> float:
    """Median norm of the residual stream at ``layer`` over the real tokens of ``texts`` (a steering unit)."""
    encoding = encode(lm, texts, max_tokens)
    states = _residual_states(lm, encoding, layer).float()
    return float(states[encoding["attention_mask"].bool()].norm(dim=-1).median())
