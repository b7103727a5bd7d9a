"""Quality metrics of HDR reconstructions, on linear images shown on a stated display.

Everything here is numpy (no torch). The evaluation (:mod:`hdrprep.evaluate`)
puts every image on one **display model** before any metric sees it:

    display luminance (cd/m^2) = clip(x * peak / max(reference), 0, peak)

where ``x`` is an image in the camera's scale (1.0 = the LDR's clipping point),
``max(reference)`` the largest channel value of the ground truth and ``peak``
the display's peak (``DISPLAY_PEAK`` = 4000 cd/m^2 by default): the reference's
brightest value is shown at the display's peak, as the PU21 authors do for HDR
images in relative units (gfxdisp/pu21, README and
``matlab/examples/ex_hdr_images.m``: ``I_ref = I_ref/max(I_ref(:)) * L_peak``,
``L_peak = 4000``), and a prediction in the same camera scale gets the same
factor. A display cannot show more than its peak or less than 0, hence the clip.

The metrics then take two such display images (float, (H, W, 3), cd/m^2) and an
optional boolean region (H, W) (e.g. the input's saturated pixels); a metric on a
region averages over that region's pixels, all three channels, and keeps the
whole image's normalisation:

``gamma_mse``
    Santos et al. 2020, Section 5.1 (Table 1): "We compute the MSE values on the
    gamma corrected images". The paper states neither gamma nor normalisation;
    we use ``mean(((pred / peak) ** (1/2.2) - (ref / peak) ** (1/2.2)) ** 2)``:
    both images divided by the display peak (= the reference's maximum, so the
    reference spans [0, 1]), then gamma 2.2. Lower is better.
``mulaw_psnr``
    ``10 log10(1 / MSE(T(pred / peak), T(ref / peak)))``, ``T(x) = log(1 + mu x) / log(1 + mu)``,
    ``mu = 5000``, as :func:`hdrprep.train.metrics.psnr_mulaw` (both images divided
    by the reference's maximum; ours already are clipped to it). dB, higher is better.
``pu21_psnr``
    PSNR of PU21-encoded absolute RGB (Mantiuk & Azimi, "PU21: A novel perceptually
    uniform encoding for adapting existing quality metrics for HDR", Picture Coding
    Symposium 2021), as ``pu21_metric(I_test, I_ref, 'PSNR')`` of gfxdisp/pu21
    (``matlab/pu21_metric.m``): each colour channel of both images encoded with
    the ``banding_glare`` parameters (values clamped to [0.005, 10000] cd/m^2),
    then ``psnr(P_test, P_ref, 256)`` = ``10 log10(256^2 / MSE)``; 256 because
    PU21 maps 0.1-100 cd/m^2 to about 0-256 (the repository's comment; PU21(100) =
    256.38). dB, higher is better.
"""

from __future__ import annotations

import math

import numpy as np

__all__ = ["DISPLAY_PEAK", "GAMMA", "METRICS", "MU", "PU21_L_MAX", "PU21_L_MIN", "PU21_PARAMS", "PU21_PSNR_PEAK",
           "all_metrics", "gamma_mse", "mulaw_psnr", "psnr", "pu21_encode", "pu21_psnr", "to_display"]

#: Display peak in cd/m^2 the reference's maximum is shown at (gfxdisp/pu21's HDR example).
DISPLAY_PEAK = 4000.0
#: Gamma of the "gamma corrected images" of the MSE (Santos et al. 2020, Section 5.1).
GAMMA = 2.2
#: mu of the mu-law PSNR (as hdrprep.train.metrics.psnr_mulaw).
MU = 5000.0

#: PU21 parameters p1..p7 per variant, gfxdisp/pu21 ``matlab/pu21_encoder.m`` ("updated on 06/02/2020");
#: the authors recommend ``banding_glare``.
PU21_PARAMS = {
    "banding": (1.070275272, 0.4088273932, 0.153224308, 0.2520326168, 1.063512885, 1.14115047, 521.4527484),
    "banding_glare": (0.353487901, 0.3734658629, 8.277049286e-05, 0.9062562627, 0.09150303166, 0.9099517204,
                      596.3148142),
    "peaks": (1.043882782, 0.6459495343, 0.3194584211, 0.374025247, 1.114783422, 1.095360363, 384.9217577),
    "peaks_glare": (816.885024, 1479.463946, 0.001253215609, 0.9329636822, 0.06746643971, 1.573435413,
                    419.6006374),
}
PU21_L_MIN, PU21_L_MAX = 0.005, 10000.0  # the encoder's valid luminance range, cd/m^2
PU21_PSNR_PEAK = 256.0  # pu21_metric.m: psnr(P_test, P_reference, 256)

#: Metric name -> True where higher is better.
METRICS = {"gamma_mse": False, "mulaw_psnr": True, "pu21_psnr": True}


def to_display(img: np.ndarray, ref_max: float, peak: float = DISPLAY_PEAK) -> np.ndarray:
    """Display luminance of an image in the camera's scale: ``clip(img * peak / ref_max, 0, peak)``.

    Parameters
    ----------
    img : ndarray, float, (H, W, 3)
        Linear RGB in the camera's scale (1.0 = the LDR's clipping point), any values.
    ref_max : float
        The reference's largest channel value in the same scale, > 0.
    peak : float
        Display peak in cd/m^2, > 0.

    Returns
    -------
    ndarray, float64, (H, W, 3), values in [0, peak] (NaN becomes 0).
    """
    if not (math.isfinite(ref_max) and ref_max > 0):
        raise ValueError(f"to_display: the reference's maximum is {ref_max!r}; it must be finite and > 0 "
                         "(a black reference cannot be shown)")
    if not peak > 0:
        raise ValueError(f"to_display: display peak {peak!r} must be > 0 cd/m^2")
    out = np.asarray(img, np.float64) * (peak / ref_max)
    return np.clip(np.nan_to_num(out, nan=0.0, posinf=peak, neginf=0.0), 0.0, peak)


def _pair(pred, ref, region) -> tuple[np.ndarray, np.ndarray]:
    pred, ref = np.asarray(pred, np.float64), np.asarray(ref, np.float64)
    if pred.shape != ref.shape or pred.ndim != 3 or pred.shape[2] != 3:
        raise ValueError(f"expected two (H, W, 3) images of one shape, got {pred.shape} and {ref.shape}")
    if region is not None:
        region = np.asarray(region, bool)
        if region.shape != ref.shape[:2]:
            raise ValueError(f"region must be (H, W) = {ref.shape[:2]}, got {region.shape}")
        pred, ref = pred[region], ref[region]  # (n, 3): every channel of the region's pixels
    return pred, ref


def psnr(mse: float, peak: float) -> float:
    """``10 log10(peak^2 / mse)`` in dB; inf for mse 0, NaN for NaN (an empty region)."""
    if math.isnan(mse):
        return math.nan
    return math.inf if mse == 0 else 10.0 * math.log10(peak * peak / mse)


def _mse(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.mean((a - b) ** 2)) if a.size else math.nan


def gamma_mse(pred: np.ndarray, ref: np.ndarray, region: np.ndarray | None = None, *,
              peak: float = DISPLAY_PEAK, gamma: float = GAMMA) -> float:
    """MSE of gamma-corrected images, ``mean(((pred/peak)^(1/gamma) - (ref/peak)^(1/gamma))^2)``.

    Parameters
    ----------
    pred, ref : ndarray, float, (H, W, 3)
        Display luminance in cd/m^2 (:func:`to_display`), values in [0, peak].
    region : ndarray, bool, (H, W), optional
        Average over these pixels only (all channels); NaN if it is empty.
    peak : float
        The display peak both images are divided by.
    gamma : float
        2.2 (see the module docstring).

    Returns
    -------
    float, >= 0 (lower is better), or NaN for an empty region.
    """
    pred, ref = _pair(pred, ref, region)
    inv = 1.0 / gamma
    return _mse(np.clip(pred / peak, 0, 1) ** inv, np.clip(ref / peak, 0, 1) ** inv)


def mulaw_psnr(pred: np.ndarray, ref: np.ndarray, region: np.ndarray | None = None, *,
               peak: float = DISPLAY_PEAK, mu: float = MU) -> float:
    """PSNR (dB, peak 1) of mu-law images ``log(1 + mu x) / log(1 + mu)``, ``x = clip(img / peak, 0, 1)``.

    The formula of :func:`hdrprep.train.metrics.psnr_mulaw` (there: divided by the
    reference's maximum, which the display model maps to ``peak``).

    Parameters
    ----------
    pred, ref : ndarray, float, (H, W, 3)
        Display luminance in cd/m^2, values in [0, peak].
    region : ndarray, bool, (H, W), optional
        Average the squared error over these pixels only; NaN if empty.

    Returns
    -------
    float, dB (higher is better); inf for identical images.
    """
    pred, ref = _pair(pred, ref, region)

    def t(x):
        return np.log1p(mu * np.clip(x / peak, 0, 1)) / math.log1p(mu)

    return psnr(_mse(t(pred), t(ref)), 1.0)


def pu21_encode(lum: np.ndarray, kind: str = "banding_glare") -> np.ndarray:
    """PU21 encoding of absolute linear values (Mantiuk & Azimi 2021; gfxdisp/pu21 ``pu21_encoder.encode``).

    ``V = p7 * (((p1 + p2 Y^p4) / (1 + p3 Y^p4))^p5 - p6)`` with ``Y`` clamped to
    [0.005, 10000] cd/m^2.

    Parameters
    ----------
    lum : ndarray, float, any shape
        Absolute luminance or linear colour values in cd/m^2.
    kind : str
        'banding_glare' (the authors' recommendation), 'banding', 'peaks' or 'peaks_glare'.

    Returns
    -------
    ndarray, float64, same shape; banding_glare gives about 0 at 0.005, 256.4 at
    100 and 595.39 at 10000 cd/m^2.
    """
    if kind not in PU21_PARAMS:
        raise ValueError(f"unknown PU21 variant {kind!r}; choose one of {', '.join(PU21_PARAMS)}")
    p1, p2, p3, p4, p5, p6, p7 = PU21_PARAMS[kind]
    y = np.clip(np.asarray(lum, np.float64), PU21_L_MIN, PU21_L_MAX) ** p4
    return p7 * (((p1 + p2 * y) / (1.0 + p3 * y)) ** p5 - p6)


def pu21_psnr(pred: np.ndarray, ref: np.ndarray, region: np.ndarray | None = None) -> float:
    """PU21-PSNR: ``10 log10(256^2 / MSE(PU21(pred), PU21(ref)))`` on every RGB channel (pu21_metric 'PSNR').

    Parameters
    ----------
    pred, ref : ndarray, float, (H, W, 3)
        ABSOLUTE linear RGB in cd/m^2 (:func:`to_display`).
    region : ndarray, bool, (H, W), optional
        Average the squared error over these pixels only; NaN if empty.

    Returns
    -------
    float, dB (higher is better); inf for identical images.
    """
    pred, ref = _pair(pred, ref, region)
    return psnr(_mse(pu21_encode(pred), pu21_encode(ref)), PU21_PSNR_PEAK)


def all_metrics(pred: np.ndarray, ref: np.ndarray, region: np.ndarray, *, peak: float = DISPLAY_PEAK) -> dict:
    """Every metric of :data:`METRICS` on the whole image and on ``region`` (key suffix ``_sat``).

    Parameters
    ----------
    pred, ref : ndarray, float, (H, W, 3)
        Display luminance in cd/m^2 (:func:`to_display`).
    region : ndarray, bool, (H, W)
        The saturated pixels of the input.

    Returns
    -------
    dict ``{name: float, name + '_sat': float}``; NaN where the region is empty.
    """
    out = {}
    for name, fn in (("gamma_mse", lambda p, r, m: gamma_mse(p, r, m, peak=peak)),
                     ("mulaw_psnr", lambda p, r, m: mulaw_psnr(p, r, m, peak=peak)),
                     ("pu21_psnr", pu21_psnr)):
        out[name] = fn(pred, ref, None)
        out[name + "_sat"] = fn(pred, ref, region)
    return out
