"""Options several command groups share."""

from __future__ import annotations

import argparse

from nex_causal.cache.integrity import ENV, LEVELS


def add_verify(p: argparse.ArgumentParser) -> None:
    """``--verify``: how much of each cache's integrity record a command checks when it opens the cache."""
    p.add_argument("--verify", choices=LEVELS, help="check caches against their integrity record: full (every "
                   "byte's CRC-32), fast (sizes and each file's ends, for caches of tens of GB) or off (sizes "
                   f"only); default ${ENV} or full")
