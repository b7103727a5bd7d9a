"""The on-disk format of an hdrprep store (format version 1).

A store is a Zarr v3 group folder, readable with plain ``zarr`` and ``pyarrow``::

    shards.zarr/
      zarr.json              group metadata; attribute "hdrprep" (provenance, see below)
      ldr/                   uint8  (N, P, P, 3) RGB, one chunk per pair, S pairs per shard
      hdr/                   float16 (N, P, P, 3) linear RGB, camera scale (1.0 = LDR clip point)
      index.parquet          row i describes pair i (INDEX_COLUMNS, plus every camera parameter)
      candidates.parquet     every scored candidate, kept or not
      report.json            human-facing build report (timings; not part of the identity)
      _work/                 per-task outputs that make a build resumable

The group attribute ``hdrprep`` holds ``format_version``, ``complete`` (True only
once the index is in place), the resolved ``config``, ``package_version``,
``seed``, ``sources`` (path, bytes, sha256, status per frame) and ``counts``.

This module owns the layout: array creation, whole-shard writes and reads. It
never does a partial-shard write (two writers in one shard lose data, and a
partial write is a read-modify-write of the whole shard).
"""

from __future__ import annotations

import functools
import hashlib
import json
import os
from pathlib import Path

import numpy as np

from hdrprep import _shard_io
from hdrprep.errors import StoreError

__all__ = [
    "FORMAT_VERSION",
    "ATTR",
    "INDEX_NAME",
    "CANDIDATES_NAME",
    "REPORT_NAME",
    "WORK_DIR",
    "HALF_MAX",
    "create_arrays",
    "open_store",
    "PairReader",
    "write_pairs",
    "encode_pair",
    "decode_pair",
    "write_encoded_pairs",
    "pair_checksum",
    "to_half",
    "atomic_write_bytes",
    "read_attrs",
    "pause_point",
    "PAUSE_ENV",
]

FORMAT_VERSION = 1
ATTR = "hdrprep"
INDEX_NAME = "index.parquet"
CANDIDATES_NAME = "candidates.parquet"
REPORT_NAME = "report.json"
WORK_DIR = "_work"
HALF_MAX = 65504.0
PAUSE_ENV = "HDRPREP_PAUSE_AT"
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
    group.attrs[ATTR] = dict(format_version=FORMAT_VERSION, complete=False)
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


def atomic_write_bytes(path: str | Path, data: bytes) -> None:
    """Write ``data`` to a temporary name beside ``path``, fsync, then rename into place.

    On failure (e.g. no space left) the temporary file is removed and the error re-raised.
    """
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    try:
        with open(tmp, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        pause_point(f"before-rename:{path.name}")
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def pause_point(name: str) -> None:
    """Test hook for the kill drills: stop here, forever, if ``$HDRPREP_PAUSE_AT`` is ``name``.

    The process prints ``hdrprep: paused at NAME`` to stderr and sleeps, so that a
    test can SIGKILL the build at a known point. Named points: ``scored`` (a
    frame's candidate table is in place), ``shard-array-written`` (a shard's LDR
    file is written, its HDR file not yet), ``before-rename:FILE`` (the temporary
    file of FILE, e.g. ``index.parquet``, is written but not yet renamed),
    ``before-complete`` (index written, store not yet marked complete).
    """
    if os.environ.get(PAUSE_ENV) != name:
        return
    import sys
    import time

    print(f"hdrprep: paused at {name}", file=sys.stderr, flush=True)
    while True:
        time.sleep(60)


def read_attrs(root: str | Path) -> dict | None:
    """The ``hdrprep`` attribute of a store's group, or None if it has none."""
    meta = Path(root) / "zarr.json"
    if not meta.is_file():
        return None
    try:
        return json.loads(meta.read_text()).get("attributes", {}).get(ATTR)
    except (OSError, ValueError):
        return None


def open_store(root: str | Path):
    """Open a finished store read-only.

    Returns
    -------
    (zarr.Group, pyarrow.Table, dict)
        The group, the index table and the ``hdrprep`` attribute.

    Raises
    ------
    StoreError
        If the folder is not a complete hdrprep store of a known format version.
    """
    import pyarrow.parquet as pq
    import zarr

    root = Path(root)
    attrs = read_attrs(root)
    if attrs is None:
        if (root / WORK_DIR).is_dir():  # a first build stopped before it created the arrays
            raise StoreError(f"{root}: the build did not finish (it stopped before writing pairs); rerun the "
                             f"same `hdrprep build` to resume")
        raise StoreError(f"{root}: not an hdrprep store (no zarr.json with an '{ATTR}' attribute)")
    if attrs.get("format_version") != FORMAT_VERSION:
        raise StoreError(f"{root}: format version {attrs.get('format_version')!r}, this hdrprep reads "
                         f"{FORMAT_VERSION}; rebuild the store or use a matching hdrprep version")
    if not attrs.get("complete") or not (root / INDEX_NAME).is_file():
        raise StoreError(f"{root}: the build did not finish (no index); rerun the same `hdrprep build` to resume")
    group = zarr.open_group(str(root), mode="r")
    index = pq.read_table(root / INDEX_NAME)
    return group, index, attrs
