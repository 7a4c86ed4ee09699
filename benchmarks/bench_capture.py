"""Capture throughput: stepwise capture against sample + replay, and Ray shards against one process.

For each model, in one run and on the same prompts and settings:

- stepwise: ``capture(method="stepwise")``, every token a bridge step with hooks;
- sample + replay: ``capture(method="replay")``, Hugging Face ``generate`` then one
  teacher-forced replay per batch (its two parts are timed apart with ``sample`` and
  ``capture_traces``);
- Ray (``--ray-workers N``, when the ray extra is installed): the replay capture sharded
  over N local workers against the single-process run; the caches are compared byte for byte.

Prints generated tokens/s of each, their ratios, the cache's bytes per token, and last the
organism's ``replay speed-up: <ratio>x`` (target: at least 3x). On a GPU pass ``--device cuda
--dtype bfloat16 --model DIR`` (a Qwen3-architecture directory, or ``--random-qwen3 0.6b``
for a randomly initialised model of that published shape).

    python benchmarks/bench_capture.py [--prompts 32] [--n-samples 4] [--ray-workers 2]
"""

from __future__ import annotations

import argparse
import importlib.util
import tempfile
import time
from pathlib import Path

from nex_causal.capture import (
    CaptureConfig,
    ReplayConfig,
    SampleConfig,
    capture,
    capture_traces,
    sample,
)
from nex_causal.capture.cluster import RayOptions
from nex_causal.errors import NexError
from nex_causal.models.loading import load_bridge
from nex_causal.models.tasks import load_tasks

QWEN3_SHAPES = {  # published Qwen3 shapes: hidden, layers, MLP units, heads, KV heads
    "0.6b": (1024, 28, 3072, 16, 8),
    "1.7b": (2048, 28, 6144, 16, 8),
    "4b": (2560, 36, 9728, 32, 8),
}


def random_qwen3(size: str, out: Path) -> Path:
    """A randomly initialised Qwen3 of a published shape, with the organism's tokenizer (speed only)."""
    import torch
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


def timed(fn) -> tuple[float, object]:
    start = time.perf_counter()
    result = fn()
    return time.perf_counter() - start, result


def cache_bytes(path: Path) -> dict[str, bytes]:
    return {p.relative_to(path).as_posix(): p.read_bytes() for p in sorted(path.rglob("*"))
            if p.is_file() and p.name != "capture.json"}


def bench(model: str, tasks: str, args, tmp: Path) -> float:
    """Print one model's figures; return its sample + replay speed-up over stepwise capture."""
    bridge = load_bridge(model, device=args.device, dtype=args.dtype)
    taskset = load_tasks(tasks)
    common = dict(model=model, tasks=tasks, n_samples=args.n_samples, max_new_tokens=args.max_new_tokens,
                  batch_size=args.batch_size, device=args.device, dtype=args.dtype, backend="hf")
    record = dict(sparsifier=args.sparsifier, window=args.window)
    run = dict(bridge=bridge, taskset=taskset, progress=False)
    t_step, step = timed(lambda: capture(CaptureConfig(**common, **record, method="stepwise"), tmp / "step", **run))
    t_fast, fast = timed(lambda: capture(CaptureConfig(**common, **record), tmp / "fast", **run))
    t_sample, traces = timed(lambda: sample(SampleConfig(**common), tmp / "traces.parquet", **run))
    t_replay, _ = timed(lambda: capture_traces(
        ReplayConfig(traces=str(traces), model=model, batch_size=args.batch_size, device=args.device,
                     dtype=args.dtype, **record), tmp / "replayed", bridge=bridge, progress=False))
    tokens_step, tokens_fast = int(step.responses["n_tokens"].sum()), int(fast.responses["n_tokens"].sum())
    entries = sum(p.stat().st_size for p in (tmp / "fast").rglob("*") if p.suffix in {".uint32", ".float16", ".int64"})
    dense = bridge.cfg.n_layers * bridge.cfg.d_mlp * 2
    speedup = (tokens_fast / t_fast) / (tokens_step / t_step)
    print(f"{Path(model).name:>14} [{args.device} {args.dtype}] | stepwise {tokens_step / t_step:8.1f} tok/s | "
          f"sample+replay {tokens_fast / t_fast:8.1f} tok/s (x{speedup:4.2f}) | of which sampling "
          f"{tokens_fast / t_sample:8.1f} tok/s, replay {tokens_fast / t_replay:8.1f} tok/s | cache "
          f"{entries / tokens_fast:6.1f} B/token vs dense fp16 {dense} [{args.sparsifier}, window {args.window}]")
    if args.ray_workers and model == args.ray_model:
        if importlib.util.find_spec("ray") is None:
            print("  ray skipped: the ray extra is not installed (pip install -c constraints.txt '.[ray]')")
        else:
            t_ray, _ = timed(lambda: capture(CaptureConfig(**common, **record), tmp / "ray", progress=False,
                                             ray=RayOptions(workers=args.ray_workers)))
            t_one, _ = timed(lambda: capture(CaptureConfig(**common, **record), tmp / "one", progress=False))
            same = cache_bytes(tmp / "ray") == cache_bytes(tmp / "one")
            print(f"  ray, {args.ray_workers} workers: {tokens_fast / t_ray:8.1f} tok/s against one process "
                  f"{tokens_fast / t_one:8.1f} tok/s (x{t_one / t_ray:4.2f}, Ray start-up and model loads "
                  f"included); byte-identical caches: {same}")
    return speedup


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="base", help="model to measure (default the zoo's base)")
    parser.add_argument("--random-qwen3", choices=sorted(QWEN3_SHAPES), help="measure a random Qwen3 of this shape")
    parser.add_argument("--prompts", type=int, default=32)
    parser.add_argument("--n-samples", type=int, default=4)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--max-new-tokens", type=int, default=320)
    parser.add_argument("--sparsifier", default="topk:8")
    parser.add_argument("--window", type=int, default=1)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--dtype", default="float32")
    parser.add_argument("--ray-workers", type=int, default=2, help="0: skip the Ray comparison")
    parser.add_argument("--no-smollm2", action="store_true", help="skip SmolLM2-135M")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        model = str(random_qwen3(args.random_qwen3, tmp / "qwen3")) if args.random_qwen3 else args.model
        args.ray_model = model
        (tmp / "a").mkdir()
        speedup = bench(model, f"organism:{args.prompts}", args, tmp / "a")
        if not args.no_smollm2:
            (tmp / "b").mkdir()
            try:
                bench("smollm2-135m", f"organism:{max(2, args.prompts // 4)}", args, tmp / "b")
            except NexError as err:
                print(f"  smollm2-135m skipped: {err}")
    print(f"replay speed-up: {speedup:.2f}x")


if __name__ == "__main__":
    main()
