"""Gradient-based localization of a transfer: attribution patching and a learned transplant mask.

Both read an *outcome* that knows the skill: the mean log-probability per token of a labelled
continuation (the task's reference solution, else the donor's own response) after each prompt
of the attribution split, a split the test never scores.

**The transplant, relaxed.** An MLP's output is a sum over its units, each unit's term reading
the same input x: ``out = sum_u W_out[:, u] a_u(x)``. Transplanting unit u replaces its term by
the donor's, ``W_out^d[:, u] a^d_u(x)`` (the donor's weights applied to the recipient's x), so
with a mask m over units

    out(m) = out + sum_u m_u (W_out^d[:, u] a^d_u(x) - W_out[:, u] a_u(x))

is *exactly* the weight transplant of {u : m_u = 1} when m is binary, in every layer at
once, and differentiable in between (``Relaxed``: hooks on each block's MLP input,
``hook_post`` and output).

- ``atp``: attribution patching (AtP, Kramar et al. 2024), the first-order effect of patching
  each unit's activation with the donor's: ``sum_t d outcome / d a_u(t) * (a^d_u(t) - a_u(t))``,
  the donor's activations from its own pass on the same tokens. In an ablation (no donor) it is
  the first-order loss of zeroing the unit, ``sum_t d outcome / d a_u(t) * a_u(t)``.
- ``atp_transplant``: the same first-order estimate for the transplant itself, ``d outcome / d m``
  at m = 0.
- ``learned_mask``: grafting / Localize-and-Stitch style: m = sigmoid(s) trained by Adam to
  maximise the outcome minus ``l1`` times the mean of m, ``l1`` in the outcome's own units (the
  gap between donor and recipient on the split); the units ranked by their final m. The mask
  starts from the donor's side (m = 0.95 everywhere) and the budget takes back the units the
  outcome does not need: from the recipient's side a half-transplanted unit is often worse than
  either end (its first-order effect is negative while its whole transplant helps), and a mask
  started there leaves such units out (seen on a planted corruption, where it then recovered 6%
  of the ceiling instead of all of it).
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator, Sequence

import numpy as np
import torch
from tqdm.auto import tqdm

from nex_causal.errors import NexError
from nex_causal.models.geometry import MLPGeometry, mlp_hook

Pair = tuple[torch.Tensor, torch.Tensor]  # (prompt ids, continuation ids)
START = 3.0  # the mask's starting logit: m = 0.95, every unit nearly the donor's


def _batches(pairs: Sequence[Pair], batch_size: int) -> Iterator[tuple[torch.Tensor, torch.Tensor, torch.Tensor]]:
    """Right-padded ``prompt + continuation`` ids, the next-token targets and a mask of the continuation's
    targets (the positions the outcome reads), batch by batch."""
    for start in range(0, len(pairs), batch_size):
        chunk = pairs[start:start + batch_size]
        seqs = [torch.cat([p, c]).long() for p, c in chunk]
        width = max(len(s) for s in seqs)
        ids = torch.zeros(len(seqs), width, dtype=torch.long)
        read = torch.zeros(len(seqs), width - 1, dtype=torch.bool)
        for row, ((prompt, cont), seq) in enumerate(zip(chunk, seqs)):
            ids[row, :len(seq)] = seq
            read[row, len(prompt) - 1:len(seq) - 1] = True
        yield ids, ids[:, 1:], read


def _outcome(logits: torch.Tensor, targets: torch.Tensor, read: torch.Tensor, n_pairs: int) -> torch.Tensor:
    """This batch's share of the split's outcome: the sum over its pairs of their mean log p per token, over all
    pairs (so batches add up to the split's mean)."""
    logp = torch.log_softmax(logits[:, :-1].float(), -1).gather(-1, targets[..., None])[..., 0]
    per_pair = (logp * read).sum(1) / read.sum(1).clamp(min=1)
    return per_pair.sum() / n_pairs


def outcome(model, pairs: Sequence[Pair], batch_size: int) -> float:
    """The split's outcome on ``model`` (mean over pairs of the continuation's mean log p per token)."""
    device = model.cfg.device
    total = 0.0
    with torch.no_grad():
        for ids, targets, read in _batches(pairs, batch_size):
            logits = model(ids.to(device), return_type="logits")
            total += float(_outcome(logits, targets.to(device), read.to(device), len(pairs)))
    return total


@contextlib.contextmanager
def weights_fixed(model) -> Iterator[None]:
    """No gradient for ``model``'s weights while the block runs (only masks and activations need one)."""
    flags = [(p, p.requires_grad) for p in model.parameters()]
    for p, _ in flags:
        p.requires_grad_(False)
    try:
        yield
    finally:
        for p, flag in flags:
            p.requires_grad_(flag)


def _graph_root(embedding: torch.Tensor, hook) -> torch.Tensor:
    """Start the autograd graph at the embeddings (the weights take no gradient), so every activation after
    them has one."""
    return embedding.detach().requires_grad_(True)


def atp(recipient, donor, pairs: Sequence[Pair], batch_size: int) -> np.ndarray:
    """``[n_layers, d_mlp]`` AtP scores (see the module docstring); ``donor`` None for an ablation."""
    n_layers, device = recipient.cfg.n_layers, recipient.cfg.device
    score = torch.zeros(n_layers, recipient.cfg.d_mlp, dtype=torch.float64)
    for ids, targets, read in _batches(pairs, batch_size):
        ids = ids.to(device)
        theirs: dict[int, torch.Tensor] = {}
        if donor is not None:
            def keep(layer):
                def hook(act, hook):
                    theirs[layer] = act.detach()
                    return act
                return hook
            with torch.no_grad(), donor.hooks(fwd_hooks=[(mlp_hook(layer), keep(layer)) for layer in range(n_layers)]):
                donor(ids, return_type=None)
        mine: dict[int, torch.Tensor] = {}

        def grab(layer):
            def hook(act, hook):
                act.retain_grad()
                mine[layer] = act
                return act
            return hook

        hooks = [("hook_embed", _graph_root)] + [(mlp_hook(layer), grab(layer)) for layer in range(n_layers)]
        with torch.enable_grad(), weights_fixed(recipient), recipient.hooks(fwd_hooks=hooks):
            logits = recipient(ids, return_type="logits")
            _outcome(logits, targets.to(device), read.to(device), len(pairs)).backward()
        for layer, act in mine.items():
            change = theirs[layer] - act.detach() if donor is not None else act.detach()
            score[layer] += (act.grad * change).double().sum((0, 1)).cpu()
    return score.numpy()


class Relaxed:
    """The recipient with the donor's MLP units mixed in by a mask ``m`` ``[n_layers, d_mlp]`` (module docstring)."""

    def __init__(self, recipient, donor):
        self.recipient = recipient
        mine, theirs = MLPGeometry.of(recipient), MLPGeometry.of(donor)
        mine.check_compatible(theirs)
        units = np.arange(mine.d_mlp)
        self.own = [{k: v.detach() for k, v in mine.neuron_weights(layer, units).items()}
                    for layer in range(mine.n_layers)]
        self.donor = [{k: v.detach() for k, v in theirs.neuron_weights(layer, units).items()}
                      for layer in range(mine.n_layers)]
        original = recipient.blocks[0].mlp.original_component
        self.act = getattr(original, "act_fn", None) or getattr(original, "act", None)
        if self.act is None:
            raise NexError(f"cannot read the activation function of {type(original).__name__}: the transplant "
                           "relaxation knows Llama/Qwen-style (act_fn) and GPT-2-style (act) MLPs")
        self.gated = mine.gated

    def donor_activation(self, layer: int, x: torch.Tensor) -> torch.Tensor:
        """``a^d(x)``: the donor's units on the recipient's MLP input."""
        w = self.donor[layer]
        pre = torch.nn.functional.linear(x, w["in"].to(x.dtype), w.get("in_bias"))
        if not self.gated:
            return self.act(pre)
        return self.act(torch.nn.functional.linear(x, w["gate"].to(x.dtype), w.get("gate_bias"))) * pre

    @contextlib.contextmanager
    def mixed(self, mask: torch.Tensor) -> Iterator[None]:
        """Hooks that add ``sum_u m_u (donor term - own term)`` to every MLP's output while the block runs."""
        inputs: dict[int, torch.Tensor] = {}
        acts: dict[int, torch.Tensor] = {}

        def keep(store, layer):
            def hook(value, hook):
                store[layer] = value
                return value
            return hook

        def mix(layer):
            def hook(out, hook):
                m = mask[layer].to(out.dtype)
                theirs = (m * self.donor_activation(layer, inputs[layer])) @ self.donor[layer]["out"].to(out.dtype)
                return out + theirs - (m * acts[layer]) @ self.own[layer]["out"].to(out.dtype)
            return hook

        hooks = []
        for layer in range(len(self.own)):
            hooks += [(f"blocks.{layer}.mlp.hook_in", keep(inputs, layer)), (mlp_hook(layer), keep(acts, layer)),
                      (f"blocks.{layer}.mlp.hook_out", mix(layer))]
        with self.recipient.hooks(fwd_hooks=hooks):
            yield

    def objective(self, mask: Callable[[], torch.Tensor], pairs: Sequence[Pair], batch_size: int, *,
                  sign: float = 0.0) -> float:
        """The split's outcome under the mask ``mask()`` makes (made afresh for every batch); with a ``sign``, the
        gradient of ``sign`` times the outcome is accumulated into the mask's leaves."""
        device = self.recipient.cfg.device
        total = 0.0
        for ids, targets, read in _batches(pairs, batch_size):
            with torch.set_grad_enabled(bool(sign)), weights_fixed(self.recipient), self.mixed(mask()):
                logits = self.recipient(ids.to(device), return_type="logits")
                value = _outcome(logits, targets.to(device), read.to(device), len(pairs))
            if sign:
                (sign * value).backward()
            total += float(value.detach())
        return total


def atp_transplant(recipient, donor, pairs: Sequence[Pair], batch_size: int) -> np.ndarray:
    """``[n_layers, d_mlp]``: d outcome / d m at m = 0, the transplant's first-order effect unit by unit."""
    relaxed = Relaxed(recipient, donor)
    mask = torch.zeros(recipient.cfg.n_layers, recipient.cfg.d_mlp, device=recipient.cfg.device, requires_grad=True)
    relaxed.objective(lambda: mask, pairs, batch_size, sign=1.0)
    return mask.grad.double().cpu().numpy()


def learned_mask(recipient, donor, pairs: Sequence[Pair], batch_size: int, *, steps: int, lr: float,
                 l1: float | None = None, seed: int = 0, progress: bool = False) -> tuple[np.ndarray, dict]:
    """``[n_layers, d_mlp]`` learned mask values in (0, 1), and a record of the training (the outcome at m = 0,
    m = 1 and the end, the penalty, the mean mask)."""
    relaxed = Relaxed(recipient, donor)
    device = recipient.cfg.device
    shape = (recipient.cfg.n_layers, recipient.cfg.d_mlp)
    ends = [relaxed.objective(lambda v=v: torch.full(shape, v, device=device), pairs, batch_size) for v in (0.0, 1.0)]
    l1 = abs(ends[1] - ends[0]) if l1 is None else l1
    generator = torch.Generator().manual_seed(seed)
    logits = (START + 0.01 * torch.randn(shape, generator=generator)).to(device).requires_grad_(True)
    optimizer = torch.optim.Adam([logits], lr=lr)
    for _ in tqdm(range(steps), desc="transplant mask", unit="step", disable=not progress):
        optimizer.zero_grad(set_to_none=True)
        (l1 * torch.sigmoid(logits).mean()).backward()
        relaxed.objective(lambda: torch.sigmoid(logits), pairs, batch_size, sign=-1.0)  # descend -outcome + penalty
        optimizer.step()
    final = torch.sigmoid(logits.detach())
    end = relaxed.objective(lambda: final, pairs, batch_size)
    return final.double().cpu().numpy(), {"outcome_recipient": ends[0], "outcome_donor_units": ends[1],
                                          "outcome_mask": end, "l1": l1, "mean_mask": float(final.mean()),
                                          "steps": steps}
