"""What determines a capture: the settings of sampling, of recording rows, and of replaying traces.

One dataclass per concept, each setting declared once with its default and help
(``nex_causal.settings``), and light to import (no torch), so commands and configs can
read them without loading a model:

    SampleConfig   N responses per prompt: model, tasks, decoding, seed, backend
    RecordConfig   how activations become rows: sparsifier, window, replay chunk
    CaptureConfig  a sampled capture: both of the above, and stepwise or by replay
    ReplayConfig   a capture of traces made elsewhere

``content()`` is what a finished result records and a resume compares.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from nex_causal.errors import NexError
from nex_causal.registry import Registry
from nex_causal.settings import input_digests, same_field

if TYPE_CHECKING:
    from nex_causal.capture.sparsify import Sparsifier

DEFAULT_MAX_TOKENS = 4096  # tokens per forward pass of a replay


@dataclass(frozen=True)
class SampleConfig:
    """Everything that determines a set of samples (and so whether a resume is valid)."""

    model: str = field(metadata={"help": "zoo variant name, smollm2-135m, a local HF directory, or a cached HF id"})
    tasks: str = field(metadata={"help": "task spec: organism:200, rg:<dataset>:100, or a .jsonl file", "file": True})
    n_samples: int = field(default=4, metadata={"help": "responses per prompt"})
    max_new_tokens: int = field(default=256, metadata={"help": "tokens generated per response at most"})
    temperature: float = field(default=0.7, metadata={"help": "sampling temperature (0: greedy)"})
    top_p: float = field(default=0.95, metadata={"help": "nucleus mass"})
    seed: int = field(default=0, metadata={"help": "sampling seed (each sequence draws from its own generator)"})
    batch_size: int = field(default=16, metadata={"help": "sequences per batch (a shard holds one batch)"})
    chat: bool = field(default=False, metadata={"help": "wrap prompts in the tokenizer's chat template"})
    backend: str = field(default="auto", metadata={
        "help": "sampling engine: auto (vllm on a GPU when installed, else hf) | hf | bridge | vllm"})
    device: str = field(default="cpu", metadata={"help": "cpu or cuda"})
    dtype: str = field(default="float32", metadata={"help": "float32 or bfloat16"})

    def content(self) -> dict:
        """The fields that change the result, the backend resolved (``auto`` says nothing), the tasks file's digest."""
        return {**dataclasses.asdict(self), "backend": resolve_backend(self), **input_digests(self)}

    def check(self) -> None:
        """One-line NexError for values no run can use."""
        if self.n_samples < 1 or self.batch_size < 1 or self.max_new_tokens < 1:
            raise NexError("n_samples, batch_size and max_new_tokens must all be at least 1")
        if not 0.0 < self.top_p <= 1.0:
            raise NexError(f"top_p must be in (0, 1], got {self.top_p}")
        if not self.temperature >= 0.0:
            raise NexError(f"temperature must be 0 (greedy) or positive, got {self.temperature}")


@dataclass(frozen=True)
class RecordConfig:
    """How activations become cache rows, whichever route feeds them."""

    sparsifier: str = field(default="topk:500", kw_only=True, metadata={
        "help": "which neurons enter a row: topk:K | layer-topk:K | threshold:T | mui:K"})
    window: int = field(default=32, kw_only=True, metadata={"help": "generated tokens per cache row"})
    replay_tokens: int = field(default=DEFAULT_MAX_TOKENS, kw_only=True, metadata={
        "help": "tokens per teacher-forced forward pass of a replay (bounds its memory)"})
    record_prompt: bool = field(default=False, kw_only=True, metadata={
        "help": "also record which neurons the prompt's tokens select (responses.parquet prompt_keys), for NEX's "
                "prompt_seen option"})

    def check_recording(self) -> Sparsifier:
        from nex_causal.capture.sparsify import Sparsifier

        if self.window < 1 or self.replay_tokens < 1:
            raise NexError("window and replay_tokens must be at least 1")
        if self.record_prompt and getattr(self, "method", "replay") == "stepwise":
            raise NexError("record_prompt needs the replay method (stepwise capture never runs the prompt "
                           "through the recorder): drop --method stepwise")
        return Sparsifier.parse(self.sparsifier)


@dataclass(frozen=True)
class CaptureConfig(SampleConfig, RecordConfig):
    """Everything that determines a sampled capture's content (and so whether a resume is valid)."""

    method: Literal["replay", "stepwise"] = field(default="replay", kw_only=True, metadata={
        "help": "replay: sample with the backend, then replay the sequences (fast); stepwise: record while "
                "stepping the bridge (for lock-step patching)"})

    def content(self) -> dict:
        content = {**dataclasses.asdict(self), "backend": resolve_backend(self.sampling()), **input_digests(self)}
        if self.method == "stepwise":
            del content["replay_tokens"]  # stepwise capture never replays
        return content

    def sampling(self) -> SampleConfig:
        """The sampling part of this capture (stepwise capture samples through the bridge)."""
        values = {f.name: getattr(self, f.name) for f in dataclasses.fields(SampleConfig)}
        return SampleConfig(**{**values, "backend": "bridge" if self.method == "stepwise" else self.backend})


@dataclass(frozen=True)
class ReplayConfig(RecordConfig):
    """Everything that determines a capture of existing traces."""

    traces: str = field(metadata={"help": "traces to replay: a .parquet from `nex-causal sample` or a cache, "
                                          "or a .jsonl with prompt and response (or response_token_ids)", "file": True})
    model: str = same_field(SampleConfig, "model")
    chat: bool = field(default=False, metadata={
        "help": "wrap prompts in the chat template (for traces that do not record their prompt token ids)"})
    checker: str | None = field(default=None, metadata={
        "help": "task spec whose answer checker judges the traces, e.g. organism:1 (default: the task a traces table "
                "records, else the generic Answer:-line checker)", "file": True})
    batch_size: int = same_field(SampleConfig, "batch_size")
    device: str = same_field(SampleConfig, "device")
    dtype: str = same_field(SampleConfig, "dtype")

    def content(self) -> dict:
        """The settings and the digests of the traces (and checker tasks) file (a changed file is another capture)."""
        if not Path(self.traces).is_file():
            raise NexError(f"traces file {self.traces} does not exist: check the path")
        return {**dataclasses.asdict(self), **input_digests(self)}


@dataclass(frozen=True)
class Backend:
    """A sampling engine: ``make(config, bridge)`` loads it (``bridge`` may be None: load one if needed),
    ``available(config)`` says whether it can run here."""

    make: Callable[[SampleConfig, Any], Any]  # -> sampling.Sampler
    available: Callable[[SampleConfig], bool]


SAMPLERS: Registry[Backend] = Registry("sampling backend", providers=("nex_causal.capture.sampling",))


def resolve_backend(config: SampleConfig) -> str:
    """The backend ``config`` names (``auto``: vllm where it can run, else hf); NexError if it cannot run."""
    if config.backend == "auto":
        return "vllm" if SAMPLERS["vllm"].available(config) else "hf"
    if not SAMPLERS[config.backend].available(config):
        raise NexError(f"sampling backend {config.backend!r} cannot run here: it needs vllm installed and "
                       "device cuda; use --backend hf")
    return config.backend
