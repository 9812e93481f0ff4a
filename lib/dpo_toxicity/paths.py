"""Where the book finds its data and keeps its artefacts.

Two folders matter:

* the **data folder**, read-only: the offline copies of the paper's data sets. It is, in this order,
  ``$DPO_TOX_DATA``; ``../shared/data`` relative to the project root (the folder holding ``pyproject.toml``)
  when it exists; the copy ``python -m dpo_toxicity.data_sources`` fetches into the cache (``data/``) when
  that exists (Colab, a fresh clone).
* the **cache folder**, writable: converted model weights, the trained probe, DPO checkpoints and every
  other artefact a later chapter reloads. By default ``.cache/`` under the project root; ``DPO_TOX_CACHE``
  overrides it (CI lays the data out read-only, so nothing is ever written next to the data).

Every path the book opens goes through :func:`data_file` or :func:`cache_dir`, so a missing file fails
with one message that names the file and the variable that relocates it.
"""

from __future__ import annotations

import os
from contextlib import contextmanager
from pathlib import Path

DATA_ENV = "DPO_TOX_DATA"
CACHE_ENV = "DPO_TOX_CACHE"
FETCHED_DATA = "data"  # the cache folder that dpo_toxicity.data_sources fetches the data into


class MissingDataError(FileNotFoundError):
    """A data file the book needs is not where the data folder says it is."""


def project_root() -> Path:
    """The folder that holds ``pyproject.toml``, found from this file (an editable install)."""
    here = Path(__file__).resolve()
    for folder in here.parents:
        if (folder / "pyproject.toml").is_file() and (folder / "lib").is_dir():
            return folder
    return Path.cwd()


def _cache_base() -> Path:
    """The cache folder, not created: ``$DPO_TOX_CACHE`` or ``<project root>/.cache``."""
    override = os.environ.get(CACHE_ENV)
    return Path(override) if override else project_root() / ".cache"


def data_root() -> Path:
    """The offline data folder: ``$DPO_TOX_DATA``; else ``<project root>/../shared/data`` if it exists; else
    the fetched copy ``<cache>/data`` if it exists; else ``<project root>/../shared/data`` (for the error)."""
    override = os.environ.get(DATA_ENV)
    if override:
        return Path(override)
    shared = project_root().parent / "shared" / "data"
    fetched = _cache_base() / FETCHED_DATA
    return fetched if not shared.is_dir() and fetched.is_dir() else shared


def data_file(relative: str) -> Path:
    """The path of one data file, which must exist.

    Raises :class:`MissingDataError` naming the file and how to point the book at another data folder.
    """
    path = data_root() / relative
    if not path.is_file():
        raise MissingDataError(
            f"Data file {relative!r} not found at {path}. The book reads its offline data from "
            f"'../shared/data' beside the project (see its README), else from the copy that "
            "`python -m dpo_toxicity.data_sources` downloads into the cache: run that to fetch it, or set "
            f"{DATA_ENV}=/path/to/data to use another copy."
        )
    return path


def cache_dir(*parts: str) -> Path:
    """A writable cache folder (created on demand): ``$DPO_TOX_CACHE`` or ``<project root>/.cache``."""
    folder = _cache_base().joinpath(*parts)
    folder.mkdir(parents=True, exist_ok=True)
    return folder


def artefact_dir(model_name: str, profile_name: str) -> Path:
    """Where one (model, profile) run keeps the artefacts that later chapters reload (probe, DPO model, ...)."""
    return cache_dir("artefacts", model_name.replace("/", "--"), profile_name)


@contextmanager
def written_atomically(path: Path):
    """Yield a temporary path beside ``path`` to write to; it becomes ``path`` only if the block completes.

    An interrupted or failed write leaves neither a half-written ``path`` nor the temporary file. The
    temporary name keeps the suffix (``probe.partial.npz``), for writers that choose the format by it.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(f"{path.stem}.partial{path.suffix}")
    try:
        yield partial
        partial.replace(path)
    finally:
        partial.unlink(missing_ok=True)
