"""What the causal test's controls are built from: per-unit covariates, the skill attribution, the differing layers.

A transplant of heavily used neurons perturbs a model more than one of idle neurons,
whatever NEX says about them, so a random control must match the effective set on what
could confound the outcome, not on the layer alone. Per unit ``(layer, unit)``:

    mass_recipient   mean |hook_post| activation of the recipient on the grid's contexts
    mass_donor       the same in the donor, on the same token sequences
    weight_diff      the norm of the donor-minus-recipient difference of the unit's weights

(an ablation grid, inside one model, matches on ``mass_recipient`` and the norm of the
unit's output weights). The supervised positive control ranks units by an attribution that
knows the skill, computed on prompts the test never sees: for a transfer, weight_diff times
the donor's activation mass on the skill's reference solutions (what moving the unit could
bring); for an ablation, the unit's mass times its output-weight norm (what silencing it
could take away).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch

from nex_causal.models.geometry import MLPGeometry

COVARIATES = {"transfer": ("mass_recipient", "mass_donor", "weight_diff"), "ablate": ("mass_recipient", "out_norm")}


def weight_difference(recipient, donor) -> np.ndarray:
    """``[n_layers, d_mlp]``: the norm of each unit's donor-minus-recipient weights (every part it owns)."""
    target, source = MLPGeometry.of(recipient), MLPGeometry.of(donor)
    target.check_compatible(source)
    out = np.zeros((target.n_layers, target.d_mlp))
    units = np.arange(target.d_mlp)
    for layer in range(target.n_layers):
        mine, theirs = target.neuron_weights(layer, units), source.neuron_weights(layer, units)
        for part in mine:
            diff = (theirs[part].double() - mine[part].double()).reshape(target.d_mlp, -1)
            out[layer] += (diff ** 2).sum(1).cpu().numpy()
    return np.sqrt(out)


def output_norm(model) -> np.ndarray:
    """``[n_layers, d_mlp]``: the norm of each unit's output (down-projection) weights."""
    geometry = MLPGeometry.of(model)
    units = np.arange(geometry.d_mlp)
    return np.stack([geometry.neuron_weights(layer, units)["out"].double().norm(dim=1).cpu().numpy()
                     for layer in range(geometry.n_layers)])


def activation_mass(model, sequences: Sequence[torch.Tensor], batch_size: int) -> np.ndarray:
    """``[n_layers, d_mlp]``: mean |activation| of every unit over every position of ``sequences``."""
    from nex_causal.intervene.patching import activation_means

    return activation_means(model, sequences, batch_size=batch_size, absolute=True).astype(np.float64)


def unit_size(recipient, donor=None) -> np.ndarray:
    """``[n_layers, d_mlp]``: what moving a unit can change, read once per grid: its donor-minus-recipient weight
    difference (transfer), or, without a donor (ablation), its output-weight norm."""
    return output_norm(recipient) if donor is None else weight_difference(recipient, donor)


def covariates(recipient, donor, sequences: Sequence[torch.Tensor], batch_size: int, size: np.ndarray
               ) -> np.ndarray:
    """``[n_layers, d_mlp, c]``: the ``COVARIATES`` on ``sequences`` (with or without a donor), ``size`` last."""
    masses = [activation_mass(model, sequences, batch_size) for model in (recipient, donor) if model is not None]
    return np.stack([*masses, size], axis=-1)


def attribution(recipient, donor, skill: Sequence[torch.Tensor], batch_size: int, size: np.ndarray) -> np.ndarray:
    """``[n_layers, d_mlp]``: the supervised positive control's attribution, the activation mass on the ``skill``
    sequences (the donor's in a transfer, the model's own in an ablation) times ``size``."""
    return activation_mass(donor if donor is not None else recipient, skill, batch_size) * size


def differing_layers(difference: np.ndarray) -> np.ndarray:
    """The layers where some unit's donor and recipient weights differ (the ceiling transplants all of them)."""
    return np.flatnonzero(difference.max(axis=1) > 0)
