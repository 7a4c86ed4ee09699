"""Model variants by name, and families of them.

A *resolver* turns a short name into a model directory; ``models.resolve_model`` asks the
registered resolvers before it treats a name as a path or a Hugging Face id. The embedded
zoo registers its own (``nex_causal.zoo``), so no module here needs to know about it.

A *family* is any directory of variant directories with a ``family.csv`` that lists them
(one row per variant: ``name``, and ``accuracy`` when known): a built zoo, or mergekit
outputs gathered by hand.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

from nex_causal.errors import NexError
from nex_causal.io import check_name

if TYPE_CHECKING:
    import pandas as pd

FAMILY_FILE = "family.csv"
Resolver = Callable[[str], "Path | None"]
RESOLVERS: list[Resolver] = []


def register_resolver(resolver: Resolver) -> Resolver:
    """Add ``resolver`` (name -> directory, or None) to those ``find_variant`` asks, in order."""
    RESOLVERS.append(resolver)
    return resolver


def find_variant(name: str) -> Path | None:
    """The directory of the named variant from the first resolver that knows it, or None."""
    for resolver in RESOLVERS:
        if (found := resolver(name)) is not None:
            return Path(found)
    return None


def load_family(path: str | Path) -> pd.DataFrame:
    """A family table: ``path`` is ``family.csv`` or the directory holding it; ``path`` made absolute."""
    import pandas as pd

    path = Path(path).expanduser()
    file = path / FAMILY_FILE if path.is_dir() else path
    if not file.is_file():
        raise NexError(f"no family table at {file}: pass a family directory (a built zoo: "
                       f"`nex-causal zoo build --out DIR`) or its {FAMILY_FILE}")
    try:
        family = pd.read_csv(file)
    except (ValueError, UnicodeDecodeError) as err:
        raise NexError(f"cannot read {file} as a CSV table ({str(err).splitlines()[0]}): write one variant "
                       "per row with a `name` column") from None
    if "name" not in family:
        raise NexError(f"{file} has no `name` column; it must list one variant per row")
    for name in family["name"]:
        check_name(name, f"{file}: variant name")
    if family["name"].astype(str).duplicated().any():
        twice = family["name"][family["name"].astype(str).duplicated()].iloc[0]
        raise NexError(f"{file} lists variant {twice!r} twice: give each variant one row")
    if "path" in family:
        family["path"] = [str((file.parent / p).resolve()) for p in family["path"]]
    return family


def variant_dir(name: str, family: str | Path | None) -> str:
    """``name`` as a model reference: the directory ``family/name`` when a family is given."""
    if family is None:
        return name
    root = Path(family).expanduser()
    if not root.is_dir():
        raise NexError(f"family directory {root} does not exist: build it with `nex-causal zoo build`")
    if Path(name).name == name and (root / name / "config.json").is_file():
        return str(root / name)
    known = sorted(p.name for p in root.iterdir() if (p / "config.json").is_file())
    raise NexError(f"no variant {name!r} in family {root}: use one of {', '.join(known) or '(none)'}")
