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
# # 1. The toxicity probe
#
# Everything in the paper is measured along one direction: the weight vector $w$ of a linear **toxicity
# probe** on the last-layer residual stream {cite}`lee2024mechanistic`. A neuron is *toxic* when its value
# vector points along $w$, and its *toxicity projection* is its write onto $w$
# {cite}`yang2024ablation`. This chapter trains that probe, checks how well it separates toxic from
# non-toxic comments it has not seen, and looks at the neurons whose value vectors align with it.
#
# **Protocol.** Features: the final-norm output of the model (Hugging Face's
# `hidden_states[-1]`), averaged over the real tokens of each Jigsaw comment (padding masked out, unlike the
# authors' code). Classifier: L2 logistic regression (scikit-learn) on the raw features, so that its weight
# vector lives in the residual-stream basis; `probe_regularisation` is its `C`. Strong regularisation
# (C = 0.01) is the default: on SmolLM2 it reaches the same held-out AUC as C = 0.1 to 1, and its direction
# is closer to toxic vocabulary (weaker regularisation fits exclamation marks and other surface marks of
# Jigsaw's toxic comments). Training data: balanced Jigsaw train
# pools; evaluation: the held-out Jigsaw test pools. Lee et al. report 94 % validation accuracy on
# GPT-2-medium with 561,808 comments at Jigsaw's natural balance; we have at most 5,000 training comments offline.
#
# **The probe.** For a comment $x$ whose real tokens, up to the profile's limit, are $t = 1, \dots, T$, let
# $h_t(x) \in \mathbb{R}^{d}$ be the final-norm state at token $t$ ($d$ is the residual stream's width). The probe
# reads their mean:
#
# ```{math}
# :label: eq-probe
# \bar h(x) = \frac{1}{T} \sum_{t=1}^{T} h_t(x), \qquad
# p(\text{toxic} \mid x) = \sigma\big(w \cdot \bar h(x) + b\big),
# ```
#
# with $\sigma$ the logistic function. Fitting chooses $w$ and $b$ to minimise, over the training comments $x_n$
# with labels $y_n = +1$ (toxic) or $-1$,
#
# ```{math}
# :label: eq-probe-fit
# \tfrac{1}{2} \lVert w \rVert^2 + C \sum_{n} \log\Big(1 + e^{-y_n (w \cdot \bar h(x_n) + b)}\Big),
# ```
#
# where $C$ is `probe_regularisation`. Every later chapter measures along the unit direction
# $\hat w = w / \lVert w \rVert$.

# %% tags=["parameters"]
profile = "ci"
model = "smollm2-135m"
probe_regularisation = 0.01
top_neurons_shown = 20
lens_tokens = 50
null_directions = 200
null_neurons = 2000

# %% tags=["hide-input"]
import warnings

import torch

from dpo_toxicity import data, neurons, plots
from dpo_toxicity.book.glued import Glued
from dpo_toxicity.book.provenance import RunRecord
from dpo_toxicity.models import load_model
from dpo_toxicity.null_control import random_directions
from dpo_toxicity.probe import JIGSAW_TOXIC_PREVALENCE
from dpo_toxicity.profiles import profile_named
from dpo_toxicity.run_artefacts import fit_probe
from dpo_toxicity.scoring import PERSPECTIVE_FILES, OfflineScorer

glued = Glued()  # every value the prose cites, kept for the ledger's verdicts

warnings.filterwarnings("ignore", category=FutureWarning)
settings = profile_named(profile)
lm = load_model(model)
settings = settings.sized_for(lm)  # on a GPU, batches sized to its free memory
record = RunRecord(
    "01_probe",
    settings,
    lm,
    data_files=[f"jigsaw/{pool}.csv" for split in data.JIGSAW_POOLS.values() for pool in split]
    + list(PERSPECTIVE_FILES),
)
lm

# %% [markdown]
# ## Features, training and held-out evaluation
#
# `fit_probe` (in `dpo_toxicity.run_artefacts`) mean-pools the final-norm states over each comment's first
# tokens, fits the logistic regression on balanced Jigsaw train comments and scores it on held-out test
# comments; the profile fixes how many comments of each class and how many tokens of each comment are read.
# The probe is saved as this run's artefact for the later chapters.

# %%
fit = fit_probe(lm, settings, regularisation=probe_regularisation)
probe, train_metrics, test_metrics = fit.probe, fit.train_metrics, fit.test_metrics
glued("probe_n_train", probe.info["n_train"])
glued("probe_n_test", len(fit.test_labels))
glued("probe_test_accuracy", test_metrics.accuracy)
glued("probe_test_auc", test_metrics.auc)
glued("probe_train_accuracy", train_metrics.accuracy)
glued("probe_accuracy_natural", test_metrics.natural_accuracy)
glued("probe_majority_baseline", 1 - JIGSAW_TOXIC_PREVALENCE)
test_metrics

# %% [markdown]
# On {glue:text}`probe_n_test` held-out Jigsaw comments the probe reaches an accuracy of
# {glue:text}`probe_test_accuracy:.3f` and a ROC-AUC of {glue:text}`probe_test_auc:.3f`, trained on
# {glue:text}`probe_n_train` comments (training accuracy {glue:text}`probe_train_accuracy:.3f`).
# *Reference (Lee et al., GPT-2-medium, 90:10 split of 561,808 comments): 94 % validation accuracy.*
#
# The two accuracies are not alike. Lee et al.'s test comments have Jigsaw's natural balance, about one toxic in
# ten, where always answering "non-toxic" already scores {glue:text}`probe_majority_baseline:.0%`; ours are
# balanced, where that answer scores 50 %. `accuracy_at_prevalence` (in `dpo_toxicity.probe`) gives the accuracy
# our probe would have at the natural balance: each class's held-out hit rate, weighted by its share there, with
# the decision threshold moved by the prior odds (a probe fitted on balanced classes calls a comment toxic at
# that balance when its probability reaches 0.9). It is {glue:text}`probe_accuracy_natural:.3f`, the number the
# claims ledger sets beside the paper's 94 %. A gap is expected from a 135M-parameter instruction-tuned model
# and a training set two orders of magnitude smaller; what later chapters need is a direction along which toxic
# text is clearly separated, and the score distributions below show how far it is.

# %% tags=["hide-input"] mystnb={"figure": {"caption": "The probe's predicted probability of toxicity on the held-out Jigsaw comments, by true label.", "name": "fig-probe-scores"}}
plots.probe_score_histogram(probe.predict_proba(fit.test_features), fit.test_labels)

# %% [markdown]
# ## The probe direction in vocabulary space
#
# Read through the unembedding (the logit lens, without the final norm as in Lee et al.'s Table 1), the
# probe direction should promote toxic tokens.

# %%
unit_probe = probe.unit_direction(lm.shape[2])
probe_tokens = neurons.logit_lens_tokens(lm, unit_probe[None, :], top=15)[0]
profanities = [" fuck", " shit", " bitch", " idiot", " stupid", " ass", " damn", " crap"]
pieces = {word.strip(): lm.tokenizer.tokenize(word) for word in profanities}
glued("profanities_total", len(pieces))
glued("profanities_single_token", sum(len(p) == 1 for p in pieces.values()))
probe_tokens

# %%
pieces

# %% [markdown]
# Only {glue:text}`profanities_single_token` of {glue:text}`profanities_total` common profanities are single
# tokens in this model's vocabulary; the others are split into pieces (see above), so a toxic direction's logit
# lens need not show whole toxic words, unlike GPT-2's (Lee et al. Table 1: `sh*t`, `f*ck`, ...): read the
# probe's top tokens above, and the neurons' below, with that in mind. Punctuation among them (`!`, `?!`) is
# a surface mark of angry Jigsaw comments that a linear probe also picks up.

# %%
flagged = torch.as_tensor(OfflineScorer().score(neurons.vocabulary(lm)) >= 0.5)
probe_lens = neurons.logit_lens_enrichment(
    lm, unit_probe[None, :], random_directions(null_directions, lm.shape[2], seed=0), flagged, top=lens_tokens
)
glued("vocabulary_flagged", int(flagged.sum()))
glued("vocabulary_size", len(flagged))
glued("lens_tokens_n", lens_tokens)
glued("null_directions_n", null_directions)
glued("logit_lens_toxic_share_probe", float(probe_lens["share"]))
glued("logit_lens_toxic_null_probe", float(probe_lens["null_mean"]))
glued("logit_lens_toxic_z_probe", float(probe_lens["z"]))
probe_lens

# %% [markdown]
# Whether the probe *promotes toxic tokens* is then counted rather than read. The offline scorer of chapter 2
# (`dpo_toxicity.scoring`) flags {glue:text}`vocabulary_flagged` of the model's {glue:text}`vocabulary_size`
# tokens, decoded one by one, as toxic (score ≥ 0.5). Among the probe's top {glue:text}`lens_tokens_n` logit-lens
# tokens it flags a fraction {glue:text}`logit_lens_toxic_share_probe:.0%`, against
# {glue:text}`logit_lens_toxic_null_probe:.1%` for {glue:text}`null_directions_n` random unit directions
# (z = {glue:text}`logit_lens_toxic_z_probe:.1f`; `neurons.logit_lens_enrichment`).

# %% [markdown]
# ## Toxic neurons
#
# An MLP layer is a sum of neuron writes, read as a key-value memory {cite}`geva2021feedforward`. At position
# $t$ of an input $x$, layer $\ell$ adds to the residual stream
#
# ```{math}
# :label: eq-neuron-write
# \mathrm{MLP}^{\ell}(x_t) = \sum_{i=1}^{d_{\text{mlp}}} m^{\ell}_i(x_t)\, v^{\ell}_i ,
# ```
#
# plus the output projection's bias where it has one. The activation $m_i$ is the neuron's input to the MLP's
# output projection (post-GELU in GPT-2; in a gated MLP, as in both offline models, the activated gate times
# the up projection) and the value vector $v_i$ is the neuron's row of that projection: neuron $i$ writes
# $m_i v_i$. Ranking every neuron by
# the cosine of its value vector with the probe,
#
# ```{math}
# :label: eq-toxic-cosine
# c_i = \cos(v_i, w) = \frac{v_i \cdot w}{\lVert v_i \rVert \, \lVert w \rVert},
# ```
#
# gives Lee et al.'s toxic neurons: those with the highest $c_i$. Their Table 1 lists GPT-2-medium's top neurons
# ($\mathrm{MLP}.v^{19}_{770}$, $v^{12}_{771}$, ...) whose value vectors promote slurs and profanity; here are ours,
# with the top tokens each one promotes.

# %%
cosines = neurons.value_vector_cosines(lm, unit_probe)
ranked = neurons.rank_neurons(cosines, top=top_neurons_shown).rename(columns={"score": "cosine"})
ranked["top tokens"] = [
    ", ".join(tokens) for tokens in neurons.logit_lens_tokens(lm, neurons.neuron_value_vectors(lm, ranked), top=8)
]
n_layers, d_mlp, d_model = lm.shape
glued("n_neurons", n_layers * d_mlp)
glued("max_cosine", float(cosines.max()))
glued("share_positive_cosine", float((cosines > 0).float().mean()))
neuron_lens = neurons.logit_lens_enrichment(
    lm,
    neurons.neuron_value_vectors(lm, ranked),
    neurons.neuron_value_vectors(lm, neurons.sample_neurons(lm, null_neurons, seed=0)),
    flagged,
    top=lens_tokens,
)
glued("top_neurons_shown_n", top_neurons_shown)
glued("null_neurons_n", null_neurons)
glued("logit_lens_toxic_share_neurons", float(neuron_lens["share"]))
glued("logit_lens_toxic_null_neurons", float(neuron_lens["null_mean"]))
glued("logit_lens_toxic_z_neurons", float(neuron_lens["z"]))
ranked.style.hide(axis="index").format({"cosine": "{:.3f}"})

# %% [markdown]
# Of the model's {glue:text}`n_neurons` neurons, the best aligned reaches a cosine of
# {glue:text}`max_cosine:.3f` with the probe; a fraction {glue:text}`share_positive_cosine:.3f` of all value
# vectors have a positive cosine. Random directions in a space of this width have cosines of order
# $1/\sqrt{d}$, so a value vector well above that is aligned with the probe by more than chance.
#
# Counted as for the probe, the scorer flags {glue:text}`logit_lens_toxic_share_neurons:.1%` of the top
# {glue:text}`lens_tokens_n` logit-lens tokens of these {glue:text}`top_neurons_shown_n` neurons, against
# {glue:text}`logit_lens_toxic_null_neurons:.1%` for {glue:text}`null_neurons_n` neurons drawn at random
# (z = {glue:text}`logit_lens_toxic_z_neurons:.1f`, against sets of {glue:text}`top_neurons_shown_n`).
# *Reference (Lee et al. Table 1): GPT-2-medium's top toxic value vectors promote profanity and slurs.*

# %% tags=["hide-input"] mystnb={"figure": {"caption": "Cosine between each MLP neuron's value vector and the probe direction, per layer (boxes: quartiles; whiskers: 1st to 99th percentile), with the top toxic neurons in red.", "name": "fig-cosine-by-layer"}}
plots.cosine_distribution_by_layer(cosines, neurons.rank_neurons(cosines, top=top_neurons_shown))

# %% [markdown]
# The probe is saved for the later chapters, which refuse a probe trained for another model width.
#
# ## Provenance

# %% tags=["hide-input"]
glued("probe_wall_minutes", record.wall_minutes)
record.table()
