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
import json
import os
import warnings
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from tqdm.auto import tqdm

from nex_causal.errors import NexError
from nex_causal.intervene.base import INTERVENTIONS, OUTCOMES, Resources
from nex_causal.intervene.cells import Cell, GridConfig
from nex_causal.intervene.neuron_sets import (
    NeuronSet,
    bottom_redundant,
    check_weights_fit,
    matched_random,
    top_effective,
)
from nex_causal.intervene.outcomes import Inputs
from nex_causal.intervene.patching import activation_means, intervened
from nex_causal.intervene.tables import (
    dose_label,
    gap_summary,
    kind_values,
    outcome_table,
    pair_gaps,
)
from nex_causal.io import atomic_path, write_json, write_table
from nex_causal.models.generation import encode_prompts, generate, sequence_seed
from nex_causal.models.loading import load_bridge
from nex_causal.models.tasks import TaskSet, load_tasks
from nex_causal.models.variants import variant_dir
from nex_causal.nex import load_weights
from nex_causal.resume import CLAIM_FILE, claim, discard_stale

MEANS_FILE = "means.npy"


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


def run_grids(grids: Sequence[tuple[GridConfig, Path]], *, root: str | os.PathLike | None = None,
              progress: bool = True) -> list[tuple[dict, pd.DataFrame, pd.DataFrame]]:
    """Run each ``(config, out)`` grid in order, resuming what is there; (per-prompt gaps, outcome table, summary)
    of each. One grid's models are released before the next grid loads its own.

    With ``root`` (the run directory that owns them), a grid directory made by another config,
    other weights or other versions is removed first, never resumed.
    """
    done = []
    for config, out in grids:
        if root is not None:
            discard_stale(out, config.content(), stamp_file=CLAIM_FILE, root=root)
        model, donor = load_grid_models(config)
        grid = Grid(model, load_tasks(config.tasks, seed=config.task_seed), config, out, donor=donor,
                    progress=progress)
        table, summary = grid.run(load_weights(config.weights))
        done.append((grid.gaps, table, summary))
        del grid, model, donor
    return done


def run_grid(config: GridConfig, out: str | os.PathLike, *, root: str | os.PathLike | None = None,
             progress: bool = True) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Load what ``config`` names and run its grid into ``out`` (resuming what is there)."""
    _, table, summary = run_grids([(config, Path(out))], root=root, progress=progress)[0]
    return table, summary
