"""Run profiles: the Colab profile's sizes fit the data, and the batch size scales with the device."""

from dataclasses import replace
from types import SimpleNamespace

import pytest
import torch

from dpo_toxicity import data
from dpo_toxicity.profiles import MAX_GPU_BATCH, PROFILES, profile_named
from dpo_toxicity.run_artefacts import attribution_prompts, mediation_prompts

GIB = 2**30


def fake_free_memory(monkeypatch, free_bytes):
    monkeypatch.setattr(torch.cuda, "mem_get_info", lambda device=None: (free_bytes, 16 * GIB))


def test_colab_profile_sits_between_ci_and_full():
    ci, colab, full = PROFILES["ci"], profile_named("colab"), PROFILES["full"]
    assert colab.eval_prompts == 999 and colab.probe_train_per_class == 2000
    assert ci.pair_prompts < colab.pair_prompts < full.pair_prompts
    assert ci.table_eval_prompts < colab.table_eval_prompts <= 1199


def test_colab_probe_sizes_fit_the_jigsaw_pools():
    settings = profile_named("colab")
    assert len(data.balanced_sample(data.jigsaw("train"), settings.probe_train_per_class)) == 4000
    assert len(data.balanced_sample(data.jigsaw("test"), settings.probe_test_per_class)) == 1160


@pytest.mark.parametrize("name", sorted(PROFILES))
def test_off_cuda_the_batch_size_is_the_profiles(name, monkeypatch):
    monkeypatch.setattr(torch.cuda, "mem_get_info", lambda device=None: pytest.fail("queried GPU memory on a CPU"))
    settings = profile_named(name)
    assert settings.batch_size_for(torch.device("cpu"), 1024) == settings.batch_size
    assert settings.batch_size_for("cpu", 4096) == settings.batch_size


@pytest.mark.parametrize(
    "free_gib, width, expected",
    [
        (4, 1024, 32),  # the reference: the profile's batch
        (8, 1024, 64),  # twice the memory, twice the batch
        (13, 1024, 64),  # a T4 with GPT-2-medium loaded: rounded down to a power of two
        (13, 4096, 16),  # four times the width, a quarter of the batch
        (1, 4096, 2),
        (0.01, 4096, 1),  # never below one
        (80, 1024, MAX_GPU_BATCH),  # capped
    ],
)
def test_on_cuda_the_batch_size_scales_with_free_memory_and_width(free_gib, width, expected, monkeypatch):
    fake_free_memory(monkeypatch, int(free_gib * GIB))
    assert profile_named("colab").batch_size_for(torch.device("cuda"), width) == expected


@pytest.mark.parametrize("name", sorted(PROFILES))
def test_every_profile_leaves_challenge_prompts_for_the_mediation(name):
    settings = profile_named(name)
    prompts = mediation_prompts(settings)
    assert len(prompts) == settings.mediation_prompts
    assert not set(prompts) & set(attribution_prompts(settings))


def test_a_profile_without_prompts_left_for_the_mediation_is_refused():
    with pytest.raises(ValueError, match="lower one of eval_prompts or mediation_prompts"):
        mediation_prompts(replace(profile_named("full"), eval_prompts=None))


def loaded(width, device="cuda"):
    """What Profile.sized_for reads of a loaded model: its device and its shape (layers, d_mlp, d_model)."""
    return SimpleNamespace(device=torch.device(device), shape=(24, 4 * width, width))


@pytest.mark.parametrize("name", sorted(PROFILES))
def test_off_cuda_the_sized_profile_is_the_profile_itself(name, monkeypatch):
    monkeypatch.setattr(torch.cuda, "mem_get_info", lambda device=None: pytest.fail("queried GPU memory on a CPU"))
    settings = profile_named(name)
    assert settings.sized_for(loaded(1024, "cpu"), loaded(4096, "cpu")) is settings


def test_on_cuda_both_batches_scale_with_free_memory_and_the_widest_model(monkeypatch):
    fake_free_memory(monkeypatch, 8 * GIB)
    colab = profile_named("colab")  # batch 32, generation batch 64 on the CPU
    sized = colab.sized_for(loaded(1024))
    assert (sized.batch_size, sized.generation_batch_size) == (64, 128)
    assert replace(sized, batch_size=32, generation_batch_size=64) == colab  # every other size kept
    widest = colab.sized_for(loaded(1024), loaded(4096))  # four times the width: a quarter of the batches
    assert (widest.batch_size, widest.generation_batch_size) == (16, 32)
    assert widest.batch_size == colab.batch_size_for("cuda", 4096)
