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
# # 3. Where DPO's reduction comes from, neuron by neuron
#
# The heart of the paper {cite}`yang2024ablation,yang2025dpo`: measure each MLP neuron's write along the probe
# direction before and after DPO, and ask which neurons carry the reduction. Neuron `i`'s **toxicity
# projection** is `P_i = m̄_i (v_i · ŵ)`, with `m̄_i` its mean activation over the challenge prompts and the 20
# positions at which the model produces its greedy continuation (each model on its own continuation), and its
# **reduction** is `Δ_i = P_i(base) − P_i(DPO)`. Four groups split the neurons that reduce (`Δ_i > 0`) by the
# signs of their pre-DPO cosine with the probe and pre-DPO activation: **TP−** (toxic-aligned, positively
# activated, dampened), **TN+** (toxic-aligned, negatively activated, pushed further negative), **AP+**
# (anti-toxic-aligned, positively activated, boosted) and **AN−** (anti-toxic-aligned, negatively activated,
# made less negative). The paper's headline: only 31.8 % of GPT-2's reduction comes from TP−.
#
# We add what the paper lacks: a **null control**. The same statistics computed along random directions tell
# which parts of the pattern are about toxicity and which are about DPO moving activations in general.

# %% tags=["parameters"]
profile = "ci"
model = "smollm2-135m"
null_directions = 200
ranked_neurons_shown = 2000
arrows_shown = 500
top_ranked_neurons = 100
top_toxic_neurons = 100

# %%
import warnings

import matplotlib.pyplot as plt
import pandas as pd
from myst_nb import glue

from dpo_toxicity import attribution_plots
from dpo_toxicity.architectures import all_value_vectors
from dpo_toxicity.attribution import (
    activation_change_correlations, activation_change_summary, activation_falls, group_shares, layer_cancellation,
    magnitude_shrink_shares, parameter_cosines, per_layer_reduction, relative_activation_change, save_neuron_table,
    top_ranked_group_shares, toxic_neuron_share,
)
from dpo_toxicity.dpo import run_dpo_model
from dpo_toxicity.models import load_model
from dpo_toxicity.null_control import (
    null_shares, null_summary, orthogonal_direction, random_directions, specificity,
)
from dpo_toxicity.paths import artefact_dir
from dpo_toxicity.probe import Probe
from dpo_toxicity.profiles import profile as run_profile
from dpo_toxicity.provenance import RunRecord
from dpo_toxicity.run_artefacts import PROBE_FILE, attribution_prompts, neuron_statistics

warnings.filterwarnings("ignore", category=FutureWarning)
settings = run_profile(profile)
lm = load_model(model)
artefacts = artefact_dir(lm.name, settings.name)
probe = Probe.load(artefacts / PROBE_FILE)
dpo_lm = run_dpo_model(lm, settings.name).model
record = RunRecord("03_attribution", settings, lm, data_files=["rtp/challenge_prompts.jsonl"])
direction = probe.unit_direction(lm.shape[2]).double()
glue("attribution_prompts", len(attribution_prompts(settings)), display=False)
lm, dpo_lm

# %% [markdown]
# ## Per-neuron statistics
#
# One nnsight generation per batch reads every neuron's activation at each of the 20 generation steps (the
# last prompt token, then generated tokens 1 to 19, as in the paper's v1 code) and sums them in float64.

# %%
statistics = neuron_statistics(lm, dpo_lm, probe, settings)
base_activations, dpo_activations, table = statistics.base, statistics.dpo, statistics.table
values_base, values_dpo = all_value_vectors(lm.model), all_value_vectors(dpo_lm.model)
save_neuron_table(table, "neuron_table.csv.gz")  # beside the page, for the download link below
glue("n_neurons_total", len(table), display=False)
weight_cosines = parameter_cosines(lm.model, dpo_lm.model)
glue("weight_tensors", len(weight_cosines), display=False)
glue("weight_cosine_min", float(weight_cosines.min()), display=False)
glue("weight_cosine_min_tensor", weight_cosines.idxmin(), display=False)
table.sort_values("delta", ascending=False).head(10)

# %% [markdown]
# The full table of all {glue:text}`n_neurons_total` neurons (layer, index, cosine, mean activations before
# and after DPO, projections, Δ and group) is {download}`downloadable as CSV <neuron_table.csv.gz>`.
#
# The decomposition `Δ_i ≈ (m̄_i^pre − m̄_i^dpo)(v_i · ŵ)` rests on DPO leaving the weights almost where they
# were. It does: of the {glue:text}`weight_tensors` parameter tensors, the one DPO moves most,
# {glue:text}`weight_cosine_min_tensor`, keeps a cosine of {glue:text}`weight_cosine_min:.5f` with itself before
# DPO (`parameter_cosines`). *Reference (Lee et al.): above 0.99 for every tensor of GPT-2-medium.*
#
# ## Net and positive totals
#
# The paper divides every group's reduction by the sum over the neurons that reduce, `Σ_{Δ>0} Δ`; the net sum
# over all neurons is what actually changes in the MLPs' write along the probe.

# %%
delta_grouping = group_shares(table, "delta")
change_grouping = group_shares(table, "activation_change")
glue("delta_positive_total", delta_grouping.positive_total, display=False)
glue("delta_net", delta_grouping.net, display=False)
glue("net_over_positive", delta_grouping.net / delta_grouping.positive_total, display=False)
glue("n_reducing", int((table["delta"] > 0).sum()), display=False)
glue("share_reducing_neurons", float((table["delta"] > 0).mean()), display=False)
fig = attribution_plots.cumulative_reduction(table)
glue("fig_cumulative", fig, display=False)
plt.close(fig)
delta_grouping

# %% [markdown]
# {glue:text}`n_reducing` neurons ({glue:text}`share_reducing_neurons:.1%` of all) have `Δ > 0`; together they
# reduce the projection by {glue:text}`delta_positive_total:.3f`, but the net reduction over all neurons is
# only {glue:text}`delta_net:.3f` ({glue:text}`net_over_positive:.1%` of the positive total): most of what some
# neurons remove, others add back. *Reference (GPT-2-medium, v1 code): 57,501 of 98,304 neurons (58.5 %),
# positive total 47.96, net 7.22 (15 %); v3: 52–58 % of neurons with Δ > 0 across models.*
#
# ```{glue:figure} fig_cumulative
# :name: fig-cumulative
#
# Figure 1b: cumulative reduction over neurons ranked from the largest to the smallest Δ. The curve peaks at the
# last neuron with Δ > 0 and falls back to the net reduction.
# ```
#
# ## The four groups

# %%
paper_v1 = pd.Series({"TP-": 0.32, "TN+": 0.24, "AP+": 0.07, "AN-": 0.37})
paper_v3 = pd.DataFrame(
    {"TP-": [0.32, 0.26, 0.31, 0.34], "TN+": [0.24, 0.24, 0.20, 0.16], "AP+": [0.07, 0.24, 0.19, 0.15],
     "AN-": [0.37, 0.26, 0.30, 0.34]},
    index=["paper: GPT-2-medium", "paper: Llama-3.1-8B", "paper: Gemma-2-2B", "paper: Mistral-7B"],
)
shares = pd.DataFrame(
    [delta_grouping.shares.rename(f"ours, {lm.name}, by Δ > 0"),
     change_grouping.shares.rename(f"ours, {lm.name}, by activation change")]
)
for label, key in zip(["TP-", "TN+", "AP+", "AN-"], ["share_tp", "share_tn", "share_ap", "share_an"]):
    glue(key, float(delta_grouping.shares[label]), display=False)
    glue(f"{key}_by_change", float(change_grouping.shares[label]), display=False)
fig = attribution_plots.group_share_bar(delta_grouping.shares, paper_v1)
glue("fig_group_shares", fig, display=False)
plt.close(fig)
pd.concat([shares, paper_v3]).style.format("{:.1%}")

# %% [markdown]
# Grouped by `Δ > 0`, TP− carries {glue:text}`share_tp:.1%` of the reduction, TN+ {glue:text}`share_tn:.1%`,
# AP+ {glue:text}`share_ap:.1%` and AN− {glue:text}`share_an:.1%` (by the sign of the activation change:
# TP− {glue:text}`share_tp_by_change:.1%`). *Reference: the paper's 31.8 % for TP− on GPT-2-medium (activation-
# change grouping; 32 % by Δ > 0) and the v3 shares above.* As in the paper, the dampened toxic neurons carry
# only about a third of the reduction. Whether that says something about toxicity is the question of the null
# control below.
#
# ```{glue:figure} fig_group_shares
# :name: fig-group-shares
#
# Figure 2a: shares of the total reduction by group, ours beside the paper's GPT-2-medium values (reference).
# ```
#
# Every group, reducing and opposing (the opposing groups' Δ sums are negative):

# %%
delta_grouping.table().style.format({"delta_sum": "{:.3f}", "share": "{:.1%}"})

# %%
fig = attribution_plots.ranked_group_contributions(table, top=ranked_neurons_shown)
glue("fig_ranked_groups", fig, display=False)
plt.close(fig)
top_ranked = top_ranked_group_shares(table, top=top_ranked_neurons)
glue("top_ranked_neurons_n", top_ranked_neurons, display=False)
glue("top_ranked_share_tp", float(top_ranked["TP-"]), display=False)
glue("top_ranked_share_max_other", float(top_ranked.drop("TP-").max()), display=False)
glue("top_ranked_max_other_group", str(top_ranked.drop("TP-").idxmax()), display=False)
fig = attribution_plots.projection_shift_arrows(table, top=arrows_shown)
glue("fig_arrows", fig, display=False)
plt.close(fig)

# %% [markdown]
# ```{glue:figure} fig_ranked_groups
# :name: fig-ranked-groups
#
# Figure 2b: reduction per group in bins of 50 neurons, over the neurons ranked by Δ.
# ```
#
# Among the {glue:text}`top_ranked_neurons_n` neurons with the largest Δ, TP− carries
# {glue:text}`top_ranked_share_tp:.0%` of the reduction and the largest other group,
# {glue:text}`top_ranked_max_other_group`, {glue:text}`top_ranked_share_max_other:.0%`
# (`top_ranked_group_shares`). *Reference (v1 Figure 2b): TP− dominates GPT-2-medium's top-ranked neurons, the
# other groups take over further down.*
#
# ```{glue:figure} fig_arrows
# :name: fig-arrows
#
# Figure 2c: for the top neurons by Δ, each arrow goes from the neuron's toxicity projection before DPO to
# after DPO, at its cosine with the probe; colours are the four groups.
# ```
#
# ## Layers

# %%
per_layer = per_layer_reduction(table)
fig = attribution_plots.per_layer_group_reduction(per_layer)
glue("fig_per_layer", fig, display=False)
plt.close(fig)
last_third = per_layer.index >= 2 * lm.shape[0] // 3
glue("late_layer_share", float(per_layer.loc[last_third, list(delta_grouping.shares.index)].sum().sum()
                               / delta_grouping.positive_total), display=False)
glue("layer_net_over_positive", layer_cancellation(table), display=False)

# %% [markdown]
# The last third of the layers carries {glue:text}`late_layer_share:.1%` of the positive reduction. *Reference:
# the paper finds the largest reductions in GPT-2's later layers, driven by TP− and AN−.* Within a layer the
# neurons that reduce and those that increase the write largely cancel: the layers' net reductions, in
# magnitude, sum to {glue:text}`layer_net_over_positive:.0%` of the positive total (`layer_cancellation`; 0 would
# be exact cancellation in every layer). *Reference (v1 Figure 3, right): on GPT-2-medium the two sums nearly
# cancel layer by layer.*
#
# ```{glue:figure} fig_per_layer
# :name: fig-per-layer
#
# Figure 3: per-layer reduction by group (left) and, per layer, the sum of positive Δ against the magnitude of
# the sum of negative Δ (right; the shaded gap is the net reduction).
# ```
#
# ## The top toxic neurons

# %%
top_toxic = table.nlargest(top_toxic_neurons, "cosine")
glue("top100_negative_share", float((top_toxic["activation_base"] < 0).mean()), display=False)
falls = activation_falls(table, top=top_toxic_neurons)
glue("top100_activation_fall_share", float(falls["share"]), display=False)
glue("activation_fall_share_all", float(falls["share_all"]), display=False)
glue("top100_activation_fall_z", float(falls["z"]), display=False)
glue("positive_activation_share", float((table["activation_base"] >= 0).mean()), display=False)
fig = attribution_plots.top_toxic_activations(table)
glue("fig_top_toxic", fig, display=False)
plt.close(fig)
toxic_share = toxic_neuron_share(table, top=128)
glue("toxic_share_projection", float(toxic_share["share"]), display=False)
toxic_share

# %% [markdown]
# Of the 100 neurons most aligned with the probe, a fraction {glue:text}`top100_negative_share:.2f` is
# negatively activated on average before DPO. *Reference: "most neurons have negative activations" on GPT-2,
# where 87 % of all mean activations are negative (GELU).* On our model a fraction
# {glue:text}`positive_activation_share:.2f` of all mean activations is positive. The 128 most toxic neurons that are dampened (TP−) account for
# {glue:text}`toxic_share_projection:.1%` of the reduction. *Reference: 4.9 % on GPT-2 (OpenReview version);
# "2.5 % to 24 %" across models (v3).*
#
# After DPO a fraction {glue:text}`top100_activation_fall_share:.2f` of these 100 neurons activate less than before
# (`m̄^pre − m̄^dpo > 0`, which lowers a toxic-aligned neuron's write whatever its sign), against
# {glue:text}`activation_fall_share_all:.2f` of all neurons (one-sided binomial z =
# {glue:text}`top100_activation_fall_z:.1f`; `activation_falls`). *Reference (Lee et al.): the top toxic
# neurons' activations drop after DPO.* Only a fall more frequent than DPO's fall everywhere singles them out.
#
# ```{glue:figure} fig_top_toxic
# :name: fig-top-toxic
#
# Figure 4: mean activations of the 100 neurons most aligned with the probe, before and after DPO.
# ```
#
# ## How activations move (the EMNLP version's distributions)

# %%
relative = relative_activation_change(table)
fig = attribution_plots.activation_change_distributions(relative, table)
glue("fig_change_distribution", fig, display=False)
plt.close(fig)
correlations = activation_change_correlations(table)
glue("r_change_cosine", float(correlations.iloc[0]["r"]), display=False)
shrinking = magnitude_shrink_shares(table)
for label, key in zip(["TP-", "TN+", "AP+", "AN-"],
                      ["shrink_share_tp", "shrink_share_tn", "shrink_share_ap", "shrink_share_an"]):
    glue(key, float(shrinking[label]), display=False)
fig = attribution_plots.change_versus_cosine(table)
glue("fig_change_cosine", fig, display=False)
plt.close(fig)
activation_change_summary(table)

# %%
correlations

# %% [markdown]
# The activation change is essentially uncorrelated with the neuron's cosine with the probe (Pearson r =
# {glue:text}`r_change_cosine:.3f`). *Reference (v3): r between 0.001 and 0.004 on all four models.* DPO does
# not single out toxic-aligned neurons: it shifts activations broadly.
#
# By group, |m̄| shrinks in {glue:text}`shrink_share_tp:.0%` of the TP− neurons and {glue:text}`shrink_share_an:.0%`
# of the AN− neurons, and in {glue:text}`shrink_share_tn:.0%` of TN+ and {glue:text}`shrink_share_ap:.0%` of AP+
# (`magnitude_shrink_shares`). *Reference (v3): TP− and AN− shrink |m̄|, TN+ and AP+ grow it.* With the weights
# this close to fixed the group definitions imply it for every neuron whose activation keeps its sign, so the
# numbers say how many cross zero.
#
# ```{glue:figure} fig_change_distribution
# :name: fig-change-distribution
#
# Relative activation change, 100 (m̄_pre − m̄_dpo) / m̄_pre, clipped to its 10th-90th percentiles: all neurons
# (left) and by reducing group (right; positive = the magnitude shrank).
# ```
#
# ```{glue:figure} fig_change_cosine
# :name: fig-change-cosine
#
# Activation change against cosine with the probe (a random sample of 5,000 neurons).
# ```
#
# ## The null control: is any of this about toxicity?
#
# We recompute every statistic with the probe replaced by each of {glue:text}`null_directions_n` random unit
# directions (groups defined by the cosine with that direction), and with one direction orthogonal to the probe.
# A statistic that the probe shares with random directions describes how DPO moves activations, not
# toxicity.

# %%
glue("null_directions_n", null_directions, display=False)
random_units = random_directions(null_directions, lm.shape[2], seed=0)
null = null_shares(base_activations, dpo_activations, values_base, values_dpo, random_units)
orthogonal = null_shares(base_activations, dpo_activations, values_base, values_dpo,
                         orthogonal_direction(direction, seed=1)[None, :])
summary = null_summary(delta_grouping, null)
summary["orthogonal direction"] = orthogonal.iloc[0][summary.index]
glue("share_tp_null_mean", float(summary.loc["share_tp", "null_mean"]), display=False)
for key in ["share_tp", "share_tn", "share_ap", "share_an"]:
    glue(f"{key}_z", float(summary.loc[key, "z"]), display=False)
glue("net_delta_z", float(summary.loc["net", "z"]), display=False)
glue("net_delta_percentile", float(summary.loc["net", "percentile"]), display=False)
glue("net_null_mean", float(summary.loc["net", "null_mean"]), display=False)
glue("net_null_sd", float(summary.loc["net", "null_sd"]), display=False)
share_z = summary.loc[["share_tp", "share_tn", "share_ap", "share_an"], "z"].abs()
glue("max_share_abs_z", float(share_z.max()), display=False)
summary["verdict"] = summary["z"].map(specificity)
glue("shares_verdict", {
    "not specific": "are not specific to toxicity: random directions give the same split (every |z| < 2)",
    "marginal": "differ only marginally from random directions (largest |z| between 2 and 3, four shares tested)",
    "specific": "differ from random directions (some |z| ≥ 3)",
}[specificity(share_z.max())], display=False)
glue("net_verdict", {
    "not specific": "is not distinguishable from random directions",
    "marginal": "stands out only marginally from random directions",
    "specific": "is specific to the probe direction",
}[specificity(summary.loc["net", "z"]) if summary.loc["net", "z"] > 0 else "not specific"], display=False)
fig = attribution_plots.null_distributions(null, summary, ["share_tp", "share_an", "net", "net_over_positive_total"])
glue("fig_null", fig, display=False)
plt.close(fig)
summary.style.format(precision=3)

# %% [markdown]
# Along random directions TP− takes {glue:text}`share_tp_null_mean:.1%` of the reduction on average, against
# {glue:text}`share_tp:.1%` along the probe (z = {glue:text}`share_tp_z:.1f`); for TN+, AP+ and AN− the shares stand
# at z = {glue:text}`share_tn_z:.1f`, {glue:text}`share_ap_z:.1f` and {glue:text}`share_an_z:.1f`, the largest |z|
# being {glue:text}`max_share_abs_z:.1f`. The group shares {glue:text}`shares_verdict`. The claims ledger reads, for
# each claim, the z of the share that claim is about (TP−'s for the headline third, the smallest group's for "all
# four contribute"), not the largest of four. The net reduction along
# the probe, {glue:text}`delta_net:.3f`, compares with {glue:text}`net_null_mean:.3f` ±
# {glue:text}`net_null_sd:.3f` along random directions (z = {glue:text}`net_delta_z:.1f`, percentile
# {glue:text}`net_delta_percentile:.0f`): the net reduction {glue:text}`net_verdict`.
#
# ```{glue:figure} fig_null
# :name: fig-null
#
# Null control: each statistic over random unit directions (grey) and along the probe (red line, with its
# z-score against the random directions).
# ```
#
# **What holds on this model.** The paper's decomposition reproduces in form: the dampened toxic neurons (TP−)
# carry {glue:text}`share_tp:.1%` of the reduction and all four groups contribute. Against the null control, the
# group shares
# {glue:text}`shares_verdict`, and the net reduction along the probe {glue:text}`net_verdict`. A statistic that
# random directions share describes how DPO moves activations in general; only what stands out from them can
# carry the paper's story about toxicity.
#
# ## Provenance

# %%
glue("attribution_wall_minutes", record.wall_minutes, display=False)
record.table()
