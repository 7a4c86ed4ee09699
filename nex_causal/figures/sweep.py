"""The settings sweep: the criterion on split 1 over windows x sparsifiers, the choice and the default."""

from __future__ import annotations

import numpy as np
import pandas as pd
from matplotlib.figure import Figure
from matplotlib.patches import Rectangle

from nex_causal.figures.registry import FIGURES, FigureSpec
from nex_causal.figures.style import DOUBLE, INK, require, styled


@styled
def plot_sweep(sweep: pd.DataFrame, choice: pd.DataFrame) -> Figure:
    """Split 1's criterion for each window (rows) and sparsifier (columns), at the chosen rho and
    min_run; the chosen cell boxed, the default's marked; split 2's results in the title.

    ``sweep`` and ``choice`` are ``sweep.run_sweep``'s two tables.
    """
    require(sweep, "sweep", ["window", "sparsifier", "rho", "min_run", "split"])
    require(choice, "sweep_choice", ["role", "window", "sparsifier", "rho", "min_run", "criterion", "n_settings"])
    criterion = str(choice["criterion"].iloc[0])
    chosen = choice[choice["role"] == "chosen on split 1"].iloc[0]
    default = choice[choice["role"] == "pre-declared default"].iloc[0]
    part = sweep[(sweep["split"] == 1) & (sweep["rho"] == chosen["rho"]) & (sweep["min_run"] == chosen["min_run"])]
    grid = part.pivot_table(index="window", columns="sparsifier", values=criterion, aggfunc="first")
    grid = grid[sorted(grid.columns, key=lambda s: float(s.split(":")[1]))]
    fig = Figure(figsize=(DOUBLE * 0.6, 1.6 + 0.32 * len(grid)), layout="constrained")
    ax = fig.add_subplot()
    values = grid.to_numpy(dtype=float)
    limit = np.nanmax(np.abs(values)) if np.isfinite(values).any() else 1.0
    image = ax.imshow(values, cmap="Greys", vmin=-limit, vmax=limit, aspect="auto")
    for (i, j), v in np.ndenumerate(values):
        ax.text(j, i, "n/a" if not np.isfinite(v) else f"{v:+.2f}", ha="center", va="center", fontsize=6,
                color="white" if np.isfinite(v) and v > limit / 2 else INK[0])
    cells = {"chosen": (chosen, "-"), "default": (default, ":")}
    for label, (row, dash) in cells.items():
        if row["window"] in grid.index and row["sparsifier"] in grid.columns and \
                (label == "chosen" or (row["rho"], row["min_run"]) == (chosen["rho"], chosen["min_run"])):
            i, j = list(grid.index).index(row["window"]), list(grid.columns).index(row["sparsifier"])
            ax.add_patch(Rectangle(
                (j - 0.5, i - 0.5), 1, 1, fill=False, linewidth=1.4, linestyle=dash, edgecolor=INK[0],
                label=f"{label}: split 2 {criterion} {row[criterion]:+.2f} [{row[f'{criterion}_low']:+.2f}, "
                      f"{row[f'{criterion}_high']:+.2f}]"))
    ax.set_xticks(range(len(grid.columns)), grid.columns)
    ax.set_yticks(range(len(grid.index)), grid.index)
    ax.set_xlabel("sparsifier")
    ax.set_ylabel("window (tokens per row)")
    ax.set_title(f"{criterion} on split 1 (rho {chosen['rho']:g}, min_run {int(chosen['min_run'])}); "
                 f"{int(choice['n_settings'].iloc[0])} settings tried")
    fig.colorbar(image, ax=ax, shrink=0.8, label=f"{criterion} (split 1)", pad=0.03)
    fig.get_layout_engine().set(w_pad=0.06)  # the colorbar's label otherwise touches the right edge
    fig.legend(loc="outside lower center", ncol=1, frameon=False)
    return fig


def caption_sweep(sweep: pd.DataFrame, choice: pd.DataFrame) -> str:
    """What the sweep figure shows, the choice and its held-out result against the default's."""
    criterion = str(choice["criterion"].iloc[0])
    chosen = choice[choice["role"] == "chosen on split 1"].iloc[0]
    default = choice[choice["role"] == "pre-declared default"].iloc[0]

    def setting(row: pd.Series) -> str:
        return (f"window {int(row['window'])}, {row['sparsifier']}, rho {row['rho']:g}, min_run {int(row['min_run'])}: "
                f"{criterion} {row[criterion]:+.2f} [{row[f'{criterion}_low']:+.2f}, {row[f'{criterion}_high']:+.2f}]")

    text = (f"The {criterion} of NEX against the family's accuracy on split 1 of the prompts for each cache window "
            f"and sparsifier, at the chosen rho and min_run ({int(choice['n_settings'].iloc[0])} settings tried). "
            f"The setting chosen on split 1 among those where NEX can read the cache (solid box), on split 2: "
            f"{setting(chosen)}; the pre-declared default (dotted box), on split 2: {setting(default)}.")
    excluded = choice[choice["role"] == "best on split 1, ineligible"]
    if len(excluded):
        row = excluded.iloc[0]
        text += (f" The best setting on split 1 overall was ineligible (median {row['crediting_cycles_per_response']:g} "
                 f"crediting cycles per response, coverage {row['neuron_coverage']:.3f}); on split 2: {setting(row)}.")
    return text + " Intervals are 95% bootstrap intervals over prompts."


FIGURES.add("sweep", FigureSpec(("sweep", "sweep_choice"), plot_sweep, caption_sweep))
