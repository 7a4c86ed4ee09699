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
CONTROL = "none"  # the intervention of the control rows (untouched recipient, donor)


@styled
def plot_transfer(transfer: pd.DataFrame) -> Figure:
    """Dose response of a transfer (or ablation) grid: accuracy change against the set size k.

    Columns (``intervene.transfer.outcome_table``): ``intervention``, ``set_kind``
    ("effective", "redundant", "random"; "baseline" and "donor" on the control rows whose
    intervention is "none"), ``k``, ``decoding``, ``delta`` (accuracy minus the untouched
    model's on the same prompts), ``delta_low``, ``delta_high``. One panel per
    (intervention, decoding): effective and redundant sets are lines with intervals, the
    random sets a hatched band spanning their seeds' intervals around the mean of their
    deltas (dash-dotted), and the donor's own change a dotted line.
    """
    require(transfer, "transfer", ["intervention", "set_kind", "k", "decoding", "delta", "delta_low", "delta_high"])
    controls = transfer[transfer["intervention"] == CONTROL]
    panels = list(transfer[transfer["intervention"] != CONTROL].groupby(["intervention", "decoding"], sort=True))
    if not panels:
        raise NexError("the transfer table holds only control rows: no neuron set was intervened on")
    cols = min(len(panels), 3)
    nrows = -(-len(panels) // cols)
    fig = Figure(figsize=(DOUBLE if cols > 1 else SINGLE, 2.0 * nrows), layout="constrained")
    axes = fig.subplots(nrows, cols, squeeze=False, sharey=True).ravel()
    for ax, ((intervention, decoding), part) in zip(axes, panels):
        random = part[part["set_kind"] == "random"]
        if not random.empty:
            band = random.groupby("k").agg(low=("delta_low", "min"), high=("delta_high", "max"),
                                           mid=("delta", "mean"))
            ax.fill_between(band.index, band["low"], band["high"], facecolor=INK[2], alpha=0.35,
                            hatch="////", edgecolor="0.5", linewidth=0, label="random (seeds)")
            ax.plot(band.index, band["mid"], color=INK[1], linestyle=DASHES[3], linewidth=0.8)
        for kind, (color, marker, dash) in TRANSFER_SETS.items():
            line = part[part["set_kind"] == kind].groupby("k")[["delta", "delta_low", "delta_high"]].mean()
            if line.empty:
                continue
            ax.errorbar(line.index, line["delta"], yerr=np.vstack([line["delta"] - line["delta_low"],
                                                                    line["delta_high"] - line["delta"]]),
                        color=color, marker=marker, linestyle=dash, mfc="white" if kind == "redundant" else color,
                        elinewidth=0.6, label=kind)
        donor = controls[(controls["set_kind"] == "donor") & (controls["decoding"] == decoding)]
        if not donor.empty:
            ax.axhline(donor["delta"].iloc[0], color=INK[1], linestyle=DASHES[2], linewidth=0.8, label="donor")
        ax.axhline(0, color=INK[0], linewidth=0.5)
        if part["k"].max() > 10 * max(part["k"].min(), 1):
            ax.set_xscale("log")
        ax.set_title(f"{intervention}, {decoding}")
        ax.set_xlabel("neurons (k)")
    axes[0].set_ylabel("Δ accuracy vs untouched")
    axes[0].legend(loc="best")
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



FIGURES.add("transfer", FigureSpec(("transfer",), plot_transfer))
FIGURES.add("ablation", FigureSpec(("ablate",), plot_transfer))
FIGURES.add("neuron_weights", FigureSpec(("neuron_weights",), plot_neuron_weights))
