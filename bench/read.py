"""Frame read time: hdrprep.io.read_frame against the bare decoder, per file type.

Rows: one per (format, colour, compression) kind found in shared/data/hdr (first file
of each kind), plus generated 2048x1365 half EXRs (none, ZIP, PIZ, ZSTD where
available) and a 2048x1365 .hdr made from a real frame resized. "decode" is the bare
library call (OpenEXR.File(..., separate_channels=True) or cv2.imread); "read_frame"
adds probing, conversion to float32 RGB and validation. Median of --runs runs.

    NUMBA_NUM_THREADS=1 .venv/bin/python bench/read.py [--runs 5] [--data ../shared/data/hdr]
"""

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import cv2
import numpy as np
import OpenEXR

from hdrprep import io

REPO = Path(__file__).resolve().parent.parent


def _median_ms(fn, runs):
    fn()  # warm the page cache and lazy imports
    times = []
    for _ in range(runs):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return 1e3 * statistics.median(times)


def _decode(path):
    if path.suffix == ".hdr":
        return lambda: cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
    return lambda: OpenEXR.File(str(path), separate_channels=True)


def _source_frame(data: Path) -> np.ndarray:
    """A 2048x1365 linear RGB frame: a real photograph resized, or a smooth synthetic one."""
    frames = sorted(data.glob("*.hdr")) if data.is_dir() else []
    if frames:
        rgb, _ = io.read_frame(frames[0])
        return cv2.resize(rgb, (2048, 1365), interpolation=cv2.INTER_CUBIC).clip(0, 60000)
    yy, xx = np.mgrid[0:1365, 0:2048] / 512.0
    return np.stack([np.exp(np.sin(xx) * 3), np.exp(np.cos(yy) * 2), 1 + xx * yy], -1).astype(np.float32)


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--data", type=Path, default=REPO.parent / "shared" / "data" / "hdr")
    args = ap.parse_args()
    cv2.setNumThreads(1)

    rows = []
    kinds = {}
    if args.data.is_dir():
        for path in sorted(p for p in args.data.iterdir() if p.suffix.lower() in io.HDR_SUFFIXES):
            info = io.probe(path)
            kinds.setdefault((info.format, info.colour, info.compression, info.tiled), path)
    with tempfile.TemporaryDirectory() as tmp:
        rgb = _source_frame(args.data)
        for comp in ("none", "zip", "piz", "zstd"):
            if comp in io._COMPRESSIONS:
                path = Path(tmp) / f"gen_{comp}.exr"
                io.write_exr(path, rgb, half=True, compression=comp)
                kinds[("exr", "rgb", comp, False, "generated")] = path
        path = Path(tmp) / "gen.hdr"
        io.write_hdr(path, rgb)
        kinds[("hdr", "rgb", "rle", False, "generated")] = path

        for key, path in kinds.items():
            info = io.probe(path)
            mp = info.width * info.height / 1e6
            t_dec = _median_ms(_decode(path), args.runs)
            t_read = _median_ms(lambda path=path: io.read_frame(path), args.runs)
            kind = f"{info.format} {info.colour} {info.compression}" + (" tiled" if info.tiled else "")
            rows.append((path.name, kind, f"{info.width}x{info.height}", t_dec, t_read, t_read / mp))

    print(f"{'file':28s} {'kind':20s} {'size':>10s} {'decode ms':>10s} {'read_frame ms':>14s} "
          f"{'ratio':>6s} {'ms/MP':>7s}")
    for name, kind, size, t_dec, t_read, per_mp in rows:
        print(f"{name:28s} {kind:20s} {size:>10s} {t_dec:10.1f} {t_read:14.1f} {t_read / t_dec:6.2f} "
              f"{per_mp:7.1f}")


if __name__ == "__main__":
    main()
