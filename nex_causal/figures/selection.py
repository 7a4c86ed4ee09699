"""Best-of-N accuracy per selector."""

from __future__ import annotations

import numpy as np
import pandas as pd
from matplotlib.figure import Figure
from matplotlib.lines import Line2D

from nex_causal.errors import NexError
from nex_causal.figures.registry import FIGURES, FigureSpec
from nex_causal.figures.style import DASHES, INK, MARKERS, SINGLE, require, styled
from nex_causal.selectors import POOLED

REFERENCE_SELECTORS = {"random": DASHES[1], "avg@n": DASHES[2], "oracle": DASHES[3]}
NOTED = "*"  # marks a selector whose result a note qualifies (the caption gives the note)


def _parts(selection: pd.DataFrame) -> tuple[pd.DataFrame, pd.DataFrame]:
    """The rows to draw (pooled over caches when there are several) and the per-cache rows."""
    require(selection, "selection", ["selector", "accuracy", "ci_low", "ci_high"])
    ok = selection["accuracy"].notna()
    if "status" in selection:
        ok &= selection["status"].eq("ok")
    table = selection[ok]
    if "cache" not in table:
        return table, table.iloc[:0]
    per_cache = table[table["cache"] != POOLED]
    pooled = table[table["cache"] == POOLED]
    if pooled.empty:
        if per_cache["cache"].nunique() > 1:
            raise NexError("the selection table holds several caches but no pooled rows; "
                           "regenerate it with the current nex-causal")
        return per_cache, per_cache.iloc[:0]
    return pooled, per_cache


def _is_nex(names: pd.Series) -> np.ndarray:
    return names.str.startswith("nex").to_numpy()


@styled
def plot_best_of_n(selection: pd.DataFrame) -> Figure:
    """Best-of-N accuracy per selector with its bootstrap interval, sorted; baselines as lines.

    Columns (``selectors.selection_table``): ``selector``, ``accuracy``, ``ci_low``,
    ``ci_high``; optional ``status`` (rows not ``ok`` are left out), ``note`` and ``cache``.
    With several caches the marks are the rows pooled over them (``cache == "pooled"``: the
    accuracy over every cache's prompts with a bootstrap interval over those prompts), and
    each cache's own accuracy is a faint dot. NEX selectors are filled squares, the others
    open circles; ``random``, ``avg@n`` and ``oracle`` are vertical reference lines; a
    selector whose result carries a note is starred.
    """
    table, per_cache = _parts(selection)
    picked = table[~table["selector"].isin(list(REFERENCE_SELECTORS))].sort_values("accuracy")
    if picked.empty:
        raise NexError("the selection table holds no selector with an accuracy besides the baselines")
    fig = Figure(figsize=(SINGLE, 1.1 + 0.16 * len(picked)), layout="constrained")
    ax = fig.add_subplot()
    ypos = np.arange(len(picked))
    where = dict(zip(picked["selector"], ypos))
    handles = []
    if not per_cache.empty:
        dots = per_cache[per_cache["selector"].isin(list(where))]
        jitter = np.random.default_rng(0).uniform(-0.18, 0.18, len(dots))
        ax.plot(dots["accuracy"], dots["selector"].map(where) + jitter, linestyle="none", marker=".",
                markersize=2.0, color=INK[2], zorder=1)
        handles.append(Line2D([], [], linestyle="none", marker=".", color=INK[2],
                              label=f"each of {per_cache['cache'].nunique()} caches"))
    for is_nex, marker, fill, label in ((False, MARKERS[0], "white", "baseline"),
                                        (True, MARKERS[1], INK[0], "NEX")):
        part = _is_nex(picked["selector"]) == is_nex
        sub = picked[part]
        if sub.empty:
            continue
        ax.errorbar(sub["accuracy"], ypos[part], xerr=np.vstack([sub["accuracy"] - sub["ci_low"],
                                                                  sub["ci_high"] - sub["accuracy"]]),
                    linestyle="none", marker=marker, color=INK[0], mfc=fill, ecolor=INK[1], elinewidth=0.7,
                    zorder=3)
        handles.append(Line2D([], [], linestyle="none", marker=marker, color=INK[0], mfc=fill,
                              label=f"{label} (95% CI)"))
    for _, row in table[table["selector"].isin(list(REFERENCE_SELECTORS))].iterrows():
        handles.append(ax.axvline(row["accuracy"], color=INK[1], linestyle=REFERENCE_SELECTORS[row["selector"]],
                                  linewidth=0.8, label=row["selector"], zorder=2))
    noted = picked["note"].astype(str).ne("").to_numpy() if "note" in picked else np.zeros(len(picked), bool)
    ax.set_yticks(ypos, [f"{name}{NOTED if n else ''}" for name, n in zip(picked["selector"], noted)])
    ax.set_ylim(-0.7, len(picked) - 0.3)
    ax.set_xlabel("Best-of-N accuracy")
    ax.legend(handles=handles, loc="lower center", bbox_to_anchor=(0.5, 1.0), ncol=2, borderaxespad=0.2,
              columnspacing=1.0, handletextpad=0.4)
    return fig


def caption_best_of_n(selection: pd.DataFrame) -> str:
    """What the Best-of-N figure shows, with its n and the notes behind starred selectors."""
    table, per_cache = _parts(selection)
    n_prompts = int(table["n_prompts"].max()) if "n_prompts" in table else None
    n_caches = per_cache["cache"].nunique() if not per_cache.empty else 1
    if n_caches > 1:
        text = (f"Best-of-N accuracy of each selector over {n_caches} caches (one per variant), pooled over their "
                f"{n_prompts} prompts, with a 95% BCa bootstrap interval over those prompts; faint dots "
                "are each cache's own accuracy.")
    else:
        text = (f"Best-of-N accuracy of each selector on {n_prompts} prompts, with a 95% BCa bootstrap "
                "interval over prompts.")
    text += (" Filled squares are NEX selectors, open circles the baselines; vertical lines: a random pick "
             "(random), the mean accuracy of all samples (avg@n) and the share of prompts with any correct "
             "sample (oracle).")
    if "note" in table:
        notes = table[table["note"].astype(str).ne("") & ~table["selector"].isin(list(REFERENCE_SELECTORS))]
        if len(notes):
            text += " " + NOTED + " " + "; ".join(f"{r.selector}: {r.note}" for r in notes.itertuples()) + "."
    return text


FIGURES.add("best_of_n", FigureSpec(("selection",), plot_best_of_n, caption_best_of_n))
