"""Carry an unfinished ``make results`` from one machine to the next through the repository.

The paper-size run takes longer than one working session, and this project's machines keep nothing but the
repository from one session to the next: a worktree and a cache outside it are gone. ``save`` copies what the
run has finished into ``results/unfinished/<profile>-<model>/``, to be committed: the executed chapters with the
run's manifest (``run/``), every cached stage except model weights (``cache.tar.xz``) and a record of the run's
legs (``checkpoint.json``). ``restore`` puts them back into a worktree pinned at the run's commit and into its
cache, so that ``make results`` there goes on where the run stopped::

    python scripts/run_checkpoint.py save    --worktree ../dpo-results --cache ~/.cache/dpo-toxicity
    python scripts/run_checkpoint.py restore --worktree ../dpo-results --cache ~/.cache/dpo-toxicity
    python scripts/run_checkpoint.py finish  --worktree ../dpo-results --cache ~/.cache/dpo-toxicity

Model weights (hundreds of MB) stay behind: a resumed run converts the base models again and trains the DPO
models again from the carried pairs. Every cached row is keyed by the DPO model's inputs, not its weights, so a
retrained model must be the earlier one bit for bit: ``save`` records each DPO model's weight digest and refuses
to save a run whose retrained weights differ from a digest recorded before (the rows would then mix two models;
delete the checkpoint and run again from the start). Once ``make results`` has published ``results/<profile>`` in
the worktree, ``finish`` copies that bundle into this tree with the run's legs in its manifest, and deletes the
checkpoint: commit both in one commit.
"""

from __future__ import annotations

import argparse
import hashlib
import io
import json
import platform
import shutil
import subprocess
import tarfile
from datetime import datetime
from pathlib import Path

from dpo_toxicity.artefacts import DPO_RECORD_FILE
from dpo_toxicity.book.runs import MANIFEST, RESULTS, RUNS, RunError, finished_now, head_commit, publish, read_run
from dpo_toxicity.paths import written_atomically

ROOT = Path(__file__).resolve().parent.parent
UNFINISHED = Path("results/unfinished")
RECORD = "checkpoint.json"
CACHE_ARCHIVE = "cache.tar.xz"
# Cache folders a resumed run remakes from the weight packages (GGUF copies, converted models, DPO models).
REMADE = ("gguf", "models", "dpo", "mathjax")
# restore's mark in the cache: when this leg of the run began (a first leg names it with --since).
LEG_MARK = ".checkpoint-leg-started"


class CheckpointError(RuntimeError):
    """A checkpoint cannot be saved or restored as asked; the message says what to do."""


def cpu_model() -> str:
    """The CPU's model name: a DPO model trained again matches bit for bit only on the same kind of CPU."""
    cpuinfo = Path("/proc/cpuinfo")
    lines = cpuinfo.read_text().splitlines() if cpuinfo.is_file() else []
    names = [line.split(":", 1)[1].strip() for line in lines if line.startswith("model name")]
    return f"{len(names)} x {names[0]}" if names else platform.processor() or platform.machine()


def git(root: Path, *arguments: str) -> str:
    return subprocess.run(["git", *arguments], cwd=root, capture_output=True, text=True, check=True).stdout.strip()


def carried(path: Path) -> bool:
    """Whether a cache file is a finished stage: not a temporary file of an unfinished write."""
    return not any(part.startswith(".") or ".partial" in part for part in path.parts)


def cache_files(cache: Path) -> list[Path]:
    """The cache's finished stages, relative to ``cache``, sorted: everything but :data:`REMADE` folders."""
    return sorted(
        path.relative_to(cache)
        for path in cache.rglob("*")
        if path.is_file() and path.relative_to(cache).parts[0] not in REMADE and carried(path.relative_to(cache))
    )


def dpo_digests(cache: Path) -> dict[str, str]:
    """``{DPO model folder: sha256 of its weight files}`` for every finished DPO model in the cache."""
    digests = {}
    for record in sorted((cache / "dpo").glob(f"*/{DPO_RECORD_FILE}")):
        hasher = hashlib.sha256()
        for weights in sorted(record.parent.glob("*.safetensors")):
            hasher.update(weights.name.encode())
            hasher.update(weights.read_bytes())
        digests[record.parent.name] = hasher.hexdigest()
    return digests


def cache_archive(cache: Path) -> bytes:
    """The finished stages as an xz tarball with fixed metadata, so that unchanged stages give unchanged bytes."""
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:xz") as archive:
        for relative in cache_files(cache):
            info = archive.gettarinfo(cache / relative, arcname=relative.as_posix())
            info.mtime, info.uid, info.gid, info.uname, info.gname = 0, 0, 0, "", ""
            with open(cache / relative, "rb") as handle:
                archive.addfile(info, handle)
    return buffer.getvalue()


def checked_digests(previous: dict | None, cache: Path, target: Path) -> dict[str, str]:
    """The DPO weight digests of the earlier legs (``previous``, a checkpoint record) with the cache's added;
    raises :class:`CheckpointError` where a model trained again differs from the one an earlier leg used."""
    digests = dict(previous["dpo_weights"]) if previous else {}
    for folder, digest in dpo_digests(cache).items():
        if digests.get(folder, digest) != digest:
            raise CheckpointError(
                f"The DPO model {folder} trained again differs from the one the earlier legs used (weights "
                f"{digest[:12]}, recorded {digests[folder][:12]}): the cached rows would mix two models. Delete "
                f"{target} and the cache {cache}, and run the bundle again from the start."
            )
        digests[folder] = digest
    return digests


def leg_start(cache: Path, since: str | None = None) -> str:
    """When this leg of the run started: ``since`` (then marked in the cache for later saves) or the mark."""
    mark = cache / LEG_MARK
    if since:
        mark.write_text(since, encoding="utf-8")
    if not mark.is_file():
        raise CheckpointError(
            f"When did this leg of the run start? restore marks it in {mark}; for a first leg pass --since "
            "(an ISO time, such as 2026-12-07T12:45:00+00:00)."
        )
    return mark.read_text(encoding="utf-8").strip()


def save(worktree: Path, cache: Path, profile: str, model: str, since: str | None = None, root: Path = ROOT) -> Path:
    """Copy the run of ``profile`` on ``model`` in ``worktree`` (its finished chapters, cache and DPO digests)
    into ``root/results/unfinished/<profile>-<model>``, replacing the previous checkpoint of the same commit.

    Raises :class:`CheckpointError` when the worktree has no finished chapter, when the checkpoint there is of
    another commit, or when a DPO model's weights differ from the digest an earlier leg recorded.
    """
    name = f"{profile}-{model}"
    run = worktree / RUNS / name
    if not (run / MANIFEST).is_file():
        raise CheckpointError(f"{run} has no {MANIFEST}: no chapter has finished yet, so there is nothing to carry.")
    commit = head_commit(worktree)
    manifest = json.loads((run / MANIFEST).read_text(encoding="utf-8"))
    finished = [document for document, record in manifest["chapters"].items() if record["commit"] == commit]
    target = root / UNFINISHED / name
    previous = json.loads((target / RECORD).read_text(encoding="utf-8")) if (target / RECORD).is_file() else None
    if previous and previous["commit"] != commit:
        raise CheckpointError(
            f"{target} carries a run of commit {previous['commit'][:12]}, the worktree is at {commit[:12]}. Restore "
            f"that one into a worktree of its commit, or delete {target} to start the run from this commit."
        )
    digests = checked_digests(previous, cache, target)
    started = leg_start(cache, since)
    legs = [leg for leg in (previous["legs"] if previous else []) if leg["started"] != started]
    legs.append({"started": started, "saved": finished_now(), "cpu": cpu_model(), "finished": finished})
    record = {
        "commit": commit,
        "profile": profile,
        "model": model,
        "finished": finished,
        "dpo_weights": digests,
        "legs": legs,
        "cache_files": len(cache_files(cache)),
    }
    partial = target.with_name(f".{name}.partial")
    shutil.rmtree(partial, ignore_errors=True)
    (partial / "run").mkdir(parents=True)
    for document in finished:
        (partial / "run" / document).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(run / f"{document}.ipynb", partial / "run" / f"{document}.ipynb")
    manifest["chapters"] = {document: manifest["chapters"][document] for document in finished}
    (partial / "run" / MANIFEST).write_text(json.dumps(manifest, indent=1), encoding="utf-8")
    (partial / CACHE_ARCHIVE).write_bytes(cache_archive(cache))
    (partial / RECORD).write_text(json.dumps(record, indent=1), encoding="utf-8")
    shutil.rmtree(target, ignore_errors=True)
    partial.rename(target)
    return target


def restore(worktree: Path, cache: Path, profile: str, model: str, root: Path = ROOT) -> Path:
    """Put the checkpoint of ``profile`` on ``model`` back: a worktree of its commit at ``worktree`` (added
    where absent), its finished chapters in the worktree's run folder and its stages in ``cache`` (files already
    there are kept). Marks the start of this leg in the cache. Returns the run folder.

    Raises :class:`CheckpointError` when there is no checkpoint, when ``worktree`` is at another commit or when
    its run folder already holds a run.
    """
    name = f"{profile}-{model}"
    source = root / UNFINISHED / name
    if not (source / RECORD).is_file():
        raise CheckpointError(f"No checkpoint at {source}: start the run with `make results` in a worktree.")
    record = json.loads((source / RECORD).read_text(encoding="utf-8"))
    if not worktree.exists():
        git(root, "worktree", "add", "--detach", str(worktree), record["commit"])
    head = head_commit(worktree)
    if head != record["commit"]:
        raise CheckpointError(
            f"{worktree} is at {head[:12]}; the checkpoint's run is of {record['commit'][:12]}. Check that commit "
            f"out there (git -C {worktree} checkout --detach {record['commit']})."
        )
    run = worktree / RUNS / name
    if (run / MANIFEST).is_file():
        raise CheckpointError(f"{run} already holds a run; `make results` there resumes it without a restore.")
    shutil.copytree(source / "run", run, dirs_exist_ok=True)
    cache.mkdir(parents=True, exist_ok=True)
    with tarfile.open(source / CACHE_ARCHIVE, mode="r:xz") as archive:
        for member in archive.getmembers():
            if not (cache / member.name).exists():
                archive.extract(member, cache, filter="data")
    (cache / LEG_MARK).write_text(finished_now(), encoding="utf-8")
    return run


def leg_seconds(legs: list[dict], chapters: dict[str, dict]) -> list[dict[str, float]]:
    """Each leg's seconds by chapter: a chapter finished in a leg at its recorded wall time, and the chapter a
    leg stopped in from its start (the leg's, or its last finished chapter's end) to the leg's last save.

    ``legs`` are the checkpoint's records then the last leg's (without ``saved``), ``chapters`` the bundle's
    manifest records in the order they ran."""
    spent, done = [], set()
    for leg in legs:
        seconds = {document: chapters[document]["seconds"] for document in leg["finished"] if document not in done}
        done.update(seconds)
        unfinished = [document for document in chapters if document not in done]
        if "saved" in leg and unfinished:
            ends = [chapters[document]["finished"] for document in seconds]
            start = max([leg["started"], *ends], key=datetime.fromisoformat)
            elapsed = datetime.fromisoformat(leg["saved"]) - datetime.fromisoformat(start)
            seconds[unfinished[0]] = round(elapsed.total_seconds(), 1)
        spent.append(seconds)
    return spent


def finish(worktree: Path, cache: Path, profile: str, model: str, root: Path = ROOT) -> Path:
    """Copy the bundle ``make results`` published in ``worktree`` into ``root/results/<profile>``, its manifest
    holding the run's legs, and delete the checkpoint: a chapter's wall time there is the sum of its time in every
    leg, each leg counted to its last save (:func:`leg_seconds`). Returns the bundle.

    Raises :class:`CheckpointError` when the worktree has no bundle, when the bundle is of another commit than
    the checkpoint, or when a DPO model's weights differ from the digest an earlier leg recorded, and
    :class:`~dpo_toxicity.book.runs.RunError` when the bundle lacks a chapter of this tree's toc.
    """
    name = f"{profile}-{model}"
    bundle = worktree / RESULTS / profile
    if not (bundle / MANIFEST).is_file():
        raise CheckpointError(f"{bundle} holds no bundle: `make results` in {worktree} has not finished yet.")
    manifest = json.loads((bundle / MANIFEST).read_text(encoding="utf-8"))
    checkpoint = root / UNFINISHED / name
    previous = (
        json.loads((checkpoint / RECORD).read_text(encoding="utf-8")) if (checkpoint / RECORD).is_file() else None
    )
    commits = {record["commit"] for record in manifest["chapters"].values()}
    if previous and commits != {previous["commit"]}:
        raise CheckpointError(
            f"{bundle} was computed at {', '.join(sorted(commits))}, the checkpoint's run is of "
            f"{previous['commit'][:12]}: finish the run that the checkpoint carries, or delete {checkpoint}."
        )
    checked_digests(previous, cache, checkpoint)
    chapters = dict(sorted(manifest["chapters"].items(), key=lambda item: datetime.fromisoformat(item[1]["finished"])))
    last = {"started": leg_start(cache), "cpu": cpu_model(), "finished": list(chapters)}
    legs = [leg for leg in (previous["legs"] if previous else []) if leg["started"] != last["started"]] + [last]
    ended = max((record["finished"] for record in chapters.values()), key=datetime.fromisoformat)
    manifest["legs"] = [
        {"started": leg["started"], "ended": leg.get("saved", ended), "cpu": leg["cpu"], "seconds": seconds}
        for leg, seconds in zip(legs, leg_seconds(legs, chapters))
    ]
    for document, record in manifest["chapters"].items():
        record["seconds"] = round(sum(leg["seconds"].get(document, 0.0) for leg in manifest["legs"]), 1)
    # publish swaps the bundle in whole; were the manifest's write below interrupted, the checkpoint stays for a re-run.
    target = publish(read_run(bundle), root, root / RESULTS / profile)
    with written_atomically(target / MANIFEST) as partial:
        partial.write_text(json.dumps(manifest, indent=1), encoding="utf-8")
    shutil.rmtree(checkpoint, ignore_errors=True)
    if (root / UNFINISHED).is_dir() and not any((root / UNFINISHED).iterdir()):
        (root / UNFINISHED).rmdir()
    return target


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("action", choices=("save", "restore", "finish"))
    parser.add_argument("--worktree", type=Path, required=True, help="the worktree the run executes in")
    parser.add_argument("--cache", type=Path, required=True, help="its DPO_TOX_CACHE")
    parser.add_argument("--profile", default="full")
    parser.add_argument("--model", default="smollm2-135m")
    parser.add_argument("--since", help="save: when this leg started, for a first leg (ISO time)")
    return parser


def main(argv: list[str] | None = None) -> None:
    arguments = _parser().parse_args(argv)
    worktree, cache = arguments.worktree.resolve(), arguments.cache.expanduser().resolve()
    try:
        if arguments.action == "save":
            target = save(worktree, cache, arguments.profile, arguments.model, arguments.since)
            record = json.loads((target / RECORD).read_text(encoding="utf-8"))
            print(f"saved {target.relative_to(ROOT)}: chapters {record['finished']}, {record['cache_files']} stages")
        elif arguments.action == "finish":
            bundle = finish(worktree, cache, arguments.profile, arguments.model)
            hours = read_run(bundle).hours
            print(
                f"finished {bundle.relative_to(ROOT)}: {hours:.1f} h of computation; commit it (the checkpoint is gone)"
            )
        else:
            run = restore(worktree, cache, arguments.profile, arguments.model)
            print(f"restored {run}; go on with: cd {worktree} && DPO_TOX_CACHE={cache} make results")
    except (CheckpointError, RunError) as error:
        raise SystemExit(str(error)) from None


if __name__ == "__main__":
    main()
