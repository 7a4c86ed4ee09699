"""What determines a Best-of-N selection table (which selectors run, their published knobs) and the stop rules'
settings and sweep (light: no pandas)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from nex_causal.errors import NexError
from nex_causal.settings import same_field


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


@dataclass(frozen=True)
class StopSettings:
    """The knobs of the stop rules (``selectors.stopping``), shared by ``sample --stop`` and the stop stage."""

    deepconf_window: int = same_field(SelectionConfig, "deepconf_window")
    probe_every: int = field(default=16, metadata={"help": "DEER: tokens between trial answers"})
    probe_tokens: int = field(default=8, metadata={"help": "DEER: tokens of a trial answer at most"})
    burn_in: int = field(default=8, metadata={"help": "nex-gmf: usable rows before the running GMF may stop a trace"})
    keep: float = field(default=0.5, metadata={"help": "pruning rules: share of a prompt's samples kept"})

    def __post_init__(self) -> None:
        if min(self.deepconf_window, self.probe_every, self.probe_tokens, self.burn_in) < 1 or not 0 < self.keep <= 1:
            raise NexError("deepconf_window, probe_every, probe_tokens and burn_in must be at least 1 and keep in "
                           f"(0, 1], got {self.deepconf_window}, {self.probe_every}, {self.probe_tokens}, "
                           f"{self.burn_in}, {self.keep}")


@dataclass(frozen=True)
class StopConfig(StopSettings):
    """The stop stage: which rules, the calibration prompts their cutoffs come from, the sweep, the intervals."""

    rules: list[str] | None = field(default=None, metadata={"help": "stop rules to evaluate (default: all)"})
    calibration: str | None = field(default=None, metadata={
        "help": "task spec of the calibration prompts (never the reported ones), e.g. scout:32@7", "file": True})
    shares: list[float] = field(default_factory=lambda: [0.02, 0.05, 0.1, 0.2, 0.3, 0.5, 0.75, 1.0], metadata={
        "help": "trace rules' sweep: each cutoff stops this share of the calibration traces"})
    prune_rows: list[int] = field(default_factory=lambda: [1, 2, 4, 8, 16, 32], metadata={
        "help": "group rules' sweep: rows written before pruning"})
    tolerance: float = field(default=0.0, metadata={
        "help": "matched accuracy: the calibration prompts' accuracy may fall at most this far below the full "
                "generation's"})
    n_boot: int = same_field(SelectionConfig, "n_boot")
    level: float = same_field(SelectionConfig, "level")
    seed: int = same_field(SelectionConfig, "seed")
