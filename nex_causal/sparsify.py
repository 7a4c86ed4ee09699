"""Which MLP neurons enter a cache row, and with what per-token score (NEX_METHOD section 1).

A sparsifier maps one token's MLP activations ``a`` [B, L, D] (the input of the down
projection: ``act(gate) * up`` for gated MLPs) to a sparse selection of neurons with a
non-negative score each. The row's mass of a neuron is the sum of its scores over the
row's tokens. Named on the command line as ``NAME:VALUE``:

    topk:K         per token, the K neurons with the largest |a| over all layers; score |a|
    layer-topk:K   per token and layer, the K neurons with the largest |a|; score |a|
    threshold:T    per token, every neuron with |a| > T; score |a|
    mui:K          per token, the K neurons with the largest positive contribution
                   a_n * (W_out[n] . W_U[:, next token]) to the generated token's logit
                   (MUI-style, final norm ignored); score = that contribution
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from nex_causal.errors import NexError

KINDS = ("topk", "layer-topk", "threshold", "mui")


@dataclass(frozen=True)
class Sparsifier:
    """A parsed sparsifier spec; ``select`` applies it to one token's activations."""

    kind: str
    value: float

    @classmethod
    def parse(cls, spec: str) -> "Sparsifier":
        name, _, raw = spec.partition(":")
        if name not in KINDS or not raw:
            raise NexError(f"cannot parse sparsifier {spec!r}: use one of "
                           "topk:K, layer-topk:K, threshold:T, mui:K (e.g. topk:500)")
        try:
            value = float(raw)
        except ValueError:
            raise NexError(f"cannot parse sparsifier {spec!r}: {raw!r} is not a number") from None
        if value <= 0 or (name != "threshold" and value != int(value)):
            raise NexError(f"cannot parse sparsifier {spec!r}: "
                           f"{'T must be > 0' if name == 'threshold' else 'K must be a positive integer'}")
        return cls(name, value)

    def __str__(self) -> str:
        value = int(self.value) if self.kind != "threshold" else self.value
        return f"{self.kind}:{value}"

    def select(self, acts: torch.Tensor, contribution: torch.Tensor | None = None
               ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Sparse selection of ``acts`` [B, L, D]: (row index, flat neuron index l*D+u, score).

        ``contribution`` [B, L, D] is required by ``mui``: the per-neuron contribution to
        the logit of each row's next token.
        """
        batch, layers, width = acts.shape
        if self.kind == "mui":
            if contribution is None:
                raise NexError("the mui sparsifier needs the next-token contributions")
            score = contribution.reshape(batch, -1).clamp(min=0)
        else:
            score = acts.reshape(batch, -1).abs()
        if self.kind == "threshold":
            rows, flat = torch.nonzero(score > self.value, as_tuple=True)
            return rows, flat, score[rows, flat]
        k = int(self.value)
        if self.kind == "layer-topk":
            per_layer = score.reshape(batch, layers, width)
            vals, units = per_layer.topk(min(k, width), dim=-1)
            flat = (units + torch.arange(layers, device=acts.device)[:, None] * width).reshape(batch, -1)
            vals = vals.reshape(batch, -1)
        else:
            vals, flat = score.topk(min(k, layers * width), dim=-1)
        rows = torch.arange(batch, device=acts.device)[:, None].expand_as(flat)
        keep = vals > 0  # a zero score carries no mass; mui keeps positive contributions only
        return rows[keep], flat[keep], vals[keep]
