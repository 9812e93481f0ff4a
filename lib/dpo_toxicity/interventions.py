"""Interventions on neurons and on the residual stream, applied through nnsight.

An intervention is an object with ``apply(model, arch)``: called inside an nnsight trace (or inside every step
of an nnsight generation), it edits activations of the wrapped model in place. The evaluation harness applies
one intervention per metric run and removes it when the trace ends, so edits never stack across metrics
(the authors' code left its hooks registered, compounding weight edits across toxicity, perplexity and F1).

* :class:`SetNeurons`: set chosen neurons' activations (the input of the MLP output projection) to constants.
  With zeros this is **ablation**: the neuron's write ``m_i v_i`` vanishes, exactly as zeroing its value
  vector would. With post-DPO means it is the paper's **activation patching**; with scaled pre-DPO means,
  its **activation editing**.
* :class:`PatchNeurons`: replace chosen neurons' activations, token by token, by another run's activations on the
  same tokens: the activation patching of the interpretability literature (see :mod:`~dpo_toxicity.mediation`).
* :class:`ScaleNeurons`: multiply chosen neurons' activations token by token by per-neuron factors.
* :class:`ScaleKeys`: multiply chosen neurons' key vectors (input-side weights) by a factor, leaving biases
  alone, as Lee et al.'s "scale the key vectors of the top-7 toxic neurons". Implemented on the input
  projection's output (``k_i . x`` becomes ``s k_i . x``), which equals editing the weights.
* :class:`SteerResidual`: add a vector to the residual stream (the final-norm output the probe reads, or the
  output of a decoder block), used to generate toxic continuations for the DPO pairs.

``positions="all"`` edits every position of every forward call (the prompt and each generated token);
``positions="last"`` edits only the last position of each call, as the authors' patching hooks did
(``[:, -1]``): with a KV cache that is the prompt's last token and then each generated token.
"""

from __future__ import annotations

from dataclasses import dataclass, field, is_dataclass

import pandas as pd
import torch

from .architectures import Architecture, decoder_layers, hidden_output, output_projection, residual_site, submodule
from .result_cache import digest

POSITIONS = ("all", "last")


def _check_positions(positions: str) -> None:
    if positions not in POSITIONS:
        raise ValueError(f"positions must be one of {POSITIONS}, not {positions!r}.")


def _by_layer(neurons: pd.DataFrame, column: str) -> dict[int, tuple[torch.Tensor, torch.Tensor]]:
    """Group a neuron table (``layer``, ``neuron``, ``column``) into ``{layer: (indices, values)}``."""
    missing = {"layer", "neuron", column} - set(neurons.columns)
    if missing:
        raise ValueError(f"The neuron table needs columns layer, neuron and {column}; missing {sorted(missing)}.")
    if neurons.duplicated(["layer", "neuron"]).any():
        raise ValueError("The neuron table lists a (layer, neuron) pair twice.")
    grouped = {}
    for layer, rows in neurons.groupby("layer"):
        grouped[int(layer)] = (
            torch.tensor(rows["neuron"].to_numpy(), dtype=torch.long),
            torch.tensor(rows[column].to_numpy(), dtype=torch.float32),
        )
    return grouped


def _check_layers(grouped: dict, model, arch: Architecture) -> None:
    n_layers = len(decoder_layers(model, arch))
    bad = [layer for layer in grouped if not 0 <= layer < n_layers]
    if bad:
        raise ValueError(f"Layers {bad} do not exist: the model has layers 0..{n_layers - 1}.")


@dataclass
class SetNeurons:
    """Set neurons' activations to constants: a table with columns ``layer``, ``neuron``, ``value``."""

    neurons: pd.DataFrame
    positions: str = "all"
    name: str = "set neurons"
    _grouped: dict = field(init=False, repr=False)

    def __post_init__(self) -> None:
        _check_positions(self.positions)
        self._grouped = _by_layer(self.neurons, "value")

    @classmethod
    def ablate(cls, neurons: pd.DataFrame, name: str = "ablate") -> "SetNeurons":
        """Zero the listed neurons (columns ``layer``, ``neuron``) at every position."""
        return cls(neurons[["layer", "neuron"]].assign(value=0.0), positions="all", name=name)

    @classmethod
    def patch(
        cls, neurons: pd.DataFrame, column: str = "activation_dpo", positions: str = "all", name: str = "patch"
    ) -> "SetNeurons":
        """Clamp the listed neurons to the constants in ``column`` of a neuron table (default: their post-DPO
        mean activations, the paper's activation patching)."""
        return cls(
            neurons[["layer", "neuron"]].assign(value=neurons[column].to_numpy()), positions=positions, name=name
        )

    def apply(self, model, arch: Architecture) -> None:
        _check_layers(self._grouped, model, arch)
        for layer, (indices, values) in sorted(self._grouped.items()):
            activations = output_projection(model, arch, layer).input
            target = activations if self.positions == "all" else activations[:, -1:]
            target[..., indices.to(activations.device)] = values.to(activations.device, activations.dtype)

    def __len__(self) -> int:
        return len(self.neurons)


@dataclass
class PatchNeurons:
    """Replace the listed neurons' activations (``layer``, ``neuron``) at every position by a source run's:
    ``source[layer]`` is that run's ``[batch, seq, d_mlp]`` activations of the very batch being traced.

    Patching every neuron of every layer from a run of another model with the same value vectors reproduces that
    model's MLP writes exactly; patching none changes nothing.
    """

    neurons: pd.DataFrame
    source: dict[int, torch.Tensor] = field(repr=False)
    name: str = "patch neurons"
    _grouped: dict = field(init=False, repr=False)

    def __post_init__(self) -> None:
        self._grouped = _by_layer(self.neurons[["layer", "neuron"]].assign(value=0.0), "value")
        missing = sorted(set(self._grouped) - set(self.source))
        if missing:
            raise ValueError(
                f"The source run has no activations for layers {missing}; capture every layer the neuron set names."
            )

    def apply(self, model, arch: Architecture) -> None:
        _check_layers(self._grouped, model, arch)
        for layer, (indices, _) in sorted(self._grouped.items()):
            activations = output_projection(model, arch, layer).input
            source = self.source[layer]
            if source.shape != activations.shape:
                raise ValueError(
                    f"Layer {layer}: the source activations are {tuple(source.shape)}, the traced batch's "
                    f"{tuple(activations.shape)}; patch from a run of the same tokens."
                )
            index = indices.to(activations.device)
            activations[..., index] = source[..., index].to(activations.device, activations.dtype)

    def __len__(self) -> int:
        return len(self.neurons)


@dataclass
class ScaleNeurons:
    """Multiply chosen neurons' activations, token by token, by per-neuron factors: a table with columns
    ``layer``, ``neuron``, ``factor``. Unlike :class:`SetNeurons` the activation keeps its variation across
    tokens; only its size changes (a per-token reading of the EMNLP version's activation editing)."""

    neurons: pd.DataFrame
    name: str = "scale neurons"
    _grouped: dict = field(init=False, repr=False)

    def __post_init__(self) -> None:
        self._grouped = _by_layer(self.neurons, "factor")

    def apply(self, model, arch: Architecture) -> None:
        _check_layers(self._grouped, model, arch)
        for layer, (indices, factors) in sorted(self._grouped.items()):
            activations = output_projection(model, arch, layer).input
            index = indices.to(activations.device)
            activations[..., index] = activations[..., index] * factors.to(activations.device, activations.dtype)

    def __len__(self) -> int:
        return len(self.neurons)


@dataclass
class ScaleKeys:
    """Scale the key vectors of the listed neurons (``layer``, ``neuron``) by ``factor``; biases untouched.

    For GPT-2 the key is a column of ``c_fc`` (which has a bias: ``k.x + b`` becomes ``s k.x + b``); for gated
    MLPs it is the neuron's row of the gate projection, the input of the nonlinearity (see
    :attr:`~dpo_toxicity.architectures.Architecture.key_projection`).
    """

    neurons: pd.DataFrame
    factor: float
    name: str = "scale keys"
    _grouped: dict = field(init=False, repr=False)

    def __post_init__(self) -> None:
        self._grouped = _by_layer(self.neurons[["layer", "neuron"]].assign(value=self.factor), "value")

    def apply(self, model, arch: Architecture) -> None:
        _check_layers(self._grouped, model, arch)
        for layer, (indices, _) in sorted(self._grouped.items()):
            projection = submodule(decoder_layers(model, arch)[layer], arch.key_projection)
            output = projection.output
            index = indices.to(output.device)
            bias = projection.bias
            if bias is None:
                output[..., index] = output[..., index] * self.factor
            else:
                offset = bias[index].to(output.dtype)
                output[..., index] = (output[..., index] - offset) * self.factor + offset


@dataclass
class SteerResidual:
    """Add ``vector`` (``[d_model]``) to the residual stream at every position.

    ``layer=None`` steers the final-norm output (what the probe reads and the unembedding sees); an integer
    steers the output of that decoder block, so later blocks process the pushed stream.
    """

    vector: torch.Tensor
    layer: int | None = None
    name: str = "steer"

    def apply(self, model, arch: Architecture) -> None:
        states = hidden_output(residual_site(model, arch, self.layer).output)
        states[:] = states + self.vector.to(states.device, states.dtype)


def fingerprint(intervention) -> str:
    """A hex digest of what ``intervention`` does: its class and every public field (neuron tables, factors,
    vectors, positions, name). Two interventions with the same fingerprint edit a model identically, so a
    finished evaluation can be found again by it. ``None`` (no intervention) has the fingerprint ``"none"``.

    Raises ``TypeError`` for an object that is not one of this module's dataclass interventions.
    """
    if intervention is None:
        return "none"
    if not is_dataclass(intervention):
        raise TypeError(
            f"Cannot fingerprint {type(intervention).__name__}: interventions are dataclasses of "
            f"dpo_toxicity.interventions."
        )
    return digest(intervention)
