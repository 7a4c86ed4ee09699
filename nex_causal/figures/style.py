"""The one style every figure is drawn in, and how a figure is saved.

8 pt sans-serif text, widths of one (``SINGLE``, 3.3 in) or two (``DOUBLE``, 6.9 in) columns
of a two-column paper, and series told apart by marker, line style and hatch as well as by
grey level, so that a greyscale print keeps every distinction. Legends sit outside the axes
or where they cover no data; ``clipped_texts`` finds any text that leaves the canvas.
``save_figure`` writes a vector PDF (TrueType text embedded, no raster image) and a 300 dpi
PNG, atomically, with the table each was drawn from (``<name>.csv``), its caption
(``<name>.caption.txt``) and a ``<name>.json`` sidecar recording the tables' configs and the
package versions.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import matplotlib
import matplotlib.text
import pandas as pd
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from nex_causal.errors import NexError
from nex_causal.io import atomic_path, versions, write_json
from nex_causal.versions import installed

SINGLE = 3.3  # inches: one column of a two-column paper
DOUBLE = 6.9  # inches: the full text width
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



def clipped_texts(fig: Figure) -> list[str]:
    """The texts of ``fig`` that leave the canvas when it is drawn: each visible title, label,
    legend entry or annotation as ``'text' (x0, y0, x1, y1 in pixels)``, and each axis whose drawn
    tick labels do (as ``'x-axis of <title>'``); empty when nothing is cut off."""
    canvas = FigureCanvasAgg(fig)
    with matplotlib.rc_context(STYLE):
        canvas.draw()  # lay out (constrained layout, tick labels) as saving would
    renderer = canvas.get_renderer()
    width, height = canvas.get_width_height()

    def outside(box) -> bool:
        return box.x0 < -0.5 or box.y0 < -0.5 or box.x1 > width + 0.5 or box.y1 > height + 0.5

    def where(box) -> str:
        return f"({box.x0:.0f}, {box.y0:.0f}, {box.x1:.0f}, {box.y1:.0f})"

    out, tick_labels = [], set()
    for ax in fig.axes:
        if not ax.get_visible():
            continue
        for name, axis in (("x", ax.xaxis), ("y", ax.yaxis)):
            ticks = axis.get_major_ticks() + axis.get_minor_ticks()
            tick_labels |= {id(t) for tick in ticks for t in (tick.label1, tick.label2)}
            box = axis.get_tightbbox(renderer)  # only the ticks drawn, with the axis label
            if box is not None and outside(box):
                out.append(f"{name}-axis of {ax.get_title() or 'an axes'!r} {where(box)}")
    for text in fig.findobj(matplotlib.text.Text):
        if id(text) in tick_labels or not text.get_visible() or not text.get_text().strip():
            continue
        if text.axes is not None and not text.axes.get_visible():
            continue
        box = text.get_window_extent(renderer)
        if outside(box):
            out.append(f"{text.get_text()!r} {where(box)}")
    return out


def save_figure(fig: Figure, stem: str | Path, *, config: dict[str, Any] | None = None,
                data: Mapping[str, pd.DataFrame] | None = None, caption: str | None = None) -> list[Path]:
    """Write ``<stem>.pdf`` (vector) and ``<stem>.png`` (300 dpi) atomically, plus ``<stem>.json``,
    and when given the tables drawn (by name: the first as ``<stem>.csv``, any other as
    ``<stem>.<name>.csv``) and the caption (``<stem>.caption.txt``).

    The PDF carries no creation date, so the same tables give the same bytes.
    """
    stem = Path(stem)
    paths = []
    for k, (name, table) in enumerate((data or {}).items()):
        with atomic_path(stem.with_name(f"{stem.name}.csv" if k == 0 else f"{stem.name}.{name}.csv")) as tmp:
            table.to_csv(tmp, index=False)
    if caption is not None:
        with atomic_path(stem.with_name(f"{stem.name}.caption.txt")) as tmp:
            tmp.write_text(caption.strip() + "\n")
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


