"""Contact sheets: look at the pairs of a store before training on them."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np

from hdrprep import camera, store

__all__ = ["mu_law", "contact_sheet"]


def mu_law(hdr: np.ndarray, mu: float = 500.0) -> np.ndarray:
    """Tonemap linear HDR (>= 0) for display: log(1 + mu x) / log(1 + mu) with x = hdr / p99.9.

    Normalising by the patch's 99.9th percentile (at least 1.0, the LDR's clip
    point) keeps the texture inside saturated regions visible.

    Returns
    -------
    numpy.ndarray
        float32, same shape, in [0, 1].
    """
    hdr = np.asarray(hdr, np.float32)
    x = np.clip(hdr / max(float(np.percentile(hdr, 99.9)), 1.0), 0, 1)
    return (np.log1p(mu * x) / np.log1p(mu)).astype(np.float32)


def contact_sheet(root: str | Path, out: str | Path, *, n: int = 32, sort: str = "score",
                  thumb: int = 128, seed: int = 0) -> Path:
    """Write a PNG with, per pair, the LDR, the HDR (mu-law up to its 99.9th percentile) and 1 - mask.

    The third thumbnail is white where the LDR is saturated (the weights of the patch metric).

    Parameters
    ----------
    root : path
        A finished store.
    out : path
        PNG file to write.
    n : int
        Number of pairs shown (the first ``n`` by the sort order).
    sort : {'score', 'random'}
        Highest scores first, or a seeded random sample.
    thumb : int
        Side of each thumbnail in pixels.

    Returns
    -------
    pathlib.Path
        ``out``.
    """
    group, index, attrs = store.open_store(root)
    if sort not in ("score", "random"):
        raise ValueError(f"sort must be 'score' or 'random', got {sort!r}")
    if index.num_rows == 0:
        raise ValueError(f"{root}: the store has no pairs to show")
    alpha = attrs["config"]["camera"]["mask_alpha"]
    scores = index["score"].to_numpy()
    order = np.argsort(-scores, kind="stable") if sort == "score" else \
        np.random.default_rng(seed).permutation(index.num_rows)
    picks = np.sort(order[:n]) if sort == "random" else order[:n]
    sources = index["source"].to_pylist()
    label_h = 16
    cols = max(1, min(4, len(picks)))
    rows = -(-len(picks) // cols)
    tile_w, tile_h = 3 * thumb + 8, thumb + label_h + 8
    sheet = np.full((rows * tile_h, cols * tile_w, 3), 32, np.uint8)
    for k, i in enumerate(picks):
        ldr = group["ldr"][int(i)]
        hdr = group["hdr"][int(i)].astype(np.float32)
        mask = camera.soft_mask(ldr, alpha)
        parts = [ldr, (mu_law(hdr) * 255 + 0.5).astype(np.uint8), ((1 - mask) * 255 + 0.5).astype(np.uint8)]
        y, x = (k // cols) * tile_h, (k % cols) * tile_w
        for j, img in enumerate(parts):
            small = cv2.resize(img, (thumb, thumb), interpolation=cv2.INTER_AREA)
            sheet[y + label_h:y + label_h + thumb, x + j * thumb:x + (j + 1) * thumb] = small
        label = f"#{int(i)} s={scores[i]:.2f} {Path(sources[i]).name}"[:48]
        cv2.putText(sheet, label, (x + 2, y + 12), cv2.FONT_HERSHEY_SIMPLEX, 0.38, (230, 230, 230), 1,
                    cv2.LINE_AA)
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    if not cv2.imwrite(str(out), sheet[..., ::-1]):
        raise OSError(f"could not write {out}")
    return out
