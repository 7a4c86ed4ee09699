"""Cost of the interventions against plain generation, measured in the same run.

A random Qwen3 shaped like the organism (4 layers, d_mlp 512) generates greedily for a
batch of prompts: plain, under a zero ablation, under a donor patch in lock step (which
runs the donor too, so about 2x is the floor), and under a weight transplant (a one-off
copy of the set's weights, entered and left once per generation). Prints seconds and
the ratio to plain generation.

    PYTHONPATH=. python benchmarks/bench_intervene.py [--k 128] [--batch 32] [--steps 64]
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np
import torch


def build(path: Path, seed: int) -> None:
    from transformers import Qwen3Config, Qwen3ForCausalLM

    from nex_causal.zoo.tokenizer import VOCAB, save_tokenizer

    config = Qwen3Config(vocab_size=len(VOCAB), hidden_size=128, intermediate_size=512, num_hidden_layers=4,
                         num_attention_heads=4, num_key_value_heads=2, head_dim=32,
                         max_position_embeddings=1024, tie_word_embeddings=True, eos_token_id=1,
                         pad_token_id=0, bos_token_id=None)
    torch.manual_seed(seed)
    Qwen3ForCausalLM(config).save_pretrained(path)
    save_tokenizer(path)


def best_times(runs: dict, repeats: int) -> dict[str, float]:
    """Best wall time of each run, taking turns so that load from other processes hits all alike."""
    best = dict.fromkeys(runs, float("inf"))
    for _ in range(repeats):
        for name, fn in runs.items():
            start = time.perf_counter()
            fn()
            best[name] = min(best[name], time.perf_counter() - start)
    return best


def main() -> None:
    from nex_causal.intervene import (
        DonorPatch,
        NeuronSet,
        Transplant,
        ZeroAblation,
        intervened,
    )
    from nex_causal.models.generation import encode_prompts, generate_batch
    from nex_causal.models.loading import load_bridge

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--k", type=int, default=128, help="neurons in the set (spread over the layers)")
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--steps", type=int, default=64)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()

    with tempfile.TemporaryDirectory() as tmp:
        build(Path(tmp) / "a", 0)
        build(Path(tmp) / "b", 1)
        recipient, donor = load_bridge(Path(tmp) / "a"), load_bridge(Path(tmp) / "b")
    rng = np.random.default_rng(0)
    keys = rng.choice(4 * 512, size=args.k, replace=False)
    neurons = NeuronSet.from_units("bench", keys // 512, keys % 512)
    prompts = encode_prompts(recipient, [f"p=17 a={i % 16 + 1} b=3 c=5 d=7 e=2|" for i in range(args.batch)])

    def generate(model):
        return lambda: generate_batch(model, prompts, max_new_tokens=args.steps, eos_token_id=-1)

    def under(interventions):
        def run():
            with intervened(recipient, interventions) as model:
                generate(model)()
        return run

    times = best_times({
        "plain generation": generate(recipient),
        f"zero ablation, k={args.k}": under([ZeroAblation(neurons)]),
        f"donor patch (lock step), k={args.k}": under([DonorPatch(donor, neurons)]),
        f"weight transplant, k={args.k}": under([Transplant(donor, neurons)]),
    }, args.repeats)
    plain = times["plain generation"]
    print(f"batch {args.batch} x {args.steps} tokens, best of {args.repeats}, "
          f"{torch.get_num_threads()} threads")
    for name, seconds in times.items():
        print(f"{name:38s} {seconds:7.3f} s   x{seconds / plain:5.2f} of plain")


if __name__ == "__main__":
    main()
