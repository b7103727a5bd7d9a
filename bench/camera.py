"""Benchmark of the virtual camera: ms per 512x512 patch, one thread.

Usage: python bench/camera.py [PLOT.png] [--patches N]

Renders N real 512x512 windows (from ../shared/data/hdr, or lognormal noise
images where that is absent) with each step switched on alone and with the full
camera, prints the median time per patch and the step's share of the full
camera, next to the numpy/OpenCV reference implementation of the same steps
(``numpy_reference_render`` in tests/test_camera.py, the code the Numba kernel
replaced; its noise rows use the new generator, the old ``Generator.standard_normal``
draw is timed on its own in the last row) and the speed-up, and writes a plot of sampled camera curves to
PLOT.png (default /tmp/curves.png). A second table times the ``eilertsen2017`` camera:
the crop's resize to 512x512 (``camera.crop_window``, crops of U(0.2, 0.6) x the frame width of
four EXR fixtures, clamped to [512, frame height]), its histogram exposure and its full camera.
"""

import argparse
import dataclasses
import os
import sys
import time
from pathlib import Path

os.environ.setdefault("NUMBA_NUM_THREADS", "1")

import cv2  # noqa: E402
import numpy as np  # noqa: E402

from hdrprep.camera import (apply_curve, exposure_for, render, sample_params, soft_mask,  # noqa: E402
                            standard_normal)
from hdrprep.config import CameraConfig  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))
from test_camera import numpy_reference_render  # noqa: E402

SIZE = 512
HDR_DIR = Path(__file__).resolve().parent.parent.parent / "shared" / "data" / "hdr"


def frames_or_noise(rng):
    frames = []
    for name in ("forest_slope_1k.hdr", "venice_sunset_1k.hdr", "kiara_1_dawn_1k.hdr", "moonless_golf_1k.hdr"):
        img = cv2.imread(str(HDR_DIR / name), cv2.IMREAD_UNCHANGED)
        if img is not None:
            frames.append(np.ascontiguousarray(img[..., ::-1], dtype=np.float32))
    if not frames:
        print(f"(no fixtures at {HDR_DIR}: timing lognormal noise images)")
        frames = [rng.lognormal(0, 2, (SIZE * 2, SIZE * 2, 3)).astype(np.float32)]
    return frames


def windows(n, rng):
    frames = frames_or_noise(rng)
    out = []
    for i in range(n):
        f = frames[i % len(frames)]
        y, x = rng.integers(0, f.shape[0] - SIZE + 1), rng.integers(0, f.shape[1] - SIZE + 1)
        out.append(np.ascontiguousarray(f[y:y + SIZE, x:x + SIZE]))
    return out


def interleaved_ms(fns, items, repeats=3):
    """Median over items of the best of ``repeats`` runs, ms, for each fn.

    The functions take turns on each item, so a load spike on a shared machine
    hits all of them alike instead of one row of the table.
    """
    for fn in fns.values():
        fn(items[0])  # warm-up
    times = {name: [] for name in fns}
    for it in items:
        for name, fn in fns.items():
            best = float("inf")
            for _ in range(repeats):
                t0 = time.perf_counter()
                fn(it)
                best = min(best, time.perf_counter() - t0)
            times[name].append(best)
    return {name: 1e3 * float(np.median(t)) for name, t in times.items()}


def plot_curves(path, n_curves=40, seed=0):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rng = np.random.default_rng(seed)
    x = np.linspace(0, 1, 513, dtype=np.float32)
    fig, axes = plt.subplots(1, 2, figsize=(10, 4.5))
    for ax, curve in zip(axes, ("sigmoid", "gamma")):
        cfg = CameraConfig(curve=curve)
        for _ in range(n_curves):
            p = sample_params(rng, cfg)
            ax.plot(x, apply_curve(x, p), lw=0.7, alpha=0.7)
        ax.plot(x, x, "k--", lw=1, label="identity")
        title = ("sigmoid (1+s)H^n/(H^n+s), n~N(0.9,0.1), s~N(0.6,0.1)" if curve == "sigmoid"
                 else f"gamma H^(1/g), g~U({cfg.gamma_min},{cfg.gamma_max})")
        ax.set(title=f"{n_curves} sampled: {title}", xlabel="exposed linear H (1 = clipping point)",
               ylabel="camera output", xlim=(0, 1), ylim=(0, 1.02))
        ax.title.set_fontsize(8)
        ax.legend(loc="lower right")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("plot", nargs="?", default="/tmp/curves.png")
    ap.add_argument("--patches", type=int, default=50)
    args = ap.parse_args(argv)
    cv2.setNumThreads(1)
    rng = np.random.default_rng(0)
    wins = windows(args.patches, rng)
    full = CameraConfig()
    off = dict(noise=False, color_jitter=False, jpeg=False)
    params = []
    for w in wins:
        p = sample_params(rng, full)
        # steps that are on must not be skipped as identities: force non-zero draws
        p = dataclasses.replace(p, exposure=exposure_for(w, p.clip_quantile), noise_sigma=max(p.noise_sigma, 1e-3),
                                hue_shift=p.hue_shift or 1.0, sat_shift=p.sat_shift or 0.01)
        params.append(p)
    items = list(zip(wins, params))

    def run(fn=render, **steps):
        cfg = CameraConfig(**{**off, **steps})
        return lambda it: fn(it[0], it[1], cfg)

    steps = {"base": {}, "noise": dict(noise=True), "color_jitter": dict(color_jitter=True),
             "jpeg": dict(jpeg=True), "full": dict(noise=True, color_jitter=True, jpeg=True)}
    fns = {"exposure_for (window)": lambda it: exposure_for(it[0], it[1].clip_quantile)}
    fns.update({name: run(**kw) for name, kw in steps.items()})
    fns.update({f"ref {name}": run(numpy_reference_render, **kw) for name, kw in steps.items()})
    # the draw the old numpy camera made (the reference above uses the new generator)
    fns["Generator.standard_normal"] = lambda it: np.random.default_rng(it[1].noise_seed).standard_normal(
        it[0].shape, dtype=np.float32)
    fns["camera.standard_normal"] = lambda it: standard_normal(it[0].size, it[1].noise_seed)
    ms = interleaved_ms(fns, items)
    ldrs = [render(w, p, full)[0] for w, p in items]
    mask_ms = interleaved_ms({"soft_mask": lambda ldr: soft_mask(ldr, full.mask_alpha)}, ldrs)["soft_mask"]
    base, t_full = ms["base"], ms["full"]
    rows = [("exposure_for (window)", ms["exposure_for (window)"], None, None),
            ("exposure+curve+quantise (base)", base, None, ms["ref base"])]
    rows += [(f"base + {step}", ms[step], ms[step] - base, ms[f"ref {step}"])
             for step in ("noise", "color_jitter", "jpeg")]
    rows.append(("full camera", t_full, None, ms["ref full"]))
    rows.append(("soft_mask (separate)", mask_ms, None, None))
    rows.append(("noise draw alone", ms["camera.standard_normal"], None, ms["Generator.standard_normal"]))

    print(f"virtual camera, {SIZE}x{SIZE} patches, median over {len(items)}, cv2 threads 1, "
          f"numpy {np.__version__}, opencv {cv2.__version__}")
    print(f"{'step':34s} {'ms/patch':>9s} {'minus base':>11s} {'share of full':>14s} "
          f"{'numpy ref ms':>13s} {'speed-up':>9s}")
    for name, t, alone, ref in rows:
        share = (alone if alone is not None else t) / t_full
        alone_s = f"{alone:11.2f}" if alone is not None else " " * 11
        ref_s = f"{ref:13.2f} {ref / t:8.1f}x" if ref is not None else ""
        print(f"{name:34s} {t:9.2f} {alone_s} {share:13.0%} {ref_s}")
    eilertsen(args.patches, rng)
    plot_curves(args.plot)
    print(f"curve plot: {args.plot}")
    return 0


def eilertsen(n, rng):
    """ms per 512x512 pair of the eilertsen2017 camera, by step."""
    from hdrprep.camera import crop_window, exposure_histogram

    from hdrprep.io import read_frame

    # frames wider than 512 / 0.2 px: the crops are resized both up and down
    names = ("CrissyField.exr", "MtTamWest.exr", "StarField.exr", "Tree.exr")
    frames = [read_frame(HDR_DIR / name)[0] for name in names if (HDR_DIR / name).is_file()]
    frames = frames or [rng.lognormal(0, 2, (1365, 2048, 3)).astype(np.float32)]
    cfg = CameraConfig(mode="eilertsen2017", exposure_mode="histogram")
    items = []
    for i in range(n):
        f = frames[i % len(frames)]
        side = int(np.clip(np.floor(rng.uniform(0.2, 0.6) * f.shape[1]), SIZE, min(f.shape[:2])))
        y, x = rng.integers(0, f.shape[0] - side + 1), rng.integers(0, f.shape[1] - side + 1)
        p = dataclasses.replace(sample_params(rng, cfg), crop=side, flip=bool(rng.random() < 0.5))
        win = crop_window(f, int(y), int(x), SIZE, side, p.flip)
        items.append((f, int(y), int(x), win, dataclasses.replace(p, exposure=exposure_histogram(win, 0.9) or 1.0)))
    off = dict(noise=False, color_jitter=False, jpeg=False)
    fns = {"crop_window (resize, flip)": lambda it: crop_window(it[0], it[1], it[2], SIZE, it[4].crop, it[4].flip),
           "exposure_histogram": lambda it: exposure_histogram(it[3], it[4].clip_quantile),
           "exposure_for (exact, for scale)": lambda it: exposure_for(it[3], it[4].clip_quantile),
           "clamps+exposure+curve+quantise": lambda it: render(it[3], it[4], CameraConfig(mode="eilertsen2017", **off)),
           "full camera (noise, jitter, JPEG)": lambda it: render(it[3], it[4], cfg)}
    ms = interleaved_ms(fns, items)
    print(f"\neilertsen2017 camera, {SIZE}x{SIZE} pairs from crops of 0.2-0.6 x the width, median over {len(items)}")
    for name, t in ms.items():
        print(f"{name:34s} {t:9.2f}")
    total = ms["crop_window (resize, flip)"] + ms["exposure_histogram"] + ms["full camera (noise, jitter, JPEG)"]
    print(f"{'crop + exposure + camera':34s} {total:9.2f}")


if __name__ == "__main__":
    sys.exit(main())
