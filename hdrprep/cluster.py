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
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator

from hdrprep.errors import ConfigError, HdrprepError

__all__ = ["ClusterSpec", "load_cluster_spec", "batch_cluster"]

KINDS = ("slurm", "pbs")
_WALLTIME = re.compile(r"^(\d+-)?\d{1,3}:\d{2}(:\d{2})?$")
# keys people reach for that this format spells differently
_HINTS = {"partition": "queue", "nodes": "jobs", "n_workers": "jobs", "mem": "memory", "time": "walltime",
          "threads": "cores", "env_extra": "job_script_prologue", "prologue": "job_script_prologue"}


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

    kind: str
    jobs: int
    cores: int
    memory: str
    walltime: str
    queue: str | None = None
    account: str | None = None
    local_directory: str = "/tmp"
    log_directory: str | None = None
    scheduler_host: str | None = None
    interface: str | None = None
    python: str | None = None
    job_script_prologue: tuple[str, ...] = field(default=())
    job_extra_directives: tuple[str, ...] = field(default=())
    startup_timeout: float = 300.0

    @property
    def n_workers(self) -> int:
        """Worker processes in total (one per core of every job)."""
        return self.jobs * self.cores


def _parse_bytes(text: str) -> int:
    units = {"": 1, "b": 1, "kb": 10**3, "mb": 10**6, "gb": 10**9, "tb": 10**12,
             "kib": 2**10, "mib": 2**20, "gib": 2**30, "tib": 2**40}
    m = re.fullmatch(r"\s*([0-9]*\.?[0-9]+)\s*([a-zA-Z]*)\s*", text)
    if not m or m.group(2).lower() not in units:
        raise ValueError(text)
    return int(float(m.group(1)) * units[m.group(2).lower()])


def load_cluster_spec(path: str | Path) -> ClusterSpec:
    """Read and validate a batch-cluster preset.

    Parameters
    ----------
    path : str or Path
        YAML file with the keys of :class:`ClusterSpec` (``kind``, ``jobs``, ``cores``,
        ``memory``, ``walltime`` required).

    Returns
    -------
    ClusterSpec

    Raises
    ------
    ConfigError
        Unreadable file, unknown or missing key, or a value of the wrong type or range;
        the message names the file, the key, the value and the fix.
    """
    import yaml

    path = Path(path)
    try:
        data = yaml.safe_load(path.read_text())
    except OSError as exc:
        raise ConfigError(f"cluster preset {path}: cannot read it ({exc}); give the path of a YAML file "
                          f"such as pipelines/cluster-slurm.yaml") from exc
    except yaml.YAMLError as exc:
        raise ConfigError(f"cluster preset {path}: not valid YAML ({exc})") from exc
    if not isinstance(data, dict):
        raise ConfigError(f"cluster preset {path}: expected a mapping of keys (kind, jobs, cores, memory, "
                          f"walltime, ...), got {type(data).__name__}")

    def bad(key: str, value: Any, fix: str) -> ConfigError:
        return ConfigError(f"cluster preset {path}: {key}: {value!r} is invalid; {fix}")

    # 'processes' is dask-jobqueue's key, allowed only equal to 'cores' (checked below)
    known = {f.name for f in ClusterSpec.__dataclass_fields__.values()} | {"processes"}
    for key in data:
        if key not in known:
            hint = f"use '{_HINTS[key]}'" if key in _HINTS else f"known keys: {', '.join(sorted(known))}"
            raise ConfigError(f"cluster preset {path}: unknown key '{key}'; {hint}")
    for key in ("kind", "jobs", "cores", "memory", "walltime"):
        if data.get(key) is None:
            raise ConfigError(f"cluster preset {path}: missing required key '{key}'; "
                              f"see pipelines/cluster-slurm.yaml for an example")

    kind = str(data["kind"]).lower()
    if kind not in KINDS:
        raise bad("kind", data["kind"], f"use one of {', '.join(KINDS)}")
    for key in ("jobs", "cores"):
        v = data[key]
        if not isinstance(v, int) or isinstance(v, bool) or v < 1:
            raise bad(key, v, "give a whole number >= 1")
    # dask-jobqueue splits a job's cores between 'processes' workers; the kernels are
    # single-threaded and the thread caps assume one task at a time per process
    if data.get("processes", data["cores"]) != data["cores"]:
        raise bad("processes", data["processes"], f"it must equal cores ({data['cores']}): each job runs one "
                                                 f"single-threaded worker process per core; or remove the key")
    memory = str(data["memory"])
    try:
        per_worker = _parse_bytes(memory) / data["cores"]
    except ValueError:
        raise bad("memory", data["memory"], "give memory per job with a unit, e.g. '16GB'") from None
    if per_worker < 256e6:
        raise bad("memory", data["memory"], f"that leaves {per_worker / 1e6:.0f} MB per worker process; "
                                            f"give at least 1GB per core (santos2020 needs about 1GB each)")
    walltime = str(data["walltime"])
    if not _WALLTIME.match(walltime):
        # YAML 1.1 reads an unquoted 2:00:00 as the base-60 number 7200
        raise bad("walltime", data["walltime"], "write it as HH:MM:SS in quotes, e.g. \"02:00:00\" "
                                                "(unquoted, YAML reads 2:00:00 as the number 7200)")
    strings = {}
    for key in ("queue", "account", "local_directory", "log_directory", "scheduler_host", "interface", "python"):
        v = data.get(key)
        if v is not None and not (isinstance(v, str) and v.strip()):
            raise bad(key, v, "give a non-empty string or remove the key")
        if v is not None:
            strings[key] = v
    lists = {}
    for key in ("job_script_prologue", "job_extra_directives"):
        v = data.get(key) or []
        if not (isinstance(v, list) and all(isinstance(s, str) for s in v)):
            raise bad(key, v, "give a list of strings, one shell line or directive each")
        lists[key] = tuple(v)
    timeout = data.get("startup_timeout", ClusterSpec.startup_timeout)
    if isinstance(timeout, bool) or not isinstance(timeout, (int, float)) or not (0 < timeout < math.inf):
        raise bad("startup_timeout", timeout, "give the seconds to wait for the workers, e.g. 300")
    if strings.get("scheduler_host") and strings.get("interface"):
        raise ConfigError(f"cluster preset {path}: give 'scheduler_host' or 'interface', not both "
                          f"(the scheduler listens on one of them)")
    return ClusterSpec(kind=kind, jobs=data["jobs"], cores=data["cores"], memory=memory, walltime=walltime,
                       startup_timeout=float(timeout), **strings, **lists)


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
    kwargs = dict(
        cores=spec.cores, processes=spec.cores, memory=spec.memory, walltime=spec.walltime,
        queue=spec.queue, account=spec.account, local_directory=spec.local_directory,
        log_directory=spec.log_directory, interface=spec.interface, python=spec.python or sys.executable,
        job_name="hdrprep-worker", job_script_prologue=_thread_caps() + list(spec.job_script_prologue),
        job_extra_directives=list(spec.job_extra_directives), scheduler_options=scheduler_options,
    )
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
            r = subprocess.run(cmd, capture_output=True, text=True, timeout=20)
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
        r = subprocess.run(["sbatch", "--test-only", f.name], capture_output=True, text=True, timeout=60)
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
