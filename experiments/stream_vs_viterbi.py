"""How far streaming NEX's forward-filtered phases lie from the batch's Viterbi phases on captured caches.

The phase model is calibrated on the first half of each cache's responses and the online labels of the
other half are compared row by row with Viterbi's (``nex.stream.label_agreement``):

    python experiments/stream_vs_viterbi.py runs/positive_control/caches/efficient runs/positive_control/caches/redundant-0.5
"""

import sys
from pathlib import Path

import numpy as np

from nex_causal.cache import SparseCache
from nex_causal.nex.config import NexConfig
from nex_causal.nex.credit import analyze_response
from nex_causal.nex.online import fit_phase_model
from nex_causal.nex.stream import StreamingNex, label_agreement

config = NexConfig(rho=0.95, min_run=2)
for path in sys.argv[1:]:
    cache = SparseCache.open(path)
    traces = [analyze_response(cache.response_rows(r), config) for r in range(cache.n_responses)]
    half = cache.n_responses // 2
    model = fit_phase_model([(t.slopes, t.explore) for t in traces[:half]], rho=config.rho)
    online, batch = [], []
    for r in range(half, cache.n_responses):
        stream = StreamingNex(config, phases=model)
        for keys, mass, tokens in cache.response_rows(r):
            stream.push(keys, mass, tokens)
        online.append(stream.finish().labels)
        batch.append(traces[r].explore)
    got = label_agreement(np.concatenate(online), np.concatenate(batch))
    print(Path(path).name, {k: round(v, 3) for k, v in got.items()})
