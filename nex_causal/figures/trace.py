"""One response's novelty slopes along the trace, its E/X phases shaded and its cycles marked."""

from __future__ import annotations

import pandas as pd
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.patches import Patch

from nex_causal.errors import NexError
from nex_causal.figures.registry import FIGURES, FigureSpec
from nex_causal.figures.style import (
    DASHES,
    EXPLORE_SHADE,
    INK,
    MARKERS,
    SINGLE,
    require,
    styled,
)
from nex_causal.nex.runlength import runs


@styled
def plot_trace(trace: pd.DataFrame) -> Figure:
    """Novelty slope along one response, E phases shaded, explore-to-exploit cycles marked.

    Columns: ``row`` (window index), ``slope`` (newly recruited neurons per token),
    ``explore`` (bool, the HMM phase); optional ``cycle`` (the cycle a row belongs to, -1
    for none) and ``cycle_kind`` ("effective", "redundant" or "none"). A ``response``
    column, if present, must hold a single value.
    """
    require(trace, "trace", ["row", "slope", "explore"])
    if "response" in trace and trace["response"].nunique() > 1:
        raise NexError(f"the trace table holds {trace['response'].nunique()} responses; "
                       "keep the rows of one response")
    trace = trace.sort_values("row")
    rows = trace["row"].to_numpy()
    explore = trace["explore"].to_numpy(dtype=bool)
    fig = Figure(figsize=(SINGLE, 2.2), layout="constrained")
    ax = fig.add_subplot()
    for first, last in [(a, b) for is_e, a, b in runs(explore) if is_e]:
        ax.axvspan(rows[first] - 0.5, rows[last] + 0.5, facecolor=EXPLORE_SHADE, edgecolor="none", zorder=0)
    ax.plot(rows, trace["slope"], color=INK[0], marker=MARKERS[0], markersize=2.2, zorder=3)
    handles = [Patch(facecolor=EXPLORE_SHADE, label="explore (E)"),
               Line2D([], [], color=INK[0], marker=MARKERS[0], markersize=2.2, label="novelty slope")]
    if "cycle" in trace:
        kinds = {"effective": DASHES[0], "redundant": DASHES[1], "none": DASHES[2]}
        bracket = ax.get_xaxis_transform()  # x in rows, y in axes fractions
        seen = set()
        for cycle, part in trace[trace["cycle"] >= 0].groupby("cycle"):
            kind = str(part["cycle_kind"].iloc[0]) if "cycle_kind" in part else "none"
            first, last = part["row"].min() - 0.35, part["row"].max() + 0.35  # a gap between cycles
            switch = part.loc[~part["explore"].astype(bool), "row"].min() - 0.5
            ax.plot([first, last], [1.02, 1.02], transform=bracket, clip_on=False,
                    color=INK[0], linestyle=kinds.get(kind, DASHES[3]), linewidth=1.2)
            ax.plot([switch], [1.02], transform=bracket, clip_on=False,
                    color=INK[0], marker="|", markersize=5)
            seen.add(kind)
        handles += [Line2D([], [], color=INK[0], linestyle=kinds[k], linewidth=1.2, label=f"{k} cycle")
                    for k in kinds if k in seen]
    ax.set_xlim(rows.min() - 0.5, rows.max() + 0.5)
    ax.set_ylim(bottom=0)
    ax.set_xlabel("window (row)")
    ax.set_ylabel("new neurons / token")
    ax.legend(handles=handles, loc="lower center", bbox_to_anchor=(0.5, 1.05), ncol=2,
              columnspacing=1.0, handletextpad=0.4, borderaxespad=0)
    return fig



def caption_trace(trace: pd.DataFrame) -> str:
    """What the trace figure shows: the rows, phases and cycles of one response."""
    explore = trace["explore"].astype(bool)
    text = (f"One response's novelty slope (neurons active for the first time in the response, per token) in each "
            f"of its {len(trace)} cache rows; shaded rows ({int(explore.sum())}) are the explore (E) phase of "
            "the sticky two-state HMM, the others exploit (X).")
    if "cycle" in trace:
        cycles = trace[trace["cycle"] >= 0]
        kinds = (cycles.groupby("cycle")["cycle_kind"].first().value_counts() if "cycle_kind" in cycles
                 else pd.Series(dtype=int))
        counts = ", ".join(f"{n} {kind}" for kind, n in kinds.items())
        text += (f" Brackets above the axes mark its {cycles['cycle'].nunique()} explore-to-exploit cycles"
                 f"{f' ({counts})' if counts else ''}, a tick at the switch to exploit; a cycle's kind decides "
                 "whether the neurons its E run introduced are credited effective or redundant.")
    return text


FIGURES.add("trace", FigureSpec(("trace",), plot_trace, caption_trace))
