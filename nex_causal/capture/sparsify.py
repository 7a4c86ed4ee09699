"""Which MLP neurons enter a cache row, and with what per-token score (NEX_METHOD section 1).

A sparsifier maps one token's MLP activations ``a`` [B, L, D] (the input of the down
projection: ``act(gate) * up`` for gated MLPs) to a sparse selection of neurons with a
non-negative score each. The row's mass of a neuron is the sum of its scores over the
row's tokens. Each kind is one registered class (``SPARSIFIERS``), named on the command line
as ``NAME:VALUE``:

    topk:K         per token, the K neurons with the largest |a| over all layers; score |a|
    layer-topk:K   per token and layer, the K neurons with the largest |a|; score |a|
    threshold:T    per token, every neuron with |a| > T; score |a|
    mui:K          per token, the K neurons with the largest positive contribution
                   a_n * (W_out[n] . W_U[:, next token]) to the generated token's logit
                   (MUI-style, final norm ignored); score = that contribution

A sparsifier declares the inputs it needs (``needs_contributions``), so capture computes
the next-token contributions only for the kinds that read them. ``derives_from`` says
whether its selection can be computed from another's (a stricter top-k from a looser one),
which is what re-windowing a token-level cache offline relies on.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import torch

from nex_causal.errors import NexError
from nex_causal.registry import Registry

Selection = tuple[torch.Tensor, torch.Tensor, torch.Tensor]  # (row index, flat neuron index l*D+u, score)


@dataclass(frozen=True)
class Sparsifier:
    """A parsed sparsifier spec; ``select`` applies it to one token's activations [B, L, D]."""

    value: float
    kind: ClassVar[str]
    integer: ClassVar[bool] = True  # VALUE is a count (K) rather than a threshold
    needs_contributions: ClassVar[bool] = False

    @staticmethod
    def parse(spec: str) -> Sparsifier:
        """The sparsifier ``NAME:VALUE`` names; a one-line NexError for anything else."""
        name, _, raw = str(spec).partition(":")
        if name not in SPARSIFIERS or not raw:
            forms = ", ".join(f"{k}:{'K' if v.integer else 'T'}" for k, v in SPARSIFIERS.items())
            raise NexError(f"cannot parse sparsifier {spec!r}: use one of {forms} (e.g. topk:500)")
        kind = SPARSIFIERS[name]
        try:
            value = float(raw)
        except ValueError:
            raise NexError(f"cannot parse sparsifier {spec!r}: {raw!r} is not a number") from None
        if value <= 0 or (kind.integer and value != int(value)):
            raise NexError(f"cannot parse sparsifier {spec!r}: "
                           f"{'K must be a positive integer' if kind.integer else 'T must be > 0'}")
        return kind(value)

    def __str__(self) -> str:
        return f"{self.kind}:{int(self.value) if self.integer else self.value:g}"

    def scores(self, acts: torch.Tensor, contribution: torch.Tensor | None) -> torch.Tensor:
        """[B, L*D] non-negative scores of every neuron, from which the kind selects."""
        return acts.reshape(acts.shape[0], -1).abs()

    def select(self, acts: torch.Tensor, contribution: torch.Tensor | None = None) -> Selection:
        """Sparse selection of ``acts`` [B, L, D]: (row index, flat neuron index l*D+u, score).

        ``contribution`` [B, L, D] is the per-neuron contribution to the logit of each row's
        next token, which kinds with ``needs_contributions`` read.
        """
        if self.needs_contributions and contribution is None:
            raise NexError(f"the {self.kind} sparsifier needs the next-token contributions")
        score = self.scores(acts, contribution)
        vals, flat = self.pick(score, acts.shape)
        rows = torch.arange(score.shape[0], device=acts.device)[:, None].expand_as(flat)
        keep = vals > 0  # a zero score carries no mass
        return rows[keep], flat[keep], vals[keep]

    def pick(self, score: torch.Tensor, shape: torch.Size) -> tuple[torch.Tensor, torch.Tensor]:
        """[B, n] values and flat indices of the selected neurons (before dropping zeros)."""
        raise NotImplementedError

    def derives_from(self, other: Sparsifier) -> bool:
        """Whether this selection can be computed from ``other``'s, without the model."""
        return type(other) is type(self) and self.value <= other.value


SPARSIFIERS: Registry[type[Sparsifier]] = Registry("sparsifier")


@SPARSIFIERS.register("topk")
@dataclass(frozen=True)
class TopK(Sparsifier):
    kind: ClassVar[str] = "topk"

    def pick(self, score, shape):
        return score.topk(min(int(self.value), score.shape[1]), dim=-1)


@SPARSIFIERS.register("layer-topk")
@dataclass(frozen=True)
class LayerTopK(Sparsifier):
    kind: ClassVar[str] = "layer-topk"

    def pick(self, score, shape):
        batch, layers, width = shape
        vals, units = score.reshape(batch, layers, width).topk(min(int(self.value), width), dim=-1)
        flat = units + torch.arange(layers, device=score.device)[:, None] * width
        return vals.reshape(batch, -1), flat.reshape(batch, -1)


@SPARSIFIERS.register("threshold")
@dataclass(frozen=True)
class Threshold(Sparsifier):
    kind: ClassVar[str] = "threshold"
    integer: ClassVar[bool] = False

    def select(self, acts, contribution=None):
        score = self.scores(acts, contribution)
        rows, flat = torch.nonzero(score > self.value, as_tuple=True)
        return rows, flat, score[rows, flat]

    def derives_from(self, other: Sparsifier) -> bool:
        return type(other) is type(self) and self.value >= other.value


@SPARSIFIERS.register("mui")
@dataclass(frozen=True)
class MUI(TopK):
    kind: ClassVar[str] = "mui"
    needs_contributions: ClassVar[bool] = True

    def scores(self, acts, contribution):
        return contribution.reshape(contribution.shape[0], -1).clamp(min=0)  # positive contributions only
