"""The settings of the method (NEX_METHOD sections 2-3), defaults as the reference release has them."""

from __future__ import annotations

from dataclasses import dataclass, field

from nex_causal.nex.phases import check_params


@dataclass(frozen=True)
class NexConfig:
    """How responses are segmented and credited; ``rho`` and ``min_run`` are the paper's.

    The two switches are named departures from the reference, both off by default:
    ``positive_only`` introduces only neurons with positive mass, ``mad_rounding`` treats a
    MAD within floating-point rounding of 0 as 0.
    """

    rho: float = field(default=0.95, metadata={"help": "sticky self-transition of the E/X HMM, in (0, 1)"})
    min_run: int = field(default=2, metadata={"help": "shortest E or X run, in rows"})
    positive_only: bool = field(default=False, metadata={
        "help": "introduce only neurons with positive mass (the reference also counts zero-mass entries)"})
    mad_rounding: bool = field(default=False, metadata={
        "help": "treat a MAD within float rounding of 0 as 0 (the reference tests mad <= 0 exactly)"})

    def __post_init__(self) -> None:
        check_params(self.rho, self.min_run)
