"""What the positive control's measures read: the run's caches and NEX weights under one config, the ground truth,
the unit scorers' scores and the negative controls' draws.

A ``Control`` is made once per NEX config: the run's own (the nex stage's weights, read back),
or a named departure's (``departed``: the caches and pools shared, everything NEX makes learned
again). Every quantity is computed on first use and kept.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from functools import cached_property

import numpy as np
import pandas as pd

from nex_causal.errors import NexError
from nex_causal.nex.config import NexConfig
from nex_causal.run.layout import RunDir

LABEL_FREE = ("rows", "responses", "mass", "first-seen")  # the unit stories NEX must beat (nex.units)


@dataclass(frozen=True)
class Measured:
    """A measure's value, an interval that contains it (NaN where none is defined), the permutation p of a rank
    statistic and how it was computed, and how the value was made."""

    value: float
    low: float = float("nan")
    high: float = float("nan")
    detail: str = ""
    p: float = float("nan")
    p_method: str = ""


class Control:
    """What the measures read (see the module docstring); ``nex`` the NEX config the weights are learned under."""

    def __init__(self, run: RunDir, config, weights: dict | None = None):
        from nex_causal.cache import SparseCache

        self.run, self.config, self.nex = run, config, run.config.nex
        self.levels = {v: float(p) for v, p in (item.split("=", 1) for item in config.levels)}
        names = [*self.levels, *config.damage, config.under]
        if missing := [v for v in names if v not in run.variants()]:
            raise NexError(f"positive_control names {missing[0]!r}, which the run did not capture: add it to variants")
        self.caches = {v: SparseCache.open(run.cache(v)) for v in dict.fromkeys([*names, *run.variants()])}
        self._weights = weights
        self.drawn: dict[str, np.ndarray] = {}

    def departed(self, nex: NexConfig) -> Control:
        """The same run under another NEX config: its caches and pools shared, everything NEX makes learned anew."""
        other = Control.__new__(Control)
        other.run, other.config, other.nex, other.levels = self.run, self.config, nex, self.levels
        other.caches, other._weights, other.drawn = self.caches, None, {}
        other.__dict__["pools"] = self.pools
        return other

    @cached_property
    def weights(self) -> dict[str, np.ndarray]:
        """Each variant's own NEX weights: the nex stage's, or learned here under a departure's config."""
        from nex_causal.nex import learn, load_weights

        if self._weights is not None:
            return self._weights
        if self.nex == self.run.config.nex:
            return {v: load_weights(self.run.weights(v)) for v in self.caches}
        return {v: learn(c, self.nex, progress=False).weights for v, c in self.caches.items()}

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

    def accuracy(self, v: str):
        return self.per_prompt(v, self.pools[v].correct.astype(np.float64))

    def nex_score(self, v: str):
        return self.per_prompt(v, self.gmf[v])

    def entropy(self, v: str):
        from nex_causal.selectors.pool import trace_mean

        return self.per_prompt(v, -self.pools[v].per_response(trace_mean, "token_entropy"))

    @cached_property
    def family_accuracy(self) -> dict[str, float]:
        """The zoo's greedy accuracy of every variant (the family table's)."""
        family = self.run.family()
        return dict(zip(family["name"].astype(str), family["accuracy"].astype(float)))

    def rank_against(self, variants: list[str], x: Callable[[str], object], y: Callable[[str], object],
                     alternative: str) -> Measured:
        """Spearman of per-variant ``x`` against ``y`` (each a per-prompt ``Ratio`` or a fixed number): a BCa
        interval over the prompts every variant answered, and the permutation p of the observed order over the
        variants (``alternative``: greater, less or two-sided)."""
        from nex_causal.ranking.agreement import common_prompts
        from nex_causal.stats import bootstrap, permutation_p, rank_correlations

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
        ones = np.ones((1, len(prompts)))
        p, method = permutation_p(column(x, ones)[0], column(y, ones)[0], statistic="spearman",
                                  alternative=alternative)
        return Measured(float(ci.estimate), float(ci.low), float(ci.high), f"{len(variants)} variants, "
                        f"{len(prompts)} prompts", p, method)

    @cached_property
    def n_layers(self) -> int:
        return int(self.caches[next(iter(self.levels))].capture_info["n_layers"])

    @cached_property
    def d_mlp(self) -> int:
        return int(self.caches[next(iter(self.levels))].capture_info["d_mlp"])

    @cached_property
    def present(self) -> np.ndarray:
        """The units that carry mass in some level's cache (those NEX could weigh)."""
        from nex_causal.zoo.groundtruth import present_keys

        return np.unique(np.concatenate([present_keys(self.caches[v]) for v in self.levels]))

    @cached_property
    def pooled_credit(self) -> tuple[np.ndarray, np.ndarray]:
        """Eff and Red summed over the levels' caches under this NEX config (the nex stage's, kept beside its
        weights, when the config is the run's)."""
        from nex_causal.nex import learn
        from nex_causal.nex.weights import load_credit

        parts = []
        for v in self.levels:
            stored = load_credit(self.run.weights(v)) if self.nex == self.run.config.nex else None
            if stored is None:
                cal = learn(self.caches[v], self.nex, progress=False)
                stored = (cal.eff, cal.red)
            parts.append(stored)
        return np.sum([e for e, _ in parts], 0), np.sum([r for _, r in parts], 0)

    @cached_property
    def evidence(self):
        """The unit scorers' evidence: the pooled NEX weights and the levels' caches (``intervene.scorers``)."""
        from nex_causal.intervene.scorers import Evidence
        from nex_causal.nex.credit import neuron_weights

        eff, red = self.pooled_credit
        return Evidence(self.n_layers, self.d_mlp, weights=neuron_weights(eff, red, self.nex.weighting),
                        evidence=eff.astype(np.float64) - red, caches=[self.caches[v] for v in self.levels])

    @cached_property
    def unit_scores(self) -> dict[str, tuple[np.ndarray, bool]]:
        """Every unit score the control can set against the planted blocks, ``[n_layers, d_mlp]``, and whether it is
        supervised: NEX's pooled weights and the label-free stories from the caches, and the localization methods
        of the run's first transfer pair when the transfer stage ran."""
        from nex_causal.intervene.scorers import SCORERS, SCORES_FILE

        out = {name: (self.evidence.score(name)[0], False) for name in ("nex-effective", *LABEL_FREE)}
        transfer = self.run.config.transfer
        if transfer is not None and transfer.pairs:
            donor, _, recipient = transfer.pairs[0].partition(">")
            path = self.run.dir / "transfer" / f"{donor.strip()}__{recipient.strip()}" / SCORES_FILE
            if path.is_file():
                with np.load(path) as archive:
                    for key in archive.files:
                        name = key.split("/", 1)[1]
                        if key.startswith("score/") and not name.startswith("nex-") and name not in out:
                            out[name] = (archive[key], SCORERS[name].supervised)
        return out

    def unit_auroc(self, scores: np.ndarray, minus: np.ndarray | None = None) -> Measured:
        """AUROC of unit scores ``[n_layers, d_mlp]`` (or key-space weights): the real families' planted units against
        the decoys', among the units present, with a bootstrap over units (``minus``: the AUROC's drop to it)."""
        from nex_causal.zoo.groundtruth import unit_auroc
        from nex_causal.zoo.route import Route

        def keyed(values):
            if values is None or np.ndim(values) == 1:
                return values
            from nex_causal.cache import KEY_SPACE, pack_keys

            out = np.zeros(KEY_SPACE, np.float64)
            layers = np.repeat(np.arange(self.n_layers), self.d_mlp)
            out[pack_keys(layers, np.tile(np.arange(self.d_mlp), self.n_layers))] = np.ravel(values)
            return out

        value, low, high, n_real, n_decoy = unit_auroc(keyed(scores), Route(), self.n_layers, self.present,
                                                       n_boot=self.config.n_boot, seed=self.config.seed,
                                                       minus=keyed(minus))
        return Measured(value, min(low, value), max(high, value),
                        f"{n_real} real-family and {n_decoy} decoy units in the caches")

    @cached_property
    def blocks(self) -> pd.DataFrame:
        """Per (response, family opened) of the levels: category, NEX's credit and the label-free stories."""
        from nex_causal.zoo.groundtruth import block_table
        from nex_causal.zoo.route import Route

        return pd.concat([block_table(self.caches[v], self.nex, Route(), self.n_layers).assign(variant=v)
                          for v in self.levels], ignore_index=True)

    @cached_property
    def prepared(self):
        """The levels' responses prepared once for the negative controls' draws."""
        from nex_causal.nex.controls import Prepared

        return Prepared.of([self.caches[v] for v in self.levels], self.nex)

    def control_aurocs(self, control: str) -> np.ndarray:
        """The unit AUROC of the pooled weights under each of ``n_controls`` draws of ``control``."""
        if control not in self.drawn:
            from nex_causal.nex.controls import draws
            from nex_causal.nex.credit import neuron_weights

            self.drawn[control] = np.array([
                self.unit_auroc(neuron_weights(eff, red, self.nex.weighting)).value
                for eff, red in draws(self.prepared, control, self.config.n_controls, self.config.seed,
                                      progress=self.run.progress)])
        return self.drawn[control]
