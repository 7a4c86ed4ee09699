"""SparseCache: the reference on-disk layout, round trips, streaming atomic writes,
concatenation, and one named error per kind of corruption."""

from __future__ import annotations

import tracemalloc
import warnings
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from nex_causal.cache import (
    FILES,
    SparseCache,
    SparseCacheWriter,
    concatenate,
    pack_keys,
    unpack_keys,
)
from nex_causal.errors import NexError

SHARED = Path(__file__).resolve().parents[2] / "shared"
REFERENCE = SHARED / "reference" / "nex_example_cache"
K255 = int(pack_keys(255, 7))

# Three responses: the second has an empty row and a row of 0 tokens; the third no rows.
RESPONSES = [
    [([5, 65536 + 2, 3], [1.0, 2.5, 0.25], 32), ([5, K255], [0.5, 4.0], 32), ([7], [6.0], 9)],
    [([1], [0.0], 32), ([], [], 32), ([9, 1], [3.0, 1.0], 0)],
    [],
]


def write(path, responses=RESPONSES, meta=True):
    with SparseCacheWriter(path) as writer:
        for r, rows in enumerate(responses):
            i = r % 3  # metadata repeats with RESPONSES
            writer.append(rows, meta={"prompt_id": f"p{i}", "sample_index": i,
                                      "token_logprob": np.arange(i + 1, dtype=np.float32)} if meta else None)
    return SparseCache.open(path)


def read_raw(path, name):
    file, dtype = FILES[name]
    return np.fromfile(Path(path) / file, dtype=dtype)


def test_pointers_and_raw_files_follow_the_reference_layout(tmp_path):
    cache = write(tmp_path / "c")
    assert (cache.n_responses, cache.n_rows) == (3, 6)
    assert read_raw(cache.path, "sample_row_ptr").tolist() == [0, 3, 6, 6]
    assert read_raw(cache.path, "row_ptr").tolist() == [0, 3, 5, 6, 7, 7, 9]
    assert read_raw(cache.path, "token_row_ptr").tolist() == [0, 32, 64, 73, 105, 137, 137]
    assert read_raw(cache.path, "keys").tolist() == [5, 65538, 3, 5, K255, 7, 1, 9, 1]
    assert read_raw(cache.path, "w_sum").dtype == np.float16
    # base defaults to the per-key sum of the raw rows, keys sorted
    assert read_raw(cache.path, "base_row_ptr").tolist() == [0, 5, 7, 7]
    assert read_raw(cache.path, "base_keys").tolist() == [3, 5, 7, 65538, K255, 1, 9]
    np.testing.assert_array_equal(read_raw(cache.path, "base_w_sum"), [0.25, 1.5, 6.0, 2.5, 4.0, 1.0, 3.0])
    assert sorted(p.relative_to(cache.path).as_posix() for p in cache.path.rglob("*") if p.is_file()) == sorted(
        [f for f, _ in FILES.values()] + ["responses.parquet", "integrity.json"])


def test_round_trip_returns_the_raw_rows(tmp_path):
    cache = write(tmp_path / "c")
    assert isinstance(cache.keys, np.memmap) and isinstance(cache.base_w_sum, np.memmap)
    for r, rows in enumerate(RESPONSES):
        got = cache.response_rows(r)
        assert len(got) == len(rows)
        for (keys, mass, tokens), (gk, gm, gt) in zip(rows, got):
            assert gk.dtype == np.uint32 and gk.tolist() == keys
            np.testing.assert_array_equal(gm, np.asarray(mass, np.float16).astype(np.float32))
            assert gt == tokens
    keys, mass = cache.base(0)
    assert keys.tolist() == [3, 5, 7, 65538, K255] and mass.dtype == np.float32
    table = cache.responses
    assert table["prompt_id"].tolist() == ["p0", "p1", "p2"]
    assert [list(v) for v in table["token_logprob"]] == [[0.0], [0.0, 1.0], [0.0, 1.0, 2.0]]


def test_explicit_base_and_response_rows_input(tmp_path):
    src = write(tmp_path / "a")
    with SparseCacheWriter(tmp_path / "b") as writer:
        writer.append(src.response_rows(0), base=([4, 2], [8.0, 1.0]))
    copy = SparseCache.open(tmp_path / "b")
    assert [k.tolist() for k, _, _ in copy.response_rows(0)] == [k.tolist() for k, _, _ in src.response_rows(0)]
    assert copy.base(0)[0].tolist() == [4, 2] and copy.base(0)[1].tolist() == [8.0, 1.0]
    assert copy.responses is None and not (copy.path / "responses.parquet").exists()


def test_float16_saturates_with_one_warning(tmp_path):
    rows = [([1, 2, 3], [1e6, 7e4, 1.0], 32), ([5], [4e4], 32), ([5], [4e4], 32)]
    with pytest.warns(UserWarning, match="2 row and 3 base mass values beyond the float16 maximum") as record:
        cache = write(tmp_path / "c", [rows], meta=False)
    assert len(record) == 1
    assert cache.response_rows(0).row(0)[1].tolist() == [65504.0, 65504.0, 1.0]
    assert cache.base(0)[1].tolist() == [65504.0, 65504.0, 1.0, 65504.0]


@pytest.mark.parametrize("bad", [np.nan, np.inf, -1.0])
def test_the_writer_refuses_mass_no_capture_makes(tmp_path, bad):
    with pytest.raises(NexError, match=r"response 0, row 1: mass .* is not a finite non-negative number"):
        write(tmp_path / "c", [[([1], [1.0], 4), ([2, 3], [1.0, bad], 4)]], meta=False)
    assert not (tmp_path / "c").exists()


def test_exception_inside_the_writer_leaves_nothing(tmp_path):
    target = tmp_path / "c"
    with pytest.raises(RuntimeError):
        with SparseCacheWriter(target) as writer:
            writer.append(RESPONSES[0])
            raise RuntimeError("capture crashed")
    assert list(tmp_path.iterdir()) == []
    write(target)
    with pytest.raises(NexError, match="response 0, row 0: keys must be packed"):
        with SparseCacheWriter(target) as writer:
            writer.append([([int(pack_keys(64, 0))], [1.0], 32)])
    assert SparseCache.open(target).n_responses == 3  # the old cache is untouched
    assert [p.name for p in tmp_path.iterdir()] == ["c"]


@pytest.mark.parametrize("rows, message", [
    ([([1, 2], [1.0], 32)], "1-D arrays of one length"),
    ([([1.5], [1.0], 32)], "keys must be integers"),
    ([([-1], [1.0], 32)], "keys must be packed"),
    ([([1], [1.0], -3)], "non-negative integer"),
    ([([1], [1.0], 2.5)], "non-negative integer"),
])
def test_bad_rows_are_refused(tmp_path, rows, message):
    with pytest.raises(NexError, match=message):
        with SparseCacheWriter(tmp_path / "c") as writer:
            writer.append(rows)


def test_metadata_for_every_response_or_none(tmp_path):
    with pytest.raises(NexError, match="response 1: give metadata for every response or for none"):
        with SparseCacheWriter(tmp_path / "c") as writer:
            writer.append(RESPONSES[0], meta={"prompt_id": "a"})
            writer.append(RESPONSES[1])


def test_writer_streams_instead_of_holding_the_responses(tmp_path):
    rng = np.random.default_rng(0)
    rows = [(np.sort(rng.choice(1 << 22, 500, replace=False)), rng.random(500), 32) for _ in range(20)]
    per_response = sum(k.nbytes + m.nbytes for k, m, _ in rows)  # ~160 kB of input arrays
    tracemalloc.start()
    with SparseCacheWriter(tmp_path / "c") as writer:
        for _ in range(100):
            writer.append(rows)
        _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    cache = SparseCache.open(tmp_path / "c")
    assert len(cache.keys) == 100 * 20 * 500
    assert peak < 10 * per_response  # 100 responses written, never held at once


def test_concatenate_equals_writing_in_one_go(tmp_path):
    whole = write(tmp_path / "whole", RESPONSES + RESPONSES[:2])
    part_a = write(tmp_path / "a", RESPONSES)
    write(tmp_path / "b", RESPONSES[:2])
    joined = concatenate([part_a, tmp_path / "b"], tmp_path / "joined")
    for name in FILES:
        np.testing.assert_array_equal(read_raw(joined.path, name), read_raw(whole.path, name))
    pd.testing.assert_frame_equal(joined.responses, whole.responses)
    assert joined.responses["prompt_id"].tolist() == ["p0", "p1", "p2", "p0", "p1"]


def test_concatenate_refuses_mixed_metadata(tmp_path):
    write(tmp_path / "a")
    write(tmp_path / "b", meta=False)
    with pytest.raises(NexError, match="some parts have a responses.parquet"):
        concatenate([tmp_path / "a", tmp_path / "b"], tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_empty_cache_round_trip(tmp_path):
    with SparseCacheWriter(tmp_path / "c"):
        pass
    cache = SparseCache.open(tmp_path / "c")
    assert (cache.n_responses, cache.n_rows, len(cache.keys)) == (0, 0, 0)
    with pytest.raises(NexError, match="response 0 is out of range"):
        cache.response_rows(0)


def test_keys_pack_and_unpack():
    keys = pack_keys([0, 35, 255], [9727, 1, 7])
    assert keys.dtype == np.uint32 and keys.tolist() == [9727, 35 * 65536 + 1, K255]
    layer, unit = unpack_keys(keys)
    assert layer.tolist() == [0, 35, 255] and unit.tolist() == [9727, 1, 7]


def overwrite(path, name, values):
    file, dtype = FILES[name]
    (path / file).write_bytes(np.asarray(values, dtype).tobytes())


CORRUPTIONS = {
    "missing file": (lambda p: (p / "rows/keys.uint32").unlink(), r"missing rows/keys\.uint32"),
    "truncated bytes": (lambda p: (p / "rows/keys.uint32").write_bytes(b"\0" * 7),
                        r"rows/keys\.uint32 has 7 bytes, not a multiple of 4"),
    "row_ptr too short": (lambda p: overwrite(p, "row_ptr", [0, 3, 5, 6, 7, 7]),
                          r"rows/row_ptr\.int64 has 6 entries, expected 7"),
    "token_row_ptr too long": (lambda p: overwrite(p, "token_row_ptr", list(range(8))),
                               r"rows/token_row_ptr\.int64 has 8 entries, expected 7"),
    "base_row_ptr wrong length": (lambda p: overwrite(p, "base_row_ptr", [0, 7]),
                                  r"base/row_ptr\.int64 has 2 entries, expected 4"),
    "non-monotone rows": (lambda p: overwrite(p, "row_ptr", [0, 3, 2, 6, 7, 7, 9]),
                          r"rows/row_ptr\.int64 is not monotone: it decreases at index 2"),
    "non-monotone samples": (lambda p: overwrite(p, "sample_row_ptr", [0, 4, 3, 6]),
                             r"rows/sample_row_ptr\.int64 is not monotone"),
    "non-zero start": (lambda p: overwrite(p, "base_row_ptr", [1, 5, 7, 7]),
                       r"base/row_ptr\.int64 starts at 1, expected 0"),
    "keys shorter than pointers": (lambda p: overwrite(p, "keys", [5, 65538, 3, 5]),
                                   r"rows/keys\.uint32 holds 4 entries, shorter than the 9"),
    "w_sum shorter than keys": (lambda p: overwrite(p, "w_sum", np.ones(8)),
                                r"rows/w_sum\.float16 holds 8 values but .*rows/keys\.uint32 holds 9"),
    "metadata rows": (lambda p: pd.DataFrame({"a": [1]}).to_parquet(p / "responses.parquet"),
                      r"responses\.parquet has 1 rows but the cache holds 3 responses"),
}


@pytest.mark.parametrize("name", list(CORRUPTIONS))
def test_a_corrupted_cache_without_a_record_gives_a_one_line_error_naming_the_file(tmp_path, name):
    corrupt, message = CORRUPTIONS[name]
    cache = write(tmp_path / "c")
    (cache.path / "integrity.json").unlink()  # the reference layout: structure is all there is to check
    corrupt(cache.path)
    with pytest.raises(NexError, match=message) as err, warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the note that the cache has no record
        SparseCache.open(cache.path)
    assert "\n" not in str(err.value)


def flip_byte(file: Path, at: int) -> None:
    data = bytearray(file.read_bytes())
    data[at] ^= 0x01
    file.write_bytes(bytes(data))


@pytest.mark.parametrize("name", [f for f, _ in FILES.values()] + ["responses.parquet"])
def test_one_flipped_byte_in_any_file_is_refused(tmp_path, name):
    cache = write(tmp_path / "c")
    file = cache.path / name
    flip_byte(file, file.stat().st_size // 2)
    with pytest.raises(NexError, match=rf"{name} does not hold what was written \(CRC-32 differs\)") as err:
        SparseCache.open(cache.path)
    assert "\n" not in str(err.value)


def test_verification_levels(tmp_path):
    big = [[(np.arange(600_000) % 60000, np.ones(600_000), 32)]]  # 2.4 MB of keys: a middle beyond both edges
    cache = write(tmp_path / "c", big, meta=False)
    keys = cache.path / "rows/keys.uint32"
    flip_byte(keys, keys.stat().st_size // 2)
    SparseCache.open(cache.path, verify="fast")  # the ends are intact: fast cannot see the middle
    with pytest.raises(NexError, match="CRC-32 differs"):
        SparseCache.open(cache.path, verify="full")
    flip_byte(keys, 3)
    with pytest.raises(NexError, match="CRC-32 differs"):
        SparseCache.open(cache.path, verify="fast")
    keys.write_bytes(keys.read_bytes()[:-4])
    with pytest.raises(NexError, match=r"keys\.uint32 has \d+ bytes but was written with \d+"):
        SparseCache.open(cache.path, verify="off")


def test_values_no_capture_writes_are_named_with_their_index(tmp_path):
    cache = write(tmp_path / "c")
    mass = read_raw(cache.path, "w_sum")
    mass[4] = np.nan
    overwrite(cache.path, "w_sum", mass)
    from nex_causal.cache.integrity import write_record

    write_record(cache.path, [f for f, _ in FILES.values()] + ["responses.parquet"])  # a forged record
    with pytest.raises(NexError, match=r"rows/w_sum\.float16 holds .*nan.* at index 4"):
        SparseCache.open(cache.path)


def test_missing_directory():
    with pytest.raises(NexError, match="cache directory /nonexistent/cache does not exist"):
        SparseCache.open("/nonexistent/cache")


@pytest.mark.skipif(not REFERENCE.exists(), reason="../shared/reference is not available")
def test_reads_the_reference_example_cache(tmp_path):
    with pytest.warns(UserWarning, match="no integrity record"):  # the reference layout has none: a note, once
        cache = SparseCache.open(REFERENCE)
    assert (cache.n_responses, cache.n_rows, len(cache.keys), len(cache.base_keys)) == (1, 83, 26660, 3514)
    rows = cache.response_rows(0)
    assert rows.tokens.sum() == 2646 and rows.tokens[-1] == 22 and len(rows.row(0)[0]) == 372
    layer, unit = unpack_keys(cache.base_keys)
    assert layer.max() < 36 and unit.max() < 9728
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # re-encoding float16 values saturates nothing
        copy = concatenate([cache, cache], tmp_path / "twice")
    assert copy.n_responses == 2 and copy.responses is None
    np.testing.assert_array_equal(copy.keys[len(cache.keys):], cache.keys)
    single = concatenate([cache], tmp_path / "once")
    for file, _ in FILES.values():  # the copy of one part is byte-identical to the source
        assert (single.path / file).read_bytes() == (REFERENCE / file).read_bytes()
