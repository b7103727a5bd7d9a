"""Patch metric throughput: the per-window OpenCV oracle vs the Numba kernel.

Generated 2048x1365 frames (hdrprep.synth), ``--windows`` candidate windows of
512x512 each, the LDR of each from the santos2020 camera (one exposure per
frame) and its weights W = 1 - M, made before any clock starts. Times only the
metric. The kernels score every window, frame-level work (log luminance, and D
and G of the frame's tiles, computed on first use) included and amortised over
the frame's windows; the oracle scores every
k-th window. The methods are interleaved chunk by chunk, so that load from other
processes on a shared machine falls on all of them alike. Reported per
candidate: CPU time of this process (``time.process_time``; equal to the
compute time with one thread) and wall time, and the ratio to the oracle of each.

Rows, all on one thread: the oracle (cv2); ``score`` (weights W = 1 - M,
float32) and ``score_ldr`` (the uint8 LDR, W computed inside) in 'exact' mode;
'frame' mode. Also prints the keep/discard agreement at 0.85 of 'frame' mode
with 'exact' mode (every window) and of both with the oracle, and the keep rate
of each normalisation (exact mode, every window).

    python bench/metric.py [--frames 2] [--windows 250] [--oracle 10]
"""

import argparse
import dataclasses
import time

import cv2
import numpy as np
from oracle import oracle_score  # bench/ is on sys.path when run as a script

from hdrprep import camera, synth
from hdrprep.config import CameraConfig, MetricConfig
from hdrprep.metric import FrameMetric

THRESHOLD = 0.85
CHUNK = 25  # windows whose weights are held in memory at once


def camera_windows(frame, corners, size, rng, cam, exposure, q):
    """LDR (K, size, size, 3) uint8 and W = 1 - M (K, size, size, 3) float32 of each window."""
    ldrs = []
    for r, c in corners:
        p = dataclasses.replace(camera.sample_params(rng, cam), exposure=exposure, clip_quantile=q)
        ldrs.append(camera.render(frame[r:r + size, c:c + size], p, cam)[0])
    ldrs = np.stack(ldrs)
    return ldrs, np.float32(1) - camera.soft_mask(ldrs, cam.mask_alpha)


def score_each(method, corners, arrays, *extra):
    """method(row, col, array, *extra) of each window, one call each (as hdrprep.candidates does)."""
    return [method(r, c, x, *extra) for (r, c), x in zip(corners, arrays)]


class Clock:
    """Accumulated CPU and wall seconds per method."""

    def __init__(self):
        self.cpu, self.wall = {}, {}

    def __call__(self, key, fn, *args):
        c0, w0 = time.process_time(), time.perf_counter()
        out = fn(*args)
        self.cpu[key] = self.cpu.get(key, 0.0) + time.process_time() - c0
        self.wall[key] = self.wall.get(key, 0.0) + time.perf_counter() - w0
        return out


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--frames", type=int, default=2)
    ap.add_argument("--windows", type=int, default=250)
    ap.add_argument("--oracle", type=int, default=10, help="oracle windows per frame")
    ap.add_argument("--size", type=int, default=512)
    args = ap.parse_args()
    size, cam = args.size, CameraConfig()
    rng = np.random.default_rng(2020)
    clock = Clock()
    n_oracle = n_windows = 0
    flips = {"frame_vs_exact": 0, "exact_vs_oracle": 0, "frame_vs_oracle": 0}
    max_rel = max_rel_ldr = 0.0
    keep_rate = {"saturated": 0, "patch": 0}
    cv2.setNumThreads(1)
    for mode in ("exact", "frame"):  # compile (or load the cache) before timing
        warm = FrameMetric(np.ones((64, 64, 3), np.float32), 48, MetricConfig(mode=mode))
        warm.score(0, 0, np.ones((48, 48, 3), np.float32))
        warm.score_ldr(0, 0, np.full((48, 48, 3), 255, np.uint8), cam.mask_alpha)
    every = max(1, args.windows // max(1, args.oracle))
    keys = ["exact", "exact_ldr", "frame"]
    for _ in range(args.frames):
        frame = synth.make_frame(rng, 1365, 2048)
        h, w = frame.shape[:2]
        corners = np.stack([rng.integers(0, h - size + 1, args.windows),
                            rng.integers(0, w - size + 1, args.windows)], axis=1)
        q = rng.uniform(cam.clip_low, cam.clip_high)
        exposure = np.float32(camera.exposure_for(frame, q))
        H = np.ascontiguousarray(frame * exposure)
        fms = {}
        scores = {key: [] for key in keys}
        patch = FrameMetric(H, size, MetricConfig(normalisation="patch"))  # keep rate only, not timed
        for lo in range(0, args.windows, CHUNK):
            cc = corners[lo:lo + CHUNK]
            ldrs, W = camera_windows(frame, cc, size, rng, cam, exposure, q)
            for key in keys:
                mode = "frame" if key.startswith("frame") else "exact"
                if key not in fms:  # frame-level work, once per frame
                    fms[key] = clock(key, FrameMetric, H, size, MetricConfig(mode=mode))
                fm = fms[key]
                if key == "exact_ldr":
                    s = clock(key, score_each, fm.score_ldr, cc, ldrs, cam.mask_alpha)
                else:
                    s = clock(key, score_each, fm.score, cc, W)
                scores[key].append(np.array(s))
            for j in range(len(cc)):
                if (lo + j) % every:
                    continue
                r, c = cc[j]
                window = np.ascontiguousarray(H[r:r + size, c:c + size])
                ref = clock("oracle", oracle_score, window, W[j], "saturated")
                n_oracle += 1
                ex, fr, el = (scores[k][-1][j] for k in ("exact", "frame", "exact_ldr"))
                max_rel = max(max_rel, abs(ex - ref) / max(abs(ref), 1e-300))
                max_rel_ldr = max(max_rel_ldr, abs(el - ref) / max(abs(ref), 1e-300))
                flips["exact_vs_oracle"] += (ex >= THRESHOLD) != (ref >= THRESHOLD)
                flips["frame_vs_oracle"] += (fr >= THRESHOLD) != (ref >= THRESHOLD)
            keep_rate["saturated"] += int(np.sum(scores["exact"][-1] >= THRESHOLD))
            keep_rate["patch"] += sum(patch.score(r, c, wi) >= THRESHOLD for (r, c), wi in zip(cc, W))
        ex, fr = np.concatenate(scores["exact"]), np.concatenate(scores["frame"])
        flips["frame_vs_exact"] += int(np.sum((ex >= THRESHOLD) != (fr >= THRESHOLD)))
        n_windows += args.windows

    print(f"{args.frames} generated 2048x1365 frames, {args.windows} windows of {size}x{size} each, "
          f"oracle on {n_oracle}; normalisation 'saturated'; CPU = process time")
    print(f"{'method':36s} {'CPU ms/cand':>11s} {'wall ms/cand':>12s} {'cand/s (CPU)':>12s} "
          f"{'x oracle CPU':>12s} {'x oracle wall':>13s}")
    names = {"oracle": "oracle (cv2 per window), 1 thread", "exact": "exact, score(W), 1 thread",
             "exact_ldr": "exact, score_ldr(LDR), 1 thread", "frame": "frame mode, score(W), 1 thread"}
    per_cpu = {k: clock.cpu[k] / (n_oracle if k == "oracle" else n_windows) for k in ["oracle"] + keys}
    per_wall = {k: clock.wall[k] / (n_oracle if k == "oracle" else n_windows) for k in ["oracle"] + keys}
    for k in ["oracle"] + keys:
        print(f"{names[k]:36s} {per_cpu[k] * 1e3:11.3f} {per_wall[k] * 1e3:12.3f} {1 / per_cpu[k]:12.1f} "
              f"{per_cpu['oracle'] / per_cpu[k]:12.0f} {per_wall['oracle'] / per_wall[k]:13.0f}")
    print(f"exact vs oracle: max relative score error {max_rel:.2e} (score_ldr {max_rel_ldr:.2e}), "
          f"{flips['exact_vs_oracle']} of {n_oracle} decisions differ")
    print(f"frame mode vs oracle: {flips['frame_vs_oracle']} of {n_oracle} decisions differ; "
          f"frame vs exact: {flips['frame_vs_exact']} of {n_windows} decisions differ "
          f"({flips['frame_vs_exact'] / n_windows:.2%})")
    print(f"keep rate at {THRESHOLD} (exact): saturated {keep_rate['saturated'] / n_windows:.1%}, "
          f"patch {keep_rate['patch'] / n_windows:.1%}")


if __name__ == "__main__":
    main()
