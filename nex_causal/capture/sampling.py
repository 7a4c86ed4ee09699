"""Sampling: N responses per prompt by the fastest engine present, written as a traces table.

``SampleConfig`` is everything that determines the samples. A sampling backend is one
registered ``Backend`` (``SAMPLERS``):

    hf       Hugging Face ``generate`` on the plain model (batched, KV cache); the default
    bridge   the TransformerBridge stepped token by token (what lock-step patching uses)
    vllm     vLLM on a GPU, when it is installed (``pip install vllm``)

Every sequence draws from its own generator seeded by ``(seed, prompt index, sample
index)``, so a sample does not depend on its batch, on a resume or on the worker that made
it. Prompts are sharded into batches of whole prompts (``nex_causal.capture.shards``): finished
shards survive an interruption, and shards may run on Ray workers.
"""

from __future__ import annotations

import importlib.util
import shutil
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import torch

from nex_causal.capture.cluster import RayOptions
from nex_causal.capture.config import SAMPLERS, Backend, SampleConfig, resolve_backend
from nex_causal.capture.online import OnlineStop, Plan
from nex_causal.capture.rows import RowRecorder, StepHooks
from nex_causal.capture.shards import partial_dir, run_shards
from nex_causal.capture.traces import Trace, join_traces, traces_meta, write_traces
from nex_causal.errors import NexError
from nex_causal.io import versions
from nex_causal.models.generation import (
    TOKEN_STATS,
    Generation,
    StepCallback,
    encode_prompts,
    generate_batch,
    hf_generate_batch,
    sequence_seed,
)
from nex_causal.models.tasks import Problem, TaskSet, load_tasks
from nex_causal.resume import mismatch, stamp


class Sampler(Protocol):
    """A loaded engine: encodes prompts and generates one response per (prompt ids, seed)."""

    def encode(self, prompts: Sequence[str]) -> list[torch.Tensor]: ...

    def generate(self, prompts: Sequence[torch.Tensor], seeds: Sequence[int]) -> list[Generation]: ...


class BridgeSampler:
    """Generation through the bridge: ``stepwise`` steps it token by token, else Hugging Face ``generate``
    on the plain model it wraps (same weights, no hooks)."""

    def __init__(self, config: SampleConfig, bridge, *, stepwise: bool):
        from nex_causal.models.loading import load_bridge, plain_model

        self.config = config
        self.bridge = load_bridge(config.model, device=config.device, dtype=config.dtype) if bridge is None else bridge
        self.model = None if stepwise else plain_model(self.bridge)

    def encode(self, prompts: Sequence[str]) -> list[torch.Tensor]:
        return encode_prompts(self.bridge, prompts, chat=self.config.chat)

    def generate(self, prompts: Sequence[torch.Tensor], seeds: Sequence[int], fwd_hooks=(),
                 on_step: StepCallback | None = None) -> list[Generation]:
        """One response per prompt; ``fwd_hooks`` (stepwise only) see every step, ``on_step`` may stop rows."""
        c = self.config
        kwargs = dict(max_new_tokens=c.max_new_tokens, temperature=c.temperature, top_p=c.top_p, seeds=seeds,
                      on_step=on_step)
        if self.model is None:
            return generate_batch(self.bridge, prompts, **kwargs, fwd_hooks=fwd_hooks)
        if fwd_hooks:
            raise NexError("hooks need the bridge stepped token by token: sample with --backend bridge")
        return hf_generate_batch(self.bridge, prompts, **kwargs, model=self.model)


class VLLMSampler:
    """vLLM's offline engine on the model directory; statistics from the 20 log-probs it returns per token
    (entropy and KL to uniform need the whole distribution and are left NaN; replay computes them)."""

    def __init__(self, config: SampleConfig):
        from vllm import LLM

        from nex_causal.models.files import load_tokenizer
        from nex_causal.models.loading import resolve_model

        path = str(resolve_model(config.model))
        self.config = config
        self.tokenizer = load_tokenizer(path)
        self.llm = LLM(model=path, dtype=config.dtype, seed=config.seed, enable_prefix_caching=True,
                       trust_remote_code=False)

    def encode(self, prompts: Sequence[str]) -> list[torch.Tensor]:
        if self.config.chat:
            prompts = [self.tokenizer.apply_chat_template([{"role": "user", "content": p}], tokenize=False,
                                                          add_generation_prompt=True) for p in prompts]
            return [torch.tensor(self.tokenizer(p, add_special_tokens=False).input_ids) for p in prompts]
        return [torch.tensor(self.tokenizer(p).input_ids) for p in prompts]

    def generate(self, prompts: Sequence[torch.Tensor], seeds: Sequence[int]) -> list[Generation]:
        from vllm import SamplingParams

        c = self.config
        params = [SamplingParams(temperature=c.temperature, top_p=c.top_p, max_tokens=c.max_new_tokens,
                                 seed=int(s), logprobs=20) for s in seeds]
        outputs = self.llm.generate([{"prompt_token_ids": p.tolist()} for p in prompts], params, use_tqdm=False)
        return [self._generation(o.outputs[0]) for o in outputs]

    def _generation(self, out) -> Generation:
        tokens = np.asarray(out.token_ids, np.int64)
        stats = {name: np.full(len(tokens), np.nan, np.float32) for name in TOKEN_STATS}
        for t, (token, returned) in enumerate(zip(tokens, out.logprobs or [])):
            values = np.array([lp.logprob for lp in returned.values()], np.float64)
            top = np.sort(values)[::-1][:20]
            stats["token_logprob"][t] = returned[int(token)].logprob
            stats["token_top20_logprob_sum"][t] = top.sum()
            stats["token_confidence_sum"][t] = values.sum()
            stats["token_confidence_count"][t] = len(values)
        return Generation(tokens=tokens, text=out.text, stats=stats,
                          finish_reason="eos" if out.finish_reason == "stop" else "length")


def _vllm_here(config: SampleConfig) -> bool:
    return importlib.util.find_spec("vllm") is not None and config.device.startswith("cuda")


SAMPLERS.add("hf", Backend(lambda config, bridge: BridgeSampler(config, bridge, stepwise=False), lambda c: True))
SAMPLERS.add("bridge", Backend(lambda config, bridge: BridgeSampler(config, bridge, stepwise=True), lambda c: True))
SAMPLERS.add("vllm", Backend(lambda config, bridge: VLLMSampler(config), _vllm_here))


def load_sampler(config: SampleConfig, bridge=None) -> Sampler:
    """The engine of ``config``, loaded (reusing ``bridge`` where the engine runs on one)."""
    return SAMPLERS[resolve_backend(config)].make(config, bridge)


def prompt_shards(n_prompts: int, config: SampleConfig) -> list[range]:
    """Prompt indices per shard: whole prompts, ``batch_size`` sequences (at least one prompt) each."""
    per_shard = max(1, config.batch_size // config.n_samples)
    return [range(i, min(i + per_shard, n_prompts)) for i in range(0, n_prompts, per_shard)]


def sample_shard(sampler: Sampler, taskset: TaskSet, prompts: range, config: SampleConfig,
                 encoded: Sequence[torch.Tensor], stop: Plan | None = None, **hooks) -> list[tuple[int, Trace, Generation]]:
    """``n_samples`` responses for each prompt of ``prompts``: (prompt index, trace, generation) per
    sequence, sequence (p, s) seeded by ``(seed, p, s)``. ``hooks`` go to a stepwise sampler; ``stop`` (a stop
    rule's plan, ``selectors.stopping.StopPlan``) stops sequences while they are generated."""
    slots = [(p, s) for p in prompts for s in range(config.n_samples)]
    seeds, inputs = [sequence_seed(config.seed, p, s) for p, s in slots], [encoded[p] for p, _ in slots]
    if stop is None:
        gens = sampler.generate(inputs, seeds, **hooks)
    else:
        gens = _stopped(sampler, taskset, slots, inputs, seeds, stop)
    return [(p, trace_of(taskset.problems[p], s, gen), gen) for (p, s), gen in zip(slots, gens)]


def _stopped(sampler: Sampler, taskset: TaskSet, slots: list[tuple[int, int]], inputs: list[torch.Tensor],
             seeds: list[int], plan: Plan) -> list[Generation]:
    """The generations of ``slots`` under a stop rule: rows recorded from the bridge's hooks for a rule that reads
    them (the calibration cache's sparsifier and window), trial answers from the plain model."""
    from nex_causal.capture.sparsify import Sparsifier
    from nex_causal.models.loading import plain_model

    if not isinstance(sampler, BridgeSampler):
        raise NexError("stop rules run inside the hf or bridge backends: sample with --backend hf or bridge")
    bridge, recorder, hooks = sampler.bridge, None, None
    if "rows" in plan.rule.reads:
        if sampler.model is not None:
            raise NexError(f"stop rule {plan.name} reads activations: sample with --backend bridge")
        recorder = RowRecorder(bridge, Sparsifier.parse(plan.sparsifier), int(plan.window), len(slots))
        hooks = StepHooks(bridge, recorder)
    online = OnlineStop(plan, inputs, [p for p, _ in slots], eos=bridge.tokenizer.eos_token_id, recorder=recorder,
                        answer_prefix=taskset.answer_prefix, extract=taskset.extract, bridge=bridge,
                        model=plain_model(bridge),
                        max_tokens=plan.calibrated.settings.probe_tokens)

    def on_step(step: int, sampled: torch.Tensor, stats: torch.Tensor, active: torch.Tensor) -> torch.Tensor:
        if hooks is not None:
            hooks.on_step(step, sampled, stats, active)
        return online.step(step, sampled, stats, active)

    gens = sampler.generate(inputs, seeds, fwd_hooks=hooks.fwd_hooks() if hooks else (), on_step=on_step)
    return online.finish(gens)


def trace_of(problem: Problem, sample_index: int, gen: Generation) -> Trace:
    return Trace(prompt_id=problem.id, sample_index=sample_index, prompt=problem.prompt, response=gen.text,
                 token_ids=gen.tokens, finish_reason=gen.finish_reason, target=problem.target)


def trace_record(trace: Trace, prompt_ids: torch.Tensor, stats: dict[str, np.ndarray], *, answer: str | None,
                 correct: bool | None, **extra: Any) -> dict[str, Any]:
    """One row of a traces table or of a cache's responses.parquet (columns in docs/architecture.md)."""
    return {
        "prompt_id": trace.prompt_id, "sample_index": trace.sample_index, **extra, "prompt": trace.prompt,
        "response": trace.response, "n_tokens": trace.n_tokens, "finish_reason": trace.finish_reason,
        "prompt_token_ids": np.asarray(prompt_ids, np.int32), "token_ids": trace.token_ids.astype(np.int32),
        "answer": answer, "target": trace.target, "correct": correct, **stats,
    }


def scored(taskset: TaskSet, problem: Problem, text: str) -> dict[str, Any]:
    """The extracted answer of ``text`` and whether it is correct, by the task set's own checker, and the
    task's ground truth of the response where it has one (an organism's strategy spans)."""
    out = {"answer": taskset.extract(text), "correct": bool(taskset.check(problem, text))}
    if taskset.ground_truth is not None:
        out["ground_truth"] = taskset.ground_truth(text)
    return out


class SampleWork:
    """``sample``'s shards: each a parquet of its prompts' traces."""

    what = "sampling"

    def __init__(self, config: SampleConfig, taskset: TaskSet, bridge=None, stop: Plan | None = None):
        self.config, self.taskset, self.bridge, self.stop = config, taskset, bridge, stop
        self.shards = prompt_shards(len(taskset), config)
        self.n_shards = len(self.shards)

    def __getstate__(self) -> dict:
        return {**self.__dict__, "bridge": None, "sampler": None}  # a worker loads its own engine

    def setup(self) -> None:
        self.sampler = load_sampler(self.config, self.bridge)
        self.encoded = self.sampler.encode(self.taskset.prompts())

    def size(self, index: int) -> int:
        return len(self.shards[index])

    def run(self, index: int, path: Path) -> None:
        problems, c = self.taskset.problems, self.config
        done = sample_shard(self.sampler, self.taskset, self.shards[index], c, self.encoded, self.stop)
        extra = {} if self.stop is None else {"stop_rule": self.stop.name}
        records = [trace_record(trace, self.encoded[p], gen.stats, **scored(self.taskset, problems[p], trace.response),
                                model=c.model, task=self.taskset.name, **extra) for p, trace, gen in done]
        write_traces(records, path)


def sample(config: SampleConfig, out: str | Path, *, bridge=None, taskset: TaskSet | None = None,
           progress: bool = True, ray: RayOptions | None = None, stop: Plan | None = None) -> Path:
    """Sample ``config`` into the traces parquet ``out``; resume, or reuse a finished identical one. ``stop`` (a stop
    rule's plan, ``selectors.stopping.StopPlan``) stops responses early while they are generated."""
    config.check()
    out = Path(out)
    wanted = config.content() if stop is None else {**config.content(), "stop": stop.content()}
    if stop is not None and resolve_backend(config) == "vllm":
        raise NexError("stop rules run inside the hf or bridge backends: sample with --backend hf or bridge")
    if out.suffix != ".parquet":
        raise NexError(f"traces are written as parquet: give --out a path ending in .parquet, not {out.name}")
    if out.exists():
        why = mismatch(traces_meta(out).get("stamp"), wanted)
        if why is not None:
            raise NexError(f"{out} already holds traces made with {why}; choose another --out or delete it")
        return out
    taskset = load_tasks(config.tasks) if taskset is None else taskset
    partial = partial_dir(out)
    paths = run_shards(SampleWork(config, taskset, bridge, stop), partial, wanted, progress=progress, ray=ray)
    join_traces(paths, out, {"stamp": stamp(wanted), "versions": versions()})
    shutil.rmtree(partial)
    return out
