"""Capture by replay: teacher-force finished responses through the bridge and record their rows.

A response of ``G`` tokens after a prompt of ``P`` tokens is fed whole, ``P + G`` tokens; the
positions ``P - 1 ... P + G - 2`` are the ones that predicted the response's tokens
(``nex_causal.models.generation``'s alignment convention), so their MLP activations and next-token
distributions are exactly what stepwise capture records while generating, up to the float
round-off of a different batch shape. The last position's distribution (after the final
token, which generation never computes) gives ``final_kl_uniform``, what self-certainty in
its authors' alignment reads. With ``record_prompt`` the prompt's own positions go through
the same sparsifier, and the keys they select are kept per sequence (``RowRecorder.prompt_keys``).

Sequences are right-padded (padding masked, never recorded) into groups of at most
``max_tokens`` tokens per forward pass; a sequence longer than that is fed in chunks that
carry a KV cache, so memory is bounded by ``max_tokens`` whatever the trace length. The
per-token output statistics (``sampling.TOKEN_STATS``) come from the same pass.

The passes run through the plain Hugging Face model over the bridge's weights
(``models.plain_model``), its down projections' inputs read by PyTorch's own pre-hooks,
whenever that model computes what the bridge computes: a probe of a few padded tokens,
once per bridge, must give the same MLP inputs and logits to the bit (``plain_recorder``),
else the bridge runs them with its hooks. On the organisms and SmolLM2 the two agree, and
the bridge's wrapping and hook machinery cost as much again as half the forward pass on a
CPU.
"""

from __future__ import annotations

import contextlib
from collections.abc import Sequence
from weakref import WeakKeyDictionary

import numpy as np
import torch
from transformers import DynamicCache

from nex_causal.capture.config import DEFAULT_MAX_TOKENS
from nex_causal.capture.rows import RowRecorder
from nex_causal.errors import NexError
from nex_causal.models.generation import TOKEN_STATS, token_statistics
from nex_causal.models.geometry import mlp_hook, mlp_inputs
from nex_causal.models.loading import forward_step, plain_model


BLOCK = 1 << 22  # values per token block that is sparsified or summarised at once (16 MB in float32)


def blocks(n_tokens: int, per_token: int) -> list[tuple[int, int]]:
    """Token ranges of at most ``BLOCK`` values of ``per_token`` each: gathering a chunk's activations [N, L, D] or
    logits [N, V] whole would stream gigabytes through memory several times (SmolLM2: 4,096 x 49,152 logits);
    every operation on them is per token, so a block at a time gives the same numbers."""
    step = max(1, BLOCK // max(1, per_token))
    return [(a, min(a + step, n_tokens)) for a in range(0, n_tokens, step)]


def groups(lengths: Sequence[int], max_tokens: int) -> list[list[int]]:
    """Sequence indices in forward-pass groups: longest first, as many per group as fit ``max_tokens``."""
    order = sorted(range(len(lengths)), key=lambda i: (-lengths[i], i))
    out, start = [], 0
    while start < len(order):
        per_pass = max(1, max_tokens // max(1, lengths[order[start]]))
        out.append(order[start:start + per_pass])
        start += per_pass
    return out


class _Buffer:
    """Hooks keeping the chunk's activations of every layer: the bridge's, or PyTorch pre-hooks on a plain
    model's down projections."""

    def __init__(self, n_layers: int):
        self.acts: list[torch.Tensor | None] = [None] * n_layers

    def hooks(self) -> list[tuple[str, callable]]:
        def keep(layer: int):
            def hook(act: torch.Tensor, hook) -> torch.Tensor:
                self.acts[layer] = act
                return act
            return hook
        return [(mlp_hook(layer), keep(layer)) for layer in range(len(self.acts))]

    @contextlib.contextmanager
    def on(self, modules: Sequence[torch.nn.Module]):
        def keep(layer: int):
            def hook(module, args) -> None:
                self.acts[layer] = args[0]
            return hook
        handles = [module.register_forward_pre_hook(keep(layer)) for layer, module in enumerate(modules)]
        try:
            yield
        finally:
            for handle in handles:
                handle.remove()


_PLAIN: WeakKeyDictionary = WeakKeyDictionary()  # bridge -> (plain model, its down projections) or None


def plain_recorder(bridge) -> tuple[torch.nn.Module, list[torch.nn.Module]] | None:
    """The plain Hugging Face model over ``bridge``'s weights and its down projections, when on a probe it gives
    the bridge's MLP inputs and logits to the bit; None when it does not (or cannot be built). Decided once per
    bridge."""
    if bridge not in _PLAIN:
        _PLAIN[bridge] = _probe(bridge)
    return _PLAIN[bridge]


@torch.no_grad()
def _probe(bridge) -> tuple[torch.nn.Module, list[torch.nn.Module]] | None:
    try:
        model = plain_model(bridge)
        modules = mlp_inputs(bridge, model)
    except (NexError, KeyError, AttributeError):
        return None
    device, vocab = bridge.cfg.device, int(bridge.cfg.d_vocab)
    ids = torch.tensor([[(7 * i + 3) % vocab for i in range(9)], [(5 * i + 1) % vocab for i in range(9)]],
                       device=device)
    mask = torch.ones_like(ids)
    mask[1, 6:] = 0  # right padding, as replay pads
    positions = torch.arange(ids.shape[1], device=device)[None].expand(2, -1)
    runs = []
    for plain in (None, (model, modules)):
        buffer = _Buffer(len(modules))
        logits = teacher_forced_logits(bridge, plain, buffer, ids, mask, positions, DynamicCache())
        runs.append((logits, buffer.acts))
    (bridge_logits, bridge_acts), (plain_logits, plain_acts) = runs
    same = torch.equal(bridge_logits, plain_logits) and all(map(torch.equal, bridge_acts, plain_acts))
    return (model, modules) if same else None


def teacher_forced_logits(bridge, plain: tuple[torch.nn.Module, list[torch.nn.Module]] | None, buffer: _Buffer,
                          ids: torch.Tensor, mask: torch.Tensor, positions: torch.Tensor, cache) -> torch.Tensor:
    """Logits of one chunk after the positions in ``cache``, with every layer's MLP inputs left in ``buffer``:
    through the plain model's pre-hooks when ``plain`` is given, else through the bridge's hooks."""
    if plain is None:
        with bridge.hooks(fwd_hooks=buffer.hooks()):
            return forward_step(bridge, ids, attention_mask=mask, position_ids=positions, cache=cache)
    model, modules = plain
    with buffer.on(modules):
        return model(input_ids=ids, attention_mask=mask, position_ids=positions, past_key_values=cache,
                     use_cache=True).logits


@torch.no_grad()
def replay(bridge, prompts: Sequence[torch.Tensor], responses: Sequence[np.ndarray], recorder: RowRecorder,
           *, max_tokens: int = DEFAULT_MAX_TOKENS) -> list[dict[str, np.ndarray]]:
    """Record the rows of each (prompt ids, response ids) pair into ``recorder`` (sequence i = pair i).

    Returns each response's ``TOKEN_STATS`` (float32, one value per response token) and its
    ``final_kl_uniform`` (the distribution after the last token).
    """
    device = bridge.cfg.device
    pad = bridge.tokenizer.pad_token_id or 0
    fed = [np.concatenate([p.cpu().numpy(), r]).astype(np.int64) for p, r in zip(prompts, responses)]
    first = [len(p) - 1 for p in prompts]  # the position that predicts response token 0
    stats = [np.zeros((len(r), len(TOKEN_STATS)), np.float32) for r in responses]
    final = np.full(len(responses), np.nan, np.float32)
    kl = TOKEN_STATS.index("token_kl_uniform")
    buffer, plain = _Buffer(int(bridge.cfg.n_layers)), plain_recorder(bridge)
    for group in groups([len(f) for f in fed], max_tokens):
        width = max(len(fed[i]) for i in group)
        ids = torch.full((len(group), width), pad, dtype=torch.long)
        mask = torch.zeros((len(group), width), dtype=torch.long)
        target = torch.full((len(group), width), -1, dtype=torch.long)  # next token where recorded
        prompt = torch.full((len(group), width), -1, dtype=torch.long)  # next token at prompt positions
        for row, i in enumerate(group):
            ids[row, :len(fed[i])] = torch.from_numpy(fed[i])
            mask[row, :len(fed[i])] = 1
            target[row, first[i]:first[i] + len(responses[i])] = torch.from_numpy(responses[i].astype(np.int64))
            if recorder.prompt_keys is not None:
                prompt[row, :first[i]] = torch.from_numpy(fed[i][1:first[i] + 1])
        ids, mask = ids.to(device), mask.to(device)
        chunk = max(1, max_tokens // len(group))
        cache = DynamicCache()
        for start in range(0, width, chunk):
            end = min(width, start + chunk)
            positions = torch.arange(start, end, device=device)[None].expand(len(group), -1)
            logits = teacher_forced_logits(bridge, plain, buffer, ids[:, start:end], mask[:, :end], positions,
                                           cache)
            for row, i in enumerate(group):
                if start <= len(fed[i]) - 1 < end:  # the position after the last response token
                    after = logits[row, len(fed[i]) - 1 - start][None]
                    final[i] = token_statistics(after, after.argmax(-1))[0, kl].item()
            if recorder.prompt_keys is not None:
                p_rows, p_cols = torch.nonzero(prompt[:, start:end] >= 0, as_tuple=True)
                if len(p_rows):
                    acts = torch.stack([a[p_rows.to(device), p_cols.to(device)] for a in buffer.acts], dim=1)
                    recorder.add_prompt(acts, prompt[:, start:end][p_rows, p_cols].to(device),
                                        np.asarray(group)[p_rows.numpy()])
            rows, cols = torch.nonzero(target[:, start:end] >= 0, as_tuple=True)  # row-major: in token order
            if len(rows) == 0:
                continue
            next_tokens = target[:, start:end][rows, cols].to(device)
            rows_d, cols_d = rows.to(device), cols.to(device)
            owners = np.asarray(group)[rows.numpy()]
            for a, b in blocks(len(rows), buffer.acts[0].shape[-1] * len(buffer.acts)):
                acts = torch.stack([act[rows_d[a:b], cols_d[a:b]] for act in buffer.acts], dim=1)  # [n, L, D]
                recorder.add(acts, next_tokens[a:b], owners[a:b])
            values = np.concatenate([token_statistics(logits[rows_d[a:b], cols_d[a:b]], next_tokens[a:b])
                                     .cpu().numpy() for a, b in blocks(len(rows), logits.shape[-1])])
            for row in np.unique(rows.numpy()):
                i = group[row]
                at = cols.numpy()[rows.numpy() == row] + start - first[i]
                stats[i][at] = values[rows.numpy() == row]
    return [{**{name: s[:, j].copy() for j, name in enumerate(TOKEN_STATS)}, "final_kl_uniform": float(f)}
            for s, f in zip(stats, final)]
