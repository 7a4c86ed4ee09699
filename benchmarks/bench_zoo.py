"""Zoo build time: a fresh build (committed checkpoints copied, merges run, accuracy measured)
against a second call on the same directory, which the content cache answers at once; and
the training step time of the recipe, against the committed models' recorded training time.

    python benchmarks/bench_zoo.py [--size full|test] [--train-steps 20]
"""

from __future__ import annotations

import argparse
import tempfile
import time
from dataclasses import replace
from pathlib import Path

from nex_causal.models.variants import load_family
from nex_causal.zoo.build import build, checkpoints_of, read_meta
from nex_causal.zoo.recipe import DEFAULT_ORGANISM, RECIPES, recipe_for
from nex_causal.zoo.train import deterministic_cpu, init_model, train_stage


def timed(fn) -> tuple[float, object]:
    start = time.perf_counter()
    out = fn()
    return time.perf_counter() - start, out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--organism", choices=list(RECIPES), default=DEFAULT_ORGANISM)
    parser.add_argument("--train-steps", type=int, default=20, help="base-stage steps to time")
    args = parser.parse_args()
    recipe = recipe_for(args.organism)

    with tempfile.TemporaryDirectory() as tmp:
        fresh, out = timed(lambda: build(Path(tmp) / "zoo", organism=args.organism, progress=False))
        cached, _ = timed(lambda: build(out, organism=args.organism, progress=False))
        table = load_family(out)
    print(f"fresh build: {fresh:.1f} s for {len(table)} variants ({fresh / len(table):.2f} s each)")
    print(f"second call: {cached:.3f} s in-process (ratio fresh/cached {fresh / cached:.0f}x; "
          "the CLI adds about 0.7 s of imports)")
    print(f"accuracy: best {table['accuracy'].max():.3f}, worst {table['accuracy'].min():.3f}, "
          f"spread {table['accuracy'].max() - table['accuracy'].min():.3f}")

    stage = replace(recipe.base, decay_steps=recipe.base.decay_steps or recipe.base.steps)
    with deterministic_cpu(recipe.threads):
        model = init_model(recipe.shape, recipe.seed)
        short = replace(stage, steps=args.train_steps)
        seconds, _ = timed(lambda: train_stage(model, short, recipe.seed, 0, recipe.task, progress=False,
                                                  route=recipe.route))
    per_step = seconds / args.train_steps
    total_steps = recipe.base.steps + sum(s.steps for _, s in recipe.tuned)
    print(f"training: {per_step:.3f} s/step on {recipe.threads} thread(s); the recipe's "
          f"{total_steps} steps -> ~{per_step * total_steps / 60:.1f} min")
    committed = checkpoints_of(args.organism)
    if all(read_meta(committed / n) for n in recipe.trained):
        recorded = sum(read_meta(committed / n)["train_seconds"] for n in recipe.trained)
        print(f"committed checkpoints took {recorded / 60:.1f} min to train "
              f"(ratio estimate/recorded {per_step * total_steps / recorded:.2f})")


if __name__ == "__main__":
    main()
