"""Hand-written shard I/O: zarr v3 sharding's byte layout, written and read without zarr's pipeline.

Everything in hdrprep that knows how a shard file is laid out, or that uses a
private zarr API, is in this module; ``hdrprep.store`` calls it and keeps the
public API. ``tests/test_zarr_layout.py`` checks every assumption made here
against the installed zarr and names the zarr version when one breaks.

Why by hand (speed, measured on 512x512 pairs, blosc-zstd-1, 16 pairs per shard):

- write: zarr writes a whole shard through its partial-shard path (a fill-value
  array and a copy per chunk, a thread hop per codec call): 14.6 ms per pair
  against 7.7 ms for the bare codec. ``write_whole_shard`` builds the same bytes.
- read: one ``os.pread`` of a chunk's byte range and one blosc decode, about 10x
  zarr's per-pair read (``ShardReader``).

The layout (the only one handled here; ``plain_blosc_shards`` tells whether an
array has it, anything else is left to zarr)::

    shard file = frame_0 frame_1 ... frame_{n-1}  index  crc
    frame_j    = chunk j (one pair's LDR or HDR) as little-endian bytes, blosc-encoded
    index      = n pairs (offset, length) of little-endian uint64 (<u8), one per chunk, in chunk order
    crc        = CRC32C of the index bytes, little-endian uint32 (<u4)

The index is at the end of the shard (``index_location="end"``). A chunk absent
from its shard (all fill value: zarr leaves it out) has offset = length =
2**64-1 (``MISSING``); a shard with every chunk absent has no file. The shard
file of shard ``s`` is ``<array>/c/s/0/0/0``.

zarr private names relied on (hence the zarr pin in pyproject.toml; checked with
zarr 3.1.6, 3.2.1, 3.3.0, 3.4.0 and 3.4.2). Each is reached through one small
function below:

- ``zarr.core.sync.sync`` (``zarr_sync``): run the store's async ``set`` and
  ``delete`` from synchronous code, on zarr's own event loop.
- ``zarr.core.buffer.default_buffer_prototype`` (``zarr_buffer``): wrap bytes in
  the Buffer that ``Store.set`` takes.
- ``Array.store_path.store`` (``array_store``): the Store under an array, to
  write and delete shard files and find a local store's folder.
- ``Array.metadata.encode_chunk_key`` (``shard_key``): the key of a shard's file.
- ``Array.metadata.codecs[0]`` and its ``.codecs[1]`` (``sharding_codec``,
  ``blosc_codec``): the ShardingCodec and its BloscCodec, to check the layout and
  to build the numcodecs Blosc that encodes exactly as zarr does.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from hdrprep.errors import StoreError

__all__ = [
    "MISSING",
    "ShardReader",
    "array_store",
    "blosc_codec",
    "delete_shards",
    "direct_reader",
    "encode_shard",
    "local_root",
    "numcodecs_blosc",
    "parse_index",
    "plain_blosc_shards",
    "put_shard",
    "read_index",
    "shard_key",
    "sharding_codec",
    "whole_plain_shard",
    "write_whole_shard",
    "zarr_buffer",
    "zarr_sync",
]

MISSING = 2**64 - 1
"""Offset and length of a chunk absent from its shard."""


# --- zarr's private API: every use in hdrprep is one of these functions ---

def zarr_sync(coro):
    """Run zarr coroutine ``coro`` to completion from synchronous code (``zarr.core.sync.sync``)."""
    from zarr.core.sync import sync

    return sync(coro)


def zarr_buffer(data: bytes):
    """``data`` as the Buffer that ``Store.set`` takes (``zarr.core.buffer.default_buffer_prototype``)."""
    from zarr.core.buffer import default_buffer_prototype

    return default_buffer_prototype().buffer.from_bytes(data)


def array_store(arr):
    """The zarr Store that holds ``arr`` (``arr.store_path.store``)."""
    return arr.store_path.store


def shard_key(arr, shard: int) -> str:
    """The key of shard ``shard``'s file below ``arr``'s folder, e.g. ``c/1/0/0/0`` (zarr's ``encode_chunk_key``)."""
    return arr.metadata.encode_chunk_key((shard, *[0] * (arr.ndim - 1)))


def sharding_codec(arr):
    """``arr``'s ShardingCodec if it is its only codec (``arr.metadata.codecs[0]``), else None."""
    codecs = arr.metadata.codecs
    return codecs[0] if len(codecs) == 1 else None


def blosc_codec(arr):
    """The BloscCodec inside ``arr``'s sharding codec (``arr.metadata.codecs[0].codecs[1]``); plain layout only."""
    return arr.metadata.codecs[0].codecs[1]


# --- built on those ---

def _option(value) -> str | None:
    """A zarr codec option as its string: an Enum's value (zarr <= 3.2) or the string itself (zarr >= 3.3)."""
    return getattr(value, "value", value)


def local_root(arr) -> Path | None:
    """The folder of ``arr``'s store if it is a local one, else None."""
    from zarr.storage import LocalStore

    store = array_store(arr)
    return Path(store.root) if isinstance(store, LocalStore) else None


def _store_set(arr, key: str, data: bytes) -> None:
    zarr_sync(array_store(arr).set(f"{arr.path}/{key}", zarr_buffer(data)))


def plain_blosc_shards(arr) -> bool:
    """True if ``arr`` is sharded exactly as ``write_whole_shard`` writes and ``ShardReader`` reads.

    That is: one chunk per pair, chunks encoded as little-endian bytes then blosc,
    the index at the end of the shard as (offset, length) uint64 with a CRC32C.
    """
    from zarr.codecs import BloscCodec, BytesCodec, Crc32cCodec, ShardingCodec

    sharding = sharding_codec(arr)
    return (isinstance(sharding, ShardingCodec) and _option(sharding.index_location) == "end"
            and [type(c) for c in sharding.codecs] == [BytesCodec, BloscCodec]
            and [type(c) for c in sharding.index_codecs] == [BytesCodec, Crc32cCodec]
            and sharding.chunk_shape == (1, *arr.shape[1:])
            and _option(sharding.codecs[0].endian) in ("little", None) and np.little_endian)


def whole_plain_shard(arr, shard: int, n: int) -> bool:
    """True if ``n`` chunks fill shard ``shard`` of ``arr`` and the layout is ``plain_blosc_shards``."""
    return plain_blosc_shards(arr) and n == arr.shards[0] and (shard + 1) * n <= arr.shape[0]


def numcodecs_blosc(codec):
    """The numcodecs Blosc that encodes exactly as zarr's ``BloscCodec`` ``codec``."""
    import numcodecs

    return numcodecs.Blosc(cname=_option(codec.cname), clevel=codec.clevel, blocksize=codec.blocksize,
                           typesize=codec.typesize,
                           shuffle={"noshuffle": 0, "shuffle": 1, "bitshuffle": 2}[_option(codec.shuffle)])


def encode_shard(frames: list[bytes]) -> bytes:
    """A shard file's bytes from its chunks' encoded frames: frames, index (offset, length) <u8, CRC32C <u4."""
    import google_crc32c

    lengths = np.array([len(f) for f in frames], np.uint64)
    index = np.stack([np.cumsum(lengths) - lengths, lengths], axis=1).astype("<u8").tobytes()
    crc = np.array([google_crc32c.value(index)], "<u4").tobytes()
    return b"".join([*frames, index, crc])


def put_shard(arr, shard: int, frames: list[bytes]) -> None:
    """Write shard ``shard`` of ``arr`` from its chunks' encoded frames (``encode_shard``), replacing any file."""
    _store_set(arr, shard_key(arr, shard), encode_shard(frames))


def write_whole_shard(arr, shard: int, data: np.ndarray) -> bool:
    """Encode and write one full shard of one-pair blosc chunks without zarr's write pipeline.

    zarr writes a whole shard through its partial-shard path (a fill-value array
    and a copy per chunk, a thread hop per codec call): 14.6 ms per pair against
    7.7 ms for the bare codec. This builds the same bytes (tests compare them with
    zarr's): the chunks' blosc frames in order, then the index of (offset,
    length) as little-endian uint64 and its CRC32C. No chunk may be all zero.

    Returns
    -------
    bool
        False, having written nothing, where the array's layout is not that one
        (another codec, or a shard that is not full): the caller lets zarr write it.
    """
    if not (whole_plain_shard(arr, shard, len(data)) and data.dtype == arr.dtype and data.dtype.byteorder in "=|"):
        return False
    blosc = numcodecs_blosc(blosc_codec(arr))
    put_shard(arr, shard, [blosc.encode(np.ascontiguousarray(chunk)) for chunk in data])
    return True


def delete_shards(arr, first: int, stop: int) -> None:
    """Delete the files of shards ``first .. stop-1`` of ``arr`` (absent ones are no error)."""
    for s in range(first, stop):
        zarr_sync(array_store(arr).delete(f"{arr.path}/{shard_key(arr, s)}"))


def parse_index(raw: bytes, per: int) -> np.ndarray | None:
    """The (per, 2) array of (offset, length) from a shard's last ``16 * per + 4`` bytes; None if the CRC32C fails."""
    import google_crc32c

    if len(raw) != 16 * per + 4 or google_crc32c.value(raw[:-4]) != int(np.frombuffer(raw[-4:], "<u4")[0]):
        return None
    return np.frombuffer(raw[:-4], "<u8").reshape(per, 2)


def read_index(fd: int, path: Path, per: int) -> np.ndarray:
    """The index of the shard file open as ``fd`` (see ``parse_index``); StoreError if it is damaged."""
    size = 16 * per + 4
    end = os.fstat(fd).st_size
    index = parse_index(os.pread(fd, size, end - size) if end >= size else b"", per)
    if index is None:
        raise StoreError(f"{path}: the shard index is damaged (size or CRC32C check failed); rebuild the store")
    return index


class ShardReader:
    """Chunk ``k`` of one array in the plain layout on a local folder, read from its shard file directly.

    One ``os.pread`` of the chunk's byte range, found in the shard's index (read
    once per shard and CRC32C-checked), and one blosc decode. A chunk absent from
    its shard, or a shard file that is absent, holds the fill value 0, as in zarr.
    File descriptors are opened per read and never kept; only the parsed indices
    are cached. Make one with ``direct_reader``.
    """

    def __init__(self, arr, root: Path, per: int):
        self.arr, self.root, self.per = arr, root, per
        self._indices: dict[int, np.ndarray] = {}

    def read_into(self, k: int, out: np.ndarray) -> None:
        """Decode chunk ``k`` into ``out``, C-contiguous, of the array's chunk shape and dtype (not checked)."""
        shard, slot = divmod(k, self.per)
        path = self.root / self.arr.path / shard_key(self.arr, shard)
        try:
            fd = os.open(path, os.O_RDONLY)
        except FileNotFoundError:
            out.fill(0)  # zarr writes no file for an all-fill shard
            return
        try:
            index = self._indices.get(shard)
            if index is None:
                index = self._indices[shard] = read_index(fd, path, self.per)
            offset, length = (int(v) for v in index[slot])
            if offset == length == MISSING:
                out.fill(0)
                return
            frame = os.pread(fd, length, offset)
        finally:
            os.close(fd)
        # blosc1 header: uncompressed bytes at 4, compressed bytes at 12 (uint32 LE)
        nbytes, cbytes = (np.frombuffer(frame[:16], "<u4")[[1, 3]] if len(frame) >= 16 else (-1, -1))
        if len(frame) != length or nbytes != out.nbytes or cbytes != length:
            raise StoreError(f"{path}: chunk {slot} is damaged (a blosc frame of {length} bytes for "
                             f"{out.nbytes} was expected); rebuild the store")
        import numcodecs

        numcodecs.Blosc().decode(frame, out=out)


def direct_reader(arr) -> ShardReader | None:
    """A ``ShardReader`` for ``arr`` if it is in the plain layout, fill value 0, on a local folder; else None."""
    root = local_root(arr)
    if root is None or not (plain_blosc_shards(arr) and arr.fill_value == 0):
        return None
    return ShardReader(arr, root, arr.shards[0])
