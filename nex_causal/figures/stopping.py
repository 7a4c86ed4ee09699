"""Stop rules: accuracy against tokens generated over each rule's sweep, and the detour they cut."""

from __future__ import annotations

import pandas as pd
from matplotlib.figure import Figure
from matplotlib.lines import Line2D

from nex_causal.errors import NexError
from nex_causal.figures.registry import FIGURES, FigureSpec
from nex_causal.figures.style import DASHES, DOUBLE, INK, MARKERS, require, styled

COLUMNS = ["rule", "split", "setting", "accuracy", "token_share", "detour_cut", "useful_cut"]


def _reported(pareto: pd.DataFrame) -> pd.DataFrame:
    require(pareto, "stop_pareto", COLUMNS)
    table = pareto[pareto["split"] == "reported"]
    if table.empty or (table["rule"] == "none").sum() != max(1, table.get("variant", pd.Series([0])).nunique()):
        raise NexError("the stop_pareto table holds no reported split with its full generation (rule none)")
    return table


def _looks(rules: list[str]) -> dict[str, dict]:
    """Each rule's marker, dash and fill: rules that read NEX filled, the others open."""
    from nex_causal.selectors.stopping import STOP_RULES

    return {rule: {"marker": MARKERS[i % len(MARKERS)], "linestyle": DASHES[i % len(DASHES)],
                   "mfc": INK[0] if rule in STOP_RULES and STOP_RULES[rule].nex else "white"}
            for i, rule in enumerate(rules)}


def _variants(table: pd.DataFrame) -> list[tuple[str, pd.DataFrame]]:
    if "variant" not in table:
        return [("", table)]
    return [(str(v), part) for v, part in table.groupby("variant", sort=False)]


@styled
def plot_stop_frontier(pareto: pd.DataFrame) -> Figure:
    """Per variant (a row of panels), left: majority-vote accuracy against the share of the full generation's
    tokens, one line per rule over its sweep (cutoffs calibrated on other prompts), the full generation a star;
    right, where the task records planted detours: the share of detour tokens each setting cuts against the share
    of the other tokens it cuts."""
    table = _reported(pareto)
    groups = _variants(table)
    rules = [r for r in dict.fromkeys(table["rule"]) if r != "none"]
    looks = _looks(rules)
    has_truth = bool(table["detour_cut"].notna().any())
    fig = Figure(figsize=(DOUBLE, 0.4 + 2.1 * len(groups)), layout="constrained")
    grid = fig.subplots(len(groups), 2 if has_truth else 1, squeeze=False)
    for axes, (variant, part) in zip(grid, groups):
        full = part[part["rule"] == "none"].iloc[0]
        for rule in rules:
            line = part[part["rule"] == rule].sort_values("token_share")
            axes[0].plot(line["token_share"], line["accuracy"], color=INK[0], mec=INK[0], linewidth=0.8,
                         **looks[rule])
            if has_truth:
                axes[1].plot(line["useful_cut"], line["detour_cut"], color=INK[0], mec=INK[0], linewidth=0.8,
                             **looks[rule])
        axes[0].plot([full["token_share"]], [full["accuracy"]], linestyle="none", marker="*", markersize=7,
                     color=INK[0])
        axes[0].set_xlabel("tokens generated (share of full generation)")
        axes[0].set_ylabel("majority-vote accuracy")
        if variant:
            axes[0].set_title(variant, loc="left")
        if has_truth and part["detour_cut"].isna().all():
            axes[1].set_axis_off()
            axes[1].text(0.5, 0.5, "no planted detour", ha="center", va="center", transform=axes[1].transAxes,
                         color=INK[1])
        elif has_truth:
            axes[1].plot([0, 1], [0, 1], color=INK[2], linewidth=0.6, linestyle=DASHES[2])
            axes[1].set_xlabel("share of useful tokens cut")
            axes[1].set_ylabel("share of detour tokens cut")
            axes[1].set_xlim(-0.02, 1.02)
            axes[1].set_ylim(-0.02, 1.02)
    handles = [Line2D([], [], color=INK[0], mec=INK[0], label=rule, **looks[rule]) for rule in rules]
    handles.append(Line2D([], [], linestyle="none", marker="*", markersize=7, color=INK[0], label="full generation"))
    fig.legend(handles=handles, loc="outside right upper")
    return fig


def caption_stop_frontier(pareto: pd.DataFrame) -> str:
    """What the stop-rule figure shows, with its n."""
    table = _reported(pareto)
    full = table[table["rule"] == "none"].iloc[0]
    text = (f"Stop rules on {int(full['n_prompts'])} reported prompts ({int(full['n_samples'])} traces, "
            f"majority vote per prompt), per variant. Each line is one rule over its sweep: trace rules at cutoffs "
            "that stop a given share of the calibration prompts' traces (never the reported ones), pruning rules "
            "after a given number of rows. Filled markers read NEX, open ones do not.")
    if table["detour_cut"].notna().any():
        text += (" Right: the share of the planted detour tokens (scout's ground truth) each setting cuts against "
                 "the share of the other tokens it cuts; the dotted diagonal is a cut blind to the detour.")
    return text


FIGURES.add("stop_frontier", FigureSpec(("stop_pareto",), plot_stop_frontier, caption_stop_frontier))
