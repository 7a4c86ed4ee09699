"""NEX's results as tables: one analysed response row by row, and the credited neurons of a weight vector.

The experiment runner writes these under ``RUN_DIR/tables/`` and the figures draw them.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from nex_causal.cache import unpack_keys
from nex_causal.nex.credit import ResponseTrace


def trace_table(trace: ResponseTrace) -> pd.DataFrame:
    """The ``trace`` table of one analysed response (``nex.analyze_response``), for ``plot_trace``.

    One line per usable row: ``row`` (raw row index), ``tokens``, ``slope``, ``explore``,
    ``cycle`` (index into ``trace.cycles``, -1 outside every cycle) and ``cycle_kind``.
    """
    cycle = np.full(len(trace.slopes), -1)
    kind = np.full(len(trace.slopes), "", dtype=object)
    for i, c in enumerate(trace.cycles):
        cycle[c.e_start:c.x_end + 1] = i
        kind[c.e_start:c.x_end + 1] = c.kind
    return pd.DataFrame({"row": trace.source, "tokens": trace.tokens, "slope": trace.slopes,
                         "explore": trace.explore, "cycle": cycle, "cycle_kind": kind})


def weights_table(weights: np.ndarray) -> pd.DataFrame:
    """The ``neuron_weights`` table of a weight vector (NEX_METHOD 5): its credited neurons.

    Columns ``key``, ``layer``, ``unit``, ``weight``, one line per neuron with w_n != 0.
    """
    weights = np.asarray(weights)
    keys = np.flatnonzero(weights).astype(np.uint32)
    layer, unit = unpack_keys(keys)
    return pd.DataFrame({"key": keys, "layer": layer, "unit": unit, "weight": weights[keys]})
