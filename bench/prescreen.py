"""Prescreening candidates on the deterministic camera: how often does it change a decision, and what does it save?

The build scores each candidate on the soft mask of its final LDR (after
colour jitter, noise and JPEG). Rendering that full camera for every one of
the 250 candidates of a frame dominates the scoring stage, so the build first
scores each candidate on the mask of the deterministic camera only (exposure,
curve, 8-bit quantisation: ``camera.saturation_levels``) and renders the full
camera only where that prescore is >= threshold - margin
(``metric.prescreen_margin``). This bench measures, on the real fixtures with
the santos2020 candidates (the build's own windows and parameters, seed 0):

- agreement of the keep/discard decision of prescore alone vs the full score;
- per margin: candidates rendered in full (the cost) and full-camera keeps
  that the prescreen would discard (the misses: the decisions it changes);
- CPU ms per candidate of the prescore and of the full render + score.

    NUMBA_NUM_THREADS=1 python bench/prescreen.py [--patches 50] [--margins 0 0.05 0.1 0.2]
"""

import argparse
import json
import sys
import time
from pathlib import Path

import cv2
import numpy as np

from hdrprep import camera, candidates, metric
from hdrprep.config import Config
from hdrprep.io import read_frame

REPO = Path(__file__).resolve().parent.parent
HDR_DIR = REPO.parent / "shared" / "data" / "hdr"


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--patches", type=int, default=50, help="candidates per frame")
    ap.add_argument("--margins", type=float, nargs="+", default=[0.0, 0.05, 0.1, 0.2])
    ap.add_argument("--hdr-dir", type=Path, default=HDR_DIR)
    ap.add_argument("--json", type=Path, default=None)
    args = ap.parse_args()
    cfg = Config().override(**{"sampling.patches_per_frame": args.patches})
    size, alpha, thr = cfg.sampling.patch_size, cfg.camera.mask_alpha, cfg.select.threshold
    frames = sorted(p for p in args.hdr_dir.iterdir() if p.suffix.lower() in (".exr", ".hdr"))
    if not frames:
        sys.exit(f"no .exr/.hdr frames in {args.hdr_dir}")
    cv2.setNumThreads(1)
    full, pre, full_sat, pre_sat = [], [], [], []
    t_pre = t_full = 0.0
    for path in frames:
        frame, _ = read_frame(path)
        if min(frame.shape[:2]) < size:
            continue
        q, windows, params = candidates.sample_windows(frame.shape[:2], path.name, cfg)
        params = candidates.expose(frame, windows, params, q, cfg)
        scorer = metric.FrameMetric(frame * np.float32(params[0].exposure), size, cfg.metric)
        scorer.score_ldr(*windows[0], np.zeros((size, size, 3), np.uint8), alpha)  # warm the kernels
        for (r, c), p in zip(windows.tolist(), params):
            window = frame[r:r + size, c:c + size]
            t0 = time.process_time()
            base, sat = camera.saturation_levels(window, p, alpha)
            s_pre = scorer.score_ldr(r, c, base, alpha) if sat > 0 else 0.0
            t1 = time.process_time()
            ldr, _ = camera.render(window, p, cfg.camera)
            mask = camera.soft_mask(ldr, alpha)
            s_full = scorer.score_ldr(r, c, ldr, alpha) if mask.min() < 1 else 0.0
            t2 = time.process_time()
            t_pre += t1 - t0
            t_full += t2 - t1
            pre.append(s_pre), full.append(s_full)
            pre_sat.append(sat), full_sat.append(metric.saturated_fraction(mask))
    full, pre = np.array(full), np.array(pre)
    keep_full = (full >= thr) & (np.array(full_sat) > 0)
    keep_pre = (pre >= thr) & (np.array(pre_sat) > 0)
    n = len(full)
    out = {"candidates": n, "frames": len(frames), "full_keeps": int(keep_full.sum()),
           "prescore_alone_agreement": float((keep_full == keep_pre).mean()),
           "ms_prescore": 1e3 * t_pre / n, "ms_full": 1e3 * t_full / n, "margins": []}
    print(f"{n} candidates from {len(frames)} frames; full-camera keeps {keep_full.sum()} "
          f"({keep_full.mean():.1%}); prescore-alone decisions agree on {out['prescore_alone_agreement']:.2%}")
    print(f"CPU ms per candidate: prescore {out['ms_prescore']:.2f}, full render + score {out['ms_full']:.2f}")
    print("| margin | rendered in full | full keeps missed | est. ms per candidate |")
    print("| ---: | ---: | ---: | ---: |")
    for m in args.margins:
        render = pre >= thr - m
        missed = int((keep_full & ~render).sum())
        est = out["ms_prescore"] + render.mean() * out["ms_full"]
        out["margins"].append({"margin": m, "rendered": float(render.mean()), "missed": missed, "ms": est})
        print(f"| {m:g} | {render.mean():.1%} | {missed} of {keep_full.sum()} | {est:.2f} |")
    if args.json:
        args.json.write_text(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
