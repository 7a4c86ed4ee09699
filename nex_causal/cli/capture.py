"""``capture``: sample N responses per prompt while recording sparse MLP activations."""

from __future__ import annotations

import argparse

from nex_causal.capture import CaptureConfig
from nex_causal.settings import add_options, from_mapping, given_options


def add(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("capture", help="sample N responses per prompt, recording sparse MLP activations",
                       description="Sample N responses per prompt through the TransformerBridge and "
                       "record sparse MLP activations into a SparseCache (resumable).")
    add_options(p, CaptureConfig, required=("model", "tasks"))
    p.add_argument("--out", required=True, help="cache directory to write")
    p.set_defaults(handler=run)


def run(args: argparse.Namespace) -> None:
    from nex_causal.capture import capture

    cache = capture(from_mapping(CaptureConfig, given_options(args, CaptureConfig)), args.out)
    table = cache.responses
    print(f"{args.out}: {cache.n_responses} responses, {cache.n_rows} rows, "
          f"{int(table['n_tokens'].sum())} generated tokens, accuracy {table['correct'].mean():.3f}")
