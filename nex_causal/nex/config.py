"""The settings of the method (NEX_METHOD sections 2-3), defaults as the reference release has them."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from nex_causal.nex.phases import check_params


@dataclass(frozen=True)
class NexConfig:
    """How responses are segmented and credited; ``rho`` and ``min_run`` are the paper's.

    The other settings are named departures from the reference, all off by default:
    ``positive_only`` introduces only neurons with positive mass, ``mad_rounding`` treats a
    MAD within floating-point rounding of 0 as 0, ``skip_opening`` credits nothing from a
    response's first cycle (whose explore run holds the neurons every later row reuses),
    ``prompt_seen`` never introduces the neurons the prompt already activated, and
    ``weighting`` replaces the saturating tanh (which ties hundreds of neurons at w = 1) by
    Eff mass or Eff - Red mass, scaled into [-1, 1].
    """

    rho: float = field(default=0.95, metadata={"help": "sticky self-transition of the E/X HMM, in (0, 1)"})
    min_run: int = field(default=2, metadata={"help": "shortest E or X run, in rows"})
    positive_only: bool = field(default=False, metadata={
        "help": "introduce only neurons with positive mass (the reference also counts zero-mass entries)"})
    mad_rounding: bool = field(default=False, metadata={
        "help": "treat a MAD within float rounding of 0 as 0 (the reference tests mad <= 0 exactly)"})
    skip_opening: bool = field(default=False, metadata={
        "help": "credit nothing from each response's first cycle (the reference credits every cycle)"})
    prompt_seen: bool = field(default=False, metadata={
        "help": "neurons the prompt already activated are never introduced (needs a capture with --record-prompt)"})
    weighting: Literal["tanh", "eff", "eff-red"] = field(default="tanh", metadata={
        "help": "weights from Eff/Red: tanh(log(Eff/Red)) (the reference), Eff mass or Eff - Red mass scaled "
                "into [-1, 1] (no ties at 1)"})

    def __post_init__(self) -> None:
        check_params(self.rho, self.min_run)
