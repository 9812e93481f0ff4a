"""The paper's claims, where the book measures each, and what every value the claims read holds.

A :class:`Claim` names the paper's statement and value, the chapter and glue keys that hold ours, the tolerance
in words and its rule (:mod:`~dpo_toxicity.verdicts`); :data:`CLAIMS` lists them in the order the ledger shows
them. Claims tested on both offline models read the second model's values from :data:`SECOND_MODEL_DOCUMENT`,
under the same keys with the suffix ``_second``. :data:`KEY_MEANINGS` is the contract between the chapters and
the ledger: what each key holds and which chapter glues it.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from .verdicts import (
    GROUP_LABELS,
    POSITIVE_RANKING_SIZES,
    Verdict,
    ablation_falls_short,
    ablation_falls_short_mediation,
    ablation_partly_closes_gap,
    ablation_preserves_f1,
    all_groups_contribute,
    change_uncorrelated,
    dpo_lowers_toxicity,
    dpo_preserves_f1,
    editing_beats_dpo,
    group_patching_matches,
    group_patching_mediation,
    late_layers_dominate,
    layers_nearly_cancel,
    magnitude_by_group,
    net_small_part,
    positive_ranking_wins,
    positive_ranking_wins_mediation,
    probe_accuracy,
    promotes_toxic_tokens,
    reducing_neurons_share,
    scaled_keys_retoxify,
    single_groups_fall_short,
    smaller_scales_retoxify,
    smaller_scales_retoxify_mediation,
    top_toxic_activations_fall,
    top_toxic_negative,
    toxic_share_mediation,
    toxic_share_patching,
    toxic_share_projection,
    tp_dominates_top_ranked,
    tp_share,
    weights_barely_move,
)

SECOND_MODEL_DOCUMENT = "book/05_patching"
SECOND_SUFFIX = "_second"

# ---------------------------------------------------------------------------------------------------------
# Claims.


@dataclass(frozen=True)
class Claim:
    """One claim of the paper and where the book measures it.

    ``keys`` and ``null_keys`` are glue keys of ``document`` (a key written ``book/02_dpo::ppl_dpo`` is read
    from that other chapter). ``rule`` sees them all by their bare names. A claim judged on the mediation metric
    too names its keys ``mediation_keys`` and its rule ``mediation_rule`` (same document, same naming), and
    :func:`~dpo_toxicity.verdicts.by_metric` combines the two. Keys in ``text_keys`` are read as text (a row's name, for a reason);
    keys in ``optional_keys`` may be NaN or absent, and the rule reads NaN ("no such row", "a set this profile
    does not run"); any other NaN or absent key counts as missing.
    ``section`` is the heading of ``document`` the ledger links to. With ``second_model`` the second offline
    model's values are read from :data:`SECOND_MODEL_DOCUMENT`: the keys ``second_keys`` (one per key, same order;
    by default ``keys`` themselves), ``null_keys`` and ``mediation_keys``, each with the suffix ``_second``.
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
    mediation_keys: tuple[str, ...] = ()
    mediation_rule: Callable[[Mapping[str, float]], Verdict] | None = None
    mediation_tolerance: str = ""
    text_keys: tuple[str, ...] = ()
    optional_keys: tuple[str, ...] = ()

    def located(self, key: str, second_key: str, second: bool) -> tuple[str, str, str]:
        """``(document, glue key, name the rule sees)`` of ``key`` (``second_key`` on the second model)."""
        document, _, name = key.rpartition("::")
        if second:
            return SECOND_MODEL_DOCUMENT, second_key.rpartition("::")[2] + SECOND_SUFFIX, name
        return document or self.document, name, name

    def locations(self, second: bool = False) -> list[tuple[str, str, str]]:
        """``(document, glue key, name the rule sees)`` for every value ``rule`` needs, for one model."""
        second_keys = (self.second_keys or self.keys) + self.null_keys
        return [
            self.located(key, second_key, second)
            for key, second_key in zip(self.keys + self.null_keys, second_keys, strict=True)
        ]

    def mediation_locations(self, second: bool = False) -> list[tuple[str, str, str]]:
        """The same for every value ``mediation_rule`` needs (none without one)."""
        return [self.located(key, key, second) for key in self.mediation_keys]


_SHARE_NULL = (
    "random unit directions in place of the probe (chapter 3): the z of the share the claim is about; "
    "|z| < 2: not specific to toxicity, 2 to 3: marginal"
)


def _with_interval(*keys: str) -> tuple[str, ...]:
    """Each key followed by its interval's ends, ``key_low`` and ``key_high``."""
    return tuple(name for key in keys for name in (key, f"{key}_low", f"{key}_high"))


_MARGIN = _with_interval("mediation_dpo_margin")
_MARGIN_TOLERANCE = "DPO's margin shift with a 95 % interval above 0; "

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
        id="dpo-preserves-f1",
        statement="DPO keeps the model's fluency on next-token prediction (F1).",
        source="Lee et al. Table 2 = v1 Table 1",
        paper_text="F1 0.193 → 0.195 (GPT-2-medium)",
        paper_number=0.195,
        document="book/02_dpo",
        keys=("f1_base", "f1_dpo"),
        tolerance="DPO's F1 at least 90 % of the base model's (75 %: partly)",
        rule=dpo_preserves_f1,
        section="Base vs DPO",
        second_model=True,
        second_keys=("f1_base_eval", "f1_dpo_eval"),
    ),
    Claim(
        id="probe-accuracy",
        statement="A linear probe on the last-layer residual stream separates toxic from non-toxic comments.",
        source="Lee et al. §3",
        paper_text="94 % validation accuracy on Jigsaw's natural balance (about 10 % toxic), GPT-2-medium",
        paper_number=0.94,
        document="book/01_probe",
        keys=("probe_accuracy_natural", "probe_test_accuracy"),
        tolerance="accuracy at Jigsaw's natural balance (our balanced test set reweighted to 10 % toxic) at most 2 "
        "points below 94 % (above the majority class's 90 %: partly); the balanced accuracy, whose "
        "chance level is 50 %, is not comparable with the paper's",
        rule=probe_accuracy,
        section="Features, training and held-out evaluation",
        second_model=True,
    ),
    Claim(
        id="probe-promotes-toxic-tokens",
        statement="Read through the unembedding, the probe and the top toxic value vectors promote toxic tokens.",
        source="Lee et al. Table 1",
        paper_text="the probe's and GPT-2-medium's top toxic value vectors' logit-lens tokens are profanity and slurs",
        paper_number=None,
        document="book/01_probe",
        keys=(
            "logit_lens_toxic_share_probe",
            "logit_lens_toxic_z_probe",
            "logit_lens_toxic_share_neurons",
            "logit_lens_toxic_z_neurons",
        ),
        null_keys=("logit_lens_toxic_null_probe", "logit_lens_toxic_null_neurons"),
        null_control="random unit directions (for the probe) and random neurons (for the top toxic value vectors): "
        "how often the scorer flags their top logit-lens tokens",
        tolerance="the probe's and the top 20 toxic neurons' top-50 tokens flagged more often than random ones' "
        "(z ≥ 3 both; one z ≥ 2: partly)",
        rule=promotes_toxic_tokens,
        section="The probe direction in vocabulary space",
    ),
    Claim(
        id="ablation-falls-short",
        statement="Ablating the top toxic neurons, or patching the dampened toxic ones, falls short of DPO.",
        source="v1 Table 1",
        paper_text="ablate top 200 toxic neurons: 20 % of DPO's drop (0.453 → 0.405); best ablation row 55 %; "
        "patch all dampened toxic neurons: 48 % (0.335)",
        paper_number=0.20,
        document="book/04_ablation",
        keys=(
            "table_tox_base",
            "table_tox_dpo",
            "dpo_drop_low",
            "ablation_closest_row",
            *_with_interval("ablation_closest_excess"),
            "ablation_closest_ppl_ratio",
            *_with_interval("ablation_least_toxic_excess"),
            "ablation_least_toxic_ppl_ratio",
        ),
        tolerance="the least toxic ablation or patching row within 1.1× DPO's perplexity more toxic than DPO, "
        "paired over prompts with a 95 % interval above 0 (below 0: not reproduced; holding 0: cannot "
        "decide); with no row that close, the least toxic row more toxic than DPO (else partly)",
        rule=ablation_falls_short,
        mediation_keys=(*_MARGIN, *_with_interval("mediation_share_best_ablation", "mediation_share_ablate_top200")),
        mediation_rule=ablation_falls_short_mediation,
        mediation_tolerance=_MARGIN_TOLERANCE + "the best row within 1.1× DPO's perplexity recovers less than "
        "all of DPO's shift (interval below 100 %; a point at 80 % or more: partly)",
        text_keys=("ablation_closest_row",),
        optional_keys=(
            *_with_interval("ablation_closest_excess"),
            "ablation_closest_ppl_ratio",
            *_with_interval("mediation_share_best_ablation"),
        ),
    ),
    Claim(
        id="ablation-partly-closes-gap",
        statement="Ablating the top toxic neurons only partly closes the per-layer gap between the base and DPO "
        "models' write along the probe.",
        source="v1 Figure 1a",
        paper_text="the ablated model's per-layer projection lies between the base and DPO models', most visibly "
        "at GPT-2-medium's layers 18–19",
        paper_number=None,
        document="book/04_ablation",
        keys=("fig1a_gap_closed",),
        tolerance="the top 200 toxic neurons ablated close more than 0 and at most 80 % of the gap summed over "
        "layers (80–100 %: partly)",
        rule=ablation_partly_closes_gap,
        section="Figure 1a: where the write along the probe changes",
    ),
    Claim(
        id="positive-ranking-beats-cosine",
        statement="Ablating positively activated toxic neurons lowers toxicity more than ablating the same number "
        "ranked by cosine alone.",
        source="v1 Table 1",
        paper_text="top 100 / 200 / 1000: 0.384 / 0.366 / 0.320 positively activated, against 0.403 / 0.405 / "
        "0.436 by cosine (GPT-2-medium)",
        paper_number=None,
        document="book/04_ablation",
        keys=_with_interval(*(f"ablation_positive_advantage_top{n}" for n in POSITIVE_RANKING_SIZES)),
        tolerance="the cosine row's toxicity minus the positively activated row's, paired over prompts, with a "
        "95 % interval above 0 at N = 100, 200 and 1000 (every point above 0: partly; an interval "
        "below 0: not reproduced)",
        rule=positive_ranking_wins,
        mediation_keys=(
            *_MARGIN,
            *_with_interval(*(f"mediation_positive_advantage_top{n}" for n in POSITIVE_RANKING_SIZES)),
        ),
        mediation_rule=positive_ranking_wins_mediation,
        mediation_tolerance=_MARGIN_TOLERANCE + "the positively activated row's margin minus the cosine row's, paired "
        "over items, with a 95 % interval above 0 at every N (as on generated toxicity)",
    ),
    Claim(
        id="ablation-preserves-f1",
        statement="Ablating the top toxic neurons keeps the model's F1.",
        source="v1 Table 1",
        paper_text="ablate top 200 toxic neurons: F1 0.192 against the base model's 0.193 (GPT-2-medium)",
        paper_number=0.192,
        document="book/04_ablation",
        keys=("f1_table_base", "f1_table_dpo", "f1_ablate_top200"),
        tolerance="F1 at least 90 % of the base model's on the same paragraphs (75 %: partly)",
        rule=ablation_preserves_f1,
    ),
    Claim(
        id="tp-share",
        statement="Only about a third of the reduction comes from dampened toxic neurons (TP−).",
        source="v1 abstract; v3 per-model shares",
        paper_text="31.8 % (GPT-2-medium); v3 26–34 % across four models",
        paper_number=0.318,
        document="book/03_attribution",
        keys=("share_tp",),
        null_keys=("share_tp_null_mean", "share_tp_z"),
        null_control=_SHARE_NULL,
        tolerance="within 10 percentage points of 31.8 % (20: partly); then TP−'s share against the null control",
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
        null_keys=("share_tp_z", "share_tn_z", "share_ap_z", "share_an_z"),
        null_control=_SHARE_NULL,
        tolerance="each share at least 5 % (above 0: partly); then the smallest group's share against the null control",
        rule=all_groups_contribute,
        section="The four groups",
        second_model=True,
    ),
    Claim(
        id="tp-dominates-top-ranked",
        statement="Among the neurons that reduce toxicity most, the dampened toxic neurons (TP−) dominate.",
        source="v1 Figure 2b",
        paper_text="TP− carries most of the reduction among GPT-2-medium's top-ranked neurons; the other groups "
        "take over further down the ranking",
        paper_number=None,
        document="book/03_attribution",
        keys=("top_ranked_share_tp", "top_ranked_share_max_other", "share_tp"),
        tolerance="among the 100 neurons with the largest Δ, TP− carries more than any other group (more than its "
        "share of the whole reduction: partly)",
        rule=tp_dominates_top_ranked,
        section="The four groups",
        second_model=True,
    ),
    Claim(
        id="reducing-neurons-share",
        statement="A little over half of all neurons reduce the write along the probe (Δ > 0).",
        source="v3; v1 code",
        paper_text="52–58 % of neurons across models; 57,501 of 98,304 (58.5 %) on GPT-2-medium",
        paper_number=0.585,
        document="book/03_attribution",
        keys=("share_reducing_neurons",),
        tolerance="within 2 points of 52–58 % (40–70 %: partly)",
        rule=reducing_neurons_share,
        section="Net and positive totals",
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
        id="layers-nearly-cancel",
        statement="Within each layer, the neurons that reduce and those that increase the write nearly cancel.",
        source="v1 Figure 3 (right)",
        paper_text="per layer, the sums of positive and negative Δ nearly cancel (GPT-2-medium)",
        paper_number=None,
        document="book/03_attribution",
        keys=("layer_net_over_positive",),
        tolerance="the layers' net reductions, in magnitude, sum to at most 30 % of the positive total (50 %: partly)",
        rule=layers_nearly_cancel,
        section="Layers",
        second_model=True,
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
        id="top-toxic-activations-fall",
        statement="DPO lowers the activations of the top toxic neurons.",
        source="Lee et al.",
        paper_text="the mean activations of GPT-2-medium's top toxic neurons drop after DPO",
        paper_number=None,
        document="book/03_attribution",
        keys=("top100_activation_fall_share",),
        null_keys=("activation_fall_share_all", "top100_activation_fall_z"),
        null_control="all neurons: how often DPO lowers any neuron's activation (one-sided binomial z; below 2: "
        "not specific to toxicity, 2 to 3: marginal)",
        tolerance="more than half of the 100 neurons most aligned with the probe activate less after DPO; then "
        "against all neurons",
        rule=top_toxic_activations_fall,
        section="The top toxic neurons",
        second_model=True,
    ),
    Claim(
        id="weights-barely-move",
        statement="DPO barely moves the weights.",
        source="Lee et al.",
        paper_text="every parameter tensor of GPT-2-medium at a cosine above 0.99 before and after DPO",
        paper_number=0.99,
        document="book/03_attribution",
        keys=("weight_cosine_min",),
        tolerance="the least similar parameter tensor at a cosine above 0.99 (0.95: partly)",
        rule=weights_barely_move,
        section="Per-neuron statistics",
        second_model=True,
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
        id="magnitude-by-group",
        statement="TP− and AN− neurons shrink their activations' magnitude; TN+ and AP+ neurons grow it.",
        source="v3 (activation-change distributions)",
        paper_text="TP− and AN− shrink |m̄|, TN+ and AP+ grow it, on four models",
        paper_number=None,
        document="book/03_attribution",
        keys=("shrink_share_tp", "shrink_share_tn", "shrink_share_ap", "shrink_share_an"),
        tolerance="more than half of TP− and of AN− shrink |m̄|, less than half of TN+ and of AP+ (three groups "
        "of four: partly); with the weights nearly fixed, the group definitions imply it for every "
        "neuron whose activation keeps its sign",
        rule=magnitude_by_group,
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
        tolerance='from 0 to 24 %, the claim\'s upper bound ("only"; 24–50 %: partly)',
        rule=toxic_share_projection,
        section="The top toxic neurons",
        second_model=True,
    ),
    Claim(
        id="toxic-share-patching",
        statement="Patching the toxic neurons recovers only a small part of DPO's effect (patching reading).",
        source="v3 abstract",
        paper_text="2.5 % to 24 % across models (statistic not defined in the retrievable text)",
        paper_number=None,
        document="book/05_patching",
        keys=(
            *_with_interval("toxic_share_patching"),
            "tox_base_eval",
            "tox_dpo_eval",
            "dpo_drop_low",
            "ppl_patch_toxic256",
            "ppl_dpo_eval",
        ),
        tolerance="DPO's drop with 95 % interval above 0 and the patched model within 1.5× DPO's perplexity; the "
        "share's interval under the claim's bound of 24 % (above it: not reproduced; straddling it: "
        "cannot decide)",
        rule=toxic_share_patching,
        section="Group activation patching",
        second_model=True,
        mediation_keys=(
            *_MARGIN,
            *_with_interval("mediation_share_toxic256_denoise", "mediation_share_toxic128_denoise"),
            "mediation_share_random_toxic256_mean",
            "mediation_share_random_toxic256_sd",
        ),
        mediation_rule=toxic_share_mediation,
        mediation_tolerance=_MARGIN_TOLERANCE + "the 256 most toxic neurons' denoising fraction's interval under "
        "24 % (above it: not reproduced; straddling it: cannot decide)",
        optional_keys=_with_interval("mediation_share_toxic128_denoise"),
    ),
    Claim(
        id="group-patching",
        statement="Patching all four groups to their post-DPO activations reproduces DPO's effect.",
        source="v3 abstract",
        paper_text="the four groups' combined patching replicates DPO across models (values not retrievable)",
        paper_number=1.0,
        document="book/05_patching",
        keys=(
            *_with_interval("share_patch_all_groups"),
            "tox_base_eval",
            "tox_dpo_eval",
            "dpo_drop_low",
            "ppl_patch_all_groups",
            "ppl_dpo_eval",
            "tox_patch_all_groups_last",
            "ppl_patch_all_groups_last",
            "f1_patch_all_groups_last",
            "f1_base_eval",
        ),
        tolerance="DPO's drop with 95 % interval above 0; the every-position patch (perplexity first: beyond 1.5× "
        "DPO's it matches only while breaking the model) and the last-position patch (F1 first: below "
        "90 % of the base model's, likewise) each 80–120 % of the drop, or an interval that holds 100 % "
        "but not 0 (50–150 %: partly); the two must agree",
        rule=group_patching_matches,
        section="Group activation patching",
        second_model=True,
        mediation_keys=(
            *_MARGIN,
            *_with_interval("mediation_share_all_groups_denoise", "mediation_share_all_groups_noise"),
            "mediation_share_random_all_groups_mean",
            "mediation_share_random_all_groups_sd",
            "ppl_patch_tokenwise_all_groups",
            "ppl_dpo_eval",
        ),
        mediation_rule=group_patching_mediation,
        mediation_tolerance=_MARGIN_TOLERANCE + "token-by-token patching within 1.5× DPO's perplexity recovers "
        "80–120 % of DPO's shift, or an interval that holds 100 % but not 0 (50–150 %: "
        "partly); then above random sets of the same per-layer counts (z < 2: not specific)",
    ),
    Claim(
        id="single-groups-fall-short",
        statement="No single group, patched alone, reproduces DPO's effect.",
        source="v3",
        paper_text="only the four groups together replicate DPO; each group alone falls short (values not retrievable)",
        paper_number=None,
        document="book/05_patching",
        keys=(*_MARGIN, *_with_interval(*(f"mediation_share_{group}_denoise" for group in GROUP_LABELS))),
        tolerance=_MARGIN_TOLERANCE + "each group patched alone, token by token, recovers less than all of DPO's "
        "shift (every interval below 100 %; every point below 80 %: partly; an interval from 80 %: "
        "not reproduced)",
        rule=single_groups_fall_short,
        second_model=True,
        optional_keys=_with_interval(*(f"mediation_share_{group}_denoise" for group in ("tn", "ap", "an"))),
    ),
    Claim(
        id="editing-beats-dpo",
        statement="Activation editing along the toxicity representation beats DPO at comparable perplexity.",
        source="v3 abstract",
        paper_text="outperforms DPO in reducing toxicity while preserving perplexity (values not retrievable)",
        paper_number=None,
        document="book/05_patching",
        keys=("tox_edit_best", "ppl_edit_best", "tox_base_eval", "tox_dpo_eval", "dpo_drop_low", "ppl_dpo_eval"),
        tolerance="perplexity first (beyond 1.5× DPO's: not reproduced); DPO's drop with 95 % interval above 0; "
        "edited toxicity below DPO's at perplexity at most 1.1× DPO's (1.5×: partly)",
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
        keys=(
            "table_tox_base",
            "table_tox_dpo",
            "table_ppl_dpo",
            *_with_interval("retox_share_x10"),
            "ppl_scale_keys_x10",
            *_with_interval("retox_share_x10_up"),
            "ppl_scale_up_x10",
            *_with_interval("retox_share_x10_dpo_ranked"),
        ),
        tolerance="undoes at least half of DPO's drop, paired over prompts with a 95 % interval above 0 (less: "
        "partly), at most 1.5× DPO's perplexity on the same window (beyond: partly); gate side and "
        "up-projection side agree",
        rule=scaled_keys_retoxify,
        optional_keys=(*_with_interval("retox_share_x10_up"), "ppl_scale_up_x10"),
    ),
    Claim(
        id="smaller-scales-retoxify",
        statement="Scaling the same key vectors ×2 or ×5 re-toxifies the DPO model too.",
        source="v1 Table 1",
        paper_text="DPO 0.208 → 0.487 (×2) and 0.555 (×5), above the base model's 0.453 (GPT-2-medium)",
        paper_number=None,
        document="book/04_ablation",
        keys=(
            "table_tox_base",
            "table_tox_dpo",
            "table_ppl_dpo",
            *_with_interval("retox_share_x2"),
            "ppl_scale_keys_x2",
            *_with_interval("retox_share_x5"),
            "ppl_scale_keys_x5",
        ),
        tolerance="the ×10 claim's tolerance at ×2 and at ×5; both must agree",
        rule=smaller_scales_retoxify,
        mediation_keys=(
            *_MARGIN,
            *_with_interval("mediation_retox_share_x2", "mediation_retox_share_x5"),
            "ppl_scale_keys_x2",
            "ppl_scale_keys_x5",
            "table_ppl_dpo",
        ),
        mediation_rule=smaller_scales_retoxify_mediation,
        mediation_tolerance=_MARGIN_TOLERANCE + "the share of DPO's margin shift that ×2 and ×5 undo, by the ×10 "
        "claim's tolerance; both must agree",
    ),
)


@dataclass(frozen=True)
class Headline:
    """A headline claim as the introduction shows it: the claim, what our number is, and its glue key (its
    interval under ``<key>_low`` and ``<key>_high`` where ``interval``)."""

    claim: str
    measure: str
    key: str
    interval: bool = True


# The paper's headline claims, the number that answers each, in the order the introduction lists them.
HEADLINES: tuple[Headline, ...] = (
    Headline(
        "ablation-falls-short",
        "share of DPO's margin shift the best ablation recovers",
        "mediation_share_best_ablation",
    ),
    Headline("tp-share", "TP−'s share of the reduction along the probe", "share_tp", interval=False),
    Headline(
        "group-patching",
        "share of DPO's margin shift the four groups recover, patched token by token",
        "mediation_share_all_groups_denoise",
    ),
    Headline(
        "toxic-share-patching",
        "share the 256 most toxic neurons recover, patched token by token",
        "mediation_share_toxic256_denoise",
    ),
    Headline(
        "editing-beats-dpo",
        "toxicity of the best activation edit (DPO's beside it in the ledger)",
        "tox_edit_best",
        interval=False,
    ),
)


# ---------------------------------------------------------------------------------------------------------
# What each glued value is: the contract between the chapters and the ledger.

_GROUP_WORDS = {"tp": "TP− (dampened toxic)", "tn": "TN+", "ap": "AP+", "an": "AN−"}

KEY_MEANINGS: dict[str, str] = {
    # chapter 1
    "probe_test_accuracy": "the probe's accuracy on the balanced held-out Jigsaw comments (chance 50 %)",
    "probe_accuracy_natural": "the probe's held-out accuracy reweighted to Jigsaw's natural balance (10 % toxic), "
    "its threshold moved by the prior odds (majority class: 90 %)",
    "logit_lens_toxic_share_probe": "fraction of the probe's top 50 logit-lens tokens the offline scorer flags",
    "logit_lens_toxic_null_probe": "fraction of a random unit direction's top 50 tokens the scorer flags, on average",
    "logit_lens_toxic_z_probe": "the probe's fraction against random directions' (z)",
    "logit_lens_toxic_share_neurons": "fraction of the top 20 toxic neurons' top 50 logit-lens tokens the scorer flags",
    "logit_lens_toxic_null_neurons": "fraction of a random neuron's top 50 tokens the scorer flags, on average",
    "logit_lens_toxic_z_neurons": "the top toxic neurons' fraction against sets of 20 random neurons (z)",
    # chapter 2, and chapter 5 for both models
    "tox_base": "the base model's mean toxicity on chapter 2's challenge prompts",
    "tox_dpo": "the DPO model's mean toxicity on chapter 2's challenge prompts",
    "tox_drop_low": "the low end of the 95 % interval of DPO's paired toxicity drop on chapter 2's prompts",
    "ppl_base": "the base model's WikiText-2 test perplexity",
    "ppl_dpo": "the DPO model's WikiText-2 test perplexity",
    "f1_base": "the base model's next-tokens F1 on WikiText-2 paragraphs",
    "f1_dpo": "the DPO model's F1 on chapter 2's paragraphs",
    "tox_base_eval": "the base model's mean toxicity on chapter 5's prompts",
    "tox_dpo_eval": "the DPO model's mean toxicity on chapter 5's prompts",
    "dpo_drop_low": "the low end of the 95 % interval of DPO's paired toxicity drop on the chapter's table prompts",
    "ppl_base_eval": "the base model's perplexity on chapter 5's windows",
    "ppl_dpo_eval": "the DPO model's perplexity on chapter 5's windows (every chapter 5 row's)",
    "f1_base_eval": "the base model's F1 on chapter 5's paragraphs",
    "f1_dpo_eval": "the DPO model's F1 on chapter 5's paragraphs",
    # chapter 3
    **{
        f"share_{group}": f"{words}'s share of the positive reduction (Δ > 0 grouping)"
        for group, words in _GROUP_WORDS.items()
    },
    **{
        f"share_{group}_z": f"{words}'s share against random directions' shares for their own group (z)"
        for group, words in _GROUP_WORDS.items()
    },
    **{
        f"shrink_share_{group}": f"fraction of {words} neurons whose |m̄| shrinks under DPO"
        for group, words in _GROUP_WORDS.items()
    },
    "share_tp_null_mean": "TP−'s share along random unit directions, on average",
    "top_ranked_share_tp": "TP−'s part of the reduction among the 100 neurons with the largest Δ",
    "top_ranked_share_max_other": "the largest other group's part among the 100 neurons with the largest Δ",
    "share_reducing_neurons": "fraction of all neurons with Δ > 0",
    "late_layer_share": "the last third of the layers' part of the positive reduction",
    "layer_net_over_positive": "Σ over layers of |the layer's net Δ|, over the positive total",
    "top100_negative_share": "fraction of the 100 neurons most aligned with the probe negatively activated before DPO",
    "top100_activation_fall_share": "fraction of the 100 neurons most aligned with the probe whose mean activation "
    "falls under DPO",
    "activation_fall_share_all": "fraction of all neurons whose mean activation falls under DPO",
    "top100_activation_fall_z": "the top 100's fraction against all neurons' (one-sided binomial z)",
    "weight_cosine_min": "the smallest cosine between a parameter tensor before and after DPO",
    "net_over_positive": "the net reduction over the positive total",
    "net_delta_z": "the net reduction against random directions' (z)",
    "r_change_cosine": "Pearson r of the activation change with the neuron's cosine with the probe",
    "toxic_share_projection": "the 128 most toxic TP− neurons' part of the positive reduction (reading (a))",
    # chapter 4 (default model only)
    "table_tox_base": "the base model's mean toxicity on the table's prompts",
    "table_tox_dpo": "the DPO model's mean toxicity on the table's prompts",
    "table_ppl_dpo": "the DPO model's perplexity on the table's window(s), those of every table row",
    "ablation_closest_row": "the least toxic ablation or dampened-neuron patching row within 1.1× table_ppl_dpo "
    "(text; a text saying none, or NaN, when no row is within that guard)",
    "ablation_closest_excess": "toxicity of the ablation_closest_row row minus DPO's, paired over prompts (NaN when "
    "no row is within the guard)",
    "ablation_closest_ppl_ratio": "perplexity of the ablation_closest_row row over table_ppl_dpo (NaN when no row "
    "is within the guard)",
    "ablation_least_toxic_excess": "toxicity of the least toxic ablation or patching row, whatever its perplexity, "
    "minus DPO's, paired over prompts",
    "ablation_least_toxic_ppl_ratio": "perplexity of that least toxic row over table_ppl_dpo",
    **{
        f"ablation_positive_advantage_top{n}": f"toxicity of ablating the top {n} by cosine minus the top {n} "
        "positively activated, paired over prompts"
        for n in (100, 200, 1000)
    },
    **{
        f"mediation_positive_advantage_top{n}": f"the margin with the top {n} positively activated toxic neurons "
        f"ablated minus with the top {n} by cosine, paired over items "
        "(nats)"
        for n in (100, 200, 1000)
    },
    **{
        f"mediation_retox_share_x{factor}": f"the share of DPO's margin shift that scaling the 7 keys ×{factor} undoes, "
        "paired over items"
        for factor in (2, 5)
    },
    "fig1a_gap_closed": "the part of DPO's summed per-layer drop along the probe that ablating the top 200 removes",
    "f1_table_base": "the base model's F1 on the table's paragraphs",
    "f1_table_dpo": "the DPO model's F1 on the table's paragraphs",
    "f1_ablate_top200": "F1 with the top 200 toxic neurons ablated, same paragraphs",
    **{
        f"retox_share_x{factor}": f"the share of DPO's drop that scaling the 7 keys ×{factor} (gate side) undoes, "
        "paired over prompts"
        for factor in (2, 5, 10)
    },
    **{
        f"ppl_scale_keys_x{factor}": f"perplexity of the DPO model with the 7 keys scaled ×{factor}, on the table's "
        "window(s)"
        for factor in (2, 5, 10)
    },
    "retox_share_x10_up": "the same share when ×10 scales the up-projection side, Lee et al.'s way for gated MLPs "
    "(NaN for a model without gates)",
    "ppl_scale_up_x10": "perplexity of the DPO model with the up-projection side scaled ×10, on the table's window(s)",
    "retox_share_x10_dpo_ranked": "the ×10 share with the 7 neurons ranked by cosine in the DPO model, as the "
    "paper's code ranks them",
    "mediation_dpo_margin": "DPO's shift of the mean teacher-forced log-prob margin, in nats, paired over items "
    "(chapters 4 and 5)",
    "mediation_share_best_ablation": "the largest recovered fraction of DPO's margin shift among the rows within "
    "1.1× table_ppl_dpo (NaN when there is none)",
    "mediation_share_ablate_top200": "the fraction of DPO's margin shift that ablating the top 200 toxic recovers",
    # chapter 5, both models
    "toxic_share_patching": "the share of DPO's drop that clamping the 256 most toxic neurons recovers (reading (b))",
    "ppl_patch_toxic256": "perplexity with the 256 most toxic neurons clamped, on chapter 5's windows",
    "share_patch_all_groups": "the share of DPO's drop that clamping the four groups at every position recovers",
    "ppl_patch_all_groups": "perplexity with the four groups clamped at every position",
    "tox_patch_all_groups_last": "toxicity with the four groups clamped at the last position only (authors' hooks)",
    "ppl_patch_all_groups_last": "perplexity with the four groups clamped at the last position only (the unpatched "
    "model's, by construction)",
    "f1_patch_all_groups_last": "F1 with the four groups clamped at the last position only (patched at every "
    "generated token)",
    "mediation_share_toxic256_denoise": "the fraction of DPO's margin shift that patching the 256 most toxic neurons "
    "token by token into the base model recovers",
    "mediation_share_toxic128_denoise": "the denoising fraction of the 128 most toxic neurons",
    "mediation_share_random_toxic256_mean": "the denoising fraction of random sets with the 256 most toxic neurons' "
    "per-layer counts, on average",
    "mediation_share_random_toxic256_sd": "the standard deviation of those random sets' fractions",
    "mediation_share_all_groups_denoise": "the fraction of DPO's margin shift that patching the four groups token "
    "by token into the base model recovers (sufficiency)",
    "mediation_share_all_groups_noise": "the fraction that patching them from the base model into the DPO model "
    "removes (necessity)",
    "mediation_share_random_all_groups_mean": "the denoising fraction of random sets with the four groups' per-layer "
    "counts, on average",
    "mediation_share_random_all_groups_sd": "the standard deviation of those random sets' fractions",
    "ppl_patch_tokenwise_all_groups": "perplexity of the base model with the four groups patched token by token "
    "from the DPO model's run",
    **{
        f"mediation_share_{group}_denoise": f"the denoising fraction of {words} patched alone"
        for group, words in _GROUP_WORDS.items()
    },
    "tox_edit_best": "toxicity of the best activation edit",
    "ppl_edit_best": "perplexity of the best activation edit",
}


def key_meaning(key: str) -> str | None:
    """What the glued value ``key`` holds (a ``_second`` key: the same for the second model), or ``None``."""
    bare = key.rpartition("::")[2].removesuffix(SECOND_SUFFIX)
    if bare in KEY_MEANINGS:
        return KEY_MEANINGS[bare]
    for end in ("low", "high"):
        if bare.endswith(f"_{end}") and bare.removesuffix(f"_{end}") in KEY_MEANINGS:
            return f"the {end} end of the 95 % interval of {bare.removesuffix(f'_{end}')}"
    return None


def key_glossary() -> pd.DataFrame:
    """Every key the ledger reads, the chapter(s) it is read from and what it holds (an index of keys)."""
    chapters: dict[str, list[str]] = {}
    for claim in CLAIMS:
        located = claim.locations() + claim.mediation_locations()
        if claim.second_model:
            located += claim.locations(second=True) + claim.mediation_locations(second=True)
        for document, key, _ in located:
            chapters.setdefault(key, [])
            if Path(document).name not in chapters[key]:
                chapters[key].append(Path(document).name)
    return pd.DataFrame(
        [
            {"key": key, "chapter": ", ".join(found), "meaning": key_meaning(key)}
            for key, found in sorted(chapters.items())
        ]
    ).set_index("key")
