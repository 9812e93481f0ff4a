"""Tables a reader can search and sort on the page, offline: DataTables through itables.

A chapter's last expression ``searchable_table(frame)`` shows ``frame`` as an interactive table (a search box,
sortable columns, pages of rows). The page must work without a network, so itables runs in its offline mode:
the first table of a page (of a kernel) also outputs DataTables' JavaScript and CSS, base64-encoded in the page
(:func:`itables.init_notebook_mode` with ``connected=False``, about 1 MB), and every table's own script imports
from that copy rather than from a CDN. Colab, where each output is an iframe that cannot reach another output's
copy, is the exception: there (and the reader has a network) the tables load DataTables from its CDN. Every
row given is sent to the page (itables' downsampling is off): a caller chooses how many, knowing that a row of
the per-neuron table costs about 100 bytes at 4 significant digits.

Example::

    searchable_table(table.loc[table["delta"].abs().nlargest(5000).index])

Limits: the data travel inside the page as JSON, so a table of tens of thousands of rows makes a page of
megabytes.
"""

from __future__ import annotations

import functools
import sys

import numpy as np
import pandas as pd
from IPython.display import HTML
from itables import init_notebook_mode, to_html_datatable

IN_COLAB = "google.colab" in sys.modules  # Colab's kernel imports it at start


@functools.cache
def embed_datatables() -> None:
    """Output DataTables' JavaScript and CSS into the page, once per kernel (the outputs of the cell that first
    calls it carry them); no table is made interactive by default (``all_interactive=False``)."""
    init_notebook_mode(all_interactive=False, connected=IN_COLAB)


def significant(frame: pd.DataFrame, digits: int = 4) -> pd.DataFrame:
    """A copy of ``frame`` with every float column rounded to ``digits`` significant digits (zeros and
    non-finite values kept): what a reader compares on a page, at a fraction of the bytes of full precision."""
    rounded = frame.copy()
    for column in rounded.select_dtypes("float").columns:
        values = rounded[column].to_numpy(dtype=np.float64)
        finite = np.isfinite(values) & (values != 0)
        magnitude = np.floor(np.log10(np.abs(np.where(finite, values, 1.0))))
        scale = 10.0 ** (digits - 1 - magnitude)
        rounded[column] = np.where(finite, np.round(values * scale) / scale, values)
    return rounded


def searchable_table(frame: pd.DataFrame, digits: int = 4) -> HTML:
    """``frame`` as an interactive DataTable for a notebook cell's value, its floats to ``digits`` significant
    digits (:func:`significant`), every row included, no index column, scrolling sideways where wider than the
    page, loading nothing from the network outside Colab (:func:`embed_datatables` first)."""
    embed_datatables()
    return HTML(
        to_html_datatable(
            significant(frame, digits),
            connected=IN_COLAB,
            maxBytes=0,  # every row: itables would otherwise drop rows past 64 KB
            format_floats_in_python=False,  # JSON numbers, shorter than pandas' text beside each number
            showIndex=False,
            scrollX=True,  # a wide table scrolls inside the page's column rather than overflowing it
        )
    )
