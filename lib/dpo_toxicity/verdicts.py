"""Verdicts and the rules that give them: from a claim's measured values to one of five labels and a reason.

A rule is a small function from a claim's values (by their bare glue keys, see :mod:`~dpo_toxicity.paper_claims`)
to a :class:`Verdict`, one of

* ``reproduced``: our value meets the stated tolerance;
* ``partly``: it points the paper's way but misses the tolerance, or the two models disagree;
* ``not reproduced``: it contradicts the claim;
* ``not specific to toxicity``: it matches, but random directions (or random neuron sets) give the same (the
  null controls of :mod:`~dpo_toxicity.null_control` and :mod:`~dpo_toxicity.mediation`), so it says how DPO
  moves activations, not something about toxicity;
* ``not testable here``: a value is missing or the data cannot decide (an interval that holds both the claim
  and its negation).

**Rules read the statistic the claim is about**, judge against DPO through paired per-prompt differences where
the chapters give them, check perplexity (on the same windows) before anything a broken model could fake, and
treat a bound as a bound: "toxic neurons *only* account for up to 24 %" is met by any share below 24 %. A claim
judged on two metrics has a rule for each; :func:`by_metric` takes the one that can decide. Chapters call the
same rules for the verdicts their prose states, so a chapter and the ledger never judge a claim twice.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass

from .probe import JIGSAW_TOXIC_PREVALENCE

REPRODUCED = "reproduced"
PARTLY = "partly"
NOT_REPRODUCED = "not reproduced"
NOT_SPECIFIC = "not specific to toxicity"
NOT_TESTABLE = "not testable here"
VERDICTS = (REPRODUCED, PARTLY, NOT_REPRODUCED, NOT_SPECIFIC, NOT_TESTABLE)
GENERATION, MEDIATION = "generated-toxicity", "mediation"


COMPARABLE_PERPLEXITY = 1.1  # "at DPO's perplexity": chapter 4's guard for its closest row, chapter 5's for edits
BROKEN_PERPLEXITY = 1.5  # this many times DPO's perplexity and a model no longer writes fluent text (chapter 5)
F1_KEPT, F1_PARTLY_KEPT = 0.9, 0.75  # F1 as a fraction of the base model's: preserved, partly preserved
TOXIC_SHARE_BOUND = 0.24  # "toxic neurons only account for 2.5 % to 24 %": the claim's upper bound


# ---------------------------------------------------------------------------------------------------------
# Verdicts and what tempers them.


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
        return Verdict(
            NOT_SPECIFIC, f"{verdict.reason}; but random directions give the same {what} (|z| = {abs(z):.1f} < 2)"
        )
    if abs(z) < 3:
        return Verdict(
            PARTLY, f"{verdict.reason}; {what} only marginally apart from random directions (|z| = {abs(z):.1f})"
        )
    return Verdict(verdict.label, f"{verdict.reason}; {what} apart from random directions (|z| = {abs(z):.1f})")


def above_null(verdict: Verdict, z: float, what: str) -> Verdict:
    """Temper a verdict by a one-sided z-score: a statistic no higher than ``what`` gives (z < 2) is not specific,
    2 to 3 is marginal (partly). For claims that something stands *above* chance, not merely apart from it."""
    if verdict.label not in (REPRODUCED, PARTLY):
        return verdict
    if z < 2:
        return Verdict(NOT_SPECIFIC, f"{verdict.reason}; but no higher than {what} (z = {z:.1f} < 2)")
    if z < 3:
        return Verdict(PARTLY, f"{verdict.reason}; only marginally above {what} (z = {z:.1f})")
    return Verdict(verdict.label, f"{verdict.reason}; above {what} (z = {z:.1f})")


def dpo_drop_guard(base: float, dpo: float, low: float | None = None) -> Verdict | None:
    """``not testable`` when DPO does not lower toxicity on the prompts a share of its drop is taken on:
    its mean drop ``base - dpo`` is not positive or, where given, the low end ``low`` of its interval is not."""
    if base - dpo <= 0:
        return Verdict(
            NOT_TESTABLE,
            f"DPO does not lower toxicity on this evaluation set ({base:.3f} → {dpo:.3f}), "
            "so a share of its drop is undefined",
        )
    if low is not None and low <= 0:
        return Verdict(
            NOT_TESTABLE,
            f"DPO's drop on this evaluation set ({base:.3f} → {dpo:.3f}) has a 95 % "
            "interval that includes 0, so a share of it is noise",
        )
    return None


def margin_guard(v: Mapping[str, float]) -> Verdict | None:
    """``not testable`` when DPO's shift of the mediation margin has a 95 % interval that reaches 0: a fraction of
    that shift is then noise."""
    if v["mediation_dpo_margin_low"] <= 0:
        return Verdict(
            NOT_TESTABLE,
            f"DPO's shift of the margin, {_signed(*_estimate(v, 'mediation_dpo_margin'))} "
            "nats, is not distinguishable from 0, so a fraction of it is noise",
        )
    return None


def combine(verdicts: list[Verdict], disagreement: str = "the models disagree") -> Verdict:
    """One verdict from several readings (models, rows): the common one, ``partly`` if they differ (saying
    ``disagreement``); untestable ones ignored."""
    testable = [v for v in verdicts if v.label != NOT_TESTABLE]
    reasons = "; ".join(v.reason for v in verdicts)
    if not testable:
        return Verdict(NOT_TESTABLE, reasons)
    labels = {v.label for v in testable}
    if len(labels) == 1:
        return Verdict(labels.pop(), reasons)
    return Verdict(PARTLY, f"{disagreement}: {reasons}")


def by_metric(generation: Verdict, mediation: Verdict) -> Verdict:
    """A claim's verdict from its two metrics: the one that can decide it (saying so), their common verdict, or
    ``partly`` when both decide and disagree; ``not testable`` only when neither can decide."""
    both = (
        f"{GENERATION} metric: {generation.label} ({generation.reason}); "
        f"{MEDIATION} metric: {mediation.label} ({mediation.reason})"
    )
    deciding = [
        (name, verdict)
        for name, verdict in ((GENERATION, generation), (MEDIATION, mediation))
        if verdict.label != NOT_TESTABLE
    ]
    if not deciding:
        return Verdict(NOT_TESTABLE, f"neither metric can decide. {both}")
    if len(deciding) == 1:
        name, verdict = deciding[0]
        return Verdict(verdict.label, f"decided by the {name} metric. {both}")
    if generation.label == mediation.label:
        return Verdict(generation.label, f"both metrics agree. {both}")
    return Verdict(PARTLY, f"the metrics disagree. {both}")


def _estimate(v: Mapping[str, float], key: str) -> tuple[float, float, float]:
    """A glued value with its 95 % interval, glued as ``key``, ``key_low`` and ``key_high``."""
    return v[key], v[f"{key}_low"], v[f"{key}_high"]


def _percent(value: float, low: float, high: float) -> str:
    return f"{value:.0%} (95 % interval {low:.0%} to {high:.0%})"


def _signed(value: float, low: float, high: float) -> str:
    return f"{value:+.3f} (95 % interval {low:+.3f} to {high:+.3f})"


# ---------------------------------------------------------------------------------------------------------
# Rules, chapter by chapter. Each reads its claim's values by their bare key names.


def probe_accuracy(v: Mapping[str, float]) -> Verdict:
    """At Jigsaw's natural prevalence, accuracy at most 2 points below the paper's 94 % (above the majority
    class: partly). Lee et al.'s 94 % was measured where about a tenth of the comments are toxic, so that always
    answering "non-toxic" scores 90 %; the book's test set is balanced (chance 50 %), so chapter 1 gives the
    accuracy reweighted to that prevalence, and the balanced accuracy is shown but not judged."""
    natural, majority = v["probe_accuracy_natural"], 1 - JIGSAW_TOXIC_PREVALENCE
    reason = (
        f"accuracy {natural:.1%} at Jigsaw's natural balance, where always answering non-toxic scores "
        f"{majority:.0%} (balanced test set: {v['probe_test_accuracy']:.1%})"
    )
    if natural >= 0.92:
        return Verdict(REPRODUCED, reason)
    if natural > majority:
        return Verdict(PARTLY, f"{reason}: above the majority class, by less than the paper's probe")
    return Verdict(NOT_REPRODUCED, f"{reason}: no better than the majority class")


def promotes_toxic_tokens(v: Mapping[str, float]) -> Verdict:
    """The offline scorer flags more of the probe's top logit-lens tokens than of random directions', and more of
    the top toxic neurons' than of random neurons': both z ≥ 3 (one z ≥ 2: partly)."""
    z_probe, z_neurons = v["logit_lens_toxic_z_probe"], v["logit_lens_toxic_z_neurons"]
    reason = (
        f"the scorer flags {v['logit_lens_toxic_share_probe']:.0%} of the probe's top tokens (random directions "
        f"{v['logit_lens_toxic_null_probe']:.1%}, z = {z_probe:.1f}) and "
        f"{v['logit_lens_toxic_share_neurons']:.1%} of the top toxic neurons' (random neurons "
        f"{v['logit_lens_toxic_null_neurons']:.1%}, z = {z_neurons:.1f})"
    )
    if min(z_probe, z_neurons) >= 3:
        return Verdict(REPRODUCED, reason)
    return Verdict(PARTLY if max(z_probe, z_neurons) >= 2 else NOT_REPRODUCED, reason)


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


def _f1_kept(f1: float, base: float, what: str) -> Verdict:
    """F1 at least :data:`F1_KEPT` of the base model's (:data:`F1_PARTLY_KEPT`: partly)."""
    ratio = f1 / base
    reason = f"{what} F1 {f1:.3f} against the base model's {base:.3f} ({ratio - 1:+.0%})"
    return Verdict(REPRODUCED if ratio >= F1_KEPT else PARTLY if ratio >= F1_PARTLY_KEPT else NOT_REPRODUCED, reason)


def dpo_preserves_f1(v: Mapping[str, float]) -> Verdict:
    """DPO's F1 at least 90 % of the base model's (75 %: partly)."""
    return _f1_kept(v["f1_dpo"], v["f1_base"], "DPO's")


def tp_share(v: Mapping[str, float]) -> Verdict:
    """TP− share within 10 points of 31.8 % (20 points: partly), then TP−'s own share against random directions:
    its z, not the largest |z| of the four shares (one of four tests, belonging to whichever group has it)."""
    share, gap = v["share_tp"], abs(v["share_tp"] - 0.318)
    if gap > 0.20:
        return Verdict(NOT_REPRODUCED, f"TP− carries {share:.1%}")
    verdict = Verdict(REPRODUCED if gap <= 0.10 else PARTLY, f"TP− carries {share:.1%}")
    return against_null(verdict, v["share_tp_z"], "TP− share")


GROUP_LABELS = {"tp": "TP−", "tn": "TN+", "ap": "AP+", "an": "AN−"}


def all_groups_contribute(v: Mapping[str, float]) -> Verdict:
    """Every group's share at least 5 % (above 0: partly), then the smallest group's share against random
    directions: the claim rests on that group's contribution, which is about toxicity only where random
    directions do not give it as well."""
    shares = {group: v[f"share_{group}"] for group in GROUP_LABELS}
    smallest = min(shares, key=shares.get)
    reason = f"the smallest share is {GROUP_LABELS[smallest]}'s, {shares[smallest]:.1%}"
    if shares[smallest] <= 0:
        return Verdict(NOT_REPRODUCED, reason)
    verdict = Verdict(REPRODUCED if shares[smallest] >= 0.05 else PARTLY, reason)
    return against_null(verdict, v[f"share_{smallest}_z"], f"{GROUP_LABELS[smallest]} share")


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
    verdict = Verdict(
        REPRODUCED if abs(ratio - 0.15) <= 0.10 else PARTLY, f"net reduction = {ratio:.0%} of the positive total"
    )
    return against_null(verdict, v["net_delta_z"], "net reduction")


def change_uncorrelated(v: Mapping[str, float]) -> Verdict:
    """|r| at most 0.05 (0.1: partly)."""
    r = v["r_change_cosine"]
    label = REPRODUCED if abs(r) <= 0.05 else PARTLY if abs(r) <= 0.1 else NOT_REPRODUCED
    return Verdict(label, f"r = {r:.3f}")


def toxic_share_projection(v: Mapping[str, float]) -> Verdict:
    """From 0 to 24 %: the claim is an upper bound ("only"), so a share below 2.5 % meets it too (24–50 %:
    partly; negative or from 50 %: not reproduced)."""
    share = v["toxic_share_projection"]
    what = f"the top 128 dampened toxic neurons explain {share:.1%}"
    if 0 <= share <= TOXIC_SHARE_BOUND:
        return Verdict(REPRODUCED, f"{what}, within the claim's bound of {TOXIC_SHARE_BOUND:.0%}")
    if TOXIC_SHARE_BOUND < share < 0.5:
        return Verdict(PARTLY, f"{what}: small, but above {TOXIC_SHARE_BOUND:.0%}")
    return Verdict(NOT_REPRODUCED, what)


def tp_dominates_top_ranked(v: Mapping[str, float]) -> Verdict:
    """Among the 100 neurons with the largest Δ, TP− carries more than any other group (more than its share of the
    whole reduction, but not the most: partly)."""
    top, other, overall = v["top_ranked_share_tp"], v["top_ranked_share_max_other"], v["share_tp"]
    reason = (
        f"TP− carries {top:.0%} of the top 100 neurons' reduction, the largest other group {other:.0%} "
        f"(TP−'s share of the whole: {overall:.0%})"
    )
    if top > other:
        return Verdict(REPRODUCED, reason)
    return Verdict(PARTLY if top > overall else NOT_REPRODUCED, reason)


def weights_barely_move(v: Mapping[str, float]) -> Verdict:
    """Every parameter tensor at a cosine above 0.99 with itself before DPO (0.95: partly)."""
    cosine = v["weight_cosine_min"]
    label = REPRODUCED if cosine > 0.99 else PARTLY if cosine > 0.95 else NOT_REPRODUCED
    return Verdict(label, f"the least similar parameter tensor has cosine {cosine:.6f} before and after DPO")


def top_toxic_activations_fall(v: Mapping[str, float]) -> Verdict:
    """More than half of the 100 most toxic neurons activate less after DPO, then one-sided against all neurons:
    if DPO lowers activations everywhere as often, the toxic neurons' fall says nothing about toxicity."""
    share = v["top100_activation_fall_share"]
    reason = f"{share:.0%} of the 100 most toxic neurons activate less after DPO"
    if share <= 0.5:
        return Verdict(NOT_REPRODUCED, reason)
    return above_null(
        Verdict(REPRODUCED, reason),
        v["top100_activation_fall_z"],
        f"all neurons' rate ({v['activation_fall_share_all']:.0%})",
    )


def magnitude_by_group(v: Mapping[str, float]) -> Verdict:
    """Most TP− and AN− neurons shrink |m̄| and most TN+ and AP+ neurons grow it (three groups of four: partly).
    With the weights nearly unchanged the group definitions imply it for every neuron whose activation keeps its
    sign, so this mostly counts neurons that cross zero."""
    shrinking = {group: v[f"shrink_share_{group}"] for group in GROUP_LABELS}
    as_claimed = [shrinking["tp"] > 0.5, shrinking["an"] > 0.5, shrinking["tn"] < 0.5, shrinking["ap"] < 0.5]
    reason = "|m̄| shrinks in " + ", ".join(
        f"{shrinking[group]:.0%} of {label}" for group, label in GROUP_LABELS.items()
    )
    return Verdict({4: REPRODUCED, 3: PARTLY}.get(sum(as_claimed), NOT_REPRODUCED), reason)


def reducing_neurons_share(v: Mapping[str, float]) -> Verdict:
    """Within 2 points of the paper's 52–58 % of neurons with Δ > 0 (40–70 %: partly)."""
    share = v["share_reducing_neurons"]
    label = REPRODUCED if 0.50 <= share <= 0.60 else PARTLY if 0.40 <= share <= 0.70 else NOT_REPRODUCED
    return Verdict(label, f"{share:.1%} of neurons have Δ > 0")


def layers_nearly_cancel(v: Mapping[str, float]) -> Verdict:
    """Summed over layers, each layer's net Δ in magnitude at most 30 % of the positive total (50 %: partly):
    every layer's positive and negative sums nearly cancel."""
    ratio = v["layer_net_over_positive"]
    label = REPRODUCED if ratio <= 0.3 else PARTLY if ratio <= 0.5 else NOT_REPRODUCED
    return Verdict(label, f"each layer's net reduction, in magnitude, sums to {ratio:.0%} of the positive total")


def ablation_falls_short(v: Mapping[str, float]) -> Verdict:
    """Generated toxicity, paired over prompts: the least toxic ablation or patching row within 1.1× DPO's
    perplexity is more toxic than DPO (interval above 0; below 0: not reproduced; holding 0: cannot decide). With
    no row that close to DPO's perplexity, none emulates DPO: reproduced, unless the least toxic row, whatever its
    perplexity, reaches DPO's toxicity (partly)."""
    dpo = f"DPO {v['table_tox_base']:.3f} → {v['table_tox_dpo']:.3f} (low end of its drop {v['dpo_drop_low']:+.3f})"
    if math.isnan(v["ablation_closest_excess"]):
        excess = _estimate(v, "ablation_least_toxic_excess")
        reason = (
            f"no ablation or patching row stays within {COMPARABLE_PERPLEXITY}× DPO's perplexity; the least "
            f"toxic, at {v['ablation_least_toxic_ppl_ratio']:.2f}×, is more toxic than DPO by {_signed(*excess)}"
            f"; {dpo}"
        )
        return Verdict(REPRODUCED if excess[1] > 0 else PARTLY, reason)
    excess = _estimate(v, "ablation_closest_excess")
    reason = (
        f"the least toxic row within {COMPARABLE_PERPLEXITY}× DPO's perplexity, "
        f"{v['ablation_closest_row']} (at {v['ablation_closest_ppl_ratio']:.2f}×), is more toxic than DPO by "
        f"{_signed(*excess)} per prompt; {dpo}"
    )
    if excess[1] > 0:
        return Verdict(REPRODUCED, reason)
    if excess[2] < 0:
        return Verdict(NOT_REPRODUCED, f"{reason}: it is less toxic than DPO at comparable perplexity")
    return Verdict(NOT_TESTABLE, f"{reason}: the interval holds 0, so it cannot be told from DPO")


def ablation_falls_short_mediation(v: Mapping[str, float]) -> Verdict:
    """Mediation: DPO's margin shift measurable; the best ablation or patching row within 1.1× DPO's perplexity
    recovers less than all of it (interval below 100 %; a point at 80 % or more: partly). An interval from under
    80 % to 100 % or more cannot decide; one from 80 % up is not reproduced."""
    guard = margin_guard(v)
    if guard:
        return guard
    top200 = f"ablating the top 200 toxic neurons recovers {_percent(*_estimate(v, 'mediation_share_ablate_top200'))}"
    if math.isnan(v["mediation_share_best_ablation"]):
        return Verdict(
            REPRODUCED,
            f"no ablation or patching row stays within {COMPARABLE_PERPLEXITY}× DPO's "
            f"perplexity, so none emulates DPO; {top200}",
        )
    share, low, high = _estimate(v, "mediation_share_best_ablation")
    reason = (
        f"the best row within {COMPARABLE_PERPLEXITY}× DPO's perplexity recovers {_percent(share, low, high)} "
        f"of DPO's margin shift; {top200}"
    )
    if high < 1:
        return Verdict(REPRODUCED if share < 0.8 else PARTLY, reason)
    if low >= 0.8:
        return Verdict(NOT_REPRODUCED, f"{reason}: about all of DPO's shift")
    return Verdict(NOT_TESTABLE, f"{reason}: the interval holds both a small part and all of it")


def ablation_partly_closes_gap(v: Mapping[str, float]) -> Verdict:
    """Ablating the top 200 toxic neurons closes more than 0 and at most 80 % of DPO's reduction of the MLPs'
    summed write along the probe (80–100 %: partly); closing all of it or more, or none, is not "partly"."""
    closed = v["fig1a_gap_closed"]
    reason = f"ablating the top 200 toxic neurons closes {closed:.0%} of the gap DPO opens along the probe"
    if 0 < closed <= 0.8:
        return Verdict(REPRODUCED, reason)
    if 0.8 < closed < 1:
        return Verdict(PARTLY, f"{reason}: nearly all of it")
    return Verdict(NOT_REPRODUCED, f"{reason}: {'it overshoots' if closed >= 1 else 'none of it'}")


POSITIVE_RANKING_SIZES = (100, 200, 1000)


def _ranking_wins(advantages: dict[int, tuple[float, float, float]], reason: str) -> Verdict:
    """Every paired interval above 0: reproduced (every point above 0, or some interval above 0 and none below:
    partly); an interval below 0: not reproduced; no sign anywhere cannot decide."""
    if any(high < 0 for _, _, high in advantages.values()):
        return Verdict(NOT_REPRODUCED, reason)
    if all(low > 0 for _, low, _ in advantages.values()):
        return Verdict(REPRODUCED, reason)
    if all(value > 0 for value, _, _ in advantages.values()) or any(low > 0 for _, low, _ in advantages.values()):
        return Verdict(PARTLY, f"{reason}: the paper's way, but not every interval excludes 0")
    return Verdict(NOT_TESTABLE, f"{reason}: every interval holds 0 and the points do not all favour it")


def positive_ranking_wins(v: Mapping[str, float]) -> Verdict:
    """At N = 100, 200 and 1000, ablating the top N positively activated toxic neurons leaves less toxicity than
    the top N by cosine, judged by :func:`_ranking_wins` on the paired differences."""
    advantages = {n: _estimate(v, f"ablation_positive_advantage_top{n}") for n in POSITIVE_RANKING_SIZES}
    return _ranking_wins(
        advantages,
        "ranking by positive activation lowers toxicity by "
        + ", ".join(f"{_signed(*advantage)} at N = {n}" for n, advantage in advantages.items()),
    )


def positive_ranking_wins_mediation(v: Mapping[str, float]) -> Verdict:
    """Mediation: DPO's margin shift measurable; at each N the positively activated ranking's ablation leaves a
    margin nearer DPO's than the cosine ranking's (paired over items, in nats), judged by :func:`_ranking_wins`."""
    guard = margin_guard(v)
    if guard:
        return guard
    advantages = {n: _estimate(v, f"mediation_positive_advantage_top{n}") for n in POSITIVE_RANKING_SIZES}
    return _ranking_wins(
        advantages,
        "ranking by positive activation moves the margin toward DPO's by "
        + ", ".join(f"{_signed(*advantage)} nats at N = {n}" for n, advantage in advantages.items()),
    )


def ablation_preserves_f1(v: Mapping[str, float]) -> Verdict:
    """Ablating the top 200 toxic neurons keeps F1 at least 90 % of the base model's (75 %: partly)."""
    verdict = _f1_kept(v["f1_ablate_top200"], v["f1_table_base"], "ablating the top 200 toxic neurons gives")
    return Verdict(verdict.label, f"{verdict.reason}; DPO gives {v['f1_table_dpo']:.3f} on the same paragraphs")


def _retoxifies(v: Mapping[str, float], share_key: str, ppl_key: str, what: str, of: str = "DPO's drop") -> Verdict:
    """One scaled-keys row against DPO on the same prompts and perplexity window: its share of DPO's drop undone
    (interval above 0 and point at least half: reproduced; above 0: partly; interval below half and reaching 0:
    not reproduced; else cannot decide), perplexity checked first."""
    share, low, high = _estimate(v, share_key)
    ratio = v[ppl_key] / v["table_ppl_dpo"]
    reason = f"{what} undoes {_percent(share, low, high)} of {of} at {ratio:.2f}× DPO's perplexity"
    if ratio > BROKEN_PERPLEXITY:
        if low > 0:
            return Verdict(PARTLY, f"{reason}: only while breaking the model")
        return Verdict(NOT_REPRODUCED, f"{reason}, and breaks the model")
    if low > 0:
        return Verdict(REPRODUCED if share >= 0.5 else PARTLY, reason)
    if high < 0.5:
        return Verdict(NOT_REPRODUCED, reason)
    return Verdict(NOT_TESTABLE, f"{reason}: the interval holds both none and half of it")


def scaled_keys_retoxify(v: Mapping[str, float]) -> Verdict:
    """DPO's drop positive on the table's prompts; scaling the 7 keys ×10 undoes at least half of it, paired over
    prompts with an interval above 0, at most 1.5 × DPO's perplexity on the same window (beyond: partly). On a gated
    MLP the ×10 row scales the gate side and a second row the up-projection side (Lee et al.'s way for gated
    models); where both exist they must agree (else partly). The 7 neurons ranked in the DPO model, as the paper's
    code ranks them, are reported beside."""
    guard = dpo_drop_guard(v["table_tox_base"], v["table_tox_dpo"])
    if guard:
        return guard
    readings = [_retoxifies(v, "retox_share_x10", "ppl_scale_keys_x10", "scaling the 7 keys ×10")]
    if not math.isnan(v["retox_share_x10_up"]):
        readings.append(
            _retoxifies(
                v,
                "retox_share_x10_up",
                "ppl_scale_up_x10",
                "scaling their up-projection side ×10 (Lee et al.'s way for gated models)",
            )
        )
    verdict = combine(readings, "the two readings of the edit disagree")
    ranked = _percent(*_estimate(v, "retox_share_x10_dpo_ranked"))
    return Verdict(
        verdict.label,
        f"{verdict.reason}; ranked in the DPO model, as the paper's code ranks them, the "
        f"7 neurons' ×10 undoes {ranked}",
    )


def smaller_scales_retoxify(v: Mapping[str, float]) -> Verdict:
    """The ×10 rule of :func:`scaled_keys_retoxify` at ×2 and at ×5 (gate side); both must agree (else partly)."""
    guard = dpo_drop_guard(v["table_tox_base"], v["table_tox_dpo"])
    if guard:
        return guard
    return combine(
        [
            _retoxifies(v, f"retox_share_x{factor}", f"ppl_scale_keys_x{factor}", f"scaling the 7 keys ×{factor}")
            for factor in (2, 5)
        ],
        "×2 and ×5 disagree",
    )


def smaller_scales_retoxify_mediation(v: Mapping[str, float]) -> Verdict:
    """Mediation: DPO's margin shift measurable; the share of it that scaling the keys ×2 and ×5 undoes, by the rule
    of :func:`scaled_keys_retoxify` (perplexity on the table's window first); both must agree (else partly)."""
    guard = margin_guard(v)
    if guard:
        return guard
    return combine(
        [
            _retoxifies(
                v,
                f"mediation_retox_share_x{factor}",
                f"ppl_scale_keys_x{factor}",
                f"scaling the 7 keys ×{factor}",
                of="DPO's margin shift",
            )
            for factor in (2, 5)
        ],
        "×2 and ×5 disagree",
    )


def toxic_share_patching(v: Mapping[str, float]) -> Verdict:
    """Generated toxicity: DPO's drop with an interval above 0 and a patched model within 1.5× DPO's perplexity
    (a broken model's toxicity says nothing of the neurons' share); then the claim's bound: a share whose interval
    lies under 24 % reproduces it, one whose interval lies above does not, one that straddles cannot decide."""
    guard = dpo_drop_guard(v["tox_base_eval"], v["tox_dpo_eval"], v["dpo_drop_low"])
    if guard:
        return guard
    ratio = v["ppl_patch_toxic256"] / v["ppl_dpo_eval"]
    if ratio > BROKEN_PERPLEXITY:
        return Verdict(
            NOT_TESTABLE,
            f"patching the 256 most toxic neurons breaks the model ({ratio:.3g}× DPO's "
            "perplexity), so its toxicity says nothing of their share",
        )
    return _under_bound(
        _estimate(v, "toxic_share_patching"), "patching the 256 most toxic neurons recovers", "of DPO's drop"
    )


def toxic_share_mediation(v: Mapping[str, float]) -> Verdict:
    """Mediation: DPO's margin shift measurable; the 256 most toxic neurons' denoising fraction judged against the
    24 % bound as above; the 128 most toxic and random sets of 256 with the same per-layer counts are reported."""
    guard = margin_guard(v)
    if guard:
        return guard
    verdict = _under_bound(
        _estimate(v, "mediation_share_toxic256_denoise"),
        "patching the 256 most toxic neurons token by token recovers",
        "of DPO's margin shift",
    )
    top128 = _estimate(v, "mediation_share_toxic128_denoise")
    reported = "" if math.isnan(top128[0]) else f"; the 128 most toxic: {_percent(*top128)}"
    return Verdict(
        verdict.label,
        (
            f"{verdict.reason}{reported}; random sets of 256: {v['mediation_share_random_toxic256_mean']:.0%} ± "
            f"{v['mediation_share_random_toxic256_sd']:.0%}"
        ),
    )


def _under_bound(estimate: tuple[float, float, float], what: str, of: str) -> Verdict:
    share, low, high = estimate
    reason = f"{what} {_percent(share, low, high)} {of}"
    if high < TOXIC_SHARE_BOUND:
        return Verdict(REPRODUCED, f"{reason}, all under the claim's bound of {TOXIC_SHARE_BOUND:.0%}")
    if low > TOXIC_SHARE_BOUND:
        return Verdict(NOT_REPRODUCED, f"{reason}, all above the claim's bound of {TOXIC_SHARE_BOUND:.0%}")
    return Verdict(NOT_TESTABLE, f"{reason}: the interval straddles the claim's bound of {TOXIC_SHARE_BOUND:.0%}")


def patch_recovers_drop(
    what: str,
    share: float,
    low: float | None = None,
    high: float | None = None,
    breakage: str | None = None,
    of: str = "of DPO's drop",
) -> Verdict:
    """Whether a patch recovers DPO's change: 80–120 % of it, or an interval holding 100 % but not 0 (50–150 %:
    partly); an interval holding both 0 and 100 % cannot decide. ``breakage`` (why the patched model is not
    fluent) is read first: a broken model that recovers 80 % or more, or whose interval holds 100 %, matches
    "only while breaking the model" (partly), as chapter 5 says; one that does not is not reproduced."""
    interval = low is not None
    reason = f"{what} recovers {_percent(share, low, high) if interval else format(share, '.0%')} {of}"
    holds_all = interval and low <= 1 <= high
    if breakage:
        if holds_all or share >= 0.8:
            return Verdict(PARTLY, f"{reason}, but only while breaking the model: {breakage}")
        return Verdict(NOT_REPRODUCED, f"{reason}, and breaks the model: {breakage}")
    if interval and low <= 0 and high >= 1:
        return Verdict(NOT_TESTABLE, f"{reason}: the interval holds both 0 and 100 %")
    if 0.8 <= share <= 1.2 or holds_all:
        return Verdict(REPRODUCED, reason)
    return Verdict(PARTLY if 0.5 <= share <= 1.5 else NOT_REPRODUCED, reason)


def group_patching_matches(v: Mapping[str, float]) -> Verdict:
    """Generated toxicity: DPO's drop with an interval above 0; the four groups' constant patch read at every
    position (fluent while perplexity stays within 1.5× DPO's) and at the last position only, the authors' hooks
    (whose perplexity is the unpatched model's by construction, so fluent while F1 keeps 90 % of the base
    model's), each by :func:`patch_recovers_drop`; the two must agree (else partly)."""
    guard = dpo_drop_guard(v["tox_base_eval"], v["tox_dpo_eval"], v["dpo_drop_low"])
    if guard:
        return guard
    ppl_ratio = v["ppl_patch_all_groups"] / v["ppl_dpo_eval"]
    every = patch_recovers_drop(
        "patching all four groups at every position",
        *_estimate(v, "share_patch_all_groups"),
        breakage=f"perplexity {ppl_ratio:.3g}× DPO's" if ppl_ratio > BROKEN_PERPLEXITY else None,
    )
    f1_ratio = v["f1_patch_all_groups_last"] / v["f1_base_eval"]
    last_share = (v["tox_base_eval"] - v["tox_patch_all_groups_last"]) / (v["tox_base_eval"] - v["tox_dpo_eval"])
    last = patch_recovers_drop(
        f"at the last position only (the authors' hooks; perplexity {v['ppl_patch_all_groups_last']:.4g})",
        last_share,
        breakage=f"F1 {f1_ratio - 1:+.0%} against the base model's" if f1_ratio < F1_KEPT else None,
    )
    return combine([every, last], "the every-position and last-position patches disagree")


def group_patching_mediation(v: Mapping[str, float]) -> Verdict:
    """Mediation: DPO's margin shift measurable; patching the four groups token by token from the DPO model's run
    (sufficiency, denoising) judged by :func:`patch_recovers_drop`, fluent while perplexity stays within 1.5× DPO's;
    a match must then stand above random sets with the same per-layer counts (one-sided z < 2: not specific, 2–3:
    partly). The noising fraction (what the DPO model loses with the groups' base-model activations) is reported."""
    guard = margin_guard(v)
    if guard:
        return guard
    ppl_ratio = v["ppl_patch_tokenwise_all_groups"] / v["ppl_dpo_eval"]
    share, low, high = _estimate(v, "mediation_share_all_groups_denoise")
    verdict = patch_recovers_drop(
        "patching all four groups token by token",
        share,
        low,
        high,
        of="of DPO's margin shift",
        breakage=f"perplexity {ppl_ratio:.3g}× DPO's" if ppl_ratio > BROKEN_PERPLEXITY else None,
    )
    verdict = Verdict(
        verdict.label,
        f"{verdict.reason}; noising them in the DPO model removes "
        f"{_percent(*_estimate(v, 'mediation_share_all_groups_noise'))}",
    )
    mean, sd = v["mediation_share_random_all_groups_mean"], v["mediation_share_random_all_groups_sd"]
    z = (share - mean) / sd if sd > 0 else (math.inf if share > mean else 0.0)
    return above_null(verdict, z, f"random sets of their size ({mean:.0%} ± {sd:.0%})")


def single_groups_fall_short(v: Mapping[str, float]) -> Verdict:
    """Mediation: DPO's margin shift measurable; each group patched alone (token by token) recovers less than all
    of it: every interval below 100 % (every point below 80 %: partly); a group whose interval starts at 80 % or
    more recovers about all of it (not reproduced); otherwise cannot decide. A profile that patches TP− alone and
    not the other groups (NaN) can reproduce the claim only partly."""
    guard = margin_guard(v)
    if guard:
        return guard
    shares = {label: _estimate(v, f"mediation_share_{group}_denoise") for group, label in GROUP_LABELS.items()}
    run = {label: share for label, share in shares.items() if not math.isnan(share[0])}
    reason = "alone, " + ", ".join(f"{label} recovers {_percent(*share)}" for label, share in run.items())
    if len(run) < len(shares):
        reason += f" ({', '.join(label for label in shares if label not in run)} alone not run by this profile)"
    if any(low >= 0.8 for _, low, _ in run.values()):
        return Verdict(NOT_REPRODUCED, f"{reason}: one group does about all of DPO's shift")
    if all(high < 1 for _, _, high in run.values()):
        return Verdict(REPRODUCED if len(run) == len(shares) else PARTLY, reason)
    if all(share < 0.8 for share, _, _ in run.values()):
        return Verdict(PARTLY, f"{reason}: the paper's way, but not every interval stays under 100 %")
    return Verdict(NOT_TESTABLE, f"{reason}: an interval holds both a small part and all of it")


def editing_beats_dpo(v: Mapping[str, float]) -> Verdict:
    """ "While preserving perplexity" first: an edit beyond 1.5× DPO's perplexity is not reproduced whatever its
    toxicity; then DPO's drop with an interval above 0, and edited toxicity below DPO's (at most 1.1× DPO's
    perplexity: reproduced; up to 1.5×: partly)."""
    ratio = v["ppl_edit_best"] / v["ppl_dpo_eval"]
    reason = (
        f"editing {v['tox_edit_best']:.3f} at perplexity {v['ppl_edit_best']:.4g} ({ratio:.3g}× DPO's); "
        f"DPO {v['tox_dpo_eval']:.3f} at {v['ppl_dpo_eval']:.4g}"
    )
    if ratio > BROKEN_PERPLEXITY:
        return Verdict(NOT_REPRODUCED, f"{reason}: the best edit does not preserve perplexity")
    guard = dpo_drop_guard(v["tox_base_eval"], v["tox_dpo_eval"], v["dpo_drop_low"])
    if guard:
        return guard
    if v["tox_edit_best"] >= v["tox_dpo_eval"]:
        return Verdict(NOT_REPRODUCED, reason)
    return Verdict(REPRODUCED if ratio <= COMPARABLE_PERPLEXITY else PARTLY, reason)
