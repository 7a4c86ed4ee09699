"""The planted route: each strategy family's computation confined, in training, to its own block of MLP units.

The scout organism's ground truth needs to say which MLP units carry which strategy. Rather
than guess it afterwards with a probe, training plants it: in every layer, units
``[f * block, (f + 1) * block)`` belong to family ``f`` (in ``scout.FAMILIES`` order) and the
rest are shared. At every position that predicts a token of family ``f`` (its exploration,
its applications in the exploit), an L1 penalty pushes down the activation of every unit
outside ``f``'s block; at positions of no family (prompt, indices, sums, answer) it pushes
down every family block. The activation is the bridge's ``blocks.{l}.mlp.hook_post``, the
very one a capture records, read through the TransformerBridge during training.

So after training, "the units of family ``f``" is a known set (``units``), and how much of
the activation mass really stays inside the blocks is measured, not assumed
(``docs/organisms.md``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from nex_causal.cache import pack_keys
from nex_causal.zoo.scout import FAMILIES, NONE

if TYPE_CHECKING:
    import torch

IGNORE = -1  # the route label of positions that predict nothing routed (the prompt, padding)


@dataclass(frozen=True)
class Route:
    """``block`` units per family in every layer, and the weight of the L1 penalty."""

    block: int = 48
    penalty: float = 1.0

    def label(self, family: str) -> int:
        """A family's route label (its index), or that of ``none`` after the families."""
        return len(FAMILIES) if family == NONE else FAMILIES.index(family)

    def allowed(self, width: int) -> torch.Tensor:
        """``[len(FAMILIES) + 1, width]`` bool: the units each label may use (the shared units for ``none``)."""
        import torch

        out = torch.zeros(len(FAMILIES) + 1, width, dtype=torch.bool)
        for f in range(len(FAMILIES)):
            out[f, f * self.block:(f + 1) * self.block] = True
        out[len(FAMILIES), len(FAMILIES) * self.block:] = True
        return out

    def penalty_of(self, acts: list[torch.Tensor], labels: torch.Tensor,
                   exempt: tuple[int, int] | None = None) -> torch.Tensor:
        """Mean over routed positions and layers of the share of |activation| on units a position may not use.

        ``acts``: each layer's ``[B, T, D]`` activations; ``labels``: ``[B, T]`` route labels
        (``IGNORE`` where nothing is routed). A share, not a sum: the loss falls only when a
        position's activation mass moves into its own block, which is also what a top-k
        capture of the activations reads. Units ``[exempt[0], exempt[1])`` count on neither side
        of the share (a localized level's free block, ``zoo.localize``: it may fire anywhere).
        """
        on = labels != IGNORE
        width = acts[0].shape[-1]
        barred = ~self.allowed(width).to(acts[0].device)[labels.clamp(min=0)]
        counted = acts[0].new_ones(width)
        if exempt is not None:
            counted[exempt[0]:exempt[1]] = 0
        per_layer = [((a.abs() * counted * barred).sum(-1) / ((a.abs() * counted).sum(-1) + 1e-6))[on].mean()
                     for a in acts]
        return sum(per_layer) / len(per_layer)

    def units(self, family: str, n_layers: int) -> np.ndarray:
        """The packed keys of ``family``'s block in every layer: its planted units."""
        f = FAMILIES.index(family)
        layers = np.repeat(np.arange(n_layers), self.block)
        units = np.tile(np.arange(f * self.block, (f + 1) * self.block), n_layers)
        return pack_keys(layers, units)
