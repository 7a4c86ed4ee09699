"""Cost of sparse MLP capture against plain generation with the same sampling settings.

For each model (the zoo's base model; smollm2-135m when its wheel is installed) prints
tokens/s of plain generation (no hooks), tokens/s of capture, their ratio (target <= 1.3x
on the organism), peak RSS, and cache bytes per generated token against the dense
float16 size (layers x units x 2 bytes per token).

    python benchmarks/bench_capture.py [--prompts 32] [--n-samples 4] [--repeats 3]
"""

from __future__ import annotations

import argparse
import resource
import tempfile
import time
from pathlib import Path

from nex_causal.capture import CaptureConfig, capture, capture_batch
from nex_causal.errors import NexError
from nex_causal.models import load_bridge
from nex_causal.sampling import encode_prompts, generate_batch, sequence_seed
from nex_causal.sparsify import Sparsifier
from nex_causal.tasks import load_tasks


def plain(bridge, encoded, config: CaptureConfig) -> int:
    """Generate exactly what capture generates, without hooks; return the token count."""
    per_batch = max(1, config.batch_size // config.n_samples)
    tokens = 0
    for start in range(0, len(encoded), per_batch):
        slots = [(p, s) for p in range(start, min(start + per_batch, len(encoded)))
                 for s in range(config.n_samples)]
        gens = generate_batch(bridge, [encoded[p] for p, _ in slots],
                              max_new_tokens=config.max_new_tokens, temperature=config.temperature,
                              top_p=config.top_p, seeds=[sequence_seed(config.seed, p, s) for p, s in slots])
        tokens += sum(g.n_tokens for g in gens)
    return tokens


def captured(bridge, taskset, encoded, config: CaptureConfig) -> int:
    per_batch = max(1, config.batch_size // config.n_samples)
    sparsifier = Sparsifier.parse(config.sparsifier)
    tokens = 0
    for start in range(0, len(encoded), per_batch):
        batch = range(start, min(start + per_batch, len(encoded)))
        tokens += sum(rec["n_tokens"] for _, rec in capture_batch(bridge, taskset, batch, config,
                                                                  sparsifier, encoded))
    return tokens


def best_rate(fn, repeats: int) -> float:
    rates = []
    for _ in range(repeats):
        start = time.perf_counter()
        tokens = fn()
        rates.append(tokens / (time.perf_counter() - start))
    return max(rates)


def bench(model: str, tasks: str, args) -> None:
    bridge = load_bridge(model)
    taskset = load_tasks(tasks)
    config = CaptureConfig(model=model, tasks=tasks, n_samples=args.n_samples,
                           max_new_tokens=args.max_new_tokens, batch_size=args.batch_size,
                           sparsifier=args.sparsifier, window=args.window)
    encoded = encode_prompts(bridge, taskset.prompts())
    plain_rate = best_rate(lambda: plain(bridge, encoded, config), args.repeats)
    capture_rate = best_rate(lambda: captured(bridge, taskset, encoded, config), args.repeats)
    with tempfile.TemporaryDirectory() as tmp:
        cache = capture(config, Path(tmp) / "cache", bridge=bridge, taskset=taskset, progress=False)
        n_tokens = int(cache.responses["n_tokens"].sum())
        cache_bytes = sum(p.stat().st_size for p in Path(tmp, "cache").rglob("*")
                          if p.is_file() and p.suffix in {".int64", ".uint32", ".float16"})
    dense = bridge.cfg.n_layers * bridge.cfg.d_mlp * 2
    rss_mib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(f"{model:>14} | plain {plain_rate:8.1f} tok/s | capture {capture_rate:8.1f} tok/s | "
          f"cost x{plain_rate / capture_rate:4.2f} | peak RSS {rss_mib:7.0f} MiB | "
          f"cache {cache_bytes / n_tokens:7.1f} B/token vs dense fp16 {dense} B/token "
          f"(compression x{dense * n_tokens / cache_bytes:5.1f}) [{args.sparsifier}]")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--prompts", type=int, default=32)
    parser.add_argument("--n-samples", type=int, default=4)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--max-new-tokens", type=int, default=160)
    parser.add_argument("--sparsifier", default="topk:64")
    parser.add_argument("--window", type=int, default=16)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    bench("base", f"organism:{args.prompts}", args)
    try:
        bench("smollm2-135m", f"organism:{max(2, args.prompts // 8)}", args)
    except NexError as err:
        print(f"  smollm2-135m skipped: {err}")


if __name__ == "__main__":
    main()
