"""The positive control: the pre-registered predictions against what was measured, the unit scorers side by side,
the negative controls as distributions, and the departures from the reference NEX."""

from __future__ import annotations

import numpy as np
import pandas as pd
from matplotlib.figure import Figure
from matplotlib.patches import Rectangle

from nex_causal.figures.registry import FIGURES, FigureSpec
from nex_causal.figures.style import DOUBLE, INK, MARKERS, require, styled

VERDICT = {"yes": "holds", "NO": "fails", "reported": "reported"}


def _bounds(predicted: str) -> list[tuple[str, float]]:
    """The (direction, value) pairs of a ``predicted`` text such as ">= 0.2 and <= 0.5" ("none": no bound)."""
    return [(part[:2], float(part[2:])) for part in str(predicted).split(" and ") if part[:2] in (">=", "<=")]


@styled
def plot_positive_control(table: pd.DataFrame) -> Figure:
    """One row per prediction: the measured value with its interval (filled where the prediction holds, open where
    it fails, grey where it is only reported) and the predicted bound as a bar with an arrow towards where it holds.

    ``table``: ``id``, ``value``, ``low``, ``high``, ``predicted``, ``holds`` (the ``positive_control`` table).
    """
    require(table, "positive_control", ["id", "value", "low", "high", "predicted", "holds"])
    fig = Figure(figsize=(DOUBLE, 0.6 + 0.24 * len(table)), layout="constrained")
    ax = fig.subplots()
    y = np.arange(len(table))[::-1]
    for yi, row in zip(y, table.itertuples()):
        color = INK[2] if row.holds == "reported" else INK[0]
        if np.isfinite(row.low) and np.isfinite(row.high):
            ax.plot([row.low, row.high], [yi, yi], color=color, linewidth=1.2)
        ax.plot(row.value, yi, marker=MARKERS[0], color=color, mfc=color if row.holds == "yes" else "white",
                markersize=4)
        for direction, value in _bounds(row.predicted):
            ax.plot(value, yi, marker="|", color=INK[1], markersize=9, mew=1.2)
            ax.annotate("", (value + (0.08 if direction == ">=" else -0.08), yi), (value, yi),
                        arrowprops={"arrowstyle": "->", "color": INK[1], "lw": 0.6})
    ax.axvline(0, color=INK[2], linewidth=0.5)
    ax.set_yticks(y, [f"{row.id} ({VERDICT.get(row.holds, row.holds)})" for row in table.itertuples()])
    ax.set_xlabel("measured value (interval); bars: the predicted bound, arrows point to where it holds")
    return fig


def caption_positive_control(table: pd.DataFrame) -> str:
    """What the positive-control figure shows, and how many predictions held."""
    bounded = table[table["holds"] != "reported"]
    exact = table[table["p_method"].astype(str).str.startswith("exact")] if "p_method" in table else table.iloc[:0]
    return (f"The positive control's {len(table)} predictions, written in the config before the run: each "
            "measured value with its interval (bootstrap, BCa where over prompts; filled: the prediction holds; "
            f"open: it fails) and the predicted bound. {int((bounded['holds'] == 'yes').sum())} of {len(bounded)} "
            f"bounded predictions hold; {len(table) - len(bounded)} measures are reported without a bound"
            + (f"; {len(exact)} rank predictions carry an exact permutation p over the variants' orders."
               if len(exact) else "."))


@styled
def plot_units(units: pd.DataFrame) -> Figure:
    """Every unit scorer's AUROC of the real families' planted units against the decoys', with its interval; the
    label-free stories light, NEX black, supervised scorers open."""
    require(units, "positive_control_units", ["scorer", "kind", "auroc", "low", "high"])
    table = units.sort_values("auroc")
    fig = Figure(figsize=(DOUBLE / 2 + 1.0, 0.6 + 0.22 * len(table)), layout="constrained")
    ax = fig.subplots()
    y = np.arange(len(table))
    for yi, row in zip(y, table.itertuples()):
        color = INK[0] if row.scorer.startswith("nex") else (INK[2] if row.kind == "label-free story" else INK[1])
        ax.plot([row.low, row.high], [yi, yi], color=color, linewidth=1.2)
        ax.plot(row.auroc, yi, marker=MARKERS[1], color=color, markersize=4,
                mfc="white" if row.kind == "supervised" else color)
    ax.axvline(0.5, color=INK[2], linewidth=0.5, linestyle=":")
    ax.set_yticks(y, [f"{row.scorer} ({row.kind})" for row in table.itertuples()])
    ax.set_xlabel("AUROC: real-family above decoy units")
    return fig


def caption_units(units: pd.DataFrame) -> str:
    nex = units[units["scorer"] == "nex-effective"]
    best = units[units["kind"] == "label-free story"].sort_values("auroc").tail(1)
    text = ("How well each unit score ranks the real strategy families' planted units above the decoys' (AUROC, "
            "95% bootstrap interval over units): NEX's weights pooled over the planted levels, the label-free "
            "stories (how often, how much, how early a unit appears), and the localization methods of the run's "
            "transfer pair.")
    if len(nex) and len(best):
        text += (f" NEX {nex['auroc'].iloc[0]:.3f}; the best label-free story, {best['scorer'].iloc[0]}, "
                 f"{best['auroc'].iloc[0]:.3f}.")
    return text


@styled
def plot_nulls(nulls: pd.DataFrame) -> Figure:
    """Each negative control's distribution of the unit AUROC over its draws, with NEX's observed AUROC."""
    require(nulls, "positive_control_nulls", ["control", "draw", "auroc", "observed"])
    controls = list(dict.fromkeys(nulls["control"]))
    fig = Figure(figsize=(DOUBLE, 1.9), layout="constrained")
    axes = fig.subplots(1, len(controls), squeeze=False, sharey=True)[0]
    observed = float(nulls["observed"].iloc[0])
    low = min(nulls["auroc"].min(), observed) - 0.02
    high = max(nulls["auroc"].max(), observed) + 0.02
    for ax, name in zip(axes, controls):
        values = nulls.loc[nulls["control"] == name, "auroc"]
        ax.hist(values, bins=np.linspace(low, high, 25), color=INK[2], edgecolor=INK[1], linewidth=0.4)
        ax.axvline(observed, color=INK[0], linewidth=1.2)
        at_least = int((values >= observed).sum())
        ax.set_title(f"{name}: {at_least} of {len(values)} draws reach NEX")
        ax.set_xlabel("unit AUROC")
    axes[0].set_ylabel("draws")
    return fig


def caption_nulls(nulls: pd.DataFrame) -> str:
    counts = nulls.groupby("control")["draw"].count()
    return ("The negative controls as distributions: the unit AUROC of NEX's pooled weights learned again after "
            "each draw of a control (" + ", ".join(f"{name} {n} draws" for name, n in counts.items()) + "), against "
            f"the observed AUROC ({float(nulls['observed'].iloc[0]):.3f}, black line). shuffled: rows in a random "
            "order, phases fitted again (first appearance and phases gone); reordered: rows' contents shuffled under "
            "the HMM's own phases (first appearance gone, phases kept); permuted: E/X runs in a random order "
            "(first appearance kept, phases moved).")


@styled
def plot_departures(departures: pd.DataFrame) -> Figure:
    """The NEX-dependent predictions (rows) under the reference NEX and each named departure (columns): each cell
    the measured value, dark where the prediction holds."""
    require(departures, "positive_control_departures", ["departure", "id", "value", "holds"])
    table = departures[departures["id"].astype(str) != ""]
    ids, names = list(dict.fromkeys(table["id"])), list(dict.fromkeys(departures["departure"]))
    fig = Figure(figsize=(DOUBLE, 0.7 + 0.25 * len(ids)), layout="constrained")
    ax = fig.subplots()
    for x, name in enumerate(names):
        for y, pid in enumerate(ids):
            cell = table[(table["departure"] == name) & (table["id"] == pid)]
            if cell.empty:
                ax.text(x, y, "n/a", ha="center", va="center", color=INK[1])
                continue
            holds = cell["holds"].iloc[0] == "yes"
            ax.add_patch(Rectangle((x - 0.48, y - 0.45), 0.96, 0.9, facecolor=INK[1] if holds else "white",
                                   edgecolor=INK[2], linewidth=0.5))
            ax.text(x, y, f"{cell['value'].iloc[0]:+.2f}", ha="center", va="center",
                    color="white" if holds else INK[0])
    ax.set_xlim(-0.5, len(names) - 0.5)
    ax.set_ylim(len(ids) - 0.5, -0.5)
    ax.set_xticks(range(len(names)), names)
    ax.set_yticks(range(len(ids)), ids)
    ax.tick_params(length=0)
    for spine in ax.spines.values():
        spine.set_visible(False)
    return fig


def caption_departures(departures: pd.DataFrame) -> str:
    table = departures[departures["id"].astype(str) != ""]
    held = table.groupby("departure")["holds"].apply(lambda h: f"{int((h == 'yes').sum())} of {len(h)}")
    skipped = departures[departures["id"].astype(str) == ""]
    return ("The predictions that depend on NEX's settings, measured under the reference NEX and under each named "
            "departure (dark: the prediction holds): " + "; ".join(f"{d} {n}" for d, n in held.items()) + "."
            + "".join(f" {row.departure}: not measured ({row.detail})" for row in skipped.itertuples()))


FIGURES.add("positive_control", FigureSpec(("positive_control",), plot_positive_control, caption_positive_control))
FIGURES.add("positive_control_units", FigureSpec(("positive_control_units",), plot_units, caption_units))
FIGURES.add("positive_control_nulls", FigureSpec(("positive_control_nulls",), plot_nulls, caption_nulls))
FIGURES.add("positive_control_departures", FigureSpec(("positive_control_departures",), plot_departures,
                                                      caption_departures))
