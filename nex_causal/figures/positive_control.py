"""The positive control: every pre-registered prediction against what was measured."""

from __future__ import annotations

import numpy as np
import pandas as pd
from matplotlib.figure import Figure

from nex_causal.figures.registry import FIGURES, FigureSpec
from nex_causal.figures.style import DOUBLE, INK, MARKERS, require, styled


@styled
def plot_positive_control(table: pd.DataFrame) -> Figure:
    """One row per prediction: the measured value with its 95% interval (filled where the prediction holds,
    open where it fails) and the predicted bound as a bracket; measures with no bound are grey.

    ``table``: ``id``, ``value``, ``low``, ``high``, ``predicted``, ``holds`` (the ``positive_control`` table).
    """
    require(table, "positive_control", ["id", "value", "low", "high", "predicted", "holds"])
    fig = Figure(figsize=(DOUBLE, 0.5 + 0.24 * len(table)), layout="constrained")
    ax = fig.subplots()
    y = np.arange(len(table))[::-1]
    for yi, row in zip(y, table.itertuples()):
        bounded = bool(row.predicted)
        color = INK[0] if bounded else INK[2]
        if np.isfinite(row.low) and np.isfinite(row.high):
            ax.plot([row.low, row.high], [yi, yi], color=color, linewidth=1.2)
        ax.plot(row.value, yi, marker=MARKERS[0], color=color, mfc=color if row.holds else "white", markersize=4)
        for part in str(row.predicted).split(" and "):
            if part.startswith(">="):
                ax.plot(float(part[2:]), yi, marker="|", color=INK[1], markersize=9, mew=1.2)
                ax.annotate("", (float(part[2:]) + 0.08, yi), (float(part[2:]), yi),
                            arrowprops={"arrowstyle": "->", "color": INK[1], "lw": 0.6})
            elif part.startswith("<="):
                ax.plot(float(part[2:]), yi, marker="|", color=INK[1], markersize=9, mew=1.2)
                ax.annotate("", (float(part[2:]) - 0.08, yi), (float(part[2:]), yi),
                            arrowprops={"arrowstyle": "->", "color": INK[1], "lw": 0.6})
    ax.axvline(0, color=INK[2], linewidth=0.5)
    ax.set_yticks(y, [f"{row.id} ({'holds' if row.holds else 'fails'})" if row.predicted else f"{row.id} (reported)"
                      for row in table.itertuples()])
    ax.set_xlabel("measured value (95% interval); bars: the predicted bound, arrows point to where it holds")
    return fig


def caption_positive_control(table: pd.DataFrame) -> str:
    """What the positive-control figure shows, and how many predictions held."""
    bounded = table[table["predicted"].astype(bool)]
    return (f"The positive control's {len(table)} predictions, written in the config before the run: each "
            f"measured value with its 95% interval (filled: the prediction holds; open: it fails), and the "
            f"predicted bound. {int(bounded['holds'].sum())} of {len(bounded)} bounded predictions hold; "
            f"{len(table) - len(bounded)} measures are reported without a bound.")


FIGURES.add("positive_control", FigureSpec(("positive_control",), plot_positive_control, caption_positive_control))
