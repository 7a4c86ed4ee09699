"""Best-of-N accuracy per selector."""

from __future__ import annotations

import numpy as np
import pandas as pd
from matplotlib.figure import Figure

from nex_causal.errors import NexError
from nex_causal.figures.registry import FIGURES, FigureSpec
from nex_causal.figures.style import DASHES, INK, MARKERS, SINGLE, require, styled

REFERENCE_SELECTORS = {"random": DASHES[1], "avg@n": DASHES[2], "oracle": DASHES[3]}


@styled
def plot_best_of_n(selection: pd.DataFrame) -> Figure:
    """Best-of-N accuracy per selector with its bootstrap interval; baselines as lines.

    Columns (``selectors.select``): ``selector``, ``accuracy``, ``ci_low``, ``ci_high``;
    optional ``status`` (rows not ``ok`` are left out). NEX selectors (names starting
    with ``nex``) are filled squares, the others open circles; ``random``, ``avg@n`` and
    ``oracle`` are vertical reference lines. A table of several caches (a ``cache``
    column, e.g. one per variant) is drawn as the mean over caches, the bars spanning the
    caches' lowest to highest accuracy.
    """
    require(selection, "selection", ["selector", "accuracy", "ci_low", "ci_high"])
    ok = selection["accuracy"].notna()
    if "status" in selection:
        ok &= selection["status"].eq("ok")
    table = selection[ok]
    n_caches = table["cache"].nunique() if "cache" in table else 1
    if n_caches > 1:
        table = table.groupby("selector", sort=False)["accuracy"].agg(
            accuracy="mean", ci_low="min", ci_high="max").reset_index()
    picked = table[~table["selector"].isin(list(REFERENCE_SELECTORS))].sort_values("accuracy")
    if picked.empty:
        raise NexError("the selection table holds no selector with an accuracy besides the baselines")
    fig = Figure(figsize=(SINGLE, 0.6 + 0.15 * len(picked)), layout="constrained")
    ax = fig.add_subplot()
    ypos = np.arange(len(picked))
    for is_nex, marker, fill in ((False, MARKERS[0], "white"), (True, MARKERS[1], INK[0])):
        part = picked["selector"].str.startswith("nex").to_numpy() == is_nex
        sub = picked[part]
        ax.errorbar(sub["accuracy"], ypos[part], xerr=np.vstack([sub["accuracy"] - sub["ci_low"],
                                                                  sub["ci_high"] - sub["accuracy"]]),
                    linestyle="none", marker=marker, color=INK[0], mfc=fill, ecolor=INK[1], elinewidth=0.7)
    for _, row in table[table["selector"].isin(list(REFERENCE_SELECTORS))].iterrows():
        ax.axvline(row["accuracy"], color=INK[1], linestyle=REFERENCE_SELECTORS[row["selector"]],
                   linewidth=0.8, label=row["selector"])
    ax.set_yticks(ypos, picked["selector"])
    ax.set_ylim(-0.7, len(picked) - 0.3)
    ax.set_xlabel("Best-of-N accuracy" + (f" (mean of {n_caches} caches; bars: range)" if n_caches > 1 else ""))
    if ax.get_legend_handles_labels()[0]:
        ax.legend(loc="lower center", bbox_to_anchor=(0.5, 1.0), ncol=3, borderaxespad=0.2)
    return fig



FIGURES.add("best_of_n", FigureSpec(("selection",), plot_best_of_n))
