"""How the positive control's capture settings were chosen, before its run and without its prompts.

On calibration prompts (``scout:48@7``: the test split drawn with seed 7, never the ``scout:64``
the experiment reports), the efficient and the most redundant level are captured at one token
per row and the 32 largest activations per token; every window and top-k below is derived from
that capture (``cache rewindow``), profiled (``nex-causal inspect``) and judged by what NEX needs
to read a cache at all, not by any prediction:

- at least 20 rows per response (a two-state HMM needs them);
- a median of at least 2 explore-exploit cycles per response, and most responses crediting
  a neuron (one cycle credits nothing but rounding);
- one response touches under 30% of the model's neurons (novelty is not spent at once).

(The novelty decay is printed too; it is not a criterion: an efficient trace that exploits one
family for ten steps recruits little that is new at its end, by design.)

The smallest window that passes on both levels wins (one row is then closest to one step of
the task), then the smallest top-k. Run from the repository root:

    python experiments/scout_probe.py [OUT_DIR]
"""

from __future__ import annotations

import sys
from pathlib import Path

import pandas as pd

from nex_causal.cache import SparseCache
from nex_causal.capture import CaptureConfig, capture
from nex_causal.capture.rewindow import rewindow
from nex_causal.nex import NexConfig
from nex_causal.nex.profile import profile

LEVELS = ("efficient", "redundant-0.5")
WINDOWS, TOP_K = (4, 8, 16), (8, 16, 32)
NEX = NexConfig(rho=0.95, min_run=2)


def main(out: Path) -> pd.DataFrame:
    rows = []
    for level in LEVELS:
        config = CaptureConfig(model=f"scout:{level}", tasks="scout:48@7", n_samples=2, max_new_tokens=320,
                               temperature=0.7, top_p=0.95, seed=0, batch_size=96, sparsifier="topk:32", window=1)
        source = out / f"{level}-w1"
        if not (source / "capture.json").is_file():
            capture(config, source, progress=False)
        for window in WINDOWS:
            for k in TOP_K:
                path = out / f"{level}-w{window}-k{k}"
                cache = SparseCache.open(path) if (path / "capture.json").is_file() else \
                    rewindow(source, path, window=window, sparsifier=f"topk:{k}")
                m = profile(cache, config=NEX).medians
                rows.append({"level": level, "window": window, "topk": k, **{
                    name: m[name] for name in ("rows_per_response", "cycles_per_response", "crediting_response_share",
                                               "neuron_coverage", "novelty_decay")},
                    "passes": bool(m["rows_per_response"] >= 20 and m["cycles_per_response"] >= 2
                                   and m["crediting_response_share"] >= 0.5 and m["neuron_coverage"] < 0.3)})
    table = pd.DataFrame(rows)
    passing = table.groupby(["window", "topk"])["passes"].all()
    print(table.to_string(index=False))
    chosen = passing[passing].index.min() if passing.any() else None
    print(f"chosen: window {chosen[0]}, topk:{chosen[1]}" if chosen else "no setting passes on both levels")
    return table


if __name__ == "__main__":
    main(Path(sys.argv[1] if len(sys.argv) > 1 else "runs/scout_probe"))
