"""``scripts/run_checkpoint.py`` carries an unfinished bundle run through the repository and back, whole."""

import json
import subprocess
import tarfile

import pytest
from project_scripts import load_script

from dpo_toxicity.book.runs import RunError


run_checkpoint = load_script("run_checkpoint")
RUN = "full-tiny"


def git(folder, *arguments):
    command = ["git", "-c", "user.name=t", "-c", "user.email=t@t", *arguments]
    return subprocess.run(command, cwd=folder, capture_output=True, text=True, check=True).stdout.strip()


@pytest.fixture
def leg(tmp_path):
    """A repository, a worktree of its commit with chapter 1 finished and chapter 2 half-written, and a cache."""
    root = tmp_path / "main"
    root.mkdir()
    git(root, "init", "-q")
    (root / "README.md").write_text("x")
    git(root, "add", "README.md")
    git(root, "commit", "-q", "-m", "start")
    commit = git(root, "rev-parse", "HEAD")
    worktree = tmp_path / "results-worktree"
    git(root, "worktree", "add", "-q", "--detach", str(worktree), commit)
    run = worktree / "_build" / "runs" / RUN
    (run / "book").mkdir(parents=True)
    (run / "book" / "01_probe.ipynb").write_text("chapter 1")
    (run / "book" / "02_dpo.ipynb").write_text("half of chapter 2")
    record = {"seconds": 60.0, "finished": "2026-12-07T13:00:00+00:00", "commit": commit, "fingerprint": {}}
    manifest = {"profile": "full", "model": "tiny", "machine": "m", "chapters": {"book/01_probe": record}}
    (run / "manifest.json").write_text(json.dumps(manifest))
    cache = tmp_path / "cache"
    for relative, text in {
        "artefacts/tiny/full/probe.npz": "probe",
        "generations/ab12.json": "[]",
        "generations/cd34.partial.json": "half",
        "gguf/tiny.gguf": "weights",
        "dpo/tiny-key/dpo.json": "{}",
        "dpo/tiny-key/model.safetensors": "dpo weights",
    }.items():
        (cache / relative).parent.mkdir(parents=True, exist_ok=True)
        (cache / relative).write_text(text)
    return root, worktree, cache, commit


def save(leg, since="2026-12-07T12:45:00+00:00"):
    root, worktree, cache, _ = leg
    return run_checkpoint.save(worktree, cache, "full", "tiny", since=since, root=root)


def test_a_checkpoint_holds_the_finished_chapters_and_stages_but_no_weights_or_partial_files(leg):
    target = save(leg)
    assert target == leg[0] / "results" / "unfinished" / RUN
    record = json.loads((target / "checkpoint.json").read_text())
    assert record["commit"] == leg[3] and record["finished"] == ["book/01_probe"]
    assert record["legs"][0]["started"] == "2026-12-07T12:45:00+00:00"
    record = json.loads((save(leg, since=None) / "checkpoint.json").read_text())  # the same leg, saved again
    assert [leg["started"] for leg in record["legs"]] == ["2026-12-07T12:45:00+00:00"]
    assert sorted(path.name for path in (target / "run" / "book").iterdir()) == ["01_probe.ipynb"]
    with tarfile.open(target / "cache.tar.xz") as archive:
        assert archive.getnames() == ["artefacts/tiny/full/probe.npz", "generations/ab12.json"]
    assert set(record["dpo_weights"]) == {"tiny-key"}


def test_a_restored_checkpoint_gives_a_new_machine_the_worktree_run_and_cache(leg, tmp_path):
    save(leg)
    worktree, cache = tmp_path / "next-worktree", tmp_path / "next-cache"
    run = run_checkpoint.restore(worktree, cache, "full", "tiny", root=leg[0])
    assert git(worktree, "rev-parse", "HEAD") == leg[3]
    assert (run / "book" / "01_probe.ipynb").read_text() == "chapter 1"
    assert json.loads((run / "manifest.json").read_text())["chapters"].keys() == {"book/01_probe"}
    assert (cache / "generations" / "ab12.json").read_text() == "[]"
    assert not (cache / "gguf").exists()
    assert (cache / run_checkpoint.LEG_MARK).is_file()
    with pytest.raises(run_checkpoint.CheckpointError, match="already holds a run"):
        run_checkpoint.restore(worktree, cache, "full", "tiny", root=leg[0])


def test_a_dpo_model_trained_again_with_other_weights_is_refused(leg):
    save(leg)
    (leg[2] / "dpo" / "tiny-key" / "model.safetensors").write_text("other dpo weights")
    with pytest.raises(run_checkpoint.CheckpointError, match="differs from the one the earlier legs used"):
        save(leg, since="2026-12-08T09:00:00+00:00")


def test_a_worktree_of_another_commit_is_refused_both_ways(leg, tmp_path):
    root, _, cache, _ = leg
    save(leg)
    other = tmp_path / "other-worktree"
    git(root, "commit", "-q", "--allow-empty", "-m", "later")
    git(root, "worktree", "add", "-q", "--detach", str(other), "HEAD")
    with pytest.raises(run_checkpoint.CheckpointError, match="Check that commit"):
        run_checkpoint.restore(other, tmp_path / "c", "full", "tiny", root=root)
    (other / "_build" / "runs" / RUN).mkdir(parents=True)
    (other / "_build" / "runs" / RUN / "manifest.json").write_text(json.dumps({"chapters": {}}))
    with pytest.raises(run_checkpoint.CheckpointError, match="carries a run of commit"):
        run_checkpoint.save(other, cache, "full", "tiny", since="2026-12-08T09:00:00+00:00", root=root)


def test_saving_before_any_chapter_finished_or_without_a_start_time_says_what_to_do(leg, tmp_path):
    root, worktree, cache, _ = leg
    with pytest.raises(run_checkpoint.CheckpointError, match="pass --since"):
        run_checkpoint.save(worktree, cache, "full", "tiny", root=root)
    (worktree / "_build" / "runs" / RUN / "manifest.json").unlink()
    with pytest.raises(run_checkpoint.CheckpointError, match="no chapter has finished"):
        save(leg)


def published(leg, chapters, toc=("book/01_probe", "book/02_dpo")):
    """The worktree's bundle as `make results` publishes it, ``chapters`` mapping a chapter to (seconds,
    finished), and the main tree's table of contents, whose chapters ``toc`` are."""
    root, worktree, _, commit = leg
    (root / "_toc.yml").write_text("root: intro\nchapters:\n" + "".join(f"  - file: {c}\n" for c in toc))
    for document in toc:
        (root / f"{document}.py").parent.mkdir(parents=True, exist_ok=True)
        (root / f"{document}.py").write_text("")
    bundle = worktree / "results" / "full"
    (bundle / "book").mkdir(parents=True)
    records = {}
    for document, (seconds, finished) in chapters.items():
        (bundle / f"{document}.ipynb").write_text(document)
        records[document] = {"seconds": seconds, "finished": finished, "commit": commit, "fingerprint": {}}
    manifest = {"profile": "full", "model": "tiny", "machine": "m", "chapters": records}
    (bundle / "manifest.json").write_text(json.dumps(manifest))
    return bundle


def test_a_finished_run_becomes_the_bundle_with_each_chapters_time_summed_over_its_legs(leg):
    root, worktree, cache, _ = leg
    save(leg)  # leg 1: started 12:45, chapter 1 finished at 13:00, chapter 2 under way
    record_path = root / "results" / "unfinished" / RUN / "checkpoint.json"
    record = json.loads(record_path.read_text())
    record["legs"][0]["saved"] = "2026-12-07T13:30:00+00:00"
    record_path.write_text(json.dumps(record))
    (cache / run_checkpoint.LEG_MARK).write_text("2026-12-07T14:00:00+00:00")
    published(
        leg, {"book/01_probe": (60.0, "2026-12-07T13:00:00+00:00"), "book/02_dpo": (600.0, "2026-12-07T14:10:00+00:00")}
    )
    bundle = run_checkpoint.finish(worktree, cache, "full", "tiny", root=root)
    assert bundle == root / "results" / "full"
    manifest = json.loads((bundle / "manifest.json").read_text())
    # chapter 2 ran from chapter 1's end to leg 1's save (1,800 s), then 600 s in leg 2
    assert {document: record["seconds"] for document, record in manifest["chapters"].items()} == {
        "book/01_probe": 60.0,
        "book/02_dpo": 2400.0,
    }
    assert [leg["seconds"] for leg in manifest["legs"]] == [
        {"book/01_probe": 60.0, "book/02_dpo": 1800.0},
        {"book/02_dpo": 600.0},
    ]
    assert [leg["ended"] for leg in manifest["legs"]] == ["2026-12-07T13:30:00+00:00", "2026-12-07T14:10:00+00:00"]
    assert (bundle / "book" / "02_dpo.ipynb").read_text() == "book/02_dpo"
    assert not (root / "results" / "unfinished").exists()


def test_finishing_needs_the_published_bundle_of_the_checkpoints_commit(leg):
    root, worktree, cache, _ = leg
    save(leg)
    with pytest.raises(run_checkpoint.CheckpointError, match="has not finished yet"):
        run_checkpoint.finish(worktree, cache, "full", "tiny", root=root)
    bundle = published(leg, {"book/01_probe": (60.0, "2026-12-07T13:00:00+00:00")})
    manifest = json.loads((bundle / "manifest.json").read_text())
    manifest["chapters"]["book/01_probe"]["commit"] = "f" * 40
    (bundle / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(run_checkpoint.CheckpointError, match="finish the run that the checkpoint carries"):
        run_checkpoint.finish(worktree, cache, "full", "tiny", root=root)
    assert (root / "results" / "unfinished" / RUN / "checkpoint.json").is_file()
    assert not (root / "results" / "full").exists()


def test_finishing_a_bundle_that_lacks_a_chapter_of_the_toc_names_it(leg):
    root, worktree, cache, _ = leg
    save(leg)
    published(leg, {"book/01_probe": (60.0, "2026-12-07T13:00:00+00:00")})
    with pytest.raises(RunError, match="has no executed book/02_dpo"):
        run_checkpoint.finish(worktree, cache, "full", "tiny", root=root)
    assert (root / "results" / "unfinished" / RUN / "checkpoint.json").is_file()
    assert not (root / "results" / "full").exists()
