"""The one style every figure is drawn in, and how a figure is saved.

8 pt sans-serif text, widths of one (``SINGLE``, 3.3 in) or two (``DOUBLE``, 6.9 in) columns
of a two-column paper, and series told apart by marker, line style and hatch as well as by
grey level, so that a greyscale print keeps every distinction. Legends sit outside the axes
or where they cover no data; ``layout_problems`` finds texts cut at the canvas edge, texts that
overlap and tick labels that run together.
``save_figure`` writes a vector PDF (TrueType text embedded, no raster image) and a 300 dpi
PNG, atomically, with the table each was drawn from (``<name>.csv``), its caption
(``<name>.caption.txt``) and a ``<name>.json`` sidecar recording the tables' configs and the
package versions.
"""

from __future__ import annotations

import functools
import warnings
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import matplotlib
import matplotlib.text
import pandas as pd
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.transforms import Bbox

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
TICK_GAP = 1.0  # points: the least space between neighbouring tick labels

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



def _overlap(a: Bbox, b: Bbox, pad: float) -> bool:
    """Whether boxes ``a`` and ``b`` come closer than ``pad`` pixels (a negative pad: overlap by more than it)."""
    return min(a.x1, b.x1) - max(a.x0, b.x0) > -pad and min(a.y1, b.y1) - max(a.y0, b.y0) > -pad


def _tick_labels(axis) -> list[matplotlib.text.Text]:
    """The tick labels ``axis`` draws (ticks within its view limits, with text), in order along it."""
    low, high = sorted(axis.get_view_interval())
    slack = 1e-9 * max(1.0, high - low)
    at = 0 if axis.axis_name == "x" else 1
    labels = [t for tick in axis.get_major_ticks() + axis.get_minor_ticks() for t in (tick.label1, tick.label2)
              if t.get_visible() and t.get_text().strip() and low - slack <= t.get_position()[at] <= high + slack]
    return sorted(labels, key=lambda t: t.get_position()[at])


def layout_problems(fig: Figure) -> list[str]:
    """What keeps ``fig`` from reading as a paper's figure, measured as ``save_figure`` writes it (at its
    resolution, whose text extents and so layout differ slightly from the screen's); empty when nothing does.

    - ``cut``: a visible text (title, label, legend entry, annotation), a legend or an axis's drawn tick
      labels leave the canvas;
    - ``overlap``: two texts cover each other: titles, axis labels, annotations, tick labels of different
      axes, and each legend as one box (entries and handles);
    - ``crowded``: neighbouring tick labels of one axis come closer than ``TICK_GAP`` points;
    - ``drawing``: a warning while drawing (constrained layout giving up because the axes collapsed).
    Each problem is one line naming the texts and their boxes in pixels.
    """
    dpi = fig.get_dpi()
    canvas = FigureCanvasAgg(fig)
    try:
        with matplotlib.rc_context(STYLE), warnings.catch_warnings(record=True) as warned:
            warnings.simplefilter("always")
            fig.set_dpi(STYLE["savefig.dpi"])
            canvas.draw()  # lay out (constrained layout, tick labels) as saving does
        renderer = canvas.get_renderer()
        width, height = canvas.get_width_height()
        tol, gap = 0.5 * fig.dpi / 100, TICK_GAP * fig.dpi / 72

        def where(b: Bbox) -> str:
            return f"({b.x0:.0f}, {b.y0:.0f}, {b.x1:.0f}, {b.y1:.0f})"

        def cut(what: str, b: Bbox | None) -> list[str]:
            off = b is not None and (b.x0 < -tol or b.y0 < -tol or b.x1 > width + tol or b.y1 > height + tol)
            return [f"cut: {what} {where(b)}"] if off else []

        out = [f"drawing: {w.message}" for w in warned]  # e.g. a layout that collapsed its axes
        items: list[tuple[str, Bbox, object]] = []  # (what, its box, the axis it is a tick label of)
        axes = [ax for ax in fig.axes if ax.get_visible()]
        for k, ax in enumerate(axes, 1):
            for name, axis in (("x", ax.xaxis), ("y", ax.yaxis)):
                what = f"{name}-axis of panel {k}" + (f" {ax.get_title()!r}" if ax.get_title() else "")
                out += cut(what, axis.get_tightbbox(renderer))  # the ticks drawn, with the axis label
                labels = [(t.get_text(), t.get_window_extent(renderer)) for t in _tick_labels(axis)]
                out += [f"crowded: {what}, {one!r} and {next_one!r} {where(x)} {where(y)}"
                        for (one, x), (next_one, y) in zip(labels, labels[1:]) if _overlap(x, y, gap)]
                items += [(f"tick {text!r} of the {what}", extent, axis) for text, extent in labels]
        legends = [leg for leg in [*fig.legends, *(ax.get_legend() for ax in axes)]
                   if leg is not None and leg.get_visible()]
        in_legends = {id(t) for leg in legends for t in [*leg.get_texts(), leg.get_title()]}  # judged as one box
        ticks = {id(t) for ax in fig.axes for axis in (ax.xaxis, ax.yaxis)
                 for tick in axis.get_major_ticks() + axis.get_minor_ticks() for t in (tick.label1, tick.label2)}
        for text in fig.findobj(matplotlib.text.Text):
            if (id(text) in ticks or not text.get_visible() or not text.get_text().strip()
                    or (text.axes is not None and not text.axes.get_visible())):
                continue
            what, b = repr(text.get_text()), text.get_window_extent(renderer)
            out += cut(what, b)
            if id(text) not in in_legends:
                items.append((what, b, None))
        for leg in legends:
            what = f"legend {', '.join(repr(t.get_text()) for t in leg.get_texts())}"
            out += cut(what, leg.get_window_extent(renderer))
            items.append((what, leg.get_window_extent(renderer), None))
        out += [f"overlap: {a} {where(x)} and {b} {where(y)}" for i, (a, x, axis) in enumerate(items)
                for b, y, other in items[i + 1:] if (axis is None or axis is not other) and _overlap(x, y, -tol)]
        return out
    finally:
        fig.set_dpi(dpi)


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


