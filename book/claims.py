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
# # The claims ledger
#
# One row per claim of the paper {cite}`yang2024ablation,yang2025dpo` and its predecessor
# {cite}`lee2024mechanistic`, judged on the numbers the chapters of this run glued. Nothing here is computed
# anew: the ledger reads the executed chapter notebooks beside this one and applies to each claim a rule that
# is stated in the row (`dpo_toxicity.paper_claims` holds the claims, `dpo_toxicity.verdicts` the rules, each
# unit-tested on hand-made values).
#
# **How to read a row.** *paper* is the claim's source and the paper's value, a reference measured on other
# models (GPT-2-medium; in v3 also Llama-3.1-8B, Gemma-2-2B and Mistral-7B) with another scorer. The *ours*
# columns give the glued values per model: the default model of this run and, for the claims chapter 5 tests
# on two models, the second model (in the profiles that run one: `full` and `colab`; the `ci` profile judges the
# default model alone). *tolerance* says what counts as reproducing the claim; shares and relative
# changes are compared, never absolute toxicities. *null control* gives, where the book has one, what random
# directions in place of the probe give. The *verdict* is one of:
#
# - **reproduced**: our value meets the tolerance;
# - **partly**: it points the paper's way but misses the tolerance, stands out only marginally from the null
#   control, or the two models disagree;
# - **not reproduced**: it contradicts the claim;
# - **not specific to toxicity**: it matches, but random directions give the same, so it describes how DPO
#   moves activations rather than anything about toxicity;
# - **not testable here**: a value is missing (its chapter has not run or does not glue it) or the data cannot
#   decide (an interval that holds both the claim and its negation, on every metric the claim is judged on).
#
# *why* gives the reason, model by model; *chapter* links to where the value is computed. A rule reads the
# statistic its claim is about, judges a row against DPO through differences paired over prompts, checks
# perplexity on the same windows before anything a broken model could fake, and treats the paper's "only up to"
# as a bound.
#
# **The rule on an interval.** Where a chapter gives a statistic with a 95 % bootstrap interval
# $[\theta_{\text{low}}, \theta_{\text{high}}]$ (a difference from DPO paired over prompts, a share of DPO's drop
# {eq}`eq-share-of-drop`, a recovered fraction {eq}`eq-recovered-fraction`) and the claim says that it lies above
# a threshold $\theta_0$, the verdict is
#
# ```{math}
# :label: eq-verdict-interval
# \text{verdict} =
# \begin{cases}
# \text{reproduced} & \text{if } \theta_{\text{low}} > \theta_0,\\
# \text{not reproduced} & \text{if } \theta_{\text{high}} < \theta_0,\\
# \text{not testable here} & \text{if } \theta_{\text{low}} \le \theta_0 \le \theta_{\text{high}},
# \end{cases}
# ```
#
# with the inequalities reversed for a claim that it lies below; a rule may add a *partly* band between the
# threshold and a tolerance, stated in its row. A *reproduced* or *partly* verdict is then set against the null
# control's $z$ {eq}`eq-null-z`:
#
# ```{math}
# :label: eq-null-temper
# \lvert z \rvert < 2 \ \Rightarrow\ \text{not specific to toxicity}, \qquad
# 2 \le \lvert z \rvert < 3 \ \Rightarrow\ \text{partly},
# ```
#
# and stands from $\lvert z \rvert \ge 3$ (for a claim that a statistic stands *above* chance, $z$ itself in place
# of $\lvert z \rvert$).
#
# **Two metrics.** The claims about what a set of neurons does for DPO's effect (ablation falls short of DPO,
# patching the four groups reproduces it, toxic neurons account for only a small part of it) are judged on
# generated toxicity, the paper's metric, and on the mediation metric of chapter 5 (the fraction of DPO's shift
# of a teacher-forced log-probability margin that an intervention recovers). Such a row gives both verdicts; its
# own verdict is that of the metric that can decide, named in *why* ("decided by the mediation metric"), their
# common verdict, or *partly* where both decide and disagree.

# %% tags=["parameters"]
profile = "ci"
model = "smollm2-135m"
compare = None  # the executed chapters of another run (its book/ folder), whose verdicts are shown beside

# %% tags=["hide-input"]
from pathlib import Path

from IPython.display import HTML

from dpo_toxicity.book.glued import Glued
from dpo_toxicity.book.ledger import (
    DIFFERS,
    count_values,
    ledger_html,
    ledger_table,
    scorer_sensitivity,
    with_compared_verdicts,
)
from dpo_toxicity.book.runs import read_run
from dpo_toxicity.paper_claims import key_glossary

glued = Glued()  # every value the prose cites, kept for the ledger's verdicts

# The book runs every chapter with its staged folder as working directory: the executed chapters are siblings.
table = ledger_table(Path("."), model=model)
glued.many(count_values(table))
comparison = "No other run is compared on this build."
if compare is not None:
    compared = read_run(Path(compare).parent)
    table = with_compared_verdicts(table, ledger_table(Path(compare), model=model), f"{compared.profile} run")
    differing = list(table.index[table[DIFFERS]])
    comparison = (
        f"Beside each verdict stands that of the {compared.profile} run at commit "
        f"{compared.commit[:10]}, CI's regression run, whose job is to catch breakage, not to answer "
        f"the paper: {len(differing)} of the {len(table)} claims get another verdict there"
        + (f" ({', '.join(differing)}), flagged ⚠." if differing else ".")
    )
glued("claims_comparison", comparison)
HTML(ledger_html(table))

# %% [markdown]
# Of the {glue:text}`claims_total` claims, {glue:text}`claims_reproduced` are reproduced on this run,
# {glue:text}`claims_partly` partly, {glue:text}`claims_not_reproduced` not reproduced and
# {glue:text}`claims_not_specific` not specific to toxicity; {glue:text}`claims_not_testable` cannot be tested
# here (see *why*). The verdicts are those of the `profile` and `model` this page was built with; the `ci`
# profile evaluates on a few hundred prompts, so a verdict that rests on a small difference can change with
# the `full` profile. {glue:text}`claims_comparison` How the book departs from the paper's protocol, and which
# artefacts of the authors' code it does not copy, is listed in {doc}`/errata`.
#
# ## How much the verdicts owe to the scorer
#
# The offline scorer is the mean of two models (chapter 2). Every claim whose values rest on scored toxicity is
# judged again below with each of the two alone, the chapters having re-scored the same continuations: a verdict
# that holds under both halves does not hang on one of them.

# %% tags=["hide-input"]
sensitivity = scorer_sensitivity(Path("."))
glued("claims_scorer_judged", len(sensitivity))
glued("claims_scorer_sensitive", int(sensitivity["changes"].sum()))
sensitivity

# %% [markdown]
# Of the {glue:text}`claims_scorer_judged` claims that rest on scored toxicity,
# {glue:text}`claims_scorer_sensitive` change verdict when one half of the scorer judges alone.
#
# ## The values, key by key
#
# Each value in the *ours* columns is a number a chapter glued under the name shown; this index says what each
# one holds and which chapter computes it (`dpo_toxicity.paper_claims.KEY_MEANINGS`).

# %% tags=["hide-output"]
key_glossary()
