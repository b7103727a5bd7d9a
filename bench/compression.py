"""Lossless codecs for the store's arrays, measured on real pairs.

Renders 512x512 pairs (default camera) from the real fixtures, then compresses
each pair's LDR (uint8) and HDR (float16) chunk with every candidate codec,
single-threaded, and prints ratio and MB/s (compress and decompress).

    python bench/compression.py [--frames DIR] [--pairs-per-frame 4]
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np


def codecs():
    import numcodecs
    from numcodecs import Blosc, Zstd

    numcodecs.blosc.set_nthreads(1)
    return {
        "zstd-1": Zstd(level=1),
        "zstd-3": Zstd(level=3),
        "blosc-zstd-1-shuffle": Blosc("zstd", 1, Blosc.SHUFFLE),
        "blosc-zstd-3-shuffle": Blosc("zstd", 3, Blosc.SHUFFLE),
        "blosc-zstd-1-bitshuffle": Blosc("zstd", 1, Blosc.BITSHUFFLE),
        "blosc-lz4-shuffle": Blosc("lz4", 5, Blosc.SHUFFLE),
        # blosc's automatic block size is small at level 1; larger blocks give zstd more context
        "blosc-zstd-1-shuffle-64k": Blosc("zstd", 1, Blosc.SHUFFLE, blocksize=1 << 16),
        "blosc-zstd-1-shuffle-128k": Blosc("zstd", 1, Blosc.SHUFFLE, blocksize=1 << 17),
        "blosc-zstd-1-shuffle-256k": Blosc("zstd", 1, Blosc.SHUFFLE, blocksize=1 << 18),
        "blosc-zstd-1-shuffle-512k": Blosc("zstd", 1, Blosc.SHUFFLE, blocksize=1 << 19),
        "blosc-zstd-2-shuffle-256k": Blosc("zstd", 2, Blosc.SHUFFLE, blocksize=1 << 18),
    }


def sample_pairs(folder: Path, per_frame: int):
    from hdrprep import candidates, io
    from hdrprep.config import Config

    config = Config()
    ldrs, hdrs = [], []
    for path in sorted(p for p in folder.iterdir() if p.suffix.lower() in io.HDR_SUFFIXES):
        try:
            frame, _ = io.read_frame(path, min_size=512)
        except Exception:  # too small or otherwise unusable: not what this bench measures
            continue
        q, windows, params = candidates.sample_windows(frame.shape[:2], path.name, config)
        params = candidates.expose(frame, windows, params, q, config)
        for (r, c), p in list(zip(windows, params))[:per_frame]:
            ldr, hdr = candidates.render_pair(frame, int(r), int(c), 512, p, config)
            ldrs.append(ldr)
            hdrs.append(np.minimum(hdr, 65504).astype(np.float16))
    return ldrs, hdrs


def measure(arrays, codec) -> tuple[float, float, float]:
    raw = sum(a.nbytes for a in arrays)
    t0 = time.perf_counter()
    enc = [codec.encode(a) for a in arrays]
    t1 = time.perf_counter()
    for e, a in zip(enc, arrays):
        codec.decode(e)
    t2 = time.perf_counter()
    size = sum(len(e) for e in enc)
    return raw / size, raw / 1e6 / (t1 - t0), raw / 1e6 / (t2 - t1)


def main() -> None:
    default = Path(__file__).resolve().parent.parent.parent / "shared" / "data" / "hdr"
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--frames", type=Path, default=default)
    ap.add_argument("--pairs-per-frame", type=int, default=4)
    args = ap.parse_args()
    ldrs, hdrs = sample_pairs(args.frames, args.pairs_per_frame)
    print(f"{len(ldrs)} pairs of 512x512 from {args.frames}\n")
    print(f"{'codec':26s} {'ldr ratio':>9s} {'MB/s enc':>9s} {'hdr ratio':>9s} {'MB/s enc':>9s} "
          f"{'MB/s dec':>9s} {'MB/pair':>8s}")
    for name, codec in codecs().items():
        rl, el, _ = measure(ldrs, codec)
        rh, eh, dh = measure(hdrs, codec)
        per_pair = (ldrs[0].nbytes / rl + hdrs[0].nbytes / rh) / 1e6
        print(f"{name:26s} {rl:9.2f} {el:9.0f} {rh:9.2f} {eh:9.0f} {dh:9.0f} {per_pair:8.3f}")


if __name__ == "__main__":
    main()
