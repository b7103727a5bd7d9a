"""PairReader.read_into: a pair decoded straight into caller-provided arrays equals zarr's read."""

import numpy as np
import pytest

from hdrprep import store
from hdrprep.errors import StoreError


def _zarr_pairs(root):
    import zarr

    g = zarr.open_group(str(root), mode="r")
    return g["ldr"][:], g["hdr"][:]


def _reader(root):
    import zarr

    return store.PairReader(zarr.open_group(str(root), mode="r"))


def _check_read_into_matches_zarr(root, direct: bool):
    ldr, hdr = _zarr_pairs(root)
    reader = _reader(root)
    assert [d is not None for d in reader._direct] == [direct, direct]
    # the trainer's use: rows of one batch array, poisoned so that a skipped byte shows
    out_l = np.full(ldr.shape, 0xAB, np.uint8)
    out_h = np.full(hdr.shape, 0xABAB, np.uint16).view(np.float16)
    order = np.random.default_rng(5).permutation(len(ldr))  # shard indices cached out of order
    for i, k in enumerate(order):
        assert reader.read_into(k, out_l[i], out_h[i]) is None
    assert np.array_equal(out_l, ldr[order])
    assert np.array_equal(out_h.view(np.uint16), hdr[order].view(np.uint16))  # bits, -0.0 and NaN included
    return ldr, hdr


def test_read_into_matches_zarr_on_a_built_store(smoke_store):
    _check_read_into_matches_zarr(smoke_store, direct=True)


@pytest.mark.parametrize("compressor", ["blosc-zstd", "zstd"])
def test_read_into_zero_fills_missing_chunks_and_shards(smoke_store, tmp_path, compressor):
    ldr, hdr = _zarr_pairs(smoke_store)
    per = 4
    n = 3 * per - 1  # the last shard is short
    assert len(ldr) >= n
    ldr, hdr = ldr[:n].copy(), hdr[:n].copy()
    ldr[1], hdr[1] = 0, 0  # an all-zero pair: its chunks are left out of shard 0
    group, _ = store.create_arrays(tmp_path / "s.zarr", n, ldr.shape[1], per, compressor)
    for start in (0, 2 * per):  # shard 1 is never written: no file
        store.write_pairs(group, start, ldr[start:start + per], hdr[start:start + per])
    ldr[per:2 * per], hdr[per:2 * per] = 0, 0
    got_l, got_h = _check_read_into_matches_zarr(tmp_path / "s.zarr", direct=compressor == "blosc-zstd")
    assert np.array_equal(got_l, ldr) and np.array_equal(got_h.view(np.uint16), hdr.view(np.uint16))
    if compressor == "blosc-zstd":
        assert not (tmp_path / "s.zarr" / "ldr" / "c" / "1" / "0" / "0" / "0").exists()


def test_read_into_refuses_wrong_buffers(smoke_store):
    reader = _reader(smoke_store)
    p = reader.arrays[0].shape[1]
    ldr = np.zeros((p, p, 3), np.uint8)
    hdr = np.zeros((p, p, 3), np.float16)
    for bad_l, bad_h, what in [
        (ldr, np.zeros((p, p, 3), np.float32), "float16"),
        (np.zeros((p, p, 4), np.uint8), hdr, rf"\({p}, {p}, 3\)"),
        (np.asfortranarray(ldr), hdr, "not C-contiguous"),  # blosc would fill it in the wrong order
        (ldr, np.zeros((p, p, 6), np.float16)[..., ::2], "not C-contiguous"),
    ]:
        with pytest.raises(ValueError, match=what):
            reader.read_into(0, bad_l, bad_h)
    with pytest.raises(IndexError, match="out of range"):
        reader.read_into(len(reader), ldr, hdr)


def test_read_into_detects_a_damaged_chunk(smoke_store, tmp_path):
    import shutil

    root = tmp_path / "s.zarr"
    shutil.copytree(smoke_store, root)
    shard = root / "hdr" / "c" / "0" / "0" / "0" / "0"
    raw = bytearray(shard.read_bytes())
    raw[12] ^= 0x40  # compressed size in the blosc header of chunk 0
    shard.write_bytes(bytes(raw))
    reader = _reader(root)
    p = reader.arrays[0].shape[1]
    with pytest.raises(StoreError, match="chunk 0 is damaged"):
        reader.read_into(0, np.empty((p, p, 3), np.uint8), np.empty((p, p, 3), np.float16))
