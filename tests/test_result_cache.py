"""The result cache: keys follow every input and the code, finished results are read back, failures leave nothing."""

from dataclasses import dataclass

import numpy as np
import pandas as pd
import pytest
import torch

from dpo_toxicity.result_cache import cached_json, digest


@dataclass
class Settings:
    label: str
    strength: float
    _scratch: object = None  # private fields are not part of what a value means


def test_equal_values_have_equal_digests_and_any_difference_shows():
    value = {"prompts": ["a", "b"], "vector": torch.ones(3), "table": pd.DataFrame({"x": [1, 2]}),
             "settings": Settings("push", 0.2), "array": np.zeros(2), "n": None}
    same = {"n": None, "array": np.zeros(2), "settings": Settings("push", 0.2, _scratch=object()),
            "table": pd.DataFrame({"x": [1, 2]}), "vector": torch.ones(3), "prompts": ["a", "b"]}
    assert digest(value) == digest(same)
    for key, changed in [("prompts", ["a", "c"]), ("vector", torch.tensor([1.0, 1.0, 1.5])),
                         ("table", pd.DataFrame({"y": [1, 2]})), ("settings", Settings("push", 0.3)),
                         ("array", np.zeros(3)), ("n", 0)]:
        assert digest(value) != digest({**value, key: changed}), key
    assert digest(["ab", "c"]) != digest(["a", "bc"])


def test_values_it_cannot_read_are_refused():
    with pytest.raises(TypeError, match="Cannot hash a set"):
        digest({"neurons": {1, 2}})


def test_a_finished_result_is_read_back_and_a_new_input_is_computed(tmp_path):
    calls = []

    def compute(value):
        calls.append(value)
        return {"value": value, "items": [1.5, "x"]}

    first = cached_json(tmp_path, {"input": 1}, lambda: compute(1), code=("result_cache.py",))
    again = cached_json(tmp_path, {"input": 1}, lambda: compute(1), code=("result_cache.py",))
    other = cached_json(tmp_path, {"input": 2}, lambda: compute(2), code=("result_cache.py",))
    assert first == again == {"value": 1, "items": [1.5, "x"]} and other["value"] == 2
    assert calls == [1, 2]


def test_other_code_makes_another_key(tmp_path):
    calls = []
    cached_json(tmp_path, {"input": 1}, lambda: calls.append("a") or [], code=("result_cache.py",))
    cached_json(tmp_path, {"input": 1}, lambda: calls.append("b") or [], code=("paths.py",))
    assert calls == ["a", "b"]


def test_without_a_folder_nothing_is_kept(tmp_path):
    calls = []
    for _ in range(2):
        cached_json(None, {"input": 1}, lambda: calls.append(1) or [])
    assert calls == [1, 1]


def test_a_failed_computation_leaves_no_file(tmp_path):
    def fail():
        raise RuntimeError("interrupted")

    with pytest.raises(RuntimeError):
        cached_json(tmp_path, {"input": 1}, fail)
    assert list(tmp_path.iterdir()) == []
