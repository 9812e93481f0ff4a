"""The book's machinery, one layer above the science: building the site, runs, and the chapters' bookkeeping.

The top-level modules of :mod:`dpo_toxicity` compute the paper's results (probe, neurons, DPO, attribution,
interventions, the claims and their rules) and never import from here; this subpackage turns them into a book.

- :mod:`~dpo_toxicity.book.build`: executes the chapters with papermill into a run and builds the site from a
  run (``python -m dpo_toxicity.book``, :mod:`~dpo_toxicity.book.__main__`).
- :mod:`~dpo_toxicity.book.runs`: run folders, their manifests and the fingerprints that say a page is stale.
- :mod:`~dpo_toxicity.book.toc`: the table of contents as a list of documents (YAML only, no torch).
- :mod:`~dpo_toxicity.book.provenance`: the record a chapter shows of what produced its numbers.
- :mod:`~dpo_toxicity.book.glued`: gluing a chapter's values for its prose and keeping them for the ledger.
- :mod:`~dpo_toxicity.book.ledger`: the claims ledger, the paper's claims judged on the executed chapters.
- :mod:`~dpo_toxicity.book.tables`: tables a reader searches and sorts on the page, offline (itables).

This file imports nothing, so that a light reader (the site checker, ``toc``) loads no torch and no Jupyter.
"""
