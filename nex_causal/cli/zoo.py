"""``zoo build|list|train``: the embedded model organism and its merge family."""

from __future__ import annotations

import argparse
from pathlib import Path

from nex_causal.zoo.recipe import DEFAULT_ORGANISM, RECIPES


def add(sub: argparse._SubParsersAction) -> None:
    zoo = sub.add_parser("zoo", help="build or list an embedded model organism and its merge family",
                         description="The model organisms: small Qwen3 models trained here on modular "
                         "search problems (trek, the default; seek, the small one), two experts each, and "
                         "a mergekit merge family.")
    verbs = zoo.add_subparsers(dest="zoo_command", required=True, metavar="{build,list,train}")
    build_cmd = verbs.add_parser("build", help="build or reuse the family and its accuracy table",
                                 description="Copy (or train) base and experts, run the merges, "
                                 "measure greedy accuracy, write DIR/family.csv. Cached by content: "
                                 "a second call with the same recipe returns at once.")
    list_cmd = verbs.add_parser("list", help="print the family table of a built zoo")
    train_cmd = verbs.add_parser("train", help="train base and experts from scratch into a directory",
                                 description="Train base and experts into --out (to regenerate the "
                                 "committed weights: --out nex_causal/zoo/checkpoints/<organism>).")
    for p in (build_cmd, list_cmd):
        p.add_argument("--out", default=None, help="zoo directory (default $NEX_CAUSAL_HOME/zoo/<organism>)")
    train_cmd.add_argument("--out", required=True, help="directory for base/ and the expert-*/ models")
    for p in (build_cmd, list_cmd, train_cmd):
        p.add_argument("--organism", choices=list(RECIPES), default=DEFAULT_ORGANISM,
                       help=f"which organism (default {DEFAULT_ORGANISM}; test: a seconds-long toy recipe)")
    for p in (build_cmd, train_cmd):
        p.add_argument("--seed", type=int, default=0, help="training and merge seed (default 0)")
        p.add_argument("--quiet", action="store_true", help="no progress bars")
    build_cmd.add_argument("--retrain", action="store_true", help="train base and experts from scratch "
                           "and check them against the committed weights")

    build_cmd.set_defaults(handler=do_build)
    list_cmd.set_defaults(handler=do_list)
    train_cmd.set_defaults(handler=do_train)


def do_build(args: argparse.Namespace) -> None:
    import time

    from nex_causal.zoo.build import build, describe

    start = time.perf_counter()
    out = build(args.out, seed=args.seed, organism=args.organism, retrain=args.retrain,
                progress=not args.quiet)
    print(describe(out))
    print(f"done in {time.perf_counter() - start:.1f} s")

def do_list(args: argparse.Namespace) -> None:
    from nex_causal.zoo.build import describe

    print(describe(args.out, args.organism))

def do_train(args: argparse.Namespace) -> None:
    import shutil

    from nex_causal.zoo.build import recipe_for, record_accuracy, train_models

    recipe = recipe_for(args.organism, args.seed)
    for name in recipe.trained:
        shutil.rmtree(Path(args.out) / name, ignore_errors=True)
    metas = train_models(recipe, args.out, progress=not args.quiet)
    for name, meta in metas.items():
        recorded = record_accuracy(Path(args.out) / name, recipe)["recorded_eval"]
        print(f"{name}: {meta['train_seconds']} s, weights sha256 {meta['weights_sha256']}, "
              f"greedy accuracy {recorded['accuracy']:.3f} (recorded with the weights)")
