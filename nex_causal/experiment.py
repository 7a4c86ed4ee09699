"""An experiment: one YAML config -> one run directory, stage by stage, resumable.

The stages are registered in ``nex_causal.stages`` (family, capture, nex, selection,
ranking, transfer, ablation, figures, ...), each declaring what it reads and its config
section; the config has a few experiment-wide fields (the family, the variants, the task
set, device and dtype) and one section per stage, built from that registry.

Each stage has a key: the hash of its section (and of the experiment-wide fields it
depends on), of the keys of the stages it reads, and of the versions that change numbers.
A stage whose stamp (``stages/<name>.json``) holds the same key is skipped, so a rerun does
no work, a killed run resumes (captures and grids also resume inside a stage), changing a
NEX parameter reruns NEX and what reads it, not the capture, and a run made under other
versions is recomputed.

Run directory:

    manifest.json          resolved config, stack, versions, seeds, times, stage log, warnings
    caches/<variant>/      capture caches
    nex/<variant>/         weights.npz, response_scores.npy, summary.json
    transfer/, ablation/   grid cells (resumable)
    tables/<name>.{parquet,csv,meta.json}
    figures/<name>.{pdf,png}
    report.md
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import time
from collections.abc import Mapping
from dataclasses import field
from pathlib import Path
from typing import Any, Optional

import pandas as pd

from nex_causal.errors import NexError
from nex_causal.io import check_name, locked, read_mapping, versions, write_json
from nex_causal.report import degenerate_findings
from nex_causal.settings import from_mapping
from nex_causal.stack import result_stack
from nex_causal.stages import MODELS_PREFIX, STAGES, order
from nex_causal.variants import load_family, variant_dir

DEMO_CONFIG = Path(__file__).with_name("demo.yaml")


def _config_class() -> type:
    """ExperimentConfig: the experiment-wide fields, then one section per registered stage."""
    fields: list[tuple[str, Any, Any]] = [
        ("name", str, field(metadata={"help": "the run's name (its directory under runs/)"})),
        ("family", str, field(default="zoo", metadata={
            "help": "zoo: the default organism's merge family (zoo:seek: the small one; built on first use); "
                    "models:A,B: named models as they are; else a family directory"})),
        ("zoo_seed", int, field(default=0, metadata={"help": "seed of the embedded zoo"})),
        ("variants", Optional[list[str]], field(default=None, metadata={"help": "variants (default: all)"})),
        ("tasks", str, field(default="organism:40", metadata={"help": "prompts of capture, selection, ranking"})),
        ("device", str, field(default="cpu", metadata={"help": "cpu or cuda"})),
        ("dtype", str, field(default="float32", metadata={"help": "float32 or bfloat16"})),
    ]
    for name, spec in STAGES.items():
        if spec.section is None:
            continue
        kind = spec.section if spec.section is bool else Optional[spec.section]  # null turns a stage off
        fields.append((name, kind, field(default=spec.default)))
    cls = dataclasses.make_dataclass("ExperimentConfig", fields, frozen=True)
    cls.__doc__ = "Everything an experiment does; the YAML file mirrors these fields (see nex_causal.stages)."
    cls.__module__ = __name__
    return cls


ExperimentConfig = _config_class()


def load_config(source: str | Path | Mapping) -> Any:
    """An ExperimentConfig from a YAML file or a mapping, every key and type checked."""
    config = from_mapping(ExperimentConfig, source if isinstance(source, Mapping) else read_mapping(source))
    check_name(config.name, "config key 'name' (the run's directory under runs/):")
    if config.variants is not None:
        if not config.variants:
            raise NexError("config key 'variants' is an empty list: name at least one variant, or leave it out "
                           "(null) to run every variant of the family")
        for variant in config.variants:
            check_name(variant, "config key 'variants':")
    return config


def _digest(obj: Any) -> str:
    return hashlib.sha256(json.dumps(obj, sort_keys=True, default=str).encode()).hexdigest()[:16]


def _plain(value: Any) -> Any:
    return dataclasses.asdict(value) if dataclasses.is_dataclass(value) else value


class Run:
    """One experiment's run directory and the stages that fill it."""

    def __init__(self, config: Any, run_dir: str | Path, *, progress: bool = True):
        self.config, self.dir, self.progress = config, Path(run_dir), progress
        self.order = order()
        self.keys: dict[str, str] = {}
        stack = result_stack()  # a result made under other versions is recomputed, never reused
        for name in self.order:
            spec = STAGES[name]
            self.keys[name] = _digest({"stage": name, "config": self.section_config(name),
                                       "deps": [self.keys[d] for d in spec.needs], "stack": stack})
        self.log: list[dict] = []

    def section_config(self, name: str) -> Any:
        """What stage ``name``'s result depends on in the config: its section and its experiment-wide fields."""
        spec = STAGES[name]
        own = {field: getattr(self.config, field) for field in spec.run_level}
        from nex_causal.zoo import zoo_organism

        if name == "family" and (organism := zoo_organism(self.config.family)) is not None:
            from nex_causal.zoo.build import zoo_key

            own["zoo"] = zoo_key(self.config.zoo_seed, organism)
        elif name == "family":
            table = Path(self.config.family) / "family.csv"
            own["family_table"] = hashlib.sha256(table.read_bytes()).hexdigest() if table.is_file() else None
        value = _plain(getattr(self.config, name)) if spec.section is not None else None
        return {**own, "section": value} if own else value

    def enabled(self, name: str) -> bool:
        spec = STAGES[name]
        return spec.section is None or bool(getattr(self.config, name))

    # paths
    def tables(self, name: str) -> Path:
        return self.dir / "tables" / name

    def cache(self, variant: str) -> Path:
        return self.dir / "caches" / check_name(variant, "variant")

    def weights(self, variant: str) -> Path:
        return self.dir / "nex" / check_name(variant, "variant") / "weights.npz"

    @property
    def family_dir(self) -> Path:
        stamp = json.loads((self.dir / "stages" / "family.json").read_text())
        return Path(stamp["outputs"]["family_dir"])

    def family(self) -> pd.DataFrame:
        return load_family(self.family_dir)

    def variants(self) -> list[str]:
        return self.config.variants or self.family()["name"].astype(str).tolist()

    def variant_path(self, name: str) -> str:
        return variant_dir(name, self.family_dir)

    # stages
    def done(self, name: str) -> bool:
        stamp = self.dir / "stages" / f"{name}.json"
        return stamp.exists() and json.loads(stamp.read_text()).get("key") == self.keys[name]

    def check(self) -> None:
        """Config errors that need the family's variant names, found before any work starts."""
        from nex_causal.zoo import zoo_organism

        if self.config.family.startswith(MODELS_PREFIX):
            names = [Path(n.strip()).name for n in self.config.family[len(MODELS_PREFIX):].split(",") if n.strip()]
        elif (organism := zoo_organism(self.config.family)) is not None:
            from nex_causal.zoo.recipe import RECIPES

            names = list(RECIPES[organism].variants)
        else:
            table = Path(self.config.family) / "family.csv"
            if not table.is_file():
                raise NexError(f"family directory {self.config.family} has no family.csv; build one with "
                               "`nex-causal zoo build --out DIR` or set `family: zoo`")
            names = load_family(table).astype({"name": str})["name"].tolist()
        wanted = self.config.variants or names
        if unknown := [v for v in wanted if v not in names]:
            raise NexError(f"config key 'variants': {unknown[0]!r} is not in the family ({', '.join(names)})")
        from nex_causal.intervene.pairs import pairs_of

        named = [("ablation.recipient", self.config.ablation.recipient)] if self.config.ablation else []
        if self.config.transfer:
            named += [("transfer.pairs", v) for pair in pairs_of(self.config.transfer.pairs) for v in pair]
        for key, variant in named:
            if variant not in wanted:
                raise NexError(f"config key {key!r}: {variant!r} is not among the run's variants")

    def run(self) -> Path:
        """Run every enabled stage that is not already done; return the report's path.

        The run directory is locked while it runs, and a stage's stamp is removed before the
        stage starts and written only once its outputs are complete, so a stage interrupted
        half-way (killed, Ctrl-C, a full disk) is never taken for done by a later run.
        """
        self.check()
        with locked(self.dir, "an experiment run"):
            return self._run()

    def _run(self) -> Path:
        started = time.strftime("%Y-%m-%dT%H:%M:%S%z")
        self._write_manifest(started, None)
        for name in self.order:
            if not self.enabled(name):
                continue
            if self.done(name):
                self.log.append({"stage": name, "status": "skipped (up to date)"})
                print(f"[{name}] up to date")
                continue
            print(f"[{name}] running")
            (self.dir / "stages" / f"{name}.json").unlink(missing_ok=True)
            t0 = time.perf_counter()
            outputs = STAGES[name].run(self) or {}
            seconds = round(time.perf_counter() - t0, 1)
            write_json(self.dir / "stages" / f"{name}.json",
                       {"key": self.keys[name], "seconds": seconds, "outputs": outputs})
            self.log.append({"stage": name, "status": "ran", "seconds": seconds})
        self._write_manifest(started, time.strftime("%Y-%m-%dT%H:%M:%S%z"), degenerate_findings(self.dir))
        return self.dir / "report.md"

    def _write_manifest(self, started: str, finished: str | None, warnings: list[str] | None = None) -> None:
        c = self.config
        write_json(self.dir / "manifest.json", {
            "config": dataclasses.asdict(c), "stage_keys": self.keys, "stack": result_stack(),
            "versions": versions(), "seeds": {"zoo": c.zoo_seed, "capture": c.capture.seed},
            "started": started, "finished": finished, "stages": self.log, "warnings": warnings or [],
        })


def run_experiment(config: Any, run_dir: str | Path | None = None, *, progress: bool = True) -> Path:
    """Run (or resume) ``config`` (an ExperimentConfig or a YAML path) into ``run_dir``
    (default ``runs/<name>``); return the report path."""
    config = config if isinstance(config, ExperimentConfig) else load_config(config)
    run = Run(config, run_dir or Path("runs") / config.name, progress=progress)
    return run.run()
