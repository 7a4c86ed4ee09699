"""From MLP activations to cache rows: sparsify each generated token, sum tokens into windows.

Stepwise capture hands ``RowRecorder.add`` one token per sequence after every decoding
step; replay hands it every generated position of a teacher-forced chunk at once. Either
way each token's activations ``a`` [L, D] (the input of ``blocks.{l}.mlp.hook_post``'s
down projection, at the position that predicts the token) go through the sparsifier, and
the selections of ``window`` consecutive tokens of a sequence form one row.

A row of one token (``window == 1``) keeps the token's selection as it is, in descending
score (the float32 order, which float16 storage may tie), so that a stricter top-k can
later be derived from it exactly (``nex_causal.capture.rewindow``); wider rows sum each
neuron's scores (in float64, in token order) and are ordered by key. Whatever a call
brings, a sequence's complete windows are closed together, with array operations over all
their entries (``window_rows``): the cost is a few passes over the selections, not a
Python step per token.
"""

from __future__ import annotations

import numpy as np
import torch

from nex_causal.cache import ResponseRows, pack_keys
from nex_causal.capture.sparsify import Sparsifier
from nex_causal.models.geometry import mlp_hook

Row = tuple[np.ndarray, np.ndarray, int]  # (keys, mass, tokens)
Rows = tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]  # keys, mass, entries per row, tokens per row


def window_rows(keys: np.ndarray, mass: np.ndarray, counts: np.ndarray, window: int) -> Rows:
    """Rows of ``window`` consecutive tokens (the last may be shorter) from the tokens' selections laid end to
    end (``counts[t]`` entries of token t): each neuron's scores summed in float64 in token order over its row
    (as ``np.bincount`` adds), rows ordered by key, mass as float32."""
    n_tokens = len(counts)
    row = np.repeat(np.arange(n_tokens, dtype=np.uint64) // np.uint64(window), counts)
    unique, inverse = np.unique((row << np.uint64(32)) | keys.astype(np.uint64), return_inverse=True)
    mass = np.bincount(inverse, weights=mass, minlength=len(unique)).astype(np.float32)
    n_rows = -(-n_tokens // window)
    tokens = np.full(n_rows, window, np.int64)
    if n_rows:
        tokens[-1] = n_tokens - window * (n_rows - 1)
    return ((unique & np.uint64(0xFFFFFFFF)).astype(np.uint32), mass,
            np.bincount((unique >> np.uint64(32)).astype(np.int64), minlength=n_rows), tokens)


def token_rows(keys: np.ndarray, mass: np.ndarray, counts: np.ndarray) -> Rows:
    """One row per token, its entries in descending score (ties in selection order)."""
    order = np.lexsort((-mass, np.repeat(np.arange(len(counts)), counts)))
    return keys[order].astype(np.uint32), mass[order].astype(np.float32), counts, np.ones(len(counts), np.int64)


class _Sequence:
    """One sequence's closed rows and the selections of the tokens of its open window."""

    def __init__(self):
        self.closed: list[Rows] = []
        self.open: list[tuple[np.ndarray, np.ndarray, np.ndarray]] = []  # (keys, scores, entries per token)

    def extend(self, keys: np.ndarray, scores: np.ndarray, counts: np.ndarray, window: int, final: bool) -> None:
        """Add tokens' selections; close every complete window (with ``final``, the last one too)."""
        self.open.append((keys, scores, counts))
        counts = np.concatenate([c for _, _, c in self.open])
        closing = len(counts) if final else len(counts) // window * window
        if closing == 0:
            return
        keys, scores = (np.concatenate([part[i] for part in self.open]) for i in (0, 1))
        cut = int(counts[:closing].sum())
        rows = (token_rows if window == 1 else
                lambda k, m, c: window_rows(k, m, c, window))(keys[:cut], scores[:cut], counts[:closing])
        self.closed.append(rows)
        self.open = [(keys[cut:], scores[cut:], counts[closing:])] if closing < len(counts) else []

    def new_rows(self, start: int) -> list[Row]:
        """The rows closed so far from the ``start``-th on, one (keys, mass, tokens) each."""
        out: list[Row] = []
        seen = sum(len(chunk[2]) for chunk in self.closed)
        for keys, mass, sizes, tokens in reversed(self.closed):
            if seen <= start:
                break
            seen -= len(sizes)
            ends = np.cumsum(sizes)
            rows = [(keys[e - n:e], mass[e - n:e], int(t)) for e, n, t in zip(ends, sizes, tokens)]
            out = rows[max(start - seen, 0):] + out
        return out

    def rows(self) -> ResponseRows:
        keys, mass, sizes, tokens = (np.concatenate([rows[i] for rows in self.closed]) if self.closed else
                                     np.empty(0, dtype) for i, dtype in enumerate((np.uint32, np.float32,
                                                                                   np.int64, np.int64)))
        return ResponseRows(keys, mass, np.concatenate([[0], np.cumsum(sizes)]).astype(np.int64), tokens)


class RowRecorder:
    """The rows of ``n_sequences`` sequences under one sparsifier and window."""

    def __init__(self, bridge, sparsifier: Sparsifier, window: int, n_sequences: int, record_prompt: bool = False):
        self.sparsifier, self.window = sparsifier, window
        self.d_mlp = int(bridge.cfg.d_mlp)
        self.sequences = [_Sequence() for _ in range(n_sequences)]
        # the keys the prompt's tokens select, per sequence (``record_prompt``), else None
        self.prompt_keys: list[set[int]] | None = [set() for _ in range(n_sequences)] if record_prompt else None
        if sparsifier.needs_contributions:
            self.w_out = bridge.W_out.detach()  # [L, D, d_model]
            self.w_u = bridge.W_U.detach()  # [d_model, V]

    def _selected(self, acts: torch.Tensor, next_tokens: torch.Tensor, n: int) -> tuple[np.ndarray, ...]:
        """The sparsifier's selection of each of ``n`` tokens, laid end to end in token order: keys, float32
        scores (each token's in the sparsifier's order) and the number of entries of each token."""
        acts = acts.float()
        contribution = None
        if self.sparsifier.needs_contributions:
            direction = torch.einsum("ldm,mb->bld", self.w_out.float(), self.w_u[:, next_tokens].float())
            contribution = acts * direction
        rows, flat, score = self.sparsifier.select(acts, contribution)
        rows, flat, score = rows.cpu().numpy(), flat.cpu().numpy(), score.cpu().numpy().astype(np.float32)
        order = np.argsort(rows, kind="stable")
        flat = flat[order]
        return pack_keys(flat // self.d_mlp, flat % self.d_mlp), score[order], np.bincount(rows, minlength=n)

    def add(self, acts: torch.Tensor, next_tokens: torch.Tensor, owners: np.ndarray) -> None:
        """Record tokens ``acts`` [N, L, D] (predicting ``next_tokens`` [N]) of sequences ``owners`` [N], in order."""
        if len(owners) == 0:
            return
        keys, scores, counts = self._selected(acts, next_tokens, len(owners))
        owners = np.asarray(owners)
        by_owner = np.argsort(owners, kind="stable")  # each sequence's tokens together, in order
        moved = counts[by_owner]
        first = np.cumsum(counts) - counts  # where each token's entries start
        entries = np.repeat(first[by_owner] - (np.cumsum(moved) - moved), moved) + np.arange(moved.sum())
        keys, scores, counts = keys[entries], scores[entries], moved
        tokens = np.bincount(owners, minlength=len(self.sequences))
        token_end, entry_end = 0, 0
        for owner in np.flatnonzero(tokens):
            token_stop = token_end + tokens[owner]
            entry_stop = entry_end + int(counts[token_end:token_stop].sum())
            self.sequences[owner].extend(keys[entry_end:entry_stop], scores[entry_end:entry_stop],
                                         counts[token_end:token_stop], self.window, final=False)
            token_end, entry_end = token_stop, entry_stop

    def add_prompt(self, acts: torch.Tensor, next_tokens: torch.Tensor, owners: np.ndarray) -> None:
        """Note the keys prompt tokens ``acts`` [N, L, D] of sequences ``owners`` select (no rows are written)."""
        if len(owners) == 0 or self.prompt_keys is None:
            return
        keys, _, counts = self._selected(acts, next_tokens, len(owners))
        of_entry = np.repeat(np.asarray(owners), counts)
        for owner in np.unique(of_entry):
            self.prompt_keys[owner].update(keys[of_entry == owner].tolist())

    def prompt_columns(self) -> list[dict]:
        """Each sequence's ``prompt_keys`` column (sorted uint32), or nothing when prompts were not recorded."""
        if self.prompt_keys is None:
            return [{} for _ in self.sequences]
        return [{"prompt_keys": np.array(sorted(keys), np.uint32)} for keys in self.prompt_keys]

    def close(self, owner: int) -> None:
        """Close sequence ``owner``'s last (partial) window: it has ended."""
        empty = np.empty(0, np.uint32), np.empty(0, np.float32), np.empty(0, np.int64)
        self.sequences[owner].extend(*empty, self.window, final=True)

    def finish(self) -> list[ResponseRows]:
        """Every sequence's rows, its last (partial) window closed."""
        for owner in range(len(self.sequences)):
            self.close(owner)
        return [sequence.rows() for sequence in self.sequences]


class StepHooks:
    """Hooks for stepwise capture: keep each step's last-position activations, record them after sampling."""

    def __init__(self, bridge, recorder: RowRecorder):
        self.recorder = recorder
        self.buffer: list[torch.Tensor | None] = [None] * int(bridge.cfg.n_layers)

    def fwd_hooks(self) -> list[tuple[str, callable]]:
        def keep(layer: int):
            def hook(act: torch.Tensor, hook) -> torch.Tensor:
                self.buffer[layer] = act[:, -1]
                return act
            return hook
        return [(mlp_hook(layer), keep(layer)) for layer in range(len(self.buffer))]

    def on_step(self, step: int, sampled: torch.Tensor, stats: torch.Tensor, active: torch.Tensor) -> None:
        acts = torch.stack(self.buffer, dim=1)  # [B, L, D]
        self.recorder.add(acts[active], sampled[active], np.flatnonzero(active.cpu().numpy()))
