"""Patch metric throughput: the per-window OpenCV oracle vs the Numba kernel.

Generated 2048x1365 frames (hdrprep.synth), 250 candidate windows of 512x512
each, weights W = 1 - M from the santos2020 camera (per-frame exposure). Times
only the metric (W is made before the clock starts). The oracle runs on the
first ``--oracle`` windows of each frame; the kernels on all, frame-level work
(D and G of the frame) included and amortised over the frame's windows. One
thread unless stated; the 2-thread rows use Numba threads over windows.

Also prints the keep/discard agreement at 0.85 of 'frame' mode with 'exact'
mode (on every window) and of both with the oracle (on the oracle's windows).

    NUMBA_NUM_THREADS=2 python bench/metric.py [--frames 2] [--windows 250] [--oracle 10]
"""

import argparse
import dataclasses
import time

import cv2
import numpy as np

from hdrprep import camera, synth
from hdrprep.config import CameraConfig, MetricConfig
from hdrprep.metric import FrameMetric, score_from_gradient, set_threads

THRESHOLD = 0.85
CHUNK = 25  # windows whose weights are held in memory at once


def oracle_score(window, W, normalisation):
    """Santos Algorithm 1 on one window, OpenCV throughout (as in tests/test_metric.py)."""
    gray = cv2.cvtColor(window, cv2.COLOR_RGB2GRAY)
    L = np.log(gray + np.float32(1))
    D = L - cv2.bilateralFilter(L, -1, 100, 10)
    G = np.abs(cv2.Sobel(D, cv2.CV_32F, 1, 0, ksize=3)) + np.abs(cv2.Sobel(D, cv2.CV_32F, 0, 1, ksize=3))
    total = np.sum(G[..., None].astype(np.float64) * W)
    if normalisation == "patch":
        return total / W.size
    wsum = W.sum(dtype=np.float64)
    return total / wsum if wsum > 0 else 0.0


def weights(frame, corners, size, rng, cam):
    """W = 1 - M of each window, from the santos2020 camera with one exposure for the frame."""
    q = rng.uniform(cam.clip_low, cam.clip_high)
    e = camera.exposure_for(frame, q)
    out = []
    for r, c in corners:
        p = dataclasses.replace(camera.sample_params(rng, cam), exposure=e, clip_quantile=q)
        ldr, _ = camera.render(frame[r:r + size, c:c + size], p, cam)
        out.append(1.0 - camera.soft_mask(ldr, cam.mask_alpha))
    return np.float32(e), np.stack(out)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--frames", type=int, default=2)
    ap.add_argument("--windows", type=int, default=250)
    ap.add_argument("--oracle", type=int, default=10)
    ap.add_argument("--size", type=int, default=512)
    args = ap.parse_args()
    size, cam = args.size, CameraConfig()
    rng = np.random.default_rng(2020)
    t = {k: 0.0 for k in ("oracle", "exact", "frame", "exact2", "frame2")}
    n_oracle = n_windows = 0
    flips = {"frame_vs_exact": 0, "exact_vs_oracle": 0, "frame_vs_oracle": 0}
    max_rel = 0.0
    keep_rate = {"saturated": 0, "patch": 0}
    import numba

    two = numba.config.NUMBA_NUM_THREADS >= 2
    set_threads(1)
    cv2.setNumThreads(1)
    FrameMetric(np.ones((64, 64, 3), np.float32), 48).score(0, 0, np.zeros((48, 48, 3), np.float32))  # compile
    for f in range(args.frames):
        frame = synth.make_frame(rng, 1365, 2048)
        h, w = frame.shape[:2]
        corners = np.stack([rng.integers(0, h - size + 1, args.windows),
                            rng.integers(0, w - size + 1, args.windows)], axis=1)
        # W depends on the camera draws only: make them once per chunk, time each method on the chunk
        scores = {k: [] for k in ("exact", "frame")}
        exposure = None
        fms = {}
        for lo in range(0, args.windows, CHUNK):
            cc = corners[lo:lo + CHUNK]
            e, W = weights(frame, cc, size, rng, cam)
            if exposure is None:
                exposure = e
                H = np.ascontiguousarray(frame * exposure)
                for threads in ([1, 2] if two else [1]):
                    set_threads(threads)
                    for mode in ("exact", "frame"):
                        key = mode + ("2" if threads == 2 else "")
                        t0 = time.perf_counter()
                        fms[key] = FrameMetric(H, size, MetricConfig(mode=mode))
                        t[key] += time.perf_counter() - t0
            for key, fm in fms.items():
                set_threads(2 if key.endswith("2") else 1)
                t0 = time.perf_counter()
                if key.endswith("2"):
                    s = fm.scores(cc, W)
                else:
                    s = np.array([fm.score(r, c, wi) for (r, c), wi in zip(cc, W)])
                t[key] += time.perf_counter() - t0
                if key in scores:
                    scores[key].append(s)
            set_threads(1)
            for (r, c), wi in zip(cc, W):
                G = fms["exact"].gradient(r, c)
                for norm in keep_rate:
                    keep_rate[norm] += score_from_gradient(G, wi, norm) >= THRESHOLD
            for j in range(max(0, min(CHUNK, args.oracle - lo))):
                r, c = cc[j]
                window = np.ascontiguousarray(H[r:r + size, c:c + size])
                t0 = time.perf_counter()
                ref = oracle_score(window, W[j], "saturated")
                t["oracle"] += time.perf_counter() - t0
                n_oracle += 1
                ex, fr = scores["exact"][-1][j], scores["frame"][-1][j]
                max_rel = max(max_rel, abs(ex - ref) / max(abs(ref), 1e-300))
                flips["exact_vs_oracle"] += (ex >= THRESHOLD) != (ref >= THRESHOLD)
                flips["frame_vs_oracle"] += (fr >= THRESHOLD) != (ref >= THRESHOLD)
        ex, fr = np.concatenate(scores["exact"]), np.concatenate(scores["frame"])
        flips["frame_vs_exact"] += int(np.sum((ex >= THRESHOLD) != (fr >= THRESHOLD)))
        n_windows += args.windows

    per = {"oracle": t["oracle"] / n_oracle}
    per.update({k: v / n_windows for k, v in t.items() if k != "oracle" and v > 0})
    print(f"{args.frames} generated 2048x1365 frames, {args.windows} windows of {size}x{size} each, "
          f"oracle on {n_oracle}; normalisation 'saturated'")
    print(f"{'method':34s} {'ms/candidate':>12s} {'candidates/s':>13s} {'x oracle':>9s}")
    names = {"oracle": "oracle (cv2 per window), 1 thread", "exact": "kernel exact, 1 thread",
             "frame": "kernel frame mode, 1 thread", "exact2": "kernel exact, 2 threads",
             "frame2": "kernel frame mode, 2 threads"}
    for k, v in per.items():
        print(f"{names[k]:34s} {v * 1e3:12.3f} {1 / v:13.1f} {per['oracle'] / v:9.0f}")
    print(f"exact vs oracle: max relative score error {max_rel:.2e}, "
          f"{flips['exact_vs_oracle']} of {n_oracle} decisions differ")
    print(f"frame mode vs oracle: {flips['frame_vs_oracle']} of {n_oracle} decisions differ; "
          f"frame vs exact: {flips['frame_vs_exact']} of {n_windows} decisions differ "
          f"({flips['frame_vs_exact'] / n_windows:.2%})")
    print(f"keep rate at {THRESHOLD} (exact): saturated {keep_rate['saturated'] / n_windows:.1%}, "
          f"patch {keep_rate['patch'] / n_windows:.1%}")


if __name__ == "__main__":
    main()
