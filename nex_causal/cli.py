"""The ``nex-causal`` command: thin argument parsing over the library.

Each command group lives in its own ``_add_<group>`` function, which declares the
arguments and a handler that calls library code. Errors the user can fix (``NexError``)
print one line and exit with status 2.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from nex_causal import __version__
from nex_causal.errors import NexError


def _add_nex(sub: argparse._SubParsersAction) -> None:
    """``nex train|score|run``: learn neuron weights and score a cache (NEX_METHOD 2-6)."""
    nex = sub.add_parser("nex", help="learn NEX neuron weights and score a cache",
                         description="Learn NEX neuron weights from an unlabeled cache and score "
                         "responses by Good-Mass Fraction.")
    verbs = nex.add_subparsers(dest="nex_command", required=True, metavar="{train,score,run}")
    train = verbs.add_parser("train", help="learn weights from a cache")
    score = verbs.add_parser("score", help="score a cache with given weights")
    run = verbs.add_parser("run", help="learn weights from a cache and score that same cache")
    for p in (train, score, run):
        p.add_argument("--cache-dir", required=True, help="SparseCache directory")
    for p in (train, run):
        p.add_argument("--rho", type=float, default=0.95, help="sticky HMM self-transition (default 0.95)")
        p.add_argument("--min-run", type=int, default=2, help="shortest E/X run in rows (default 2)")
        p.add_argument("--max-responses", type=int, default=0,
                       help="learn from the first N responses only (default 0: all)")
    train.add_argument("--weights-out", required=True, help="weights .npz to write")
    score.add_argument("--weights", required=True, help="weights .npz (from `nex train` or the reference)")
    for p in (score, run):
        p.add_argument("--output-dir", required=True,
                       help="directory for response_scores.npy and summary.json (and weights.npz for run)")
        p.add_argument("--log-gap-output", action="store_true", help="also report -log10(1 - NEX)")

    def learned(args: argparse.Namespace):
        from nex_causal.cache import SparseCache
        from nex_causal.nex import learn

        cache = SparseCache.open(args.cache_dir)
        cal = learn(cache, args.rho, args.min_run, args.max_responses)
        print(f"{args.cache_dir}: learned weights on {cal.n_responses} of {cache.n_responses} responses "
              f"(rho {args.rho}, min_run {args.min_run}): {int((cal.weights > 0).sum())} effective and "
              f"{int((cal.weights < 0).sum())} redundant neurons")
        return cache, cal

    def scored(args: argparse.Namespace, cache, weights, **fields) -> None:
        from nex_causal.nex.score import score_cache, write_scores

        s = write_scores(args.output_dir, score_cache(cache, weights), log_gap_output=args.log_gap_output,
                         **fields)
        gap = f" (log-gap {s['log_gap']:.3f})" if args.log_gap_output else ""
        print(f"{args.cache_dir}: scored {s['n_scored_responses']} of {s['n_responses']} responses; "
              f"NEX = {s['nex_score']:.5f}{gap} -> {args.output_dir}")

    def do_train(args: argparse.Namespace) -> None:
        from nex_causal.nex import save_weights

        _, cal = learned(args)
        save_weights(args.weights_out, cal.weights)
        print(f"weights -> {args.weights_out}")

    def do_score(args: argparse.Namespace) -> None:
        from nex_causal.cache import SparseCache
        from nex_causal.nex import load_weights

        cache = SparseCache.open(args.cache_dir)
        scored(args, cache, load_weights(args.weights), weights_file=str(args.weights))

    def do_run(args: argparse.Namespace) -> None:
        from pathlib import Path

        from nex_causal.nex import save_weights

        cache, cal = learned(args)
        save_weights(Path(args.output_dir) / "weights.npz", cal.weights)
        scored(args, cache, cal.weights, rho=args.rho, min_run=args.min_run,
               n_calibration_responses=cal.n_responses)

    train.set_defaults(handler=do_train)
    score.set_defaults(handler=do_score)
    run.set_defaults(handler=do_run)


def _add_zoo(sub: argparse._SubParsersAction) -> None:
    """``zoo build|list``: the embedded model organism and its merge family."""


def _add_capture(sub: argparse._SubParsersAction) -> None:
    """``capture``: sample responses while recording sparse MLP activations."""
    p = sub.add_parser("capture", help="sample N responses per prompt, recording sparse MLP activations",
                       description="Sample N responses per prompt through the TransformerBridge and "
                       "record sparse MLP activations into a SparseCache (resumable).")
    p.add_argument("--model", required=True,
                   help="zoo variant name, smollm2-135m, a local HF directory, or a cached HF id")
    p.add_argument("--tasks", required=True,
                   help="task spec: organism:200, rg:<dataset>:100, or a .jsonl file")
    p.add_argument("--n-samples", type=int, default=4, help="responses per prompt (default 4)")
    p.add_argument("--out", required=True, help="cache directory to write")
    p.add_argument("--max-new-tokens", type=int, default=256)
    p.add_argument("--temperature", type=float, default=0.7)
    p.add_argument("--top-p", type=float, default=0.95)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--batch-size", type=int, default=16, help="sequences per forward pass")
    p.add_argument("--sparsifier", default="topk:500",
                   help="topk:K | layer-topk:K | threshold:T | mui:K (default topk:500)")
    p.add_argument("--window", type=int, default=32, help="generated tokens per cache row")
    p.add_argument("--chat", action="store_true", help="wrap prompts in the tokenizer's chat template")
    p.add_argument("--device", default="cpu", help="cpu or cuda")
    p.add_argument("--dtype", default="float32", help="float32 or bfloat16")

    def run(args: argparse.Namespace) -> None:
        from nex_causal.capture import CaptureConfig, capture

        config = CaptureConfig(
            model=args.model, tasks=args.tasks, n_samples=args.n_samples,
            max_new_tokens=args.max_new_tokens, temperature=args.temperature, top_p=args.top_p,
            seed=args.seed, batch_size=args.batch_size, sparsifier=args.sparsifier,
            window=args.window, chat=args.chat, device=args.device, dtype=args.dtype)
        cache = capture(config, args.out)
        table = cache.responses
        print(f"{args.out}: {cache.n_responses} responses, {cache.n_rows} rows, "
              f"{int(table['n_tokens'].sum())} generated tokens, "
              f"accuracy {table['correct'].mean():.3f}")

    p.set_defaults(handler=run)


def _add_selection(sub: argparse._SubParsersAction) -> None:
    """``select`` and ``rank``: Best-of-N selection and model ranking against baselines."""


def _add_intervene(sub: argparse._SubParsersAction) -> None:
    """``transfer`` and ``ablate``: the causal neuron experiments."""


def _add_workflow(sub: argparse._SubParsersAction) -> None:
    """``run``, ``figures``, ``demo``, ``annotate``: experiments end to end."""


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="nex-causal", description=__doc__.splitlines()[0])
    parser.add_argument("--version", action="version", version=f"nex-causal {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for add in (_add_nex, _add_zoo, _add_capture, _add_selection, _add_intervene, _add_workflow):
        add(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return int(args.handler(args) or 0)
    except NexError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
