"""The batch-cluster path: cluster presets, dask-jobqueue on a real SLURM, the sbatch job script.

The ``slurm`` tests need a running one-node SLURM (``sudo bash .ci/slurm-up.sh``) and skip
with the reason otherwise; the preset validation tests run everywhere.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from hdrprep.cluster import batch_cluster, load_cluster_spec
from hdrprep.errors import ConfigError, HdrprepError

REPO = Path(__file__).resolve().parent.parent
PRESET = REPO / "pipelines" / "cluster-slurm.yaml"
JOB_SCRIPT = REPO / "pipelines" / "slurm-build.sh"
BUILD_ARGS = ["--preset", "smoke", "--limit-frames", "2", "--quiet"]


def _slurm_problem() -> str | None:
    """Why the SLURM tests cannot run here, or None."""
    if shutil.which("sinfo") is None or shutil.which("sbatch") is None:
        return "SLURM not installed (no sinfo/sbatch); run `sudo bash .ci/slurm-up.sh`"
    try:
        r = subprocess.run(["sinfo", "-h", "-o", "%t"], capture_output=True, text=True, timeout=20)
    except subprocess.TimeoutExpired:
        return "sinfo does not answer within 20 s; is slurmctld running? (`bash .ci/slurm-up.sh`)"
    states = r.stdout.split()
    if r.returncode != 0 or not any(s in ("idle", "mix") for s in states):
        return f"no idle SLURM node (sinfo: {(r.stdout + r.stderr).strip() or 'nothing'}); run `bash .ci/slurm-up.sh`"
    return None


_PROBLEM = _slurm_problem()
needs_slurm = [pytest.mark.slurm, pytest.mark.skipif(_PROBLEM is not None, reason=str(_PROBLEM))]


def slurm_test(fn):
    for mark in needs_slurm:
        fn = mark(fn)
    return fn


def _queued(job_ids) -> dict[str, str]:
    """State of those of ``job_ids`` that SLURM still lists (pending, running, completing)."""
    r = subprocess.run(["squeue", "-h", "-o", "%i %T"], capture_output=True, text=True, timeout=20, check=True)
    rows = dict(line.split() for line in r.stdout.splitlines() if line.strip())
    return {j: rows[j] for j in map(str, job_ids) if j in rows}


def _worker_jobs() -> list[str]:
    """Ids of the queued jobs named like hdrprep's workers."""
    r = subprocess.run(["squeue", "-h", "-n", "hdrprep-worker", "-o", "%i"], capture_output=True, text=True,
                       timeout=20, check=True)
    return r.stdout.split()


def _wait_gone(job_ids, timeout=30.0) -> dict[str, str]:
    deadline = time.monotonic() + timeout
    while (left := _queued(job_ids)) and time.monotonic() < deadline:
        time.sleep(0.5)
    return left


def _preset(tmp_path: Path, **changes) -> Path:
    data = yaml.safe_load(PRESET.read_text())
    data.update(changes)
    data = {k: v for k, v in data.items() if v is not None}
    path = tmp_path / "cluster.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


# --------------------------------------------------------------------------- preset validation


def test_shipped_preset_is_valid():
    spec = load_cluster_spec(PRESET)
    assert (spec.kind, spec.jobs, spec.cores, spec.n_workers) == ("slurm", 2, 1, 2)
    assert spec.scheduler_host == "127.0.0.1"


@pytest.mark.parametrize("changes, words", [
    ({"kind": "lsf"}, ["kind", "'lsf'", "slurm, pbs"]),
    ({"jobs": 0}, ["jobs", "0", ">= 1"]),
    ({"cores": "4"}, ["cores", "'4'", "whole number"]),
    ({"processes": 2}, ["processes", "must equal cores"]),
    ({"memory": "lots"}, ["memory", "'lots'", "16GB"]),
    ({"memory": "100MB"}, ["memory", "MB per worker", "1GB per core"]),
    ({"walltime": 3600}, ["walltime", "3600", "HH:MM:SS"]),
    ({"partition": "gpu"}, ["unknown key 'partition'", "use 'queue'"]),
    ({"colour": "red"}, ["unknown key 'colour'", "known keys"]),
    ({"walltime": None}, ["missing required key 'walltime'"]),
    ({"job_script_prologue": "module load x"}, ["job_script_prologue", "list of strings"]),
    ({"startup_timeout": -1}, ["startup_timeout", "-1"]),
    ({"interface": "ib0"}, ["scheduler_host", "interface", "not both"]),
    ({"queue": ""}, ["queue", "non-empty string"]),
])
def test_bad_preset_is_refused_with_key_and_fix(tmp_path, changes, words):
    path = _preset(tmp_path, **changes)
    with pytest.raises(ConfigError) as err:
        load_cluster_spec(path)
    msg = str(err.value)
    assert str(path) in msg
    for w in words:
        assert w in msg


def test_preset_that_is_not_a_mapping(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("- slurm\n")
    with pytest.raises(ConfigError, match="expected a mapping"):
        load_cluster_spec(path)
    path.write_text("kind: [unclosed\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_cluster_spec(path)


def test_yaml_is_loaded_safely(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("!!python/object/apply:os.system ['true']\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_cluster_spec(path)


# --------------------------------------------------------------------------- cluster machinery


@slurm_test
def test_jobqueue_workers_run_as_slurm_jobs_and_are_cancelled(tmp_path, monkeypatch):
    pytest.importorskip("dask_jobqueue", reason="dask-jobqueue missing: pip install 'hdrprep[jobqueue]'")
    from distributed import Client

    monkeypatch.chdir(tmp_path)  # sbatch writes the jobs' slurm-<id>.out here
    with batch_cluster(PRESET) as cluster:
        script = cluster.job_script()
        for line in ("export NUMBA_NUM_THREADS=1", "export OMP_NUM_THREADS=1", "--nthreads 1"):
            assert line in script
        job_ids = [str(job.job_id) for job in cluster.workers.values()]
        assert len(job_ids) == 2
        assert set(_queued(job_ids).values()) == {"RUNNING"}
        with Client(cluster) as client:
            info = client.run(lambda: (os.environ.get("SLURM_JOB_ID"), os.environ.get("NUMBA_NUM_THREADS")))
            assert sorted(v[0] for v in info.values()) == sorted(job_ids)
            assert {v[1] for v in info.values()} == {"1"}
            assert {w["nthreads"] for w in client.scheduler_info()["workers"].values()} == {1}
            squares = client.gather(client.map(lambda i: i * i, range(20)))
            assert squares == [i * i for i in range(20)]
    assert _wait_gone(job_ids) == {}, "worker jobs left in the queue after the cluster closed"


@slurm_test
def test_workers_that_cannot_start_time_out_with_queue_state(tmp_path, monkeypatch):
    pytest.importorskip("dask_jobqueue", reason="dask-jobqueue missing: pip install 'hdrprep[jobqueue]'")
    monkeypatch.chdir(tmp_path)
    cpus = int(subprocess.run(["sinfo", "-h", "-o", "%c"], capture_output=True, text=True).stdout.split()[0])
    # one job more than the node has cores: it stays PENDING for resources
    path = _preset(tmp_path, jobs=cpus + 1, memory="1GB", startup_timeout=4)
    t0 = time.monotonic()
    with pytest.raises(HdrprepError) as err:
        with batch_cluster(path):
            pytest.fail("the cluster should not have started")
    msg = str(err.value)
    assert f"of {cpus + 1} workers connected" in msg
    assert "squeue" in msg and "PENDING" in msg and "sinfo" in msg
    assert time.monotonic() - t0 < 60
    assert _wait_gone(_worker_jobs()) == {}, "worker jobs left in the queue after the failed start"


@slurm_test
def test_job_slurm_would_reject_fails_before_waiting(tmp_path, monkeypatch):
    pytest.importorskip("dask_jobqueue", reason="dask-jobqueue missing: pip install 'hdrprep[jobqueue]'")
    monkeypatch.chdir(tmp_path)
    path = _preset(tmp_path, queue="no-such-partition", startup_timeout=300)
    t0 = time.monotonic()
    with pytest.raises(ConfigError, match="no-such-partition") as err:
        with batch_cluster(path):
            pytest.fail("the cluster should not have started")
    assert "queue" in str(err.value) and time.monotonic() - t0 < 30
    assert _worker_jobs() == []


# --------------------------------------------------------------------------- end to end


def _cli(args, cwd: Path, timeout: float = 300) -> subprocess.CompletedProcess:
    env = dict(os.environ, NUMBA_NUM_THREADS="1")
    r = subprocess.run([sys.executable, "-m", "hdrprep", *map(str, args)], cwd=cwd, env=env,
                       capture_output=True, text=True, timeout=timeout)
    assert r.returncode == 0, f"hdrprep {' '.join(map(str, args))} failed:\n{r.stdout}\n{r.stderr}"
    return r


def _assert_same_store(ref: Path, other: Path) -> None:
    """Byte-identical index, candidate table and arrays, and the same provenance counts."""
    import pyarrow.parquet as pq
    import zarr

    for name in ("index.parquet", "candidates.parquet"):
        assert (other / name).read_bytes() == (ref / name).read_bytes(), f"{name} differs from the local build"
    assert pq.read_table(ref / "index.parquet").num_rows > 0, "the reference build kept no pairs: weak test"
    a, b = zarr.open_group(ref, mode="r"), zarr.open_group(other, mode="r")
    for name in ("ldr", "hdr"):
        x, y = a[name][...], b[name][...]
        assert (x.dtype, x.shape) == (y.dtype, y.shape)
        assert x.tobytes() == y.tobytes(), f"array {name} differs from the local build"
    pa, pb = a.attrs["hdrprep"], b.attrs["hdrprep"]
    assert pb["complete"] is True
    for key in ("config", "sources", "counts", "seed"):
        assert pb[key] == pa[key], f"attribute hdrprep.{key} differs from the local build"


@pytest.fixture(scope="module")
def frames(tmp_path_factory) -> Path:
    from hdrprep import synth

    folder = tmp_path_factory.mktemp("frames")
    synth.write_frames(folder, n=2, height=256, width=384)
    return folder


@pytest.fixture(scope="module")
def local_store(frames, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("local") / "s.zarr"
    _cli(["build", "--src", frames, "--out", out, *BUILD_ARGS, "--scheduler", "synchronous"], cwd=out.parent)
    return out


@slurm_test
def test_jobqueue_preset_builds_the_local_store(frames, local_store, tmp_path):
    pytest.importorskip("dask_jobqueue", reason="dask-jobqueue missing: pip install 'hdrprep[jobqueue]'")
    out = tmp_path / "s.zarr"
    r = _cli(["build", "--src", frames, "--out", out, *BUILD_ARGS, "--cluster", PRESET], cwd=tmp_path)
    assert "kept pairs" in r.stdout
    # the work ran on the SLURM jobs' workers: each job's output shows its worker registering
    logs = sorted(tmp_path.glob("slurm-*.out"))
    assert len(logs) == 2 and all("Registered to:" in p.read_text() for p in logs)
    _assert_same_store(local_store, out)
    assert _wait_gone([p.stem.split("-")[1] for p in logs]) == {}


def _sbatch_wait(tmp_path: Path, export: str, *args: str, timeout: float = 300) -> tuple[int, str]:
    """Submit the job script, wait for it; (exit code, job output)."""
    name = f"hdrprep-test-{tmp_path.name}"
    cpus = min(2, int(subprocess.run(["sinfo", "-h", "-o", "%c"], capture_output=True, text=True).stdout.split()[0]))
    cmd = ["sbatch", "--wait", "--parsable", f"--job-name={name}", f"--output={tmp_path}/job-%j.out",
           f"--cpus-per-task={cpus}", "--mem=4G", "--time=00:10:00", f"--export=ALL,{export}", str(JOB_SCRIPT), *args]
    try:
        r = subprocess.run(cmd, cwd=tmp_path, capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        subprocess.run(["scancel", f"--name={name}"], timeout=20)
        pytest.fail(f"sbatch --wait did not return in {timeout} s; job cancelled ({' '.join(cmd)})")
    logs = list(tmp_path.glob("job-*.out"))
    assert len(logs) == 1, f"no job output: {r.stdout} {r.stderr}"
    return r.returncode, logs[0].read_text()


@slurm_test
def test_batch_job_script_builds_the_local_store(frames, local_store, tmp_path):
    out = tmp_path / "s.zarr"
    export = f"SRC={frames},OUT={out},PRESET=smoke"
    if (Path(sys.prefix) / "bin" / "activate").is_file():
        export += f",VENV={sys.prefix}"
    rc, log = _sbatch_wait(tmp_path, export, "--limit-frames", "2")
    assert rc == 0, log
    assert "slurm-build: exit code 0" in log and "kept pairs" in log and f"store: {out}" in log
    _assert_same_store(local_store, out)


@slurm_test
def test_batch_job_script_reports_a_bad_venv(tmp_path):
    rc, log = _sbatch_wait(tmp_path, f"VENV={tmp_path / 'no-venv'}", timeout=120)
    assert rc == 2
    assert f"VENV={tmp_path / 'no-venv'} has no bin/activate" in log
