"""The causal neuron experiments as grids of cells: transfer between variants, ablation inside one model.

Transfer (NEX_METHOD section 7): for each k of a dose range and each set kind -- the top-k
effective neurons, the bottom-k redundant neurons, and random sets matched to the
effective set layer by layer (several seeds) -- the recipient receives the donor's
neurons through each registered transfer intervention (weight transplant, activation
patching in lock step), and its accuracy on held-out prompts with verifiable answers is
measured, greedy and sampled. Ablation is the reverse direction: the same sets are
silenced inside one model by each registered ablation (zero, mean).

Every (set kind, k, seed, intervention) is a *cell*. A cell's per-prompt correctness is
written atomically under ``<out>/cells/`` as soon as it is measured, and a rerun skips the
cells already there (the directory is claimed for its config, ``nex_causal.resume``), so an
interrupted grid resumes where it stopped. ``intervene.tables`` turns the cells into the
outcome table and the gap summary.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from tqdm.auto import tqdm

from nex_causal.errors import NexError
from nex_causal.evaluate import evaluate
from nex_causal.intervene.base import EXPERIMENTS, INTERVENTIONS, Resources, of_experiment
from nex_causal.intervene.neuron_sets import NeuronSet, bottom_redundant, check_weights_fit, matched_random, top_effective
from nex_causal.intervene.patching import activation_means, intervened
from nex_causal.intervene.tables import gap_summary, outcome_table
from nex_causal.io import atomic_path, write_json, write_table
from nex_causal.models import load_bridge
from nex_causal.nex import load_weights
from nex_causal.resume import claim
from nex_causal.sampling import encode_prompts, generate, sequence_seed
from nex_causal.tasks import TaskSet, load_tasks
from nex_causal.variants import variant_dir

DECODINGS = ("greedy", "sampled")
MEANS_FILE = "means.npy"
RESUME_FREE = ("device", "batch_size", "n_boot")  # settings that do not change a cell's result


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
    k: tuple[int, ...] = field(default=(8, 32, 128, 512), metadata={"help": "set sizes"})
    seeds: int = field(default=5, metadata={"help": "matched random sets per k"})
    interventions: tuple[str, ...] | None = field(default=None, metadata={
        "help": "interventions to run (default: every one of the experiment's)"})
    sets: tuple[str, ...] = field(default=(), metadata={
        "help": "your own neuron sets, run beside the grid: CSV/parquet files with columns layer, unit"})
    decodings: tuple[str, ...] = field(default=DECODINGS, metadata={"help": "greedy and/or sampled"})
    temperature: float = field(default=0.7, metadata={"help": "temperature of sampled decoding"})
    top_p: float = field(default=1.0, metadata={"help": "nucleus mass of sampled decoding"})
    max_new_tokens: int = field(default=256, metadata={"help": "tokens generated per prompt"})
    chat: bool = field(default=False, metadata={"help": "wrap prompts in the tokenizer's chat template"})
    seed: int = field(default=0, metadata={"help": "seed of random sets, sampling and bootstrap"})
    task_seed: int = field(default=1, metadata={"help": "seed drawing the prompts"})
    n_boot: int = field(default=1000, metadata={"help": "bootstrap resamples"})
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
        object.__setattr__(self, "decodings", tuple(self.decodings))
        object.__setattr__(self, "sets", tuple(str(p) for p in self.sets))
        if not self.decodings or set(self.decodings) - set(DECODINGS):
            raise NexError(f"decodings must be among {', '.join(DECODINGS)}, got {self.decodings}")
        if "sampled" in self.decodings and self.temperature <= 0:
            raise NexError(f"sampled decoding needs a temperature > 0, got {self.temperature}")
        if self.seeds < 0 or self.max_new_tokens < 1 or self.n_boot < 1 or self.batch_size < 1:
            raise NexError("seeds must be >= 0 and max_new_tokens, n_boot, batch_size >= 1")
        if any(INTERVENTIONS[i].needs_donor for i in interventions) and not self.donor:
            raise NexError(f"a {self.experiment} needs a donor: pass --donor")

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
            intervention = INTERVENTIONS[cell.intervention].make(cell.neurons, Resources(self.donor, self.means))
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
        table = outcome_table(cells, results, c)
        summary = gap_summary(cells, results, c)
        write_table(table, self.out / c.experiment, config=dataclasses.asdict(c))
        write_table(summary, self.out / "summary", config=dataclasses.asdict(c))
        return table, summary


def run_grid(config: GridConfig, out: str | os.PathLike, *, progress: bool = True
             ) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Load what ``config`` names and run its grid into ``out`` (resuming what is there)."""
    weights = load_weights(config.weights)
    taskset = load_tasks(config.tasks, seed=config.task_seed)

    def load(name: str):
        return load_bridge(variant_dir(name, config.family), device=config.device, dtype=config.dtype)

    model = load(config.recipient)
    donor = load(config.donor) if any(INTERVENTIONS[i].needs_donor for i in config.interventions) else None
    return Grid(model, taskset, config, out, donor=donor, progress=progress).run(weights)
