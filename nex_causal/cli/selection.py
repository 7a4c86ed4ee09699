"""``select`` and ``rank``: Best-of-N selection and model ranking against every baseline."""

from __future__ import annotations

import argparse
from pathlib import Path

from nex_causal.ranking import RankingConfig
from nex_causal.selectors import SelectionConfig
from nex_causal.settings import add_options, from_mapping, given_options


def add(sub: argparse._SubParsersAction) -> None:
    select = sub.add_parser("select", help="Best-of-N selection: every selector's accuracy on one or more caches",
                            description="Pick one of the N responses per prompt with each label-free selector "
                            "(NEX, NAD, output-based, majority vote) and report its accuracy against random, "
                            "Avg@N and oracle, with bootstrap intervals over prompts.")
    select.add_argument("--cache-dir", nargs="+", required=True, help="one or more capture cache directories")
    add_options(select, SelectionConfig)
    rank = sub.add_parser("rank", help="model ranking: label-free scores of a merge family against accuracy",
                          description="Score every variant of a family on its own unlabeled cache (NEX, "
                          "entropy, self-certainty, MUI, activated neurons, perplexity) and report Spearman, "
                          "Kendall, top-1 hit and regret against accuracy, plus the inverted-U analysis.")
    rank.add_argument("--family", required=True, help="the family directory (or its family.csv)")
    rank.add_argument("--caches", nargs="+", required=True,
                      help="one or more directories holding a cache per variant, as <dir>/<variant name>/")
    add_options(rank, RankingConfig)
    for p in (select, rank):
        p.add_argument("--out", required=True, help="directory for the result tables (parquet + csv)")
        p.add_argument("--weights", help="NEX weights learned elsewhere: a .npz from `nex train` or a cache "
                       "directory to learn them on (select: the nex-cross row; rank: replaces self-calibration)")
    select.set_defaults(handler=do_select)
    rank.set_defaults(handler=do_rank)


def _weights(args: argparse.Namespace):
    from nex_causal.cache import SparseCache
    from nex_causal.nex import learn_weights, load_weights

    if args.weights is None:
        return None
    if Path(args.weights).is_dir():
        return learn_weights(SparseCache.open(args.weights))
    return load_weights(args.weights)


def _provenance(args: argparse.Namespace) -> dict:
    return {k: v for k, v in vars(args).items() if k != "handler"}


def _print(table, skipped_from: str) -> None:
    import pandas as pd

    with pd.option_context("display.width", 200, "display.max_colwidth", 60):
        print(table.drop(columns=["status"]).to_string(index=False, float_format=lambda x: f"{x:.3f}"))
    for _, row in table[table.status != "ok"].iterrows():
        print(f"could not run {row[skipped_from]}: {row.status.removeprefix('skipped: ')}")


def do_select(args: argparse.Namespace) -> None:
    from nex_causal.io import write_table
    from nex_causal.selectors import selection_table

    config = from_mapping(SelectionConfig, given_options(args, SelectionConfig))
    table = selection_table(args.cache_dir, config, weights=_weights(args), progress=True)
    write_table(table, Path(args.out) / "selection", config=_provenance(args))
    _print(table, "selector")
    print(f"-> {Path(args.out) / 'selection'}.{{parquet,csv}}")


def do_rank(args: argparse.Namespace) -> None:
    from nex_causal.io import write_table
    from nex_causal.ranking import ranking_tables
    from nex_causal.variants import load_family

    config = from_mapping(RankingConfig, given_options(args, RankingConfig))
    tables, notes = ranking_tables(load_family(args.family), args.caches, config, weights=_weights(args),
                                   progress=True)
    for note in notes:
        print(f"note: {note}")
    for key, table in tables.items():
        write_table(table, Path(args.out) / key, config=_provenance(args))
    _print(tables["ranking"], "score")
    print(tables["inverted_u"].to_string(index=False, float_format=lambda x: f"{x:.3g}"))
    print(f"-> {args.out}/{{ranking,ranking_scores,inverted_u,inverted_u_bins}}.{{parquet,csv}}")
