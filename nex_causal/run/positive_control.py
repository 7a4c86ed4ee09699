"""The positive control: NEX on an organism whose exploration is planted, against predictions written beforehand.

The config names the planted levels (``levels``: a variant and its detour rate p), the
variants that differ from the efficient one by damage alone (``damage``), the
under-exploring one (``under``), and the predictions (``predictions``): each a measure
(``MEASURES``), a bound it should meet and, in words, what it means. The stage measures every
prediction under the run's NEX settings, with a 95% interval, and writes the table
``positive_control`` (prediction, measured value, interval, holds or not) whatever comes
out, beside ``positive_control_variants`` (each variant's accuracy, NEX, strategies
opened, phase agreement and unit AUROC).

The measures read the run's captures, the weights its nex stage learned, and the ranking
stage's table; the ground truth is the organism's (``zoo.groundtruth``).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import cached_property

import numpy as np
import pandas as pd

from nex_causal.errors import NexError
from nex_causal.io import write_table
from nex_causal.registry import Registry
from nex_causal.run.layout import RunDir
from nex_causal.run.stages import stage

INTERVAL = (2.5, 97.5)


@dataclass(frozen=True)
class Prediction:
    """A prediction written before the run: ``measure`` should be at least ``at_least`` and/or at most ``at_most``."""

    id: str = field(metadata={"help": "a short name"})
    statement: str = field(metadata={"help": "what it means, in words"})
    measure: str = field(metadata={"help": "the measure (positive_control.MEASURES)"})
    at_least: float | None = field(default=None, metadata={"help": "lower bound the value should reach"})
    at_most: float | None = field(default=None, metadata={"help": "upper bound the value should stay under"})


@dataclass(frozen=True)
class PositiveControlConfig:
    """The planted family and the predictions, declared before the run."""

    levels: list[str] = field(default_factory=lambda: ["efficient=0", "redundant-0.1=0.1", "redundant-0.25=0.25",
                                                       "redundant-0.5=0.5"],
                              metadata={"help": "the planted levels, variant=p (detour rate)"})
    damage: list[str] = field(default_factory=lambda: ["efficient", "noise-0.15", "noise-0.2", "dare-0.5",
                                                       "dare-0.3"],
                              metadata={"help": "variants that differ by damage alone (the negative control)"})
    under: str = field(default="under", metadata={"help": "the under-exploring variant"})
    predictions: list[Prediction] = field(default_factory=list, metadata={"help": "the pre-registered predictions"})
    n_boot: int = field(default=1000, metadata={"help": "bootstrap resamples"})
    seed: int = field(default=0, metadata={"help": "seed of the bootstrap and the negative controls"})
    k: int = field(default=64, metadata={"help": "size of the effective and redundant sets set against the planted "
                                                 "units"})

    def __post_init__(self) -> None:
        """Read predictions given as mappings (YAML) and check every name before anything runs."""
        read = []
        for i, p in enumerate(self.predictions):
            if isinstance(p, dict):
                known = {f.name for f in dataclasses.fields(Prediction)}
                if unknown := sorted(set(p) - known):
                    raise NexError(f"positive_control prediction {i + 1} has unknown key {unknown[0]!r}: "
                                   f"use {', '.join(sorted(known))}")
                try:
                    p = Prediction(**p)
                except TypeError:
                    raise NexError(f"positive_control prediction {i + 1} needs id, statement and measure") from None
            if p.measure not in MEASURES:
                raise NexError(f"positive_control prediction {p.id!r} names unknown measure {p.measure!r}: "
                               f"use one of {', '.join(MEASURES)}")
            read.append(p)
        object.__setattr__(self, "predictions", read)
        for item in self.levels:
            name, _, rate = item.partition("=")
            try:
                float(rate)
            except ValueError:
                raise NexError(f"positive_control level {item!r} is not variant=p: write e.g. redundant-0.1=0.1") \
                    from None


@dataclass(frozen=True)
class Measured:
    """A measure's value with its 95% interval (NaN where none is defined) and how it was made."""

    value: float
    low: float = float("nan")
    high: float = float("nan")
    detail: str = ""


MEASURES: Registry[Callable[[Control], Measured]] = Registry("positive-control measure")


def measure(name: str):
    return MEASURES.register(name)


class Control:
    """What the measures read: the run, its config section, the caches, the weights, the ground truth."""

    def __init__(self, run: RunDir, config: PositiveControlConfig):
        from nex_causal.cache import SparseCache
        from nex_causal.nex import load_weights

        self.run, self.config, self.nex = run, config, run.config.nex
        self.levels = {v: float(p) for v, p in (item.split("=", 1) for item in config.levels)}
        names = [*self.levels, *config.damage, config.under]
        if missing := [v for v in names if v not in run.variants()]:
            raise NexError(f"positive_control names {missing[0]!r}, which the run did not capture: add it to variants")
        self.caches = {v: SparseCache.open(run.cache(v)) for v in dict.fromkeys([*names, *run.variants()])}
        self.weights = {v: load_weights(run.weights(v)) for v in self.caches}
        self._pooled: dict[str, np.ndarray] = {}
        self.evidence: dict[str, np.ndarray] = {}  # Eff - Red behind each pooled weight vector: breaks ties at |w| = 1

    @cached_property
    def pools(self):
        from nex_causal.selectors.pool import Pool

        return {v: Pool.from_cache(c) for v, c in self.caches.items()}

    def per_prompt(self, variant: str, values: np.ndarray):
        from nex_causal.ranking.scores import per_prompt_mean

        return per_prompt_mean(self.pools[variant], values)

    @cached_property
    def gmf(self) -> dict[str, np.ndarray]:
        from nex_causal.nex import score_responses

        return {v: score_responses(c, self.weights[v], progress=False).astype(np.float64)
                for v, c in self.caches.items()}

    def rank_against(self, variants: list[str], x: Callable[[str], object], y: Callable[[str], object]) -> Measured:
        """Spearman of per-variant ``x`` against ``y`` (each a per-prompt ``Ratio`` or a fixed number), with a
        bootstrap over the prompts every variant answered."""
        from nex_causal.ranking.agreement import common_prompts
        from nex_causal.stats import bootstrap, rank_correlations

        prompts, _ = common_prompts({v: self.pools[v] for v in variants})
        index = {v: self.pools[v].prompt_ids.get_indexer(prompts) for v in variants}

        def column(f, counts):
            out = []
            for v in variants:
                value = f(v)
                out.append(value.subset(index[v])(counts) if hasattr(value, "subset") else np.full(len(counts), value))
            return np.column_stack(out)

        ci = bootstrap(lambda c: rank_correlations(column(x, c), column(y, c))[0], len(prompts),
                       n_boot=self.config.n_boot, seed=self.config.seed)
        return Measured(float(ci.estimate), float(ci.low), float(ci.high), f"{len(variants)} variants, "
                        f"{len(prompts)} prompts")

    @cached_property
    def n_layers(self) -> int:
        return int(self.caches[next(iter(self.levels))].capture_info["n_layers"])

    @cached_property
    def present(self) -> np.ndarray:
        """The units that carry mass in some level's cache (those NEX could weigh)."""
        from nex_causal.zoo.groundtruth import present_keys

        return np.unique(np.concatenate([present_keys(self.caches[v]) for v in self.levels]))

    def pooled(self, control: str) -> np.ndarray:
        """The weights of ``control`` (``CONTROLS``) pooled over the levels, computed once."""
        if control not in self._pooled:
            self._pooled[control], self.evidence[control] = _pooled(self, lambda v: CONTROLS[control][1](self, v))
        return self._pooled[control]

    def shuffled(self, v: str):
        """Variant ``v``'s cache with every response's rows shuffled (rewritten under the run on every try)."""
        from nex_causal.io import remove_inside
        from nex_causal.zoo.groundtruth import shuffled_cache

        path = self.run.dir / "positive_control" / "shuffled" / v
        if path.exists():  # made by an earlier try of this stage, perhaps with another seed
            remove_inside(path, self.run.dir)
        return shuffled_cache(self.caches[v], path, self.config.seed)

    def accuracy(self, v: str):
        return self.per_prompt(v, self.pools[v].correct.astype(np.float64))

    def nex_score(self, v: str):
        return self.per_prompt(v, self.gmf[v])


# --- the measures ------------------------------------------------------------------------------

@measure("accuracy_p_spearman")
def _accuracy_p(c: Control) -> Measured:
    return c.rank_against(list(c.levels), lambda v: c.levels[v], c.accuracy)


@measure("nex_p_spearman")
def _nex_p(c: Control) -> Measured:
    return c.rank_against(list(c.levels), lambda v: c.levels[v], c.nex_score)


@measure("nex_levels_spearman")
def _nex_levels(c: Control) -> Measured:
    return c.rank_against(list(c.levels), c.nex_score, c.accuracy)


@measure("entropy_levels_spearman")
def _entropy_levels(c: Control) -> Measured:
    from nex_causal.selectors.pool import trace_mean

    return c.rank_against(list(c.levels), lambda v: c.per_prompt(v, -c.pools[v].per_response(
        trace_mean, "token_entropy")), c.accuracy)


@measure("damage_nex_spearman")
def _damage(c: Control) -> Measured:
    return c.rank_against(list(c.config.damage), c.nex_score, c.accuracy)


@measure("family_nex_spearman")
def _family_nex(c: Control) -> Measured:
    return _from_ranking(c, "nex")


@measure("family_entropy_spearman")
def _family_entropy(c: Control) -> Measured:
    return _from_ranking(c, "entropy")


def _from_ranking(c: Control, score: str) -> Measured:
    path = c.run.tables("ranking").with_suffix(".parquet")
    if not path.is_file():
        raise NexError("this measure reads the ranking stage's table: turn the ranking stage on")
    table = pd.read_parquet(path)
    row = table[(table["score"] == score) & (table["calibration"].isin(["", "self"]))].iloc[0]
    return Measured(row.spearman, row.spearman_low, row.spearman_high, f"{row.n_variants} variants (ranking stage)")


@measure("phase_kappa")
def _phases(c: Control) -> Measured:
    from nex_causal.zoo.groundtruth import phase_agreement, phase_pairs

    pairs = [p for v in c.levels for p in phase_pairs(c.caches[v], c.nex)]
    overall, (low, high) = phase_agreement(pairs, n_boot=c.config.n_boot, seed=c.config.seed)
    return Measured(overall.kappa, low, high, f"{overall.n} rows of {len(pairs)} responses; F1 explore "
                    f"{overall.f1_explore:.2f}, agreement {overall.accuracy:.2f}")


def _unit_auroc(c: Control, weights: np.ndarray, present: np.ndarray, what: str,
                minus: np.ndarray | None = None) -> Measured:
    from nex_causal.zoo.groundtruth import unit_auroc
    from nex_causal.zoo.route import Route

    value, low, high, n_real, n_decoy = unit_auroc(weights, Route(), c.n_layers, present, n_boot=c.config.n_boot,
                                                   seed=c.config.seed, minus=minus)
    return Measured(value, low, high, f"{what}: {n_real} real-family and {n_decoy} decoy units in the caches")


def _pooled(c: Control, credit_of: Callable[[str], tuple[np.ndarray, np.ndarray]]) -> tuple[np.ndarray, np.ndarray]:
    """Weights from Eff and Red summed over the levels' caches (one weight per unit for the whole family), and the
    evidence Eff - Red behind them."""
    from nex_causal.nex.credit import neuron_weights

    parts = [credit_of(v) for v in c.levels]
    eff, red = np.sum([e for e, _ in parts], 0), np.sum([r for _, r in parts], 0)
    return neuron_weights(eff, red, c.nex.weighting), eff.astype(np.float64) - red


def _nex_credit(c: Control, v: str) -> tuple[np.ndarray, np.ndarray]:
    """The Eff/Red the nex stage learned on ``v`` under the run's settings (kept beside its weights)."""
    from nex_causal.nex import learn
    from nex_causal.nex.weights import load_credit

    if (credit := load_credit(c.run.weights(v))) is not None:
        return credit
    cal = learn(c.caches[v], c.nex, progress=False)
    return cal.eff, cal.red


def _permuted_credit(c: Control, v: str) -> tuple[np.ndarray, np.ndarray]:
    from nex_causal.zoo.groundtruth import permuted_phase_credit

    return permuted_phase_credit(c.caches[v], c.nex, c.config.seed)


def _shuffled_credit(c: Control, v: str) -> tuple[np.ndarray, np.ndarray]:
    from nex_causal.nex import learn

    cal = learn(c.shuffled(v), c.nex, progress=False)
    return cal.eff, cal.red


CONTROLS = {  # NEX's own credit and the two negative controls' (each takes away the order NEX reads)
    "nex": ("NEX weights pooled over the levels", _nex_credit),
    "permuted": ("E/X runs permuted", _permuted_credit),
    "shuffled": ("rows shuffled within each response", _shuffled_credit),
}


@measure("unit_auroc")
def _units(c: Control) -> Measured:
    return _unit_auroc(c, c.pooled("nex"), c.present, CONTROLS["nex"][0])


@measure("permuted_unit_auroc")
def _permuted(c: Control) -> Measured:
    return _unit_auroc(c, c.pooled("permuted"), c.present, CONTROLS["permuted"][0])


@measure("shuffled_unit_auroc")
def _shuffled(c: Control) -> Measured:
    return _unit_auroc(c, c.pooled("shuffled"), c.present, CONTROLS["shuffled"][0])


@measure("permuted_auroc_drop")
def _permuted_drop(c: Control) -> Measured:
    return _unit_auroc(c, c.pooled("nex"), c.present, "NEX minus E/X runs permuted", minus=c.pooled("permuted"))


@measure("shuffled_auroc_drop")
def _shuffled_drop(c: Control) -> Measured:
    return _unit_auroc(c, c.pooled("nex"), c.present, "NEX minus rows shuffled", minus=c.pooled("shuffled"))


def _overlap(c: Control, sign: int, families: tuple[str, ...]) -> Measured:
    """Share of the pooled top-k (``sign`` +1: effective, -1: redundant) that lies in ``families``' blocks, beside
    the share a random pick among the units present would have."""
    from nex_causal.intervene.neuron_sets import bottom_redundant, top_effective
    from nex_causal.zoo.route import Route

    weights, k = c.pooled("nex"), c.config.k  # computes c.evidence["nex"] too
    chosen = (top_effective if sign > 0 else bottom_redundant)(weights, k, seed=c.config.seed,
                                                               evidence=c.evidence["nex"])
    planted = np.concatenate([Route().units(f, c.n_layers) for f in families])
    value = float(np.isin(chosen.keys, planted).mean()) if len(chosen) else float("nan")
    chance = float(np.isin(c.present, planted).mean())
    return Measured(value, detail=f"{len(chosen)} units; chance {chance:.3f} (the share of present units in "
                    f"{'/'.join(families)}' blocks)")


@measure("effective_in_real_blocks")
def _effective_real(c: Control) -> Measured:
    from nex_causal.zoo.scout import REAL

    return _overlap(c, +1, REAL)


@measure("redundant_in_decoy_blocks")
def _redundant_decoy(c: Control) -> Measured:
    from nex_causal.zoo.scout import DECOYS

    return _overlap(c, -1, DECOYS)


@measure("inverted_u_c2")
def _inverted_u(c: Control) -> Measured:
    from nex_causal.stats import quadratic_fit
    from nex_causal.zoo.groundtruth import strategies_opened

    variants = list(c.caches)
    x = np.array([strategies_opened(c.caches[v]).mean() for v in variants])
    y = np.array([c.pools[v].correct.mean() for v in variants])
    fit = quadratic_fit(x, y)
    return Measured(fit.coef[2], detail=f"{fit.shape}, peak at {fit.peak:.2f} strategies, p = {fit.p_quadratic:.3g}, "
                    f"{len(variants)} variants")


@measure("under_nex_gap")
def _under(c: Control) -> Measured:
    """Mean GMF of the under-exploring variant minus the p = 0 level's, responses resampled in each."""
    base = min(c.levels, key=c.levels.get)
    under, efficient = (c.gmf[v][np.isfinite(c.gmf[v])] for v in (c.config.under, base))
    rng = np.random.default_rng(c.config.seed)
    draws = [rng.choice(under, len(under)).mean() - rng.choice(efficient, len(efficient)).mean()
             for _ in range(c.config.n_boot)]
    low, high = np.percentile(draws, INTERVAL)
    return Measured(float(under.mean() - efficient.mean()), float(low), float(high),
                    f"NEX of {c.config.under} minus {base}'s, {len(under)} and {len(efficient)} responses")


def variant_table(c: Control) -> pd.DataFrame:
    """Per variant: accuracy, answered share (a looping response never reaches ``#``) and loop rate, NEX,
    strategies opened, HMM phase agreement with the truth, the unit AUROC of its own weights, and the opening
    cycle's share of its Eff credit (``nex.diagnostics``)."""
    from nex_causal.nex.diagnostics import diagnose_credit
    from nex_causal.zoo.groundtruth import phase_agreement, phase_pairs, present_keys, strategies_opened

    rows = []
    for v, cache in c.caches.items():
        overall, (low, high) = phase_agreement(phase_pairs(cache, c.nex), n_boot=200, seed=c.config.seed)
        units = _unit_auroc(c, c.weights[v], present_keys(cache), "own weights")
        credit = diagnose_credit(cache, c.weights[v], c.nex).summary()
        rows.append({"variant": v, "p": c.levels.get(v, np.nan), "accuracy": c.pools[v].correct.mean(),
                     "answered": cache.responses["answer"].notna().mean(), "loop_rate": credit["loop_rate"],
                     "nex": float(np.nanmean(c.gmf[v])), "strategies_opened": strategies_opened(cache).mean(),
                     "phase_kappa": overall.kappa, "phase_kappa_low": low, "phase_kappa_high": high,
                     "unit_auroc": units.value, "unit_auroc_low": units.low, "unit_auroc_high": units.high,
                     "opening_eff_share": credit["opening_eff_share"], "damage_only": v in c.config.damage})
    return pd.DataFrame(rows)


@stage("positive_control", needs=("nex", "ranking"), section=PositiveControlConfig, default=None,
       run_level=("nex",))
def positive_control(run: RunDir) -> None:
    """The pre-registered predictions of the positive control, measured, with what each variant shows."""
    config = run.config.positive_control
    if not config.predictions:
        raise NexError("positive_control has no predictions: write them in the config before the run")
    control = Control(run, config)
    rows = []
    for p in config.predictions:
        m = MEASURES[p.measure](control)
        holds = ((p.at_least is None or m.value >= p.at_least) and (p.at_most is None or m.value <= p.at_most)
                 and np.isfinite(m.value))
        bound = " and ".join(b for b in (f">= {p.at_least:g}" if p.at_least is not None else "",
                                         f"<= {p.at_most:g}" if p.at_most is not None else "") if b)
        rows.append({"id": p.id, "prediction": p.statement, "measure": p.measure, "predicted": bound,
                     "value": m.value, "low": m.low, "high": m.high, "holds": bool(holds), "detail": m.detail})
    section = dataclasses.asdict(config)
    write_table(pd.DataFrame(rows), run.tables("positive_control"), config=section)
    write_table(variant_table(control), run.tables("positive_control_variants"), config=section)
