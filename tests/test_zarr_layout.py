"""Canary: the zarr internals and the shard byte layout that ``hdrprep._shard_io`` relies on.

``hdrprep._shard_io`` writes and reads zarr v3 shard files by hand and reaches into
private zarr APIs, hence the zarr pin in pyproject.toml. Each test here checks one
of those assumptions against the installed zarr; a failure names the zarr version,
what broke, and the fix. To see whether the pin can move, run this file (with
tests/test_store.py and tests/test_store_readinto.py) in a throwaway environment
with the newest zarr 3.x past the pin (zarr >= 3.2 needs Python >= 3.12)::

    python3.12 -m venv /tmp/z && /tmp/z/bin/pip install -e . pytest
    /tmp/z/bin/pip install --upgrade 'zarr<4'
    /tmp/z/bin/python -m pytest -q tests/test_zarr_layout.py tests/test_store.py tests/test_store_readinto.py

If they pass, the pin's upper bound can move past that version.
"""

from __future__ import annotations

import contextlib
import os
from pathlib import Path

import numpy as np
import pytest

from hdrprep import _shard_io, store

N, SIZE, PER = 16, 16, 8  # two full shards of 8 one-pair chunks


def _broke(what: str, detail: str) -> str:
    import zarr

    v = zarr.__version__
    return (f"zarr {v}: {what} no longer holds ({detail}). hdrprep/_shard_io.py writes and reads zarr's shard "
            f"files by hand through this; fix: pin zarr below {v} in pyproject.toml, or update "
            f"hdrprep/_shard_io.py (and this test) to zarr {v}")


@contextlib.contextmanager
def _assumption(what: str):
    """Turn any error or failed assert inside into a failure that names zarr's version, ``what`` and the fix."""
    try:
        yield
    except Exception as e:  # noqa: BLE001 - AssertionError, ImportError, AttributeError, ...: all are news
        pytest.fail(_broke(what, f"{type(e).__name__}: {e}"))


def _data(dtype, rng: np.random.Generator, n: int = N) -> np.ndarray:
    if dtype == np.uint8:
        return rng.integers(1, 256, (n, SIZE, SIZE, 3), dtype=np.uint8)
    return (rng.gamma(0.5, 2.0, (n, SIZE, SIZE, 3)) + 1e-3).astype(np.float16)


def _array(tmp_path: Path, name: str, compressor: str = "blosc-zstd"):
    group, _ = store.create_arrays(tmp_path / f"{compressor}.zarr", N, SIZE, PER, compressor)
    return group[name]


def _shard_file(arr, shard: int) -> Path:
    return _shard_io.local_root(arr) / arr.path / _shard_io.shard_key(arr, shard)


def _files(arr) -> list[str]:
    root = _shard_io.local_root(arr) / arr.path
    return sorted(str(p.relative_to(root)) for p in (root / "c").rglob("*") if p.is_file())


def test_private_names_exist():
    with _assumption("zarr.core.sync.sync (hdrprep._shard_io.zarr_sync)"):
        from zarr.core.sync import sync

        assert callable(sync)
    with _assumption("zarr.core.buffer.default_buffer_prototype().buffer.from_bytes (hdrprep._shard_io.zarr_buffer)"):
        from zarr.core.buffer import default_buffer_prototype

        assert callable(default_buffer_prototype().buffer.from_bytes)


def test_sync_buffer_and_array_store_write_and_delete_a_key(tmp_path):
    arr = _array(tmp_path, "ldr")
    with _assumption("Array.store_path.store is the array's LocalStore, with .root (hdrprep._shard_io.array_store)"):
        from zarr.storage import LocalStore

        assert isinstance(_shard_io.array_store(arr), LocalStore)
        assert _shard_io.local_root(arr) == tmp_path / "blosc-zstd.zarr"
    with _assumption("sync(store.set(key, default_buffer_prototype().buffer.from_bytes(data))) writes the file "
                     "(hdrprep._shard_io.zarr_sync, zarr_buffer)"):
        payload = bytes(range(256)) * 3
        store_ = _shard_io.array_store(arr)
        _shard_io.zarr_sync(store_.set("ldr/probe", _shard_io.zarr_buffer(payload)))
        assert (tmp_path / "blosc-zstd.zarr" / "ldr" / "probe").read_bytes() == payload
        _shard_io.zarr_sync(store_.delete("ldr/probe"))
        assert not (tmp_path / "blosc-zstd.zarr" / "ldr" / "probe").exists()


def test_shard_key_names_the_file_zarr_writes(tmp_path):
    arr = _array(tmp_path, "hdr")
    arr[PER:2 * PER] = _data(np.float16, np.random.default_rng(1), PER)  # zarr's own write of shard 1
    with _assumption("Array.metadata.encode_chunk_key((s, 0, 0, 0)) is the key of shard s's file, "
                     "'c/s/0/0/0' (hdrprep._shard_io.shard_key)"):
        assert _shard_io.shard_key(arr, 1) == "c/1/0/0/0"
        assert _files(arr) == [_shard_io.shard_key(arr, 1)]
        assert _shard_file(arr, 1).is_file()
    with _assumption("delete_shards removes shard files, and an absent one is no error (hdrprep._shard_io)"):
        _shard_io.delete_shards(arr, 0, 2)
        assert _files(arr) == []


@pytest.mark.parametrize("name", ["ldr", "hdr"])
def test_codecs_of_the_store_layout(tmp_path, name):
    arr = _array(tmp_path, name)
    with _assumption("Array.metadata.codecs == [ShardingCodec] with codecs [BytesCodec, BloscCodec] "
                     "(hdrprep._shard_io.sharding_codec, blosc_codec)"):
        from zarr.codecs import BloscCodec, ShardingCodec

        assert isinstance(_shard_io.sharding_codec(arr), ShardingCodec)
        assert isinstance(_shard_io.blosc_codec(arr), BloscCodec)
    with _assumption("the store's arrays are in the plain layout, so shards are written and read by hand "
                     "(hdrprep._shard_io.plain_blosc_shards; False means the slow zarr paths are taken)"):
        assert _shard_io.plain_blosc_shards(arr)
        assert _shard_io.direct_reader(arr) is not None
        assert not _shard_io.plain_blosc_shards(_array(tmp_path, name, "zstd"))
    with _assumption("BloscCodec's cname, clevel, shuffle, typesize, blocksize attributes "
                     "(hdrprep._shard_io.numcodecs_blosc)"):
        codec = _shard_io.blosc_codec(arr)
        assert codec.typesize == arr.dtype.itemsize, codec
        config = _shard_io.numcodecs_blosc(codec).get_config()
        assert config == {"id": "blosc", "cname": "zstd", "clevel": 1, "shuffle": 1,
                          "blocksize": store.BLOSC_BLOCK}, config


@pytest.mark.parametrize("name", ["ldr", "hdr"])
def test_zarr_writes_the_bytes_shard_io_writes(tmp_path, name):
    arr = _array(tmp_path, name)
    data = _data(arr.dtype, np.random.default_rng(2))
    arr[:] = data  # plain zarr, no all-zero chunk
    blosc = _shard_io.numcodecs_blosc(_shard_io.blosc_codec(arr))
    for s in range(N // PER):
        ref = _shard_file(arr, s).read_bytes()
        with _assumption(f"a shard file zarr writes is frames, then (offset, length) <u8 index, then CRC32C <u4 "
                         f"(shard {s} of {name}; hdrprep._shard_io.encode_shard, numcodecs_blosc)"):
            mine = _shard_io.encode_shard([blosc.encode(np.ascontiguousarray(c)) for c in data[s * PER:(s + 1) * PER]])
            assert len(mine) == len(ref), (len(mine), len(ref))
            assert mine == ref, f"first differing byte {next(i for i, (a, b) in enumerate(zip(mine, ref)) if a != b)}"


@pytest.mark.parametrize("name", ["ldr", "hdr"])
def test_index_reader_parses_zarr_shards_with_a_missing_chunk(tmp_path, name):
    arr = _array(tmp_path, name)
    data = _data(arr.dtype, np.random.default_rng(3))
    data[2] = 0  # zarr leaves an all-fill chunk out of its shard
    data[PER:] = 0  # and writes no file for an all-fill shard
    arr[:] = data
    path = _shard_file(arr, 0)
    with _assumption("the index is the last 16 * n + 4 bytes, CRC32C-checked; a missing chunk is "
                     "(2**64-1, 2**64-1); an all-fill shard has no file (hdrprep._shard_io.read_index, MISSING)"):
        assert not _shard_file(arr, 1).exists()
        fd = os.open(path, os.O_RDONLY)
        try:
            index = _shard_io.read_index(fd, path, PER)
        finally:
            os.close(fd)
        assert tuple(int(v) for v in index[2]) == (_shard_io.MISSING, _shard_io.MISSING)
        present = [j for j in range(PER) if j != 2]
        offsets, lengths = index[present, 0].astype(np.int64), index[present, 1].astype(np.int64)
        assert offsets[0] == 0 and np.array_equal(offsets[1:], np.cumsum(lengths)[:-1]), index
        assert path.stat().st_size == lengths.sum() + 16 * PER + 4
    with _assumption("ShardReader decodes each chunk of a zarr-written shard as zarr reads it "
                     "(hdrprep._shard_io.ShardReader)"):
        reader = _shard_io.direct_reader(arr)
        out = np.empty(arr.shape[1:], arr.dtype)
        for k in range(N):
            reader.read_into(k, out)
            assert np.array_equal(out.view(np.uint8), data[k].view(np.uint8)), k


@pytest.mark.parametrize("name", ["ldr", "hdr"])
def test_zarr_reads_shards_shard_io_writes(tmp_path, name):
    arr = _array(tmp_path, name)
    data = _data(arr.dtype, np.random.default_rng(4))
    with _assumption("a shard written by hdrprep._shard_io.write_whole_shard is read back by plain zarr "
                     "bit-identically"):
        assert all(_shard_io.write_whole_shard(arr, s, data[s * PER:(s + 1) * PER]) for s in range(N // PER))
        import zarr

        back = zarr.open_array(str(tmp_path / "blosc-zstd.zarr" / name), mode="r")[:]
        assert back.dtype == data.dtype and np.array_equal(back.view(np.uint8), data.view(np.uint8))
