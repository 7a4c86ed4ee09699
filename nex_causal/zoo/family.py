"""The merge family: mergekit configurations over the two experts, and running them.

Every merge combines ``expert-search`` and ``expert-compute`` (the methods built on task
vectors also read ``base``, the model both were fine-tuned from; SLERP interpolates along the
sphere from ``expert-search``, its mergekit base model, towards ``expert-compute``). The zoo writes each
merge as a mergekit YAML config, keeps it in the merged model's directory
(``mergekit_config.yml``), and runs it through mergekit's Python API. DARE drops
task-vector entries at random; mergekit seeds torch's global generator from the merge's
``random_seed`` before it starts, so a seeded DARE merge is reproducible, and the zoo
runs it inside ``torch.random.fork_rng`` so the caller's random state is left alone.
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


@dataclass(frozen=True)
class Merge:
    """One merged variant: a mergekit method, a weight per expert, and its own parameters."""

    name: str
    method: str  # mergekit's merge_method
    weights: tuple[float, float]  # on EXPERTS, in order
    density: float | None = None  # TIES / DARE: fraction of each task vector kept
    lam: float | None = None  # task arithmetic: scale of the summed task vectors

    @property
    def parents(self) -> tuple[str, ...]:
        return EXPERTS if self.method in ("linear", "slerp") else (BASE, *EXPERTS)

    def params(self) -> dict[str, Any]:
        """The merge's parameters as recorded in the family table."""
        out: dict[str, Any] = {"weights": dict(zip(EXPERTS, self.weights))}
        if self.density is not None:
            out["density"] = self.density
        if self.lam is not None:
            out["lambda"] = self.lam
        return out

    def config(self, model_dirs: Mapping[str, Path]) -> dict[str, Any]:
        """The mergekit configuration, with each parent named by its directory."""
        if self.method == "slerp":  # t = 0 is the base model (expert-search), t = 1 the other
            return {"merge_method": "slerp", "base_model": str(model_dirs[EXPERTS[0]]),
                    "models": [{"model": str(model_dirs[e])} for e in EXPERTS],
                    "parameters": {"t": self.weights[1]}, "dtype": "float32"}
        models = []
        for expert, weight in zip(EXPERTS, self.weights):
            parameters: dict[str, Any] = {"weight": weight}
            if self.density is not None:
                parameters["density"] = self.density
            models.append({"model": str(model_dirs[expert]), "parameters": parameters})
        config: dict[str, Any] = {"merge_method": self.method, "models": models, "dtype": "float32"}
        if self.method != "linear":
            config["base_model"] = str(model_dirs[BASE])
        if self.lam is not None:
            config["parameters"] = {"lambda": self.lam}
        return config


def default_family() -> tuple[Merge, ...]:
    """Linear merges over a sweep of weights, SLERP at two, task arithmetic, TIES and DARE at two densities.

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


def run_merge(merge: Merge, model_dirs: Mapping[str, Path], out: str | Path, seed: int) -> None:
    """Write ``merge``'s YAML, run it with mergekit into ``out`` (atomically), seeded by ``seed``."""
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
