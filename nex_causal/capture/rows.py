"""From MLP activations to cache rows: sparsify each generated token, sum tokens into windows.

Stepwise capture hands ``RowRecorder.add`` one token per sequence after every decoding
step; replay hands it every generated position of a teacher-forced chunk at once. Either
way each token's activations ``a`` [L, D] (the input of ``blocks.{l}.mlp.hook_post``'s
down projection, at the position that predicts the token) go through the sparsifier, and
the selections of ``window`` consecutive tokens of a sequence form one row.
"""

from __future__ import annotations

import numpy as np
import torch

from nex_causal.cache import pack_keys
from nex_causal.capture.sparsify import Sparsifier
from nex_causal.models.geometry import mlp_hook

Row = tuple[np.ndarray, np.ndarray, int]  # (keys, mass, tokens)


class WindowAccumulator:
    """Sums one sequence's per-token sparse scores into rows of ``window`` tokens.

    A row of one token (``window == 1``) keeps the token's selection as it is, in descending
    score (the float32 order, which float16 storage may tie), so that a stricter top-k can
    later be derived from it exactly (``nex_causal.capture.rewindow``); wider rows sum each neuron's
    scores and are ordered by key.
    """

    def __init__(self, window: int):
        self.window = window
        self.rows: list[Row] = []
        self._keys: list[np.ndarray] = []
        self._mass: list[np.ndarray] = []
        self._tokens = 0

    def add_token(self, keys: np.ndarray, mass: np.ndarray) -> None:
        self._keys.append(keys)
        self._mass.append(mass)
        self._tokens += 1
        if self._tokens == self.window:
            self.close_row()

    def close_row(self) -> None:
        if self._tokens == 0:
            return
        if self._tokens == 1 and self.window == 1:
            keys, mass = self._keys[0].astype(np.uint32), self._mass[0].astype(np.float32)
            order = np.argsort(-mass, kind="stable")
            self.rows.append((keys[order], mass[order], 1))
        else:
            keys, inverse = np.unique(np.concatenate(self._keys), return_inverse=True)
            mass = np.bincount(inverse, weights=np.concatenate(self._mass), minlength=len(keys))
            self.rows.append((keys.astype(np.uint32), mass.astype(np.float32), self._tokens))
        self._keys, self._mass, self._tokens = [], [], 0


class RowRecorder:
    """The rows of ``n_sequences`` sequences under one sparsifier and window."""

    def __init__(self, bridge, sparsifier: Sparsifier, window: int, n_sequences: int, record_prompt: bool = False):
        self.sparsifier = sparsifier
        self.d_mlp = int(bridge.cfg.d_mlp)
        self.windows = [WindowAccumulator(window) for _ in range(n_sequences)]
        # the keys the prompt's tokens select, per sequence (``record_prompt``), else None
        self.prompt_keys: list[set[int]] | None = [set() for _ in range(n_sequences)] if record_prompt else None
        if sparsifier.needs_contributions:
            self.w_out = bridge.W_out.detach()  # [L, D, d_model]
            self.w_u = bridge.W_U.detach()  # [d_model, V]

    def _selected(self, acts: torch.Tensor, next_tokens: torch.Tensor, n: int):
        """The sparsifier's selection of each of ``n`` tokens: (keys, float32 scores) per token, in order."""
        acts = acts.float()
        contribution = None
        if self.sparsifier.needs_contributions:
            direction = torch.einsum("ldm,mb->bld", self.w_out.float(), self.w_u[:, next_tokens].float())
            contribution = acts * direction
        rows, flat, score = self.sparsifier.select(acts, contribution)
        rows, flat, score = rows.cpu().numpy(), flat.cpu().numpy(), score.cpu().numpy().astype(np.float32)
        keys = pack_keys(flat // self.d_mlp, flat % self.d_mlp)
        order = np.argsort(rows, kind="stable")
        bounds = np.searchsorted(rows[order], np.arange(n + 1))
        return [(keys[order[bounds[i]:bounds[i + 1]]], score[order[bounds[i]:bounds[i + 1]]]) for i in range(n)]

    def add(self, acts: torch.Tensor, next_tokens: torch.Tensor, owners: np.ndarray) -> None:
        """Record tokens ``acts`` [N, L, D] (predicting ``next_tokens`` [N]) of sequences ``owners`` [N], in order."""
        if len(owners) == 0:
            return
        for owner, (keys, score) in zip(owners, self._selected(acts, next_tokens, len(owners))):
            self.windows[owner].add_token(keys, score)

    def add_prompt(self, acts: torch.Tensor, next_tokens: torch.Tensor, owners: np.ndarray) -> None:
        """Note the keys prompt tokens ``acts`` [N, L, D] of sequences ``owners`` select (no rows are written)."""
        if len(owners) == 0 or self.prompt_keys is None:
            return
        for owner, (keys, _) in zip(owners, self._selected(acts, next_tokens, len(owners))):
            self.prompt_keys[owner].update(keys.tolist())

    def prompt_columns(self) -> list[dict]:
        """Each sequence's ``prompt_keys`` column (sorted uint32), or nothing when prompts were not recorded."""
        if self.prompt_keys is None:
            return [{} for _ in self.windows]
        return [{"prompt_keys": np.array(sorted(keys), np.uint32)} for keys in self.prompt_keys]

    def finish(self) -> list[list[Row]]:
        """Every sequence's rows, its last (partial) window closed."""
        for acc in self.windows:
            acc.close_row()
        return [acc.rows for acc in self.windows]


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
