"""A cache's profile: how fast novelty decays along a trace, and how many cycles responses have."""

from __future__ import annotations

import numpy as np
import pandas as pd
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator

from nex_causal.figures.registry import FIGURES, FigureSpec
from nex_causal.figures.style import DASHES, DOUBLE, INK, require, styled

REFERENCE = "reference"  # the variant label of the reference example's rows, when present


@styled
def plot_profile(curve: pd.DataFrame, responses: pd.DataFrame, reuse: pd.DataFrame) -> Figure:
    """Left: the median novelty slope (interquartile band) in each tenth of a response's rows,
    pooled over the caches, the reference example dashed when present. Middle: cycles per response.
    Right: the reuse share of each cycle by its index (where the credit comes from). Each panel's
    legend stands above it in one column, so legends never reach a neighbour or the canvas edge.

    ``curve``: ``variant``, ``position``, ``q25``, ``median``, ``q75`` (``profile.slope_curve``
    per variant, or pooled); ``responses``: ``variant``, ``cycles``, ``crediting_cycles``.
    """
    require(curve, "profile_curve", ["variant", "position", "q25", "median", "q75"])
    require(responses, "profile_responses", ["variant", "cycles", "crediting_cycles"])
    require(reuse, "profile_reuse", ["variant", "cycle", "median", "n"])
    fig = Figure(figsize=(DOUBLE, 2.9), layout="constrained")
    left, right, last = fig.subplots(1, 3)
    ours = curve[curve["variant"] != REFERENCE]
    pooled = ours.groupby("position")[["q25", "median", "q75"]].median()
    left.fill_between(pooled.index, pooled["q25"], pooled["q75"], facecolor=INK[2], alpha=0.5, linewidth=0,
                      label="interquartile range")
    left.plot(pooled.index, pooled["median"], color=INK[0], marker="o", markersize=2.5, label="median")
    reference = curve[curve["variant"] == REFERENCE]
    if not reference.empty:
        scale = pooled["median"].iloc[0] / reference["median"].iloc[0] if reference["median"].iloc[0] else 1.0
        left.plot(reference["position"], reference["median"] * scale, color=INK[1], linestyle=DASHES[1],
                  label="reference example, scaled")
    left.set_xlim(0, 1)
    left.set_ylim(bottom=0)
    left.set_xlabel("position in the response (share of rows)")
    left.set_ylabel("new neurons / token")
    cycles = responses.loc[responses["variant"] != REFERENCE, "cycles"].to_numpy()
    crediting = responses.loc[responses["variant"] != REFERENCE, "crediting_cycles"].to_numpy()
    top = int(max(cycles.max(initial=0), crediting.max(initial=0)))
    edges = np.arange(top + 2) - 0.5
    right.hist([cycles, crediting], bins=edges, color=[INK[0], "white"], edgecolor=INK[0], linewidth=0.6,
               hatch=None, label=["cycles", "crediting cycles"])
    right.axvline(np.median(cycles), color=INK[1], linestyle=DASHES[1], linewidth=0.8,
                  label=f"median cycles {np.median(cycles):g}")
    right.set_xlabel("cycles per response")
    right.set_ylabel("responses")
    mine = reuse[(reuse["variant"] != REFERENCE) & (reuse["n"] > 0)].groupby("cycle")["median"].median()
    last.plot(mine.index, mine.to_numpy(), color=INK[0], marker="o", markersize=2.5, label="caches (median)")
    theirs = reuse[(reuse["variant"] == REFERENCE) & (reuse["n"] > 0)]
    if not theirs.empty:
        last.plot(theirs["cycle"], theirs["median"], color=INK[1], linestyle=DASHES[1], marker="s", markersize=2.5,
                  label="reference example")
    last.set_ylim(0, 1)
    last.set_xlabel("cycle index")
    last.set_ylabel("reuse share")
    for ax in (left, right, last):  # one column of entries above each panel: as wide as the panel at most
        ax.legend(loc="lower left", bbox_to_anchor=(0.0, 1.0), borderaxespad=0.2, handlelength=1.5)
    for ax in (right, last):  # integer ticks, as many as the panel's width holds
        ax.xaxis.set_major_locator(MaxNLocator(nbins="auto", integer=True))
    return fig


def caption_profile(curve: pd.DataFrame, responses: pd.DataFrame, reuse: pd.DataFrame) -> str:
    """What the profile figure shows, over how many caches and responses."""
    ours = responses[responses["variant"] != REFERENCE]
    reference = " The dashed line is the reference example's cache, scaled to the same first tenth." if (
        curve["variant"] == REFERENCE).any() else ""
    return (f"Left: the median novelty slope (band: interquartile range) in each tenth of a response's rows, the "
            f"median over {ours['variant'].nunique()} cache{'s' if ours['variant'].nunique() > 1 else ''} ({len(ours)} responses).{reference} Middle: how many "
            f"explore-to-exploit cycles each response holds (median {np.median(ours['cycles']):g}) and how many of "
            f"them credit a neuron (median {np.median(ours['crediting_cycles']):g}). Right: the median share of each "
            f"cycle's exploit mass on neurons its explore run introduced, by the cycle's index: credit comes from "
            f"the cycles whose share stands out from the response's median.")


FIGURES.add("profile", FigureSpec(("profile_curve", "profile_responses", "profile_reuse"), plot_profile,
                                  caption_profile))
