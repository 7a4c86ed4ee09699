"""``inspect``, ``cache rewindow`` and ``sweep``: can NEX see anything in a cache, caches of other settings
from a token-level one, and which settings let NEX rank a family."""

from __future__ import annotations

import argparse
import json

import numpy as np


def add(sub: argparse._SubParsersAction) -> None:
    add_inspect(sub)
    add_sweep(sub)


def add_inspect(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("inspect", help="the cache's profile: what decides whether NEX can credit anything",
                       description="Per response and as medians (with quartiles): rows, tokens, keys per row, "
                       "distinct neurons and their share of the model, explore share, cycles, crediting "
                       "cycles, novelty decay; beside the reference example's, with what makes NEX degenerate.")
    p.add_argument("cache_dir", nargs="+", metavar="CACHE", help="one or more cache directories")
    p.add_argument("--neurons", type=int, help="the model's MLP neurons (n_layers * d_mlp), for a cache "
                   "without capture.json")
    p.add_argument("--json", action="store_true", help="print one JSON object per cache (the medians)")
    p.set_defaults(handler=do_inspect)

    cache = sub.add_parser("cache", help="derive caches of other settings from a token-level one")
    verbs = cache.add_subparsers(dest="cache_command", required=True, metavar="{rewindow}")
    rw = verbs.add_parser("rewindow", help="a coarser window and a stricter sparsifier, without the model",
                          description="From a token-level cache (captured with --window 1), write the cache a "
                          "capture with --window W and a stricter --sparsifier would have written.")
    rw.add_argument("src", metavar="SRC", help="token-level cache directory")
    rw.add_argument("--window", type=int, required=True, help="generated tokens per row")
    rw.add_argument("--sparsifier", help="a selection at most as loose as the captured one (default: it)")
    rw.add_argument("--out", required=True, help="cache directory to write")
    rw.set_defaults(handler=do_rewindow)


def do_inspect(args: argparse.Namespace) -> None:
    import pandas as pd

    from nex_causal.cache import SparseCache
    from nex_causal.doctor import shared_dir
    from nex_causal.profile import diagnose, profile, profile_frame, reference_profile

    profiles = {path: profile(SparseCache.open(path), n_neurons=args.neurons, progress=False)
                for path in args.cache_dir}
    if args.json:
        for p in profiles.values():
            summary = p.summary()  # an unknown value (NaN) is JSON's null
            print(json.dumps({k: None if isinstance(v, float) and np.isnan(v) else v for k, v in summary.items()}))
        return
    shown = dict(profiles)
    if (reference := reference_profile(shared_dir())) is not None:
        shown["reference example (Qwen3-4B)"] = reference
    with pd.option_context("display.width", 200, "display.max_columns", 12, "display.max_colwidth", 40):
        print(profile_frame(shown).to_string())
    for path, p in profiles.items():
        problems = diagnose(p)
        print(f"{path}: " + ("NEX can read this cache" if not problems else "NEX is degenerate here: "
                            + "; ".join(problems)))


def do_rewindow(args: argparse.Namespace) -> None:
    from nex_causal.rewindow import rewindow

    cache = rewindow(args.src, args.out, window=args.window, sparsifier=args.sparsifier, progress=True)
    print(f"{args.out}: {cache.n_responses} responses, {cache.n_rows} rows of {args.window} tokens")


def add_sweep(sub: argparse._SubParsersAction) -> None:
    from nex_causal.settings import add_options
    from nex_causal.sweep import SweepConfig

    p = sub.add_parser("sweep", help="which capture and HMM settings let NEX rank a family: chosen on one half "
                       "of the prompts, reported on the other",
                       description="From token-level caches (one per variant, captured with --window 1), derive "
                       "every window x sparsifier, run NEX with every rho x min-run, and report ranking agreement "
                       "and nex-self Best-of-N with bootstrap intervals and the profile; the setting is chosen on "
                       "split 1 of the prompts and reported on split 2 beside the pre-declared default.")
    p.add_argument("--family", required=True, help="the family directory (or its family.csv)")
    p.add_argument("--caches", required=True, help="directory of token-level caches, as <dir>/<variant>/")
    add_options(p, SweepConfig)
    p.add_argument("--out", required=True, help="directory for the tables, the figure and the derived caches")
    p.set_defaults(handler=do_sweep)


def do_sweep(args: argparse.Namespace) -> None:
    from pathlib import Path

    import pandas as pd

    from nex_causal.figures import draw_to
    from nex_causal.io import write_table
    from nex_causal.settings import from_mapping, given_options
    from nex_causal.sweep import SweepConfig, run_sweep
    from nex_causal.variants import load_family

    config = from_mapping(SweepConfig, given_options(args, SweepConfig))
    out = Path(args.out)
    table, choice = run_sweep(load_family(args.family), args.caches, config, out / "caches")
    provenance = {k: v for k, v in vars(args).items() if k != "handler"}
    write_table(table, out / "sweep", config=provenance)
    write_table(choice, out / "sweep_choice", config=provenance)
    for path in draw_to("sweep", {"sweep": table, "sweep_choice": choice}, out, config=provenance):
        print(path)
    columns = ["role", "window", "sparsifier", "rho", "min_run", "spearman", "spearman_low", "spearman_high",
               "best_of_n", "best_of_n_low", "best_of_n_high", "n_settings"]
    with pd.option_context("display.width", 200):
        print(choice[columns].to_string(index=False, float_format=lambda x: f"{x:.3f}"))
