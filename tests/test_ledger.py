"""The claims ledger: reading glued values, the verdict rules on hand-made values, the two metrics, and the table."""

import json
import math

import numpy as np
import pytest
from chapter_sources import glued_in_source
from docutils.nodes import make_id

from dpo_toxicity import verdicts
from dpo_toxicity.book import glued as glued_module
from dpo_toxicity.book.ledger import (
    COMPARED,
    DIFFERS,
    MissingChapterError,
    chapter_verdict,
    glued_values,
    heading_anchor,
    headline_html,
    headline_table,
    ledger_html,
    ledger_table,
    scorer_sensitivity,
    verdict_counts,
    with_compared_verdicts,
)
from dpo_toxicity.paper_claims import CLAIMS, HEADLINES, Claim, key_glossary, key_meaning
from dpo_toxicity.paths import project_root
from dpo_toxicity.verdicts import (
    GENERATION,
    MEDIATION,
    NOT_REPRODUCED,
    NOT_SPECIFIC,
    NOT_TESTABLE,
    PARTLY,
    REPRODUCED,
    VERDICTS,
    Verdict,
    above_null,
    against_null,
    by_metric,
    combine,
)

FIGURE = object()  # stands for a glued matplotlib figure: its repr is not a literal


def glue_output(key, value):
    text = "<Figure size 600x350 with 1 Axes>" if value is FIGURE else repr(value)
    return {
        "output_type": "display_data",
        "metadata": {"scrapbook": {"name": key, "mime_prefix": ""}},
        "data": {"application/papermill.record/text/plain": text},
    }


def write_notebook(path, values, headings=()):
    cells = [{"cell_type": "markdown", "metadata": {}, "source": f"## {heading}\n\nText."} for heading in headings]
    cells.append(
        {
            "cell_type": "code",
            "metadata": {},
            "source": "glue(...)",
            "execution_count": 1,
            "outputs": [glue_output(key, value) for key, value in values.items()],
        }
    )
    path.write_text(json.dumps({"cells": cells, "metadata": {}, "nbformat": 4, "nbformat_minor": 5}))
    return path


# ---------------------------------------------------------------------------------------------------------
# Reading glued values.


def test_glued_values_reads_literals_and_skips_figures(tmp_path):
    path = write_notebook(
        tmp_path / "03_attribution.ipynb", {"share_tp": 0.398, "n": 200, "verdict": "is specific", "fig_null": FIGURE}
    )
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


@pytest.mark.parametrize(
    "heading",
    [
        "The null control: is any of this about toxicity?",
        "How activations move (the EMNLP version's distributions)",
        "Figure 1a: where the write along the probe changes",
        "3. Where DPO's reduction comes from, neuron by neuron",
        "Base vs DPO",
        "TP− and AN− in café layers",
    ],
)
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


@pytest.mark.parametrize(
    "tox_dpo, low, ppl_dpo, label",
    [
        (0.31, -0.05, 20.0, NOT_REPRODUCED),  # toxicity rises
        (0.28, -0.01, 20.0, NOT_TESTABLE),  # falls, but the interval includes 0
        (0.15, 0.05, 26.0, PARTLY),  # falls by half, perplexity +30 %
        (0.27, 0.001, 20.2, PARTLY),  # falls significantly, by 10 % only
        (0.15, 0.05, 21.4, REPRODUCED),  # the paper's kind of result: -50 % at +7 %
    ],
)
def test_dpo_lowers_toxicity(tox_dpo, low, ppl_dpo, label):
    values = {"tox_base": 0.30, "tox_dpo": tox_dpo, "tox_drop_low": low, "ppl_base": 20.0, "ppl_dpo": ppl_dpo}
    assert verdicts.dpo_lowers_toxicity(values).label == label


@pytest.mark.parametrize("z, label", [(3.5, REPRODUCED), (2.5, PARTLY), (1.0, NOT_SPECIFIC), (-4.0, NOT_SPECIFIC)])
def test_one_sided_null_wants_the_statistic_above_chance(z, label):
    assert above_null(Verdict(REPRODUCED, "matches"), z, "random sets").label == label


def test_combine_ignores_untestable_models_and_calls_disagreement_partly():
    yes, no, missing = Verdict(REPRODUCED, "a"), Verdict(NOT_REPRODUCED, "b"), Verdict(NOT_TESTABLE, "c")
    assert combine([yes, missing]).label == REPRODUCED
    assert combine([missing, missing]).label == NOT_TESTABLE
    assert combine([yes, no]).label == PARTLY
    assert combine([no, no]).label == NOT_REPRODUCED
    assert combine([yes, no], "the rows disagree").reason.startswith("the rows disagree")


def test_by_metric_takes_the_metric_that_can_decide_and_says_which():
    yes, no, cannot = Verdict(REPRODUCED, "a"), Verdict(NOT_REPRODUCED, "b"), Verdict(NOT_TESTABLE, "c")
    decided = by_metric(cannot, yes)
    assert decided.label == REPRODUCED and decided.reason.startswith("decided by the mediation metric")
    assert "generated-toxicity metric: not testable here (c)" in decided.reason  # both verdicts are shown
    assert by_metric(no, cannot).reason.startswith("decided by the generated-toxicity metric")
    assert by_metric(yes, yes).label == REPRODUCED and "both metrics agree" in by_metric(yes, yes).reason
    disagree = by_metric(yes, no)
    assert disagree.label == PARTLY and disagree.reason.startswith("the metrics disagree")
    neither = by_metric(cannot, cannot)
    assert neither.label == NOT_TESTABLE and neither.reason.startswith("neither metric can decide")


def interval(key, value, low, high):
    return {key: value, f"{key}_low": low, f"{key}_high": high}


MARGIN = interval("mediation_dpo_margin", 0.8, 0.5, 1.1)


# ---------------------------------------------------------------------------------------------------------
# Chapters 1 and 2.


@pytest.mark.parametrize(
    "natural, label", [(0.95, REPRODUCED), (0.93, REPRODUCED), (0.91, PARTLY), (0.88, NOT_REPRODUCED)]
)
def test_probe_accuracy(natural, label):
    values = {"probe_accuracy_natural": natural, "probe_test_accuracy": 0.87}
    assert verdicts.probe_accuracy(values).label == label


def test_probe_accuracy_is_judged_at_the_papers_class_balance():
    # 87 % on a balanced test set (chance 50 %) sounds close to 94 %, but at Jigsaw's balance the probe
    # scores 89 %, below the 90 % of always answering non-toxic: read on the balanced number it passed.
    values = {"probe_test_accuracy": 0.87, "probe_accuracy_natural": 0.89}
    verdict = verdicts.probe_accuracy(values)
    assert verdict.label == NOT_REPRODUCED and "majority class" in verdict.reason


@pytest.mark.parametrize(
    "z_probe, z_neurons, label", [(6.0, 3.5, REPRODUCED), (6.0, 0.4, PARTLY), (1.0, 0.4, NOT_REPRODUCED)]
)
def test_promotes_toxic_tokens(z_probe, z_neurons, label):
    values = {
        "logit_lens_toxic_share_probe": 0.06,
        "logit_lens_toxic_z_probe": z_probe,
        "logit_lens_toxic_null_probe": 0.004,
        "logit_lens_toxic_share_neurons": 0.01,
        "logit_lens_toxic_z_neurons": z_neurons,
        "logit_lens_toxic_null_neurons": 0.003,
    }
    assert verdicts.promotes_toxic_tokens(values).label == label


@pytest.mark.parametrize("f1_dpo, label", [(0.195, REPRODUCED), (0.16, PARTLY), (0.10, NOT_REPRODUCED)])
def test_dpo_preserves_f1(f1_dpo, label):
    assert verdicts.dpo_preserves_f1({"f1_base": 0.193, "f1_dpo": f1_dpo}).label == label


# ---------------------------------------------------------------------------------------------------------
# Chapter 3.


@pytest.mark.parametrize(
    "share, z, label",
    [
        (0.318, 4.0, REPRODUCED),
        (0.40, 4.0, REPRODUCED),
        (0.45, 4.0, PARTLY),
        (0.60, 4.0, NOT_REPRODUCED),
        (0.32, 1.0, NOT_SPECIFIC),
        (0.32, 2.2, PARTLY),
        (0.60, 1.0, NOT_REPRODUCED),
    ],
)
def test_tp_share(share, z, label):
    assert verdicts.tp_share({"share_tp": share, "share_tp_null_mean": 0.3, "share_tp_z": z}).label == label


def test_tp_share_reads_tp_minus_own_z_not_the_largest_of_four():
    # AP+'s share stands 2.13 SD from random directions', TP−'s only 1.05: the claim is about TP−
    values = {"share_tp": 0.32, "share_tp_null_mean": 0.30, "share_tp_z": 1.05, "max_share_abs_z": 2.13}
    assert verdicts.tp_share(values).label == NOT_SPECIFIC


SHARE_KEYS = ["share_tp", "share_tn", "share_ap", "share_an"]
Z_KEYS = ["share_tp_z", "share_tn_z", "share_ap_z", "share_an_z"]


@pytest.mark.parametrize(
    "shares, z, label",
    [
        ((0.32, 0.24, 0.07, 0.37), 5.0, REPRODUCED),
        ((0.5, 0.3, 0.02, 0.18), 5.0, PARTLY),
        ((0.6, 0.5, -0.1, 0.0), 5.0, NOT_REPRODUCED),
        ((0.32, 0.24, 0.07, 0.37), 0.5, NOT_SPECIFIC),
    ],
)
def test_all_groups_contribute(shares, z, label):
    values = dict(zip(SHARE_KEYS, shares)) | dict.fromkeys(Z_KEYS, z)
    assert verdicts.all_groups_contribute(values).label == label


def test_all_groups_contribute_reads_the_smallest_groups_z():
    # TP− stands far from random directions (z 3.5) but AP+, the group whose 7 % the claim rests on, does not
    values = dict(zip(SHARE_KEYS, (0.32, 0.24, 0.07, 0.37))) | dict(zip(Z_KEYS, (3.5, 1.2, 0.5, -0.4)))
    values["max_share_abs_z"] = 3.5
    verdict = verdicts.all_groups_contribute(values)
    assert verdict.label == NOT_SPECIFIC and "AP+" in verdict.reason


@pytest.mark.parametrize("share, label", [(0.76, REPRODUCED), (0.4, PARTLY), (0.2, NOT_REPRODUCED)])
def test_late_layers_dominate(share, label):
    assert verdicts.late_layers_dominate({"late_layer_share": share}).label == label


@pytest.mark.parametrize("share, label", [(0.87, REPRODUCED), (0.5, NOT_REPRODUCED), (0.41, NOT_REPRODUCED)])
def test_top_toxic_negative(share, label):
    assert verdicts.top_toxic_negative({"top100_negative_share": share}).label == label


@pytest.mark.parametrize(
    "ratio, z, label",
    [
        (0.15, 4.0, REPRODUCED),
        (0.263, 4.7, PARTLY),
        (0.15, 1.0, NOT_SPECIFIC),
        (-0.1, 4.0, NOT_REPRODUCED),
        (0.7, 4.0, NOT_REPRODUCED),
    ],
)
def test_net_small_part(ratio, z, label):
    assert verdicts.net_small_part({"net_over_positive": ratio, "net_delta_z": z}).label == label


@pytest.mark.parametrize("r, label", [(0.004, REPRODUCED), (-0.04, REPRODUCED), (0.08, PARTLY), (0.3, NOT_REPRODUCED)])
def test_change_uncorrelated(r, label):
    assert verdicts.change_uncorrelated({"r_change_cosine": r}).label == label


@pytest.mark.parametrize(
    "share, label",
    [(0.049, REPRODUCED), (0.01, REPRODUCED), (0.35, PARTLY), (0.8, NOT_REPRODUCED), (-0.2, NOT_REPRODUCED)],
)
def test_toxic_share_projection(share, label):
    assert verdicts.toxic_share_projection({"toxic_share_projection": share}).label == label


def test_a_projection_share_below_the_range_meets_the_claims_bound():
    # "only 2.5 % to 24 %": 1.3 % is even less, so it meets the claim rather than missing it
    assert verdicts.toxic_share_projection({"toxic_share_projection": 0.013}).label == REPRODUCED


@pytest.mark.parametrize("top, other, label", [(0.6, 0.2, REPRODUCED), (0.35, 0.4, PARTLY), (0.2, 0.4, NOT_REPRODUCED)])
def test_tp_dominates_top_ranked(top, other, label):
    values = {"top_ranked_share_tp": top, "top_ranked_share_max_other": other, "share_tp": 0.3}
    assert verdicts.tp_dominates_top_ranked(values).label == label


@pytest.mark.parametrize("cosine, label", [(0.9995, REPRODUCED), (0.97, PARTLY), (0.8, NOT_REPRODUCED)])
def test_weights_barely_move(cosine, label):
    assert verdicts.weights_barely_move({"weight_cosine_min": cosine}).label == label


@pytest.mark.parametrize(
    "share, z, label",
    [(0.9, 6.0, REPRODUCED), (0.7, 2.4, PARTLY), (0.62, 0.4, NOT_SPECIFIC), (0.4, 6.0, NOT_REPRODUCED)],
)
def test_top_toxic_activations_fall(share, z, label):
    values = {"top100_activation_fall_share": share, "activation_fall_share_all": 0.6, "top100_activation_fall_z": z}
    assert verdicts.top_toxic_activations_fall(values).label == label


@pytest.mark.parametrize(
    "shrinking, label",
    [((0.9, 0.1, 0.2, 0.8), REPRODUCED), ((0.9, 0.6, 0.2, 0.8), PARTLY), ((0.4, 0.6, 0.7, 0.3), NOT_REPRODUCED)],
)
def test_magnitude_by_group(shrinking, label):
    values = dict(zip(["shrink_share_tp", "shrink_share_tn", "shrink_share_ap", "shrink_share_an"], shrinking))
    assert verdicts.magnitude_by_group(values).label == label


@pytest.mark.parametrize(
    "share, label", [(0.585, REPRODUCED), (0.52, REPRODUCED), (0.45, PARTLY), (0.3, NOT_REPRODUCED)]
)
def test_reducing_neurons_share(share, label):
    assert verdicts.reducing_neurons_share({"share_reducing_neurons": share}).label == label


@pytest.mark.parametrize("ratio, label", [(0.2, REPRODUCED), (0.4, PARTLY), (0.8, NOT_REPRODUCED)])
def test_layers_nearly_cancel(ratio, label):
    assert verdicts.layers_nearly_cancel({"layer_net_over_positive": ratio}).label == label


# ---------------------------------------------------------------------------------------------------------
# Chapter 4.


def ablation_values(
    closest=(0.05, 0.02, 0.09),
    ratio=1.05,
    least=(-0.09, -0.14, -0.04),
    least_ratio=1.32,
    dpo_drop_low=-0.007,
    row="ablate top 100 toxic",
):
    values = {
        "table_tox_base": 0.303,
        "table_tox_dpo": 0.248,
        "dpo_drop_low": dpo_drop_low,
        "ablation_closest_row": row,
        "ablation_closest_ppl_ratio": ratio,
        "ablation_least_toxic_ppl_ratio": least_ratio,
    }
    return values | interval("ablation_closest_excess", *closest) | interval("ablation_least_toxic_excess", *least)


NO_ROW = (math.nan, math.nan, math.nan)


@pytest.mark.parametrize(
    "closest, least, label",
    [
        ((0.111, 0.08, 0.14), (0.111, 0.08, 0.14), REPRODUCED),  # the paper's own Table 1: 0.319 against DPO's 0.208
        ((-0.05, -0.09, -0.01), (-0.05, -0.09, -0.01), NOT_REPRODUCED),  # a row below DPO at DPO's perplexity
        ((0.01, -0.03, 0.05), (-0.09, -0.14, -0.04), NOT_TESTABLE),  # the closest row cannot be told from DPO
        (NO_ROW, (0.04, 0.01, 0.07), REPRODUCED),  # no row near DPO's perplexity, and none as clean as DPO
        (NO_ROW, (-0.09, -0.14, -0.04), PARTLY),  # only a row past the perplexity guard reaches DPO
    ],
)
def test_ablation_falls_short(closest, least, label):
    ratio = math.nan if closest is NO_ROW else 1.05
    assert verdicts.ablation_falls_short(ablation_values(closest, ratio, least)).label == label


def test_ablation_falls_short_reads_paired_differences_not_dpos_drop_alone():
    # DPO's own drop on 64 prompts is not significant (low end −0.007), but the best row within the perplexity
    # guard is more toxic than DPO, paired over the same prompts: the claim is decided
    values = ablation_values(closest=(0.05, 0.02, 0.09)) | {"best_ablation_share": 0.3, "share_patch_dampened": 0.2}
    verdict = verdicts.ablation_falls_short(values)
    assert verdict.label == REPRODUCED and "ablate top 100 toxic" in verdict.reason


def test_ablation_rows_past_the_perplexity_guard_do_not_count():
    # the least toxic row beats DPO by 0.087 only at 1.32× DPO's perplexity; within the guard no row reaches DPO
    values = ablation_values(closest=(0.06, 0.03, 0.10), least=(-0.087, -0.140, -0.039), least_ratio=1.32)
    values |= {"best_ablation_share": 1.4, "share_patch_dampened": 0.2}
    assert verdicts.ablation_falls_short(values | {"dpo_drop_low": 0.01}).label == REPRODUCED


@pytest.mark.parametrize(
    "best, label",
    [
        ((0.3, 0.2, 0.4), REPRODUCED),
        ((0.85, 0.8, 0.95), PARTLY),
        ((1.0, 0.85, 1.15), NOT_REPRODUCED),
        ((0.7, 0.2, 1.3), NOT_TESTABLE),
        (NO_ROW, REPRODUCED),
    ],
)
def test_ablation_falls_short_on_the_mediation_metric(best, label):
    values = (
        MARGIN
        | interval("mediation_share_best_ablation", *best)
        | interval("mediation_share_ablate_top200", 0.2, 0.1, 0.3)
    )
    assert verdicts.ablation_falls_short_mediation(values).label == label
    assert verdicts.ablation_falls_short_mediation(values | {"mediation_dpo_margin_low": -0.1}).label == NOT_TESTABLE


@pytest.mark.parametrize(
    "closed, label", [(0.4, REPRODUCED), (0.9, PARTLY), (1.31, NOT_REPRODUCED), (-0.1, NOT_REPRODUCED)]
)
def test_ablation_partly_closes_gap(closed, label):
    assert verdicts.ablation_partly_closes_gap({"fig1a_gap_closed": closed}).label == label


@pytest.mark.parametrize(
    "advantages, label",
    [
        ([(0.02, 0.01, 0.03)] * 3, REPRODUCED),
        ([(0.02, -0.01, 0.05)] * 3, PARTLY),
        ([(0.02, 0.01, 0.03), (0.0, -0.02, 0.02), (-0.01, -0.03, 0.01)], PARTLY),
        ([(0.02, 0.01, 0.03), (-0.03, -0.05, -0.01), (0.02, 0.01, 0.03)], NOT_REPRODUCED),
        ([(0.01, -0.02, 0.04), (-0.01, -0.03, 0.01), (0.0, -0.02, 0.02)], NOT_TESTABLE),
    ],
)
def test_positive_ranking_wins(advantages, label):
    values = {}
    for n, advantage in zip((100, 200, 1000), advantages):
        values |= interval(f"ablation_positive_advantage_top{n}", *advantage)
    assert verdicts.positive_ranking_wins(values).label == label


@pytest.mark.parametrize("f1, label", [(0.192, REPRODUCED), (0.16, PARTLY), (0.12, NOT_REPRODUCED)])
def test_ablation_preserves_f1(f1, label):
    values = {"f1_table_base": 0.193, "f1_table_dpo": 0.195, "f1_ablate_top200": f1}
    assert verdicts.ablation_preserves_f1(values).label == label


def scaled_values(x10, ppl_x10, up=(math.nan,) * 3, ppl_up=math.nan):
    values = {
        "table_tox_base": 0.453,
        "table_tox_dpo": 0.208,
        "table_ppl_dpo": 23.34,
        "ppl_dpo": 23.34,
        "ppl_scale_keys_x10": ppl_x10,
        "ppl_scale_up_x10": ppl_up,
    }
    return (
        values
        | interval("retox_share_x10", *x10)
        | interval("retox_share_x10_up", *up)
        | interval("retox_share_x10_dpo_ranked", 0.9, 0.7, 1.1)
    )


@pytest.mark.parametrize(
    "x10, ppl_x10, label",
    [
        ((1.02, 0.8, 1.2), 23.3, REPRODUCED),  # Lee et al.: 0.458 against the base model's 0.453
        ((1.02, 0.8, 1.2), 37.3, PARTLY),  # the v1 perplexity, edit compounded: the model breaks
        ((0.17, 0.05, 0.3), 23.3, PARTLY),
        ((-0.03, -0.15, 0.1), 23.3, NOT_REPRODUCED),
    ],
)
def test_scaled_keys_retoxify(x10, ppl_x10, label):
    assert verdicts.scaled_keys_retoxify(scaled_values(x10, ppl_x10)).label == label


def test_scaled_keys_compare_perplexity_on_the_same_window():
    # chapter 2's DPO perplexity on eight windows is 30.7 (ratio 1.10); on the table's own window DPO's is 14.74
    values = scaled_values((0.9, 0.6, 1.2), 33.8) | {
        "table_ppl_dpo": 14.74,
        "ppl_dpo": 30.7,
        "tox_scale_keys_x10": 0.4285,
    }
    verdict = verdicts.scaled_keys_retoxify(values)
    assert verdict.label == PARTLY and "breaking the model" in verdict.reason


def test_scaled_keys_need_an_interval_that_excludes_none():
    # a point of 60 % whose interval runs from −20 % to 140 % cannot say whether ×10 undoes anything
    values = scaled_values((0.6, -0.2, 1.4), 23.3) | {"tox_scale_keys_x10": 0.355}
    assert verdicts.scaled_keys_retoxify(values).label == NOT_TESTABLE


def test_scaled_keys_read_both_sides_of_a_gated_mlp():
    gate_silences = scaled_values((0.02, -0.1, 0.1), 23.3, up=(0.9, 0.7, 1.1), ppl_up=24.0)
    verdict = verdicts.scaled_keys_retoxify(gate_silences)
    assert verdict.label == PARTLY and "disagree" in verdict.reason
    assert (
        verdicts.scaled_keys_retoxify(scaled_values((1.0, 0.8, 1.2), 23.3, (0.9, 0.7, 1.1), 24.0)).label == REPRODUCED
    )


@pytest.mark.parametrize(
    "x2, x5, label", [((1.2, 1.0, 1.4), (1.4, 1.2, 1.6), REPRODUCED), ((1.2, 1.0, 1.4), (0.0, -0.1, 0.1), PARTLY)]
)
def test_smaller_scales_retoxify(x2, x5, label):
    values = (
        {
            "table_tox_base": 0.453,
            "table_tox_dpo": 0.208,
            "table_ppl_dpo": 23.34,
            "ppl_scale_keys_x2": 23.3,
            "ppl_scale_keys_x5": 23.4,
        }
        | interval("retox_share_x2", *x2)
        | interval("retox_share_x5", *x5)
    )
    assert verdicts.smaller_scales_retoxify(values).label == label


# ---------------------------------------------------------------------------------------------------------
# Chapter 5.


def toxic_patch_values(share=(0.1, 0.02, 0.2), ppl=15.0, drop_low=0.01, tox_dpo=0.2):
    return {
        "tox_base_eval": 0.3,
        "tox_dpo_eval": tox_dpo,
        "dpo_drop_low": drop_low,
        "ppl_patch_toxic256": ppl,
        "ppl_dpo_eval": 14.1,
    } | interval("toxic_share_patching", *share)


def test_toxic_share_patching_needs_a_dpo_drop_with_an_interval_above_zero():
    assert verdicts.toxic_share_patching(toxic_patch_values(tox_dpo=0.3)).label == NOT_TESTABLE
    assert verdicts.toxic_share_patching(toxic_patch_values(drop_low=-0.01)).label == NOT_TESTABLE
    assert verdicts.toxic_share_patching(toxic_patch_values()).label == REPRODUCED


@pytest.mark.parametrize(
    "share, label", [((0.1, 0.02, 0.2), REPRODUCED), ((-0.2, -0.5, 0.1), REPRODUCED), ((0.5, 0.3, 0.7), NOT_REPRODUCED)]
)
def test_toxic_share_patching_treats_the_range_as_an_upper_bound(share, label):
    assert verdicts.toxic_share_patching(toxic_patch_values(share)).label == label


def test_a_patching_share_that_straddles_the_bound_cannot_decide():
    # Gemma 3: −51 %, 95 % interval −346 % to 27 %: it holds the paper's range, and values above it
    verdict = verdicts.toxic_share_patching(toxic_patch_values((-0.51, -3.46, 0.27)))
    assert verdict.label == NOT_TESTABLE and "straddles" in verdict.reason


def test_a_patch_that_breaks_the_model_says_nothing_of_the_toxic_share():
    # SmolLM2: the top-256 patch at perplexity 43.7 against DPO's 14.1
    assert verdicts.toxic_share_patching(toxic_patch_values(ppl=43.7)).label == NOT_TESTABLE


@pytest.mark.parametrize(
    "share, label",
    [((0.05, 0.01, 0.1), REPRODUCED), ((0.6, 0.4, 0.8), NOT_REPRODUCED), ((0.2, 0.1, 0.3), NOT_TESTABLE)],
)
def test_toxic_share_on_the_mediation_metric(share, label):
    values = (
        MARGIN
        | interval("mediation_share_toxic256_denoise", *share)
        | interval("mediation_share_toxic128_denoise", 0.03, 0.0, 0.06)
        | {"mediation_share_random_toxic256_mean": 0.01, "mediation_share_random_toxic256_sd": 0.01}
    )
    assert verdicts.toxic_share_mediation(values).label == label


@pytest.mark.parametrize(
    "share, low, high, label",
    [
        (1.0, 0.9, 1.1, REPRODUCED),
        (0.6, 0.5, 0.7, PARTLY),
        (0.6, 0.3, 1.05, REPRODUCED),
        (1.4, 1.3, 1.5, PARTLY),
        (0.2, 0.1, 0.3, NOT_REPRODUCED),
        (0.9, -0.5, 2.0, NOT_TESTABLE),
    ],
)
def test_patch_recovers_drop(share, low, high, label):
    assert verdicts.patch_recovers_drop("patching all four groups", share, low, high).label == label


def group_patch_values(every=(1.0, 0.9, 1.1), ppl=25.0, tox_last=0.2, f1_last=0.19):
    return {
        "tox_base_eval": 0.3,
        "tox_dpo_eval": 0.2,
        "dpo_drop_low": 0.02,
        "ppl_patch_all_groups": ppl,
        "ppl_dpo_eval": 23.0,
        "tox_patch_all_groups_last": tox_last,
        "ppl_patch_all_groups_last": 21.0,
        "f1_patch_all_groups_last": f1_last,
        "f1_base_eval": 0.2,
    } | interval("share_patch_all_groups", *every)


@pytest.mark.parametrize(
    "every, tox_last, label",
    [
        ((1.0, 0.9, 1.1), 0.2, REPRODUCED),
        ((0.2, 0.1, 0.3), 0.28, NOT_REPRODUCED),
        ((1.0, 0.9, 1.1), 0.28, PARTLY),  # the two rows disagree
        ((0.9, -0.5, 2.0), 0.2, REPRODUCED),  # the every-position row cannot decide; the last-position row does
    ],
)
def test_group_patching_reads_every_position_and_last_position_rows(every, tox_last, label):
    assert verdicts.group_patching_matches(group_patch_values(every, tox_last=tox_last)).label == label


def test_group_patching_that_breaks_the_model_is_only_partly_a_match():
    verdict = verdicts.group_patching_matches(group_patch_values(ppl=12000.0))
    assert verdict.label == PARTLY and "breaking the model" in verdict.reason


def test_group_patching_checks_perplexity_before_the_share():
    # an every-position patch that overshoots (180 %) at perplexity 19,633: chapter 5 says "matches only while
    # breaking the model", and so must the ledger, whatever the share
    values = group_patch_values((1.8, 1.6, 2.0), ppl=19633.0, tox_last=0.12)
    verdict = verdicts.group_patching_matches(values)
    assert verdict.label == PARTLY and "only while breaking the model" in verdict.reason


def test_a_last_position_patch_that_ruins_f1_is_not_a_fluent_match():
    verdict = verdicts.group_patching_matches(group_patch_values(f1_last=0.05))
    assert verdict.label == PARTLY and "F1" in verdict.reason


def group_mediation_values(denoise=(0.95, 0.85, 1.05), random=(0.3, 0.1), ppl=24.0):
    return (
        MARGIN
        | interval("mediation_share_all_groups_denoise", *denoise)
        | interval("mediation_share_all_groups_noise", 0.9, 0.8, 1.0)
        | {
            "mediation_share_random_all_groups_mean": random[0],
            "mediation_share_random_all_groups_sd": random[1],
            "ppl_patch_tokenwise_all_groups": ppl,
            "ppl_dpo_eval": 23.0,
        }
    )


@pytest.mark.parametrize(
    "denoise, random, ppl, label",
    [
        ((0.95, 0.85, 1.05), (0.3, 0.1), 24.0, REPRODUCED),
        ((0.95, 0.85, 1.05), (0.8, 0.2), 24.0, NOT_SPECIFIC),  # random sets of their size recover as much
        ((0.95, 0.85, 1.05), (0.3, 0.1), 400.0, PARTLY),  # real activations that still break the model
        ((0.3, 0.2, 0.4), (0.3, 0.1), 24.0, NOT_REPRODUCED),
    ],
)
def test_group_patching_on_the_mediation_metric(denoise, random, ppl, label):
    assert verdicts.group_patching_mediation(group_mediation_values(denoise, random, ppl)).label == label


@pytest.mark.parametrize(
    "groups, label",
    [
        ([(0.3, 0.2, 0.4)] * 4, REPRODUCED),
        ([(0.3, 0.2, 0.4)] * 3 + [(0.6, 0.3, 1.1)], PARTLY),
        ([(0.3, 0.2, 0.4)] * 3 + [(1.0, 0.9, 1.1)], NOT_REPRODUCED),
        ([(0.3, 0.2, 0.4)] * 3 + [(0.9, 0.5, 1.3)], NOT_TESTABLE),
    ],
)
def test_single_groups_fall_short(groups, label):
    values = dict(MARGIN)
    for group, estimate in zip(("tp", "tn", "ap", "an"), groups):
        values |= interval(f"mediation_share_{group}_denoise", *estimate)
    assert verdicts.single_groups_fall_short(values).label == label


def test_single_groups_fall_short_only_partly_when_the_profile_patches_tp_minus_alone():
    values = MARGIN | interval("mediation_share_tp_denoise", 0.3, 0.2, 0.4)
    for group in ("tn", "ap", "an"):
        values |= interval(f"mediation_share_{group}_denoise", *NO_ROW)
    verdict = verdicts.single_groups_fall_short(values)
    assert verdict.label == PARTLY and "TN+, AP+, AN− alone not run" in verdict.reason


@pytest.mark.parametrize(
    "tox_edit, ppl_edit, label", [(0.15, 32.0, REPRODUCED), (0.15, 40.0, PARTLY), (0.25, 30.0, NOT_REPRODUCED)]
)
def test_editing_beats_dpo(tox_edit, ppl_edit, label):
    values = {
        "tox_edit_best": tox_edit,
        "ppl_edit_best": ppl_edit,
        "tox_base_eval": 0.3,
        "tox_dpo_eval": 0.2,
        "dpo_drop_low": 0.02,
        "ppl_dpo_eval": 30.0,
    }
    assert verdicts.editing_beats_dpo(values).label == label


def test_an_edit_that_does_not_preserve_perplexity_does_not_beat_dpo():
    # perplexity 8,250 against DPO's 17.2: "while preserving perplexity" fails, whatever the toxicity
    values = {
        "tox_edit_best": 0.01,
        "ppl_edit_best": 8250.0,
        "tox_base_eval": 0.3,
        "tox_dpo_eval": 0.2,
        "dpo_drop_low": 0.02,
        "ppl_dpo_eval": 17.2,
    }
    assert verdicts.editing_beats_dpo(values).label == NOT_REPRODUCED


# ---------------------------------------------------------------------------------------------------------
# The claims and the table.


def test_claims_are_claim_instances_with_unique_ids():
    assert all(isinstance(claim, Claim) for claim in CLAIMS)
    assert len({claim.id for claim in CLAIMS}) == len(CLAIMS) >= 24


def every_location(claim):
    found = claim.locations() + claim.mediation_locations()
    if claim.second_model:
        found += claim.locations(second=True) + claim.mediation_locations(second=True)
    return found


@pytest.mark.parametrize("claim", CLAIMS, ids=lambda c: c.id)
def test_each_rule_reads_only_the_keys_its_claim_declares(claim):
    values = {name: 0.3 for _, _, name in claim.locations()}
    assert claim.rule(values).label in VERDICTS  # a KeyError would mean an undeclared key
    if claim.mediation_rule is not None:
        values = {name: 0.3 for _, _, name in claim.mediation_locations()}
        assert claim.mediation_rule(values).label in VERDICTS


@pytest.mark.parametrize("claim", CLAIMS, ids=lambda c: c.id)
def test_every_key_a_claim_reads_is_documented(claim):
    for _, key, _ in every_location(claim):
        assert key_meaning(key), f"{claim.id} reads {key}, which KEY_MEANINGS does not document"


def test_the_key_glossary_lists_each_key_once_with_its_chapter():
    glossary = key_glossary()
    assert glossary.index.is_unique and glossary["meaning"].notna().all()
    assert glossary.loc["share_tp", "chapter"] == "03_attribution"
    assert glossary.loc["share_tp_second", "chapter"] == "05_patching"
    assert "interval" in glossary.loc["ablation_closest_excess_low", "meaning"]


# Keys a claim reads that its chapter does not glue yet: chapter 5 adds them for the second model, from the library
# functions chapters 1 and 3 use (see KEY_MEANINGS).
PENDING_KEYS: set[tuple[str, str]] = {
    ("book/05_patching", f"{key}_second")
    for key in (
        "f1_dpo_eval",
        "probe_accuracy_natural",
        "share_tp_z",
        "share_tn_z",
        "share_ap_z",
        "share_an_z",
        "top_ranked_share_tp",
        "top_ranked_share_max_other",
        "share_reducing_neurons",
        "layer_net_over_positive",
        "top100_activation_fall_share",
        "activation_fall_share_all",
        "top100_activation_fall_z",
        "weight_cosine_min",
        "shrink_share_tp",
        "shrink_share_tn",
        "shrink_share_ap",
        "shrink_share_an",
    )
}


@pytest.mark.parametrize("claim", CLAIMS, ids=lambda c: c.id)
def test_keys_read_from_an_existing_chapter_are_glued_by_its_source(claim):
    root = project_root()
    for document, key, _ in every_location(claim):
        source = root / f"{document}.py"
        if source.is_file() and (document, key) not in PENDING_KEYS:
            assert glued_in_source(key, document), f"{document} does not glue {key}"


def test_ledger_judges_present_chapters_and_marks_absent_ones_not_testable(tmp_path):
    write_notebook(
        tmp_path / "01_probe.ipynb",
        {"probe_accuracy_natural": 0.93, "probe_test_accuracy": 0.9},
        headings=["Features, training and held-out evaluation"],
    )
    write_notebook(
        tmp_path / "03_attribution.ipynb",
        {"share_tp": 0.32, "share_tp_null_mean": 0.3, "share_tp_z": 1.0, "late_layer_share": 0.2},
    )
    table = ledger_table(tmp_path, model="tiny")
    assert table.loc["probe-accuracy", "verdict"] == REPRODUCED
    assert table.loc["probe-accuracy", "ours (tiny)"] == "probe_accuracy_natural = 0.93, probe_test_accuracy = 0.9"
    assert table.loc["tp-share", "verdict"] == NOT_SPECIFIC
    assert "book/05_patching has not been run" in table.loc["tp-share", "why"]
    assert table.loc["late-layers", "verdict"] == NOT_REPRODUCED
    assert table.loc["dpo-lowers-toxicity", "verdict"] == NOT_TESTABLE
    assert "glues no number 'share_tn'" in table.loc["all-groups-contribute", "why"]
    assert table.loc["group-patching", "verdict"] == NOT_TESTABLE
    assert table.loc["group-patching", "why"].startswith("tiny: neither metric can decide")
    assert sum(verdict_counts(table).values()) == len(CLAIMS)


def test_the_second_model_is_read_from_chapter_5_with_the_suffix(tmp_path):
    patching = group_patch_values() | {"ppl_base_eval": 20.0, "ppl_dpo_eval": 21.0, "dpo_drop_low": 0.05}
    second = group_patch_values((0.2, 0.1, 0.3), tox_last=0.28) | {
        "ppl_base_eval": 20.0,
        "ppl_dpo_eval": 21.0,
        "dpo_drop_low": 0.05,
        "tox_dpo_eval": 0.15,
    }
    write_notebook(
        tmp_path / "05_patching.ipynb",
        {"second_model_name": "gemma3-270m", **patching, **{f"{key}_second": value for key, value in second.items()}},
    )
    table = ledger_table(tmp_path, model="tiny")
    assert table.loc["group-patching", "verdict"] == PARTLY  # one model reproduces, the other does not
    assert "share_patch_all_groups = 0.2" in table.loc["group-patching", "ours (gemma3-270m)"]
    # the DPO claim reads chapter 2 for the default model (not run here) and chapter 5's keys for the second
    assert table.loc["dpo-lowers-toxicity", "verdict"] == REPRODUCED
    assert "tox_dpo = 0.15" in table.loc["dpo-lowers-toxicity", "ours (gemma3-270m)"]
    assert "book/02_dpo has not been run" in table.loc["dpo-lowers-toxicity", "why"]


def undecided_generation_decided_margin():
    """DPO's drop on the table's prompts is noise and the closest row cannot be told from DPO, but the margin shift
    is measured and the best guarded row recovers a third of it: (generation values, mediation values)."""
    return ablation_values(closest=(0.01, -0.03, 0.05)), MARGIN | interval(
        "mediation_share_best_ablation", 0.3, 0.2, 0.4
    ) | interval("mediation_share_ablate_top200", 0.2, 0.1, 0.3)


def test_the_mediation_metric_decides_what_generated_toxicity_cannot(tmp_path):
    generation, mediation = undecided_generation_decided_margin()
    write_notebook(tmp_path / "04_ablation.ipynb", generation | mediation)
    row = ledger_table(tmp_path).loc["ablation-falls-short"]
    assert row["verdict"] == REPRODUCED and row["why"].startswith("decided by the mediation metric")
    assert "generated-toxicity metric: not testable here" in row["why"]
    assert "ablation_closest_row = ablate top 100 toxic" in row["ours (default model)"]


def test_not_testable_only_when_neither_metric_can_decide(tmp_path):
    generation = ablation_values(closest=(0.01, -0.03, 0.05))
    noisy_margin = (
        interval("mediation_dpo_margin", 0.1, -0.2, 0.4)
        | interval("mediation_share_best_ablation", 0.3, 0.2, 0.4)
        | interval("mediation_share_ablate_top200", 0.2, 0.1, 0.3)
    )
    write_notebook(tmp_path / "04_ablation.ipynb", generation | noisy_margin)
    assert ledger_table(tmp_path).loc["ablation-falls-short", "verdict"] == NOT_TESTABLE
    write_notebook(tmp_path / "04_ablation.ipynb", ablation_values(closest=(0.05, 0.02, 0.09)) | noisy_margin)
    assert ledger_table(tmp_path).loc["ablation-falls-short", "verdict"] == REPRODUCED


def test_an_optional_key_may_be_absent(tmp_path):
    # the ci profile patches the 256 most toxic neurons token by token but not the 128
    values = (
        MARGIN
        | interval("mediation_share_toxic256_denoise", 0.05, 0.01, 0.1)
        | {"mediation_share_random_toxic256_mean": 0.01, "mediation_share_random_toxic256_sd": 0.01}
    )
    write_notebook(tmp_path / "05_patching.ipynb", values)
    why = ledger_table(tmp_path).loc["toxic-share-patching", "why"]
    assert "mediation metric: reproduced" in why and "128" not in why


def test_nan_is_read_only_where_the_claim_gives_it_a_meaning(tmp_path):
    no_row = ablation_values(closest=NO_ROW, ratio=math.nan, least=(0.04, 0.01, 0.07), row=math.nan)
    write_notebook(tmp_path / "04_ablation.ipynb", no_row | {"table_tox_dpo": math.nan})
    why = ledger_table(tmp_path).loc["ablation-falls-short", "why"]
    assert "glues no number 'table_tox_dpo'" in why  # a NaN DPO toxicity is a missing value
    write_notebook(tmp_path / "04_ablation.ipynb", no_row)
    row = ledger_table(tmp_path).loc["ablation-falls-short"]
    assert row["verdict"] == REPRODUCED and "no ablation or patching row stays within" in row["why"]
    assert "ablation_closest_row = none" in row["ours (default model)"]


def test_ledger_raises_on_a_malformed_chapter(tmp_path):
    (tmp_path / "02_dpo.ipynb").write_text("{broken")
    with pytest.raises(ValueError):
        ledger_table(tmp_path)


def test_links_point_to_existing_sections_and_text_is_escaped(tmp_path):
    write_notebook(
        tmp_path / "01_probe.ipynb",
        {"probe_accuracy_natural": 0.93, "probe_test_accuracy": 0.9},
        headings=["Features, training and held-out evaluation"],
    )
    write_notebook(tmp_path / "03_attribution.ipynb", {"share_tp": 0.32})  # no headings: page link only
    table = ledger_table(tmp_path)
    assert table.loc["probe-accuracy", "chapter"] == (
        '<a href="01_probe.html#features-training-and-held-out-evaluation">'
        "01_probe § Features, training and held-out evaluation</a>"
    )
    assert table.loc["tp-share", "chapter"] == '<a href="03_attribution.html">03_attribution</a>'
    assert table.loc["group-patching", "chapter"] == "05_patching"  # not run: no link
    rendered = ledger_html(table)
    assert '<a href="01_probe.html#features-training-and-held-out-evaluation">' in rendered
    assert "&lt;" not in table.loc["probe-accuracy", "chapter"] and "→" in rendered


def test_rendered_ledger_escapes_text_but_not_links(tmp_path):
    write_notebook(
        tmp_path / "01_probe.ipynb",
        {"probe_accuracy_natural": 0.93, "probe_test_accuracy": 0.9},
        headings=["Features, training and held-out evaluation"],
    )
    table = ledger_table(tmp_path)
    table.loc["probe-accuracy", "claim"] = "a <script> claim"
    rendered = ledger_html(table)
    assert "a &lt;script&gt; claim" in rendered and "<script>" not in rendered
    assert rendered.count("</tr>") == len(CLAIMS) + 1  # a header row and a row per claim


def test_scorer_sensitivity_rejudges_a_claim_with_each_component_alone(tmp_path):
    values = {
        "tox_base": 0.40,
        "tox_dpo": 0.25,
        "tox_drop_low": 0.05,
        "ppl_base": 20.0,
        "ppl_dpo": 21.0,
        # With the ridge alone DPO's drop is not distinguishable from zero; with profanity alone it holds.
        "tox_base__ridge": 0.30,
        "tox_dpo__ridge": 0.28,
        "tox_drop_low__ridge": -0.01,
        "tox_base__profanity": 0.50,
        "tox_dpo__profanity": 0.30,
        "tox_drop_low__profanity": 0.10,
    }
    write_notebook(tmp_path / "02_dpo.ipynb", values)
    table = scorer_sensitivity(tmp_path)
    row = table.loc["dpo-lowers-toxicity"]
    assert row["book's scorer"] == REPRODUCED and row["profanity alone"] == REPRODUCED
    assert row["ridge alone"] != REPRODUCED and row["changes"]
    assert "probe-accuracy" not in table.index  # its values do not rest on the scorer


def test_positive_ranking_on_the_mediation_metric():
    decided = {
        **MARGIN,
        **{
            k: v
            for n in (100, 200, 1000)
            for k, v in interval(f"mediation_positive_advantage_top{n}", 1.0, 0.4, 1.6).items()
        },
    }
    assert verdicts.positive_ranking_wins_mediation(decided).label == REPRODUCED
    against = {**decided, **interval("mediation_positive_advantage_top200", -1.0, -1.5, -0.5)}
    assert verdicts.positive_ranking_wins_mediation(against).label == NOT_REPRODUCED
    unmeasurable = {**decided, **interval("mediation_dpo_margin", 0.5, -0.1, 1.1)}
    assert verdicts.positive_ranking_wins_mediation(unmeasurable).label == NOT_TESTABLE


def test_smaller_scales_on_the_mediation_metric():
    values = {
        **MARGIN,
        **interval("mediation_retox_share_x2", 0.7, 0.5, 0.9),
        **interval("mediation_retox_share_x5", 0.8, 0.6, 1.0),
        "ppl_scale_keys_x2": 15.0,
        "ppl_scale_keys_x5": 16.0,
        "table_ppl_dpo": 15.0,
    }
    assert verdicts.smaller_scales_retoxify_mediation(values).label == REPRODUCED
    none_undone = {
        **values,
        **interval("mediation_retox_share_x2", 0.0, -0.1, 0.1),
        **interval("mediation_retox_share_x5", 0.05, -0.05, 0.15),
    }
    assert verdicts.smaller_scales_retoxify_mediation(none_undone).label == NOT_REPRODUCED


# ---------------------------------------------------------------------------------------------------------
# Another run's verdicts, and the headline claims.


def test_compared_verdicts_flag_each_claim_whose_verdict_differs(tmp_path):
    write_notebook(tmp_path / "03_attribution.ipynb", {"share_tp": 0.3})
    table = ledger_table(tmp_path)
    other = table.copy()
    other.loc["tp-share", "verdict"] = NOT_REPRODUCED
    other = other.drop(index="late-layers")
    compared = with_compared_verdicts(table, other, "ci run")
    assert compared.loc["tp-share", DIFFERS] and compared.loc["late-layers", DIFFERS]
    assert compared.loc["tp-share", COMPARED] == f"ci run: {NOT_REPRODUCED}"
    assert compared.loc["late-layers", COMPARED] == "ci run: not judged"
    assert int(compared[DIFFERS].sum()) == 2
    assert "⚠ differs" in ledger_html(compared) and "⚠" not in ledger_html(table)


def test_the_headline_table_shows_each_models_number_with_its_interval_and_the_verdict(tmp_path):
    write_notebook(tmp_path / "03_attribution.ipynb", {"share_tp": 0.31})
    write_notebook(
        tmp_path / "05_patching.ipynb",
        {
            "second_model_name": "gemma3-270m",
            **interval("mediation_share_all_groups_denoise", 0.58, 0.51, 0.66),
            # The chapters glue the second model's keys with the suffix last: ..._low_second.
            **{
                f"{key}_second": value
                for key, value in interval("mediation_share_all_groups_denoise", 0.38, 0.30, 0.47).items()
            },
        },
    )
    table = ledger_table(tmp_path, model="smollm2-135m")
    headlines = headline_table(table, tmp_path)
    assert list(headlines.index) == [headline.claim for headline in HEADLINES]
    assert headlines.loc["group-patching", "ours (smollm2-135m)"] == "0.58 [0.51, 0.66]"
    assert headlines.loc["group-patching", "ours (gemma3-270m)"] == "0.38 [0.30, 0.47]"
    assert headlines.loc["tp-share", "ours (smollm2-135m)"] == "0.31"
    assert headlines.loc["tp-share", "ours (gemma3-270m)"] == "missing"
    assert headlines.loc["ablation-falls-short", "ours (smollm2-135m)"] == "missing"
    assert headlines.loc["ablation-falls-short", "ours (gemma3-270m)"] == "not measured"  # a one-model claim
    assert (headlines["verdict"] == table.loc[headlines.index, "verdict"]).all()
    assert "0.58 [0.51, 0.66]" in headline_html(headlines)


def test_a_run_without_a_second_model_judges_the_default_model_alone_and_says_so(tmp_path):
    tp = {"share_tp": 0.31, "share_tp_null_mean": 0.2, "share_tp_z": 3.0}
    write_notebook(tmp_path / "03_attribution.ipynb", tp)
    write_notebook(tmp_path / "05_patching.ipynb", interval("mediation_share_all_groups_denoise", 0.58, 0.51, 0.66))
    table = ledger_table(tmp_path, model="smollm2-135m")
    alone = chapter_verdict("tp-share", "book/03_attribution", tp)
    assert alone.label != NOT_TESTABLE
    assert (table.loc["tp-share", "verdict"], table.loc["tp-share", "why"]) == (alone.label, alone.reason)
    assert table.loc["tp-share", "ours (second model)"] == "no second model in this run"
    assert table.loc["ablation-falls-short", "ours (second model)"] == "not measured on this model"
    headlines = headline_table(table, tmp_path)
    assert headlines.loc["group-patching", "ours (second model)"] == "no second model in this run"
    assert headlines.loc["ablation-falls-short", "ours (second model)"] == "not measured"


def test_a_chapter_gets_the_ledgers_own_verdict_from_the_values_it_glued(tmp_path):
    generation, mediation = undecided_generation_decided_margin()
    write_notebook(tmp_path / "04_ablation.ipynb", generation | mediation)
    row = ledger_table(tmp_path).loc["ablation-falls-short"]
    glued = generation | mediation
    both = chapter_verdict("ablation-falls-short", "book/04_ablation", glued)
    assert (both.label, both.reason) == (row["verdict"], row["why"])
    assert chapter_verdict("ablation-falls-short", "book/04_ablation", glued, GENERATION).label == NOT_TESTABLE
    assert chapter_verdict("ablation-falls-short", "book/04_ablation", glued, MEDIATION).label == REPRODUCED


def test_a_chapter_verdict_names_a_wrong_claim_or_metric():
    with pytest.raises(KeyError, match="no-such-claim"):
        chapter_verdict("no-such-claim", "book/04_ablation", {})
    with pytest.raises(ValueError, match="tp-share"):
        chapter_verdict("tp-share", "book/03_attribution", {}, MEDIATION)


def test_glued_keeps_what_it_glues_as_python_numbers(monkeypatch):
    shown = []
    monkeypatch.setattr(glued_module, "glue", lambda key, value, display: shown.append((key, value, display)))
    glued = glued_module.Glued()
    assert glued("share_tp", np.float64(0.25)) == 0.25
    glued.many({"tox_base": np.float32(0.5), "pairs_n": np.int64(3)}, suffix="_second")
    assert glued.values == {"share_tp": 0.25, "tox_base_second": 0.5, "pairs_n_second": 3}
    assert all(type(value) in (float, int) and display is False for _, value, display in shown)
