"""The paper's way of scoring a window, shared by the benches that compare against it."""

import cv2
import numpy as np


def oracle_score(window, weights, normalisation):
    """Santos Algorithm 1 on one window, OpenCV throughout (as in tests/test_metric.py).

    window : float32 (P, P, 3) linear RGB; weights : (P, P, 3) = 1 - M;
    normalisation : 'saturated' (sum(G W) / sum(W)) or 'patch' (mean of G W).
    """
    gray = cv2.cvtColor(window, cv2.COLOR_RGB2GRAY)
    L = np.log(gray + np.float32(1))
    D = L - cv2.bilateralFilter(L, -1, 100, 10)
    G = np.abs(cv2.Sobel(D, cv2.CV_32F, 1, 0, ksize=3)) + np.abs(cv2.Sobel(D, cv2.CV_32F, 0, 1, ksize=3))
    total = np.sum(G[..., None].astype(np.float64) * weights)
    if normalisation == "patch":
        return total / weights.size
    wsum = weights.sum(dtype=np.float64)
    return total / wsum if wsum > 0 else 0.0
