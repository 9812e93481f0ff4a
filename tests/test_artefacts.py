"""The names of saved files are defined once, in ``dpo_toxicity.artefacts``, each with its meaning beside it."""

import ast
import re
from pathlib import Path

import dpo_toxicity
from dpo_toxicity import artefacts

PACKAGE = Path(dpo_toxicity.__file__).parent
FILE_NAME = re.compile(r"^[A-Z_]+_FILE$")


def module_level_names(path: Path) -> set[str]:
    """Names a module assigns at its top level."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    return {
        target.id
        for node in tree.body
        if isinstance(node, ast.Assign)
        for target in node.targets
        if isinstance(target, ast.Name)
    }


def test_no_other_module_defines_a_file_name():
    defined = {
        str(path.relative_to(PACKAGE)): sorted(filter(FILE_NAME.match, module_level_names(path)))
        for path in PACKAGE.rglob("*.py")
        if path.name != "artefacts.py" and "__pycache__" not in path.parts
    }
    assert {module: names for module, names in defined.items() if names} == {}


def test_every_file_name_is_distinct_and_says_what_it_holds():
    names = {name: getattr(artefacts, name) for name in vars(artefacts) if FILE_NAME.match(name)}
    assert len(names) >= 8 and len(set(names.values())) == len(names)
    source = Path(artefacts.__file__).read_text(encoding="utf-8")
    for name, value in names.items():
        line = re.search(rf'^{name} = "{re.escape(value)}"  # (.+)$', source, re.MULTILINE)
        assert line and len(line.group(1).split()) >= 4, f"{name} has no one-line meaning beside it"
