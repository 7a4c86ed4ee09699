"""Atomic writes and provenance for everything the toolkit puts on disk.

A file or directory is first written under a temporary name beside its target and then
renamed into place, so an interrupted run never leaves a half-written result that a later
run could mistake for a finished one. Result tables carry the config and the versions
that made them.
"""

from __future__ import annotations

import contextlib
import contextvars
import errno
import hashlib
import json
import os
import platform
import shutil
import subprocess
import tempfile
from collections.abc import Iterator, Mapping
from importlib import metadata
from pathlib import Path
from typing import TYPE_CHECKING, Any

from nex_causal.errors import NexError

if TYPE_CHECKING:
    import pandas as pd

LOCK_FILE = ".lock"  # held by the process that writes a run, capture or grid directory
TRACKED_PACKAGES = (
    "nex-causal", "torch", "transformer-lens", "transformers", "mergekit", "numpy",
    "hmmlearn", "scikit-learn", "scipy", "pandas", "pyarrow", "matplotlib",
)


# the directories this process owns while it writes them (``locked``): (as named, as resolved)
_OWNED: contextvars.ContextVar[tuple[tuple[Path, Path], ...]] = contextvars.ContextVar("owned", default=())


@contextlib.contextmanager
def owning(directory: str | os.PathLike) -> Iterator[None]:
    """For the block, every write, lock and rename under ``directory`` must resolve inside it (``check_write``)."""
    entry = (Path(os.path.abspath(directory)), Path(directory).resolve())
    token = _OWNED.set(_OWNED.get() + (entry,))
    try:
        yield
    finally:
        _OWNED.reset(token)


def check_write(path: str | os.PathLike) -> None:
    """Refuse a write to ``path`` that lies under a directory this process owns but resolves outside it.

    A symbolic link inside a run (``nex/<variant>``, ``tables``, ``.lock``) must never carry a write
    out of it: the same rule ``remove_inside`` applies to deletion.
    """
    named = Path(os.path.abspath(path))
    for root, real in _OWNED.get():
        if root in named.parents:
            resolved = named.resolve()
            if real not in resolved.parents:
                raise NexError(f"refusing to write {named}: it resolves to {resolved}, outside {root}, the directory "
                               "this process owns; remove the symbolic link that leads out of it")


def is_scratch(name: str) -> bool:
    """Whether a directory entry is this toolkit's scratch (a lock, or an unfinished ``atomic_path``), not a result."""
    return name == LOCK_FILE or (name.startswith(".") and name.endswith(".tmp"))


def _exchange(a: Path, b: Path) -> None:
    """Swap the directory entries ``a`` and ``b`` in one step (Linux renameat2 RENAME_EXCHANGE); OSError otherwise."""
    import ctypes

    libc = ctypes.CDLL(None, use_errno=True)
    if not hasattr(libc, "renameat2"):
        raise OSError(errno.ENOSYS, "renameat2 is not available", str(b))
    if libc.renameat2(-100, os.fsencode(a), -100, os.fsencode(b), 2) != 0:  # AT_FDCWD, RENAME_EXCHANGE
        code = ctypes.get_errno()
        raise OSError(code, os.strerror(code), str(b))


def _publish_dir(work: Path, target: Path, spare: Path) -> None:
    """Put the directory ``work`` at ``target``; an existing ``target`` is exchanged with it, so a reader always finds
    one complete version and two writers never collide. Where the exchange is unsupported, the old ``target`` moves
    to ``spare`` (unique to this writer) first. The old content is left at ``work`` or ``spare``, for the caller to
    remove."""
    while True:
        try:
            os.rename(work, target)
            return
        except OSError as err:
            if err.errno not in (errno.ENOTEMPTY, errno.EEXIST):
                raise
        try:
            _exchange(work, target)
            return
        except OSError as err:
            if err.errno == errno.ENOENT:  # the target went away in between: rename again
                continue
            if err.errno not in (errno.EINVAL, errno.ENOSYS, errno.ENOTSUP):
                raise
        with contextlib.suppress(FileNotFoundError):
            shutil.rmtree(spare, ignore_errors=True)
            os.rename(target, spare)


@contextlib.contextmanager
def atomic_path(target: str | os.PathLike, *, is_dir: bool = False) -> Iterator[Path]:
    """Yield a temporary path beside ``target``; on success rename it onto ``target``.

    On an exception the temporary file or directory is removed and ``target`` is untouched.
    An existing ``target`` is replaced only after the new content is complete, in one step
    (a directory is exchanged with the old one, ``_publish_dir``). Under a directory this
    process owns, ``target`` must resolve inside it (``check_write``), before and at the rename.
    """
    target = Path(target)
    check_write(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent))
    work, spare = tmp if is_dir else tmp / target.name, tmp.with_name(tmp.name.removesuffix(".tmp") + ".old.tmp")
    try:
        yield work
        check_write(target)
        if is_dir:
            _publish_dir(work, target, spare)
        else:
            os.replace(work, target)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
        shutil.rmtree(spare, ignore_errors=True)


def check_name(name: str, what: str) -> str:
    """``name`` when it is one plain path component (a variant's or a run's name); NexError otherwise.

    Names become directories inside a run (``caches/<variant>``) and are deleted from there when
    stale, so a name that is a path (absolute, ``..``, with a separator) must never get that far.
    """
    text = str(name)
    if not text or text in {".", ".."} or any(c in text for c in "/\\\0") or text != text.strip():
        raise NexError(f"{what} {text!r} is not a plain name: use letters, digits, '-', '_' or '.', "
                       "without '/', '..' or surrounding spaces")
    return text


def inside(path: str | os.PathLike, root: str | os.PathLike) -> bool:
    """Whether ``path`` lies strictly inside ``root`` once both are resolved (symbolic links followed)."""
    return Path(root).resolve() in Path(path).resolve().parents


def remove_inside(path: str | os.PathLike, root: str | os.PathLike, *, missing_ok: bool = False) -> None:
    """Delete ``path`` (a tree or a file), which must lie strictly inside ``root``; refuse anything else.

    Every deletion of a stale result goes through here, so no config, family table or link can
    make the toolkit delete something outside the directory it owns.
    """
    path = Path(path)
    if missing_ok and not path.exists() and not path.is_symlink():
        return
    if not inside(path, root):
        raise NexError(f"refusing to delete {path}: it lies outside {root}, the directory this run owns")
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path)
    else:
        path.unlink()


@contextlib.contextmanager
def locked(directory: str | os.PathLike, what: str) -> Iterator[None]:
    """Hold an exclusive lock on ``directory`` (created if needed) for the block, and own it (``owning``): a
    second process asking for the lock is refused at once with one line, so two runs never write one
    directory, and no write under it may resolve outside it."""
    import fcntl

    directory, link = Path(directory), f"its {LOCK_FILE} is a symbolic link: delete the link"
    lock = directory / LOCK_FILE
    check_write(lock)
    directory.mkdir(parents=True, exist_ok=True)
    if lock.is_symlink():
        raise NexError(f"refusing to lock {directory}: {link}")
    try:  # O_NOFOLLOW: a link planted after the check is refused too, never followed
        fd = os.open(lock, os.O_RDWR | os.O_CREAT | getattr(os, "O_NOFOLLOW", 0), 0o644)
    except OSError as err:
        if err.errno != errno.ELOOP:
            raise
        raise NexError(f"refusing to lock {directory}: {link}") from None
    with os.fdopen(fd, "r+b") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = " ".join(handle.read(200).decode("utf-8", "replace").split())[:80] or "another process"
            raise NexError(f"{directory} is in use by {holder} ({what}); wait for it to finish, or use another "
                           "directory") from None
        handle.truncate(0)
        handle.write(f"process {os.getpid()}".encode())
        handle.flush()
        try:
            with owning(directory):
                yield
        finally:
            handle.truncate(0)
            fcntl.flock(handle, fcntl.LOCK_UN)


def nex_home() -> Path:
    """The toolkit's cache directory: ``$NEX_CAUSAL_HOME``, default ``~/.cache/nex_causal``."""
    return Path(os.environ.get("NEX_CAUSAL_HOME") or Path.home() / ".cache" / "nex_causal").expanduser()


def file_sha256(path: str | os.PathLike) -> str:
    """The SHA-256 of a file's bytes, read in blocks (a traces file, a weights file, a family table)."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 22), b""):
            digest.update(block)
    return digest.hexdigest()


def digest(obj: Any) -> str:
    """A short content key of a JSON-able object (keys sorted): what a stage, a model or a zoo was made from."""
    return hashlib.sha256(json.dumps(obj, sort_keys=True, default=str).encode()).hexdigest()[:16]


def json_object(path: str | os.PathLike) -> dict | None:
    """The JSON object ``path`` holds, or None when its bytes are not a UTF-8 JSON object (the caller names it)."""
    try:
        value = json.loads(Path(path).read_bytes().decode("utf-8"))
    except (ValueError, UnicodeDecodeError):
        return None
    return value if isinstance(value, dict) else None


def write_json(path: str | os.PathLike, obj: Any) -> None:
    """Write ``obj`` as indented JSON, atomically."""
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(obj, indent=2, sort_keys=True, default=str) + "\n")


def versions() -> dict[str, str]:
    """Versions of Python, the platform, the tracked packages and the git commit, if any."""
    out = {"python": platform.python_version(), "platform": platform.platform()}
    for name in TRACKED_PACKAGES:
        with contextlib.suppress(metadata.PackageNotFoundError):
            out[name] = metadata.version(name)
    with contextlib.suppress(OSError, subprocess.SubprocessError):
        commit = subprocess.run(
            ["git", "rev-parse", "HEAD"], capture_output=True, text=True, timeout=5,
            cwd=Path(__file__).resolve().parent,
        )
        if commit.returncode == 0:
            out["git_commit"] = commit.stdout.strip()
    return out


FORMULA_START = ("=", "+", "-", "@", "\t", "\r")  # what a spreadsheet runs as a formula


def spreadsheet_safe(df: pd.DataFrame) -> pd.DataFrame:
    """``df`` with every text cell that a spreadsheet would run as a formula prefixed by an apostrophe.

    Only text columns change; numbers (negative ones included) are written as they are.
    """
    out = df.copy()
    for column in out.columns:
        if out[column].dtype == object or str(out[column].dtype) in ("string", "str"):
            out[column] = [f"'{v}" if isinstance(v, str) and v.startswith(FORMULA_START) else v for v in out[column]]
    return out


def write_table(df: pd.DataFrame, path: str | os.PathLike, *, config: Mapping[str, Any] | None = None) -> None:
    """Write ``df`` as ``<path>.parquet`` and ``<path>.csv`` plus ``<path>.meta.json``.

    The sidecar records the config that made the table and the package versions, so a
    table found on disk can always be traced back to its run. The CSV is spreadsheet-safe
    (``spreadsheet_safe``); the parquet holds the values exactly.
    """
    path = Path(path)
    stem = path.with_suffix("") if path.suffix in {".parquet", ".csv"} else path
    with atomic_path(stem.with_suffix(".parquet")) as tmp:
        df.to_parquet(tmp, index=False)
    with atomic_path(stem.with_suffix(".csv")) as tmp:
        spreadsheet_safe(df).to_csv(tmp, index=False)
    write_json(stem.with_suffix(".meta.json"), {"config": dict(config or {}), "versions": versions()})


def jsonl_objects(path: Path) -> Iterator[tuple[int, str, dict]]:
    """Each non-blank line of a JSON Lines file as (line number, "PATH, line N", the object); a line
    that is not JSON or not an object fails with one line naming it."""
    with open(path, "rb") as f:
        for lineno, raw in enumerate(f, 1):
            where = f"{path}, line {lineno}"
            try:
                line = raw.decode("utf-8")
            except UnicodeDecodeError as err:
                raise NexError(f"{where}: byte {err.start} is not UTF-8 text: save the file as UTF-8") from None
            if not line.strip():
                continue
            try:
                record = json.loads(line)
            except json.JSONDecodeError as err:
                raise NexError(f"{where}: not valid JSON ({err.msg}): fix or remove the line") from None
            if not isinstance(record, dict):
                raise NexError(f"{where}: expected a JSON object, got {type(record).__name__}")
            yield lineno, where, record


def _unique_keys_loader() -> type:
    """A safe YAML loader that refuses a key given twice in one mapping (YAML would keep the last silently)."""
    import yaml

    class UniqueKeys(yaml.SafeLoader):
        def construct_mapping(self, node, deep=False):
            keys = [self.construct_object(k, deep=deep) for k, _ in node.value]
            if twice := sorted({str(k) for k in keys if keys.count(k) > 1}):
                raise yaml.constructor.ConstructorError(None, None, f"key {twice[0]!r} is given twice: keep one",
                                                        node.start_mark)
            return super().construct_mapping(node, deep=deep)

    return UniqueKeys


def read_mapping(path: str | os.PathLike) -> dict:
    """The mapping of settings in a YAML (or JSON) config file; NexError when it is not one."""
    import yaml

    path = Path(path)
    if not path.is_file():
        raise NexError(f"config file {path} does not exist")
    try:
        text = path.read_bytes().decode("utf-8")
    except UnicodeDecodeError as err:
        raise NexError(f"{path}: byte {err.start} is not UTF-8 text: save the config as UTF-8") from None
    try:
        values = yaml.load(text, Loader=_unique_keys_loader())
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        where = f", line {mark.line + 1}" if mark is not None else ""
        raise NexError(f"cannot parse {path}{where}: {getattr(err, 'problem', None) or str(err).splitlines()[0]}") from None
    if not isinstance(values, dict):
        raise NexError(f"{path} must hold a mapping of settings (key: value lines)")
    return values
