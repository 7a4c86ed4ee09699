"""Dose responses of the causal grids, and where the credited neurons sit."""

from __future__ import annotations

import numpy as np
import pandas as pd
from matplotlib.figure import Figure
from matplotlib.ticker import FuncFormatter

from nex_causal.errors import NexError
from nex_causal.figures.registry import FIGURES, FigureSpec
from nex_causal.figures.style import DASHES, DOUBLE, INK, MARKERS, SINGLE, require, styled

TRANSFER_SETS = {"effective": (INK[0], MARKERS[0], DASHES[0]), "redundant": (INK[1], MARKERS[1], DASHES[1])}


SIGNIFICANT = 0.05  # cells whose p-value against the random sets is below this are marked


@styled
def plot_transfer(summary: pd.DataFrame) -> Figure:
    """Dose response of a transfer (or ablation) grid: each set's mean change against k.

    Columns (``intervene.tables.gap_summary``; ``donor``/``recipient`` when several pairs ran):
    ``intervention``, ``outcome``, ``k``, ``dose``, ``effective_delta``, ``redundant_delta``,
    and with random sets ``random_delta``, ``random_low``, ``random_high`` (the null's central
    quantiles) and ``p_value``. One panel per (pair, intervention, outcome): effective and
    redundant sets are lines, the null a hatched band with its mean dash-dotted; an effective
    point whose p-value against the null is below 0.05 is ringed. The last dose may be every
    neuron of positive weight (tick ``all``).
    """
    require(summary, "transfer summary", ["intervention", "outcome", "k", "dose", "effective_delta",
                                          "redundant_delta"])
    keys = ["donor", "recipient"] if {"donor", "recipient"} <= set(summary.columns) else []
    panels = list(summary.groupby([*keys, "intervention", "outcome"], sort=False))
    cols = min(len(panels), 3)
    nrows = -(-len(panels) // cols)
    fig = Figure(figsize=(DOUBLE if cols > 1 else SINGLE, 2.1 * nrows), layout="constrained")
    axes = fig.subplots(nrows, cols, squeeze=False).ravel()
    for ax, (key, part) in zip(axes, panels):
        part = part.sort_values("k")
        if "random_low" in part and part["random_low"].notna().any():
            ax.fill_between(part["k"], part["random_low"], part["random_high"], facecolor=INK[2], alpha=0.35,
                            hatch="////", edgecolor="0.5", linewidth=0, label="random (null quantiles)")
            ax.plot(part["k"], part["random_delta"], color=INK[1], linestyle=DASHES[3], linewidth=0.8)
        for kind, (color, marker, dash) in TRANSFER_SETS.items():
            ax.plot(part["k"], part[f"{kind}_delta"], color=color, marker=marker, linestyle=dash,
                    mfc="white" if kind == "redundant" else color, label=kind)
        if "p_value" in part:
            hit = part[part["p_value"] < SIGNIFICANT]
            ax.scatter(hit["k"], hit["effective_delta"], s=60, facecolor="none", edgecolor=INK[0], linewidth=0.8,
                       label=f"p < {SIGNIFICANT:g}", zorder=4)
        ax.axhline(0, color=INK[0], linewidth=0.5)
        if part["k"].max() > 10 * max(part["k"].min(), 1):
            ax.set_xscale("log")
        ax.set_xticks(part["k"], part["dose"], minor=False)
        ax.set_xticks([], minor=True)
        *pair, intervention, outcome = key
        ax.set_title((f"{pair[0]} → {pair[1]}\n" if pair else "") + f"{intervention}, {outcome}")
        ax.set_xlabel("neurons (k)")
        ax.set_ylabel("Δ vs untouched")
    handles, labels = axes[0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="outside lower center", ncol=min(4, len(labels)))
    for ax in axes[len(panels):]:
        ax.set_visible(False)
    return fig


@styled
def plot_neuron_weights(weights: pd.DataFrame) -> Figure:
    """How many effective (w > 0) and redundant (w < 0) neurons each layer holds.

    Columns: ``layer``, ``weight`` (``key`` and ``unit`` may be present; neurons with
    weight 0, never credited, are not counted). Effective counts rise above the axis,
    redundant counts hang below it, hatched.
    """
    require(weights, "neuron_weights", ["layer", "weight"])
    layers = np.arange(int(weights["layer"].max()) + 1)
    positive = np.bincount(weights.loc[weights["weight"] > 0, "layer"].astype(int), minlength=len(layers))
    negative = np.bincount(weights.loc[weights["weight"] < 0, "layer"].astype(int), minlength=len(layers))
    fig = Figure(figsize=(SINGLE, 2.0), layout="constrained")
    ax = fig.add_subplot()
    ax.bar(layers, positive, color=INK[0], width=0.8, label="effective (w > 0)")
    ax.bar(layers, -negative, color="white", edgecolor=INK[0], hatch="/////", width=0.8, linewidth=0.5,
           label="redundant (w < 0)")
    ax.axhline(0, color=INK[0], linewidth=0.5)
    ax.yaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{abs(v):g}"))
    ax.set_xlabel("layer")
    ax.set_ylabel("neurons")
    ax.legend(loc="lower center", bbox_to_anchor=(0.5, 1.0), ncol=2, borderaxespad=0.2)
    return fig



FIGURES.add("transfer", FigureSpec(("transfer_summary",), plot_transfer))
FIGURES.add("ablation", FigureSpec(("ablate_summary",), plot_transfer))
FIGURES.add("neuron_weights", FigureSpec(("neuron_weights",), plot_neuron_weights))
