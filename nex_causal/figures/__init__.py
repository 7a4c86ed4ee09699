"""The paper's figures, drawn from result tables alone.

Every figure is a function from one or two ``pandas`` tables (the ones a run writes under
``RUN_DIR/tables/``) to a matplotlib ``Figure``; nothing here reruns an experiment. Each is
registered in ``FIGURES`` by the module that draws it, with the tables it reads:

    trace            trace            one response's novelty slopes, E/X phases, cycles
    profile          profile_curve,   novelty decay along the trace, cycles per response
                     profile_responses
    sweep            sweep,           the settings sweep's criterion, the choice and the default
                     sweep_choice
    inverted_u       inverted_u_bins  accuracy against the exploration proxy in bins
                     (+ inverted_u)   (with the fit, logistic per response, its peak, test and shape)
    nex_vs_accuracy  ranking_scores   each oriented score against accuracy across the family
                     (+ ranking)      (the table's oriented rank correlation with its CI)
    best_of_n        selection        Best-of-N accuracy per selector, pooled over caches with CIs
    transfer         transfer_summary outcome change against k: effective, redundant, the random null
    ablation         ablate_summary   the same for ablating the sets inside one model
    neuron_weights   neuron_weights   effective and redundant neurons per layer

Each also writes a caption (``FigureSpec.caption``, from the same tables) that the run's
report prints under it. ``style`` holds the one style they share and ``save_figure``.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

import pandas as pd

from nex_causal.errors import NexError
from nex_causal.figures.ranking import plot_inverted_u, plot_scores_vs_accuracy
from nex_causal.figures.registry import FIGURES, FigureSpec
from nex_causal.figures.selection import plot_best_of_n
from nex_causal.figures.style import DOUBLE, SINGLE, layout_problems, save_figure
from nex_causal.figures.trace import plot_trace
from nex_causal.figures.localization import plot_scorers
from nex_causal.figures.transfer import plot_neuron_weights, plot_transfer

__all__ = ["DOUBLE", "FIGURES", "SINGLE", "FigureSpec", "layout_problems", "make_figures", "missing_tables", "plot_best_of_n",
           "plot_inverted_u", "plot_neuron_weights", "plot_scorers", "plot_scores_vs_accuracy", "plot_trace", "plot_transfer",
           "save_figure"]

RUN_TABLES = "tables"
RUN_FIGURES = "figures"
REPO_FIGURES = Path(__file__).resolve().parents[2] / "figures"
README_FIGURES = ("trace", "nex_vs_accuracy", "best_of_n", "transfer", "transfer_scorers", "positive_control",
                  "positive_control_units", "positive_control_nulls", "positive_control_departures")


def _table_path(run_dir: Path, table: str) -> Path:
    return run_dir / RUN_TABLES / f"{table}.parquet"


def _names(names: Sequence[str] | None) -> list[str]:
    return list(FIGURES) if names is None else FIGURES.check(names)


def missing_tables(run_dir: str | Path, names: Sequence[str] | None = None) -> dict[str, list[str]]:
    """For each figure that cannot be drawn from ``run_dir``, the tables it lacks."""
    run_dir = Path(run_dir)
    out = {}
    for name in _names(names):
        lacking = [t for t in FIGURES[name].tables if not _table_path(run_dir, t).exists()]
        if lacking:
            out[name] = lacking
    return out


def _table_config(run_dir: Path, table: str) -> dict:
    meta = _table_path(run_dir, table).with_suffix(".meta.json")
    return json.loads(meta.read_text()).get("config", {}) if meta.exists() else {}


def make_figures(run_dir: str | Path, out_dir: str | Path | None = None,
                 names: Sequence[str] | None = None) -> list[Path]:
    """Draw every figure (or those in ``names``) whose tables exist under ``run_dir/tables``.

    Figures whose required tables are missing are skipped (``missing_tables`` names them).

    Files go to ``out_dir`` (default ``run_dir/figures``) as ``<figure>.pdf``, ``.png``,
    ``.json``, the tables drawn (``<figure>.csv``) and the caption (``<figure>.caption.txt``);
    returns the PDF and PNG paths.
    """
    run_dir = Path(run_dir)
    if not (run_dir / RUN_TABLES).is_dir():
        raise NexError(f"{run_dir} has no {RUN_TABLES}/ folder: pass a run directory made by `nex-causal run`")
    out_dir = Path(out_dir) if out_dir is not None else run_dir / RUN_FIGURES
    skipped = missing_tables(run_dir, names)
    paths: list[Path] = []
    for name in _names(names):
        spec = FIGURES[name]
        if name in skipped:
            continue
        used = [t for t in (*spec.tables, *spec.optional) if _table_path(run_dir, t).exists()]
        tables = {t: pd.read_parquet(_table_path(run_dir, t)) for t in used}
        config = {"run_dir": str(run_dir), "tables": {t: _table_config(run_dir, t) for t in used}}
        paths += draw_to(name, tables, out_dir, config=config)
    return paths


def draw_to(name: str, tables: dict[str, pd.DataFrame], out_dir: str | Path, *, config: dict | None = None
            ) -> list[Path]:
    """Draw the registered figure ``name`` from ``tables`` (by table name) and save it into ``out_dir``."""
    spec = FIGURES[name]
    if lacking := [t for t in spec.tables if t not in tables]:
        raise NexError(f"figure {name} needs the table(s) {', '.join(lacking)}")
    given = [tables.get(t) for t in (*spec.tables, *spec.optional)]
    fig = spec.draw(*given)
    drawn = {t: tables[t] for t in (*spec.tables, *spec.optional) if tables.get(t) is not None}
    return save_figure(fig, Path(out_dir) / name, config=config, data=drawn, caption=spec.caption(*given))


