"""The registry of a run's figures: each names the tables it needs and how to draw it."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from matplotlib.figure import Figure

from nex_causal.registry import Registry


@dataclass(frozen=True)
class FigureSpec:
    """A figure of a run: the tables it needs, those it uses when present, how to draw it, and its
    caption (one paragraph from the same tables: what is plotted, n, intervals)."""

    tables: tuple[str, ...]
    draw: Callable[..., Figure]
    caption: Callable[..., str]
    optional: tuple[str, ...] = ()


FIGURES: Registry[FigureSpec] = Registry("figure", providers=tuple(  # in the order figures are drawn
    f"nex_causal.figures.{name}" for name in ("trace", "profile", "ranking", "selection", "sweep", "transfer",
                                              "localization", "positive_control", "stopping")))
