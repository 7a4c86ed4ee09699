"""What the causal test's controls are built from: per-unit covariates, activation contrasts, the differing layers.

A transplant of heavily used neurons perturbs a model more than one of idle neurons,
whatever NEX says about them, so a random control must match the effective set on what
could confound the outcome, not on the layer alone. Per unit ``(layer, unit)``:

    mass_recipient   mean |hook_post| activation of the recipient on the grid's contexts
    mass_donor       the same in the donor, on the same token sequences
    weight_diff      the norm of the donor-minus-recipient difference of the unit's weights

(an ablation grid, inside one model, matches on ``mass_recipient`` and the norm of the
unit's output weights). ``paired_contrast`` is the activation-contrast scorer's measure
(``intervene.scorers``): the mean |a_donor - a_recipient| over the same tokens.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch

from nex_causal.models.geometry import MLPGeometry, mlp_hook

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


@torch.no_grad()
def paired_contrast(recipient, donor, sequences: Sequence[torch.Tensor], batch_size: int) -> np.ndarray:
    """``[n_layers, d_mlp]``: the mean over every position of ``sequences`` of |a_donor - a_recipient|, both models
    run on the same tokens (right-padded; padding left out)."""
    n_layers, d_mlp = recipient.cfg.n_layers, recipient.cfg.d_mlp
    total, count = torch.zeros(n_layers, d_mlp, dtype=torch.float64), 0
    for start in range(0, len(sequences), batch_size):
        batch = list(sequences[start:start + batch_size])
        ids = torch.nn.utils.rnn.pad_sequence(batch, batch_first=True).to(recipient.cfg.device)
        mask = torch.zeros(ids.shape, dtype=torch.float64, device=ids.device)
        for row, seq in enumerate(batch):
            mask[row, :len(seq)] = 1.0
        acts = []
        for model in (recipient, donor):
            store: dict[int, torch.Tensor] = {}

            def keep(layer, store=store):
                def hook(act, hook):
                    store[layer] = act
                    return act
                return hook

            with model.hooks(fwd_hooks=[(mlp_hook(layer), keep(layer)) for layer in range(n_layers)]):
                model(ids, return_type=None)
            acts.append(store)
        for layer in range(n_layers):
            change = (acts[1][layer].double() - acts[0][layer].double()).abs() * mask[..., None]
            total[layer] += change.sum((0, 1)).cpu()
        count += int(mask.sum())
    return (total / max(count, 1)).numpy()


def unit_size(recipient, donor=None) -> np.ndarray:
    """``[n_layers, d_mlp]``: what moving a unit can change, read once per grid: its donor-minus-recipient weight
    difference (transfer), or, without a donor (ablation), its output-weight norm."""
    return output_norm(recipient) if donor is None else weight_difference(recipient, donor)


def covariates(recipient, donor, sequences: Sequence[torch.Tensor], batch_size: int, size: np.ndarray
               ) -> np.ndarray:
    """``[n_layers, d_mlp, c]``: the ``COVARIATES`` on ``sequences`` (with or without a donor), ``size`` last."""
    masses = [activation_mass(model, sequences, batch_size) for model in (recipient, donor) if model is not None]
    return np.stack([*masses, size], axis=-1)


def differing_layers(difference: np.ndarray) -> np.ndarray:
    """The layers where some unit's donor and recipient weights differ (the ceiling transplants all of them)."""
    return np.flatnonzero(difference.max(axis=1) > 0)
