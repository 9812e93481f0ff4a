"""Play a Colab reader: edit a published notebook's parameters cell, run it where only its set-up cell installs.

The site serves every executed chapter at ``notebooks/<document>.ipynb``, the file a Colab button opens. This
script takes one as the built site serves it, edits its ``parameters`` cell as a reader would (another model,
fewer null directions), and executes it top to bottom in a fresh virtual environment that holds only what a
Colab runtime brings (torch and a Jupyter kernel): the notebook's own set-up cell installs the package (from
this checkout, through ``$DPO_TOX_INSTALL``, in place of the commit on GitHub) and the model weights (from the
package index). Its cache starts empty, as a fresh runtime's does, so the chapter computes every artefact it
reads (probe, preference pairs, DPO model, neuron statistics); the edited model is a tiny random one so that this
fits CI's time. It then checks that the edited values reached the results: the provenance names the edited
model and the null control used the edited number of directions. Exit 1 otherwise.

Run from the project root after ``make book`` (CI does, in ``.ci/run``)::

    python scripts/play_colab.py
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import venv
from pathlib import Path

import nbformat
import papermill

from dpo_toxicity.book.build import INSTALL_ENV, NOTEBOOKS
from dpo_toxicity.book.ledger import glued_values
from dpo_toxicity.paths import CACHE_ENV, DATA_ENV, data_root, project_root

DOCUMENT = "book/03_attribution"
EDITED_MODEL = "tiny-llama"
EDITS = {"model": f'"{EDITED_MODEL}"', "null_directions": "20"}  # what the reader types into the parameters cell
WORK = Path("_build/colab")
COLAB_BRINGS = ("torch", "ipykernel")  # pinned in requirements.txt; a Colab runtime has both preinstalled


def pins(root: Path, names: tuple[str, ...]) -> list[str]:
    """The exact pins of ``names`` in requirements.txt."""
    lines = (root / "requirements.txt").read_text(encoding="utf-8").splitlines()
    found = [line.strip() for line in lines if line.split("==")[0].strip().lower() in names]
    if len(found) != len(names):
        raise SystemExit(f"requirements.txt pins {found}, not each of {names}.")
    return found


def edited(notebook: nbformat.NotebookNode) -> nbformat.NotebookNode:
    """``notebook`` with :data:`EDITS` typed into its ``parameters`` cell, in place of the values there."""
    cell = next(cell for cell in notebook.cells if "parameters" in cell.metadata.get("tags", []))
    for name, value in EDITS.items():
        cell.source, count = re.subn(rf"^{name} = [^#\n]*", f"{name} = {value}  ", cell.source, flags=re.MULTILINE)
        if count != 1:
            raise SystemExit(f"The published {DOCUMENT} has no single `{name} = ...` line in its parameters cell.")
    return notebook


def fresh_runtime(root: Path, folder: Path) -> str:
    """A virtual environment with only what Colab brings; returns the name of its registered Jupyter kernel."""
    venv.EnvBuilder(with_pip=True, clear=True).create(folder / "venv")
    python = str(folder / "venv" / "bin" / "python")
    subprocess.run([python, "-m", "pip", "install", "--quiet", "--no-compile", *pins(root, COLAB_BRINGS)], check=True)
    subprocess.run(
        [python, "-m", "ipykernel", "install", "--prefix", str(folder / "jupyter"), "--name", "colab"],
        check=True,
        stdout=subprocess.DEVNULL,
    )
    os.environ["JUPYTER_PATH"] = str(folder / "jupyter" / "share" / "jupyter")
    return "colab"


def main() -> None:
    root = project_root()
    published = root / "_build" / "html" / NOTEBOOKS / f"{DOCUMENT}.ipynb"
    if not published.is_file():
        raise SystemExit(f"{published} does not exist: build the site first (make book).")
    folder = root / WORK
    kernel = fresh_runtime(root, folder)
    notebook = folder / "run" / f"{Path(DOCUMENT).name}.ipynb"
    notebook.parent.mkdir(parents=True, exist_ok=True)
    nbformat.write(edited(nbformat.read(published, as_version=4)), notebook.with_suffix(".edited.ipynb"))
    # The kernel finds the checkout instead of GitHub and the data where this build read it; its cache is empty.
    cache = folder / "cache"
    shutil.rmtree(cache, ignore_errors=True)
    os.environ.update(
        {
            INSTALL_ENV: str(root),
            DATA_ENV: str(data_root()),
            CACHE_ENV: str(cache),
            "HF_HUB_OFFLINE": "1",
            "TRANSFORMERS_OFFLINE": "1",
            # Bytecode for the ~20,000 modules the set-up cell installs would cost more than the kernel's imports.
            "PIP_COMPILE": "false",
        }
    )
    papermill.execute_notebook(
        str(notebook.with_suffix(".edited.ipynb")),
        str(notebook),
        kernel_name=kernel,
        cwd=str(notebook.parent),
        progress_bar=False,
        log_output=True,
    )
    values = glued_values(notebook)
    outputs = json.dumps([cell.get("outputs", []) for cell in nbformat.read(notebook, as_version=4).cells])
    problems = []
    if values.get("null_directions_n") != 20:
        problems.append(f"null_directions_n is {values.get('null_directions_n')}, not the edited 20")
    if EDITED_MODEL not in outputs or "weights hash" not in outputs:
        problems.append(f"the provenance does not name the edited model {EDITED_MODEL}")
    if problems:
        raise SystemExit("The reader's edits did not reach the results: " + "; ".join(problems) + ".")
    print(f"{DOCUMENT} ran as a Colab reader edited it ({EDITS}), in a fresh environment.")


if __name__ == "__main__":
    main()
