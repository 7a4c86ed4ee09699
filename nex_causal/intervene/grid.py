"""The causal neuron experiments as grids of cells: transfer between variants, ablation inside one model.

Transfer (NEX_METHOD section 7): for each k of a dose range (up to every neuron of
positive weight) and each set kind -- the top-k effective neurons, the bottom-k redundant
neurons, two null distributions of random sets (matched to the effective set layer by
layer, and also on activation mass and weight difference), the supervised positive
control, and once per grid the ceiling (``intervene.controls``) -- the recipient receives
the donor's neurons through each registered transfer
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
    covariate_matched,
    matched_random,
    matching_quality,
    top_attributed,
    top_effective,
    user_set,
    whole_layers,
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
from nex_causal.nex.weights import load_evidence
from nex_causal.resume import CLAIM_FILE, claim, discard_stale

MEANS_FILE = "means.npy"
CONTROLS_FILE = "controls.npz"  # the covariates and attribution the controls were built from


def doses(weights: np.ndarray, config: GridConfig) -> tuple[int, ...]:
    """The grid's set sizes: ``config.k``, and every neuron of positive weight when ``saturate``."""
    ks = set(config.k)
    if config.saturate and (positive := int((weights > 0).sum())):
        ks.add(positive)
    return tuple(sorted(ks))


def neuron_grid(weights: np.ndarray, ks: Sequence[int], n_random: int, d_mlp: int, seed: int = 0, *,
                evidence: np.ndarray | None = None, covariates: np.ndarray | None = None, n_matched: int = 0,
                attribution: np.ndarray | None = None) -> list[tuple[str, int, int, NeuronSet]]:
    """``(kind, k, seed, set)`` for every k: effective, redundant, ``n_random`` layer-matched random sets,
    ``n_matched`` covariate-matched ones (with ``covariates``) and the supervised set (with ``attribution``).

    ``evidence`` (Eff - Red) orders ties in weight, ``seed`` what ties on both (see ``top_effective``) and
    draws the random sets. Where a layer has too few units outside the effective set for a
    matched random set (k near every neuron), that k has no random sets, with a warning.
    """
    grid = []
    for k in ks:
        effective = top_effective(weights, k, seed=seed, evidence=evidence)
        grid += [("effective", k, 0, effective),
                 ("redundant", k, 0, bottom_redundant(weights, k, seed=seed, evidence=evidence))]
        try:
            grid += [("random", k, s, matched_random(effective, d_mlp, sequence_seed(seed, k, s),
                                                     name=f"random-{k}-{s}")) for s in range(n_random)]
            if covariates is not None:
                grid += [("matched", k, s, covariate_matched(effective, covariates, sequence_seed(seed, k, s, 1),
                                                             name=f"matched-{k}-{s}")) for s in range(n_matched)]
        except NexError as err:
            warnings.warn(f"k={k}: no matched random sets ({err})", stacklevel=2)
        if attribution is not None:
            grid.append(("supervised", k, 0, top_attributed(attribution, k)))
    return grid


def _empty(name: str) -> NeuronSet:
    return NeuronSet(name, np.zeros(0, dtype=np.uint32))


BASELINE = Cell("baseline", 0, 0, "none", _empty("baseline"))


class Grid:
    """Runs the cells of one grid into ``out``, skipping those already on disk."""

    def __init__(self, model, taskset: TaskSet, config: GridConfig, out: str | os.PathLike, *,
                 donor=None, skill: TaskSet | None = None, progress: bool = True):
        """``skill``: the positive control's own prompts (the attribution split); without it, no supervised set."""
        self.model, self.taskset, self.config, self.donor, self.skill = model, taskset, config, donor, skill
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

    def controls(self) -> dict[str, np.ndarray]:
        """The covariates the matched sets match on, the positive control's attribution and the differing layers
        (``intervene.controls``), computed once per grid and kept under ``out``."""
        from nex_causal.intervene import controls as C

        path = self.out / CONTROLS_FILE
        if path.is_file():
            with np.load(path) as archive:
                return dict(archive)
        c, out = self.config, {}
        donor = self.donor if c.experiment == "transfer" else None
        size = C.unit_size(self.model, donor)
        if c.n_matched:
            sequences = [torch.cat([p, self.inputs.ids(t)]) for p, t in zip(self.inputs.prompts,
                                                                            self.inputs.recipient_texts)]
            out["covariates"] = C.covariates(self.model, donor, sequences, c.batch_size, size)
        if c.supervised and self.skill is not None and (skill := self.skill_sequences()):
            out["attribution"] = C.attribution(self.model, donor, skill, c.batch_size, size)
        if c.ceiling and donor is not None:
            out["differing_layers"] = C.differing_layers(size)
        with atomic_path(path) as tmp, open(tmp, "wb") as f:
            np.savez(f, **out)
        return out

    def skill_sequences(self) -> list[torch.Tensor]:
        """The attribution split's prompts that the test does not hold, each with the task's reference solution
        (the skill), else the donor's (or the model's own) greedy response."""
        c = self.config
        tested = set(self.taskset.prompts())
        problems = [p for p in self.skill.problems if p.prompt not in tested]
        if not problems:
            warnings.warn("no supervised positive control: every prompt of the attribution split is one the test "
                          "scores (a fixed task file draws the same prompts for every seed); give its own prompts "
                          "with attribution_tasks", stacklevel=2)
            return []
        prompts = encode_prompts(self.model, [p.prompt for p in problems], chat=c.chat)
        if self.skill.solution is not None:
            texts = [self.skill.solution(p) for p in problems]
        else:
            texts = [g.text for g in generate(self.donor or self.model, [p.prompt for p in problems],
                                              max_new_tokens=c.max_new_tokens, batch_size=c.batch_size,
                                              chat=c.chat, hooks=False)]
        return [torch.cat([p, self.inputs.ids(t)]) for p, t in zip(prompts, texts)]

    def run(self, weights: np.ndarray, evidence: np.ndarray | None = None) -> tuple[pd.DataFrame, pd.DataFrame]:
        """Measure every cell and write ``<experiment>`` and ``summary`` tables into ``out``."""
        c = self.config
        n_layers, d_mlp = self.model.cfg.n_layers, self.model.cfg.d_mlp
        check_weights_fit(weights, n_layers, d_mlp)
        ks = doses(weights, c)
        claim(self.out, self.config.content(), what=f"{c.experiment} grid")
        extra = self.controls()
        grid = neuron_grid(weights, ks, c.n_random, d_mlp, c.seed, evidence=evidence,
                           covariates=extra.get("covariates"), n_matched=c.n_matched,
                           attribution=extra.get("attribution"))
        if len(extra.get("differing_layers", ())):
            ceiling = whole_layers(extra["differing_layers"], d_mlp)
            grid.append(("ceiling", len(ceiling), 0, ceiling))
        for path in c.sets:
            neurons = user_set(path)
            neurons.check_fits(n_layers, d_mlp)
            grid.append((f"user-{neurons.name}", len(neurons), 0, neurons))
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
        quality = {k: self.quality(grid, k, extra["covariates"]) for k in ks} if "covariates" in extra else {}
        self.gaps = {(i, dose_label(k, saturation), o): pair_gaps(kind_values(cells, results, i, k, o))
                     for i in c.interventions for k in ks for o in c.outcomes}
        table = outcome_table(cells, results, c, saturation)
        summary = gap_summary(cells, results, c, ks, saturation, quality)
        write_table(table, self.out / c.experiment, config=dataclasses.asdict(c))
        write_table(summary, self.out / "summary", config=dataclasses.asdict(c))
        return table, summary

    def quality(self, grid: list[tuple[str, int, int, NeuronSet]], k: int, covariates: np.ndarray
                ) -> dict[str, float]:
        """How well each null matches the effective set of dose ``k``: standardised mean differences per covariate."""
        from nex_causal.intervene.controls import COVARIATES

        sets = {kind: [n for kd, kk, _, n in grid if (kd, kk) == (kind, k)] for kind in ("effective", "random",
                                                                                      "matched")}
        out = {}
        for kind in ("random", "matched"):
            smd = matching_quality(sets["effective"][0], sets[kind], covariates)
            out.update({f"smd_{kind}_{name}": float(v) for name, v in zip(COVARIATES[self.config.experiment], smd)})
        return out


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
        skill = load_tasks(config.attribution_tasks or config.tasks, seed=config.attribution_seed) \
            if config.supervised else None
        grid = Grid(model, load_tasks(config.tasks, seed=config.task_seed), config, out, donor=donor, skill=skill,
                    progress=progress)
        table, summary = grid.run(load_weights(config.weights), load_evidence(config.weights))
        done.append((grid.gaps, table, summary))
        del grid, model, donor
    return done


def run_grid(config: GridConfig, out: str | os.PathLike, *, root: str | os.PathLike | None = None,
             progress: bool = True) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Load what ``config`` names and run its grid into ``out`` (resuming what is there)."""
    _, table, summary = run_grids([(config, Path(out))], root=root, progress=progress)[0]
    return table, summary
