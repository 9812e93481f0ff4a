"""Figures shared by the chapters. Each function returns a Matplotlib figure with labelled axes.

Captions live in the chapters, in the metadata of the cell that draws the figure (``mystnb.figure``), so a figure
function states only what it draws. Every function returns its figure :func:`finished`: laid out and closed in
pyplot, so that a notebook cell whose value it is shows it exactly once. Labels use Matplotlib mathtext in the
book's notation (c_i, the probe's p(toxic | x)) and readable names, never a column's key (:data:`METRIC_LABELS`).
"""

from __future__ import annotations

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import torch

# The cosine of a neuron's value vector with the probe, chapter 1's c_i.
COSINE = r"$c_i = \cos(v_i, w)$, value vector against the probe"


def finished(fig: plt.Figure) -> plt.Figure:
    """``fig`` laid out and closed in pyplot, returned. Matplotlib's inline backend shows every figure pyplot
    still holds when a cell ends; a closed one is shown only as the cell's value, once, which is how a chapter's
    figure cell presents it under the caption in its metadata. Closing also frees it once the caller drops it."""
    fig.tight_layout()
    plt.close(fig)
    return fig


# The columns of an evaluation table (evaluation.py) by what they measure.
METRIC_LABELS = {
    "toxicity": "mean toxicity of continuations",
    "PPL": "WikiText-2 perplexity",
    "F1": "F1 against WikiText-2 continuations",
}


def cosine_distribution_by_layer(cosines: torch.Tensor, top_neurons: pd.DataFrame) -> plt.Figure:
    """Per layer, the spread of ``cos(v_i, w)`` (box: quartiles, whiskers: 1st-99th percentile) and the top
    toxic neurons as red dots (``top_neurons`` has ``layer`` and ``score`` columns)."""
    values = cosines.numpy()
    n_layers = values.shape[0]
    fig, ax = plt.subplots(figsize=(10, 4))
    ax.boxplot(list(values), positions=np.arange(n_layers), whis=(1, 99), showfliers=False, widths=0.6)
    ax.scatter(
        top_neurons["layer"],
        top_neurons["score"],
        color="tab:red",
        s=14,
        zorder=3,
        label=f"top {len(top_neurons)} toxic neurons",
    )
    ax.axhline(0.0, color="grey", lw=0.8)
    ax.set_xticks(np.arange(n_layers))
    ax.set_xlabel("MLP layer")
    ax.set_ylabel(COSINE)
    ax.legend(loc="upper left")
    return finished(fig)


def probe_score_histogram(probabilities: np.ndarray, labels: np.ndarray) -> plt.Figure:
    """Histogram of the probe's ``P(toxic)`` on held-out comments, split by the true label."""
    fig, ax = plt.subplots(figsize=(6, 3.5))
    bins = np.linspace(0, 1, 26)
    ax.hist(probabilities[labels == 0], bins=bins, alpha=0.6, label="non-toxic (label 0)")
    ax.hist(probabilities[labels == 1], bins=bins, alpha=0.6, label="toxic (label 1)")
    ax.set_xlabel(r"probe's $p(\mathrm{toxic} \mid x)$")
    ax.set_ylabel("held-out comments")
    ax.legend()
    return finished(fig)


def paired_toxicity(chosen: np.ndarray, rejected: np.ndarray) -> plt.Figure:
    """Histograms of the offline toxicity score of chosen and rejected continuations."""
    fig, ax = plt.subplots(figsize=(6, 3.5))
    bins = np.linspace(0, 1, 26)
    ax.hist(chosen, bins=bins, alpha=0.6, label="chosen (greedy)")
    ax.hist(rejected, bins=bins, alpha=0.6, label="rejected (generated toxic)")
    ax.set_xlabel("offline toxicity score")
    ax.set_ylabel("pairs")
    ax.legend()
    return finished(fig)


def dpo_training(result) -> plt.Figure:
    """DPO loss, reward margin and reward accuracy per optimiser step (trl's log history), and the stopping rule's
    validation perplexity with its limit; a dotted line marks the step whose weights were kept
    (a :class:`~dpo_toxicity.dpo.DPOResult`)."""
    history = result.history
    fig, axes = plt.subplots(1, 4, figsize=(15, 3.2))
    for ax, column, label in zip(
        axes,
        ["loss", "reward_margin", "reward_accuracy"],
        ["DPO loss", "reward margin (chosen - rejected)", "reward accuracy"],
    ):
        ax.plot(history.index, history[column], marker=".")
        ax.set_ylabel(label)
    validation = axes[3]
    validation.plot(result.validation.index, result.validation["perplexity"], marker="o", label="policy")
    if result.perplexity_limit is not None:
        validation.axhline(result.perplexity_limit, color="tab:red", ls="--", label="limit")
        validation.legend(fontsize=8)
    validation.set_ylabel("validation perplexity")
    for ax in axes:
        ax.axvline(result.kept_step, color="grey", ls=":")
        ax.set_xlabel("optimiser step")
    return finished(fig)


def metric_comparison(table: pd.DataFrame, reference: pd.DataFrame) -> plt.Figure:
    """Ours vs the paper's values, per metric, for the rows of ``table`` (index = model) present in
    ``reference``; each metric in its own panel because their scales differ."""
    metrics = ["toxicity", "PPL", "F1"]
    fig, axes = plt.subplots(1, 3, figsize=(11, 3.2))
    positions = np.arange(len(table.index))
    for ax, metric in zip(axes, metrics):
        ax.bar(positions - 0.2, table[metric], width=0.4, label="ours")
        ax.bar(positions + 0.2, reference[metric], width=0.4, label="paper (GPT-2-medium, reference)")
        ax.set_xticks(positions, table.index)
        ax.set_xlabel("model")
        ax.set_ylabel(METRIC_LABELS[metric])
    axes[0].legend(fontsize=8)
    return finished(fig)


def layer_projections(projections: pd.DataFrame) -> plt.Figure:
    """Figure 1a: one dashed line per condition (columns) of the per-layer MLP-output projection (index)."""
    fig, ax = plt.subplots(figsize=(9, 3.8))
    for column in projections.columns:
        ax.plot(projections.index, projections[column], ls="--", marker=".", label=column)
    ax.axhline(0, color="grey", lw=0.6)
    ax.set_xlabel("MLP layer")
    ax.set_ylabel("MLP output projection onto the probe")
    ax.legend(fontsize=8)
    return finished(fig)


def shares_of_drop(shares: pd.DataFrame) -> plt.Figure:
    """Horizontal bars of each row's share of DPO's toxicity drop, one bar per model (``shares``: index = row,
    columns = models; ``lows`` / ``highs`` columns named ``<model> low`` / ``<model> high`` give the interval)."""
    models = [column for column in shares.columns if not column.endswith((" low", " high"))]
    fig, ax = plt.subplots(figsize=(9, 0.45 * len(shares) + 1.5))
    positions = np.arange(len(shares))
    height = 0.8 / len(models)
    for offset, model in enumerate(models):
        values = shares[model].to_numpy()
        errors = np.abs(np.vstack([values - shares[f"{model} low"], shares[f"{model} high"] - values]))
        ax.barh(positions + offset * height, values, height=height, xerr=errors, capsize=2, label=model)
    ax.axvline(1.0, color="black", lw=0.8, ls="--")
    ax.axvline(0.0, color="grey", lw=0.6)
    ax.set_yticks(positions + height * (len(models) - 1) / 2, shares.index)
    ax.invert_yaxis()
    ax.set_xlabel("share of DPO's toxicity drop (1 = as much as DPO; bars: 95 % bootstrap interval)")
    ax.set_ylabel("intervention on the base model")
    ax.legend(fontsize=8)
    return finished(fig)


def toxicity_perplexity_tradeoff(points: pd.DataFrame) -> plt.Figure:
    """Toxicity against perplexity, one panel per model (column ``model``), one marker per row (``kind``
    in the legend: base, DPO, edit ...); perplexity on a log axis because clamping edits can explode it."""
    models = list(dict.fromkeys(points["model"]))
    fig, axes = plt.subplots(1, len(models), figsize=(5.5 * len(models), 4), squeeze=False)
    for ax, model in zip(axes[0], models):
        for kind, rows in points[points["model"] == model].groupby("kind", sort=False):
            ax.scatter(rows["PPL"], rows["toxicity"], label=kind, s=30)
        ax.set_xscale("log")
        ax.set_xlabel(f"{METRIC_LABELS['PPL']} (log scale)")
        ax.set_ylabel(METRIC_LABELS["toxicity"])
        ax.set_title(model)
        ax.legend(fontsize=8)
    return finished(fig)


def mediation_fractions(tables: dict[str, pd.DataFrame]) -> plt.Figure:
    """Recovered fraction of DPO's margin shift per neuron set, denoising and noising side by side, one panel per
    model. Each table (index = set) has ``denoising``/``noising`` with ``low``/``high`` columns and ``random mean``
    / ``random sd`` (the random sets of the same per-layer counts, denoising), drawn as a grey band of ±2 SD."""
    fig, axes = plt.subplots(
        1,
        len(tables),
        figsize=(6.5 * len(tables), 0.5 * max(map(len, tables.values())) + 2),
        squeeze=False,
        sharex=True,
    )
    for ax, (model, table) in zip(axes[0], tables.items()):
        positions = np.arange(len(table))
        for offset, (direction, colour) in enumerate([("denoising", "tab:blue"), ("noising", "tab:orange")]):
            values = table[direction].to_numpy()
            errors = np.abs(np.vstack([values - table[f"{direction} low"], table[f"{direction} high"] - values]))
            ax.barh(
                positions + 0.4 * offset,
                values,
                height=0.4,
                xerr=errors,
                capsize=2,
                color=colour,
                label=f"{direction} ({'base model, set from DPO' if offset == 0 else 'DPO model, set from base'})",
            )
        band = table["random mean"].to_numpy()
        spread = 2 * table["random sd"].to_numpy()
        for position, centre, width in zip(positions, band, spread):
            if np.isfinite(centre):
                ax.fill_betweenx(
                    [position - 0.25, position + 0.25],
                    centre - width,
                    centre + width,
                    color="grey",
                    alpha=0.35,
                    lw=0,
                    label="random sets of the same size (±2 SD, denoising)"
                    if position == positions[np.isfinite(band)][0]
                    else None,
                )
        ax.axvline(1.0, color="black", lw=0.8, ls="--")
        ax.axvline(0.0, color="grey", lw=0.6)
        ax.set_yticks(positions + 0.2, [f"{name} ({n:,})" for name, n in zip(table.index, table["neurons"])])
        ax.invert_yaxis()
        ax.set_xlabel(r"recovered fraction $f$ of DPO's margin shift (1 = all of it; bars: 95 % bootstrap interval)")
        ax.set_ylabel("neuron set patched token by token (neurons)")
        ax.set_title(model)
        ax.legend(fontsize=7, loc="lower right")
    return finished(fig)
