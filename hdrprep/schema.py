"""The on-disk format of an hdrprep store, in one place: names, attribute keys and table schemas.

A store (format version 1) is a Zarr v3 group folder, readable with plain ``zarr`` and ``pyarrow``::

    shards.zarr/
      zarr.json              group metadata; attribute ATTR ("hdrprep") holds the provenance
      ldr/                   uint8  (N, P, P, 3) RGB, one chunk per pair, S pairs per shard
      hdr/                   float16 (N, P, P, 3) linear RGB, camera scale (1.0 = LDR clip point)
      index.parquet          INDEX_SCHEMA: row i describes pair i
      candidates.parquet     CANDIDATES_SCHEMA: every scored candidate, kept or not
      report.json            human-facing build report (timings; not part of the identity)
      _work/                 per-task outputs that make a build resumable (WORK_SCHEMA tables)

The Parquet schemas are derived from :class:`hdrprep.camera.CameraParams` (one column
per sampled camera parameter) plus the fixed columns below, so a new camera
parameter becomes a column everywhere at once. Every writer passes these schemas
explicitly, an empty store included; :func:`conform` brings a table written by an
older hdrprep (pyarrow's ``null`` type for a column that was None throughout, an
empty store's tables without most columns) to the current schema on reading.

Version policy: ``FORMAT_VERSION`` changes when a reader of the previous version
would misread a new store. Explicit schemas did not: they only give all-None
columns their declared type and an empty store its full columns, which every
version-1 reader accepts, so stores stay version 1.
"""

from __future__ import annotations

import dataclasses

import numpy as np
import pyarrow as pa

__all__ = [
    "ARRAYS",
    "ATTR",
    "ATTR_KEYS",
    "BUILD_STATE",
    "CAMERA_COLUMNS",
    "CANDIDATES_NAME",
    "CANDIDATES_SCHEMA",
    "CANDIDATE_COLUMNS",
    "FORMAT_VERSION",
    "FRAME_META",
    "INDEX_NAME",
    "INDEX_SCHEMA",
    "LATER_COLUMNS",
    "LATER_DEFAULTS",
    "REPORT_NAME",
    "STASH_COLUMNS",
    "WORK_DIR",
    "WORK_SCHEMA",
    "conform",
]

FORMAT_VERSION = 1
#: Name of the group attribute that holds an hdrprep store's provenance.
ATTR = "hdrprep"
#: Keys of that attribute. ``complete`` is True only once the index is in place; ``sources``
#: lists (source, bytes, sha256, status, reason) per frame; ``camera_version`` is
#: :data:`hdrprep.camera.RENDER_VERSION` of the camera that rendered the pairs; ``versions`` the libraries the
#: bytes depend on (:func:`hdrprep.versions.current`; absent in stores built before it was recorded).
ATTR_KEYS = ("format_version", "complete", "package_version", "camera_version", "seed", "config", "sources",
             "counts", "versions")
INDEX_NAME = "index.parquet"
CANDIDATES_NAME = "candidates.parquet"
REPORT_NAME = "report.json"
WORK_DIR = "_work"
#: The build state in ``_work/``: format version and the hash of the configuration being built.
BUILD_STATE = "build.json"
#: Schema-metadata key of a stage-1 table in ``_work/candidates/``: the frame's JSON record.
FRAME_META = b"hdrprep.frame"
#: The store's arrays: name -> dtype of its (N, P, P, 3) values.
ARRAYS = {"ldr": np.dtype(np.uint8), "hdr": np.dtype(np.float16)}


def _camera_fields() -> list[pa.Field]:
    from hdrprep.camera import CameraParams

    # CameraParams' annotations are strings (postponed evaluation); each maps to one Parquet type
    types = {"float": pa.float64(), "int": pa.int64(), "str": pa.string(), "bool": pa.bool_()}
    out = []
    for f in dataclasses.fields(CameraParams):
        base, _, none = f.type.partition(" | ")
        out.append(pa.field(f.name, types[base], nullable=none == "None"))
    return out


#: One column per sampled camera parameter, in :class:`CameraParams` field order.
_CAMERA = _camera_fields()
CAMERA_COLUMNS = tuple(f.name for f in _CAMERA)
#: Columns of a candidate besides its camera parameters.
_CANDIDATE = [
    pa.field("source", pa.string(), nullable=False),           # frame path relative to --src
    pa.field("candidate", pa.int64(), nullable=False),         # index within its frame
    pa.field("row", pa.int64(), nullable=False),               # window's top-left corner in the frame
    pa.field("col", pa.int64(), nullable=False),
    pa.field("size", pa.int64(), nullable=False),              # window side, pixels
    pa.field("score", pa.float64(), nullable=False),           # Santos Algorithm 1
    pa.field("saturated_fraction", pa.float64(), nullable=False),
    pa.field("rendered", pa.bool_()),                          # False: score is the deterministic-camera prescore
    pa.field("seed", pa.int64(), nullable=False),              # the build's global seed
]
CANDIDATE_COLUMNS = tuple(f.name for f in _CANDIDATE)
#: Where stage 1 put a kept pair's encoded chunks in ``_work/pairs/`` (offset -1: not encoded).
_STASH = [
    pa.field("stash_offset", pa.int64(), nullable=False),
    pa.field("stash_ldr", pa.int64(), nullable=False),
    pa.field("stash_hdr", pa.int64(), nullable=False),
    pa.field("stash_checksum", pa.string(), nullable=False),
    pa.field("stash_clamped", pa.int64(), nullable=False),
]
STASH_COLUMNS = tuple(f.name for f in _STASH)
#: Columns added to version 1 after its first stores were written: read as ``LATER_DEFAULTS`` where absent.
LATER_COLUMNS = ("rendered", "crop", "flip")
#: What a missing later column reads as: ``rendered`` null (unknown), ``crop`` 0 (a native window of
#: ``size`` pixels, not resized) and ``flip`` False: what every store written before them held.
LATER_DEFAULTS = {"rendered": None, "crop": 0, "flip": False}

CANDIDATES_SCHEMA = pa.schema([*_CANDIDATE, *_CAMERA, pa.field("kept", pa.bool_(), nullable=False)])
INDEX_SCHEMA = pa.schema([
    pa.field("pair", pa.int64(), nullable=False),              # row number = position in the arrays
    *_CANDIDATE, *_CAMERA,
    pa.field("shard", pa.int64(), nullable=False),             # pair // pairs_per_shard
    pa.field("checksum", pa.string(), nullable=False),         # store.pair_checksum of the stored pair
    pa.field("hdr_clamped", pa.int64(), nullable=False),       # HDR values above 65504 clamped
])
#: A stage-1 table in ``_work/candidates/``: one frame's candidates and where their pairs were stashed.
WORK_SCHEMA = pa.schema([*_CANDIDATE, *_CAMERA, *_STASH])


def conform(table: pa.Table, schema: pa.Schema) -> pa.Table:
    """``table`` with ``schema``'s columns, in its order and with its types.

    Columns missing from ``table`` are added as nulls where the table is empty (an
    empty store written before explicit schemas), or as their ``LATER_DEFAULTS`` value
    where the column is one of ``LATER_COLUMNS`` (older version-1 stores lack it); any
    other missing column is damage and raises. Columns not in ``schema`` are dropped.

    Raises
    ------
    ValueError
        A table with rows lacks columns of ``schema``, or a column cannot be cast.
    """
    missing = [f.name for f in schema if f.name not in table.column_names and f.name not in LATER_COLUMNS]
    if missing and table.num_rows:
        raise ValueError(f"columns {', '.join(missing)} are missing")
    def absent(f: pa.Field):
        default = LATER_DEFAULTS.get(f.name)
        if default is None:
            return pa.nulls(table.num_rows, f.type)
        return pa.array([default] * table.num_rows, f.type)

    columns = {f.name: table[f.name] if f.name in table.column_names else absent(f) for f in schema}
    return pa.table(columns).cast(schema)
