"""``select``: Best-of-N selection, every selector's accuracy on one or more caches."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

from nex_causal.cli.options import add_verify
from nex_causal.nex.config import NexConfig
from nex_causal.selectors.config import SelectionConfig
from nex_causal.settings import add_options, from_mapping, given_options


def add(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("select", help="Best-of-N selection: every selector's accuracy on one or more caches",
                       description="Pick one of the N responses per prompt with each label-free selector "
                       "(NEX, NAD, output-based, majority vote) and report its accuracy against random, "
                       "Avg@N and oracle, with bootstrap intervals over prompts. NEX runs with the NEX options "
                       "given here, as `nex run` does.")
    p.add_argument("--cache-dir", nargs="+", required=True, help="one or more capture cache directories")
    add_options(p, SelectionConfig)
    add_options(p, NexConfig)
    add_weights_options(p)
    add_verify(p)
    p.set_defaults(handler=do_select)


def add_weights_options(p: argparse.ArgumentParser) -> None:
    """``--out`` and ``--weights``, shared by ``select`` and ``rank``."""
    p.add_argument("--out", required=True, help="directory for the result tables (parquet + csv)")
    p.add_argument("--weights", help="NEX weights learned elsewhere: a .npz from `nex train` or a cache "
                   "directory to learn them on (select: the nex-cross row; rank: replaces calibration)")


def weights_of(args: argparse.Namespace, config: NexConfig, caches: Sequence[str | Path]):
    """The weights ``--weights`` names (a .npz, or a cache to learn them on with ``config``), or None; refused in
    one line when they were learned on another model than one of ``caches`` (``nex.weights.check_learned_on``)."""
    from nex_causal.cache import SparseCache
    from nex_causal.nex import learn_weights, load_weights
    from nex_causal.nex.weights import check_learned_on, identity_of, load_identity

    if args.weights is None:
        return None
    if Path(args.weights).is_dir():
        source = SparseCache.open(args.weights)
        weights, identity = learn_weights(source, config), identity_of(source.capture_info)
    else:
        weights, identity = load_weights(args.weights), load_identity(args.weights)
    notes = []
    for cache in caches:  # only the capture record is read here: the caches are verified where they are scored
        target = identity_of(SparseCache.open(cache, verify="off").capture_info)
        note = check_learned_on(identity, target, weights=f"weights {args.weights}", target_name=f"the cache {cache}")
        if note and note not in notes:
            notes.append(note)
            print(f"warning: {note}", file=sys.stderr)
    return weights


def provenance(args: argparse.Namespace) -> dict:
    return {k: v for k, v in vars(args).items() if k != "handler"}


def print_table(table, skipped_from: str) -> None:
    import pandas as pd

    with pd.option_context("display.width", 200, "display.max_colwidth", 60):
        print(table.drop(columns=["status"]).to_string(index=False, float_format=lambda x: f"{x:.3f}"))
    for _, row in table[table.status != "ok"].iterrows():
        print(f"could not run {row[skipped_from]}: {row.status.removeprefix('skipped: ')}")


def do_select(args: argparse.Namespace) -> None:
    from nex_causal.io import write_table
    from nex_causal.selectors import selection_table

    config = from_mapping(SelectionConfig, given_options(args, SelectionConfig))
    nex = from_mapping(NexConfig, given_options(args, NexConfig))
    table = selection_table(args.cache_dir, config, weights=weights_of(args, nex, args.cache_dir), nex=nex,
                            progress=True)
    write_table(table, Path(args.out) / "selection", config=provenance(args))
    print_table(table, "selector")
    print(f"-> {Path(args.out) / 'selection'}.{{parquet,csv}}")
