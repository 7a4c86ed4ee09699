"""The family an experiment runs on, from its spec: an embedded organism, named models, or a directory.

    zoo, zoo:<organism>   an embedded organism's merge family, built (or reused) by the zoo
    models:A,B            named models as they are (directories, zoo names, cached HF ids)
    DIR                   a directory holding family.csv and one model directory per variant

One parser for every reader: the runner's config check (which variants exist), the family
stage (where the family is), and the stage key (what the family's content is).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from nex_causal.errors import NexError
from nex_causal.io import check_name, check_write, file_sha256, write_table
from nex_causal.models.variants import FAMILY_FILE, load_family

MODELS_PREFIX = "models:"


@dataclass(frozen=True)
class FamilySpec:
    """A parsed ``family`` setting: ``organism`` (a zoo), ``models`` (named models) or ``directory``."""

    organism: str | None = None
    models: tuple[str, ...] = ()
    directory: Path | None = None

    @classmethod
    def parse(cls, spec: str) -> FamilySpec:
        from nex_causal.zoo import zoo_organism

        if (organism := zoo_organism(spec)) is not None:
            return cls(organism=organism)
        if spec.startswith(MODELS_PREFIX):
            names = tuple(n.strip() for n in spec[len(MODELS_PREFIX):].split(",") if n.strip())
            if not names:
                raise NexError(f"family {MODELS_PREFIX!r} names no model: write {MODELS_PREFIX}smollm2-135m,/path/to/model")
            for name in names:
                check_name(Path(name).name, "a model of the family")
            return cls(models=names)
        return cls(directory=Path(spec).expanduser().resolve())

    def names(self) -> list[str]:
        """The variant names of the family, known before anything is built."""
        if self.organism is not None:
            from nex_causal.zoo.recipe import RECIPES

            return list(RECIPES[self.organism].variants)
        if self.models:
            return [Path(n).name for n in self.models]
        return load_family(self._table()).astype({"name": str})["name"].tolist()

    def _table(self) -> Path:
        table = self.directory / FAMILY_FILE
        if not table.is_file():
            raise NexError(f"family directory {self.directory} has no {FAMILY_FILE}; build one with "
                           "`nex-causal zoo build --out DIR` or set `family: zoo`")
        return table

    def key(self, seed: int) -> dict:
        """What a family's content is, for the stage key: the zoo's content key, or the family table's hash."""
        if self.organism is not None:
            from nex_causal.zoo.build import zoo_key

            return {"zoo": zoo_key(seed, self.organism)}
        if self.models:
            return {"models": list(self.models)}
        table = self.directory / FAMILY_FILE
        return {"family_table": file_sha256(table) if table.is_file() else None}

    def materialise(self, run_dir: Path, *, seed: int, progress: bool) -> Path:
        """The family's directory: the zoo built or reused, a directory of links to the named models, or the one given."""
        if self.organism is not None:
            from nex_causal.zoo import build

            return build(seed=seed, organism=self.organism, progress=progress)
        if self.models:
            return named_models(self.models, run_dir / "family")
        self._table()
        return self.directory


def named_models(names: tuple[str, ...], out: Path) -> Path:
    """A family directory whose variants are the named models (links to their directories)."""
    from nex_causal.models.loading import resolve_model

    out.mkdir(parents=True, exist_ok=True)
    rows = []
    for name in names:
        source = resolve_model(name)
        variant = check_name(Path(name).name, "a model of the family")
        link = out / variant
        check_write(link)  # the run's family/ must not lead out of the run
        if link.is_symlink() or link.exists():
            link.unlink()
        link.symlink_to(source.resolve(), target_is_directory=True)
        rows.append({"name": variant, "path": variant, "method": "model", "params": "{}", "parents": ""})
    write_table(pd.DataFrame(rows), out / "family")
    return out
