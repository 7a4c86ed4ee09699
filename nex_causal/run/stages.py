"""The experiment runner's stages, each one registered definition.

A stage declares its name, the stages whose results it reads (``needs``), the dataclass of
its config section (``section``, with ``default``: an instance turns it on unless the
config says ``null``, ``None`` leaves it off unless configured; ``bool`` sections are
switches), and the function that does its work on a ``RunDir`` (``run.layout``). The
runner derives the order from ``needs``, keys each stage by its section and the keys it
reads, and builds the experiment config's sections from this registry, so a new stage is
one decorated function here:

    @stage("positive_control", needs=("nex", "ranking"), section=PositiveControlConfig, default=None)
    def positive_control(run): ...
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from nex_causal.cache import CAPTURE_FILE
from nex_causal.capture.config import CaptureConfig
from nex_causal.errors import NexError
from nex_causal.intervene.cells import GridConfig
from nex_causal.io import write_table
from nex_causal.nex import NexConfig
from nex_causal.ranking.config import RankingConfig, SweepConfig
from nex_causal.registry import Registry
from nex_causal.run.family import FamilySpec
from nex_causal.run.layout import RunDir
from nex_causal.selectors import SelectionConfig
from nex_causal.selectors.config import StopConfig
from nex_causal.settings import section as section_of

RUN_LEVEL = ("model", "tasks", "device", "dtype")  # set by the experiment for every variant at once
CaptureSection = section_of(CaptureConfig, RUN_LEVEL, "CaptureSection")
GRID_RUN_LEVEL = ("experiment", "weights", "recipient_weights", "caches", "truth", "family", "device", "dtype")
GridSection = section_of(GridConfig, GRID_RUN_LEVEL, "GridSection")
TransferSection = section_of(GridConfig, (*GRID_RUN_LEVEL, "recipient", "donor"), "TransferSection", extra=[
    ("pairs", list[str], dataclasses.field(metadata={
        "help": "donor>recipient pairs of the family; each runs its own grid on the donor's NEX weights"})),
    ("both_directions", bool, dataclasses.field(default=True, metadata={"help": "run every pair both ways"})),
    ("donor_ablation", list[str], dataclasses.field(default_factory=list, metadata={
        "help": "ablations (zero, mean) of the same kinds of sets inside each donor itself, same outcomes "
                "(default: none)"})),
])
TRANSFER_ONLY = ("pairs", "both_directions", "donor_ablation")  # the transfer section's fields no grid takes


@dataclass(frozen=True)
class Stage:
    """A runner stage (see the module docstring)."""

    run: Callable[[RunDir], dict | None]
    needs: tuple[str, ...] = ()
    section: type | None = None
    default: Any = None
    run_level: tuple[str, ...] = ()  # experiment-wide config fields its result also depends on


STAGES: Registry[Stage] = Registry("stage", providers=("nex_causal.run.stages",
                                                      "nex_causal.run.positive_control"))


def stage(name: str, *, needs: tuple[str, ...] = (), section: type | None = None, default: Any = None,
          run_level: tuple[str, ...] = ()) -> Callable[[Callable], Stage]:
    """Register the decorated function as the stage ``name``."""
    return lambda run: STAGES.add(name, Stage(run, needs, section, default, run_level))


def order() -> list[str]:
    """The stages in an order where each comes after the stages it needs (registration order otherwise)."""
    done: list[str] = []
    pending = list(STAGES)
    while pending:
        ready = [n for n in pending if all(d in done for d in STAGES[n].needs)]
        if not ready:
            raise NexError(f"stages {', '.join(pending)} need each other (or an unknown stage): break the cycle")
        done.append(ready[0])
        pending.remove(ready[0])
    return done


@stage("family", run_level=("family", "zoo_seed"))
def family(run: RunDir) -> dict:
    """The family: an embedded organism's zoo (``zoo``, ``zoo:seek``), built or reused; named models (``models:A,B``),
    each a variant as it is; or a directory with a family.csv (``run.family``)."""
    spec = FamilySpec.parse(run.config.family)
    return {"family_dir": str(spec.materialise(run.dir, seed=run.config.zoo_seed, progress=run.progress))}


@stage("capture", needs=("family",), section=CaptureSection, default=CaptureSection(),
       run_level=("variants", "tasks", "dtype"))
def capture(run: RunDir) -> None:
    """One SparseCache per variant: sampled responses with sparse MLP activations."""
    from nex_causal.capture.record import capture as capture_cache
    from nex_causal.capture.record import discard_stale
    from nex_causal.models.loading import load_bridge

    c = run.config
    for variant in run.variants():
        config = CaptureConfig(model=variant, tasks=c.tasks, device=c.device, dtype=c.dtype,
                               **dataclasses.asdict(c.capture))
        out = run.cache(variant)
        discard_stale(config, out, root=run.dir)  # made by an earlier config, other versions, or a damaged record
        if (out / CAPTURE_FILE).is_file():
            continue
        bridge = load_bridge(run.variant_path(variant), device=c.device, dtype=c.dtype)
        capture_cache(config, out, bridge=bridge, progress=run.progress)


@stage("nex", needs=("capture",), section=NexConfig, default=NexConfig())
def nex(run: RunDir) -> None:
    """Per variant, NEX weights self-calibrated on its own cache, and GMF scores."""
    from nex_causal.cache import SparseCache
    from nex_causal.nex import (
        learn,
        load_weights,
        log_gap,
        save_weights,
        score_responses,
        write_scores,
    )
    from nex_causal.nex.tables import trace_table, weights_table
    from nex_causal.nex.weights import learned_identity, save_credit

    c, rows, best = run.config.nex, [], None
    for variant in run.variants():
        cache = SparseCache.open(run.cache(variant), in_pass=True)  # checked as learning and scoring read it
        cal = learn(cache, c, progress=run.progress, keep_traces=True)
        gmf = score_responses(cache, cal.weights, run.progress)
        cache.settle()
        save_weights(run.weights(variant), cal.weights, learned_identity(cache, c))
        save_credit(run.weights(variant), cal.eff, cal.red)
        summary = write_scores(run.weights(variant).parent, gmf, **dataclasses.asdict(c))
        rows.append({"variant": variant, **summary, "log_gap": log_gap(summary["nex_score"]),
                     "n_effective": int((cal.weights > 0).sum()), "n_redundant": int((cal.weights < 0).sum())})
        for r, trace in enumerate(cal.traces):
            if best is None or len(trace.cycles) > len(best[2].cycles):
                best = (variant, r, trace)
    config = run.section_config("nex")
    write_table(pd.DataFrame(rows), run.tables("nex"), config=config)
    focus = run.variants()[0]  # the first transfer donor, else the ablated model, else the first variant
    if run.config.transfer:
        from nex_causal.intervene.pairs import pairs_of

        focus = pairs_of(run.config.transfer.pairs)[0][0]
    elif run.config.ablation:
        focus = run.config.ablation.recipient
    weights = load_weights(run.weights(focus))
    write_table(weights_table(weights).assign(variant=focus), run.tables("neuron_weights"), config=config)
    variant, r, trace = best
    write_table(trace_table(trace).assign(variant=variant, response=r), run.tables("trace"), config=config)


@stage("profile", needs=("capture",), section=bool, default=True, run_level=("nex",))
def profile(run: RunDir) -> None:
    """What NEX can read in each variant's cache under the run's NEX settings, and where its credit comes from:
    medians, every response, slopes, reuse by cycle index."""
    from nex_causal.cache import SparseCache
    from nex_causal.nex import learn
    from nex_causal.nex.diagnostics import diagnose_credit
    from nex_causal.nex.profile import diagnose, profile_of, reference_cache, slope_curve
    from nex_causal.run.doctor import shared_dir

    caches = {variant: (SparseCache.open(run.cache(variant)), None) for variant in run.variants()}
    if (reference := reference_cache(shared_dir())) is not None:
        caches["reference"] = (reference, 36 * 9728)
    medians, responses, curves, reuse = [], [], [], []
    for variant, (cache, n_neurons) in caches.items():
        cal = learn(cache, run.config.nex, progress=False, keep_traces=True)
        p, credit = profile_of(cache, cal, n_neurons), diagnose_credit(cache, cal.weights, run.config.nex)
        medians.append({"variant": variant, **p.summary(), **credit.summary(), "diagnosis": "; ".join(diagnose(p))})
        responses.append(pd.concat([p.responses, credit.responses], axis=1).assign(variant=variant))
        curves.append(slope_curve(cal.traces).assign(variant=variant))
        reuse.append(credit.reuse_by_cycle.assign(variant=variant))
    config = run.section_config("profile")
    write_table(pd.DataFrame(medians), run.tables("profile"), config=config)
    write_table(pd.concat(responses, ignore_index=True), run.tables("profile_responses"), config=config)
    write_table(pd.concat(curves, ignore_index=True), run.tables("profile_curve"), config=config)
    write_table(pd.concat(reuse, ignore_index=True), run.tables("profile_reuse"), config=config)


@stage("sweep", needs=("family", "capture"), section=SweepConfig, default=None)
def sweep(run: RunDir) -> None:
    """Which window, sparsifier and HMM settings let NEX rank the family (token-level captures only)."""
    from nex_causal.ranking.sweep import run_sweep

    table, choice = run_sweep(run.family(), run.dir / "caches", run.config.sweep, run.dir / "sweep",
                              progress=run.progress)
    config = run.section_config("sweep")
    write_table(table, run.tables("sweep"), config=config)
    write_table(choice, run.tables("sweep_choice"), config=config)


def learned_weights(run: RunDir) -> dict[str, np.ndarray]:
    """The weights the nex stage learned on each variant's cache, with the run's NEX settings, by cache directory."""
    from nex_causal.nex import load_weights

    return {str(run.cache(v)): load_weights(run.weights(v)) for v in run.variants()}


@stage("selection", needs=("nex",), section=SelectionConfig, default=SelectionConfig(), run_level=("nex",))
def selection(run: RunDir) -> None:
    """Best-of-N accuracy of every selector on every variant's cache, NEX under the run's settings."""
    from nex_causal.selectors import selection_table

    table = selection_table([run.cache(v) for v in run.variants()], run.config.selection, nex=run.config.nex,
                            learned=learned_weights(run), progress=run.progress)
    table["cache"] = [Path(p).name for p in table["cache"]]
    write_table(table, run.tables("selection"), config=run.section_config("selection"))


@stage("ranking", needs=("nex",), section=RankingConfig, default=RankingConfig(), run_level=("nex",))
def ranking(run: RunDir) -> None:
    """Label-free model scores against accuracy, NEX under the run's settings, and the inverted-U."""
    from nex_causal.ranking.agreement import ranking_tables

    family = run.family()
    family = family[family["name"].astype(str).isin(run.variants())]
    learned = {Path(path).name: weights for path, weights in learned_weights(run).items()}
    tables, notes = ranking_tables(family, [run.dir / "caches"], run.config.ranking, nex=run.config.nex,
                                   learned=learned, progress=run.progress)
    for name, table in tables.items():
        write_table(table.assign(caches="caches"), run.tables(name), config=run.section_config("ranking"))
    for note in notes:
        print(f"note: {note}")


@stage("transfer", needs=("nex",), section=TransferSection, default=None)
def transfer(run: RunDir) -> None:
    """Neuron transfer over donor>recipient pairs with every unit scorer, its summary over pairs, and (with
    ``donor_ablation``) the same kinds of sets ablated inside each donor. Each grid reads the donor's and the
    recipient's NEX weights and the donor's cache from the run, and the planted truth where the organism has one."""
    from nex_causal.intervene.grid import run_grids
    from nex_causal.intervene.pairs import pairs_of, run_pairs

    section = run.config.transfer
    settings = {k: v for k, v in dataclasses.asdict(section).items() if k not in TRANSFER_ONLY}
    settings.update(family=str(run.family_dir), device=run.config.device, dtype=run.config.dtype)
    pairs = pairs_of(section.pairs, section.both_directions)
    captured = set(run.variants())

    def inputs_of(donor: str, recipient: str) -> dict:
        truth = planted_truth(run, donor, recipient)
        return {"weights": str(run.weights(donor)),
                "recipient_weights": str(run.weights(recipient)) if recipient in captured else None,
                "caches": (str(run.cache(donor)),), "truth": None if truth is None else str(truth)}

    table, summary, pooled, scorers = run_pairs(settings, pairs, inputs_of, run.dir / "transfer",
                                                progress=run.progress)
    fields = dataclasses.asdict(section)
    write_table(table, run.tables("transfer"), config=fields)
    write_table(summary, run.tables("transfer_summary"), config=fields)
    write_table(pooled, run.tables("transfer_pairs"), config=fields)
    write_table(scorers, run.tables("transfer_scorers"), config=fields)
    if section.donor_ablation:
        donors = list(dict.fromkeys(donor for donor, _ in pairs))
        grids = [(GridConfig(**{**settings, "experiment": "ablate", "recipient": donor, "donor": None,
                                "weights": str(run.weights(donor)), "caches": (str(run.cache(donor)),),
                                "interventions": tuple(section.donor_ablation)}),
                  run.dir / "transfer" / f"ablate__{donor}") for donor in donors]
        done = run_grids(grids, root=run.dir / "transfer", progress=run.progress)
        write_table(pd.concat([t.assign(donor=d) for d, (_, t, _, _) in zip(donors, done)], ignore_index=True),
                    run.tables("donor_ablation"), config=fields)
        write_table(pd.concat([s.assign(donor=d) for d, (_, _, s, _) in zip(donors, done)], ignore_index=True),
                    run.tables("donor_ablation_summary"), config=fields)


def planted_truth(run: RunDir, donor: str, recipient: str) -> Path | None:
    """Where the units that carry the difference between ``donor`` and ``recipient`` are known by construction (a
    localized organism, ``zoo.localize``), that set written into the run; else None."""
    from nex_causal.intervene.neuron_sets import NeuronSet
    from nex_causal.models.variants import variant_dir
    from nex_causal.zoo.build import planted_units

    keys = planted_units(variant_dir(donor, run.family_dir), variant_dir(recipient, run.family_dir))
    if keys is None:
        return None
    path = run.dir / "transfer" / f"truth__{donor}__{recipient}.csv"
    NeuronSet("planted", keys).save(path)
    return path


@stage("ablation", needs=("nex",), section=GridSection, default=None)
def ablation(run: RunDir) -> None:
    """Effective-vs-redundant ablation inside one variant, on its own NEX weights."""
    from nex_causal.intervene.grid import run_grid

    section = run.config.ablation
    fields = dataclasses.asdict(section)
    config = GridConfig(experiment="ablate", weights=str(run.weights(section.recipient)), family=str(run.family_dir),
                        caches=(str(run.cache(section.recipient)),), device=run.config.device,
                        dtype=run.config.dtype, **fields)
    outcomes, summary = run_grid(config, run.dir / "ablation", root=run.dir, progress=run.progress)
    write_table(outcomes, run.tables("ablate"), config=fields)
    write_table(summary, run.tables("ablate_summary"), config=fields)


@stage("stop", needs=("capture",), section=StopConfig, default=None, run_level=("nex", "tasks"))
def stop(run: RunDir) -> None:
    """Stop rules on each variant: a calibration cache captured on the section's calibration prompts (the capture
    section's settings) sets every cutoff; accuracy against tokens over each rule's sweep and tokens saved at matched
    accuracy are measured on the run's own cache (``selectors.frontier``)."""
    from nex_causal.capture.record import capture as capture_cache
    from nex_causal.capture.record import discard_stale
    from nex_causal.models.loading import load_bridge
    from nex_causal.models.tasks import load_tasks
    from nex_causal.selectors.frontier import evaluate_caches

    c, section = run.config, run.config.stop
    if section.calibration is None:
        raise NexError("the stop section needs calibration: a task spec of prompts other than the run's tasks "
                       "(e.g. scout:32@7), on which the cutoffs are set")
    pareto, matched = [], []
    for variant in run.variants():
        config = CaptureConfig(model=variant, tasks=section.calibration, device=c.device, dtype=c.dtype,
                               **dataclasses.asdict(c.capture))
        out = run.dir / "stop" / variant / "calibration"
        discard_stale(config, out, root=run.dir)
        bridge = load_bridge(run.variant_path(variant), device=c.device, dtype=c.dtype)
        if not (out / CAPTURE_FILE).is_file():
            capture_cache(config, out, bridge=bridge, progress=run.progress)
        p, m = evaluate_caches(str(out), str(run.cache(variant)), load_tasks(section.calibration), load_tasks(c.tasks),
                               bridge, section, c.nex, progress=run.progress)
        pareto.append(p.assign(variant=variant))
        matched.append(m.assign(variant=variant))
    config = run.section_config("stop")
    write_table(pd.concat(pareto, ignore_index=True), run.tables("stop_pareto"), config=config)
    write_table(pd.concat(matched, ignore_index=True), run.tables("stop_matched"), config=config)


@stage("figures", needs=("nex", "profile", "sweep", "selection", "ranking", "transfer", "ablation", "positive_control",
                         "stop"),
       section=bool, default=True)
def figures(run: RunDir) -> dict:
    """The paper's figures from the tables, and report.md with the headline tables."""
    from nex_causal.figures import FIGURES, make_figures
    from nex_causal.run.report import write_report

    drawn, skipped = [], {}
    for name in FIGURES:
        try:
            drawn += make_figures(run.dir, names=[name])
        except NexError as err:  # e.g. no neuron was credited: nothing to plot
            skipped[name] = str(err)
            print(f"[figures] skipped {name}: {err}")
    write_report(run.dir, drawn, skipped)
    return {"figures": [str(f) for f in drawn], "skipped": skipped}
