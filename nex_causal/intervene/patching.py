"""Activation interventions on a neuron set, through hooks on ``blocks.{l}.mlp.hook_post``.

``hook_post`` is the MLP's intermediate activation (for a gated MLP ``act(gate) * up``,
the input of the down projection), so editing it at a set's units acts on exactly those
neurons and nothing else. Each edit replaces ``act[..., units]`` and leaves every other
unit untouched:

- :class:`ZeroAblation`: the units output 0;
- :class:`MeanAblation`: the units output their mean over a reference run;
- :class:`Scaling`: the units are multiplied by a factor;
- :class:`DonorPatch`: the units take the donor model's activation on the same input
  (NEX_METHOD section 7's activation patching).

Interventions compose: :func:`intervened` applies a list in order (edits on the same hook
point run in list order) and undoes all of them on exit, also when its body raises.
Interventions that change weights (``transplant.Transplant``) go in the same list.

A donor patch needs the donor's activations for the very forward pass the recipient is
running. :func:`intervened` therefore yields a :class:`LockStep`: the recipient bridge, in
every respect but one, calling it first runs each donor on identical arguments (tokens,
attention mask, positions; a KV cache of its own kept in step with the recipient's).
Teacher-forced runs and ``models.generation.generate_batch`` both go through that call, so during
generation the donor consumes exactly the tokens the patched recipient samples.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator, Sequence

import numpy as np
import torch
from tqdm.auto import tqdm
from transformers import DynamicCache

from nex_causal.errors import NexError
from nex_causal.intervene.base import INTERVENTIONS, Intervention, InterventionKind
from nex_causal.intervene.neuron_sets import NeuronSet
from nex_causal.models.geometry import mlp_hook

Hook = tuple[str, Callable]


class UnitEdit:
    """Base of the activation edits: hooks that rewrite ``act[..., units]`` of each touched layer."""

    def __init__(self, neurons: NeuronSet):
        self.neurons = neurons

    def new_values(self, layer: int, current: torch.Tensor, units: torch.Tensor) -> torch.Tensor:
        """The replacement for ``current = act[..., units]`` at ``layer``."""
        raise NotImplementedError

    def hooks(self, bridge) -> list[Hook]:
        self.neurons.check_fits(bridge.cfg.n_layers, bridge.cfg.d_mlp)

        def edit(layer: int, units: torch.Tensor) -> Callable:
            def hook(act: torch.Tensor, hook) -> torch.Tensor:
                idx = units.to(act.device)
                new = self.new_values(layer, act.index_select(-1, idx), idx)
                return act.index_copy(-1, idx, new.to(act.dtype))
            return hook

        return [(mlp_hook(layer), edit(layer, torch.as_tensor(units)))
                for layer, units in self.neurons.by_layer().items()]

    def applied(self, bridge) -> contextlib.AbstractContextManager:
        return bridge.hooks(fwd_hooks=self.hooks(bridge))


class ZeroAblation(UnitEdit):
    """Set the units' activations to zero."""

    def new_values(self, layer, current, units):
        return torch.zeros_like(current)


class Scaling(UnitEdit):
    """Multiply the units' activations by ``factor``."""

    def __init__(self, neurons: NeuronSet, factor: float):
        super().__init__(neurons)
        self.factor = float(factor)

    def new_values(self, layer, current, units):
        return current * self.factor


class MeanAblation(UnitEdit):
    """Replace the units' activations by their means ``[n_layers, d_mlp]`` over a reference run."""

    def __init__(self, neurons: NeuronSet, means: np.ndarray):
        super().__init__(neurons)
        self.means = torch.as_tensor(np.asarray(means, dtype=np.float32))

    def hooks(self, bridge) -> list[Hook]:
        shape = (bridge.cfg.n_layers, bridge.cfg.d_mlp)
        if tuple(self.means.shape) != shape:
            raise NexError(f"mean activations have shape {tuple(self.means.shape)} but the model has "
                           f"{shape[0]} layers x {shape[1]} units; compute them on this model")
        return super().hooks(bridge)

    def new_values(self, layer, current, units):
        return self.means[layer].to(current.device)[units].expand_as(current)


class DonorPatch(UnitEdit):
    """Replace the units' activations by the donor's on the same input (run in lock step)."""

    def __init__(self, donor, neurons: NeuronSet):
        super().__init__(neurons)
        self.donor = donor
        self._acts: dict[int, torch.Tensor] = {}
        self._cache_pair: tuple[object, DynamicCache] | None = None

    def new_values(self, layer, current, units):
        donor = self._acts.get(layer)
        if donor is None or donor.shape != current.shape:
            raise NexError("a donor patch ran without the donor in lock step: call the object "
                           "that `intervened(...)` yields, not the bridge itself")
        return donor

    def donor_hooks(self) -> list[Hook]:
        """Hooks on the donor that keep its activations at the set's units."""
        def keep(layer: int, units: torch.Tensor) -> Callable:
            def hook(act: torch.Tensor, hook) -> torch.Tensor:
                self._acts[layer] = act.index_select(-1, units.to(act.device))
                return act
            return hook

        return [(mlp_hook(layer), keep(layer, torch.as_tensor(units)))
                for layer, units in self.neurons.by_layer().items()]

    def applied(self, bridge) -> contextlib.AbstractContextManager:
        if self.donor is bridge:
            raise NexError("the donor of a patch is the recipient bridge itself; "
                           "load the donor as a separate bridge")
        self.neurons.check_fits(self.donor.cfg.n_layers, self.donor.cfg.d_mlp)
        stack = contextlib.ExitStack()
        stack.enter_context(bridge.hooks(fwd_hooks=self.hooks(bridge)))
        stack.enter_context(self.donor.hooks(fwd_hooks=self.donor_hooks()))
        stack.callback(self._forget)
        return stack

    def _forget(self) -> None:
        self._acts, self._cache_pair = {}, None

    @torch.no_grad()
    def run_donor(self, args: tuple, kwargs: dict) -> None:
        """Run the donor on the recipient's forward arguments (its own KV cache kept in step)."""
        kwargs = {**kwargs, "return_type": None}
        cache = kwargs.get("past_key_values")
        if cache is not None:  # a fresh recipient cache starts a fresh donor cache
            if self._cache_pair is None or self._cache_pair[0] is not cache:
                self._cache_pair = (cache, DynamicCache())
            kwargs["past_key_values"] = self._cache_pair[1]
        self._acts = {}
        self.donor(*args, **kwargs)


class LockStep:
    """The recipient bridge; calling it runs every donor on the same arguments first."""

    def __init__(self, bridge, patches: Sequence[DonorPatch]):
        self._bridge = bridge
        self._patches = list(patches)

    def __getattr__(self, name: str):
        return getattr(self._bridge, name)

    def __call__(self, *args, **kwargs):
        for patch in self._patches:
            patch.run_donor(args, kwargs)
        return self._bridge(*args, **kwargs)


INTERVENTIONS.add("patch", InterventionKind("transfer", lambda neurons, r: DonorPatch(r.donor, neurons),
                                            needs_donor=True))
INTERVENTIONS.add("zero", InterventionKind("ablate", lambda neurons, r: ZeroAblation(neurons)))
INTERVENTIONS.add("mean", InterventionKind("ablate", lambda neurons, r: MeanAblation(neurons, r.means),
                                           needs_means=True))


@contextlib.contextmanager
def intervened(bridge, interventions: Sequence[Intervention]) -> Iterator:
    """Apply ``interventions`` in order; yield the model to run; undo them all on exit.

    Run forward passes and generation on the yielded object (the bridge itself, or a
    :class:`LockStep` around it when a donor patch is present).
    """
    with contextlib.ExitStack() as stack:
        for intervention in interventions:
            stack.enter_context(intervention.applied(bridge))
        patches = [i for i in interventions if isinstance(i, DonorPatch)]
        yield LockStep(bridge, patches) if patches else bridge


@torch.no_grad()
def activation_means(bridge, sequences: Sequence[torch.Tensor], *, batch_size: int = 16,
                     progress: bool = False, absolute: bool = False) -> np.ndarray:
    """Mean ``hook_post`` activation (or, ``absolute``, mean |activation|) of every unit over all positions of
    the token ``sequences``.

    The reference for :class:`MeanAblation`, and the activation mass the causal test's controls
    are matched on; ``[n_layers, d_mlp]`` float32. Sequences are right-padded, so padding never
    influences a real position and is left out of the mean.
    """
    if not sequences:
        raise NexError("mean activations need at least one reference sequence")
    n_layers = bridge.cfg.n_layers
    total = torch.zeros(n_layers, bridge.cfg.d_mlp, dtype=torch.float64)
    count = 0
    mask: torch.Tensor | None = None

    def accumulate(layer: int) -> Callable:
        def hook(act: torch.Tensor, hook) -> torch.Tensor:
            total[layer] += ((act.double().abs() if absolute else act.double()) * mask[..., None]).sum((0, 1)).cpu()
            return act
        return hook

    hooks = [(mlp_hook(layer), accumulate(layer)) for layer in range(n_layers)]
    for start in tqdm(range(0, len(sequences), batch_size), desc="mean activations", disable=not progress):
        batch = [torch.as_tensor(t).reshape(-1) for t in sequences[start:start + batch_size]]
        tokens = torch.zeros(len(batch), max(len(t) for t in batch), dtype=torch.long)
        mask = torch.zeros(tokens.shape, dtype=torch.float64)
        for i, t in enumerate(batch):
            tokens[i, :len(t)], mask[i, :len(t)] = t, 1.0
        mask = mask.to(bridge.cfg.device)
        with bridge.hooks(fwd_hooks=hooks):
            bridge(tokens.to(bridge.cfg.device), return_type=None)
        count += int(mask.sum())
    return (total / count).numpy().astype(np.float32)
