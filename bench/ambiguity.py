"""Which normalisation of Santos' score? Keep rates at 0.85 on the real fixtures.

Algorithm 1 of Santos et al. (2020) writes mean(G * (1 - M)) over the patch
('patch'); the text says "the average of the gradients of the detail layer in
the saturated areas" ('saturated': sum(G W) / sum(W)). For every real fixture
frame (../shared/data/hdr) and a fixed seed: ``--windows`` random 512x512
windows, the santos2020 camera (Config() defaults: exposure per frame with
U(0.85, 0.95) of values below 1, sigmoid curve, noise, colour jitter, JPEG,
soft mask alpha 0.96), scored with the exact kernel. Prints, per
normalisation, the share of candidates with a saturated pixel, the share with
score >= 0.85, the share kept by the default selection (both), and score
percentiles. Frames smaller than the window are skipped and listed.

    python bench/ambiguity.py [--windows 50] [--seed 0] [--exposure frame|window]
"""

import argparse
import dataclasses
import sys
from pathlib import Path

import numpy as np

from hdrprep import camera
from hdrprep.config import Config, MetricConfig
from hdrprep.io import read_frame
from hdrprep.metric import FrameMetric, saturated_fraction

REPO = Path(__file__).resolve().parent.parent
HDR_DIR = REPO.parent / "shared" / "data" / "hdr"


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--windows", type=int, default=50)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--size", type=int, default=512)
    ap.add_argument("--exposure", choices=("frame", "window"), default="frame")
    ap.add_argument("--hdr-dir", type=Path, default=HDR_DIR)
    args = ap.parse_args()
    cfg = Config()
    cam = dataclasses.replace(cfg.camera, exposure_mode=args.exposure)
    threshold = cfg.select.threshold
    frames = sorted(p for p in args.hdr_dir.iterdir() if p.suffix.lower() in (".exr", ".hdr"))
    if not frames:
        sys.exit(f"no .exr/.hdr frames in {args.hdr_dir}")
    rng = np.random.default_rng(args.seed)
    sat, scores, skipped = [], {"saturated": [], "patch": []}, []
    metric_cfg = {norm: MetricConfig(normalisation=norm) for norm in scores}
    per_frame = []
    for path in frames:
        frame, _ = read_frame(path)
        h, w = frame.shape[:2]
        if min(h, w) < args.size:
            skipped.append(f"{path.name} ({w}x{h})")
            continue
        q = rng.uniform(cam.clip_low, cam.clip_high)
        e = camera.exposure_for(frame, q)
        if args.exposure == "frame":
            H = frame * np.float32(e)
            fms = {norm: FrameMetric(H, args.size, metric_cfg[norm]) for norm in scores}
        n_keep = 0
        for _ in range(args.windows):
            r, c = int(rng.integers(0, h - args.size + 1)), int(rng.integers(0, w - args.size + 1))
            window = frame[r:r + args.size, c:c + args.size]
            p = camera.sample_params(rng, cam)
            if args.exposure == "frame":
                p = dataclasses.replace(p, exposure=e, clip_quantile=q)
                corner = (r, c)
            else:
                p = dataclasses.replace(p, exposure=camera.exposure_for(window, p.clip_quantile))
                H = window * np.float32(p.exposure)
                fms = {norm: FrameMetric(H, args.size, metric_cfg[norm]) for norm in scores}
                corner = (0, 0)
            ldr, _ = camera.render(window, p, cam)
            mask = camera.soft_mask(ldr, cam.mask_alpha)
            sat.append(saturated_fraction(mask))
            for norm in scores:
                scores[norm].append(fms[norm].score(*corner, 1.0 - mask))
            n_keep += sat[-1] > 0 and scores["saturated"][-1] >= threshold
        per_frame.append((path.name, n_keep))
    sat = np.array(sat)
    n = sat.size
    print(f"{len(frames) - len(skipped)} real frames x {args.windows} windows of {args.size}x{args.size} = {n} "
          f"candidates; seed {args.seed}; exposure per {args.exposure}; mask alpha {cam.mask_alpha}")
    print(f"skipped (smaller than {args.size}): {', '.join(skipped) or 'none'}")
    print(f"candidates with a saturated pixel: {np.mean(sat > 0):.1%}; saturated fraction "
          f"p1 {np.percentile(sat, 1):.2g}, p10 {np.percentile(sat, 10):.2g}, median {np.median(sat):.3f}; "
          f"share with >= 1% saturated: {np.mean(sat >= 0.01):.1%}")
    print(f"{'normalisation':14s} {'score>=0.85':>11s} {'kept (sat>0 & >=0.85)':>22s} "
          f"{'p50':>7s} {'p90':>7s} {'p99':>7s}")
    for norm, s in scores.items():
        s = np.array(s)
        print(f"{norm:14s} {np.mean(s >= threshold):11.1%} {np.mean((s >= threshold) & (sat > 0)):22.1%} "
              f"{np.percentile(s, 50):7.3f} {np.percentile(s, 90):7.3f} {np.percentile(s, 99):7.3f}")
    kept = sorted(per_frame, key=lambda t: -t[1])
    print("kept per frame ('saturated'): " + ", ".join(f"{name} {k}" for name, k in kept))


if __name__ == "__main__":
    main()
