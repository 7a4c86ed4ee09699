"""Capture's cost: replay capture against a plain forward of the same model on the same tokens, and where it goes.

For each model (the zoo's organism, then SmolLM2-135M), in one run and on the same prompts and settings:

- **replay overhead**: the traces a sampler wrote are fed, in the very batches replay forms
  (``capture.replay.groups``: right-padded groups of at most ``replay_tokens`` tokens, a KV
  cache carried across chunks), through
    plain forward     the Hugging Face model the bridge wraps, no hooks, nothing kept;
    bridge forward    the TransformerBridge, no hooks, nothing kept;
  and then captured by ``capture_traces`` (the replay path of ``nex-causal capture``), timed in
  parts: the forward with the MLP hooks (through the plain model when it records what the bridge
  records, ``capture.replay.plain_recorder``, else the bridge), the output statistics (log-softmax over the
  vocabulary per token), sparsifying (the sparsifier, key packing and the rows of ``window``
  tokens: ``RowRecorder``), writing (the shard caches, their concatenation, the record) and the
  rest (gathering activations, padding, the response table). Printed: each part's seconds and
  replay capture's time over the plain forward (target: at most 1.3x);
- **stepwise against sample + replay** (``--stepwise``): ``capture(method="stepwise")``, every token a
  bridge step with hooks, against ``capture(method="replay")``, generated tokens/s of each;
- **Ray** (``--ray-workers N``, with the ray extra): the replay capture sharded over N local
  workers against one process; the caches are compared byte for byte.

The last line is the organism's replay capture over its plain forward. On a GPU pass
``--device cuda --dtype bfloat16`` (timers synchronise the device), and ``--model DIR`` (a
Qwen3-architecture directory) or ``--random-qwen3 0.6b`` for a randomly initialised model of
that published shape.

    python benchmarks/bench_capture.py [--quick] [--prompts 32] [--n-samples 4] [--smollm2-prompts 8]
        [--smollm2-tokens 96] [--stepwise] [--ray-workers 2]

SmolLM2 samples 2 responses of at most 96 new tokens per prompt by default: on 2 CPU cores its
sampling, not the replay, is most of the run.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib.util
import tempfile
import time
from collections import defaultdict
from pathlib import Path

import numpy as np
import torch

from nex_causal.capture import (
    CaptureConfig,
    ReplayConfig,
    SampleConfig,
    capture,
    capture_traces,
    sample,
)
from nex_causal.capture import record as record_module
from nex_causal.capture import replay as replay_module
from nex_causal.capture.cluster import RayOptions
from nex_causal.capture.rows import RowRecorder
from nex_causal.capture.traces import read_traces
from nex_causal.errors import NexError
from nex_causal.models.loading import load_bridge, plain_model
from nex_causal.models.tasks import load_tasks

QWEN3_SHAPES = {  # published Qwen3 shapes: hidden, layers, MLP units, heads, KV heads
    "0.6b": (1024, 28, 3072, 16, 8),
    "1.7b": (2048, 28, 6144, 16, 8),
    "4b": (2560, 36, 9728, 32, 8),
}
# the parts of replay capture: (owner, attribute) of each timed function
PARTS = {
    "forward with hooks": [(replay_module, "teacher_forced_logits")],
    "output statistics": [(replay_module, "token_statistics")],
    "sparsifying": [(RowRecorder, "add"), (RowRecorder, "finish")],
    "writing": [(record_module, "write_shard"), (record_module, "concatenate"), (record_module, "seal")],
}


def random_qwen3(size: str, out: Path) -> Path:
    """A randomly initialised Qwen3 of a published shape, with the organism's tokenizer (speed only)."""
    from transformers import Qwen3Config, Qwen3ForCausalLM

    from nex_causal.zoo.tokenizer import char_tokenizer

    hidden, layers, mlp, heads, kv = QWEN3_SHAPES[size]
    config = Qwen3Config(vocab_size=151936, hidden_size=hidden, num_hidden_layers=layers, intermediate_size=mlp,
                         num_attention_heads=heads, num_key_value_heads=kv, head_dim=128,
                         max_position_embeddings=4096, tie_word_embeddings=True, eos_token_id=1, pad_token_id=0)
    torch.manual_seed(0)
    Qwen3ForCausalLM(config).to(torch.bfloat16).save_pretrained(out)
    char_tokenizer().save_pretrained(out)
    return out


def sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def timed(fn, device: str = "cpu") -> tuple[float, object]:
    sync(device)
    start = time.perf_counter()
    result = fn()
    sync(device)
    return time.perf_counter() - start, result


@contextlib.contextmanager
def part_timers(device: str):
    """Seconds spent in each of ``PARTS`` while the block runs (the functions wrapped, the device synchronised)."""
    seconds: dict[str, float] = defaultdict(float)
    originals = []

    def wrap(part: str, fn):
        def timed_call(*args, **kwargs):
            sync(device)
            start = time.perf_counter()
            try:
                return fn(*args, **kwargs)
            finally:
                sync(device)
                seconds[part] += time.perf_counter() - start
        return timed_call

    for part, targets in PARTS.items():
        for owner, name in targets:
            originals.append((owner, name, getattr(owner, name)))
            setattr(owner, name, wrap(part, getattr(owner, name)))
    try:
        yield seconds
    finally:
        for owner, name, fn in originals:
            setattr(owner, name, fn)


@torch.no_grad()
def teacher_forced(forward, fed: list[np.ndarray], max_tokens: int, pad: int, device: str) -> None:
    """Feed ``fed`` through ``forward(ids, mask, positions, cache)`` in replay's batches, keeping nothing."""
    from transformers import DynamicCache

    for group in replay_module.groups([len(f) for f in fed], max_tokens):
        width = max(len(fed[i]) for i in group)
        ids = torch.full((len(group), width), pad, dtype=torch.long)
        mask = torch.zeros((len(group), width), dtype=torch.long)
        for row, i in enumerate(group):
            ids[row, :len(fed[i])] = torch.from_numpy(fed[i])
            mask[row, :len(fed[i])] = 1
        ids, mask = ids.to(device), mask.to(device)
        chunk, cache = max(1, max_tokens // len(group)), DynamicCache()
        for start in range(0, width, chunk):
            end = min(width, start + chunk)
            positions = torch.arange(start, end, device=device)[None].expand(len(group), -1)
            forward(ids[:, start:end], mask[:, :end], positions, cache)


def overhead(model: str, bridge, traces: Path, args, tmp: Path) -> float:
    """Print replay capture's time over a plain forward of the same batches, by part; return the ratio."""
    config = ReplayConfig(traces=str(traces), model=model, batch_size=args.batch_size, device=args.device,
                          dtype=args.dtype, sparsifier=args.sparsifier, window=args.window)
    loaded = read_traces(traces, bridge.tokenizer, int(bridge.cfg.d_vocab))
    fed = [np.concatenate([t.prompt_ids, t.token_ids]).astype(np.int64) for t in loaded]
    pad, n_tokens = bridge.tokenizer.pad_token_id or 0, sum(t.n_tokens for t in loaded)
    plain = plain_model(bridge)

    def plain_forward(ids, mask, positions, cache):
        plain(input_ids=ids, attention_mask=mask, position_ids=positions, past_key_values=cache, use_cache=True)

    def bridge_forward(ids, mask, positions, cache):
        replay_module.forward_step(bridge, ids, attention_mask=mask, position_ids=positions, cache=cache)

    t_probe, plain_route = timed(lambda: replay_module.plain_recorder(bridge), args.device)  # once per model
    feed = {name: (lambda f=f: teacher_forced(f, fed, config.replay_tokens, pad, args.device))
            for name, f in (("plain", plain_forward), ("bridge", bridge_forward))}
    teacher_forced(plain_forward, fed[:2], config.replay_tokens, pad, args.device)  # warm-up: allocator, kernels
    t_plain, _ = timed(feed["plain"], args.device)
    t_bridge, _ = timed(feed["bridge"], args.device)
    with part_timers(args.device) as parts:
        t_capture, _ = timed(lambda: capture_traces(config, tmp / "replayed", bridge=bridge, progress=False),
                             args.device)
    rest = t_capture - sum(parts.values())
    route, baseline = ("plain model", t_plain) if plain_route else ("bridge", t_bridge)
    print(f"  replay capture of {len(loaded)} traces ({n_tokens} response tokens, {sum(map(len, fed))} fed; "
          f"{args.sparsifier}, window {args.window}) against a plain forward of the same batches:")
    print(f"    plain forward (HF model, no hooks) {t_plain:8.3f} s   1.00x")
    print(f"    bridge forward (no hooks)          {t_bridge:8.3f} s   {t_bridge / t_plain:4.2f}x")
    print(f"    replay capture                     {t_capture:8.3f} s   {t_capture / t_plain:4.2f}x   of which:")
    for name, seconds in [*parts.items(), ("rest", rest)]:
        print(f"      {name:32s} {seconds:8.3f} s   {seconds / t_plain:4.2f}x")
    beyond = parts["sparsifying"] + parts["writing"] + rest
    print(f"    so: the forward ran through the {route}, its hooks {parts['forward with hooks'] - baseline:+.3f} s over "
          f"it; sparsifying + writing + rest {beyond:.3f} s beyond the forward passes; deciding the route took "
          f"{t_probe:.3f} s once for this model (building the plain model, a probe through both)")
    return t_capture / t_plain


def stepwise_against_replay(model: str, bridge, tasks: str, taskset, args, tmp: Path) -> None:
    """Generated tokens/s of stepwise capture against sample + replay (and, with Ray, sharded replay)."""
    common = dict(model=model, tasks=tasks, n_samples=args.n_samples, max_new_tokens=args.max_new_tokens,
                  batch_size=args.batch_size, device=args.device, dtype=args.dtype, backend="hf")
    record = dict(sparsifier=args.sparsifier, window=args.window)
    run = dict(bridge=bridge, taskset=taskset, progress=False)
    t_step, step = timed(lambda: capture(CaptureConfig(**common, **record, method="stepwise"), tmp / "step", **run))
    t_fast, fast = timed(lambda: capture(CaptureConfig(**common, **record), tmp / "fast", **run))
    tokens_step, tokens_fast = int(step.responses["n_tokens"].sum()), int(fast.responses["n_tokens"].sum())
    print(f"  stepwise {tokens_step / t_step:8.1f} tok/s | sample+replay {tokens_fast / t_fast:8.1f} tok/s "
          f"(x{(tokens_fast / t_fast) / (tokens_step / t_step):4.2f})")
    if args.ray_workers:
        if importlib.util.find_spec("ray") is None:
            print("  ray skipped: the ray extra is not installed (pip install -c constraints.txt '.[ray]')")
            return
        t_ray, _ = timed(lambda: capture(CaptureConfig(**common, **record), tmp / "ray", progress=False,
                                         ray=RayOptions(workers=args.ray_workers)))
        same = cache_bytes(tmp / "ray") == cache_bytes(tmp / "fast")
        print(f"  ray, {args.ray_workers} workers: {tokens_fast / t_ray:8.1f} tok/s against one process "
              f"{tokens_fast / t_fast:8.1f} tok/s (Ray start-up and model loads included); byte-identical: {same}")


def cache_bytes(path: Path) -> dict[str, bytes]:
    return {p.relative_to(path).as_posix(): p.read_bytes() for p in sorted(path.rglob("*"))
            if p.is_file() and p.name not in ("capture.json", "integrity.json")}


def bench(model: str, tasks: str, args, tmp: Path, n_samples: int, max_new_tokens: int) -> float:
    """Print one model's figures; return replay capture's time over its plain forward."""
    bridge = load_bridge(model, device=args.device, dtype=args.dtype)
    taskset = load_tasks(tasks)
    t_sample, traces = timed(lambda: sample(SampleConfig(
        model=model, tasks=tasks, n_samples=n_samples, max_new_tokens=max_new_tokens,
        batch_size=args.batch_size, device=args.device, dtype=args.dtype, backend="hf"), tmp / "traces.parquet",
        bridge=bridge, taskset=taskset, progress=False))
    print(f"\n{Path(model).name} [{args.device} {args.dtype}], {bridge.cfg.n_layers} layers x {bridge.cfg.d_mlp} "
          f"MLP units, vocabulary {bridge.cfg.d_vocab}: sampled {tasks} x {n_samples} (at most {max_new_tokens} "
          f"tokens) in {t_sample:.1f} s")
    ratio = overhead(model, bridge, Path(traces), args, tmp)
    if args.stepwise:
        stepwise_against_replay(model, bridge, tasks, taskset, args, tmp)
    return ratio


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="base", help="model to measure (default the zoo's base)")
    parser.add_argument("--random-qwen3", choices=sorted(QWEN3_SHAPES), help="measure a random Qwen3 of this shape")
    parser.add_argument("--quick", action="store_true", help="8 prompts x 2 samples of at most 128 tokens")
    parser.add_argument("--prompts", type=int, default=32)
    parser.add_argument("--n-samples", type=int, default=4)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--max-new-tokens", type=int, default=320)
    parser.add_argument("--sparsifier", default="topk:8")
    parser.add_argument("--window", type=int, default=1)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--dtype", default="float32")
    parser.add_argument("--stepwise", action="store_true", help="also time stepwise capture against sample + replay")
    parser.add_argument("--ray-workers", type=int, default=0, help="with --stepwise: shard over N Ray workers")
    parser.add_argument("--no-smollm2", action="store_true", help="skip SmolLM2-135M")
    parser.add_argument("--smollm2-prompts", type=int, default=8, help="SmolLM2's prompts (2 samples each)")
    parser.add_argument("--smollm2-tokens", type=int, default=96, help="SmolLM2's new tokens at most")
    args = parser.parse_args()
    if args.quick:
        args.prompts, args.n_samples, args.max_new_tokens = 8, 2, 128
        args.smollm2_prompts, args.smollm2_tokens = 4, 48
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        model = str(random_qwen3(args.random_qwen3, tmp / "qwen3")) if args.random_qwen3 else args.model
        (tmp / "a").mkdir()
        ratio = bench(model, f"organism:{args.prompts}", args, tmp / "a", args.n_samples, args.max_new_tokens)
        if not args.no_smollm2:
            (tmp / "b").mkdir()
            try:
                bench("smollm2-135m", f"organism:{args.smollm2_prompts}", args, tmp / "b", 2, args.smollm2_tokens)
            except NexError as err:
                print(f"  smollm2-135m skipped: {err}")
    print(f"\nreplay capture over a plain forward ({Path(model).name}): {ratio:.2f}x")


if __name__ == "__main__":
    main()
