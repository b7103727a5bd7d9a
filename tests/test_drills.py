"""Reliability drills (issue 7): bad input, killed workers, killed builds, bad use, disk full.

Each drill compares against an undisturbed build of the same frames: a drill
passes only if the disturbed build ends byte-identical to it. Kills happen at
named points (``hdrprep.files.pause_point``, enabled by ``$HDRPREP_PAUSE_AT``):
the build announces the point on stderr and sleeps there until the test kills it.
"""

from __future__ import annotations

import errno
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
import zarr

from hdrprep import build, files, io, schema, store
from hdrprep.config import load_preset
from hdrprep.errors import StoreError
from hdrprep.verify import verify

SMOKE = load_preset("smoke")
REASONS = {"not-a-file", "unreadable", "truncated", "unsupported-format", "deep", "no-colour-channels",
           "no-such-part", "too-large", "too-small", "nonfinite", "negative", "no-signal"}


@pytest.fixture(scope="module")
def frames(tmp_path_factory) -> Path:
    """Four small generated frames: 38 pairs in 10 shards of the smoke preset (3.2 MB)."""
    from hdrprep import synth

    root = tmp_path_factory.mktemp("frames")
    synth.write_frames(root, n=3, height=256, width=384)
    synth.write_frames(root / "sub", n=1, seed=7, height=300, width=300)
    return root


@pytest.fixture(scope="module")
def reference(frames, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("ref") / "s.zarr"
    build.build(frames, out, SMOKE, scheduler="synchronous", progress=False)
    return out


def _identity(out: Path) -> dict[str, bytes]:
    """Every file that makes up a store (all but report.json, which holds timings, and _work/)."""
    return {p.relative_to(out).as_posix(): p.read_bytes() for p in sorted(out.rglob("*"))
            if p.is_file() and p.relative_to(out).parts[0] not in (schema.WORK_DIR, schema.REPORT_NAME)}


def _assert_identical(out: Path, ref: Path) -> None:
    got, want = _identity(out), _identity(ref)
    assert sorted(got) == sorted(want)
    assert [k for k in want if got[k] != want[k]] == []
    leftovers = [p for p in out.rglob("*") if ".tmp-" in p.name or p.name.endswith(".partial")]
    assert leftovers == [], "temporary files of interrupted writes were left behind"
    assert verify(out) == []


def _n_shards(out: Path) -> int:
    return -(-zarr.open_group(str(out), mode="r")["ldr"].shape[0] // SMOKE.output.pairs_per_shard)


def _cli(*args: str, env: dict | None = None, cwd: Path | None = None, **kw) -> subprocess.Popen:
    env = dict(os.environ, NUMBA_NUM_THREADS="1", **(env or {}))
    return subprocess.Popen([sys.executable, "-m", "hdrprep", *args], env=env, cwd=cwd, **kw)


def _wait_for(path: Path, text: str, proc: subprocess.Popen | None = None, timeout: float = 120) -> None:
    t0 = time.monotonic()
    while text not in (path.read_text() if path.is_file() else ""):
        if proc is not None and proc.poll() is not None:
            raise AssertionError(f"process ended (rc {proc.returncode}) before {text!r}:\n{path.read_text()}")
        if time.monotonic() - t0 > timeout:
            raise AssertionError(f"no {text!r} after {timeout} s:\n{path.read_text()}")
        time.sleep(0.02)


# --------------------------------------------------------------------------- 1. bad input

def _huge_exr(path: Path) -> None:
    """A valid small EXR whose header declares a 100000 x 100000 data window."""
    import struct

    io.write_exr(path, np.ones((64, 64, 3), np.float32))
    data = bytearray(path.read_bytes())
    for name in (b"dataWindow\x00box2i\x00", b"displayWindow\x00box2i\x00"):
        i = data.index(name) + len(name)
        data[i + 4:i + 20] = struct.pack("<4i", 0, 0, 99_999, 99_999)
    path.write_bytes(bytes(data))


def _unreadable(path: Path) -> bool:
    """Make ``path`` a file that exists but cannot be read; False if this machine gives no way."""
    if os.geteuid() != 0:
        path.write_bytes(b"v/1\x01" + bytes(100))
        path.chmod(0)
        return True
    # root reads any mode-000 file; a write-only sysfs attribute refuses reads even to root
    for target in ("/sys/bus/pci/rescan", "/sys/kernel/uevent_helper"):
        try:
            with open(target, "rb") as f:
                f.read(1)
        except OSError:
            if os.path.isfile(target):
                path.symlink_to(target)
                return True
    return False


def _bad_files(root: Path) -> dict[str, str]:
    """Generate the bad files under ``root``; return {relative path: expected reason}."""
    root.mkdir(parents=True)
    rng = np.random.default_rng(3)
    expected = {}
    (root / "zero.exr").write_bytes(b"")
    expected["zero.exr"] = "truncated"
    (root / "random.exr").write_bytes(rng.integers(0, 256, 5000, dtype=np.uint8).tobytes())
    expected["random.exr"] = "unreadable"
    (root / "random.hdr").write_bytes(b"#?RADIANCE\n" + rng.integers(0, 256, 5000, dtype=np.uint8).tobytes())
    expected["random.hdr"] = "unreadable"
    (root / "folder.exr").mkdir()
    (root / "folder.exr" / "notes.txt").write_text("a folder with an image name")
    expected["folder.exr"] = "not-a-file"
    (root / "loop.exr").symlink_to("loop.exr")
    expected["loop.exr"] = "not-a-file"
    (root / "dangling.hdr").symlink_to("no-such-frame.hdr")
    expected["dangling.hdr"] = "not-a-file"
    os.mkfifo(root / "fifo.exr")  # reading would block forever: must be refused, not opened
    expected["fifo.exr"] = "not-a-file"
    _huge_exr(root / "huge.exr")
    expected["huge.exr"] = "too-large"
    io.write_exr(root / "cut.exr", np.ones((256, 256, 3), np.float32), compression="none")
    data = (root / "cut.exr").read_bytes()
    (root / "cut.exr").write_bytes(data[:len(data) // 2])
    expected["cut.exr"] = "truncated"
    nan = np.ones((256, 256, 3), np.float32)
    nan[5, 5] = np.nan
    io.write_exr(root / "nan.exr", nan)
    expected["nan.exr"] = "nonfinite"
    if _unreadable(root / "unreadable.exr"):
        expected["unreadable.exr"] = "unreadable"
    return expected


def test_bad_input_is_reported_and_good_pairs_are_unchanged(frames, reference, edge_dir, tmp_path):
    messy = tmp_path / "messy"
    shutil.copytree(frames, messy)
    edge = sorted(p.name for p in edge_dir.iterdir() if p.suffix.lower() in io.HDR_SUFFIXES)
    (messy / "edge").mkdir()
    for name in edge:
        shutil.copy(edge_dir / name, messy / "edge" / name)
    expected = {f"bad/{k}": v for k, v in _bad_files(messy / "bad").items()}
    if "bad/unreadable.exr" not in expected:
        pytest.skip("no way to make an unreadable file here (root, and no write-only sysfs file)")

    out = tmp_path / "s.zarr"
    report = build.build(messy, out, SMOKE, scheduler="synchronous", progress=False)

    # every bad file is listed with its reason, in the report and in the store's provenance
    skipped = {s["source"]: s["reason"] for s in report["skipped"]}
    assert {k: skipped.get(k) for k in expected} == expected
    assert all(s["detail"] for s in report["skipped"])
    sources = {s["source"]: s for s in zarr.open_group(str(out), mode="r").attrs[schema.ATTR]["sources"]}
    assert {k: sources[k]["reason"] for k in expected} == expected
    for name in edge:  # each awkward real file is either used or skipped with a known reason
        s = sources[f"edge/{name}"]
        assert (s["status"], s["reason"]) == ("ok", None) or s["reason"] in REASONS, s
    assert set(sources) == set(skipped) | {k for k, s in sources.items() if s["status"] == "ok"}
    assert report["counts"]["frames_skipped"] == len(skipped) >= len(expected) + 5

    # the good frames' pairs are those of a build without the bad files, row for row and bit for bit
    good = {p.relative_to(frames).as_posix() for p in frames.rglob("*.exr")}
    ref_index = pq.read_table(reference / schema.INDEX_NAME).to_pylist()
    index = [r for r in pq.read_table(out / schema.INDEX_NAME).to_pylist() if r["source"] in good]
    def strip(r):
        return {k: v for k, v in r.items() if k not in ("pair", "shard")}

    assert [strip(r) for r in index] == [strip(r) for r in ref_index]
    g, ref = zarr.open_group(str(out), mode="r"), zarr.open_group(str(reference), mode="r")
    pairs = [r["pair"] for r in index]
    np.testing.assert_array_equal(g["ldr"].get_orthogonal_selection(pairs), ref["ldr"][:])
    np.testing.assert_array_equal(g["hdr"].get_orthogonal_selection(pairs).view(np.uint16),
                                  ref["hdr"][:].view(np.uint16))
    assert verify(out) == []
    assert (messy / "bad" / "folder.exr" / "notes.txt").read_text() == "a folder with an image name"


# --------------------------------------------------------------------------- 2. killed worker

def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.cluster
def test_killed_workers_in_stage_1_and_stage_3(frames, reference, tmp_path):
    """kill -9 a worker while it holds a stage-1 task, then another while it writes a shard.

    Worker A pauses after scoring its first frame; worker A2 (started as a nanny
    would restart A) pauses in the middle of its first shard write; B never
    pauses. A and A2 are killed at those points; B alone finishes the build.
    """
    import threading

    from distributed import Client

    port = _free_port()
    addr = f"tcp://127.0.0.1:{port}"
    bindir = Path(sys.executable).parent
    env = dict(os.environ, NUMBA_NUM_THREADS="1", OMP_NUM_THREADS="1")
    procs = {"scheduler": subprocess.Popen([bindir / "dask", "scheduler", "--host", "127.0.0.1", "--port",
                                            str(port), "--no-dashboard"], env=env,
                                           stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)}

    def worker(name: str, pause: str | None) -> Path:
        log = tmp_path / f"{name}.log"
        wenv = dict(env, **({files.PAUSE_ENV: pause} if pause else {}))
        procs[name] = subprocess.Popen([bindir / "dask", "worker", addr, "--nthreads", "1", "--no-dashboard",
                                        "--no-nanny", "--local-directory", str(tmp_path / name)],
                                       env=wenv, stdout=subprocess.DEVNULL, stderr=open(log, "w"))
        return log

    result: dict = {}
    try:
        log_a = worker("A", "scored")
        worker("B", None)
        with Client(addr, timeout=30) as client:
            client.wait_for_workers(2, timeout=60)
            out = tmp_path / "s.zarr"
            runner = threading.Thread(target=lambda: result.update(report=build.build(
                frames, out, SMOKE, scheduler=addr, progress=False)))
            runner.start()
            _wait_for(log_a, "paused at scored", procs["A"])
            log_a2 = worker("A2", "shard-array-written")
            client.wait_for_workers(3, timeout=60)
            stage_1_open = not (out / "zarr.json").exists()  # stage 2 creates the arrays
            procs["A"].kill()
            _wait_for(log_a2, "paused at shard-array-written", procs["A2"])
            n_done = len(list((out / schema.WORK_DIR / "shards").glob("*.json")))
            procs["A2"].kill()
            runner.join(timeout=180)
        assert not runner.is_alive() and "report" in result, "the build did not complete after the kills"
        assert stage_1_open and n_done < _n_shards(reference), "the kills did not land inside the stages"
        _assert_identical(out, reference)
    finally:
        for p in reversed(list(procs.values())):
            p.kill()
            p.wait(timeout=30)


# --------------------------------------------------------------------------- 3. killed build

def _kill_build_at(frames: Path, out: Path, point: str, *extra: str) -> None:
    """Start `hdrprep build`, wait until it pauses at ``point``, SIGKILL its whole process group."""
    log = out.parent / f"build-{point.replace(':', '-')}.log"
    proc = _cli("build", "--src", str(frames), "--out", str(out), "--preset", "smoke", "--quiet", *extra,
                env={files.PAUSE_ENV: point}, stdout=subprocess.DEVNULL, stderr=open(log, "w"),
                start_new_session=True)
    try:
        _wait_for(log, f"paused at {point}", proc)
    finally:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()


def _resume(frames: Path, out: Path, *extra: str) -> dict:
    proc = _cli("build", "--src", str(frames), "--out", str(out), "--preset", "smoke", "--quiet", *extra,
                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    stderr = proc.communicate(timeout=300)[1]
    assert proc.returncode == 0, stderr
    return json.loads((out / schema.REPORT_NAME).read_text())


@pytest.mark.parametrize("point, expect_tasks", [
    ("scored", dict(frames_scored=3)),  # one of the 4 frames was scored before the kill
    ("shard-array-written", dict(frames_scored=0)),  # killed between a shard's LDR and HDR file
    ("before-rename:index.parquet", dict(frames_scored=0, shards_written=0)),
    ("before-complete", dict(frames_scored=0, shards_written=0)),
])
def test_killed_build_resumes_to_identical_store(frames, reference, tmp_path, point, expect_tasks):
    out = tmp_path / "s.zarr"
    _kill_build_at(frames, out, point, "--scheduler", "synchronous")
    if point.startswith("before-rename:"):
        assert list(out.glob(".index.parquet.tmp-*")) and not (out / schema.INDEX_NAME).exists()
    with pytest.raises(StoreError, match="did not finish"):
        store.open_store(out)
    (problem,) = verify(out)
    assert "did not finish" in problem.what and "resume" in problem.fix

    report = _resume(frames, out, "--scheduler", "synchronous")
    assert {k: report["tasks"][k] for k in expect_tasks} == expect_tasks
    _assert_identical(out, reference)


@pytest.mark.cluster
def test_killed_build_with_local_cluster_resumes(frames, reference, tmp_path):
    """The whole process group (client, nannies, workers) killed while a worker holds a stage-1 task."""
    out = tmp_path / "s.zarr"
    _kill_build_at(frames, out, "scored", "--workers", "2")
    with pytest.raises(StoreError, match="did not finish"):
        store.open_store(out)
    report = _resume(frames, out, "--workers", "2")
    assert report["tasks"]["frames_scored"] < 4
    _assert_identical(out, reference)


def test_killed_rerun_keeps_or_refuses_the_old_store(frames, reference, tmp_path):
    """A finished store being rebuilt with one more frame is never half old, half new."""
    from hdrprep import synth

    src = tmp_path / "src"
    shutil.copytree(frames, src)
    out = tmp_path / "s.zarr"
    shutil.copytree(reference, out)
    synth.write_frames(src / "more", n=1, seed=11, height=256, width=256)
    # killed in stage 1: the old store is still whole and still what its index says
    _kill_build_at(src, out, "scored", "--scheduler", "synchronous")
    assert store.open_store(out).n_pairs == store.open_store(reference).n_pairs
    assert verify(out) == []
    # killed while its arrays are being replaced: refused, not read as finished
    _kill_build_at(src, out, "shard-array-written", "--scheduler", "synchronous")
    with pytest.raises(StoreError, match="did not finish"):
        store.open_store(out)
    _resume(src, out, "--scheduler", "synchronous")
    fresh = tmp_path / "fresh.zarr"
    build.build(src, fresh, SMOKE, scheduler="synchronous", progress=False)
    _assert_identical(out, fresh)


# --------------------------------------------------------------------------- 5. bad use

def _tree(path: Path) -> dict[str, bytes]:
    return {p.relative_to(path).as_posix(): p.read_bytes() if p.is_file() else b"<dir>"
            for p in sorted(path.rglob("*"))}


def _mount_tmpfs(path: Path, options: str) -> bool:
    path.mkdir(parents=True, exist_ok=True)
    if os.geteuid() != 0 or not shutil.which("mount"):
        return False
    return subprocess.run(["mount", "-t", "tmpfs", "-o", options, "tmpfs", str(path)],
                          capture_output=True).returncode == 0


def _umount(path: Path) -> None:
    subprocess.run(["umount", str(path)], check=True)


def test_bad_use_is_refused_before_any_work(frames, tmp_path):
    from click.testing import CliRunner

    from hdrprep import cli

    runner = CliRunner()
    before = _tree(frames)
    foreign = tmp_path / "foreign"
    foreign.mkdir()
    (foreign / "notes.txt").write_text("mine")
    a_file = tmp_path / "a-file"
    a_file.write_text("x")
    base = ["build", "--src", str(frames), "--preset", "smoke", "--quiet"]
    cases = [
        (["--out", str(frames / "s.zarr")], "inside --src"),
        (["--out", str(frames / "sub")], "inside --src"),
        (["--out", str(foreign)], "not an hdrprep store"),
        (["--out", str(a_file)], "not a folder"),
        (["--out", str(a_file / "s.zarr")], "is a file"),
        (["--out", str(tmp_path / "o1.zarr"), "--preset", "no-such-preset"], "unknown preset"),
        (["--out", str(tmp_path / "o2.zarr"), "--workers", "2", "--scheduler", "tcp://127.0.0.1:1"], "--workers"),
        (["--out", str(tmp_path / "o3.zarr"), "--cluster", str(a_file), "--workers", "2"], "--cluster"),
        (["--out", str(tmp_path / "o4.zarr"), "--patch-size", "0"], "patch_size"),
    ]
    for args, message in cases:
        result = runner.invoke(cli.main, base + args)
        assert result.exit_code == 2, (args, result.output)
        assert message in result.output, (args, result.output)
        assert result.exception is None or isinstance(result.exception, SystemExit), (args, result.exception)
    assert _tree(frames) == before
    assert sorted(os.listdir(foreign)) == ["notes.txt"] and a_file.read_text() == "x"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a-file", "foreign"]


def test_dry_run_with_overwrite_deletes_nothing(frames, reference, tmp_path):
    out = tmp_path / "s.zarr"
    shutil.copytree(reference, out)
    build.build(frames, out, SMOKE.override(seed=3), overwrite=True, dry_run=True, progress=False)
    _assert_identical(out, reference)


def test_read_only_out_is_refused(frames, tmp_path):
    from click.testing import CliRunner

    from hdrprep import cli

    ro = tmp_path / "ro"
    if not _mount_tmpfs(ro, "ro,size=1m"):
        if os.geteuid() == 0:
            pytest.skip("cannot mount a read-only tmpfs here and root ignores folder permissions")
        ro.chmod(0o555)
    try:
        for out in (ro, ro / "s.zarr"):
            result = CliRunner().invoke(cli.main, ["build", "--src", str(frames), "--out", str(out), "--preset",
                                                   "smoke", "--quiet", "--scheduler", "synchronous"])
            assert result.exit_code == 2 and "cannot write there" in result.output, result.output
            assert os.listdir(ro) == []
    finally:
        if os.path.ismount(ro):
            _umount(ro)


@pytest.mark.cluster
def test_nothing_is_written_outside_out(frames, reference, tmp_path):
    """A local-cluster build touches neither --src, the working folder, $TMPDIR nor $HOME."""
    cwd, tmp, home = (tmp_path / d for d in ("cwd", "tmp", "home"))
    for d in (cwd, tmp, home):
        d.mkdir()
    before = _tree(frames)
    out = tmp_path / "s.zarr"
    proc = _cli("build", "--src", str(frames), "--out", str(out), "--preset", "smoke", "--quiet", "--workers", "2",
                env=dict(TMPDIR=str(tmp), HOME=str(home)), cwd=cwd, stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT, text=True)
    output = proc.communicate(timeout=300)[0]
    assert proc.returncode == 0, output
    assert (os.listdir(cwd), os.listdir(tmp), os.listdir(home)) == ([], [], [])
    assert _tree(frames) == before
    _assert_identical(out, reference)


def test_yaml_and_checkpoints_load_safely():
    """No yaml.load without a safe loader, no torch.load without weights_only=True, anywhere in hdrprep."""
    import re

    package = Path(build.__file__).parent
    for path in package.rglob("*.py"):
        text = path.read_text()
        for m in re.finditer(r"yaml\.(load|unsafe_load|full_load)\(", text):
            line = text[m.start():text.index("\n", m.start())]
            assert "SafeLoader" in line or "CSafeLoader" in line, f"{path}: {line}"
        for m in re.finditer(r"torch\.load\(", text):
            call = text[m.start():m.start() + 200]  # the call and its arguments
            assert "weights_only=True" in call.split("\n\n")[0], f"{path}: {call}"


# --------------------------------------------------------------------------- 6. disk full

class _Quota:
    """Simulated disk: writes under --out fail with ENOSPC once ``budget`` bytes are used."""

    def __init__(self, budget: int):
        self.budget = budget
        self.hits = 0

    def take(self, path, n: int) -> None:
        if n > self.budget:
            self.hits += 1
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(path))
        self.budget -= n


def _patch_writers(monkeypatch, quota: _Quota) -> None:
    """Route both writers of the build (our atomic writes and zarr's) through ``quota``."""
    import zarr.storage._local as zlocal

    real_atomic, real_put = files.atomic_write_bytes, zlocal._put

    def atomic(path, data):
        quota.take(path, len(data))
        real_atomic(path, data)

    def put(path, value, exclusive=False):
        quota.take(path, len(value.as_buffer_like()))
        return real_put(path, value, exclusive)

    monkeypatch.setattr(files, "atomic_write_bytes", atomic)
    monkeypatch.setattr(zlocal, "_put", put)


class _Log(_Quota):
    """A quota that never runs out and records every write: (path relative to --out, bytes)."""

    def __init__(self, root: Path):
        super().__init__(float("inf"))
        self.root, self.writes = root, []

    def take(self, path, n: int) -> None:
        self.writes.append((Path(path).relative_to(self.root).as_posix(), n))


@pytest.fixture(scope="module")
def write_log(frames, tmp_path_factory) -> list[tuple[str, int]]:
    """The writes of an undisturbed smoke build, in order."""
    out = tmp_path_factory.mktemp("log") / "s.zarr"
    log = _Log(out)
    with pytest.MonkeyPatch.context() as mp:
        _patch_writers(mp, log)
        build.build(frames, out, SMOKE, scheduler="synchronous", progress=False)
    return log.writes


# which write runs out of space: the first that matches, or the last with "last:"
_DISK_FULL_AT = {"stage-1": "last:_work/candidates/", "stage-1-pairs": "last:_work/pairs/",
                 "stage-3-early": "ldr/c/", "stage-3-late": "last:hdr/c/", "index": "index.parquet",
                 "complete-flag": "last:zarr.json"}


@pytest.mark.parametrize("point", list(_DISK_FULL_AT))
def test_disk_full_stops_clearly_and_resumes(frames, reference, write_log, tmp_path, monkeypatch, point):
    """ENOSPC injected into both writers of the build, at the write named by ``point``."""
    target = _DISK_FULL_AT[point]
    last = target.startswith("last:")
    target = target.removeprefix("last:")
    hits = [i for i, (path, _) in enumerate(write_log) if path.startswith(target) or path.endswith(target)]
    assert hits, f"no write to {target} in {write_log}"
    k = hits[-1] if last else hits[0]
    # enough space for every write before k, and one byte short for write k
    budget = sum(n for _, n in write_log[:k]) + write_log[k][1] - 1
    quota = _Quota(budget)
    _patch_writers(monkeypatch, quota)
    out = tmp_path / "s.zarr"
    with pytest.raises(StoreError, match="no space left") as info:
        build.build(frames, out, SMOKE, scheduler="synchronous", progress=False)
    assert f"--out {out}" in str(info.value) and "rerun the same command" in str(info.value)
    assert quota.hits == 1
    with pytest.raises(StoreError):
        store.open_store(out)
    monkeypatch.undo()  # space freed
    report = build.build(frames, out, SMOKE, scheduler="synchronous", progress=False)
    assert report["tasks"]["frames_scored"] < 4 or report["tasks"]["shards_written"] < _n_shards(reference)
    _assert_identical(out, reference)


def test_disk_full_on_a_real_small_filesystem(frames, reference, tmp_path):
    """A 1 MiB tmpfs as --out's device: the CLI stops with the message; after growing it, a rerun completes."""
    disk = tmp_path / "disk"
    if not _mount_tmpfs(disk, "size=1m"):
        pytest.skip("cannot mount a tmpfs here (needs root and mount); the ENOSPC-injection drill covers the logic")
    try:
        out = disk / "s.zarr"
        proc = _cli("build", "--src", str(frames), "--out", str(out), "--preset", "smoke", "--quiet",
                    "--scheduler", "synchronous", stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        stderr = proc.communicate(timeout=300)[1]
        assert proc.returncode == 2, stderr
        assert f"error: --out {out}: no space left on the device" in stderr and "Traceback" not in stderr
        subprocess.run(["mount", "-o", "remount,size=64m", str(disk)], check=True)
        report = _resume(frames, out, "--scheduler", "synchronous")
        # 1 MiB fills up in stage 1 (the encoded pairs): what was scored before is not redone
        assert report["tasks"]["frames_scored"] < 4
        _assert_identical(out, reference)
    finally:
        _umount(disk)
