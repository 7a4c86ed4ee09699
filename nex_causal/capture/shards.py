"""Sharded work: each shard computed once, written atomically, resumed when missing, gathered in order.

Sampling, stepwise capture and capture by replay all split their prompts into shards and
follow one protocol (``nex_causal.resume``): the partial directory is claimed for the
work's config and the versions that change numbers; ``Work.run(index, path)`` writes shard
``index`` atomically to ``path``; a rerun computes only the shards that are missing. The
shards run in this process or on Ray workers (``nex_causal.capture.cluster``); either way a
shard's content depends only on its index, so the gathered result is the same byte for
byte.
"""

from __future__ import annotations

from pathlib import Path

from tqdm.auto import tqdm

from nex_causal.capture.cluster import RayOptions, Work, run_on_ray
from nex_causal.resume import claim


def partial_dir(out: Path) -> Path:
    """Where unfinished work bound for ``out`` keeps its claim and finished shards."""
    return out.with_name(out.name + ".partial")


def shard_path(partial: Path, index: int, suffix: str = "") -> Path:
    return partial / "shards" / f"{index:06d}{suffix}"


def run_shards(work: Work, partial: str | Path, config: object, *, suffix: str = "", progress: bool = True,
               ray: RayOptions | None = None) -> list[Path]:
    """Compute every missing shard of ``work`` under ``partial`` (claimed for ``config``); return all shard paths."""
    partial = Path(partial)
    claim(partial, config, what=work.what)
    (partial / "shards").mkdir(exist_ok=True)
    paths = [shard_path(partial, i, suffix) for i in range(work.n_shards)]
    pending = [i for i, path in enumerate(paths) if not path.exists()]
    total = sum(work.size(i) for i in range(work.n_shards))
    bar = tqdm(total=total, initial=total - sum(work.size(i) for i in pending), desc=work.what, unit="prompt",
               disable=not progress)
    if pending and ray is not None:
        run_on_ray(work, pending, paths, ray, lambda i: bar.update(work.size(i)))
    elif pending:
        work.setup()
        for i in pending:
            work.run(i, paths[i])
            bar.update(work.size(i))
    bar.close()
    return paths
