"""``nex train|score|run``: learn neuron weights and score a cache (NEX_METHOD 2-6), as the reference CLI does."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from nex_causal.nex import NexConfig
from nex_causal.settings import add_options, from_mapping, given_options


def add(sub: argparse._SubParsersAction) -> None:
    nex = sub.add_parser("nex", help="learn NEX neuron weights and score a cache",
                         description="Learn NEX neuron weights from an unlabeled cache and score "
                         "responses by Good-Mass Fraction, as the authors' reference release does.")
    verbs = nex.add_subparsers(dest="nex_command", required=True, metavar="{train,score,run}")
    train = verbs.add_parser("train", help="learn weights from a cache")
    score = verbs.add_parser("score", help="score a cache with given weights")
    run = verbs.add_parser("run", help="learn weights from a cache and score that same cache")
    for p in (train, score, run):
        p.add_argument("--cache-dir", required=True, help="SparseCache directory")
    for p in (train, run):
        add_options(p, NexConfig)
        p.add_argument("--max-responses", type=int, default=0,
                       help="learn from the first N responses only (default 0: all)")
        p.add_argument("--workers", type=int, default=None, help="worker processes (default: every core)")
    train.add_argument("--weights-out", required=True, help="weights .npz to write")
    score.add_argument("--weights", required=True, help="weights .npz (from `nex train` or the reference)")
    for p in (score, run):
        p.add_argument("--output-dir", required=True,
                       help="directory for response_scores.npy and summary.json (and weights.npz for run)")
        p.add_argument("--log-gap-output", action="store_true",
                       help="write -log10(1 - NEX) as nex_score, as the reference does (the mean GMF goes to gmf_mean)")
    train.set_defaults(handler=do_train)
    score.set_defaults(handler=do_score)
    run.set_defaults(handler=do_run)


def _learned(args: argparse.Namespace):
    from nex_causal.cache import SparseCache
    from nex_causal.nex import learn
    from nex_causal.profile import degeneracy_warning, profile_of

    cache = SparseCache.open(args.cache_dir)
    config = from_mapping(NexConfig, given_options(args, NexConfig))
    cal = learn(cache, config, max_responses=args.max_responses, workers=args.workers, keep_traces=True)
    print(f"{args.cache_dir}: learned weights on {cal.n_responses} of {cache.n_responses} responses "
          f"(rho {config.rho}, min_run {config.min_run}): {int((cal.weights > 0).sum())} effective and "
          f"{int((cal.weights < 0).sum())} redundant neurons")
    if cal.n_responses and (warning := degeneracy_warning(profile_of(cache, cal.traces))):
        print(f"warning: {warning}", file=sys.stderr)
    return cache, config, cal


def _scored(args: argparse.Namespace, cache, weights, **fields) -> None:
    from nex_causal.nex import log_gap, score_responses, write_scores

    s = write_scores(args.output_dir, score_responses(cache, weights), log_gap_output=args.log_gap_output, **fields)
    nex = s["gmf_mean"] if args.log_gap_output else s["nex_score"]
    print(f"{args.cache_dir}: scored {s['n_scored_responses']} of {s['n_responses']} responses; "
          f"NEX = {nex:.6f} (log-gap {log_gap(nex):.4f}) -> {args.output_dir}")


def do_train(args: argparse.Namespace) -> None:
    from nex_causal.nex import save_weights

    _, _, cal = _learned(args)
    save_weights(args.weights_out, cal.weights)
    print(f"weights -> {args.weights_out}")


def do_score(args: argparse.Namespace) -> None:
    from nex_causal.cache import SparseCache
    from nex_causal.nex import load_weights

    cache = SparseCache.open(args.cache_dir)
    _scored(args, cache, load_weights(args.weights), weights_file=str(args.weights))


def do_run(args: argparse.Namespace) -> None:
    from nex_causal.nex import save_weights

    cache, config, cal = _learned(args)
    save_weights(Path(args.output_dir) / "weights.npz", cal.weights)
    _scored(args, cache, cal.weights, rho=config.rho, min_run=config.min_run,
            n_calibration_responses=cal.n_responses)
