"""``hdrprep verify``: check a finished store against itself.

A store carries what is needed to check it without the source frames: the
format version and completeness flag in its group attribute, the array shapes
implied by its configuration, and, per pair, a checksum taken when the pair was
written (``index.parquet`` column ``checksum`` = :func:`hdrprep.store.pair_checksum`).
:func:`verify` reads every shard once and reports what does not match, naming
the shard, the pairs and the fix. It never changes the store.
"""

from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from hdrprep import schema, store
from hdrprep.errors import StoreError

__all__ = ["Problem", "verify"]

#: Up to this many shards are checked in this process: starting processes would cost more than they save.
_SERIAL_SHARDS = 64
_RERUN = "rerun the same `hdrprep build` (same --src, --out and preset)"


@dataclass(frozen=True)
class Problem:
    """One thing wrong with a store.

    Attributes
    ----------
    where : str
        The part concerned, e.g. ``'index.parquet'`` or ``'shard 3 (pairs 48-63)'``.
    what : str
        What is wrong, with the values found.
    fix : str
        What to do about it.
    """

    where: str
    what: str
    fix: str

    def __str__(self) -> str:
        return f"{self.where}: {self.what}; {self.fix}"


def verify(root: str | Path, *, checksums: bool = True, progress: bool = False,
           workers: int | None = None) -> list[Problem]:
    """Check a store's format, completeness, arrays, index and (optionally) every pair.

    Parameters
    ----------
    root : path
        The store folder (``shards.zarr``).
    checksums : bool
        Read every pair and compare it with its stored checksum (reads the
        whole store once); False checks the structure only.
    progress : bool
        Show a progress bar over the shards.
    workers : int, optional
        Processes that read and check the shards (default: one per core; 1 checks in
        this process).

    Returns
    -------
    list of Problem
        Empty when the store is sound.
    """
    root = Path(root)
    try:
        attrs = store.check_attrs(root)
    except StoreError as exc:
        return [Problem(str(root), _what(exc), str(exc).partition("; ")[2])]
    config = attrs.get("config") or {}
    try:
        size = int(config["sampling"]["patch_size"])
        per = int(config["output"]["pairs_per_shard"])
    except (KeyError, TypeError, ValueError):
        return [Problem("zarr.json", "the 'config' attribute lacks sampling.patch_size or "
                        "output.pairs_per_shard", "rebuild with --overwrite")]
    problems: list[Problem] = []
    arrays = _check_arrays(root, size, per, problems)
    index = _read_index(root, problems)
    n = None if arrays is None else arrays[0].shape[0]
    if n is not None and (attrs.get("counts") or {}).get("kept") != n:
        problems.append(Problem("zarr.json", f"counts.kept is {(attrs.get('counts') or {}).get('kept')!r} but "
                                f"the arrays hold {n} pairs", f"{_RERUN} to rewrite the attributes"))
    if index is not None and n is not None and _check_index(index, n, per, problems):
        _check_recipe(index, attrs, problems)
        if checksums:
            _check_pairs(root, n, index["checksum"].to_pylist(), per, problems, progress,
                         workers or os.cpu_count() or 1)
    _check_candidates(root, n, problems)
    return problems


def _what(exc: StoreError) -> str:
    """What a store's ``StoreError`` ("PATH: what; fix") says is wrong."""
    return str(exc).partition(": ")[2].partition("; ")[0]


def _check_arrays(root: Path, size: int, per: int, problems: list[Problem]):
    import zarr

    try:
        group = zarr.open_group(str(root), mode="r")
        ldr, hdr = group["ldr"], group["hdr"]
    except Exception as exc:  # any failure to open is a finding, not a crash
        problems.append(Problem("ldr/, hdr/", f"arrays cannot be opened ({type(exc).__name__}: {exc})",
                                f"{_RERUN}, or rebuild with --overwrite"))
        return None
    ok = True
    for arr, name, dtype in ((ldr, "ldr", np.uint8), (hdr, "hdr", np.float16)):
        shape = arr.shape
        want = (shape[0], size, size, 3)
        if arr.dtype != dtype or shape != want or (shape[0] and arr.shards != (per, size, size, 3)):
            problems.append(Problem(f"{name}/", f"dtype {arr.dtype}, shape {shape}, shards {arr.shards}; "
                                    f"expected {np.dtype(dtype)}, (N, {size}, {size}, 3), shards of {per} pairs",
                                    "rebuild with --overwrite"))
            ok = False
    if ldr.shape[0] != hdr.shape[0]:
        problems.append(Problem("ldr/, hdr/", f"ldr holds {ldr.shape[0]} pairs, hdr {hdr.shape[0]}",
                                "rebuild with --overwrite"))
        ok = False
    return (ldr, hdr) if ok else None


def _read_index(root: Path, problems: list[Problem]):
    if not (root / schema.INDEX_NAME).is_file():
        problems.append(Problem(schema.INDEX_NAME, "missing", f"{_RERUN}: it rewrites the index from _work/"))
        return None
    try:
        return store.read_table(root, schema.INDEX_NAME, schema.INDEX_SCHEMA)
    except StoreError as exc:  # unreadable, or columns missing
        problems.append(Problem(schema.INDEX_NAME, _what(exc), f"{_RERUN}: it rewrites the index from _work/"))
        return None


def _check_index(index, n: int, per: int, problems: list[Problem]) -> bool:
    """Row count, pair and shard numbering; True if pairs can be checked against it."""
    if index.num_rows != n:
        problems.append(Problem(schema.INDEX_NAME, f"{index.num_rows} rows but the arrays hold {n} pairs: "
                                "the index does not belong to these arrays (stale?)",
                                f"{_RERUN}: it rewrites the index"))
        return False
    pair = index["pair"].to_numpy()
    ok = True
    if not np.array_equal(pair, np.arange(n)):
        first = int(np.flatnonzero(pair != np.arange(n))[0])
        problems.append(Problem(schema.INDEX_NAME, f"column 'pair' is not 0..{n - 1} (row {first} holds "
                                f"{pair[first]})", f"{_RERUN}: it rewrites the index"))
        ok = False
    shard = index["shard"].to_numpy()
    if not np.array_equal(shard, np.arange(n) // per):
        first = int(np.flatnonzero(shard != np.arange(n) // per)[0])
        problems.append(Problem(schema.INDEX_NAME, f"column 'shard' does not match {per} pairs per shard "
                                f"(row {first} holds {shard[first]})", f"{_RERUN}: it rewrites the index"))
    if index["checksum"].null_count:
        problems.append(Problem(schema.INDEX_NAME, f"{index['checksum'].null_count} pairs have no checksum",
                                f"{_RERUN}: it rewrites the index"))
        ok = False
    return ok


def _check_recipe(index, attrs: dict, problems: list[Problem]) -> None:
    """Every row was made with the store's own configuration and seed: a store that mixes builds fails.

    The seed, the window size and the keep rule are checked per row; then each frame's
    windows and camera draws are drawn again from (seed, frame key, frame size,
    configuration), with no need for the frame's pixels, and must equal the rows'
    (all but the exposure, which depends on the pixels).
    """
    from hdrprep import camera, candidates, selection
    from hdrprep.config import Config

    def found(what: str, rows) -> None:
        shown = ", ".join(map(str, rows[:8])) + (", ..." if len(rows) > 8 else "")
        problems.append(Problem(schema.INDEX_NAME, f"{len(rows)} rows {what} (pairs {shown}): the store mixes "
                                "the output of different builds", "rebuild it with --overwrite"))

    config = Config.from_dict(attrs["config"])
    rows = index.to_pylist()
    for what, bad in (
            (f"have another seed than the store's {config.seed}", lambda r: r["seed"] != config.seed),
            (f"have another window size than {config.sampling.patch_size}",
             lambda r: r["size"] != config.sampling.patch_size),
            ("are not kept by the store's selection rule",
             lambda r: not (config.select.keep_all or selection.eligible(r["score"], r["saturated_fraction"],
                                                                         config.select)))):
        wrong = [r["pair"] for r in rows if bad(r)]
        if wrong:
            found(what, wrong)
            return
    try:
        curves = camera.load_curves(config.camera)
    except Exception:  # noqa: BLE001 - a table file that is not at hand: the draws cannot be repeated
        return
    shapes = {r["source"]: (r.get("height"), r.get("width")) for r in attrs.get("sources", [])}
    by_source: dict[str, list[dict]] = {}
    for r in rows:
        by_source.setdefault(r["source"], []).append(r)
    drawn = [f.name for f in dataclasses.fields(camera.CameraParams) if f.name != "exposure"]
    if config.camera.exposure_mode == "frame":
        drawn.remove("clip_quantile")  # the frame's own draw, checked below
    wrong = []
    for key, group in by_source.items():
        h, w = shapes.get(key, (None, None))
        if h is None or any(r["candidate"] >= config.sampling.patches_per_frame for r in group):
            wrong += [r["pair"] for r in group]
            continue
        q, windows, params = candidates.sample_windows((h, w), key, config, curves, [r["candidate"] for r in group])
        for r, (y, x), p in zip(group, windows.tolist(), params):
            expect = p.to_dict()
            if (r["row"], r["col"]) != (y, x) or any(r[k] != expect[k] for k in drawn) or (
                    config.camera.exposure_mode == "frame" and r["clip_quantile"] != q):
                wrong.append(r["pair"])
    if wrong:
        found("do not repeat the store's seeded draws of windows and camera parameters", sorted(wrong))


def _check_shards(root: str, starts: list[int], per: int, expected: list[str]) -> list[tuple]:
    """Check the pairs of the shards starting at ``starts`` (one task; runs in a worker process).

    Returns (shard, start, stop, error or None, bad pair numbers) per shard with a finding.
    """
    import zarr

    group = zarr.open_group(root, mode="r")
    ldr, hdr = group["ldr"], group["hdr"]
    n = ldr.shape[0]
    found = []
    for start in starts:
        stop = min(start + per, n)
        try:
            block_l, block_h = ldr[start:stop], hdr[start:stop]
        except Exception as exc:  # noqa: BLE001 - a damaged shard fails in zarr's decoders with various types
            found.append((start // per, start, stop, f"{type(exc).__name__}: {exc}", list(range(start, stop))))
            continue
        bad = [start + i for i in range(stop - start)
               if store.pair_checksum(block_l[i], block_h[i]) != expected[start + i]]
        if bad:
            found.append((start // per, start, stop, None, bad))
    return found


def _check_pairs(root: Path, n: int, expected: list[str], per: int, problems: list[Problem], progress: bool,
                 workers: int) -> None:
    from concurrent.futures import ProcessPoolExecutor, as_completed

    from tqdm.auto import tqdm

    starts = list(range(0, n, per))
    # tasks of a few dozen shards: long enough to hide the process hop, short enough to balance
    step = max(1, min(64, -(-len(starts) // (4 * workers))))
    tasks = [starts[i:i + step] for i in range(0, len(starts), step)]
    found = []
    with tqdm(total=len(starts), desc="verify shards", unit="shard", disable=not progress) as bar:
        if workers == 1 or len(starts) <= _SERIAL_SHARDS:
            for task in tasks:
                found += _check_shards(str(root), task, per, expected)
                bar.update(len(task))
        else:
            import multiprocessing as mp

            # spawn: no zarr or Numba state of this process crosses a fork
            with ProcessPoolExecutor(workers, mp_context=mp.get_context("spawn")) as pool:
                futures = {pool.submit(_check_shards, str(root), task, per, expected): task for task in tasks}
                for fut in as_completed(futures):
                    found += fut.result()
                    bar.update(len(futures[fut]))
    bad_total = 0
    for k, start, stop, error, bad in sorted(found):
        where = f"shard {k} (pairs {start}-{stop - 1}, files ldr/c/{k}/0/0/0, hdr/c/{k}/0/0/0)"
        fix = (f"delete {schema.WORK_DIR}/shards/{k:06d}.json and {_RERUN} to rewrite this shard "
               f"(or rebuild with --overwrite if {schema.WORK_DIR}/ is gone)")
        if error is not None:
            problems.append(Problem(where, f"cannot be read ({error})", fix))
        else:
            shown = ", ".join(map(str, bad[:8])) + (", ..." if len(bad) > 8 else "")
            problems.append(Problem(where, f"{len(bad)} of {stop - start} pairs do not match their checksums "
                                    f"(pairs {shown})", fix))
        bad_total += len(bad)
    if n and bad_total > n // 2:
        problems.append(Problem(schema.INDEX_NAME, f"{bad_total} of {n} pairs do not match the index: the index "
                                f"may be stale (from another build) rather than the shards damaged",
                                f"{_RERUN}: it rewrites the index, then verify again"))


def _check_candidates(root: Path, n: int | None, problems: list[Problem]) -> None:
    if n is None:
        return
    if not (root / schema.CANDIDATES_NAME).is_file():
        problems.append(Problem(schema.CANDIDATES_NAME, "missing", f"{_RERUN}: it rewrites it"))
        return
    try:
        kept = store.read_table(root, schema.CANDIDATES_NAME, schema.CANDIDATES_SCHEMA, ["kept"])["kept"]
    except StoreError as exc:  # damaged or without a 'kept' column
        problems.append(Problem(schema.CANDIDATES_NAME, _what(exc), f"{_RERUN}: it rewrites it"))
        return
    if kept.to_numpy().sum() != n:
        problems.append(Problem(schema.CANDIDATES_NAME, f"{int(kept.to_numpy().sum())} candidates are marked "
                                f"kept but the arrays hold {n} pairs", f"{_RERUN}: it rewrites it"))
