"""The model registry: clear errors for unknown or unavailable models, and the architecture table."""

import pytest
import torch

from dpo_toxicity import models
from dpo_toxicity.architectures import ARCHITECTURES, UnsupportedArchitectureError, architecture_of
from dpo_toxicity.models import GGUFPackage, ModelUnavailableError, UnknownModelError, load_model, model_spec


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
