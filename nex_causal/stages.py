"""The experiment runner's stages, each one registered definition.

A stage declares its name, the stages whose results it reads (``needs``), the dataclass of
its config section (``section``, with ``default``: an instance turns it on unless the
config says ``null``, ``None`` leaves it off unless configured; ``bool`` sections are
switches), and the function that does its work on a ``Run`` (``experiment.Run``). The
runner derives the order from ``needs``, keys each stage by its section and the keys it
reads, and builds the experiment config's sections from this registry, so a new stage is
one decorated function here:

    @stage("inspect", needs=("capture",), section=InspectConfig, default=None)
    def inspect(run): ...
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pandas as pd

from nex_causal.cache import CAPTURE_FILE
from nex_causal.capture import CaptureConfig
from nex_causal.errors import NexError
from nex_causal.intervene.grid import GridConfig
from nex_causal.io import write_table
from nex_causal.nex import NexConfig
from nex_causal.ranking import RankingConfig
from nex_causal.registry import Registry
from nex_causal.resume import mismatch, read_stamp
from nex_causal.selectors import SelectionConfig
from nex_causal.settings import section as section_of
from nex_causal.sweep import SweepConfig

if TYPE_CHECKING:
    from nex_causal.experiment import Run

RUN_LEVEL = ("model", "tasks", "device", "dtype")  # set by the experiment for every variant at once
CaptureSection = section_of(CaptureConfig, RUN_LEVEL, "CaptureSection")
GRID_RUN_LEVEL = ("experiment", "weights", "family", "device", "dtype")
GridSection = section_of(GridConfig, GRID_RUN_LEVEL, "GridSection")
TransferSection = section_of(GridConfig, (*GRID_RUN_LEVEL, "recipient", "donor"), "TransferSection", extra=[
    ("pairs", list[str], dataclasses.field(metadata={
        "help": "donor>recipient pairs of the family; each runs its own grid on the donor's NEX weights"})),
    ("both_directions", bool, dataclasses.field(default=True, metadata={"help": "run every pair both ways"})),
])


@dataclass(frozen=True)
class Stage:
    """A runner stage (see the module docstring)."""

    run: Callable[[Run], dict | None]
    needs: tuple[str, ...] = ()
    section: type | None = None
    default: Any = None
    run_level: tuple[str, ...] = ()  # experiment-wide config fields its result also depends on


STAGES: Registry[Stage] = Registry("stage")


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


MODELS_PREFIX = "models:"  # family: models:A,B is a family of the named models (no merges)


@stage("family", run_level=("family", "zoo_seed"))
def family(run: Run) -> dict:
    """The family: an embedded organism's zoo (``zoo``, ``zoo:seek``), built or reused; named models (``models:A,B``), each a
    variant as it is; or a directory with a family.csv."""
    from nex_causal.zoo import build, zoo_organism

    spec = run.config.family
    if (organism := zoo_organism(spec)) is not None:
        family_dir = build(seed=run.config.zoo_seed, organism=organism, progress=run.progress)
    elif spec.startswith(MODELS_PREFIX):
        family_dir = named_models(spec[len(MODELS_PREFIX):].split(","), run.dir / "family")
    else:
        family_dir = Path(spec).resolve()
        if not (family_dir / "family.csv").is_file():
            raise NexError(f"family directory {family_dir} has no family.csv; build it with "
                           "`nex-causal zoo build --out DIR` or point `family` at one")
    return {"family_dir": str(family_dir)}


def named_models(names: list[str], out: Path) -> Path:
    """A family directory whose variants are the named models (links to their directories)."""
    from nex_causal.models import resolve_model

    names = [n.strip() for n in names if n.strip()]
    if not names:
        raise NexError(f"family {MODELS_PREFIX!r} names no model: write {MODELS_PREFIX}smollm2-135m,/path/to/model")
    out.mkdir(parents=True, exist_ok=True)
    rows = []
    for name in names:
        source = resolve_model(name)
        variant = Path(name).name
        link = out / variant
        if link.is_symlink() or link.exists():
            link.unlink()
        link.symlink_to(source.resolve(), target_is_directory=True)
        rows.append({"name": variant, "path": variant, "method": "model", "params": "{}", "parents": ""})
    write_table(pd.DataFrame(rows), out / "family")
    return out


@stage("capture", needs=("family",), section=CaptureSection, default=CaptureSection(),
       run_level=("variants", "tasks", "dtype"))
def capture(run: Run) -> None:
    """One SparseCache per variant: sampled responses with sparse MLP activations."""
    from nex_causal.capture import capture as capture_cache
    from nex_causal.capture import discard_stale
    from nex_causal.models import load_bridge

    c = run.config
    for variant in run.variants():
        config = CaptureConfig(model=variant, tasks=c.tasks, device=c.device, dtype=c.dtype,
                               **dataclasses.asdict(c.capture))
        out = run.cache(variant)
        if mismatch(read_stamp(out / CAPTURE_FILE), config.content()) is None:
            continue
        discard_stale(config, out, root=run.dir)  # made by an earlier config of this experiment, or other versions
        bridge = load_bridge(run.variant_path(variant), device=c.device, dtype=c.dtype)
        capture_cache(config, out, bridge=bridge, progress=run.progress)


@stage("nex", needs=("capture",), section=NexConfig, default=NexConfig())
def nex(run: Run) -> None:
    """Per variant, NEX weights self-calibrated on its own cache, and GMF scores."""
    from nex_causal.cache import SparseCache
    from nex_causal.nex import learn, load_weights, log_gap, save_weights, score_responses, write_scores
    from nex_causal.nex.tables import trace_table, weights_table

    c, rows, best = run.config.nex, [], None
    for variant in run.variants():
        cache = SparseCache.open(run.cache(variant))
        cal = learn(cache, c, progress=run.progress, keep_traces=True)
        save_weights(run.weights(variant), cal.weights)
        summary = write_scores(run.weights(variant).parent, score_responses(cache, cal.weights, run.progress),
                               **dataclasses.asdict(c))
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


@stage("profile", needs=("capture",), section=NexConfig, default=NexConfig())
def profile(run: Run) -> None:
    """What NEX can read in each variant's cache: medians per variant, every response, the slope curve."""
    from nex_causal.cache import SparseCache
    from nex_causal.doctor import shared_dir
    from nex_causal.nex import learn
    from nex_causal.profile import diagnose, profile_of, reference_profile, slope_curve

    medians, responses, curves = [], [], []
    for variant in run.variants():
        cache = SparseCache.open(run.cache(variant))
        traces = learn(cache, run.config.profile, progress=False, keep_traces=True).traces
        p = profile_of(cache, traces)
        medians.append({"variant": variant, **p.summary(), "diagnosis": "; ".join(diagnose(p))})
        responses.append(p.responses.assign(variant=variant))
        curves.append(slope_curve(traces).assign(variant=variant))
    if (reference := reference_profile(shared_dir())) is not None:
        from nex_causal.nex import analyze_response

        trace = analyze_response(SparseCache.open(reference.path).response_rows(0))
        curves.append(slope_curve([trace]).assign(variant="reference"))
        medians.append({"variant": "reference", **reference.summary(), "diagnosis": ""})
    config = run.section_config("profile")
    write_table(pd.DataFrame(medians), run.tables("profile"), config=config)
    write_table(pd.concat(responses, ignore_index=True), run.tables("profile_responses"), config=config)
    write_table(pd.concat(curves, ignore_index=True), run.tables("profile_curve"), config=config)


@stage("sweep", needs=("family", "capture"), section=SweepConfig, default=None)
def sweep(run: Run) -> None:
    """Which window, sparsifier and HMM settings let NEX rank the family (token-level captures only)."""
    from nex_causal.sweep import run_sweep

    table, choice = run_sweep(run.family(), run.dir / "caches", run.config.sweep, run.dir / "sweep",
                              progress=run.progress)
    config = run.section_config("sweep")
    write_table(table, run.tables("sweep"), config=config)
    write_table(choice, run.tables("sweep_choice"), config=config)


@stage("selection", needs=("nex",), section=SelectionConfig, default=SelectionConfig())
def selection(run: Run) -> None:
    """Best-of-N accuracy of every selector on every variant's cache."""
    from nex_causal.selectors import selection_table

    table = selection_table([run.cache(v) for v in run.variants()], run.config.selection, progress=run.progress)
    table["cache"] = [Path(p).name for p in table["cache"]]
    write_table(table, run.tables("selection"), config=run.section_config("selection"))


@stage("ranking", needs=("nex",), section=RankingConfig, default=RankingConfig())
def ranking(run: Run) -> None:
    """Label-free model scores against accuracy, and the inverted-U."""
    from nex_causal.ranking import ranking_tables

    family = run.family()
    family = family[family["name"].astype(str).isin(run.variants())]
    tables, notes = ranking_tables(family, [run.dir / "caches"], run.config.ranking, progress=run.progress)
    for name, table in tables.items():
        write_table(table.assign(caches="caches"), run.tables(name), config=run.section_config("ranking"))
    for note in notes:
        print(f"note: {note}")


@stage("transfer", needs=("nex",), section=TransferSection, default=None)
def transfer(run: Run) -> None:
    """Effective-vs-redundant neuron transfer over donor>recipient pairs, and its summary over pairs."""
    from nex_causal.intervene.pairs import pairs_of, run_pairs

    section = run.config.transfer
    settings = {k: v for k, v in dataclasses.asdict(section).items() if k not in ("pairs", "both_directions")}
    settings.update(family=str(run.family_dir), device=run.config.device, dtype=run.config.dtype)
    pairs = pairs_of(section.pairs, section.both_directions)
    table, summary, pooled = run_pairs(settings, pairs, lambda donor: str(run.weights(donor)), run.dir / "transfer",
                                       progress=run.progress)
    fields = dataclasses.asdict(section)
    write_table(table, run.tables("transfer"), config=fields)
    write_table(summary, run.tables("transfer_summary"), config=fields)
    write_table(pooled, run.tables("transfer_pairs"), config=fields)


@stage("ablation", needs=("nex",), section=GridSection, default=None)
def ablation(run: Run) -> None:
    """Effective-vs-redundant ablation inside one variant, on its own NEX weights."""
    from nex_causal.intervene.grid import run_grid
    from nex_causal.resume import CLAIM_FILE, discard_stale

    section = run.config.ablation
    fields = dataclasses.asdict(section)
    config = GridConfig(experiment="ablate", weights=str(run.weights(section.recipient)), family=str(run.family_dir),
                        device=run.config.device, dtype=run.config.dtype, **fields)
    out = run.dir / "ablation"
    discard_stale(out, config.content(), stamp_file=CLAIM_FILE, root=run.dir)
    outcomes, summary = run_grid(config, out, progress=run.progress)
    write_table(outcomes, run.tables("ablate"), config=fields)
    write_table(summary, run.tables("ablate_summary"), config=fields)


@stage("figures", needs=("nex", "profile", "sweep", "selection", "ranking", "transfer", "ablation"), section=bool,
       default=True)
def figures(run: Run) -> dict:
    """The paper's figures from the tables, and report.md with the headline tables."""
    from nex_causal.figures import FIGURES, make_figures
    from nex_causal.report import write_report

    drawn, skipped = [], {}
    for name in FIGURES:
        try:
            drawn += make_figures(run.dir, names=[name])
        except NexError as err:  # e.g. no neuron was credited: nothing to plot
            skipped[name] = str(err)
            print(f"[figures] skipped {name}: {err}")
    write_report(run.dir, drawn, skipped)
    return {"figures": [str(f) for f in drawn], "skipped": skipped}
