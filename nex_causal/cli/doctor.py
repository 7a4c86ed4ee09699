"""``doctor``: the versions that determine results, the device, and the self-checks."""

from __future__ import annotations

import argparse


def add(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("doctor", help="check that this software stack computes right numbers",
                       description="Print the versions that determine results and the device, then run the "
                       "self-checks (verified transformers, KV cache, bridge = HF logits, NEX on the reference "
                       "example); exit 0 only when all of them pass.")
    p.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    from nex_causal.doctor import doctor_report

    text, ok = doctor_report()
    print(text)
    return 0 if ok else 1
