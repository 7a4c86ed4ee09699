"""The sparse activation cache (NEX_METHOD section 1): its format, its reader, its checks, its writer, its record.

    format     the reference release's files and dtypes, packed keys, what no capture writes
    layout     SparseCache (memory-mapped, checked on open or in the pass that reads it) and ResponseRows
    checks     structure, geometry, values, and the full check carried by a reader (ReadPass)
    writer     SparseCacheWriter (one response at a time, atomic), concatenate, seal
    integrity  the record of each file's size and CRC-32, checked at full, fast or off
"""

from nex_causal.cache.format import (
    CAPTURE_FILE,
    FILES,
    FLOAT16_MAX,
    KEY_SPACE,
    N_LAYERS,
    RESERVED_LAYER,
    RESPONSES_FILE,
    TOKEN_ORDER,
    out_of_range,
    pack_keys,
    unpack_keys,
)
from nex_causal.cache.layout import ResponseRows, SparseCache
from nex_causal.cache.writer import CacheLike, Row, SparseCacheWriter, concatenate, seal

__all__ = ["CAPTURE_FILE", "FILES", "FLOAT16_MAX", "KEY_SPACE", "N_LAYERS", "RESERVED_LAYER", "RESPONSES_FILE",
           "TOKEN_ORDER", "CacheLike", "ResponseRows", "Row", "SparseCache", "SparseCacheWriter", "concatenate",
           "out_of_range", "pack_keys", "seal", "unpack_keys"]
