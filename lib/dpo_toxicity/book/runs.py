"""Executed runs of the book: a folder of executed chapters and a manifest of what computed them.

A *run* is the book's computing chapters executed once, at one commit, with one profile and one model:
``<run>/book/01_probe.ipynb`` ... and ``<run>/manifest.json``. The manifest names the commit, the machine, each
chapter's wall time and, per chapter, a *fingerprint*: a hash of each thing that computed it (the chapter's
code cells, every module of ``lib/dpo_toxicity`` and its subpackages, the profile's sizes, the pinned
requirements and the data manifest). The site is built from a run without executing anything
(``dpo_toxicity.book.build``), so the paper-size ``full`` run, hours long, is executed once into the committed
bundle ``results/full`` and every later build shows it; comparing a chapter's recorded fingerprint with the
current one (:func:`changed_parts`) tells which pages show numbers that today's code would no longer compute,
and what changed.

Fingerprints hash what a file *computes*, not how it is written: Python sources are hashed as their syntax
tree without docstrings and comments, and a chapter by its code cells only, so reworded prose does not make a
run stale (its Markdown is re-rendered from the current chapter, see :func:`merged_chapter`).

Example::

    run = read_run(Path("results/full"))
    run.chapters["book/04_ablation"].seconds             # its wall time
    changed_parts(run.chapters["book/04_ablation"].fingerprint, fingerprint(root, "book/04_ablation", "full"))
"""

from __future__ import annotations

import hashlib
import json
import shutil
import subprocess
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from pathlib import Path

import jupytext
import nbformat

from ..paths import data_root, written_atomically
from ..profiles import profile_named
from ..result_cache import code_hash
from .toc import toc_documents

MANIFEST = "manifest.json"
RESULTS = Path("results")  # committed bundles, one folder per profile: results/full
RUNS = Path("_build/runs")  # runs being executed, one folder per profile and model
# Pages that compute nothing: executed at site build, they read the run's executed chapters.
READING_PAGES = ("intro", "book/claims")
REQUIREMENTS = ("requirements.txt", "requirements-weights.txt")
PACKAGE = Path("lib/dpo_toxicity")
# Cell metadata that say how a page presents a cell, not what it computed: the current chapter's win over a run's.
PRESENTATION = ("tags", "mystnb")  # mystnb: a figure's caption and name (myst-nb's cell-level configuration)


class RunError(RuntimeError):
    """A run folder cannot be built from or published: a chapter is missing, or its chapters disagree."""


def computing_documents(root: Path) -> list[str]:
    """The toc's chapters that compute results (Python sources), in the toc's order; reading pages excluded."""
    return [
        document
        for document in toc_documents(root)
        if document not in READING_PAGES and (root / f"{document}.py").is_file()
    ]


# ---------------------------------------------------------------------------------------------------------
# Fingerprints.


def chapter_code(path: Path) -> list[str]:
    """The sources of a percent-format chapter's code cells, in order."""
    return [cell.source for cell in jupytext.read(path, fmt="py:percent").cells if cell.cell_type == "code"]


def package_modules(root: Path) -> list[Path]:
    """Every Python module of the package under ``root``, in its subpackages too, sorted; ``__pycache__`` left out."""
    return sorted(path for path in (root / PACKAGE).rglob("*.py") if "__pycache__" not in path.parts)


def fingerprint(root: Path, document: str, profile: str) -> dict[str, str]:
    """What computed ``document`` under ``profile``, part by part: ``{part: short hash}``.

    Parts: ``document`` (the chapter's code cells), each module of the package, its subpackages' included
    (``lib/dpo_toxicity/<module>.py``, ``lib/dpo_toxicity/book/<module>.py``), ``profile <name>`` (its sizes),
    each requirements file and ``data MANIFEST.tsv``. Files outside these (the README, the tests, bytecode) are
    not part of it.
    """
    parts = {document: code_hash("\n# %% cell\n".join(chapter_code(root / f"{document}.py")))}
    for module in package_modules(root):
        parts[module.relative_to(root).as_posix()] = code_hash(module.read_text(encoding="utf-8"))
    sizes = json.dumps(profile_named(profile).sizes(), sort_keys=True)
    parts[f"profile {profile}"] = hashlib.sha256(sizes.encode()).hexdigest()[:16]
    for name in REQUIREMENTS:
        parts[name] = hashlib.sha256((root / name).read_bytes()).hexdigest()[:16]
    manifest = data_root() / "MANIFEST.tsv"
    parts["data MANIFEST.tsv"] = (
        hashlib.sha256(manifest.read_bytes()).hexdigest()[:16] if manifest.is_file() else "absent"
    )
    return parts


def changed_parts(recorded: dict[str, str], current: dict[str, str]) -> list[str]:
    """The parts whose hash differs between two fingerprints, or that only one of them has, sorted."""
    return sorted(part for part in recorded.keys() | current.keys() if recorded.get(part) != current.get(part))


# ---------------------------------------------------------------------------------------------------------
# The manifest.


@dataclass
class ChapterRecord:
    """One executed chapter of a run: its wall time, when it finished, at which commit, and its fingerprint."""

    seconds: float
    finished: str
    commit: str
    fingerprint: dict[str, str]
    sections: dict[str, float] = field(default_factory=dict)


@dataclass
class Run:
    """A run folder read back: where it is, its profile and model, the machine, and its chapters' records."""

    folder: Path
    profile: str
    model: str
    machine: str
    chapters: dict[str, ChapterRecord]

    @property
    def commit(self) -> str:
        """The commit every chapter ran at; raises :class:`RunError` when they ran at different ones."""
        commits = {record.commit for record in self.chapters.values()}
        if len(commits) != 1:
            raise RunError(
                f"{self.folder}'s chapters ran at {len(commits)} commits ({', '.join(sorted(commits))}): "
                "a run must come from one commit; execute it again from one."
            )
        return commits.pop()

    @property
    def date(self) -> str:
        """The day its last chapter finished (UTC)."""
        return max(record.finished for record in self.chapters.values())[:10]

    @property
    def hours(self) -> float:
        return sum(record.seconds for record in self.chapters.values()) / 3600

    def __repr__(self) -> str:
        commits = sorted({record.commit[:10] for record in self.chapters.values()})
        return (
            f"Run({self.profile} on {self.model} at {', '.join(commits)}: {len(self.chapters)} chapters, "
            f"{self.hours:.1f} h, in {self.folder})"
        )

    def notebook(self, document: str) -> Path:
        return self.folder / f"{document}.ipynb"

    def stale(self, root: Path, document: str) -> list[str]:
        """What changed since ``document`` ran (:func:`changed_parts`); empty when the page is current."""
        return changed_parts(self.chapters[document].fingerprint, fingerprint(root, document, self.profile))

    def check_complete(self, root: Path) -> None:
        """Raise :class:`RunError` naming the first computing chapter of the toc this run lacks."""
        for document in computing_documents(root):
            if document not in self.chapters or not self.notebook(document).is_file():
                raise RunError(
                    f"{self.folder} has no executed {document}: run it (python -m dpo_toxicity.book "
                    f"--profile {self.profile} --chapters {document}, or `make results` for the bundle)."
                )


def read_run(folder: Path) -> Run:
    """The run in ``folder``; raises :class:`RunError` when it has no manifest."""
    path = Path(folder) / MANIFEST
    if not path.is_file():
        raise RunError(f"{folder} holds no run: {MANIFEST} is missing (build one with python -m dpo_toxicity.book).")
    manifest = json.loads(path.read_text(encoding="utf-8"))
    chapters = {document: ChapterRecord(**record) for document, record in manifest["chapters"].items()}
    return Run(Path(folder), manifest["profile"], manifest["model"], manifest["machine"], chapters)


def record_chapter(folder: Path, profile: str, model: str, machine: str, document: str, record: ChapterRecord) -> None:
    """Add ``document``'s record to the manifest of ``folder``, keeping the others; written atomically.
    Records of another profile or model are dropped: a folder holds one run."""
    path = Path(folder) / MANIFEST
    manifest = json.loads(path.read_text(encoding="utf-8")) if path.is_file() else {}
    if (manifest.get("profile"), manifest.get("model")) != (profile, model):
        manifest = {"chapters": {}}
    manifest.update(profile=profile, model=model, machine=machine)
    manifest["chapters"][document] = asdict(record)
    with written_atomically(path) as partial:
        partial.write_text(json.dumps(manifest, indent=1), encoding="utf-8")


def finished_now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


# ---------------------------------------------------------------------------------------------------------
# Commits and publishing.


def head_commit(root: Path) -> str:
    """The full sha of HEAD."""
    return subprocess.run(
        ["git", "rev-parse", "HEAD"], cwd=root, capture_output=True, text=True, check=True
    ).stdout.strip()


def uncommitted_changes(root: Path) -> list[str]:
    """Changed or untracked files among those a fingerprint covers (chapters, the package, the toc and the
    requirements): a run of the bundle must be reproducible from its commit alone."""
    paths = ["book", str(PACKAGE), "_toc.yml", *REQUIREMENTS]
    status = subprocess.run(
        ["git", "status", "--porcelain", "--", *paths], cwd=root, capture_output=True, text=True, check=True
    ).stdout
    return [line[3:] for line in status.splitlines()]


def written_files(folder: Path) -> list[Path]:
    """Files the chapters of the run in ``folder`` wrote beside their notebooks (a downloadable table)."""
    return sorted(
        path for path in Path(folder).rglob("*") if path.is_file() and path.suffix != ".ipynb" and path.name != MANIFEST
    )


def publish(run: Run, root: Path, target: Path) -> Path:
    """Copy a complete run of one commit into ``target`` (the committed bundle), replacing what was there.

    Raises :class:`RunError` for an incomplete run or one of several commits; the copy is made beside
    ``target`` and renamed into place, so an interruption leaves the old bundle or the new one, never a mix.
    """
    run.check_complete(root)
    _ = run.commit
    target = Path(target)
    partial = target.with_name(f".{target.name}.partial")
    shutil.rmtree(partial, ignore_errors=True)
    for document in computing_documents(root):
        (partial / document).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(run.notebook(document), partial / f"{document}.ipynb")
    for extra in written_files(run.folder):
        (partial / extra.relative_to(run.folder)).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(extra, partial / extra.relative_to(run.folder))
    manifest = json.loads((run.folder / MANIFEST).read_text(encoding="utf-8"))
    manifest["chapters"] = {document: manifest["chapters"][document] for document in computing_documents(root)}
    (partial / MANIFEST).write_text(json.dumps(manifest, indent=1), encoding="utf-8")
    previous = target.with_name(f".{target.name}.previous")
    shutil.rmtree(previous, ignore_errors=True)
    if target.exists():
        target.rename(previous)
    partial.rename(target)
    shutil.rmtree(previous, ignore_errors=True)
    return target


# ---------------------------------------------------------------------------------------------------------
# Pages built from a run.


def merged_chapter(current: nbformat.NotebookNode, executed: nbformat.NotebookNode) -> nbformat.NotebookNode | None:
    """The current chapter's cells with the executed run's outputs, where their code cells are the same.

    ``current`` is the chapter as converted now, ``executed`` the run's notebook of it. Where both have the same
    code cells (by :func:`code_hash`; the ``parameters`` cell is taken from the run, whose values it holds), the
    result is ``current`` with each code cell's outputs, execution count and metadata from the run, but for the
    metadata that present a cell (:data:`PRESENTATION`: its tags, a figure's caption and name): prose, tags and
    captions edited since the run are shown, its numbers kept. Returns ``None`` where the code differs (the run's
    own notebook must then be shown as it is).
    """
    ours = [cell for cell in current.cells if cell.cell_type == "code"]
    theirs = [cell for cell in executed.cells if cell.cell_type == "code"]
    if len(ours) != len(theirs):
        return None
    for mine, run in zip(ours, theirs):
        parameters = "parameters" in mine.metadata.get("tags", [])
        if not parameters and code_hash(mine.source) != code_hash(run.source):
            return None
    merged = nbformat.from_dict(json.loads(json.dumps(current)))
    merged.metadata = executed.metadata
    code = iter(theirs)
    for cell in merged.cells:
        if cell.cell_type != "code":
            continue
        run = next(code)
        presentation = {key: cell.metadata[key] for key in PRESENTATION if key in cell.metadata}
        cell.outputs, cell.execution_count = run.outputs, run.execution_count
        cell.metadata = {
            **{key: value for key, value in run.metadata.items() if key not in PRESENTATION},
            **presentation,
        }
        if "parameters" in presentation.get("tags", []):
            cell.source = run.source
    return merged


def run_note(run: Run, document: str | None, repository: str, stale: list[str]) -> nbformat.NotebookNode:
    """The Markdown cell under a page's title that says which run it shows, and a warning where the code that
    computed it has changed since. For a chapter (``document``), ``stale`` holds the parts that changed
    (:meth:`Run.stale`); for a reading page (``document=None``), the chapters whose code changed."""
    commit = run.commit
    link = f"[`{commit[:10]}`]({repository.removesuffix('.git')}/commit/{commit})"
    if document is None:
        text = (
            f"*Read from the `{run.profile}` run of the book on `{run.model}` at commit {link}, finished "
            f"{run.date}: {run.hours:.1f} h of computation on {run.machine}.*"
        )
        changed = "the code of chapters this page reads has changed since that run"
    else:
        record = run.chapters[document]
        text = (
            f"*This page shows the `{run.profile}` run on `{run.model}` at commit {link}, executed "
            f"{record.finished[:10]} in {record.seconds / 60:.1f} min on {run.machine}.*"
        )
        changed = "the code that computed this page has changed since that run"
    if stale:
        named = ", ".join(f"`{part}`" for part in stale)
        text += (
            f"\n\n```{{warning}}\nStale: {changed} ({named}). The numbers shown are that commit's, not what "
            "the current code would compute; execute the run again to bring them up to date.\n```"
        )
    return nbformat.v4.new_markdown_cell(text, metadata={"tags": ["run-note"]})


def with_note(notebook: nbformat.NotebookNode, note: nbformat.NotebookNode) -> nbformat.NotebookNode:
    """``notebook`` with ``note`` inserted after its first Markdown cell that holds a level-1 title."""
    for index, cell in enumerate(notebook.cells):
        if cell.cell_type == "markdown" and any(line.startswith("# ") for line in cell.source.splitlines()):
            notebook.cells.insert(index + 1, note)
            return notebook
    raise RunError("a page of the book has no level-1 title to put its run note under.")
