"""Capture: responses with their sparse MLP activations, recorded into a SparseCache.

Three routes give the same cache (rows per ``window`` generated tokens under one
sparsifier, ``nex_causal.capture.rows``) and the same responses.parquet:

- ``method="replay"`` (the default): sample each batch with the sampling backend
  (``nex_causal.capture.sampling``), then replay the finished sequences through the bridge in
  teacher-forced batches (``nex_causal.capture.replay``), 3x and more faster than stepping;
- ``method="stepwise"``: sample through the bridge token by token with hooks on every
  ``blocks.{l}.mlp.hook_post``, recording each step as it happens (what lock-step
  patching during generation needs);
- ``capture_traces``: replay traces made elsewhere (``nex-causal sample``, a cache's
  responses.parquet, JSONL from any engine; ``nex_causal.capture.traces``).

The per-token output statistics come from the pass that records the activations. Work is
sharded (``nex_causal.capture.shards``): each finished shard is a small cache written atomically
under ``<out>.partial/``, a rerun computes only the missing ones (on this process or on Ray
workers), and the cache at ``<out>`` is their ordered concatenation, the same byte for byte
however the shards ran.
"""

from __future__ import annotations

import warnings
from pathlib import Path

import torch

from nex_causal.cache import (
    CAPTURE_FILE,
    ResponseRows,
    TOKEN_ORDER,
    SparseCache,
    SparseCacheWriter,
    concatenate,
    seal,
)
from nex_causal.capture.cluster import RayOptions
from nex_causal.capture.config import CaptureConfig, ReplayConfig
from nex_causal.capture.replay import replay
from nex_causal.capture.rows import RowRecorder, StepHooks
from nex_causal.capture.sampling import (
    load_sampler,
    prompt_shards,
    sample_shard,
    scored,
    trace_record,
)
from nex_causal.capture.shards import Work, partial_dir, run_shards
from nex_causal.capture.traces import Trace, read_traces, traces_meta
from nex_causal.errors import NexError
from nex_causal.io import atomic_path, locked, remove_inside, versions, write_json
from nex_causal.models.generation import encode_prompts
from nex_causal.models.tasks import (
    Problem,
    TaskSet,
    check_answer,
    extract_answer,
    load_tasks,
)
from nex_causal.resume import CLAIM_FILE, check_ours, mismatch, read_stamp, stamp
from nex_causal.resume import discard_stale as discard


def write_shard(path: Path, rows: list[ResponseRows], records: list[dict]) -> None:
    with SparseCacheWriter(path) as writer:
        for response_rows, record in zip(rows, records):
            writer.append(response_rows, meta=record)


class CaptureWork:
    """A sampled capture's shards: sample a batch of prompts, record it (stepwise or by replay)."""

    what = "capture"

    def __init__(self, config: CaptureConfig, taskset: TaskSet, bridge=None):
        self.config, self.taskset, self.bridge = config, taskset, bridge
        self.sparsifier = config.check_recording()
        self.shards = prompt_shards(len(taskset), config)
        self.n_shards = len(self.shards)

    def __getstate__(self) -> dict:
        return {**self.__dict__, "bridge": None, "sampler": None}  # a worker loads its own model

    def setup(self) -> None:
        from nex_causal.models.loading import load_bridge

        c = self.config
        if self.bridge is None:
            self.bridge = load_bridge(c.model, device=c.device, dtype=c.dtype)
        self.sampler = load_sampler(c.sampling(), self.bridge)
        self.encoded = self.sampler.encode(self.taskset.prompts())

    def size(self, index: int) -> int:
        return len(self.shards[index])

    def run(self, index: int, path: Path) -> None:
        c, problems = self.config, self.taskset.problems
        recorder = RowRecorder(self.bridge, self.sparsifier, c.window, len(self.shards[index]) * c.n_samples,
                               record_prompt=c.record_prompt)
        if c.method == "stepwise":
            hooks = StepHooks(self.bridge, recorder)
            done = sample_shard(self.sampler, self.taskset, self.shards[index], c, self.encoded,
                                fwd_hooks=hooks.fwd_hooks(), on_step=hooks.on_step)
            stats = [gen.stats for _, _, gen in done]
        else:
            done = sample_shard(self.sampler, self.taskset, self.shards[index], c, self.encoded)
            stats = replay(self.bridge, [self.encoded[p] for p, _, _ in done], [t.token_ids for _, t, _ in done],
                           recorder, max_tokens=c.replay_tokens)
        records = [trace_record(trace, self.encoded[p], s, **scored(self.taskset, problems[p], trace.response),
                                model=c.model, task=self.taskset.name, **extra)
                   for (p, trace, _), s, extra in zip(done, stats, recorder.prompt_columns())]
        write_shard(path, recorder.finish(), records)


class ReplayWork:
    """A capture of existing traces: shards of ``batch_size`` traces, in file order."""

    what = "replay"

    def __init__(self, config: ReplayConfig, traces: list[Trace], task: str, checker: str | None, bridge=None):
        self.config, self.traces, self.task, self.checker_spec, self.bridge = config, traces, task, checker, bridge
        self.checker: TaskSet | None = None
        self.sparsifier = config.check_recording()
        self.shards = [range(i, min(i + config.batch_size, len(traces)))
                       for i in range(0, len(traces), config.batch_size)]
        self.n_shards = len(self.shards)

    def __getstate__(self) -> dict:
        return {**self.__dict__, "bridge": None}

    def setup(self) -> None:
        from nex_causal.models.loading import load_bridge

        c = self.config
        if self.bridge is None:
            self.bridge = load_bridge(c.model, device=c.device, dtype=c.dtype)
        self.checker = load_tasks(self.checker_spec) if self.checker_spec else None

    def size(self, index: int) -> int:
        return len(self.shards[index])

    def run(self, index: int, path: Path) -> None:
        traces = [self.traces[i] for i in self.shards[index]]
        prompts = [torch.as_tensor(t.prompt_ids) if t.prompt_ids is not None else
                   encode_prompts(self.bridge, [t.prompt], chat=self.config.chat)[0] for t in traces]
        for t, p in zip(traces, prompts):
            if len(p) == 0:
                raise NexError(f"trace {t.prompt_id}/{t.sample_index} has an empty prompt: replay needs the "
                               "position that predicts the first response token")
        recorder = RowRecorder(self.bridge, self.sparsifier, self.config.window, len(traces),
                               record_prompt=self.config.record_prompt)
        stats = replay(self.bridge, prompts, [t.token_ids for t in traces], recorder,
                       max_tokens=self.config.replay_tokens)
        records = [trace_record(t, p, s, **_answer_of(t, self.checker), model=self.config.model, task=self.task,
                                **extra) for t, p, s, extra in zip(traces, prompts, stats, recorder.prompt_columns())]
        write_shard(path, recorder.finish(), records)


def _answer_of(trace: Trace, checker: TaskSet | None) -> dict:
    """A trace's recorded answer and correctness, else ``checker``'s verdict (the task family that made the traces;
    without one, the generic ``Answer:``-line checker; None without a target)."""
    truth = {} if checker is None or checker.ground_truth is None else {
        "ground_truth": checker.ground_truth(trace.response)}
    if trace.correct is not None:
        return {"answer": trace.answer, "correct": trace.correct, **truth}
    extract, check = (checker.extract, checker.check) if checker is not None else (extract_answer, check_answer)
    correct = None if trace.target is None else check(Problem(trace.prompt_id, trace.prompt, trace.target),
                                                      trace.response)
    return {"answer": extract(trace.response), "correct": correct, **truth}


MAX_CONTEXTS = 8  # a trace longer than this many model contexts is refused: no trace of this model, and replay's
# KV cache would grow without bound


def _existing(out: Path, wanted: dict) -> SparseCache | None:
    """The finished capture at ``out`` when it was made by ``wanted``; NexError for anything else there."""
    done = read_stamp(out / CAPTURE_FILE)
    if done is not None:
        why = mismatch(done, wanted)
        if why is not None:
            raise NexError(f"{out} already holds a capture made with {why}; choose another --out or delete it")
        return SparseCache.open(out)
    if out.exists():
        raise NexError(f"{out} exists but is not a finished capture; choose another --out or delete it")
    return None


def _finish(work: Work, out: Path, wanted: dict, progress: bool, ray: RayOptions | None, **info) -> SparseCache:
    """Run ``work``'s missing shards, then publish their concatenation with its capture.json.

    The shards' directory (``<out>.partial``) is locked while it is written, so a second capture into
    ``out`` is refused in one line; a directory there that no capture made is refused before the lock.
    """
    partial = partial_dir(out)
    check_ours(partial, CLAIM_FILE, work.what)
    with locked(partial, f"a {work.what} into {out}"):
        cache = _existing(out, wanted)  # another capture may have finished it since the first look
        if cache is None:
            paths = run_shards(work, partial, wanted, progress=progress, ray=ray)
            from nex_causal.models.loading import shape_of

            n_layers, d_mlp = shape_of(work.config.model)[:2] if work.bridge is None else \
                (int(work.bridge.cfg.n_layers), int(work.bridge.cfg.d_mlp))
            with atomic_path(out, is_dir=True) as final:
                concatenate(paths, final)
                write_json(final / CAPTURE_FILE, {**stamp(wanted), "n_layers": n_layers, "d_mlp": d_mlp,
                                                  "versions": versions(), "token_rows": TOKEN_ORDER,
                                                  **_model_record(work), **info})
                seal(final)
        remove_inside(partial, partial.parent)
    return cache or SparseCache.open(out)


def _model_record(work: Work) -> dict:
    """The capturing model's weights digest and lineage (``models.files.model_identity``), so that NEX weights
    learned on the cache know their model; nothing for a model built in memory, which no directory describes."""
    from nex_causal.models.files import model_identity
    from nex_causal.models.loading import plain_model, resolve_model

    source = plain_model(work.bridge).name_or_path if work.bridge is not None else resolve_model(work.config.model)
    if not source or not (Path(source) / "config.json").is_file():
        return {}
    identity = model_identity(source)
    return {"model_sha256": identity["model_sha256"], "lineage": identity["lineage"]}


def discard_stale(config: CaptureConfig, out: str | Path, root: str | Path) -> None:
    """Delete a capture at ``out`` (finished or not), inside ``root``, made with another config or other versions."""
    wanted = config.content()
    discard(out, wanted, stamp_file=CAPTURE_FILE, root=root)
    discard(partial_dir(Path(out)), wanted, stamp_file=CLAIM_FILE, root=root)


def capture(config: CaptureConfig, out: str | Path, *, bridge=None, taskset: TaskSet | None = None,
            progress: bool = True, ray: RayOptions | None = None) -> SparseCache:
    """Capture ``config`` into the cache directory ``out``; resume or reuse what is on disk.

    ``bridge`` and ``taskset`` may be passed in (a notebook that already holds them);
    otherwise they are loaded from ``config.model`` and ``config.tasks``.
    """
    out = Path(out)
    config.check()
    config.check_recording()
    wanted = config.content()
    if (cache := _existing(out, wanted)) is not None:
        return cache
    taskset = load_tasks(config.tasks) if taskset is None else taskset
    if len(taskset) == 0:
        raise NexError(f"task set {config.tasks!r} is empty: ask for at least one prompt")
    return _finish(CaptureWork(config, taskset, bridge), out, wanted, progress, ray, n_prompts=len(taskset))


def capture_traces(config: ReplayConfig, out: str | Path, *, bridge=None, progress: bool = True,
                   ray: RayOptions | None = None) -> SparseCache:
    """Replay the traces of ``config`` through ``config.model`` into the cache directory ``out``."""
    from nex_causal.models.loading import shape_of, tokenizer_of

    out = Path(out)
    config.check_recording()
    if config.batch_size < 1:
        raise NexError("batch_size must be at least 1")
    wanted = config.content()
    if (cache := _existing(out, wanted)) is not None:
        return cache
    tokenizer, vocab, n_ctx = ((bridge.tokenizer, int(bridge.cfg.d_vocab), int(bridge.cfg.n_ctx)) if bridge is not None
                               else (tokenizer_of(config.model), *shape_of(config.model)[2:]))
    traces = read_traces(config.traces, tokenizer, vocab, max_tokens=MAX_CONTEXTS * n_ctx)
    if (unknown := sum(t.correct is None and t.target is None for t in traces)):
        warnings.warn(f"{unknown} of {len(traces)} traces have no target: their correctness is unknown "
                      "(left empty in responses.parquet)", stacklevel=2)
    lengths = [t.n_tokens + (len(t.prompt_ids) if t.prompt_ids is not None else
                             len(tokenizer(t.prompt, add_special_tokens=False).input_ids)) for t in traces]
    if over := sum(length > n_ctx for length in lengths):
        warnings.warn(f"{over} of {len(traces)} traces are longer than the model's context of {n_ctx} tokens (up to "
                      f"{max(lengths)}): replayed beyond the positions it was trained on, their activations are out "
                      "of distribution", stacklevel=2)
    made = traces_meta(config.traces) if config.traces.endswith(".parquet") else {}
    recorded = (made.get("stamp") or {}).get("config", {}).get("tasks")
    checker = config.checker
    if checker is not None:
        load_tasks(checker)  # a bad spec: one line now, not in a worker
    elif recorded is not None and not any(t.correct is None for t in traces):
        pass  # the sampler judged every trace already
    elif recorded is not None:
        try:
            load_tasks(recorded)
            checker = recorded
        except NexError:  # made from a task set in memory: no spec to load it by
            checker = None
    task = recorded or f"traces:{Path(config.traces).stem}"
    return _finish(ReplayWork(config, traces, task, checker, bridge), out, wanted, progress, ray,
                   n_prompts=len({t.prompt_id for t in traces}), traces_made_by=made.get("stamp"))
