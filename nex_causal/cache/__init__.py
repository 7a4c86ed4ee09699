"""The sparse activation cache (NEX_METHOD section 1): its layout, its reader, its writer, its integrity record.

    layout     the reference release's CSR arrays, packed keys, and SparseCache (memory-mapped, checked on open)
    writer     SparseCacheWriter (one response at a time, atomic) and concatenate
    integrity  the record of each file's size and CRC-32, checked at full, fast or off
"""

from nex_causal.cache.layout import (
                                     CAPTURE_FILE,
                                     FILES,
                                     FLOAT16_MAX,
                                     KEY_SPACE,
                                     N_LAYERS,
                                     RESERVED_LAYER,
                                     RESPONSES_FILE,
                                     TOKEN_ORDER,
                                     ResponseRows,
                                     SparseCache,
                                     out_of_range,
                                     pack_keys,
                                     unpack_keys,
)
from nex_causal.cache.writer import CacheLike, Row, SparseCacheWriter, concatenate

__all__ = ["CAPTURE_FILE", "FILES", "FLOAT16_MAX", "KEY_SPACE", "N_LAYERS", "RESERVED_LAYER", "RESPONSES_FILE",
           "TOKEN_ORDER", "CacheLike", "ResponseRows", "Row", "SparseCache", "SparseCacheWriter", "concatenate",
           "out_of_range", "pack_keys", "unpack_keys"]
