"""``zoo build|list|train|units``: the embedded model organism, its merge family, and its planted units."""

from __future__ import annotations

import argparse
from pathlib import Path

from nex_causal.zoo.recipe import DEFAULT_ORGANISM, RECIPES


def add(sub: argparse._SubParsersAction) -> None:
    zoo = sub.add_parser("zoo", help="build or list an embedded model organism and its merge family",
                         description="The model organisms: small Qwen3 models trained here on modular "
                         "search problems (trek, the default; seek, the small one), two experts each, and "
                         "a mergekit merge family.")
    verbs = zoo.add_subparsers(dest="zoo_command", required=True, metavar="{build,list,train,units}")
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
    train_cmd.add_argument("--only", default=None, help="comma-separated models to train (their parents must be in "
                           "--out already, as this recipe makes them); the others are left as they are")
    for p in (build_cmd, list_cmd, train_cmd):
        p.add_argument("--organism", choices=list(RECIPES), default=DEFAULT_ORGANISM,
                       help=f"which organism (default {DEFAULT_ORGANISM}; test: a seconds-long toy recipe)")
    for p in (build_cmd, train_cmd):
        p.add_argument("--seed", type=int, default=0, help="training and merge seed (default 0)")
        p.add_argument("--quiet", action="store_true", help="no progress bars")
    build_cmd.add_argument("--retrain", action="store_true", help="train base and experts from scratch "
                           "and check them against the committed weights")

    units_cmd = verbs.add_parser("units", help="write the planted units of an organism's strategy families",
                                 description="The units each strategy family was routed to in training "
                                 "(zoo.route), as a neuron-set CSV (layer, unit) that transfer and ablate "
                                 "take with --sets: the ground truth of the positive control.")
    units_cmd.add_argument("--organism", choices=[n for n, r in RECIPES.items() if r.route is not None],
                           default="scout", help="an organism with a planted route (default scout)")
    units_cmd.add_argument("--families", required=True,
                           help="comma-separated families, e.g. add,mul,sub (the real ones) or dbl,sqr (decoys)")
    units_cmd.add_argument("--out", required=True, help="the CSV to write")
    units_cmd.set_defaults(handler=do_units)
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

    from nex_causal.errors import NexError
    from nex_causal.zoo.build import recipe_for, record_accuracy, train_models

    recipe = recipe_for(args.organism, args.seed)
    only = None if args.only is None else [n.strip() for n in args.only.split(",") if n.strip()]
    if only is not None and (unknown := [n for n in only if n not in recipe.trained]):
        raise NexError(f"{args.organism} trains no model {unknown[0]!r}: use {', '.join(recipe.trained)}")
    for name in only if only is not None else recipe.trained:
        shutil.rmtree(Path(args.out) / name, ignore_errors=True)
    metas = train_models(recipe, args.out, progress=not args.quiet, only=only)
    for name, meta in metas.items():
        if only is not None and name not in only:
            continue
        recorded = record_accuracy(Path(args.out) / name, recipe)["recorded_eval"]
        print(f"{name}: {meta['train_seconds']} s, weights sha256 {meta['weights_sha256']}, "
              f"greedy accuracy {recorded['accuracy']:.3f} (recorded with the weights)")


def do_units(args: argparse.Namespace) -> None:
    import numpy as np

    from nex_causal.errors import NexError
    from nex_causal.intervene.neuron_sets import NeuronSet
    from nex_causal.zoo.scout import FAMILIES

    recipe = RECIPES[args.organism]
    families = [f.strip() for f in args.families.split(",") if f.strip()]
    if unknown := [f for f in families if f not in FAMILIES]:
        raise NexError(f"unknown family {unknown[0]!r}: use {', '.join(FAMILIES)}")
    keys = np.concatenate([recipe.route.units(f, recipe.shape.layers) for f in families])
    NeuronSet("-".join(families), keys).save(args.out)
    print(f"wrote {len(keys)} planted units of {', '.join(families)} to {args.out}")
