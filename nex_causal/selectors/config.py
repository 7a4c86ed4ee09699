"""What determines a Best-of-N selection table: which selectors run, and their published knobs (light: no pandas)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal


@dataclass(frozen=True)
class SelectionConfig:
    """Which selectors run and their knobs (defaults: the papers' values, NEX_METHOD section 8)."""

    selectors: list[str] | None = field(default=None, metadata={
        "help": "selectors to run (default: all, with the NEX rows of `calibration`)"})
    calibration: list[str] = field(default_factory=lambda: ["self"], metadata={
        "help": "NEX calibrations to select with (nex-<mode> rows): self (the authors'), pooled, cross, split"})
    early_tokens: int = field(default=32, metadata={"help": "NAD early-decision prefix, in tokens"})
    deepconf_window: int = field(default=2048, metadata={"help": "DeepConf group (sliding window) size, in tokens"})
    bottom_fraction: float = field(default=0.1, metadata={"help": "DeepConf bottom-group share"})
    deepconf_entries: Literal["returned", "top20"] = field(default="returned", metadata={
        "help": "DeepConf token confidence: mean of the log-probs an engine returns (top 20, plus the sampled "
                "token when outside; the authors' code) or the top-20 sum over 20"})
    filter_eta: float = field(default=0.1, metadata={"help": "share of traces deepconf-filter10-vote keeps"})
    borda_power: float = field(default=0.5, metadata={"help": "power p of the self-certainty Borda vote (N - r + 1)^p"})
    self_certainty_alignment: Literal["reference", "predicting"] = field(default="reference", metadata={
        "help": "reference: the distributions at the response's positions (the authors' code); predicting: "
                "those that predicted each response token (NEX's alignment)"})
    knn_k: int = field(default=3, metadata={"help": "neighbours of the kNN-medoid"})
    n_random_seeds: int = field(default=100, metadata={"help": "draws averaged by the random baseline"})
    n_boot: int = field(default=1000, metadata={"help": "bootstrap resamples of prompts"})
    level: float = field(default=0.95, metadata={"help": "confidence level of the intervals"})
    seed: int = field(default=0, metadata={"help": "seed of the bootstrap and the random baseline"})
