"""The causal neuron experiments as grids of cells: transfer between variants, ablation inside one model.

Transfer (NEX_METHOD section 7): for each k of a dose range (up to every neuron of
positive weight) and each set kind -- the top-k effective neurons, the bottom-k redundant
neurons, and a null distribution of random sets matched to the effective set layer by
layer -- the recipient receives the donor's neurons through each registered transfer
intervention (weight transplant, activation patching in lock step), and its outcomes on
held-out prompts are measured (``intervene.outcomes``: accuracy, and teacher-forced
log-probabilities that cost one forward pass, so the null can have 50 sets). Ablation is
the reverse direction: the same sets are silenced inside one model by each registered
ablation (zero, mean).

Every (set kind, k, seed, intervention) is a *cell*. A cell's per-prompt outcomes are
written atomically under ``<out>/cells/`` as soon as they are measured, and a rerun skips
the cells already there (the directory is claimed for its config, ``nex_causal.resume``),
so an interrupted grid resumes where it stopped. ``intervene.tables`` turns the cells into
the outcome table and the summary with p-values and detectable effects.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import warnings
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from tqdm.auto import tqdm

from nex_causal.errors import NexError
from nex_causal.intervene.base import EXPERIMENTS, INTERVENTIONS, Resources, of_experiment
from nex_causal.intervene.neuron_sets import NeuronSet, bottom_redundant, check_weights_fit, matched_random, top_effective
from nex_causal.intervene.outcomes import OUTCOMES, Inputs
from nex_causal.intervene.patching import activation_means, intervened
from nex_causal.intervene.tables import dose_label, gap_summary, kind_values, outcome_table, pair_gaps
from nex_causal.io import atomic_path, write_json, write_table
from nex_causal.models import load_bridge
from nex_causal.nex import load_weights
from nex_causal.resume import claim
from nex_causal.sampling import encode_prompts, generate, sequence_seed
from nex_causal.tasks import TaskSet, load_tasks
from nex_causal.variants import variant_dir

MEANS_FILE = "means.npy"
RESUME_FREE = ("device", "batch_size", "n_boot", "level")  # settings that do not change a cell's result


@dataclass(frozen=True)
class GridConfig:
    """Everything that determines a transfer or ablation grid.

    ``recipient`` receives a transfer, or is the model ablated in place. ``family`` is
    a directory of variants in which ``recipient`` and ``donor`` are looked up by name (else
    they are anything ``load_bridge`` accepts). Evaluation prompts come from ``tasks``
    drawn with ``task_seed`` (organism specs draw from the held-out test split).
    """

    experiment: str = field(metadata={"help": "transfer or ablate"})
    recipient: str = field(metadata={"help": "the variant that receives the neurons, or the model ablated"})
    weights: str = field(metadata={"help": "NEX weights (.npz from `nex-causal nex train`)"})
    tasks: str = field(metadata={"help": "held-out prompts: organism:200, rg:<dataset>:100, or a .jsonl file"})
    donor: str | None = field(default=None, metadata={"help": "variant whose neurons are given (transfer)"})
    family: str | None = field(default=None, metadata={"help": "directory of the family whose variants are named"})
    k: tuple[int, ...] = field(default=(8, 32, 128, 512), metadata={"help": "set sizes (the dose range)"})
    saturate: bool = field(default=True, metadata={
        "help": "add the dose k = every neuron of positive weight (the range to saturation)"})
    n_random: int = field(default=50, metadata={"help": "layer-matched random sets per k (the null distribution)"})
    n_random_accuracy: int = field(default=10, metadata={
        "help": "of those, how many also measure the accuracy outcomes (generation is costly)"})
    interventions: tuple[str, ...] | None = field(default=None, metadata={
        "help": "interventions to run (default: every one of the experiment's)"})
    sets: tuple[str, ...] = field(default=(), metadata={
        "help": "your own neuron sets, run beside the grid: CSV/parquet files with columns layer, unit"})
    outcomes: tuple[str, ...] = field(default=("answer-logprob", "greedy"), metadata={
        "help": "per-prompt outcomes: greedy, sampled (accuracy), answer-logprob, solution-logprob (continuous)"})
    temperature: float = field(default=0.7, metadata={"help": "temperature of the sampled outcome"})
    top_p: float = field(default=1.0, metadata={"help": "nucleus mass of the sampled outcome"})
    max_new_tokens: int = field(default=256, metadata={"help": "tokens generated per prompt"})
    chat: bool = field(default=False, metadata={"help": "wrap prompts in the tokenizer's chat template"})
    seed: int = field(default=0, metadata={"help": "seed of random sets, sampling and bootstrap"})
    task_seed: int = field(default=1, metadata={"help": "seed drawing the prompts"})
    n_boot: int = field(default=1000, metadata={"help": "bootstrap resamples"})
    level: float = field(default=0.95, metadata={"help": "confidence level of intervals; 1 - level is the tests' size"})
    batch_size: int = field(default=32, metadata={"help": "sequences per forward pass"})
    device: str = field(default="cpu", metadata={"help": "cpu or cuda"})
    dtype: str = field(default="float32", metadata={"help": "float32 or bfloat16"})

    def __post_init__(self) -> None:
        if self.experiment not in EXPERIMENTS:
            raise NexError(f"unknown experiment {self.experiment!r}: use one of {', '.join(EXPERIMENTS)}")
        allowed = of_experiment(self.experiment)
        interventions = tuple(self.interventions or allowed)
        if bad := [i for i in interventions if i not in allowed]:
            raise NexError(f"intervention {bad[0]!r} does not belong to {self.experiment}: "
                           f"use {', '.join(allowed)}")
        object.__setattr__(self, "interventions", interventions)
        ks = tuple(int(k) for k in self.k)
        if not ks or min(ks) < 1 or len(set(ks)) != len(ks):
            raise NexError(f"k must be distinct positive integers, got {self.k}")
        object.__setattr__(self, "k", ks)
        object.__setattr__(self, "outcomes", tuple(OUTCOMES.check(self.outcomes)))
        object.__setattr__(self, "sets", tuple(str(p) for p in self.sets))
        if not self.outcomes:
            raise NexError(f"name at least one outcome: {', '.join(OUTCOMES)}")
        if "sampled" in self.outcomes and self.temperature <= 0:
            raise NexError(f"the sampled outcome needs a temperature > 0, got {self.temperature}")
        if min(self.n_random, self.n_random_accuracy) < 0 or self.max_new_tokens < 1 or self.n_boot < 1 \
                or self.batch_size < 1:
            raise NexError("n_random and n_random_accuracy must be >= 0 and max_new_tokens, n_boot, batch_size >= 1")
        if not 0 < self.level < 1:
            raise NexError(f"level must lie in (0, 1), got {self.level}")
        if any(INTERVENTIONS[i].needs_donor for i in interventions) and not self.donor:
            raise NexError(f"a {self.experiment} needs a donor: pass --donor")

    def outcomes_of(self, cell: Cell) -> tuple[str, ...]:
        """The outcomes ``cell`` measures: all, but only the continuous ones on the extra random sets."""
        if cell.kind == "random" and cell.seed >= self.n_random_accuracy:
            return tuple(o for o in self.outcomes if OUTCOMES[o].continuous)
        return self.outcomes

    def content(self) -> dict:
        """What a finished cell depends on (a resume must agree on it): the fields that change a
        result, and the content of the weights file (its path alone does not say which weights)."""
        fields = {k: v for k, v in dataclasses.asdict(self).items() if k not in RESUME_FREE}
        weights = Path(self.weights)
        return {**fields, "weights_sha256": hashlib.sha256(weights.read_bytes()).hexdigest()
                if weights.is_file() else None}


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


def doses(weights: np.ndarray, config: GridConfig) -> tuple[int, ...]:
    """The grid's set sizes: ``config.k``, and every neuron of positive weight when ``saturate``."""
    ks = set(config.k)
    if config.saturate and (positive := int((weights > 0).sum())):
        ks.add(positive)
    return tuple(sorted(ks))


def neuron_grid(weights: np.ndarray, ks: Sequence[int], n_random: int, d_mlp: int,
                seed: int = 0) -> list[tuple[str, int, int, NeuronSet]]:
    """``(kind, k, seed, set)`` for every k: effective, redundant and ``n_random`` matched random sets.

    ``seed`` orders ties in weight (see ``top_effective``) and draws the random sets. Where a
    layer has too few units outside the effective set for a matched random set (k near every
    neuron), that k has no random sets, with a warning.
    """
    grid = []
    for k in ks:
        effective = top_effective(weights, k, seed=seed)
        grid += [("effective", k, 0, effective), ("redundant", k, 0, bottom_redundant(weights, k, seed=seed))]
        try:
            grid += [("random", k, s, matched_random(effective, d_mlp, sequence_seed(seed, k, s),
                                                     name=f"random-{k}-{s}")) for s in range(n_random)]
        except NexError as err:
            warnings.warn(f"k={k}: no layer-matched random sets ({err})", stacklevel=2)
    return grid


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
        self.inputs = Inputs(model, taskset, config, self.out)
        self.gaps: dict[tuple, dict[str, np.ndarray]] = {}  # (intervention, dose, outcome) -> per-prompt gaps

    def measure(self, model, outcomes: Sequence[str], hooks: bool) -> dict[str, np.ndarray]:
        """Per-prompt values of ``outcomes`` on ``model`` (``hooks``: an activation edit is on)."""
        return {name: OUTCOMES[name].measure(self.inputs, model, hooks) for name in outcomes}

    def cell(self, cell: Cell) -> dict[str, np.ndarray]:
        """The cell's outcomes, measured now or read back from a previous run."""
        path = self.out / "cells" / f"{cell.name}.json"
        if path.exists():
            return {o: np.array(v, dtype=np.float64) for o, v in json.loads(path.read_text())["outcomes"].items()}
        outcomes = self.config.outcomes_of(cell)
        if cell.kind == "baseline":  # its greedy responses are the ones answer-logprob reads: generated once
            values = self.measure(self.model, [o for o in outcomes if o != "greedy"], hooks=False)
            if "greedy" in outcomes:
                values["greedy"] = self.inputs.untouched_greedy()
        elif cell.kind == "donor":
            values = self.measure(self.donor, outcomes, hooks=False)
        elif len(cell.neurons) == 0:  # an empty set changes nothing: the outcome is the baseline's
            values = {o: v for o, v in self.cell(BASELINE).items() if o in outcomes}
        else:
            kind = INTERVENTIONS[cell.intervention]
            intervention = kind.make(cell.neurons, Resources(self.donor, self.means))
            with intervened(self.model, [intervention]) as model:
                values = self.measure(model, outcomes, hooks=kind.uses_hooks)
        write_json(path, {"cell": {**dataclasses.asdict(cell), "neurons": cell.neurons.name},
                          "set_size": len(cell.neurons), "outcomes": {o: v.tolist() for o, v in values.items()}})
        return values

    def reference_means(self) -> np.ndarray:
        """Mean activations over the prompts and the model's own greedy responses (for mean ablation)."""
        path = self.out / MEANS_FILE
        if not path.exists():
            c = self.config
            prompts = encode_prompts(self.model, self.taskset.prompts(), chat=c.chat)
            responses = generate(self.model, self.taskset.prompts(), max_new_tokens=c.max_new_tokens,
                                 batch_size=c.batch_size, chat=c.chat, hooks=False)
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
        ks = doses(weights, c)
        grid = neuron_grid(weights, ks, c.n_random, d_mlp, c.seed)  # every set first: fail before any work
        for path in c.sets:
            neurons = NeuronSet.load(path)
            neurons.check_fits(n_layers, d_mlp)
            grid.append((f"user-{neurons.name}", len(neurons), 0, neurons))
        claim(self.out, self.config.content(), what=f"{c.experiment} grid")
        for _, _, _, neurons in grid:
            if not (self.out / "sets" / f"{neurons.name}.csv").exists():
                neurons.save(self.out / "sets" / f"{neurons.name}.csv")
        if any(INTERVENTIONS[i].needs_means for i in c.interventions):
            self.means = self.reference_means()
        controls = [BASELINE]
        if self.donor is not None:
            controls.append(Cell("donor", 0, 0, "none", _empty("donor")))
        cells = controls + [Cell(kind, k, seed, i, neurons)
                            for i in c.interventions for kind, k, seed, neurons in grid]
        results = {}
        for cell in tqdm(cells, desc=f"{c.experiment} cells", unit="cell", disable=not self.progress):
            results[cell.name] = self.cell(cell)
        saturation = max(ks) if c.saturate else None
        self.gaps = {(i, dose_label(k, saturation), o): pair_gaps(kind_values(cells, results, i, k, o))
                     for i in c.interventions for k in ks for o in c.outcomes}
        table = outcome_table(cells, results, c, saturation)
        summary = gap_summary(cells, results, c, ks, saturation)
        write_table(table, self.out / c.experiment, config=dataclasses.asdict(c))
        write_table(summary, self.out / "summary", config=dataclasses.asdict(c))
        return table, summary


def load_grid_models(config: GridConfig) -> tuple[object, object | None]:
    """The recipient bridge and (when an intervention needs one) the donor bridge that ``config`` names."""
    def load(name: str):
        return load_bridge(variant_dir(name, config.family), device=config.device, dtype=config.dtype)

    donor = load(config.donor) if any(INTERVENTIONS[i].needs_donor for i in config.interventions) else None
    return load(config.recipient), donor


def run_grid(config: GridConfig, out: str | os.PathLike, *, progress: bool = True
             ) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Load what ``config`` names and run its grid into ``out`` (resuming what is there)."""
    weights = load_weights(config.weights)
    taskset = load_tasks(config.tasks, seed=config.task_seed)
    model, donor = load_grid_models(config)
    return Grid(model, taskset, config, out, donor=donor, progress=progress).run(weights)
