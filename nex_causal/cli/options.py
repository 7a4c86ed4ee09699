"""Options several command groups share."""

from __future__ import annotations

import argparse

from nex_causal.cache.integrity import ENV, LEVELS


def add_verify(p: argparse.ArgumentParser) -> None:
    """``--verify``: how much of each cache's integrity record a command checks when it opens the cache."""
    p.add_argument("--verify", choices=LEVELS, help="how much of each cache is checked before anything is written "
                   "from it: full (every byte's CRC-32 against the integrity record and every mass and key value), "
                   "fast (sizes and each file's ends, for caches of tens of GB) or off (sizes only); pointers and "
                   f"capture.json's shape at every level; default ${ENV} or full")
