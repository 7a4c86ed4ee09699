"""Dose responses of the causal grids, and where the credited neurons sit."""

from __future__ import annotations

import numpy as np
import pandas as pd
from matplotlib.figure import Figure
from matplotlib.ticker import FuncFormatter

from nex_causal.figures.registry import FIGURES, FigureSpec
from nex_causal.figures.style import (
    DASHES,
    DOUBLE,
    INK,
    MARKERS,
    SINGLE,
    require,
    styled,
)

TRANSFER_SETS = {"effective": (INK[0], MARKERS[0], DASHES[0]), "redundant": (INK[1], MARKERS[1], DASHES[1])}
POSITIVE = (INK[0], MARKERS[2], DASHES[2])  # the supervised positive control: what the test can see at each k


SIGNIFICANT = 0.05  # cells whose p-value against the random sets is below this are marked


@styled
def plot_transfer(summary: pd.DataFrame) -> Figure:
    """Dose response of a transfer (or ablation) grid: each set's mean change against k.

    Columns (``intervene.tables.gap_summary``; ``donor``/``recipient`` when several pairs ran):
    ``intervention``, ``outcome``, ``k``, ``dose``, ``effective_delta``, ``redundant_delta``,
    and with random sets ``random_delta``, ``random_low``, ``random_high`` (the null's central
    quantiles) and ``p_value``. One panel per (pair, intervention, outcome): effective and
    redundant sets are lines, the null its mean with bars over its central quantiles (and a
    hatched band between doses when there are several); an effective point whose p-value
    against the null is below 0.05 is ringed. The positive control (``positive_control_delta``: a supervised
    scorer's sets) is a dotted line: where it does not move the test cannot see; the ceiling (``ceiling_delta``:
    every MLP unit of the differing layers) is a horizontal line. The last dose may be every neuron of positive weight (tick ``all``).
    """
    require(summary, "transfer summary", ["intervention", "outcome", "k", "dose"])
    keys = ["donor", "recipient"] if {"donor", "recipient"} <= set(summary.columns) else []
    panels = list(summary.groupby([*keys, "intervention", "outcome"], sort=False))
    cols = min(len(panels), 2 if keys else 3)  # a pair's title needs half the text width
    nrows = -(-len(panels) // cols)
    fig = Figure(figsize=(DOUBLE if cols > 1 else SINGLE, 2.1 * nrows), layout="constrained")
    axes = fig.subplots(nrows, cols, squeeze=False).ravel()
    for ax, (key, part) in zip(axes, panels):
        part = part.sort_values("k")
        if "random_low" in part and part["random_low"].notna().any():
            null = part[part["random_low"].notna()]
            if len(null) > 1:
                ax.fill_between(null["k"], null["random_low"], null["random_high"], facecolor=INK[2], alpha=0.35,
                                hatch="////", edgecolor="0.5", linewidth=0, label="random (null quantiles)")
            ax.errorbar(null["k"], null["random_delta"], yerr=np.vstack([null["random_delta"] - null["random_low"],
                                                                         null["random_high"] - null["random_delta"]]),
                        color=INK[1], linestyle=DASHES[3] if len(null) > 1 else "none", linewidth=0.8, marker="_",
                        markersize=8, elinewidth=1.2, capsize=3, label="random: mean, central 95%")
        for kind, (color, marker, dash) in TRANSFER_SETS.items():
            if f"{kind}_delta" in part:
                ax.plot(part["k"], part[f"{kind}_delta"], color=color, marker=marker, linestyle=dash,
                        mfc="white" if kind == "redundant" else color, label=f"NEX {kind}")
        if "positive_control_delta" in part and part["positive_control_delta"].notna().any():
            color, marker, dash = POSITIVE
            ax.plot(part["k"], part["positive_control_delta"], color=color, marker=marker, linestyle=dash,
                    mfc="white", label=f"positive control ({part['positive_control'].dropna().iloc[0]})")
        if "ceiling_delta" in part and part["ceiling_delta"].notna().any():
            ax.axhline(float(part["ceiling_delta"].dropna().iloc[0]), color=INK[1], linestyle=DASHES[1],
                       linewidth=0.8, label="ceiling")
        if "p_value" in part:
            hit = part[part["p_value"] < SIGNIFICANT]
            if len(hit):
                ax.scatter(hit["k"], hit["effective_delta"], s=60, facecolor="none", edgecolor=INK[0],
                           linewidth=0.8, label=f"p < {SIGNIFICANT:g}", zorder=4)
        ax.axhline(0, color=INK[0], linewidth=0.5)
        if part["k"].max() > 10 * max(part["k"].min(), 1):
            ax.set_xscale("log")
        ax.set_xticks(part["k"], part["dose"], minor=False)
        ax.set_xticks([], minor=True)
        *pair, intervention, outcome = key
        ax.set_title((f"{pair[0]} → {pair[1]}\n" if pair else "") + f"{intervention}, {outcome}")
        ax.set_xlabel("neurons (k)")
        ax.set_ylabel("Δ vs untouched")
    entries = {}  # every panel's marks, each once: a ring appears in the legend only where one is drawn
    for ax in axes[:len(panels)]:
        for handle, label in zip(*ax.get_legend_handles_labels()):
            entries.setdefault(label, handle)
    fig.legend(list(entries.values()), list(entries), loc="outside lower center",
               ncol=min(2 if cols == 1 else 4, len(entries)))
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



def caption_transfer(summary: pd.DataFrame) -> str:
    """What a transfer or ablation figure shows, with its prompts and random sets."""
    pairs = summary.groupby(["donor", "recipient"]).ngroups if {"donor", "recipient"} <= set(summary) else 0
    where = (f"for {pairs} donor→recipient pair{'s' if pairs > 1 else ''}, " if pairs else "")
    text = (f"Mean change of each outcome against the untouched model on {int(summary['n_prompts'].max())} "
            f"held-out prompts, {where}per dose k, when the top-k effective (filled) and the bottom-k redundant "
            "(open) neurons of the NEX weights are intervened on.")
    if "random_low" in summary and summary["random_low"].notna().any():
        text += (f" The grey bars hold the central 95% of {int(summary['n_random'].max())} layer-matched random sets "
                 "of the same size, with their mean (a hatched band between doses); a ring would mark an effective "
                 f"set that beats the random sets with p < {SIGNIFICANT:g}, p being the share of random sets doing "
                 f"at least as well ({int((summary['p_value'] < SIGNIFICANT).sum())} cells ringed here).")
    if "positive_control_delta" in summary and summary["positive_control_delta"].notna().any():
        blind = int((~summary["positive_control_moved"].astype(bool)).sum())
        name = summary["positive_control"].dropna().iloc[0]
        text += (f" The dotted line is the positive control, the top-k units of the supervised scorer {name} "
                 "(learned on prompts the test never sees); it counts as moving the outcome only in the ceiling's "
                 "direction and by at least max(MDE, 10% of the ceiling), and where it does not the test cannot "
                 f"see at that dose ({blind} of {len(summary)} cells).")
    if "ceiling_delta" in summary and summary["ceiling_delta"].notna().any():
        text += " The horizontal line is the ceiling: every MLP unit of the layers where donor and recipient differ."
    text += " answer-logprob is the log-probability of the right answer after the model's own chain of thought; " \
            "solution-logprob that of the reference solution per token; greedy and sampled are accuracies." \
        if {"answer-logprob", "solution-logprob"} & set(summary["outcome"]) else ""
    return text


def caption_neuron_weights(weights: pd.DataFrame) -> str:
    """What the neuron-weight figure shows."""
    return (f"Neurons per layer that NEX credits as effective (w > 0, {int((weights['weight'] > 0).sum())} in all) "
            f"and redundant (w < 0, hatched, {int((weights['weight'] < 0).sum())}); neurons never credited "
            "(w = 0) are not drawn.")


FIGURES.add("transfer", FigureSpec(("transfer_summary",), plot_transfer, caption_transfer))
FIGURES.add("ablation", FigureSpec(("ablate_summary",), plot_transfer, caption_transfer))
FIGURES.add("donor_ablation", FigureSpec(("donor_ablation_summary",), plot_transfer, caption_transfer))
FIGURES.add("neuron_weights", FigureSpec(("neuron_weights",), plot_neuron_weights, caption_neuron_weights))
