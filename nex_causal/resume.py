"""Resumable work: a directory made for one config, filled with parts that are written atomically.

Capture shards, grid cells and experiment stages all follow it:

- ``claim(directory, config)`` records in ``directory/claim.json`` the config that determines
  the result and the software versions that change numbers (``versions.result_stack``), or
  checks that an existing claim is the same; a directory claimed for another config, or
  made under other versions, is refused with one line naming the difference;
- each finished part is written with ``io.atomic_path``, so a part that exists is complete
  and a rerun skips it;
- ``mismatch(recorded, config)`` says why a finished result (its recorded stamp) is not the
  current one, so that it is recomputed rather than reused.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from nex_causal.errors import NexError
from nex_causal.io import is_scratch, json_object, remove_inside, write_json
from nex_causal.versions import result_stack

CLAIM_FILE = "claim.json"


def _plain(config: Any) -> Any:
    """``config`` as it reads back from JSON (tuples become lists), for comparison."""
    return json.loads(json.dumps(config, sort_keys=True, default=str))


def stamp(config: Any) -> dict[str, Any]:
    """What a finished result records: its config and the versions that made it."""
    return {"config": _plain(config), "stack": result_stack()}


def mismatch(recorded: Mapping[str, Any] | None, config: Any) -> str | None:
    """Why ``recorded`` (a ``stamp``) is not a result of ``config`` under this stack; None when it is."""
    if recorded is None:
        return "nothing recorded"
    wanted, made = _plain(config), recorded.get("config")
    if made != wanted:
        differ = sorted(k for k in set(made) | set(wanted) if made.get(k) != wanted.get(k)) \
            if isinstance(made, dict) and isinstance(wanted, dict) else []
        return f"another config ({', '.join(differ[:3])} differ)" if differ else "another config"
    here = result_stack()
    made = recorded.get("stack") or {}
    changed = [f"{name} {made.get(name)} (now {version})" for name, version in here.items()
               if made.get(name) != version]
    return f"other software versions: {', '.join(changed)}" if changed else None


class DamagedRecord(NexError):
    """A stamp or claim file that is not a JSON object: the result beside it cannot be trusted."""


def read_stamp(path: Path) -> dict[str, Any] | None:
    """The JSON object in ``path``, or None when there is no such file; ``DamagedRecord`` naming a damaged one."""
    if not path.is_file():
        return None
    if (value := json_object(path)) is None:
        raise DamagedRecord(f"{path} is damaged (not a JSON record): delete {path.parent} to compute it again")
    return value


def discard_stale(path: str | Path, config: Any, *, stamp_file: str, root: str | Path) -> bool:
    """Delete ``path`` when ``path/stamp_file`` records another config or other versions than ``config``.

    ``path`` must lie inside ``root`` (the run directory that owns it); a result with no stamp
    at all, or a damaged one, is deleted too, since nothing says what made it. Returns whether it was deleted.
    """
    path = Path(path)
    if not path.exists():
        return False
    try:
        recorded = read_stamp(path / stamp_file)
    except DamagedRecord:
        recorded = None
    if mismatch(recorded, config) is None:
        return False
    remove_inside(path, root)
    return True


def check_ours(directory: str | Path, record: str, what: str, *, needs: tuple[str, ...] = ()) -> None:
    """Refuse, before anything is written there, a directory that holds something (besides this toolkit's
    scratch) but no ``record`` file, a JSON object with the keys ``needs``, saying it holds a ``what``."""
    directory = Path(directory)
    if not directory.is_dir() or all(is_scratch(entry.name) for entry in directory.iterdir()):
        return
    path = directory / record
    try:
        found = read_stamp(path)
    except DamagedRecord:
        raise NexError(f"{path} is not the record of a {what} (damaged, or another program's): choose another "
                       f"directory, or delete {directory}") from None
    if found is None or any(key not in found for key in needs):
        raise NexError(f"{directory} exists and holds no {what} (no {record} of one): choose another directory, "
                       "or delete it")


def claim(directory: str | Path, config: Any, *, what: str) -> None:
    """Claim ``directory`` for ``config`` (creating it), or check that its claim is the same.

    ``what`` names the work in the error ("capture", "transfer grid", ...).
    """
    directory = Path(directory)
    check_ours(directory, CLAIM_FILE, what)
    recorded = read_stamp(directory / CLAIM_FILE)
    if recorded is not None:
        why = mismatch(recorded, config)
        if why is not None:
            raise NexError(f"{directory} holds an unfinished {what} made with {why}; rerun the command that "
                           "made it to finish it, or delete the directory")
        return
    directory.mkdir(parents=True, exist_ok=True)
    write_json(directory / CLAIM_FILE, stamp(config))
