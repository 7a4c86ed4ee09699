"""Model ranking: order the variants of a family by a label-free score, check it against accuracy.

Each variant has its own unlabeled cache of N responses to the same prompts. A model-level
score summarises that cache:

- ``nex``: mean GMF, weights learned on the variant's own cache (candidate-specific
  self-calibration, NEX_METHOD 6) unless weights are given;
- ``entropy``: mean over responses of the mean token entropy;
- ``self-certainty``: mean over responses of the mean KL(U || p_t);
- ``mui``: share of all MLP neurons (n_layers * d_mlp, from the capture's ``capture.json``
  unless given) that some response of the set activates;
- ``activated``: mean number of activated neurons |S_r| per response;
- ``perplexity``: exp of the mean negative log-probability per generated token.

Each score has a direction, the one in which its proponents expect it to track accuracy
(higher NEX and self-certainty, lower entropy, MUI, activation and perplexity); agreement
is measured on the score times its direction, so a positive Spearman means "works as
claimed". Against accuracy across the family: Spearman, Kendall, top-1 hit (the variant
the score ranks first is a most accurate one) and regret (best accuracy minus accuracy of
that variant). Intervals are percentile bootstraps over prompts, one resample of prompt
ids shared by all variants (NEX weights stay those learned on the full cache).

Accuracy is, by default, each variant's mean ``correct`` on its cache (sampled accuracy
on the same prompts, resampled with them); ``accuracy="family"`` uses the family table's
``accuracy`` column (the zoo's greedy accuracy), held fixed in the bootstrap.

The inverted-U analysis bins accuracy against an entropy-based exploration proxy (mean
token entropy) per response or per variant and fits a quadratic (peak, test of the bend).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import numpy as np
import pandas as pd
from scipy import sparse
from tqdm.auto import tqdm

from nex_causal.cache import SparseCache
from nex_causal.errors import NexError
from nex_causal.io import check_name
from nex_causal.pool import Pool, trace_mean
from nex_causal.registry import Registry
from nex_causal.stats import QuadraticFit, bootstrap, logistic_quadratic_fit, quadratic_fit, rank_correlations

METRICS = ("spearman", "kendall", "top1", "regret")


@dataclass(frozen=True)
class Ratio:
    """A model-level score ``transform(sum_p num[p] / sum_p den[p])`` over (resampled) prompts."""

    num: np.ndarray
    den: np.ndarray
    transform: Callable[[np.ndarray], np.ndarray] = np.asarray

    def __call__(self, counts: np.ndarray) -> np.ndarray:
        with np.errstate(invalid="ignore", divide="ignore"):
            return self.transform((counts @ self.num) / (counts @ self.den))

    def subset(self, index: np.ndarray) -> Ratio:
        return Ratio(self.num[index], self.den[index], self.transform)


@dataclass(frozen=True)
class Coverage:
    """Share of ``n_neurons`` activated anywhere on the resampled prompts (MUI)."""

    member: sparse.csr_matrix  # prompts x distinct keys, 1 where the prompt's responses activate it
    n_neurons: int

    def __call__(self, counts: np.ndarray, block: int = 64) -> np.ndarray:
        covered = [(sparse.csr_matrix(counts[i:i + block] > 0, dtype=np.int64) @ self.member).getnnz(axis=1)
                   for i in range(0, len(counts), block)]
        return np.concatenate(covered) / self.n_neurons

    def subset(self, index: np.ndarray) -> Coverage:
        return Coverage(self.member[index], self.n_neurons)


ModelScore = Ratio | Coverage


def per_prompt_mean(pool: Pool, values: np.ndarray) -> Ratio:
    """Mean of per-response ``values`` over the responses of the prompts, NaNs left out."""
    values = np.asarray(values, dtype=np.float64)
    finite = np.isfinite(values)
    return Ratio(np.array([values[g][finite[g]].sum() for g in pool.groups]),
                 np.array([finite[g].sum() for g in pool.groups], dtype=np.float64))


@dataclass(frozen=True)
class RankingConfig:
    """Which model-level scores rank the family, against which accuracy, and the statistics' knobs."""

    scores: list[str] | None = field(default=None, metadata={"help": "scores to compute (default: all)"})
    accuracy: Literal["cache", "family"] = field(default="cache", metadata={
        "help": "cache: each cache's sampled accuracy; family: the family table's (greedy) accuracy"})
    n_bins: int = field(default=10, metadata={"help": "proxy bins of the inverted-U"})
    n_boot: int = field(default=1000, metadata={"help": "bootstrap resamples of prompts"})
    level: float = field(default=0.95, metadata={"help": "confidence level of the intervals"})
    seed: int = field(default=0, metadata={"help": "bootstrap seed"})
    n_neurons: int | None = field(default=None, metadata={
        "help": "MLP neurons (n_layers * d_mlp) for MUI (default: from each cache's capture.json)"})


@dataclass(frozen=True)
class Context:
    """What a score may read besides the pool: the settings and NEX weights learned elsewhere."""

    config: RankingConfig = RankingConfig()
    weights: np.ndarray | None = None  # NEX weights for every variant; None = self-calibrated
    progress: bool = False  # progress bars while NEX learns and scores
    notes: list[str] = field(default_factory=list)  # what scores found worth saying (degenerate caches)


def n_neurons_of(pool: Pool, context: Context) -> int:
    """n_layers * d_mlp: given in the config, else read from the capture's ``capture.json``."""
    if context.config.n_neurons is not None:
        return context.config.n_neurons
    n = pool.cache.n_neurons if pool.cache is not None else None
    if n is None:
        raise NexError("the number of MLP neurons is unknown (no capture.json); pass --n-neurons "
                       "(n_layers * d_mlp)")
    return n


@dataclass(frozen=True)
class Score:
    """A model-level score: the direction in which it is claimed to track accuracy, and how to compute it."""

    direction: int
    compute: Callable[[Pool, Context], ModelScore]


SCORES: Registry[Score] = Registry("score")


def score(name: str, direction: int) -> Callable[[Callable[[Pool, Context], ModelScore]], Score]:
    """Register the decorated function as the score ``name`` with its claimed ``direction``."""
    return lambda compute: SCORES.add(name, Score(direction, compute))


@score("nex", +1)
def _nex(pool: Pool, context: Context) -> Ratio:
    from nex_causal.nex import learn, score_responses
    from nex_causal.profile import degeneracy_warning, profile_of

    cache = pool.require_cache()
    if context.weights is None:
        cal = learn(cache, progress=context.progress, keep_traces=True)
        weights = cal.weights
        if warning := degeneracy_warning(profile_of(cache, cal.traces)):
            context.notes.append(warning)
    else:
        weights = context.weights
    return per_prompt_mean(pool, score_responses(cache, weights, progress=context.progress))


def _token_mean(column: str) -> Callable[[Pool, Context], Ratio]:
    return lambda pool, context: per_prompt_mean(pool, pool.per_response(trace_mean, column))


SCORES.add("entropy", Score(-1, _token_mean("token_entropy")))
SCORES.add("self-certainty", Score(+1, _token_mean("token_kl_uniform")))


@score("mui", -1)
def _mui(pool: Pool, context: Context) -> Coverage:
    sets = [np.unique(np.concatenate([pool.key_sets[r] for r in g])) for g in pool.groups]
    keys, columns = np.unique(np.concatenate(sets), return_inverse=True)
    rows = np.repeat(np.arange(len(sets)), [len(s) for s in sets])
    member = sparse.csr_matrix((np.ones(len(columns), np.int64), (rows, columns)), shape=(len(sets), len(keys)))
    return Coverage(member, n_neurons_of(pool, context))


SCORES.add("activated", Score(-1, lambda pool, context: per_prompt_mean(pool, [len(s) for s in pool.key_sets])))


@score("perplexity", -1)
def _perplexity(pool: Pool, context: Context) -> Ratio:
    logprob = pool.token_column("token_logprob")
    return Ratio(np.array([-sum(logprob[r].sum() for r in g) for g in pool.groups]),
                 np.array([sum(len(logprob[r]) for r in g) for g in pool.groups], dtype=np.float64), np.exp)


def agreement(scores: np.ndarray, accuracy: np.ndarray) -> np.ndarray:
    """``[B, 4]`` Spearman, Kendall, top-1 hit and regret of each row of ``scores`` [B, V] vs ``accuracy``.

    The top pick is the highest score (NaN never wins, ties to the first variant); it is a
    hit when its accuracy equals the best accuracy of the row.
    """
    scores, accuracy = np.asarray(scores, np.float64), np.asarray(accuracy, np.float64)
    rho, tau = rank_correlations(scores, accuracy)
    top = np.argmax(np.where(np.isnan(scores), -np.inf, scores), axis=1)
    picked, best = accuracy[np.arange(len(scores)), top], accuracy.max(axis=1)
    return np.column_stack([rho, tau, (picked == best).astype(np.float64), best - picked])


@dataclass
class Ranking:
    """Agreement of each score with accuracy (``table``), the per-variant values (``variants``)."""

    table: pd.DataFrame
    variants: pd.DataFrame
    notes: list[str] = field(default_factory=list)


def common_prompts(pools: Mapping[str, Pool]) -> tuple[np.ndarray, list[str]]:
    """Prompt ids every variant answered (in the first variant's order), and notes on the rest."""
    ids = [pd.Index(pool.prompt_ids) for pool in pools.values()]
    common = ids[0]
    for other in ids[1:]:
        common = common.intersection(other, sort=False)
    if len(common) == 0:
        raise NexError("the variants' caches share no prompt; capture them on the same task set")
    notes = [f"{name}: {len(i) - len(common)} prompts not shared by every variant were left out"
             for name, i in zip(pools, ids) if len(i) > len(common)]
    return common.to_numpy(), notes


def rank(pools: Mapping[str, Pool], config: RankingConfig = RankingConfig(), *,
         accuracy: Mapping[str, float] | None = None, weights: np.ndarray | None = None,
         progress: bool = False) -> Ranking:
    """Score every variant (``pools``: name -> its cache's pool) and measure agreement with accuracy.

    ``accuracy`` (name -> accuracy, e.g. the family table's) replaces the caches' mean
    ``correct``; ``weights`` replace each variant's self-calibrated NEX weights. A score that
    cannot be computed for some variant is reported as skipped.
    """
    names = SCORES.check(config.scores if config.scores is not None else SCORES)
    context = Context(config, weights, progress)
    if len(pools) < 2:
        raise NexError(f"ranking needs at least two variants, got {len(pools)}")
    prompts, notes = common_prompts(pools)
    index = {v: pool.prompt_ids.get_indexer(prompts) for v, pool in pools.items()}
    if accuracy is None:
        truth = [per_prompt_mean(pool, pool.correct).subset(index[v]) for v, pool in pools.items()]
    else:
        missing = [v for v in pools if not np.isfinite(accuracy.get(v, np.nan))]
        if missing:
            raise NexError(f"no accuracy for {', '.join(missing)}; fill the family table's accuracy column "
                           "or rank against the caches' accuracy")
        fixed = np.array([accuracy[v] for v in pools], dtype=np.float64)

    def acc(counts: np.ndarray) -> np.ndarray:
        """[B, V] accuracies: resampled with the prompts, or the family table's, fixed."""
        if accuracy is None:
            return np.column_stack([t(counts) for t in truth])
        return np.broadcast_to(fixed, (len(counts), len(fixed)))

    computed, rows = {}, []
    for name in tqdm(names, desc="scores", disable=not progress):
        direction = SCORES[name].direction
        try:
            computed[name] = [SCORES[name].compute(pool, context).subset(index[v]) for v, pool in pools.items()]
        except NexError as err:
            rows.append({"score": name, "direction": direction, "status": f"skipped: {err}"})
            continue
        rows.append({"score": name, "direction": direction, "status": "ok"})

    def statistic(counts: np.ndarray) -> np.ndarray:
        a = acc(counts)
        return np.stack([agreement(SCORES[n].direction * np.column_stack([s(counts) for s in computed[n]]), a)
                         for n in computed], axis=1).reshape(len(counts), -1)

    table = pd.DataFrame(rows)
    for metric in METRICS:
        table[[metric, f"{metric}_low", f"{metric}_high"]] = np.nan
    if computed:
        ci = bootstrap(statistic, len(prompts), n_boot=config.n_boot, level=config.level, seed=config.seed)
        at = table.score.isin(list(computed)).to_numpy()
        for j, metric in enumerate(METRICS):
            for suffix, values in (("", ci.estimate), ("_low", ci.low), ("_high", ci.high)):
                table.loc[at, metric + suffix] = values.reshape(len(computed), len(METRICS))[:, j]
    table["n_variants"], table["n_prompts"] = len(pools), len(prompts)
    full = np.ones((1, len(prompts)))
    variants = pd.DataFrame({"variant": list(pools), "accuracy": acc(full)[0]})
    for name, per_variant in computed.items():
        variants[name] = [float(s(full)[0]) for s in per_variant]
    order = ["score", "direction", *[m + s for m in METRICS for s in ("", "_low", "_high")],
             "n_variants", "n_prompts", "status"]
    return Ranking(table[order], variants, notes + context.notes)


# --- inputs: a family table and one cache per variant --------------------------------------

def family_pools(family: pd.DataFrame, caches: str | Path) -> tuple[dict[str, Pool], list[str]]:
    """The pool of every variant with a cache at ``caches/<name>/``; notes name those without."""
    caches = Path(caches)
    pools, notes = {}, []
    for name in family["name"].astype(str):
        if not (caches / check_name(name, "variant")).is_dir():
            notes.append(f"{name}: no cache at {caches / name}; left out")
            continue
        pools[name] = Pool.from_cache(SparseCache.open(caches / name))
    return pools, notes


# --- the inverted U: accuracy against an entropy-based exploration proxy ----------------------

@dataclass(frozen=True)
class InvertedU:
    """Accuracy in quantile bins of the proxy, and the quadratic (or logistic-quadratic) fit to the raw points."""

    bins: pd.DataFrame  # bin, proxy_low, proxy_high, proxy_mean, accuracy, n
    fit: QuadraticFit | None  # None when no fit exists (``reason`` says why), the bins still stand
    reason: str = ""


def inverted_u(proxy: np.ndarray, accuracy: np.ndarray, *, n_bins: int = 10) -> InvertedU:
    """Bin ``accuracy`` by quantiles of ``proxy`` and fit accuracy ~ quadratic(proxy).

    The fit uses the individual points (responses or variants), not the bin means, so the
    test of the quadratic term has the points' degrees of freedom. 0/1 outcomes (responses)
    get a logistic regression with a quadratic term, whose curve stays inside [0, 1];
    accuracies in between (variants) a least-squares parabola.
    """
    proxy, accuracy = np.asarray(proxy, np.float64), np.asarray(accuracy, np.float64)
    keep = np.isfinite(proxy) & np.isfinite(accuracy)
    proxy, accuracy = proxy[keep], accuracy[keep]
    binary = np.isin(accuracy, (0.0, 1.0)).all()
    fit, reason = None, ""
    try:
        fit = (logistic_quadratic_fit if binary else quadratic_fit)(proxy, accuracy)
    except NexError as err:
        if len(proxy) < 4:
            raise
        reason = f"no fit: {err}"
    edges = np.unique(np.quantile(proxy, np.linspace(0, 1, n_bins + 1)))
    which = np.clip(np.searchsorted(edges, proxy, side="right") - 1, 0, len(edges) - 2)
    frame = pd.DataFrame({"bin": which, "proxy": proxy, "accuracy": accuracy})
    bins = frame.groupby("bin").agg(proxy_mean=("proxy", "mean"), accuracy=("accuracy", "mean"),
                                    n=("accuracy", "size")).reset_index()
    bins.insert(1, "proxy_low", edges[bins.bin])
    bins.insert(2, "proxy_high", edges[bins.bin + 1])
    return InvertedU(bins, fit, reason)


def exploration_curves(pools: Mapping[str, Pool], *, variant_accuracy: Mapping[str, float] | None = None,
                       n_bins: int = 10) -> dict[str, InvertedU | str]:
    """The inverted-U per response and per variant; a level whose fit cannot run maps to the reason.

    Per response the proxy is the response's mean token entropy and accuracy its ``correct``;
    per variant, the mean of those over the variant's responses and its accuracy
    (``variant_accuracy`` when given, else its mean ``correct``).
    """
    try:
        entropy = {v: pool.per_response(trace_mean, "token_entropy") for v, pool in pools.items()}
    except NexError as err:
        return {level: f"skipped: {err}" for level in ("response", "variant")}
    points = {
        "response": (np.concatenate(list(entropy.values())),
                     np.concatenate([pool.correct for pool in pools.values()])),
        "variant": (np.array([np.nanmean(e) for e in entropy.values()]),
                    np.array([pool.correct.mean() if variant_accuracy is None else variant_accuracy[v]
                              for v, pool in pools.items()])),
    }
    out: dict[str, InvertedU | str] = {}
    for level, (proxy, acc) in points.items():
        try:
            out[level] = inverted_u(proxy, acc, n_bins=n_bins)
        except NexError as err:
            out[level] = f"skipped: {err}"
    return out


def inverted_u_table(curves: Mapping[str, InvertedU | str]) -> tuple[pd.DataFrame, pd.DataFrame]:
    """One summary row per level (fit, peak, test or the reason it was skipped) and all the bins."""
    rows, bins = [], []
    for level, curve in curves.items():
        if isinstance(curve, str):
            rows.append({"level": level, "status": curve})
            continue
        fit = curve.fit
        if fit is None:
            rows.append({"level": level, "n": int(curve.bins.n.sum()), "proxy_min": curve.bins.proxy_low.min(),
                         "proxy_max": curve.bins.proxy_high.max(), "status": curve.reason})
            bins.append(curve.bins.assign(level=level))
            continue
        rows.append({"level": level, "n": fit.n, "proxy_min": curve.bins.proxy_low.min(),
                     "proxy_max": curve.bins.proxy_high.max(), "c0": fit.coef[0], "c1": fit.coef[1],
                     "c2": fit.coef[2], "peak": fit.peak, "t_quadratic": fit.t_quadratic,
                     "p_quadratic": fit.p_quadratic, "r2": fit.r2, "link": fit.link, "shape": fit.shape,
                     "status": "ok"})
        bins.append(curve.bins.assign(level=level))
    columns = ["level", "bin", "proxy_low", "proxy_high", "proxy_mean", "accuracy", "n"]
    bins = pd.concat(bins, ignore_index=True)[columns] if bins else pd.DataFrame(columns=columns)
    return pd.DataFrame(rows), bins


def family_accuracy(family: pd.DataFrame) -> dict[str, float]:
    """The family table's accuracy of each variant (``RankingConfig.accuracy == "family"``)."""
    if "accuracy" not in family:
        raise NexError("the family table has no accuracy column; rank against the caches' accuracy "
                       "(accuracy: cache)")
    return dict(zip(family["name"].astype(str), family["accuracy"]))


def ranking_tables(family: pd.DataFrame, caches: Sequence[str | Path], config: RankingConfig = RankingConfig(), *,
                   weights: np.ndarray | None = None, progress: bool = False
                   ) -> tuple[dict[str, pd.DataFrame], list[str]]:
    """Ranking and inverted-U tables for each directory of per-variant caches, and the notes.

    Tables: ``ranking`` (agreement per score), ``ranking_scores`` (per variant),
    ``inverted_u`` (fit per level) and ``inverted_u_bins``; each has a ``caches`` column.
    """
    accuracy = family_accuracy(family) if config.accuracy == "family" else None
    out: dict[str, list[pd.DataFrame]] = {"ranking": [], "ranking_scores": [], "inverted_u": [],
                                          "inverted_u_bins": []}
    notes: list[str] = []
    for directory in caches:
        pools, missing = family_pools(family, directory)
        result = rank(pools, config, accuracy=accuracy, weights=weights, progress=progress)
        summary, bins = inverted_u_table(exploration_curves(pools, variant_accuracy=accuracy, n_bins=config.n_bins))
        for key, table in zip(out, (result.table, result.variants, summary, bins)):
            out[key].append(table.assign(caches=str(directory)))
        notes += [*missing, *result.notes]
    return {key: pd.concat(tables, ignore_index=True) for key, tables in out.items()}, notes
