"""Runs and the results bundle: fingerprints, manifests, publishing, and the pages the site builds from a run."""

import json
import shutil

import jupytext
import nbformat
import pytest

from dpo_toxicity.book import build, runs
from dpo_toxicity.paths import DATA_ENV, project_root

CHAPTER = "book/01_probe"


@pytest.fixture
def project(tmp_path, monkeypatch):
    """A copy of the files a fingerprint covers (and the README, which it does not), with its own data manifest."""
    root = project_root()
    for name in ("_toc.yml", "_config.yml", "README.md", *runs.REQUIREMENTS):
        shutil.copy2(root / name, tmp_path / name)
    shutil.copytree(root / "book", tmp_path / "book")
    if (root / "intro.py").is_file():
        shutil.copy2(root / "intro.py", tmp_path / "intro.py")
    shutil.copytree(root / runs.PACKAGE, tmp_path / runs.PACKAGE, ignore=shutil.ignore_patterns("__pycache__"))
    data = tmp_path / "data"
    data.mkdir()
    (data / "MANIFEST.tsv").write_text("0123\t1\tprompts.jsonl\n")
    monkeypatch.setenv(DATA_ENV, str(data))
    return tmp_path


def edit(path, old, new):
    text = path.read_text()
    assert old in text
    path.write_text(text.replace(old, new, 1))


def test_the_fingerprint_changes_with_a_chapter_or_a_module_and_not_with_the_readme(project):
    before = runs.fingerprint(project, CHAPTER, "ci")
    (project / "README.md").write_text("Rewritten.\n")
    assert runs.fingerprint(project, CHAPTER, "ci") == before
    edit(project / "lib/dpo_toxicity/neurons.py", "\nimport", "\nCHANGED = 1\nimport")
    assert runs.changed_parts(before, runs.fingerprint(project, CHAPTER, "ci")) == ["lib/dpo_toxicity/neurons.py"]
    before = runs.fingerprint(project, CHAPTER, "ci")
    edit(project / f"{CHAPTER}.py", "top_neurons_shown = 20", "top_neurons_shown = 21")
    assert runs.changed_parts(before, runs.fingerprint(project, CHAPTER, "ci")) == [CHAPTER]


def test_the_fingerprint_covers_the_modules_of_a_subpackage_and_not_its_bytecode(project):
    before = runs.fingerprint(project, CHAPTER, "ci")
    assert "lib/dpo_toxicity/book/glued.py" in before
    edit(project / "lib/dpo_toxicity/book/glued.py", "\nimport", "\nCHANGED = 1\nimport")
    assert runs.changed_parts(before, runs.fingerprint(project, CHAPTER, "ci")) == ["lib/dpo_toxicity/book/glued.py"]
    before = runs.fingerprint(project, CHAPTER, "ci")
    (project / "lib/dpo_toxicity/book/__pycache__").mkdir()
    (project / "lib/dpo_toxicity/book/__pycache__/stray.py").write_text("CACHED = 1\n")
    assert runs.fingerprint(project, CHAPTER, "ci") == before


def test_the_fingerprint_ignores_prose_docstrings_and_comments(project):
    before = runs.fingerprint(project, CHAPTER, "ci")
    edit(project / f"{CHAPTER}.py", "# %% [markdown]\n# #", "# %% [markdown]\n# A new first line.\n#\n# #")
    edit(project / "lib/dpo_toxicity/neurons.py", '"""', '"""Reworded. ')
    edit(project / "lib/dpo_toxicity/probe.py", "\nimport", "\n# a new comment\nimport")
    assert runs.fingerprint(project, CHAPTER, "ci") == before


def test_the_fingerprint_names_the_profile_the_requirements_and_the_data(project, monkeypatch):
    before = runs.fingerprint(project, CHAPTER, "ci")
    assert runs.changed_parts(before, runs.fingerprint(project, CHAPTER, "full")) == ["profile ci", "profile full"]
    (project / "requirements.txt").write_text("torch==0.0\n")
    (project / "data/MANIFEST.tsv").write_text("other\n")
    assert runs.changed_parts(before, runs.fingerprint(project, CHAPTER, "ci")) == [
        "data MANIFEST.tsv",
        "requirements.txt",
    ]


def fake_run(project, documents, commit="a" * 40, profile="ci"):
    """A run folder whose chapters are their sources converted to notebooks, recorded at ``commit``."""
    folder = project / "_build/runs/test"
    for document in documents:
        notebook = jupytext.read(project / f"{document}.py", fmt="py:percent")
        for cell in notebook.cells:
            if cell.cell_type == "code":
                cell.outputs = [nbformat.v4.new_output("stream", text=f"ran {document}\n")]
        (folder / document).parent.mkdir(parents=True, exist_ok=True)
        nbformat.write(notebook, folder / f"{document}.ipynb")
        record = runs.ChapterRecord(
            60.0, "2026-12-07T01:00:00+00:00", commit, runs.fingerprint(project, document, profile), {"A section": 60.0}
        )
        runs.record_chapter(folder, profile, "smollm2-135m", "a test machine", document, record)
    return runs.read_run(folder)


def test_a_run_missing_a_chapter_names_it(project):
    documents = runs.computing_documents(project)
    run = fake_run(project, [d for d in documents if d != "book/04_ablation"])
    with pytest.raises(runs.RunError, match="book/04_ablation"):
        run.check_complete(project)
    with pytest.raises(runs.RunError, match="book/04_ablation"):
        runs.publish(run, project, project / "results/ci")
    assert not (project / "results").exists()


def test_the_site_build_stops_on_a_bundle_missing_a_chapter(project, monkeypatch):
    fake_run(project, runs.computing_documents(project)[:2])
    monkeypatch.setattr(build, "project_root", lambda: project)
    with pytest.raises(SystemExit, match="book/03_attribution"):
        build.build_site(runs.RUNS / "test")


def test_a_run_of_several_commits_is_not_published(project):
    documents = runs.computing_documents(project)
    fake_run(project, documents[:1], commit="b" * 40)
    run = fake_run(project, documents[1:])
    with pytest.raises(runs.RunError, match="2 commits"):
        runs.publish(run, project, project / "results/ci")


def test_publish_replaces_the_bundle_whole(project):
    documents = runs.computing_documents(project)
    run = fake_run(project, documents)
    target = project / "results/ci"
    target.mkdir(parents=True)
    (target / "old.ipynb").write_text("{}")
    runs.publish(run, project, target)
    published = runs.read_run(target)
    assert sorted(published.chapters) == sorted(documents) and published.commit == "a" * 40
    assert not (target / "old.ipynb").exists()
    assert sorted(p.name for p in target.parent.iterdir()) == ["ci"]  # no partial or previous copy left


def test_a_page_of_a_stale_run_carries_a_warning_naming_what_changed(project):
    run = fake_run(project, [CHAPTER])
    setup = nbformat.v4.new_code_cell("pass")
    current = build.staged_chapter(run, project, CHAPTER, setup)
    assert "warning" not in current.cells[1].source and "ran book/01_probe" in json.dumps(current.cells)
    edit(project / "lib/dpo_toxicity/neurons.py", "\nimport", "\nCHANGED = 1\nimport")
    stale = build.staged_chapter(run, project, CHAPTER, setup)
    title, note = stale.cells[0], stale.cells[1]
    assert title.source.startswith("# ") and "{warning}" in note.source
    assert "lib/dpo_toxicity/neurons.py" in note.source and run.commit[:10] in note.source
    assert stale.metadata["tags"] == ["run-stale"]


def test_merged_chapter_shows_current_prose_with_the_runs_outputs_and_refuses_changed_code(project):
    executed = jupytext.read(project / f"{CHAPTER}.py", fmt="py:percent")
    for cell in executed.cells:
        if cell.cell_type == "code":
            cell.outputs = [nbformat.v4.new_output("stream", text="computed\n")]
            if "parameters" in cell.metadata.get("tags", []):
                cell.source = 'profile = "full"\nmodel = "smollm2-135m"'
    edit(project / f"{CHAPTER}.py", "# %% [markdown]\n# #", "# %% [markdown]\n# Reworded.\n#\n# #")
    current = jupytext.read(project / f"{CHAPTER}.py", fmt="py:percent")
    merged = runs.merged_chapter(current, executed)
    assert merged.cells[0].source.startswith("Reworded.")
    parameters = [cell for cell in merged.cells if "parameters" in cell.metadata.get("tags", [])]
    assert parameters[0].source.startswith('profile = "full"')
    assert all(cell.outputs[0]["text"] == "computed\n" for cell in merged.cells if cell.cell_type == "code")
    edit(project / f"{CHAPTER}.py", "top_neurons_shown = 20", "top_neurons_shown = 21")
    current = jupytext.read(project / f"{CHAPTER}.py", fmt="py:percent")
    assert runs.merged_chapter(current, executed) is not None  # a default in the parameters cell is the run's
    body = [
        cell for cell in current.cells if cell.cell_type == "code" and "parameters" not in cell.metadata.get("tags", [])
    ]
    body[0].source += "\nx = 1"
    assert runs.merged_chapter(current, executed) is None


def test_merged_chapter_shows_a_figure_caption_edited_since_the_run(project):
    executed = jupytext.read(project / f"{CHAPTER}.py", fmt="py:percent")
    edit(project / f"{CHAPTER}.py", '"caption": "The probe\'s', '"caption": "Recaptioned: the probe\'s')
    current = jupytext.read(project / f"{CHAPTER}.py", fmt="py:percent")
    merged = runs.merged_chapter(current, executed)
    captions = [cell.metadata["mystnb"]["figure"]["caption"] for cell in merged.cells if "mystnb" in cell.metadata]
    assert captions[0].startswith("Recaptioned: the probe's")


def test_record_chapter_keeps_the_others_and_starts_over_for_another_profile(tmp_path):
    record = runs.ChapterRecord(1.0, "2026-12-07T01:00:00+00:00", "c" * 40, {"x": "1"})
    runs.record_chapter(tmp_path, "full", "m", "machine", "book/01_probe", record)
    runs.record_chapter(tmp_path, "full", "m", "machine", "book/02_dpo", record)
    assert sorted(runs.read_run(tmp_path).chapters) == ["book/01_probe", "book/02_dpo"]
    runs.record_chapter(tmp_path, "ci", "m", "machine", "book/02_dpo", record)
    assert sorted(runs.read_run(tmp_path).chapters) == ["book/02_dpo"]
    assert sorted(p.name for p in tmp_path.iterdir()) == [runs.MANIFEST]


def test_a_folder_without_a_manifest_is_no_run(tmp_path):
    with pytest.raises(runs.RunError, match="manifest.json is missing"):
        runs.read_run(tmp_path)
