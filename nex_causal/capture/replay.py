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
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from transformers import DynamicCache

from nex_causal.capture.config import DEFAULT_MAX_TOKENS
from nex_causal.capture.rows import RowRecorder
from nex_causal.models.generation import TOKEN_STATS, token_statistics
from nex_causal.models.geometry import mlp_hook
from nex_causal.models.loading import forward_step


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
    """Hooks keeping the chunk's activations of every layer."""

    def __init__(self, n_layers: int):
        self.acts: list[torch.Tensor | None] = [None] * n_layers

    def hooks(self) -> list[tuple[str, callable]]:
        def keep(layer: int):
            def hook(act: torch.Tensor, hook) -> torch.Tensor:
                self.acts[layer] = act
                return act
            return hook
        return [(mlp_hook(layer), keep(layer)) for layer in range(len(self.acts))]


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
    buffer = _Buffer(int(bridge.cfg.n_layers))
    with bridge.hooks(fwd_hooks=buffer.hooks()):
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
                logits = forward_step(bridge, ids[:, start:end], attention_mask=mask[:, :end],
                                      position_ids=positions, cache=cache)
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
                acts = torch.stack([a[rows_d, cols_d] for a in buffer.acts], dim=1)  # [N, L, D]
                recorder.add(acts, next_tokens, np.asarray(group)[rows.numpy()])
                values = token_statistics(logits[rows_d, cols_d], next_tokens).cpu().numpy()
                for row in np.unique(rows.numpy()):
                    i = group[row]
                    at = cols.numpy()[rows.numpy() == row] + start - first[i]
                    stats[i][at] = values[rows.numpy() == row]
    return [{**{name: s[:, j].copy() for j, name in enumerate(TOKEN_STATS)}, "final_kl_uniform": float(f)}
            for s, f in zip(stats, final)]
