"""The package's two layers: the science at the top of ``dpo_toxicity``, the book's machinery in
``dpo_toxicity.book``, with imports one way only (the book imports the science, never the reverse)."""

import ast
import subprocess
import sys
from pathlib import Path

import dpo_toxicity

PACKAGE = Path(dpo_toxicity.__file__).parent
# The notebook tool chain is the book's: a science module that needs it belongs in dpo_toxicity.book.
NOTEBOOK_TOOLS = frozenset({"jupytext", "myst_nb", "nbformat", "papermill"})


def imported_modules(path: Path) -> set[str]:
    """Absolute names of every module ``path`` imports, anywhere in it (a function's lazy import included);
    relative imports resolved against the top-level package, as ``path`` is one of its top-level modules."""
    names = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                base = ".".join(filter(None, ("dpo_toxicity", base)))
            names.add(base)
            names.update(f"{base}.{alias.name}" for alias in node.names)  # `from . import book`
    return names


def test_no_science_module_imports_the_book_or_the_notebook_tools():
    science = sorted(PACKAGE.glob("*.py"))
    assert len(science) > 20
    offending = {
        path.name: sorted(
            name
            for name in imported_modules(path)
            if name == "dpo_toxicity.book"
            or name.startswith("dpo_toxicity.book.")
            or name.split(".")[0] in NOTEBOOK_TOOLS
        )
        for path in science
    }
    assert {name: found for name, found in offending.items() if found} == {}


def test_the_book_subpackage_holds_the_machinery_and_nothing_of_it_is_left_at_the_top():
    machinery = {"build", "runs", "toc", "provenance", "glued", "ledger"}
    assert machinery <= {path.stem for path in (PACKAGE / "book").glob("*.py")}
    assert not machinery & {path.stem for path in PACKAGE.glob("*.py")}


def test_the_table_of_contents_loads_without_torch_or_jupyter():
    """The site checker reads the toc in a process that must not pay for torch (``scripts/check_site.py``)."""
    code = (
        "import sys; from dpo_toxicity.book.toc import toc_documents; "
        "heavy = sorted({'torch', 'nbformat', 'jupytext', 'papermill'} & set(sys.modules)); print(heavy)"
    )
    loaded = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert loaded.strip() == "[]"
