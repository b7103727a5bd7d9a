"""Batch-cluster presets: start Dask workers as SLURM (or PBS) jobs with dask-jobqueue.

A preset is a small YAML file (see ``pipelines/cluster-slurm.yaml``)::

    kind: slurm          # or pbs
    jobs: 4              # batch jobs to submit
    cores: 16            # cores per job; one single-threaded worker process per core
    memory: 64GB         # memory per job
    walltime: "02:00:00"

:func:`batch_cluster` validates it, submits the jobs, waits until every worker
has connected and yields the running cluster for ``hdrprep.build.build(...,
cluster=...)``. dask and dask-jobqueue are imported only when a cluster starts.
"""

from __future__ import annotations

import math
import re
import shutil
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from hdrprep._typed import ByteSize, check, context, load, read_yaml, setting
from hdrprep.errors import ConfigError, HdrprepError

__all__ = ["ClusterSpec", "batch_cluster", "load_cluster_spec"]

_WALLTIME = re.compile(r"^(\d+-)?\d{1,3}:\d{2}(:\d{2})?$")
# YAML 1.1 reads an unquoted 2:00:00 as the base-60 number 7200
_WALLTIME_FIX = "write it as HH:MM:SS in quotes, e.g. \"02:00:00\" (unquoted, YAML reads 2:00:00 as the number 7200)"
_WHOLE = "give a whole number >= 1"
_MEMORY_FIX = "give memory per job with a unit, e.g. '16GB'"


@dataclass(frozen=True)
class ClusterSpec:
    """A validated batch-cluster preset (the keys of the YAML file).

    Attributes
    ----------
    kind : {'slurm', 'pbs'}
        Batch system.
    jobs : int
        Number of batch jobs to submit, >= 1.
    cores : int
        Cores per job, >= 1; each job runs ``cores`` worker processes of one thread.
    memory : str
        Memory per job, e.g. ``"16GB"``; split evenly between its worker processes.
    walltime : str
        Job time limit, ``[D-]HH:MM[:SS]``; it must outlast the build.
    queue, account : str or None
        SLURM partition / PBS queue, and the account to charge; None = site default.
    local_directory : str
        Worker scratch folder on the compute node (spill files); ``$TMPDIR`` etc. expand in the job.
    log_directory : str or None
        Where the job's stdout/stderr go; None = the submit folder.
    scheduler_host : str or None
        Address the workers use to reach the scheduler started here; None = this host's
        address on ``interface`` (or its default one).
    interface : str or None
        Network interface for workers and scheduler, e.g. ``"ib0"``.
    python : str or None
        Python on the compute nodes with hdrprep installed; None = this interpreter.
    job_script_prologue : tuple of str
        Extra shell lines run before the worker starts (``module load ...``, ``source venv``).
    job_extra_directives : tuple of str
        Extra ``#SBATCH``/``#PBS`` options, e.g. ``"--constraint=skylake"``.
    startup_timeout : float
        Seconds to wait for all workers to connect before giving up, > 0.
    """

    kind: Literal["slurm", "pbs"]
    jobs: int = setting(min=1, fix=_WHOLE, aliases=("nodes", "n_workers"))
    cores: int = setting(min=1, fix=_WHOLE, aliases=("threads",))
    memory: ByteSize = setting(fix=_MEMORY_FIX, aliases=("mem",))  # noqa: RUF009 - setting() is a field()
    walltime: str = setting(fix=_WALLTIME_FIX, aliases=("time",))
    queue: str | None = setting(None, aliases=("partition",))
    account: str | None = None
    local_directory: str = "/tmp"
    log_directory: str | None = None
    scheduler_host: str | None = None
    interface: str | None = None
    python: str | None = None
    job_script_prologue: tuple[str, ...] = setting((), aliases=("env_extra", "prologue"))
    job_extra_directives: tuple[str, ...] = ()
    startup_timeout: float = 300.0

    def __post_init__(self) -> None:
        from dask.utils import parse_bytes

        per_worker = parse_bytes(self.memory) / self.cores
        check(per_worker >= 256e6, "memory", self.memory, f"that leaves {per_worker / 1e6:.0f} MB per worker "
              f"process; give at least 1GB per core (santos2020 needs about 1GB each)")
        check(bool(_WALLTIME.match(self.walltime)), "walltime", self.walltime, _WALLTIME_FIX)
        check(0 < self.startup_timeout < math.inf, "startup_timeout", self.startup_timeout,
              "give the seconds to wait for the workers, e.g. 300")
        if self.scheduler_host and self.interface:
            raise ConfigError("give 'scheduler_host' or 'interface', not both (the scheduler listens on one of them)")

    @property
    def n_workers(self) -> int:
        """Worker processes in total (one per core of every job)."""
        return self.jobs * self.cores


def load_cluster_spec(path: str | Path) -> ClusterSpec:
    """Read and validate a batch-cluster preset.

    Parameters
    ----------
    path : str or Path
        YAML file with the keys of :class:`ClusterSpec` (``kind``, ``jobs``, ``cores``,
        ``memory``, ``walltime`` required), and optionally dask-jobqueue's ``processes``,
        which must equal ``cores``.

    Returns
    -------
    ClusterSpec

    Raises
    ------
    ConfigError
        Unreadable file, unknown or missing key, or a value of the wrong type or range;
        the message names the file, the key, the value and the fix.
    """
    with context(f"cluster preset {path}: "):
        data = read_yaml(path)
        processes = None
        if isinstance(data, dict):
            data = dict(data)
            if isinstance(data.get("kind"), str):
                data["kind"] = data["kind"].lower()
            processes = data.pop("processes", None)
        spec = load(ClusterSpec, data)
        # dask-jobqueue splits a job's cores between 'processes' workers; the kernels are
        # single-threaded and the thread caps assume one task at a time per process
        check(processes is None or processes == spec.cores, "processes", processes,
              f"it must equal cores ({spec.cores}): each job runs one single-threaded worker process per core; "
              f"or remove the key")
    return spec


def _thread_caps() -> list[str]:
    # the worker processes must not start thread pools that fight each other for the cores;
    # the variables must be set before Python imports numba, hence the job script
    from hdrprep.build import THREAD_ENV

    return [f"export {k}={v}" for k, v in sorted(THREAD_ENV.items())]


def _make_cluster(spec: ClusterSpec):
    import dask_jobqueue

    scheduler_options: dict[str, Any] = {"port": 0, "dashboard_address": None}
    if spec.scheduler_host:
        scheduler_options["host"] = spec.scheduler_host
    kwargs = {
        "cores": spec.cores, "processes": spec.cores, "memory": spec.memory, "walltime": spec.walltime,
        "queue": spec.queue, "account": spec.account, "local_directory": spec.local_directory,
        "log_directory": spec.log_directory, "interface": spec.interface, "python": spec.python or sys.executable,
        "job_name": "hdrprep-worker", "job_script_prologue": _thread_caps() + list(spec.job_script_prologue),
        "job_extra_directives": list(spec.job_extra_directives), "scheduler_options": scheduler_options,
    }
    cls = dask_jobqueue.SLURMCluster if spec.kind == "slurm" else dask_jobqueue.PBSCluster
    return cls(**kwargs)


def _queue_state(spec: ClusterSpec, job_ids: list[str]) -> str:
    """What the batch system says about our jobs and its nodes, for an error message."""
    if spec.kind == "slurm":
        cmds = [["squeue", "-h", "-o", "%i %T %R", "-j", ",".join(job_ids)] if job_ids else None,
                ["sinfo", "-h", "-o", "%P %a %D %t %c %m"]]
    else:
        cmds = [["qstat", *job_ids] if job_ids else None, ["pbsnodes", "-a"]]
    parts = []
    for cmd in filter(None, cmds):
        if shutil.which(cmd[0]) is None:
            parts.append(f"{cmd[0]}: not found")
            continue
        try:
            r = subprocess.run(cmd, check=False, capture_output=True, text=True, timeout=20)
            text = (r.stdout.strip() or r.stderr.strip() or "(nothing: the jobs have ended)").replace("\n", "; ")
        except subprocess.TimeoutExpired:
            text = "(no answer in 20 s)"
        parts.append(f"`{' '.join(cmd)}`: {text[:600]}")
    if spec.kind == "slurm" and job_ids:
        # where SLURM put the first job's output: dask-jobqueue's name in log_directory, else sbatch's default
        log_dir = Path(spec.log_directory) if spec.log_directory else None
        names = ([log_dir / f"hdrprep-worker-{job_ids[0]}.err", log_dir / f"hdrprep-worker-{job_ids[0]}.out"]
                 if log_dir else [Path(f"slurm-{job_ids[0]}.out")])
        for name in names:
            if name.is_file() and name.stat().st_size:
                tail = name.read_text(errors="replace").strip().splitlines()[-5:]
                parts.append(f"end of {name.resolve()}: " + " | ".join(tail))
                break
    return "\n  ".join(parts)


def _check_submittable(spec: ClusterSpec, cluster, path: Path) -> None:
    """Ask SLURM whether the job could run (``sbatch --test-only``), so that a bad partition
    or an impossible request fails now with SLURM's reason instead of a startup timeout."""
    if spec.kind != "slurm":  # PBS has no dry-run submission
        return
    import tempfile

    with tempfile.NamedTemporaryFile("w", suffix=".sh", prefix="hdrprep-job-") as f:
        f.write(cluster.job_script())
        f.flush()
        r = subprocess.run(["sbatch", "--test-only", f.name], check=False, capture_output=True, text=True, timeout=60)
    if r.returncode != 0:
        reason = (r.stderr.strip() or r.stdout.strip()).replace("\n", "; ")
        raise ConfigError(f"--cluster {path}: SLURM would not accept the worker job ({reason}). Fix the preset's "
                          f"queue/account/cores/memory/walltime to fit a partition; see `sinfo -o '%P %c %m %l'`")


@contextmanager
def batch_cluster(path: str | Path) -> Iterator[Any]:
    """Start a dask-jobqueue cluster from a preset, wait for its workers, close it on exit.

    Parameters
    ----------
    path : str or Path
        Batch-cluster preset YAML (see :func:`load_cluster_spec`).

    Yields
    ------
    dask_jobqueue.SLURMCluster or dask_jobqueue.PBSCluster
        Running, with ``jobs * cores`` single-threaded workers connected. On exit (normal
        or by exception) the cluster is closed and its jobs are cancelled.

    Raises
    ------
    ConfigError
        Invalid preset, or dask-jobqueue not installed.
    HdrprepError
        The jobs could not be submitted, or the workers did not all connect within
        ``startup_timeout``; the message carries the queue's view of the jobs.
    """
    spec = load_cluster_spec(path)
    try:
        import dask_jobqueue  # noqa: F401
    except ImportError:
        raise ConfigError(f"--cluster {path}: dask-jobqueue is not installed; "
                          f"pip install 'hdrprep[jobqueue]'") from None
    submit = {"slurm": "sbatch", "pbs": "qsub"}[spec.kind]
    if shutil.which(submit) is None:
        raise ConfigError(f"--cluster {path}: kind '{spec.kind}' needs `{submit}` on PATH and it is not; "
                          f"run hdrprep on a login node of the {spec.kind.upper()} cluster")
    cluster = _make_cluster(spec)
    try:
        try:
            _check_submittable(spec, cluster, Path(path))
            cluster.scale(jobs=spec.jobs)
            cluster.wait_for_workers(spec.n_workers, timeout=spec.startup_timeout)
        except (TimeoutError, RuntimeError) as exc:
            connected = len(cluster.scheduler_info.get("workers", {}))
            job_ids = [str(j.job_id) for j in cluster.workers.values() if getattr(j, "job_id", None)]
            raise HdrprepError(
                f"--cluster {path}: {connected} of {spec.n_workers} workers connected to the scheduler at "
                f"{cluster.scheduler_address} after {spec.startup_timeout:g} s ({type(exc).__name__}: {exc}).\n"
                f"  {_queue_state(spec, job_ids)}\n"
                f"Fix: if the jobs are PENDING, ask for resources the queue has (jobs, cores, memory, "
                f"walltime, queue) or raise startup_timeout; if they ran and ended, read their output "
                f"(log_directory) - the compute nodes must reach the scheduler address (set scheduler_host "
                f"or interface) and run '{spec.python or sys.executable}' with hdrprep installed."
            ) from exc
        yield cluster
    finally:
        try:
            cluster.close()  # cancels every submitted job
        except AssertionError:
            # distributed asserts on workers that never started, after it has cancelled the
            # jobs and closed the scheduler; that must not hide the error that brought us here
            pass
