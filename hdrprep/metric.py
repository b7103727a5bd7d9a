"""Patch metric of Santos et al. 2020 (Algorithm 1); the keep rule built on it is in :mod:`hdrprep.selection`.

For one candidate window of an HDR frame H (linear RGB in the camera's scale,
i.e. already multiplied by the exposure) and the soft mask M of its LDR::

    I = gray(H)                      OpenCV RGB2GRAY weights 0.299, 0.587, 0.114
    L = log(I + 1)
    B = cv2.bilateralFilter(L, -1, sigma_color=100, sigma_space=10)
    D = L - B                        the detail layer
    G = |Sobel_x D| + |Sobel_y D|    ksize 3, OpenCV's default border (REFLECT_101)
    W = 1 - M                        (size, size, 3), > 0 where a channel is saturated
    score = sum(G * W) / (size * size * 3)     normalisation 'patch'  (Algorithm 1)
    score = sum(G * W) / sum(W)                normalisation 'saturated' (the text)

computed on each window on its own (the window's edges are the filter's border).
A window with sum(W) = 0 (no saturated pixel) scores 0 under 'saturated'.

:class:`FrameMetric` computes the frame's D and G in 128 x 128 tiles, each on
the first use by a window (so only where some window has a saturated pixel),
and then corrects, per window, only the band of R + 1 pixels
(R = cvRound(1.5 sigma_space) = 15) along the window's edges where the
per-window border differs from the frame, and only where the band's weights
are nonzero (G times 0 does not count). Its 'exact' mode matches the per-window
OpenCV computation to float32 rounding (score relative error ~2e-7, tolerance
1e-3 in ``tests/test_metric.py``); its 'frame' mode skips the band: about 1.5x
faster per candidate; ``bench/metric.py`` measures its keep/discard agreement
with 'exact' at 0.85 (earlier runs: 4 of 500 decisions, 0.8 %, on generated
2048x1365 frames). ``score_ldr`` takes the uint8 LDR instead of float32
weights and computes W = 1 - M inside (a third of the memory traffic).
The bilateral filter is evaluated with its range weight expanded to a Taylor
polynomial (order picked from the frame's log range, see ``hdrprep._metric_kernels``).

Threads: the Numba kernels are serial (they never start Numba's thread pool)
and release the GIL; parallelism is over frames, one Dask task each. The one
OpenCV call here (RGB2GRAY, once per frame) follows ``cv2.setNumThreads``.
"""

import functools
import math

import numpy as np

from hdrprep.config import MetricConfig

__all__ = ["FrameMetric", "saturated_fraction"]

# Largest allowed truncation of the range weight's Taylor series: the first
# omitted term x^(n+1) / (n+1)! at the frame's largest x = c * (Lmax - Lmin)^2.
_TAYLOR_TOL = 1e-4
_MAX_ORDER = 5
_TILE = 128  # side of the frame's tiles of D and G, each computed on first use


def _kernels():
    """The Numba kernel module, imported on first use (it imports numba)."""
    from hdrprep import _metric_kernels

    return _metric_kernels


def _radius(sigma_space: float) -> int:
    """OpenCV's radius for d <= 0: cvRound(1.5 sigma_space) (half to even), at least 1."""
    return max(1, round(1.5 * sigma_space))


def _taylor_order(c: float, log_range: float, sigma_color: float) -> int:
    x = c * log_range * log_range
    for n in range(1, _MAX_ORDER + 1):
        if x ** (n + 1) / math.factorial(n + 1) <= _TAYLOR_TOL:
            return n
    raise ValueError(
        f"metric.sigma_color={sigma_color} is too small for this frame's log-luminance range "
        f"{log_range:.3g}: the bilateral range weight would need a Taylor order above {_MAX_ORDER}; "
        f"use sigma_color >= {log_range / math.sqrt(2 * 0.5):.3g} (paper: 100)"
    )


@functools.lru_cache(maxsize=8)
def _weight_table(alpha: float) -> tuple[np.ndarray, int]:
    """1 - M of every uint8 code (256,) float32 (exactly as 1 - camera.soft_mask), and its first nonzero code."""
    from hdrprep import camera

    lut = np.float32(1) - camera.soft_mask(np.arange(256, dtype=np.uint8), alpha)
    lut.setflags(write=False)
    nonzero = np.flatnonzero(lut)
    return lut, int(nonzero[0]) if nonzero.size else 256


class FrameMetric:
    """Scores of candidate windows of one HDR frame (Santos et al. 2020, Algorithm 1).

    Parameters
    ----------
    hdr : ndarray, (Hf, Wf, 3), float32 (float16/float64 are converted)
        Linear RGB in the camera's scale (times the exposure used for every
        window of this frame), finite and >= 0 (gray(H) > -1 is what is needed).
    size : int
        Window side in pixels, at most min(Hf, Wf).
    config : MetricConfig, optional
        sigma_color, sigma_space, normalisation and mode; default MetricConfig().

    Attributes
    ----------
    radius : int
        Radius of the bilateral filter's circular window.
    order : int
        Taylor order of the range weight used for this frame.
    """

    def __init__(self, hdr, size: int = 512, config: MetricConfig | None = None):
        cfg = MetricConfig() if config is None else config
        if not isinstance(cfg, MetricConfig):
            raise TypeError(f"config must be a MetricConfig, got {type(cfg).__name__}")
        hdr = np.asarray(hdr)
        if hdr.ndim != 3 or hdr.shape[2] != 3:
            raise ValueError(f"hdr must have shape (height, width, 3), got {hdr.shape}")
        if not np.issubdtype(hdr.dtype, np.floating):
            raise ValueError(f"hdr must be floating point linear RGB, got dtype {hdr.dtype}")
        size = int(size)
        if not 2 <= size <= min(hdr.shape[:2]):
            raise ValueError(
                f"window size {size} does not fit the frame {hdr.shape[1]}x{hdr.shape[0]}; "
                f"use a size in [2, {min(hdr.shape[:2])}] or skip the frame"
            )
        hdr = np.ascontiguousarray(hdr, dtype=np.float32)
        self.config = cfg
        self.size = size
        self.shape = hdr.shape[:2]
        import cv2

        # OpenCV's own RGB2GRAY, as the oracle uses it; numpy's vectorised log
        with np.errstate(invalid="ignore", divide="ignore"):  # reported below, with the fix
            L = np.log(cv2.cvtColor(hdr, cv2.COLOR_RGB2GRAY) + np.float32(1))
        lo, hi = float(L.min()), float(L.max())
        if not (math.isfinite(lo) and math.isfinite(hi)):
            raise ValueError(
                "hdr contains NaN or Inf (or a gray level <= -1, where log(I + 1) is undefined); "
                "read it with ingest nonfinite='repair' and negative='clamp', or fix the frame"
            )
        R = _radius(cfg.sigma_space)
        c = 0.5 / (cfg.sigma_color * cfg.sigma_color)
        order = _taylor_order(c, hi - lo, cfg.sigma_color)
        j = np.arange(R + 1)
        g = np.exp(-(j * j) * (0.5 / (cfg.sigma_space * cfg.sigma_space))).astype(np.float32)
        row_width = np.array([math.isqrt(R * R - i * i) for i in range(R + 1)], np.int64)
        used = sorted(set(row_width.tolist()))
        width_slot = np.full(R + 1, -1, np.int64)
        width_slot[used] = np.arange(len(used))
        g64 = g.astype(np.float64)
        kernel_sum = float(sum(g64[i] * (g64[0] + 2 * g64[1:row_width[i] + 1].sum()) * (1 if i == 0 else 2)
                               for i in range(R + 1)))
        taylor = np.array([(-c) ** m / math.factorial(m) for m in range(order + 1)])
        binom = np.array([[math.comb(a, b) for b in range(2 * order + 1)] for a in range(2 * order + 1)],
                         np.float64)
        self.radius = R
        self.order = order
        self._ref = 0.5 * (lo + hi)  # centre of L: keeps the float32 powers small
        self._params = (g, row_width, width_slot, len(used), kernel_sum, taylor, binom)
        # D and G of the frame, computed tile by tile where a window first needs them
        self._D = np.empty(self.shape, np.float32)
        self._G = np.empty(self.shape, np.float32)
        state = np.zeros((-(-self.shape[0] // _TILE), -(-self.shape[1] // _TILE)), np.uint8)
        self._F = (L, self._D, self._G, state, _TILE, self._ref) + self._params

    def _corner(self, row, col) -> tuple[int, int]:
        r, c = int(row), int(col)
        if r != row or c != col or not (0 <= r <= self.shape[0] - self.size and 0 <= c <= self.shape[1] - self.size):
            raise ValueError(
                f"window corner (row={row}, col={col}) of size {self.size} is outside the frame "
                f"{self.shape[1]}x{self.shape[0]}; rows must be in [0, {self.shape[0] - self.size}] "
                f"and columns in [0, {self.shape[1] - self.size}]"
            )
        return r, c

    def _weights(self, weights) -> np.ndarray:
        weights = np.asarray(weights)
        want = (self.size, self.size, 3)
        if weights.shape != want:
            raise ValueError(f"weights (1 - M) must have shape {want}, got {weights.shape}")
        return np.ascontiguousarray(weights, dtype=np.float32)

    def gradient(self, row: int, col: int) -> np.ndarray:
        """G = |Sobel_x D| + |Sobel_y D| of the window at (row, col): (size, size) float32, >= 0.

        In 'exact' mode the window's own borders are used (as the per-window
        oracle does); in 'frame' mode it is a crop of the frame's G.
        """
        r, c = self._corner(row, col)
        out = np.empty((self.size, self.size), np.float32)
        _kernels().window_gradient(self._F, r, c, self.config.mode == "exact", out)
        return out

    def _score(self, r: int, c: int, weights, lut, vmin: int) -> float:
        k = _kernels()
        patch = self.config.normalisation == "patch"
        if self.config.mode == "frame":
            return float(k.weighted_score(self._F, self._G, r, c, weights, lut, vmin, patch))
        return float(k.window_score(self._F, r, c, weights, lut, vmin, patch))

    def score(self, row: int, col: int, weights) -> float:
        """Score of one window; ``weights`` = 1 - M, (size, size, 3) float32 in [0, 1]."""
        r, c = self._corner(row, col)
        return self._score(r, c, self._weights(weights), None, 0)

    def score_ldr(self, row: int, col: int, ldr, alpha: float) -> float:
        """Score of one window from its LDR: ``score(row, col, 1 - soft_mask(ldr, alpha))`` (to float32 rounding).

        Parameters
        ----------
        ldr : ndarray, (size, size, 3), uint8
            The candidate's final LDR window.
        alpha : float
            Soft-mask threshold in (0, 1) (:func:`hdrprep.camera.soft_mask`).

        Reads a third of the memory that float32 weights take, and skips rows
        without a channel above the threshold.
        """
        r, c = self._corner(row, col)
        ldr = np.asarray(ldr)
        if ldr.shape != (self.size, self.size, 3) or ldr.dtype != np.uint8:
            raise ValueError(f"ldr must be uint8 of shape {(self.size, self.size, 3)}, got {ldr.dtype} {ldr.shape}")
        lut, vmin = _weight_table(alpha)
        return self._score(r, c, np.ascontiguousarray(ldr), lut, vmin)


def saturated_fraction(mask) -> float:
    """Share of pixels with a saturated channel: any channel of 1 - M > 0.

    Parameters
    ----------
    mask : ndarray, (h, w, 3), float in [0, 1]
        Soft mask M of the LDR window (1 = well exposed).

    Returns
    -------
    float in [0, 1]
    """
    mask = np.asarray(mask)
    if mask.ndim != 3 or mask.shape[2] != 3 or mask.size == 0:
        raise ValueError(f"mask must have shape (height, width, 3), got {mask.shape}")
    return float(_kernels().saturated_fraction(np.ascontiguousarray(mask, dtype=np.float32)))
