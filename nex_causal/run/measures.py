"""What the positive control measures: each prediction's measure, with an interval and, for ranks, an exact p.

A measure reads a ``run.control.Control``: the run's caches, the NEX weights of every variant
under one NEX config (the run's, or a named departure's, learned again), the organism's ground
truth (``zoo.groundtruth``), the unit scorers' scores (``intervene.scorers``: NEX's pooled
weights beside the label-free stories, and the localization methods of the run's first
transfer pair), and the negative controls' draws (``nex.controls``). It returns a ``Measured``: the value, an
interval that contains it, and for rank statistics over variants the permutation p of the
observed order (exact over every order up to 9 variants).

    design        accuracy falls as the detour rate p rises; accuracy against strategies opened
    phases        the HMM's explore runs against the strategy spans
    units         the real families' planted units against the decoys', for every scorer
    responses     per response: NEX's credit to the family it used against one it rejected
                  before the hit, and against a detour
    ranks         GMF and entropy against p and accuracy, among the levels, the damaged
                  variants and the whole family
    controls      the unit AUROC against 50+ draws of each negative control
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from nex_causal.errors import NexError
from nex_causal.registry import Registry
from nex_causal.run.control import LABEL_FREE, Control, Measured

@dataclass(frozen=True)
class MeasureKind:
    """A registered measure: how it reads a ``Control``, and whether it depends on NEX's settings (so the
    departures table measures it again under each named departure)."""

    measure: Callable[[Control], Measured]
    departs: bool = False


MEASURES: Registry[MeasureKind] = Registry("positive-control measure")


def measure(name: str, *, departs: bool = False) -> Callable:
    """Register ``fn(control) -> Measured`` as the measure ``name``."""
    def add(fn: Callable[[Control], Measured]) -> Callable[[Control], Measured]:
        MEASURES.add(name, MeasureKind(fn, departs))
        return fn
    return add


# --- the design itself ---------------------------------------------------------------------------

@measure("accuracy_p_spearman")
def _accuracy_p(c: Control) -> Measured:
    return c.rank_against(list(c.levels), lambda v: c.levels[v], c.accuracy, "less")


@measure("inverted_u_c2")
def _inverted_u(c: Control) -> Measured:
    """The quadratic coefficient of accuracy against strategies opened across the family, with a BCa interval over
    prompts (each variant's means taken again on every resample)."""
    from nex_causal.ranking.agreement import common_prompts
    from nex_causal.stats import bootstrap, quadratic_fit
    from nex_causal.zoo.groundtruth import strategies_opened

    variants = list(c.caches)
    prompts, _ = common_prompts({v: c.pools[v] for v in variants})
    opened = {v: c.per_prompt(v, strategies_opened(c.caches[v])).subset(c.pools[v].prompt_ids.get_indexer(prompts))
              for v in variants}
    correct = {v: c.accuracy(v).subset(c.pools[v].prompt_ids.get_indexer(prompts)) for v in variants}

    def c2(counts):
        x, y = np.column_stack([opened[v](counts) for v in variants]), np.column_stack([correct[v](counts)
                                                                                        for v in variants])
        return np.array([quadratic_fit(a, b).coef[2] for a, b in zip(x, y)])

    ci = bootstrap(c2, len(prompts), n_boot=c.config.n_boot, seed=c.config.seed)
    fit = quadratic_fit(np.array([opened[v](np.ones((1, len(prompts))))[0] for v in variants]),
                        np.array([correct[v](np.ones((1, len(prompts))))[0] for v in variants]))
    return Measured(float(ci.estimate), float(ci.low), float(ci.high), f"{fit.shape}, peak at {fit.peak:.2f} "
                    f"strategies, {len(variants)} variants", fit.p_quadratic, "F-test of the quadratic term")


# --- what NEX claims to find ---------------------------------------------------------------------

@measure("phase_kappa", departs=True)
def _phases(c: Control) -> Measured:
    from nex_causal.zoo.groundtruth import phase_agreement, phase_pairs

    pairs = [p for v in c.levels for p in phase_pairs(c.caches[v], c.nex)]
    overall, (low, high) = phase_agreement(pairs, n_boot=c.config.n_boot, seed=c.config.seed)
    return Measured(overall.kappa, min(low, overall.kappa), max(high, overall.kappa),
                    f"{overall.n} rows of {len(pairs)} responses; F1 explore {overall.f1_explore:.2f}, "
                    f"agreement {overall.accuracy:.2f}")


@measure("unit_auroc", departs=True)
def _units(c: Control) -> Measured:
    return c.unit_auroc(c.unit_scores["nex-effective"][0])


@measure("unit_auroc_margin", departs=True)
def _margin(c: Control) -> Measured:
    """NEX's unit AUROC minus the best label-free story's (chosen on the same units, so against NEX), with a
    bootstrap over units."""
    best = max(LABEL_FREE, key=lambda n: c.unit_auroc(c.unit_scores[n][0]).value)
    m = c.unit_auroc(c.unit_scores["nex-effective"][0], minus=c.unit_scores[best][0])
    return Measured(m.value, m.low, m.high, f"NEX minus {best}, the best label-free story; {m.detail}")


def _overlap(c: Control, sign: int, families: tuple[str, ...]) -> Measured:
    """Share of the pooled top-k (``sign`` +1: effective, -1: redundant) that lies in ``families``' blocks, with a
    Wilson interval over the k units and the hypergeometric p of reaching it by chance among the units present."""
    from scipy.stats import binomtest, hypergeom

    from nex_causal.intervene.neuron_sets import bottom_redundant, top_effective
    from nex_causal.zoo.route import Route

    weights, evidence = c.evidence.weights, c.evidence.evidence
    chosen = (top_effective if sign > 0 else bottom_redundant)(weights, c.config.k, seed=c.config.seed,
                                                               evidence=evidence)
    planted = np.concatenate([Route().units(f, c.n_layers) for f in families])
    hits, n = int(np.isin(chosen.keys, planted).sum()), len(chosen)
    in_present = int(np.isin(c.present, planted).sum())
    if not n:
        return Measured(float("nan"), detail="no unit of that sign")
    low, high = binomtest(hits, n).proportion_ci(method="wilson")
    p = float(hypergeom.sf(hits - 1, len(c.present), in_present, n))
    return Measured(hits / n, float(low), float(high), f"{n} units; chance {in_present / len(c.present):.3f} (the "
                    f"share of present units in {'/'.join(families)}' blocks)", p, "hypergeometric, against chance")


@measure("effective_in_real_blocks", departs=True)
def _effective_real(c: Control) -> Measured:
    from nex_causal.zoo.scout import REAL

    return _overlap(c, +1, REAL)


@measure("redundant_in_decoy_blocks", departs=True)
def _redundant_decoy(c: Control) -> Measured:
    from nex_causal.zoo.scout import DECOYS

    return _overlap(c, -1, DECOYS)


def _credit_auroc(c: Control, negative: str) -> Measured:
    from nex_causal.zoo.groundtruth import category_auroc

    value, low, high, n_used, n_other = category_auroc(c.blocks, "credit", negative, n_boot=c.config.n_boot,
                                                       seed=c.config.seed)
    return Measured(value, low, high, f"{n_used} used and {n_other} {negative} blocks, bootstrap over responses")


@measure("credit_used_vs_rejected", departs=True)
def _used_rejected(c: Control) -> Measured:
    return _credit_auroc(c, "rejected")


@measure("credit_used_vs_detour", departs=True)
def _used_detour(c: Control) -> Measured:
    return _credit_auroc(c, "detour")


# --- ranks ---------------------------------------------------------------------------------------

@measure("nex_p_spearman", departs=True)
def _nex_p(c: Control) -> Measured:
    return c.rank_against(list(c.levels), lambda v: c.levels[v], c.nex_score, "less")


@measure("nex_levels_spearman", departs=True)
def _nex_levels(c: Control) -> Measured:
    return c.rank_against(list(c.levels), c.nex_score, c.accuracy, "greater")


@measure("entropy_levels_spearman")
def _entropy_levels(c: Control) -> Measured:
    return c.rank_against(list(c.levels), c.entropy, c.accuracy, "two-sided")


@measure("damage_nex_spearman", departs=True)
def _damage(c: Control) -> Measured:
    return c.rank_against(list(c.config.damage), c.nex_score, c.accuracy, "two-sided")


@measure("family_nex_spearman", departs=True)
def _family_nex(c: Control) -> Measured:
    return c.rank_against(list(c.caches), c.nex_score, lambda v: c.family_accuracy[v], "greater")


@measure("family_entropy_spearman")
def _family_entropy(c: Control) -> Measured:
    return c.rank_against(list(c.caches), c.entropy, lambda v: c.family_accuracy[v], "greater")


@measure("under_nex_gap", departs=True)
def _under(c: Control) -> Measured:
    """Mean GMF of the under-exploring variant minus the p = 0 level's, with a BCa interval over prompts."""
    from nex_causal.stats import bootstrap

    base = min(c.levels, key=c.levels.get)
    under, efficient = c.nex_score(c.config.under), c.nex_score(base)
    if len(c.pools[c.config.under].prompt_ids) != len(c.pools[base].prompt_ids):
        raise NexError(f"{c.config.under} and {base} were captured on different prompts")
    ci = bootstrap(lambda counts: under(counts) - efficient(counts), len(c.pools[base].prompt_ids),
                   n_boot=c.config.n_boot, seed=c.config.seed)
    return Measured(float(ci.estimate), float(ci.low), float(ci.high), f"NEX of {c.config.under} minus {base}'s")


# --- the negative controls, as distributions -----------------------------------------------------

def _control_drop(c: Control, control: str) -> Measured:
    """NEX's unit AUROC minus the median of the control's draws, the interval from the draws' central 95%, and the
    observed AUROC's rank among the draws as a one-sided p."""
    from nex_causal.nex.controls import rank_against

    observed = c.unit_auroc(c.unit_scores["nex-effective"][0]).value
    null = c.control_aurocs(control)
    p, above = rank_against(observed, null)
    low, high = observed - np.quantile(null, 0.975), observed - np.quantile(null, 0.025)
    value = observed - float(np.median(null))
    return Measured(value, min(low, value), max(high, value), f"AUROC {observed:.3f} against {len(null)} draws "
                    f"(median {np.median(null):.3f}, {above} at or above it)", p, f"rank among {len(null)} draws")


for _control in ("shuffled", "reordered", "permuted"):
    MEASURES.add(f"{_control}_auroc_drop", MeasureKind(lambda c, k=_control: _control_drop(c, k)))
