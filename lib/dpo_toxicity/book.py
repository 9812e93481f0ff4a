"""Build the book: execute every chapter with papermill, then build the static site with Jupyter Book.

Chapters are jupytext percent-format ``.py`` files listed in ``_toc.yml``. Each is converted to a notebook,
given a hidden first cell that sets up Colab (:func:`colab_setup_cell`; a no-op here), executed by papermill
with the parameters ``profile`` and ``model`` (its ``parameters`` cell holds the defaults), and written to a staging folder ``_build/staging`` that mirrors the project's layout, beside
copies of ``_config.yml``, ``_toc.yml`` and the Markdown pages. Jupyter Book then builds ``_build/html`` from
the staged, executed notebooks with execution off and warnings as errors. A chapter runs with its staged
folder as working directory, so a file it writes there (a downloadable table) becomes part of the site.

Run from the project root::

    python -m dpo_toxicity.book --profile ci --model smollm2-135m
    python -m dpo_toxicity.book --profile ci --chapters book/01_probe   # one chapter, for local work

A chapter that fails stops the build with a non-zero exit; nothing is published from a half-run book.
Each executed chapter's wall time, split by section, goes to ``_build/timings/<profile>-<model>.json``
(:func:`record_timing`), which keeps the chapters of earlier partial runs: the record of a long ``full`` build.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
from datetime import datetime, timezone
from pathlib import Path

import jupytext
import nbformat
import papermill
import yaml

from .models import model_spec
from .paths import project_root, written_atomically
from .profiles import PROFILES
from .profiles import profile as run_profile
from .toc import toc_documents

BOOK_FILES = ("_config.yml", "_toc.yml", "references.bib")
MATHJAX = Path(".cache/mathjax/node_modules/mathjax/es5")  # `make mathjax` installs it with npm
SITE_FILES = "_extra"  # staged files Sphinx copies as they are to the site root (html_extra_path)
NOTEBOOKS = "notebooks"  # site folder of the executed chapters, which the Colab buttons open
TIMINGS = Path("_build/timings")  # one JSON per profile and model: each chapter's wall time, by section
BEFORE_ANY_HEADING = "(before the first heading)"


def source_of(root: Path, document: str) -> Path:
    """The source file of a toc document: ``.py`` (a chapter) or ``.md`` (a page)."""
    for suffix in (".py", ".md"):
        if (root / f"{document}{suffix}").is_file():
            return root / f"{document}{suffix}"
    raise FileNotFoundError(f"_toc.yml names {document!r} but neither {document}.py nor {document}.md exists.")


def repository_url(root: Path) -> str:
    """The book's repository, ``repository.url`` in ``_config.yml`` (the one place it is named)."""
    config = yaml.safe_load((root / "_config.yml").read_text(encoding="utf-8"))
    return config["repository"]["url"]


def colab_setup_cell(repository: str) -> nbformat.NotebookNode:
    """The hidden first cell of every executed chapter, which makes its published notebook run in Colab.

    A Colab button opens the executed notebook (``notebooks/<document>.ipynb``) in a runtime that has neither
    this package nor the data folder. Where ``dpo_toxicity`` cannot be imported, the cell pip-installs it from
    ``repository`` (keeping the runtime's torch), fetches the data with ``python -m dpo_toxicity.data_sources``
    and points ``DPO_TOX_DATA`` at it. Where the package is importable (the book build, a local clone), it
    does nothing. Tagged ``remove-cell``: absent from the site's pages, present in the ``.ipynb``.
    """
    source = f"""\
# Colab set-up. Where the book's package is not installed (a fresh Colab runtime), install it from the book's
# repository and fetch the data it reads (about 10 MB); where it is installed (the book build), do nothing.
# Colab's torch is a CUDA build matched to its GPU. The package's dependencies have loose bounds (torch>=2.4)
# and pip keeps whatever already satisfies them: no --upgrade, and the installed torch version is named as a
# requirement, so pip stops with an error rather than replace that torch with another multi-gigabyte wheel.
import importlib.util

if importlib.util.find_spec("dpo_toxicity") is None:
    import os, subprocess, sys
    from importlib.metadata import PackageNotFoundError, version

    try:
        keep_torch = [f"torch=={{version('torch')}}"]
    except PackageNotFoundError:  # not Colab: no torch yet, so pip installs one
        keep_torch = []
    package = "dpo-toxicity @ git+{repository}"
    subprocess.run([sys.executable, "-m", "pip", "install", "--quiet", package, *keep_torch], check=True)
    importlib.invalidate_caches()  # this kernel can now import what pip installed
    fetched = subprocess.run([sys.executable, "-m", "dpo_toxicity.data_sources"],
                             check=True, stdout=subprocess.PIPE, text=True)
    os.environ["DPO_TOX_DATA"] = fetched.stdout.splitlines()[-1]  # the folder it printed last
"""
    return nbformat.v4.new_code_cell(source, metadata={"tags": ["remove-cell"]})


def converted_chapter(source: Path, repository: str) -> nbformat.NotebookNode:
    """A percent-format chapter as a notebook, with :func:`colab_setup_cell` in front of its own cells."""
    notebook = jupytext.read(source, fmt="py:percent")
    notebook.cells.insert(0, colab_setup_cell(repository))
    return notebook


def hide_injected_parameters(path: Path) -> None:
    """Tag papermill's injected parameters cell ``remove-cell``: the page shows the chapter's own
    ``parameters`` cell, and the values a run used appear in its provenance table."""
    notebook = nbformat.read(path, as_version=4)
    for cell in notebook.cells:
        tags = cell.metadata.setdefault("tags", [])
        if "injected-parameters" in tags and "remove-cell" not in tags:
            tags.append("remove-cell")
    nbformat.write(notebook, path)


def execute_chapter(source: Path, target: Path, parameters: dict, repository: str) -> float:
    """Convert a percent-format chapter to a notebook (:func:`converted_chapter`) and execute it with
    papermill, which injects ``parameters`` after the chapter's ``parameters`` cell; returns seconds."""
    notebook = converted_chapter(source, repository)
    target.parent.mkdir(parents=True, exist_ok=True)
    unexecuted = target.with_suffix(".source.ipynb")
    executing = target.with_suffix(".running.ipynb")
    jupytext.write(notebook, unexecuted, fmt="ipynb")
    started = time.perf_counter()
    try:
        papermill.execute_notebook(
            str(unexecuted), str(executing), parameters=parameters, kernel_name="python3",
            cwd=str(target.parent), progress_bar=False, log_output=True,
        )
        hide_injected_parameters(executing)
        executing.replace(target)  # only a notebook that ran to the end is staged
    finally:
        unexecuted.unlink()
    return time.perf_counter() - started


def section_times(notebook: nbformat.NotebookNode) -> dict[str, float]:
    """Seconds each section of an executed chapter took: papermill's durations of its code cells, summed under
    the nearest Markdown heading above them, in the chapter's order. The sections are the stages a reader
    recognises (``Preference pairs``, ``DPO with trl``), so a run's record says where its time went."""
    times: dict[str, float] = {}
    section = BEFORE_ANY_HEADING
    for cell in notebook.cells:
        if cell.cell_type == "markdown":
            headings = [line.lstrip("#").strip() for line in cell.source.splitlines() if line.startswith("#")]
            section = headings[-1] if headings else section
        elif cell.cell_type == "code":
            duration = cell.metadata.get("papermill", {}).get("duration")
            if duration is not None:
                times[section] = times.get(section, 0.0) + duration
    return {name: round(seconds, 1) for name, seconds in times.items()}


def record_timing(root: Path, profile: str, model: str, document: str, seconds: float, notebook: Path) -> Path:
    """Write ``document``'s wall time and :func:`section_times` into ``_build/timings/<profile>-<model>.json``,
    keeping the records of chapters executed by earlier runs (a long ``full`` build is often run a few chapters
    at a time); returns the file. Each record carries the time it finished, so runs can be told apart."""
    path = root / TIMINGS / f"{profile}-{model}.json"
    chapters = json.loads(path.read_text(encoding="utf-8"))["chapters"] if path.is_file() else {}
    chapters[document] = {
        "seconds": round(seconds, 1),
        "finished": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "sections": section_times(nbformat.read(notebook, as_version=4)),
    }
    with written_atomically(path) as partial:
        partial.write_text(json.dumps({"profile": profile, "model": model, "chapters": chapters}, indent=1),
                           encoding="utf-8")
    return path


def installed_mathjax(root: Path) -> Path:
    """The npm-installed MathJax 3 the site serves (math renders offline); checked before any chapter runs."""
    folder = root / MATHJAX
    if not (folder / "tex-svg.js").is_file():
        raise SystemExit(f"MathJax is not installed at {folder}: run `make mathjax` (npm install mathjax@3).")
    return folder


def stage_site_files(staging: Path, mathjax: Path, documents: list[str]) -> None:
    """Stage what the site serves as plain files: MathJax at ``mathjax/`` and each executed chapter at
    ``notebooks/<document>.ipynb``, the path the Colab buttons open (CI pushes that folder to a branch)."""
    extra = staging / SITE_FILES
    shutil.rmtree(extra, ignore_errors=True)
    shutil.copytree(mathjax, extra / "mathjax")
    for document in documents:
        notebook = staging / f"{document}.ipynb"
        if notebook.is_file():
            (extra / NOTEBOOKS / document).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(notebook, extra / NOTEBOOKS / f"{document}.ipynb")


def build(profile: str, model: str, chapters: list[str] | None = None) -> Path:
    """Execute the chapters (all of ``_toc.yml``, or ``chapters``) and build ``_build/html``; returns its path."""
    run_profile(profile)  # fail on an unknown profile or model before any work
    model_spec(model)
    root = project_root()
    mathjax = installed_mathjax(root)
    repository = repository_url(root)
    staging = root / "_build" / "staging"
    if chapters is None and staging.exists():
        shutil.rmtree(staging)  # a full build never mixes in notebooks from an earlier run
    staging.mkdir(parents=True, exist_ok=True)
    for name in BOOK_FILES:
        shutil.copy2(root / name, staging / name)
    # papermill's kernel is `python3`; make it this interpreter's, whatever PATH the caller had.
    os.environ["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}"
    wanted = set(chapters) if chapters else None
    timings = {}
    for document in toc_documents(root):
        source = source_of(root, document)
        if source.suffix == ".md":
            (staging / document).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, staging / f"{document}.md")
        elif wanted is None or document in wanted:
            print(f"executing {document} (profile {profile}, model {model})", flush=True)
            timings[document] = execute_chapter(source, staging / f"{document}.ipynb",
                                                {"profile": profile, "model": model}, repository)
            record = record_timing(root, profile, model, document, timings[document],
                                   staging / f"{document}.ipynb")
            print(f"  {document}: {timings[document] / 60:.1f} min (by section in {record})", flush=True)
        elif not (staging / f"{document}.ipynb").is_file():
            raise SystemExit(f"{document} has no executed notebook from an earlier run; include it in --chapters.")
    stage_site_files(staging, mathjax, toc_documents(root))
    subprocess.run(
        [str(Path(sys.executable).parent / "jupyter-book"), "build", str(staging), "--path-output", str(root),
         "--warningiserror", "--nitpick", "--keep-going"],
        check=True,
    )
    for document, seconds in timings.items():
        print(f"{document}: {seconds / 60:.1f} min")
    return root / "_build" / "html"


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--profile", default="ci", help=f"run profile ({', '.join(PROFILES)})")
    parser.add_argument("--model", default="smollm2-135m", help="model name (see dpo_toxicity.models.MODELS)")
    parser.add_argument(
        "--chapters", nargs="*",
        help="execute only these toc documents (e.g. book/01_probe), reusing earlier runs of the others",
    )
    arguments = parser.parse_args(argv)
    site = build(arguments.profile, arguments.model, arguments.chapters)
    print(f"site: {site}")


if __name__ == "__main__":
    main()
