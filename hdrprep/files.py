"""Files that are whole or absent: atomic writes, file hashes, and the kill drills' pause points.

Every file hdrprep writes (store tables, done-markers, exported pairs, EXR frames,
checkpoints, PNGs) goes through :func:`atomic_write`: written under a temporary
name beside its final one, flushed to disk, then renamed into place, so a killed
process never leaves a half file under the final name. Temporary names start with
a dot and contain ``.tmp-``; a resumed build removes the ones a kill left behind.
"""

from __future__ import annotations

import hashlib
import os
import sys
import time
from collections.abc import Callable
from pathlib import Path

__all__ = ["PAUSE_ENV", "atomic_write", "atomic_write_bytes", "file_sha256", "pause_point"]

PAUSE_ENV = "HDRPREP_PAUSE_AT"


def atomic_write(path: str | os.PathLike, write: Callable[[Path], None], *, fsync: bool = True) -> None:
    """Call ``write(tmp)`` to write a temporary file beside ``path``, then rename it to ``path``.

    Parameters
    ----------
    path : path
        Final name; its folder must exist.
    write : callable
        Writes the whole file at the given temporary path, ``.NAME.tmp-PID.SUFFIX`` (it ends
        in ``path``'s suffix, so writers that pick a format by suffix still do).
    fsync : bool
        Flush the file to disk before the rename, so a crash cannot leave a renamed but
        empty file.

    On failure (e.g. no space left) the temporary file is removed and the error re-raised.
    """
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}{path.suffix}")
    try:
        write(tmp)
        if fsync:
            fd = os.open(tmp, os.O_RDONLY)
            try:
                os.fsync(fd)
            finally:
                os.close(fd)
        pause_point(f"before-rename:{path.name}")
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> None:
    """Write ``data`` to ``path`` with :func:`atomic_write`."""
    atomic_write(path, lambda tmp: tmp.write_bytes(data))


def file_sha256(path: str | os.PathLike) -> tuple[int, str]:
    """Size in bytes and SHA-256 (hex) of a file, read in 4 MiB blocks."""
    with open(path, "rb") as f:
        digest = hashlib.file_digest(f, "sha256")
        return f.tell(), digest.hexdigest()


def pause_point(name: str) -> None:
    """Test hook for the kill drills: stop here, forever, if ``$HDRPREP_PAUSE_AT`` is ``name``.

    The process prints ``hdrprep: paused at NAME`` to stderr and sleeps, so that a
    test can SIGKILL the build at a known point. Named points: ``scored`` (a
    frame's candidate table is in place), ``shard-array-written`` (a shard's LDR
    file is written, its HDR file not yet), ``before-rename:FILE`` (the temporary
    file of FILE, e.g. ``index.parquet``, is written but not yet renamed),
    ``before-complete`` (index written, store not yet marked complete).
    """
    if os.environ.get(PAUSE_ENV) != name:
        return
    print(f"hdrprep: paused at {name}", file=sys.stderr, flush=True)
    while True:
        time.sleep(60)
