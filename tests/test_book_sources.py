"""The repository's sources name no path outside it, and the book's equations are numbered and cited.

**No path outside the repository.** The book cites itself and public sources: a note kept beside a checkout is no
source a reader can open. The one outside folder the project may name is the offline data folder beside the
checkout (:data:`DATA_FOLDER`, see :func:`dpo_toxicity.paths.data_root`), and only in the files that find it,
fetch it, lay it out or tell a newcomer about it (:data:`DATA_LOCATION_FILES`). Every other outside path is
refused in every file, those included.

**Equations.** Every chapter defines at least one numbered equation (a ``{math}`` block with a ``:label:``), no
label is defined twice in the book, and every ``{eq}`` reference names a defined label (a missing one is a
warning, which fails the site build, but only after every chapter has run).

**Figures.** The cell that draws a figure presents it: its one statement is the call to a figure function of
``plots`` or ``attribution_plots`` (so the figure is its only output), and its metadata carry the caption and the
name (``mystnb.figure``, which myst-nb renders as a numbered figure); no figure is glued to be shown elsewhere.
Names are unique in the book and every ``{numref}`` names one.
"""

import ast
import os
import re
import subprocess
from pathlib import Path

import jupytext
import pytest

from dpo_toxicity.book import build
from dpo_toxicity.paths import project_root

# Spelled in parts, so that this file does not itself name what it refuses.
SHARED = "../" + "shared"
DATA_FOLDER = SHARED + "/data"
OUTSIDE = re.compile("|".join(map(re.escape, (SHARED, "shared/" + "notes", "paper-" + "protocol"))))
DATA_LOCATION_FILES = frozenset(
    {
        "lib/dpo_toxicity/paths.py",  # where the book looks for its data
        "lib/dpo_toxicity/data_sources.py",  # what it fetches where that folder is absent
        "tests/test_data_sources.py",  # the tests of both
        ".github/workflows/book.yml",  # CI lays the folder out
        "Makefile",  # `make data`
        "README.md",  # a newcomer's prerequisites
    }
)
# Sources and documentation; data records (.json, executed notebooks) are outputs, not sources.
SOURCE_SUFFIXES = frozenset({".py", ".md", ".yml", ".yaml", ".toml", ".cff", ".txt", ".cfg", ".bib", ".sh", ""})
NOT_IN_THE_REPOSITORY = frozenset({".git", ".venv", ".cache", "_build", "__pycache__", ".pytest_cache"})

FIGURE_CALL = re.compile(r"\b(?:attribution_plots|plots)\.\w+\(")
NUMREF = re.compile(r"\{numref\}`(?:[^`<]*<)?([^`>]+)>?`")
MATH_LABEL = re.compile(r"^```\{math\}\n(?::[\w-]+:.*\n)*?:label:\s*(\S+)", re.MULTILINE)
EQ_REFERENCE = re.compile(r"\{eq\}`([^`<]+?)`|\{eq\}`[^`<]*<([^>]+)>`")


def repository_files(root: Path) -> list[str]:
    """What a commit would hold: tracked files and untracked ones git does not ignore (a new file counts before
    its first commit); without git, every file outside the folders git ignores here."""
    try:
        listed = subprocess.run(
            ["git", "ls-files", "--cached", "--others", "--exclude-standard", "-z"],
            cwd=root,
            capture_output=True,
            text=True,
            check=True,
        ).stdout.split("\0")
        return sorted(name for name in listed if name and (root / name).is_file())
    except (OSError, subprocess.CalledProcessError):
        found = []
        for folder, subfolders, files in os.walk(root):
            subfolders[:] = [
                name for name in subfolders if name not in NOT_IN_THE_REPOSITORY and not name.endswith(".egg-info")
            ]
            found += [(Path(folder) / name).relative_to(root).as_posix() for name in files]
        return sorted(found)


def outside_paths(name: str, text: str) -> list[str]:
    """``line: path`` for each mention of a path outside the repository that file ``name`` may not make."""
    found = []
    for number, line in enumerate(text.splitlines(), start=1):
        for match in OUTSIDE.finditer(line):
            if name in DATA_LOCATION_FILES and line.startswith(DATA_FOLDER, match.start()):
                rest = line[match.start() + len(DATA_FOLDER) :]
                if not rest[:1] or not (rest[:1].isalnum() or rest[:1] in "_-"):  # the folder itself, not a sibling
                    continue
            found.append(f"{number}: {line.strip()[:120]}")
    return found


def test_no_source_names_a_path_outside_the_repository():
    root = project_root()
    offending = {}
    for name in repository_files(root):
        if Path(name).suffix not in SOURCE_SUFFIXES:
            continue
        try:
            text = (root / name).read_text(encoding="utf-8")
        except UnicodeDecodeError:
            continue
        if found := outside_paths(name, text):
            offending[name] = found
    assert not offending, (
        "These files name a path outside the repository; point to the book (the protocol "
        f"appendix, a chapter) or a public source instead: {offending}"
    )


def test_the_check_reads_the_data_folder_only_where_it_belongs():
    note = f"see {SHARED}/notes/paper-{'protocol'}.md section 7"
    assert outside_paths("book/04_ablation.py", note) and outside_paths("lib/dpo_toxicity/paths.py", note)
    assert outside_paths("book/04_ablation.py", f"read from {DATA_FOLDER}/rtp")
    assert not outside_paths("lib/dpo_toxicity/paths.py", f"read from {DATA_FOLDER}/rtp, or ``{DATA_FOLDER}``")
    assert outside_paths("README.md", f"the notes in {SHARED}/notes")
    assert outside_paths("README.md", f"{DATA_FOLDER}base")
    assert outside_paths("Makefile", f"{SHARED}_data")


def markdown_of(source: Path) -> str:
    """A chapter's markdown cells (jupytext percent format), or a page's text."""
    if source.suffix == ".md":
        return source.read_text(encoding="utf-8")
    return "\n\n".join(
        cell.source for cell in jupytext.read(source, fmt="py:percent").cells if cell.cell_type == "markdown"
    )


def book_markdown() -> dict[str, str]:
    root = project_root()
    return {document: markdown_of(build.source_of(root, document)) for document in build.toc_documents(root)}


def chapters() -> list[str]:
    root = project_root()
    return [document for document in build.toc_documents(root)[1:] if build.source_of(root, document).suffix == ".py"]


@pytest.mark.parametrize("chapter", chapters())
def test_every_chapter_defines_a_numbered_equation(chapter):
    assert MATH_LABEL.findall(book_markdown()[chapter]), f"{chapter} has no {{math}} block with a :label:"


def test_equation_labels_are_unique_and_every_reference_names_one():
    labels, references = [], set()
    for text in book_markdown().values():
        labels += MATH_LABEL.findall(text)
        references |= {plain or named for plain, named in EQ_REFERENCE.findall(text)}
    assert len(labels) == len(set(labels)), sorted(label for label in set(labels) if labels.count(label) > 1)
    assert references <= set(labels), sorted(references - set(labels))


def test_the_label_pattern_reads_a_math_block():
    text = "Text\n\n```{math}\n:label: eq-one\nx = 1\n```\n\nand {eq}`eq-one`, {eq}`the sum <eq-two>`."
    assert MATH_LABEL.findall(text) == ["eq-one"]
    assert {plain or named for plain, named in EQ_REFERENCE.findall(text)} == {"eq-one", "eq-two"}


def code_cells(chapter: str) -> list:
    return [
        cell
        for cell in jupytext.read(project_root() / f"{chapter}.py", fmt="py:percent").cells
        if cell.cell_type == "code"
    ]


@pytest.mark.parametrize("chapter", chapters())
def test_the_cell_that_draws_a_figure_captions_and_names_it(chapter):
    for cell in code_cells(chapter):
        figure = cell.metadata.get("mystnb", {}).get("figure")
        if not FIGURE_CALL.search(cell.source) and figure is None:
            continue
        statements = ast.parse(cell.source).body
        assert len(statements) == 1 and isinstance(statements[0], ast.Expr), f"not one figure call: {cell.source}"
        assert FIGURE_CALL.match(cell.source), f"captioned, but draws no figure: {cell.source}"
        assert figure and figure.get("caption") and re.fullmatch(r"fig-[a-z0-9-]+", figure.get("name", "")), (
            f"{cell.source} has no caption and name in its metadata (mystnb.figure)"
        )
    markdown = book_markdown()[chapter]
    assert "{glue:figure}" not in markdown and 'glued("fig_' not in "".join(c.source for c in code_cells(chapter))


def test_figure_names_are_unique_and_every_numref_names_one():
    names = [
        cell.metadata["mystnb"]["figure"]["name"]
        for chapter in chapters()
        for cell in code_cells(chapter)
        if "mystnb" in cell.metadata
    ]
    assert names and len(names) == len(set(names)), names
    references = {name for text in book_markdown().values() for name in NUMREF.findall(text)}
    assert references <= set(names), sorted(references - set(names))


@pytest.mark.parametrize(
    "page",
    [
        "book/01_probe.py",
        "book/02_dpo.py",
        "book/03_attribution.py",
        "book/04_ablation.py",
        "book/05_patching.py",
        "book/claims.py",
        "intro.py",
    ],
)
def test_pages_judge_no_claim_themselves(page):
    # A page shows the ledger's verdict (ledger.chapter_verdict, ledger_table); it imports no rule of its own.
    tree = ast.parse((project_root() / page).read_text(encoding="utf-8"))
    imported = [
        alias.name
        for node in ast.walk(tree)
        if isinstance(node, ast.ImportFrom) and node.module == "dpo_toxicity.verdicts"
        for alias in node.names
    ]
    assert all(name.isupper() for name in imported), f"{page} imports verdict rules {imported}"
