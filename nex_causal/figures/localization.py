"""Which units carry the difference: every unit scorer's share of the ceiling against the set size."""

from __future__ import annotations

import numpy as np
import pandas as pd
from matplotlib.figure import Figure

from nex_causal.errors import NexError
from nex_causal.figures.registry import FIGURES, FigureSpec
from nex_causal.figures.style import DASHES, DOUBLE, INK, MARKERS, require, styled

NEX = ("nex-effective", "nex-redundant", "nex-effective-recipient", "nex-redundant-recipient")
STORIES = ("rows", "responses", "mass", "first-seen")  # the label-free stories NEX must beat
TARGET = 0.5  # the share a localization should reach with a small set (the causal-test issue's bar)


def _style(kind: str, supervised: object, index: int) -> dict:
    """How a scorer's line reads in greyscale: NEX solid and black, the label-free stories thin and light, the
    label-free localizations mid-grey, the supervised ones dotted."""
    marker = MARKERS[index % len(MARKERS)]
    if kind in NEX:
        return dict(color=INK[0], linestyle=DASHES[0], marker=marker, mfc="white" if "redundant" in kind else INK[0])
    if kind in STORIES:
        return dict(color=INK[2], linestyle=DASHES[1], marker=marker, linewidth=0.8, mfc="white")
    if supervised is True:
        return dict(color=INK[0], linestyle=DASHES[2], marker=marker, mfc="white")
    return dict(color=INK[1], linestyle=DASHES[3], marker=marker)


@styled
def plot_scorers(scorers: pd.DataFrame, summary: pd.DataFrame | None = None) -> Figure:
    """Share of the ceiling (every MLP unit of the differing layers) each scorer's top-k set recovers, against k.

    Columns of ``scorers`` (``intervene.tables.scorer_table``): ``intervention``, ``outcome``, ``set_kind``, ``k``,
    ``set_size``, ``supervised``, ``share_of_ceiling``, ``share_low``, ``share_high`` (``donor``/``recipient`` when
    several pairs ran). One panel per (pair, intervention, outcome), k on a log axis. The nulls (``summary``: the
    random sets' central 95%, layer-matched and also matched on mass and weight difference) are bands, as shares
    of the same ceiling; the truth and the user's sets are single points with their intervals.
    """
    require(scorers, "scorers", ["intervention", "outcome", "set_kind", "k", "share_of_ceiling"])
    data = scorers[np.isfinite(scorers["share_of_ceiling"].astype(float))]
    if data.empty:
        raise NexError("no ceiling to share: the donor and the recipient do not differ in any MLP unit")
    keys = ["donor", "recipient"] if {"donor", "recipient"} <= set(data.columns) else []
    panels = list(data.groupby([*keys, "intervention", "outcome"], sort=False))
    cols = min(len(panels), 2)
    nrows = -(-len(panels) // cols)
    fig = Figure(figsize=(DOUBLE, 2.5 * nrows + 0.9), layout="constrained")
    axes = fig.subplots(nrows, cols, squeeze=False).ravel()
    kinds = list(dict.fromkeys(data["set_kind"]))
    for ax, (key, part) in zip(axes, panels):
        *pair, intervention, outcome = key
        if summary is not None and "ceiling_delta" in summary:
            nulls = summary[(summary["intervention"] == intervention) & (summary["outcome"] == outcome)]
            for name in keys:
                nulls = nulls[nulls[name] == dict(zip(keys, pair))[name]]
            nulls = nulls.sort_values("k")
            for kind, hatch, shade in (("random", "////", INK[2]), ("matched", "\\\\\\\\", INK[1])):
                if f"{kind}_low" in nulls and nulls[f"{kind}_low"].notna().any():
                    ceiling = nulls["ceiling_delta"]
                    ax.fill_between(nulls["k"], nulls[f"{kind}_low"] / ceiling, nulls[f"{kind}_high"] / ceiling,
                                    facecolor=shade, alpha=0.3, hatch=hatch, edgecolor="0.5", linewidth=0,
                                    label=f"{kind} sets (central 95%)")
        for i, kind in enumerate(kinds):
            rows = part[part["set_kind"] == kind].sort_values("k")
            if rows.empty:
                continue
            style = _style(kind, rows["supervised"].iloc[0] if "supervised" in rows else None, i)
            if len(rows) == 1 or not (kind in NEX or rows["supervised"].notna().iloc[0]):  # a fixed set: a point
                ax.errorbar(rows["set_size"], rows["share_of_ceiling"],
                            yerr=np.vstack([rows["share_of_ceiling"] - rows["share_low"],
                                            rows["share_high"] - rows["share_of_ceiling"]]),
                            color=INK[0], marker="*", markersize=7, linestyle="none", elinewidth=0.8,
                            label=f"{kind} ({int(rows['set_size'].iloc[0])} units)")
                continue
            ax.plot(rows["k"], rows["share_of_ceiling"], label=kind, **style)
        ax.axhline(1.0, color=INK[1], linewidth=0.6, linestyle=DASHES[1])
        ax.axhline(TARGET, color=INK[2], linewidth=0.5, linestyle=DASHES[2])
        ax.axhline(0.0, color=INK[0], linewidth=0.5)
        ax.set_xscale("log")
        shared = part.groupby("k")["set_kind"].nunique()  # the doses; a fixed set's own size gets no tick
        ks = sorted(shared[shared > 1].index) or sorted(part["k"].unique())
        ax.set_xticks(ks, [str(k) for k in ks])
        ax.set_xticks([], minor=True)
        ax.set_title((f"{pair[0]} → {pair[1]}, " if pair else "") + f"{intervention}, {outcome}")
        ax.set_xlabel("units transplanted (k)")
        ax.set_ylabel("share of the ceiling")
    entries = {}
    for ax in axes[:len(panels)]:
        for handle, label in zip(*ax.get_legend_handles_labels()):
            entries.setdefault(label, handle)
    fig.legend(list(entries.values()), list(entries), loc="outside lower center", ncol=5)
    for ax in axes[len(panels):]:
        ax.set_visible(False)
    return fig


def caption_scorers(scorers: pd.DataFrame, summary: pd.DataFrame | None = None) -> str:
    """What the localization figure shows, with its prompts, scorers and what the best of them reached."""
    data = scorers[np.isfinite(scorers["share_of_ceiling"].astype(float))]
    supervised = sorted(data.loc[data["supervised"] == True, "set_kind"].unique())  # noqa: E712 (object column)
    label_free = sorted(k for k in data.loc[data["supervised"] == False, "set_kind"].unique())  # noqa: E712
    text = ("Share of the ceiling (transplanting every MLP unit of the layers where donor and recipient differ) "
            "that the top-k units of each unit scorer recover, against k (log axis): NEX's weights (solid), the "
            f"label-free scores {', '.join(label_free)}; the supervised ones {', '.join(supervised)} (dotted), "
            "learned on prompts the test never scores.")
    if summary is not None and "random_low" in summary:
        text += (f" Bands: the central 95% of {int(summary['n_random'].max())} random sets matched to NEX's effective "
                 f"set layer by layer and of {int(summary.get('n_matched', pd.Series([0])).max())} matched also on "
                 "activation mass and weight difference, as shares of the same ceiling.")
    best = data[data["supervised"].notna()].sort_values("share_of_ceiling").groupby("outcome").tail(1)
    for _, row in best.iterrows():
        text += (f" Best on {row['outcome']}: {row['set_kind']} at k = {int(row['k'])}, "
                 f"{row['share_of_ceiling']:.2f} [{row['share_low']:.2f}, {row['share_high']:.2f}].")
    if "truth" in set(data["set_kind"]):
        text += " The star is the planted truth (the units the organism's levels differ in)."
    text += f" Dashed lines: the ceiling (1) and half of it ({TARGET:g}). Intervals: 95% bootstrap over prompts."
    return text


FIGURES.add("transfer_scorers", FigureSpec(("transfer_scorers",), plot_scorers, caption_scorers,
                                           optional=("transfer_summary",)))
