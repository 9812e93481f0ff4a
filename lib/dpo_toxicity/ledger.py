"""The claims ledger: each of the paper's claims beside the value the book measured for it, and a verdict.

A chapter records each number it computes with ``myst_nb.glue``; in the executed notebook a glued value is an
output whose ``metadata.scrapbook.name`` is the key and whose ``application/papermill.record/text/plain`` is
the Python ``repr`` of the value. :func:`glued_values` reads them back (figures and other non-literal values
are skipped). A :class:`Claim` names the paper's statement and value, the chapter and glue keys that hold ours,
the tolerance in words and a **rule**: a small function from those values to a :class:`Verdict`, one of

* ``reproduced``: our value meets the stated tolerance;
* ``partly``: it points the paper's way but misses the tolerance, or the two models disagree;
* ``not reproduced``: it contradicts the claim;
* ``not specific to toxicity``: it matches, but random directions give the same (the null control of
  :mod:`~dpo_toxicity.null_control`), so it says how DPO moves activations, not something about toxicity;
* ``not testable here``: a value is missing (the chapter has not run, or does not glue the key yet) or the
  evaluation cannot decide (DPO's own drop is not positive on the prompts a share of it is measured on).

Claims tested on both offline models read the second model's values from :data:`SECOND_MODEL_DOCUMENT`, under
the same keys with the suffix ``_second``; a claim's verdict is the models' common verdict, ``partly`` when
they disagree, and ignores a model whose values are missing.

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

REPRODUCED = "reproduced"
PARTLY = "partly"
NOT_REPRODUCED = "not reproduced"
NOT_SPECIFIC = "not specific to toxicity"
NOT_TESTABLE = "not testable here"
VERDICTS = (REPRODUCED, PARTLY, NOT_REPRODUCED, NOT_SPECIFIC, NOT_TESTABLE)

SECOND_MODEL_DOCUMENT = "book/05_patching"
SECOND_SUFFIX = "_second"
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
            f"{path} does not exist: run chapter {document} first "
            f"(python -m dpo_toxicity.book --chapters {document})."
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
            headings += [m.group(1).replace("`", "").replace("*", "").strip()
                         for m in re.finditer(r"^#{1,6}\s+(.+)$", source, re.MULTILINE)]
    return headings


# ---------------------------------------------------------------------------------------------------------
# Verdicts and the rules that give them.

@dataclass(frozen=True)
class Verdict:
    """One of :data:`VERDICTS` and why."""

    label: str
    reason: str

    def __post_init__(self) -> None:
        if self.label not in VERDICTS:
            raise ValueError(f"Unknown verdict {self.label!r}; use one of {VERDICTS}.")


def against_null(verdict: Verdict, z: float, what: str) -> Verdict:
    """Temper a verdict by a null-control z-score: |z| < 2 is not specific, 2 to 3 marginal (partly)."""
    if verdict.label not in (REPRODUCED, PARTLY):
        return verdict
    if abs(z) < 2:
        return Verdict(NOT_SPECIFIC, f"{verdict.reason}; but random directions give the same {what} (|z| = {abs(z):.1f} < 2)")
    if abs(z) < 3:
        return Verdict(PARTLY, f"{verdict.reason}; {what} only marginally apart from random directions (|z| = {abs(z):.1f})")
    return Verdict(verdict.label, f"{verdict.reason}; {what} apart from random directions (|z| = {abs(z):.1f})")


def dpo_drop_guard(base: float, dpo: float, low: float | None = None) -> Verdict | None:
    """``not testable`` when DPO does not lower toxicity on the prompts a share of its drop is taken on:
    its mean drop ``base - dpo`` is not positive or, where given, the low end ``low`` of its interval is not."""
    if base - dpo <= 0:
        return Verdict(NOT_TESTABLE, f"DPO does not lower toxicity on this evaluation set ({base:.3f} → {dpo:.3f}), "
                                     "so a share of its drop is undefined")
    if low is not None and low <= 0:
        return Verdict(NOT_TESTABLE, f"DPO's drop on this evaluation set ({base:.3f} → {dpo:.3f}) has a 95 % "
                                     "interval that includes 0, so a share of it is noise")
    return None


def dpo_lowers_toxicity(v: Mapping[str, float]) -> Verdict:
    """A drop whose 95 % interval excludes 0, at least half the paper's relative drop, perplexity +15 % at most."""
    drop, ppl_rise = v["tox_base"] - v["tox_dpo"], v["ppl_dpo"] / v["ppl_base"] - 1
    if drop <= 0:
        return Verdict(NOT_REPRODUCED, f"DPO does not lower mean toxicity ({v['tox_base']:.3f} → {v['tox_dpo']:.3f})")
    if v["tox_drop_low"] <= 0:
        return Verdict(NOT_TESTABLE, "the 95 % interval of the toxicity drop includes 0")
    relative = drop / v["tox_base"]
    if ppl_rise > 0.15:
        return Verdict(PARTLY, f"toxicity falls by {relative:.0%}, but perplexity rises by {ppl_rise:.0%}")
    if relative < 0.27:
        return Verdict(PARTLY, f"toxicity falls significantly but only by {relative:.0%} relative")
    return Verdict(REPRODUCED, f"toxicity falls by {relative:.0%} at {ppl_rise:+.1%} perplexity")


def probe_accuracy(v: Mapping[str, float]) -> Verdict:
    """Held-out accuracy at most 10 points below the paper's 94 % (20 points: partly)."""
    accuracy = v["probe_test_accuracy"]
    if accuracy >= 0.84:
        return Verdict(REPRODUCED, f"held-out accuracy {accuracy:.1%}")
    if accuracy >= 0.74:
        return Verdict(PARTLY, f"held-out accuracy {accuracy:.1%}, more than 10 points below 94 %")
    return Verdict(NOT_REPRODUCED, f"held-out accuracy {accuracy:.1%}")


def ablation_falls_short(v: Mapping[str, float]) -> Verdict:
    """DPO's drop's interval above 0; every ablation row and the patching row below 80 % of it (chapter 4's
    rule)."""
    guard = dpo_drop_guard(v["table_tox_base"], v["table_tox_dpo"], v["dpo_drop_low"])
    if guard:
        return guard
    best = max(v["best_ablation_share"], v["share_patch_dampened"])
    if best < 0.8:
        return Verdict(REPRODUCED, f"the best ablation or patching row recovers {best:.0%} of DPO's drop")
    return Verdict(NOT_REPRODUCED, f"a row recovers {best:.0%} of DPO's drop")


def tp_share(v: Mapping[str, float]) -> Verdict:
    """TP− share within 10 points of 31.8 % (20 points: partly), then the null control."""
    share, gap = v["share_tp"], abs(v["share_tp"] - 0.318)
    if gap > 0.20:
        return Verdict(NOT_REPRODUCED, f"TP− carries {share:.1%}")
    verdict = Verdict(REPRODUCED if gap <= 0.10 else PARTLY, f"TP− carries {share:.1%}")
    return against_null(verdict, v["max_share_abs_z"], "group shares")


def all_groups_contribute(v: Mapping[str, float]) -> Verdict:
    """Every group's share at least 5 % (above 0: partly), then the null control."""
    smallest = min(v["share_tp"], v["share_tn"], v["share_ap"], v["share_an"])
    if smallest <= 0:
        return Verdict(NOT_REPRODUCED, f"a group carries {smallest:.1%}")
    verdict = Verdict(REPRODUCED if smallest >= 0.05 else PARTLY, f"the smallest share is {smallest:.1%}")
    return against_null(verdict, v["max_share_abs_z"], "group shares")


def late_layers_dominate(v: Mapping[str, float]) -> Verdict:
    """The last third of the layers carries more than half of the reduction (more than a third: partly)."""
    share = v["late_layer_share"]
    if share > 0.5:
        return Verdict(REPRODUCED, f"the last third of the layers carries {share:.0%}")
    if share > 1 / 3:
        return Verdict(PARTLY, f"the last third carries {share:.0%}, more than its proportion but not most")
    return Verdict(NOT_REPRODUCED, f"the last third carries {share:.0%}")


def top_toxic_negative(v: Mapping[str, float]) -> Verdict:
    """More than half of the 100 most toxic neurons have a negative mean activation before DPO."""
    share = v["top100_negative_share"]
    label = REPRODUCED if share > 0.5 else NOT_REPRODUCED
    return Verdict(label, f"{share:.0%} of the top 100 are negatively activated")


def net_small_part(v: Mapping[str, float]) -> Verdict:
    """Net / positive total within 10 points of 15 % (positive, below 50 %: partly), then the null control."""
    ratio = v["net_over_positive"]
    if ratio <= 0 or ratio >= 0.5:
        return Verdict(NOT_REPRODUCED, f"net reduction = {ratio:.0%} of the positive total")
    verdict = Verdict(REPRODUCED if abs(ratio - 0.15) <= 0.10 else PARTLY,
                      f"net reduction = {ratio:.0%} of the positive total")
    return against_null(verdict, v["net_delta_z"], "net reduction")


def change_uncorrelated(v: Mapping[str, float]) -> Verdict:
    """|r| at most 0.05 (0.1: partly)."""
    r = v["r_change_cosine"]
    label = REPRODUCED if abs(r) <= 0.05 else PARTLY if abs(r) <= 0.1 else NOT_REPRODUCED
    return Verdict(label, f"r = {r:.3f}")


def _small_share(share: float, what: str) -> Verdict:
    if 0.025 <= share <= 0.24:
        return Verdict(REPRODUCED, f"{what} explain {share:.1%}, inside 2.5–24 %")
    if 0 <= share < 0.5:
        return Verdict(PARTLY, f"{what} explain {share:.1%}, small but outside 2.5–24 %")
    return Verdict(NOT_REPRODUCED, f"{what} explain {share:.1%}")


def toxic_share_projection(v: Mapping[str, float]) -> Verdict:
    """Inside 2.5–24 % (0 to 50 %: partly)."""
    return _small_share(v["toxic_share_projection"], "the top 128 dampened toxic neurons")


def toxic_share_patching(v: Mapping[str, float]) -> Verdict:
    """DPO's drop's interval above 0; then inside 2.5–24 % (0 to 50 %: partly)."""
    return dpo_drop_guard(v["tox_base_eval"], v["tox_dpo_eval"], v["dpo_drop_low"]) or _small_share(
        v["toxic_share_patching"], "patched toxic neurons")


def group_patching_matches(v: Mapping[str, float]) -> Verdict:
    """DPO's drop's interval above 0; patching all four groups recovers 80–120 % of it or its interval holds
    100 % (50–150 %: partly), at a perplexity at most 1.5 times DPO's (else partly: a broken model is not
    toxic either); an interval that holds both 0 and 100 % cannot decide."""
    guard = dpo_drop_guard(v["tox_base_eval"], v["tox_dpo_eval"], v["dpo_drop_low"])
    if guard:
        return guard
    share, low, high = v["share_patch_all_groups"], v["share_patch_all_groups_low"], v["share_patch_all_groups_high"]
    reason = f"patching all four groups recovers {share:.0%} of DPO's drop (95 % interval {low:.0%} to {high:.0%})"
    if low <= 0 and high >= 1:
        return Verdict(NOT_TESTABLE, f"{reason}: the interval holds both 0 and 100 %")
    if not (0.8 <= share <= 1.2 or low <= 1 <= high):
        return Verdict(PARTLY if 0.5 <= share <= 1.5 else NOT_REPRODUCED, reason)
    if v["ppl_patch_all_groups"] > 1.5 * v["ppl_dpo_eval"]:
        return Verdict(PARTLY, f"{reason}, but only while breaking the model: perplexity "
                               f"{v['ppl_patch_all_groups']:.4g} against DPO's {v['ppl_dpo_eval']:.4g}")
    return Verdict(REPRODUCED, reason)


def editing_beats_dpo(v: Mapping[str, float]) -> Verdict:
    """DPO's drop's interval above 0; edited toxicity below DPO's at perplexity at most 10 % above DPO's."""
    guard = dpo_drop_guard(v["tox_base_eval"], v["tox_dpo_eval"], v["dpo_drop_low"])
    if guard:
        return guard
    if v["tox_edit_best"] >= v["tox_dpo_eval"]:
        return Verdict(NOT_REPRODUCED, f"editing reaches {v['tox_edit_best']:.3f}, DPO {v['tox_dpo_eval']:.3f}")
    reason = (f"editing {v['tox_edit_best']:.3f} at perplexity {v['ppl_edit_best']:.2f}; "
              f"DPO {v['tox_dpo_eval']:.3f} at {v['ppl_dpo_eval']:.2f}")
    return Verdict(REPRODUCED if v["ppl_edit_best"] <= 1.1 * v["ppl_dpo_eval"] else PARTLY, reason)


def scaled_keys_retoxify(v: Mapping[str, float]) -> Verdict:
    """DPO's drop positive; ×10 recovers at least half of it, perplexity at most 1.5 × DPO's (else partly)."""
    guard = dpo_drop_guard(v["table_tox_base"], v["table_tox_dpo"])
    if guard:
        return guard
    recovered = (v["tox_scale_keys_x10"] - v["table_tox_dpo"]) / (v["table_tox_base"] - v["table_tox_dpo"])
    if recovered <= 0:
        return Verdict(NOT_REPRODUCED, f"×10 does not raise toxicity ({recovered:.0%} of DPO's drop undone)")
    reason = f"×10 undoes {recovered:.0%} of DPO's drop at perplexity {v['ppl_scale_keys_x10']:.4g}"
    if v["ppl_scale_keys_x10"] > 1.5 * v["ppl_dpo"]:
        return Verdict(PARTLY, f"{reason}: the edit breaks the model")
    return Verdict(REPRODUCED if recovered >= 0.5 else PARTLY, reason)


def combine(verdicts: list[Verdict]) -> Verdict:
    """One verdict from the models' verdicts: the common one, ``partly`` if they differ; missing ones ignored."""
    testable = [v for v in verdicts if v.label != NOT_TESTABLE]
    reasons = "; ".join(v.reason for v in verdicts)
    if not testable:
        return Verdict(NOT_TESTABLE, reasons)
    labels = {v.label for v in testable}
    if len(labels) == 1:
        return Verdict(labels.pop(), reasons)
    return Verdict(PARTLY, f"the models disagree: {reasons}")


# ---------------------------------------------------------------------------------------------------------
# Claims.

@dataclass(frozen=True)
class Claim:
    """One claim of the paper and where the book measures it.

    ``keys`` and ``null_keys`` are glue keys of ``document`` (a key written ``book/02_dpo::ppl_dpo`` is read
    from that other chapter). ``rule`` sees them all by their bare names. ``section`` is the heading of
    ``document`` the ledger links to. With ``second_model`` the second offline model's values are read from
    :data:`SECOND_MODEL_DOCUMENT`: the keys ``second_keys`` (one per key, same order; by default ``keys``
    themselves) and ``null_keys``, each with the suffix ``_second``.
    """

    id: str
    statement: str
    source: str
    paper_text: str
    paper_number: float | None
    document: str
    keys: tuple[str, ...]
    tolerance: str
    rule: Callable[[Mapping[str, float]], Verdict]
    null_keys: tuple[str, ...] = ()
    null_control: str = ""
    section: str | None = None
    second_model: bool = False
    second_keys: tuple[str, ...] = ()

    def locations(self, second: bool = False) -> list[tuple[str, str, str]]:
        """``(document, glue key, name the rule sees)`` for every value the claim needs, for one model."""
        found = []
        second_keys = (self.second_keys or self.keys) + self.null_keys
        for key, second_key in zip(self.keys + self.null_keys, second_keys, strict=True):
            document, _, name = key.rpartition("::")
            if second:
                found.append((SECOND_MODEL_DOCUMENT, second_key.rpartition("::")[2] + SECOND_SUFFIX, name))
            else:
                found.append((document or self.document, name, name))
        return found


_SHARE_NULL = ("random unit directions in place of the probe (chapter 3): the largest |z| of the four group "
               "shares; |z| < 2: not specific to toxicity, 2 to 3: marginal")

CLAIMS: tuple[Claim, ...] = (
    Claim(
        id="dpo-lowers-toxicity",
        statement="DPO lowers toxicity at a small perplexity cost.",
        source="Lee et al. Table 2 = v1 Table 1",
        paper_text="toxicity 0.453 → 0.208 (−54 % relative), perplexity 21.70 → 23.34 (+7.6 %), GPT-2-medium",
        paper_number=0.54,
        document="book/02_dpo",
        keys=("tox_base", "tox_dpo", "tox_drop_low", "ppl_base", "ppl_dpo"),
        tolerance="drop with 95 % interval above 0, at least half the paper's relative drop (27 %), "
                  "perplexity rise at most 15 %",
        rule=dpo_lowers_toxicity,
        section="Base vs DPO",
        second_model=True,
        second_keys=("tox_base_eval", "tox_dpo_eval", "dpo_drop_low", "ppl_base_eval", "ppl_dpo_eval"),
    ),
    Claim(
        id="probe-accuracy",
        statement="A linear probe on the last-layer residual stream separates toxic from non-toxic comments.",
        source="Lee et al. §3",
        paper_text="94 % validation accuracy on Jigsaw, GPT-2-medium",
        paper_number=0.94,
        document="book/01_probe",
        keys=("probe_test_accuracy",),
        tolerance="held-out accuracy at most 10 percentage points below 94 % (20 points: partly)",
        rule=probe_accuracy,
        section="Features, training and held-out evaluation",
        second_model=True,
    ),
    Claim(
        id="ablation-falls-short",
        statement="Ablating the top toxic neurons, or patching the dampened toxic ones, falls short of DPO.",
        source="v1 Table 1",
        paper_text="ablate top 200 toxic neurons: 20 % of DPO's drop (0.453 → 0.405); best ablation row 55 %; "
                   "patch all dampened toxic neurons: 48 % (0.335)",
        paper_number=0.20,
        document="book/04_ablation",
        keys=("table_tox_base", "table_tox_dpo", "dpo_drop_low", "share_ablate_top200", "best_ablation_share",
              "share_patch_dampened"),
        tolerance="every ablation row and the patching row below 80 % of DPO's drop; DPO's drop on the "
                  "chapter's prompts must have a 95 % interval above 0",
        rule=ablation_falls_short,
    ),
    Claim(
        id="tp-share",
        statement="Only about a third of the reduction comes from dampened toxic neurons (TP−).",
        source="v1 abstract; v3 per-model shares",
        paper_text="31.8 % (GPT-2-medium); v3 26–34 % across four models",
        paper_number=0.318,
        document="book/03_attribution",
        keys=("share_tp",),
        null_keys=("share_tp_null_mean", "max_share_abs_z"),
        null_control=_SHARE_NULL,
        tolerance="within 10 percentage points of 31.8 % (20: partly); then the null control",
        rule=tp_share,
        section="The four groups",
        second_model=True,
    ),
    Claim(
        id="all-groups-contribute",
        statement="All four neuron groups (TP−, TN+, AP+, AN−) contribute to the reduction.",
        source="v1 §4, Figure 2; v3",
        paper_text="32 / 24 / 7 / 37 % (GPT-2-medium); smallest v3 share 15 %",
        paper_number=0.07,
        document="book/03_attribution",
        keys=("share_tp", "share_tn", "share_ap", "share_an"),
        null_keys=("max_share_abs_z",),
        null_control=_SHARE_NULL,
        tolerance="each share at least 5 % (above 0: partly); then the null control",
        rule=all_groups_contribute,
        section="The four groups",
        second_model=True,
    ),
    Claim(
        id="late-layers",
        statement="The reduction is concentrated in the later layers.",
        source="v1 Figure 3",
        paper_text="largest per-layer reductions in GPT-2-medium's last layers, driven by TP− and AN−",
        paper_number=None,
        document="book/03_attribution",
        keys=("late_layer_share",),
        tolerance="the last third of the layers carries more than half of the positive reduction "
                  "(more than a third: partly)",
        rule=late_layers_dominate,
        section="Layers",
    ),
    Claim(
        id="top-toxic-negative",
        statement="Most of the top toxic neurons are negatively activated.",
        source="v1 Figure 4",
        paper_text="most of GPT-2-medium's top 100 toxic neurons have negative mean activations",
        paper_number=None,
        document="book/03_attribution",
        keys=("top100_negative_share",),
        tolerance="more than half of the 100 neurons most aligned with the probe",
        rule=top_toxic_negative,
        section="The top toxic neurons",
    ),
    Claim(
        id="net-small-part",
        statement="The net reduction is a small part of the reduction summed over the neurons that reduce.",
        source="v1 Figure 1b (code)",
        paper_text="net 7.22 of a positive total 47.96 = 15 % (GPT-2-medium)",
        paper_number=0.15,
        document="book/03_attribution",
        keys=("net_over_positive",),
        null_keys=("net_delta_z",),
        null_control="random unit directions in place of the probe (chapter 3): z of the net reduction; "
                     "|z| < 2: not specific to toxicity, 2 to 3: marginal",
        tolerance="within 10 percentage points of 15 % (positive and below 50 %: partly); then the null control",
        rule=net_small_part,
        section="Net and positive totals",
        second_model=True,
    ),
    Claim(
        id="change-uncorrelated",
        statement="DPO's activation changes are uncorrelated with a neuron's alignment with the probe.",
        source="v3 (code)",
        paper_text="Pearson r between 0.001 and 0.004 on four models",
        paper_number=0.004,
        document="book/03_attribution",
        keys=("r_change_cosine",),
        tolerance="|r| at most 0.05 (0.1: partly)",
        rule=change_uncorrelated,
        section="How activations move (the EMNLP version's distributions)",
        second_model=True,
    ),
    Claim(
        id="toxic-share-projection",
        statement="Toxic neurons account for only a small part of DPO's reduction (projection reading).",
        source="v3 abstract; OpenReview version",
        paper_text="2.5 % to 24 % across models; 4.9 % for GPT-2-medium's top 128 (code)",
        paper_number=0.049,
        document="book/03_attribution",
        keys=("toxic_share_projection",),
        tolerance="inside 2.5–24 % (0 to 50 %: partly)",
        rule=toxic_share_projection,
        section="The top toxic neurons",
        second_model=True,
    ),
    Claim(
        id="toxic-share-patching",
        statement="Patching the toxic neurons recovers only a small part of DPO's drop (patching reading).",
        source="v3 abstract",
        paper_text="2.5 % to 24 % across models (statistic not defined in the retrievable text)",
        paper_number=None,
        document="book/05_patching",
        keys=("toxic_share_patching", "tox_base_eval", "tox_dpo_eval", "dpo_drop_low"),
        tolerance="DPO's drop with 95 % interval above 0; inside 2.5–24 % (0 to 50 %: partly)",
        rule=toxic_share_patching,
        section="Group activation patching",
        second_model=True,
    ),
    Claim(
        id="group-patching",
        statement="Patching all four groups to their post-DPO activations reproduces DPO's toxicity drop.",
        source="v3 abstract",
        paper_text="the four groups' combined patching replicates DPO across models (values not retrievable)",
        paper_number=1.0,
        document="book/05_patching",
        keys=("share_patch_all_groups", "share_patch_all_groups_low", "share_patch_all_groups_high",
              "tox_base_eval", "tox_dpo_eval", "dpo_drop_low", "ppl_patch_all_groups", "ppl_dpo_eval"),
        tolerance="DPO's drop with 95 % interval above 0; 80–120 % of it, or an interval that holds 100 % but "
                  "not 0 (50–150 %: partly), at a perplexity at most 1.5 times DPO's (else partly)",
        rule=group_patching_matches,
        section="Group activation patching",
        second_model=True,
    ),
    Claim(
        id="editing-beats-dpo",
        statement="Activation editing along the toxicity representation beats DPO at comparable perplexity.",
        source="v3 abstract",
        paper_text="outperforms DPO in reducing toxicity while preserving perplexity (values not retrievable)",
        paper_number=None,
        document="book/05_patching",
        keys=("tox_edit_best", "ppl_edit_best", "tox_base_eval", "tox_dpo_eval", "dpo_drop_low", "ppl_dpo_eval"),
        tolerance="DPO's drop with 95 % interval above 0; edited toxicity below DPO's at perplexity at most "
                  "10 % above DPO's",
        rule=editing_beats_dpo,
        section="Activation editing",
        second_model=True,
    ),
    Claim(
        id="scaled-keys-retoxify",
        statement="Scaling the key vectors of the 7 most toxic neurons ×10 re-toxifies the DPO model.",
        source="Lee et al. Table 4; v1 Table 1",
        paper_text="DPO 0.208 → 0.458 (base 0.453), perplexity 23.30 (Lee) / 37.33 (v1, edit compounded)",
        paper_number=0.458,
        document="book/04_ablation",
        keys=("tox_scale_keys_x10", "table_tox_base", "table_tox_dpo", "ppl_scale_keys_x10", "book/02_dpo::ppl_dpo"),
        tolerance="undoes at least half of DPO's drop with perplexity at most 1.5 × DPO's (less: partly)",
        rule=scaled_keys_retoxify,
    ),
)


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


@dataclass(frozen=True)
class Assessment:
    """One model's values for a claim (``None`` where missing) and its verdict."""

    values: dict[str, float | None]
    verdict: Verdict


def assess(claim: Claim, chapters: ExecutedChapters, second: bool = False) -> Assessment:
    """Read one model's values for ``claim`` and apply its rule; a missing chapter or key is not testable."""
    values, missing = {}, []
    for document, key, name in claim.locations(second):
        try:
            found = chapters.values(document)
        except MissingChapterError:
            values[name] = None
            missing.append(f"{document} has not been run")
            continue
        value = found.get(key)
        number = isinstance(value, (int, float)) and not isinstance(value, bool) and not math.isnan(value)
        values[name] = float(value) if number else None
        if not number:
            missing.append(f"{document} glues no number {key!r}")
    if missing:
        return Assessment(values, Verdict(NOT_TESTABLE, "; ".join(dict.fromkeys(missing))))
    return Assessment(values, claim.rule(values))


def _shown(values: Mapping[str, float | None], names) -> str:
    if all(values[name] is None for name in names):
        return "—"
    return ", ".join(f"{name} = {'missing' if values[name] is None else format(values[name], '.3g')}"
                     for name in names)


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


def ledger_table(folder: Path | str, model: str = "default model") -> pd.DataFrame:
    """The ledger: one row per claim of :data:`CLAIMS`, judged on the executed chapters in ``folder``.

    ``folder`` holds the chapters' executed notebooks side by side (``02_dpo.ipynb``, ...), as the book's
    staging ``book/`` folder does; ``model`` labels the default model's column. The ``chapter`` column is
    HTML (render with :func:`ledger_html`); every other column is plain text.
    """
    chapters = ExecutedChapters(Path(folder))
    try:
        second_name = str(chapters.values(SECOND_MODEL_DOCUMENT).get("second_model_name", "second model"))
    except MissingChapterError:
        second_name = "second model"
    first_column, second_column = f"ours ({model})", f"ours ({second_name})"
    rows = []
    for claim in CLAIMS:
        first = assess(claim, chapters)
        second = assess(claim, chapters, second=True) if claim.second_model else None
        if second:
            verdict = combine([Verdict(first.verdict.label, f"{model}: {first.verdict.reason}"),
                               Verdict(second.verdict.label, f"{second_name}: {second.verdict.reason}")])
        else:
            verdict = first.verdict
        names = [name for _, _, name in claim.locations()][: len(claim.keys)]
        null_names = [name for _, _, name in claim.locations()][len(claim.keys):]
        null = claim.null_control
        if null_names:
            null += f". {model}: {_shown(first.values, null_names)}"
            if second:
                null += f"; {second_name}: {_shown(second.values, null_names)}"
        rows.append({
            "id": claim.id,
            "claim": claim.statement,
            "paper": f"{claim.source}: {claim.paper_text}",
            first_column: _shown(first.values, names),
            second_column: _shown(second.values, names) if second else "not measured on this model",
            "tolerance": claim.tolerance,
            "null control": null or "none",
            "verdict": verdict.label,
            "why": verdict.reason,
            "chapter": _chapter_link(claim, chapters),
        })
    return pd.DataFrame(rows).set_index("id")


def ledger_html(table: pd.DataFrame) -> str:
    """The ledger as a compact HTML table, three columns that stack the table's ten (the claim with the paper's
    value and the chapter link; our values per model; the verdict with its reason, tolerance and null control),
    text escaped and the ``chapter`` links kept clickable."""
    ours = [column for column in table.columns if column.startswith("ours (")]
    rows = []
    for claim_id, row in table.iterrows():
        text = {column: html.escape(str(value)) for column, value in row.items() if column != "chapter"}
        rows.append({
            "claim": (f"<b>{html.escape(str(claim_id))}</b><br>{text['claim']}<br><i>paper</i>: {text['paper']}"
                      f"<br>{row['chapter']}"),
            "ours": "<br>".join(f"<i>{html.escape(column[6:-1])}</i>: {text[column]}" for column in ours),
            "verdict": (f"<b>{text['verdict']}</b>: {text['why']}<br><i>tolerance</i>: {text['tolerance']}"
                        f"<br><i>null control</i>: {text['null control']}"),
        })
    rendered = pd.DataFrame(rows).to_html(escape=False, index=False, classes="claims-ledger", border=0)
    top_left = 'style="text-align: left; vertical-align: top;"'
    return rendered.replace('<tr style="text-align: right;">', f"<tr {top_left}>").replace("<td>", f"<td {top_left}>")


def verdict_counts(table: pd.DataFrame) -> dict[str, int]:
    """How many claims got each verdict, in the order of :data:`VERDICTS` (zeros included)."""
    counts = table["verdict"].value_counts()
    return {label: int(counts.get(label, 0)) for label in VERDICTS}
