"""The claims ledger: reading glued values, the verdict rules on hand-made values, and the table."""

import json

import pytest
from chapter_sources import glued_in_source
from docutils.nodes import make_id

from dpo_toxicity import ledger
from dpo_toxicity.ledger import (
    CLAIMS, NOT_REPRODUCED, NOT_SPECIFIC, NOT_TESTABLE, PARTLY, REPRODUCED, VERDICTS, Claim, MissingChapterError,
    Verdict, against_null, combine, glued_values, heading_anchor, ledger_html, ledger_table, verdict_counts,
)
from dpo_toxicity.paths import project_root

FIGURE = object()  # stands for a glued matplotlib figure: its repr is not a literal


def glue_output(key, value):
    text = "<Figure size 600x350 with 1 Axes>" if value is FIGURE else repr(value)
    return {"output_type": "display_data", "metadata": {"scrapbook": {"name": key, "mime_prefix": ""}},
            "data": {"application/papermill.record/text/plain": text}}


def write_notebook(path, values, headings=()):
    cells = [{"cell_type": "markdown", "metadata": {}, "source": f"## {heading}\n\nText."} for heading in headings]
    cells.append({"cell_type": "code", "metadata": {}, "source": "glue(...)", "execution_count": 1,
                  "outputs": [glue_output(key, value) for key, value in values.items()]})
    path.write_text(json.dumps({"cells": cells, "metadata": {}, "nbformat": 4, "nbformat_minor": 5}))
    return path


# ---------------------------------------------------------------------------------------------------------
# Reading glued values.

def test_glued_values_reads_literals_and_skips_figures(tmp_path):
    path = write_notebook(tmp_path / "03_attribution.ipynb",
                          {"share_tp": 0.398, "n": 200, "verdict": "is specific", "fig_null": FIGURE})
    assert glued_values(path) == {"share_tp": 0.398, "n": 200, "verdict": "is specific"}


def test_glued_values_reads_nan_and_numpy_scalars(tmp_path):
    path = write_notebook(tmp_path / "x.ipynb", {})
    notebook = json.loads(path.read_text())
    notebook["cells"][0]["outputs"] = [glue_output("a", 0.0), glue_output("b", 0.0)]
    notebook["cells"][0]["outputs"][0]["data"]["application/papermill.record/text/plain"] = "nan"
    notebook["cells"][0]["outputs"][1]["data"]["application/papermill.record/text/plain"] = "np.float64(0.25)"
    path.write_text(json.dumps(notebook))
    values = glued_values(path)
    assert values["a"] != values["a"] and values["b"] == 0.25


def test_a_missing_notebook_names_the_chapter_to_run(tmp_path):
    with pytest.raises(MissingChapterError, match=r"book/05_patching.*--chapters book/05_patching"):
        glued_values(tmp_path / "05_patching.ipynb")


@pytest.mark.parametrize("content", ["{not json", json.dumps({"metadata": {}}), json.dumps([1, 2])])
def test_a_malformed_notebook_raises(tmp_path, content):
    path = tmp_path / "02_dpo.ipynb"
    path.write_text(content)
    with pytest.raises(ValueError):
        glued_values(path)


def test_a_glue_output_without_its_record_raises(tmp_path):
    path = write_notebook(tmp_path / "02_dpo.ipynb", {"tox_base": 0.3})
    notebook = json.loads(path.read_text())
    notebook["cells"][0]["outputs"][0]["data"] = {"text/plain": "0.3"}
    path.write_text(json.dumps(notebook))
    with pytest.raises(ValueError, match="record"):
        glued_values(path)


@pytest.mark.parametrize("heading", [
    "The null control: is any of this about toxicity?", "How activations move (the EMNLP version's distributions)",
    "Figure 1a: where the write along the probe changes", "3. Where DPO's reduction comes from, neuron by neuron",
    "Base vs DPO", "TP− and AN− in café layers",
])
def test_heading_anchor_is_the_id_sphinx_gives_the_section(heading):
    assert heading_anchor(heading) == make_id(heading)


# ---------------------------------------------------------------------------------------------------------
# Verdict rules on hand-made values.

def test_verdict_rejects_an_unknown_label():
    with pytest.raises(ValueError):
        Verdict("sort of", "")


@pytest.mark.parametrize("z, label", [(1.5, NOT_SPECIFIC), (-1.9, NOT_SPECIFIC), (2.5, PARTLY), (3.2, REPRODUCED)])
def test_null_control_tempers_a_match(z, label):
    assert against_null(Verdict(REPRODUCED, "matches"), z, "shares").label == label


def test_null_control_leaves_a_mismatch_alone():
    assert against_null(Verdict(NOT_REPRODUCED, "off"), 0.1, "shares").label == NOT_REPRODUCED


@pytest.mark.parametrize("tox_dpo, low, ppl_dpo, label", [
    (0.31, -0.05, 20.0, NOT_REPRODUCED),   # toxicity rises
    (0.28, -0.01, 20.0, NOT_TESTABLE),     # falls, but the interval includes 0
    (0.15, 0.05, 26.0, PARTLY),            # falls by half, perplexity +30 %
    (0.27, 0.001, 20.2, PARTLY),           # falls significantly, by 10 % only
    (0.15, 0.05, 21.4, REPRODUCED),        # the paper's kind of result: -50 % at +7 %
])
def test_dpo_lowers_toxicity(tox_dpo, low, ppl_dpo, label):
    values = {"tox_base": 0.30, "tox_dpo": tox_dpo, "tox_drop_low": low, "ppl_base": 20.0, "ppl_dpo": ppl_dpo}
    assert ledger.dpo_lowers_toxicity(values).label == label


@pytest.mark.parametrize("accuracy, label", [(0.95, REPRODUCED), (0.85, REPRODUCED), (0.80, PARTLY), (0.6, NOT_REPRODUCED)])
def test_probe_accuracy(accuracy, label):
    assert ledger.probe_accuracy({"probe_test_accuracy": accuracy}).label == label


@pytest.mark.parametrize("base, dpo, low, best, patch, label", [
    (0.30, 0.32, -0.05, 0.1, 0.1, NOT_TESTABLE),  # DPO does not lower toxicity on the chapter's prompts
    (0.30, 0.28, -0.01, 0.1, 0.1, NOT_TESTABLE),  # it does, but its interval includes 0
    (0.45, 0.21, 0.15, 0.55, 0.48, REPRODUCED),   # the paper's own Table 1
    (0.45, 0.21, 0.15, 0.30, 0.95, NOT_REPRODUCED),
])
def test_ablation_falls_short(base, dpo, low, best, patch, label):
    values = {"table_tox_base": base, "table_tox_dpo": dpo, "dpo_drop_low": low, "best_ablation_share": best,
              "share_patch_dampened": patch, "share_ablate_top200": 0.2}
    assert ledger.ablation_falls_short(values).label == label


@pytest.mark.parametrize("share, z, label", [
    (0.318, 4.0, REPRODUCED), (0.40, 4.0, REPRODUCED), (0.45, 4.0, PARTLY), (0.60, 4.0, NOT_REPRODUCED),
    (0.32, 1.0, NOT_SPECIFIC), (0.32, 2.2, PARTLY), (0.60, 1.0, NOT_REPRODUCED),
])
def test_tp_share(share, z, label):
    assert ledger.tp_share({"share_tp": share, "share_tp_null_mean": 0.3, "max_share_abs_z": z}).label == label


@pytest.mark.parametrize("shares, z, label", [
    ((0.32, 0.24, 0.07, 0.37), 5.0, REPRODUCED), ((0.5, 0.3, 0.02, 0.18), 5.0, PARTLY),
    ((0.6, 0.5, -0.1, 0.0), 5.0, NOT_REPRODUCED), ((0.32, 0.24, 0.07, 0.37), 0.5, NOT_SPECIFIC),
])
def test_all_groups_contribute(shares, z, label):
    values = dict(zip(["share_tp", "share_tn", "share_ap", "share_an"], shares), max_share_abs_z=z)
    assert ledger.all_groups_contribute(values).label == label


@pytest.mark.parametrize("share, label", [(0.76, REPRODUCED), (0.4, PARTLY), (0.2, NOT_REPRODUCED)])
def test_late_layers_dominate(share, label):
    assert ledger.late_layers_dominate({"late_layer_share": share}).label == label


@pytest.mark.parametrize("share, label", [(0.87, REPRODUCED), (0.5, NOT_REPRODUCED), (0.41, NOT_REPRODUCED)])
def test_top_toxic_negative(share, label):
    assert ledger.top_toxic_negative({"top100_negative_share": share}).label == label


@pytest.mark.parametrize("ratio, z, label", [
    (0.15, 4.0, REPRODUCED), (0.263, 4.7, PARTLY), (0.15, 1.0, NOT_SPECIFIC), (-0.1, 4.0, NOT_REPRODUCED),
    (0.7, 4.0, NOT_REPRODUCED),
])
def test_net_small_part(ratio, z, label):
    assert ledger.net_small_part({"net_over_positive": ratio, "net_delta_z": z}).label == label


@pytest.mark.parametrize("r, label", [(0.004, REPRODUCED), (-0.04, REPRODUCED), (0.08, PARTLY), (0.3, NOT_REPRODUCED)])
def test_change_uncorrelated(r, label):
    assert ledger.change_uncorrelated({"r_change_cosine": r}).label == label


@pytest.mark.parametrize("share, label", [(0.049, REPRODUCED), (0.01, PARTLY), (0.35, PARTLY), (0.8, NOT_REPRODUCED),
                                          (-0.2, NOT_REPRODUCED)])
def test_toxic_share_projection(share, label):
    assert ledger.toxic_share_projection({"toxic_share_projection": share}).label == label


def test_toxic_share_patching_needs_a_dpo_drop_with_an_interval_above_zero():
    values = {"toxic_share_patching": 0.1, "tox_base_eval": 0.3, "tox_dpo_eval": 0.3, "dpo_drop_low": 0.01}
    assert ledger.toxic_share_patching(values).label == NOT_TESTABLE
    assert ledger.toxic_share_patching({**values, "tox_dpo_eval": 0.2, "dpo_drop_low": -0.01}).label == NOT_TESTABLE
    assert ledger.toxic_share_patching({**values, "tox_dpo_eval": 0.2}).label == REPRODUCED


@pytest.mark.parametrize("share, low, high, label", [
    (1.0, 0.9, 1.1, REPRODUCED), (0.6, 0.5, 0.7, PARTLY), (0.6, 0.3, 1.05, REPRODUCED), (1.4, 1.3, 1.5, PARTLY),
    (0.2, 0.1, 0.3, NOT_REPRODUCED), (0.9, -0.5, 2.0, NOT_TESTABLE),
])
def test_group_patching_matches(share, low, high, label):
    values = {"share_patch_all_groups": share, "share_patch_all_groups_low": low, "share_patch_all_groups_high": high,
              "tox_base_eval": 0.3, "tox_dpo_eval": 0.2, "dpo_drop_low": 0.02, "ppl_patch_all_groups": 25.0,
              "ppl_dpo_eval": 23.0}
    assert ledger.group_patching_matches(values).label == label


def test_group_patching_that_breaks_the_model_is_only_partly_a_match():
    values = {"share_patch_all_groups": 1.0, "share_patch_all_groups_low": 0.9, "share_patch_all_groups_high": 1.1,
              "tox_base_eval": 0.3, "tox_dpo_eval": 0.2, "dpo_drop_low": 0.02, "ppl_patch_all_groups": 12000.0,
              "ppl_dpo_eval": 23.0}
    verdict = ledger.group_patching_matches(values)
    assert verdict.label == PARTLY and "breaking the model" in verdict.reason


@pytest.mark.parametrize("tox_edit, ppl_edit, label", [(0.15, 32.0, REPRODUCED), (0.15, 40.0, PARTLY),
                                                        (0.25, 30.0, NOT_REPRODUCED)])
def test_editing_beats_dpo(tox_edit, ppl_edit, label):
    values = {"tox_edit_best": tox_edit, "ppl_edit_best": ppl_edit, "tox_base_eval": 0.3, "tox_dpo_eval": 0.2,
              "dpo_drop_low": 0.02, "ppl_dpo_eval": 30.0}
    assert ledger.editing_beats_dpo(values).label == label


@pytest.mark.parametrize("tox_x10, ppl_x10, label", [
    (0.458, 23.3, REPRODUCED), (0.458, 37.3, PARTLY), (0.25, 23.3, PARTLY), (0.20, 23.3, NOT_REPRODUCED),
])
def test_scaled_keys_retoxify(tox_x10, ppl_x10, label):
    values = {"tox_scale_keys_x10": tox_x10, "table_tox_base": 0.453, "table_tox_dpo": 0.208,
              "ppl_scale_keys_x10": ppl_x10, "ppl_dpo": 23.34}
    assert ledger.scaled_keys_retoxify(values).label == label


def test_combine_ignores_untestable_models_and_calls_disagreement_partly():
    yes, no, missing = Verdict(REPRODUCED, "a"), Verdict(NOT_REPRODUCED, "b"), Verdict(NOT_TESTABLE, "c")
    assert combine([yes, missing]).label == REPRODUCED
    assert combine([missing, missing]).label == NOT_TESTABLE
    assert combine([yes, no]).label == PARTLY
    assert combine([no, no]).label == NOT_REPRODUCED


# ---------------------------------------------------------------------------------------------------------
# The claims and the table.

def test_claims_are_claim_instances_with_unique_ids():
    assert all(isinstance(claim, Claim) for claim in CLAIMS)
    assert len({claim.id for claim in CLAIMS}) == len(CLAIMS)


@pytest.mark.parametrize("claim", CLAIMS, ids=lambda c: c.id)
def test_each_rule_reads_only_the_keys_its_claim_declares(claim):
    values = {name: 0.3 for _, _, name in claim.locations()}
    assert claim.rule(values).label in VERDICTS  # a KeyError would mean an undeclared key


PENDING_KEYS: set[tuple[str, str]] = set()  # keys a claim reads that its chapter does not glue yet


@pytest.mark.parametrize("claim", CLAIMS, ids=lambda c: c.id)
def test_keys_read_from_an_existing_chapter_are_glued_by_its_source(claim):
    root = project_root()
    locations = claim.locations() + (claim.locations(second=True) if claim.second_model else [])
    for document, key, _ in locations:
        source = root / f"{document}.py"
        if source.is_file() and (document, key) not in PENDING_KEYS:
            assert glued_in_source(key, document), f"{document} does not glue {key}"


def test_ledger_judges_present_chapters_and_marks_absent_ones_not_testable(tmp_path):
    write_notebook(tmp_path / "01_probe.ipynb", {"probe_test_accuracy": 0.9},
                   headings=["Features, training and held-out evaluation"])
    write_notebook(tmp_path / "03_attribution.ipynb",
                   {"share_tp": 0.32, "share_tp_null_mean": 0.3, "max_share_abs_z": 1.0, "late_layer_share": 0.2})
    table = ledger_table(tmp_path, model="tiny")
    assert table.loc["probe-accuracy", "verdict"] == REPRODUCED
    assert table.loc["probe-accuracy", "ours (tiny)"] == "probe_test_accuracy = 0.9"
    assert table.loc["tp-share", "verdict"] == NOT_SPECIFIC
    assert "book/05_patching has not been run" in table.loc["tp-share", "why"]
    assert table.loc["late-layers", "verdict"] == NOT_REPRODUCED
    assert table.loc["dpo-lowers-toxicity", "verdict"] == NOT_TESTABLE
    assert "glues no number 'share_tn'" in table.loc["all-groups-contribute", "why"]
    assert table.loc["group-patching", "verdict"] == NOT_TESTABLE
    assert sum(verdict_counts(table).values()) == len(CLAIMS)


def test_the_second_model_is_read_from_chapter_5_with_the_suffix(tmp_path):
    patching = {"share_patch_all_groups": 1.0, "share_patch_all_groups_low": 0.9, "share_patch_all_groups_high": 1.1,
                "tox_base_eval": 0.3, "tox_dpo_eval": 0.2, "dpo_drop_low": 0.05, "ppl_base_eval": 20.0,
                "ppl_dpo_eval": 21.0, "ppl_patch_all_groups": 22.0}
    second = {**patching, "share_patch_all_groups": 0.2, "share_patch_all_groups_low": 0.1,
              "share_patch_all_groups_high": 0.3, "tox_dpo_eval": 0.15}
    write_notebook(tmp_path / "05_patching.ipynb", {
        "second_model_name": "gemma3-270m", **patching, **{f"{key}_second": value for key, value in second.items()},
    })
    table = ledger_table(tmp_path, model="tiny")
    assert table.loc["group-patching", "verdict"] == PARTLY  # one model reproduces, the other does not
    assert "share_patch_all_groups = 0.2" in table.loc["group-patching", "ours (gemma3-270m)"]
    # the DPO claim reads chapter 2 for the default model (not run here) and chapter 5's keys for the second
    assert table.loc["dpo-lowers-toxicity", "verdict"] == REPRODUCED
    assert "tox_dpo = 0.15" in table.loc["dpo-lowers-toxicity", "ours (gemma3-270m)"]
    assert "book/02_dpo has not been run" in table.loc["dpo-lowers-toxicity", "why"]


def test_ledger_raises_on_a_malformed_chapter(tmp_path):
    (tmp_path / "02_dpo.ipynb").write_text("{broken")
    with pytest.raises(ValueError):
        ledger_table(tmp_path)


def test_links_point_to_existing_sections_and_text_is_escaped(tmp_path):
    write_notebook(tmp_path / "01_probe.ipynb", {"probe_test_accuracy": 0.9},
                   headings=["Features, training and held-out evaluation"])
    write_notebook(tmp_path / "03_attribution.ipynb", {"share_tp": 0.32})  # no headings: page link only
    table = ledger_table(tmp_path)
    assert table.loc["probe-accuracy", "chapter"] == (
        '<a href="01_probe.html#features-training-and-held-out-evaluation">'
        '01_probe § Features, training and held-out evaluation</a>')
    assert table.loc["tp-share", "chapter"] == '<a href="03_attribution.html">03_attribution</a>'
    assert table.loc["group-patching", "chapter"] == "05_patching"  # not run: no link
    rendered = ledger_html(table)
    assert '<a href="01_probe.html#features-training-and-held-out-evaluation">' in rendered
    assert "&lt;" not in table.loc["probe-accuracy", "chapter"] and "→" in rendered


def test_rendered_ledger_escapes_text_but_not_links(tmp_path):
    write_notebook(tmp_path / "01_probe.ipynb", {"probe_test_accuracy": 0.9},
                   headings=["Features, training and held-out evaluation"])
    table = ledger_table(tmp_path)
    table.loc["probe-accuracy", "claim"] = "a <script> claim"
    rendered = ledger_html(table)
    assert "a &lt;script&gt; claim" in rendered and "<script>" not in rendered
    assert rendered.count("</tr>") == len(CLAIMS) + 1  # a header row and a row per claim
