"""An experiment: one YAML config -> one run directory, stage by stage, resumable.

The stages are registered in ``nex_causal.run.stages`` (family, capture, nex, selection,
ranking, transfer, ablation, figures, ...), each declaring what it reads and its config
section; the config has a few experiment-wide fields (the family, the variants, the task
set, device and dtype) and one section per stage, built from that registry.

Each stage has a key: the hash of its section (and of the experiment-wide fields it
depends on), of the keys of the stages it reads, and of the versions that change numbers.
A stage whose stamp (``stages/<name>.json``) holds the same key is skipped, so a rerun does
no work, a killed run resumes (captures and grids also resume inside a stage), changing a
NEX parameter reruns NEX and what reads it, not the capture, and a run made under other
versions is recomputed.

The run directory's layout is ``run.layout``'s; the family spec is parsed by ``run.family``.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Mapping
from dataclasses import field
from pathlib import Path
from typing import Any, Optional

from nex_causal.errors import NexError
from nex_causal.io import (
    check_name,
    digest,
    locked,
    read_mapping,
    remove_inside,
    versions,
    write_json,
)
from nex_causal.resume import DamagedRecord, check_ours, read_stamp
from nex_causal.run.family import FamilySpec
from nex_causal.run.layout import MANIFEST, RunDir
from nex_causal.run.report import degenerate_findings
from nex_causal.run.stages import STAGES, order
from nex_causal.settings import from_mapping, input_digests
from nex_causal.versions import result_stack

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
        ("tasks", str, field(default="organism:40", metadata={"help": "prompts of capture, selection, ranking",
                                                              "file": True})),
        ("device", str, field(default="cpu", metadata={"help": "cpu or cuda"})),
        ("dtype", str, field(default="float32", metadata={"help": "float32 or bfloat16"})),
    ]
    for name, spec in STAGES.items():
        if spec.section is None:
            continue
        kind = spec.section if spec.section is bool else Optional[spec.section]  # null turns a stage off
        help_text = (spec.run.__doc__ or "").strip().splitlines()[0] if spec.run.__doc__ else ""
        fields.append((name, kind, field(default=spec.default, metadata={"help": help_text})))
    cls = dataclasses.make_dataclass("ExperimentConfig", fields, frozen=True)
    cls.__doc__ = "Everything an experiment does; the YAML file mirrors these fields (see nex_causal.run.stages)."
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


def _plain(value: Any) -> Any:
    return dataclasses.asdict(value) if dataclasses.is_dataclass(value) else value


class Run(RunDir):
    """One experiment's run directory and the stages that fill it, keyed and resumable."""

    def __init__(self, config: Any, run_dir: str | Path, *, progress: bool = True):
        super().__init__(config, run_dir, progress=progress)
        self.family_spec = FamilySpec.parse(config.family)
        self.order = order()
        self.keys: dict[str, str] = {}
        stack = result_stack()  # a result made under other versions is recomputed, never reused
        for name in self.order:
            spec = STAGES[name]
            self.keys[name] = digest({"stage": name, "config": self.section_config(name),
                                       "deps": [self.keys[d] for d in spec.needs], "stack": stack})
        self.log: list[dict] = []

    def section_config(self, name: str) -> Any:
        """What stage ``name``'s result depends on in the config: its section and its experiment-wide fields, and
        the content of every file they name (``settings.input_digests``)."""
        spec = STAGES[name]
        own = {field: getattr(self.config, field) for field in spec.run_level}
        own.update(input_digests(self.config, spec.run_level))
        if name == "family":
            own.update(self.family_spec.key(self.config.zoo_seed))
        section = getattr(self.config, name) if spec.section is not None else None
        if dataclasses.is_dataclass(section):
            own.update(input_digests(section))
        return {**own, "section": _plain(section)} if own else _plain(section)

    def enabled(self, name: str) -> bool:
        spec = STAGES[name]
        return spec.section is None or bool(getattr(self.config, name))

    # stages
    def done(self, name: str) -> bool:
        """Whether stage ``name``'s stamp holds its current key (a damaged stamp: not done, said so)."""
        try:
            recorded = read_stamp(self.stamp(name))
        except DamagedRecord:
            print(f"[{name}] {self.stamp(name)} is damaged: running the stage again")
            return False
        return recorded is not None and recorded.get("key") == self.keys[name]

    def check(self) -> None:
        """Config errors that need the family's variant names, found before any work starts."""
        names = self.family_spec.names()
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
        from nex_causal.intervene.neuron_sets import check_user_sets

        for section in (self.config.transfer, self.config.ablation):
            if section:
                check_user_sets(section.sets)

    def run(self) -> Path:
        """Run every enabled stage that is not already done; return the report's path.

        A directory that holds something but no run manifest is refused before anything is written.
        The run directory is locked while it runs, and a stage's stamp is removed before the
        stage starts and written only once its outputs are complete, so a stage interrupted
        half-way (killed, Ctrl-C, a full disk) is never taken for done by a later run.
        """
        self.check()
        check_ours(self.dir, MANIFEST, "experiment run", needs=("stage_keys",))
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
            remove_inside(self.stamp(name), self.dir, missing_ok=True)
            t0 = time.perf_counter()
            outputs = STAGES[name].run(self) or {}
            seconds = round(time.perf_counter() - t0, 1)
            write_json(self.stamp(name),
                       {"key": self.keys[name], "seconds": seconds, "outputs": outputs})
            self.log.append({"stage": name, "status": "ran", "seconds": seconds})
        self._write_manifest(started, time.strftime("%Y-%m-%dT%H:%M:%S%z"), degenerate_findings(self.dir))
        return self.dir / "report.md"

    def _write_manifest(self, started: str, finished: str | None, warnings: list[str] | None = None) -> None:
        c = self.config
        write_json(self.dir / MANIFEST, {
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
