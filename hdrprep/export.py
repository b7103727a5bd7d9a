"""``hdrprep export``: a store's pairs as plain files that other training code reads.

Formats
-------
``eilertsen``
    The ``bin/`` + ``jpg/`` layout written by Eilertsen's ``virtualcamera``
    (gabrieleilertsen/hdrcnn, ``training_code/virtualcamera/virtualcamera.cpp``,
    ``printHDR``/``printLDR``) and read by ``hdrcnn_train.py`` and by Santos'
    ``lib/img_io.load_training_pair`` (marcelsan/Deep-HdrReconstruction):

    - ``bin/NAME.bin``: 5 float32 ``[H, W, C, n, sigma]`` (virtualcamera writes
      ``ss[0]`` = rows, ``ss[1]`` = columns, ``ss[2]`` = 3, then the pair's
      sigmoid exponent and offset), then the HDR target as float32 RGB in HWC
      order (virtualcamera converts to RGB on reading), native little-endian
      byte order. Readers take the shape from the first three floats and the
      pixels from the last ``H*W*C`` floats. ``n`` and ``sigma`` are NaN for a
      pair whose camera curve is not the sigmoid.
    - ``jpg/NAME.jpg``: the LDR. ``hdrcnn_train.py`` finds it by replacing
      ``.bin`` with ``.jpg``; Santos' loader sorts both folders and pairs files
      by the name before the first dot.

``exr-png``
    ``exr/NAME.exr`` (float16 RGB, zip compression: the stored values exactly)
    and ``png/NAME.png`` (the stored 8-bit LDR, lossless).

``NAME`` is ``im_SSSSSS_CCCCCC``: the frame's position in the store's source
list and the candidate number within the frame (the ``candidate`` column of
the index), so names sort in pair order. ``hdrprep-export.json`` maps the
source numbers to frame paths.

The LDR of the ``eilertsen`` layout is a JPEG of the stored LDR, which is
already the camera's JPEG output: writing it again re-compresses it. It is
written at quality 100 with 4:4:4 chroma, which changes values by at most a
few levels (4/255 on the test stores, measured in tests/test_export.py);
``ldr_format='png'`` writes ``jpg/NAME.png`` instead, lossless, which Santos'
loader reads unchanged but ``hdrcnn_train.py`` (which looks for ``.jpg``)
does not. The ``.bin`` (float16 -> float32) and the ``exr-png`` files hold
the stored values exactly.

Every file is written to a temporary name and renamed into place; the
export's marker file is written first with ``complete: false`` and rewritten
with ``complete: true`` at the end.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import cv2
import numpy as np

from hdrprep import files, store
from hdrprep.errors import ConfigError, StoreError

__all__ = ["FORMATS", "LDR_FORMATS", "MARKER", "export", "pair_names", "write_bin", "read_bin"]

FORMATS = ("eilertsen", "exr-png")
LDR_FORMATS = ("jpg", "png")
MARKER = "hdrprep-export.json"
_LAYOUT = {"eilertsen": ("bin", "jpg"), "exr-png": ("exr", "png")}
_OURS = re.compile(r"^im_\d{6,}_\d{6,}\.(bin|jpg|png|exr)$")


def pair_names(index, sources: list[str]) -> list[str]:
    """File stem of every pair: ``im_{source number:06d}_{candidate:06d}``.

    Parameters
    ----------
    index : pyarrow.Table
        The store's index (columns ``source`` and ``candidate``).
    sources : list of str
        The store's source keys in build order (the ``hdrprep`` attribute's ``sources``).
    """
    number = {key: i for i, key in enumerate(sources)}
    return [f"im_{number[s]:06d}_{c:06d}" for s, c in zip(index["source"].to_pylist(),
                                                          index["candidate"].to_pylist())]


def write_bin(path: str | Path, hdr: np.ndarray, n: float | None, sigma: float | None) -> None:
    """Write an Eilertsen ``.bin``: float32 ``[H, W, C, n, sigma]`` then float32 HWC pixels.

    Parameters
    ----------
    hdr : numpy.ndarray
        (H, W, 3) linear RGB, any float dtype (float16 converts exactly).
    n, sigma : float or None
        The sigmoid camera curve's exponent and offset; None is written as NaN.
    """
    h, w, c = hdr.shape
    head = np.array([h, w, c, np.nan if n is None else n, np.nan if sigma is None else sigma], "<f4")
    files.atomic_write_bytes(path, head.tobytes() + np.ascontiguousarray(hdr, "<f4").tobytes())


def read_bin(path: str | Path) -> tuple[np.ndarray, np.ndarray]:
    """Read an Eilertsen ``.bin`` the way the released loaders do.

    Returns
    -------
    header : numpy.ndarray
        float32 (5,): H, W, C, n, sigma.
    hdr : numpy.ndarray
        float32 (H, W, C): the last ``H*W*C`` floats of the file.
    """
    data = np.fromfile(path, dtype="<f4")
    if data.size < 5:
        raise StoreError(f"{path}: {data.size * 4} bytes, shorter than the 20-byte header of a .bin")
    h, w, c = (int(v) for v in data[:3])
    if data.size != 5 + h * w * c:
        raise StoreError(f"{path}: header says {h}x{w}x{c} but the file holds {data.size - 5} pixel values")
    return data[:5], data[5:].reshape(h, w, c)


def _encode(ldr: np.ndarray, fmt: str) -> bytes:
    """uint8 RGB -> file bytes: PNG (lossless) or JPEG quality 100 with 4:4:4 chroma."""
    params = [cv2.IMWRITE_JPEG_QUALITY, 100, cv2.IMWRITE_JPEG_SAMPLING_FACTOR,
              cv2.IMWRITE_JPEG_SAMPLING_FACTOR_444] if fmt == "jpg" else []
    ok, buf = cv2.imencode(f".{fmt}", cv2.cvtColor(ldr, cv2.COLOR_RGB2BGR), params)
    if not ok:
        raise RuntimeError(f"OpenCV could not encode a {ldr.shape} image as {fmt}")
    return buf.tobytes()


def _write_pair(folder: Path, fmt: str, ldr_format: str, name: str, ldr: np.ndarray, hdr: np.ndarray,
                row: dict) -> None:
    from hdrprep import io

    hdr_dir, ldr_dir = (folder / d for d in _LAYOUT[fmt])
    if fmt == "eilertsen":
        write_bin(hdr_dir / f"{name}.bin", hdr, row.get("curve_n"), row.get("curve_sigma"))
    else:
        io.write_exr(hdr_dir / f"{name}.exr", hdr, half=True)
        ldr_format = "png"
    files.atomic_write_bytes(ldr_dir / f"{name}.{ldr_format}", _encode(ldr, ldr_format))


def _prepare(root: Path, out: Path, fmt: str) -> None:
    """Refuse an --out that is a file, a foreign non-empty folder, or overlaps the store; clear our old files."""
    r, o = root.resolve(), out.resolve()
    if o == r or r in o.parents or o in r.parents:
        raise ConfigError(f"--out {out} overlaps the store {root}; choose a folder outside it")
    if out.exists() and not out.is_dir():
        raise ConfigError(f"--out {out} exists and is not a folder; choose a new path")
    if not out.is_dir() or not any(out.iterdir()):
        return
    marker = out / MARKER
    if not marker.is_file():
        raise ConfigError(f"--out {out} is a non-empty folder that is not an hdrprep export; "
                          f"choose a new or empty folder (nothing was written)")
    old = json.loads(marker.read_text())
    if old.get("format") != fmt:
        raise ConfigError(f"--out {out} holds a '{old.get('format')}' export; choose another folder for "
                          f"'{fmt}' or remove it")
    # a re-export replaces our own files only (a smaller store must not leave stale pairs behind)
    for sub in _LAYOUT[fmt]:
        for f in (out / sub).glob("im_*"):
            if _OURS.match(f.name):
                f.unlink()


def export(root: str | Path, out: str | Path, *, format: str = "eilertsen", ldr_format: str = "jpg",
           progress: bool = False) -> dict:
    """Write every pair of a store as files another training code reads (layouts: module docstring).

    Parameters
    ----------
    root : path
        A finished store.
    out : path
        Folder to create, an empty folder, or an earlier export of the same format
        (its pair files are replaced). A non-empty folder without the export's
        marker is refused.
    format : {'eilertsen', 'exr-png'}
    ldr_format : {'jpg', 'png'}
        The LDR file type of the ``eilertsen`` layout (``exr-png`` always writes PNG).
    progress : bool
        Show a progress bar.

    Returns
    -------
    dict
        The marker written to ``out/hdrprep-export.json``: ``format``, ``ldr_format``,
        ``store``, ``pairs``, ``names`` (one per pair, in pair order), ``sources``
        (source number -> frame path) and ``complete``.
    """
    if format not in FORMATS:
        raise ConfigError(f"--format {format!r}: choose one of {', '.join(FORMATS)}")
    if ldr_format not in LDR_FORMATS:
        raise ConfigError(f"--ldr-format {ldr_format!r}: choose one of {', '.join(LDR_FORMATS)}")
    root, out = Path(root), Path(out)
    st = store.open_store(root)
    group, index, attrs = st.group, st.index, st.attrs
    _prepare(root, out, format)
    sources = [s["source"] for s in attrs.get("sources", [])]
    n = index.num_rows
    names = pair_names(index, sources) if n else []
    marker = dict(format=format, ldr_format="png" if format == "exr-png" else ldr_format, store=str(root),
                  pairs=n, names=names, sources=sources, complete=False)
    for sub in _LAYOUT[format]:
        (out / sub).mkdir(parents=True, exist_ok=True)
    files.atomic_write_bytes(out / MARKER, json.dumps(marker, indent=1).encode())

    from tqdm.auto import tqdm

    rows = index.to_pylist()
    step = group["ldr"].shards[0] if n else 1  # whole shards: each is read and decoded once
    with tqdm(total=n, desc="export", unit="pair", disable=not progress) as bar:
        for start in range(0, n, step):
            ldr, hdr = group["ldr"][start:start + step], group["hdr"][start:start + step]
            for i in range(len(ldr)):
                k = start + i
                _write_pair(out, format, ldr_format, names[k], ldr[i], hdr[i], rows[k])
            bar.update(len(ldr))
    marker["complete"] = True
    files.atomic_write_bytes(out / MARKER, json.dumps(marker, indent=1).encode())
    return marker
