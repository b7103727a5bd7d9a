"""Virtual camera: scene-linear HDR window -> (8-bit LDR, HDR target).

A re-implementation of the data-augmentation camera of Eilertsen et al. 2017
(``training_code/virtualcamera`` in gabrieleilertsen/hdrcnn; the numbers are in
the README's science section), written kornia style: :func:`sample_params` draws every
random choice of one capture into a small :class:`CameraParams`, and
:func:`render` applies them deterministically. The parameters round-trip to a
flat dict of scalars, so each row of the Parquet index can re-render its pair.

Two modes (``CameraConfig.mode``) apply the same parameters in different orders.

Mode ``santos2020`` (the default). Order of the steps in :func:`render`
(Eilertsen's order, except where noted):

1. exposure: ``x = exposure * hdr``. The caller sets ``exposure`` with
   :func:`exposure_for` (per frame or per window, ``CameraConfig.exposure_mode``)
   so that a fraction ``clip_quantile`` of the channel values stays <= 1.
2. colour jitter: hue + N(0, hue_std_deg) degrees and saturation + N(0, sat_std)
   in HSV (OpenCV's float formulas, without the 1e-7 it adds to V when dividing),
   computed on ``sqrt(x)`` and squared back, as Eilertsen does; deviations from
   Eilertsen: the hue wraps around (OpenCV does not wrap a negative hue), the
   saturation is clipped to [0, 1] (Eilertsen leaves it unclipped: a channel goes
   negative and is squared back), and each pixel is then scaled so that its gray
   0.299 R + 0.587 G + 0.114 B is unchanged (Eilertsen keeps V, the channel
   maximum). The jitter changes colour, not luminance, so the patch metric's
   detail layer is the same for every candidate of a frame and the score can be
   computed once per frame, exactly, on the stored target.
   The result is the **HDR target**: linear, camera scale (1.0 = clipping
   point), not clipped.
3. noise: Gaussian, ``sigma ~ U(0, noise_sigma_max)``, added in the linear
   domain before the camera curve, as Eilertsen does (so the curve shapes it
   like sensor noise). Deviation: Eilertsen adds it before the colour jitter and
   saves the noisy image as the target; here the target stays noise-free and the
   noise is added to it, so only the LDR is noisy. The standard normals come
   from a counter-based generator keyed by ``noise_seed`` (:func:`standard_normal`).
4. clip to [0, 1].
5. camera curve (:func:`apply_curve`): sigmoid ``(1+s) H^n / (H^n + s)``
   (Eilertsen), gamma ``H^(1/g)``, a tabulated DoRF curve, or identity.
   Eilertsen applies the curve before clipping; the curves are monotone with
   f(1) = 1, so clipping first gives the same 8-bit values.
6. 8-bit quantisation, rounding to nearest. Steps 4-6 are done exactly, by
   comparing each value with the curve's 255 level thresholds
   (:func:`level_thresholds`).
7. JPEG at quality ``min(jpeg_quality_min + U{0..jpeg_quality_span}, 100)``
   through OpenCV's encoder and decoder (libjpeg defaults, 4:2:0 chroma).

Mode ``eilertsen2017``: HDR-CNN's ``virtualcamera.cpp`` step by step, in its order,
with OpenCV's float32 arithmetic where the C++ calls OpenCV (checked against the
compiled program in ``tests/test_eilertsen_cpp.py``: bit-identical targets):

1. the window: a square crop resized to the output size and mirrored
   (:func:`crop_window`; the crop and the flip are drawn by
   ``candidates.sample_windows`` and recorded as ``crop`` and ``flip``);
2. clamp to [1e-5, 1e5];
3. exposure: times ``exposure``, which the caller sets with :func:`exposure_histogram`
   (``exposure_mode: histogram``): the C++'s 256-bin estimate of the clip quantile;
4. noise: ``max(0, x + sigma z)``, z as in santos2020 mode;
5. colour jitter on ``sqrt(x)``: OpenCV's float RGB -> HSV, H + hue (degrees),
   S + sat, HSV -> RGB, as OpenCV's SIMD code computes them (V kept, S not clipped,
   a negative H not wrapped), squared back;
6. clamp to [1e-5, 1e10]. The result is the **HDR target**, noise and jitter included;
7. curve, clip, 8-bit levels and JPEG as steps 4-7 above (the C++ clips in its
   8-bit conversion, after the curve; the same levels up to rounding boundaries).

Every random step can be switched off in :class:`~hdrprep.config.CameraConfig`
(``noise``, ``color_jitter``, ``jpeg``; curve ``'linear'`` is the identity).

Speed: steps 1-6 run in one Numba pass over the window
(``hdrprep._camera_kernels``, one thread, no fast-math), JPEG in OpenCV (it honours
the caller's ``cv2.setNumThreads``). The output is a deterministic function of
the window and the parameters, bit-identical on every machine up to OpenCV's
JPEG codec. The numpy implementation these kernels replaced is kept in
``tests/test_camera.py`` as the reference.
"""

from __future__ import annotations

import dataclasses
import functools
import math
import os
from dataclasses import dataclass

import cv2
import numpy as np

from hdrprep.config import CameraConfig
from hdrprep.errors import ConfigError

__all__ = [
    "CameraParams",
    "CurveTable",
    "load_curves",
    "sample_params",
    "exposure_for",
    "apply_curve",
    "render",
    "level_thresholds",
    "standard_normal",
    "soft_mask",
    "saturation_levels",
    "crop_window",
    "exposure_histogram",
    "CURVES",
    "RENDER_VERSION",
]

CURVES = ("sigmoid", "gamma", "table", "linear")
#: Version of what :func:`render` makes of given parameters. Bump it whenever the output for
#: the same window and parameters changes; stores record it, so re-rendering can tell.
RENDER_VERSION = 1
_SEED_LIMIT = 2**63


@dataclass(frozen=True)
class CameraParams:
    """Every sampled parameter of one virtual-camera capture.

    Fields that do not apply to the chosen curve are None; steps that are off
    have ``noise_sigma = 0.0``, ``hue_shift = sat_shift = 0.0``,
    ``jpeg_quality = 0``. :meth:`to_dict` gives a flat dict of float/int/str/None
    with stable keys (the Parquet index columns).

    Attributes
    ----------
    exposure : float
        Multiplier applied to the scene-linear HDR, > 0. :func:`sample_params`
        leaves it at 1.0; the caller sets it with :func:`exposure_for`.
    clip_quantile : float
        Fraction of channel values that stays <= 1 after exposure, in (0, 1).
    curve : str
        'sigmoid', 'gamma', 'table' or 'linear'.
    curve_n, curve_sigma : float or None
        Sigmoid exponent n and offset s (one curve for all three channels).
    curve_gamma : float or None
        Gamma g of ``H^(1/g)``.
    curve_index : int or None
        Row of the :class:`CurveTable`.
    noise_sigma : float
        Standard deviation of the Gaussian noise in linear camera units.
    noise_seed : int
        Seed of the per-pixel noise draw, in [0, 2**63).
    hue_shift : float
        Degrees.
    sat_shift : float
        Additive HSV saturation change.
    jpeg_quality : int
        1..100, or 0 when JPEG is off.
    crop : int
        Side in pixels of the square source window that is resized to the output
        size (``sampling.scale``; :func:`crop_window`); 0 = native: the window is
        taken at the output size and not resized (santos2020's default; also what
        stores written before this field read as).
    flip : bool
        The window is mirrored left-right after the resize (``sampling.flip``);
        False in stores written before this field.
    """

    exposure: float
    clip_quantile: float
    curve: str
    curve_n: float | None
    curve_sigma: float | None
    curve_gamma: float | None
    curve_index: int | None
    noise_sigma: float
    noise_seed: int
    hue_shift: float
    sat_shift: float
    jpeg_quality: int
    crop: int = 0
    flip: bool = False

    def __post_init__(self) -> None:
        def bad(key, fix):
            raise ValueError(f"CameraParams: invalid {key}={getattr(self, key)!r}: {fix}")

        if not (math.isfinite(self.exposure) and self.exposure > 0):
            bad("exposure", "use a finite value > 0 (see exposure_for)")
        if not 0 < self.clip_quantile < 1:
            bad("clip_quantile", "use a fraction in (0, 1)")
        if self.curve not in CURVES:
            bad("curve", f"choose one of {', '.join(CURVES)}")
        needed = {"sigmoid": ("curve_n", "curve_sigma"), "gamma": ("curve_gamma",),
                  "table": ("curve_index",), "linear": ()}[self.curve]
        for key in ("curve_n", "curve_sigma", "curve_gamma", "curve_index"):
            if (getattr(self, key) is None) == (key in needed):
                bad(key, f"curve '{self.curve}' needs {', '.join(needed) or 'no curve parameters'}; "
                         "the others must be None")
        if self.curve == "sigmoid" and not (self.curve_n > 0 and self.curve_sigma >= 0):
            bad("curve_n", "the sigmoid needs n > 0 and sigma >= 0")
        if self.curve == "gamma" and not self.curve_gamma > 0:
            bad("curve_gamma", "use a gamma > 0")
        if self.curve == "table" and self.curve_index < 0:
            bad("curve_index", "use a row index >= 0")
        if not (math.isfinite(self.noise_sigma) and self.noise_sigma >= 0):
            bad("noise_sigma", "use a finite value >= 0")
        if not 0 <= self.noise_seed < _SEED_LIMIT:
            bad("noise_seed", "use an integer in [0, 2**63)")
        if not (math.isfinite(self.hue_shift) and math.isfinite(self.sat_shift)):
            bad("hue_shift", "hue and saturation shifts must be finite")
        if not 0 <= self.jpeg_quality <= 100:
            bad("jpeg_quality", "use 1..100, or 0 for no JPEG")
        if not 0 <= self.crop < 2**31:
            bad("crop", "use a window side in pixels, or 0 for a native window")
        if not isinstance(self.flip, (bool, np.bool_)):
            bad("flip", "use True or False")

    def to_dict(self) -> dict:
        """Flat dict ``{field: float | int | str | None}`` in field order."""
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> "CameraParams":
        """Inverse of :meth:`to_dict`; also accepts numpy scalars and NaN for None.

        Keys of fields added later (``crop``, ``flip``) may be missing or None: they take
        their defaults, what a row written before them means. Raises ValueError naming
        other missing keys or unknown keys.
        """
        names = [f.name for f in dataclasses.fields(cls)]
        later = {f.name for f in dataclasses.fields(cls) if f.default is not dataclasses.MISSING}
        missing = [k for k in names if k not in d and k not in later]
        unknown = sorted(set(d) - set(names))
        if missing or unknown:
            raise ValueError(f"CameraParams.from_dict: missing keys {missing}, unknown keys {unknown}")
        kwargs = {}
        for f in dataclasses.fields(cls):
            kind, optional = _KINDS[f.type], "None" in f.type  # f.type is the annotation string
            v = d.get(f.name)
            if f.name in later and (v is None or (isinstance(v, (float, np.floating)) and math.isnan(v))):
                v = f.default
            if optional and isinstance(v, (float, np.floating)) and math.isnan(v):
                v = None  # Parquet readers may give NaN for a null float/int column
            if v is not None:
                if kind is int and isinstance(v, (float, np.floating)) and not float(v).is_integer():
                    raise ValueError(f"CameraParams.from_dict: {f.name}={v!r} must be an integer")
                if kind is bool and not isinstance(v, (bool, np.bool_)) and v not in (0, 1):
                    raise ValueError(f"CameraParams.from_dict: {f.name}={v!r} must be true or false")
                v = kind(v)
            kwargs[f.name] = v
        return cls(**kwargs)


_KINDS = {"float": float, "float | None": float, "int": int, "int | None": int, "str": str, "bool": bool}


class CurveTable:
    """Tabulated camera response curves (DoRF format, Grossberg & Nayar).

    Each curve is stored normalised so that f(0) = 0 and f(1) = 1, made
    non-decreasing by a running maximum (measured curves may wiggle by a
    sample), and applied by linear interpolation.

    Parameters
    ----------
    names : sequence of str
        One name per curve.
    irradiance, brightness : array_like, shape (n_curves, n_samples)
        Samples of each curve; irradiance strictly increasing per curve.
    source : str
        Where the curves came from, for error messages.
    """

    def __init__(self, names, irradiance, brightness, source: str = "<arrays>"):
        irr = np.asarray(irradiance, dtype=np.float64)
        bri = np.asarray(brightness, dtype=np.float64)
        if irr.ndim != 2 or irr.shape != bri.shape or irr.shape[1] < 2 or len(names) != irr.shape[0]:
            raise ConfigError(f"{source}: curve samples must be two (n_curves, n_samples) arrays with "
                              f"n_samples >= 2 and one name per curve; got {irr.shape}, {bri.shape}, "
                              f"{len(names)} names")
        for i, name in enumerate(names):
            if not (np.all(np.isfinite(irr[i])) and np.all(np.isfinite(bri[i]))):
                raise ConfigError(f"{source}: curve {i} '{name}' has non-finite samples")
            if np.any(np.diff(irr[i]) <= 0):
                raise ConfigError(f"{source}: curve {i} '{name}': irradiance samples must be strictly "
                                  "increasing")
            bri[i] = np.maximum.accumulate(bri[i])
            if bri[i, -1] <= bri[i, 0]:
                raise ConfigError(f"{source}: curve {i} '{name}': brightness is constant or decreasing; "
                                  "a camera curve must rise from its first to its last sample")
        self.names = tuple(str(n) for n in names)
        self.source = source
        self._irr = (irr - irr[:, :1]) / (irr[:, -1:] - irr[:, :1])
        self._bri = (bri - bri[:, :1]) / (bri[:, -1:] - bri[:, :1])

    @property
    def n_curves(self) -> int:
        return len(self.names)

    @classmethod
    def load(cls, path: str | os.PathLike) -> "CurveTable":
        """Read a DoRF-format text file (``dorfCurves.txt``: 201 curves x 1024 samples).

        Each curve is a block of non-empty lines: a name, a type (e.g. ``graph``),
        ``I =``, a line of irradiance samples, ``B =``, a line of brightness
        samples (the samples may also follow ``=`` on the same line).

        Raises
        ------
        ConfigError
            If the file cannot be read or is malformed; the message names the
            file and the line.
        """
        path = os.fspath(path)
        try:
            with open(path, encoding="utf-8", errors="replace") as fh:
                lines = [(i + 1, ln.strip()) for i, ln in enumerate(fh) if ln.strip()]
        except OSError as exc:
            raise ConfigError(f"camera curve table {path}: cannot read ({exc.strerror}); "
                              "give the path of a DoRF-format text file in camera.table_path") from exc
        layout = ("a DoRF curve file has blocks of: name, type, 'I =', irradiance samples, "
                  "'B =', brightness samples")
        pos = 0

        def numbers(label: str) -> list[float]:
            nonlocal pos
            if pos >= len(lines):
                raise ConfigError(f"{path}: ends before '{label} =' of the last curve; {layout}")
            lineno, text = lines[pos]
            head, eq, rest = text.partition("=")
            if head.strip() != label or not eq:
                raise ConfigError(f"{path}, line {lineno}: expected '{label} =', got {text[:40]!r}; {layout}")
            pos += 1
            if not rest.strip():
                if pos >= len(lines):
                    raise ConfigError(f"{path}: ends after '{label} =' on line {lineno}; {layout}")
                lineno, rest = lines[pos]
                pos += 1
            try:
                return [float(t) for t in rest.split()]
            except ValueError as exc:
                raise ConfigError(f"{path}, line {lineno}: {label} samples must be numbers ({exc})") from exc

        names, irr, bri = [], [], []
        while pos < len(lines):
            if pos + 1 >= len(lines):
                raise ConfigError(f"{path}, line {lines[pos][0]}: incomplete curve block; {layout}")
            name_line = lines[pos][0]
            names.append(lines[pos][1])
            pos += 2  # name, type
            irr.append(numbers("I"))
            bri.append(numbers("B"))
            n = len(irr[0])
            if len(irr[-1]) != n or len(bri[-1]) != n:
                raise ConfigError(f"{path}, curve '{names[-1]}' (line {name_line}): has {len(irr[-1])} I and "
                                  f"{len(bri[-1])} B samples, the first curve has {n}; all must match")
        if not names:
            raise ConfigError(f"{path}: no curves found; {layout}")
        return cls(names, irr, bri, source=path)

    def apply(self, x: np.ndarray, index: int) -> np.ndarray:
        """Curve ``index`` applied to ``x`` (any shape, values in [0, 1]) -> float32, same shape."""
        if not 0 <= index < self.n_curves:
            raise IndexError(f"curve index {index} out of range: {self.source} has {self.n_curves} curves")
        return np.interp(x, self._irr[index], self._bri[index]).astype(np.float32)

    def inverse(self, y: np.ndarray, index: int) -> np.ndarray:
        """Smallest x with ``f(x) >= y`` for curve ``index``; y float64 in (0, 1) -> float64, same shape."""
        if not 0 <= index < self.n_curves:
            raise IndexError(f"curve index {index} out of range: {self.source} has {self.n_curves} curves")
        irr, bri = self._irr[index], self._bri[index]
        j = np.clip(np.searchsorted(bri, y, side="left"), 1, len(bri) - 1)  # bri[j-1] < y <= bri[j]
        return irr[j - 1] + (y - bri[j - 1]) * ((irr[j] - irr[j - 1]) / (bri[j] - bri[j - 1]))


def load_curves(cfg: CameraConfig) -> CurveTable | None:
    """The tabulated curves ``cfg.table_path`` when ``cfg.curve == 'table'``, else None."""
    return CurveTable.load(cfg.table_path) if cfg.curve == "table" else None


def sample_params(rng: np.random.Generator, cfg: CameraConfig, *,
                  curves: CurveTable | None = None) -> CameraParams:
    """Draw the parameters of one capture.

    The draws always happen in the same order and number, whatever the curve
    family and the on/off switches, so switching a step off leaves every other
    parameter (and the state ``rng`` is left in) unchanged. Order: clip
    quantile, sigmoid n, sigmoid s, gamma, table row, noise sigma, noise seed,
    hue, saturation, JPEG quality.

    Parameters
    ----------
    rng : numpy.random.Generator
    cfg : CameraConfig
    curves : CurveTable, optional
        Required when ``cfg.curve == 'table'``.

    Returns
    -------
    CameraParams
        With ``exposure = 1.0``; set it with ``dataclasses.replace`` and
        :func:`exposure_for`.
    """
    if cfg.curve == "table" and curves is None:
        raise ValueError(f"camera curve 'table' needs curves=CurveTable.load({cfg.table_path!r})")
    clip_quantile = rng.uniform(cfg.clip_low, cfg.clip_high)
    n = min(max(rng.normal(cfg.sigmoid_n_mean, cfg.sigmoid_n_std), cfg.sigmoid_n_min), cfg.sigmoid_n_max)
    s = min(max(rng.normal(cfg.sigmoid_sigma_mean, cfg.sigmoid_sigma_std), cfg.sigmoid_sigma_min),
            cfg.sigmoid_sigma_max)
    gamma = rng.uniform(cfg.gamma_min, cfg.gamma_max)
    u_row = rng.random()
    noise_sigma = rng.uniform(0.0, cfg.noise_sigma_max)
    noise_seed = int(rng.integers(0, _SEED_LIMIT, dtype=np.int64))
    hue = rng.normal(0.0, cfg.hue_std_deg)
    sat = rng.normal(0.0, cfg.sat_std)
    quality = min(cfg.jpeg_quality_min + int(rng.integers(0, cfg.jpeg_quality_span + 1)), 100)
    return CameraParams(
        exposure=1.0,
        clip_quantile=float(clip_quantile),
        curve=cfg.curve,
        curve_n=float(n) if cfg.curve == "sigmoid" else None,
        curve_sigma=float(s) if cfg.curve == "sigmoid" else None,
        curve_gamma=float(gamma) if cfg.curve == "gamma" else None,
        curve_index=min(int(u_row * curves.n_curves), curves.n_curves - 1) if cfg.curve == "table" else None,
        noise_sigma=float(noise_sigma) if cfg.noise else 0.0,
        noise_seed=noise_seed,
        hue_shift=float(hue) if cfg.color_jitter else 0.0,
        sat_shift=float(sat) if cfg.color_jitter else 0.0,
        jpeg_quality=quality if cfg.jpeg else 0,
    )


def exposure_for(hdr: np.ndarray, clip_quantile: float) -> float:
    """Exposure that keeps a fraction ``clip_quantile`` of channel values <= 1.

    Returns ``1 / v`` where ``v`` is the ``ceil(clip_quantile * N)``-th smallest
    of the N channel values, so at least that fraction of ``s * hdr`` is <= 1
    (exactly that fraction, up to ties and the rounding of ``s * v``). Exact
    (``np.partition``), about 1 ms per 512x512 window and 17 ms per 2048x1365
    frame on one core.

    Parameters
    ----------
    hdr : ndarray
        Scene-linear values >= 0, any shape (usually (h, w, 3)).
    clip_quantile : float
        In (0, 1).

    Returns
    -------
    float
        The scale s > 0. If more than ``clip_quantile`` of the values are 0
        (a mostly black window), ``1 / max`` instead: nothing needs clipping.

    Raises
    ------
    ValueError
        If every value is 0 (nothing to expose), a value is NaN/Inf, or
        ``clip_quantile`` is outside (0, 1).
    """
    if not 0 < clip_quantile < 1:
        raise ValueError(f"exposure_for: clip_quantile={clip_quantile!r} must be in (0, 1)")
    flat = np.asarray(hdr).reshape(-1)
    if flat.size == 0:
        raise ValueError("exposure_for: empty image")
    k = min(max(math.ceil(clip_quantile * flat.size) - 1, 0), flat.size - 1)
    part = np.partition(flat, k)
    v = float(part[k])
    top = float(part[k:].max())  # NaNs sort last, so this catches them too
    if not (math.isfinite(v) and math.isfinite(top)):
        raise ValueError("exposure_for: the image has NaN or Inf values; repair or reject the frame first")
    if top <= 0:
        raise ValueError("exposure_for: every value is 0 (a black image has no exposure); skip this frame or window")
    return 1.0 / (v if v > 0 else top)


def apply_curve(x: np.ndarray, params: CameraParams, curves: CurveTable | None = None, *,
                out: np.ndarray | None = None) -> np.ndarray:
    """Camera curve of ``params`` applied per value.

    Parameters
    ----------
    x : ndarray, float32
        Linear values in [0, 1], any shape.
    params : CameraParams
    curves : CurveTable, optional
        Required for curve 'table'.
    out : ndarray, optional
        Float32 C-contiguous array of x's shape to write into (may be ``x``).

    Returns
    -------
    ndarray, float32
        Values in [0, 1]; every curve is monotone with f(0) = 0 and f(1) = 1.
        The sigmoid with s = 0 is the step f(H) = 1 for H > 0, f(0) = 0.
    """
    x = np.ascontiguousarray(x, dtype=np.float32)
    if out is None:
        out = np.empty_like(x)
    elif out.dtype != np.float32 or out.shape != x.shape or not out.flags.c_contiguous:
        raise ValueError(f"apply_curve: out must be a C-contiguous float32 array of shape {x.shape}")
    flat_x, flat_out = x.reshape(-1), out.reshape(-1)  # cv2 takes any length as a column
    if params.curve == "sigmoid":
        n, s = np.float32(params.curve_n), np.float32(params.curve_sigma)
        if s == 0:
            np.greater(x, 0, out=out)
        else:
            cv2.pow(flat_x, float(n), dst=flat_out)
            # (1+s) / (1 + s/H^n): H^n enters one correctly rounded operation at a
            # time, so the float32 result stays monotone; f(1) = 1 and f(0) = (1+s)/inf = 0
            with np.errstate(divide="ignore"):
                np.divide(s, out, out=out)
            out += np.float32(1)
            np.divide(np.float32(1) + s, out, out=out)
    elif params.curve == "gamma":
        cv2.pow(flat_x, 1.0 / params.curve_gamma, dst=flat_out)
    elif params.curve == "table":
        if curves is None:
            raise ValueError("camera curve 'table' needs the CurveTable (curves=...)")
        out[...] = curves.apply(x, params.curve_index)
    elif out is not x:
        np.copyto(out, x)
    return out


def render(hdr: np.ndarray, params: CameraParams, cfg: CameraConfig,
           curves: CurveTable | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Simulate one capture of a scene-linear window (step order: module docstring).

    A step runs when it is switched on in ``cfg`` and its parameter is not the
    identity (``noise_sigma > 0``, a non-zero shift, ``jpeg_quality > 0``);
    :func:`sample_params` already zeroes the parameters of steps that are off.
    The noise of channel value (y, x, c) is ``noise_sigma`` times the standard
    normal of counter ``(y * w + x) * 3 + c`` under ``noise_seed`` (see
    :func:`standard_normal`), so it depends on the window's shape, not on threads.

    Parameters
    ----------
    hdr : ndarray, shape (h, w, 3)
        Scene-linear RGB, values >= 0, not yet exposed; converted to float32.
    params : CameraParams
    cfg : CameraConfig
    curves : CurveTable, optional
        Required for curve 'table'.

    Returns
    -------
    ldr : ndarray, uint8, shape (h, w, 3)
        RGB camera output in 0..255.
    target : ndarray, float32, shape (h, w, 3)
        santos2020 mode: ``exposure * hdr`` after colour jitter: linear, 1.0 = clipping
        point, not clipped. eilertsen2017 mode: virtualcamera.cpp's target (clamped,
        exposed, noisy, jittered, clamped; see the module docstring).
    """
    hdr = np.asarray(hdr)
    if hdr.ndim != 3 or hdr.shape[2] != 3 or hdr.shape[0] == 0 or hdr.shape[1] == 0:
        raise ValueError(f"render: hdr must be an (h, w, 3) RGB array, got shape {hdr.shape}")
    if hdr.size >= 2**32:
        raise ValueError(f"render: a {hdr.shape[1]}x{hdr.shape[0]} window has more values than the noise "
                         "counter holds (2**32); render smaller windows")
    if hdr.dtype != np.float32:
        hdr = hdr.astype(np.float32)
    if cfg.mode == "eilertsen2017":
        return _render_eilertsen(hdr, params, cfg, curves)
    k = _kernels()
    jitter = bool(cfg.color_jitter and (params.hue_shift != 0 or params.sat_shift != 0))
    sigma = params.noise_sigma if cfg.noise else 0.0
    jpeg = bool(cfg.jpeg and params.jpeg_quality > 0)
    thresholds = level_thresholds(params, curves)
    start = np.empty(k.LEVEL_BINS, np.uint8)
    k.level_table(thresholds, start)
    k1, k2 = k.noise_keys(params.noise_seed)
    main, tail = _normal_tables()
    target = np.empty(hdr.shape, np.float32)
    ldr = np.empty(hdr.shape, np.uint8)
    # hue in sextants in [0, 6) (the kernel's HSV unit); the LDR comes out in BGR when JPEG follows
    k.render_window(hdr, np.float32(params.exposure), jitter, np.float32((params.hue_shift % 360.0) / 60.0),
                    np.float32(params.sat_shift), np.float32(sigma), k1, k2, main, tail, thresholds, start,
                    jpeg, target, ldr)
    if jpeg:
        ldr = _jpeg(ldr, params.jpeg_quality)
    return ldr, target


def _render_eilertsen(hdr: np.ndarray, params: CameraParams, cfg: CameraConfig,
                      curves: CurveTable | None) -> tuple[np.ndarray, np.ndarray]:
    """:func:`render` in ``eilertsen2017`` mode (steps: the module docstring)."""
    k = _kernels()
    sigma = params.noise_sigma if cfg.noise else 0.0
    jpeg = bool(cfg.jpeg and params.jpeg_quality > 0)
    k1, k2 = k.noise_keys(params.noise_seed)
    main, tail = _normal_tables()
    target = np.empty(hdr.shape, np.float32)
    k.eilertsen_target(hdr, np.float32(params.exposure), bool(cfg.color_jitter), np.float32(params.hue_shift),
                       np.float32(params.sat_shift), np.float32(sigma), k1, k2, main, tail, target)
    # the curve and the 8-bit levels of the target: the santos2020 kernel with exposure 1 and no
    # jitter or noise (x * 1.0f == x), so both modes quantise the same way
    thresholds = level_thresholds(params, curves)
    start = np.empty(k.LEVEL_BINS, np.uint8)
    k.level_table(thresholds, start)
    ldr = np.empty(hdr.shape, np.uint8)
    k.render_window(target, np.float32(1.0), False, np.float32(0.0), np.float32(0.0), np.float32(0.0), k1, k2,
                    main, tail, thresholds, start, jpeg, np.empty(hdr.shape, np.float32), ldr)
    if jpeg:
        ldr = _jpeg(ldr, params.jpeg_quality)
    return ldr, target


def crop_window(frame: np.ndarray, row: int, col: int, size: int, crop: int = 0,
                flip: bool = False) -> np.ndarray:
    """The (size, size, 3) window a candidate sees: a crop of the frame, resized and mirrored.

    ``crop == 0`` (native): ``frame[row:row + size, col:col + size]``, a view when not
    mirrored. Otherwise the ``crop`` x ``crop`` square at (row, col) is resized to
    ``size`` x ``size`` as ``cv::resize(..., INTER_LINEAR)`` does it for float32
    (OpenCV's coefficients and float32 arithmetic, reproduced exactly: its INTER_AREA
    switch at exactly 2x included; a crop of ``size`` is copied). ``flip`` mirrors the
    result left-right (``cv::flip(x, 1)``), after the resize as virtualcamera.cpp does.

    Parameters
    ----------
    frame : ndarray, float32 (H, W, 3)
    row, col : int
        Top-left corner of the crop in the frame.
    size : int
        Output side.
    crop : int
        Source side, 0 or >= 1; the crop must lie inside the frame.
    flip : bool

    Returns
    -------
    ndarray, float32 (size, size, 3)
    """
    side = crop or size
    if row < 0 or col < 0 or row + side > frame.shape[0] or col + side > frame.shape[1]:
        raise ValueError(f"crop_window: a {side}-px crop at ({row}, {col}) is outside the "
                         f"{frame.shape[1]}x{frame.shape[0]} frame")
    src = frame[row:row + side, col:col + side]
    if src.dtype != np.float32:
        src = src.astype(np.float32)
    if crop in (0, size):  # cv::resize copies a same-size image
        return np.ascontiguousarray(src[:, ::-1]) if flip else src
    tables = _resize_tables(side, size)
    out = np.empty((size, size, 3), np.float32)
    _kernels().resize_linear(src, *tables, side == 2 * size, bool(flip), out)
    return out


@functools.lru_cache(maxsize=64)
def _resize_tables(src: int, dst: int) -> tuple:
    """OpenCV's INTER_LINEAR tables for a square src -> dst resize: (yofs, beta, xofs, alpha, xmax).

    ``f = float32((d + 0.5) * scale - 0.5)`` with ``scale = 1 / (dst / src)`` in double,
    ``s = floor(f)``, weight ``f - s`` in float32. Columns: a source column before the
    first gets weight 0 at column 0; from the first output column whose ``s + 1`` is
    past the last source column on (``xmax``), the last column is copied. Rows: the
    source rows are clamped, the weights kept.
    """
    scale = 1.0 / (dst / src)
    f = ((np.arange(dst, dtype=np.float64) + 0.5) * scale - 0.5).astype(np.float32)
    s = np.floor(f).astype(np.intp)
    frac = (f - s.astype(np.float32)).astype(np.float32)
    yofs, beta = s.copy(), frac.copy()
    over = np.flatnonzero(s >= src - 1)
    xmax = int(over[0]) if over.size else dst
    xofs, alpha = s.copy(), frac.copy()
    alpha[s < 0] = 0
    xofs[s < 0] = 0
    alpha[s >= src - 1] = 0
    xofs[s >= src - 1] = src - 1
    for a in (yofs, beta, xofs, alpha):
        a.setflags(write=False)
    return yofs, beta, xofs, alpha, xmax


def exposure_histogram(window: np.ndarray, clip_quantile: float) -> float | None:
    """virtualcamera.cpp's exposure of a (resized) window: its 256-bin estimate of a quantile.

    The window is clamped to [1e-5, 1e5]; the bins are equal steps of the square root
    between its minimum and maximum (+ 1e-5); the cumulative share of the 3 h w channel
    values is summed bin by bin (in float32) until it reaches ``clip_quantile`` (not
    before the second bin), and the value at that share is interpolated linearly inside
    the bin. The exposure is 1 / that value, in float32, as the C++ multiplies by it.
    Close to :func:`exposure_for` but not equal (the quantile is interpolated).

    Returns
    -------
    float or None
        The float32 exposure as a float; None where the window is too flat for 256
        increasing float32 bins (the C++ fails there; callers fall back on
        :func:`exposure_for`).
    """
    window = np.asarray(window)
    if window.ndim != 3 or window.shape[2] != 3 or window.size == 0:
        raise ValueError(f"exposure_histogram: expected an (h, w, 3) window, got shape {window.shape}")
    if not 0 < clip_quantile < 1:
        raise ValueError(f"exposure_histogram: clip_quantile={clip_quantile!r} must be in (0, 1)")
    if window.dtype != np.float32:
        window = window.astype(np.float32)
    k = _kernels()
    e = k.histogram_exposure(window, np.float32(clip_quantile), np.empty(k.HIST_BINS + 1, np.float32),
                             np.empty(k.HIST_BINS, np.int64))
    if not (e > 0 and math.isfinite(e)):
        return None
    return float(e)


def level_thresholds(params: CameraParams, curves: CurveTable | None = None) -> np.ndarray:
    """Linear values at which the camera's 8-bit output steps up, for clip + curve + quantisation.

    ``t[k - 1]`` is the smallest float32 x with ``f(x) >= (k - 1/2) / 255``
    (f the curve of ``params``), so the LDR level of a float32 value x is the
    number of thresholds ``<= x``: ``floor(255 f(clip(x, 0, 1)) + 1/2)`` in exact
    arithmetic. Computed in float64 and rounded up to float32; two machines
    disagree only if a float64 result lands within an ulp of a float32 number
    (about 1 in 10^8 thresholds).

    Returns
    -------
    ndarray, float32, shape (255,)
        Non-decreasing, in (0, 1].
    """
    y = (np.arange(1, 256, dtype=np.float64) - 0.5) / 255.0
    if params.curve == "sigmoid":
        s, n = params.curve_sigma, params.curve_n
        # f(H) = (1+s) H^n / (H^n + s)  <=>  H^n = s y / (1 + s - y); s = 0 is the step f(H > 0) = 1
        t = (s * y / (1.0 + s - y)) ** (1.0 / n) if s > 0 else np.zeros_like(y)
    elif params.curve == "gamma":
        t = y ** params.curve_gamma
    elif params.curve == "table":
        if curves is None:
            raise ValueError("camera curve 'table' needs the CurveTable (curves=...)")
        t = curves.inverse(y, params.curve_index)
    else:
        t = y
    t32 = t.astype(np.float32)
    t32 = np.where(t32 < t, np.nextafter(t32, np.float32(np.inf)), t32)
    # x >= t must mean x > 0 (f(0) = 0); the running maximum guards against a non-monotone float64 power
    return np.maximum.accumulate(np.maximum(t32, np.nextafter(np.float32(0), np.float32(1))))


def standard_normal(n: int, seed: int) -> np.ndarray:
    """The first ``n`` values of the noise stream of ``seed`` (what :func:`render` scales by sigma).

    Value i is the inverse normal CDF, tabulated and interpolated, of a 32-bit
    hash of (seed, i): a deterministic function of both, the same on every
    machine. Tails reach |z| = 6.3 (u = 2**-33).

    Returns
    -------
    ndarray, float32, shape (n,)
    """
    k = _kernels()
    out = np.empty(n, np.float32)
    k.standard_normal(n, *k.noise_keys(seed), *_normal_tables(), out)
    return out


def _kernels():
    """The Numba kernel module, imported on first use (it imports numba)."""
    from hdrprep import _camera_kernels

    return _camera_kernels


@functools.lru_cache(maxsize=1)
def _normal_tables() -> tuple[np.ndarray, np.ndarray]:
    return _kernels().normal_tables()


# OpenCV >= 4.10 decodes straight to RGB; older versions need a conversion
_IMREAD_RGB = getattr(cv2, "IMREAD_COLOR_RGB", None)


def _jpeg(bgr: np.ndarray, quality: int) -> np.ndarray:
    """JPEG encode + decode through OpenCV (libjpeg defaults, 4:2:0); BGR in, RGB out."""
    ok, buf = cv2.imencode(".jpg", bgr, [cv2.IMWRITE_JPEG_QUALITY, int(quality)])
    if not ok:
        raise RuntimeError(f"OpenCV could not JPEG-encode a {bgr.shape} image at quality {quality}")
    if _IMREAD_RGB is not None:
        return cv2.imdecode(buf, _IMREAD_RGB)
    return cv2.cvtColor(cv2.imdecode(buf, cv2.IMREAD_COLOR), cv2.COLOR_BGR2RGB)


def saturation_levels(hdr: np.ndarray, params: CameraParams, alpha: float,
                      curves: CurveTable | None = None) -> tuple[np.ndarray, float]:
    """The saturated part of the deterministic camera's LDR: a cheap stand-in for :func:`render`'s mask.

    Runs exposure, clip, curve and 8-bit quantisation only (no colour jitter,
    noise or JPEG), and keeps only the levels at which :func:`soft_mask` is
    below 1; every other value is 0, which the mask also maps to 1. About a
    sixth of :func:`render`'s cost: the build scores every candidate on this and
    renders the full camera only for the promising ones (``metric.prescreen_margin``).

    Parameters
    ----------
    hdr : ndarray, shape (h, w, 3)
        Scene-linear window, not yet exposed; converted to float32.
    params : CameraParams
        Only the exposure and the curve are used.
    alpha : float
        Soft-mask threshold in (0, 1).

    Returns
    -------
    ldr : ndarray, uint8, shape (h, w, 3)
        ``soft_mask(ldr, alpha)`` equals the soft mask of the deterministic camera's LDR.
    saturated_fraction : float
        Share of pixels with a channel whose mask is below 1, in [0, 1].
    """
    if not 0 < alpha < 1:
        raise ValueError(f"saturation_levels: alpha={alpha!r} must be in (0, 1); the paper uses 0.96")
    hdr = np.asarray(hdr)
    if hdr.ndim != 3 or hdr.shape[2] != 3 or hdr.shape[0] == 0 or hdr.shape[1] == 0:
        raise ValueError(f"saturation_levels: hdr must be an (h, w, 3) RGB array, got shape {hdr.shape}")
    if hdr.dtype != np.float32:
        hdr = hdr.astype(np.float32)
    k = _kernels()
    thresholds = level_thresholds(params, curves)
    start = np.empty(k.LEVEL_BINS, np.uint8)
    k.level_table(thresholds, start)
    vmin = _first_unmasked_level(alpha)
    ldr = np.empty(hdr.shape, np.uint8)
    count = k.base_levels(hdr, np.float32(params.exposure), thresholds, start, vmin, ldr)
    return ldr, count / (hdr.shape[0] * hdr.shape[1])


@functools.lru_cache(maxsize=8)
def _first_unmasked_level(alpha: float) -> int:
    """The lowest 8-bit level whose soft mask is below 1 (in 1..255 for alpha in (0, 1))."""
    return int(np.flatnonzero(soft_mask(np.arange(256, dtype=np.uint8), alpha) < 1)[0])


def soft_mask(ldr: np.ndarray, alpha: float) -> np.ndarray:
    """Santos et al. 2020 (Fig. 2) soft mask of well-exposed pixels.

    Per pixel and channel, ``T = ldr / 255`` and ``M = clip((1 - T) / (1 - alpha), 0, 1)``:
    1 up to ``alpha``, falling linearly to 0 at T = 1.

    Parameters
    ----------
    ldr : ndarray, uint8
        Any shape, usually (h, w, 3).
    alpha : float
        Threshold in (0, 1); the paper uses 0.96.

    Returns
    -------
    ndarray, float32, same shape, values in [0, 1].
    """
    if not 0 < alpha < 1:
        raise ValueError(f"soft_mask: alpha={alpha!r} must be in (0, 1); the paper uses 0.96")
    ldr = np.asarray(ldr)
    if ldr.dtype != np.uint8:
        raise ValueError(f"soft_mask: ldr must be uint8, got {ldr.dtype}")
    lut = np.clip((1.0 - np.arange(256) / 255.0) / (1.0 - alpha), 0.0, 1.0).astype(np.float32)
    flat = np.ascontiguousarray(ldr).reshape(-1)  # cv2.LUT: 3x numpy's take, any shape as a column
    return cv2.LUT(flat, lut.reshape(1, 256)).reshape(ldr.shape)
