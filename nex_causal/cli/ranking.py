"""``rank`` and ``sweep``: model ranking of a family against every baseline, and which capture and NEX settings
let NEX rank it."""

from __future__ import annotations

import argparse
from pathlib import Path

from nex_causal.cli.options import add_verify
from nex_causal.cli.selectors import (
    add_weights_options,
    print_table,
    provenance,
    weights_of,
)
from nex_causal.nex.config import NexConfig
from nex_causal.ranking.config import RankingConfig, SweepConfig
from nex_causal.settings import add_options, from_mapping, given_options


def add(sub: argparse._SubParsersAction) -> None:
    rank = sub.add_parser("rank", help="model ranking: label-free scores of a merge family against accuracy",
                          description="Score every variant of a family on its own unlabeled cache (NEX, "
                          "entropy, self-certainty, MUI, activated neurons, perplexity) and report Spearman, "
                          "Kendall, top-1 hit and regret against accuracy, plus the inverted-U analysis. NEX runs "
                          "with the NEX options given here, as `nex run` does.")
    rank.add_argument("--family", required=True, help="the family directory (or its family.csv)")
    rank.add_argument("--caches", nargs="+", required=True,
                      help="one or more directories holding a cache per variant, as <dir>/<variant name>/")
    add_options(rank, RankingConfig)
    add_options(rank, NexConfig)
    add_weights_options(rank)
    add_verify(rank)
    rank.set_defaults(handler=do_rank)

    sweep = sub.add_parser("sweep", help="which capture and HMM settings let NEX rank a family: chosen on one half "
                           "of the prompts, reported on the other",
                           description="From token-level caches (one per variant, captured with --window 1), "
                           "derive every window x sparsifier, run NEX with every rho x min-run, and report ranking "
                           "agreement and nex-self Best-of-N with bootstrap intervals and the profile; the setting "
                           "is chosen on split 1 of the prompts and reported on split 2 beside the pre-declared "
                           "default.")
    sweep.add_argument("--family", required=True, help="the family directory (or its family.csv)")
    sweep.add_argument("--caches", required=True, help="directory of token-level caches, as <dir>/<variant>/")
    add_options(sweep, SweepConfig)
    sweep.add_argument("--out", required=True, help="directory for the tables, the figure and the derived caches")
    add_verify(sweep)
    sweep.set_defaults(handler=do_sweep)


def do_rank(args: argparse.Namespace) -> None:
    from nex_causal.io import write_table
    from nex_causal.models.variants import load_family
    from nex_causal.ranking.agreement import ranking_tables

    config = from_mapping(RankingConfig, given_options(args, RankingConfig))
    nex = from_mapping(NexConfig, given_options(args, NexConfig))
    family = load_family(args.family)
    caches = [Path(d) / name for d in args.caches for name in family["name"].astype(str) if (Path(d) / name).is_dir()]
    tables, notes = ranking_tables(family, args.caches, config, nex=nex, weights=weights_of(args, nex, caches),
                                   progress=True)
    for note in notes:
        print(f"note: {note}")
    for key, table in tables.items():
        write_table(table, Path(args.out) / key, config=provenance(args))
    print_table(tables["ranking"], "score")
    print(tables["inverted_u"].to_string(index=False, float_format=lambda x: f"{x:.3g}"))
    print(f"-> {args.out}/{{{','.join(tables)}}}.{{parquet,csv}}")


def do_sweep(args: argparse.Namespace) -> None:
    import pandas as pd

    from nex_causal.figures import draw_to
    from nex_causal.io import write_table
    from nex_causal.models.variants import load_family
    from nex_causal.ranking.sweep import run_sweep

    config = from_mapping(SweepConfig, given_options(args, SweepConfig))
    out = Path(args.out)
    table, choice = run_sweep(load_family(args.family), args.caches, config, out / "caches")
    write_table(table, out / "sweep", config=provenance(args))
    write_table(choice, out / "sweep_choice", config=provenance(args))
    for path in draw_to("sweep", {"sweep": table, "sweep_choice": choice}, out, config=provenance(args)):
        print(path)
    columns = ["role", "window", "sparsifier", "rho", "min_run", "spearman", "spearman_low", "spearman_high",
               "best_of_n", "best_of_n_low", "best_of_n_high", "n_settings"]
    with pd.option_context("display.width", 200):
        print(choice[columns].to_string(index=False, float_format=lambda x: f"{x:.3f}"))
