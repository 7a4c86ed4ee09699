"""The one style every figure is drawn in, and how a figure is saved.

8 pt sans-serif text, widths of one (``SINGLE``, 3.3 in) or two (``DOUBLE``) columns of a
two-column paper, and series told apart by marker, line style and hatch as well as by grey
level, so that a greyscale print keeps every distinction. ``save_figure`` writes a vector
PDF (TrueType text, no raster image) and a 300 dpi PNG, atomically, with a ``<name>.json``
sidecar recording the tables' configs and the package versions.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import matplotlib
import pandas as pd
from matplotlib.figure import Figure

from nex_causal.stack import installed
from nex_causal.errors import NexError
from nex_causal.io import atomic_path, versions, write_json

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

def styled(draw: Callable[..., Figure]) -> Callable[..., Figure]:
    """Run a figure function inside the paper style (rcParams are read as artists are made)."""
    @functools.wraps(draw)
    def wrapper(*args, **kwargs) -> Figure:
        with matplotlib.rc_context(STYLE):
            return draw(*args, **kwargs)
    return wrapper


def require(table: pd.DataFrame, name: str, columns: Sequence[str]) -> pd.DataFrame:
    """Fail with one line when ``table`` is empty or lacks a column the figure reads."""
    missing = [c for c in columns if c not in table.columns]
    if missing:
        raise NexError(f"the {name} table lacks column(s) {', '.join(missing)}; "
                       f"regenerate it with the current nex-causal")
    if table.empty:
        raise NexError(f"the {name} table is empty: nothing to plot")
    return table



def save_figure(fig: Figure, stem: str | Path, *, config: dict[str, Any] | None = None) -> list[Path]:
    """Write ``<stem>.pdf`` (vector) and ``<stem>.png`` (300 dpi) atomically, plus ``<stem>.json``.

    The PDF carries no creation date, so the same tables give the same bytes.
    """
    stem = Path(stem)
    paths = []
    with matplotlib.rc_context(STYLE):
        for fmt, metadata in (("pdf", {"Creator": f"nex-causal {installed('nex-causal')}", "CreationDate": None}),
                              ("png", {"Software": f"nex-causal {installed('nex-causal')}"})):
            path = stem.with_name(f"{stem.name}.{fmt}")
            with atomic_path(path) as tmp:
                fig.savefig(tmp, format=fmt, metadata=metadata)
            paths.append(path)
    write_json(stem.with_name(f"{stem.name}.json"), {"figure": stem.name, "config": dict(config or {}),
                                                     "versions": versions()})
    return paths


