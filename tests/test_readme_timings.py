"""README's timing table is the one ``scripts/readme_timings.py`` makes from the records in ``bench/``."""

import json

import nbformat
import pytest
from project_scripts import load_script

from dpo_toxicity.book import build, runs
from dpo_toxicity.paths import project_root


readme_timings = load_script("readme_timings")


def test_the_readme_carries_the_tables_of_the_bench_records():
    readme = (project_root() / "README.md").read_text(encoding="utf-8")
    assert readme_timings.readme_block(readme) == readme_timings.timing_tables(), (
        "README.md's timing table is stale: run `python scripts/readme_timings.py --write`"
    )


def test_a_record_gives_a_row_per_chapter_with_its_longest_section_and_a_total(tmp_path):
    record = {
        "profile": "full",
        "model": "m",
        "chapters": {
            "book/01_probe": {
                "seconds": 90.0,
                "finished": "2026-11-29T17:49:03+00:00",
                "sections": {"A": 30.0, "B": 60.0},
            },
            "book/02_dpo": {"seconds": 30.0, "finished": "2026-11-30T01:00:00+00:00", "sections": {}},
        },
    }
    (tmp_path / "bench").mkdir()
    (tmp_path / "bench" / "full-m.timings.json").write_text(json.dumps(record))
    lines = readme_timings.timing_tables(tmp_path).splitlines()
    assert lines[0] == readme_timings.BEGIN and lines[-1] == readme_timings.END
    assert "| `book/01_probe` | 1.5 | B (1.0) | 2026-11-29 |" in lines
    assert "| `book/02_dpo` | 0.5 |  | 2026-11-30 |" in lines
    assert lines[-3] == "| all chapters | 2.0 | | |"


def test_the_script_reads_the_manifest_a_book_build_writes(tmp_path):
    notebook = nbformat.v4.new_notebook()
    notebook.cells = [
        nbformat.v4.new_markdown_cell("## Probe"),
        nbformat.v4.new_code_cell("fit()", metadata={"papermill": {"duration": 12.0}}),
    ]
    record = runs.ChapterRecord(13.0, "2026-12-07T10:00:00+00:00", "0" * 40, {}, build.section_times(notebook))
    bundle = tmp_path / "results" / "full"  # a committed bundle's manifest, written as a run writes it
    runs.record_chapter(bundle, "full", "m", "2 CPU cores", "book/01_probe", record)
    tables = readme_timings.timing_tables(tmp_path)
    assert "`results/full/manifest.json`: profile `full`, model `m`, on 2 CPU cores" in tables
    assert "| `book/01_probe` | 0.2 | Probe (0.2) | 2026-12-07 |" in tables


def test_a_readme_without_the_markers_is_refused():
    with pytest.raises(ValueError, match="timing block"):
        readme_timings.readme_block("# A README without a timing block\n")


def test_a_bundle_carried_across_machines_names_its_legs(tmp_path):
    leg = {"started": "2026-12-07T12:42:38+00:00", "ended": "2026-12-07T15:31:15+00:00", "cpu": "2 x EPYC"}
    record = {
        "profile": "full",
        "model": "m",
        "chapters": {"book/01_probe": {"seconds": 180.0, "finished": "2026-12-07T16:10:00+00:00", "sections": {}}},
        "legs": [{**leg, "seconds": {"book/01_probe": 120.0}}, {**leg, "seconds": {"book/01_probe": 60.0}}],
    }
    (tmp_path / "results" / "full").mkdir(parents=True)
    (tmp_path / "results" / "full" / "manifest.json").write_text(json.dumps(record))
    lines = readme_timings.timing_tables(tmp_path).splitlines()
    assert lines[-3].startswith("Executed in 2 legs: 2026-12-07 12:42 to 15:31 UTC on 2 x EPYC (2.0 minutes); ")
    assert "(1.0 minutes). A chapter's minutes" in lines[-3]
