"""The book's table of contents (``_toc.yml``) read as a list of documents.

A module of its own, importing nothing heavy, so that the site checker can read the toc without loading torch.
"""

from __future__ import annotations

from pathlib import Path

import yaml


def toc_documents(root: Path) -> list[str]:
    """Every document named in ``root/_toc.yml`` (root first), as paths relative to ``root`` without suffix."""
    toc = yaml.safe_load((root / "_toc.yml").read_text(encoding="utf-8"))
    documents = [toc["root"]]

    def walk(entries):
        for entry in entries or []:
            if "file" in entry:
                documents.append(entry["file"])
            walk(entry.get("sections"))

    for part in toc.get("parts", [{"chapters": toc.get("chapters")}]):
        walk(part.get("chapters"))
    return [str(Path(d).with_suffix("")) if Path(d).suffix in (".md", ".ipynb", ".py") else d for d in documents]
