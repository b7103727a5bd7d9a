"""One build per store: an exclusive lock file inside ``--out`` for the whole of a build.

Why a file and not ``flock``: stores live on cluster filesystems (NFS, Lustre, GPFS)
where ``flock`` may be unsupported, or local to one node, so two batch jobs on two
nodes would both get it. The lock is ``--out/.hdrprep-build.lock``, a small JSON
record (host, process id, its start time, when the build started, a random token)
created in one atomic step: written under a unique temporary name, then
``os.link``-ed to the lock's name, which fails if the name exists. ``link`` is atomic
and exclusive on local filesystems and on NFS alike, and the lock is never seen
half-written.

A holder refreshes the lock's modification time every :data:`HEARTBEAT_S` seconds
from a background thread. A lock is **stale**, and the next build takes it over,
when its holder is certainly gone:

- on the same host: the process id is not running, or is running but started at
  another time than the holder did (the id was reused);
- on another host (which cannot be asked): no heartbeat for :data:`STALE_S` seconds.

Taking over renames the stale lock to a unique name (only one of several racing
builds can), checks that what it renamed is the lock it judged stale (and puts a
live one back), then creates its own. ``--overwrite`` clears the store under the
lock, never the lock itself.
"""

from __future__ import annotations

import json
import os
import socket
import threading
import time
import uuid
from contextlib import contextmanager
from datetime import datetime, timezone
from pathlib import Path

from hdrprep.errors import ConfigError

__all__ = ["LOCK_NAME", "HEARTBEAT_S", "STALE_S", "check_free", "hold", "read_lock"]

LOCK_NAME = ".hdrprep-build.lock"
HEARTBEAT_S = 30.0
STALE_S = 300.0


def _process_start(pid: int) -> float | None:
    """Start time (epoch seconds) of a process on this host, or None if there is no such process."""
    import psutil

    try:
        return psutil.Process(pid).create_time()
    except (psutil.NoSuchProcess, psutil.ZombieProcess):
        return None
    except psutil.AccessDenied:  # it exists; its start time is not ours to read
        return -1.0


def read_lock(out: str | os.PathLike) -> dict | None:
    """The record of the lock on ``out`` (keys host, pid, pid_start, started, token, age_s), or None."""
    if not Path(out).is_dir():
        return None
    path = Path(out) / LOCK_NAME
    try:
        record = json.loads(path.read_text())
        record["age_s"] = time.time() - path.stat().st_mtime
    except FileNotFoundError:
        return None
    except (OSError, ValueError):  # unreadable or damaged: treat as held until it goes stale by age
        return {"host": "?", "pid": -1, "pid_start": None, "started": "?", "token": None,
                "age_s": time.time() - path.stat().st_mtime}
    return record


def _is_stale(record: dict) -> bool:
    if record.get("host") == socket.gethostname() and isinstance(record.get("pid"), int) and record["pid"] > 0:
        start = _process_start(record["pid"])
        if start is None:
            return True
        recorded = record.get("pid_start")
        return start != -1.0 and recorded is not None and abs(start - recorded) > 1.0
    return record["age_s"] > STALE_S


def check_free(out: str | os.PathLike) -> None:
    """Refuse at once, writing nothing, if a live build holds the lock on ``out``.

    Raises
    ------
    ConfigError
        Naming the holder's host, process id and start time, and the fix.
    """
    record = read_lock(out)
    if record is not None and not _is_stale(record):
        raise _refusal(Path(out), record)


def _refusal(out: Path, record: dict) -> ConfigError:
    return ConfigError(
        f"--out {out} is locked by another build (host {record.get('host')}, process {record.get('pid')}, "
        f"started {record.get('started')}); one build per store: wait for it to finish or stop it, or choose "
        f"another --out. A lock whose build is gone is taken over by the next build (same host: the process "
        f"has ended; other hosts: no heartbeat for {STALE_S:.0f} s); if you are sure no build uses the store, "
        f"delete {out / LOCK_NAME}")


def _create(path: Path, record: dict) -> bool:
    """Create the lock ``path`` holding ``record``, atomically; False if it exists."""
    tmp = path.with_name(f"{LOCK_NAME}.{record['token']}.new")
    tmp.write_text(json.dumps(record))
    try:
        os.link(tmp, path)
        return True
    except FileExistsError:
        return False
    finally:
        tmp.unlink(missing_ok=True)


def _take_over(path: Path, stale: dict) -> None:
    """Move a stale lock aside; put it back if, in a race, what was moved is a live one."""
    aside = path.with_name(f"{LOCK_NAME}.{uuid.uuid4().hex}.stale")
    try:
        os.rename(path, aside)
    except FileNotFoundError:  # another build took it over first
        return
    try:
        moved = json.loads(aside.read_text()).get("token")
    except (OSError, ValueError):
        moved = None
    if moved != stale.get("token"):  # another build's fresh lock: restore it (never over a newer one)
        try:
            os.link(aside, path)
        except FileExistsError:
            pass
    aside.unlink(missing_ok=True)


def _acquire(out: Path) -> dict:
    path = out / LOCK_NAME
    me = {"host": socket.gethostname(), "pid": os.getpid(), "pid_start": _process_start(os.getpid()),
          "started": datetime.now(timezone.utc).astimezone().isoformat(timespec="seconds"),
          "token": uuid.uuid4().hex}
    for _ in range(3):  # a takeover race is retried a few times, then refused
        if _create(path, me):
            return me
        record = read_lock(out)
        if record is None:
            continue
        if not _is_stale(record):
            raise _refusal(out, record)
        _take_over(path, record)
    raise _refusal(out, read_lock(out) or {})


@contextmanager
def hold(out: str | os.PathLike):
    """Hold the build lock on ``out`` (created if missing) for the body of a ``with`` statement.

    Raises
    ------
    ConfigError
        Another build holds it; the message names its host, process id and start time
        and the fix.
    """
    out = Path(out)
    created = not out.exists()
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise ConfigError(f"--out {out}: cannot write there ({exc.strerror or exc}); choose a writable "
                          f"folder") from exc
    try:
        me = _acquire(out)
    except BaseException as exc:
        if created and not any(out.iterdir()):
            out.rmdir()
        if isinstance(exc, OSError):
            raise ConfigError(f"--out {out}: cannot write there ({exc.strerror or exc}); choose a writable "
                              f"folder") from exc
        raise
    path = out / LOCK_NAME
    stop = threading.Event()

    def beat() -> None:
        while not stop.wait(HEARTBEAT_S):
            try:
                os.utime(path)
            except OSError:  # the store is gone (e.g. the user removed it); nothing to keep alive
                pass

    thread = threading.Thread(target=beat, name="hdrprep-lock-heartbeat", daemon=True)
    thread.start()
    try:
        yield me
    finally:
        stop.set()
        thread.join()
        if (read_lock(out) or {}).get("token") == me["token"]:
            path.unlink(missing_ok=True)
