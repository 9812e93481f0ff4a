"""The book's structure: profiles, chapters' parameters cells, and the build driver's input checks."""

import importlib.metadata
import importlib.util
import json
import os
import subprocess

import jupytext
import nbformat
import pytest

from dpo_toxicity import book
from dpo_toxicity.models import UnknownModelError
from dpo_toxicity.paths import project_root
from dpo_toxicity.profiles import PROFILES, UnknownProfileError, profile


def chapters():
    root = project_root()
    return [book.source_of(root, d) for d in book.toc_documents(root) if book.source_of(root, d).suffix == ".py"]


def test_unknown_profile_is_rejected_with_the_known_names():
    with pytest.raises(UnknownProfileError, match="ci"):
        profile("huge")


def test_build_checks_profile_and_model_before_running_anything():
    with pytest.raises(UnknownProfileError):
        book.build("huge", "smollm2-135m")
    with pytest.raises(UnknownModelError):
        book.build("ci", "no-such-model")


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
    documents = book.toc_documents(root)
    assert documents[0] == "intro"
    for document in documents:
        assert book.source_of(root, document).is_file()


@pytest.mark.parametrize("chapter", chapters(), ids=lambda p: p.stem)
def test_a_converted_chapter_starts_with_the_hidden_colab_setup_cell(chapter):
    repository = book.repository_url(project_root())
    notebook = book.converted_chapter(chapter, repository)
    first = notebook.cells[0]
    assert first.cell_type == "code" and first.metadata["tags"] == ["remove-cell"]
    assert first.source == book.colab_setup_cell(repository).source and f"git+{repository}" in first.source
    assert [cell.source for cell in notebook.cells[1:]] == [cell.source for cell in jupytext.read(chapter).cells]
    nbformat.validate(notebook)


def test_the_colab_setup_cell_does_nothing_where_the_package_is_importable(monkeypatch):
    monkeypatch.setattr(subprocess, "run", lambda *args, **kwargs: pytest.fail(f"ran {args}"))
    environment = dict(os.environ)
    namespace = {}
    exec(book.colab_setup_cell("https://example.org/book").source, namespace)
    assert set(namespace) == {"__builtins__", "importlib"} and dict(os.environ) == environment


def test_the_colab_setup_cell_installs_without_upgrading_torch_and_points_at_the_fetched_data(monkeypatch):
    commands = []

    def fake_run(command, **kwargs):
        commands.append(command)
        return subprocess.CompletedProcess(command, 0, stdout="fetching\n/content/.cache/data\n")

    monkeypatch.setattr(importlib.util, "find_spec", lambda name: None)  # a fresh Colab runtime
    monkeypatch.setattr(subprocess, "run", fake_run)
    monkeypatch.setenv("DPO_TOX_DATA", "")  # recorded, so the value the cell sets is undone after the test
    exec(book.colab_setup_cell("https://example.org/book").source, {})
    install, fetch = commands
    assert install[1:4] == ["-m", "pip", "install"] and "dpo-toxicity @ git+https://example.org/book" in install
    assert f"torch=={importlib.metadata.version('torch')}" in install
    assert not {"-U", "--upgrade", "--force-reinstall"} & set(install)
    assert fetch[1:] == ["-m", "dpo_toxicity.data_sources"] and os.environ["DPO_TOX_DATA"] == "/content/.cache/data"


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
    notebook = executed_notebook([
        ("code", "import x", 2.0),
        ("markdown", "# 2. A chapter\n\nIntro.", None),
        ("code", "a = 1", 1.5),
        ("markdown", "Just prose, no heading.", None),
        ("code", "b = 2", 0.25),
        ("markdown", "## Preference pairs", None),
        ("code", "pairs()", 30.0),
        ("code", "more()", None),
        ("code", "plot()", 4.0),
    ])
    assert book.section_times(notebook) == {book.BEFORE_ANY_HEADING: 2.0, "2. A chapter": 1.8,
                                            "Preference pairs": 34.0}


def test_record_timing_keeps_chapters_from_earlier_runs(tmp_path):
    first, second = tmp_path / "first.ipynb", tmp_path / "second.ipynb"
    nbformat.write(executed_notebook([("markdown", "## Probe", None), ("code", "fit()", 12.0)]), first)
    nbformat.write(executed_notebook([("markdown", "## DPO", None), ("code", "train()", 50.0)]), second)
    book.record_timing(tmp_path, "full", "smollm2-135m", "book/01_probe", 13.04, first)
    book.record_timing(tmp_path, "full", "smollm2-135m", "book/02_dpo", 60.0, second)
    path = book.record_timing(tmp_path, "full", "smollm2-135m", "book/01_probe", 20.0, first)
    record = json.loads(path.read_text())
    assert path == tmp_path / "_build" / "timings" / "full-smollm2-135m.json"
    assert (record["profile"], record["model"]) == ("full", "smollm2-135m")
    assert record["chapters"]["book/01_probe"]["seconds"] == 20.0  # the newer run replaces the older
    assert record["chapters"]["book/01_probe"]["sections"] == {"Probe": 12.0}
    assert record["chapters"]["book/02_dpo"]["sections"] == {"DPO": 50.0}
    assert list(path.parent.iterdir()) == [path]  # no partial file left behind
