"""Unit scorers: every way the toolkit ranks MLP units as carriers of a difference, in one registry.

A causal test moves a neuron set, and a set chosen by NEX means something only beside sets chosen
by simpler stories and by the field's localization methods. A scorer maps the ``Evidence`` of one
comparison to a score per unit, ``[n_layers, d_mlp]``, higher meaning more likely to carry what
the donor has and the recipient lacks (in an ablation: what the model would lose); a neuron set is
the top k units of positive score (``neuron_sets.top_scored``). Label-free scorers read no
outcome; supervised ones read the outcome on the attribution split, prompts the test never
scores.

    label-free
      nex-effective, nex-redundant     the donor's NEX weights, w and -w (ties broken by Eff - Red)
      nex-effective-recipient,         the recipient's
      nex-redundant-recipient
      rows, responses, mass,           how often, how much, how early a unit appears in the donor's
      first-seen                       cache (``nex.units``): the stories NEX must beat
      activation-contrast              mean |a_donor - a_recipient| over the same label-free texts
                                       (the attribution prompts, each with the donor's own response)
      weight-difference                the norm of the unit's donor-minus-recipient weights
    supervised
      atp                              attribution patching (``attribution.atp``)
      atp-transplant                   its counterpart for the weight transplant itself
      mask                             a learned sparse transplant mask (``attribution.learned_mask``)

A scorer declares what it ``needs`` (``donor``, ``cache``, ``weights``, ``recipient-weights``,
``skill``); a grid runs every scorer its evidence allows unless the config names them.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any

import numpy as np

from nex_causal.cache import pack_keys
from nex_causal.errors import NexError
from nex_causal.registry import Registry


@dataclass(frozen=True)
class UnitScorer:
    """A registered scorer: the score, whether it reads the outcome, what it needs, what it reads in words."""

    score: Callable[[Evidence], np.ndarray]
    supervised: bool
    reads: str
    needs: frozenset[str] = frozenset()
    ties: Callable[[Evidence], np.ndarray | None] | None = None  # a second key for units tied in score


SCORERS: Registry[UnitScorer] = Registry("unit scorer")


def scorer(name: str, *, supervised: bool = False, reads: str, needs: Sequence[str] = (),
           ties: Callable[[Evidence], np.ndarray | None] | None = None):
    """Register ``fn(evidence) -> [n_layers, d_mlp]`` as the scorer ``name``."""
    def add(fn: Callable[[Evidence], np.ndarray]):
        SCORERS.add(name, UnitScorer(fn, supervised, reads, frozenset(needs), ties))
        return fn
    return add


@dataclass
class Evidence:
    """What the scorers of one comparison may read.

    ``recipient``: the model that receives (or, in an ablation, loses) the units; ``donor``: the model
    that gives them (None in an ablation). ``weights``/``evidence``: the donor's NEX weights and
    Eff - Red over the key space (the ablated model's own in an ablation); ``recipient_weights`` and
    ``recipient_evidence`` the recipient's. ``caches``: the donor's caches. ``attribution`` makes, on
    first use, the attribution split's texts as (prompt, continuation) id pairs: ``free``, label-free
    (the donor's own responses), and ``skill``, labelled (the reference solutions); None when the
    grid has no attribution split.
    """

    n_layers: int
    d_mlp: int
    recipient: Any = None
    donor: Any = None
    weights: np.ndarray | None = None
    evidence: np.ndarray | None = None
    recipient_weights: np.ndarray | None = None
    recipient_evidence: np.ndarray | None = None
    caches: Sequence[Any] = ()
    attribution: Callable[[], tuple[list, list]] | None = None  # made on first use: (free, skill) id pairs
    batch_size: int = 32
    seed: int = 0
    mask_steps: int = 100
    mask_lr: float = 0.1
    records: dict = field(default_factory=dict)  # what a scorer wants kept beside its scores (the mask's training)

    def has(self, need: str) -> bool:
        return {"donor": self.donor is not None and self.recipient is not None,
                "model": self.recipient is not None,
                "cache": len(self.caches) > 0,
                "weights": self.weights is not None,
                "recipient-weights": self.recipient_weights is not None,
                "skill": self.attribution is not None,
                "free": self.attribution is not None}[need]

    @cached_property
    def _pairs(self) -> tuple[list, list]:
        return self.attribution() if self.attribution is not None else ([], [])

    @property
    def free(self) -> list:
        return self._pairs[0]

    @property
    def skill(self) -> list:
        return self._pairs[1]

    def runnable(self, name: str) -> bool:
        return all(self.has(n) for n in SCORERS[name].needs)

    def as_units(self, over_keys: np.ndarray) -> np.ndarray:
        """A key-space vector as ``[n_layers, d_mlp]`` (the units of this model)."""
        layers = np.repeat(np.arange(self.n_layers), self.d_mlp)
        units = np.tile(np.arange(self.d_mlp), self.n_layers)
        return np.asarray(over_keys, np.float64)[pack_keys(layers, units)].reshape(self.n_layers, self.d_mlp)

    @cached_property
    def unit_counts(self):
        from nex_causal.nex.units import unit_counts

        return unit_counts(self.caches)

    def score(self, name: str) -> tuple[np.ndarray, np.ndarray | None]:
        """Scorer ``name``'s scores and tie-breaking key, ``[n_layers, d_mlp]`` each (the second may be None)."""
        entry = SCORERS[name]
        if not self.runnable(name):
            missing = [n for n in entry.needs if not self.has(n)]
            raise NexError(f"unit scorer {name!r} needs {', '.join(missing)}, which this comparison lacks: drop it "
                           "from scorers, or give it (--caches for the cache statistics, --recipient-weights, a "
                           "donor, an attribution split)")
        values = np.asarray(entry.score(self), np.float64)
        if values.shape != (self.n_layers, self.d_mlp):
            raise NexError(f"unit scorer {name!r} gave shape {values.shape}, not ({self.n_layers}, {self.d_mlp})")
        ties = entry.ties(self) if entry.ties is not None else None
        return np.nan_to_num(values, nan=0.0), ties


SCORES_FILE = "scores.npz"  # a grid's scores: score/<name> and ties/<name>, [n_layers, d_mlp] each


def score_all(evidence: Callable[[], Evidence], names: Sequence[str] | None, path: Path, *, supervised: bool = True,
              progress: bool = False) -> dict[str, tuple[np.ndarray, np.ndarray | None]]:
    """Every scorer's (scores, ties), computed on the evidence ``evidence()`` makes (only when something is
    missing) and kept in ``path`` with a ``.json`` record beside it (which scorers, what each reads, the mask's
    training). The caller's directory is claimed for its config, so what ``path`` holds is this config's."""
    import json

    from tqdm.auto import tqdm

    from nex_causal.io import atomic_path, write_json

    record_path = path.with_suffix(".json")
    if path.is_file() and record_path.is_file():
        record = json.loads(record_path.read_text())
        with np.load(path) as archive:
            return {n: (archive[f"score/{n}"], archive[f"ties/{n}"] if f"ties/{n}" in archive.files else None)
                    for n in record["scorers"]}
    made = evidence()
    chosen = applicable(made, names, supervised=supervised)
    out = {name: made.score(name) for name in tqdm(chosen, desc="unit scorers", unit="scorer", disable=not progress)}
    arrays = {f"score/{n}": v for n, (v, _) in out.items()}
    arrays.update({f"ties/{n}": t for n, (_, t) in out.items() if t is not None})
    with atomic_path(path) as tmp, open(tmp, "wb") as f:
        np.savez_compressed(f, **arrays)
    write_json(record_path, {"scorers": chosen, "records": made.records,
                             "skipped": [n for n in SCORERS if n not in chosen],
                             "n_attribution": len(made.free) if "_pairs" in vars(made) else 0,
                             "about": {n: {"supervised": SCORERS[n].supervised, "reads": SCORERS[n].reads}
                                       for n in chosen}})
    return out


def applicable(evidence: Evidence, names: Sequence[str] | None = None, *, supervised: bool = True) -> list[str]:
    """The scorers to run: ``names`` (each checked), else every registered one the evidence allows (without the
    supervised ones unless ``supervised``)."""
    if names is not None:
        return SCORERS.check(names)
    return [n for n, s in SCORERS.items() if evidence.runnable(n) and (supervised or not s.supervised)]


# --- NEX ---------------------------------------------------------------------------------------------

def _nex(weights: str, sign: int) -> Callable[[Evidence], np.ndarray]:
    return lambda e: sign * e.as_units(getattr(e, weights))


def _nex_ties(evidence: str, sign: int) -> Callable[[Evidence], np.ndarray | None]:
    return lambda e: None if getattr(e, evidence) is None else sign * e.as_units(getattr(e, evidence))


for _who, _w, _ev, _need in (("", "weights", "evidence", "weights"),
                             ("-recipient", "recipient_weights", "recipient_evidence", "recipient-weights")):
    for _kind, _sign in (("effective", 1), ("redundant", -1)):
        SCORERS.add(f"nex-{_kind}{_who}", UnitScorer(
            _nex(_w, _sign), False, f"{'the recipient' if _who else 'the donor'}'s NEX weights, "
            f"{'w' if _sign > 0 else '-w'} (ties by {'Eff - Red' if _sign > 0 else 'Red - Eff'})",
            frozenset({_need}), _nex_ties(_ev, _sign)))


# --- the simplest stories: how often, how much, how early (nex.units) ----------------------------------

for _name, _stat, _what in (("rows", "rows", "the share of the donor's cache rows that hold the unit"),
                            ("responses", "responses", "the share of the donor's responses that hold the unit"),
                            ("mass", "mass", "the unit's share of the donor's cache mass"),
                            ("first-seen", "first_seen", "how early the unit first appears in the donor's "
                                                         "responses")):
    SCORERS.add(_name, UnitScorer(lambda e, s=_stat: e.as_units(e.unit_counts.statistic(s)), False, _what,
                                  frozenset({"cache"})))


# --- the models' activations and weights --------------------------------------------------------------

@scorer("activation-contrast", reads="mean |a_donor - a_recipient| on the attribution prompts with the donor's "
        "own responses", needs=("donor", "free"))
def _contrast(e: Evidence) -> np.ndarray:
    import torch

    from nex_causal.intervene.controls import paired_contrast

    return paired_contrast(e.recipient, e.donor, [torch.cat([p, c]) for p, c in e.free], e.batch_size)


@scorer("weight-difference", reads="the norm of the unit's donor-minus-recipient weights", needs=("donor",))
def _weight_difference(e: Evidence) -> np.ndarray:
    from nex_causal.intervene.controls import weight_difference

    return weight_difference(e.recipient, e.donor)


@scorer("atp", supervised=True, reads="attribution patching on the attribution split: d outcome / d a times "
        "a_donor - a_recipient (a model's own activation, in an ablation)", needs=("model", "skill"))
def _atp(e: Evidence) -> np.ndarray:
    from nex_causal.intervene.attribution import atp

    return atp(e.recipient, e.donor, e.skill, e.batch_size)


@scorer("atp-transplant", supervised=True, reads="d outcome / d m at m = 0 of the relaxed transplant on the "
        "attribution split", needs=("donor", "skill"))
def _atp_transplant(e: Evidence) -> np.ndarray:
    from nex_causal.intervene.attribution import atp_transplant

    return atp_transplant(e.recipient, e.donor, e.skill, e.batch_size)


@scorer("mask", supervised=True, reads="a transplant mask learned on the attribution split under an L1 budget",
        needs=("donor", "skill"))
def _mask(e: Evidence) -> np.ndarray:
    from nex_causal.intervene.attribution import learned_mask

    values, record = learned_mask(e.recipient, e.donor, e.skill, e.batch_size, steps=e.mask_steps, lr=e.mask_lr,
                                  seed=e.seed)
    e.records["mask"] = record
    return values
