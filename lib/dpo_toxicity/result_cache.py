"""Results kept on disk under a hash of everything they depend on, so that a long run resumes where it stopped.

The ``full`` profile's chapters run for hours on a CPU. Each of their long stages (an evaluation row, one
generator's rejected continuations, the preference pairs) is saved the moment it finishes, under a key that
hashes its inputs and the source of the modules that compute it. A re-run, after an interruption or in a later
chapter, reads finished stages back; a changed input or a changed line of those modules gives a new key, so a
stale result is never served. Files are written atomically: an interrupted write leaves nothing behind; a file
that cannot be read back (truncated, or edited by hand) is reported by path, deleted and computed again.

Example::

    continuations = cached_json(
        cache_dir("generations"), {"weights": lm.weights_hash, "prompts": prompts},
        lambda: decode_all(lm, greedy_continuations(lm, prompts)), code=("evaluation.py",),
    )
"""

from __future__ import annotations

import ast
import hashlib
import json
import warnings
from collections.abc import Callable
from dataclasses import fields, is_dataclass
from functools import lru_cache
from pathlib import Path
from typing import TypeVar

import numpy as np
import pandas as pd
import torch

from .paths import written_atomically

Result = TypeVar("Result")


def _without_docstrings(tree: ast.AST) -> ast.AST:
    for node in ast.walk(tree):
        body = getattr(node, "body", None)
        if (
            isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef))
            and body
            and isinstance(body[0], ast.Expr)
            and isinstance(body[0].value, ast.Constant)
            and isinstance(body[0].value.value, str)
        ):
            node.body = body[1:] or [ast.Pass()]
    return tree


def code_hash(source: str) -> str:
    """Short sha256 of Python ``source`` as its syntax tree without docstrings and comments, so that rewording
    them changes nothing; of the text itself where it does not parse (an IPython magic, say)."""
    try:
        text = ast.dump(_without_docstrings(ast.parse(source)))
    except SyntaxError:
        text = source
    return hashlib.sha256(text.encode()).hexdigest()[:16]


@lru_cache(maxsize=None)
def source_hash(*modules: str) -> str:
    """Hex digest of the code of this package's ``modules`` (file names such as ``"evaluation.py"``), by
    :func:`code_hash`: a reworded docstring or comment keeps every cached result."""
    digest = hashlib.sha256()
    for module in modules:
        digest.update(code_hash((Path(__file__).parent / module).read_text(encoding="utf-8")).encode())
    return digest.hexdigest()


def digest(value) -> str:
    """Hex digest of ``value``: nested mappings, sequences, strings and numbers, NumPy arrays, torch tensors,
    DataFrames and dataclasses (class name and public fields). Equal values give equal digests.

    Raises ``TypeError`` for anything else, rather than hashing a ``repr`` that may hide what differs.
    """
    hasher = hashlib.sha256()
    _feed(hasher, value)
    return hasher.hexdigest()


def _feed(hasher, value) -> None:
    if value is None or isinstance(value, (bool, int, float, str)):
        hasher.update(json.dumps(value).encode())
    elif isinstance(value, (list, tuple)):
        hasher.update(f"[{len(value)}".encode())
        for item in value:
            _feed(hasher, item)
    elif isinstance(value, dict):
        hasher.update(f"{{{len(value)}".encode())
        for key in sorted(value, key=str):
            _feed(hasher, str(key))
            _feed(hasher, value[key])
    elif isinstance(value, torch.Tensor):
        _feed(hasher, value.detach().to("cpu", torch.float64).numpy())
    elif isinstance(value, np.ndarray):
        hasher.update(f"array{value.shape}".encode())
        hasher.update(np.ascontiguousarray(value, dtype=np.float64).tobytes())
    elif isinstance(value, pd.DataFrame):
        hasher.update(json.dumps([str(column) for column in value.columns]).encode())
        hasher.update(pd.util.hash_pandas_object(value, index=False).to_numpy().tobytes())
    elif is_dataclass(value) and not isinstance(value, type):
        hasher.update(type(value).__qualname__.encode())
        _feed(hasher, {item.name: getattr(value, item.name) for item in fields(value) if not item.name.startswith("_")})
    else:
        raise TypeError(f"Cannot hash a {type(value).__name__} for a cache key; pass its defining values instead.")


def discard_unreadable(path: Path, error: Exception) -> None:
    """Warn that the saved result at ``path`` cannot be read (``error``) and delete it, so that it is computed again.

    Any error of a load counts: a truncated or hand-edited file breaks each reader (JSON, NumPy, torch, pandas)
    differently, and computing the result again is always safe where failing in the middle of a chapter is not.
    """
    warnings.warn(
        f"The saved result {path} cannot be read ({type(error).__name__}: {error}); it is deleted and computed again.",
        stacklevel=3,
    )
    Path(path).unlink(missing_ok=True)


def cached(
    folder: Path | None,
    parts: dict,
    compute: Callable[[], Result],
    save: Callable[[Result, Path], None],
    load: Callable[[Path], Result],
    code: tuple[str, ...] = (),
    suffix: str = ".json",
) -> Result:
    """``compute()``, or the result saved under the key of ``parts`` and the source of the ``code`` modules.

    With ``folder=None`` nothing is read or written. ``save(result, path)`` must write ``path`` whole;
    it is given a temporary path that becomes the real one only when it returns. A saved result that ``load``
    cannot read is computed again, with a warning naming its file (:func:`discard_unreadable`).
    """
    if folder is None:
        return compute()
    path = Path(folder) / f"{digest({'parts': parts, 'code': source_hash(*code)})[:32]}{suffix}"
    if path.is_file():
        try:
            return load(path)
        except Exception as error:
            discard_unreadable(path, error)
    result = compute()
    with written_atomically(path) as partial:
        save(result, partial)
    return result


def cached_json(folder: Path | None, parts: dict, compute: Callable[[], Result], code: tuple[str, ...] = ()) -> Result:
    """:func:`cached` for a result that JSON round-trips unchanged (lists and mappings of strings and numbers)."""
    return cached(
        folder,
        parts,
        compute,
        lambda result, path: path.write_text(json.dumps(result)),
        lambda path: json.loads(path.read_text()),
        code,
    )
