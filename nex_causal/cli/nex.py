"""``nex train|score|run``, ``inspect`` and ``annotate``: NEX on a cache (NEX_METHOD 2-6) as the reference CLI runs
it, what NEX can read in a cache, and human E/X labels that validate its phases."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from nex_causal.cli.options import add_verify
from nex_causal.errors import NexError
from nex_causal.nex.config import NexConfig
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
        p.add_argument("--workers", type=int, default=None, help="worker processes (default: every core)")
        add_verify(p)
    for p in (train, run):
        add_options(p, NexConfig)
        p.add_argument("--max-responses", type=int, default=0,
                       help="learn from the first N responses only (default 0: all)")
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
    add_inspect(sub)
    add_annotate(sub)


def _learned(args: argparse.Namespace):
    """Weights learned on the cache, whose rows pass their full check in the pass that learns (``in_pass``)."""
    from nex_causal.cache import SparseCache
    from nex_causal.nex import learn
    from nex_causal.nex.profile import degeneracy_warning, profile_of

    cache = SparseCache.open(args.cache_dir, in_pass=True)
    config = from_mapping(NexConfig, given_options(args, NexConfig))
    cal = learn(cache, config, max_responses=args.max_responses, workers=args.workers)
    cache.settle("rows")
    print(f"{args.cache_dir}: learned weights on {cal.n_responses} of {cache.n_responses} responses "
          f"(rho {config.rho}, min_run {config.min_run}): {int((cal.weights > 0).sum())} effective and "
          f"{int((cal.weights < 0).sum())} redundant neurons")
    if cal.n_responses and (warning := degeneracy_warning(profile_of(cache, cal))):
        print(f"warning: {warning}", file=sys.stderr)
    return cache, config, cal


def _scored(args: argparse.Namespace, cache, weights, weights_out: Path | None = None,
            identity: dict | None = None, **fields) -> None:
    """Score the cache (its base view checked in that pass), then write the weights (to ``weights_out``, with
    ``identity``) and scores."""
    from nex_causal.nex import log_gap, save_weights, score_responses, write_scores

    gmf = score_responses(cache, weights, workers=args.workers)
    cache.settle()  # nothing is written from a cache that fails its check
    if weights_out is not None:
        save_weights(weights_out, weights, identity)
    s = write_scores(args.output_dir, gmf, log_gap_output=args.log_gap_output, **fields)
    nex = s["gmf_mean"] if args.log_gap_output else s["nex_score"]
    print(f"{args.cache_dir}: scored {s['n_scored_responses']} of {s['n_responses']} responses; "
          f"NEX = {nex:.6f} (log-gap {log_gap(nex):.4f}) -> {args.output_dir}")
    if s["n_scored_responses"] == 0:
        print("warning: no response has usable mass: NEX is undefined on this cache", file=sys.stderr)
    elif not (gmf[gmf == gmf] > 0).any():
        print("warning: every scored response has GMF 0 (no effective neuron carries mass): a degenerate "
              "result, not a measurement", file=sys.stderr)


def do_train(args: argparse.Namespace) -> None:
    from nex_causal.nex import save_weights
    from nex_causal.nex.weights import learned_identity

    cache, config, cal = _learned(args)
    cache.settle()  # nothing is written from a cache that fails its check
    save_weights(args.weights_out, cal.weights, learned_identity(cache, config))
    print(f"weights -> {args.weights_out}")


def do_score(args: argparse.Namespace) -> None:
    from nex_causal.cache import SparseCache
    from nex_causal.nex import load_weights
    from nex_causal.nex.weights import check_learned_on, identity_of, load_identity

    cache = SparseCache.open(args.cache_dir, in_pass=True)
    weights = load_weights(args.weights)
    note = check_learned_on(load_identity(args.weights), identity_of(cache.capture_info),
                            weights=f"weights {args.weights}", target_name=f"the cache {args.cache_dir}")
    if note:
        print(f"warning: {note}", file=sys.stderr)
    _scored(args, cache, weights, weights_file=str(args.weights))


def do_run(args: argparse.Namespace) -> None:
    from nex_causal.nex.weights import learned_identity

    cache, config, cal = _learned(args)
    _scored(args, cache, cal.weights, Path(args.output_dir) / "weights.npz", learned_identity(cache, config),
            rho=config.rho, min_run=config.min_run, n_calibration_responses=cal.n_responses)


# --- inspect ---------------------------------------------------------------------------------

def add_inspect(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("inspect", help="the cache's profile: what decides whether NEX can credit anything",
                       description="Per response and as medians (with quartiles): rows, tokens, keys per row, "
                       "distinct neurons and their share of the model, explore share, cycles, crediting "
                       "cycles, novelty decay, and where NEX's credit comes from; beside the reference "
                       "example's, with what makes NEX degenerate.")
    p.add_argument("cache_dir", nargs="+", metavar="CACHE", help="one or more cache directories")
    p.add_argument("--neurons", type=int, help="the model's MLP neurons (n_layers * d_mlp), for a cache "
                   "without capture.json")
    p.add_argument("--json", action="store_true", help="print one JSON object per cache (the medians)")
    add_options(p, NexConfig)
    add_verify(p)
    p.set_defaults(handler=do_inspect)


def do_inspect(args: argparse.Namespace) -> None:
    import numpy as np
    import pandas as pd

    from nex_causal.cache import SparseCache
    from nex_causal.nex import learn
    from nex_causal.nex.diagnostics import credit_frame, diagnose_credit
    from nex_causal.nex.profile import diagnose, profile_frame, profile_of, reference_cache
    from nex_causal.run.doctor import shared_dir

    config = from_mapping(NexConfig, given_options(args, NexConfig))
    caches = {path: (SparseCache.open(path, in_pass=True), args.neurons) for path in args.cache_dir}
    if not args.json and (reference := reference_cache(shared_dir())) is not None:
        caches["reference example (Qwen3-4B)"] = (reference, 36 * 9728)
    profiles, credits = {}, {}
    for label, (cache, n_neurons) in caches.items():
        cal = learn(cache, config, progress=False)
        profiles[label] = profile_of(cache, cal, n_neurons)
        credits[label] = diagnose_credit(cache, cal.weights, config)
        cache.settle()  # the rows were checked as learning read them; nothing is printed from a cache that fails
    if args.json:
        for label, p in profiles.items():
            summary = {**p.summary(), **credits[label].summary()}  # an unknown value (NaN) is JSON's null
            print(json.dumps({k: None if isinstance(v, float) and np.isnan(v) else v for k, v in summary.items()}))
        return
    with pd.option_context("display.width", 200, "display.max_columns", 12, "display.max_colwidth", 40):
        print(profile_frame(profiles).to_string())
        print("\nwhere the credit comes from (medians [quartiles]; ends_in_explore and tied_at_one as share and count):")
        print(credit_frame(credits).to_string())
    for path in args.cache_dir:
        problems = diagnose(profiles[path])
        print(f"{path}: " + ("NEX can read this cache" if not problems else "NEX is degenerate here: "
                            + "; ".join(problems)))


# --- annotate --------------------------------------------------------------------------------

def add_annotate(sub: argparse._SubParsersAction) -> None:
    annotate = sub.add_parser("annotate", help="human E/X labels for validating the HMM phases",
                              description="Export windows of chosen responses for a person to label E "
                              "(explore) or X (exploit), as CSV and a self-contained HTML page, and score "
                              "the filled labels against the HMM phases.")
    verbs = annotate.add_subparsers(dest="annotate_command", required=True, metavar="{export,score}")
    export = verbs.add_parser("export", help="write OUT.csv and OUT.html with the windows to label")
    export.add_argument("--cache-dir", required=True, help="SparseCache directory written by `capture`")
    export.add_argument("--responses", required=True, help="comma-separated response indices, e.g. 0,3,5")
    export.add_argument("--out", required=True, help="output stem: writes OUT.csv and OUT.html")
    export.add_argument("--tokenizer", help="model name or directory whose tokenizer splits the text "
                        "(default: the model in CACHE_DIR/capture.json)")
    export.set_defaults(handler=do_export)
    score = verbs.add_parser("score", help="agreement of filled labels with the HMM phases")
    score.add_argument("--cache-dir", required=True, help="the cache the windows were exported from")
    score.add_argument("--labels", required=True, help="the filled CSV")
    add_options(score, NexConfig)
    score.add_argument("--out", help="also write the per-window comparison table here (parquet + CSV)")
    score.set_defaults(handler=do_score_labels)


def do_export(args: argparse.Namespace) -> None:
    from nex_causal.capture.annotation import export_annotation

    try:
        responses = [int(r) for r in args.responses.split(",") if r.strip()]
    except ValueError:
        raise NexError(f"--responses {args.responses!r} is not a comma-separated list of integers, "
                       "e.g. 0,3,5") from None
    for path in export_annotation(args.cache_dir, responses, args.out, tokenizer=args.tokenizer):
        print(path)


def do_score_labels(args: argparse.Namespace) -> None:
    import dataclasses

    from nex_causal.io import write_table
    from nex_causal.nex.annotate import score_annotation

    config = from_mapping(NexConfig, given_options(args, NexConfig))
    result, table = score_annotation(args.cache_dir, args.labels, config)
    print(f"{result.n} windows ({len(table) - result.n} without an HMM phase): Cohen's kappa "
          f"{result.kappa:.3f}, F1 explore {result.f1_explore:.3f}, F1 exploit {result.f1_exploit:.3f}, "
          f"agreement {result.accuracy:.3f}")
    if args.out:
        write_table(table, args.out, config={"cache_dir": args.cache_dir, "labels": args.labels,
                                             **dataclasses.asdict(config)})
