"""Model-level scores: what summarises one variant's unlabeled cache, each with its claimed direction.

- ``nex``: mean GMF under the run's NEX settings (``Context.nex``), the weights calibrated as
  ``Context.calibration`` says (``nex.calibration``; the authors' protocol, self: each
  variant learns on its own cache), or given;
- ``entropy``: mean over responses of the mean token entropy;
- ``self-certainty``: mean over responses of the mean KL(U || p_t);
- ``mui``: share of all MLP neurons (n_layers * d_mlp, from the capture's ``capture.json``
  unless given) that some response of the set activates;
- ``activated``: mean number of activated neurons |S_r| per response;
- ``perplexity``: exp of the mean negative log-probability per generated token.

Each score has a direction, the one in which its proponents expect it to track accuracy
(higher NEX and self-certainty, lower entropy, MUI, activation and perplexity). A score is a
``Ratio`` or a ``Coverage`` over prompts, so a bootstrap over prompts evaluates it for every
resample at once.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
from scipy import sparse

from nex_causal.errors import NexError
from nex_causal.nex.calibration import Calibrations
from nex_causal.ranking.config import RankingConfig
from nex_causal.registry import Registry
from nex_causal.selectors.pool import Pool, trace_mean


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
class Context:
    """What a score may read besides the pool: the settings, the NEX calibrations of the family's caches (under
    the run's NEX settings), the variant being scored and, for calibrated scores, the calibration."""

    config: RankingConfig = RankingConfig()
    calibrations: Calibrations | None = None
    variant: str = ""
    calibration: str = ""
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
    """A model-level score: the direction in which it is claimed to track accuracy, and how to compute it;
    a ``calibrated`` score is computed once per calibration protocol asked for."""

    direction: int
    compute: Callable[[Pool, Context], ModelScore]
    calibrated: bool = False


SCORES: Registry[Score] = Registry("score")


def score(name: str, direction: int, calibrated: bool = False
          ) -> Callable[[Callable[[Pool, Context], ModelScore]], Score]:
    """Register the decorated function as the score ``name`` with its claimed ``direction``."""
    return lambda compute: SCORES.add(name, Score(direction, compute, calibrated))


@score("nex", +1, calibrated=True)
def _nex(pool: Pool, context: Context) -> Ratio:
    from nex_causal.nex.profile import degeneracy_warning, profile_of

    pool.require_cache()
    cals, name = context.calibrations, context.variant
    gmf = cals.gmf(name, context.calibration)
    if context.calibration == "self" and name in cals._learned:  # learned here: say when NEX cannot read it
        if warning := degeneracy_warning(profile_of(cals.caches[name], cals.learned(name))):
            context.notes.append(warning)
    return per_prompt_mean(pool, gmf)


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
