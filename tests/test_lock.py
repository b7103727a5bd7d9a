"""One build per store: real concurrent `hdrprep build` processes on one --out, and the lock itself."""

import json
import multiprocessing as mp
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
from test_drills import SMOKE, _assert_identical, _cli, _wait_for

from hdrprep import build, files, lock
from hdrprep.errors import ConfigError


@pytest.fixture(scope="module")
def frames(tmp_path_factory) -> Path:
    from hdrprep import synth

    root = tmp_path_factory.mktemp("lock-frames")
    synth.write_frames(root, n=2, height=256, width=320)
    return root


@pytest.fixture(scope="module")
def seed0(frames, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("seed0") / "s.zarr"
    build.build(frames, out, SMOKE, scheduler="synchronous", progress=False)
    return out


@pytest.fixture(scope="module")
def seed1(frames, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("seed1") / "s.zarr"
    build.build(frames, out, SMOKE.override(seed=1), scheduler="synchronous", progress=False)
    return out


def _start(frames: Path, out: Path, *extra: str, pause: str | None = None) -> tuple[subprocess.Popen, Path]:
    log = out.parent / f"build-{time.monotonic_ns()}.log"
    proc = _cli("build", "--src", str(frames), "--out", str(out), "--preset", "smoke", "--quiet",
                "--scheduler", "synchronous", *extra, env={files.PAUSE_ENV: pause} if pause else None,
                stdout=subprocess.DEVNULL, stderr=open(log, "w"), start_new_session=True)
    return proc, log


def _run(frames: Path, out: Path, *extra: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "hdrprep", "build", "--src", str(frames), "--out", str(out), "--preset", "smoke",
         "--quiet", "--scheduler", "synchronous", *extra],
        env=dict(os.environ, NUMBA_NUM_THREADS="1"), capture_output=True, text=True, timeout=300)


def _snapshot(out: Path) -> dict:
    return {p.relative_to(out).as_posix(): (p.stat().st_mtime_ns, p.stat().st_size)
            for p in out.rglob("*") if p.is_file() and p.name != lock.LOCK_NAME}


def _assert_refused(result: subprocess.CompletedProcess, holder: subprocess.Popen) -> None:
    assert result.returncode == 2, result.stderr
    assert "locked by another build" in result.stderr
    assert f"host {socket.gethostname()}" in result.stderr and f"process {holder.pid}" in result.stderr
    assert "started 20" in result.stderr  # the holder's start time, ISO 8601


@pytest.mark.parametrize("second", [(), ("--overwrite", "--seed", "1")])
def test_second_build_is_refused_and_a_killed_holder_is_taken_over(frames, seed0, tmp_path, second):
    """A holds the store (paused in stage 1); B, with or without --overwrite, is refused and changes nothing.

    A is then killed: its lock is stale (its process is gone) and the same command, rerun, takes it over
    and ends with the store an undisturbed build makes.
    """
    out = tmp_path / "s.zarr"
    a, log = _start(frames, out, pause="scored")
    try:
        _wait_for(log, "paused at scored", a)
        before = _snapshot(out)
        t0 = time.monotonic()
        _assert_refused(_run(frames, out, *second), a)
        assert time.monotonic() - t0 < 60  # refused at once, not after a build's worth of work
        assert _snapshot(out) == before
    finally:
        os.killpg(a.pid, signal.SIGKILL)
        a.wait()
    assert (out / lock.LOCK_NAME).is_file()  # a killed build leaves its lock ...
    result = _run(frames, out)  # ... which the next build takes over
    assert result.returncode == 0, result.stderr
    assert not (out / lock.LOCK_NAME).exists()
    _assert_identical(out, seed0)


@pytest.mark.parametrize("first_overwrites", [True, False])
def test_the_holder_survives_and_its_store_is_what_it_builds(frames, seed0, seed1, tmp_path, first_overwrites):
    """Two builds of different seeds into one store, either one first; the first one stopped (SIGSTOP) while
    the second tries. The second is refused; the first, continued, ends byte-identical to an undisturbed build
    of its own configuration."""
    out = tmp_path / "s.zarr"
    shutil.copytree(seed0, out)  # a finished store of seed 0 is there already
    first = ("--overwrite", "--seed", "1") if first_overwrites else ()
    second = () if first_overwrites else ("--overwrite", "--seed", "1")
    a, log = _start(frames, out, *first)
    try:
        t0 = time.monotonic()
        while not (out / lock.LOCK_NAME).is_file():
            assert a.poll() is None, log.read_text()
            assert time.monotonic() - t0 < 60
            time.sleep(0.005)
        os.killpg(a.pid, signal.SIGSTOP)
        _assert_refused(_run(frames, out, *second), a)
        os.killpg(a.pid, signal.SIGCONT)
        assert a.wait(timeout=300) == 0, log.read_text()
    finally:
        if a.poll() is None:
            os.killpg(a.pid, signal.SIGKILL)
    _assert_identical(out, seed1 if first_overwrites else seed0)


def test_locks_of_other_hosts_go_stale_by_heartbeat(frames, seed0, tmp_path):
    out = tmp_path / "s.zarr"
    out.mkdir()
    record = {"host": "node-elsewhere", "pid": 4242, "pid_start": 1.0, "started": "2026-01-01T00:00:00+00:00",
              "token": "t"}
    (out / lock.LOCK_NAME).write_text(json.dumps(record))
    with pytest.raises(ConfigError, match="host node-elsewhere, process 4242"):
        build.build(frames, out, SMOKE, scheduler="synchronous", progress=False)
    old = time.time() - lock.STALE_S - 5
    os.utime(out / lock.LOCK_NAME, (old, old))  # no heartbeat for longer than STALE_S
    build.build(frames, out, SMOKE, scheduler="synchronous", progress=False)
    _assert_identical(out, seed0)


def test_a_reused_process_id_does_not_hold_the_lock(tmp_path):
    """Same host, a running process id, but not the process that took the lock (another start time)."""
    record = {"host": socket.gethostname(), "pid": os.getpid(), "pid_start": 12.0, "started": "x", "token": "t"}
    (tmp_path / lock.LOCK_NAME).write_text(json.dumps(record))
    lock.check_free(tmp_path)
    with lock.hold(tmp_path) as me:
        assert lock.read_lock(tmp_path)["token"] == me["token"]
        with pytest.raises(ConfigError, match=f"process {os.getpid()}"):
            lock.check_free(tmp_path)  # now it is held, by this very process
    assert lock.read_lock(tmp_path) is None


def _contend(out: str, start: float, queue) -> None:
    while time.time() < start:
        time.sleep(0.001)
    try:
        with lock.hold(out):
            t0 = time.time()
            time.sleep(0.3)
            queue.put(("held", t0, time.time()))
    except ConfigError:
        queue.put(("refused", 0.0, 0.0))


def test_contending_processes_never_hold_it_together(tmp_path):
    """Six processes take the lock at the same instant, again and again: never two holders at once."""
    ctx = mp.get_context("spawn")
    queue = ctx.Queue()
    results = []
    for _ in range(3):
        start = time.time() + 1.5
        procs = [ctx.Process(target=_contend, args=(str(tmp_path), start, queue)) for _ in range(6)]
        for p in procs:
            p.start()
        for p in procs:
            p.join(60)
        results += [queue.get(timeout=5) for _ in procs]
        assert lock.read_lock(tmp_path) is None
    held = sorted((t0, t1) for kind, t0, t1 in results if kind == "held")
    assert held and len(results) == 18
    assert all(a[1] <= b[0] for a, b in zip(held, held[1:])), held
