"""The model registry: clear errors for unknown or unavailable models, the architecture table, and where and in
which dtype a model loads on a GPU (faked: torch's CUDA queries patched)."""

import gguf
import pytest
import torch
import transformers

from dpo_toxicity import models
from dpo_toxicity.architectures import ARCHITECTURES, UnsupportedArchitectureError, architecture_of
from dpo_toxicity.models import GGUFPackage, ModelUnavailableError, UnknownModelError, gguf_path, load_model, model_spec


def test_unknown_model_name_lists_the_known_ones():
    with pytest.raises(UnknownModelError) as error:
        model_spec("gpt5-nano")
    assert "smollm2-135m" in str(error.value) and "gpt5-nano" in str(error.value)


def test_hub_model_offline_raises_a_clear_error(monkeypatch, tmp_path):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HOME", str(tmp_path))  # an empty hub cache
    with pytest.raises(ModelUnavailableError) as error:
        load_model("gpt2-medium", device="cpu")
    message = str(error.value)
    assert "gpt2-medium" in message and "smollm2-135m" in message


def test_missing_weights_package_says_how_to_install(monkeypatch):
    monkeypatch.setitem(models.MODELS, "ghost", models.ModelSpec("ghost", "test", GGUFPackage("no_such_pkg", "x.gguf")))
    with pytest.raises(ModelUnavailableError, match="make install"):
        load_model("ghost", device="cpu")


def test_every_paper_family_has_a_row_and_a_tiny_model(tiny_models):
    families = {architecture_of(lm.model).family for lm in tiny_models.values()}
    assert families == {"gpt2", "llama", "mistral", "gemma2", "gemma3"}
    assert set(ARCHITECTURES) >= {"gpt2", "llama", "mistral", "gemma2", "gemma3_text"}


def test_unsupported_architecture_is_named():
    class Fake(torch.nn.Module):
        class config:
            model_type = "bert"

    with pytest.raises(UnsupportedArchitectureError, match="bert"):
        architecture_of(Fake())


def test_loaded_models_pad_on_the_left_and_are_frozen(tiny):
    assert tiny.tokenizer.padding_side == "left"
    assert tiny.tokenizer.pad_token is not None
    assert not any(parameter.requires_grad for parameter in tiny.model.parameters())
    assert not tiny.model.training


def test_tiny_tokenizer_round_trips_text():
    tokenizer = models.tiny_tokenizer()
    text = "What the hell, friend? 42 lobsters!"
    assert tokenizer.decode(tokenizer(text).input_ids) == text


def test_tiny_models_are_reproducible_from_their_seed():
    first, second = load_model("tiny-llama", device="cpu", seed=3), load_model("tiny-llama", device="cpu", seed=3)
    for a, b in zip(first.model.parameters(), second.model.parameters()):
        torch.testing.assert_close(a, b)


def test_every_companion_is_a_registered_model_of_another_architecture_family():
    from dpo_toxicity.models import MODELS

    for spec in MODELS.values():
        assert spec.companion in MODELS and spec.companion != spec.name, spec.name


GIB = 2**30


def fake_cuda(monkeypatch, capability=(8, 0), free_gib=80.0, gpus=1):
    """A CUDA machine as torch reports it: ``gpus`` cards of ``capability``, each with ``free_gib`` free. Like
    torch on a T4, it claims bfloat16 support whatever the capability (emulated below 8.0)."""
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda including_emulation=True: True)
    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda device=None: capability)
    monkeypatch.setattr(torch.cuda, "mem_get_info", lambda device=None: (int(free_gib * GIB), 80 * GIB))
    monkeypatch.setattr(torch.cuda, "device_count", lambda: gpus)


@pytest.mark.parametrize(
    "capability, dtype",
    [
        ((7, 5), torch.float16),  # T4: bfloat16 only by emulation, though is_bf16_supported says True
        ((7, 0), torch.float16),  # V100
        ((8, 0), torch.bfloat16),  # A100
        ((9, 0), torch.bfloat16),  # H100
    ],
)
def test_a_gpu_computes_in_bfloat16_only_from_compute_capability_8(monkeypatch, capability, dtype):
    fake_cuda(monkeypatch, capability)
    chosen, reason = models.model_dtype(model_spec("meta-llama/Llama-3.1-8B"), "cuda")
    assert chosen == dtype and models.native_dtype("cuda")[0] == dtype
    assert f"compute capability {capability[0]}.{capability[1]}" in reason


def test_the_cpu_and_every_non_hub_or_full_precision_model_stay_in_float32(monkeypatch):
    fake_cuda(monkeypatch, (9, 0))
    for spec in models.MODELS.values():
        assert models.model_dtype(spec, "cpu")[0] == torch.float32, spec.name
    for name in ("gpt2-medium", "smollm2-135m", "gemma3-270m", "tiny-llama"):
        assert models.model_dtype(model_spec(name), "cuda")[0] == torch.float32, name
    assert "CPU" in models.native_dtype("cpu")[1]


@pytest.mark.parametrize(
    "free_gib, gpus, launched, expected",
    [
        (80, 2, False, "one device"),  # fits: the whole model on the GPU asked for
        (10, 2, False, "auto"),  # does not fit: sharded over both GPUs
        (10, 1, False, "one device"),  # nowhere to shard to: CUDA's out-of-memory error says it does not fit
        (10, 2, True, "one device"),  # a launcher's process owns one GPU
    ],
)
def test_a_hub_model_goes_to_its_gpu_whole_or_sharded_when_it_does_not_fit(
    monkeypatch, free_gib, gpus, launched, expected
):
    fake_cuda(monkeypatch, free_gib=free_gib, gpus=gpus)
    if launched:
        monkeypatch.setenv("LOCAL_RANK", "1")
    else:
        monkeypatch.delenv("LOCAL_RANK", raising=False)
    device = torch.device("cuda", 1)
    placement = models.device_map_for(16 * GIB, device)  # an 8B model in 16 bits
    assert placement == ({"": device} if expected == "one device" else "auto")
    assert models.device_map_for(16 * GIB, torch.device("cpu")) is None


def test_a_hub_model_loads_straight_to_the_gpu_in_its_native_dtype(monkeypatch, tiny_models):
    fake_cuda(monkeypatch, (7, 5))
    monkeypatch.delenv("LOCAL_RANK", raising=False)
    tiny = tiny_models["tiny-llama"]
    loads = []

    def from_pretrained(repo_id, **kwargs):
        loads.append(kwargs)
        return transformers.AutoModelForCausalLM.from_config(tiny.model.config)

    monkeypatch.setattr(models.AutoConfig, "from_pretrained", lambda repo_id, **kwargs: tiny.model.config)
    monkeypatch.setattr(models.AutoModelForCausalLM, "from_pretrained", from_pretrained)
    monkeypatch.setattr(models.AutoTokenizer, "from_pretrained", lambda repo_id, **kwargs: models.tiny_tokenizer())
    lm = load_model("mistralai/Mistral-7B-v0.1", device="cuda")  # a .to("cuda") would fail here: no GPU
    assert loads[0]["dtype"] == torch.float16 and loads[0]["device_map"] == {"": torch.device("cuda")}
    assert lm.device == torch.device("cuda")


def test_under_a_launcher_each_process_uses_its_own_gpu(monkeypatch):
    fake_cuda(monkeypatch)
    monkeypatch.delenv("LOCAL_RANK", raising=False)
    assert models.default_device() == torch.device("cuda")
    monkeypatch.setenv("LOCAL_RANK", "3")
    assert models.default_device() == torch.device("cuda", 3)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert models.default_device() == torch.device("cpu")


def test_the_default_model_loads_from_its_weight_package():
    lm = load_model("smollm2-135m", device="cpu")
    assert architecture_of(lm.model).family == "llama" and lm.shape == (30, 1536, 576)
    encoding = lm.tokenizer(["You are a"], return_tensors="pt")
    with torch.inference_mode():
        logits = lm.model(**encoding).logits
    assert logits.shape[-1] >= len(lm.tokenizer) and torch.isfinite(logits).all()


# The ci profile runs no second model; converting Gemma 3's GGUF (its 262k-token tokenizer) takes over a minute, so
# CI checks what its weight packages assemble into, which the conversion reads.
def test_the_second_models_weight_packages_assemble_into_a_gemma3_gguf_of_its_shape():
    reader = gguf.GGUFReader(gguf_path(model_spec("gemma3-270m").source))
    facts = {"general.architecture": "gemma3", "gemma3.block_count": 18, "gemma3.embedding_length": 640}
    facts |= {"gemma3.feed_forward_length": 2048}
    assert {key: reader.get_field(key).contents() for key in facts} == facts
    assert len(reader.get_field("tokenizer.ggml.tokens").data) == 262144
