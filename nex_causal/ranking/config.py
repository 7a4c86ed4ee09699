"""What determines a ranking of a family and a settings sweep: light dataclasses (no torch, no pandas)."""

from __future__ import annotations

import itertools
from dataclasses import dataclass, field
from typing import Literal

from nex_causal.errors import NexError


@dataclass(frozen=True)
class RankingConfig:
    """Which model-level scores rank the family, against which accuracy, and the statistics' knobs."""

    scores: list[str] | None = field(default=None, metadata={"help": "scores to compute (default: all)"})
    calibration: list[str] = field(default_factory=lambda: ["self"], metadata={
        "help": "NEX calibrations, a row each: self (the authors'), pooled, cross (with its variant x variant "
                "matrix), split"})
    accuracy: Literal["cache", "family"] = field(default="cache", metadata={
        "help": "cache: each cache's sampled accuracy; family: the family table's (greedy) accuracy"})
    n_bins: int = field(default=10, metadata={"help": "proxy bins of the inverted-U"})
    n_boot: int = field(default=1000, metadata={"help": "bootstrap resamples of prompts"})
    level: float = field(default=0.95, metadata={"help": "confidence level of the intervals"})
    seed: int = field(default=0, metadata={"help": "bootstrap seed"})
    n_neurons: int | None = field(default=None, metadata={
        "help": "MLP neurons (n_layers * d_mlp) for MUI (default: from each cache's capture.json)"})


@dataclass(frozen=True)
class SweepConfig:
    """The settings a sweep tries, the default it declares beforehand, and how it chooses."""

    windows: list[int] = field(default_factory=lambda: [1, 2, 4, 8, 16, 32], metadata={"help": "tokens per row"})
    sparsifiers: list[str] = field(default_factory=lambda: ["topk:8", "topk:16", "topk:32", "topk:64"],
                                   metadata={"help": "selections, each at most as loose as the captured one"})
    rho: list[float] = field(default_factory=lambda: [0.9, 0.95, 0.99], metadata={"help": "HMM stickiness"})
    min_run: list[int] = field(default_factory=lambda: [1, 2, 3], metadata={"help": "shortest E/X run"})
    default: str = field(default="window=4,sparsifier=topk:64,rho=0.95,min_run=2", metadata={
        "help": "the pre-declared setting, reported beside the chosen one"})
    criterion: Literal["spearman", "kendall", "best_of_n"] = field(default="spearman", metadata={
        "help": "what the setting is chosen by, on split 1"})
    accuracy: Literal["family", "cache"] = field(default="family", metadata={
        "help": "family: the family table's accuracy; cache: each cache's sampled accuracy"})
    min_crediting_cycles: float = field(default=0.0, metadata={
        "help": "a setting is eligible only when its median crediting cycles per response reach this"})
    max_coverage: float = field(default=1.0, metadata={
        "help": "a setting is eligible only when its median neuron coverage is at most this"})
    n_boot: int = field(default=1000, metadata={"help": "bootstrap resamples of prompts"})
    seed: int = field(default=0, metadata={"help": "seed of the bootstrap and of the prompt split"})

    def settings(self) -> list[dict]:
        return [{"window": w, "sparsifier": s, "rho": r, "min_run": m}
                for w, s, r, m in itertools.product(self.windows, self.sparsifiers, self.rho, self.min_run)]

    def default_setting(self) -> dict:
        try:
            parts = dict(item.split("=", 1) for item in self.default.split(","))
            return {"window": int(parts["window"]), "sparsifier": parts["sparsifier"], "rho": float(parts["rho"]),
                    "min_run": int(parts["min_run"])}
        except (KeyError, ValueError):
            raise NexError(f"sweep default {self.default!r} must read window=W,sparsifier=S,rho=R,min_run=M") from None
