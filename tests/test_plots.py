"""Every figure function draws something and labels every axis it draws on, in words and mathtext (the book's
notation), never with a column's or statistic's key."""

import io
import re
from types import SimpleNamespace

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import pytest
import torch

from dpo_toxicity import attribution_plots, plots
from dpo_toxicity.attribution import (
    NeuronActivations,
    activation_change_summary,
    group_shares,
    neuron_table,
    per_layer_reduction,
    relative_activation_change,
)
from dpo_toxicity.null_control import STATISTICS, null_shares, null_summary, random_directions

N_LAYERS, D_MLP, D_MODEL = 3, 40, 8


@pytest.fixture(scope="module")
def table():
    generator = torch.Generator().manual_seed(0)
    base = NeuronActivations(
        torch.randn(N_LAYERS, D_MLP, generator=generator, dtype=torch.float64),
        torch.zeros(N_LAYERS, D_MODEL, dtype=torch.float64),
        10,
    )
    dpo = NeuronActivations(
        base.mean * 0.8 + 0.05 * torch.randn(N_LAYERS, D_MLP, generator=generator, dtype=torch.float64),
        torch.zeros(N_LAYERS, D_MODEL, dtype=torch.float64),
        10,
    )
    values = torch.randn(N_LAYERS, D_MLP, D_MODEL, generator=generator)
    direction = torch.randn(D_MODEL, generator=generator, dtype=torch.float64)
    neurons = neuron_table(base, dpo, values, values, direction)
    null = null_shares(base, dpo, values, values, random_directions(20, D_MODEL, seed=1))
    return neurons, null


MATH = re.compile(r"(?<!\\)\$.*?(?<!\\)\$")


def assert_labelled(fig):
    """Every drawn axis has both labels; no label, title or legend entry shows an underscore outside mathtext
    (a raw key such as ``share_tp``); and the figure renders, which parses every mathtext label."""
    drawn = [ax for ax in fig.axes if ax.has_data()]
    assert drawn, "the figure draws nothing"
    for ax in drawn:
        assert ax.get_xlabel() and ax.get_ylabel(), f"unlabelled axes in {fig}"
        legend = ax.get_legend()
        texts = [ax.get_xlabel(), ax.get_ylabel(), ax.get_title()]
        texts += [text.get_text() for text in legend.get_texts()] if legend else []
        for text in texts:
            assert "_" not in MATH.sub("", text), f"a raw key in the label {text!r}"
    fig.savefig(io.BytesIO(), format="png", dpi=40)  # raises ValueError on mathtext that does not parse


def test_attribution_figures_are_labelled(table):
    neurons, null = table
    shares = group_shares(neurons)
    figures = [
        attribution_plots.cumulative_reduction(neurons),
        attribution_plots.group_share_bar(shares.shares, shares.shares),
        attribution_plots.ranked_group_contributions(neurons, top=100, bin_size=10),
        attribution_plots.projection_shift_arrows(neurons, top=50),
        attribution_plots.per_layer_group_reduction(per_layer_reduction(neurons)),
        attribution_plots.top_toxic_activations(neurons, top=20),
        attribution_plots.activation_change_distributions(relative_activation_change(neurons), neurons),
        attribution_plots.change_versus_cosine(neurons),
        attribution_plots.null_distributions(null, null_summary(shares, null), list(STATISTICS)),
    ]
    for fig in figures:
        assert_labelled(fig)
    assert len(activation_change_summary(neurons)) == 5


def test_general_figures_are_labelled():
    rng = np.random.default_rng(0)
    history = pd.DataFrame(
        {"loss": rng.random(5), "reward_margin": rng.random(5), "reward_accuracy": rng.random(5)},
        index=pd.RangeIndex(1, 6, name="step"),
    )
    validation = pd.DataFrame({"perplexity": [20.0, 21.0, 23.0]}, index=pd.Index([0, 2, 4], name="step"))
    dpo_result = SimpleNamespace(history=history, validation=validation, perplexity_limit=22.0, kept_step=2)
    table = pd.DataFrame({"toxicity": [0.3, 0.2], "PPL": [20.0, 21.0], "F1": [0.2, 0.2]}, index=["base", "DPO"])
    figures = [
        plots.probe_score_histogram(rng.random(20), np.arange(20) % 2),
        plots.cosine_distribution_by_layer(torch.randn(3, 10), pd.DataFrame({"layer": [0, 2], "score": [0.5, 0.4]})),
        plots.paired_toxicity(rng.random(10), rng.random(10)),
        plots.dpo_training(dpo_result),
        plots.metric_comparison(table, table),
        plots.layer_projections(pd.DataFrame({"before": rng.random(4), "after": rng.random(4)})),
        plots.shares_of_drop(
            pd.DataFrame({"m": [0.5, 1.0], "m low": [0.2, 0.8], "m high": [0.9, 1.2]}, index=["patch TP−", "patch all"])
        ),
        plots.toxicity_perplexity_tradeoff(
            pd.DataFrame(
                {
                    "model": ["a", "a", "b"],
                    "kind": ["base", "edit", "base"],
                    "PPL": [20.0, 25.0, 30.0],
                    "toxicity": [0.3, 0.2, 0.4],
                }
            )
        ),
    ]
    for fig in figures:
        assert_labelled(fig)


def test_a_label_with_a_raw_key_or_broken_mathtext_is_refused():
    fig, ax = plt.subplots()
    ax.plot([0, 1])
    ax.set_xlabel("share_tp")
    ax.set_ylabel(r"$\Delta_i$")
    with pytest.raises(AssertionError, match="raw key"):
        assert_labelled(fig)
    ax.set_xlabel(r"$\sum_{\Delta_i > 0$")
    with pytest.raises(ValueError):
        assert_labelled(fig)
