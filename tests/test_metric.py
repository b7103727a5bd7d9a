"""The patch metric (hdrprep.metric) against a slow, literal per-window oracle.

Oracle (Santos et al. 2020, Algorithm 1), each window on its own, OpenCV throughout:
gray = cv2.cvtColor(RGB2GRAY) (weights 0.299, 0.587, 0.114), L = log(gray + 1),
B = cv2.bilateralFilter(L, -1, 100, 10), D = L - B, G = |Sobel_x D| + |Sobel_y D|
(ksize 3, default border), score = sum(G W) / (h w 3) ('patch') or sum(G W) / sum(W)
('saturated', 0 when sum(W) = 0), W = 1 - M.

Tolerances (stated, checked): score relative error <= 1e-3 on every window (the
target; measured about 1e-6), identical keep/discard decisions at 0.85, and
per-pixel |G - G_oracle| <= 2e-4 (float32 rounding of two differently ordered
sums; measured about 2e-5).

Tests named ``test_small_*`` use tiny frames; ``test_small_without_jit`` reruns
them in a subprocess with ``NUMBA_DISABLE_JIT=1`` (the pure-Python kernels).
"""

import dataclasses
import os
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest

from conftest import real_frames
from hdrprep.config import MetricConfig
from hdrprep.metric import FrameMetric, saturated_fraction

THRESHOLD = 0.85
SCORE_RTOL = 1e-3
G_ATOL = 2e-4
ALPHA = 0.96
JIT_OFF = os.environ.get("NUMBA_DISABLE_JIT", "0") not in ("", "0")


# ----------------------------------------------------------------------------- oracle
def oracle_gradient(hdr, sigma_color=100.0, sigma_space=10.0):
    """G of one window (h, w, 3) float32, computed on the window alone."""
    gray = cv2.cvtColor(np.ascontiguousarray(hdr, dtype=np.float32), cv2.COLOR_RGB2GRAY)
    L = np.log(gray + np.float32(1))
    B = cv2.bilateralFilter(L, -1, sigma_color, sigma_space)
    D = L - B
    return np.abs(cv2.Sobel(D, cv2.CV_32F, 1, 0, ksize=3)) + np.abs(cv2.Sobel(D, cv2.CV_32F, 0, 1, ksize=3))


def oracle_score(G, weights, normalisation):
    total = np.sum(G[..., None].astype(np.float64) * weights)
    if normalisation == "patch":
        return total / weights.size
    wsum = weights.sum(dtype=np.float64)
    return total / wsum if wsum > 0 else 0.0


# ----------------------------------------------------------------------------- inputs
def camera_weights(exposed, alpha=ALPHA):
    """W = 1 - M of a deterministic camera: gamma 2.2, 8 bits, Santos' soft mask."""
    ldr = np.round(255 * np.clip(exposed, 0, 1) ** (1 / 2.2)).astype(np.uint8)
    mask = np.clip((1 - ldr / 255.0) / (1 - alpha), 0, 1)
    return (1 - mask).astype(np.float32)


def synthetic_frame(seed, h, w, log_range):
    """Textured HDR frame whose log(gray + 1) spans about [0, log_range]."""
    rng = np.random.default_rng(seed)
    coarse = cv2.resize(rng.random((h // 16 + 2, w // 16 + 2)).astype(np.float32), (w, h),
                        interpolation=cv2.INTER_CUBIC)
    field = 0.6 * coarse + 0.3 * (rng.random((h, w)) > 0.97) + 0.1 * rng.random((h, w))
    field[h // 3: h // 2, w // 4: w // 2] += 0.5  # a sharp-edged bright block
    field = (field - field.min()) / (field.max() - field.min())
    lum = np.expm1(log_range * field)
    tint = 1 + 0.2 * rng.random((h, w, 3))
    return np.ascontiguousarray(lum[..., None] * tint, dtype=np.float32)


def exposed(frame, q=0.9):
    """The frame scaled so that a fraction q of the channel values is <= 1."""
    return np.ascontiguousarray(frame * np.float32(1 / np.quantile(frame, q)), dtype=np.float32)


def corners_for(shape, size, rng, n_random, n_frame_corners=4):
    """Windows at the frame's corners plus n_random random ones, without duplicates."""
    h, w = shape[:2]
    picks = [(0, 0), (h - size, w - size), (0, w - size), (h - size, 0)][:n_frame_corners]
    picks += [(int(rng.integers(0, h - size + 1)), int(rng.integers(0, w - size + 1))) for _ in range(n_random)]
    return list(dict.fromkeys(picks))


def check_windows(frame, size, corners, config=MetricConfig(), g_atol=G_ATOL):
    """Kernel vs oracle on the given windows; returns the worst relative score error."""
    scorers = {norm: FrameMetric(frame, size, dataclasses.replace(config, normalisation=norm))
               for norm in ("saturated", "patch")}
    fm = scorers[config.normalisation]
    worst = 0.0
    for r, c in corners:
        window = frame[r:r + size, c:c + size]
        G_ref = oracle_gradient(window, config.sigma_color, config.sigma_space)
        G = fm.gradient(r, c)
        assert G.shape == (size, size) and G.dtype == np.float32
        err = np.abs(G.astype(np.float64) - G_ref)
        assert err.max() <= g_atol, f"window ({r}, {c}): max |G - oracle| {err.max():.3g} at " \
                                    f"{np.unravel_index(err.argmax(), err.shape)}"
        W = camera_weights(window)
        for norm, scorer in scorers.items():
            got = scorer.score(r, c, W)
            # the score's sum and normalisation, on the kernel's own G
            assert got == pytest.approx(oracle_score(G, W, norm), rel=1e-6)
            ref = oracle_score(G_ref, W, norm)
            rel = abs(got - ref) / abs(ref) if ref != 0 else abs(got)
            worst = max(worst, rel)
            assert rel <= SCORE_RTOL, f"window ({r}, {c}) {norm}: score {got} vs oracle {ref}"
            assert (got >= THRESHOLD) == (ref >= THRESHOLD), f"window ({r}, {c}) {norm}: decision differs"
    return worst


# ----------------------------------------------------------------------------- real frames
@pytest.mark.skipif(JIT_OFF, reason="512x512 windows need the JIT")
@pytest.mark.parametrize("path", real_frames(), ids=lambda p: p.name)
def test_real_frames_match_oracle(path):
    """Every real fixture (all are at least 512 on a side): two frame corners, three random windows."""
    from hdrprep.io import read_frame

    frame = exposed(read_frame(path)[0])
    size = 512
    assert min(frame.shape[:2]) >= size, "all real fixtures are at least 512 px on a side"
    rng = np.random.default_rng(sum(path.name.encode()))
    check_windows(frame, size, corners_for(frame.shape, size, rng, 3, n_frame_corners=2))


@pytest.mark.skipif(JIT_OFF, reason="needs the JIT")
@pytest.mark.parametrize("log_range,order", [(11.0, 1), (30.0, 2), (60.0, 3), (85.0, 4)])
def test_synthetic_ranges_match_oracle(log_range, order):
    """Large log ranges need higher Taylor orders; still exact to the oracle."""
    frame = synthetic_frame(int(log_range), 300, 420, log_range)
    fm = FrameMetric(frame, 96)
    assert fm.order == order
    rng = np.random.default_rng(1)
    corners = corners_for(frame.shape, 96, rng, 4)
    # the absolute G tolerance scales with the log range (float32 rounding of L)
    check_windows(frame, 96, corners, g_atol=G_ATOL * log_range / 11)


@pytest.mark.skipif(JIT_OFF, reason="needs the JIT")
def test_synthetic_512_and_odd_frames():
    frame = exposed(synthetic_frame(7, 700, 901, 11.0))
    check_windows(frame, 512, corners_for(frame.shape, 512, np.random.default_rng(2), 2))


@pytest.mark.skipif(JIT_OFF, reason="needs the JIT")
@pytest.mark.parametrize("sigma_space,sigma_color", [(3.0, 100.0), (2.5, 100.0), (10.0, 20.0)])
def test_other_filter_parameters(sigma_space, sigma_color):
    """Radius cvRound(1.5 sigma_space) (2.5 -> 4, half to even) and a smaller sigma_color."""
    frame = exposed(synthetic_frame(3, 160, 200, 8.0))
    cfg = MetricConfig(sigma_space=sigma_space, sigma_color=sigma_color)
    check_windows(frame, 64, corners_for(frame.shape, 64, np.random.default_rng(3), 3), cfg)


# ----------------------------------------------------------------------------- small (also JIT off)
@pytest.mark.parametrize("size", [32, 40])
def test_small_windows_match_oracle(size):
    """32 is computed whole (too small for a band), 40 with the band; both at frame edges."""
    frame = exposed(synthetic_frame(size, 48, 61, 10.0))
    check_windows(frame, size, corners_for(frame.shape, size, np.random.default_rng(size), 1))


def test_small_frame_mode_matches_frame_oracle():
    """'frame' mode = the oracle run on the whole frame, cropped; 'exact' equals it inside."""
    frame = exposed(synthetic_frame(5, 56, 64, 10.0))
    size, r, c = 40, 9, 17
    G_frame = oracle_gradient(frame)[r:r + size, c:c + size]
    fast = FrameMetric(frame, size, MetricConfig(mode="frame"))
    exact = FrameMetric(frame, size, MetricConfig(mode="exact"))
    assert np.abs(fast.gradient(r, c) - G_frame).max() <= G_ATOL
    b = exact.radius + 1
    assert np.array_equal(exact.gradient(r, c)[b:-b, b:-b], fast.gradient(r, c)[b:-b, b:-b])
    W = camera_weights(frame[r:r + size, c:c + size])
    for norm in ("saturated", "patch"):
        ref = oracle_score(G_frame, W, norm)
        got = FrameMetric(frame, size, MetricConfig(mode="frame", normalisation=norm)).score(r, c, W)
        assert abs(got - ref) <= SCORE_RTOL * abs(ref)


def test_small_score_ldr_equals_score_of_weights():
    """score_ldr(LDR) = score(1 - soft_mask(LDR)): rows without saturation, partly and fully saturated rows."""
    from hdrprep import camera

    frame = exposed(synthetic_frame(13, 60, 72, 9.0))
    size = 40
    for mode in ("exact", "frame"):
        fm = FrameMetric(frame, size, MetricConfig(mode=mode))
        for r, c in corners_for(frame.shape, size, np.random.default_rng(5), 2):
            window = frame[r:r + size, c:c + size]
            ldr = np.round(255 * np.clip(window, 0, 1) ** (1 / 2.2)).astype(np.uint8)
            ldr[:3] = 255  # fully saturated rows
            ldr[5:8] = 10  # rows without a saturated channel
            W = np.float32(1) - camera.soft_mask(ldr, ALPHA)
            assert fm.score_ldr(r, c, ldr, ALPHA) == pytest.approx(fm.score(r, c, W), rel=1e-6)
            if mode == "exact":
                ref = oracle_score(oracle_gradient(window), W, "saturated")
                assert fm.score_ldr(r, c, ldr, ALPHA) == pytest.approx(ref, rel=SCORE_RTOL)
        assert fm.score_ldr(0, 0, np.zeros((size, size, 3), np.uint8), ALPHA) == 0.0
    with pytest.raises(ValueError, match="uint8"):
        fm.score_ldr(0, 0, np.zeros((size, size, 3), np.float32), ALPHA)


def test_small_tiles_any_order(monkeypatch):
    """D and G of the frame in 16-px tiles computed on first use: frame G = the whole-frame oracle,
    and scores and gradients do not depend on the order in which windows ask for tiles."""
    import hdrprep.metric

    monkeypatch.setattr(hdrprep.metric, "_TILE", 16)
    frame = exposed(synthetic_frame(17, 52, 66, 9.0))
    size = 36
    corners = corners_for(frame.shape, size, np.random.default_rng(6), 3)
    W = [camera_weights(frame[r:r + size, c:c + size]) for r, c in corners]
    G_frame = oracle_gradient(frame)
    for mode in ("exact", "frame"):
        fwd = FrameMetric(frame, size, MetricConfig(mode=mode))
        rev = FrameMetric(frame, size, MetricConfig(mode=mode))
        a = [fwd.score(r, c, w) for (r, c), w in zip(corners, W)]
        b = [rev.score(r, c, w) for (r, c), w in zip(corners[::-1], W[::-1])][::-1]
        assert a == b
        for r, c in corners:
            assert np.array_equal(fwd.gradient(r, c), FrameMetric(frame, size, MetricConfig(mode=mode)).gradient(r, c))
            if mode == "frame":
                assert np.abs(fwd.gradient(r, c) - G_frame[r:r + size, c:c + size]).max() <= G_ATOL
    check_windows(frame, size, corners)


def test_small_constant_and_unsaturated_windows():
    frame = np.full((40, 44, 3), 0.25, np.float32)
    fm = FrameMetric(frame, 34)
    assert not fm.gradient(3, 5).any()
    # OpenCV's bilateral filter is not exact on a constant image: opencv-python 5.1 returns about 3e-8
    # (4.x returned 0), so the oracle is held to a tolerance far below any score's resolution
    assert np.abs(oracle_gradient(frame[3:37, 5:39])).max() <= 1e-6
    W = np.zeros((34, 34, 3), np.float32)
    assert FrameMetric(exposed(synthetic_frame(1, 40, 44, 5.0)), 34).score(2, 3, W) == 0.0  # sum(W) = 0
    patch = MetricConfig(normalisation="patch")
    assert FrameMetric(exposed(synthetic_frame(1, 40, 44, 5.0)), 34, patch).score(2, 3, W) == 0.0


def test_small_saturated_fraction():
    rng = np.random.default_rng(1)
    mask = np.where(rng.random((30, 40, 3)) > 0.9, rng.random((30, 40, 3)), 1.0).astype(np.float32)
    expected = np.mean(np.any(1 - mask > 0, axis=-1))
    assert saturated_fraction(mask) == expected
    assert saturated_fraction(np.ones((5, 5, 3))) == 0.0
    assert saturated_fraction(np.zeros((5, 5, 3))) == 1.0


# ----------------------------------------------------------------------------- errors
def test_bad_inputs_raise_clear_errors():
    frame = exposed(synthetic_frame(2, 40, 50, 6.0))
    for bad, what in ((np.nan, "NaN"), (np.inf, "NaN or Inf"), (-5.0, "gray level")):
        f = frame.copy()
        f[3, 4] = bad
        with pytest.raises(ValueError, match=what):
            FrameMetric(f, 32)
    with pytest.raises(ValueError, match="shape"):
        FrameMetric(frame[..., :2], 32)
    with pytest.raises(ValueError, match="does not fit"):
        FrameMetric(frame, 48)
    fm = FrameMetric(frame, 32)
    with pytest.raises(ValueError, match="outside the frame"):
        fm.score(9, 0, np.zeros((32, 32, 3), np.float32))
    with pytest.raises(ValueError, match="outside the frame"):
        fm.gradient(-1, 0)
    with pytest.raises(ValueError, match="weights"):
        fm.score(0, 0, np.zeros((32, 31, 3), np.float32))
    with pytest.raises(ValueError, match="sigma_color"):
        FrameMetric(frame, 32, MetricConfig(sigma_color=0.5))
    with pytest.raises(ValueError, match="mask"):
        saturated_fraction(np.ones((4, 4)))


# ----------------------------------------------------------------------------- JIT off
@pytest.mark.skipif(JIT_OFF, reason="already running without the JIT")
def test_small_without_jit():
    """The small tests again, in pure Python (NUMBA_DISABLE_JIT=1)."""
    env = dict(os.environ, NUMBA_DISABLE_JIT="1")
    repo = Path(__file__).resolve().parent.parent
    proc = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider",
                           "-k", "test_small_ and not without_jit", str(Path(__file__))],
                          cwd=repo, env=env, capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-2000:]
    assert " passed" in proc.stdout and "skipped" not in proc.stdout.splitlines()[-1]
