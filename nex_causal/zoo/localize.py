"""Localized levels: a fine-tune confined to a known block of MLP units, and a sham change of matched size.

A transfer can be graded against ground truth only if the difference between donor and
recipient lives in a known, small set of units. A level trained with ``recipe.Localized``
starts from its parent (scout's redundant levels: from ``efficient``) and trains only the
*free* units of every layer: their rows of the gate and up projections and their columns of
the down projection. Everything else (attention, embeddings, norms, every other unit) is
frozen by zeroing its gradients and, after each optimizer step, restoring it bit for bit
(AdamW's decoupled weight decay moves every parameter it holds).

So the free block carries the whole difference, and transplanting it from the parent undoes
the level exactly. That alone would let the plainest score find it: the units whose weights
changed. The *sham* takes that away without touching behaviour: the down-projection columns
of the parent's least active units (largest |activation| over the level's own training
problems, in parent and level, below every other unit's) each move by the weight-difference
norm of one free unit, in a seeded random direction. A unit that never fires writes nothing,
so the sham changes no activation a capture records and no token a model samples; how little
it changes the logits is measured and recorded (``add_sham``). Weight difference then ranks
about as many sham units as planted ones at the top.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import numpy as np
import torch

from nex_causal.models.geometry import MLPGeometry, mlp_hook
from nex_causal.zoo.tokenizer import char_tokenizer, encode

PROJECTIONS = ("gate_proj", "up_proj", "down_proj")


def _mlps(model) -> list:
    return [layer.mlp for layer in model.model.layers]


@contextlib.contextmanager
def confined(model, free: tuple[int, int]) -> Iterator[Callable[[], None]]:
    """Let only units ``[free[0], free[1])`` of every MLP train; yields ``restore()``, to call after each optimizer
    step, which puts back every frozen entry. Gradients of frozen entries are zeroed (so clipping and Adam's moments
    see the free block only); parameters outside the MLPs do not require gradients at all. Undone on exit."""
    start, stop = free
    frozen: list[tuple[torch.nn.Parameter, torch.Tensor, torch.Tensor]] = []  # (param, keep mask, original)
    handles, required = [], {p: p.requires_grad for p in model.parameters()}
    for p in model.parameters():
        p.requires_grad_(False)
    for mlp in _mlps(model):
        for name in PROJECTIONS:
            weight = getattr(mlp, name).weight
            free_mask = torch.zeros_like(weight, dtype=torch.bool)
            if name == "down_proj":  # [d_model, d_mlp]: a unit is a column
                free_mask[:, start:stop] = True
            else:  # [d_mlp, d_model]: a unit is a row
                free_mask[start:stop] = True
            weight.requires_grad_(True)
            handles.append(weight.register_hook(lambda g, m=free_mask: g * m))
            frozen.append((weight, ~free_mask, weight.detach().clone()))

    @torch.no_grad()
    def restore() -> None:
        for weight, keep, original in frozen:
            weight.copy_(torch.where(keep, original, weight))

    try:
        yield restore
    finally:
        for handle in handles:
            handle.remove()
        for p, flag in required.items():
            p.requires_grad_(flag)


def reference_sequences(problems: Sequence) -> list[torch.Tensor]:
    """Prompt + reference chain of thought of each problem, as token ids (what the activity is measured on)."""
    return [torch.tensor(encode(p.prompt + p.chain_of_thought()), dtype=torch.long) for p in problems]


@torch.no_grad()
def peak_activity(bridge, sequences: Sequence[torch.Tensor], batch_size: int = 64) -> np.ndarray:
    """``[n_layers, d_mlp]``: the largest |activation| (``hook_post``) of every unit over every position."""
    n_layers, d_mlp = bridge.cfg.n_layers, bridge.cfg.d_mlp
    peak = torch.zeros(n_layers, d_mlp)

    def keep(layer: int):
        def hook(act: torch.Tensor, hook) -> torch.Tensor:
            peak[layer] = torch.maximum(peak[layer], act.detach().abs().flatten(0, -2).amax(0).float().cpu())
            return act
        return hook

    hooks = [(mlp_hook(layer), keep(layer)) for layer in range(n_layers)]
    for i in range(0, len(sequences), batch_size):
        batch = list(sequences[i:i + batch_size])
        ids = torch.nn.utils.rnn.pad_sequence(batch, batch_first=True)  # right padding: real positions unaffected
        with bridge.hooks(fwd_hooks=hooks):
            bridge(ids, return_type="logits")
    return peak.numpy()


@torch.no_grad()
def _logits(bridge, sequences: Sequence[torch.Tensor]) -> list[torch.Tensor]:
    return [bridge(s[None], return_type="logits")[0] for s in sequences]


def add_sham(model, parent_dir, free: tuple[int, int], problems: Sequence, seed: int) -> tuple[Any, dict]:
    """``model`` (trained from the parent in ``parent_dir`` with only the ``free`` block) with the sham added, and
    a record of it: the sham units, the free block's weight-difference norms they copy, and the largest change
    of any logit and how many greedy choices changed on ``problems``' reference solutions (both should be ~0)."""
    from nex_causal.models.loading import load_bridge, plain_model

    parent = load_bridge(parent_dir)
    level = load_bridge(model, tokenizer=char_tokenizer())
    sequences = reference_sequences(problems)
    peak = np.maximum(peak_activity(parent, sequences), peak_activity(level, sequences))
    mine, theirs = MLPGeometry.of(level), MLPGeometry.of(parent)
    n_layers, d_mlp = mine.n_layers, mine.d_mlp
    block = np.arange(*free)
    norms = []
    for layer in range(n_layers):
        a, b = mine.neuron_weights(layer, block), theirs.neuron_weights(layer, block)
        norms.append(torch.sqrt(sum(((a[k] - b[k]).double() ** 2).reshape(len(block), -1).sum(1) for k in a)))
    norms = torch.cat(norms).numpy()
    candidates = np.ones((n_layers, d_mlp), bool)
    candidates[:, free[0]:free[1]] = False
    flat = np.flatnonzero(candidates.ravel())
    chosen = np.sort(flat[np.argsort(peak.ravel()[flat], kind="stable")[:len(norms)]])
    rng = np.random.default_rng(seed)
    directions = rng.standard_normal((len(chosen), mine.d_model))
    deltas = directions / np.linalg.norm(directions, axis=1, keepdims=True) * rng.permutation(norms)[:, None]
    before = _logits(level, sequences)
    for layer in np.unique(chosen // d_mlp):
        pick = chosen // d_mlp == layer
        units = chosen[pick] % d_mlp
        weights = mine.neuron_weights(layer, units)
        weights["out"] = weights["out"] + torch.as_tensor(deltas[pick], dtype=weights["out"].dtype)
        mine.set_neuron_weights(layer, units, weights)
    after = _logits(level, sequences)
    change = max(float((x - y).abs().max()) for x, y in zip(before, after))
    flips = sum(int((x.argmax(-1) != y.argmax(-1)).sum()) for x, y in zip(before, after))
    record = {"units": [[int(u // d_mlp), int(u % d_mlp)] for u in chosen],
              "peak_activity_max": float(peak.ravel()[chosen].max()), "norm_total": float(np.sqrt((norms ** 2).sum())),
              "max_logit_change": change, "greedy_changes": flips,
              "positions": int(sum(len(s) for s in sequences))}
    return plain_model(level), record
