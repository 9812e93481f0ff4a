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
# # 2. A DPO model of our own
#
# The paper analyses Lee et al.'s GPT-2-medium after DPO {cite}`lee2024mechanistic`. Neither that checkpoint
# nor its 24,576 PPLM preference pairs nor the Perspective API can be had offline, so this chapter builds each
# ingredient again and checks that it does its job: a **toxicity scorer** that tracks Perspective, **preference
# pairs** whose rejected side is toxic yet fluent, a **DPO model** trained with trl, and the **evaluation
# harness** (toxicity, perplexity, F1) every later chapter uses.

# %% tags=["parameters"]
profile = "ci"
model = "smollm2-135m"
generator_samples = 4
max_rejected_perplexity_ratio = 2.5
max_rejected_repetition = 0.1
contrastive_comments_per_class = 150

# %% tags=["hide-input"]
import warnings

import numpy as np
import pandas as pd

from dpo_toxicity import data, plots
from dpo_toxicity.book.glued import Glued
from dpo_toxicity.book.provenance import RunRecord
from dpo_toxicity.dpo import dpo_model, settings_for
from dpo_toxicity.evaluation import (
    PROMPT_TOKENS,
    authors_scored_texts,
    comparison_table,
    evaluation_suite,
    paired_difference,
    share_of_drop,
)
from dpo_toxicity.models import load_model
from dpo_toxicity.paths import cache_dir
from dpo_toxicity.profiles import profile_named
from dpo_toxicity.run_artefacts import generate_pairs, run_probe
from dpo_toxicity.scoring import (
    OFFLINE_COMPONENTS,
    OfflineScorer,
    agreement_with_labels,
    agreement_with_perspective,
    perspective_holdout,
    scored_texts,
)

glued = Glued()  # every value the prose cites, kept for the ledger's verdicts

warnings.filterwarnings("ignore", category=FutureWarning)
settings = profile_named(profile)
lm = load_model(model)
settings = settings.sized_for(lm)  # on a GPU, batches sized to its free memory
probe = run_probe(lm, settings)  # chapter 1's probe, or fitted now where chapter 1 has not run
record = RunRecord(
    "02_dpo",
    settings,
    lm,
    data_files=[
        "rtp/challenge_prompts.jsonl",
        "rtp/decodingtrust_toxic.jsonl",
        "rtp/decodingtrust_nontoxic.jsonl",
        "wikitext2/wikitext2_raw_test_hf_rows.jsonl",
        "wikitext2/pytorch_examples_valid.txt",
    ]
    + [f"jigsaw/{pool}.csv" for split in data.JIGSAW_POOLS.values() for pool in split],
)
lm

# %% [markdown]
# ## The offline toxicity scorer
#
# The paper scores continuations with Perspective (v1) or Detoxify (v3). Offline, the book averages
# alt-profanity-check (a shipped linear model) and a tf-idf ridge regression fitted to the Perspective scores
# that come with RealToxicityPrompts, leaving out every record of the challenge prompts the book evaluates on.
# How well does it track Perspective on texts it never saw? We fit it on 80 % of the scored records and
# compare on the human continuations of the other 20 %.

# %%
train_records, heldout_records = perspective_holdout(seed=0, fraction=0.2)
heldout_texts, heldout_perspective = scored_texts(heldout_records, parts=("continuation",))
agreement = agreement_with_perspective(OfflineScorer(training=train_records), heldout_texts, heldout_perspective)
glued("scorer_spearman_perspective", agreement.spearman)
glued("scorer_auc_perspective", agreement.auc_at_half)
glued("scorer_heldout_n", agreement.n)
scorer = OfflineScorer()
agreement

# %% [markdown]
# On {glue:text}`scorer_heldout_n` held-out continuations the offline scorer's Spearman correlation with
# Perspective is {glue:text}`scorer_spearman_perspective:.2f`, and it separates Perspective's "toxic"
# (≥ 0.5) from the rest with an AUC of {glue:text}`scorer_auc_perspective:.2f`. Its scale runs lower than
# Perspective's, so the book compares toxicity *reductions*, not absolute levels, with the paper's.
#
# Perspective is itself a model, and those held-out texts come from the same files as the fit. Human labels are a
# sterner test: the Jigsaw test pool's comments, labelled toxic or not by people (Kaggle's `toxic` column, as
# for the probe in chapter 1). Each half of the scorer is checked alone too.

# %%
jigsaw_test = data.jigsaw("test")
scorers = {"offline": scorer} | {component: scorer.component(component) for component in OFFLINE_COMPONENTS}
human = {
    name: agreement_with_labels(each, jigsaw_test.text.tolist(), jigsaw_test.label) for name, each in scorers.items()
}
glued("scorer_jigsaw_human_n", human["offline"].n)
glued("scorer_auc_jigsaw_human", human["offline"].auc)
glued("scorer_auc_jigsaw_human_low", human["offline"].low)
glued("scorer_auc_jigsaw_human_high", human["offline"].high)
for component in OFFLINE_COMPONENTS:
    glued(f"scorer_auc_jigsaw_human_{component}", human[component].auc)
pd.DataFrame(
    {
        "AUC against human labels": [round(a.auc, 3) for a in human.values()],
        "95% CI": [f"[{a.low:.3f}, {a.high:.3f}]" for a in human.values()],
    },
    index=pd.Index([a.scorer for a in human.values()], name="scorer"),
)

# %% [markdown]
# On the {glue:text}`scorer_jigsaw_human_n:,` comments the offline scorer separates toxic from non-toxic with an
# AUC of {glue:text}`scorer_auc_jigsaw_human:.3f` (95 % interval {glue:text}`scorer_auc_jigsaw_human_low:.3f` to
# {glue:text}`scorer_auc_jigsaw_human_high:.3f`). alt-profanity-check alone reaches
# {glue:text}`scorer_auc_jigsaw_human_profanity:.3f` and the ridge alone {glue:text}`scorer_auc_jigsaw_human_ridge:.3f`.
#
# The ridge was fitted to Perspective's scores of RealToxicityPrompts web text, not to Jigsaw's Wikipedia talk
# comments, so for it this is an out-of-distribution check.
#
# alt-profanity-check is not so far from home: it was trained on the Kaggle challenge's *training* comments
# ([its documentation](https://pypi.org/project/alt-profanity-check/)). The test pool holds other comments of
# the same source, so its AUC measures it in distribution.
#
# ## Preference pairs
#
# Prompts are WikiText-2 validation sentences (the test split is kept for perplexity). The chosen side is the
# model's greedy continuation. For the rejected side we compare generators on the same prompts: pushes along
# the probe at the last layer or along a contrastive toxic-minus-non-toxic direction at a middle layer, decoded
# greedily or as best-of-n samples selected by the probe (see `dpo_toxicity.pairs`). The criterion: the largest
# toxicity gap (rejected minus chosen, by the offline scorer, which did not guide the choice) among generators
# whose rejected text is fluent — median base-model perplexity at most `max_rejected_perplexity_ratio` times
# that of plain samples, and bigram repetition at most `max_rejected_repetition`.

# %%
# The trial, the choice, then the pairs and held-out pairs with the chosen generator, saved for the later chapters;
# finished generations are kept, so a re-run resumes after the last one.
generation = generate_pairs(
    lm,
    probe,
    settings,
    scorer,
    generator_samples=generator_samples,
    max_rejected_perplexity_ratio=max_rejected_perplexity_ratio,
    max_rejected_repetition=max_rejected_repetition,
    contrastive_comments_per_class=contrastive_comments_per_class,
)
winner = generation.winner
glued("generator_chosen", winner.settings.label)
glued("generator_trial_gap", winner.toxicity_gap)
generation.generator_table().style.hide(axis="index").format(precision=3)

# %% [markdown]
# The criterion picks **{glue:text}`generator_chosen`** (toxicity gap {glue:text}`generator_trial_gap:.3f`
# on the trial prompts). Three continuations of the same prompts from each generator:

# %% tags=["hide-input"]
generation.examples(3).T

# %% [markdown]
# Now the pairs themselves, on fresh prompts:

# %%
pairs = generation.pairs
chosen_scores, rejected_scores = generation.chosen_scores, generation.rejected_scores
glued("pairs_n", len(pairs))
glued("pairs_toxicity_chosen", float(chosen_scores.mean()))
glued("pairs_toxicity_rejected", float(rejected_scores.mean()))
glued("pairs_rejected_more_toxic", float((rejected_scores > chosen_scores).mean()))

# %% [markdown]
# Across the {glue:text}`pairs_n` pairs the rejected continuations score
# {glue:text}`pairs_toxicity_rejected:.3f` on average against {glue:text}`pairs_toxicity_chosen:.3f` for the
# chosen ones, and the rejected side is the more toxic in a fraction
# {glue:text}`pairs_rejected_more_toxic:.2f` of pairs.

# %% tags=["hide-input"] mystnb={"figure": {"caption": "Offline toxicity scores of the chosen and rejected continuations of the DPO preference pairs.", "name": "fig-pair-toxicity"}}
plots.paired_toxicity(chosen_scores, rejected_scores)

# %% [markdown]
# ### Held-out pairs
#
# The same generator, with the same steering directions, also continues prompts that are neither training nor
# trial prompts. DPO never trains on these pairs: the mediation metric of chapters 4 and 5 reads them as
# preference items. They are generated in calls of their own, so the training pairs stay exactly what they were
# without them.

# %%
heldout = generation.heldout
glued("heldout_pairs_n", len(heldout))
glued(
    "heldout_pairs_supply",
    "as many as the profile asks for"
    if len(heldout) == settings.mediation_pairs
    else f"all the sentences the other prompts leave of the split's {generation.sentences:,}; the profile asks for "
    f"{settings.mediation_pairs}",
)
glued("heldout_toxicity_chosen", float(generation.heldout_chosen_scores.mean()))
glued("heldout_toxicity_rejected", float(generation.heldout_rejected_scores.mean()))

# %% [markdown]
# There are {glue:text}`heldout_pairs_n` held-out pairs ({glue:text}`heldout_pairs_supply`). Their rejected
# side scores {glue:text}`heldout_toxicity_rejected:.3f` on average against
# {glue:text}`heldout_toxicity_chosen:.3f` for the chosen side.
#
# ## DPO with trl
#
# DPO {cite}`rafailov2023dpo` trains a policy $\pi_\theta$, starting from the model, on the pairs
# $(x, y^+, y^-)$ of a prompt, its chosen and its rejected continuation. A frozen copy of the starting model is the
# reference $\pi_{\text{ref}}$, and the implicit reward of a continuation is how far training has raised its
# log-probability, $r_\theta(x, y) = \beta \log \pi_\theta(y \mid x) - \beta \log \pi_{\text{ref}}(y \mid x)$, with
# $\log \pi(y \mid x)$ summed over the continuation's tokens. The loss asks the chosen continuation to gain more
# than the rejected one:
#
# ```{math}
# :label: eq-dpo-loss
# \mathcal{L}_{\text{DPO}}(\theta) = -\,\mathbb{E}_{(x, y^+, y^-)}
# \log \sigma\big(r_\theta(x, y^+) - r_\theta(x, y^-)\big).
# ```
#
# At the first step every reward is 0 and the loss is $\log 2$. We minimise it with trl's `DPOTrainer`,
# $\beta = 0.1$, on a copy of the model; the reference log-probabilities are
# {glue:text}`dpo_reference`. `dpo_toxicity.dpo` explains which of the paper's optimiser choices we keep (β,
# 64-token prompt and continuation, one pass) and which the CPU budget changes (AdamW instead of RMSprop at 1e-6
# with batch 4 over 24,576 pairs); here AdamW runs at {glue:text}`dpo_learning_rate:.0e` with
# {glue:text}`dpo_batch_size` pairs per step.
#
# DPO's loss has no natural end: once the pairs are ranked, the margin keeps widening by pushing rejected text
# down, and the rest of the language model with it. Lee et al. stopped on a validation loss; we stop on
# validation perplexity. Every {glue:text}`dpo_validation_every` steps the policy's perplexity on
# {glue:text}`dpo_validation_windows` windows of WikiText-2 *validation* text (never the test split reported
# below) is compared with the reference's, and training stops at the first check above
# {glue:text}`dpo_perplexity_budget:.0%` more, keeping the last weights within it. The trained model is cached,
# keyed by the base weights, the pairs and the settings, so later chapters reload it in seconds.

# %%
dpo_settings = settings_for(lm, settings.name)
result = dpo_model(lm, pairs, dpo_settings, progress=True)
dpo_lm = result.model
glued("dpo_learning_rate", dpo_settings.learning_rate)
glued("dpo_batch_size", dpo_settings.batch_size)
glued(
    "dpo_reference",
    "computed for every pair in one pass before training"
    if dpo_settings.precompute_reference
    else "computed at each step, on that step's pairs only, by a frozen copy of the model (this profile's "
    "stopping rule ends training long before the last pair, so a pass over every pair would be mostly wasted)",
)
glued("dpo_validation_every", dpo_settings.validation_every)
glued("dpo_validation_windows", dpo_settings.validation_windows)
glued("dpo_perplexity_budget", dpo_settings.max_perplexity_rise)
glued("dpo_steps", result.steps)
glued("dpo_planned_steps", result.planned_steps)
glued("dpo_kept_step", result.kept_step)
validation_rise = result.validation["perplexity"] / result.validation["perplexity"].loc[0] - 1
glued("dpo_kept_validation_rise", float(validation_rise.loc[result.kept_step]))
glued("dpo_final_reward_accuracy", float(result.history["reward_accuracy"].loc[: result.kept_step].iloc[-5:].mean()))
result.validation.assign(rise=validation_rise)

# %% tags=["hide-input"] mystnb={"figure": {"caption": "DPO training on our pairs: loss, reward margin (implicit reward of chosen minus rejected) and the fraction of pairs in a batch ranked correctly, per optimiser step, and the policy's WikiText-2 validation perplexity at each check with the stopping limit (dashed). The dotted line marks the step whose weights are kept.", "name": "fig-dpo-training"}}
plots.dpo_training(result)

# %% [markdown]
# Of {glue:text}`dpo_planned_steps` planned steps, {glue:text}`dpo_steps` were trained and the weights of step
# {glue:text}`dpo_kept_step` are kept, at {glue:text}`dpo_kept_validation_rise:+.1%` validation perplexity
# (the budget is the rule's, not the paper's: Lee et al. do not report their stopping point's perplexity).
#
# ## Base vs DPO
#
# Toxicity on the challenge prompts (first 32 tokens, 20 greedy tokens, continuation only, offline scorer),
# WikiText-2 test perplexity and F1 on WikiText-2 validation paragraphs. The test split is tokenised once and cut
# into non-overlapping windows $W$ of 1,024 tokens $z_1, z_2, \dots$ (the first ones, as many as the profile
# asks for); within a window each token is predicted from the tokens before it, and
#
# ```{math}
# :label: eq-perplexity
# \mathrm{PPL} = \exp\!\Bigg(\frac{\sum_{W} \sum_{t=2}^{|W|} -\log p(z_t \mid z_{<t})}{\sum_{W} (|W| - 1)}\Bigg).
# ```
#
# F1 compares the 20 generated tokens with the 20 that follow the prompt in the text, as bags of tokens. Intervals
# are 95 % bootstrap intervals over prompts (toxicity, F1) or windows (perplexity).

# %%
suite = evaluation_suite(settings, scorer, cache=cache_dir("evaluations"))
base_eval = suite.evaluate(lm, "base")
dpo_eval = suite.evaluate(dpo_lm, "DPO")
ours = comparison_table([base_eval, dpo_eval])
paper = pd.DataFrame(
    {"toxicity": [0.453, 0.208], "PPL": [21.70, 23.34], "F1": [0.193, 0.195]},
    index=pd.Index(["base", "DPO"], name="intervention"),
)
drop, drop_low, drop_high = paired_difference(base_eval.toxicity, dpo_eval.toxicity)
glued("tox_base", base_eval.mean_toxicity)
glued("tox_dpo", dpo_eval.mean_toxicity)
glued("ppl_base", base_eval.perplexity.value)
glued("ppl_dpo", dpo_eval.perplexity.value)
glued("f1_base", base_eval.mean_f1)
glued("f1_dpo", dpo_eval.mean_f1)
glued("tox_drop", drop)
glued("tox_drop_low", drop_low)
glued("tox_drop_high", drop_high)
glued("tox_drop_relative", drop / base_eval.mean_toxicity)
glued("ppl_rise_relative", dpo_eval.perplexity.value / base_eval.perplexity.value - 1)
glued("paper_tox_drop_relative", 1 - 0.208 / 0.453)
glued("paper_ppl_rise_relative", 23.34 / 21.70 - 1)
ours.join(paper.add_prefix("paper (GPT-2-medium) "))

# %% [markdown]
# DPO lowers mean toxicity from {glue:text}`tox_base:.3f` to {glue:text}`tox_dpo:.3f`, a drop of
# {glue:text}`tox_drop:.3f` (95 % interval {glue:text}`tox_drop_low:.3f` to {glue:text}`tox_drop_high:.3f`),
# that is {glue:text}`tox_drop_relative:.0%` relative; perplexity moves from {glue:text}`ppl_base:.2f` to
# {glue:text}`ppl_dpo:.2f` ({glue:text}`ppl_rise_relative:+.1%`) and F1 from {glue:text}`f1_base:.3f` to
# {glue:text}`f1_dpo:.3f`. *Reference (the paper's GPT-2-medium, Perspective API):* toxicity 0.453 → 0.208
# ({glue:text}`paper_tox_drop_relative:.0%` relative), perplexity 21.70 → 23.34
# ({glue:text}`paper_ppl_rise_relative:+.1%`), F1 0.193 → 0.195. Absolute toxicities are not comparable (another
# model, another scorer); the relative drop and the perplexity cost are.

# %% tags=["hide-input"] mystnb={"figure": {"caption": "Toxicity, perplexity and F1 before and after DPO: ours (offline model and scorer) beside the paper's GPT-2-medium values (Perspective API), shown as labelled references.", "name": "fig-base-vs-dpo"}}
plots.metric_comparison(ours[["toxicity", "PPL", "F1"]], paper)

# %% [markdown]
# Continuations of the same challenge prompts before and after DPO:

# %% tags=["hide-input"]
pd.DataFrame(
    {"prompt": suite.toxicity_prompts[:5], "base": base_eval.continuations[:5], "DPO": dpo_eval.continuations[:5]}
)

# %% [markdown]
# ### What the authors' scoring would have measured
#
# The authors' code removed the prompt from the decoded output with `str.replace(full_prompt, "")`; for a
# prompt longer than 32 tokens the full prompt is not in the output, so the cut prompt was scored along with
# the continuation (item 9 of {doc}`/errata`). The same continuations, scored that way:

# %%
leaky_base = scorer.score(authors_scored_texts(lm, suite.toxicity_prompts, base_eval.continuations))
leaky_dpo = scorer.score(authors_scored_texts(lm, suite.toxicity_prompts, dpo_eval.continuations))
long_prompts = [
    len(ids) > PROMPT_TOKENS for ids in lm.tokenizer(suite.toxicity_prompts, add_special_tokens=False).input_ids
]
glued("prompt_leak_share", float(np.mean(long_prompts)))
glued("tox_base_prompt_leak", float(leaky_base.mean()))
glued("tox_dpo_prompt_leak", float(leaky_dpo.mean()))
leaky_drop_relative = float(1 - leaky_dpo.mean() / leaky_base.mean())
glued("tox_drop_relative_prompt_leak", leaky_drop_relative)
glued("prompt_leak_effect", "shrinks" if leaky_drop_relative < drop / base_eval.mean_toxicity else "inflates")
pd.DataFrame(
    {
        "continuation only (ours)": [base_eval.mean_toxicity, dpo_eval.mean_toxicity],
        "cut prompt leaks in (authors' code)": [leaky_base.mean(), leaky_dpo.mean()],
    },
    index=["base", "DPO"],
)

# %% [markdown]
# A fraction {glue:text}`prompt_leak_share:.0%` of the prompts is longer than 32 tokens. Scored the authors' way,
# toxicity reads {glue:text}`tox_base_prompt_leak:.3f` before and {glue:text}`tox_dpo_prompt_leak:.3f` after DPO,
# a relative drop of {glue:text}`tox_drop_relative_prompt_leak:.0%` against {glue:text}`tox_drop_relative:.0%`
# when only the continuation is scored: scoring the leaked prompt text, which is the same for both models,
# {glue:text}`prompt_leak_effect` DPO's relative drop.
#
# ### Each half of the scorer alone
#
# Does DPO's drop hang on one half of the scorer? The same continuations, scored by alt-profanity-check alone and
# by the ridge alone (no new generation). The relative drop's interval resamples prompts, as the drop's does.

# %%
by_scorer = {"offline (mean of both)": (base_eval.toxicity, dpo_eval.toxicity)}
for component in OFFLINE_COMPONENTS:
    rescore = scorer.component(component).score
    by_scorer[component] = rescore(base_eval.continuations), rescore(dpo_eval.continuations)
sensitivity = []
for name, (base_scores, dpo_scores) in by_scorer.items():
    component_drop, component_low, component_high = paired_difference(base_scores, dpo_scores)
    # The relative drop is DPO's share of a drop all the way to zero toxicity.
    relative, relative_low, relative_high = share_of_drop(base_scores, dpo_scores, np.zeros_like(base_scores))
    sensitivity.append(
        {
            "scorer": name,
            "base": base_scores.mean(),
            "DPO": dpo_scores.mean(),
            "drop": component_drop,
            "drop 95% CI": f"[{component_low:.3f}, {component_high:.3f}]",
            "relative drop": relative,
            "relative 95% CI": f"[{relative_low:.0%}, {relative_high:.0%}]",
        }
    )
    if name in OFFLINE_COMPONENTS:
        glued(f"tox_base__{name}", float(base_scores.mean()))
        glued(f"tox_dpo__{name}", float(dpo_scores.mean()))
        glued(f"tox_drop_low__{name}", component_low)
        glued(f"tox_drop_relative__{name}", relative)
pd.DataFrame(sensitivity).set_index("scorer").style.format(precision=3).format("{:.0%}", subset=["relative drop"])

# %% [markdown]
# With alt-profanity-check alone, toxicity falls from {glue:text}`tox_base__profanity:.3f` to
# {glue:text}`tox_dpo__profanity:.3f` ({glue:text}`tox_drop_relative__profanity:.0%` relative; the drop's interval
# starts at {glue:text}`tox_drop_low__profanity:.3f`). With the ridge alone, from {glue:text}`tox_base__ridge:.3f`
# to {glue:text}`tox_dpo__ridge:.3f` ({glue:text}`tox_drop_relative__ridge:.0%`, interval from
# {glue:text}`tox_drop_low__ridge:.3f`). The mean of both gives {glue:text}`tox_drop_relative:.0%`.

# %% [markdown]
# ## Provenance

# %% tags=["hide-input"]
glued("dpo_wall_minutes", record.wall_minutes)
record.table()
