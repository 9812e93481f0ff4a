"""The README's table of measured timings, made from the timing records kept in ``bench/``.

A book build records, for each chapter it executes, the wall time, the time it finished and the time by section,
in its run's manifest (``_build/runs/<profile>-<model>/manifest.json``, see ``dpo_toxicity.book.runs``);
``bench/*.timings.json`` keeps records of that form from uncached executions, and each committed bundle
``results/<profile>/manifest.json`` is one (the run the published site shows). This script turns each record into
a Markdown table, which README.md carries between two marker comments::

    python scripts/readme_timings.py            # print the tables
    python scripts/readme_timings.py --write    # replace the README's copy with them

``tests/test_readme_timings.py`` fails when the README's copy differs from what this prints.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
BEGIN = "<!-- timings: made by scripts/readme_timings.py from results/*/manifest.json and bench/*.timings.json; do not edit by hand -->"
END = "<!-- timings: end -->"


def record_table(record: dict, name: str) -> str:
    """One timing record (``record_timing``'s JSON) as a caption line and a table: a row per chapter with its
    minutes, its longest section and the day it finished, then the chapters' total."""
    machine = f", on {record['machine']}" if record.get("machine") else ""
    lines = [
        f"`{name}`: profile `{record['profile']}`, model `{record['model']}`{machine}",
        "",
        "| chapter | minutes | longest section (minutes) | finished |",
        "|---|---:|---|---|",
    ]
    total = 0.0
    for document, chapter in record["chapters"].items():
        total += chapter["seconds"]
        section, seconds = max(chapter["sections"].items(), key=lambda item: item[1], default=("", 0.0))
        longest = f"{section} ({seconds / 60:.1f})" if section else ""
        lines.append(f"| `{document}` | {chapter['seconds'] / 60:.1f} | {longest} | {chapter['finished'][:10]} |")
    lines.append(f"| all chapters | {total / 60:.1f} | | |")
    if record.get("legs"):
        lines += ["", legs_line(record["legs"])]
    return "\n".join(lines)


def legs_line(legs: list[dict]) -> str:
    """A sentence on the legs of a run carried across machines (``scripts/run_checkpoint.py finish``)."""
    spans = [
        f"{leg['started'][:10]} {leg['started'][11:16]} to {leg['ended'][11:16]} UTC on {leg['cpu']} "
        f"({sum(leg['seconds'].values()) / 60:.1f} minutes)"
        for leg in legs
    ]
    return (
        f"Executed in {len(legs)} legs: {'; '.join(spans)}. A chapter's minutes are its time in every leg, "
        "each leg counted to its last save."
    )


def timing_tables(root: Path = ROOT) -> str:
    """The committed bundles' manifests (``results/*/manifest.json``), then every ``bench/*.timings.json``
    record, each as a table, in file-name order, between the README's markers."""
    paths = sorted(root.glob("results/*/manifest.json")) + sorted((root / "bench").glob("*.timings.json"))
    tables = [
        record_table(json.loads(path.read_text(encoding="utf-8")), path.relative_to(root).as_posix()) for path in paths
    ]
    return "\n\n".join([BEGIN, *tables, END])


def readme_block(readme: str) -> str:
    """The README's copy of :func:`timing_tables`, markers included; ``ValueError`` if a marker is missing."""
    start, end = readme.find(BEGIN), readme.find(END)
    if start < 0 or end < start:
        raise ValueError(f"README.md has no timing block between {BEGIN!r} and {END!r}.")
    return readme[start : end + len(END)]


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--write", action="store_true", help="replace the timing block of README.md")
    arguments = parser.parse_args(argv)
    tables = timing_tables()
    if not arguments.write:
        print(tables)
        return
    readme = ROOT / "README.md"
    text = readme.read_text(encoding="utf-8")
    readme.write_text(text.replace(readme_block(text), tables), encoding="utf-8")


if __name__ == "__main__":
    main()
