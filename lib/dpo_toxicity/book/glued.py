"""Gluing a chapter's results: every value the prose cites goes through one helper that also keeps it.

A chapter's Markdown cites computed values with ``{glue:text}`key``` (myst-nb); the ledger reads the same values
from the executed notebook. :class:`Glued` glues a value for the page and keeps it, so that the running chapter
can hand the ledger what it has glued and show the ledger's verdict of a claim
(:func:`~dpo_toxicity.book.ledger.chapter_verdict`) instead of judging it its own way. NumPy scalars are glued as
Python numbers, whose repr myst-nb can format.

Example::

    glued = Glued()
    glued("share_tp", shares["TP-"])
    glued.many({"tox_base": 0.41, "tox_dpo": 0.30}, suffix="_second")
    verdict = chapter_verdict("tp-share", "book/03_attribution", glued.values)
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
from myst_nb import glue


class Glued:
    """Glue values for the page (``myst_nb.glue``, not displayed where glued) and keep them in :attr:`values`."""

    def __init__(self):
        self.values: dict[str, object] = {}

    def __call__(self, key: str, value):
        """Glue ``value`` under ``key`` and keep it; returns the value as glued."""
        if isinstance(value, np.generic):
            value = value.item()
        glue(key, value, display=False)
        self.values[key] = value
        return value

    def many(self, values: Mapping[str, object], suffix: str = "") -> None:
        """Glue each of ``values`` under its key followed by ``suffix`` (``"_second"`` for the second model)."""
        for key, value in values.items():
            self(f"{key}{suffix}", value)
