"""The result cache: keys follow every input and the code, finished results are read back, failures leave nothing,
and a saved result that cannot be read is reported by path and computed again."""

import re
from dataclasses import dataclass

import numpy as np
import pandas as pd
import pytest
import torch

from dpo_toxicity.result_cache import cached, cached_json, code_hash, digest


@dataclass
class Settings:
    label: str
    strength: float
    _scratch: object = None  # private fields are not part of what a value means


def test_equal_values_have_equal_digests_and_any_difference_shows():
    value = {
        "prompts": ["a", "b"],
        "vector": torch.ones(3),
        "table": pd.DataFrame({"x": [1, 2]}),
        "settings": Settings("push", 0.2),
        "array": np.zeros(2),
        "n": None,
    }
    same = {
        "n": None,
        "array": np.zeros(2),
        "settings": Settings("push", 0.2, _scratch=object()),
        "table": pd.DataFrame({"x": [1, 2]}),
        "vector": torch.ones(3),
        "prompts": ["a", "b"],
    }
    assert digest(value) == digest(same)
    for key, changed in [
        ("prompts", ["a", "c"]),
        ("vector", torch.tensor([1.0, 1.0, 1.5])),
        ("table", pd.DataFrame({"y": [1, 2]})),
        ("settings", Settings("push", 0.3)),
        ("array", np.zeros(3)),
        ("n", 0),
    ]:
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


@pytest.mark.parametrize("damage", ["truncate", "edit"])
def test_an_unreadable_saved_result_is_reported_by_path_and_computed_again(tmp_path, damage):
    calls = []

    def compute():
        calls.append(1)
        return {"rows": [1.5, 2.5]}

    cached_json(tmp_path, {"input": 1}, compute)
    (path,) = tmp_path.iterdir()
    text = path.read_text()
    path.write_text(text[: len(text) // 2] if damage == "truncate" else text.replace("{", "{,"))
    with pytest.warns(UserWarning, match=f"{re.escape(str(path))} cannot be read .*computed again"):
        assert cached_json(tmp_path, {"input": 1}, compute) == {"rows": [1.5, 2.5]}
    assert cached_json(tmp_path, {"input": 1}, compute) == {"rows": [1.5, 2.5]} and calls == [1, 1]


def test_an_unreadable_array_is_computed_again(tmp_path):
    def save(value, path):
        np.savez(path, value=value)

    def load(path):
        with np.load(path) as stored:
            return stored["value"]

    cached(tmp_path, {"input": 1}, lambda: np.arange(4.0), save, load, suffix=".npz")
    (path,) = tmp_path.iterdir()
    path.write_bytes(path.read_bytes()[:40])
    with pytest.warns(UserWarning, match=re.escape(str(path))):
        np.testing.assert_array_equal(
            cached(tmp_path, {"input": 1}, lambda: np.arange(4.0), save, load, suffix=".npz"), np.arange(4.0)
        )
    np.testing.assert_array_equal(load(path), np.arange(4.0))


def test_code_hash_ignores_docstrings_and_comments_but_not_code():
    source = 'def f(x):\n    """Doubles."""\n    return 2 * x  # twice\n'
    assert code_hash(source) == code_hash('def f(x):\n    """Twice x."""\n    # why\n    return 2 * x\n')
    assert code_hash(source) != code_hash('def f(x):\n    """Doubles."""\n    return 3 * x\n')
    assert code_hash("%matplotlib inline") != code_hash("%matplotlib widget")  # not Python: hashed as text
