"""Procedurally generated HDR frames: the built-in default input.

The frames need no network and no user data, and they are made to contain what
the patch selection looks for: bright, *textured* regions that saturate a camera
(a sky with a sun, lit windows with blinds and plants behind them, lamps with
patterned shades) next to smooth bright areas it should reject.
"""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np

__all__ = ["make_frame", "write_frames"]


def _value_noise(rng: np.random.Generator, shape: tuple[int, int], octaves: int = 5,
                 base_cells: int = 4) -> np.ndarray:
    """Multi-octave value noise, float32 (h, w) in about [-1, 1]."""
    h, w = shape
    out = np.zeros(shape, np.float32)
    amp, total = 1.0, 0.0
    for o in range(octaves):
        cells = base_cells * 2**o
        grid = rng.standard_normal((cells + 1, int(cells * w / h) + 2)).astype(np.float32)
        out += amp * cv2.resize(grid, (w, h), interpolation=cv2.INTER_CUBIC)
        total += amp
        amp *= 0.55
    return out / total


def make_frame(rng: np.random.Generator, height: int = 1024, width: int = 1536) -> np.ndarray:
    """Render one synthetic outdoor/indoor HDR scene.

    Parameters
    ----------
    rng : numpy.random.Generator
        The only source of randomness.
    height, width : int
        Frame size in pixels (>= 64 each).

    Returns
    -------
    numpy.ndarray
        float32 (height, width, 3) scene-linear RGB, finite, >= 0; typical
        values 0.01-1 with highlights up to ~1e4 (sun) and ~10-200 (windows, lamps).
    """
    if height < 64 or width < 64:
        raise ValueError(f"frame size {height}x{width} is too small; use at least 64x64")
    h, w = height, width
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    horizon = int(h * rng.uniform(0.35, 0.6))

    # sky: a vertical gradient with textured clouds that are bright near the sun
    sky_top = np.array([0.25, 0.45, 1.0], np.float32) * rng.uniform(0.5, 2.0)
    sky_low = np.array([0.9, 0.85, 0.8], np.float32) * rng.uniform(0.8, 3.0)
    t = np.clip(yy / max(horizon, 1), 0, 1)[..., None]
    img = (1 - t) * sky_top + t * sky_low
    clouds = np.clip(_value_noise(rng, (h, w), octaves=6, base_cells=3) * 1.6, 0, None)[..., None]
    sun_y, sun_x = rng.uniform(0.05, 0.8) * horizon, rng.uniform(0.1, 0.9) * w
    sun_r = rng.uniform(0.01, 0.03) * w
    d = np.hypot(yy - sun_y, xx - sun_x)[..., None]
    glow = 40.0 * np.exp(-d / (sun_r * 6))
    img = img * (1 + clouds * (1 + glow)) + 8000.0 * (d < sun_r) + glow

    # ground: textured, darker
    ground_tex = 0.5 + 0.5 * _value_noise(rng, (h, w), octaves=7, base_cells=8)
    ground = (np.array([0.12, 0.1, 0.07], np.float32) * rng.uniform(0.5, 2.0)) * (0.3 + ground_tex[..., None])
    img[horizon:] = ground[horizon:]

    # a facade with lit windows: bright interiors with texture (blinds, plants)
    fx0, fx1 = sorted(rng.uniform(0, 1, 2) * w)
    fx0, fx1 = int(fx0), int(max(fx1, fx0 + w * 0.3))
    fy0 = int(horizon - rng.uniform(0.2, 0.45) * h)
    facade = 0.05 + 0.03 * _value_noise(rng, (h, w), octaves=6, base_cells=16)
    img[max(fy0, 0):horizon, fx0:fx1] = facade[max(fy0, 0):horizon, fx0:fx1, None] * np.array([1, 0.9, 0.8])
    win_w = int(rng.integers(48, 128))
    interior = np.clip(_value_noise(rng, (h, w), octaves=6, base_cells=24), -1, 1)
    blinds = 0.5 + 0.5 * np.sin(yy * rng.uniform(0.5, 1.5))
    for wy in range(max(fy0, 0) + 10, horizon - win_w, int(win_w * 1.6)):
        for wx in range(fx0 + 10, fx1 - win_w, int(win_w * 1.5)):
            if rng.uniform() < 0.35:
                continue
            level = rng.uniform(5, 200)
            tint = np.array([1.0, rng.uniform(0.7, 1.0), rng.uniform(0.4, 0.9)], np.float32)
            sl = np.s_[wy:wy + win_w, wx:wx + win_w]
            pattern = (0.6 + 0.4 * interior[sl]) * (0.4 + 0.6 * blinds[sl])
            img[sl] = level * pattern[..., None] * tint

    # lamps: bright discs with a patterned shade, some on the ground
    for _ in range(int(rng.integers(2, 6))):
        ly, lx = rng.uniform(0.1, 0.95) * h, rng.uniform(0, 1) * w
        lr = rng.uniform(0.02, 0.07) * min(h, w)
        dl = np.hypot(yy - ly, xx - lx)
        ang = np.arctan2(yy - ly, xx - lx)
        shade = 0.55 + 0.45 * np.sin(ang * int(rng.integers(6, 20))) * np.sin(dl * rng.uniform(0.2, 0.6))
        lamp = rng.uniform(20, 500) * shade * np.exp(-((dl / lr) ** 4))
        img += lamp[..., None] * np.array([1.0, 0.85, 0.6], np.float32)

    img = np.maximum(img, 0).astype(np.float32)
    return np.ascontiguousarray(img)


def write_frames(folder: str | Path, n: int = 8, *, seed: int = 0, height: int = 1024,
                 width: int = 1536) -> list[Path]:
    """Write ``n`` synthetic frames as half-float EXR files ``synth_000.exr`` ...

    Frame ``i`` depends only on ``(seed, i)``, so a folder can be extended.

    Returns
    -------
    list of pathlib.Path
        The written files, in order.
    """
    from hdrprep.io import write_exr

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for i in range(n):
        rng = np.random.default_rng(np.random.SeedSequence([seed, i]))
        path = folder / f"synth_{i:03d}.exr"
        write_exr(path, make_frame(rng, height, width))
        paths.append(path)
    return paths
