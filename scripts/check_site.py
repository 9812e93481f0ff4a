"""Check the built book in a headless browser: every page renders, with nothing left raw or broken.

Jupyter Book reports most mistakes as build warnings, but some leave no trace in the HTML and some only show
once a browser has run the page. A glue value whose key is missing, or whose format fails, vanishes from its
sentence; math stays as ``\\(x\\)`` when MathJax cannot load (Sphinx's default fetches it from a CDN, which an
offline reader cannot reach); an image can be missing from ``_images``. This script serves ``_build/html``
on a local port, opens every page of ``_toc.yml`` in headless Chromium (``--dump-dom`` after a virtual-time
budget, so MathJax has typeset the page), writes ``_build/screenshots/<page>.png`` and the rendered DOM
beside it (``<page>.dom.html``), and checks each DOM for:

- a missing image: an ``<img>`` whose file is not in the build;
- a missing asset or network resource: a local script or stylesheet that is not in the build, or a script,
  stylesheet or image loaded from the network (the site must work offline);
- a broken internal link: an ``href`` to a local file that does not exist, or to an ``#anchor`` that the
  target page does not define; a Colab launch link whose notebook the site does not publish under
  ``notebooks/`` (the folder CI pushes to the branch Colab reads);
- unrendered glue: literal ``{glue`` text, an empty glued value, a ``{glue:text}`` that rendered nothing, or
  a glue key the page's notebook never glued (read from the copy of the source in ``_sources/``);
- raw math: a math element that MathJax did not typeset (or typeset as an error), or TeX delimiters
  (``$...$``, ``$$``, ``\\(``, ``\\[``) left in the prose;
- raw MyST: a role or directive left as text (``{cite}`...```, ```` ```{note} ````, ``{{ name }}``), an
  unresolved citation (``[]``), or a docutils error node;
- a file the browser asked the local server for and did not get (a 404 while the page loaded).

Code cells and their outputs (``<pre>``) and inline code are not scanned for raw syntax.

Run from the project root after ``make book``::

    python scripts/check_site.py                # exit 1 with the list of problems, 0 when clean
    python scripts/check_site.py --no-browser   # the static checks only: no screenshots, no MathJax check

The browser is ``$CHROMIUM`` or the first of ``chromium``, ``chromium-browser``, ``google-chrome`` on PATH.
"""

from __future__ import annotations

import argparse
import functools
import http.server
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import threading
from dataclasses import dataclass, field
from html.parser import HTMLParser
from pathlib import Path
from urllib.parse import unquote, urlsplit

# Problem kinds: what a reader of the report greps for.
MISSING_IMAGE = "missing image"
MISSING_ASSET = "missing asset"
NETWORK_RESOURCE = "network resource"
BROKEN_LINK = "broken link"
COLAB_LINK = "broken Colab link"
UNRENDERED_GLUE = "unrendered glue"
RAW_MATH = "raw math"
RAW_MYST = "raw MyST"
UNRESOLVED_CITATION = "unresolved citation"
BUILD_ERROR = "build error node"
NOT_FOUND = "not found by the browser"
BROWSER_FAILED = "browser failed"

NOTEBOOKS = "notebooks"  # site folder of the executed notebooks; mirrors the branch Colab opens them from
COLAB_HOST = "colab.research.google.com"
BROWSERS = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable")
CHROMIUM_FLAGS = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
    "--hide-scrollbars",
    "--virtual-time-budget=5000",
    "--window-size=1280,1600",
)


@dataclass(frozen=True)
class Problem:
    page: str
    kind: str
    detail: str

    def __str__(self) -> str:
        return f"{self.page}: {self.kind}: {self.detail}"


# ---------------------------------------------------------------------------------------------------------
# A small DOM: enough of the tree to ask "which elements, with which classes, holding which text".

VOID_TAGS = {
    "area",
    "base",
    "br",
    "col",
    "embed",
    "hr",
    "img",
    "input",
    "link",
    "meta",
    "param",
    "source",
    "track",
    "wbr",
}
INLINE_TAGS = {
    "a",
    "abbr",
    "b",
    "cite",
    "em",
    "i",
    "img",
    "kbd",
    "mark",
    "q",
    "s",
    "small",
    "span",
    "strong",
    "sub",
    "sup",
    "u",
    "var",
    "time",
}
# Never scanned for raw syntax: scripts, code cells and outputs, MathJax's own output. Cell outputs are data
# (generated text may hold "$$$" or "{x}"), so an output rendered as HTML (a table) is skipped by its class.
UNSCANNED_CLASSES = {"math", "cell_output"}
UNSCANNED_TAGS = {"head", "script", "style", "template", "noscript", "textarea", "pre", "svg", "math", "mjx-container"}


@dataclass
class Element:
    tag: str
    attrs: dict[str, str]
    children: list[Element | str] = field(default_factory=list)

    @property
    def classes(self) -> list[str]:
        return self.attrs.get("class", "").split()

    def walk(self):
        """This element and every element below it, in document order."""
        yield self
        for child in self.children:
            if isinstance(child, Element):
                yield from child.walk()

    def text(self) -> str:
        return "".join(c if isinstance(c, str) else c.text() for c in self.children)


class _TreeBuilder(HTMLParser):
    def __init__(self):
        super().__init__(convert_charrefs=True)
        self.root = Element("#document", {})
        self.open = [self.root]

    def handle_starttag(self, tag, attrs):
        element = Element(tag, {name: value or "" for name, value in attrs})
        self.open[-1].children.append(element)
        if tag not in VOID_TAGS:
            self.open.append(element)

    def handle_startendtag(self, tag, attrs):
        self.open[-1].children.append(Element(tag, {name: value or "" for name, value in attrs}))

    def handle_endtag(self, tag):
        for depth in range(len(self.open) - 1, 0, -1):  # close up to the nearest open element of this tag
            if self.open[depth].tag == tag:
                del self.open[depth:]
                return

    def handle_data(self, data):
        self.open[-1].children.append(data)


def parse_html(html: str) -> Element:
    builder = _TreeBuilder()
    builder.feed(html)
    builder.close()
    return builder.root


def prose(root: Element) -> str:
    """The page's reading text: blocks on their own lines, inline code as `\\0`, unscanned parts and math
    elements dropped (math is checked element by element)."""
    parts: list[str] = []

    def visit(element: Element):
        for child in element.children:
            if isinstance(child, str):
                parts.append(child)
            elif child.tag in UNSCANNED_TAGS or UNSCANNED_CLASSES & set(child.classes):
                parts.append("\n" if child.tag not in INLINE_TAGS else " ")
            elif child.tag == "code":
                parts.append("`\0`")  # keeps the backtick that makes `{role}` text recognisable
            else:
                block = child.tag not in INLINE_TAGS
                parts.append("\n" if block else "")
                visit(child)
                parts.append("\n" if block else "")

    visit(root)
    return "".join(parts)


# ---------------------------------------------------------------------------------------------------------
# Links and files.


def local_target(site: Path, page_file: Path, url: str) -> tuple[Path, str] | None:
    """The file and fragment a local URL points to, or None for an external URL (``https:``, ``mailto:``)."""
    parts = urlsplit(url)
    if parts.scheme or parts.netloc:
        return None
    path = unquote(parts.path)
    if not path:
        target = page_file
    elif path.startswith("/"):
        target = site / path.lstrip("/")
    else:
        target = page_file.parent / path
    target = Path(os.path.normpath(target))
    if target.is_dir():
        target = target / "index.html"
    return target, unquote(parts.fragment)


def inside(site: Path, path: Path) -> bool:
    return path.is_file() and Path(os.path.normpath(path)).is_relative_to(Path(os.path.normpath(site)))


def element_ids(root: Element) -> set[str]:
    return {e.attrs["id"] for e in root.walk() if "id" in e.attrs} | {
        e.attrs["name"] for e in root.walk() if e.tag == "a" and "name" in e.attrs
    }


@functools.lru_cache(maxsize=256)
def file_ids(path: Path) -> frozenset[str]:
    return frozenset(element_ids(parse_html(path.read_text(encoding="utf-8", errors="replace"))))


def served_locally(url: str, origin: str | None) -> str:
    """A URL on the local server (``http://127.0.0.1:PORT/x``, as scripts such as MathJax write them) as the
    site path ``/x``; any other URL as it is."""
    return "/" + url[len(origin) :] if origin and url.startswith(origin) else url


def is_network(url: str) -> bool:
    parts = urlsplit(url)
    return parts.scheme in ("http", "https") or url.startswith("//")


def refresh_target(meta: Element) -> str | None:
    """The URL of a ``<meta http-equiv="refresh" content="0; url=...">`` redirect (``index.html``)."""
    if meta.attrs.get("http-equiv", "").lower() != "refresh":
        return None
    match = re.search(r"url\s*=\s*['\"]?([^'\"]+)", meta.attrs.get("content", ""), re.IGNORECASE)
    return match.group(1).strip() if match else None


def check_resources(page: str, root: Element, site: Path, page_file: Path, origin: str | None) -> list[Problem]:
    """Images, scripts and stylesheets: present in the build, none fetched from the network."""
    problems = []
    for element in root.walk():
        if element.tag == "img":
            url, kind = element.attrs.get("src", ""), MISSING_IMAGE
        elif element.tag == "script" and element.attrs.get("src"):
            url, kind = element.attrs["src"], MISSING_ASSET
        elif element.tag == "link" and {"stylesheet", "icon", "preload", "modulepreload"} & set(
            element.attrs.get("rel", "").lower().split()
        ):
            url, kind = element.attrs.get("href", ""), MISSING_ASSET
        else:
            continue
        url = served_locally(url, origin)
        if not url or url.startswith("data:"):
            continue
        if is_network(url):
            problems.append(Problem(page, NETWORK_RESOURCE, f"<{element.tag}> loads {url}"))
            continue
        target = local_target(site, page_file, url)
        if target and not inside(site, target[0]):
            problems.append(Problem(page, kind, f"<{element.tag}> {url} (no file {target[0]})"))
    return problems


def check_colab_link(page: str, url: str, site: Path) -> list[Problem]:
    """``https://colab.research.google.com/github/ORG/REPO/blob/BRANCH/PATH`` opens PATH on the branch that
    CI fills from the site's ``notebooks/`` folder: that file must be in the build."""
    parts = urlsplit(url).path.strip("/").split("/")
    if len(parts) < 6 or parts[0] != "github" or parts[3] != "blob":
        return [Problem(page, COLAB_LINK, f"{url} is not a /github/ORG/REPO/blob/BRANCH/PATH link")]
    notebook = "/".join(parts[5:])
    if not notebook.endswith(".ipynb"):
        return [Problem(page, COLAB_LINK, f"{url} does not open a .ipynb")]
    if not (site / NOTEBOOKS / notebook).is_file():
        return [
            Problem(
                page, COLAB_LINK, f"{url} opens {notebook}, which the site does not publish as {NOTEBOOKS}/{notebook}"
            )
        ]
    return []


def check_links(page: str, root: Element, site: Path, page_file: Path, origin: str | None) -> list[Problem]:
    """Every local href (and redirect) reaches an existing file and, with a fragment, an existing id."""
    own_ids = element_ids(root)  # in a browser's DOM, ids that scripts added count too
    page_file = Path(os.path.normpath(page_file))
    problems = []
    for element in root.walk():
        if element.tag == "a":
            url = element.attrs.get("href")
        elif element.tag == "meta":
            url = refresh_target(element)
        else:
            continue
        url = served_locally(url or "", origin)
        if not url or url == "#":
            continue
        if urlsplit(url).netloc == COLAB_HOST:
            problems += check_colab_link(page, url, site)
            continue
        target = local_target(site, page_file, url)
        if target is None:
            continue
        path, fragment = target
        if not inside(site, path):
            problems.append(Problem(page, BROKEN_LINK, f"{url} (no file {path})"))
        elif fragment and path.suffix == ".html":
            ids = (own_ids | file_ids(path)) if path == page_file else file_ids(path)
            if fragment not in ids:
                problems.append(Problem(page, BROKEN_LINK, f"{url} (no id {fragment!r} in {path.name})"))
    return problems


# ---------------------------------------------------------------------------------------------------------
# Glue: what the page's source asks for against what the notebook glued and what the page shows.

GLUE_ROLE = re.compile(r"\{glue(?::(\w*))?\}`([^`]+)`")
GLUE_DIRECTIVE = re.compile(r"^\s*(?:`{3,}|:{3,})\{glue(?::\w*)?\}\s+(\S+)", re.MULTILINE)
GLUE_LITERAL = re.compile(r"\{glue[:}]")


def source_of(site: Path, page: str) -> Path | None:
    for suffix in (".ipynb", ".md"):
        if (site / "_sources" / f"{page}{suffix}").is_file():
            return site / "_sources" / f"{page}{suffix}"
    return None


def markdown_of(source: Path) -> str:
    if source.suffix == ".md":
        return source.read_text(encoding="utf-8")
    cells = json.loads(source.read_text(encoding="utf-8"))["cells"]
    return "\n\n".join("".join(c["source"]) for c in cells if c["cell_type"] == "markdown")


def glued_keys(notebook: Path) -> set[str]:
    """The keys ``myst_nb.glue`` recorded in an executed notebook's outputs."""
    if notebook.suffix != ".ipynb" or not notebook.is_file():
        return set()
    cells = json.loads(notebook.read_text(encoding="utf-8"))["cells"]
    return {
        o["metadata"]["scrapbook"]["name"]
        for c in cells
        for o in c.get("outputs", [])
        if "scrapbook" in o.get("metadata", {})
    }


def glue_references(markdown: str) -> list[tuple[str, str, str | None]]:
    """(role or directive, key, document or None) for each glue the markdown asks for."""
    references = []
    for match in GLUE_ROLE.finditer(markdown):
        role, content = match.group(1) or "any", match.group(2).strip()
        document, _, key = content.rpartition("::")
        if role == "text" and ":" in key:
            key = key.rsplit(":", 1)[0]  # {glue:text}`key:.3f`: the part after the last colon is a format
        references.append((role, key, document or None))
    for match in GLUE_DIRECTIVE.finditer(markdown):
        document, _, key = match.group(1).rpartition("::")
        references.append(("directive", key, document or None))  # {glue}, {glue:figure}, ...
    return references


def check_glue(page: str, root: Element, text: str, site: Path) -> list[Problem]:
    """No glue syntax left as text, no empty value, and every key the source asks for glued and shown.

    A missing key or a failing format makes myst-nb drop the value (with a build warning), leaving
    "an accuracy of  on": only the source tells what should have been there.
    """
    problems = [Problem(page, UNRENDERED_GLUE, snippet(text, m)) for m in GLUE_LITERAL.finditer(text)]
    pasted = [e for e in root.walk() if "pasted-text" in e.classes]  # one per rendered {glue:text}
    problems += [
        Problem(page, UNRENDERED_GLUE, "an empty glued value") for element in pasted if not element.text().strip()
    ]
    source = source_of(site, page)
    if source is None:
        return problems
    references = glue_references(markdown_of(source))
    for role, key, document in references:
        notebook = source if document is None else source.parent / document
        if key not in glued_keys(notebook):
            syntax = "a {glue} directive" if role == "directive" else f"{{glue:{role}}}"
            where = "this page's notebook" if document is None else document
            problems.append(Problem(page, UNRENDERED_GLUE, f"{syntax} wants {key!r}; {where} never glued it"))
    wanted = sum(role == "text" for role, _, _ in references)
    if len(pasted) < wanted:
        problems.append(
            Problem(page, UNRENDERED_GLUE, f"{wanted} {{glue:text}} values in the source, {len(pasted)} on the page")
        )
    return problems


# ---------------------------------------------------------------------------------------------------------
# Math and MyST left as text.

RAW_TEX = re.compile(
    r"\\\(|\\\[|\\begin\{"  # TeX delimiters
    r"|\$\$(?:[^$]{0,400}?\$\$)?"  # $$display$$ (or a lone $$)
    r"|(?<![\\$\w])\$(?=[^\s$])[^$\n]{1,200}?(?<=[^\s\\$])\$(?![\w$])"  # $inline$, not "$5 and $6"
)
RAW_MYST_PATTERNS = re.compile(
    r"(?:`{3,}|:{3,})\{[\w:.-]+\}"  # a directive fence
    r"|\{(?!glue[:}])[A-Za-z][\w:.+-]*\}`"  # a role: {cite}`key` (inline code shows as `\0`)
    r"|\{\{[^{}\n]*\}\}"  # a substitution
)


def snippet(text: str, match: re.Match) -> str:
    """The match and its surroundings on one line: ``'{cite}`...`' in 'As shown by {cite}`...`, 600'``."""
    found = match.group(0).replace("\0", "...")
    context = text[max(0, match.start() - 30) : match.end() + 30].replace("\0", "...")
    return f"'{found}' in '{' '.join(context.split())}'"


def check_math(page: str, root: Element, text: str, rendered: bool) -> list[Problem]:
    """Math elements typeset by MathJax (only checkable after a browser ran it); no TeX in the prose."""
    problems = [Problem(page, RAW_MATH, snippet(text, m)) for m in RAW_TEX.finditer(text)]
    math = [e for e in root.walk() if "math" in e.classes and e.tag in ("span", "div")]
    if not math:
        return problems
    if not any("mathjax" in e.attrs.get("src", "").lower() for e in root.walk() if e.tag == "script"):
        problems.append(Problem(page, RAW_MATH, f"{len(math)} math elements but no MathJax script"))
    if rendered:
        for element in math:
            tags = {e.tag for e in element.walk()}
            tex = " ".join(element.text().split())[:80]
            if "mjx-merror" in tags:
                problems.append(Problem(page, RAW_MATH, f"MathJax error in '{tex}'"))
            elif "mjx-container" not in tags:
                problems.append(Problem(page, RAW_MATH, f"not typeset by MathJax: '{tex}'"))
    return problems


def check_myst(page: str, root: Element, text: str) -> list[Problem]:
    """No role, directive or substitution left as text; citations resolved; no docutils error nodes."""
    problems = [Problem(page, RAW_MYST, snippet(text, m)) for m in RAW_MYST_PATTERNS.finditer(text)]
    for element in root.walk():
        if "bibtex-citation" in element.classes and not any(e.tag == "a" for e in element.walk()):
            problems.append(Problem(page, UNRESOLVED_CITATION, f"'{element.text().strip()}' links nowhere"))
        if {"system-message", "problematic"} & set(element.classes):
            problems.append(Problem(page, BUILD_ERROR, " ".join(element.text().split())[:120]))
    return problems


def check_page(page: str, html: str, site: Path, rendered: bool, origin: str | None = None) -> list[Problem]:
    """Every check on one page's HTML: the browser's DOM (``rendered``, the site served at ``origin``) or
    the file as built."""
    root = parse_html(html)
    page_file = site / f"{page}.html"
    text = prose(root)
    return (
        check_resources(page, root, site, page_file, origin)
        + check_links(page, root, site, page_file, origin)
        + check_glue(page, root, text, site)
        + check_math(page, root, text, rendered)
        + check_myst(page, root, text)
    )


# ---------------------------------------------------------------------------------------------------------
# The browser: a local server (so the pages load as they do on GitHub Pages) and one Chromium run per page.


class SiteServer:
    """``with SiteServer(site) as server:`` serves ``site`` at ``server.base`` (``http://127.0.0.1:PORT/``)
    and remembers the paths it could not find, instead of logging every request."""

    def __init__(self, site: Path):
        not_found = self.not_found = []

        class Handler(http.server.SimpleHTTPRequestHandler):
            def send_error(self, code, message=None, explain=None):
                if code == 404:
                    not_found.append(urlsplit(self.path).path)
                super().send_error(code, message, explain)

            def log_message(self, *args):
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(Handler, directory=str(site)))
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.base = f"http://127.0.0.1:{self.server.server_address[1]}/"

    def take_not_found(self) -> list[str]:
        """The paths not found since the last call (not ``/favicon.ico``: browsers ask for it unprompted)."""
        found, self.not_found[:] = list(self.not_found), []
        return [path for path in found if path != "/favicon.ico"]

    def __enter__(self) -> SiteServer:
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.server.shutdown()
        self.server.server_close()


def find_browser() -> str | None:
    return os.environ.get("CHROMIUM") or next(filter(None, map(shutil.which, BROWSERS)), None)


def render(browser: str, url: str, screenshot: Path, timeout: float = 120) -> str:
    """The DOM of ``url`` after its scripts ran (virtual-time budget), and a screenshot of the window."""
    screenshot.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="check-site-") as profile:
        result = subprocess.run(
            [browser, *CHROMIUM_FLAGS, f"--user-data-dir={profile}", f"--screenshot={screenshot}", "--dump-dom", url],
            capture_output=True,
            text=True,
            timeout=timeout,
        )
    if result.returncode != 0 or "<html" not in result.stdout.lower():
        raise RuntimeError(f"exit {result.returncode}: {result.stderr.strip()[-1000:]}")
    return result.stdout


# ---------------------------------------------------------------------------------------------------------
# The whole site.


def toc_pages(toc: Path) -> list[str]:
    """Every document of ``_toc.yml`` (root first), as site paths without ``.html``."""
    from dpo_toxicity.book.toc import toc_documents  # light: reads YAML only

    return toc_documents(toc.parent)


def check_site(
    site: Path, pages: list[str], screenshots: Path | None = None, browser: str | None = None
) -> list[Problem]:
    """Check ``pages`` of ``site``: the built HTML, or with ``browser`` the DOM it renders (+ screenshots)."""
    site = site.resolve()
    problems = [
        Problem(page, BROKEN_LINK, f"the toc lists it but {page}.html was not built")
        for page in pages
        if not (site / f"{page}.html").is_file()
    ]
    pages = [page for page in pages if (site / f"{page}.html").is_file()]
    if (site / "index.html").is_file():  # the redirect to the root page
        index = parse_html((site / "index.html").read_text(encoding="utf-8"))
        problems += check_links("index", index, site, site / "index.html", origin=None)
    if browser is None:
        for page in pages:
            html = (site / f"{page}.html").read_text(encoding="utf-8")
            problems += check_page(page, html, site, rendered=False)
        return problems
    screenshots = screenshots or site.parent / "screenshots"
    with SiteServer(site) as server:
        for page in pages:
            try:
                dom = render(browser, f"{server.base}{page}.html", screenshots / f"{page}.png")
            except (RuntimeError, subprocess.TimeoutExpired) as error:
                problems.append(Problem(page, BROWSER_FAILED, str(error)))
                continue
            (screenshots / f"{page}.dom.html").write_text(dom, encoding="utf-8")
            problems += check_page(page, dom, site, rendered=True, origin=server.base)
            problems += [Problem(page, NOT_FOUND, path) for path in server.take_not_found()]
    return problems


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--site", type=Path, default=Path("_build/html"), help="the built site (_build/html)")
    parser.add_argument("--toc", type=Path, default=Path("_toc.yml"), help="the book's table of contents")
    parser.add_argument(
        "--screenshots", type=Path, default=Path("_build/screenshots"), help="where screenshots and rendered DOMs go"
    )
    parser.add_argument(
        "--no-browser", action="store_true", help="static checks of the built HTML only (no Chromium, no MathJax check)"
    )
    arguments = parser.parse_args(argv)
    if not (arguments.site / "index.html").is_file():
        print(f"no site at {arguments.site}: build it first (make book)", file=sys.stderr)
        return 2
    browser = None
    if not arguments.no_browser:
        browser = find_browser()
        if browser is None:
            print(
                "no Chromium found (set $CHROMIUM, or apt-get install chromium); --no-browser runs the "
                "static checks only",
                file=sys.stderr,
            )
            return 2
    pages = toc_pages(arguments.toc)
    problems = check_site(arguments.site, pages, arguments.screenshots, browser)
    for problem in problems:
        print(problem)
    checked = "rendered in " + Path(browser).name if browser else "static HTML"
    if problems:
        print(f"{len(problems)} problems in {len(pages)} pages ({checked})", file=sys.stderr)
        return 1
    print(f"{len(pages)} pages clean ({checked})" + (f"; screenshots in {arguments.screenshots}" if browser else ""))
    return 0


if __name__ == "__main__":
    sys.exit(main())
