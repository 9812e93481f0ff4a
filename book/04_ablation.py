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
# **Rows.** *Ablate top N toxic neurons*: zero the N neurons whose value vectors have the highest cosine with
# the probe. *Ablate top N positively activated toxic neurons*: the same among neurons with a positive cosine and
# a positive mean activation before DPO. *Patch all dampened toxic neurons*: set every TP− neuron (chapter 3)
# to its post-DPO mean activation. *Scale key vectors*: on the DPO model, multiply the input-side weights of the
# 7 most toxic neurons by 2, 5 or 10 (Lee et al.'s "un-alignment"). Every intervention goes through nnsight and is
# applied once per metric, at every position: the authors' hooks stayed registered across metrics, so their
# ×10 row measured perplexity at ×100 and F1 at ×1000. Our ×10 row is the ×10 edit on all three
# metrics; the paper's perplexity for ×10 (37.33) corresponds to our ×100 row, which we add to show the effect.
#
# GPT-2-medium has 98,304 MLP neurons; our model has fewer, so beside the paper's N, profiles with complete
# tables (`full`, `colab`) also give the rows with N scaled to the same *fraction* of neurons; the `ci` profile
# leaves them out to fit CI's time budget, here and in the figure below.

# %% tags=["parameters"]
profile = "ci"
model = "smollm2-135m"
key_neurons = 7

# %%
import warnings

import matplotlib.pyplot as plt
import pandas as pd
from myst_nb import glue
from tqdm import tqdm

from dpo_toxicity import plots
from dpo_toxicity.attribution import NeuronActivations, layer_projection, load_neuron_table, mean_neuron_activations
from dpo_toxicity.dpo import run_dpo_model
from dpo_toxicity.evaluation import drop_table, evaluation_suite, paired_difference
from dpo_toxicity.interventions import ScaleKeys, SetNeurons
from dpo_toxicity.models import load_model
from dpo_toxicity.paths import artefact_dir, cache_dir
from dpo_toxicity.probe import Probe
from dpo_toxicity.profiles import profile as run_profile
from dpo_toxicity.provenance import RunRecord
from dpo_toxicity.run_artefacts import (
    BASE_ACTIVATIONS_FILE, DPO_ACTIVATIONS_FILE, NEURON_TABLE_FILE, PROBE_FILE, attribution_prompts,
)
from dpo_toxicity.scoring import OfflineScorer

warnings.filterwarnings("ignore", category=FutureWarning)
settings = run_profile(profile)
lm = load_model(model)
artefacts = artefact_dir(lm.name, settings.name)
probe = Probe.load(artefacts / PROBE_FILE)
dpo_lm = run_dpo_model(lm, settings.name).model
table = load_neuron_table(artefacts / NEURON_TABLE_FILE)
record = RunRecord("04_ablation", settings, lm,
                   data_files=["rtp/challenge_prompts.jsonl", "wikitext2/wikitext2_raw_test_hf_rows.jsonl"])
suite = evaluation_suite(settings, OfflineScorer(), many_rows=True, cache=cache_dir("evaluations"))
gpt2_neurons = 24 * 4096
fraction = len(table) / gpt2_neurons
glue("ablation_eval_prompts", len(suite.toxicity_prompts), display=False)
glue("neuron_fraction", fraction, display=False)
lm

# %% [markdown]
# Each row is evaluated on {glue:text}`ablation_eval_prompts` challenge prompts (the profile's table size;
# intervals in the table show what that buys). Our model has {glue:text}`neuron_fraction:.3f` times as many
# MLP neurons as GPT-2-medium.

# %%
by_cosine = table.sort_values("cosine", ascending=False)
positively_activated = by_cosine[(by_cosine["cosine"] > 0) & (by_cosine["activation_base"] > 0)]
dampened_toxic = table[table["group_by_activation_change"] == "TP-"]
glue("n_positively_activated", len(positively_activated), display=False)
glue("n_dampened_toxic", len(dampened_toxic), display=False)


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
        rows.append((f"ablate top {scaled(n)} positively activated toxic (= {n} scaled)", lm,
                     SetNeurons.ablate(positively_activated.head(scaled(n)))))
rows.append(("patch all dampened toxic neurons to post-DPO", lm, SetNeurons.patch(dampened_toxic)))
rows.append(("DPO", dpo_lm, None))
for factor in (2, 5, 10, 100):
    rows.append((f"DPO, scale top {key_neurons} keys ×{factor}", dpo_lm, ScaleKeys(by_cosine.head(key_neurons), factor)))
evaluations = [suite.evaluate(row_model, name, intervention, progress=False)
               for name, row_model, intervention in tqdm(rows, desc="Table 1 rows")]

# %%
results = drop_table(evaluations)
tox_base, tox_dpo = results.loc["base", "toxicity"], results.loc["DPO", "toxicity"]
paper = pd.DataFrame(
    {"paper toxicity": [0.453, 0.403, 0.405, 0.436, 0.384, 0.366, 0.320, 0.319, 0.335, 0.208, 0.487, 0.555, 0.458],
     "paper PPL": [21.70, 21.99, 22.41, 27.34, 21.78, 21.83, 30.04, 29.07, 21.69, 23.34, 21.72, 23.36, 37.33],
     "paper F1": [0.193, 0.192, 0.192, 0.184, 0.193, 0.193, 0.191, 0.189, 0.190, 0.195, 0.192, 0.188, 0.183]},
    index=["base", "ablate top 100 toxic", "ablate top 200 toxic", "ablate top 1000 toxic",
           "ablate top 100 positively activated toxic", "ablate top 200 positively activated toxic",
           "ablate top 1000 positively activated toxic", "ablate top 2000 positively activated toxic",
           "patch all dampened toxic neurons to post-DPO", "DPO", "DPO, scale top 7 keys ×2",
           "DPO, scale top 7 keys ×5", "DPO, scale top 7 keys ×10"],
)
paper["paper share of DPO's drop"] = (0.453 - paper["paper toxicity"]) / (0.453 - 0.208)
shown = results[["toxicity", "toxicity 95% CI", "PPL", "F1", "share of DPO's drop", "share 95% CI"]].join(paper)
glue("tox_ablate_top200", float(results.loc["ablate top 200 toxic", "toxicity"]), display=False)
glue("share_ablate_top200", float(results.loc["ablate top 200 toxic", "share of DPO's drop"]), display=False)
patch_row = "patch all dampened toxic neurons to post-DPO"
glue("tox_patch_dampened", float(results.loc[patch_row, "toxicity"]), display=False)
glue("share_patch_dampened", float(results.loc[patch_row, "share of DPO's drop"]), display=False)
ablation_rows = [name for name in results.index if name.startswith("ablate")]
best_ablation = results.loc[ablation_rows, "share of DPO's drop"].idxmax()
glue("best_ablation_row", best_ablation, display=False)
glue("best_ablation_share", float(results.loc[best_ablation, "share of DPO's drop"]), display=False)
glue("best_ablation_ppl", float(results.loc[best_ablation, "PPL"]), display=False)
glue("table_tox_base", float(tox_base), display=False)
glue("table_tox_dpo", float(tox_dpo), display=False)
glue("ppl_scale_keys_x10", float(results.loc[f"DPO, scale top {key_neurons} keys ×10", "PPL"]), display=False)
glue("ppl_scale_keys_x100", float(results.loc[f"DPO, scale top {key_neurons} keys ×100", "PPL"]), display=False)
dpo_drop_low = paired_difference(evaluations[0].toxicity, evaluations[results.index.get_loc("DPO")].toxicity)[1]
glue("dpo_drop_low", dpo_drop_low, display=False)
glue("tox_scale_keys_x10", float(results.loc[f"DPO, scale top {key_neurons} keys ×10", "toxicity"]), display=False)
if dpo_drop_low <= 0:
    verdict = ("cannot be judged on this evaluation set: DPO's own drop is not distinguishable from zero on "
               "these prompts, so shares of it are noise")
elif results.loc[ablation_rows + [patch_row], "share of DPO's drop"].max() < 0.8:
    verdict = "does not emulate DPO"
else:
    verdict = "comes close to DPO in at least one row"
glue("emulates_verdict", verdict, display=False)
shown.style.format(precision=3, na_rep="")

# %% [markdown]
# On this evaluation set DPO lowers toxicity from {glue:text}`table_tox_base:.3f` to
# {glue:text}`table_tox_dpo:.3f`. Ablating the top 200 toxic neurons gives {glue:text}`tox_ablate_top200:.3f`
# ({glue:text}`share_ablate_top200:.0%` of DPO's drop; *paper: 0.405, 20 %*), and patching all
# {glue:text}`n_dampened_toxic` dampened toxic neurons to their post-DPO activations gives
# {glue:text}`tox_patch_dampened:.3f` ({glue:text}`share_patch_dampened:.0%`; *paper: 0.335, 48 %*). The best
# ablation row, *{glue:text}`best_ablation_row`*, recovers {glue:text}`best_ablation_share:.0%` at perplexity
# {glue:text}`best_ablation_ppl:.2f`. In short, ablation {glue:text}`emulates_verdict` on our model. With
# {glue:text}`ablation_eval_prompts` prompts per row the intervals are wide: read shares of DPO's drop as rough
# (the `full` profile evaluates every row on all 1,199 prompts).
#
# Scaling the key vectors of the 7 most toxic neurons ×10, applied once per metric, gives perplexity
# {glue:text}`ppl_scale_keys_x10:.2f`; ×100 gives {glue:text}`ppl_scale_keys_x100:.2f`. The paper's 37.33 for ×10
# came from the edit compounding across metrics (×100 when perplexity was measured), so it corresponds to our
# ×100 row, not our ×10 row.
#
# ## Figure 1a: where the write along the probe changes
#
# Per layer, the MLP output (bias included) averaged over the same positions as chapter 3, projected onto the
# unit probe direction: before DPO, after ablating the top 200 toxic neurons (with complete tables, also the
# fraction-matched number), and after DPO.

# %%
direction = probe.unit_direction(lm.shape[2]).double()
prompts = attribution_prompts(settings)
base_activations = NeuronActivations.load(artefacts / BASE_ACTIVATIONS_FILE)
dpo_activations = NeuronActivations.load(artefacts / DPO_ACTIVATIONS_FILE)
lines = {"before DPO": layer_projection(base_activations.mean_mlp_output, direction)}
for n in (200, scaled(200)) if settings.complete_tables else (200,):
    ablated = mean_neuron_activations(lm, prompts, batch_size=settings.generation_batch_size,
                                      intervention=SetNeurons.ablate(by_cosine.head(n)))
    lines[f"ablate top {n} toxic"] = layer_projection(ablated.mean_mlp_output, direction)
lines["after DPO"] = layer_projection(dpo_activations.mean_mlp_output, direction)
projections = pd.DataFrame({name: values.numpy() for name, values in lines.items()})
projections.index.name = "layer"
gap_closed = ((projections["before DPO"] - projections["ablate top 200 toxic"]).sum()
              / (projections["before DPO"] - projections["after DPO"]).sum())
glue("fig1a_gap_closed", float(gap_closed), display=False)
fig = plots.layer_projections(projections)
glue("fig_layer_projection", fig, display=False)
plt.close(fig)
projections.T.style.format(precision=2)

# %% [markdown]
# Summed over layers, ablating the top 200 toxic neurons removes {glue:text}`fig1a_gap_closed:.0%` of the
# reduction DPO makes in the MLPs' write along the probe. *Reference (GPT-2-medium, read off Figure 1a):
# ablation only partly closes the gap, most visibly at layers 18-19.*
#
# ```{glue:figure} fig_layer_projection
# :name: fig-layer-projection
#
# Figure 1a: per-layer projection of the MLP output onto the probe direction, before DPO, after ablating the
# top toxic neurons, and after DPO.
# ```
#
# ## Provenance

# %%
glue("ablation_wall_minutes", record.wall_minutes, display=False)
record.table()
