"""The causal neuron experiments as grids of cells: transfer between variants, ablation inside one model.

Transfer (NEX_METHOD section 7): for each k of a dose range and each unit scorer
(``intervene.scorers``: NEX's effective and redundant neurons, the label-free stories a NEX
weight must beat, and the field's localization methods), the recipient receives the donor's
top-k units through each registered transfer intervention (weight transplant, activation
patching in lock step), and its outcomes on held-out prompts are measured
(``intervene.outcomes``: accuracy, and teacher-forced log-probabilities that cost one forward
pass, so the nulls can have many sets). Beside them: two null distributions of random sets
(matched to NEX's effective set layer by layer, and also on activation mass and weight
difference), a set known to carry the difference when there is one (``truth``), the
ceilings (every MLP unit of the differing layers, all attention weights, the embeddings,
the norms) and the whole donor. Ablation is the reverse direction: the same kinds of sets
silenced inside one model by each registered ablation (zero, mean).

Every (set kind, k, seed, intervention) is a *cell*. A cell's per-prompt outcomes are
written atomically under ``<out>/cells/`` as soon as they are measured, and a rerun skips
the cells already there (the directory is claimed for its config, ``nex_causal.resume``),
so an interrupted grid resumes where it stopped; the scorers' scores are kept as
``scores.npz``. ``intervene.tables`` turns the cells into the outcome table, the summary
with p-values, detectable effects and the verdict, and the scorers' table.
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
    check_weights_fit,
    covariate_matched,
    matched_random,
    matching_quality,
    top_scored,
    user_set,
    whole_layers,
)
from nex_causal.intervene.outcomes import Inputs
from nex_causal.intervene.patching import activation_means, intervened
from nex_causal.intervene.scorers import SCORES_FILE, Evidence, score_all
from nex_causal.intervene.tables import (
    dose_label,
    gap_summary,
    kind_values,
    outcome_table,
    pair_gaps,
    scorer_table,
)
from nex_causal.intervene.transplant import PARTS, parts_transplanted
from nex_causal.io import atomic_path, write_json, write_table
from nex_causal.models.generation import encode_prompts, generate, sequence_seed
from nex_causal.models.loading import load_bridge
from nex_causal.models.tasks import TaskSet, load_tasks
from nex_causal.models.variants import variant_dir
from nex_causal.nex import load_weights
from nex_causal.nex.weights import load_evidence
from nex_causal.resume import CLAIM_FILE, claim, discard_stale

MEANS_FILE = "means.npy"
CONTROLS_FILE = "controls.npz"  # the covariates the matched null was built from, and the differing layers
ANCHOR = "nex-effective"  # the scorer whose sets the random nulls are matched to (the paper's claim)


def doses(weights: np.ndarray | None, config: GridConfig) -> tuple[int, ...]:
    """The grid's set sizes: ``config.k``, and every neuron of positive weight when ``saturate``."""
    ks = set(config.k)
    if config.saturate and weights is not None and (positive := int((weights > 0).sum())):
        ks.add(positive)
    return tuple(sorted(ks))


def neuron_grid(scores: dict[str, tuple[np.ndarray, np.ndarray | None]], ks: Sequence[int], n_random: int,
                d_mlp: int, seed: int = 0, *, covariates: np.ndarray | None = None, n_matched: int = 0
                ) -> list[tuple[str, int, int, NeuronSet]]:
    """``(kind, k, seed, set)`` for every k: each scorer's top-k set (``scores``: name -> (scores, ties)), and
    ``n_random`` layer-matched random sets and ``n_matched`` covariate-matched ones (with ``covariates``), all
    matched to the anchor's set (``ANCHOR`` when scored, else the first scorer).

    ``seed`` orders what ties on both keys (see ``neuron_sets.top_scored``) and draws the random sets. Where a
    layer has too few units outside the anchor's set for a matched random set (k near every neuron), that k has
    no random sets, with a warning.
    """
    grid = []
    anchor = ANCHOR if ANCHOR in scores else next(iter(scores), None)
    for k in ks:
        sets = {name: top_scored(values, k, f"{name}-{k}", seed=seed, ties=ties)
                for name, (values, ties) in scores.items()}
        grid += [(name, k, 0, neurons) for name, neurons in sets.items()]
        if anchor is None or not len(sets[anchor]):
            continue
        try:
            grid += [("random", k, s, matched_random(sets[anchor], d_mlp, sequence_seed(seed, k, s),
                                                     name=f"random-{k}-{s}")) for s in range(n_random)]
            if covariates is not None:
                grid += [("matched", k, s, covariate_matched(sets[anchor], covariates, sequence_seed(seed, k, s, 1),
                                                             name=f"matched-{k}-{s}")) for s in range(n_matched)]
        except NexError as err:
            warnings.warn(f"k={k}: no matched random sets ({err})", stacklevel=2)
    return grid


def _empty(name: str) -> NeuronSet:
    return NeuronSet(name, np.zeros(0, dtype=np.uint32))


BASELINE = Cell("baseline", 0, 0, "none", _empty("baseline"))


class Grid:
    """Runs the cells of one grid into ``out``, skipping those already on disk."""

    def __init__(self, model, taskset: TaskSet, config: GridConfig, out: str | os.PathLike, *,
                 donor=None, skill: TaskSet | None = None, progress: bool = True):
        """``skill``: the attribution split (the supervised scorers' own prompts); without it, no scorer that reads
        one."""
        self.model, self.taskset, self.config, self.donor, self.skill = model, taskset, config, donor, skill
        self.out, self.progress = Path(out), progress
        self.means: np.ndarray | None = None
        self.inputs = Inputs(model, taskset, config, self.out)
        self.gaps: dict[tuple, dict[str, np.ndarray]] = {}  # (intervention, dose, outcome) -> per-prompt gaps
        self.by_scorer: pd.DataFrame | None = None  # the scorers' table, once run

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
        elif cell.part:  # a ceiling outside the MLP units: the donor's weights of that part, whole
            with parts_transplanted(self.model, self.donor, (cell.part,)):
                values = self.measure(self.model, outcomes, hooks=False)
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
        """The covariates the matched sets match on and the differing layers (``intervene.controls``), computed once
        per grid and kept under ``out``."""
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
        if c.ceiling and donor is not None:
            out["differing_layers"] = C.differing_layers(size)
        with atomic_path(path) as tmp, open(tmp, "wb") as f:
            np.savez(f, **out)
        return out

    def attribution_problems(self) -> list:
        """The attribution split's problems that the test does not hold (warned when none is left)."""
        if self.skill is None:
            return []
        tested = set(self.taskset.prompts())
        problems = [p for p in self.skill.problems if p.prompt not in tested]
        if not problems:
            warnings.warn("no attribution split: every prompt of it is one the test scores (a fixed task file draws "
                          "the same prompts for every seed); give its own prompts with attribution_tasks", stacklevel=2)
        return problems

    def attribution_pairs(self, problems: list) -> tuple[list[tuple], list[tuple]]:
        """``problems`` as (prompt, continuation) id pairs: with the donor's (or the model's own) greedy response,
        label-free; and with the task's reference solution, labelled (the donor's response again where the task
        has none)."""
        c = self.config
        prompts = encode_prompts(self.model, [p.prompt for p in problems], chat=c.chat)
        own = [g.text for g in generate(self.donor or self.model, [p.prompt for p in problems],
                                        max_new_tokens=c.max_new_tokens, batch_size=c.batch_size, chat=c.chat,
                                        hooks=False)]
        free = [(p, self.inputs.ids(t)) for p, t in zip(prompts, own)]
        if self.skill.solution is None:
            return free, free
        return free, [(p, self.inputs.ids(self.skill.solution(q))) for p, q in zip(prompts, problems)]

    def evidence(self, weights: np.ndarray | None, ties: np.ndarray | None) -> Evidence:
        """What this grid's scorers may read (``intervene.scorers.Evidence``)."""
        from nex_causal.cache import SparseCache

        c = self.config
        donor = self.donor if c.experiment == "transfer" else None
        recipient_weights = load_weights(c.recipient_weights) if c.recipient_weights else None
        problems = self.attribution_problems()
        return Evidence(self.model.cfg.n_layers, self.model.cfg.d_mlp, recipient=self.model, donor=donor,
                        weights=weights, evidence=ties, recipient_weights=recipient_weights,
                        recipient_evidence=load_evidence(c.recipient_weights) if c.recipient_weights else None,
                        caches=[SparseCache.open(p) for p in c.caches],
                        attribution=(lambda: self.attribution_pairs(problems)) if problems else None,
                        batch_size=c.batch_size, seed=c.seed, mask_steps=c.mask_steps, mask_lr=c.mask_lr)

    def scores(self, weights: np.ndarray | None, ties: np.ndarray | None) -> dict[str, tuple[np.ndarray, np.ndarray | None]]:
        """Every scorer's scores (``scorers.score_all``), computed once per grid and kept under ``out``."""
        return score_all(lambda: self.evidence(weights, ties), self.config.scorers, self.out / SCORES_FILE,
                         supervised=self.config.supervised, progress=self.progress)

    def run(self, weights: np.ndarray | None, evidence: np.ndarray | None = None
            ) -> tuple[pd.DataFrame, pd.DataFrame]:
        """Measure every cell and write the ``<experiment>``, ``summary`` and ``scorers`` tables into ``out``."""
        c = self.config
        n_layers, d_mlp = self.model.cfg.n_layers, self.model.cfg.d_mlp
        if weights is not None:
            check_weights_fit(weights, n_layers, d_mlp)
        user = [user_set(path) for path in c.sets]  # every file checked before any write
        truth = user_set(c.truth) if c.truth else None
        for neurons in (*user, *([truth] if truth is not None else [])):
            neurons.check_fits(n_layers, d_mlp)
        ks = doses(weights, c)
        claim(self.out, self.config.content(), what=f"{c.experiment} grid")
        extra = self.controls()
        scores = self.scores(weights, evidence)
        grid = neuron_grid(scores, ks, c.n_random, d_mlp, c.seed, covariates=extra.get("covariates"),
                           n_matched=c.n_matched)
        ceilings = []
        if len(extra.get("differing_layers", ())):
            ceiling = whole_layers(extra["differing_layers"], d_mlp, name="ceiling-mlp")
            grid.append(("ceiling-mlp", len(ceiling), 0, ceiling))
            ceilings = [Cell(f"ceiling-{part}", 0, 0, "transplant", _empty(f"ceiling-{part}"), part=part)
                        for part in PARTS]
        if truth is not None:
            grid.append(("truth", len(truth), 0, truth))
        grid += [(f"user-{neurons.name}", len(neurons), 0, neurons) for neurons in user]
        for kind, _, _, neurons in grid:
            if not (self.out / "sets" / f"{neurons.name}.csv").exists():
                neurons.save(self.out / "sets" / f"{neurons.name}.csv")
        if any(INTERVENTIONS[i].needs_means for i in c.interventions):
            self.means = self.reference_means()
        controls = [BASELINE]
        if self.donor is not None:
            controls.append(Cell("donor", 0, 0, "none", _empty("donor")))
        cells = controls + ceilings + [Cell(kind, k, seed, i, neurons)
                                       for i in c.interventions for kind, k, seed, neurons in grid]
        results = {}
        for cell in tqdm(cells, desc=f"{c.experiment} cells", unit="cell", disable=not self.progress):
            results[cell.name] = self.cell(cell)
        saturation = max(ks) if c.saturate and weights is not None else None
        quality = {k: self.quality(grid, k, extra["covariates"]) for k in ks} if "covariates" in extra else {}
        self.gaps = {(i, dose_label(k, saturation), o): pair_gaps(kind_values(cells, results, i, k, o, c))
                     for i in c.interventions for k in ks for o in c.outcomes}
        table = outcome_table(cells, results, c, saturation)
        summary = gap_summary(cells, results, c, ks, saturation, quality)
        by_scorer = scorer_table(cells, results, c, ks, list(scores), truth, saturation)
        write_table(table, self.out / c.experiment, config=dataclasses.asdict(c))
        write_table(summary, self.out / "summary", config=dataclasses.asdict(c))
        write_table(by_scorer, self.out / "scorers", config=dataclasses.asdict(c))
        self.by_scorer = by_scorer
        return table, summary

    def quality(self, grid: list[tuple[str, int, int, NeuronSet]], k: int, covariates: np.ndarray
                ) -> dict[str, float]:
        """How well each null matches the anchor's set of dose ``k``: standardised mean differences per covariate."""
        from nex_causal.intervene.controls import COVARIATES

        kinds = {kind for kind, _, _, _ in grid}
        anchor = ANCHOR if ANCHOR in kinds else next((kd for kd, _, _, _ in grid), None)
        sets = {kind: [n for kd, kk, _, n in grid if (kd, kk) == (kind, k)] for kind in (anchor, "random", "matched")}
        out = {}
        if not sets[anchor]:
            return out
        for kind in ("random", "matched"):
            smd = matching_quality(sets[anchor][0], sets[kind], covariates)
            out.update({f"smd_{kind}_{name}": float(v) for name, v in zip(COVARIATES[self.config.experiment], smd)})
        return out


def load_grid_models(config: GridConfig) -> tuple[object, object | None]:
    """The recipient bridge and (when an intervention needs one) the donor bridge that ``config`` names."""
    def load(name: str):
        return load_bridge(variant_dir(name, config.family), device=config.device, dtype=config.dtype)

    donor = load(config.donor) if any(INTERVENTIONS[i].needs_donor for i in config.interventions) else None
    return load(config.recipient), donor


def run_grids(grids: Sequence[tuple[GridConfig, Path]], *, root: str | os.PathLike | None = None,
              progress: bool = True) -> list[tuple[dict, pd.DataFrame, pd.DataFrame, pd.DataFrame]]:
    """Run each ``(config, out)`` grid in order, resuming what is there; (per-prompt gaps, outcome table, summary,
    scorers' table) of each. One grid's models are released before the next grid loads its own.

    With ``root`` (the run directory that owns them), a grid directory made by another config,
    other weights or other versions is removed first, never resumed.
    """
    done = []
    for config, out in grids:
        if root is not None:
            discard_stale(out, config.content(), stamp_file=CLAIM_FILE, root=root)
        model, donor = load_grid_models(config)
        skill = load_tasks(config.attribution_tasks or config.tasks, seed=config.attribution_seed)
        grid = Grid(model, load_tasks(config.tasks, seed=config.task_seed), config, out, donor=donor, skill=skill,
                    progress=progress)
        weights = load_weights(config.weights) if config.weights else None
        table, summary = grid.run(weights, load_evidence(config.weights) if config.weights else None)
        done.append((grid.gaps, table, summary, grid.by_scorer))
        del grid, model, donor
    return done


def run_grid(config: GridConfig, out: str | os.PathLike, *, root: str | os.PathLike | None = None,
             progress: bool = True) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Load what ``config`` names and run its grid into ``out`` (resuming what is there)."""
    _, table, summary, _ = run_grids([(config, Path(out))], root=root, progress=progress)[0]
    return table, summary
