"""Tests of hdrprep.store's fast paths against their plain numpy / zarr references."""

from pathlib import Path

import numpy as np
import pytest

from hdrprep import _shard_io, store
from hdrprep.errors import StoreError


def _reference_half(x: np.ndarray) -> np.ndarray:
    with np.errstate(invalid="ignore", over="ignore"):
        return np.minimum(x, np.float32(store.HALF_MAX)).astype(np.float16)


def _special_values() -> np.ndarray:
    """float32 values where float16 rounding is easy to get wrong."""
    half = np.arange(1 << 16, dtype=np.uint32).astype(np.uint16).view(np.float16)
    finite = half[np.isfinite(half) & (half >= 0)].astype(np.float32)
    # exact float16 values, the midpoints between neighbours (ties) and one float32 ulp either side
    mid = ((finite[:-1].astype(np.float64) + finite[1:]) / 2).astype(np.float32)
    vals = np.concatenate([finite, mid, np.nextafter(mid, 0), np.nextafter(mid, np.inf),
                           np.nextafter(finite, 0), np.nextafter(finite, np.inf)])
    edge = np.array([0.0, 2.0 ** -24, 2.0 ** -25, 1.5 * 2.0 ** -25, 2.0 ** -26, 2.0 ** -14, 65504.0, 65504.5,
                     65519.996, 65520.0, 65535.0, 1e6, 3.4e38, np.finfo(np.float32).tiny], np.float32)
    return np.concatenate([vals, edge, np.nextafter(edge, np.inf)])


@pytest.mark.parametrize("seed", [0, 1])
def test_to_half_bit_identical_to_numpy_on_random_non_negative(seed):
    rng = np.random.default_rng(seed)
    # uniform in the bit pattern: every exponent, float16 subnormals and values above 65504 included
    x = rng.integers(0, 0x7F800000, 4_000_000, dtype=np.uint32).view(np.float32)
    got, over = store.to_half(x)
    assert got.dtype == np.float16 and got.shape == x.shape
    assert np.array_equal(got.view(np.uint16), _reference_half(x).view(np.uint16))
    assert over == np.count_nonzero(x > store.HALF_MAX) > 0


def test_to_half_bit_identical_on_ties_subnormals_and_the_clamp_edge():
    x = _special_values()
    got, over = store.to_half(x)
    ref = _reference_half(x)
    bad = np.flatnonzero(got.view(np.uint16) != ref.view(np.uint16))
    assert bad.size == 0, [(float(x[i]), float(got[i]), float(ref[i])) for i in bad[:5]]
    assert over == np.count_nonzero(x > store.HALF_MAX)


def test_to_half_nan_inf_and_negative_as_numpy():
    # cannot occur in HDR (finite, >= 0); documented to behave as numpy does
    x = np.array([np.nan, -np.nan, np.inf, -np.inf, -1.0, -0.0, -70000.0, 1.0], np.float32)
    x = np.concatenate([x, np.uint32([0x7F800001, 0x7FC00001, 0xFF800123]).view(np.float32)])
    got, over = store.to_half(x)
    assert np.array_equal(got.view(np.uint16), _reference_half(x).view(np.uint16))
    assert over == 1  # +inf only


def test_to_half_keeps_shape_and_takes_non_contiguous_input():
    rng = np.random.default_rng(3)
    x = rng.gamma(0.5, 4.0, (64, 80, 3)).astype(np.float32)[:, ::2]
    got, over = store.to_half(x)
    assert got.shape == x.shape and over == 0
    assert np.array_equal(got.view(np.uint16), _reference_half(x).view(np.uint16))


def test_to_half_refuses_other_dtypes():
    with pytest.raises(StoreError, match="float32"):
        store.to_half(np.ones(4, np.float64))


def _pairs(n: int, size: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    ldr = rng.integers(0, 256, (n, size, size, 3), dtype=np.uint8)
    hdr = rng.gamma(0.5, 2.0, (n, size, size, 3)).astype(np.float16)
    return ldr, hdr


def _shard_files(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes()
            for name in ("ldr", "hdr") for p in sorted((root / name / "c").rglob("*")) if p.is_file()}


@pytest.mark.parametrize("case", ["plain", "zero-pair", "negative-zero-pair", "last-shard-short", "zstd", "none"])
def test_write_pairs_bytes_identical_to_plain_zarr_write(tmp_path, case):
    import zarr

    n, size, per = (20, 16, 8) if case == "last-shard-short" else (16, 16, 8)
    compressor = case if case in ("zstd", "none") else "blosc-zstd"
    ldr, hdr = _pairs(n, size, np.random.default_rng(7))
    if case == "zero-pair":  # zarr leaves an all-fill chunk out of the shard
        ldr[3] = 0
        hdr[3] = 0
    if case == "negative-zero-pair":  # -0.0 is not the fill value: the chunk is written
        hdr[5] = -0.0
    roots = tmp_path / "fast", tmp_path / "reference"
    group, _ = store.create_arrays(roots[0], n, size, per, compressor)
    for start in range(0, n, per):
        store.write_pairs(group, start, ldr[start:start + per], hdr[start:start + per])
    group, _ = store.create_arrays(roots[1], n, size, per, compressor)
    for name, data in (("ldr", ldr), ("hdr", hdr)):
        group[name][:] = data  # zarr's own default path
    fast, ref = (_shard_files(r) for r in roots)
    assert fast.keys() == ref.keys() and len(fast) == 2 * (-(-n // per))
    for key in ref:
        assert fast[key] == ref[key], key
    back = zarr.open_group(str(roots[0]), mode="r")
    assert np.array_equal(back["ldr"][:], ldr)
    assert np.array_equal(back["hdr"][:].view(np.uint16), hdr.view(np.uint16))


def test_whole_shard_writer_takes_full_blosc_shards_only(tmp_path):
    ldr, hdr = _pairs(20, 16, np.random.default_rng(8))
    group, _ = store.create_arrays(tmp_path / "blosc", 20, 16, 8)
    assert _shard_io.write_whole_shard(group["hdr"], 1, hdr[8:16])
    assert not _shard_io.write_whole_shard(group["hdr"], 2, hdr[16:20])  # the short last shard: zarr writes it
    group, _ = store.create_arrays(tmp_path / "zstd", 20, 16, 8, "zstd")
    assert not _shard_io.write_whole_shard(group["ldr"], 0, ldr[:8])


def _zarr_pairs(root: Path) -> tuple[np.ndarray, np.ndarray]:
    import zarr

    g = zarr.open_group(str(root), mode="r")
    return g["ldr"][:], g["hdr"][:]


def _check_reader_matches_zarr(root: Path, direct: bool) -> None:
    import zarr

    ldr, hdr = _zarr_pairs(root)
    reader = store.PairReader(zarr.open_group(str(root), mode="r"))
    assert [d is not None for d in reader._direct] == [direct, direct]
    for k in np.random.default_rng(3).permutation(len(ldr)):  # random order: indices cached out of order
        got_l, got_h = reader.read(k)
        assert got_l.dtype == np.uint8 and got_h.dtype == np.float16
        assert np.array_equal(got_l, ldr[k]), k
        assert np.array_equal(got_h.view(np.uint16), hdr[k].view(np.uint16)), k
        got_l[:] = 1  # writable and not shared with the next read
    with pytest.raises(IndexError):
        reader.read(len(ldr))


def test_pair_reader_matches_zarr_on_a_built_store(smoke_store):
    _check_reader_matches_zarr(smoke_store, direct=True)


@pytest.mark.parametrize("compressor", ["blosc-zstd", "zstd"])
def test_pair_reader_zero_pair_short_last_shard_and_fallback(smoke_store, tmp_path, compressor):
    ldr, hdr = _zarr_pairs(smoke_store)
    n, per = len(ldr) - 1, 4  # n not a multiple of per: the last shard is short
    assert n % per
    ldr, hdr = ldr[:n].copy(), hdr[:n].copy()
    ldr[1] = 0  # an all-zero pair: its chunks are left out of the shard
    hdr[1] = 0
    group, _ = store.create_arrays(tmp_path / "s.zarr", n, ldr.shape[1], per, compressor)
    for start in range(0, n, per):
        store.write_pairs(group, start, ldr[start:start + per], hdr[start:start + per])
    _check_reader_matches_zarr(tmp_path / "s.zarr", direct=compressor == "blosc-zstd")
    assert np.array_equal(_zarr_pairs(tmp_path / "s.zarr")[0], ldr)


def test_pair_reader_reads_a_missing_shard_as_zero_and_refuses_a_damaged_index(tmp_path):
    import zarr

    ldr, hdr = _pairs(8, 16, np.random.default_rng(9))
    group, _ = store.create_arrays(tmp_path / "s.zarr", 8, 16, 4)
    store.write_pairs(group, 4, ldr[4:], hdr[4:])  # shard 0 never written
    reader = store.PairReader(zarr.open_group(str(tmp_path / "s.zarr"), mode="r"))
    assert not reader.read(0)[0].any() and not reader.read(3)[1].any()
    assert np.array_equal(reader.read(5)[0], ldr[5])
    shard = tmp_path / "s.zarr" / "hdr" / "c" / "1" / "0" / "0" / "0"
    raw = bytearray(shard.read_bytes())
    raw[-10] ^= 1  # one bit of the index
    shard.write_bytes(bytes(raw))
    reader = store.PairReader(zarr.open_group(str(tmp_path / "s.zarr"), mode="r"))
    with pytest.raises(StoreError, match="index is damaged"):
        reader.read(6)


@pytest.mark.parametrize("level", [1, 3])
def test_encoded_pairs_write_the_same_shard_files_as_write_pairs(tmp_path, level):
    n, size, per = 16, 16, 8
    ldr, hdr = _pairs(n, size, np.random.default_rng(9))
    frames = [store.encode_pair(ldr[i], hdr[i], "blosc-zstd", level) for i in range(n)]
    for i, f in enumerate(frames):
        got = store.decode_pair(f, size)
        assert np.array_equal(got[0], ldr[i]) and np.array_equal(got[1].view(np.uint16), hdr[i].view(np.uint16))
    roots = tmp_path / "encoded", tmp_path / "reference"
    group, _ = store.create_arrays(roots[0], n, size, per, "blosc-zstd", level)
    for start in range(0, n, per):
        assert store.write_encoded_pairs(group, start, frames[start:start + per], "blosc-zstd", level)
    group, _ = store.create_arrays(roots[1], n, size, per, "blosc-zstd", level)
    for start in range(0, n, per):
        store.write_pairs(group, start, ldr[start:start + per], hdr[start:start + per])
    assert _shard_files(roots[0]) == _shard_files(roots[1])


def test_encoded_pairs_only_where_shards_are_written_from_frames(tmp_path):
    ldr, hdr = _pairs(20, 16, np.random.default_rng(10))
    frames = [store.encode_pair(ldr[i], hdr[i], "blosc-zstd", 1) for i in range(20)]
    # no frames for another compressor or an all-zero chunk (zarr leaves those out of the shard)
    assert store.encode_pair(ldr[0], hdr[0], "zstd", 1) is None
    assert store.encode_pair(np.zeros_like(ldr[0]), hdr[0], "blosc-zstd", 1) is None
    group, _ = store.create_arrays(tmp_path / "a", 20, 16, 8, "blosc-zstd", 1)
    assert not store.write_encoded_pairs(group, 16, frames[16:], "blosc-zstd", 1)  # the short last shard
    assert not store.write_encoded_pairs(group, 0, frames[:8], "blosc-zstd", 3)  # frames of another level
    assert not store.write_encoded_pairs(group, 4, frames[4:12], "blosc-zstd", 1)  # not shard-aligned
    assert not list((tmp_path / "a" / "ldr").rglob("c/*")) and not list((tmp_path / "a" / "hdr").rglob("c/*"))
