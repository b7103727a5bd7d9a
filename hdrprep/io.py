"""Reading and validating HDR frames (OpenEXR and Radiance ``.hdr``).

Every reader returns linear RGB as a C-contiguous ``float32`` array of shape
``(H, W, 3)``. Anything that makes a frame unusable raises
:class:`~hdrprep.errors.BadFrameError` with a short reason code; no exception of
the underlying libraries escapes :func:`read_frame` or :func:`probe`.

Reason codes: ``not-a-file``, ``unreadable``, ``truncated``, ``unsupported-format``,
``deep``, ``no-colour-channels``, ``no-such-part``, ``too-large``, ``too-small``,
``nonfinite``, ``negative``.

Decisions (see the module tests for the files that motivated them):

* EXR is read with the OpenEXR 3.x bindings (``openexr`` >= 3.4.14, which fixes
  heap overflows in its RGB reader); ``.hdr`` with ``cv2.imread(...,
  IMREAD_UNCHANGED)`` (the default flag returns clipped uint8) and BGR -> RGB.
* Data window: the returned array holds the pixels of the **data window** only.
  The data window is where the file stores content; the display window around it
  has no pixels, and filling it with zeros would hand the patch sampler black
  borders that are not in the scene. Both windows are reported in :class:`FrameInfo`.
* Part and channels: a named part (``part=``) or else the first part, in file
  order, that is not deep and has colour channels. Inside a part, channel names
  are grouped into layers (``left.R`` is channel ``R`` of layer ``left``); the
  colour set is chosen by kind first (R,G,B, then Y,RY,BY, then Y alone), then
  by layer: the unprefixed layer (the default view of a multi-view file), then
  the other layers in sorted order. Alpha and all other channels are ignored; RGB
  in EXR is premultiplied, so dropping alpha gives the image over black.
* Luminance-only (``Y``) becomes gray RGB. Luminance/chroma (``Y``, ``RY``, ``BY``
  with 2x2-subsampled chroma) is converted as OpenEXR's ``RgbaInputFile`` does:
  27-tap chroma reconstruction, ``Y,RY,BY -> RGB`` with luminance weights from the
  file's chromaticities (Rec.709 if absent), then its "fix saturation" step, with
  half-float rounding where the C++ code stores halves.
* RGB files with a ``chromaticities`` attribute other than Rec.709 (e.g. R,G,B
  holding CIE XYZ) are converted to linear Rec.709 through XYZ, without white
  point adaptation (absolute colorimetry, as the OpenEXR sample ``XYZ.exr`` was made).
* Mip-mapped and tiled files: the bindings read level 0.
* Validation policies come from :class:`~hdrprep.config.IngestConfig`: NaN/Inf
  are rejected or repaired (NaN and -Inf -> 0, +Inf -> the largest finite value of
  the frame); negative values are rejected or clamped to 0. Values above the
  float16 maximum (65504) are kept and counted.
"""

from __future__ import annotations

import errno
import os
import re
import stat
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
import OpenEXR

from hdrprep.config import IngestConfig
from hdrprep.errors import BadFrameError
from hdrprep.files import atomic_write

__all__ = [
    "HDR_SUFFIXES",
    "MAX_PIXELS",
    "FrameInfo",
    "ReadStats",
    "probe",
    "read_frame",
    "write_exr",
    "write_hdr",
]

HDR_SUFFIXES = (".exr", ".hdr")
MAX_PIXELS = 2**28
HALF_MAX = 65504.0

_MIN_OPENEXR = (3, 4, 14)


def _version_tuple(text: str) -> tuple[int, ...]:
    return tuple(int(x) for x in re.findall(r"\d+", text)[:3])


if _version_tuple(OpenEXR.__version__) < _MIN_OPENEXR:  # pragma: no cover - depends on the install
    raise ImportError(
        f"hdrprep needs openexr >= 3.4.14 (older versions have heap overflows in the RGB reader); "
        f"found {OpenEXR.__version__}: run `pip install 'openexr>=3.4.14'`"
    )

_EXR_MAGIC = b"\x76\x2f\x31\x01"
_REC709 = (0.64, 0.33, 0.30, 0.60, 0.15, 0.06, 0.3127, 0.3290)
_COMPRESSIONS = {
    "none": OpenEXR.NO_COMPRESSION,
    "rle": OpenEXR.RLE_COMPRESSION,
    "zips": OpenEXR.ZIPS_COMPRESSION,
    "zip": OpenEXR.ZIP_COMPRESSION,
    "piz": OpenEXR.PIZ_COMPRESSION,
    "pxr24": OpenEXR.PXR24_COMPRESSION,
    "b44": OpenEXR.B44_COMPRESSION,
    "b44a": OpenEXR.B44A_COMPRESSION,
    "dwaa": OpenEXR.DWAA_COMPRESSION,
    "dwab": OpenEXR.DWAB_COMPRESSION,
}
if hasattr(OpenEXR, "ZSTD_COMPRESSION"):
    _COMPRESSIONS["zstd"] = OpenEXR.ZSTD_COMPRESSION
_COMPRESSION_NAMES = {v: k for k, v in _COMPRESSIONS.items()}
_KINDS = ("rgb", "yc", "y")  # preference order of colour encodings
_KIND_CHANNELS = {"rgb": ("R", "G", "B"), "yc": ("Y", "RY", "BY"), "y": ("Y",)}


@dataclass(frozen=True)
class FrameInfo:
    """Header facts of one frame; no pixels are decoded to get them.

    Attributes
    ----------
    path : str
    format : str
        ``'exr'`` or ``'hdr'``.
    width, height : int
        Size of the array :func:`read_frame` returns (the EXR data window).
    channels : tuple of str
        Full names of the channels that are read, e.g. ``('left.R', 'left.G', 'left.B')``.
    part : str or None
        Name of the EXR part read (None for unnamed parts and ``.hdr``).
    part_index : int
        Index of that part (0 for ``.hdr``).
    n_parts : int
    layer : str
        Channel-name prefix of the colour set ('' for unprefixed channels).
    colour : str
        ``'rgb'``, ``'yc'`` (luminance + subsampled chroma) or ``'y'`` (luminance only).
    compression : str
        EXR compression name (``'piz'``, ``'zip'``, ...) or ``'rle'`` / ``'flat'`` for ``.hdr``.
    tiled : bool
    mipmap : bool
        True for mip- or rip-mapped tiled files (level 0 is read).
    data_window, display_window : tuple of int
        ``(xmin, ymin, xmax, ymax)``, inclusive, as in the EXR header.
    chromaticities : tuple of float or None
        ``(rx, ry, gx, gy, bx, by, wx, wy)`` from the header, None when absent.
    """

    path: str
    format: str
    width: int
    height: int
    channels: tuple[str, ...]
    part: str | None
    part_index: int = 0
    n_parts: int = 1
    layer: str = ""
    colour: str = "rgb"
    compression: str = ""
    tiled: bool = False
    mipmap: bool = False
    data_window: tuple[int, int, int, int] = (0, 0, 0, 0)
    display_window: tuple[int, int, int, int] = (0, 0, 0, 0)
    chromaticities: tuple[float, ...] | None = None


@dataclass(frozen=True)
class ReadStats:
    """What validation found and changed in one frame (counts of channel values, not pixels).

    nonfinite : NaN/Inf values repaired (0 unless ``nonfinite='repair'``).
    negative : negative values clamped to 0.
    above_half_max : values above 65504, kept as they are.
    """

    nonfinite: int
    negative: int
    above_half_max: int


# --------------------------------------------------------------------------- probe


def probe(path, *, part: str | None = None) -> FrameInfo:
    """Read the header of an ``.exr`` or ``.hdr`` file without decoding pixels.

    Parameters
    ----------
    path : str or os.PathLike
    part : str, optional
        EXR part name; default: the first part with colour channels.

    Returns
    -------
    FrameInfo

    Raises
    ------
    BadFrameError
        For anything the header alone shows to be unusable (not a file,
        unreadable, unsupported format, deep data, no colour channels, unknown part).
    """
    path = str(path)
    suffix = _check_file(path)
    try:
        if suffix == ".exr":
            return _probe_exr(path, part)
        return _probe_hdr(path)
    except BadFrameError:
        raise
    except Exception as exc:  # no library exception escapes
        raise BadFrameError(path, "unreadable", f"header cannot be read: {type(exc).__name__}: {exc}") from exc


def _check_file(path: str) -> str:
    """Stat and sniff ``path``; return its lower-case suffix or raise BadFrameError."""
    suffix = Path(path).suffix.lower()
    if suffix not in HDR_SUFFIXES:
        raise BadFrameError(path, "unsupported-format",
                            f"suffix {suffix or '(none)'!r} is not one of {', '.join(HDR_SUFFIXES)}; "
                            f"convert the frame to OpenEXR or Radiance .hdr")
    try:
        st = os.stat(path)
    except FileNotFoundError as exc:
        raise BadFrameError(path, "not-a-file", "no such file (or a broken symlink); remove it from the "
                            "source folder") from exc
    except OSError as exc:
        what = "a symlink loop" if exc.errno == errno.ELOOP else f"cannot stat: {exc.strerror}"
        raise BadFrameError(path, "not-a-file", f"{what}; remove it from the source folder") from exc
    if not stat.S_ISREG(st.st_mode):
        kind = "a directory" if stat.S_ISDIR(st.st_mode) else "not a regular file"
        raise BadFrameError(path, "not-a-file", f"{kind} with an image suffix; rename or remove it")
    if st.st_size == 0:
        raise BadFrameError(path, "truncated", "file is empty (0 bytes); copy the frame again")
    try:
        with open(path, "rb") as fh:
            head = fh.read(4)
    except OSError as exc:
        raise BadFrameError(path, "unreadable", f"cannot open: {exc.strerror}; check its permissions") from exc
    if suffix == ".exr" and head != _EXR_MAGIC:
        raise BadFrameError(path, "unreadable", f"not an OpenEXR file (first bytes {head!r}, expected "
                            f"{_EXR_MAGIC!r}); check the file or its suffix")
    if suffix == ".hdr" and not head.startswith(b"#?"):
        raise BadFrameError(path, "unreadable", f"not a Radiance file (first bytes {head!r}, expected "
                            f"b'#?'); check the file or its suffix")
    return suffix


def _box(window) -> tuple[int, int, int, int]:
    (x0, y0), (x1, y1) = window
    return int(x0), int(y0), int(x1), int(y1)


def _layers(names) -> dict[str, set[str]]:
    layers: dict[str, set[str]] = {}
    for name in names:
        prefix, _, base = name.rpartition(".")
        layers.setdefault(prefix, set()).add(base)
    return layers


def _colour_set(names) -> tuple[str, str] | None:
    """(kind, layer) of the preferred colour set among channel ``names``, or None."""
    layers = _layers(names)
    order = sorted(layers, key=lambda p: (p != "", p))  # unprefixed layer first
    for kind in _KINDS:
        for prefix in order:
            if set(_KIND_CHANNELS[kind]) <= layers[prefix]:
                return kind, prefix
    return None


def _full(prefix: str, base: str) -> str:
    return f"{prefix}.{base}" if prefix else base


def _probe_exr(path: str, part: str | None) -> FrameInfo:
    try:
        parts = OpenEXR.File(path, header_only=True).parts
    except Exception as exc:
        raise BadFrameError(path, "unreadable", f"OpenEXR cannot parse the header ({exc}); the file is "
                            f"damaged or truncated: copy it again") from exc
    if not parts:
        raise BadFrameError(path, "unreadable", "the header lists no parts; the file is damaged")
    headers = [p.header for p in parts]
    names = [h.get("name") for h in headers]
    if part is not None:
        if part not in names:
            raise BadFrameError(path, "no-such-part", f"no part named {part!r}; parts: "
                                f"{', '.join(repr(n) for n in names)}; set ingest.part to one of them")
        candidates = [names.index(part)]
    else:
        candidates = list(range(len(parts)))
    chosen = None
    saw_deep = False
    for i in candidates:
        h = headers[i]
        if "deep" in str(h.get("type", "")):
            saw_deep = True
            continue
        found = _colour_set(c.name for c in h["channels"])
        if found:
            chosen = (i, *found)
            break
    if chosen is None:
        where = f"part {part!r}" if part is not None else "any part"
        if saw_deep:
            raise BadFrameError(path, "deep", f"{where} holds deep (multi-sample) data, not a flat image; "
                                f"flatten it (e.g. with a compositor) and export RGB")
        found = sorted({c.name for i in candidates for c in headers[i]["channels"]})
        raise BadFrameError(path, "no-colour-channels", f"channels {', '.join(found) or '(none)'} in {where}; "
                            f"need R,G,B or Y (with optional RY,BY) in one layer: re-export with colour channels")
    index, kind, prefix = chosen
    h = headers[index]
    by_name = {c.name: c for c in h["channels"]}
    used = tuple(_full(prefix, b) for b in _KIND_CHANNELS[kind])
    for name in used:
        c = by_name[name]
        want = (2, 2) if name.endswith(("RY", "BY")) and kind == "yc" else (1, 1)
        if (c.xSampling, c.ySampling) != want:
            raise BadFrameError(path, "unsupported-format", f"channel {name} has sampling "
                                f"{c.xSampling}x{c.ySampling}, expected {want[0]}x{want[1]}; re-export "
                                f"without chroma subsampling")
    tiles = h.get("tiles")
    dw = _box(h["dataWindow"])
    chroma = h.get("chromaticities")
    return FrameInfo(
        path=path, format="exr", width=dw[2] - dw[0] + 1, height=dw[3] - dw[1] + 1, channels=used,
        part=h.get("name"), part_index=index, n_parts=len(parts), layer=prefix, colour=kind,
        compression=_COMPRESSION_NAMES.get(h.get("compression"), str(h.get("compression"))),
        tiled=tiles is not None, mipmap=tiles is not None and tiles.mode != OpenEXR.ONE_LEVEL,
        data_window=dw, display_window=_box(h["displayWindow"]),
        chromaticities=tuple(float(v) for v in chroma) if chroma is not None else None,
    )


_HDR_RES = re.compile(rb"^-Y (\d+) \+X (\d+)$")


def _probe_hdr(path: str) -> FrameInfo:
    with open(path, "rb") as fh:
        head = fh.read(65536)
    lines = head.split(b"\n")
    fmt = None
    for i, line in enumerate(lines[:-1]):
        if line.startswith(b"FORMAT="):
            fmt = line[7:].strip()
        if line.strip() == b"":
            break
    else:
        raise BadFrameError(path, "unreadable", "Radiance header has no end (no blank line in the first "
                            "64 KiB); the file is damaged")
    if fmt not in (None, b"32-bit_rle_rgbe"):
        raise BadFrameError(path, "unsupported-format", f"Radiance FORMAT={fmt.decode(errors='replace')}; only "
                            f"32-bit_rle_rgbe is read: convert the frame to RGBE or OpenEXR")
    match = _HDR_RES.match(lines[i + 1].strip()) if i + 1 < len(lines) else None
    if not match:
        res = lines[i + 1][:40] if i + 1 < len(lines) else b""
        raise BadFrameError(path, "unsupported-format", f"Radiance resolution line {res!r} is not "
                            f"'-Y H +X W' (the only orientation OpenCV reads); re-save the frame")
    height, width = int(match.group(1)), int(match.group(2))
    data = head[sum(len(x) + 1 for x in lines[: i + 2]):][:2]
    return FrameInfo(
        path=path, format="hdr", width=width, height=height, channels=("R", "G", "B"), part=None,
        colour="rgb",
        compression="rle" if data == b"\x02\x02" and 8 <= width < 32768 else "flat",
        data_window=(0, 0, width - 1, height - 1), display_window=(0, 0, width - 1, height - 1),
    )


# --------------------------------------------------------------------------- read


def read_frame(path, *, ingest: IngestConfig = IngestConfig(), min_size: int = 0,
               max_pixels: int = MAX_PIXELS) -> tuple[np.ndarray, ReadStats]:
    """Read one HDR frame as validated linear RGB.

    Parameters
    ----------
    path : str or os.PathLike
        An ``.exr`` or ``.hdr`` file.
    ingest : IngestConfig
        Part to read and the NaN/Inf and negative-value policies.
    min_size : int
        Both sides must be at least this long (e.g. the patch size), else ``too-small``.
    max_pixels : int
        Refuse (``too-large``) before decoding a file whose pixel count (all EXR parts
        together, since the bindings decode every part) exceeds this.

    Returns
    -------
    rgb : numpy.ndarray
        float32, shape (H, W, 3), C-contiguous, finite, >= 0; may exceed 65504.
    stats : ReadStats

    Raises
    ------
    BadFrameError
        With ``reason`` one of the codes in the module docstring; never a library exception.
    """
    path = str(path)
    info = probe(path, part=ingest.part)
    total = info.width * info.height
    if info.format == "exr" and info.n_parts > 1:
        total = _total_exr_pixels(path)
    if total > max_pixels:
        raise BadFrameError(path, "too-large", f"{info.width}x{info.height} ({total} pixels in all parts) "
                            f"exceeds the limit of {max_pixels} pixels; split the frame or raise max_pixels")
    if info.width < min_size or info.height < min_size:
        raise BadFrameError(path, "too-small", f"{info.width}x{info.height} is smaller than {min_size} "
                            f"on a side (the patch size); use larger frames or a smaller patch size")
    try:
        rgb = _decode_exr(path, info) if info.format == "exr" else _decode_hdr(path, info)
    except BadFrameError:
        raise
    except Exception as exc:  # no library exception escapes
        raise BadFrameError(path, "truncated", f"pixel data cannot be decoded ({type(exc).__name__}: {exc}); "
                            f"the file is damaged or incomplete: copy it again") from exc
    rgb, stats = _validate(path, rgb, ingest)
    if info.colour == "rgb" and info.chromaticities is not None and not np.allclose(
            info.chromaticities, _REC709, atol=1e-4):
        rgb = _to_rec709(rgb, info.chromaticities)
    return rgb, stats


def _total_exr_pixels(path: str) -> int:
    total = 0
    for p in OpenEXR.File(path, header_only=True).parts:
        x0, y0, x1, y1 = _box(p.header["dataWindow"])
        total += (x1 - x0 + 1) * (y1 - y0 + 1)
    return total


def _decode_hdr(path: str, info: FrameInfo) -> np.ndarray:
    bgr = cv2.imread(path, cv2.IMREAD_UNCHANGED)
    if bgr is None:
        raise BadFrameError(path, "truncated", f"the header reads ({info.width}x{info.height}) but OpenCV "
                            f"cannot decode the pixels; the file is damaged or incomplete: copy it again")
    if bgr.shape != (info.height, info.width, 3) or bgr.dtype != np.float32:
        raise BadFrameError(path, "unreadable", f"OpenCV returned {bgr.dtype} {bgr.shape}, expected float32 "
                            f"({info.height}, {info.width}, 3)")
    return cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)


def _decode_exr(path: str, info: FrameInfo) -> np.ndarray:
    parts = OpenEXR.File(path, separate_channels=True).parts
    # A truncated file opens without error and has fewer (usually zero) parts.
    if len(parts) != info.n_parts:
        raise BadFrameError(path, "truncated", f"header lists {info.n_parts} part(s) but only {len(parts)} "
                            f"decoded; the pixel data is incomplete or damaged: copy the file again")
    channels = parts[info.part_index].channels
    h, w = info.height, info.width
    planes = []
    for name in info.channels:
        px = channels[name].pixels if name in channels else None
        sub = name.endswith(("RY", "BY")) and info.colour == "yc"
        want = ((h + 1) // 2, (w + 1) // 2) if sub else (h, w)
        if px is None or px.shape != want:
            got = "missing" if px is None else f"shape {px.shape}"
            raise BadFrameError(path, "truncated", f"channel {name} decoded as {got}, expected {want}; "
                                f"the file is damaged: copy it again")
        if px.dtype not in (np.float16, np.float32):
            # the header-only API does not expose channel types, so this is found here
            raise BadFrameError(path, "unsupported-format", f"channel {name} holds {px.dtype} values, not "
                                f"half or float; re-export the frame as half or float")
        planes.append(px)
    if info.colour == "yc":
        return _yca_to_rgb(*planes, _luminance_weights(info.chromaticities or _REC709))
    rgb = np.empty((h, w, 3), np.float32)
    for i, plane in enumerate(planes if info.colour == "rgb" else planes * 3):
        rgb[..., i] = plane
    return rgb


def _to_rec709(rgb: np.ndarray, chroma) -> np.ndarray:
    """Validated RGB in primaries ``chroma`` -> linear Rec.709, out-of-gamut values clipped to 0.

    The clipping is part of the gamut conversion, so it is not counted as ``negative``:
    that policy judges the values stored in the file.
    """
    m = (np.linalg.inv(_rgb_to_xyz(_REC709)) @ _rgb_to_xyz(chroma)).astype(np.float32)
    out = (rgb.reshape(-1, 3) @ m.T).reshape(rgb.shape)
    return np.ascontiguousarray(np.maximum(out, 0, out=out))


# --------------------------------------------------------------------------- colour


def _rgb_to_xyz(chroma) -> np.ndarray:
    """3x3 matrix RGB -> XYZ for primaries/white ``(rx, ry, gx, gy, bx, by, wx, wy)``, white Y = 1."""
    rx, ry, gx, gy, bx, by, wx, wy = (float(v) for v in chroma)
    prim = np.array([[rx, gx, bx], [ry, gy, by], [1 - rx - ry, 1 - gx - gy, 1 - bx - by]])
    white = np.array([wx / wy, 1.0, (1 - wx - wy) / wy])
    return prim * np.linalg.solve(prim, white)


def _luminance_weights(chroma) -> np.ndarray:
    """OpenEXR's ``RgbaYca::computeYw``: the Y row of RGB -> XYZ, normalised to sum 1."""
    yw = _rgb_to_xyz(chroma)[1]
    return (yw / yw.sum()).astype(np.float32)


# Right half of OpenEXR's symmetric 14-tap interpolation filter (ImfRgbaYca.cpp,
# reconstructChromaHoriz/Vert), nearest sample first.
_CHROMA_TAPS = np.array([0.627123, -0.186077, 0.087929, -0.043159, 0.019597, -0.007540, 0.002128], np.float32)


def _half(a: np.ndarray) -> np.ndarray:
    """Round to float16 and back: OpenEXR stores every intermediate Rgba as half."""
    return a.astype(np.float16).astype(np.float32)


def _upsample_chroma(c: np.ndarray, n: int, axis: int) -> np.ndarray:
    """Chroma samples at even positions -> ``n`` positions along ``axis`` (edge samples repeat)."""
    c = np.moveaxis(c, axis, 0)
    out = np.empty((n,) + c.shape[1:], np.float32)
    out[0::2] = c[: (n + 1) // 2]
    out[1::2] = _half(_interpolate(c, np.arange(1, n, 2) // 2))
    return np.moveaxis(out, 0, axis)


def _interpolate(c: np.ndarray, left: np.ndarray) -> np.ndarray:
    """Filtered value half-way between samples ``left`` and ``left + 1`` along axis 0.

    ``left`` is increasing with step 1; samples outside ``c`` repeat the edge ones.
    """
    taps = len(_CHROMA_TAPS)
    pad = np.pad(c, [(taps, taps)] + [(0, 0)] * (c.ndim - 1), mode="edge")
    start = int(left[0]) + taps
    acc = np.zeros((left.size,) + c.shape[1:], np.float32)
    for k, tap in enumerate(_CHROMA_TAPS):
        lo = pad[start - k: start - k + left.size]
        hi = pad[start + 1 + k: start + 1 + k + left.size]
        acc += tap * (lo + hi)
    return acc


def _yca_to_rgb(y: np.ndarray, ry: np.ndarray, by: np.ndarray, yw: np.ndarray) -> np.ndarray:
    """Luminance/chroma to RGB as OpenEXR's ``RgbaInputFile`` does.

    Parameters
    ----------
    y : (H, W) half or float array; ry, by : (ceil(H/2), ceil(W/2)) chroma samples.
    yw : (3,) float32 luminance weights.

    Returns
    -------
    (H, W, 3) float32, half-rounded; may hold small negative values.
    """
    h, w = y.shape
    # One extra row above and below: the saturation fix looks at both neighbour rows.
    # OpenEXR clamps rows above the top to row 0 and rows below the bottom to row H-2.
    rows = np.clip(np.arange(-1, h + 1), 0, None)
    rows[-1] = max(h - 2, 0)
    lum = y.astype(np.float32)[rows]
    ryc = _upsample_chroma(ry.astype(np.float32), w, axis=1)
    byc = _upsample_chroma(by.astype(np.float32), w, axis=1)
    # vertical reconstruction on positions -1..H (clamped as above), then the Y,RY,BY -> RGB formula
    pos = np.arange(-1, h + 1)
    pos[-1] = rows[-1]
    ryv = _vertical_chroma(ryc, pos)
    byv = _vertical_chroma(byc, pos)
    r = (ryv + 1) * lum
    b = (byv + 1) * lum
    g = (lum - r * yw[0] - b * yw[2]) / yw[1]
    gray = (ryv == 0) & (byv == 0)
    rgb = _half(np.stack([np.where(gray, lum, r), np.where(gray, lum, g), np.where(gray, lum, b)], axis=-1))
    return _fix_saturation(rgb, yw)


def _vertical_chroma(c: np.ndarray, pos: np.ndarray) -> np.ndarray:
    """Chroma (rows = samples) at image rows ``pos`` (may include -1): even rows copy, odd rows filter."""
    out = np.empty((pos.size, c.shape[1]), np.float32)
    even = pos % 2 == 0
    out[even] = c[np.clip(pos[even] // 2, 0, c.shape[0] - 1)]
    odd = np.flatnonzero(~even)
    # odd positions are consecutive odd rows except a clamped last one: interpolate each run
    left = (pos[odd] - 1) // 2
    run = np.flatnonzero(np.diff(left) != 1) + 1
    for idx, lft in zip(np.split(odd, run), np.split(left, run)):
        out[idx] = _half(_interpolate(c, lft))
    return out


def _saturation(rgb: np.ndarray) -> np.ndarray:
    # elementwise over the three planes: a reduction over a length-3 last axis is ~10x slower
    r, g, b = rgb[..., 0], rgb[..., 1], rgb[..., 2]
    hi = np.maximum(np.maximum(r, g), b)
    lo = np.minimum(np.minimum(r, g), b)
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(hi > 0, 1 - lo / hi, 0).astype(np.float32)


def _fix_saturation(ext: np.ndarray, yw: np.ndarray) -> np.ndarray:
    """OpenEXR's ``RgbaYca::fixSaturation`` on rows 1..H of ``ext`` (rows 0 and H+1 are neighbours)."""
    sat = _saturation(ext)
    left = np.concatenate([sat[:, :1], sat[:, :-1]], axis=1)
    right = np.concatenate([sat[:, 1:], sat[:, -1:]], axis=1)
    s_mean = np.minimum(1, 0.25 * (left[:-2] + right[:-2] + left[2:] + right[2:]))
    rgb = ext[1:-1]
    s = sat[1:-1]
    s_max = np.minimum(1, 1 - (1 - s_mean) * 0.25)
    fix = (s > s_mean) & (s > s_max)
    if not fix.any():
        return np.ascontiguousarray(rgb)
    px = rgb[fix]
    f = (s_max[fix] / s[fix])[:, None]
    hi = px.max(axis=-1, keepdims=True)
    out = _half(np.maximum(hi - (hi - px) * f, 0))
    y_in = px @ yw
    y_out = out @ yw
    scale = np.where(y_out > 0, y_in / np.where(y_out > 0, y_out, 1), 1)[:, None]
    rgb = rgb.copy()
    rgb[fix] = _half(out * scale)
    return rgb


# --------------------------------------------------------------------------- validate


def _validate(path: str, rgb: np.ndarray, ingest: IngestConfig) -> tuple[np.ndarray, ReadStats]:
    lo, hi = float(rgb.min()), float(rgb.max())  # NaN or Inf anywhere shows up here
    nonfinite = 0
    if not (np.isfinite(lo) and np.isfinite(hi)):
        bad = ~np.isfinite(rgb)
        nonfinite = int(np.count_nonzero(bad))
        if ingest.nonfinite == "reject":
            row, col, _ = np.argwhere(bad)[0]
            raise BadFrameError(path, "nonfinite", f"{nonfinite} NaN/Inf values (first at row {row}, column "
                                f"{col}); set ingest.nonfinite='repair' to replace them or fix the frame")
        finite = rgb[~bad]
        posinf = np.isposinf(rgb)
        rgb[bad] = 0.0  # NaN and -Inf
        rgb[posinf] = float(finite.max()) if finite.size else 0.0
        lo, hi = float(rgb.min()), float(rgb.max())
    negative = 0
    if lo < 0:
        negative = int(np.count_nonzero(rgb < 0))
        if ingest.negative == "reject":
            raise BadFrameError(path, "negative", f"{negative} negative values (minimum {lo:.6g}); set "
                                f"ingest.negative='clamp' to set them to 0 or fix the frame")
        np.maximum(rgb, 0, out=rgb)
    above = int(np.count_nonzero(rgb > HALF_MAX)) if hi > HALF_MAX else 0
    return rgb, ReadStats(nonfinite=nonfinite, negative=negative, above_half_max=above)


# --------------------------------------------------------------------------- write


def _check_rgb(rgb) -> np.ndarray:
    rgb = np.asarray(rgb)
    if rgb.ndim != 3 or rgb.shape[2] != 3 or rgb.shape[0] < 1 or rgb.shape[1] < 1:
        raise ValueError(f"expected an RGB array of shape (H, W, 3), got shape {rgb.shape}")
    if not np.issubdtype(rgb.dtype, np.floating):
        raise ValueError(f"expected a float array of linear RGB, got dtype {rgb.dtype}")
    return rgb


def write_exr(path, rgb, *, half: bool = True, compression: str = "zip") -> None:
    """Write linear RGB as a single-part scanline OpenEXR file (R, G, B channels).

    Parameters
    ----------
    path : str or os.PathLike
    rgb : array_like, float, shape (H, W, 3)
        Any float values, NaN and Inf included (tests write such frames).
    half : bool
        Store float16 (finite values must be <= 65504 in magnitude) or float32.
    compression : str
        One of ``none, rle, zips, zip, piz, pxr24, b44, b44a, dwaa, dwab`` and ``zstd``
        where the bindings have it.

    The file appears under ``path`` only when complete (temporary name, then rename).
    """
    rgb = _check_rgb(rgb)
    if compression not in _COMPRESSIONS:
        raise ValueError(f"unknown EXR compression {compression!r}; choose one of {', '.join(_COMPRESSIONS)}")
    dtype = np.float16 if half else np.float32
    if half:
        finite = rgb[np.isfinite(rgb)]
        if finite.size and np.abs(finite).max() > HALF_MAX:
            raise ValueError(f"value {np.abs(finite).max():.6g} exceeds the float16 range (65504); "
                             f"pass half=False to store float32")
    # The bindings write non-contiguous arrays with scrambled pixels: copy each plane.
    channels = {c: np.ascontiguousarray(rgb[..., i], dtype=dtype) for i, c in enumerate("RGB")}
    header = {"compression": _COMPRESSIONS[compression], "type": OpenEXR.scanlineimage}
    atomic_write(path, lambda tmp: OpenEXR.File(header, channels).write(str(tmp)))


def write_hdr(path, rgb) -> None:
    """Write linear RGB as a Radiance RGBE ``.hdr`` file (via OpenCV, RLE-compressed).

    Parameters
    ----------
    path : str or os.PathLike
        Must end in ``.hdr``.
    rgb : array_like, float, shape (H, W, 3), values >= 0
        RGBE keeps about 8 bits of mantissa per pixel (shared exponent).
    """
    rgb = _check_rgb(rgb)
    if Path(path).suffix.lower() != ".hdr":
        raise ValueError(f"Radiance files must end in .hdr, got {path}")
    bgr = cv2.cvtColor(np.ascontiguousarray(rgb, dtype=np.float32), cv2.COLOR_RGB2BGR)

    def write(tmp: Path) -> None:
        if not cv2.imwrite(str(tmp), bgr):
            raise OSError(f"OpenCV could not write {path}")

    atomic_write(path, write)


def write_png(path, rgb) -> None:
    """Write an 8-bit RGB image as a PNG (lossless), atomically.

    Parameters
    ----------
    path : str or os.PathLike
    rgb : numpy.ndarray
        uint8 (H, W, 3) RGB.
    """
    rgb = np.asarray(rgb)
    if rgb.dtype != np.uint8 or rgb.ndim != 3 or rgb.shape[2] != 3:
        raise ValueError(f"expected uint8 RGB of shape (H, W, 3), got {rgb.dtype} {rgb.shape}")
    ok, buf = cv2.imencode(".png", cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR))
    if not ok:
        raise OSError(f"OpenCV could not encode {path} as PNG")
    atomic_write(path, lambda tmp: tmp.write_bytes(buf.tobytes()))
