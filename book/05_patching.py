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
# # 5. Patching and editing, on two models
#
# Chapter 4 asked whether switching off toxic neurons emulates DPO. The EMNLP version {cite}`yang2025dpo` asks
# the converse causal question: if DPO works through the four groups of neurons whose write along the probe
# fell (TP−, TN+, AP+, AN−), then clamping those neurons, in the *base* model, to their post-DPO mean
# activations should reproduce DPO's toxicity drop, and clamping only the most toxic neurons should not ("toxic
# neurons only account for 2.5 % to 24 % of DPO's effects"). It then proposes **activation editing**, a
# tuning-free imitation of DPO that shrinks toxic writes and grows anti-toxic ones, and reports that it
# "outperforms DPO in reducing toxicity while preserving perplexity".
#
# The paper makes these claims "across models", so this chapter runs everything on two architectures: the
# default SmolLM2-135M-Instruct (Llama) and Gemma 3 270M, a base model like the paper's. The second model gets
# its own probe and neuron statistics, computed here by the same library functions chapters 1 and 3 use, and a
# DPO model trained on the default model's preference pairs (the EMNLP version likewise trained Llama, Gemma
# and Mistral on GPT-2's pairs). Every intervention is a constant (or, where stated, a per-token scale) applied
# through nnsight at every position and once per metric, as in chapter 4.

# %% tags=["parameters"]
profile = "ci"
model = "smollm2-135m"
second_model = None  # None: the model registered as the default model's companion (Gemma 3 270M for SmolLM2)
toxic_neurons_patched = 256
toxic_neurons_projection = 128
null_directions = 100
edit_alphas = None  # None: the profile's sweep (the paper's alpha {0.01, 0.05} x beta {0.5, 0.55, 0.6} in `full`)
edit_betas = None
comparable_perplexity = 1.1

# %%
import warnings

import matplotlib.pyplot as plt
import pandas as pd
from myst_nb import glue
from tqdm import tqdm

from dpo_toxicity import data, plots
from dpo_toxicity.architectures import all_value_vectors
from dpo_toxicity.attribution import activation_change_correlations, group_shares, toxic_neuron_share
from dpo_toxicity.editing import EditSettings, edit_intervention, edit_selection, toxic_embedding_direction
from dpo_toxicity.evaluation import drop_table, evaluation_suite, paired_difference
from dpo_toxicity.models import model_spec
from dpo_toxicity.neurons import value_vector_cosines
from dpo_toxicity.null_control import null_shares, null_summary, random_directions
from dpo_toxicity.patching import ALL_GROUPS, PATCH_SETS, group_patch, toxic_neurons_patch
from dpo_toxicity.paths import cache_dir
from dpo_toxicity.profiles import profile as run_profile
from dpo_toxicity.provenance import RunRecord
from dpo_toxicity.run_artefacts import model_run
from dpo_toxicity.scoring import OfflineScorer

warnings.filterwarnings("ignore", category=FutureWarning)
settings = run_profile(profile)
second_model = second_model or model_spec(model).companion
edit_alphas = edit_alphas or settings.edit_alphas
edit_betas = edit_betas or settings.edit_betas
# The second model first: training its DPO model is the chapter's memory peak, best reached before the default
# model and its DPO model are loaded.
second_run = model_run(second_model, profile, pairs_model=model)
runs = {model: model_run(model, profile), second_model: second_run}
suffixes = {model: "", second_model: "_second"}  # glue keys: the default model's plain, the second's suffixed
record = RunRecord(
    "05_patching", settings, runs[model].lm, other_models=(runs[second_model].lm,),
    data_files=["rtp/challenge_prompts.jsonl", "wikitext2/wikitext2_raw_test_hf_rows.jsonl",
                "wikitext2/pytorch_examples_valid.txt"]
               + [f"jigsaw/{pool}.csv" for split in data.JIGSAW_POOLS.values() for pool in split],
)
suite = evaluation_suite(settings, OfflineScorer(), many_rows=True, cache=cache_dir("evaluations"))
glue("second_model_name", second_model, display=False)
glue("patching_eval_prompts", len(suite.toxicity_prompts), display=False)
glue("patch_sets_run", "every set" if settings.complete_tables else "the four groups together only", display=False)
glue("edit_grid", f"α ∈ {{{', '.join(map(str, edit_alphas))}}} × β ∈ {{{', '.join(map(str, edit_betas))}}}",
     display=False)
list(runs.values())

# %% [markdown]
# ## The two models side by side
#
# Chapter 1's probe, chapter 3's group shares with their random-direction null control, and chapter 3's
# projection-based toxic-neuron share, for both models. The null control recomputes the shares with the probe
# replaced by random unit directions: a share the probe does not change is a property of how DPO moves
# activations, not of toxicity.

# %%
def side_by_side(run) -> pd.Series:
    """The chapter 1 and 3 statistics of one model run, glued with the model's suffix."""
    shares = group_shares(run.table, "delta")
    null = null_shares(run.statistics.base, run.statistics.dpo, all_value_vectors(run.lm.model),
                       all_value_vectors(run.dpo_lm.model), random_directions(null_directions, run.lm.shape[2], seed=0))
    summary = null_summary(shares, null)
    share_z = summary.loc[["share_tp", "share_tn", "share_ap", "share_an"], "z"].abs()
    values = pd.Series({
        "mlp_neurons": len(run.table),
        "probe_test_accuracy": run.probe.info["test"]["accuracy"],
        "probe_test_auc": run.probe.info["test"]["auc"],
        "dpo_learning_rate": run.dpo.settings.learning_rate,
        "dpo_pairs": run.dpo.n_pairs,
        "dpo_kept_step": run.dpo.kept_step,
        "dpo_planned_steps": run.dpo.planned_steps,
        "share_tp": shares.shares["TP-"], "share_tn": shares.shares["TN+"],
        "share_ap": shares.shares["AP+"], "share_an": shares.shares["AN-"],
        "share_tp_null_mean": summary.loc["share_tp", "null_mean"],
        "max_share_abs_z": share_z.max(),
        "net_over_positive": shares.net / shares.positive_total,
        "net_delta_z": summary.loc["net", "z"],
        "toxic_share_projection": toxic_neuron_share(run.table, top=toxic_neurons_projection)["share"],
        "r_change_cosine": activation_change_correlations(run.table).iloc[0]["r"],
    }, dtype=float)
    for key, value in values.items():
        glue(f"{key}{suffixes[run.lm.name]}", float(value), display=False)
    return values


statistics = pd.DataFrame({name: side_by_side(run) for name, run in runs.items()})
statistics.style.format(precision=3)

# %% [markdown]
# Probe AUC: {glue:text}`probe_test_auc:.3f` (default) and {glue:text}`probe_test_auc_second:.3f`
# ({glue:text}`second_model_name`). The second model's DPO model trained on the first
# {glue:text}`dpo_pairs_second:.0f` of the default model's {glue:text}`dpo_pairs:.0f` preference pairs (the
# profile's `companion_pairs`: the `ci` profile takes a third of them to fit CI's time budget), at learning rate
# {glue:text}`dpo_learning_rate_second:.0e` (the default model's: {glue:text}`dpo_learning_rate:.0e`). The model
# registry gives the second model the EMNLP version's rate because a trial at the `ci` profile's default rate left
# it barely fluent; a profile with longer runs multiplies both models' rates by the same factor
# (`Profile.dpo_rate_factor`).
# Chapter 2's stopping rule kept step {glue:text}`dpo_kept_step_second:.0f` of
# {glue:text}`dpo_planned_steps_second:.0f` (the default model: {glue:text}`dpo_kept_step:.0f` of
# {glue:text}`dpo_planned_steps:.0f`).
# TP− carries {glue:text}`share_tp:.1%` and {glue:text}`share_tp_second:.1%` of
# the positive reduction; random directions give {glue:text}`share_tp_null_mean:.1%` and
# {glue:text}`share_tp_null_mean_second:.1%`, and the largest |z| of the four shares against that null is
# {glue:text}`max_share_abs_z:.1f` and {glue:text}`max_share_abs_z_second:.1f`. The net reduction along the
# probe stands at z = {glue:text}`net_delta_z:.1f` and {glue:text}`net_delta_z_second:.1f` against random
# directions. *Reference (v3, Δ > 0 grouping): TP− 26-34 % across Llama-3.1-8B, Gemma-2-2B and Mistral-7B, 32 %
# on GPT-2-medium; the paper has no null control.*
#
# ## Group activation patching
#
# Each set's neurons (grouped by `Δ > 0`, as in the v3 notebooks) are clamped to their post-DPO mean
# activations in the base model. The top-256 row clamps the 256 neurons most aligned with the probe, whatever
# their group: the repository's "toxic neurons" patch and reading (b) of the paper's undefined "2.5 % to 24 %"
# (`paper-protocol.md` §7.1). The last row repeats the all-groups patch at the last position of each forward
# call only, as the authors' hooks did: for perplexity that leaves all but one position of each window
# unpatched. Shares of DPO's drop are paired over the {glue:text}`patching_eval_prompts` prompts, with
# bootstrap intervals. Profiles with complete tables (`full`, `colab`) also patch each group alone and the
# partial sets TP− + AN− and TP− + AN− + TN+; this run's table holds {glue:text}`patch_sets_run`.

# %%
def patching_rows(run) -> list:
    rows = [("base", run.lm, None), ("DPO", run.dpo_lm, None)]
    patch_sets = PATCH_SETS if settings.complete_tables else (ALL_GROUPS,)
    rows += [(None, run.lm, group_patch(run.table, patch_set)) for patch_set in patch_sets]
    rows.append((None, run.lm, toxic_neurons_patch(run.table, top=toxic_neurons_patched)))
    rows.append((None, run.lm, group_patch(run.table, ALL_GROUPS, positions="last")))
    return rows


patching = {}
for name, run in runs.items():
    rows = patching_rows(run)
    evaluations = [suite.evaluate(row_model, label or intervention.name, intervention, progress=False)
                   for label, row_model, intervention in tqdm(rows, desc=f"{name}: patching rows")]
    table = drop_table(evaluations)
    table.insert(0, "neurons", [0 if intervention is None else len(intervention) for _, _, intervention in rows])
    patching[name] = (table, evaluations)
patching_table = pd.concat({name: table for name, (table, _) in patching.items()}, names=["model", "intervention"])
patching_table.style.format(precision=3, na_rep="")

# %%
all_groups = group_patch(runs[model].table, ALL_GROUPS).name
all_groups_last = group_patch(runs[model].table, ALL_GROUPS, positions="last").name
top_toxic = toxic_neurons_patch(runs[model].table, top=toxic_neurons_patched).name
share_column = "share of DPO's drop"
for name, (table, evaluations) in patching.items():
    suffix = suffixes[name]
    by_name = {evaluation.name: evaluation for evaluation in evaluations}
    drop, drop_low, _ = paired_difference(by_name["base"].toxicity, by_name["DPO"].toxicity)
    low, high = (float(bound) for bound in table.loc[all_groups, "share 95% CI"].strip("[]").split(", "))
    glue(f"tox_base_eval{suffix}", float(table.loc["base", "toxicity"]), display=False)
    glue(f"tox_dpo_eval{suffix}", float(table.loc["DPO", "toxicity"]), display=False)
    glue(f"ppl_base_eval{suffix}", float(table.loc["base", "PPL"]), display=False)
    glue(f"f1_base_eval{suffix}", float(table.loc["base", "F1"]), display=False)
    glue(f"ppl_dpo_eval{suffix}", float(table.loc["DPO", "PPL"]), display=False)
    glue(f"dpo_drop_low{suffix}", drop_low, display=False)
    glue(f"tox_patch_all_groups{suffix}", float(table.loc[all_groups, "toxicity"]), display=False)
    glue(f"ppl_patch_all_groups{suffix}", float(table.loc[all_groups, "PPL"]), display=False)
    glue(f"share_patch_all_groups{suffix}", float(table.loc[all_groups, share_column]), display=False)
    glue(f"share_patch_all_groups_low{suffix}", low, display=False)
    glue(f"share_patch_all_groups_high{suffix}", high, display=False)
    glue(f"tox_patch_all_groups_last{suffix}", float(table.loc[all_groups_last, "toxicity"]), display=False)
    glue(f"ppl_patch_all_groups_last{suffix}", float(table.loc[all_groups_last, "PPL"]), display=False)
    glue(f"f1_patch_all_groups_last{suffix}", float(table.loc[all_groups_last, "F1"]), display=False)
    glue(f"toxic_share_patching{suffix}", float(table.loc[top_toxic, share_column]), display=False)
    ppl_ratio = table.loc[all_groups, "PPL"] / table.loc["DPO", "PPL"]
    if drop_low <= 0:
        verdict = "cannot be judged: DPO's own drop is not distinguishable from zero on these prompts"
    elif not (low <= 1 <= high or table.loc[all_groups, share_column] >= 0.8):
        verdict = "does not recover DPO's drop (its interval excludes 100 % and its share is under 80 %)"
    elif ppl_ratio > 1.5:
        verdict = (f"matches DPO's drop only while breaking the model (perplexity {ppl_ratio:.3g} times DPO's): "
                   "a model that no longer writes fluent text is not toxic either")
    else:
        verdict = "recovers DPO's drop at a perplexity close to DPO's"
    glue(f"patch_all_verdict{suffix}", verdict, display=False)

bars = {}
for name, (table, _) in patching.items():
    intervals = table["share 95% CI"].str.strip("[]").str.split(", ", expand=True).astype(float)
    bars[name] = table[share_column]
    bars[f"{name} low"], bars[f"{name} high"] = intervals[0], intervals[1]
fig = plots.shares_of_drop(pd.DataFrame(bars).iloc[2:])
glue("fig_patching_shares", fig, display=False)
plt.close(fig)

# %% [markdown]
# On the default model, patching all four groups gives toxicity {glue:text}`tox_patch_all_groups:.3f` against
# DPO's {glue:text}`tox_dpo_eval:.3f` (base {glue:text}`tox_base_eval:.3f`): a share of
# {glue:text}`share_patch_all_groups:.0%` of DPO's drop (95 % interval {glue:text}`share_patch_all_groups_low:.0%`
# to {glue:text}`share_patch_all_groups_high:.0%`), so the patch {glue:text}`patch_all_verdict`. On
# {glue:text}`second_model_name` the share is {glue:text}`share_patch_all_groups_second:.0%`
# ({glue:text}`share_patch_all_groups_low_second:.0%` to {glue:text}`share_patch_all_groups_high_second:.0%`):
# the patch {glue:text}`patch_all_verdict_second`. *Reference (v3 abstract): patching the four groups together
# "replicates" DPO's reduction on every model; the per-model numbers are not published.*
#
# Clamping the 256 neurons most aligned with the probe recovers
# {glue:text}`toxic_share_patching:.0%` (default) and {glue:text}`toxic_share_patching_second:.0%`
# ({glue:text}`second_model_name`) of DPO's drop: reading (b) of the toxic-neuron share. Reading (a), the
# projection-based share of the 128 most toxic dampened neurons in the side-by-side table, is
# {glue:text}`toxic_share_projection:.1%` and {glue:text}`toxic_share_projection_second:.1%`. *Reference (v3):
# "2.5 % to 24 %" across models; (a) on GPT-2 gives 4.9 %.*
#
# The all-groups patch applied as the authors' hooks applied it (last position of each forward call) gives
# perplexity {glue:text}`ppl_patch_all_groups_last:.2f` against {glue:text}`ppl_patch_all_groups:.2f` when every
# position is patched (base {glue:text}`ppl_base_eval:.2f`): the authors' perplexity for a patch is the
# unpatched model's by construction. F1, whose greedy continuations are patched at every generated token, tells
# the other story: {glue:text}`f1_patch_all_groups_last:.3f` against the base model's
# {glue:text}`f1_base_eval:.3f`.
#
# ```{glue:figure} fig_patching_shares
# :name: fig-patching-shares
#
# Share of DPO's toxicity drop achieved by clamping each set of neurons in the base model to its post-DPO mean
# activations, for both models (bars: 95 % bootstrap intervals over prompts; dashed line: DPO's own drop).
# ```
#
# ## Activation editing
#
# The editing method (`dpo_toxicity.editing`; `paper-protocol.md` §6) uses no DPO information: it selects a
# fraction β of each sign group by |cosine| with a toxicity representation (the probe, or the toxic
# token-embedding direction `mean E[toxic words] − mean E[clean words]`) and sets TP/AN neurons to (1 − α) and
# AP/TN neurons to (1 + α) times their pre-DPO mean activation. The sweep runs the authors' constant
# assignment (`clamp`) at every position, on toxicity and perplexity, over {glue:text}`edit_grid` for each
# representation (the paper's grid is α ∈ {0.01, 0.05} × β ∈ {0.5, 0.55, 0.6}: the `full` profile runs all of
# it, the `ci` profile its largest α at its first β). The best edit is the least toxic one
# whose perplexity is at most `comparable_perplexity` times DPO's (or, if none is, the one with the lowest
# perplexity); it is then also run with the authors' last-position hooks and as a per-token scale.

# %%
def edits(run) -> list[tuple[EditSettings, object]]:
    representations = {
        "probe": run.table["cosine"].to_numpy(),
        "toxic embedding": value_vector_cosines(run.lm, toxic_embedding_direction(run.lm)).flatten().numpy(),
    }
    sweep = []
    for representation, cosine in representations.items():
        for beta in edit_betas:
            selection = edit_selection(run.table, cosine, beta)
            for alpha in edit_alphas:
                settings_ = EditSettings(alpha=alpha, beta=beta, representation=representation)
                sweep.append((settings_, selection))
    return sweep


editing = {}
for name, run in runs.items():
    base, dpo = patching[name][1][:2]
    sweep = edits(run)
    evaluations = [suite.evaluate(run.lm, settings_.label, edit_intervention(selection, settings_), progress=False,
                                  f1=False)
                   for settings_, selection in tqdm(sweep, desc=f"{name}: edits")]
    table = drop_table([base, dpo] + evaluations)
    edited = table.iloc[2:]
    comparable = edited[edited["PPL"] <= comparable_perplexity * table.loc["DPO", "PPL"]]
    best_label = comparable["toxicity"].idxmin() if len(comparable) else edited["PPL"].idxmin()
    best_settings, best_selection = next((s, sel) for s, sel in sweep if s.label == best_label)
    scaled = EditSettings(best_settings.alpha, best_settings.beta, best_settings.representation, mode="scale")
    extra = [  # with F1: a perplexity measured at one position per window says nothing about fluency
        suite.evaluate(run.lm, f"{best_label}, last position only", edit_intervention(best_selection, best_settings,
                       positions="last"), progress=False),
        suite.evaluate(run.lm, scaled.label, edit_intervention(best_selection, scaled), progress=False),
    ]
    table = drop_table([base, dpo] + evaluations + extra)
    table.insert(0, "neurons", [0, 0] + [len(selection) for _, selection in sweep] + [len(best_selection)] * 2)
    editing[name] = (table, best_label, bool(len(comparable)))
editing_table = pd.concat({name: table for name, (table, _, _) in editing.items()}, names=["model", "intervention"])
editing_table.style.format(precision=3, na_rep="")

# %%
points = []
for name, (table, best_label, has_comparable) in editing.items():
    suffix = suffixes[name]
    best = table.loc[best_label]
    beats = has_comparable and best["toxicity"] < table.loc["DPO", "toxicity"]
    glue(f"edit_best_label{suffix}", best_label, display=False)
    glue(f"tox_edit_best{suffix}", float(best["toxicity"]), display=False)
    glue(f"ppl_edit_best{suffix}", float(best["PPL"]), display=False)
    glue(f"tox_edit_best_last{suffix}", float(table.loc[f"{best_label}, last position only", "toxicity"]),
         display=False)
    glue(f"ppl_edit_best_last{suffix}", float(table.loc[f"{best_label}, last position only", "PPL"]), display=False)
    glue(f"f1_edit_best_last{suffix}", float(table.loc[f"{best_label}, last position only", "F1"]), display=False)
    glue(f"edit_verdict{suffix}", (
        "beats DPO: less toxic at comparable perplexity" if beats else
        "does not beat DPO at comparable perplexity" if has_comparable else
        "does not reach DPO's perplexity in any setting, so it cannot beat DPO at comparable perplexity"
    ), display=False)
    kinds = ["base", "DPO"] + ["edit (clamp, every position)"] * (len(table) - 4) + [
        "best edit, last position only (authors' hooks)", "best edit, per-token scale"]
    points.append(table[["toxicity", "PPL"]].assign(model=name, kind=kinds))
fig = plots.toxicity_perplexity_tradeoff(pd.concat(points))
glue("fig_editing_tradeoff", fig, display=False)
plt.close(fig)

# %% [markdown]
# On the default model the best edit, *{glue:text}`edit_best_label`*, reaches toxicity
# {glue:text}`tox_edit_best:.3f` at perplexity {glue:text}`ppl_edit_best:.2f`, against DPO's
# {glue:text}`tox_dpo_eval:.3f` at {glue:text}`ppl_dpo_eval:.2f`: editing {glue:text}`edit_verdict`. On
# {glue:text}`second_model_name` the best edit, *{glue:text}`edit_best_label_second`*, reaches
# {glue:text}`tox_edit_best_second:.3f` at perplexity {glue:text}`ppl_edit_best_second:.2f`, against DPO's
# {glue:text}`tox_dpo_eval_second:.3f` at {glue:text}`ppl_dpo_eval_second:.2f`: editing
# {glue:text}`edit_verdict_second`. *Reference (v3 abstract): editing "outperforms DPO in reducing toxicity
# while preserving perplexity"; its numbers are not published.*
#
# Applied as the authors' hooks applied it, the same edit gives toxicity {glue:text}`tox_edit_best_last:.3f`
# and perplexity {glue:text}`ppl_edit_best_last:.2f` on the default model, with F1
# {glue:text}`f1_edit_best_last:.3f` against the base model's {glue:text}`f1_base_eval:.3f`: with the edit at
# only one position per perplexity window, the perplexity the paper reports for an edit says little about
# what the edit does to the model.
#
# ```{glue:figure} fig_editing_tradeoff
# :name: fig-editing-tradeoff
#
# Toxicity against perplexity for the base model, DPO, every activation edit of the sweep (constant
# assignment at every position) and the best edit applied with the authors' last-position hooks or as a
# per-token scale, for both models.
# ```
#
# ## Provenance

# %%
glue("patching_wall_minutes", record.wall_minutes, display=False)
record.table()
