"""scripts/check_site.py: on a tiny built site, one clean page and one page per defect, each flagged exactly.

The checks run on HTML as a browser would return it (`rendered=True`: math already typeset by MathJax), so
they need no browser; one test renders the site in headless Chromium and is skipped when none is installed.
"""

import base64
import json

import pytest
from project_scripts import load_script

check_site = load_script("check_site")

ONE_PIXEL_PNG = base64.b64decode(
    "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR4nGNgYGD4DwABBAEAwS2OUAAAAABJRU5ErkJggg=="
)
COLAB = "https://colab.research.google.com/github/org/repo/blob/notebooks"


def html(body: str, *, root: str = "", math_script: bool = True) -> str:
    """A page as Sphinx writes it: a local stylesheet, MathJax from the site itself, then ``body``."""
    script = f'<script defer src="{root}_static/../mathjax/tex-svg.js"></script>' if math_script else ""
    stylesheet = f'<link rel="stylesheet" href="{root}_static/style.css">'
    return (
        f"<!DOCTYPE html><html><head><title>t</title>{stylesheet}{script}</head>"
        f'<body><main id="main-content">{body}</main></body></html>'
    )


GOOD = html(
    '<section id="top"><h1>Good</h1>'
    '<p>An accuracy of <span class="pasted-text">0.93</span> '
    'on <span class="pasted-text">600</span> comments '
    '<span class="bibtex-citation">[<a href="../intro.html#id1">Lee, 2024</a>]</span>, '
    "at a cost of $5 and $6, or $5/$6. "
    'Math <span class="math notranslate nohighlight"><mjx-container class="MathJax" jax="SVG">'
    "<svg><g></g></svg></mjx-container></span> "
    "and the syntax <code>{cite}`key`</code> or <code>$x$</code>.</p>"
    '<div class="highlight"><pre>print(f"{glue:text} $x$ \\(y\\) ```{note}")</pre></div>'
    '<div class="cell_output docutils container"><div class="output text_html"><table><tr>'
    "<td>generated text: $$$$$$ {cite}`x` ```{note}</td></tr></table></div></div>"
    '<img src="../_images/ok.png" alt="ok"><a href="#top">top</a> <a href="../intro.html#id1">intro</a> '
    '<a href="../_sources/book/good.ipynb">source</a> <a href="https://example.org/x.html#y">web</a> '
    f'<a href="{COLAB}/book/good.ipynb">Colab</a></section>',
    root="../",
)
GOOD_SOURCE = {
    "cells": [
        {"cell_type": "markdown", "metadata": {}, "source": ["Accuracy {glue:text}`acc:.2f` on {glue:text}`n`."]},
        {
            "cell_type": "code",
            "metadata": {},
            "source": ["glue('acc', 0.93); glue('n', 600)"],
            "outputs": [
                {"output_type": "display_data", "data": {}, "metadata": {"scrapbook": {"name": "acc"}}},
                {"output_type": "display_data", "data": {}, "metadata": {"scrapbook": {"name": "n"}}},
            ],
        },
    ]
}

# page -> (its HTML, the kinds of problem the checker must report for it, one entry per problem)
DEFECTS = {
    "missing_image": (html('<img src="_images/gone.png">'), [check_site.MISSING_IMAGE]),
    "missing_asset": (html('<script src="_static/gone.js"></script>'), [check_site.MISSING_ASSET]),
    "network_mathjax": (
        html('<script src="https://cdn.jsdelivr.net/npm/mathjax@3/es5/tex-chtml.js"></script>'),
        [check_site.NETWORK_RESOURCE],
    ),
    "broken_link": (
        html('<a href="nowhere.html">a</a> <a href="book/good.html#no-such-id">b</a> <a href="#gone">c</a>'),
        [check_site.BROKEN_LINK] * 3,
    ),
    "colab_unpublished": (html(f'<a href="{COLAB}/book/other.ipynb">Colab</a>'), [check_site.COLAB_LINK]),
    "glue_literal": (
        html('<p>The probe reaches {glue:text}<code>acc</code> and <span class="pasted-text"></span>.</p>'),
        [check_site.UNRENDERED_GLUE] * 2,
    ),
    "raw_math_untypeset": (
        html('<p>Math <span class="math notranslate nohighlight">\\(w^\\top v\\)</span>.</p>'),
        [check_site.RAW_MATH],
    ),
    "raw_math_prose": (html("<p>The write $a_i v_i$ onto \\(w\\), and $$x$$.</p>"), [check_site.RAW_MATH] * 3),
    "math_without_mathjax": (
        html('<p><span class="math"><mjx-container></mjx-container></span></p>', math_script=False),
        [check_site.RAW_MATH],
    ),
    "raw_myst": (
        html("<p>```{note} Hello</p><p>As shown by {cite}<code>lee2024</code>, {{ n_neurons }} neurons.</p>"),
        [check_site.RAW_MYST] * 3,
    ),
    "unresolved_citation": (
        html('<p>As <span class="bibtex-citation">[]</span> show.</p>'),
        [check_site.UNRESOLVED_CITATION],
    ),
    "docutils_error": (html('<div class="system-message"><p>Unknown role "foo".</p></div>'), [check_site.BUILD_ERROR]),
}


@pytest.fixture
def site(tmp_path):
    """A built site: ``index.html`` redirecting to ``intro``, the good chapter ``book/good``, every defect."""
    root = tmp_path / "html"
    for folder in ("_images", "_static", "mathjax", "book", "_sources/book", "notebooks/book"):
        (root / folder).mkdir(parents=True)
    (root / "_images" / "ok.png").write_bytes(ONE_PIXEL_PNG)
    (root / "_static" / "style.css").write_text("body { font-family: sans-serif; }")
    (root / "mathjax" / "tex-svg.js").write_text("")
    (root / "index.html").write_text('<meta http-equiv="Refresh" content="0; url=intro.html" />')
    (root / "intro.html").write_text(html('<p id="id1">Lee et al.</p><a href="book/good.html">ch. 1</a>'))
    (root / "book" / "good.html").write_text(GOOD)
    (root / "_sources" / "book" / "good.ipynb").write_text(json.dumps(GOOD_SOURCE))
    (root / "notebooks" / "book" / "good.ipynb").write_text(json.dumps(GOOD_SOURCE))
    for page, (page_html, _) in DEFECTS.items():
        (root / f"{page}.html").write_text(page_html)
    return root


def kinds(problems):
    return sorted(problem.kind for problem in problems)


@pytest.mark.parametrize("page", ["intro", "book/good"])
def test_clean_pages_have_no_problems(site, page):
    assert check_site.check_page(page, (site / f"{page}.html").read_text(), site, rendered=True) == []


@pytest.mark.parametrize("page", DEFECTS)
def test_each_defect_is_flagged_exactly(site, page):
    page_html, expected = DEFECTS[page]
    assert kinds(check_site.check_page(page, page_html, site, rendered=True)) == sorted(expected)


def test_glue_the_notebook_never_glued_is_flagged_from_the_source(site):
    source = json.loads(json.dumps(GOOD_SOURCE))
    source["cells"][1]["outputs"].pop(0)  # "acc" was never glued: its {glue:text} rendered nothing
    (site / "_sources" / "book" / "good.ipynb").write_text(json.dumps(source))
    page_html = GOOD.replace('<span class="pasted-text">0.93</span>', "")
    problems = check_site.check_page("book/good", page_html, site, rendered=True)
    assert kinds(problems) == [check_site.UNRENDERED_GLUE] * 2
    assert "'acc'" in str(problems[0])
    assert "2 {glue:text} values in the source, 1 on the page" in str(problems[1])


def test_scripts_that_mathjax_adds_from_the_local_server_count_as_site_files(site):
    origin = "http://127.0.0.1:8000/"
    present = html(f'<script src="{origin}mathjax/tex-svg.js"></script>')
    missing = html(f'<script src="{origin}mathjax/input/tex/extensions/gone.js"></script>')
    assert check_site.check_page("present", present, site, rendered=True, origin=origin) == []
    assert kinds(check_site.check_page("missing", missing, site, rendered=True, origin=origin)) == [
        check_site.MISSING_ASSET
    ]
    assert kinds(check_site.check_page("present", present, site, rendered=True)) == [check_site.NETWORK_RESOURCE]


def test_static_html_skips_only_the_typesetting_check(site):
    untypeset, _ = DEFECTS["raw_math_untypeset"]
    assert check_site.check_page("raw_math_untypeset", untypeset, site, rendered=False) == []
    prose, expected = DEFECTS["raw_math_prose"]
    assert kinds(check_site.check_page("raw_math_prose", prose, site, rendered=False)) == expected


def test_site_check_reports_toc_pages_that_were_not_built_and_a_broken_redirect(site):
    (site / "index.html").write_text('<meta http-equiv="refresh" content="0; url=gone.html">')
    problems = check_site.check_site(site, ["intro", "book/good", "book/unbuilt"])
    assert [(p.page, p.kind) for p in problems] == [
        ("book/unbuilt", check_site.BROKEN_LINK),
        ("index", check_site.BROKEN_LINK),
    ]


def test_toc_pages_lists_the_root_then_every_file(tmp_path):
    toc = tmp_path / "_toc.yml"
    toc.write_text(
        "format: jb-book\nroot: intro\nchapters:\n  - file: book/01_probe\n"
        "    sections:\n      - file: book/01a_detail.md\n  - file: book/02_neurons\n"
    )
    assert check_site.toc_pages(toc) == ["intro", "book/01_probe", "book/01a_detail", "book/02_neurons"]


@pytest.mark.skipif(check_site.find_browser() is None, reason="no Chromium installed")
def test_browser_renders_every_page_to_a_screenshot_and_reports_its_404s(site, tmp_path):
    screenshots = tmp_path / "screenshots"
    browser = check_site.find_browser()
    problems = check_site.check_site(site, ["intro", "book/good", "missing_image"], screenshots, browser)
    assert [(p.page, p.kind) for p in problems] == [
        ("missing_image", check_site.MISSING_IMAGE),
        ("missing_image", check_site.NOT_FOUND),
    ]
    for page in ("intro", "book/good", "missing_image"):
        assert (screenshots / f"{page}.png").read_bytes().startswith(b"\x89PNG")
        assert "<main" in (screenshots / f"{page}.dom.html").read_text()
