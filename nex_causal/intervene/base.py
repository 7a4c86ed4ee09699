"""What every intervention shares: the protocol, the registry, and the resources one may need.

An intervention is a reversible change to a bridge (``applied(bridge)`` is a context
manager that undoes it on exit). Each kind registers itself in ``INTERVENTIONS`` where it is
defined, saying which experiment it belongs to (``transfer``: the donor's neurons into the
recipient; ``ablate``: a model's own neurons silenced) and what it needs to be made (the
donor, mean activations), so the grids never branch on names.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np

from nex_causal.intervene.neuron_sets import NeuronSet
from nex_causal.registry import Registry


class Intervention(Protocol):
    """Anything ``patching.intervened`` can apply: a reversible change to a bridge."""

    def applied(self, bridge) -> contextlib.AbstractContextManager: ...


@dataclass(frozen=True)
class Resources:
    """What a grid can give an intervention it makes: the donor bridge and the recipient's mean activations."""

    donor: Any = None
    means: np.ndarray | None = None


@dataclass(frozen=True)
class InterventionKind:
    """A registered intervention: its experiment, what it needs, and how to make it on a neuron set."""

    experiment: str
    make: Callable[[NeuronSet, Resources], Intervention]
    needs_donor: bool = False
    needs_means: bool = False
    uses_hooks: bool = True  # False: it changes weights only, so plain Hugging Face generation sees it


INTERVENTIONS: Registry[InterventionKind] = Registry(
    "intervention", providers=("nex_causal.intervene.transplant", "nex_causal.intervene.patching"))
EXPERIMENTS = ("transfer", "ablate")


def of_experiment(experiment: str) -> tuple[str, ...]:
    """The names of the interventions that belong to ``experiment``, in registration order."""
    return tuple(name for name, kind in INTERVENTIONS.items() if kind.experiment == experiment)


@dataclass(frozen=True)
class OutcomeKind:
    """A per-prompt measurement: ``measure(inputs, model, hooks)`` (``inputs``: ``outcomes.Inputs``);
    ``continuous`` ones are cheap (no generation)."""

    measure: Callable[[Any, object, bool], np.ndarray]
    continuous: bool


OUTCOMES: Registry[OutcomeKind] = Registry("outcome", providers=("nex_causal.intervene.outcomes",))
