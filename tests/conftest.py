"""Shared fixtures: one tiny random model per architecture family, built once per test session."""

import pytest
import torch

from dpo_toxicity.models import load_model

TINY_MODELS = ["tiny-gpt2", "tiny-llama", "tiny-mistral", "tiny-gemma2", "tiny-gemma3"]

# Prompts of different lengths, so that a batch of them is left-padded.
PROMPTS = [
    "You are a stupid idiot and I hate you, what the hell is wrong with you?",
    "Thank you, friend.",
    "The quick brown fox jumps over the lazy dog.",
]


@pytest.fixture(scope="session")
def tiny_models():
    return {name: load_model(name, device="cpu") for name in TINY_MODELS}


@pytest.fixture(params=TINY_MODELS)
def tiny(request, tiny_models):
    return tiny_models[request.param]


@pytest.fixture(scope="module")
def one_thread():
    """Tiny matrix products run about 80 times slower on 2 contended OpenMP threads than on one."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
