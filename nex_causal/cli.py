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


def _add_zoo(sub: argparse._SubParsersAction) -> None:
    """``zoo build|list``: the embedded model organism and its merge family."""


def _add_capture(sub: argparse._SubParsersAction) -> None:
    """``capture``: sample responses while recording sparse MLP activations."""


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
