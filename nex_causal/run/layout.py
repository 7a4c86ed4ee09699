"""A run directory as the stages see it: where each result lives, and the family and variants it covers.

    manifest.json          resolved config, stack, versions, seeds, times, stage log, warnings
    stages/<stage>.json    a finished stage's key and outputs (removed while the stage runs)
    caches/<variant>/      capture caches
    nex/<variant>/         weights.npz, response_scores.npy, summary.json
    transfer/, ablation/   grid cells (resumable)
    tables/<name>.{parquet,csv,meta.json}
    figures/<name>.{pdf,png}
    report.md

Variant names are checked before a path is built from them (``io.check_name``), so nothing
a config or a family table says can point a path outside the run.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pandas as pd

from nex_causal.io import check_name
from nex_causal.models.variants import load_family, variant_dir

MANIFEST = "manifest.json"  # what made the run: a directory without one is no run (``resume.check_ours``)


class RunDir:
    """The run directory of one experiment config (``config``: an ``ExperimentConfig``)."""

    def __init__(self, config: Any, run_dir: str | Path, *, progress: bool = True):
        self.config, self.dir, self.progress = config, Path(run_dir), progress

    def tables(self, name: str) -> Path:
        return self.dir / "tables" / name

    def cache(self, variant: str) -> Path:
        return self.dir / "caches" / check_name(variant, "variant")

    def weights(self, variant: str) -> Path:
        return self.dir / "nex" / check_name(variant, "variant") / "weights.npz"

    def stamp(self, stage: str) -> Path:
        return self.dir / "stages" / f"{stage}.json"

    @property
    def family_dir(self) -> Path:
        return Path(json.loads(self.stamp("family").read_text())["outputs"]["family_dir"])

    def family(self) -> pd.DataFrame:
        return load_family(self.family_dir)

    def variants(self) -> list[str]:
        return self.config.variants or self.family()["name"].astype(str).tolist()

    def variant_path(self, name: str) -> str:
        return variant_dir(name, self.family_dir)
