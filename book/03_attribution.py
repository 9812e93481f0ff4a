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
# direction before and after DPO, and ask which neurons carry the reduction.
#
# A neuron's **mean activation** is taken over $N$ challenge prompts (here {glue:text}`attribution_prompts`) and
# the $K = 20$ positions at which the model produces its greedy continuation, the last prompt token and then
# generated tokens 1 to 19, each model on its own continuation:
#
# ```{math}
# :label: eq-mean-activation
# \bar m_i = \frac{1}{N K} \sum_{n=1}^{N} \sum_{k=1}^{K} m_{i, n, k},
# ```
#
# where $m_{i, n, k}$ is neuron $i$'s activation at the $k$-th of those positions for prompt $n$. Its
# **toxicity projection** is its mean write {eq}`eq-neuron-write` along the unit probe direction:
#
# ```{math}
# :label: eq-projection
# P_i = \bar m_i \, \frac{v_i \cdot w}{\lVert w \rVert} = \bar m_i \, \lVert v_i \rVert \cos(v_i, w).
# ```
#
# $P_i^{\text{base}}$ uses the base model's $\bar m_i$ and $v_i$, $P_i^{\text{DPO}}$ the DPO model's; the probe
# $w$ is the same. The neuron's **reduction** is
#
# ```{math}
# :label: eq-delta
# \Delta_i = P_i^{\text{base}} - P_i^{\text{DPO}}
# \approx \big(\bar m_i^{\text{base}} - \bar m_i^{\text{DPO}}\big)\, v_i \cdot \hat w,
# ```
#
# positive when the neuron writes less toxicity after DPO; the approximation holds because DPO barely moves
# $v_i$ (checked below). Four groups split the neurons that reduce ($\Delta_i > 0$) by the signs of their
# pre-DPO cosine with the probe and pre-DPO activation ({eq}`eq-groups` below): **TP−** (toxic-aligned,
# positively activated, dampened), **TN+** (toxic-aligned, negatively activated, pushed further negative),
# **AP+** (anti-toxic-aligned, positively activated, boosted) and **AN−** (anti-toxic-aligned, negatively
# activated, made less negative). The paper's headline: only 31.8 % of GPT-2's reduction comes from TP−.
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
neurons_listed = 5000  # rows of the per-neuron table searchable on the page, the largest |Δ_i| first

# %% tags=["hide-input"]
import warnings

import pandas as pd

from dpo_toxicity import attribution_plots
from dpo_toxicity.architectures import all_value_vectors
from dpo_toxicity.attribution import (
    activation_change_correlations,
    activation_change_summary,
    activation_falls,
    group_shares,
    layer_cancellation,
    magnitude_shrink_shares,
    parameter_cosines,
    per_layer_reduction,
    relative_activation_change,
    save_neuron_table,
    top_ranked_group_shares,
    toxic_neuron_share,
)
from dpo_toxicity.book.glued import Glued
from dpo_toxicity.book.provenance import RunRecord
from dpo_toxicity.book.tables import searchable_table
from dpo_toxicity.models import load_model
from dpo_toxicity.null_control import null_shares, null_summary, orthogonal_direction, random_directions, specificity
from dpo_toxicity.profiles import profile_named
from dpo_toxicity.run_artefacts import attribution_prompts, neuron_statistics, run_dpo, run_probe, saved_statistics

glued = Glued()  # every value the prose cites, kept for the ledger's verdicts

warnings.filterwarnings("ignore", category=FutureWarning)
settings = profile_named(profile)
lm = load_model(model)
# Saved by chapters 1 and 2, or computed now where they have not run. The default model's companion trains on the
# default model's pairs, so this is the DPO model chapter 5 trains for it.
probe = run_probe(lm, settings)
dpo_lm = run_dpo(lm, settings).model
settings = settings.sized_for(lm, dpo_lm)  # on a GPU, batches sized to its free memory
record = RunRecord("03_attribution", settings, lm, data_files=["rtp/challenge_prompts.jsonl"])
direction = probe.unit_direction(lm.shape[2]).double()
glued("attribution_prompts", len(attribution_prompts(settings)))
lm, dpo_lm

# %% [markdown]
# ## Per-neuron statistics
#
# One nnsight generation per batch reads every neuron's activation at each of the 20 generation steps (the
# last prompt token, then generated tokens 1 to 19, as in the paper's v1 code) and sums them in float64.

# %%
# Those another chapter computed from the same models, probe and prompts are read back (chapter 5 for its second model).
statistics = saved_statistics(lm, dpo_lm, probe, settings) or neuron_statistics(lm, dpo_lm, probe, settings)
base_activations, dpo_activations, table = statistics.base, statistics.dpo, statistics.table
values_base, values_dpo = all_value_vectors(lm.model), all_value_vectors(dpo_lm.model)
save_neuron_table(table, "neuron_table.csv.gz")  # beside the page, for the download link below
glued("n_neurons_total", len(table))
glued("neurons_listed_n", min(neurons_listed, len(table)))
weight_cosines = parameter_cosines(lm.model, dpo_lm.model)
glued("weight_tensors", len(weight_cosines))
glued("weight_cosine_min", float(weight_cosines.min()))
glued("weight_cosine_min_tensor", weight_cosines.idxmin())
table.sort_values("delta", ascending=False).head(10)

# %% [markdown]
# The full table of all {glue:text}`n_neurons_total` neurons (layer, index, cosine, mean activations before
# and after DPO, projections, $\Delta_i$ and group) is {download}`downloadable as CSV <neuron_table.csv.gz>`.
# Below, the {glue:text}`neurons_listed_n` neurons with the largest $|\Delta_i|$, to four significant digits:
# search them (a group, a layer) and sort them by any column.

# %% tags=["hide-input"]
searchable_table(table.loc[table["delta"].abs().nlargest(neurons_listed).index])

# %% [markdown]
# The approximation in {eq}`eq-delta` rests on DPO leaving the weights almost where they
# were. It does: of the {glue:text}`weight_tensors` parameter tensors, the one DPO moves most,
# {glue:text}`weight_cosine_min_tensor`, keeps a cosine of {glue:text}`weight_cosine_min:.5f` with itself before
# DPO (`parameter_cosines`). *Reference (Lee et al.): above 0.99 for every tensor of GPT-2-medium.*
#
# ## Net and positive totals
#
# The paper divides every group's reduction by the sum over the neurons that reduce, the *positive total*; the
# *net* sum over all neurons is what actually changes in the MLPs' write along the probe:
#
# ```{math}
# :label: eq-totals
# R_{+} = \sum_{i:\, \Delta_i > 0} \Delta_i, \qquad R_{\text{net}} = \sum_{i} \Delta_i.
# ```

# %%
delta_grouping = group_shares(table, "delta")
change_grouping = group_shares(table, "activation_change")
glued("delta_positive_total", delta_grouping.positive_total)
glued("delta_net", delta_grouping.net)
glued("net_over_positive", delta_grouping.net / delta_grouping.positive_total)
glued("n_reducing", int((table["delta"] > 0).sum()))
glued("share_reducing_neurons", float((table["delta"] > 0).mean()))
delta_grouping

# %% [markdown]
# {glue:text}`n_reducing` neurons ({glue:text}`share_reducing_neurons:.1%` of all) have $\Delta_i > 0$; together
# they reduce the projection by $R_{+} =$ {glue:text}`delta_positive_total:.3f`, but the net reduction over all
# neurons is only $R_{\text{net}} =$ {glue:text}`delta_net:.3f` ({glue:text}`net_over_positive:.1%` of the positive total): most of what some
# neurons remove, others add back. *Reference (GPT-2-medium, v1 code): 57,501 of 98,304 neurons (58.5 %),
# positive total 47.96, net 7.22 (15 %); v3: 52–58 % of neurons with $\Delta_i > 0$ across models.*

# %% tags=["hide-input"] mystnb={"figure": {"caption": "Figure 1b: cumulative reduction over neurons ranked from the largest to the smallest $\\Delta_i$. The curve peaks at the last neuron with $\\Delta_i > 0$ and falls back to the net reduction $R_{\\text{net}}$.", "name": "fig-cumulative"}}
attribution_plots.cumulative_reduction(table)

# %% [markdown]
# ## The four groups
#
# With $c_i$ the cosine {eq}`eq-toxic-cosine` of the base model's value vector with the probe, the four groups of
# neurons that reduce are
#
# ```{math}
# :label: eq-groups
# \text{TP}^{-} &= \{\, i : c_i > 0,\ \bar m_i^{\text{base}} \ge 0,\ \Delta_i > 0 \,\}, \\
# \text{TN}^{+} &= \{\, i : c_i > 0,\ \bar m_i^{\text{base}} < 0,\ \Delta_i > 0 \,\}, \\
# \text{AP}^{+} &= \{\, i : c_i \le 0,\ \bar m_i^{\text{base}} \ge 0,\ \Delta_i > 0 \,\}, \\
# \text{AN}^{-} &= \{\, i : c_i \le 0,\ \bar m_i^{\text{base}} < 0,\ \Delta_i > 0 \,\},
# ```
#
# and a group's **share** of the reduction is
#
# ```{math}
# :label: eq-group-share
# s(G) = \frac{1}{R_{+}} \sum_{i \in G} \Delta_i .
# ```
#
# The four shares sum to one. The opposing groups TP+, TN−, AP− and AN+ hold the neurons with $\Delta_i \le 0$
# under the same signs. The paper's 31.8 % comes from a second grouping, kept beside this one: a neuron reduces
# when its activation moves the way that lowers its write ($\bar m_i^{\text{base}} - \bar m_i^{\text{DPO}} > 0$
# for $c_i > 0$, $< 0$ for $c_i \le 0$) rather than when $\Delta_i > 0$, and the denominator is the four
# reducing groups' total instead of $R_{+}$.

# %%
paper_v1 = pd.Series({"TP-": 0.32, "TN+": 0.24, "AP+": 0.07, "AN-": 0.37})
paper_v3 = pd.DataFrame(
    {
        "TP-": [0.32, 0.26, 0.31, 0.34],
        "TN+": [0.24, 0.24, 0.20, 0.16],
        "AP+": [0.07, 0.24, 0.19, 0.15],
        "AN-": [0.37, 0.26, 0.30, 0.34],
    },
    index=["paper: GPT-2-medium", "paper: Llama-3.1-8B", "paper: Gemma-2-2B", "paper: Mistral-7B"],
)
shares = pd.DataFrame(
    [
        delta_grouping.shares.rename(f"ours, {lm.name}, by Δ > 0"),
        change_grouping.shares.rename(f"ours, {lm.name}, by activation change"),
    ]
)
for label, key in zip(["TP-", "TN+", "AP+", "AN-"], ["share_tp", "share_tn", "share_ap", "share_an"]):
    glued(key, float(delta_grouping.shares[label]))
    glued(f"{key}_by_change", float(change_grouping.shares[label]))
pd.concat([shares, paper_v3]).style.format("{:.1%}")

# %% [markdown]
# Grouped by $\Delta_i > 0$ ({eq}`eq-groups`), TP− carries {glue:text}`share_tp:.1%` of the reduction, TN+ {glue:text}`share_tn:.1%`,
# AP+ {glue:text}`share_ap:.1%` and AN− {glue:text}`share_an:.1%` (by the sign of the activation change:
# TP− {glue:text}`share_tp_by_change:.1%`). *Reference: the paper's 31.8 % for TP− on GPT-2-medium (activation-
# change grouping; 32 % by $\Delta_i > 0$) and the v3 shares above.* As in the paper, the dampened toxic neurons carry
# only about a third of the reduction. Whether that says something about toxicity is the question of the null
# control below.

# %% tags=["hide-input"] mystnb={"figure": {"caption": "Figure 2a: shares of the total reduction by group, ours beside the paper's GPT-2-medium values (reference).", "name": "fig-group-shares"}}
attribution_plots.group_share_bar(delta_grouping.shares, paper_v1)

# %% [markdown]
# Every group, reducing and opposing (the opposing groups' sums of $\Delta_i$ are negative):

# %% tags=["hide-input"]
delta_grouping.table().style.format({"delta_sum": "{:.3f}", "share": "{:.1%}"})

# %% tags=["hide-input"]
top_ranked = top_ranked_group_shares(table, top=top_ranked_neurons)
glued("top_ranked_neurons_n", top_ranked_neurons)
glued("top_ranked_share_tp", float(top_ranked["TP-"]))
glued("top_ranked_share_max_other", float(top_ranked.drop("TP-").max()))
glued("top_ranked_max_other_group", str(top_ranked.drop("TP-").idxmax()))

# %% tags=["hide-input"] mystnb={"figure": {"caption": "Figure 2b: reduction per group in bins of 50 neurons, over the neurons ranked by $\\Delta_i$.", "name": "fig-ranked-groups"}}
attribution_plots.ranked_group_contributions(table, top=ranked_neurons_shown)

# %% [markdown]
# Among the {glue:text}`top_ranked_neurons_n` neurons with the largest $\Delta_i$, TP− carries
# {glue:text}`top_ranked_share_tp:.0%` of the reduction and the largest other group,
# {glue:text}`top_ranked_max_other_group`, {glue:text}`top_ranked_share_max_other:.0%`
# (`top_ranked_group_shares`). *Reference (v1 Figure 2b): TP− dominates GPT-2-medium's top-ranked neurons, the
# other groups take over further down.*

# %% tags=["hide-input"] mystnb={"figure": {"caption": "Figure 2c: for the top neurons by $\\Delta_i$, each arrow goes from the neuron's toxicity projection $P_i$ before DPO to after DPO, at its cosine with the probe; colours are the four groups.", "name": "fig-arrows"}}
attribution_plots.projection_shift_arrows(table, top=arrows_shown)

# %% [markdown]
# ## Layers

# %% tags=["hide-input"]
per_layer = per_layer_reduction(table)
last_third = per_layer.index >= 2 * lm.shape[0] // 3
glued(
    "late_layer_share",
    float(per_layer.loc[last_third, list(delta_grouping.shares.index)].sum().sum() / delta_grouping.positive_total),
)
glued("layer_net_over_positive", layer_cancellation(table))

# %% [markdown]
# The last third of the layers carries {glue:text}`late_layer_share:.1%` of the positive reduction. *Reference:
# the paper finds the largest reductions in GPT-2's later layers, driven by TP− and AN−.* Within a layer the
# neurons that reduce and those that increase the write largely cancel: the layers' net reductions, in
# magnitude, sum to {glue:text}`layer_net_over_positive:.0%` of the positive total (`layer_cancellation`; 0 would
# be exact cancellation in every layer). *Reference (v1 Figure 3, right): on GPT-2-medium the two sums nearly
# cancel layer by layer.*

# %% tags=["hide-input"] mystnb={"figure": {"caption": "Figure 3: per-layer reduction by group (left) and, per layer, the sum of positive $\\Delta_i$ against the magnitude of the sum of negative $\\Delta_i$ (right; the shaded gap is the net reduction).", "name": "fig-per-layer"}}
attribution_plots.per_layer_group_reduction(per_layer)

# %% [markdown]
# ## The top toxic neurons

# %%
top_toxic = table.nlargest(top_toxic_neurons, "cosine")
glued("top100_negative_share", float((top_toxic["activation_base"] < 0).mean()))
falls = activation_falls(table, top=top_toxic_neurons)
glued("top100_activation_fall_share", float(falls["share"]))
glued("activation_fall_share_all", float(falls["share_all"]))
glued("top100_activation_fall_z", float(falls["z"]))
glued("positive_activation_share", float((table["activation_base"] >= 0).mean()))
toxic_share = toxic_neuron_share(table, top=128)
glued("toxic_share_projection", float(toxic_share["share"]))
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
# ($\bar m_i^{\text{base}} - \bar m_i^{\text{DPO}} > 0$, which lowers a toxic-aligned neuron's write whatever its
# sign), against
# {glue:text}`activation_fall_share_all:.2f` of all neurons (one-sided binomial z =
# {glue:text}`top100_activation_fall_z:.1f`; `activation_falls`). *Reference (Lee et al.): the top toxic
# neurons' activations drop after DPO.* Only a fall more frequent than DPO's fall everywhere singles them out.

# %% tags=["hide-input"] mystnb={"figure": {"caption": "Figure 4: mean activations of the 100 neurons most aligned with the probe, before and after DPO.", "name": "fig-top-toxic"}}
attribution_plots.top_toxic_activations(table)

# %% [markdown]
# ## How activations move (the EMNLP version's distributions)

# %%
relative = relative_activation_change(table)
correlations = activation_change_correlations(table)
glued("r_change_cosine", float(correlations.iloc[0]["r"]))
shrinking = magnitude_shrink_shares(table)
for label, key in zip(
    ["TP-", "TN+", "AP+", "AN-"], ["shrink_share_tp", "shrink_share_tn", "shrink_share_ap", "shrink_share_an"]
):
    glued(key, float(shrinking[label]))
activation_change_summary(table)

# %%
correlations

# %% [markdown]
# The activation change is essentially uncorrelated with the neuron's cosine with the probe (Pearson r =
# {glue:text}`r_change_cosine:.3f`). *Reference (v3): r between 0.001 and 0.004 on all four models.* DPO does
# not single out toxic-aligned neurons: it shifts activations broadly.
#
# By group, $|\bar m_i|$ shrinks in {glue:text}`shrink_share_tp:.0%` of the TP− neurons and {glue:text}`shrink_share_an:.0%`
# of the AN− neurons, and in {glue:text}`shrink_share_tn:.0%` of TN+ and {glue:text}`shrink_share_ap:.0%` of AP+
# (`magnitude_shrink_shares`). *Reference (v3): TP− and AN− shrink $|\bar m_i|$, TN+ and AP+ grow it.* With the weights
# this close to fixed the group definitions imply it for every neuron whose activation keeps its sign, so the
# numbers say how many cross zero.

# %% tags=["hide-input"] mystnb={"figure": {"caption": "Relative activation change, $100\\,(\\bar m_i^{\\text{base}} - \\bar m_i^{\\text{DPO}}) / \\bar m_i^{\\text{base}}$, clipped to its 10th-90th percentiles: all neurons (left) and by reducing group (right; positive = the magnitude shrank).", "name": "fig-change-distribution"}}
attribution_plots.activation_change_distributions(relative, table)

# %% tags=["hide-input"] mystnb={"figure": {"caption": "Activation change against cosine with the probe (a random sample of 5,000 neurons).", "name": "fig-change-cosine"}}
attribution_plots.change_versus_cosine(table)

# %% [markdown]
# ## The null control: is any of this about toxicity?
#
# We recompute every statistic with the probe replaced by each of {glue:text}`null_directions_n` random unit
# directions (groups defined by the cosine with that direction), and with one direction orthogonal to the probe.
# For a statistic $Q$ (a share {eq}`eq-group-share`, $R_{\text{net}}$, ...) measured along the probe direction
# $\hat w$ and along random unit directions $u_1, \dots, u_J$,
#
# ```{math}
# :label: eq-null-z
# z = \frac{Q(\hat w) - \operatorname{mean}_j Q(u_j)}{\operatorname{sd}_j Q(u_j)} .
# ```
#
# A statistic that the probe shares with random directions ($|z| < 2$) describes how DPO moves activations,
# not toxicity.

# %%
glued("null_directions_n", null_directions)
random_units = random_directions(null_directions, lm.shape[2], seed=0)
null = null_shares(base_activations, dpo_activations, values_base, values_dpo, random_units)
orthogonal = null_shares(
    base_activations, dpo_activations, values_base, values_dpo, orthogonal_direction(direction, seed=1)[None, :]
)
summary = null_summary(delta_grouping, null)
summary["orthogonal direction"] = orthogonal.iloc[0][summary.index]
glued("share_tp_null_mean", float(summary.loc["share_tp", "null_mean"]))
for key in ["share_tp", "share_tn", "share_ap", "share_an"]:
    glued(f"{key}_z", float(summary.loc[key, "z"]))
glued("net_delta_z", float(summary.loc["net", "z"]))
glued("net_delta_percentile", float(summary.loc["net", "percentile"]))
glued("net_null_mean", float(summary.loc["net", "null_mean"]))
glued("net_null_sd", float(summary.loc["net", "null_sd"]))
share_z = summary.loc[["share_tp", "share_tn", "share_ap", "share_an"], "z"].abs()
glued("max_share_abs_z", float(share_z.max()))
summary["verdict"] = summary["z"].map(specificity)
glued(
    "shares_verdict",
    {
        "not specific": "are not specific to toxicity: random directions give the same split (every |z| < 2)",
        "marginal": "differ only marginally from random directions (largest |z| between 2 and 3, four shares tested)",
        "specific": "differ from random directions (some |z| ≥ 3)",
    }[specificity(share_z.max())],
)
glued(
    "net_verdict",
    {
        "not specific": "is not distinguishable from random directions",
        "marginal": "stands out only marginally from random directions",
        "specific": "is specific to the probe direction",
    }[specificity(summary.loc["net", "z"]) if summary.loc["net", "z"] > 0 else "not specific"],
)
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

# %% tags=["hide-input"] mystnb={"figure": {"caption": "Null control: each statistic over random unit directions (grey) and along the probe (red line, with its z-score against the random directions).", "name": "fig-null"}}
attribution_plots.null_distributions(null, summary, ["share_tp", "share_an", "net", "net_over_positive_total"])

# %% [markdown]
# **What holds on this model.** The paper's decomposition reproduces in form: the dampened toxic neurons (TP−)
# carry {glue:text}`share_tp:.1%` of the reduction and all four groups contribute. Against the null control, the
# group shares
# {glue:text}`shares_verdict`, and the net reduction along the probe {glue:text}`net_verdict`. A statistic that
# random directions share describes how DPO moves activations in general; only what stands out from them can
# carry the paper's story about toxicity.
#
# ## Provenance

# %% tags=["hide-input"]
glued("attribution_wall_minutes", record.wall_minutes)
record.table()
