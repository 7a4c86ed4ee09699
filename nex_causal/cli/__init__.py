"""The ``nex-causal`` command: thin argument parsing over the library, one module per package it drives.

    zoo        zoo build | list | train                      (nex_causal.zoo)
    capture    sample, capture, cache rewindow               (nex_causal.capture)
    nex        nex train | score | run, inspect, annotate    (nex_causal.nex)
    selectors  select                                        (nex_causal.selectors)
    ranking    rank, sweep                                   (nex_causal.ranking)
    intervene  transfer, ablate                              (nex_causal.intervene)
    run        run, demo, figures, doctor, config            (nex_causal.run)

Each module has ``add(subparsers)``, which declares its commands (the options of a configurable
concept come from its dataclass, ``nex_causal.settings.add_options``) and points each at a
module-level handler. Building the parser imports only the light config modules; a handler
imports what its command uses, so ``nex-causal --help`` answers at once. Errors the user can
fix (``NexError``, and the operating system's: a full disk, a read-only directory) print one
line and exit with status 2; Ctrl-C prints one line saying the same command resumes, and exits
with status 130; a run whose results are degenerate exits with status 3;
warnings print as ``warning: ...`` lines.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import sys
import warnings
from collections.abc import Sequence

from nex_causal import __version__
from nex_causal.cli import capture, intervene, nex, ranking, run, selectors, zoo
from nex_causal.errors import NexError

__all__ = ["build_parser", "main"]
GROUPS = (run, zoo, capture, nex, selectors, ranking, intervene)
INTERRUPTED = 130  # exit status after Ctrl-C, as a shell reports a process ended by SIGINT


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="nex-causal", description="Causal interventions on LLM MLP neurons, "
                                     "guided by NEX explore-exploit scoring.")
    parser.add_argument("--version", action="version", version=f"nex-causal {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for group in GROUPS:
        group.add(sub)
    return parser


def _warning_line(message, category, filename, lineno, file=None, line=None) -> None:
    print(f"warning: {message}", file=sys.stderr if file is None else file)


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    with _verify_level(getattr(args, "verify", None)):
        return _handle(args)


@contextlib.contextmanager
def _verify_level(level: str | None):
    """``--verify`` for every cache this command (and its workers) opens, and no longer: a later command in the same
    process (a notebook, a test) gets its own level."""
    from nex_causal.cache.integrity import ENV

    before = os.environ.get(ENV)
    if level:
        os.environ[ENV] = level
    try:
        yield
    finally:
        if before is None:
            os.environ.pop(ENV, None)
        else:
            os.environ[ENV] = before


def _handle(args: argparse.Namespace) -> int:
    warnings.showwarning = _warning_line
    try:
        return int(args.handler(args) or 0)
    except NexError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:  # Ctrl-C: every finished part is on disk, written atomically
        print("interrupted: what finished is kept; run the same command again to resume", file=sys.stderr)
        return INTERRUPTED
    except OSError as err:  # a full disk, a read-only or missing directory: the system's one line
        where = f" {err.filename}" if err.filename else ""
        print(f"error: cannot read or write{where}: {err.strerror or err}; free space, fix the permissions or "
              "choose another directory", file=sys.stderr)
        return 2
