"""Figures of the attribution chapter: the paper's Figures 1b, 2a-c, 3, 4, the v3 activation-change
distributions, and the null control. Each takes the per-neuron table of :func:`~dpo_toxicity.attribution.
neuron_table` (columns ``layer``, ``neuron``, ``cosine``, ``activation_base``, ``activation_dpo``,
``projection_base``, ``projection_dpo``, ``delta``, ``group``, ``group_by_delta``) and returns a figure with
labelled axes, :func:`~dpo_toxicity.plots.finished`; captions live in the chapter.

Labels are Matplotlib mathtext in the book's notation (chapters 1 and 3): the mean activation m̄_i, the cosine
c_i = cos(v_i, w), the toxicity projection P_i, the reduction Δ_i, the totals R_+ and R_net, a group's share
s(G); a column or statistic is never shown by its key.
"""

from __future__ import annotations

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd

from .attribution import GROUPS, REDUCING
from .plots import COSINE, finished

GROUP_COLOURS = {"TP": "tab:red", "TN": "tab:blue", "AP": "tab:green", "AN": "tab:orange"}
REDUCING_COLOURS = {label: GROUP_COLOURS[group] for label, group in zip(REDUCING, GROUPS)}
ACTIVATION_CHANGE = r"\bar m_i^{\mathrm{base}} - \bar m_i^{\mathrm{DPO}}"  # mathtext, without its dollars
# The null control's statistics (null_control.STATISTICS) by their names in chapter 3's equations.
STATISTIC_LABELS = {
    "share_tp": r"share $s(\mathrm{TP}^{-})$",
    "share_tn": r"share $s(\mathrm{TN}^{+})$",
    "share_ap": r"share $s(\mathrm{AP}^{+})$",
    "share_an": r"share $s(\mathrm{AN}^{-})$",
    "net": r"net reduction $R_{\mathrm{net}} = \sum_i \Delta_i$",
    "positive_total": r"total reduction $R_{+} = \sum_{\Delta_i > 0} \Delta_i$",
    "net_over_positive_total": r"$R_{\mathrm{net}} / R_{+}$",
}


def cumulative_reduction(table: pd.DataFrame) -> plt.Figure:
    """Figure 1b: cumulative sum of ``Δ`` over neurons ranked from the largest to the smallest reduction."""
    ranked = np.sort(table["delta"].to_numpy())[::-1]
    cumulative = np.cumsum(ranked)
    fig, ax = plt.subplots(figsize=(6.5, 3.5))
    ax.plot(np.arange(1, len(ranked) + 1), cumulative, color="tab:purple")
    peak = int(np.argmax(cumulative))
    ax.axvline(peak + 1, color="grey", ls="--", lw=0.8, label=rf"last neuron with $\Delta_i > 0$ (rank {peak + 1:,})")
    ax.axhline(
        cumulative[-1], color="grey", ls=":", lw=0.8, label=rf"net $R_{{\mathrm{{net}}}}$ = {cumulative[-1]:.3g}"
    )
    ax.set_xlabel(r"neurons ranked by reduction $\Delta_i$")
    ax.set_ylabel(r"cumulative reduction $\sum \Delta_i$")
    ax.legend(fontsize=8)
    return finished(fig)


def group_share_bar(shares: pd.Series, paper_shares: pd.Series | None = None) -> plt.Figure:
    """Figure 2a: one stacked bar of the four reducing groups' shares (and the paper's beside it)."""
    columns = {"ours": shares}
    if paper_shares is not None:
        columns["paper (GPT-2-medium, reference)"] = paper_shares
    fig, ax = plt.subplots(figsize=(4.8, 3.8))
    for position, (label, values) in enumerate(columns.items()):
        bottom = 0.0
        for group in ("AN-", "TP-", "TN+", "AP+"):  # the paper's stacking order, bottom to top
            ax.bar(
                position,
                values[group],
                bottom=bottom,
                color=REDUCING_COLOURS[group],
                label=group if position == 0 else None,
                width=0.6,
            )
            ax.text(position, bottom + values[group] / 2, f"{values[group]:.0%}", ha="center", va="center", fontsize=8)
            bottom += values[group]
    ax.set_xticks(range(len(columns)), list(columns), fontsize=8)
    ax.set_xlabel("model")
    ax.set_ylabel(r"share $s(G)$ of the total reduction $R_{+}$")
    ax.legend(fontsize=8, loc="upper right", bbox_to_anchor=(1.45, 1))
    return finished(fig)


def ranked_group_contributions(table: pd.DataFrame, top: int, bin_size: int = 50) -> plt.Figure:
    """Figure 2b: the sum of ``Δ`` per group in consecutive bins of ``bin_size`` neurons ranked by ``Δ`` (the
    first ``top``)."""
    ranked = table.sort_values("delta", ascending=False).head(top).reset_index(drop=True)
    ranked["bin"] = ranked.index // bin_size
    sums = ranked.pivot_table(index="bin", columns="group", values="delta", aggfunc="sum", observed=False).fillna(0.0)
    fig, ax = plt.subplots(figsize=(8, 3.5))
    bottom = np.zeros(len(sums))
    starts = sums.index.to_numpy() * bin_size
    for group, label in zip(GROUPS, REDUCING):
        values = sums[group].to_numpy() if group in sums else np.zeros(len(sums))
        ax.bar(starts, values, bottom=bottom, width=bin_size, align="edge", color=GROUP_COLOURS[group], label=label)
        bottom += values
    ax.set_xlabel(rf"neurons ranked by reduction $\Delta_i$ (bins of {bin_size})")
    ax.set_ylabel(r"reduction $\sum \Delta_i$ in the bin")
    ax.legend(fontsize=8)
    return finished(fig)


def projection_shift_arrows(table: pd.DataFrame, top: int = 500) -> plt.Figure:
    """Figure 2c: for the ``top`` neurons by Δ, an arrow from (cosine, P_pre) to (cosine, P_dpo)."""
    ranked = table.sort_values("delta", ascending=False).head(top)
    fig, ax = plt.subplots(figsize=(6.5, 4.5))
    for group, label in zip(GROUPS, REDUCING):
        rows = ranked[ranked["group"] == group]
        ax.quiver(
            rows["cosine"],
            rows["projection_base"],
            np.zeros(len(rows)),
            rows["projection_dpo"] - rows["projection_base"],
            angles="xy",
            scale_units="xy",
            scale=1,
            color=GROUP_COLOURS[group],
            width=0.003,
            label=f"{label} ({len(rows)})",
        )
    ax.axhline(0, color="grey", lw=0.6)
    ax.axvline(0, color="grey", lw=0.6)
    ax.set_xlabel(COSINE)
    ax.set_ylabel(r"toxicity projection $P_i^{\mathrm{base}} \rightarrow P_i^{\mathrm{DPO}}$")
    ax.legend(fontsize=8)
    return finished(fig)


def per_layer_group_reduction(per_layer: pd.DataFrame) -> plt.Figure:
    """Figure 3 (and v3's reduced/increased panel): per-layer sum of ``Δ`` of each reducing group, with the
    per-layer sum of positive and the magnitude of the sum of negative ``Δ``."""
    fig, axes = plt.subplots(1, 2, figsize=(11, 3.5))
    for group, label in zip(GROUPS, REDUCING):
        axes[0].plot(per_layer.index, per_layer[label], marker=".", color=GROUP_COLOURS[group], label=label)
    axes[0].set_ylabel(r"reduction $\sum \Delta_i$ in the layer")
    axes[1].plot(per_layer.index, per_layer["reduced"], marker=".", label=r"$\sum_{\Delta_i > 0} \Delta_i$ (reduced)")
    axes[1].plot(
        per_layer.index, per_layer["increased"].abs(), marker=".", label=r"$|\sum_{\Delta_i < 0} \Delta_i|$ (increased)"
    )
    axes[1].fill_between(per_layer.index, per_layer["reduced"], per_layer["increased"].abs(), alpha=0.2)
    axes[1].set_ylabel("projection change in the layer")
    for ax in axes:
        ax.set_xlabel("MLP layer")
        ax.legend(fontsize=8)
    return finished(fig)


def top_toxic_activations(table: pd.DataFrame, top: int = 100) -> plt.Figure:
    """Figure 4: mean activations before and after DPO of the ``top`` neurons by cosine with the probe."""
    ranked = table.sort_values("cosine", ascending=False).head(top)
    positions = np.arange(len(ranked))
    fig, ax = plt.subplots(figsize=(10, 3.5))
    ax.bar(positions - 0.2, ranked["activation_base"], width=0.4, label="before DPO")
    ax.bar(positions + 0.2, ranked["activation_dpo"], width=0.4, label="after DPO")
    ax.axhline(0, color="grey", lw=0.6)
    ax.set_xlabel(rf"top {top} toxic neurons, ranked by $c_i = \cos(v_i, w)$")
    ax.set_ylabel(r"mean activation $\bar m_i$")
    ax.legend(fontsize=8)
    return finished(fig)


def activation_change_distributions(relative_change: pd.Series, table: pd.DataFrame) -> plt.Figure:
    """v3: histogram of the relative activation change (%) over all neurons and per reducing group."""
    fig, axes = plt.subplots(1, 2, figsize=(11, 3.5))
    values = relative_change.dropna()
    axes[0].hist(values, bins=60, color="grey")
    axes[0].axvline(values.mean(), color="black", lw=1, label=f"mean {values.mean():.1f} %")
    axes[0].axvline(values.mean() - values.std(), color="black", ls=":", lw=1, label=f"± SD {values.std():.1f} %")
    axes[0].axvline(values.mean() + values.std(), color="black", ls=":", lw=1)
    axes[0].set_xlabel(rf"relative activation change $100\,({ACTIVATION_CHANGE}) / \bar m_i^{{\mathrm{{base}}}}$ (%)")
    axes[0].set_ylabel("neurons")
    axes[0].legend(fontsize=8)
    bins = np.linspace(values.min(), values.max(), 50)
    for group, label in zip(GROUPS, REDUCING):
        in_group = values[table.loc[values.index, "group_by_delta"] == label]
        axes[1].hist(
            in_group,
            bins=bins,
            histtype="step",
            color=GROUP_COLOURS[group],
            lw=1.5,
            label=f"{label} (mean {in_group.mean():.1f} %)",
        )
    axes[1].set_xlabel("relative activation change (%)")
    axes[1].set_ylabel("neurons")
    axes[1].legend(fontsize=8)
    return finished(fig)


def change_versus_cosine(table: pd.DataFrame, sample: int = 5000, seed: int = 0) -> plt.Figure:
    """Activation change against cosine with the probe, for a random sample of neurons."""
    rows = table.sample(min(sample, len(table)), random_state=seed)
    fig, ax = plt.subplots(figsize=(6, 3.8))
    ax.scatter(rows["cosine"], rows["activation_base"] - rows["activation_dpo"], s=3, alpha=0.3, color="tab:grey")
    ax.axhline(0, color="black", lw=0.6)
    ax.set_xlabel(COSINE)
    ax.set_ylabel(f"activation change ${ACTIVATION_CHANGE}$")
    return finished(fig)


def null_distributions(null: pd.DataFrame, summary: pd.DataFrame, statistics: list[str]) -> plt.Figure:
    """Histograms of each statistic over random directions, with the probe's value as a red line; each x axis
    named by :data:`STATISTIC_LABELS` (``statistics``: names of :data:`~dpo_toxicity.null_control.STATISTICS`)."""
    fig, axes = plt.subplots(1, len(statistics), figsize=(3.2 * len(statistics), 3))
    for ax, statistic in zip(np.atleast_1d(axes), statistics):
        ax.hist(null[statistic], bins=30, color="grey", alpha=0.8, label="random directions")
        observed = summary.loc[statistic, "observed"]
        ax.axvline(observed, color="tab:red", lw=2, label=f"probe (z = {summary.loc[statistic, 'z']:.1f})")
        ax.set_xlabel(STATISTIC_LABELS[statistic])
        ax.set_ylabel("directions")
        ax.legend(fontsize=7)
    return finished(fig)
