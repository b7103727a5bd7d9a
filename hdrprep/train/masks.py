"""Irregular hole masks for inpainting pre-training (Liu et al. 2018 style), a pure function of their seed.

Santos et al. 2020 (Sec. 3.3, 4) pre-train on MIT Places with "the method of Liu et al.
[2018] to generate masks of random streaks and holes of arbitrary shapes and sizes".
Liu et al. cut their masks from occlusion estimates between video frames (a mask set
that is not bundled here); Santos' released code draws them instead (``lib/util.py``
``random_mask``: 1-20 straight lines, 1-20 filled circles and 1-20 elliptical arcs,
widths 3 to 3 % of (h + w)). :func:`irregular_mask` draws the same kinds of shapes plus
free-form brush strokes (polylines with round joints, the streaks Liu's masks show),
and, unlike either, draws until the holes cover a target share of the image drawn
from U(hole_min, hole_max), so the hole ratio spans a chosen range (Liu et al. test
with ratios from 0.01 to 0.6).

Randomness: one ``numpy.random.default_rng([MASK_STREAM, seed, step, item])`` per mask,
no global state, and OpenCV's integer rasteriser: the same (seed, step, item, size)
gives the same mask on every machine and in every DataLoader worker.
"""

from __future__ import annotations

import cv2
import numpy as np

__all__ = ["MASK_STREAM", "MAX_SHAPES", "hole_ratio", "irregular_mask"]

MASK_STREAM = 0x4D41534B  # "MASK": keeps the masks' random stream apart from the crops' and the order's
MAX_SHAPES = 400  # attempts per mask; at 256x256 a 0.6 target needs about 40


def irregular_mask(height: int, width: int, seed: int, step: int, item: int = 0,
                   hole_min: float = 0.1, hole_max: float = 0.6) -> np.ndarray:
    """A binary mask of irregular holes: 1 = valid pixel, 0 = hole.

    Shapes are drawn one at a time, each chosen at random among

    - a brush stroke: a polyline of 1-6 segments, each turning by up to +-pi/2 from the
      last, of 0.04-0.25 (h + w) length, thickness 3 to 2s, with round joints;
    - a straight line between two random points, thickness 3 to s;
    - a filled disc of radius 3 to 2s;
    - an elliptical arc (random axes up to half the image, start and sweep angles),
      thickness 3 to s;

    with s = max(3, 0.03 (h + w)) (15 px at 256x256, as in Santos' generator), until the
    holes cover at least ``target ~ U(hole_min, hole_max)`` of the pixels. A shape that
    would push the cover above ``hole_max`` is left out and another one drawn, so the
    result lies in [target, hole_max] (below target only if :data:`MAX_SHAPES` draws
    do not reach it: tiny images with a high target).

    Parameters
    ----------
    height, width : int, >= 1
    seed, step, item : int, >= 0
        The run's seed, the training step and the item's place in the batch.
    hole_min, hole_max : float, 0 <= hole_min <= hole_max < 1
        Range of the target hole ratio.

    Returns
    -------
    uint8 array (height, width) of 0 and 1, C-contiguous.
    """
    if not 0 <= hole_min <= hole_max < 1:
        raise ValueError(f"hole ratio range [{hole_min}, {hole_max}] must satisfy 0 <= min <= max < 1")
    rng = np.random.default_rng([MASK_STREAM, int(seed), int(step), int(item)])
    target = rng.uniform(hole_min, hole_max)
    holes = np.zeros((height, width), np.uint8)
    total = height * width
    need, limit = int(np.ceil(target * total)), int(np.floor(hole_max * total))
    s = max(3, round(0.03 * (height + width)))
    covered = 0
    for _ in range(MAX_SHAPES):
        if covered >= need:
            break
        trial = holes.copy()
        _draw_shape(trial, rng, s)
        n = int(np.count_nonzero(trial))
        if n <= limit:  # else: too big for this mask; draw another shape
            holes, covered = trial, n
    return np.ascontiguousarray(1 - holes)


def hole_ratio(mask: np.ndarray) -> float:
    """Share of hole pixels (value 0) of a mask from :func:`irregular_mask`."""
    return float(1.0 - mask.mean())


def _draw_shape(img: np.ndarray, rng: np.random.Generator, s: int) -> None:
    h, w = img.shape
    kind = rng.choice(4, p=[0.4, 0.2, 0.2, 0.2])
    if kind == 0:  # brush stroke
        thickness = int(rng.integers(3, 2 * s + 1))
        x, y = float(rng.uniform(0, w)), float(rng.uniform(0, h))
        angle = rng.uniform(0, 2 * np.pi)
        for _ in range(int(rng.integers(1, 7))):
            angle += rng.uniform(-np.pi / 2, np.pi / 2)
            length = rng.uniform(0.04, 0.25) * (h + w)
            nx = float(np.clip(x + length * np.cos(angle), 0, w - 1))
            ny = float(np.clip(y + length * np.sin(angle), 0, h - 1))
            cv2.line(img, (round(x), round(y)), (round(nx), round(ny)), 1, thickness)
            cv2.circle(img, (round(nx), round(ny)), thickness // 2, 1, -1)  # a round joint
            x, y = nx, ny
    elif kind == 1:  # straight line
        p1 = (int(rng.integers(0, w)), int(rng.integers(0, h)))
        p2 = (int(rng.integers(0, w)), int(rng.integers(0, h)))
        cv2.line(img, p1, p2, 1, int(rng.integers(3, s + 1)))
    elif kind == 2:  # filled disc
        centre = (int(rng.integers(0, w)), int(rng.integers(0, h)))
        cv2.circle(img, centre, int(rng.integers(3, 2 * s + 1)), 1, -1)
    else:  # elliptical arc
        centre = (int(rng.integers(0, w)), int(rng.integers(0, h)))
        axes = (int(rng.integers(1, max(2, w // 2))), int(rng.integers(1, max(2, h // 2))))
        rot, start = int(rng.integers(0, 180)), int(rng.integers(0, 360))
        sweep = int(rng.integers(30, 271))
        cv2.ellipse(img, centre, axes, rot, start, start + sweep, 1, int(rng.integers(3, s + 1)))
