"""The software stack that determines results: what is verified, what changes numbers.

Two kinds of versions matter to a toolkit whose numbers go into papers:

- the range of ``transformers`` the TransformerBridge is verified on (``VERIFIED``):
  transformers 5.24 passes the KV cache to attention as ``cache=``, which the bridge of
  transformer-lens 4.3 never reads, so generation decodes every token without context;
  outside the verified range :func:`check_transformers` refuses with one line (set
  ``NEX_CAUSAL_ALLOW_UNVERIFIED=1`` to try another version: the KV-cache self-check in
  ``models.load_bridge`` still guards it);
- the versions that change numbers (``RESULT_PACKAGES``): :func:`result_stack` enters every
  stage key and zoo key, so a run or zoo made under other versions is recomputed rather
  than reused as if it were current.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from importlib import metadata

from nex_causal.errors import NexError

# package -> (lowest verified, first unverified); the same bound as pyproject.toml
VERIFIED = {"transformers": ("5.20.0", "5.24.0")}
ALLOW_UNVERIFIED = "NEX_CAUSAL_ALLOW_UNVERIFIED"
# the packages whose versions change computed numbers (floating point, algorithms, formats)
RESULT_PACKAGES = ("torch", "transformers", "transformer-lens", "numpy", "scipy", "scikit-learn", "hmmlearn",
                   "mergekit", "safetensors", "tokenizers")
FIX = "pip install -c constraints.txt -e . (the verified lock)"


def installed(package: str) -> str | None:
    """The installed version of ``package``, or None."""
    with contextlib.suppress(metadata.PackageNotFoundError):
        return metadata.version(package)
    return None


def _release(version: str) -> tuple[int, ...]:
    """The numeric release of a version string ("5.23.0", "2.13.0+cpu" -> (2, 13, 0))."""
    parts = []
    for part in version.split("+")[0].split("."):
        digits = "".join(ch for ch in part if ch.isdigit()) if part[:1].isdigit() else ""
        if not digits:
            break
        parts.append(int(digits))
    return tuple(parts)


def verified(package: str, version: str) -> bool:
    """Whether ``version`` of ``package`` lies in its verified range (unlisted packages: yes)."""
    if package not in VERIFIED:
        return True
    low, high = VERIFIED[package]
    return _release(low) <= _release(version) < _release(high)


def check_transformers() -> None:
    """One-line NexError when the installed transformers is outside the verified range."""
    version = installed("transformers")
    if version is None or verified("transformers", version) or os.environ.get(ALLOW_UNVERIFIED):
        return
    low, high = VERIFIED["transformers"]
    raise NexError(f"transformers {version} is installed, but the TransformerBridge (transformer-lens "
                   f"{installed('transformer-lens')}) is verified only on transformers >={low},<{high} "
                   f"(5.24 passes the KV cache as `cache=`, which the bridge ignores): "
                   f"pip install 'transformers>={low},<{high}' or {FIX}")


@contextlib.contextmanager
def unverified_allowed() -> Iterator[None]:
    """Inside the block, an unverified transformers is not refused (the self-checks still run)."""
    before = os.environ.get(ALLOW_UNVERIFIED)
    os.environ[ALLOW_UNVERIFIED] = "1"
    try:
        yield
    finally:
        if before is None:
            del os.environ[ALLOW_UNVERIFIED]
        else:
            os.environ[ALLOW_UNVERIFIED] = before


def result_stack() -> dict[str, str | None]:
    """The versions that change numbers (``RESULT_PACKAGES``) and this toolkit's own."""
    return {"nex-causal": installed("nex-causal"), **{p: installed(p) for p in RESULT_PACKAGES}}
