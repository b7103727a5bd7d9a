"""Candidates of one frame: seeded sampling, rendering and scoring.

This module holds the per-frame science shared by the build's stages and by
re-rendering from the index: where the candidate windows are, which camera
each one gets, and the pair a window and its parameters produce. It knows
nothing about Dask or the store.

Seeding: a frame's random stream depends only on the global seed and the
frame's key (its path relative to ``--src``), never on task order or worker
count. Candidate ``j`` of a frame gets its own child stream, so its camera
parameters do not depend on how many other candidates were drawn.

Score of a candidate (every kept pair's): Santos Algorithm 1 on the stored pair itself, H = the
HDR target (exposure times the window, after the colour jitter) and M = the soft
mask of the final LDR (after noise, jitter and JPEG), so anyone can recompute it
from the store. The santos2020 camera's colour jitter keeps each pixel's gray, so
with one exposure per frame and native windows gray(H) is exposure times the
frame's gray for every candidate, and D and G are computed once per frame. Resized
crops, mirrored windows, exposure per window and the eilertsen2017 camera (its
noise and jitter change gray) are scored window by window on their own target.
"""

from __future__ import annotations

import dataclasses
import hashlib
from collections.abc import Callable

import numpy as np

from hdrprep import camera, schema, selection
from hdrprep.config import Config

__all__ = ["frame_seed", "sample_windows", "window", "expose_one", "render_pair", "render_row", "PairScorer",
           "score_frame"]


def frame_seed(seed: int, key: str) -> np.random.SeedSequence:
    """The seed sequence of frame ``key`` under the global ``seed``.

    Parameters
    ----------
    seed : int
        Global build seed, in [0, 2**63).
    key : str
        Stable frame key: the POSIX path relative to the source folder.
    """
    digest = hashlib.sha256(key.encode("utf-8")).digest()
    words = [int.from_bytes(digest[i:i + 4], "little") for i in range(0, 16, 4)]
    return np.random.SeedSequence([seed, *words])


def sample_windows(shape: tuple[int, int], key: str, config: Config, curves: camera.CurveTable | None = None,
                   which=None) -> tuple[float, np.ndarray, list[camera.CameraParams]]:
    """Draw the candidate windows of a frame and their camera parameters.

    Streams: the frame's seed sequence spawns, in order, the frame's clip-quantile
    draw, the window positions, one child per candidate for its camera parameters,
    the crop sides and the flips, so switching crops or flips on leaves the other
    draws unchanged. Native windows (``sampling.scale`` None) sit uniformly in
    [0, H - P] x [0, W - P]; with a scale range, candidate j's crop side is
    ``clip(floor(U(low, high) * W), P, min(H, W))`` and its corner is uniform in
    [0, H - side] x [0, W - side]. A window is mirrored with probability
    ``sampling.flip``.

    Parameters
    ----------
    shape : (int, int)
        Frame height and width; both >= the patch size.
    key, config
        Frame key and build configuration.
    curves : CurveTable, optional
        Tabulated camera curves when ``config.camera.curve == 'table'``.
    which : sequence of int, optional
        Only these candidates (indices in [0, K)); their draws are the same as in the full set.

    Returns
    -------
    frame_clip_quantile : float
        The frame's U(clip_low, clip_high) draw (used when exposure is per frame).
    windows : numpy.ndarray
        int64 (K, 2) top-left (row, col) of each window (of each of ``which``) in the frame.
    params : list of CameraParams
        One per window, exposure not yet set (1.0); ``crop`` (0 for a native window)
        and ``flip`` say how the window is taken (:func:`window`).
    """
    size = config.sampling.patch_size
    k = config.sampling.patches_per_frame
    h, w = shape
    ss = frame_seed(config.seed, key)
    # spawn(5)'s first three children are spawn(3)'s: older builds' streams are unchanged
    frame_ss, windows_ss, cams_ss, crops_ss, flips_ss = ss.spawn(5)
    q = float(np.random.default_rng(frame_ss).uniform(config.camera.clip_low, config.camera.clip_high))
    wrng = np.random.default_rng(windows_ss)
    scale = config.sampling.scale
    if scale is None:
        crops = np.zeros(k, np.int64)
        windows = np.stack([wrng.integers(0, h - size + 1, k), wrng.integers(0, w - size + 1, k)], axis=1)
    else:
        u = np.random.default_rng(crops_ss).uniform(scale.low, scale.high, k)
        crops = np.clip(np.floor(u * w).astype(np.int64), size, min(h, w))
        windows = np.stack([wrng.integers(0, h - crops + 1), wrng.integers(0, w - crops + 1)], axis=1)
    flips = np.random.default_rng(flips_ss).random(k) < config.sampling.flip
    children = cams_ss.spawn(k)
    which = range(k) if which is None else [int(j) for j in which]
    params = [dataclasses.replace(camera.sample_params(np.random.default_rng(children[j]), config.camera,
                                                       curves=curves), crop=int(crops[j]), flip=bool(flips[j]))
              for j in which]
    return q, windows[list(which)].astype(np.int64), params


def window(frame: np.ndarray, row: int, col: int, params: camera.CameraParams, config: Config) -> np.ndarray:
    """The (P, P, 3) float32 window candidate (row, col, params) sees: :func:`camera.crop_window`.

    A native unmirrored window is a view of the frame.
    """
    return camera.crop_window(frame, row, col, config.sampling.patch_size, params.crop, params.flip)


def _native(params: camera.CameraParams, size: int) -> bool:
    """Whether a candidate's window is the frame's own pixels in place (no resize, no mirror)."""
    return params.crop in (0, size) and not params.flip


def expose_one(frame: np.ndarray, win: np.ndarray, params: camera.CameraParams, frame_q: float, config: Config,
               frame_exposure: float | None = None) -> camera.CameraParams:
    """``params`` with its exposure set (``camera.exposure_mode``).

    ``frame``: one exposure for the frame (``frame_exposure`` if given) and the frame's
    clip quantile; ``window``: :func:`camera.exposure_for` of the candidate's window;
    ``histogram``: :func:`camera.exposure_histogram` of it (virtualcamera.cpp's
    estimate), falling back on ``exposure_for`` where the window is too flat for it.
    """
    mode = config.camera.exposure_mode
    if mode == "frame":
        e = camera.exposure_for(frame, frame_q) if frame_exposure is None else frame_exposure
        return dataclasses.replace(params, exposure=e, clip_quantile=frame_q)
    e = camera.exposure_histogram(win, params.clip_quantile) if mode == "histogram" else None
    if e is None:
        e = camera.exposure_for(win, params.clip_quantile)
    return dataclasses.replace(params, exposure=e)


def expose(frame: np.ndarray, windows: np.ndarray, params: list[camera.CameraParams], frame_q: float,
           config: Config) -> list[camera.CameraParams]:
    """Set each candidate's exposure (:func:`expose_one`)."""
    e = camera.exposure_for(frame, frame_q) if config.camera.exposure_mode == "frame" else None
    return [expose_one(frame, window(frame, int(r), int(c), p, config) if e is None else None, p, frame_q, config, e)
            for (r, c), p in zip(windows, params)]


def render_pair(frame: np.ndarray, row: int, col: int, size: int, params: camera.CameraParams,
                config: Config, curves: camera.CurveTable | None = None,
                win: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Render the (LDR, HDR) pair of one window (taken as :func:`camera.crop_window` says).

    ``win``: that window, where the caller has it already (saves resizing a crop again).

    Returns
    -------
    ldr : numpy.ndarray
        uint8 (size, size, 3) RGB.
    hdr : numpy.ndarray
        float32 (size, size, 3), linear, camera scale (1.0 = the LDR's clipping point).
    """
    if win is None:
        win = camera.crop_window(frame, row, col, size, params.crop, params.flip)
    return camera.render(win, params, config.camera, curves)


def render_row(frame: np.ndarray, row: dict, config: Config,
               curves: camera.CurveTable | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Render the pair an index or candidate row describes (its window and every camera parameter).

    Parameters
    ----------
    frame : numpy.ndarray
        float32 (H, W, 3), the row's source frame as :func:`hdrprep.io.read_frame` gives it.
    row : dict
        A row of ``index.parquet`` or ``candidates.parquet`` (``row``, ``col``, ``size`` and
        ``schema.CAMERA_COLUMNS``; ``crop`` and ``flip`` may be absent or None: a native,
        unmirrored window, what rows written before them describe).
    config : Config
        The store's resolved configuration (the camera's mode and on/off switches).

    Returns
    -------
    ldr, hdr : numpy.ndarray
        As :func:`render_pair`: uint8 and float32 (size, size, 3).
    """
    params = camera.CameraParams.from_dict({k: row[k] for k in schema.CAMERA_COLUMNS if k in row})
    return render_pair(frame, int(row["row"]), int(row["col"]), int(row["size"]), params, config, curves)


class PairScorer:
    """Santos Algorithm 1 for the windows of one frame.

    D and G are computed once per frame where every candidate's target is a fixed
    multiple of the frame itself: exposure per frame, the santos2020 camera (its jitter
    keeps gray) and a native, unmirrored window. Every other window (resized crops,
    mirrored windows, exposure per window, the eilertsen2017 camera, whose noise and
    jitter change the target's gray) is scored on its own target, one by one.

    Parameters
    ----------
    frame : numpy.ndarray
        float32 (H, W, 3) scene-linear RGB.
    config : Config
    """

    def __init__(self, frame: np.ndarray, config: Config):
        self.frame, self.config = frame, config
        self._frame_metric = None

    def _shared(self, params: camera.CameraParams) -> bool:
        cam = self.config.camera
        return (cam.exposure_mode == "frame" and cam.mode == "santos2020"
                and _native(params, self.config.sampling.patch_size))

    def score_ldr(self, row: int, col: int, params: camera.CameraParams, ldr: np.ndarray,
                  target: np.ndarray | None = None, win: np.ndarray | None = None) -> float:
        """Score of window (row, col) under the soft mask of ``ldr`` (uint8 (P, P, 3)).

        ``target`` is the pair's HDR target (what a window scored on its own is scored
        on); without it, the deterministic camera's: ``exposure * win`` (``win`` the
        candidate's window, taken from the frame when not given), clamped first in
        eilertsen2017 mode.
        """
        from hdrprep import metric

        size, alpha = self.config.sampling.patch_size, self.config.camera.mask_alpha
        if self._shared(params):
            # the target's gray is exposure * gray(frame) for every candidate (the jitter keeps
            # gray), so D and G are computed once per frame; windows only fix their borders
            if self._frame_metric is None:
                self._frame_metric = metric.FrameMetric(self.frame * np.float32(params.exposure), size,
                                                        self.config.metric)
            return self._frame_metric.score_ldr(row, col, ldr, alpha)
        if target is None:
            target = self._plain_target(row, col, params, win)
        return metric.FrameMetric(target, size, self.config.metric).score_ldr(0, 0, ldr, alpha)

    def _plain_target(self, row, col, params, win):
        if win is None:
            win = window(self.frame, row, col, params, self.config)
        if self.config.camera.mode == "eilertsen2017":
            win = np.clip(win, np.float32(1e-5), np.float32(1e5))
        return win * np.float32(params.exposure)

    def score_pair(self, row: int, col: int, params: camera.CameraParams, ldr: np.ndarray,
                   target: np.ndarray | None = None) -> tuple[float, float]:
        """(score, saturated fraction) of a rendered pair; both 0 without a saturated pixel."""
        from hdrprep import metric

        sat = metric.saturated_fraction(camera.soft_mask(ldr, self.config.camera.mask_alpha))
        return (0.0 if sat == 0 else self.score_ldr(row, col, params, ldr, target)), sat

    def prescore(self, row: int, col: int, params: camera.CameraParams,
                 curves: camera.CurveTable | None = None, win: np.ndarray | None = None) -> tuple[float, float]:
        """(score, saturated fraction) under the deterministic camera's mask (:func:`camera.saturation_levels`).

        In eilertsen2017 mode the window is clamped to [1e-5, 1e5] first, as that camera does.
        """
        if win is None:
            win = window(self.frame, row, col, params, self.config)
        if self.config.camera.mode == "eilertsen2017":
            win = np.clip(win, np.float32(1e-5), np.float32(1e5))
        base, sat = camera.saturation_levels(win, params, self.config.camera.mask_alpha, curves)
        if sat == 0:
            return 0.0, sat
        target = None if self._shared(params) else win * np.float32(params.exposure)
        return self.score_ldr(row, col, params, base, target), sat


def score_frame(frame: np.ndarray, key: str, config: Config, curves: camera.CurveTable | None = None,
                on_pair: Callable[[int, np.ndarray, np.ndarray, float, float], None] | None = None
                ) -> dict[str, list]:
    """Sample, render and score every candidate window of one frame.

    With ``metric.prescreen_margin`` set (and a plain score threshold), a
    candidate is first scored on the deterministic camera's mask
    (:func:`hdrprep.camera.saturation_levels`); the full camera is rendered and
    scored only if that prescore is >= threshold - margin. Column ``rendered``
    says which score a candidate has: True = on its final LDR (every kept pair),
    False = the prescore (below the threshold by more than the margin).

    Parameters
    ----------
    frame : numpy.ndarray
        float32 (H, W, 3) scene-linear RGB, H and W >= the patch size.
    key : str
        Frame key (relative POSIX path).
    config : Config
        Build configuration.
    curves : CurveTable, optional
        Tabulated camera curves when ``config.camera.curve == 'table'``.
    on_pair : callable, optional
        Called as ``on_pair(j, ldr, target, score, saturated_fraction)`` for every
        candidate rendered with the full camera (``render_pair``'s output), so a
        caller can keep pairs without rendering them again.

    Returns
    -------
    dict of str to list
        Candidate table columns (``schema.CANDIDATE_COLUMNS`` then ``schema.CAMERA_COLUMNS``),
        one entry per candidate, in candidate order.
    """
    size = config.sampling.patch_size
    frame_q, windows, params = sample_windows(frame.shape[:2], key, config, curves)
    frame_e = camera.exposure_for(frame, frame_q) if config.camera.exposure_mode == "frame" else None
    bar = selection.prescreen_bar(config.select, config.metric)
    scorer = PairScorer(frame, config)
    cols: dict[str, list] = {c: [] for c in schema.CANDIDATE_COLUMNS + schema.CAMERA_COLUMNS}
    for j, ((r, c), p) in enumerate(zip(windows, params)):
        r, c = int(r), int(c)
        win = window(frame, r, c, p, config)
        p = expose_one(frame, win, p, frame_q, config, frame_e)
        rendered = True
        if bar is not None:
            score, sat = scorer.prescore(r, c, p, curves, win)
            rendered = score >= bar
        if rendered:
            ldr, target = render_pair(frame, r, c, size, p, config, curves, win=win)
            score, sat = scorer.score_pair(r, c, p, ldr, target)
            if on_pair is not None:
                on_pair(j, ldr, target, score, sat)
        row = dict(source=key, candidate=j, row=r, col=c, size=size, score=float(score),
                   saturated_fraction=float(sat), rendered=rendered, seed=config.seed)
        for name, value in (*row.items(), *p.to_dict().items()):
            cols[name].append(value)
    return cols
