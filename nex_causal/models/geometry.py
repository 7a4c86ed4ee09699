"""The MLP neurons inside a model: where their activations are hooked and which weights are theirs.

``mlp_hook`` names the one bridge hook whose output is every MLP unit's activation (the
input of the down projection). ``MLPGeometry`` says which weights belong to MLP neuron
``(layer, unit)`` and reads and writes them in place through the bridge, so that
interventions can transplant neurons between variants and restore them bit-exactly.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import numpy as np
import torch

from nex_causal.errors import NexError

if TYPE_CHECKING:
    from transformer_lens.model_bridge import TransformerBridge

Units = Sequence[int] | np.ndarray | torch.Tensor


def mlp_hook(layer: int) -> str:
    """The bridge hook whose output is every MLP unit's activation in ``layer``: the input of
    the down projection (``act(gate) * up`` for gated MLPs). The one place the name is spelled."""
    return f"blocks.{layer}.mlp.hook_post"


def mlp_inputs(bridge: TransformerBridge, model: torch.nn.Module) -> list[torch.nn.Module]:
    """Each layer's down projection in ``model``, the plain Hugging Face model over ``bridge``'s weights
    (``models.plain_model``): the module whose input is what ``mlp_hook`` reads in the bridge."""
    names = {id(module): name.replace("._original_component", "")
             for name, module in bridge.original_model.named_modules()}
    return [model.get_submodule(names[id(block.mlp.out.original_component)]) for block in bridge.blocks]


def _unit_axis(module: torch.nn.Module, reads_residual: bool) -> int:
    """The axis of ``module.weight`` indexed by MLP unit.

    ``nn.Linear`` stores ``[out, in]``; GPT-2's ``Conv1D`` stores ``[in, out]``. The gate and
    up (W_in) projections read the residual stream, so a unit is one of their outputs; the
    down projection (W_out) writes it, so a unit is one of its inputs.
    """
    from transformers.pytorch_utils import Conv1D

    if isinstance(module, Conv1D):
        return 1 if reads_residual else 0
    if isinstance(module, torch.nn.Linear):
        return 0 if reads_residual else 1
    raise NexError(f"MLP projection of type {type(module).__name__} is not supported: "
                   f"neuron geometry knows nn.Linear and GPT-2's Conv1D")


@dataclass
class MLPGeometry:
    """Which weights belong to MLP neuron ``(layer, unit)`` of one bridge, read and written in place.

    ``parts`` are the bridge's MLP projections: ``("gate", "in", "out")`` for gated MLPs
    (Qwen3/Llama gate_proj, up_proj, down_proj), ``("in", "out")`` otherwise (GPT-2 c_fc,
    c_proj). Neuron weights are a dict of unit-major tensors: ``part -> [k, d_model]`` (gate
    and up rows, down column; W_in row, W_out column, in TransformerLens orientation) and,
    where the architecture has them, ``part + "_bias" -> [k]`` for the per-unit gate/in biases.
    The down projection's bias is shared by all units and so belongs to no neuron.
    """

    bridge: object = field(repr=False, compare=False)
    architecture: str
    n_layers: int
    d_model: int
    d_mlp: int
    gated: bool
    keys: tuple[str, ...]
    dtype: torch.dtype

    @classmethod
    def of(cls, bridge: TransformerBridge) -> MLPGeometry:
        """Read the geometry of ``bridge``'s MLPs; every layer must have the same shape."""
        blocks = list(bridge.blocks)
        first = getattr(blocks[0], "mlp", None)
        if first is None or not hasattr(first, "in") or not hasattr(first, "out"):
            raise NexError(f"{bridge.cfg.architecture} has no dense MLP with in/out projections: "
                           f"neuron geometry needs a Llama/Qwen-style or GPT-2-style MLP")
        gated = hasattr(first, "gate")
        parts = ("gate", "in", "out") if gated else ("in", "out")
        keys = parts + tuple(f"{p}_bias" for p in parts[:-1]
                             if getattr(first, p).original_component.bias is not None)
        out_weight = first.out.original_component.weight
        d_mlp = out_weight.shape[_unit_axis(first.out.original_component, reads_residual=False)]
        geometry = cls(bridge, bridge.cfg.architecture, len(blocks), out_weight.numel() // d_mlp,
                       d_mlp, gated, keys, out_weight.dtype)
        for layer in range(len(blocks)):
            for part in parts:
                weight = geometry._module(layer, part).weight
                if weight.shape[geometry._axis(layer, part)] != d_mlp:
                    raise NexError(f"layer {layer} has {weight.shape} {part} weights but layer 0 has "
                                   f"d_mlp={d_mlp}: neuron geometry needs equal MLP widths")
        return geometry

    def _module(self, layer: int, part: str) -> torch.nn.Module:
        return getattr(self.bridge.blocks[layer].mlp, part).original_component

    def _axis(self, layer: int, part: str) -> int:
        return _unit_axis(self._module(layer, part), reads_residual=part != "out")

    def _index(self, layer: int, units: Units) -> torch.Tensor:
        if not 0 <= layer < self.n_layers:
            raise NexError(f"layer {layer} out of range: this model has layers 0..{self.n_layers - 1}")
        if isinstance(units, torch.Tensor):
            units = units.detach().cpu().numpy()
        array = np.asarray(units).reshape(-1)
        if array.size and not np.issubdtype(array.dtype, np.integer):
            raise NexError(f"units must be integers, got {array.dtype} values: pass unit indices")
        idx = torch.as_tensor(array.astype(np.int64))
        if idx.numel() and (idx.min() < 0 or idx.max() >= self.d_mlp):
            raise NexError(f"unit index out of range in layer {layer}: units are 0..{self.d_mlp - 1}")
        if idx.unique().numel() != idx.numel():
            raise NexError(f"duplicate units in layer {layer}: pass each unit once")
        return idx

    def neuron_weights(self, layer: int, units: Units) -> dict[str, torch.Tensor]:
        """Copies of the weights of ``units`` in ``layer``, unit-major (see the class docstring)."""
        idx = self._index(layer, units)
        out = {}
        for key in self.keys:
            part, _, bias = key.partition("_")
            module = self._module(layer, part)
            if bias:
                out[key] = module.bias.detach()[idx.to(module.bias.device)].clone()
            else:
                axis = self._axis(layer, part)
                picked = module.weight.detach().index_select(axis, idx.to(module.weight.device))
                out[key] = picked.movedim(axis, 0).clone()
        return out

    @torch.no_grad()
    def set_neuron_weights(self, layer: int, units: Units, weights: dict[str, torch.Tensor]) -> None:
        """Write ``weights`` (as returned by ``neuron_weights``) into ``units`` of ``layer``, in place."""
        idx = self._index(layer, units)
        if set(weights) != set(self.keys):
            raise NexError(f"neuron weights have parts {sorted(weights)}, this model needs "
                           f"{sorted(self.keys)}: read them with MLPGeometry.neuron_weights")
        for key, value in weights.items():  # all checked before anything is written
            expected = (len(idx),) if key.endswith("_bias") else (len(idx), self.d_model)
            if tuple(value.shape) != expected or value.dtype != self.dtype:
                raise NexError(f"neuron weights {key!r} are {tuple(value.shape)} {value.dtype}, expected "
                               f"{expected} {self.dtype}: cast or slice them to match")
        for key, value in weights.items():
            part, _, bias = key.partition("_")
            module = self._module(layer, part)
            if bias:
                module.bias.index_copy_(0, idx.to(module.bias.device), value.to(module.bias.device))
            else:
                axis = self._axis(layer, part)
                module.weight.index_copy_(axis, idx.to(module.weight.device),
                                          value.to(module.weight.device).movedim(0, axis))

    def check_compatible(self, other: MLPGeometry) -> None:
        """Raise NexError naming the first difference that makes neuron transplant impossible."""
        for name in ("architecture", "n_layers", "d_model", "d_mlp", "gated", "keys", "dtype"):
            mine, theirs = getattr(self, name), getattr(other, name)
            if mine != theirs:
                raise NexError(f"models differ in {name} ({mine} vs {theirs}): neuron transplant "
                               f"needs two variants of one architecture, size and dtype")
