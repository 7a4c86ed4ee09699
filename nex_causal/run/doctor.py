"""``nex-causal doctor``: the versions that determine results, the device, and the self-checks.

Each check runs the real component on a small fixed input and compares it with a value
that cannot be wrong for a sound stack:

- transformers lies in the range the TransformerBridge is verified on;
- decoding with the KV cache equals a full forward pass (on the zoo's base model);
- the bridge's logits equal Hugging Face's own forward pass of the same model;
- NEX scores the reference example cache as the authors' release does (GMF 0.998311),
  when ``../shared/reference`` (or ``$NEX_CAUSAL_SHARED/reference``) is present.
"""

from __future__ import annotations

import os
import platform
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from nex_causal.errors import NexError
from nex_causal.versions import (
    RESULT_PACKAGES,
    check_transformers,
    installed,
    unverified_allowed,
)

REFERENCE_GMF = 0.998311  # the reference release's score of its example (shared/reference/README.md)
LOGIT_TOLERANCE = 1e-4  # bridge vs HF logits, float32


@dataclass(frozen=True)
class Check:
    """One self-check: ``passed`` is True, False, or None (skipped, with the reason in ``detail``)."""

    name: str
    passed: bool | None
    detail: str


def shared_dir() -> Path:
    """The project's shared material: ``$NEX_CAUSAL_SHARED`` or the ``shared/`` beside the checkout."""
    return Path(os.environ.get("NEX_CAUSAL_SHARED") or Path(__file__).resolve().parents[3] / "shared")


def device_line() -> str:
    import torch

    if torch.cuda.is_available():
        return f"cuda: {torch.cuda.get_device_name(0)} (torch CUDA {torch.version.cuda})"
    return f"cpu: {platform.machine()}, {torch.get_num_threads()} torch threads"


def _verified_range() -> str:
    check_transformers()
    return f"transformers {installed('transformers')} is in the verified range"


def _zoo_base():
    from nex_causal.zoo.build import checkpoints_of

    return checkpoints_of() / "base"


def _kv_cache() -> str:
    from nex_causal.models.loading import kv_cache_error, load_bridge

    with unverified_allowed():  # check the cache itself, whatever the version gate says
        bridge = load_bridge(_zoo_base())  # which runs check_kv_cache: a failure raises its one line
    return f"stepwise decoding equals a full pass to {kv_cache_error(bridge):.1e} of the logits' scale"


def _bridge_logits() -> str:
    import torch
    from transformers import AutoModelForCausalLM

    from nex_causal.models.loading import load_bridge

    with unverified_allowed():
        bridge = load_bridge(_zoo_base())
    hf = AutoModelForCausalLM.from_pretrained(_zoo_base(), dtype=torch.float32).eval()
    ids = torch.tensor([[(11 * i + 4) % int(bridge.cfg.d_vocab) for i in range(12)]])
    with torch.no_grad():
        diff = float((bridge(ids, return_type="logits") - hf(ids).logits).abs().max())
    if not diff <= LOGIT_TOLERANCE:
        raise NexError(f"bridge and Hugging Face logits differ by {diff:.2g} (> {LOGIT_TOLERANCE:g})")
    return f"bridge and Hugging Face logits agree to {diff:.1e}"


def _reference_nex() -> str | None:
    from nex_causal.cache import SparseCache
    from nex_causal.nex import load_weights, score_responses

    reference = shared_dir() / "reference"
    if not (reference / "nex_example_cache").is_dir():
        return None
    gmf = float(score_responses(SparseCache.open(reference / "nex_example_cache"),
                            load_weights(reference / "nex_example_weights.npz"), progress=False)[0])
    if abs(gmf - REFERENCE_GMF) > 5e-7:
        raise NexError(f"the reference example scores GMF {gmf:.6f}, the authors' release {REFERENCE_GMF}")
    return f"reference example GMF {gmf:.6f} (release: {REFERENCE_GMF})"


CHECKS: dict[str, Callable[[], str | None]] = {
    "verified stack": _verified_range,
    "KV cache": _kv_cache,
    "bridge = HF logits": _bridge_logits,
    "NEX reference example": _reference_nex,
}


def run_checks() -> list[Check]:
    """Every check of ``CHECKS``; a NexError is a failure, None a skip."""
    out = []
    for name, check in CHECKS.items():
        try:
            detail = check()
        except NexError as err:
            out.append(Check(name, False, str(err)))
            continue
        out.append(Check(name, None, f"skipped: no {shared_dir() / 'reference'}") if detail is None
                   else Check(name, True, detail))
    return out


def doctor_report() -> tuple[str, bool]:
    """The report ``nex-causal doctor`` prints, and whether every check that ran passed."""
    lines = [f"python {platform.python_version()}"]
    lines += [f"{package} {installed(package) or 'not installed'}" for package in RESULT_PACKAGES]
    lines.append(f"device {device_line()}")
    results = run_checks()
    mark = {True: "ok  ", False: "FAIL", None: "skip"}
    lines += [f"[{mark[c.passed]}] {c.name}: {c.detail}" for c in results]
    ok = all(c.passed is not False for c in results)
    lines.append("all checks passed" if ok else "some checks FAILED: the numbers this stack computes "
                 "cannot be trusted")
    return "\n".join(lines), ok
