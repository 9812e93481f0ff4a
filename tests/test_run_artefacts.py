"""A run's saved probe and neuron statistics are reused only when they were computed from what the run has now."""

from dataclasses import replace

import numpy as np
import pandas as pd
import pytest
import torch

import dpo_toxicity.run_artefacts as run_artefacts
from dpo_toxicity.models import load_model
from dpo_toxicity.paths import artefact_dir
from dpo_toxicity.profiles import CI
from dpo_toxicity.run_artefacts import (
    STATISTICS_INPUTS_FILE, fit_probe, neuron_statistics, saved_probe, saved_statistics,
)

TINY = replace(CI, probe_train_per_class=4, probe_test_per_class=2, probe_max_tokens=8, batch_size=4,
               eval_prompts=3, generation_batch_size=3)


@pytest.fixture(autouse=True)
def cache(tmp_path, monkeypatch):
    monkeypatch.setenv("DPO_TOX_CACHE", str(tmp_path))


@pytest.fixture(scope="module")
def models():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # tiny matrix products are far slower on 2 contended threads
    yield load_model("tiny-llama", seed=0), load_model("tiny-llama", seed=1)
    torch.set_num_threads(threads)


def test_a_saved_probe_is_reused_only_for_the_same_weights_and_sample(models):
    lm, other = models
    assert saved_probe(lm, TINY) is None
    fitted = fit_probe(lm, TINY, progress=False).probe
    reused = saved_probe(lm, TINY)
    np.testing.assert_array_equal(reused.direction, fitted.direction)
    assert saved_probe(lm, replace(TINY, probe_train_per_class=5)) is None
    assert saved_probe(lm, replace(TINY, probe_max_tokens=16)) is None
    assert saved_probe(other, TINY) is None  # same name, other weights
    assert saved_probe(lm, replace(TINY, name="full")) is None  # another profile's folder


def test_saved_statistics_follow_both_models_the_probe_and_the_prompts(models):
    lm, dpo_lm = models
    probe = fit_probe(lm, TINY, progress=False).probe
    computed = neuron_statistics(lm, dpo_lm, probe, TINY, progress=False)
    reused = saved_statistics(lm, dpo_lm, probe, TINY)
    pd.testing.assert_frame_equal(reused.table, computed.table)
    torch.testing.assert_close(reused.dpo.mean, computed.dpo.mean)
    assert saved_statistics(lm, lm, probe, TINY) is None  # another DPO model
    assert saved_statistics(lm, dpo_lm, replace(probe, direction=-probe.direction), TINY) is None
    assert saved_statistics(lm, dpo_lm, probe, replace(TINY, eval_prompts=4)) is None
    (artefact_dir(lm.name, TINY.name) / STATISTICS_INPUTS_FILE).unlink()  # statistics saved before the record
    assert saved_statistics(lm, dpo_lm, probe, TINY) is None


def test_an_interrupted_recomputation_leaves_no_record_vouching_for_a_mix_of_old_and_new_files(models, monkeypatch):
    lm, dpo_lm = models
    probe = fit_probe(lm, TINY, progress=False).probe
    neuron_statistics(lm, dpo_lm, probe, TINY, progress=False)

    def interrupted(table, path):
        raise KeyboardInterrupt

    monkeypatch.setattr(run_artefacts, "save_neuron_table", interrupted)
    with pytest.raises(KeyboardInterrupt):
        neuron_statistics(lm, lm, probe, TINY, progress=False)  # the activation files are the new model's by now
    assert saved_statistics(lm, dpo_lm, probe, TINY) is None
