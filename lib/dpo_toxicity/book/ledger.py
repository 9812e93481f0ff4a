"""The claims ledger: each of the paper's claims beside the value the book measured for it, and a verdict.

A chapter records each number it computes with ``myst_nb.glue``; in the executed notebook a glued value is an
output whose ``metadata.scrapbook.name`` is the key and whose ``application/papermill.record/text/plain`` is
the Python ``repr`` of the value. :func:`glued_values` reads them back (figures and other non-literal values
are skipped). Each claim of :data:`~dpo_toxicity.paper_claims.CLAIMS` names the keys that hold our values and
its rules (:mod:`~dpo_toxicity.verdicts`); :func:`assess` reads the values and applies the rules, and
:func:`ledger_table` does so for every claim, on both offline models where a chapter runs both (a claim's
verdict is the models' common verdict, ``partly`` when they disagree, ignoring a model whose values are
missing). :func:`scorer_sensitivity` judges the claims that rest on scored toxicity again with each half of the
offline scorer alone.

Example::

    table = ledger_table(Path("_build/staging/book"), model="smollm2-135m")
    verdict_counts(table)              # {"reproduced": 4, "partly": 3, ...}
    HTML(ledger_html(table))           # in a notebook: the table with clickable chapter links

Limits: a verdict is only as good as its tolerance, which is a judgement stated beside it; numbers measured on
another model with another scorer are compared in relative terms (shares, relative drops), never absolutely.
"""

from __future__ import annotations

import ast
import html
import json
import math
import re
import unicodedata
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from ..paper_claims import CLAIMS, HEADLINES, SECOND_MODEL_DOCUMENT, Claim
from ..verdicts import (
    GENERATION,
    MEDIATION,
    NOT_REPRODUCED,
    NOT_SPECIFIC,
    NOT_TESTABLE,
    PARTLY,
    REPRODUCED,
    VERDICTS,
    Verdict,
    by_metric,
    combine,
)

RECORD = "application/papermill.record/text/plain"


class MissingChapterError(FileNotFoundError):
    """An executed chapter notebook the ledger needs has not been produced yet."""


# ---------------------------------------------------------------------------------------------------------
# Reading glued values.


def _literal(text: str) -> object:
    """The value a glue repr stands for; raises ``ValueError`` for a repr that is not a literal (a figure)."""
    try:
        return ast.literal_eval(text)
    except (ValueError, SyntaxError):
        pass
    if text in ("nan", "inf", "-inf"):
        return float(text)
    numpy_scalar = re.fullmatch(r"np\.(?:float|int)\d*\((.*)\)", text)  # repr of a numpy scalar (numpy >= 2)
    if numpy_scalar:
        return _literal(numpy_scalar.group(1))
    raise ValueError(f"not a literal: {text[:60]!r}")


def glued_values(path: Path | str) -> dict[str, object]:
    """Every value glued in the executed notebook ``path``, by key; non-literal values (figures) are skipped.

    Raises :class:`MissingChapterError`, naming the chapter to run, when the file does not exist, and
    ``ValueError`` when it exists but is not an executed notebook with well-formed glue outputs.
    """
    path = Path(path)
    if not path.is_file():
        document = f"book/{path.stem}"
        raise MissingChapterError(
            f"{path} does not exist: run chapter {document} first (python -m dpo_toxicity.book --chapters {document})."
        )
    notebook = json.loads(path.read_text(encoding="utf-8"))
    if not isinstance(notebook, dict) or not isinstance(notebook.get("cells"), list):
        raise ValueError(f"{path} is not a notebook: it has no list of cells.")
    values = {}
    for cell in notebook["cells"]:
        for output in cell.get("outputs", []):
            scrapbook = output.get("metadata", {}).get("scrapbook")
            if scrapbook is None:
                continue
            if "name" not in scrapbook or RECORD not in output.get("data", {}):
                raise ValueError(f"{path}: a glue output lacks its name or its {RECORD} record.")
            try:
                values[scrapbook["name"]] = _literal(output["data"][RECORD])
            except ValueError:
                continue
    return values


def heading_anchor(heading: str) -> str:
    """The HTML id Sphinx gives a section titled ``heading`` (docutils' ``make_id``)."""
    ascii_text = unicodedata.normalize("NFKD", heading.lower()).encode("ascii", "ignore").decode("ascii")
    return re.sub(r"^[-0-9]+|-+$", "", re.sub(r"[^a-z0-9]+", "-", ascii_text))


def notebook_headings(path: Path) -> list[str]:
    """The Markdown headings (any level) of a notebook's Markdown cells, without their ``#`` marks."""
    cells = json.loads(Path(path).read_text(encoding="utf-8"))["cells"]
    headings = []
    for cell in cells:
        if cell.get("cell_type") == "markdown":
            source = "".join(cell["source"]) if isinstance(cell["source"], list) else cell["source"]
            headings += [
                m.group(1).replace("`", "").replace("*", "").strip()
                for m in re.finditer(r"^#{1,6}\s+(.+)$", source, re.MULTILINE)
            ]
    return headings


# ---------------------------------------------------------------------------------------------------------
# Assessing claims against a folder of executed chapters.


class ExecutedChapters:
    """The glued values of the executed chapters in one folder (``<folder>/<name>.ipynb``), read once each."""

    def __init__(self, folder: Path):
        self.folder = Path(folder)
        self._read: dict[str, dict | MissingChapterError] = {}

    def path(self, document: str) -> Path:
        return self.folder / f"{Path(document).name}.ipynb"

    def values(self, document: str) -> dict:
        """The document's glued values; raises :class:`MissingChapterError` if it has not run."""
        if document not in self._read:
            try:
                self._read[document] = glued_values(self.path(document))
            except MissingChapterError as missing:
                self._read[document] = missing
        found = self._read[document]
        if isinstance(found, MissingChapterError):
            raise found
        return found


class ScoredWith(ExecutedChapters):
    """The executed chapters as one of the offline scorer's components alone would have left them: every glued
    ``key`` that a chapter also glued as ``key__<component>`` (toxicity re-scored by that component) reads that
    value instead; every other value is unchanged."""

    def __init__(self, chapters: ExecutedChapters, component: str):
        self.chapters, self.component = chapters, component
        self.folder = chapters.folder

    def values(self, document: str) -> dict:
        found = self.chapters.values(document)
        suffix = f"__{self.component}"
        return {**found, **{key.removesuffix(suffix): value for key, value in found.items() if key.endswith(suffix)}}


def scorer_sensitivity(folder: Path | str, components: tuple[str, ...] = ("profanity", "ridge")) -> pd.DataFrame:
    """Every claim whose values depend on the toxicity scorer (a chapter glued one of its keys per scorer
    component), judged again with each component alone: one row per claim, the book's verdict (the mean of both
    components) and one column per component, and ``changes``, whether any component's verdict differs."""
    chapters = ExecutedChapters(Path(folder))
    views = {component: ScoredWith(chapters, component) for component in components}
    rows = []
    for claim in CLAIMS:
        located = claim.locations() + (claim.locations(second=True) if claim.second_model else [])
        try:
            sensitive = any(
                f"{key}__{component}" in chapters.values(document)
                for document, key, _ in located
                for component in components
            )
        except MissingChapterError:
            continue
        if not sensitive:
            continue
        verdicts = {"book's scorer": _claim_verdict(claim, chapters).label}
        verdicts |= {f"{component} alone": _claim_verdict(claim, view).label for component, view in views.items()}
        rows.append({"id": claim.id, **verdicts, "changes": len(set(verdicts.values())) > 1})
    return pd.DataFrame(rows).set_index("id") if rows else pd.DataFrame(columns=["changes"])


def _claim_verdict(claim: Claim, chapters: ExecutedChapters) -> Verdict:
    """A claim's verdict over both models (:func:`combine`), as the ledger gives it."""
    first = assess(claim, chapters).verdict
    if not (claim.second_model and _second_model_name(chapters)):
        return first
    return combine([first, assess(claim, chapters, second=True).verdict])


@dataclass(frozen=True)
class Assessment:
    """One model's values for a claim (``None`` where missing) and its verdict."""

    values: dict[str, float | str | None]
    verdict: Verdict


def _read(
    claim: Claim, locations: list[tuple[str, str, str]], chapters: ExecutedChapters
) -> tuple[dict[str, float | str | None], list[str]]:
    """The values at ``locations`` by name (``None`` where missing) and why each missing one is missing."""
    values, missing = {}, []
    for document, key, name in locations:
        try:
            value = chapters.values(document).get(key)
        except MissingChapterError:
            values[name] = None
            missing.append(f"{document} has not been run")
            continue
        number = isinstance(value, (int, float)) and not isinstance(value, bool)
        if name in claim.text_keys and (isinstance(value, str) or number and math.isnan(value)):
            values[name] = value if isinstance(value, str) else "none"
        elif name in claim.optional_keys and (value is None or number and math.isnan(value)):
            values[name] = math.nan
        elif number and not math.isnan(value):
            values[name] = float(value)
        else:
            values[name] = None
            missing.append(f"{document} glues no {'text' if name in claim.text_keys else 'number'} {key!r}")
    return values, missing


def _judged(rule: Callable[[Mapping[str, float]], Verdict], values: dict, missing: list[str]) -> Verdict:
    return Verdict(NOT_TESTABLE, "; ".join(dict.fromkeys(missing))) if missing else rule(values)


def assess(claim: Claim, chapters: ExecutedChapters, second: bool = False) -> Assessment:
    """Read one model's values for ``claim`` and apply its rule (and its mediation rule, combined by
    :func:`by_metric`); a metric with a missing chapter or key is not testable."""
    values, missing = _read(claim, claim.locations(second), chapters)
    verdict = _judged(claim.rule, values, missing)
    if claim.mediation_rule is not None:
        mediation_values, mediation_missing = _read(claim, claim.mediation_locations(second), chapters)
        verdict = by_metric(verdict, _judged(claim.mediation_rule, mediation_values, mediation_missing))
        values = {**values, **mediation_values}
    return Assessment(values, verdict)


class GluedValues(ExecutedChapters):
    """The values one chapter has glued so far, held in memory as if read from its executed notebook: what a
    running chapter hands the ledger to show the ledger's own verdict (:func:`chapter_verdict`)."""

    def __init__(self, document: str, values: Mapping[str, object]):
        self.folder, self.document, self._values = Path("."), document, dict(values)

    def values(self, document: str) -> dict:
        if document != self.document:
            raise MissingChapterError(f"{document} is another chapter than {self.document}, which is running.")
        return self._values


def chapter_verdict(
    claim_id: str, document: str, values: Mapping[str, object], metric: str | None = None, second: bool = False
) -> Verdict:
    """The ledger's verdict of one claim on one model, from the ``values`` a chapter (``document``) has glued:
    on one metric (``GENERATION`` or ``MEDIATION``) or, with ``metric=None``, on both as the ledger combines them.
    The same reading and rules as :func:`ledger_table`, so a chapter never judges a claim its own way."""
    claim = next((claim for claim in CLAIMS if claim.id == claim_id), None)
    if claim is None:
        raise KeyError(f"No claim {claim_id!r} in dpo_toxicity.paper_claims.CLAIMS.")
    chapters = GluedValues(document, values)
    if metric is None:
        return assess(claim, chapters, second).verdict
    if metric == GENERATION:
        return _judged(claim.rule, *_read(claim, claim.locations(second), chapters))
    if metric == MEDIATION and claim.mediation_rule is not None:
        return _judged(claim.mediation_rule, *_read(claim, claim.mediation_locations(second), chapters))
    raise ValueError(
        f"Claim {claim_id!r} has no {metric!r} metric; use {GENERATION!r}"
        + (f" or {MEDIATION!r}." if claim.mediation_rule else ".")
    )


def _shown(values: Mapping[str, float | str | None], names) -> str:
    if all(values[name] is None for name in names):
        return "—"

    def shown(value: float | str | None) -> str:
        return "missing" if value is None else value if isinstance(value, str) else format(value, ".3g")

    return ", ".join(f"{name} = {shown(values[name])}" for name in names)


def _chapter_link(claim: Claim, chapters: ExecutedChapters) -> str:
    """An HTML link to the claim's chapter (a sibling page of the ledger), at its section where it exists."""
    name = Path(claim.document).name
    path = chapters.path(claim.document)
    if not path.is_file():
        return html.escape(name)
    if claim.section and claim.section in notebook_headings(path):
        href, label = f"{name}.html#{heading_anchor(claim.section)}", f"{name} § {claim.section}"
    else:
        href, label = f"{name}.html", name
    return f'<a href="{html.escape(href)}">{html.escape(label)}</a>'


SECOND_MODEL = "second model"


def _second_model_name(chapters: ExecutedChapters) -> str | None:
    """The second model's name; ``None`` where the chapter that runs it ran without one (a profile without a second
    model); "second model" where that chapter has not run, so that its claims say so."""
    try:
        return chapters.values(SECOND_MODEL_DOCUMENT).get("second_model_name")
    except MissingChapterError:
        return SECOND_MODEL


def _unmeasured(claim: Claim, second_name: str | None) -> str:
    """What the second model's column says where it has no values for ``claim``."""
    return "no second model in this run" if claim.second_model and second_name is None else "not measured on this model"


def ledger_table(folder: Path | str, model: str = "default model") -> pd.DataFrame:
    """The ledger: one row per claim of :data:`CLAIMS`, judged on the executed chapters in ``folder``.

    ``folder`` holds the chapters' executed notebooks side by side (``02_dpo.ipynb``, ...), as the book's
    staging ``book/`` folder does; ``model`` labels the default model's column. The ``chapter`` column is
    HTML (render with :func:`ledger_html`); every other column is plain text.
    """
    chapters = ExecutedChapters(Path(folder))
    second_name = _second_model_name(chapters)
    first_column, second_column = f"ours ({model})", f"ours ({second_name or SECOND_MODEL})"
    rows = []
    for claim in CLAIMS:
        first = assess(claim, chapters)
        second = assess(claim, chapters, second=True) if claim.second_model and second_name else None
        if second:
            verdict = combine(
                [
                    Verdict(first.verdict.label, f"{model}: {first.verdict.reason}"),
                    Verdict(second.verdict.label, f"{second_name}: {second.verdict.reason}"),
                ]
            )
        else:
            verdict = first.verdict
        located = [name for _, _, name in claim.locations()]
        names = list(dict.fromkeys(located[: len(claim.keys)] + [name for _, _, name in claim.mediation_locations()]))
        null_names = located[len(claim.keys) :]
        null = claim.null_control
        if null_names:
            null += f". {model}: {_shown(first.values, null_names)}"
            if second:
                null += f"; {second_name}: {_shown(second.values, null_names)}"
        tolerance = claim.tolerance
        if claim.mediation_rule is not None:
            tolerance = f"{GENERATION} metric: {tolerance}; {MEDIATION} metric: {claim.mediation_tolerance}"
        rows.append(
            {
                "id": claim.id,
                "claim": claim.statement,
                "paper": f"{claim.source}: {claim.paper_text}",
                first_column: _shown(first.values, names),
                second_column: _shown(second.values, names) if second else _unmeasured(claim, second_name),
                "tolerance": tolerance,
                "null control": null or "none",
                "verdict": verdict.label,
                "why": verdict.reason,
                "chapter": _chapter_link(claim, chapters),
            }
        )
    return pd.DataFrame(rows).set_index("id")


COMPARED = "verdict elsewhere"  # with_compared_verdicts' column: the other run's verdict
DIFFERS = "differs"


def with_compared_verdicts(table: pd.DataFrame, other: pd.DataFrame, label: str) -> pd.DataFrame:
    """``table`` with each claim's verdict in ``other`` (the ledger of another run, named ``label``, such as
    ``"ci run"``) in a column ``verdict elsewhere`` (``"<label>: <verdict>"``) and a boolean column ``differs``.
    A claim ``other`` lacks reads ``"<label>: not judged"`` and differs."""
    elsewhere = other["verdict"].reindex(table.index)
    return table.assign(
        **{
            COMPARED: [f"{label}: {'not judged' if pd.isna(verdict) else verdict}" for verdict in elsewhere],
            DIFFERS: (elsewhere != table["verdict"]).to_numpy(),
        }
    )


def _compact_html(rows: list[dict[str, str]]) -> str:
    """Rows of ready HTML cells as a table whose cells are top-left aligned."""
    rendered = pd.DataFrame(rows).to_html(escape=False, index=False, classes="claims-ledger", border=0)
    top_left = 'style="text-align: left; vertical-align: top;"'
    return rendered.replace('<tr style="text-align: right;">', f"<tr {top_left}>").replace("<td>", f"<td {top_left}>")


def ledger_html(table: pd.DataFrame) -> str:
    """The ledger as a compact HTML table, three columns that stack the table's ten (the claim with the paper's
    value and the chapter link; our values per model; the verdict with its reason, tolerance and null control,
    and another run's verdict where :func:`with_compared_verdicts` added it, flagged where it differs), text
    escaped and the ``chapter`` links kept clickable."""
    ours = [column for column in table.columns if column.startswith("ours (")]
    rows = []
    for claim_id, row in table.iterrows():
        text = {column: html.escape(str(value)) for column, value in row.items() if column != "chapter"}
        elsewhere = ""
        if COMPARED in row:
            flag = " <b>⚠ differs</b>" if row[DIFFERS] else ""
            elsewhere = f"<br><i>{text[COMPARED]}</i>{flag}"
        rows.append(
            {
                "claim": (
                    f"<b>{html.escape(str(claim_id))}</b><br>{text['claim']}<br><i>paper</i>: {text['paper']}"
                    f"<br>{row['chapter']}"
                ),
                "ours": "<br>".join(f"<i>{html.escape(column[6:-1])}</i>: {text[column]}" for column in ours),
                "verdict": (
                    f"<b>{text['verdict']}</b>: {text['why']}{elsewhere}<br><i>tolerance</i>: "
                    f"{text['tolerance']}<br><i>null control</i>: {text['null control']}"
                ),
            }
        )
    return _compact_html(rows)


def verdict_counts(table: pd.DataFrame) -> dict[str, int]:
    """How many claims got each verdict, in the order of :data:`VERDICTS` (zeros included)."""
    counts = table["verdict"].value_counts()
    return {label: int(counts.get(label, 0)) for label in VERDICTS}


# The glue keys under which the reading pages cite the verdict counts.
COUNT_KEYS = {
    REPRODUCED: "claims_reproduced",
    PARTLY: "claims_partly",
    NOT_REPRODUCED: "claims_not_reproduced",
    NOT_SPECIFIC: "claims_not_specific",
    NOT_TESTABLE: "claims_not_testable",
}


def count_values(table: pd.DataFrame) -> dict[str, int]:
    """:func:`verdict_counts` under :data:`COUNT_KEYS`, and the number of claims as ``claims_total``."""
    return {COUNT_KEYS[label]: count for label, count in verdict_counts(table).items()} | {"claims_total": len(table)}


def headline_table(table: pd.DataFrame, folder: Path | str) -> pd.DataFrame:
    """The paper's headline claims (:data:`~dpo_toxicity.paper_claims.HEADLINES`) at a glance: the claim, the
    paper's value, the number that answers it on each model with its 95 % interval, and the ledger's verdict
    from ``table`` (:func:`ledger_table` of the same ``folder``)."""
    chapters = ExecutedChapters(Path(folder))
    second_name = _second_model_name(chapters)
    claims = {claim.id: claim for claim in CLAIMS}
    ours = [column for column in table.columns if column.startswith("ours (")]
    rows = []
    for headline in HEADLINES:
        claim = claims[headline.claim]
        row = {
            "id": claim.id,
            "claim": claim.statement,
            "paper": f"{claim.source}: {claim.paper_text}",
            "measure": headline.measure,
        }
        for column, second in zip(ours, (False, True)):
            document, key, _ = claim.located(headline.key, headline.key, second)
            if second and not (claim.second_model and second_name):
                row[column] = "not measured" if not claim.second_model else "no second model in this run"
                continue
            try:
                values = chapters.values(document)
            except MissingChapterError:
                values = {}
            value = values.get(key)
            if not isinstance(value, (int, float)) or isinstance(value, bool) or math.isnan(value):
                row[column] = "missing"
            elif headline.interval:
                low, high = (
                    values.get(claim.located(f"{headline.key}_{end}", f"{headline.key}_{end}", second)[1], math.nan)
                    for end in ("low", "high")
                )
                row[column] = f"{value:.2f} [{low:.2f}, {high:.2f}]"
            else:
                row[column] = f"{value:.3g}"
        row["verdict"] = table.loc[claim.id, "verdict"]
        rows.append(row)
    return pd.DataFrame(rows).set_index("id")


def headline_html(headlines: pd.DataFrame) -> str:
    """:func:`headline_table` as a compact HTML table: the claim with the paper's value, what our number
    measures, our number per model and the verdict; text escaped."""
    ours = [column for column in headlines.columns if column.startswith("ours (")]
    rows = [
        {
            "claim": (
                f"<b>{html.escape(str(claim_id))}</b><br>{html.escape(row['claim'])}<br><i>paper</i>: "
                f"{html.escape(row['paper'])}"
            ),
            "our number": html.escape(row["measure"]),
            **{html.escape(column): html.escape(str(row[column])) for column in ours},
            "verdict": f"<b>{html.escape(row['verdict'])}</b>",
        }
        for claim_id, row in headlines.iterrows()
    ]
    return _compact_html(rows)
