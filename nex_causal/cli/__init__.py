"""The ``nex-causal`` command: thin argument parsing over the library, one module per command group.

Each module has ``add(subparsers)``, which declares its commands (options of a configurable
concept come from its dataclass, ``nex_causal.settings.add_options``) and handlers that call
library code. Errors the user can fix (``NexError``) print one line and exit with status 2;
a run whose results are degenerate exits with status 3.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from nex_causal import __version__
from nex_causal.cli import capture, doctor, inspect, intervene, nex, selection, workflow, zoo
from nex_causal.cli.workflow import DEGENERATE
from nex_causal.errors import NexError

__all__ = ["DEGENERATE", "build_parser", "main"]
GROUPS = (doctor, nex, zoo, capture, inspect, selection, intervene, workflow)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="nex-causal", description="Causal interventions on LLM MLP neurons, "
                                     "guided by NEX explore-exploit scoring.")
    parser.add_argument("--version", action="version", version=f"nex-causal {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for group in GROUPS:
        group.add(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return int(args.handler(args) or 0)
    except NexError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2

