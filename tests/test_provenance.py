"""A chapter's provenance states the dtype its models compute in, and why."""

from dataclasses import replace

import torch

from dpo_toxicity.book.provenance import RunRecord
from dpo_toxicity.models import model_spec
from dpo_toxicity.profiles import profile_named


def test_the_record_names_each_models_dtype_and_the_reason(monkeypatch, tiny_models):
    tiny = tiny_models["tiny-llama"]
    on_a_t4 = replace(tiny, spec=model_spec("google/gemma-2-2b"), device=torch.device("cuda"))
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)  # a T4: compute capability 7.5
    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda device=None: (7, 5))
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda device=None: "Tesla T4")
    table = RunRecord("test", profile_named("ci"), tiny, data_files=[], other_models=(on_a_t4,)).table()["value"]
    assert table["dtype"] == "float32 (a tiny random test model)"
    assert table["dtype google/gemma-2-2b"].startswith("float16") and "7.5" in table["dtype google/gemma-2-2b"]
