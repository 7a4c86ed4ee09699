"""An experiment: one YAML config -> one run directory, stage by stage, resumable.

Stages, in data-flow order (each needs the ones before it):

    family     the merge family (the embedded zoo, built or reused, or a directory)
    capture    one SparseCache per variant: sampled responses with sparse MLP activations
    nex        per variant, NEX weights self-calibrated on its own cache, GMF scores
    selection  Best-of-N accuracy of every selector on every variant's cache
    ranking    label-free model scores against accuracy, and the inverted-U
    transfer   effective-vs-redundant neuron transfer between two variants
    ablation   effective-vs-redundant ablation inside one variant
    figures    the paper's figures from the tables; report.md with the headline tables

Each stage has a key: the hash of its slice of the config and of the keys of the stages it
reads. A stage whose stamp (``stages/<name>.json``) holds the same key is skipped, so a
rerun does no work, a killed run resumes (capture and the grids also resume inside a
stage), and changing a NEX parameter reruns NEX and what reads it, not the capture.

Run directory:

    manifest.json          resolved config, versions, git commit, seeds, times, stage log
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
import shutil
import time
import types
import typing
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from nex_causal.errors import NexError
from nex_causal.io import read_mapping, versions, write_json, write_table
from nex_causal.nex.config import NexConfig
from nex_causal.report import degenerate_findings
from nex_causal.stack import result_stack

DEMO_CONFIG = Path(__file__).with_name("demo.yaml")
STAGES = ("family", "capture", "nex", "selection", "ranking", "transfer", "ablation", "figures")
DEPENDS = {
    "family": (), "capture": ("family",), "nex": ("capture",), "selection": ("nex",),
    "ranking": ("nex",), "transfer": ("nex",), "ablation": ("nex",),
    "figures": ("nex", "selection", "ranking", "transfer", "ablation"),
}


# --- the config ------------------------------------------------------------------------------

@dataclass(frozen=True)
class CaptureSection:
    """How responses are sampled and which neurons enter the cache (see nex_causal.capture)."""

    n_samples: int = 4
    max_new_tokens: int = 160
    temperature: float = 0.7
    top_p: float = 0.95
    seed: int = 0
    batch_size: int = 32
    sparsifier: str = "topk:64"
    window: int = 16


@dataclass(frozen=True)
class SelectionSection:
    selectors: list[str] | None = None  # None: every selector
    early_tokens: int = 32
    deepconf_window: int = 2048
    n_boot: int = 1000


@dataclass(frozen=True)
class RankingSection:
    scores: list[str] | None = None  # None: every score
    accuracy: str = "cache"  # "cache": the captured responses' accuracy; "family": the zoo's greedy accuracy
    n_bins: int = 10
    n_boot: int = 1000


@dataclass(frozen=True)
class GridSection:
    """A transfer (donor -> recipient) or ablation (in ``recipient``) grid; see intervene.transfer."""

    recipient: str
    donor: str | None = None
    tasks: str = "organism:100"
    k: list[int] = field(default_factory=lambda: [8, 32, 128])
    seeds: int = 3
    interventions: list[str] | None = None
    decodings: list[str] = field(default_factory=lambda: ["greedy"])
    temperature: float = 0.7
    max_new_tokens: int = 160
    n_boot: int = 1000
    batch_size: int = 64


@dataclass(frozen=True)
class ExperimentConfig:
    """Everything an experiment does; the YAML file mirrors these fields."""

    name: str
    family: str = "zoo"  # "zoo": the embedded organism (built on first use); else a family directory
    zoo_seed: int = 0
    variants: list[str] | None = None  # None: every variant of the family
    tasks: str = "organism:40"
    device: str = "cpu"
    dtype: str = "float32"
    capture: CaptureSection = CaptureSection()
    nex: NexConfig = NexConfig()
    selection: SelectionSection | None = SelectionSection()
    ranking: RankingSection | None = RankingSection()
    transfer: GridSection | None = None
    ablation: GridSection | None = None
    figures: bool = True

    def family_content(self) -> dict:
        """What the family stage's result depends on: the zoo's content key, or the family table."""
        if self.family == "zoo":
            from nex_causal.zoo.build import zoo_key

            return {"zoo": zoo_key(self.zoo_seed)}
        table = Path(self.family) / "family.csv"
        return {"family_table": hashlib.sha256(table.read_bytes()).hexdigest() if table.is_file() else None}

    def section(self, stage: str) -> Any:
        """The config slice a stage's result depends on."""
        whole = dataclasses.asdict(self)
        common = {k: whole[k] for k in ("family", "zoo_seed", "variants", "tasks", "dtype")}
        return {"family": self.family_content(), "capture": {**common, **whole["capture"]},
                "nex": whole["nex"], "selection": whole["selection"], "ranking": whole["ranking"],
                "transfer": whole["transfer"], "ablation": whole["ablation"], "figures": whole["figures"]}[stage]


def _convert(value: Any, kind: Any, where: str) -> Any:
    """``value`` checked against the annotation ``kind``; NexError naming ``where`` otherwise."""
    origin, args = typing.get_origin(kind), typing.get_args(kind)
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        (kind,) = [a for a in args if a is not type(None)]
        return _convert(value, kind, where)
    if dataclasses.is_dataclass(kind):
        if not isinstance(value, Mapping):
            raise NexError(f"config key {where!r} must be a mapping of {kind.__name__} fields")
        return _build(kind, value, f"{where}.")
    if origin is list:
        if not isinstance(value, list):
            raise NexError(f"config key {where!r} must be a list, got {value!r}")
        return [_convert(v, args[0], f"{where}[{i}]") for i, v in enumerate(value)]
    if kind is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
        raise NexError(f"config key {where!r} must be {kind.__name__}, got {value!r}")
    return value


def _build(cls: type, values: Mapping, prefix: str = "") -> Any:
    hints = typing.get_type_hints(cls)
    names = [f.name for f in dataclasses.fields(cls)]
    if unknown := [k for k in values if k not in names]:
        raise NexError(f"unknown config key {prefix + str(unknown[0])!r}: use one of {', '.join(names)}")
    required = [f.name for f in dataclasses.fields(cls)
                if f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING]
    if missing := [k for k in required if k not in values]:
        raise NexError(f"config key {prefix + missing[0]!r} is required")
    return cls(**{k: _convert(v, hints[k], prefix + k) for k, v in values.items()})


def load_config(source: str | Path | Mapping) -> ExperimentConfig:
    """An ExperimentConfig from a YAML file or a mapping, every key and type checked."""
    return _build(ExperimentConfig, source if isinstance(source, Mapping) else read_mapping(source))


# --- the run ---------------------------------------------------------------------------------

def _digest(obj: Any) -> str:
    return hashlib.sha256(json.dumps(obj, sort_keys=True, default=str).encode()).hexdigest()[:16]


class Run:
    """One experiment's run directory and the stages that fill it."""

    def __init__(self, config: ExperimentConfig, run_dir: str | Path, *, progress: bool = True):
        self.config, self.dir, self.progress = config, Path(run_dir), progress
        self.keys: dict[str, str] = {}
        stack = result_stack()  # a result made under other versions is recomputed, never reused
        for stage in STAGES:
            deps = [self.keys[d] for d in DEPENDS[stage]]
            self.keys[stage] = _digest({"stage": stage, "config": config.section(stage), "deps": deps, "stack": stack})
        self.log: list[dict] = []

    # paths
    def tables(self, name: str) -> Path:
        return self.dir / "tables" / name

    def cache(self, variant: str) -> Path:
        return self.dir / "caches" / variant

    def weights(self, variant: str) -> Path:
        return self.dir / "nex" / variant / "weights.npz"

    @property
    def family_dir(self) -> Path:
        stamp = json.loads((self.dir / "stages" / "family.json").read_text())
        return Path(stamp["outputs"]["family_dir"])

    def family(self) -> pd.DataFrame:
        from nex_causal.ranking import load_family

        return load_family(self.family_dir)

    def variants(self) -> list[str]:
        return self.config.variants or self.family()["name"].astype(str).tolist()

    def variant_path(self, name: str) -> str:
        from nex_causal.intervene.transfer import resolve_variant

        return resolve_variant(name, str(self.family_dir))

    # stages
    def done(self, stage: str) -> bool:
        stamp = self.dir / "stages" / f"{stage}.json"
        return stamp.exists() and json.loads(stamp.read_text()).get("key") == self.keys[stage]

    def check(self) -> None:
        """Config errors that need the family's variant names, found before any work starts."""
        if self.config.family == "zoo":
            from nex_causal.zoo.build import TRAINED
            from nex_causal.zoo.family import default_family

            names = [*TRAINED, *(m.name for m in default_family())]
        else:
            table = Path(self.config.family) / "family.csv"
            if not table.is_file():
                raise NexError(f"family directory {self.config.family} has no family.csv; build one with "
                               "`nex-causal zoo build --out DIR` or set `family: zoo`")
            names = pd.read_csv(table)["name"].astype(str).tolist()
        wanted = self.config.variants or names
        if unknown := [v for v in wanted if v not in names]:
            raise NexError(f"config key 'variants': {unknown[0]!r} is not in the family ({', '.join(names)})")
        for stage in ("transfer", "ablation"):
            section = getattr(self.config, stage)
            for key in ("recipient", "donor"):
                name = getattr(section, key, None) if section else None
                if name is not None and name not in wanted:
                    raise NexError(f"config key '{stage}.{key}': {name!r} is not among the run's variants")

    def run(self) -> Path:
        """Run every enabled stage that is not already done; return the report's path."""
        self.check()
        started = time.strftime("%Y-%m-%dT%H:%M:%S%z")
        self._write_manifest(started, None)
        for stage in STAGES:
            enabled = stage not in ("selection", "ranking", "transfer", "ablation", "figures") or \
                getattr(self.config, stage)
            if not enabled:
                continue
            if self.done(stage):
                self.log.append({"stage": stage, "status": "skipped (up to date)"})
                print(f"[{stage}] up to date")
                continue
            print(f"[{stage}] running")
            t0 = time.perf_counter()
            outputs = getattr(self, f"_{stage}")() or {}
            seconds = round(time.perf_counter() - t0, 1)
            write_json(self.dir / "stages" / f"{stage}.json",
                       {"key": self.keys[stage], "seconds": seconds, "outputs": outputs})
            self.log.append({"stage": stage, "status": "ran", "seconds": seconds})
        self._write_manifest(started, time.strftime("%Y-%m-%dT%H:%M:%S%z"), degenerate_findings(self.dir))
        return self.dir / "report.md"

    def _write_manifest(self, started: str, finished: str | None, warnings: list[str] | None = None) -> None:
        c = self.config
        write_json(self.dir / "manifest.json", {
            "config": dataclasses.asdict(c), "stage_keys": self.keys, "stack": result_stack(),
            "versions": versions(), "seeds": {"zoo": c.zoo_seed, "capture": c.capture.seed},
            "started": started, "finished": finished, "stages": self.log, "warnings": warnings or [],
        })

    def _family(self) -> dict:
        if self.config.family == "zoo":
            from nex_causal.zoo import build

            family_dir = build(seed=self.config.zoo_seed, progress=self.progress)
        else:
            family_dir = Path(self.config.family).resolve()
            if not (family_dir / "family.csv").is_file():
                raise NexError(f"family directory {family_dir} has no family.csv; build it with "
                               "`nex-causal zoo build --out DIR` or point `family` at one")
        return {"family_dir": str(family_dir)}

    def _capture(self) -> None:
        from nex_causal.capture import CAPTURE_FILE, CaptureConfig, capture, discard_stale
        from nex_causal.models import load_bridge
        from nex_causal.resume import mismatch, read_stamp

        c = self.config
        for variant in self.variants():
            config = CaptureConfig(model=variant, tasks=c.tasks, device=c.device, dtype=c.dtype,
                                   **dataclasses.asdict(c.capture))
            out = self.cache(variant)
            if mismatch(read_stamp(out / CAPTURE_FILE), config.content()) is None:
                continue
            discard_stale(config, out)  # made by an earlier config of this experiment, or other versions
            bridge = load_bridge(self.variant_path(variant), device=c.device, dtype=c.dtype)
            capture(config, out, bridge=bridge, progress=self.progress)

    def _nex(self) -> None:
        from nex_causal.cache import SparseCache
        from nex_causal.figures import trace_table, weights_table
        from nex_causal.nex import learn, log_gap, save_weights, score_responses, write_scores

        c, rows, best = self.config.nex, [], None
        for variant in self.variants():
            cache = SparseCache.open(self.cache(variant))
            cal = learn(cache, c, progress=self.progress, keep_traces=True)
            save_weights(self.weights(variant), cal.weights)
            summary = write_scores(self.weights(variant).parent, score_responses(cache, cal.weights, self.progress),
                                   **dataclasses.asdict(c))
            rows.append({"variant": variant, **summary, "log_gap": log_gap(summary["nex_score"]),
                         "n_effective": int((cal.weights > 0).sum()),
                         "n_redundant": int((cal.weights < 0).sum())})
            for r, trace in enumerate(cal.traces):
                if best is None or len(trace.cycles) > len(best[2].cycles):
                    best = (variant, r, trace)
        write_table(pd.DataFrame(rows), self.tables("nex"), config=self.config.section("nex"))
        focus = (self.config.transfer or self.config.ablation)
        focus = (focus.donor or focus.recipient) if focus else self.variants()[0]
        weights = np.load(self.weights(focus))["weights"]
        write_table(weights_table(weights).assign(variant=focus), self.tables("neuron_weights"),
                    config=self.config.section("nex"))
        variant, r, trace = best
        write_table(trace_table(trace).assign(variant=variant, response=r), self.tables("trace"),
                    config=self.config.section("nex"))

    def _selection(self) -> None:
        from nex_causal.selectors import SelectionConfig, selection_table

        s = self.config.selection
        config = SelectionConfig(early_tokens=s.early_tokens, deepconf_window=s.deepconf_window,
                                 progress=self.progress)
        table = selection_table([self.cache(v) for v in self.variants()], config, s.selectors,
                                n_boot=s.n_boot, progress=self.progress)
        table["cache"] = [Path(p).name for p in table["cache"]]
        write_table(table, self.tables("selection"), config=self.config.section("selection"))

    def _ranking(self) -> None:
        from nex_causal.ranking import RankingConfig, ranking_tables

        s = self.config.ranking
        family = self.family()
        family = family[family["name"].astype(str).isin(self.variants())]
        accuracy = dict(zip(family["name"].astype(str), family["accuracy"])) if s.accuracy == "family" else None
        tables, notes = ranking_tables(family, [self.dir / "caches"], accuracy=accuracy,
                                       config=RankingConfig(progress=self.progress), scores=s.scores,
                                       n_boot=s.n_boot, n_bins=s.n_bins, progress=self.progress)
        for name, table in tables.items():
            write_table(table.assign(caches="caches"), self.tables(name), config=self.config.section("ranking"))
        for note in notes:
            print(f"note: {note}")

    def _grid(self, experiment: str, section: GridSection) -> None:
        from nex_causal.intervene.transfer import GridConfig, run_grid
        from nex_causal.resume import CLAIM_FILE, mismatch, read_stamp

        owner = section.donor if experiment == "transfer" else section.recipient
        fields = dataclasses.asdict(section)
        config = GridConfig(experiment=experiment, model=fields.pop("recipient"), weights=str(self.weights(owner)),
                            family=str(self.family_dir), seed=self.config.capture.seed, device=self.config.device,
                            dtype=self.config.dtype, **fields)
        out = self.dir / ("transfer" if experiment == "transfer" else "ablation")
        if out.exists() and mismatch(read_stamp(out / CLAIM_FILE), config.content()) is not None:
            shutil.rmtree(out)  # cells of an earlier config, other weights or other versions: never resumed
        table, summary = run_grid(config, out, progress=self.progress)
        name = "transfer" if experiment == "transfer" else "ablate"
        write_table(table, self.tables(name), config=fields)
        write_table(summary, self.tables(f"{name}_summary"), config=fields)

    def _transfer(self) -> None:
        self._grid("transfer", self.config.transfer)

    def _ablation(self) -> None:
        self._grid("ablate", self.config.ablation)

    def _figures(self) -> dict:
        from nex_causal.figures import FIGURES, make_figures
        from nex_causal.report import write_report

        figures, skipped = [], {}
        for spec in FIGURES:
            try:
                figures += make_figures(self.dir, names=[spec.name])
            except NexError as err:  # e.g. no neuron was credited: nothing to plot
                skipped[spec.name] = str(err)
                print(f"[figures] skipped {spec.name}: {err}")
        write_report(self.dir, figures, skipped)
        return {"figures": [str(f) for f in figures], "skipped": skipped}


def run_experiment(config: ExperimentConfig | str | Path, run_dir: str | Path | None = None, *,
                   progress: bool = True) -> Path:
    """Run (or resume) ``config`` into ``run_dir`` (default ``runs/<name>``); return the report path."""
    config = config if isinstance(config, ExperimentConfig) else load_config(config)
    run = Run(config, run_dir or Path("runs") / config.name, progress=progress)
    return run.run()
