"""Provenance of a chapter run: what produced its numbers.

A chapter starts a :class:`RunRecord` in its first cell and shows it in its last one. The record names the
git commit, the model, a hash of its weights and the dtype it computes in (and why), the data files (sha256
prefixes), the profile and its sizes, the hardware, the wall time, the peak resident memory of the kernel and
the versions of the packages that compute the results. Nothing in it is typed by hand.
"""

from __future__ import annotations

import importlib.metadata
import os
import platform
import resource
import subprocess
import time
from dataclasses import dataclass, field

import pandas as pd
import torch

from ..models import LoadedModel, file_sha256, model_dtype
from ..paths import data_root, project_root
from ..profiles import Profile

PACKAGES = ("torch", "transformers", "nnsight", "trl", "scikit-learn", "numpy", "gguf")


def git_commit() -> str:
    """The project's HEAD commit (short), with ``+dirty`` when the work tree has uncommitted changes."""
    try:
        commit = subprocess.run(
            ["git", "rev-parse", "--short=12", "HEAD"], cwd=project_root(), capture_output=True, text=True, check=True
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"], cwd=project_root(), capture_output=True, text=True
        ).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown (not a git checkout)"
    return commit + ("+dirty" if dirty else "")


def data_file_hashes(relative_paths: list[str]) -> dict[str, str]:
    """sha256 prefixes (16 hex digits) of data files, as ``MANIFEST.tsv`` lists them."""
    return {path: file_sha256(data_root() / path)[:16] for path in relative_paths}


def hardware() -> str:
    """CPU model and core count, and the GPU when there is one."""
    cpu = f"{platform.machine()} {platform.processor() or ''}".strip()
    text = f"{cpu}, {os.cpu_count()} cores, torch threads {torch.get_num_threads()}"
    if torch.cuda.is_available():
        text += f", GPU {torch.cuda.get_device_name(0)}"
    return text


def peak_memory_gib() -> float:
    """Peak resident memory of this process so far, in GiB (Linux reports ``ru_maxrss`` in KiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20


@dataclass
class RunRecord:
    """Provenance of one chapter run; :meth:`table` renders it, :attr:`wall_minutes` feeds a glue."""

    chapter: str
    profile: Profile
    lm: LoadedModel
    data_files: list[str]
    other_models: tuple[LoadedModel, ...] = ()  # a chapter that runs more than one model lists the others
    started: float = field(default_factory=time.perf_counter)

    @property
    def wall_minutes(self) -> float:
        return (time.perf_counter() - self.started) / 60

    def table(self) -> pd.DataFrame:
        """One row per fact: commit, model, weights, data, profile sizes, hardware, time, memory, versions."""
        rows = [
            ("chapter", self.chapter),
            ("git commit", git_commit()),
            ("model", f"{self.lm.name}: {self.lm.spec.description}"),
            ("weights hash", self.lm.weights_hash),
            ("dtype", model_dtype(self.lm.spec, self.lm.device)[1]),
        ]
        for other in self.other_models:
            rows += [
                (f"model {other.name}", other.spec.description),
                (f"weights hash {other.name}", other.weights_hash),
                (f"dtype {other.name}", model_dtype(other.spec, other.device)[1]),
            ]
        rows += [
            ("profile", self.profile.name),
            ("profile sizes", ", ".join(f"{k}={v}" for k, v in self.profile.sizes().items() if k != "name")),
        ]
        rows += [(f"data {path}", digest) for path, digest in data_file_hashes(self.data_files).items()]
        rows += [
            ("hardware", hardware()),
            ("wall time", f"{self.wall_minutes:.1f} min"),
            ("peak memory", f"{peak_memory_gib():.2f} GiB"),
            ("packages", ", ".join(f"{name} {importlib.metadata.version(name)}" for name in PACKAGES)),
        ]
        return pd.DataFrame(rows, columns=["what", "value"]).set_index("what")
