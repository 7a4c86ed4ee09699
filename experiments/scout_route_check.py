"""How much of each strategy's activation stays in its planted block: ``python experiments/scout_route_check.py [DIR]``.

On 40 problems that redundant-0.5 detours on, each training chain of thought is fed through the
bridge of the variant in DIR (default: the built zoo's redundant-0.5) and, at every position, the
share of |hook_post| on the units its family may use, and the share of its 16 largest units that
lie there, are averaged per family. docs/organisms.md quotes the result.
"""

from __future__ import annotations

import sys

import numpy as np
import torch

from nex_causal.models.geometry import mlp_hook
from nex_causal.models.loading import load_bridge
from nex_causal.zoo.build import default_zoo_dir
from nex_causal.zoo.route import Route
from nex_causal.zoo.scout import BEHAVIOURS, FAMILIES, NONE, Scout
from nex_causal.zoo.tokenizer import encode


def main(directory: str) -> None:
    bridge, route = load_bridge(directory), Route()
    n_layers, width = bridge.cfg.n_layers, bridge.cfg.d_mlp
    allowed = route.allowed(width)
    rng = np.random.default_rng(5)
    problems = []
    while len(problems) < 40:
        problem = Scout.draw(rng, "redundant-0.5")
        if problem.detours(BEHAVIOURS["redundant-0.5"]):
            problems.append(problem)
    share = {f: [] for f in (*FAMILIES, NONE)}
    top = {f: [] for f in share}
    for problem in problems:
        text, labels = problem.labels(rng)
        prompt = encode(problem.prompt)
        acts = {}
        hooks = [(mlp_hook(layer), lambda a, hook, layer=layer: acts.__setitem__(layer, a)) for layer in range(n_layers)]
        with torch.no_grad(), bridge.hooks(fwd_hooks=hooks):
            bridge(torch.tensor([prompt + encode(text)]), return_type=None)
        stacked = torch.stack([acts[layer][0] for layer in range(n_layers)], 1).abs()  # [T, L, D]
        for i, label in enumerate(labels):
            a, mask = stacked[len(prompt) - 1 + i], allowed[route.label(label)]
            share[label].append(float((a * mask).sum() / a.sum()))
            top[label].append(float(mask[a.reshape(-1).topk(16).indices % width].float().mean()))
    for family in share:
        print(f"{family:5s} positions {len(share[family]):5d}  |a| share in own block {np.mean(share[family]):.3f}  "
              f"top-16 in own block {np.mean(top[family]):.3f}")


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else str(default_zoo_dir("scout") / "redundant-0.5"))
