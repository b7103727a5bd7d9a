"""``hdrprep build``: the parallel pipeline from HDR frames to a store.

Stages (each task writes its output to a temporary name and renames it, so a
rerun skips finished tasks and redoes unfinished ones):

1. one task per frame: read it once, sample the candidate windows and their
   cameras, prescore every candidate on the deterministic camera and render and
   score the promising ones (``candidates.score_frame``); where a candidate's keep
   decision is its own (threshold or keep-all), encode each kept pair at once
   into ``_work/pairs/<id>.bin``; then write the frame's candidate table to
   ``_work/candidates/<id>.parquet``;
2. on the client: select the kept candidates (global rules such as top-N need
   all of them) and assign them, in (source, candidate) order, to pairs and shards;
3. one task per shard: assemble the whole shard (one writer per shard) from the
   encoded pairs; pairs stage 1 could not know were kept are re-rendered from the
   re-read frame and their stored parameters; then a done-marker
   ``_work/shards/<k>.json`` with the pairs' checksums;
4. write ``candidates.parquet``, ``index.parquet`` and, last, mark the store
   complete in its attributes; delete ``_work/pairs``.

This is the only module that uses Dask.
"""

from __future__ import annotations

import dataclasses
import errno
import functools
import hashlib
import json
import os
import shutil
import sys
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator

import numpy as np

from hdrprep import __version__, files, lock, schema, store
from hdrprep.config import Config
from hdrprep.errors import BadFrameError, ConfigError, HdrprepError, StoreError

__all__ = ["build", "discover", "THREAD_ENV"]

#: Environment of worker processes: one compute thread each (set before numba is imported there).
THREAD_ENV = {"NUMBA_NUM_THREADS": "1", "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1",
               "OPENBLAS_NUM_THREADS": "1"}


# --------------------------------------------------------------------------- frames

def discover(src: str | Path) -> tuple[list[str], list[dict]]:
    """Find HDR frames under ``src``, recursively, in sorted order.

    Returns
    -------
    keys : list of str
        POSIX paths relative to ``src`` of the files with an HDR suffix.
    bad : list of dict
        Entries with an HDR suffix that are not regular files (a folder named
        ``x.exr``, a dangling link, a FIFO), with ``source``, ``status``
        (``'skipped'``), ``reason`` and ``detail``.
    """
    from hdrprep.io import HDR_SUFFIXES

    src = Path(src)
    keys, bad = [], []
    for dirpath, dirnames, filenames in os.walk(src, followlinks=False):
        dirnames.sort()
        base = Path(dirpath)
        for name in dirnames + filenames:
            if not name.lower().endswith(HDR_SUFFIXES):
                continue
            path = base / name
            key = path.relative_to(src).as_posix()
            if path.is_file():
                keys.append(key)
            else:
                kind = "a folder" if path.is_dir() else "a dangling or looping link" if path.is_symlink() \
                    else "not a regular file"
                bad.append(dict(source=key, status="skipped", reason="not-a-file",
                                detail=f"{kind} with an HDR file name; remove or rename it"))
    return sorted(keys), sorted(bad, key=lambda b: b["source"])


def _frame_id(key: str) -> str:
    return hashlib.sha1(key.encode("utf-8")).hexdigest()[:20]


def _cap_threads() -> None:
    """Set up a task's process: one compute thread (Dask workers provide the parallelism), and malloc."""
    import cv2

    cv2.setNumThreads(1)
    _keep_freed_memory()


@functools.lru_cache(maxsize=1)
def _keep_freed_memory() -> bool:
    """Let glibc reuse freed multi-MB arrays instead of handing them back to the OS.

    Dask's nanny starts workers with ``MALLOC_TRIM_THRESHOLD_=65536``, which also
    fixes the mmap threshold at 128 KiB: every window-sized array (0.8-3 MB) is then
    a fresh mmap, page-faulted in and unmapped at free. Stage 1 allocates dozens
    per candidate and took 1.46x the CPU time in such a worker (28.3 -> 41.4 s on
    the 29 real frames x 50 candidates). Raising both thresholds keeps a worker's
    peak heap (about 0.4 GB) instead. A no-op where libc is not glibc.

    Returns True if the thresholds were set.
    """
    import ctypes
    import ctypes.util

    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):
        return False
    m_trim_threshold, m_mmap_threshold = -1, -3  # glibc's malloc.h
    # 32 MiB: glibc <= 2.34 refuses an mmap threshold above HEAP_MAX_SIZE / 2 (32 MiB on 64-bit)
    mmap_set = bool(mallopt(m_mmap_threshold, 32 << 20))
    return mmap_set and bool(mallopt(m_trim_threshold, 256 << 20))


# --------------------------------------------------------------------------- stage 1

def score_frame_task(src: str, key: str, work: str, config_dict: dict) -> dict:
    """Stage 1 task: score one frame and write its candidate table.

    Returns the frame's record (source, status, reason, size, checksum, count).
    A bad frame gives an empty table with the reason in its metadata.
    """
    import pyarrow as pa
    import pyarrow.parquet as pq

    from hdrprep import camera, candidates, io, selection

    _cap_threads()
    config = Config.from_dict(config_dict)
    path = Path(src) / key
    record: dict[str, Any] = dict(source=key, status="ok", reason=None, detail=None)
    cols: dict[str, list] = {}
    stash = None
    try:
        record["bytes"], record["sha256"] = files.file_sha256(path)
        frame, stats = io.read_frame(path, ingest=config.ingest, min_size=config.sampling.patch_size)
        record.update(height=int(frame.shape[0]), width=int(frame.shape[1]), **{
            f"repaired_{k}": int(v) for k, v in dataclasses.asdict(stats).items()})
        stash = _Stash(config) if selection.decided_per_frame(config.select) else None
        cols = candidates.score_frame(frame, key, config, camera.load_curves(config.camera), on_pair=stash)
        if stash is not None:
            stash.keep(selection.select(cols["score"], cols["saturated_fraction"], [key] * len(cols["score"]),
                                        cols["candidate"], config.select, cols["rendered"],
                                        selection.window_boxes(cols)))
    except BadFrameError as exc:
        record.update(status="skipped", reason=exc.reason, detail=exc.detail or str(exc))
    except OSError as exc:
        record.update(status="skipped", reason="unreadable", detail=f"{exc.strerror or exc}; check the file")
    except ValueError as exc:  # e.g. an all-black frame has no exposure that clips 5-15 %
        record.update(status="skipped", reason="no-signal", detail=f"{exc}; the frame cannot be exposed")
    record["candidates"] = n = len(cols.get("source", []))
    # outside the try: a failed write under --out (disk full) is not a bad frame
    if stash is not None and stash.data:
        files.atomic_write_bytes(Path(work) / "pairs" / f"{_frame_id(key)}.bin", stash.data)
    cols.update(_Stash.columns(stash, n))
    table = pa.Table.from_pydict(cols, schema=schema.WORK_SCHEMA) if n else schema.WORK_SCHEMA.empty_table()
    table = table.replace_schema_metadata({schema.FRAME_META: json.dumps(record).encode()})
    buf = pa.BufferOutputStream()
    pq.write_table(table, buf)
    files.atomic_write_bytes(Path(work) / "candidates" / f"{_frame_id(key)}.parquet", buf.getvalue().to_pybytes())
    files.pause_point("scored")
    return record


class _Stash:
    """Stage 1's kept pairs, encoded as the store's chunks, so stage 3 writes them without rendering again.

    Called by ``candidates.score_frame`` for every candidate it renders; encodes the
    eligible ones. Once the frame is scored, :meth:`keep` is given the frame's selection
    (its rules look at this frame alone, ``selection.decided_per_frame``) and ``data``
    becomes the frame's ``_work/pairs/<id>.bin``: each kept pair's LDR frame then HDR frame.
    """

    def __init__(self, config: Config):
        self.config = config
        self.encoded: dict[int, tuple] = {}
        self.data = bytearray()
        self.rows: dict[int, tuple] = {}

    def __call__(self, j: int, ldr: np.ndarray, target: np.ndarray, score: float, saturated: float) -> None:
        from hdrprep import selection

        if not (self.config.select.keep_all or selection.eligible(score, saturated, self.config.select)):
            return
        hdr, clamped = store.to_half(target)
        frames = store.encode_pair(ldr, hdr, self.config.output.compressor, self.config.output.level)
        if frames is not None:  # else stage 3 renders it
            self.encoded[j] = (*frames, store.pair_checksum(ldr, hdr), clamped)

    def keep(self, selected: np.ndarray) -> None:
        """Keep the encoded pairs of the ``selected`` candidates ((N,) bool) in ``data``; drop the others."""
        for j in np.flatnonzero(selected).tolist():
            if j in self.encoded:
                ldr, hdr, checksum, clamped = self.encoded[j]
                self.rows[j] = (len(self.data), len(ldr), len(hdr), checksum, clamped)
                self.data += ldr
                self.data += hdr
        self.encoded.clear()

    @staticmethod
    def columns(stash: _Stash | None, n: int) -> dict[str, list]:
        """The ``schema.STASH_COLUMNS`` of ``n`` candidates (offset -1: not encoded, or no stash)."""
        rows = stash.rows if stash is not None else {}
        none = (-1, 0, 0, "", 0)
        return {name: [rows.get(j, none)[i] for j in range(n)] for i, name in enumerate(schema.STASH_COLUMNS)}


def _read_stash(out: Path, row: dict) -> tuple[bytes, bytes] | None:
    """The encoded pair of a kept candidate, or None if stage 1 did not encode it (or its file is gone or short)."""
    if row["stash_offset"] < 0:
        return None
    try:
        fd = os.open(out / schema.WORK_DIR / "pairs" / f"{_frame_id(row['source'])}.bin", os.O_RDONLY)
    except FileNotFoundError:
        return None
    try:
        data = os.pread(fd, row["stash_ldr"] + row["stash_hdr"], row["stash_offset"])
    finally:
        os.close(fd)
    if len(data) != row["stash_ldr"] + row["stash_hdr"]:
        return None  # a truncated file: render the pair again, which gives the same bytes
    return data[:row["stash_ldr"]], data[row["stash_ldr"]:]


def _read_candidates(work: Path, keys: list[str]):
    """Concatenate the stage-1 tables in key order; return (table with ``schema.WORK_SCHEMA``, frame records)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    tables, records = [schema.WORK_SCHEMA.empty_table()], []
    for key in keys:
        t = pq.read_table(work / "candidates" / f"{_frame_id(key)}.parquet")
        records.append(json.loads(t.schema.metadata[schema.FRAME_META]))
        tables.append(schema.conform(t, schema.WORK_SCHEMA))
    return pa.concat_tables(tables), records


# --------------------------------------------------------------------------- stage 3

def _rows_digest(rows: list[dict]) -> str:
    """Identity of a shard's assignment: a done-marker counts only for the same rows."""
    return hashlib.sha256(json.dumps(rows, sort_keys=True).encode()).hexdigest()[:32]


_last_frame: dict = {}


def _read_frame_cached(path: Path, sha256: str, ingest, min_size: int) -> np.ndarray:
    """Decode a frame, keeping the last one per worker process: consecutive shards share frames."""
    from hdrprep import io

    key = (str(path), sha256, ingest, min_size)
    frame = _last_frame.get(key)
    if frame is None:
        frame, _ = io.read_frame(path, ingest=ingest, min_size=min_size)
        _last_frame.clear()
        _last_frame[key] = frame
    return frame


def write_shard_task(src: str, out: str, shard: int, start: int, rows: list[dict], config_dict: dict,
                     sha256: dict[str, str]) -> dict:
    """Stage 3 task: write one shard whole, from the pairs stage 1 encoded, rendering any it did not.

    ``sha256`` maps each source of the shard to the checksum it had when it was
    scored; a frame that changed since is refused, so no pair is rendered from
    other pixels than its score was computed on.

    Returns the shard's done-record (pair range, digest of its rows, per-pair
    checksums and clamp counts).
    """
    from hdrprep import camera, candidates

    _cap_threads()
    import numcodecs

    numcodecs.blosc.set_nthreads(1)  # the shard's chunks are encoded in this thread (store.write_pairs)
    config = Config.from_dict(config_dict)
    curves = camera.load_curves(config.camera)
    size = config.sampling.patch_size
    ldr = np.empty((len(rows), size, size, 3), np.uint8)
    hdr = np.empty((len(rows), size, size, 3), np.float16)
    checksums, clamped, encoded = [], [], []
    frame_key, frame = None, None
    for i, row in enumerate(rows):
        frames = _read_stash(Path(out), row)
        encoded.append(frames)
        if frames is not None:
            checksums.append(row["stash_checksum"])
            clamped.append(row["stash_clamped"])
            continue
        if row["source"] != frame_key:
            frame_key = row["source"]
            path = Path(src) / frame_key
            if files.file_sha256(path)[1] != sha256[frame_key]:
                raise StoreError(f"{path} changed since it was scored (sha256 differs); its pairs would not "
                                 f"match their scores. Restore the file, or rebuild with --overwrite")
            frame = _read_frame_cached(path, sha256[frame_key], config.ingest, size)
        ldr[i], target = candidates.render_row(frame, row, config, curves)
        hdr[i], n_over = store.to_half(target)
        clamped.append(n_over)
        checksums.append(store.pair_checksum(ldr[i], hdr[i]))
    import zarr

    group = zarr.open_group(out, mode="r+")
    out_cfg = config.output
    if not (all(f is not None for f in encoded)
            and store.write_encoded_pairs(group, start, encoded, out_cfg.compressor, out_cfg.level)):
        for i, frames in enumerate(encoded):
            if frames is not None:
                ldr[i], hdr[i] = store.decode_pair(frames, size)
        store.write_pairs(group, start, ldr, hdr)
    done = dict(shard=shard, start=start, stop=start + len(rows), rows=_rows_digest(rows), checksum=checksums,
                hdr_clamped=clamped)
    files.atomic_write_bytes(Path(out) / schema.WORK_DIR / "shards" / f"{shard:06d}.json",
                             json.dumps(done).encode())
    return done


class _StashFiles:
    """Deletes a frame's ``_work/pairs/<id>.bin`` as soon as every shard holding its pairs is written.

    The encoded pairs take as much disk as the arrays they become; freeing them frame
    by frame keeps a build's peak disk near the size of its result instead of twice it.
    A frame's pairs are contiguous (pairs are in (source, candidate) order), so its
    file goes when the last of its few shards is done. A rerun that needs a deleted
    file renders those pairs again (the same bytes).
    """

    def __init__(self, work: Path, rows: list[dict], per: int):
        self.work = work
        self.sources: dict[int, set[str]] = {}  # shard -> the frames it holds pairs of
        for i, r in enumerate(rows):
            self.sources.setdefault(i // per, set()).add(r["source"])
        self.pending: dict[str, int] = {}  # frame -> shards not written yet
        for held in self.sources.values():
            for source in held:
                self.pending[source] = self.pending.get(source, 0) + 1

    def written(self, shard: int) -> None:
        for source in self.sources.pop(shard, ()):
            self.pending[source] -= 1
            if not self.pending[source]:
                (self.work / "pairs" / f"{_frame_id(source)}.bin").unlink(missing_ok=True)


# --------------------------------------------------------------------------- execution

class _Serial:
    """In-process execution without Dask (``scheduler='synchronous'``)."""

    dashboard = None

    def map(self, fn: Callable, args: list[tuple]) -> Iterator[Any]:
        for a in args:
            yield fn(*a)


class _Dask:
    def __init__(self, client):
        self.client = client
        self.dashboard = client.dashboard_link

    def map(self, fn: Callable, args: list[tuple]) -> Iterator[Any]:
        from distributed import as_completed

        futures = [self.client.submit(fn, *a, pure=False, retries=2, key=f"{fn.__name__}-{i}-{os.urandom(4).hex()}")
                   for i, a in enumerate(args)]
        for fut in as_completed(futures):
            yield fut.result()
            fut.release()


@contextmanager
def _executor(workers: int | None, scheduler: str | None, cluster=None, local_directory: Path | None = None):
    if scheduler == "synchronous":
        yield _Serial()
        return
    from distributed import Client, LocalCluster

    if cluster is not None:
        with Client(cluster) as client:
            yield _Dask(client)
    elif scheduler and scheduler != "threads":
        with Client(scheduler) as client:
            yield _Dask(client)
    else:
        n = workers or os.cpu_count() or 1
        threads = scheduler == "threads"
        kw = dict(n_workers=1, threads_per_worker=n) if threads else dict(n_workers=n, threads_per_worker=1,
                                                                           env=THREAD_ENV)
        import dask

        # scratch space of the scheduler, nannies and workers inside --out/_work, not in $TMPDIR
        scratch = {"temporary-directory": str(local_directory)} if local_directory else {}
        with dask.config.set(scratch), \
                LocalCluster(processes=not threads, dashboard_address=":0", silence_logs=40, **kw) as local, \
                Client(local) as client:
            yield _Dask(client)


def _kernels_cached() -> bool:
    """True if Numba's on-disk cache holds hdrprep's kernels ($NUMBA_CACHE_DIR, or beside the package)."""
    place = Path(os.environ.get("NUMBA_CACHE_DIR") or Path(__file__).parent / "__pycache__")
    return place.is_dir() and next(place.rglob("*_camera_kernels*.nbi"), None) is not None


def _progress(it: Iterable, total: int, desc: str, enabled: bool):
    from tqdm.auto import tqdm

    return tqdm(it, total=total, desc=desc, unit="task", disable=not enabled, leave=True)


# --------------------------------------------------------------------------- the build

def _config_hash(config: Config) -> str:
    return hashlib.sha256(json.dumps(config.to_dict(), sort_keys=True).encode()).hexdigest()[:16]


def _check_out(src: Path, out: Path, config: Config, overwrite: bool) -> bool:
    """Check --src/--out before any work, writing nothing; True if ``out`` holds a store to replace."""
    if not src.is_dir():
        raise ConfigError(f"--src {src}: not a folder; give the folder that holds the HDR frames")
    rs, ro = src.resolve(), out.resolve()
    if ro == rs or rs in ro.parents:
        raise ConfigError(f"--out {out} is inside --src {src}; the build would read its own output. "
                          f"Put --out outside the source folder")
    if ro in rs.parents:
        raise ConfigError(f"--src {src} is inside --out {out}; choose an --out outside the source folder")
    if not out.exists():
        _check_creatable(out)
        return False
    if not out.is_dir():
        raise ConfigError(f"--out {out} exists and is not a folder; choose a new path")
    state = out / schema.WORK_DIR / schema.BUILD_STATE
    is_store = state.is_file() or store.read_attrs(out) is not None
    if not is_store:
        # an empty _work/ (and a lock) alone is what a build killed at its very start leaves
        if {p.name for p in out.iterdir()} - {schema.WORK_DIR, lock.LOCK_NAME}:
            raise ConfigError(f"--out {out} is a non-empty folder that is not an hdrprep store; "
                              f"choose a new or empty folder (nothing was written)")
        return False
    old = json.loads(state.read_text()).get("config_hash") if state.is_file() else None
    if old == _config_hash(config):
        return False
    if not overwrite:
        raise ConfigError(f"--out {out} holds a store built with a different configuration "
                          f"(or an unfinished one of unknown config); pass --overwrite to replace it, "
                          f"or choose another --out")
    return True


def _clear(out: Path) -> None:
    """Delete the store in ``out`` for ``--overwrite``: everything but the build lock this build holds."""
    for entry in out.iterdir():
        if entry.name == lock.LOCK_NAME:
            continue
        if entry.is_dir() and not entry.is_symlink():
            shutil.rmtree(entry)
        else:
            entry.unlink()


def _check_creatable(out: Path) -> None:
    """Refuse an --out that cannot be created (under a file, in a read-only place) before any work."""
    parent = out.parent
    while not parent.exists():
        parent = parent.parent
    if not parent.is_dir():
        raise ConfigError(f"--out {out}: {parent} is a file, not a folder; choose an --out in a folder")


def _start_work(out: Path, config: Config) -> Path:
    """Create --out/_work with the build state (first), and remove temporary files of killed writes."""
    work = out / schema.WORK_DIR
    try:
        work.mkdir(parents=True, exist_ok=True)
        if not (work / schema.BUILD_STATE).is_file():
            state = dict(format_version=schema.FORMAT_VERSION, config_hash=_config_hash(config),
                         config=config.to_dict())
            files.atomic_write_bytes(work / schema.BUILD_STATE, json.dumps(state, indent=1).encode())
        for sub in ("candidates", "pairs", "shards"):
            (work / sub).mkdir(exist_ok=True)
    except OSError as exc:
        raise ConfigError(f"--out {out}: cannot write there ({exc.strerror or exc}); choose a writable "
                          f"folder") from exc
    # leftovers of writes that a kill interrupted: ours (.NAME.tmp-PID) and zarr's (NAME.HEX.partial)
    for d in (out, work, work / "candidates", work / "pairs", work / "shards"):
        for tmp in d.glob(".*.tmp-*"):
            tmp.unlink()
    for d in ("ldr", "hdr"):
        for tmp in (out / d).rglob("*.partial"):
            tmp.unlink()
    return work


def _out_error(exc: OSError, out: Path) -> HdrprepError | None:
    """A clear error for a failed write under --out (disk full, read-only); None for other errors."""
    where = f" ({exc.filename})" if exc.filename else ""
    if exc.errno in (errno.ENOSPC, errno.EDQUOT):
        return StoreError(f"--out {out}: no space left on the device{where}; free space (or move --out "
                          f"and its contents elsewhere) and rerun the same command to resume")
    if exc.errno in (errno.EROFS, errno.EACCES, errno.EPERM):
        return StoreError(f"--out {out}: cannot write{where}: {exc.strerror}; make it writable and rerun "
                          f"the same command to resume")
    return None


def build(src: str | Path, out: str | Path, config: Config = Config(), *, workers: int | None = None,
          scheduler: str | None = None, cluster=None, overwrite: bool = False, dry_run: bool = False,
          limit_frames: int | None = None, frames: list[str] | None = None, progress: bool = True) -> dict:
    """Build a store of (LDR, HDR) training pairs from the HDR frames under ``src``.

    Parameters
    ----------
    src, out : path
        Source folder (searched recursively) and the store folder to create or resume.
    config : Config
        Resolved configuration (a preset plus overrides).
    workers : int, optional
        Local worker processes (default: one per core).
    scheduler : str, optional
        ``tcp://host:port`` of a running ``dask scheduler``; ``'threads'`` for a
        local threaded cluster; ``'synchronous'`` to run in this process without Dask.
    cluster : dask cluster, optional
        An already started cluster (e.g. ``dask_jobqueue.SLURMCluster``).
    overwrite : bool
        Replace a store built with another configuration.
    dry_run : bool
        Only list the frames and the plan; write nothing.
    limit_frames : int, optional
        Use only the first N frames (in sorted order).
    frames : list of str, optional
        Use exactly these frame keys (relative paths), e.g. from a data manifest.
    progress : bool
        Show progress bars.

    Returns
    -------
    dict
        The build report (also written to ``out/report.json``).
    """
    src, out = Path(src), Path(out)
    t_start = time.perf_counter()
    if not dry_run:
        lock.check_free(out)  # before anything else: a second build hears of the first one, not of its store
    _check_out(src, out, config, overwrite)
    keys, bad_entries = discover(src)
    if frames is not None:
        missing = sorted(set(frames) - set(keys))
        if missing:
            raise ConfigError(f"{len(missing)} frame(s) named by the manifest are not under --src {src}: "
                              f"{', '.join(missing[:5])}; fix the manifest or --src")
        keys = sorted(frames)
    if limit_frames is not None:
        keys = keys[:limit_frames]
    if not keys:
        raise ConfigError(f"--src {src}: no .exr or .hdr files found; point --src at the frames' folder")
    plan = dict(src=str(src), out=str(out), frames=keys, not_files=bad_entries,
                candidates=len(keys) * config.sampling.patches_per_frame, config=config.to_dict())
    if dry_run:
        return plan

    with lock.hold(out):
        # checked again under the lock: another build may have finished in between
        if _check_out(src, out, config, overwrite):
            _clear(out)
        work = _start_work(out, config)
        try:
            return _run(src, out, work, config, keys, bad_entries, workers, scheduler, cluster, progress,
                        t_start)
        except OSError as exc:
            err = _out_error(exc, out)
            if err is None:
                raise
            raise err from exc


def _run(src: Path, out: Path, work: Path, config: Config, keys, bad_entries, workers, scheduler, cluster,
         progress, t_start) -> dict:
    cfg = config.to_dict()
    timings = {}
    with _executor(workers, scheduler, cluster, work / "dask") as ex:
        # stage 1: score candidates, one task per frame not scored yet
        t0 = time.perf_counter()
        todo = [k for k in keys if not (work / "candidates" / f"{_frame_id(k)}.parquet").is_file()]
        if progress:
            if ex.dashboard:
                print(f"Dask dashboard: {ex.dashboard}", file=sys.stderr, flush=True)
            if todo and not _kernels_cached():
                print("compiling hdrprep's Numba kernels: a minute on the first run on this machine, cached after "
                      "(the progress bar waits meanwhile)", file=sys.stderr, flush=True)
        for _ in _progress(ex.map(score_frame_task, [(str(src), k, str(work), cfg) for k in todo]),
                           len(todo), "score frames", progress):
            pass
        timings["score_s"] = time.perf_counter() - t0
        t0 = time.perf_counter()
        candidates, records = _read_candidates(work, keys)

        # stage 2: select
        kept = _select(candidates, config)
        n = kept.num_rows
        per = config.output.pairs_per_shard
        _, created = store.create_arrays(out, n, config.sampling.patch_size, per, config.output.compressor,
                                         config.output.level)
        if created:  # the shards the markers describe are gone
            for marker in (work / "shards").glob("*.json"):
                marker.unlink()
        timings["select_s"] = time.perf_counter() - t0

        # stage 3: render and write, one task per shard not written yet
        t0 = time.perf_counter()
        rows = kept.to_pylist() if n else []
        sha256 = {r["source"]: r.get("sha256") for r in records}
        shard_args, done = [], {}
        stash = _StashFiles(work, rows, per)
        for s, start in enumerate(range(0, n, per)):
            marker = work / "shards" / f"{s:06d}.json"
            if marker.is_file():
                rec = json.loads(marker.read_text())
                if rec.get("rows") == _rows_digest(rows[start:start + per]):
                    done[s] = rec
                    stash.written(s)
                    continue
            shard_rows = rows[start:start + per]
            shard_args.append((str(src), str(out), s, start, shard_rows, cfg,
                               {r["source"]: sha256[r["source"]] for r in shard_rows}))
        for rec in _progress(ex.map(write_shard_task, shard_args), len(shard_args), "write shards", progress):
            done[rec["shard"]] = rec
            stash.written(rec["shard"])
        timings["write_s"] = time.perf_counter() - t0

    # stage 4: index, candidates, provenance; the store is complete only after this
    return _finish(out, config, keys, records, bad_entries, candidates, kept, done, timings, t_start, todo,
                   shard_args)


def _select(candidates, config: Config):
    """The kept candidates, in (source, candidate) order, with ``pair`` and ``shard`` columns."""
    import pyarrow as pa

    from hdrprep import selection

    keep = selection.select(candidates["score"].to_numpy(), candidates["saturated_fraction"].to_numpy(),
                            candidates["source"].to_numpy(zero_copy_only=False),
                            candidates["candidate"].to_numpy(), config.select, candidates["rendered"].to_numpy(),
                            selection.window_boxes(candidates))
    kept = candidates.filter(pa.array(keep))
    pair = np.arange(kept.num_rows, dtype=np.int64)
    return kept.add_column(0, "pair", pa.array(pair)).append_column(
        "shard", pa.array(pair // config.output.pairs_per_shard))


def _finish(out: Path, config: Config, keys, records, bad_entries, candidates, kept, done, timings, t_start,
            scored, written) -> dict:
    import pyarrow as pa
    import pyarrow.parquet as pq
    import zarr

    t0 = time.perf_counter()
    n = kept.num_rows
    checksum = [None] * n
    clamped = [0] * n
    for rec in done.values():
        checksum[rec["start"]:rec["stop"]] = rec["checksum"]
        clamped[rec["start"]:rec["stop"]] = rec["hdr_clamped"]
    index = schema.conform(kept.append_column("checksum", pa.array(checksum, pa.string())).append_column(
        "hdr_clamped", pa.array(clamped, pa.int64())), schema.INDEX_SCHEMA)
    kept_keys = set(zip(kept["source"].to_pylist(), kept["candidate"].to_pylist()))
    kept_mask = [k in kept_keys for k in zip(candidates["source"].to_pylist(), candidates["candidate"].to_pylist())]
    cand = schema.conform(candidates.append_column("kept", pa.array(kept_mask, pa.bool_())),
                          schema.CANDIDATES_SCHEMA)
    for name, table in ((schema.CANDIDATES_NAME, cand), (schema.INDEX_NAME, index)):
        buf = pa.BufferOutputStream()
        pq.write_table(table, buf)
        files.atomic_write_bytes(out / name, buf.getvalue().to_pybytes())
    files.pause_point("before-complete")

    skipped = [r for r in records if r["status"] != "ok"] + bad_entries
    reasons: dict[str, int] = {}
    for r in skipped:
        reasons[r["reason"]] = reasons.get(r["reason"], 0) + 1
    counts = dict(frames=len(keys) + len(bad_entries), frames_read=sum(r["status"] == "ok" for r in records),
                  frames_skipped=len(skipped), skipped_reasons=reasons,
                  candidates=candidates.num_rows, kept=n,
                  hdr_clamped_values=int(sum(clamped)))
    from hdrprep import camera, versions

    attrs = dict(format_version=schema.FORMAT_VERSION, complete=True, package_version=__version__,
                 camera_version=camera.RENDER_VERSION, seed=config.seed, config=config.to_dict(),
                 sources=records + bad_entries, counts=counts, versions=versions.current())
    group = zarr.open_group(str(out), mode="r+")
    group.attrs[schema.ATTR] = attrs
    # the pairs stage 1 encoded are in the shards now: free their space (as much again as the arrays)
    shutil.rmtree(out / schema.WORK_DIR / "pairs", ignore_errors=True)

    timings["finish_s"] = time.perf_counter() - t0
    stored = sum(f.stat().st_size for d in ("ldr", "hdr") for f in (out / d).rglob("*") if f.is_file())
    raw = n * config.sampling.patch_size ** 2 * 3 * (1 + 2)
    wall = time.perf_counter() - t_start
    report = dict(counts=counts, skipped=[{k: r.get(k) for k in ("source", "reason", "detail")} for r in skipped],
                  timings=dict(timings, total_s=wall),
                  tasks=dict(frames_scored=len(scored), shards_written=len(written)),
                  bytes=dict(stored=stored, raw=raw, ratio=raw / stored if stored else None,
                             per_pair=stored / n if n else None),
                  throughput=dict(candidates_per_s=counts["candidates"] / timings["score_s"] if scored else None,
                                  pairs_per_s=n / timings["write_s"] if written else None))
    files.atomic_write_bytes(out / schema.REPORT_NAME, json.dumps(report, indent=1).encode())
    return report
