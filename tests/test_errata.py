"""The book's Markdown pages glue values from the chapters by ``{glue:text}`book/<chapter>.ipynb::key:format```."""

import re

import pytest
from chapter_sources import glued_in_source

from dpo_toxicity.paths import project_root

PAGES = ["errata.md", "intro.py"]
CROSS_GLUE = re.compile(r"\{glue:text\}`([^`]*::[^`]*)`")


def references(page):
    return CROSS_GLUE.findall((project_root() / page).read_text(encoding="utf-8"))


@pytest.mark.parametrize("page", PAGES)
def test_cross_document_glue_has_a_format(page):
    # myst-nb splits the role's text at its last colon: without a format, "doc::key" loses its key.
    for reference in references(page):
        document, _, key_format = reference.rpartition("::")
        assert document.endswith(".ipynb") and ":" in key_format, reference


@pytest.mark.parametrize("page", PAGES)
def test_cross_document_glue_names_keys_the_chapter_glues(page):
    for reference in references(page):
        document, _, key_format = reference.rpartition("::")
        key = key_format.rsplit(":", 1)[0]
        assert glued_in_source(key, document.removesuffix(".ipynb")), f"{document} does not glue {key}"
