"""The paper's figures, drawn from result tables alone.

Every figure is a function from one or two ``pandas`` tables (the ones a run writes under
``RUN_DIR/tables/``) to a matplotlib ``Figure``; nothing here reruns an experiment. One
style holds for all of them: 8 pt sans-serif text, widths of one (3.3 in) or two (6.8 in)
columns of a two-column paper, and series told apart by marker, line style and hatch as
well as by grey level, so that a greyscale print keeps every distinction. ``save_figure``
writes a vector PDF (TrueType text, no raster image) and a 300 dpi PNG, atomically, with a
``<name>.json`` sidecar recording the tables' configs and the package versions.

Figures and the tables they read (columns a figure needs are listed in its docstring):

    trace            trace            one response's novelty slopes, E/X phases, cycles
    inverted_u       inverted_u_bins  accuracy against the exploration proxy in bins
                     (+ inverted_u)   (with the fitted parabola, its peak and test)
    nex_vs_accuracy  ranking_scores   each score against accuracy across the family
                     (+ ranking)      (the rank correlation, with its CI when known, in the legend)
    best_of_n        selection        Best-of-N accuracy per selector with CIs
    transfer         transfer         accuracy change against k: effective, redundant, random band
    ablation         ablate           the same for ablating the sets inside one model
    neuron_weights   neuron_weights   effective and redundant neurons per layer
"""

from __future__ import annotations

import functools
import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import matplotlib
import numpy as np
import pandas as pd
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.patches import Patch
from matplotlib.ticker import FuncFormatter

from nex_causal import __version__
from nex_causal.cache import unpack_keys
from nex_causal.errors import NexError
from nex_causal.io import atomic_path, versions, write_json
from nex_causal.nex import ResponseTrace
from nex_causal.stats import spearman

SINGLE = 3.3  # inches: one column of a two-column paper
DOUBLE = 6.8  # inches: the full text width
STYLE = {
    "font.family": "sans-serif",
    "font.sans-serif": ["DejaVu Sans"],  # ships with matplotlib: the same glyphs everywhere
    "font.size": 8,
    "axes.titlesize": 8,
    "axes.labelsize": 8,
    "legend.fontsize": 7,
    "xtick.labelsize": 7,
    "ytick.labelsize": 7,
    "axes.linewidth": 0.6,
    "axes.spines.top": False,
    "axes.spines.right": False,
    "lines.linewidth": 1.0,
    "lines.markersize": 3.5,
    "errorbar.capsize": 1.5,
    "hatch.linewidth": 0.5,
    "legend.frameon": False,
    "legend.handlelength": 1.8,
    "pdf.fonttype": 42,  # TrueType, not Type 3: editable text that publishers accept
    "savefig.dpi": 300,
}
# Series are told apart by shape and dash as well as by grey level.
INK = ("0.0", "0.45", "0.65")
MARKERS = ("o", "s", "^", "D", "v", "P")
DASHES = ("-", "--", ":", "-.")
EXPLORE_SHADE = "0.88"
RUN_TABLES = "tables"
RUN_FIGURES = "figures"
REPO_FIGURES = Path(__file__).resolve().parents[1] / "figures"


def styled(draw: Callable[..., Figure]) -> Callable[..., Figure]:
    """Run a figure function inside the paper style (rcParams are read as artists are made)."""
    @functools.wraps(draw)
    def wrapper(*args, **kwargs) -> Figure:
        with matplotlib.rc_context(STYLE):
            return draw(*args, **kwargs)
    return wrapper


def _require(table: pd.DataFrame, name: str, columns: Sequence[str]) -> pd.DataFrame:
    """Fail with one line when ``table`` is empty or lacks a column the figure reads."""
    missing = [c for c in columns if c not in table.columns]
    if missing:
        raise NexError(f"the {name} table lacks column(s) {', '.join(missing)}; "
                       f"regenerate it with the current nex-causal")
    if table.empty:
        raise NexError(f"the {name} table is empty: nothing to plot")
    return table


def _runs(flags: np.ndarray) -> list[tuple[int, int]]:
    """Maximal runs of True in ``flags`` as inclusive ``(first, last)`` index pairs."""
    edges = np.diff(np.concatenate([[0], flags.astype(np.int8), [0]]))
    return list(zip(np.flatnonzero(edges == 1), np.flatnonzero(edges == -1) - 1))


def trace_table(trace: ResponseTrace) -> pd.DataFrame:
    """The ``trace`` table of one analysed response (``nex.analyze_response``), for ``plot_trace``.

    One line per usable row: ``row`` (raw row index), ``tokens``, ``slope``, ``explore``,
    ``cycle`` (index into ``trace.cycles``, -1 outside every cycle) and ``cycle_kind``.
    """
    cycle = np.full(len(trace.slopes), -1)
    kind = np.full(len(trace.slopes), "", dtype=object)
    for i, c in enumerate(trace.cycles):
        cycle[c.e_start:c.x_end + 1] = i
        kind[c.e_start:c.x_end + 1] = c.kind
    return pd.DataFrame({"row": trace.source, "tokens": trace.tokens, "slope": trace.slopes,
                         "explore": trace.explore, "cycle": cycle, "cycle_kind": kind})


def weights_table(weights: np.ndarray) -> pd.DataFrame:
    """The ``neuron_weights`` table of a weight vector (NEX_METHOD 5): its credited neurons.

    Columns ``key``, ``layer``, ``unit``, ``weight``, one line per neuron with w_n != 0.
    """
    weights = np.asarray(weights)
    keys = np.flatnonzero(weights).astype(np.uint32)
    layer, unit = unpack_keys(keys)
    return pd.DataFrame({"key": keys, "layer": layer, "unit": unit, "weight": weights[keys]})


# --- the figures ------------------------------------------------------------------------

@styled
def plot_trace(trace: pd.DataFrame) -> Figure:
    """Novelty slope along one response, E phases shaded, explore-to-exploit cycles marked.

    Columns: ``row`` (window index), ``slope`` (newly recruited neurons per token),
    ``explore`` (bool, the HMM phase); optional ``cycle`` (the cycle a row belongs to, -1
    for none) and ``cycle_kind`` ("effective", "redundant" or "none"). A ``response``
    column, if present, must hold a single value.
    """
    _require(trace, "trace", ["row", "slope", "explore"])
    if "response" in trace and trace["response"].nunique() > 1:
        raise NexError(f"the trace table holds {trace['response'].nunique()} responses; "
                       "keep the rows of one response")
    trace = trace.sort_values("row")
    rows = trace["row"].to_numpy()
    explore = trace["explore"].to_numpy(dtype=bool)
    fig = Figure(figsize=(SINGLE, 2.2), layout="constrained")
    ax = fig.add_subplot()
    for first, last in _runs(explore):
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


def _by_source(table: pd.DataFrame) -> list[tuple[str, pd.DataFrame]]:
    """``table`` split by its ``caches`` column (one ranking per set of caches) when it has several."""
    if "caches" not in table or table["caches"].nunique() < 2:
        return [("", table)]
    return [(str(key), part) for key, part in table.groupby("caches", sort=False)]


def _suffix(source: str) -> str:
    return f" ({source})" if source else ""


@styled
def plot_inverted_u(bins: pd.DataFrame, fits: pd.DataFrame | None = None) -> Figure:
    """Accuracy against the exploration proxy in quantile bins, with the fitted parabola.

    ``bins`` (``ranking.inverted_u_table``'s second table): ``level`` ("response" or
    "variant", one panel each), ``proxy_low``, ``proxy_high``, ``proxy_mean``, ``accuracy``.
    ``fits`` (its first table): ``level``, ``c0``, ``c1``, ``c2``, ``peak``, ``p_quadratic``;
    the parabola was fitted to the raw points, so it is drawn only when given, with its
    peak and the p-value of the bend in the legend. A ``caches`` column with several
    values gives one series per set of caches.
    """
    _require(bins, "inverted_u_bins", ["level", "proxy_low", "proxy_high", "proxy_mean", "accuracy"])
    fit_of = {}
    if fits is not None:
        _require(fits, "inverted_u", ["level", "c0", "c1", "c2", "peak", "p_quadratic"])
        fit_of = {(source, row.level): row for source, part in _by_source(fits)
                  for row in part.itertuples() if np.isfinite(row.c2)}
    levels = list(dict.fromkeys(bins["level"]))
    fig = Figure(figsize=(DOUBLE if len(levels) > 1 else SINGLE, 2.2), layout="constrained")
    axes = fig.subplots(1, len(levels), squeeze=False).ravel()
    for ax, level in zip(axes, levels):
        for k, (source, part) in enumerate(_by_source(bins[bins["level"] == level])):
            ax.errorbar(part["proxy_mean"], part["accuracy"],
                        xerr=np.vstack([part["proxy_mean"] - part["proxy_low"],
                                        part["proxy_high"] - part["proxy_mean"]]),
                        linestyle="none", marker=MARKERS[k % len(MARKERS)], color=INK[0], mfc="white",
                        ecolor=INK[2], elinewidth=0.6, capsize=0, label=f"{level}s, quantile bins{_suffix(source)}")
            fit = fit_of.get((source, level))
            if fit is not None:
                grid = np.linspace(part["proxy_low"].min(), part["proxy_high"].max(), 200)
                peak = f", peak {fit.peak:.3g}" if np.isfinite(fit.peak) else ""
                ax.plot(grid, fit.c0 + fit.c1 * grid + fit.c2 * grid**2, color=INK[1],
                        linestyle=DASHES[(k + 1) % len(DASHES)],
                        label=f"quadratic fit (p = {fit.p_quadratic:.2g}{peak}){_suffix(source)}")
        ax.set_title(f"per {level}")
        ax.set_xlabel("mean token entropy (exploration proxy)")
        ax.legend(loc="lower center")
    axes[0].set_ylabel("accuracy")
    return fig


@styled
def plot_scores_vs_accuracy(scores: pd.DataFrame, correlations: pd.DataFrame | None = None) -> Figure:
    """Each score against accuracy across the merge family, one panel per score, NEX first.

    ``scores`` (``ranking.rank(...).variants``): one row per variant with ``accuracy`` and
    one column per score. ``correlations`` (``ranking.rank(...).table``): ``score``,
    ``direction``, ``spearman``, ``spearman_low``, ``spearman_high``; it gives the
    bootstrap interval and the direction in which each score is claimed to track accuracy.
    The legend carries Spearman's rho of the plotted points (a score with direction -1 is
    claimed to work when its rho is negative; the x label says so). A ``caches`` column
    with several values gives one series per set of caches.
    """
    _require(scores, "ranking_scores", ["accuracy"])
    names = [c for c in scores.select_dtypes("number").columns if c != "accuracy"]
    names.sort(key=lambda c: c != "nex")
    if not names:
        raise NexError("the ranking_scores table holds no score column beside accuracy")
    claimed = {}
    if correlations is not None:
        _require(correlations, "ranking", ["score", "direction", "spearman", "spearman_low", "spearman_high"])
        claimed = {(source, row.score): row for source, part in _by_source(correlations)
                   for row in part.itertuples()}
    cols = min(len(names), 3)
    nrows = -(-len(names) // cols)
    fig = Figure(figsize=(DOUBLE if cols > 1 else SINGLE, 2.1 * nrows), layout="constrained")
    axes = fig.subplots(nrows, cols, squeeze=False, sharey=True).ravel()
    for ax, name in zip(axes, names):
        direction = 1
        for k, (source, part) in enumerate(_by_source(scores)):
            rho = spearman(part[name].to_numpy(), part["accuracy"].to_numpy())
            label = f"Spearman ρ = {rho:.2f}"
            row = claimed.get((source, name))
            if row is not None:
                direction = row.direction
                if np.isfinite(row.spearman_low):  # the table's rho is of direction * score
                    low, high = sorted((direction * row.spearman_low, direction * row.spearman_high))
                    label += f" [{low:.2f}, {high:.2f}]"
            nex = name == "nex"
            ax.plot(part[name], part["accuracy"], linestyle="none", marker=MARKERS[k % len(MARKERS)],
                    color=INK[0] if nex else INK[1], mfc=INK[0] if nex else "white", label=label + _suffix(source))
        ax.set_xlabel(name + (" (claimed: lower is better)" if direction < 0 else ""))
        ax.legend(loc="lower left", bbox_to_anchor=(0, 1), handletextpad=0.2, borderaxespad=0.1)
    for ax in axes[::cols]:
        ax.set_ylabel("accuracy")
    for ax in axes[len(names):]:
        ax.set_visible(False)
    return fig


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
    _require(selection, "selection", ["selector", "accuracy", "ci_low", "ci_high"])
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
    _require(transfer, "transfer", ["intervention", "set_kind", "k", "decoding", "delta", "delta_low", "delta_high"])
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
    _require(weights, "neuron_weights", ["layer", "weight"])
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


# --- saving, and a run directory's figures ------------------------------------------------

def save_figure(fig: Figure, stem: str | Path, *, config: dict[str, Any] | None = None) -> list[Path]:
    """Write ``<stem>.pdf`` (vector) and ``<stem>.png`` (300 dpi) atomically, plus ``<stem>.json``.

    The PDF carries no creation date, so the same tables give the same bytes.
    """
    stem = Path(stem)
    paths = []
    with matplotlib.rc_context(STYLE):
        for fmt, metadata in (("pdf", {"Creator": f"nex-causal {__version__}", "CreationDate": None}),
                              ("png", {"Software": f"nex-causal {__version__}"})):
            path = stem.with_name(f"{stem.name}.{fmt}")
            with atomic_path(path) as tmp:
                fig.savefig(tmp, format=fmt, metadata=metadata)
            paths.append(path)
    write_json(stem.with_name(f"{stem.name}.json"), {"figure": stem.name, "config": dict(config or {}),
                                                     "versions": versions()})
    return paths


@dataclass(frozen=True)
class FigureSpec:
    """A figure of a run: the tables it needs, those it uses when present, how to draw it."""

    name: str
    tables: tuple[str, ...]
    draw: Callable[..., Figure]
    optional: tuple[str, ...] = ()


FIGURES = (
    FigureSpec("trace", ("trace",), plot_trace),
    FigureSpec("inverted_u", ("inverted_u_bins",), plot_inverted_u, optional=("inverted_u",)),
    FigureSpec("nex_vs_accuracy", ("ranking_scores",), plot_scores_vs_accuracy, optional=("ranking",)),
    FigureSpec("best_of_n", ("selection",), plot_best_of_n),
    FigureSpec("transfer", ("transfer",), plot_transfer),
    FigureSpec("ablation", ("ablate",), plot_transfer),
    FigureSpec("neuron_weights", ("neuron_weights",), plot_neuron_weights),
)
README_FIGURES = ("trace", "nex_vs_accuracy", "best_of_n", "transfer")


def _table_path(run_dir: Path, table: str) -> Path:
    return run_dir / RUN_TABLES / f"{table}.parquet"


def _specs(names: Sequence[str] | None) -> list[FigureSpec]:
    known = {spec.name: spec for spec in FIGURES}
    unknown = sorted(set(names or ()) - set(known))
    if unknown:
        raise NexError(f"unknown figure(s) {', '.join(unknown)}; choose from {', '.join(known)}")
    return list(FIGURES) if names is None else [known[n] for n in names]


def missing_tables(run_dir: str | Path, names: Sequence[str] | None = None) -> dict[str, list[str]]:
    """For each figure that cannot be drawn from ``run_dir``, the tables it lacks."""
    run_dir = Path(run_dir)
    out = {}
    for spec in _specs(names):
        lacking = [t for t in spec.tables if not _table_path(run_dir, t).exists()]
        if lacking:
            out[spec.name] = lacking
    return out


def _table_config(run_dir: Path, table: str) -> dict:
    meta = _table_path(run_dir, table).with_suffix(".meta.json")
    return json.loads(meta.read_text()).get("config", {}) if meta.exists() else {}


def make_figures(run_dir: str | Path, out_dir: str | Path | None = None,
                 names: Sequence[str] | None = None) -> list[Path]:
    """Draw every figure (or those in ``names``) whose tables exist under ``run_dir/tables``.

    Figures whose required tables are missing are skipped (``missing_tables`` names them).

    Files go to ``out_dir`` (default ``run_dir/figures``) as ``<figure>.pdf``, ``.png`` and
    ``.json``; returns the PDF and PNG paths.
    """
    run_dir = Path(run_dir)
    if not (run_dir / RUN_TABLES).is_dir():
        raise NexError(f"{run_dir} has no {RUN_TABLES}/ folder: pass a run directory made by `nex-causal run`")
    out_dir = Path(out_dir) if out_dir is not None else run_dir / RUN_FIGURES
    skipped = missing_tables(run_dir, names)
    paths: list[Path] = []
    for spec in _specs(names):
        if spec.name in skipped:
            continue
        used = [t for t in (*spec.tables, *spec.optional) if _table_path(run_dir, t).exists()]
        tables = {t: pd.read_parquet(_table_path(run_dir, t)) for t in used}
        fig = spec.draw(*[tables.get(t) for t in (*spec.tables, *spec.optional)])
        config = {"run_dir": str(run_dir), "tables": {t: _table_config(run_dir, t) for t in used}}
        paths += save_figure(fig, out_dir / spec.name, config=config)
    return paths


def make_readme_figures(run_dir: str | Path, dest: str | Path = REPO_FIGURES) -> list[Path]:
    """Regenerate the figures the README shows (``README_FIGURES``) from ``run_dir`` into ``dest``."""
    return make_figures(run_dir, dest, README_FIGURES)
