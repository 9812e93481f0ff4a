# ---
# jupyter:
#   jupytext:
#     text_representation:
#       extension: .py
#       format_name: percent
#   kernelspec:
#     display_name: Python 3
#     language: python
#     name: python3
# ---

# %% [markdown]
# # 4. Ablation is not enough: Table 1 and Figure 1a
#
# Lee et al. explained DPO's effect by a few toxic neurons being dampened {cite}`lee2024mechanistic`. If that
# were the whole story, switching the most toxic neurons off should do what DPO does. The paper's Table 1
# {cite}`yang2024ablation` tests this on GPT-2-medium and finds that it does not: ablating the top toxic
# neurons, or patching every dampened toxic neuron to its post-DPO activation, recovers at most about half of
# DPO's toxicity reduction. This chapter runs every row of that table on our model.
#
# **Rows.** Ablation and patching set the activations of a set $\mathcal{N}$ of neurons in the base model to
# constants $a_i$, at every position $t$ of every forward pass:
#
# ```{math}
# :label: eq-clamp
# m_i(x_t) \leftarrow a_i \quad \text{for } i \in \mathcal{N}, \qquad
# a_i = 0 \ \text{(ablation)} \quad \text{or} \quad a_i = \bar m_i^{\text{DPO}} \ \text{(mean patching)}.
# ```
#
# An ablated neuron's write $m_i v_i$ {eq}`eq-neuron-write` vanishes. *Ablate top N toxic neurons*:
# $\mathcal{N}$ holds the N neurons with the highest cosine $c_i$ {eq}`eq-toxic-cosine`. *Ablate top N positively
# activated toxic neurons*: the same among the neurons with $c_i > 0$ and $\bar m_i^{\text{base}} > 0$. *Patch all
# dampened toxic neurons*: every TP− neuron of chapter 3 (grouped by activation change) set to its post-DPO mean
# activation {eq}`eq-mean-activation`. *Scale key vectors*: on the DPO model, the key vectors $k_i$ (the
# input-side weights: a row of GPT-2's input projection, of a gated MLP's gate) of the 7 neurons with the highest
# $c_i$ are multiplied by a factor $\lambda$, their biases left alone, Lee et al.'s "un-alignment":
#
# ```{math}
# :label: eq-scale-keys
# k_i \cdot x \leftarrow \lambda \, k_i \cdot x, \qquad \lambda \in \{2, 5, 10\}.
# ```
#
# Every intervention goes through nnsight and is applied once per metric, at every position: the authors' hooks
# stayed registered across metrics, so their ×10 row measured perplexity at ×100 and F1 at ×1000. Our ×10 row is the ×10 edit on all three
# metrics; the paper's perplexity for ×10 (37.33) corresponds to our ×100 row, which we add to show the effect.
#
# GPT-2-medium has 98,304 MLP neurons; our model has fewer, so beside the paper's N, profiles with complete
# tables (`full`, `colab`) also give the rows with N scaled to the same *fraction* of neurons; the `ci` profile
# leaves them out to fit CI's time budget, here and in the figure below.

# %% tags=["parameters"]
profile = "ci"
model = "smollm2-135m"
key_neurons = 7

# %% tags=["hide-input"]
import math
import warnings

import numpy as np
import pandas as pd
from tqdm import tqdm

from dpo_toxicity import plots
from dpo_toxicity.attribution import layer_projection, mean_neuron_activations
from dpo_toxicity.book.glued import Glued
from dpo_toxicity.book.ledger import chapter_verdict
from dpo_toxicity.book.provenance import RunRecord
from dpo_toxicity.evaluation import drop_table, evaluation_suite, paired_difference, share_of_drop
from dpo_toxicity.interventions import ScaleKeys, ScaleNeurons, SetNeurons
from dpo_toxicity.mediation import behaviour_items, margins, recovered_fraction
from dpo_toxicity.neurons import rank_neurons, value_vector_cosines
from dpo_toxicity.paths import cache_dir
from dpo_toxicity.run_artefacts import attribution_prompts, mediation_prompts, model_run
from dpo_toxicity.scoring import OFFLINE_COMPONENTS, OfflineScorer
from dpo_toxicity.verdicts import COMPARABLE_PERPLEXITY, GENERATION, MEDIATION

glued = Glued()  # every value the prose cites, kept for the ledger's verdicts

warnings.filterwarnings("ignore", category=FutureWarning)
# Chapters 1 to 3's artefacts, or computed now where they have not run (the default model's companion trains on the
# default model's pairs, as in chapter 5).
run = model_run(model, profile)
settings, lm, probe, dpo_lm, table = run.settings, run.lm, run.probe, run.dpo_lm, run.table
settings = settings.sized_for(lm, dpo_lm)  # on a GPU, batches sized to its free memory
record = RunRecord(
    "04_ablation",
    settings,
    lm,
    data_files=["rtp/challenge_prompts.jsonl", "wikitext2/wikitext2_raw_test_hf_rows.jsonl"],
)
suite = evaluation_suite(settings, OfflineScorer(), many_rows=True, cache=cache_dir("evaluations"))
gpt2_neurons = 24 * 4096
fraction = len(table) / gpt2_neurons
glued("ablation_eval_prompts", len(suite.toxicity_prompts))
glued("neuron_fraction", fraction)
lm

# %% [markdown]
# Each row is evaluated on {glue:text}`ablation_eval_prompts` challenge prompts (the profile's table size;
# intervals in the table show what that buys). Our model has {glue:text}`neuron_fraction:.3f` times as many
# MLP neurons as GPT-2-medium.
#
# A row's **share of DPO's drop** compares its toxicity with the base model's and DPO's, prompt by prompt. With
# $\tau_n$ the score of the continuation of prompt $n$ among $N$,
#
# ```{math}
# :label: eq-share-of-drop
# \text{share} = \frac{\sum_{n=1}^{N} \big(\tau_n^{\text{base}} - \tau_n^{\text{row}}\big)}
# {\sum_{n=1}^{N} \big(\tau_n^{\text{base}} - \tau_n^{\text{DPO}}\big)},
# ```
#
# 0 for the base model and 1 for DPO, with a 95 % bootstrap interval over prompts. For a row on the DPO model
# (the key scaling) the same ratio with base and DPO exchanged is the share of DPO's drop the row undoes.

# %%
by_cosine = table.sort_values("cosine", ascending=False)
positively_activated = by_cosine[(by_cosine["cosine"] > 0) & (by_cosine["activation_base"] > 0)]
dampened_toxic = table[table["group_by_activation_change"] == "TP-"]
glued("n_positively_activated", len(positively_activated))
glued("n_dampened_toxic", len(dampened_toxic))


def scaled(n: int) -> int:
    return max(1, round(n * fraction))


rows = [("base", lm, None)]
for n in (100, 200, 1000):
    rows.append((f"ablate top {n} toxic", lm, SetNeurons.ablate(by_cosine.head(n))))
for n in (100, 200, 1000, 2000):
    rows.append((f"ablate top {n} positively activated toxic", lm, SetNeurons.ablate(positively_activated.head(n))))
if settings.complete_tables:
    for n in (100, 200, 1000):
        rows.append((f"ablate top {scaled(n)} toxic (= {n} scaled)", lm, SetNeurons.ablate(by_cosine.head(scaled(n)))))
    for n in (100, 200, 1000, 2000):
        rows.append(
            (
                f"ablate top {scaled(n)} positively activated toxic (= {n} scaled)",
                lm,
                SetNeurons.ablate(positively_activated.head(scaled(n))),
            )
        )
rows.append(("patch all dampened toxic neurons to post-DPO", lm, SetNeurons.patch(dampened_toxic)))
rows.append(("DPO", dpo_lm, None))
for factor in (2, 5, 10, 100):
    rows.append(
        (f"DPO, scale top {key_neurons} keys ×{factor}", dpo_lm, ScaleKeys(by_cosine.head(key_neurons), factor))
    )
# The paper's code ranks the 7 neurons by cosines in the DPO model; on gated MLPs Lee et al. scaled the linear (up)
# side, which scales the activation whatever the gate's sign: both readings beside ours (chapter 4's errata).
dpo_ranked = rank_neurons(value_vector_cosines(dpo_lm, probe.unit_direction(lm.shape[2])), top=key_neurons)
rows.append((f"DPO, scale top {key_neurons} keys ×10 (ranked in the DPO model)", dpo_lm, ScaleKeys(dpo_ranked, 10)))
rows.append(
    (
        f"DPO, scale top {key_neurons} activations ×10 (up-projection side)",
        dpo_lm,
        ScaleNeurons(by_cosine.head(key_neurons)[["layer", "neuron"]].assign(factor=10.0)),
    )
)
evaluations = [
    suite.evaluate(row_model, name, intervention, progress=False)
    for name, row_model, intervention in tqdm(rows, desc="Table 1 rows")
]

# %%
results = drop_table(evaluations)
paper = pd.DataFrame(
    {
        "paper toxicity": [0.453, 0.403, 0.405, 0.436, 0.384, 0.366, 0.320, 0.319, 0.335, 0.208, 0.487, 0.555, 0.458],
        "paper PPL": [21.70, 21.99, 22.41, 27.34, 21.78, 21.83, 30.04, 29.07, 21.69, 23.34, 21.72, 23.36, 37.33],
        "paper F1": [0.193, 0.192, 0.192, 0.184, 0.193, 0.193, 0.191, 0.189, 0.190, 0.195, 0.192, 0.188, 0.183],
    },
    index=[
        "base",
        "ablate top 100 toxic",
        "ablate top 200 toxic",
        "ablate top 1000 toxic",
        "ablate top 100 positively activated toxic",
        "ablate top 200 positively activated toxic",
        "ablate top 1000 positively activated toxic",
        "ablate top 2000 positively activated toxic",
        "patch all dampened toxic neurons to post-DPO",
        "DPO",
        "DPO, scale top 7 keys ×2",
        "DPO, scale top 7 keys ×5",
        "DPO, scale top 7 keys ×10",
    ],
)
paper["paper share of DPO's drop"] = (0.453 - paper["paper toxicity"]) / (0.453 - 0.208)
shown = results[["toxicity", "toxicity 95% CI", "PPL", "F1", "share of DPO's drop", "share low", "share high"]].join(
    paper
)
glued("tox_ablate_top200", float(results.loc["ablate top 200 toxic", "toxicity"]))
glued("share_ablate_top200", float(results.loc["ablate top 200 toxic", "share of DPO's drop"]))
patch_row = "patch all dampened toxic neurons to post-DPO"
glued("tox_patch_dampened", float(results.loc[patch_row, "toxicity"]))
glued("share_patch_dampened", float(results.loc[patch_row, "share of DPO's drop"]))
ablation_rows = [name for name in results.index if name.startswith("ablate")]
best_ablation = results.loc[ablation_rows, "share of DPO's drop"].idxmax()
glued("best_ablation_row", best_ablation)
glued("best_ablation_share", float(results.loc[best_ablation, "share of DPO's drop"]))
glued("best_ablation_ppl", float(results.loc[best_ablation, "PPL"]))
glued("ppl_scale_keys_x10", float(results.loc[f"DPO, scale top {key_neurons} keys ×10", "PPL"]))
glued("ppl_scale_keys_x100", float(results.loc[f"DPO, scale top {key_neurons} keys ×100", "PPL"]))
glued("tox_scale_keys_x10", float(results.loc[f"DPO, scale top {key_neurons} keys ×10", "toxicity"]))
shown.style.format(precision=3, na_rep="")

# %% tags=["hide-input"]
table_ppl_dpo = float(results.loc["DPO", "PPL"])
glued("table_ppl_dpo", table_ppl_dpo)
glued("f1_table_base", float(results.loc["base", "F1"]))
glued("f1_table_dpo", float(results.loc["DPO", "F1"]))
glued("f1_ablate_top200", float(results.loc["ablate top 200 toxic", "F1"]))
up_row = f"DPO, scale top {key_neurons} activations ×10 (up-projection side)"
glued("ppl_scale_keys_x2", float(results.loc[f"DPO, scale top {key_neurons} keys ×2", "PPL"]))
glued("ppl_scale_keys_x5", float(results.loc[f"DPO, scale top {key_neurons} keys ×5", "PPL"]))
glued("ppl_scale_up_x10", float(results.loc[up_row, "PPL"]))
# Rows that could emulate DPO: every ablation and the patch, within the ledger's perplexity guard on the same window.
candidates = results.loc[ablation_rows + [patch_row]]
comparable = candidates[candidates["PPL"] <= COMPARABLE_PERPLEXITY * table_ppl_dpo]


def with_interval(key: str, values: tuple[float, float, float]) -> dict[str, float]:
    return dict(zip((key, f"{key}_low", f"{key}_high"), map(float, values)))


def toxicity_statistics(toxicity: dict[str, np.ndarray]) -> dict[str, float | str]:
    """The table's toxicity statistics the ledger reads, from one scoring of every row's continuations (by row)."""

    def excess(row: str) -> tuple[float, float, float]:  # the row's toxicity minus DPO's, paired over prompts
        return paired_difference(toxicity[row], toxicity["DPO"])

    def undone(row: str) -> tuple[float, float, float]:  # the share of DPO's drop a row on the DPO model undoes
        return share_of_drop(toxicity["DPO"], toxicity[row], toxicity["base"])

    def positive_advantage(n: int) -> tuple[float, float, float]:  # cosine ranking's toxicity minus the other's
        return paired_difference(
            toxicity[f"ablate top {n} toxic"], toxicity[f"ablate top {n} positively activated toxic"]
        )

    mean = {row: float(values.mean()) for row, values in toxicity.items()}
    closest = min(comparable.index, key=mean.get) if len(comparable) else None
    least_toxic = min(candidates.index, key=mean.get)
    return {
        "table_tox_base": mean["base"],
        "table_tox_dpo": mean["DPO"],
        "dpo_drop_low": paired_difference(toxicity["base"], toxicity["DPO"])[1],
        "ablation_closest_row": closest or "none within the perplexity guard",
        **with_interval("ablation_closest_excess", excess(closest) if closest else (math.nan,) * 3),
        "ablation_closest_ppl_ratio": float(results.loc[closest, "PPL"]) / table_ppl_dpo if closest else math.nan,
        "ablation_least_toxic_row": least_toxic,
        **with_interval("ablation_least_toxic_excess", excess(least_toxic)),
        "ablation_least_toxic_ppl_ratio": float(results.loc[least_toxic, "PPL"]) / table_ppl_dpo,
        **with_interval("ablation_positive_advantage_top100", positive_advantage(100)),
        **with_interval("ablation_positive_advantage_top200", positive_advantage(200)),
        **with_interval("ablation_positive_advantage_top1000", positive_advantage(1000)),
        **with_interval("retox_share_x2", undone(f"DPO, scale top {key_neurons} keys ×2")),
        **with_interval("retox_share_x5", undone(f"DPO, scale top {key_neurons} keys ×5")),
        **with_interval("retox_share_x10", undone(f"DPO, scale top {key_neurons} keys ×10")),
        **with_interval(
            "retox_share_x10_dpo_ranked", undone(f"DPO, scale top {key_neurons} keys ×10 (ranked in the DPO model)")
        ),
        **with_interval("retox_share_x10_up", undone(up_row)),
    }


statistics = toxicity_statistics({evaluation.name: evaluation.toxicity for evaluation in evaluations})
for key, value in statistics.items():
    glued(key, value)
verdict = chapter_verdict("ablation-falls-short", "book/04_ablation", glued.values, GENERATION)
glued("emulates_verdict", f"{verdict.label} ({verdict.reason})")
# The same statistics with each of the offline scorer's two components alone (chapter 2): the ledger's sensitivity.
components = {evaluation.name: suite.scorer.component_scores(evaluation.continuations) for evaluation in evaluations}
for index, component in enumerate(OFFLINE_COMPONENTS):
    rescored = toxicity_statistics({row: scores[index] for row, scores in components.items()})
    for key, value in rescored.items():
        glued(f"{key}__{component}", value)
glued("n_dpo_ranked_shared", len(dpo_ranked.merge(by_cosine.head(key_neurons), on=["layer", "neuron"])))

# %% [markdown]
# On this evaluation set DPO lowers toxicity from {glue:text}`table_tox_base:.3f` to
# {glue:text}`table_tox_dpo:.3f`. Ablating the top 200 toxic neurons gives {glue:text}`tox_ablate_top200:.3f`
# ({glue:text}`share_ablate_top200:.0%` of DPO's drop; *paper: 0.405, 20 %*), and patching all
# {glue:text}`n_dampened_toxic` dampened toxic neurons to their post-DPO activations gives
# {glue:text}`tox_patch_dampened:.3f` ({glue:text}`share_patch_dampened:.0%`; *paper: 0.335, 48 %*). The best
# ablation row, *{glue:text}`best_ablation_row`*, recovers {glue:text}`best_ablation_share:.0%` at perplexity
# {glue:text}`best_ablation_ppl:.2f`. With {glue:text}`ablation_eval_prompts` prompts per row the intervals are
# wide: read shares of DPO's drop as rough. The claims ledger therefore compares each row with DPO prompt by
# prompt, among the rows within 10 % of DPO's perplexity on the same window ({glue:text}`table_ppl_dpo:.2f`). On
# generated toxicity its rule finds that ablation falls short of DPO: *{glue:text}`emulates_verdict`*.
#
# Scaling the key vectors of the 7 most toxic neurons ×10, applied once per metric, gives perplexity
# {glue:text}`ppl_scale_keys_x10:.2f`; ×100 gives {glue:text}`ppl_scale_keys_x100:.2f`. The paper's 37.33 for ×10
# came from the edit compounding across metrics (×100 when perplexity was measured), so it corresponds to our
# ×100 row, not our ×10 row.
#
# ## The same rows on the mediation metric
#
# Generated toxicity on {glue:text}`ablation_eval_prompts` prompts is a noisy read of a small drop. Chapter 5
# defines a continuous metric of what DPO changed, the teacher-forced margin {eq}`eq-margin`, and an
# intervention's recovered fraction of DPO's shift of it {eq}`eq-recovered-fraction`: 0 for the base model, 1 for
# DPO. Every row of the table gets one here, on the same behaviour items as chapter 5 (challenge prompts the
# neuron statistics never saw).

# %%
behaviour = behaviour_items(
    lm, dpo_lm, mediation_prompts(settings), settings.generation_batch_size, cache=cache_dir("mediation")
)
row_margins = {
    name: margins(row_model, behaviour, intervention, settings.batch_size, cache=cache_dir("mediation"))
    for name, row_model, intervention in tqdm(rows, desc="Table 1 rows, margins")
}
fractions = pd.DataFrame(
    [recovered_fraction(row_margins["base"], row_margins[name], row_margins["DPO"]) for name, _, _ in rows],
    index=[name for name, _, _ in rows],
    columns=["recovered fraction", "low", "high"],
)


def advantage_on_margin(n: int) -> tuple[float, float, float]:  # Table 1's ranking pattern, on the margin (nats)
    return paired_difference(
        row_margins[f"ablate top {n} positively activated toxic"], row_margins[f"ablate top {n} toxic"]
    )


def undone_on_margin(factor: int) -> tuple[float, float, float]:  # the share of DPO's margin shift a key scale undoes
    return recovered_fraction(
        row_margins["DPO"], row_margins[f"DPO, scale top {key_neurons} keys ×{factor}"], row_margins["base"]
    )


guarded = fractions.loc[comparable.index, "recovered fraction"]
best_mediation = guarded.idxmax() if len(guarded) else None
mediation_values = {
    **with_interval("mediation_dpo_margin", paired_difference(row_margins["DPO"], row_margins["base"])),
    **with_interval("mediation_positive_advantage_top100", advantage_on_margin(100)),
    **with_interval("mediation_positive_advantage_top200", advantage_on_margin(200)),
    **with_interval("mediation_positive_advantage_top1000", advantage_on_margin(1000)),
    **with_interval("mediation_retox_share_x2", undone_on_margin(2)),
    **with_interval("mediation_retox_share_x5", undone_on_margin(5)),
    **with_interval("mediation_share_ablate_top200", tuple(fractions.loc["ablate top 200 toxic"])),
    **with_interval(
        "mediation_share_best_ablation", tuple(fractions.loc[best_mediation]) if best_mediation else (math.nan,) * 3
    ),
}
for key, value in mediation_values.items():
    glued(key, value)
glued("mediation_best_ablation_row", best_mediation or "none within the perplexity guard")
glued("mediation_table_items", len(behaviour))
verdict = chapter_verdict("ablation-falls-short", "book/04_ablation", glued.values, MEDIATION)
glued("emulates_verdict_mediation", f"{verdict.label} ({verdict.reason})")
fractions.join(results["PPL"]).style.format(precision=3)

# %% [markdown]
# DPO shifts the margin by {glue:text}`mediation_dpo_margin:.2f` nats on {glue:text}`mediation_table_items` items
# (95 % interval {glue:text}`mediation_dpo_margin_low:.2f` to {glue:text}`mediation_dpo_margin_high:.2f`).
# Ablating the top 200 toxic neurons recovers {glue:text}`mediation_share_ablate_top200:.0%` of that shift
# ({glue:text}`mediation_share_ablate_top200_low:.0%` to {glue:text}`mediation_share_ablate_top200_high:.0%`); the
# best row within 10 % of DPO's perplexity, *{glue:text}`mediation_best_ablation_row`*, recovers
# {glue:text}`mediation_share_best_ablation:.0%` ({glue:text}`mediation_share_best_ablation_low:.0%` to
# {glue:text}`mediation_share_best_ablation_high:.0%`). On generated toxicity, the row closest to DPO within the
# same perplexity guard, *{glue:text}`ablation_closest_row`*, is {glue:text}`ablation_closest_excess:+.3f` more
# toxic than DPO, paired over prompts ({glue:text}`ablation_closest_excess_low:+.3f` to
# {glue:text}`ablation_closest_excess_high:+.3f`). On the mediation metric the ledger's rule finds that ablation
# falls short of DPO: *{glue:text}`emulates_verdict_mediation`*.
#
# ## Figure 1a: where the write along the probe changes
#
# Per layer, the MLP output (bias included) averaged over the same positions as chapter 3, projected onto the
# unit probe direction: before DPO, after ablating the top 200 toxic neurons (with complete tables, also the
# fraction-matched number), and after DPO.

# %%
direction = probe.unit_direction(lm.shape[2]).double()
prompts = attribution_prompts(settings)
lines = {"before DPO": layer_projection(run.statistics.base.mean_mlp_output, direction)}
for n in (200, scaled(200)) if settings.complete_tables else (200,):
    ablated = mean_neuron_activations(
        lm, prompts, batch_size=settings.generation_batch_size, intervention=SetNeurons.ablate(by_cosine.head(n))
    )
    lines[f"ablate top {n} toxic"] = layer_projection(ablated.mean_mlp_output, direction)
lines["after DPO"] = layer_projection(run.statistics.dpo.mean_mlp_output, direction)
projections = pd.DataFrame({name: values.numpy() for name, values in lines.items()})
projections.index.name = "layer"
gap_closed = (projections["before DPO"] - projections["ablate top 200 toxic"]).sum() / (
    projections["before DPO"] - projections["after DPO"]
).sum()
glued("fig1a_gap_closed", float(gap_closed))
projections.T.style.format(precision=2)

# %% [markdown]
# Summed over layers, ablating the top 200 toxic neurons removes {glue:text}`fig1a_gap_closed:.0%` of the
# reduction DPO makes in the MLPs' write along the probe. *Reference (GPT-2-medium, read off Figure 1a):
# ablation only partly closes the gap, most visibly at layers 18-19.*

# %% tags=["hide-input"] mystnb={"figure": {"caption": "Figure 1a: per-layer projection of the MLP output onto the probe direction, before DPO, after ablating the top toxic neurons, and after DPO.", "name": "fig-layer-projection"}}
plots.layer_projections(projections)

# %% [markdown]
# ## Provenance

# %% tags=["hide-input"]
glued("ablation_wall_minutes", record.wall_minutes)
record.table()
