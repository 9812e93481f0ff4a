"""Searchable tables on a page: every row sent, floats to significant digits, DataTables embedded (offline), and
chapter 3 showing its per-neuron table that way beside the download."""

import ast
import json
import re

import jupytext
import numpy as np
import pandas as pd
import pytest

from dpo_toxicity.book import tables
from dpo_toxicity.paths import project_root


def test_significant_rounds_floats_to_significant_digits_and_keeps_the_rest():
    frame = pd.DataFrame(
        {"layer": [3, 4, 5, 6], "delta": [0.000123456, -98765.4, 0.0, np.nan], "group": ["TP", "AN", "TN", "AP"]}
    )
    rounded = tables.significant(frame, digits=3)
    assert rounded["delta"].iloc[:3].tolist() == [0.000123, -98800.0, 0.0] and np.isnan(rounded["delta"].iloc[3])
    assert rounded[["layer", "group"]].equals(frame[["layer", "group"]])
    assert frame["delta"].iloc[0] == 0.000123456  # the caller's frame is left as it was


@pytest.fixture
def embedded(monkeypatch):
    """The arguments :func:`tables.embed_datatables` passes to ``init_notebook_mode`` (nothing is displayed)."""
    calls = []
    monkeypatch.setattr(tables, "init_notebook_mode", lambda **options: calls.append(options))
    tables.embed_datatables.cache_clear()
    yield calls
    tables.embed_datatables.cache_clear()


def test_a_searchable_table_embeds_datatables_once_and_loads_nothing_from_the_network(embedded):
    frame = pd.DataFrame({"layer": np.arange(3000) % 30, "delta": np.linspace(-1, 1, 3000)})
    first, second = tables.searchable_table(frame).data, tables.searchable_table(frame).data
    assert embedded == [{"all_interactive": False, "connected": False}]
    for html in (first, second):
        assert not re.search(r"""src=["']?https?:|<link[^>]*href=["']?https?:|import[^;]*from\s*['"]https?:""", html)
        assert "<script" in html
    data = json.loads(re.search(r'"data_json": ("(?:[^"\\]|\\.)*")', first).group(1))
    assert len(json.loads(data)) == len(frame)  # no downsampling, whatever the size


def chapter_3_code() -> list[str]:
    notebook = jupytext.read(project_root() / "book/03_attribution.py", fmt="py:percent")
    return [cell.source for cell in notebook.cells if cell.cell_type == "code"]


def test_chapter_3_shows_its_neuron_table_searchable_beside_the_download():
    calls = [
        node
        for source in chapter_3_code()
        for node in ast.walk(ast.parse(source))
        if isinstance(node, ast.Call) and getattr(node.func, "id", None) == "searchable_table"
    ]
    assert len(calls) == 1 and "table" in {node.id for node in ast.walk(calls[0]) if isinstance(node, ast.Name)}
    assert any("from dpo_toxicity.book.tables import searchable_table" in source for source in chapter_3_code())
    text = (project_root() / "book/03_attribution.py").read_text(encoding="utf-8")
    assert "{download}`downloadable as CSV <neuron_table.csv.gz>`" in text
