"""The causal neuron experiments: transfer between variants, and ablation inside one model.

Transfer (NEX_METHOD section 7): for each k of a dose range and each set kind -- the top-k
effective neurons, the bottom-k redundant neurons, and random sets matched to the
effective set layer by layer (several seeds) -- the recipient receives the donor's
neurons, either by weight transplant or by activation patching in lock step, and its
accuracy on held-out prompts with verifiable answers is measured, greedy and sampled.
Ablation is the reverse direction: the same sets are zeroed or mean-ablated inside one
model.

Every (set kind, k, seed, intervention) is a *cell*. A cell's per-prompt correctness is
written atomically under ``<out>/cells/`` as soon as it is measured, and a rerun skips the
cells already there, so an interrupted grid resumes where it stopped. The tables are
rebuilt from the cells at the end: one row per cell and decoding with the accuracy, its
change against the untouched model on the same prompts (paired), and percentile-bootstrap
intervals over prompts; and a summary per (intervention, k, decoding) with the
effective-minus-random and effective-minus-redundant gaps.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from tqdm.auto import tqdm

from nex_causal.errors import NexError
from nex_causal.evaluate import evaluate
from nex_causal.intervene.neuron_sets import (
    NeuronSet, bottom_redundant, check_weights_fit, matched_random, top_effective,
)
from nex_causal.intervene.patching import (
    DonorPatch, Intervention, MeanAblation, ZeroAblation, activation_means, intervened,
)
from nex_causal.intervene.transplant import Transplant
from nex_causal.io import atomic_path, read_mapping, write_json, write_table
from nex_causal.resume import claim
from nex_causal.models import load_bridge
from nex_causal.nex import load_weights
from nex_causal.sampling import encode_prompts, generate, sequence_seed
from nex_causal.stats import bootstrap, weighted_mean
from nex_causal.tasks import TaskSet, load_tasks

EXPERIMENTS = {"transfer": ("transplant", "patch"), "ablate": ("zero", "mean")}
DECODINGS = ("greedy", "sampled")
MEANS_FILE = "means.npy"
RESUME_FREE = ("device", "batch_size", "n_boot")  # settings that do not change a cell's result


@dataclass(frozen=True)
class GridConfig:
    """Everything that determines a transfer or ablation grid.

    ``model`` is the recipient of a transfer, or the model ablated in place. ``family`` is
    a directory of variants in which ``model`` and ``donor`` are looked up by name (else
    they are anything ``load_bridge`` accepts). Evaluation prompts come from ``tasks``
    drawn with ``task_seed`` (organism specs draw from the held-out test split).
    """

    experiment: str
    model: str
    weights: str
    tasks: str
    donor: str | None = None
    family: str | None = None
    k: tuple[int, ...] = (8, 32, 128, 512)
    seeds: int = 5
    interventions: tuple[str, ...] | None = None  # default: all of the experiment's
    sets: tuple[str, ...] = ()  # the user's own neuron-set files (CSV/parquet), run beside the grid
    decodings: tuple[str, ...] = DECODINGS
    temperature: float = 0.7
    top_p: float = 1.0
    max_new_tokens: int = 256
    chat: bool = False  # wrap prompts in the tokenizer's chat template (instruction-tuned models)
    seed: int = 0
    task_seed: int = 1
    n_boot: int = 1000
    batch_size: int = 32
    device: str = "cpu"
    dtype: str = "float32"

    def __post_init__(self) -> None:
        if self.experiment not in EXPERIMENTS:
            raise NexError(f"unknown experiment {self.experiment!r}: use one of {', '.join(EXPERIMENTS)}")
        allowed = EXPERIMENTS[self.experiment]
        interventions = tuple(self.interventions or allowed)
        if bad := [i for i in interventions if i not in allowed]:
            raise NexError(f"intervention {bad[0]!r} does not belong to {self.experiment}: "
                           f"use {', '.join(allowed)}")
        object.__setattr__(self, "interventions", interventions)
        ks = tuple(int(k) for k in self.k)
        if not ks or min(ks) < 1 or len(set(ks)) != len(ks):
            raise NexError(f"k must be distinct positive integers, got {self.k}")
        object.__setattr__(self, "k", ks)
        object.__setattr__(self, "decodings", tuple(self.decodings))
        object.__setattr__(self, "sets", tuple(str(p) for p in self.sets))
        if not self.decodings or set(self.decodings) - set(DECODINGS):
            raise NexError(f"decodings must be among {', '.join(DECODINGS)}, got {self.decodings}")
        if "sampled" in self.decodings and self.temperature <= 0:
            raise NexError(f"sampled decoding needs a temperature > 0, got {self.temperature}")
        if self.seeds < 0 or self.max_new_tokens < 1 or self.n_boot < 1 or self.batch_size < 1:
            raise NexError("seeds must be >= 0 and max_new_tokens, n_boot, batch_size >= 1")
        if self.experiment == "transfer" and not self.donor:
            raise NexError("a transfer needs a donor: pass --donor")

    @classmethod
    def from_mapping(cls, values: Mapping) -> "GridConfig":
        """A config from a mapping of field names (a YAML/JSON file); lists may be comma strings."""
        fields = {f.name for f in dataclasses.fields(cls)}
        if unknown := sorted(set(values) - fields):
            raise NexError(f"unknown config key {unknown[0]!r}: use any of {', '.join(sorted(fields))}")
        values = dict(values)
        for name in ("k", "interventions", "decodings", "sets"):
            if isinstance(values.get(name), str):
                values[name] = [v.strip() for v in values[name].split(",") if v.strip()]
        if "k" in values:
            try:
                values["k"] = [int(k) for k in values["k"]]
            except (TypeError, ValueError):
                raise NexError(f"k must be a list of integers, got {values['k']!r}") from None
        missing = [f for f in ("experiment", "model", "weights", "tasks") if not values.get(f)]
        if missing:
            raise NexError(f"no {missing[0]!r} given: pass it as an option or in the config file")
        return cls(**values)

    def content(self) -> dict:
        """What a finished cell depends on (a resume must agree on it): the fields that change a
        result, and the content of the weights file (its path alone does not say which weights)."""
        fields = {k: v for k, v in dataclasses.asdict(self).items() if k not in RESUME_FREE}
        weights = Path(self.weights)
        return {**fields, "weights_sha256": hashlib.sha256(weights.read_bytes()).hexdigest()
                if weights.is_file() else None}


def command_config(experiment: str, config_file: str | None, options: Mapping
                   ) -> tuple[GridConfig, Path]:
    """The config and output directory of a grid command: the file's settings (if any) with
    the command line's ``options`` (those not None) on top. ``recipient`` names ``model``."""
    values = read_mapping(config_file) if config_file else {}
    values.update({k: v for k, v in options.items() if v is not None})
    if "recipient" in values:
        values["model"] = values.pop("recipient")
    if values.setdefault("experiment", experiment) != experiment:
        raise NexError(f"the config describes a {values['experiment']!r} run: use `nex-causal "
                       f"{values['experiment']}`, or change its experiment to {experiment!r}")
    out = values.pop("out", None)
    if not out:
        raise NexError("no output directory: pass --out or give 'out' in the config file")
    return GridConfig.from_mapping(values), Path(out)


@dataclass(frozen=True)
class Cell:
    """One intervention on one neuron set: a column of per-prompt outcomes."""

    kind: str  # effective | redundant | random | user-<file> (the controls: baseline, donor)
    k: int
    seed: int
    intervention: str
    neurons: NeuronSet

    @property
    def name(self) -> str:
        if self.intervention == "none":
            return self.kind
        return f"{self.intervention}-{self.kind}-k{self.k}-s{self.seed}"


def neuron_grid(weights: np.ndarray, ks: Sequence[int], n_seeds: int, d_mlp: int,
                seed: int = 0) -> list[tuple[str, int, int, NeuronSet]]:
    """``(kind, k, seed, set)`` for every k: effective, redundant and ``n_seeds`` matched random sets.

    ``seed`` orders ties in weight (see ``top_effective``) and draws the random sets.
    """
    grid = []
    for k in ks:
        effective = top_effective(weights, k, seed=seed)
        grid += [("effective", k, 0, effective), ("redundant", k, 0, bottom_redundant(weights, k, seed=seed))]
        grid += [("random", k, s, matched_random(effective, d_mlp, sequence_seed(seed, k, s),
                                                 name=f"random-{k}-{s}")) for s in range(n_seeds)]
    return grid


def make_intervention(name: str, neurons: NeuronSet, *, donor=None,
                      means: np.ndarray | None = None) -> Intervention:
    """The intervention called ``name`` (transplant, patch, zero, mean) on ``neurons``."""
    if name == "transplant":
        return Transplant(donor, neurons)
    if name == "patch":
        return DonorPatch(donor, neurons)
    if name == "zero":
        return ZeroAblation(neurons)
    if name == "mean":
        return MeanAblation(neurons, means)
    raise NexError(f"unknown intervention {name!r}: use transplant, patch, zero or mean")


def _empty(name: str) -> NeuronSet:
    return NeuronSet(name, np.zeros(0, dtype=np.uint32))


BASELINE = Cell("baseline", 0, 0, "none", _empty("baseline"))


class Grid:
    """Runs the cells of one grid into ``out``, skipping those already on disk."""

    def __init__(self, model, taskset: TaskSet, config: GridConfig, out: str | os.PathLike, *,
                 donor=None, progress: bool = True):
        self.model, self.taskset, self.config, self.donor = model, taskset, config, donor
        self.out, self.progress = Path(out), progress
        self.means: np.ndarray | None = None

    def measure(self, model) -> dict[str, np.ndarray]:
        """Per-prompt correctness of ``model`` under each decoding (sampling seeded, so paired)."""
        c = self.config
        temperatures = {"greedy": 0.0, "sampled": c.temperature}
        return {d: evaluate(model, self.taskset, max_new_tokens=c.max_new_tokens, temperature=temperatures[d],
                            top_p=c.top_p, seed=c.seed, batch_size=c.batch_size, chat=c.chat).correct
                for d in c.decodings}

    def cell(self, cell: Cell) -> dict[str, np.ndarray]:
        """The cell's outcomes, measured now or read back from a previous run."""
        path = self.out / "cells" / f"{cell.name}.json"
        if path.exists():
            stored = json.loads(path.read_text())
            return {d: np.array(v, dtype=bool) for d, v in stored["correct"].items()}
        if cell.kind == "baseline":
            correct = self.measure(self.model)
        elif cell.kind == "donor":
            correct = self.measure(self.donor)
        elif len(cell.neurons) == 0:  # an empty set changes nothing: the outcome is the baseline's
            correct = self.cell(BASELINE)
        else:
            intervention = make_intervention(cell.intervention, cell.neurons, donor=self.donor,
                                             means=self.means)
            with intervened(self.model, [intervention]) as model:
                correct = self.measure(model)
        write_json(path, {"cell": {**dataclasses.asdict(cell), "neurons": cell.neurons.name},
                          "set_size": len(cell.neurons),
                          "correct": {d: v.tolist() for d, v in correct.items()}})
        return correct

    def reference_means(self) -> np.ndarray:
        """Mean activations over the prompts and the model's own greedy responses (for mean ablation)."""
        path = self.out / MEANS_FILE
        if not path.exists():
            c = self.config
            prompts = encode_prompts(self.model, self.taskset.prompts(), chat=c.chat)
            responses = generate(self.model, self.taskset.prompts(), max_new_tokens=c.max_new_tokens,
                                 batch_size=c.batch_size, chat=c.chat)
            sequences = [torch.cat([p, torch.as_tensor(g.tokens)]) for p, g in zip(prompts, responses)]
            means = activation_means(self.model, sequences, batch_size=c.batch_size, progress=self.progress)
            with atomic_path(path) as tmp, open(tmp, "wb") as f:
                np.save(f, means)
        return np.load(path)

    def run(self, weights: np.ndarray) -> tuple[pd.DataFrame, pd.DataFrame]:
        """Measure every cell and write ``<experiment>`` and ``summary`` tables into ``out``."""
        c = self.config
        n_layers, d_mlp = self.model.cfg.n_layers, self.model.cfg.d_mlp
        check_weights_fit(weights, n_layers, d_mlp)
        grid = neuron_grid(weights, c.k, c.seeds, d_mlp, c.seed)  # every set first: fail before any work
        for path in c.sets:
            neurons = NeuronSet.load(path)
            neurons.check_fits(n_layers, d_mlp)
            grid.append((f"user-{neurons.name}", len(neurons), 0, neurons))
        claim(self.out, self.config.content(), what=f"{c.experiment} grid")
        for _, _, _, neurons in grid:
            if not (self.out / "sets" / f"{neurons.name}.csv").exists():
                neurons.save(self.out / "sets" / f"{neurons.name}.csv")
        if "mean" in c.interventions:
            self.means = self.reference_means()
        controls = [BASELINE]
        if self.donor is not None:
            controls.append(Cell("donor", 0, 0, "none", _empty("donor")))
        cells = controls + [Cell(kind, k, seed, i, neurons)
                            for i in c.interventions for kind, k, seed, neurons in grid]
        results = {}
        for cell in tqdm(cells, desc=f"{c.experiment} cells", unit="cell", disable=not self.progress):
            results[cell.name] = self.cell(cell)
        table = outcome_table(cells, results, c)
        summary = gap_summary(cells, results, c)
        write_table(table, self.out / c.experiment, config=dataclasses.asdict(c))
        write_table(summary, self.out / "summary", config=dataclasses.asdict(c))
        return table, summary



def _interval(values: np.ndarray, n_boot: int, seed: int) -> tuple[float, float, float]:
    ci = bootstrap(weighted_mean(values), len(values), n_boot=n_boot, seed=seed)
    return float(ci.estimate), float(ci.low), float(ci.high)


def outcome_table(cells: Sequence[Cell], results: Mapping[str, Mapping[str, np.ndarray]],
                  config: GridConfig) -> pd.DataFrame:
    """One row per (cell, decoding): accuracy and its paired change against the baseline, with CIs."""
    rows = []
    for cell in cells:
        for decoding, correct in results[cell.name].items():
            base = results["baseline"][decoding]
            acc, acc_low, acc_high = _interval(correct.astype(float), config.n_boot, config.seed)
            delta, low, high = _interval(correct.astype(float) - base, config.n_boot, config.seed)
            rows.append({
                "experiment": config.experiment, "intervention": cell.intervention, "set_kind": cell.kind,
                "k": cell.k, "seed": cell.seed, "set_size": len(cell.neurons), "decoding": decoding,
                "n_prompts": len(correct), "accuracy": acc, "accuracy_low": acc_low,
                "accuracy_high": acc_high, "baseline_accuracy": float(base.mean()),
                "delta": delta, "delta_low": low, "delta_high": high,
            })
    return pd.DataFrame(rows)


def gap_summary(cells: Sequence[Cell], results: Mapping[str, Mapping[str, np.ndarray]],
                config: GridConfig) -> pd.DataFrame:
    """Per (intervention, k, decoding): the deltas of each kind and the paired gaps with CIs.

    The random control of a prompt is its mean correctness over the random seeds, so the
    effective-minus-random gap compares the effective set with the average matched set.
    """
    rows = []
    for intervention in config.interventions:
        for k in config.k:
            mine = {kind: [c for c in cells if (c.intervention, c.k, c.kind) == (intervention, k, kind)]
                    for kind in ("effective", "redundant", "random")}
            for decoding in config.decodings:
                base = results["baseline"][decoding].astype(float)

                def outcome(kind: str) -> np.ndarray:
                    return np.mean([results[c.name][decoding] for c in mine[kind]], axis=0)

                effective, redundant = outcome("effective"), outcome("redundant")
                row = {"intervention": intervention, "k": k, "decoding": decoding,
                       "effective_size": len(mine["effective"][0].neurons),
                       "redundant_size": len(mine["redundant"][0].neurons),
                       "baseline_accuracy": base.mean(),
                       "effective_delta": effective.mean() - base.mean(),
                       "redundant_delta": redundant.mean() - base.mean()}
                gaps = {"effective_minus_redundant": effective - redundant}
                if mine["random"]:
                    random = outcome("random")
                    row["random_delta"] = random.mean() - base.mean()
                    gaps["effective_minus_random"] = effective - random
                for name, values in gaps.items():
                    row[name], row[f"{name}_low"], row[f"{name}_high"] = _interval(
                        values, config.n_boot, config.seed)
                rows.append(row)
    return pd.DataFrame(rows)


def format_report(table: pd.DataFrame, summary: pd.DataFrame) -> str:
    """The outcome table and the gap summary as plain text, for the terminal."""
    def with_interval(df: pd.DataFrame, column: str) -> pd.Series:
        return df.apply(lambda r: f"{r[column]:+.3f} [{r[column + '_low']:+.3f}, "
                                  f"{r[column + '_high']:+.3f}]", axis=1)

    outcomes = table[["intervention", "set_kind", "k", "seed", "set_size", "decoding", "accuracy"]].copy()
    outcomes["delta [95% CI]"] = with_interval(table, "delta")
    gaps = summary[["intervention", "k", "decoding", "effective_delta", "redundant_delta"]].copy()
    if "random_delta" in summary:
        gaps["random_delta"] = summary["random_delta"]
        gaps["eff-random [95% CI]"] = with_interval(summary, "effective_minus_random")
    gaps["eff-redundant [95% CI]"] = with_interval(summary, "effective_minus_redundant")
    return (outcomes.to_string(index=False, float_format="{:.3f}".format) + "\n\n"
            + gaps.to_string(index=False, float_format="{:+.3f}".format))


def resolve_variant(name: str, family: str | None) -> str:
    """``name`` as a model reference: the HF directory ``family/name`` when a family is given.

    A family is any directory of variant directories: a built zoo, or mergekit outputs.
    """
    if family is None:
        return name
    root = Path(family).expanduser()
    if not root.is_dir():
        raise NexError(f"family directory {root} does not exist: build it with `nex-causal zoo build`")
    if Path(name).name == name and (root / name / "config.json").is_file():
        return str(root / name)
    known = sorted(p.name for p in root.iterdir() if (p / "config.json").is_file())
    raise NexError(f"no variant {name!r} in family {root}: use one of {', '.join(known) or '(none)'}")


def run_grid(config: GridConfig, out: str | os.PathLike, *, progress: bool = True
             ) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Load what ``config`` names and run its grid into ``out`` (resuming what is there)."""
    weights = load_weights(config.weights)
    taskset = load_tasks(config.tasks, seed=config.task_seed)

    def load(name: str):
        return load_bridge(resolve_variant(name, config.family), device=config.device, dtype=config.dtype)

    model = load(config.model)
    donor = load(config.donor) if config.experiment == "transfer" else None
    return Grid(model, taskset, config, out, donor=donor, progress=progress).run(weights)
