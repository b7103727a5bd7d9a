"""End-to-end tests of `hdrprep build` on real files, real Dask processes, real Zarr/Parquet."""

from __future__ import annotations

import json
import os
import platform
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
import zarr

from hdrprep import build, camera, candidates, schema, store
from hdrprep.config import Config, load_preset
from hdrprep.errors import ConfigError
from hdrprep.verify import verify

SMOKE = load_preset("smoke")


@pytest.fixture(scope="module")
def frames(tmp_path_factory) -> Path:
    """Three generated frames plus a sub-folder frame, small enough for fast builds."""
    from hdrprep import synth

    root = tmp_path_factory.mktemp("frames")
    synth.write_frames(root, n=2, height=256, width=384)
    synth.write_frames(root / "sub", n=1, seed=7, height=300, width=300)
    return root


def _build(frames: Path, out: Path, config: Config = SMOKE, **kw) -> dict:
    kw.setdefault("scheduler", "synchronous")
    kw.setdefault("progress", False)
    return build.build(frames, out, config, **kw)


def _contents(out: Path) -> dict:
    """Everything that makes up a store's identity: index bytes and array contents."""
    group = zarr.open_group(str(out), mode="r")
    return dict(index=(out / schema.INDEX_NAME).read_bytes(),
                candidates=(out / schema.CANDIDATES_NAME).read_bytes(),
                ldr=group["ldr"][:], hdr=group["hdr"][:],
                shards={p.relative_to(out).as_posix(): p.read_bytes()
                        for d in ("ldr", "hdr") for p in sorted((out / d).rglob("*")) if p.is_file()})


def _assert_same(a: dict, b: dict) -> None:
    assert a["index"] == b["index"]
    assert a["candidates"] == b["candidates"]
    np.testing.assert_array_equal(a["ldr"], b["ldr"])
    np.testing.assert_array_equal(a["hdr"].view(np.uint16), b["hdr"].view(np.uint16))
    assert a["shards"] == b["shards"]


@pytest.fixture(scope="module")
def reference(frames, tmp_path_factory) -> tuple[Path, dict]:
    out = tmp_path_factory.mktemp("ref") / "s.zarr"
    report = _build(frames, out)
    return out, report


def test_store_opens_with_plain_zarr_and_pyarrow(reference):
    out, report = reference
    group = zarr.open_group(str(out), mode="r")
    index = pq.read_table(out / schema.INDEX_NAME)
    n = report["counts"]["kept"]
    assert n > 0, "the smoke build kept no pair; the synthetic frames should give textured saturated windows"
    assert group["ldr"].shape == (n, 128, 128, 3) and group["ldr"].dtype == np.uint8
    assert group["hdr"].shape == (n, 128, 128, 3) and group["hdr"].dtype == np.float16
    assert index.num_rows == n
    assert index["pair"].to_pylist() == list(range(n))
    for col in ("source", "row", "col", "score", "saturated_fraction", "exposure", "curve", "curve_n",
                "curve_sigma", "seed", "checksum", "noise_seed", "jpeg_quality"):
        assert col in index.column_names, col
    attrs = group.attrs[schema.ATTR]
    assert attrs["format_version"] == schema.FORMAT_VERSION and attrs["complete"] is True
    assert attrs["counts"]["frames"] == 3 and attrs["counts"]["kept"] == n
    assert {s["source"] for s in attrs["sources"]} == {"synth_000.exr", "synth_001.exr", "sub/synth_000.exr"}
    assert all(len(s["sha256"]) == 64 for s in attrs["sources"])
    cand = pq.read_table(out / schema.CANDIDATES_NAME)
    assert cand.num_rows == 3 * SMOKE.sampling.patches_per_frame
    assert sum(cand["kept"].to_pylist()) == n


def test_kept_pairs_are_saturated_and_pass_the_threshold(reference):
    out, _ = reference
    index = pq.read_table(out / schema.INDEX_NAME).to_pydict()
    assert min(index["saturated_fraction"]) > SMOKE.select.min_saturated_fraction
    assert min(index["score"]) >= SMOKE.select.threshold
    group = zarr.open_group(str(out), mode="r")
    for i in range(len(index["pair"])):
        mask = camera.soft_mask(group["ldr"][i], SMOKE.camera.mask_alpha)
        assert (mask < 1).any(), f"pair {i} has no saturated pixel"


def test_index_rows_rerender_their_pairs_exactly(reference, frames):
    from hdrprep import io

    out, _ = reference
    group = zarr.open_group(str(out), mode="r")
    index = pq.read_table(out / schema.INDEX_NAME).to_pylist()
    fields = [f.name for f in __import__("dataclasses").fields(camera.CameraParams)]
    for row in index:
        frame, _ = io.read_frame(frames / row["source"])
        params = camera.CameraParams.from_dict({k: row[k] for k in fields})
        ldr, hdr = candidates.render_pair(frame, row["row"], row["col"], row["size"], params, SMOKE)
        np.testing.assert_array_equal(ldr, group["ldr"][row["pair"]])
        half, _ = store.to_half(hdr)
        np.testing.assert_array_equal(half.view(np.uint16), group["hdr"][row["pair"]].view(np.uint16))
        assert store.pair_checksum(ldr, half) == row["checksum"]


@pytest.mark.cluster
@pytest.mark.parametrize("kw", [dict(scheduler=None, workers=1), dict(scheduler=None, workers=2),
                                dict(scheduler="threads", workers=2)], ids=["1-worker", "2-workers", "threads"])
def test_byte_identical_whatever_the_workers(frames, reference, tmp_path, kw):
    out = tmp_path / "s.zarr"
    _build(frames, out, **kw)
    _assert_same(_contents(reference[0]), _contents(out))


def test_rerun_redoes_only_deleted_task_outputs(frames, reference, tmp_path):
    out = tmp_path / "s.zarr"
    shutil.copytree(reference[0], out)
    work = out / schema.WORK_DIR
    sorted((work / "candidates").glob("*.parquet"))[0].unlink()
    (work / "shards" / "000000.json").unlink()
    for arr in ("ldr", "hdr"):
        (out / arr / "c" / "0" / "0" / "0" / "0").unlink()  # shard 0's file
    report = _build(frames, out)
    assert report["tasks"] == {"frames_scored": 1, "shards_written": 1}
    _assert_same(_contents(reference[0]), _contents(out))


def test_rerun_of_finished_store_does_nothing(frames, reference, tmp_path):
    out = tmp_path / "s.zarr"
    shutil.copytree(reference[0], out)
    report = _build(frames, out)
    assert report["tasks"] == {"frames_scored": 0, "shards_written": 0}
    _assert_same(_contents(reference[0]), _contents(out))


def test_other_config_into_same_out_refuses_without_overwrite(frames, reference, tmp_path):
    out = tmp_path / "s.zarr"
    shutil.copytree(reference[0], out)
    other = SMOKE.override(**{"seed": 1})
    with pytest.raises(ConfigError, match="--overwrite"):
        _build(frames, out, other)
    report = _build(frames, out, other, overwrite=True)
    assert json.loads((out / schema.WORK_DIR / schema.BUILD_STATE).read_text())["config"]["seed"] == 1
    assert report["counts"]["candidates"] == 3 * SMOKE.sampling.patches_per_frame


def test_bad_out_is_refused_before_any_work(frames, tmp_path):
    with pytest.raises(ConfigError, match="inside --src"):
        _build(frames, frames / "out.zarr")
    assert not (frames / "out.zarr").exists()
    foreign = tmp_path / "foreign"
    foreign.mkdir()
    (foreign / "notes.txt").write_text("mine")
    with pytest.raises(ConfigError, match="not an hdrprep store"):
        _build(frames, foreign)
    assert sorted(os.listdir(foreign)) == ["notes.txt"]
    with pytest.raises(ConfigError, match="no .exr or .hdr"):
        _build(tmp_path / "foreign", tmp_path / "o.zarr")


def test_dry_run_writes_nothing(frames, tmp_path):
    plan = _build(frames, tmp_path / "s.zarr", dry_run=True)
    assert plan["frames"] == ["sub/synth_000.exr", "synth_000.exr", "synth_001.exr"]
    assert not (tmp_path / "s.zarr").exists()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.cluster
def test_real_dask_scheduler_and_workers(frames, reference, tmp_path):
    from distributed import Client

    port = _free_port()
    addr = f"tcp://127.0.0.1:{port}"
    bindir = Path(sys.executable).parent
    env = dict(os.environ, NUMBA_NUM_THREADS="1", OMP_NUM_THREADS="1")
    procs = [subprocess.Popen([bindir / "dask", "scheduler", "--host", "127.0.0.1", "--port", str(port),
                               "--no-dashboard"], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)]
    try:
        time.sleep(1)
        procs += [subprocess.Popen([bindir / "dask", "worker", addr, "--nthreads", "1", "--no-dashboard",
                                    "--local-directory", str(tmp_path / f"w{i}")], env=env,
                                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL) for i in range(2)]
        with Client(addr, timeout=30) as client:
            client.wait_for_workers(2, timeout=60)
        out = tmp_path / "s.zarr"
        _build(frames, out, scheduler=addr)
        _assert_same(_contents(reference[0]), _contents(out))
    finally:
        for p in reversed(procs):
            p.terminate()
        for p in procs:
            p.wait(timeout=30)


@pytest.mark.slow
def test_build_on_real_fixtures(hdr_dir, tmp_path):
    """The real fixture folder builds at 512x512; frames that cannot hold a window are reported."""
    from hdrprep import io

    config = Config().override(**{"sampling.patches_per_frame": 3, "select.threshold": 0.0})
    out = tmp_path / "s.zarr"
    report = _build(hdr_dir, out, config, workers=2, scheduler=None)
    too_small = set()
    for p in sorted(hdr_dir.iterdir()):
        if p.suffix.lower() in (".exr", ".hdr"):
            info = io.probe(p)
            if min(info.width, info.height) < 512:
                too_small.add(p.name)
    skipped = {s["source"]: s["reason"] for s in report["skipped"]}
    assert {k for k, r in skipped.items() if r == "too-small"} == too_small
    assert report["counts"]["frames_read"] == report["counts"]["frames"] - len(skipped)
    st = store.open_store(out)
    group, index = st.group, st.index
    assert group["ldr"].shape[0] == index.num_rows == report["counts"]["kept"] > 0


@pytest.mark.parametrize("keep_all", [False, True])
def test_index_score_is_algorithm_1_on_the_stored_pair(reference, frames, tmp_path, keep_all):
    """An independent check: the OpenCV oracle on the stored HDR and the stored LDR's mask gives `score`.

    Threshold builds prescreen most candidates; keep-all builds render and score every one.
    """
    from test_metric import oracle_gradient, oracle_score

    out, _ = reference
    if keep_all:
        out = tmp_path / "all.zarr"
        _build(frames, out, SMOKE.override(**{"select.keep_all": True}), workers=2, scheduler=None)
    group = zarr.open_group(str(out), mode="r")
    index = pq.read_table(out / schema.INDEX_NAME).to_pylist()
    table = pq.read_table(out / schema.CANDIDATES_NAME)
    assert all(row["rendered"] for row in index)
    if keep_all:
        assert len(index) == table.num_rows
        assert table["score"].to_pylist() == [row["score"] for row in index]
    for row in index:
        hdr = group["hdr"][row["pair"]].astype(np.float32)
        weights = 1 - camera.soft_mask(group["ldr"][row["pair"]], SMOKE.camera.mask_alpha)
        expected = oracle_score(oracle_gradient(hdr), weights, SMOKE.metric.normalisation)
        # float16 storage of the HDR changes log(I + 1) by < 5e-4 relative
        assert row["score"] == pytest.approx(expected, rel=2e-3), row["pair"]


def test_a_frame_changed_after_scoring_is_refused(frames, reference, tmp_path):
    """Stage 3 re-reads frames: one edited since stage 1 must not give pairs that disagree with their scores."""
    from hdrprep import synth
    from hdrprep.errors import StoreError

    src = tmp_path / "src"
    shutil.copytree(frames, src)
    out = tmp_path / "s.zarr"
    shutil.copytree(reference[0], out)
    for marker in (out / schema.WORK_DIR / "shards").glob("*.json"):
        marker.unlink()  # stage 3 must run again
    synth.write_frames(src, n=1, seed=99, height=256, width=384)  # overwrites synth_000.exr
    with pytest.raises(StoreError, match="changed since it was scored"):
        _build(src, out)


def test_each_pair_is_rendered_once_and_the_stage_3_fallback_is_identical(frames, reference, tmp_path, monkeypatch):
    """Stage 1 encodes the pairs it keeps; stage 3 writes them without rendering again.

    Without those encoded pairs (a mode that ranks, or files gone) stage 3 renders
    them itself: the store must be the same bytes either way.
    """
    calls = []
    real = candidates.render_pair
    monkeypatch.setattr(candidates, "render_pair", lambda *a, **kw: calls.append(a[1:3]) or real(*a, **kw))
    out = tmp_path / "once.zarr"
    _build(frames, out)
    rendered = pq.read_table(out / schema.CANDIDATES_NAME)["rendered"].to_pylist()
    assert len(calls) == sum(rendered)  # stage 1's renders only
    assert not (out / schema.WORK_DIR / "pairs").exists()  # freed once the store is complete
    _assert_same(_contents(reference[0]), _contents(out))

    calls.clear()
    monkeypatch.setattr(build, "_read_stash", lambda out, row: None)
    out = tmp_path / "twice.zarr"
    _build(frames, out)
    assert len(calls) == sum(rendered) + reference[1]["counts"]["kept"]
    _assert_same(_contents(reference[0]), _contents(out))


@pytest.mark.skipif(not platform.libc_ver()[0] == "glibc", reason="mallopt thresholds are glibc's")
def test_workers_keep_freed_memory_for_reuse():
    """Dask's nanny sets MALLOC_TRIM_THRESHOLD_; each task resets glibc so window-sized arrays are reused."""
    assert build._keep_freed_memory() is True


def test_read_stash_gives_the_frames_or_none_for_a_missing_or_short_file(tmp_path):
    row = dict(source="a/b.exr", stash_offset=3, stash_ldr=4, stash_hdr=5)
    path = tmp_path / schema.WORK_DIR / "pairs" / f"{build._frame_id(row['source'])}.bin"
    assert build._read_stash(tmp_path, row) is None  # no file: stage 3 renders the pair
    path.parent.mkdir(parents=True)
    path.write_bytes(b"xxxLLLLHHHHHyy")
    assert build._read_stash(tmp_path, row) == (b"LLLL", b"HHHHH")
    assert build._read_stash(tmp_path, dict(row, stash_offset=-1)) is None  # not encoded in stage 1
    path.write_bytes(b"xxxLLLLHH")  # cut short: render again rather than write a damaged shard
    assert build._read_stash(tmp_path, row) is None


def test_first_run_says_kernels_compile_and_shows_the_dashboard(frames, tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("NUMBA_CACHE_DIR", str(tmp_path / "empty-cache"))
    assert not build._kernels_cached()
    monkeypatch.setenv("NUMBA_CACHE_DIR", str(Path(build.__file__).parent / "__pycache__"))
    assert build._kernels_cached()  # this machine's tests have compiled them
    monkeypatch.setattr(build, "_kernels_cached", lambda: False)
    _build(frames, tmp_path / "a.zarr", progress=True)
    assert "compiling hdrprep's Numba kernels" in capsys.readouterr().err
    monkeypatch.setattr(build, "_kernels_cached", lambda: True)
    _build(frames, tmp_path / "b.zarr", progress=True, workers=1, scheduler=None)
    err = capsys.readouterr().err
    assert "compiling" not in err and "Dask dashboard: http://" in err


def test_per_frame_rules_are_decided_in_stage_1(frames, tmp_path, monkeypatch):
    """max_overlap and per_frame_cap look at one frame: stage 1 keeps its pairs, stage 3 renders none, and the
    bytes equal those of stage 3 rendering every pair; no two kept windows of a frame overlap more than allowed."""
    from hdrprep.selection import iou

    config = SMOKE.override(**{"select.max_overlap": 0.3, "select.per_frame_cap": 4})
    calls = []
    real = candidates.render_pair
    monkeypatch.setattr(candidates, "render_pair", lambda *a, **kw: calls.append(a[1:3]) or real(*a, **kw))
    out = tmp_path / "stage1.zarr"
    _build(frames, out, config)
    rendered = pq.read_table(out / schema.CANDIDATES_NAME)["rendered"].to_pylist()
    assert len(calls) == sum(rendered)  # stage 1's renders only
    index = pq.read_table(out / schema.INDEX_NAME).to_pylist()
    by_frame: dict = {}
    for r in index:
        by_frame.setdefault(r["source"], []).append((r["row"], r["col"], r["size"], r["size"]))
    assert index and all(len(b) <= 4 for b in by_frame.values())
    assert all(iou(a, [b]).max() <= 0.3 for boxes in by_frame.values() for i, a in enumerate(boxes)
               for b in boxes[i + 1:])
    monkeypatch.setattr(build, "_read_stash", lambda out, row: None)
    again = tmp_path / "stage3.zarr"
    _build(frames, again, config)
    _assert_same(_contents(out), _contents(again))
    assert verify(out) == []
