"""Opening, writing and reading an hdrprep store (the format itself is in :mod:`hdrprep.schema`).

Readers go through :func:`open_store` (a finished store of a readable format
version, its index conformed to ``INDEX_SCHEMA``) and add only their own checks.
Writers create the arrays with :func:`create_arrays` and fill them a whole shard
at a time (:func:`write_pairs`, :func:`write_encoded_pairs`): never a partial-shard
write, since two writers in one shard lose data and a partial write is a
read-modify-write of the whole shard. The byte layout of a shard file, written
and read directly for speed, is in the private :mod:`hdrprep._shard_io`.
"""

from __future__ import annotations

import functools
import hashlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from hdrprep import _shard_io, schema
from hdrprep.errors import StoreError
from hdrprep.files import pause_point

__all__ = [
    "HALF_MAX",
    "PairReader",
    "Store",
    "check_attrs",
    "create_arrays",
    "decode_pair",
    "encode_pair",
    "open_store",
    "pair_checksum",
    "read_attrs",
    "read_table",
    "to_half",
    "write_encoded_pairs",
    "write_pairs",
]

HALF_MAX = 65504.0
BLOSC_BLOCK = 1 << 18


def _codecs(compressor: str, level: int, dtype: np.dtype) -> list:
    from zarr.codecs import BloscCodec, ZstdCodec

    if compressor == "none":
        return []
    if compressor == "zstd":
        return [ZstdCodec(level=level)]
    if compressor == "blosc-zstd":
        # byte shuffle groups the high and low bytes of float16 values; 256 KiB blocks instead of
        # blosc's automatic size (small at level 1) give zstd more context: 7 % smaller pairs and
        # faster decoding on real pairs (bench/compression.py)
        return [BloscCodec(cname="zstd", clevel=level, shuffle="shuffle", typesize=np.dtype(dtype).itemsize,
                           blocksize=BLOSC_BLOCK)]
    raise StoreError(f"unknown compressor {compressor!r}; use zstd, blosc-zstd or none")


def create_arrays(root: str | Path, n_pairs: int, patch_size: int, pairs_per_shard: int,
                  compressor: str = "blosc-zstd", level: int = 1):
    """Create (or reopen, if identical) the group and its ``ldr``/``hdr`` arrays.

    The store is first marked incomplete (``complete: False``), so that a store
    whose arrays are being replaced is never taken for a finished one. An
    existing array of the same shape, chunking and dtype is reopened, not
    recreated, so a resumed build keeps its finished shards.

    Returns
    -------
    (zarr.Group, bool)
        The group, and True if any array was (re)created empty: shards written
        before are then gone.
    """
    import zarr

    group = zarr.open_group(str(root), mode="a", zarr_format=3)
    group.attrs[schema.ATTR] = dict(format_version=schema.FORMAT_VERSION, complete=False)
    shape = (n_pairs, patch_size, patch_size, 3)
    created = False
    for name, dtype in (("ldr", np.uint8), ("hdr", np.float16)):
        if name in group:
            arr = group[name]
            if arr.shape == shape and arr.dtype == dtype and arr.shards == (pairs_per_shard, *shape[1:]):
                continue
            del group[name]
        created = True
        group.create_array(
            name, shape=shape, dtype=dtype, chunks=(1, *shape[1:]),
            shards=(pairs_per_shard, *shape[1:]) if n_pairs else None,
            compressors=_codecs(compressor, level, dtype), fill_value=0,
            dimension_names=("pair", "y", "x", "channel"),
        )
    return group, created


def write_pairs(group, start: int, ldr: np.ndarray, hdr: np.ndarray) -> None:
    """Write pairs ``start .. start+len(ldr)`` as whole shards (one writer per shard).

    Parameters
    ----------
    group : zarr.Group
        Opened with ``create_arrays`` or ``open_store``.
    start : int
        First pair; must be a multiple of the shard length.
    ldr : numpy.ndarray
        uint8 (k, P, P, 3).
    hdr : numpy.ndarray
        float16 (k, P, P, 3); ``k`` is the shard length except in the last shard.
    """
    arr_l, arr_h = group["ldr"], group["hdr"]
    per = arr_l.shards[0]
    stop = start + len(ldr)
    if start % per or (stop % per and stop != arr_l.shape[0]):
        raise StoreError(f"pairs {start}:{stop} do not cover whole shards of {per}; refusing a partial-shard write")
    for arr, data in ((arr_l, ldr), (arr_h, hdr)):
        # zarr reads and merges an existing file into a write that ends at the
        # array's edge (the last shard); a corrupt old file would make it fail
        _shard_io.delete_shards(arr, start // per, -(-stop // per))
        if any(_all_zero(chunk) for chunk in data):
            # zarr leaves an all-fill chunk out of its shard: let zarr write this one
            arr[start:stop] = data
        elif not all(_shard_io.write_whole_shard(arr, s // per, data[s - start:s - start + per])
                     for s in range(start, stop, per)):
            # zarr's own write; its compare of every chunk with the fill value (5 ms per
            # pair) can be skipped, as no chunk is all fill
            arr.with_config({"write_empty_chunks": True})[start:stop] = data
        pause_point("shard-array-written")


def encode_pair(ldr: np.ndarray, hdr: np.ndarray, compressor: str, level: int) -> tuple[bytes, bytes] | None:
    """A pair's two chunks encoded as whole-shard writes store them, to write later with ``write_encoded_pairs``.

    Parameters
    ----------
    ldr, hdr : numpy.ndarray
        uint8 and float16 (P, P, 3).
    compressor, level
        The store's ``output.compressor`` and ``output.level``.

    Returns
    -------
    (bytes, bytes) or None
        The blosc frames of the LDR and HDR chunks; None where shards are not
        written from frames: another compressor, or an all-zero chunk (zarr
        leaves those out of their shard).
    """
    if compressor != "blosc-zstd" or _all_zero(ldr) or _all_zero(hdr):
        return None
    return tuple(_pair_encoder(compressor, level, np.dtype(a.dtype).str).encode(np.ascontiguousarray(a))
                 for a in (ldr, hdr))


@functools.lru_cache(maxsize=8)
def _pair_encoder(compressor: str, level: int, dtype: str):
    return _shard_io.numcodecs_blosc(_codecs(compressor, level, np.dtype(dtype))[0])


def decode_pair(frames: tuple[bytes, bytes], patch_size: int) -> tuple[np.ndarray, np.ndarray]:
    """Inverse of ``encode_pair``: (ldr uint8, hdr float16), each (P, P, 3)."""
    import numcodecs

    out = (np.empty((patch_size, patch_size, 3), np.uint8), np.empty((patch_size, patch_size, 3), np.float16))
    for frame, arr in zip(frames, out):
        numcodecs.Blosc().decode(frame, out=arr)
    return out


def write_encoded_pairs(group, start: int, frames: list[tuple[bytes, bytes]], compressor: str, level: int) -> bool:
    """Write pairs ``start .. start+len(frames)`` from ``encode_pair``'s frames, without re-encoding them.

    Returns
    -------
    bool
        False, having written nothing, unless the pairs fill whole shards of the
        plain layout encoded with the same codec; the caller then decodes them
        (``decode_pair``) and uses ``write_pairs``.
    """
    arrays = group["ldr"], group["hdr"]
    per = arrays[0].shards[0] if arrays[0].shards else 0
    if not per or start % per or len(frames) % per:
        return False
    for arr in arrays:
        if not all(_shard_io.whole_plain_shard(arr, s // per, per) for s in range(start, start + len(frames), per)):
            return False
        codec = _shard_io.numcodecs_blosc(_shard_io.blosc_codec(arr))
        if codec.get_config() != _pair_encoder(compressor, level, arr.dtype.str).get_config():
            return False
    for i, arr in enumerate(arrays):
        for s in range(start, start + len(frames), per):
            _shard_io.put_shard(arr, s // per, [f[i] for f in frames[s - start:s - start + per]])
        pause_point("shard-array-written")
    return True


class PairReader:
    """Random access to a store's pairs, reading shard files directly (about 10x zarr's per-pair read).

    For arrays in the layout ``write_pairs`` writes on a local folder (see
    ``hdrprep._shard_io``), pair ``k`` is one ``os.pread`` of its chunk's byte range,
    found in the shard's index (read once per shard and CRC32C-checked), and one
    blosc decode. Any other layout or store is read with plain zarr indexing. A chunk
    absent from its shard, or a shard file that is absent, holds the fill value 0, as in zarr.

    File descriptors are opened per read and never kept, so no handle outlives a
    read or crosses a ``fork``; only the parsed shard indices are cached. Still, open
    one reader per process (DataLoader workers open their own): zarr's arrays are not
    meant to cross a fork.

    Parameters
    ----------
    group : zarr.Group
        The store's group (e.g. from ``open_store``), with ``ldr`` and ``hdr`` arrays.
    """

    def __init__(self, group):
        self.arrays = (group["ldr"], group["hdr"])
        self._direct = [_shard_io.direct_reader(a) for a in self.arrays]

    def __len__(self) -> int:
        return self.arrays[0].shape[0]

    def read(self, k: int) -> tuple[np.ndarray, np.ndarray]:
        """Pair ``k``: ``ldr`` uint8 (P, P, 3) and ``hdr`` float16 (P, P, 3), as zarr returns them."""
        out = tuple(np.empty(a.shape[1:], a.dtype) for a in self.arrays)
        self.read_into(k, *out)
        return out

    def read_into(self, k: int, ldr_out: np.ndarray, hdr_out: np.ndarray) -> None:
        """Decode pair ``k`` straight into ``ldr_out`` uint8 and ``hdr_out`` float16, C-contiguous (P, P, 3).

        The same values as :meth:`read`, with no array allocated and no copy on the
        direct path (e.g. into a DataLoader worker's shared-memory batch).
        """
        k = int(k)
        if not 0 <= k < len(self):
            raise IndexError(f"pair {k} out of range 0..{len(self) - 1}")
        for i, out in enumerate((ldr_out, hdr_out)):
            arr = self.arrays[i]
            if out.shape != arr.shape[1:] or out.dtype != arr.dtype or not out.flags.c_contiguous:
                # blosc writes raw bytes into any contiguous buffer: a wrong one would be filled silently
                raise ValueError(f"read_into: {arr.basename} needs a C-contiguous {arr.dtype} array of shape "
                                 f"{arr.shape[1:]}, got {out.dtype} {out.shape} "
                                 f"({'' if out.flags.c_contiguous else 'not '}C-contiguous)")
            direct = self._direct[i]
            if direct is None:
                out[...] = arr[k]
            else:
                direct.read_into(k, out)


def _all_zero(chunk: np.ndarray) -> bool:
    """True if every byte of ``chunk`` is 0: what zarr takes for fill value 0 (-0.0 is not)."""
    raw = np.ascontiguousarray(chunk).reshape(-1).view(np.uint8)
    if raw.size % 8 == 0:  # count in 8-byte words: 20x faster than bytes
        raw = raw.view(np.uint64)
    return np.count_nonzero(raw) == 0


def to_half(hdr: np.ndarray) -> tuple[np.ndarray, int]:
    """Convert float32 HDR to float16, clamping values above 65504.

    Bit-identical to ``np.minimum(hdr, 65504).astype(np.float16)`` (round to
    nearest, ties to even) for every float32 value, in one pass of a Numba
    kernel (numpy converts element by element on CPUs without F16C). HDR
    values are finite and >= 0; were they not, NaN stays NaN, -inf stays -inf
    and +inf is clamped to 65504 and counted, as with numpy.

    Parameters
    ----------
    hdr : numpy.ndarray
        float32, any shape.

    Returns
    -------
    (numpy.ndarray, int)
        float16 array of the same shape, and the number of clamped values.
    """
    if hdr.dtype != np.float32:
        raise StoreError(f"to_half takes float32 HDR, got {hdr.dtype}; convert with .astype(np.float32) first")
    from hdrprep import _store_kernels

    src = np.ascontiguousarray(hdr)
    out = np.empty(src.shape, np.float16)
    over = _store_kernels.to_half_bits(src.reshape(-1).view(np.uint32), out.reshape(-1).view(np.uint16))
    return out, int(over)


def pair_checksum(ldr: np.ndarray, hdr: np.ndarray) -> str:
    """First 16 hex digits of the SHA-1 of a pair's LDR bytes then HDR bytes (C order).

    SHA-1 because CPUs hash it in hardware (1.6 ms per 512x512 pair here, blake2b
    5 ms); it detects damage, it is not a security measure.
    """
    h = hashlib.sha1()
    h.update(np.ascontiguousarray(ldr).data)
    h.update(np.ascontiguousarray(hdr).data)
    return h.hexdigest()[:16]


def read_attrs(root: str | Path) -> dict | None:
    """The ``hdrprep`` attribute of a store's group, or None if it has none."""
    meta = Path(root) / "zarr.json"
    if not meta.is_file():
        return None
    try:
        return json.loads(meta.read_text()).get("attributes", {}).get(schema.ATTR)
    except (OSError, ValueError):
        return None


def check_attrs(root: str | Path) -> dict:
    """The provenance of a finished store of a readable format version.

    Returns
    -------
    dict
        The group attribute ``hdrprep`` (keys ``schema.ATTR_KEYS``).

    Raises
    ------
    StoreError
        If the folder is not an hdrprep store, holds an unfinished build, or has a
        format version this hdrprep does not read; the message says what to do.
    """
    root = Path(root)
    attrs = read_attrs(root)
    if attrs is None:
        if (root / schema.WORK_DIR).is_dir():  # a first build stopped before it created the arrays
            raise StoreError(f"{root}: the build did not finish (it stopped before writing pairs); rerun the "
                             f"same `hdrprep build` to resume")
        raise StoreError(f"{root}: not an hdrprep store (no zarr.json with an '{schema.ATTR}' attribute); give "
                         f"the folder that `hdrprep build --out` wrote")
    if attrs.get("format_version") != schema.FORMAT_VERSION:
        raise StoreError(f"{root}: format version {attrs.get('format_version')!r}, this hdrprep reads "
                         f"{schema.FORMAT_VERSION}; rebuild the store or use a matching hdrprep version")
    if not attrs.get("complete"):
        raise StoreError(f"{root}: the build did not finish (the store is not marked complete); rerun the same "
                         f"`hdrprep build` to resume")
    return attrs


def read_table(root: str | Path, name: str, table_schema, columns: list[str] | None = None):
    """A store's Parquet table (``schema.INDEX_NAME`` or ``CANDIDATES_NAME``), conformed to ``table_schema``.

    Parameters
    ----------
    columns : list of str, optional
        Read only these columns (all by default).

    Raises
    ------
    StoreError
        The file is missing, cannot be read, or lacks columns; the message names it.
    """
    import pyarrow as pa
    import pyarrow.parquet as pq

    path = Path(root) / name
    if not path.is_file():
        raise StoreError(f"{path}: missing; rerun the same `hdrprep build` to rewrite it")
    if columns is not None:
        table_schema = pa.schema([table_schema.field(c) for c in columns])
    try:
        table = pq.read_table(path, columns=[c for c in table_schema.names
                                             if c in pq.read_schema(path).names])
    except Exception as exc:  # a damaged Parquet file raises several pyarrow types
        raise StoreError(f"{path}: cannot be read ({type(exc).__name__}: {exc}); rerun the same `hdrprep build` "
                         f"to rewrite it") from exc
    try:
        return schema.conform(table, table_schema)
    except ValueError as exc:
        raise StoreError(f"{path}: {exc}; rerun the same `hdrprep build` to rewrite it") from exc


@dataclass(frozen=True)
class Store:
    """A finished store, opened read-only by :func:`open_store`.

    Attributes
    ----------
    path : Path
        The store folder.
    group : zarr.Group
        With arrays ``ldr`` uint8 and ``hdr`` float16, both (n_pairs, P, P, 3).
    index : pyarrow.Table
        ``schema.INDEX_SCHEMA``, row i describing pair i.
    attrs : dict
        The provenance (group attribute ``hdrprep``).
    """

    path: Path
    group: Any
    index: Any
    attrs: dict

    @property
    def config(self) -> dict:
        """The resolved build configuration, as a nested dict."""
        return self.attrs.get("config") or {}

    @property
    def n_pairs(self) -> int:
        return self.index.num_rows

    @property
    def patch_size(self) -> int:
        return int(self.group["ldr"].shape[1])

    def candidates(self, columns: list[str] | None = None):
        """``candidates.parquet`` (``schema.CANDIDATES_SCHEMA``), optionally only some columns."""
        return read_table(self.path, schema.CANDIDATES_NAME, schema.CANDIDATES_SCHEMA, columns)

    def build_config(self):
        """The resolved :class:`hdrprep.config.Config` the store was built with."""
        from hdrprep.config import Config

        return Config.from_dict(self.config)

    def source_frame(self, src: str | Path, key: str) -> np.ndarray:
        """Frame ``key`` under ``src``, read as the build read it: float32 (H, W, 3) linear RGB.

        Raises
        ------
        StoreError
            If the file is missing or its bytes differ from those the store was built from
            (the sha256 in ``sources``), so no pair is re-rendered from other pixels.
        """
        from hdrprep import io
        from hdrprep.files import file_sha256

        path = Path(src) / key
        if not path.is_file():
            raise StoreError(f"{path}: frame '{key}' of the store is not there; pass the --src the store was "
                             f"built from")
        record = next((s for s in self.attrs.get("sources", []) if s["source"] == key), {})
        if record.get("sha256"):
            digest = file_sha256(path)[1]
            if digest != record["sha256"]:
                raise StoreError(f"{path}: its bytes differ from the frame the store was built from (sha256 "
                                 f"{record['sha256'][:12]}..., now {digest[:12]}...); pass the original --src")
        config = self.build_config()
        return io.read_frame(path, ingest=config.ingest, min_size=config.sampling.patch_size)[0]


def open_store(root: str | Path) -> Store:
    """Open a finished store read-only: provenance, index and arrays, checked to agree.

    Raises
    ------
    StoreError
        If the folder is not a complete hdrprep store of a known format version, or
        its index and arrays disagree (``hdrprep verify`` says more).
    """
    import zarr

    root = Path(root)
    attrs = check_attrs(root)
    if not (root / schema.INDEX_NAME).is_file():
        raise StoreError(f"{root}: the build did not finish (no index); rerun the same `hdrprep build` to resume")
    index = read_table(root, schema.INDEX_NAME, schema.INDEX_SCHEMA)
    group = zarr.open_group(str(root), mode="r")
    try:
        ldr, hdr = group["ldr"], group["hdr"]
    except KeyError as exc:
        raise StoreError(f"{root}: the arrays ldr/ and hdr/ are missing; rebuild with --overwrite") from exc
    n = index.num_rows
    if ldr.shape != hdr.shape or ldr.shape[0] != n or ldr.shape[2:] != (ldr.shape[1], 3):
        raise StoreError(f"{root}: ldr {ldr.shape}, hdr {hdr.shape} and the index ({n} rows) disagree; the store "
                         f"is damaged: run `hdrprep verify {root}`, then rerun the build or rebuild it")
    if not np.array_equal(index["pair"].to_numpy(), np.arange(n)):
        raise StoreError(f"{root}: index column 'pair' is not 0..{n - 1} in order; the store is damaged: run "
                         f"`hdrprep verify {root}`")
    return Store(root, group, index, attrs)
