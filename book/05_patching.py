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
# The paper makes these claims "across models", so the profiles that answer it (`full`, `colab`) run everything
# on two architectures: the default SmolLM2-135M-Instruct (Llama) and Gemma 3 270M, a base model like the paper's.
# {glue:md}`second_model_note` The second model gets
# its own probe and neuron statistics, computed here by the same library functions chapters 1 and 3 use, and a
# DPO model trained on the default model's preference pairs (the EMNLP version likewise trained Llama, Gemma
# and Mistral on GPT-2's pairs). The paper's interventions are constants (or, where stated, a per-token scale)
# applied through nnsight at every position and once per metric, as in chapter 4. Beside them, the chapter
# measures mediation as the interpretability literature does: the DPO model's own activations patched into the
# base model token by token, and the reverse, read on a continuous metric and against random neuron sets.

# %% tags=["parameters"]
profile = "ci"
model = "smollm2-135m"
second_model = None  # None: the profile's (the default model's companion, Gemma 3 270M, in full and colab); "": none
toxic_neurons_patched = 256
toxic_neurons_projection = 128
null_directions = 100
edit_alphas = None  # None: the profile's sweep (the paper's alpha {0.01, 0.05} x beta {0.5, 0.55, 0.6} in `full`)
edit_betas = None
comparable_perplexity = 1.1

# %% tags=["hide-input"]
import warnings

import numpy as np
import pandas as pd
from IPython.display import Markdown
from tqdm import tqdm

from dpo_toxicity import data, plots
from dpo_toxicity.architectures import all_value_vectors
from dpo_toxicity.attribution import (
    activation_change_correlations,
    activation_falls,
    group_shares,
    layer_cancellation,
    magnitude_shrink_shares,
    parameter_cosines,
    top_ranked_group_shares,
    toxic_neuron_share,
)
from dpo_toxicity.book.glued import Glued
from dpo_toxicity.book.ledger import chapter_verdict
from dpo_toxicity.book.provenance import RunRecord
from dpo_toxicity.dpo import heldout_pairs
from dpo_toxicity.editing import EditSettings, edit_intervention, edit_selection, toxic_embedding_direction
from dpo_toxicity.evaluation import drop_table, evaluation_suite, paired_difference, share_of_drop
from dpo_toxicity.mediation import (
    behaviour_items,
    margins,
    mediation_table,
    patched_perplexity,
    patching_margins,
    preference_items,
    recovered_fraction,
    with_random_sets,
)
from dpo_toxicity.models import model_spec
from dpo_toxicity.neurons import value_vector_cosines
from dpo_toxicity.null_control import null_shares, null_summary, random_directions
from dpo_toxicity.patching import (
    ALL_GROUPS,
    NULL_CONTROLLED,
    PATCH_SETS,
    group_patch,
    mediation_sets,
    toxic_neurons_patch,
)
from dpo_toxicity.paths import cache_dir
from dpo_toxicity.profiles import profile_named
from dpo_toxicity.run_artefacts import mediation_prompts, model_run
from dpo_toxicity.scoring import OFFLINE_COMPONENTS, OfflineScorer
from dpo_toxicity.verdicts import GENERATION

glued = Glued()  # every value the prose cites, kept for the ledger's verdicts
DOCUMENT = "book/05_patching"

warnings.filterwarnings("ignore", category=FutureWarning)
settings = profile_named(profile)
if second_model is None:
    second_model = model_spec(model).companion if settings.second_model else ""
edit_alphas = edit_alphas or settings.edit_alphas
edit_betas = edit_betas or settings.edit_betas
# The second model first: training its DPO model is the chapter's memory peak, best reached before the default
# model and its DPO model are loaded.
second_runs = {second_model: model_run(second_model, profile, pairs_model=model)} if second_model else {}
runs = {model: model_run(model, profile)} | second_runs
settings = settings.sized_for(*(run.lm for run in runs.values()))  # on a GPU, batches sized to its free memory
suffixes = {model: "", second_model: "_second"}  # glue keys: the default model's plain, the second's suffixed
record = RunRecord(
    "05_patching",
    settings,
    runs[model].lm,
    other_models=tuple(run.lm for run in second_runs.values()),
    data_files=[
        "rtp/challenge_prompts.jsonl",
        "wikitext2/wikitext2_raw_test_hf_rows.jsonl",
        "wikitext2/pytorch_examples_valid.txt",
    ]
    + [f"jigsaw/{pool}.csv" for split in data.JIGSAW_POOLS.values() for pool in split],
)
suite = evaluation_suite(settings, OfflineScorer(), many_rows=True, cache=cache_dir("evaluations"))
if second_model:
    glued("second_model_name", second_model)
glued(
    "second_model_note",
    Markdown(
        ""
        if second_model
        else f"This run's profile (`{profile}`, sized for CI's time) runs the default model only; naming a model in "
        "the `second_model` parameter adds it."
    ),
)


def on_second_model(key: str, template: str) -> None:
    """Glue as Markdown under ``key`` the sentences of ``template`` about the second model, filled with the values
    glued for it (``{share_tp}`` for ``share_tp_second``; ``{first[share_tp]}`` the default model's; ``{name}``),
    or nothing where this run has no second model."""
    if not second_model:
        glued(key, Markdown(""))
        return
    values = {key.removesuffix("_second"): value for key, value in glued.values.items() if key.endswith("_second")}
    escaped = {key: _markdown_escaped(value) for key, value in values.items()}
    glued(key, Markdown(template.format(name=second_model, first=glued.values, **escaped)))


def _markdown_escaped(value):
    """A glued text shown as it reads (a verdict's reason may hold `*` or `_`); numbers as they are."""
    if not isinstance(value, str):
        return value
    return "".join(f"\\{character}" if character in "\\`*_[]<>" else character for character in value)


glued("patching_eval_prompts", len(suite.toxicity_prompts))


def complete(name: str) -> bool:
    """Whether model ``name`` gets the rows that refine a claim rather than test it (the constant patch of each group
    alone and of the partial sets, noising and patched perplexity beyond the four groups, every row on one scale):
    in profiles with complete tables, the default model; a second model gets the rows the claims read."""
    return settings.complete_tables and name == model


glued("patch_sets_run", "every set" if complete(model) else "the four groups together only")
glued("edit_grid", f"α ∈ {{{', '.join(map(str, edit_alphas))}}} × β ∈ {{{', '.join(map(str, edit_betas))}}}")
list(runs.values())

# %% [markdown]
# ## The two models side by side
#
# Chapter 1's probe, chapter 3's group shares with their random-direction null control, and chapter 3's
# projection-based toxic-neuron share, for each model of the run. The null control recomputes the shares with the probe
# replaced by random unit directions: a share the probe does not change is a property of how DPO moves
# activations, not of toxicity.


# %% tags=["hide-input"]
def side_by_side(run) -> pd.Series:
    """The chapter 1 and 3 statistics of one model run, glued with the model's suffix."""
    shares = group_shares(run.table, "delta")
    null = null_shares(
        run.statistics.base,
        run.statistics.dpo,
        all_value_vectors(run.lm.model),
        all_value_vectors(run.dpo_lm.model),
        random_directions(null_directions, run.lm.shape[2], seed=0),
    )
    summary = null_summary(shares, null)
    top_ranked = top_ranked_group_shares(run.table, top=100)
    falls = activation_falls(run.table, top=100)
    shrinking = magnitude_shrink_shares(run.table)
    share_z = summary.loc[["share_tp", "share_tn", "share_ap", "share_an"], "z"].abs()
    values = pd.Series(
        {
            "mlp_neurons": len(run.table),
            "probe_test_accuracy": run.probe.info["test"]["accuracy"],
            "probe_test_auc": run.probe.info["test"]["auc"],
            "dpo_learning_rate": run.dpo.settings.learning_rate,
            "dpo_pairs": run.dpo.n_pairs,
            "dpo_kept_step": run.dpo.kept_step,
            "dpo_planned_steps": run.dpo.planned_steps,
            "share_tp": shares.shares["TP-"],
            "share_tn": shares.shares["TN+"],
            "share_ap": shares.shares["AP+"],
            "share_an": shares.shares["AN-"],
            "share_tp_null_mean": summary.loc["share_tp", "null_mean"],
            "max_share_abs_z": share_z.max(),
            "net_over_positive": shares.net / shares.positive_total,
            "net_delta_z": summary.loc["net", "z"],
            "toxic_share_projection": toxic_neuron_share(run.table, top=toxic_neurons_projection)["share"],
            "r_change_cosine": activation_change_correlations(run.table).iloc[0]["r"],
            "share_tp_z": summary.loc["share_tp", "z"],
            "share_tn_z": summary.loc["share_tn", "z"],
            "share_ap_z": summary.loc["share_ap", "z"],
            "share_an_z": summary.loc["share_an", "z"],
            "top_ranked_share_tp": top_ranked["TP-"],
            "top_ranked_share_max_other": top_ranked.drop("TP-").max(),
            "share_reducing_neurons": (run.table["delta"] > 0).mean(),
            "layer_net_over_positive": layer_cancellation(run.table),
            "top100_activation_fall_share": falls["share"],
            "top100_activation_fall_z": falls["z"],
            "activation_fall_share_all": falls["share_all"],
            "shrink_share_tp": shrinking["TP-"],
            "shrink_share_tn": shrinking["TN+"],
            "shrink_share_ap": shrinking["AP+"],
            "shrink_share_an": shrinking["AN-"],
            "weight_cosine_min": parameter_cosines(run.lm.model, run.dpo_lm.model).min(),
            # Probes cached before the natural-balance accuracy existed lack it: NaN, which the ledger reads as missing.
            "probe_accuracy_natural": run.probe.info["test"].get("natural_accuracy", float("nan")),
        },
        dtype=float,
    )
    for key, value in values.items():
        glued(f"{key}{suffixes[run.lm.name]}", float(value))
    return values


statistics = pd.DataFrame({name: side_by_side(run) for name, run in runs.items()})
on_second_model(
    "second_model_side_by_side",
    "On {name} the probe's AUC is {probe_test_auc:.3f}. Its DPO model trained on the first {dpo_pairs:.0f} of the "
    "default model's {first[dpo_pairs]:.0f} preference pairs (the profile's `companion_pairs`) at learning rate "
    "{dpo_learning_rate:.0e} (the default model's: {first[dpo_learning_rate]:.0e}): the model registry gives it the "
    "EMNLP version's rate because a trial at the default model's left it barely fluent, and a profile with longer "
    "runs multiplies both rates by the same factor (`Profile.dpo_rate_factor`). The stopping rule kept step "
    "{dpo_kept_step:.0f} of {dpo_planned_steps:.0f}. TP− carries {share_tp:.1%} of the positive reduction (random "
    "directions {share_tp_null_mean:.1%}), the largest |z| of the four shares is {max_share_abs_z:.1f}, and the net "
    "reduction stands at z = {net_delta_z:.1f}.",
)
statistics.style.format(precision=3)

# %% [markdown]
# On the default model the probe's AUC is {glue:text}`probe_test_auc:.3f`, and chapter 2's stopping rule kept DPO's
# step {glue:text}`dpo_kept_step:.0f` of {glue:text}`dpo_planned_steps:.0f`. TP− carries
# {glue:text}`share_tp:.1%` of the positive reduction; random directions give
# {glue:text}`share_tp_null_mean:.1%`, and the largest |z| of the four shares against that null is
# {glue:text}`max_share_abs_z:.1f`. The net reduction along the probe stands at z = {glue:text}`net_delta_z:.1f`
# against random directions. {glue:md}`second_model_side_by_side` *Reference (v3, Δ > 0 grouping): TP− 26-34 % across Llama-3.1-8B, Gemma-2-2B and Mistral-7B, 32 %
# on GPT-2-medium; the paper has no null control.*
#
# ## Group activation patching
#
# Each set's neurons (the groups of {eq}`eq-groups`, by $\Delta_i > 0$ as in the v3 notebooks) are clamped to
# their post-DPO mean activations in the base model ({eq}`eq-clamp` with $a_i = \bar m_i^{\text{DPO}}$). The top-256 row clamps the 256 neurons most aligned with the probe, whatever
# their group: the repository's "toxic neurons" patch and reading (b) of the paper's undefined "2.5 % to 24 %"
# (item 1 of {doc}`/errata`). The last row repeats the all-groups patch at the last position of each forward
# call only, as the authors' hooks did: for perplexity that leaves all but one position of each window
# unpatched. Shares of DPO's drop are paired over the {glue:text}`patching_eval_prompts` prompts, with
# bootstrap intervals. Profiles with complete tables (`full`, `colab`) also patch each group alone and the
# partial sets TP− + AN− and TP− + AN− + TN+ on the default model, whose table in this run holds
# {glue:text}`patch_sets_run`; a second model repeats the rows the claims read.


# %%
def patching_rows(name: str, run) -> list:
    rows = [("base", run.lm, None), ("DPO", run.dpo_lm, None)]
    patch_sets = PATCH_SETS if complete(name) else (ALL_GROUPS,)
    rows += [(None, run.lm, group_patch(run.table, patch_set)) for patch_set in patch_sets]
    rows.append((None, run.lm, toxic_neurons_patch(run.table, top=toxic_neurons_patched)))
    rows.append((None, run.lm, group_patch(run.table, ALL_GROUPS, positions="last")))
    return rows


patching, interventions = {}, {}  # interventions[model]: (label, intervention) of every base-model row, for later
for name, run in runs.items():
    rows = patching_rows(name, run)
    evaluations = [
        suite.evaluate(row_model, label or intervention.name, intervention, progress=False)
        for label, row_model, intervention in tqdm(rows, desc=f"{name}: patching rows")
    ]
    table = drop_table(evaluations)
    table.insert(0, "neurons", [0 if intervention is None else len(intervention) for _, _, intervention in rows])
    patching[name] = (table, evaluations)
    interventions[name] = [(intervention.name, intervention) for _, _, intervention in rows if intervention]
patching_table = pd.concat({name: table for name, (table, _) in patching.items()}, names=["model", "intervention"])
patching_table.style.format(precision=3, na_rep="")

# %% tags=["hide-input"]
all_groups = group_patch(runs[model].table, ALL_GROUPS).name
all_groups_last = group_patch(runs[model].table, ALL_GROUPS, positions="last").name
top_toxic = toxic_neurons_patch(runs[model].table, top=toxic_neurons_patched).name
share_column = "share of DPO's drop"


def patching_statistics(toxicity: dict[str, np.ndarray]) -> dict[str, float]:
    """The patching table's toxicity statistics the ledger reads, from one scoring of every row's continuations."""

    def share(row: str) -> tuple[float, float, float]:
        return share_of_drop(toxicity["base"], toxicity[row], toxicity["DPO"])

    return {
        "tox_base_eval": float(toxicity["base"].mean()),
        "tox_dpo_eval": float(toxicity["DPO"].mean()),
        "dpo_drop_low": paired_difference(toxicity["base"], toxicity["DPO"])[1],
        "tox_patch_all_groups": float(toxicity[all_groups].mean()),
        "tox_patch_all_groups_last": float(toxicity[all_groups_last].mean()),
        **dict(
            zip(
                ("share_patch_all_groups", "share_patch_all_groups_low", "share_patch_all_groups_high"),
                share(all_groups),
            )
        ),
        **dict(
            zip(("toxic_share_patching", "toxic_share_patching_low", "toxic_share_patching_high"), share(top_toxic))
        ),
    }


for name, (table, evaluations) in patching.items():
    suffix = suffixes[name]
    toxicity_values = patching_statistics({evaluation.name: evaluation.toxicity for evaluation in evaluations})
    for key, value in toxicity_values.items():
        glued(f"{key}{suffix}", value)
    # The same with each of the offline scorer's two components alone (chapter 2): the ledger's sensitivity.
    components = {
        evaluation.name: suite.scorer.component_scores(evaluation.continuations) for evaluation in evaluations
    }
    for index, component in enumerate(OFFLINE_COMPONENTS):
        rescored = patching_statistics({row: scores[index] for row, scores in components.items()})
        for key, value in rescored.items():
            glued(f"{key}{suffix}__{component}", value)
    glued(f"ppl_base_eval{suffix}", float(table.loc["base", "PPL"]))
    glued(f"f1_base_eval{suffix}", float(table.loc["base", "F1"]))
    glued(f"ppl_dpo_eval{suffix}", float(table.loc["DPO", "PPL"]))
    glued(f"f1_dpo_eval{suffix}", float(table.loc["DPO", "F1"]))
    glued(f"ppl_patch_all_groups{suffix}", float(table.loc[all_groups, "PPL"]))
    glued(f"ppl_patch_all_groups_last{suffix}", float(table.loc[all_groups_last, "PPL"]))
    glued(f"f1_patch_all_groups_last{suffix}", float(table.loc[all_groups_last, "F1"]))
    glued(f"ppl_patch_toxic256{suffix}", float(table.loc[top_toxic, "PPL"]))
    verdict = chapter_verdict("group-patching", DOCUMENT, glued.values, GENERATION, second=bool(suffix))
    verdict = f"{verdict.label} ({verdict.reason})"
    glued(f"patch_all_verdict{suffix}", verdict)
on_second_model(
    "second_model_patching",
    "On {name} the share is {share_patch_all_groups:.0%} ({share_patch_all_groups_low:.0%} to "
    "{share_patch_all_groups_high:.0%}): *{patch_all_verdict}*.",
)
on_second_model(
    "second_model_toxic_share",
    "On {name} the two readings give {toxic_share_patching:.0%} and {toxic_share_projection:.1%}.",
)

bars = {}
for name, (table, _) in patching.items():
    bars[name] = table[share_column]
    bars[f"{name} low"], bars[f"{name} high"] = table["share low"], table["share high"]

# %% [markdown]
# On the default model, patching all four groups gives toxicity {glue:text}`tox_patch_all_groups:.3f` against
# DPO's {glue:text}`tox_dpo_eval:.3f` (base {glue:text}`tox_base_eval:.3f`): a share of
# {glue:text}`share_patch_all_groups:.0%` of DPO's drop (95 % interval {glue:text}`share_patch_all_groups_low:.0%`
# to {glue:text}`share_patch_all_groups_high:.0%`). On generated toxicity the ledger's rule for the claim that
# this patch reproduces DPO finds: *{glue:text}`patch_all_verdict`*. {glue:md}`second_model_patching` *Reference
# (v3 abstract): patching the four groups together "replicates" DPO's reduction on every model; the per-model
# numbers are not published.*
#
# Clamping the 256 neurons most aligned with the probe recovers {glue:text}`toxic_share_patching:.0%` of DPO's
# drop on the default model: reading (b) of the toxic-neuron share. Reading (a), the projection-based share of the
# 128 most toxic dampened neurons in the side-by-side table, is {glue:text}`toxic_share_projection:.1%`.
# {glue:md}`second_model_toxic_share` *Reference (v3):
# "2.5 % to 24 %" across models; (a) on GPT-2 gives 4.9 %.*
#
# The all-groups patch applied as the authors' hooks applied it (last position of each forward call) gives
# perplexity {glue:text}`ppl_patch_all_groups_last:.2f` against {glue:text}`ppl_patch_all_groups:.2f` when every
# position is patched (base {glue:text}`ppl_base_eval:.2f`): the authors' perplexity for a patch is the
# unpatched model's by construction. F1, whose greedy continuations are patched at every generated token, tells
# the other story: {glue:text}`f1_patch_all_groups_last:.3f` against the base model's
# {glue:text}`f1_base_eval:.3f`.

# %% tags=["hide-input"] mystnb={"figure": {"caption": "Share of DPO's toxicity drop achieved by clamping each set of neurons in the base model to its post-DPO mean activations, for each model of the run (bars: 95 % bootstrap intervals over prompts; dashed line: DPO's own drop).", "name": "fig-patching-shares"}}
plots.shares_of_drop(pd.DataFrame(bars).iloc[2:])

# %% [markdown]
# ## Mediation: DPO's own activations, token by token
#
# Clamping a neuron to a constant at every position is not what DPO does: DPO changes each activation token by
# token, and a constant that replaces half the model's neurons can break it, which the perplexity column above
# shows. The interpretability literature patches *real* activations from one run into another
# {cite}`heimersheim2024patching,zhang2024patching`, in both directions, and reads a continuous metric that is
# roughly linear in the logits. This section does that.
#
# **The metric.** An item is a prompt $x$ with a preferred continuation $y^+$ and a dispreferred one $y^-$. A
# model's margin on it is
#
# ```{math}
# :label: eq-margin
# \mu(x) = \log p(y^+ \mid x) - \log p(y^- \mid x),
# ```
#
# each log-probability summed over the continuation's tokens in one teacher-forced pass, and its score $S$ is the
# mean margin over items. *Behaviour items* take {glue:text}`mediation_prompts_n` challenge prompts that the
# neuron statistics never saw, with $y^+$ the DPO model's greedy continuation and $y^-$ the base model's (kept
# where they differ: {glue:text}`mediation_items` on the default model); *preference items* are the
# {glue:text}`mediation_pref_items` held-out preference pairs of chapter 2 that DPO never trained on. An
# intervention's **recovered fraction** is
#
# ```{math}
# :label: eq-recovered-fraction
# f = \frac{S_{\text{intervention}} - S_{\text{base}}}{S_{\text{DPO}} - S_{\text{base}}},
# ```
#
# 0 for the base model and 1 for the DPO model, with a paired bootstrap interval over items.
#
# **Both directions.** *Denoising* runs the base model with a set $\mathcal{N}$'s activations replaced, at every
# position $t$, by the DPO model's activations on the same tokens:
#
# ```{math}
# :label: eq-denoising
# m_i^{\text{base}}(x_t) \leftarrow m_i^{\text{DPO}}(x_t) \quad \text{for } i \in \mathcal{N} \text{ and every } t.
# ```
#
# Is the set *sufficient* to carry DPO's shift? *Noising* runs the DPO model with the set's activations taken
# from the base model's run,
#
# ```{math}
# :label: eq-noising
# m_i^{\text{DPO}}(x_t) \leftarrow m_i^{\text{base}}(x_t) \quad \text{for } i \in \mathcal{N} \text{ and every } t:
# ```
#
# how much of the shift is lost without it, is the set *necessary*? For noising, $f$ is the fraction lost,
#
# ```{math}
# :label: eq-noising-fraction
# f_{\text{noise}} = \frac{S_{\text{DPO}} - S_{\text{noised}}}{S_{\text{DPO}} - S_{\text{base}}}.
# ```
#
# Unlike the constant of {eq}`eq-clamp`, a patched activation here varies from token to token, as DPO's own
# does. A set's fraction means something only beside what random sets of its size recover, so the four groups
# and the top 256 toxic neurons, the sets whose claims rest on that comparison, are compared with
# {glue:text}`mediation_random_draws` random sets each, with the same number of neurons in every layer. Random
# sets are patched by denoising only. The four groups, TP− and the top 256 are patched in every profile; each
# other group alone, the partial sets, the top 128 and the dampened toxic neurons in profiles with complete
# tables, which on the default model also noise every set and read its patched perplexity (otherwise only the four
# groups', the set whose claims read them).

# %%
mediation = {}
for name, run in runs.items():
    behaviour = behaviour_items(
        run.lm, run.dpo_lm, mediation_prompts(settings), settings.generation_batch_size, cache=cache_dir("mediation")
    )
    preference = preference_items(run.lm, heldout_pairs(run.pairs_model, profile))
    named = mediation_sets(run.table, settings.complete_tables)
    controlled = {set_name: named[set_name] for set_name in NULL_CONTROLLED}
    sets = named | with_random_sets(controlled, run.lm.shape[1], settings.mediation_random_draws)
    # Of noising and of a patch's perplexity the claims read the four groups'; profiles with complete tables also
    # run the other sets both ways.
    both_ways = named if complete(name) else {ALL_GROUPS.name: named[ALL_GROUPS.name]}
    result = patching_margins(
        run.lm,
        run.dpo_lm,
        behaviour + preference,
        sets,
        settings.batch_size,
        progress=f"{name}: token-wise patching",
        cache=cache_dir("mediation"),
        noised=both_ways,
    )
    sizes = {set_name: len(neurons) for set_name, neurons in named.items()}
    tables = {
        "behaviour": mediation_table(result, sizes, slice(0, len(behaviour))),
        "preference": mediation_table(result, sizes, slice(len(behaviour), None)),
    }
    perplexities = patched_perplexity(
        run.lm, run.dpo_lm, suite.perplexity_text, both_ways, max_windows=settings.table_perplexity_windows
    )
    mediation[name] = (behaviour, preference, result, tables, perplexities)
mediation_shown = pd.concat(
    {
        name: tables["behaviour"]
        .join(tables["preference"][["denoising", "noising"]], rsuffix=" (preference items)")
        .join(perplexities)
        for name, (_, _, _, tables, perplexities) in mediation.items()
    },
    names=["model", "set"],
)
mediation_shown.style.format(precision=3, na_rep="")

# %% tags=["hide-input"]
glued("mediation_prompts_n", len(mediation_prompts(settings)))
glued("mediation_random_draws", settings.mediation_random_draws)
set_keys = {
    "all four groups": "all_groups",
    "TP−": "tp",
    "TN+": "tn",
    "AP+": "ap",
    "AN−": "an",
    "TP− + AN−": "tp_an",
    "TP− + AN− + TN+": "tp_an_tn",
    "top 128 toxic": "toxic128",
    "top 256 toxic": "toxic256",
    "dampened toxic (TP− by activation change)": "dampened",
}
for name, (behaviour, preference, result, tables, perplexities) in mediation.items():
    suffix = suffixes[name]
    glued(f"mediation_items{suffix}", len(behaviour))
    glued(f"mediation_pref_items{suffix}", len(preference))
    for key, items in (("mediation", slice(0, len(behaviour))), ("mediation_pref", slice(len(behaviour), None))):
        shift = paired_difference(result.dpo[items], result.base[items])
        for end, value in zip(("", "_low", "_high"), shift):
            glued(f"{key}_dpo_margin{end}{suffix}", value)
    for table_key, table in (("mediation", tables["behaviour"]), ("mediation_pref", tables["preference"])):
        for set_name, row in table.iterrows():
            for direction, short in (("denoising", "denoise"), ("noising", "noise")):
                for end, column in (("", direction), ("_low", f"{direction} low"), ("_high", f"{direction} high")):
                    glued(f"{table_key}_share_{set_keys[set_name]}_{short}{end}{suffix}", float(row[column]))
    behaviour_table = tables["behaviour"]
    for set_name in ("all four groups", "top 256 toxic"):
        glued(
            f"mediation_share_random_{set_keys[set_name]}_mean{suffix}",
            float(behaviour_table.loc[set_name, "random mean"]),
        )
        glued(
            f"mediation_share_random_{set_keys[set_name]}_sd{suffix}", float(behaviour_table.loc[set_name, "random sd"])
        )
    glued(f"ppl_patch_tokenwise_all_groups{suffix}", float(perplexities.loc["all four groups", "denoised PPL"]))
    glued(f"ppl_noise_tokenwise_all_groups{suffix}", float(perplexities.loc["all four groups", "noised PPL"]))
on_second_model(
    "second_model_mediation",
    "On {name} DPO moves the margin by {mediation_dpo_margin:.2f} nats; denoising the four groups recovers "
    "{mediation_share_all_groups_denoise:.0%} ({mediation_share_all_groups_denoise_low:.0%} to "
    "{mediation_share_all_groups_denoise_high:.0%}) of it, random sets {mediation_share_random_all_groups_mean:.0%}, "
    "and noising them removes {mediation_share_all_groups_noise:.0%}; its base model patched token by token keeps "
    "perplexity {ppl_patch_tokenwise_all_groups:.2f}, against the constant-mean patch's {ppl_patch_all_groups:.4g}.",
)
on_second_model(
    "second_model_mediation_toxic",
    "On {name} the 256 most toxic neurons recover {mediation_share_toxic256_denoise:.0%} and TP− alone "
    "{mediation_share_tp_denoise:.0%}.",
)

# %% [markdown]
# DPO moves the mean margin by {glue:text}`mediation_dpo_margin:.2f` nats on the default model's behaviour items
# (95 % interval {glue:text}`mediation_dpo_margin_low:.2f` to {glue:text}`mediation_dpo_margin_high:.2f`). Denoising the four groups
# recovers {glue:text}`mediation_share_all_groups_denoise:.0%` of it
# ({glue:text}`mediation_share_all_groups_denoise_low:.0%` to {glue:text}`mediation_share_all_groups_denoise_high:.0%`),
# where random sets of the same per-layer sizes recover {glue:text}`mediation_share_random_all_groups_mean:.0%`
# (SD {glue:text}`mediation_share_random_all_groups_sd:.0%`); noising them removes
# {glue:text}`mediation_share_all_groups_noise:.0%`
# ({glue:text}`mediation_share_all_groups_noise_low:.0%` to {glue:text}`mediation_share_all_groups_noise_high:.0%`).
# Patched with real activations the base model keeps perplexity {glue:text}`ppl_patch_tokenwise_all_groups:.2f`,
# against the constant-mean patch's {glue:text}`ppl_patch_all_groups:.4g`. {glue:md}`second_model_mediation`
#
# The 256 most toxic neurons, patched the same way, recover {glue:text}`mediation_share_toxic256_denoise:.0%`
# ({glue:text}`mediation_share_toxic256_denoise_low:.0%` to {glue:text}`mediation_share_toxic256_denoise_high:.0%`;
# random sets of their layers' sizes {glue:text}`mediation_share_random_toxic256_mean:.0%`) on the default model,
# and TP− alone recovers {glue:text}`mediation_share_tp_denoise:.0%`. {glue:md}`second_model_mediation_toxic` On
# the preference items DPO's shift is {glue:text}`mediation_pref_dpo_margin:.2f` nats
# ({glue:text}`mediation_pref_dpo_margin_low:.2f` to {glue:text}`mediation_pref_dpo_margin_high:.2f`) and the four
# groups recover {glue:text}`mediation_pref_share_all_groups_denoise:.0%` of it. *Reference (v3 abstract): the four
# groups' patching "replicates" DPO; toxic neurons account for "2.5 % to 24 %". The paper patches constants and
# reads generated toxicity; it has no margin and no random-set control.*

# %% tags=["hide-input"] mystnb={"figure": {"caption": "Fraction of DPO's shift of the teacher-forced margin {eq}`eq-margin` recovered by patching each neuron set token by token, on the behaviour items: denoising (the base model with the set's activations from the DPO model's run) and noising (the DPO model with them from the base model's run, fraction lost), with 95 % bootstrap intervals over items; grey: random sets with the same number of neurons per layer (denoising, mean ± 2 SD); dashed: all of DPO's shift.", "name": "fig-mediation"}}
plots.mediation_fractions({name: tables["behaviour"] for name, (_, _, _, tables, _) in mediation.items()})

# %% [markdown]
# ## Activation editing
#
# The editing method (`dpo_toxicity.editing`; item 14 of {doc}`/errata`) uses no DPO information. A toxicity
# representation $r$ is either the probe $w$ or the toxic token-embedding direction
# $r_{\text{emb}} = \operatorname{mean}_{u \in \text{toxic}} E_u - \operatorname{mean}_{u \in \text{clean}} E_u$,
# the mean unembedding row of five toxic words minus that of five clean ones. The neurons fall into four sign
# groups TP, TN, AP and AN by the signs of $c_i^r = \cos(v_i, r)$ and of $\bar m_i^{\text{base}}$, as in
# {eq}`eq-groups` but without the condition on $\Delta_i$. In each group $G$ the edit selects
# $\lfloor \beta \lvert G \rvert \rfloor$ neurons, $\mathcal{E}_G$: those with the largest $\lvert c_i^r \rvert$ in
# TP and AN, the smallest in TN and AP (the authors' code). It then sets, at every position $t$,
#
# ```{math}
# :label: eq-editing
# m_i(x_t) \leftarrow
# \begin{cases}
# (1 - \alpha)\, \bar m_i^{\text{base}} & i \in \mathcal{E}_{\text{TP}} \cup \mathcal{E}_{\text{AN}},\\
# (1 + \alpha)\, \bar m_i^{\text{base}} & i \in \mathcal{E}_{\text{TN}} \cup \mathcal{E}_{\text{AP}},
# \end{cases}
# ```
#
# which lowers every selected neuron's write along $r$; the per-token scale instead multiplies each token's own
# activation, $m_i(x_t) \leftarrow (1 \mp \alpha)\, m_i(x_t)$. The sweep runs the authors' constant
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
    evaluations = [
        suite.evaluate(run.lm, settings_.label, edit_intervention(selection, settings_), progress=False, f1=False)
        for settings_, selection in tqdm(sweep, desc=f"{name}: edits")
    ]
    table = drop_table([base, dpo] + evaluations)
    edited = table.iloc[2:]
    comparable = edited[edited["PPL"] <= comparable_perplexity * table.loc["DPO", "PPL"]]
    best_label = comparable["toxicity"].idxmin() if len(comparable) else edited["PPL"].idxmin()
    best_settings, best_selection = next((s, sel) for s, sel in sweep if s.label == best_label)
    scaled = EditSettings(best_settings.alpha, best_settings.beta, best_settings.representation, mode="scale")
    extra = [  # with F1: a perplexity measured at one position per window says nothing about fluency
        suite.evaluate(
            run.lm,
            f"{best_label}, last position only",
            edit_intervention(best_selection, best_settings, positions="last"),
            progress=False,
        ),
        suite.evaluate(run.lm, scaled.label, edit_intervention(best_selection, scaled), progress=False),
    ]
    table = drop_table([base, dpo] + evaluations + extra)
    table.insert(0, "neurons", [0, 0] + [len(selection) for _, selection in sweep] + [len(best_selection)] * 2)
    editing[name] = (table, best_label, bool(len(comparable)))
    best_evaluation = next(evaluation for evaluation in evaluations if evaluation.name == best_label)
    for component, scores in zip(OFFLINE_COMPONENTS, suite.scorer.component_scores(best_evaluation.continuations)):
        glued(f"tox_edit_best{suffixes[name]}__{component}", float(scores.mean()))
    interventions[name] += [
        (settings_.label, edit_intervention(selection, settings_)) for settings_, selection in sweep
    ]
    interventions[name] += [
        (f"{best_label}, last position only", edit_intervention(best_selection, best_settings, positions="last")),
        (scaled.label, edit_intervention(best_selection, scaled)),
    ]
editing_table = pd.concat({name: table for name, (table, _, _) in editing.items()}, names=["model", "intervention"])
editing_table.style.format(precision=3, na_rep="")

# %% tags=["hide-input"]
points = []
for name, (table, best_label, _) in editing.items():
    suffix = suffixes[name]
    best = table.loc[best_label]
    glued(f"edit_best_label{suffix}", best_label)
    glued(f"tox_edit_best{suffix}", float(best["toxicity"]))
    glued(f"ppl_edit_best{suffix}", float(best["PPL"]))
    glued(f"tox_edit_best_last{suffix}", float(table.loc[f"{best_label}, last position only", "toxicity"]))
    glued(f"ppl_edit_best_last{suffix}", float(table.loc[f"{best_label}, last position only", "PPL"]))
    glued(f"f1_edit_best_last{suffix}", float(table.loc[f"{best_label}, last position only", "F1"]))
    verdict = chapter_verdict("editing-beats-dpo", DOCUMENT, glued.values, GENERATION, second=bool(suffix))
    glued(f"edit_verdict{suffix}", f"{verdict.label} ({verdict.reason})")
    kinds = (
        ["base", "DPO"]
        + ["edit (clamp, every position)"] * (len(table) - 4)
        + ["best edit, last position only (authors' hooks)", "best edit, per-token scale"]
    )
    points.append(table[["toxicity", "PPL"]].assign(model=name, kind=kinds))
on_second_model(
    "second_model_editing",
    "On {name} the best edit, *{edit_best_label}*, reaches {tox_edit_best:.3f} at perplexity {ppl_edit_best:.2f}, "
    "against DPO's {tox_dpo_eval:.3f} at {ppl_dpo_eval:.2f}: *{edit_verdict}*.",
)

# %% [markdown]
# On the default model the best edit, *{glue:text}`edit_best_label`*, reaches toxicity
# {glue:text}`tox_edit_best:.3f` at perplexity {glue:text}`ppl_edit_best:.2f`, against DPO's
# {glue:text}`tox_dpo_eval:.3f` at {glue:text}`ppl_dpo_eval:.2f`. The ledger's rule for "editing beats DPO while
# preserving perplexity" finds: *{glue:text}`edit_verdict`*. {glue:md}`second_model_editing` *Reference (v3
# abstract): editing "outperforms DPO in reducing toxicity while preserving perplexity"; its numbers are not
# published.*
#
# Applied as the authors' hooks applied it, the same edit gives toxicity {glue:text}`tox_edit_best_last:.3f`
# and perplexity {glue:text}`ppl_edit_best_last:.2f` on the default model, with F1
# {glue:text}`f1_edit_best_last:.3f` against the base model's {glue:text}`f1_base_eval:.3f`: with the edit at
# only one position per perplexity window, the perplexity the paper reports for an edit says little about
# what the edit does to the model.

# %% tags=["hide-input"] mystnb={"figure": {"caption": "Toxicity against perplexity for the base model, DPO, every activation edit of the sweep (constant assignment at every position) and the best edit applied with the authors' last-position hooks or as a per-token scale, for each model of the run.", "name": "fig-editing-tradeoff"}}
plots.toxicity_perplexity_tradeoff(pd.concat(points))

# %% [markdown]
# ## Every intervention on one scale
#
# Constant-mean patching (the paper's method), token-wise patching and activation editing, each as a recovered
# fraction {eq}`eq-recovered-fraction` of DPO's margin shift on the same behaviour items, beside its share of DPO's
# generated-toxicity drop and its perplexity: 1 is DPO, 0 the base model. Profiles with complete tables read every
# row of the default model's two tables above; the second model, and the other profiles, the rows the claims ledger
# judges (the constant patches of the four groups and of the top 256 toxic neurons, and the best edit).

# %%
one_scale = {}
for name, run in runs.items():
    behaviour, _, result, tables, perplexities = mediation[name]
    items = slice(0, len(behaviour))
    # Without complete tables, the rows the ledger judges: the paper's patch and the best edit.
    judged = {all_groups, top_toxic, editing[name][1]}
    chosen = [(label, intervention) for label, intervention in interventions[name] if complete(name) or label in judged]
    rows = {
        label: recovered_fraction(
            result.base[items],
            margins(run.lm, behaviour, intervention, settings.batch_size, cache=cache_dir("mediation")),
            result.dpo[items],
        )
        for label, intervention in tqdm(chosen, desc=f"{name}: margins of the rows")
    }
    generated = pd.concat([patching[name][0], editing[name][0]])
    generated = generated[~generated.index.duplicated()]
    frame = pd.DataFrame(rows, index=["recovered fraction", "low", "high"]).T
    frame = frame.join(generated[["share of DPO's drop", "PPL"]])
    tokenwise = (
        tables["behaviour"][["denoising", "denoising low", "denoising high"]]
        .set_axis(["recovered fraction", "low", "high"], axis=1)
        .join(perplexities["denoised PPL"].rename("PPL"))
    )
    tokenwise.index = [f"token-wise patch: {index}" for index in tokenwise.index]
    one_scale[name] = pd.concat([frame, tokenwise])
    glued(f"mediation_share_constant_all_groups{suffixes[name]}", float(frame.loc[all_groups, "recovered fraction"]))
    glued(f"mediation_share_edit_best{suffixes[name]}", float(frame.loc[editing[name][1], "recovered fraction"]))
on_second_model(
    "second_model_one_scale",
    "On {name} the two recover {mediation_share_constant_all_groups:.0%} and {mediation_share_edit_best:.0%}.",
)
pd.concat(one_scale, names=["model", "intervention"]).style.format(precision=3, na_rep="")

# %% [markdown]
# Clamping the four groups to their post-DPO means recovers {glue:text}`mediation_share_constant_all_groups:.0%`
# of DPO's margin shift on the default model, and the best edit {glue:text}`mediation_share_edit_best:.0%`.
# {glue:md}`second_model_one_scale`
#
# ## Provenance

# %% tags=["hide-input"]
glued("patching_wall_minutes", record.wall_minutes)
record.table()
