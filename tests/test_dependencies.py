"""What the package and the chapters import is installed by the package's own dependencies.

A published chapter opened in Colab gets only what its set-up cell installs: this package with the dependencies
``pyproject.toml`` declares, beside the runtime's own torch and Jupyter kernel. A module imported by the package or
a chapter but declared nowhere works in this project's pinned environment and fails there.
"""

import ast
import importlib.metadata
import re
import sys
import tomllib

from dpo_toxicity.paths import project_root

# A Colab runtime brings these (its kernel and its CUDA torch); everything else must be declared.
RUNTIME = {"ipython", "ipykernel", "torch"}


def declared() -> set[str]:
    project = tomllib.loads((project_root() / "pyproject.toml").read_text(encoding="utf-8"))["project"]
    names = project["dependencies"] + [
        dep for extra in project.get("optional-dependencies", {}).values() for dep in extra
    ]
    return {normalised(re.split(r"[<>=!~\[; ]", dep, maxsplit=1)[0]) for dep in names}


def normalised(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def imported_modules() -> dict[str, set[str]]:
    root = project_root()
    sources = [
        *sorted((root / "lib" / "dpo_toxicity").rglob("*.py")),
        *sorted((root / "book").glob("*.py")),
        root / "intro.py",
    ]
    modules: dict[str, set[str]] = {}
    for source in sources:
        for node in ast.walk(ast.parse(source.read_text(encoding="utf-8"))):
            names = (
                [alias.name for alias in node.names]
                if isinstance(node, ast.Import)
                else [node.module]
                if isinstance(node, ast.ImportFrom) and node.level == 0
                else []
            )
            for name in names:
                top = name.split(".")[0]
                if top not in sys.stdlib_module_names and top != "dpo_toxicity":
                    modules.setdefault(top, set()).add(source.relative_to(root).as_posix())
    return modules


def test_every_imported_module_comes_from_a_declared_dependency():
    distributions = importlib.metadata.packages_distributions()
    allowed = declared() | RUNTIME
    undeclared = {
        module: sorted(where)
        for module, where in imported_modules().items()
        if not {normalised(d) for d in distributions.get(module, [module])} & allowed
    }
    assert not undeclared, f"declare these in pyproject.toml's dependencies (imported by): {undeclared}"
