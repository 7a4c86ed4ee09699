"""The merge family: mergekit configurations over two trained models, seeded damage, and running them.

A merge combines two trained models (``models``; the methods built on task vectors also read
``base``, the model both were fine-tuned from; SLERP interpolates along the sphere from the
first, its mergekit base model, towards the second). The zoo writes each merge as a mergekit
YAML config, keeps it in the merged model's directory (``mergekit_config.yml``), and runs
it through mergekit's Python API. DARE drops task-vector entries at random; mergekit seeds
torch's global generator from the merge's ``random_seed`` before it starts, so a seeded DARE
merge is reproducible, and the zoo runs it inside ``torch.random.fork_rng`` so the caller's
random state is left alone.

Damage variants differ from one model by damage alone, the negative controls of a positive
control: ``noise`` adds seeded Gaussian noise to every weight matrix (``scale`` times each
tensor's own standard deviation); DARE of one model over the base drops part of its task
vector (mergekit's ``dare_linear`` with a single model).
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from nex_causal.io import atomic_path

BASE = "base"
EXPERTS = ("expert-search", "expert-compute")
NOISE = "noise"  # the one method that is not mergekit's


@dataclass(frozen=True)
class Merge:
    """One made variant: a method, the models it reads with a weight each, and its own parameters."""

    name: str
    method: str  # mergekit's merge_method, or ``noise``
    weights: tuple[float, ...]  # one per model of ``models``, in order
    density: float | None = None  # TIES / DARE: fraction of each task vector kept
    lam: float | None = None  # task arithmetic: scale of the summed task vectors
    models: tuple[str, ...] = EXPERTS
    scale: float | None = None  # noise: standard deviations of the added noise, per tensor

    @property
    def parents(self) -> tuple[str, ...]:
        return self.models if self.method in ("linear", "slerp", NOISE) else (BASE, *self.models)

    def params(self) -> dict[str, Any]:
        """The variant's parameters as recorded in the family table."""
        out: dict[str, Any] = {"weights": dict(zip(self.models, self.weights))}
        for key, value in (("density", self.density), ("lambda", self.lam), ("scale", self.scale)):
            if value is not None:
                out[key] = value
        return out

    def config(self, model_dirs: Mapping[str, Path]) -> dict[str, Any]:
        """The mergekit configuration, with each parent named by its directory."""
        if self.method == "slerp":  # t = 0 is the base model (the first), t = 1 the other
            return {"merge_method": "slerp", "base_model": str(model_dirs[self.models[0]]),
                    "models": [{"model": str(model_dirs[e])} for e in self.models],
                    "parameters": {"t": self.weights[1]}, "dtype": "float32"}
        models = []
        for model, weight in zip(self.models, self.weights):
            parameters: dict[str, Any] = {"weight": weight}
            if self.density is not None:
                parameters["density"] = self.density
            models.append({"model": str(model_dirs[model]), "parameters": parameters})
        config: dict[str, Any] = {"merge_method": self.method, "models": models, "dtype": "float32"}
        if self.method != "linear":
            config["base_model"] = str(model_dirs[BASE])
        if self.lam is not None:
            config["parameters"] = {"lambda": self.lam}
        return config


def default_family() -> tuple[Merge, ...]:
    """Over the two experts: linear merges over a sweep of weights, SLERP at two, task arithmetic,
    TIES and DARE at two densities.

    ``linear-w`` is ``w * expert-search + (1 - w) * expert-compute``; ``slerp-w`` interpolates
    spherically with the same weights (mergekit's ``t = 1 - w``).
    """
    linear = [Merge(f"linear-{w}", "linear", (w, round(1 - w, 2))) for w in (0.1, 0.3, 0.5, 0.7, 0.9)]
    spherical = [Merge(f"slerp-{w}", "slerp", (w, round(1 - w, 2))) for w in (0.3, 0.7)]
    arithmetic = [Merge(f"task-arithmetic-{lam}", "task_arithmetic", (1.0, 1.0), lam=lam)
                  for lam in (0.3, 0.7, 1.0)]  # 0.5 would equal linear-0.5
    sparse = [Merge(f"{method.replace('_', '-')}-{density}", method, weights, density=density)
              for method, weights in (("ties", (1.0, 1.0)), ("dare_ties", (1.0, 1.0)),
                                      ("dare_linear", (0.5, 0.5)))
              for density in (0.3, 0.7)]
    return (*linear, *spherical, *arithmetic, *sparse)


def scout_family() -> tuple[Merge, ...]:
    """Between the scout's levels, and damage of the efficient one.

    ``mix-w``: ``w * efficient + (1 - w) * redundant-0.5`` (linear) at three weights, and SLERP
    half-way; ``under-mix-0.5``: efficient and under-exploring, half each; ``ties-0.5``:
    efficient and redundant-0.25 over the base. Damage only (the negative controls, six of them
    so that a rank over damage alone can reach a permutation p below 0.01): ``noise-s`` (s
    standard deviations of each tensor) and ``dare-d`` (the efficient task vector with a share
    d kept).
    """
    pair = ("efficient", "redundant-0.5")
    return (
        *(Merge(f"mix-{w}", "linear", (w, round(1 - w, 2)), models=pair) for w in (0.25, 0.5, 0.75)),
        Merge("slerp-0.5", "slerp", (0.5, 0.5), models=pair),
        Merge("under-mix-0.5", "linear", (0.5, 0.5), models=("efficient", "under")),
        Merge("ties-0.5", "ties", (1.0, 1.0), density=0.5, models=("efficient", "redundant-0.25")),
        *(Merge(f"noise-{s}", NOISE, (1.0,), models=("efficient",), scale=s) for s in (0.15, 0.2, 0.05, 0.1)),
        *(Merge(f"dare-{d}", "dare_linear", (1.0,), density=d, models=("efficient",)) for d in (0.5, 0.3)),
    )


def add_noise(merge: Merge, model_dirs: Mapping[str, Path], out: str | Path, seed: int) -> None:
    """The one model plus seeded Gaussian noise of ``merge.scale`` standard deviations on every matrix."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    (source,) = merge.models
    model = AutoModelForCausalLM.from_pretrained(model_dirs[source], dtype=torch.float32)
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for _, param in sorted(model.named_parameters()):
            if param.ndim == 2:  # weight matrices; norms and biases stay as they are
                param += merge.scale * param.std() * torch.randn(param.shape, generator=generator)
    with atomic_path(out, is_dir=True) as tmp:
        model.save_pretrained(tmp)
        AutoTokenizer.from_pretrained(model_dirs[source]).save_pretrained(tmp)


def run_merge(merge: Merge, model_dirs: Mapping[str, Path], out: str | Path, seed: int) -> None:
    """Make ``merge`` into ``out`` (atomically), seeded by ``seed``: mergekit's run, or ``add_noise``."""
    if merge.method == NOISE:
        add_noise(merge, model_dirs, out, seed)
        return
    import torch
    from mergekit.config import MergeConfiguration
    from mergekit.merge import MergeOptions
    from mergekit.merge import run_merge as mergekit_run

    config = merge.config(model_dirs)
    text = yaml.safe_dump(config, sort_keys=False)
    options = MergeOptions(random_seed=seed, quiet=True, copy_tokenizer=True, write_model_card=True)
    transformers_log = logging.getLogger("transformers")
    level = transformers_log.level
    transformers_log.setLevel(logging.ERROR)  # mergekit's config copy warns about torch_dtype
    try:
        with atomic_path(out, is_dir=True) as tmp, torch.random.fork_rng():
            mergekit_run(MergeConfiguration.model_validate(config), str(tmp), options, config_source=text)
    finally:
        transformers_log.setLevel(level)
