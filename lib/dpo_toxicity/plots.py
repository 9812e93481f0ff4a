"""Figures shared by the chapters. Each function returns a Matplotlib figure with labelled axes.

Captions live in the chapters (as MyST figure captions), so a figure function states only what it draws.
"""

from __future__ import annotations

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import torch


def cosine_distribution_by_layer(cosines: torch.Tensor, top_neurons: pd.DataFrame) -> plt.Figure:
    """Per layer, the spread of ``cos(v_i, w)`` (box: quartiles, whiskers: 1st-99th percentile) and the top
    toxic neurons as red dots (``top_neurons`` has ``layer`` and ``score`` columns)."""
    values = cosines.numpy()
    n_layers = values.shape[0]
    fig, ax = plt.subplots(figsize=(10, 4))
    ax.boxplot(list(values), positions=np.arange(n_layers), whis=(1, 99), showfliers=False, widths=0.6)
    ax.scatter(top_neurons["layer"], top_neurons["score"], color="tab:red", s=14, zorder=3,
               label=f"top {len(top_neurons)} toxic neurons")
    ax.axhline(0.0, color="grey", lw=0.8)
    ax.set_xticks(np.arange(n_layers))
    ax.set_xlabel("MLP layer")
    ax.set_ylabel("cosine(value vector, probe)")
    ax.legend(loc="upper left")
    fig.tight_layout()
    return fig


def probe_score_histogram(probabilities: np.ndarray, labels: np.ndarray) -> plt.Figure:
    """Histogram of the probe's ``P(toxic)`` on held-out comments, split by the true label."""
    fig, ax = plt.subplots(figsize=(6, 3.5))
    bins = np.linspace(0, 1, 26)
    ax.hist(probabilities[labels == 0], bins=bins, alpha=0.6, label="non-toxic (label 0)")
    ax.hist(probabilities[labels == 1], bins=bins, alpha=0.6, label="toxic (label 1)")
    ax.set_xlabel("probe P(toxic)")
    ax.set_ylabel("held-out comments")
    ax.legend()
    fig.tight_layout()
    return fig
