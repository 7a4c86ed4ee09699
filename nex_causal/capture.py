"""Sample N responses per prompt while recording sparse MLP activations into a SparseCache.

During generation a hook on every ``blocks.{l}.mlp.hook_post`` keeps the activations of
the position that predicts the next token (see ``nex_causal.sampling`` for the alignment
convention). After each step the sparsifier keeps a few neurons per token, and their
scores are summed into token windows of ``window`` generated tokens (the cache's rows);
the base view is the sum over all rows. Dense activations of a whole response are never
held: only the current window's sparse entries are.

A capture is resumable: prompts are processed in batches of whole prompts, each finished
batch is written as a shard under ``<out>.partial/``, and a rerun of the same command
skips finished shards. The final cache appears at ``<out>`` only when complete.
"""

from __future__ import annotations

import dataclasses
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from tqdm.auto import tqdm

from nex_causal.cache import CAPTURE_FILE, TOKEN_ORDER, SparseCache, SparseCacheWriter, concatenate, pack_keys
from nex_causal.errors import NexError
from nex_causal.io import atomic_path, versions, write_json
from nex_causal.geometry import mlp_hook
from nex_causal.resume import CLAIM_FILE, claim, mismatch, read_stamp, stamp
from nex_causal.sampling import Generation, encode_prompts, generate_batch, sequence_seed
from nex_causal.sparsify import Sparsifier
from nex_causal.tasks import TaskSet



@dataclass(frozen=True)
class CaptureConfig:
    """Everything that determines a cache's content (and so whether a resume is valid)."""

    model: str = field(metadata={"help": "zoo variant name, smollm2-135m, a local HF directory, or a cached HF id"})
    tasks: str = field(metadata={"help": "task spec: organism:200, rg:<dataset>:100, or a .jsonl file"})
    n_samples: int = field(default=4, metadata={"help": "responses per prompt"})
    max_new_tokens: int = field(default=256, metadata={"help": "tokens generated per response at most"})
    temperature: float = field(default=0.7, metadata={"help": "sampling temperature (0: greedy)"})
    top_p: float = field(default=0.95, metadata={"help": "nucleus mass"})
    seed: int = field(default=0, metadata={"help": "sampling seed (each sequence draws from its own generator)"})
    batch_size: int = field(default=16, metadata={"help": "sequences per forward pass"})
    sparsifier: str = field(default="topk:500", metadata={
        "help": "which neurons enter a row: topk:K | layer-topk:K | threshold:T | mui:K"})
    window: int = field(default=32, metadata={"help": "generated tokens per cache row"})
    chat: bool = field(default=False, metadata={"help": "wrap prompts in the tokenizer's chat template"})
    device: str = field(default="cpu", metadata={"help": "cpu or cuda"})
    dtype: str = field(default="float32", metadata={"help": "float32 or bfloat16"})

    def content(self) -> dict:
        """The fields that change the cache (device/dtype do not on CPU; they are kept anyway)."""
        return dataclasses.asdict(self)


class WindowAccumulator:
    """Sums one sequence's per-token sparse scores into rows of ``window`` tokens.

    A row of one token (``window == 1``) keeps the token's selection as it is, in descending
    score (the float32 order, which float16 storage may tie), so that a stricter top-k can
    later be derived from it exactly (``nex_causal.rewindow``); wider rows sum each neuron's
    scores and are ordered by key.
    """

    def __init__(self, window: int):
        self.window = window
        self.rows: list[tuple[np.ndarray, np.ndarray, int]] = []
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


class ActivationRecorder:
    """Hooks that keep each step's last-position MLP activations and sparsify them per sequence."""

    def __init__(self, bridge, sparsifier: Sparsifier, window: int, batch: int):
        self.sparsifier = sparsifier
        self.n_layers, self.d_mlp = bridge.cfg.n_layers, bridge.cfg.d_mlp
        self.buffer: list[torch.Tensor | None] = [None] * self.n_layers
        self.windows = [WindowAccumulator(window) for _ in range(batch)]
        if sparsifier.needs_contributions:
            self.w_out = bridge.W_out.detach()  # [L, D, d_model]
            self.w_u = bridge.W_U.detach()  # [d_model, V]

    def hooks(self) -> list[tuple[str, callable]]:
        def keep(layer: int):
            def hook(act: torch.Tensor, hook) -> torch.Tensor:
                self.buffer[layer] = act[:, -1]
                return act
            return hook
        return [(mlp_hook(layer), keep(layer)) for layer in range(self.n_layers)]

    def on_step(self, step: int, sampled: torch.Tensor, active: torch.Tensor) -> None:
        acts = torch.stack(self.buffer, dim=1).float()  # [B, L, D]
        contribution = None
        if self.sparsifier.needs_contributions:
            direction = torch.einsum("ldm,mb->bld", self.w_out.float(), self.w_u[:, sampled].float())
            contribution = acts * direction
        rows, flat, score = self.sparsifier.select(acts, contribution)
        rows, flat, score = rows.cpu().numpy(), flat.cpu().numpy(), score.cpu().numpy()
        keys = pack_keys(flat // self.d_mlp, flat % self.d_mlp)
        order = np.argsort(rows, kind="stable")
        bounds = np.searchsorted(rows[order], np.arange(len(self.windows) + 1))
        for b in np.flatnonzero(active.cpu().numpy()):
            part = order[bounds[b]:bounds[b + 1]]
            self.windows[b].add_token(keys[part], score[part].astype(np.float32))


def response_record(gen: Generation, problem, sample_index: int, config: CaptureConfig,
                    taskset: TaskSet) -> dict:
    """One row of responses.parquet (columns in docs/architecture.md)."""
    return {
        "prompt_id": problem.id, "sample_index": sample_index, "model": config.model,
        "task": taskset.name, "prompt": problem.prompt, "response": gen.text,
        "n_tokens": gen.n_tokens, "finish_reason": gen.finish_reason,
        "token_ids": gen.tokens.astype(np.int32),
        "answer": taskset.extract(gen.text), "target": problem.target,
        "correct": bool(taskset.check(problem, gen.text)),
        "token_logprob": gen.token_logprob, "token_entropy": gen.token_entropy,
        "token_top20_logprob_sum": gen.token_top20_logprob_sum,
        "token_kl_uniform": gen.token_kl_uniform,
    }


def capture_batch(bridge, taskset: TaskSet, prompt_indices: range, config: CaptureConfig,
                  sparsifier: Sparsifier, encoded: list[torch.Tensor]
                  ) -> list[tuple[list[tuple[np.ndarray, np.ndarray, int]], dict]]:
    """Generate ``n_samples`` responses for each prompt in ``prompt_indices``, recording rows."""
    slots = [(p, s) for p in prompt_indices for s in range(config.n_samples)]
    recorder = ActivationRecorder(bridge, sparsifier, config.window, len(slots))
    gens = generate_batch(
        bridge, [encoded[p] for p, _ in slots], max_new_tokens=config.max_new_tokens,
        temperature=config.temperature, top_p=config.top_p,
        seeds=[sequence_seed(config.seed, p, s) for p, s in slots],
        fwd_hooks=recorder.hooks(), on_step=recorder.on_step)
    out = []
    for (p, s), gen, acc in zip(slots, gens, recorder.windows):
        acc.close_row()
        out.append((acc.rows, response_record(gen, taskset.problems[p], s, config, taskset)))
    return out


def partial_dir(out: Path) -> Path:
    """Where an unfinished capture into ``out`` keeps its finished shards."""
    return out.with_name(out.name + ".partial")


def discard_stale(config: CaptureConfig, out: str | Path) -> None:
    """Delete a capture at ``out`` (finished or not) made with another config or other software versions."""
    out = Path(out)
    done = read_stamp(out / CAPTURE_FILE)
    if done is not None and mismatch(done, config.content()) is not None:
        shutil.rmtree(out)
    partial = partial_dir(out)
    if partial.exists() and mismatch(read_stamp(partial / CLAIM_FILE), config.content()) is not None:
        shutil.rmtree(partial)


def capture(config: CaptureConfig, out: str | Path, *, bridge=None, taskset: TaskSet | None = None,
            progress: bool = True) -> SparseCache:
    """Capture ``config`` into the cache directory ``out``; resume or reuse what is on disk.

    ``bridge`` and ``taskset`` may be passed in (a notebook that already holds them);
    otherwise they are loaded from ``config.model`` and ``config.tasks``.
    """
    out = Path(out)
    sparsifier = Sparsifier.parse(config.sparsifier)
    if config.n_samples < 1 or config.window < 1 or config.batch_size < 1:
        raise NexError("n_samples, window and batch_size must all be at least 1")
    wanted = config.content()
    done = read_stamp(out / CAPTURE_FILE)
    if done is not None:
        why = mismatch(done, wanted)
        if why is not None:
            raise NexError(f"{out} already holds a capture made with {why}; choose another --out or delete it")
        return SparseCache.open(out)
    if out.exists():
        raise NexError(f"{out} exists but is not a finished capture; choose another --out or delete it")

    if taskset is None:
        from nex_causal.tasks import load_tasks
        taskset = load_tasks(config.tasks)
    if len(taskset) == 0:
        raise NexError(f"task set {config.tasks!r} is empty: ask for at least one prompt")
    if bridge is None:
        from nex_causal.models import load_bridge
        bridge = load_bridge(config.model, device=config.device, dtype=config.dtype)

    partial = partial_dir(out)
    claim(partial, wanted, what="capture")
    shards = partial / "shards"
    shards.mkdir(exist_ok=True)

    per_batch = max(1, config.batch_size // config.n_samples)
    batches = [range(i, min(i + per_batch, len(taskset))) for i in range(0, len(taskset), per_batch)]
    encoded = encode_prompts(bridge, taskset.prompts(), chat=config.chat)
    bar = tqdm(total=len(taskset), desc=f"capture {config.model}", unit="prompt", disable=not progress)
    started, generated = time.perf_counter(), 0
    for index, batch in enumerate(batches):
        shard = shards / f"{index:06d}"
        if shard.exists():
            bar.update(len(batch))
            continue
        results = capture_batch(bridge, taskset, batch, config, sparsifier, encoded)
        with SparseCacheWriter(shard) as writer:
            for rows, record in results:
                writer.append(rows, meta=record)
        generated += sum(record["n_tokens"] for _, record in results)
        bar.update(len(batch))
        bar.set_postfix(tok_s=f"{generated / (time.perf_counter() - started):.0f}")
    bar.close()

    with atomic_path(out, is_dir=True) as final:
        concatenate([shards / f"{i:06d}" for i in range(len(batches))], final)
        write_json(final / CAPTURE_FILE, {
            **stamp(wanted), "n_layers": bridge.cfg.n_layers, "d_mlp": bridge.cfg.d_mlp,
            "n_prompts": len(taskset), "versions": versions(), "token_rows": TOKEN_ORDER,
        })
    shutil.rmtree(partial)
    return SparseCache.open(out)
