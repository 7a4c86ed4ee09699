"""Capture: sampled responses with sparse MLP activations, recorded into a SparseCache.

    config      what determines a capture: sampling, recording and replay settings (light: no torch)
    traces      traces from any engine (parquet, JSONL), read and checked
    sampling    N samples per prompt by the fastest backend (SAMPLERS) into a traces table
    sparsify    which neurons enter a row, and with what score (SPARSIFIERS)
    rows        tokens' activations -> sparse scores -> rows of ``window`` tokens
    replay      teacher-forced replay of finished responses through the bridge
    record      the three routes into a cache: sample + replay, stepwise, replay of traces
    rewindow    coarser windows and stricter selections derived from a token-level cache
    shards      work split into shards, each written atomically and resumed
    cluster     shards on Ray workers

Names are imported on first use, so ``import nex_causal.capture`` loads no torch.
"""

from nex_causal.registry import lazy_exports

__getattr__, __dir__ = lazy_exports(__name__, {
    "CaptureConfig": "config", "ReplayConfig": "config", "SampleConfig": "config", "capture": "record",
    "capture_traces": "record", "sample": "sampling", "Sparsifier": "sparsify", "rewindow": "rewindow",
    "read_traces": "traces",
})
