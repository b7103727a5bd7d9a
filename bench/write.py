"""Stage 3's store steps per 512x512 pair, old way vs the current ``hdrprep.store``.

Renders pairs (default camera) from the real fixtures, then times, single-threaded,
each step the build runs per pair after rendering: float32 -> float16, SHA-1 checksum,
and the whole-shard zarr write (blosc-zstd-1 + shuffle, 16 pairs per shard); plus the
bare numcodecs Blosc encode of the same chunks, the floor of the write. Prints a
table of milliseconds per pair (best of --repeat) and the ratio old / new.

    NUMBA_NUM_THREADS=1 python bench/write.py [--frames DIR] [--repeat 5]
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np

from hdrprep import _shard_io, store
from hdrprep.errors import HdrprepError

PER_SHARD = 16


def sample_pairs(folder: Path, n: int) -> tuple[np.ndarray, np.ndarray]:
    """``n`` rendered pairs: uint8 (n, 512, 512, 3) LDR and float32 HDR, a few per frame."""
    from hdrprep import candidates, io
    from hdrprep.config import Config

    config = Config()
    ldrs, hdrs = [], []
    for path in sorted(p for p in folder.iterdir() if p.suffix.lower() in io.HDR_SUFFIXES):
        try:
            frame, _ = io.read_frame(path, min_size=512)
        except HdrprepError:  # too small or otherwise unusable: not what this bench measures
            continue
        q, windows, params = candidates.sample_windows(frame.shape[:2], path.name, config)
        params = candidates.expose(frame, windows, params, q, config)
        for (r, c), p in list(zip(windows, params))[:4]:
            ldr, hdr = candidates.render_pair(frame, int(r), int(c), 512, p, config)
            ldrs.append(ldr)
            hdrs.append(hdr)
        if len(ldrs) >= n:
            break
    return np.stack(ldrs[:n]), np.stack(hdrs[:n])


def best_ms(fn, repeat: int, n: int) -> float:
    fn()  # warm-up (Numba compile or cache load, first file creation)
    best = float("inf")
    for _ in range(repeat):
        t0 = time.process_time()
        fn()
        best = min(best, time.process_time() - t0)
    return 1000 * best / n


def old_to_half(hdr):
    return [(np.minimum(h, store.HALF_MAX).astype(np.float16), int(np.count_nonzero(h > store.HALF_MAX)))
            for h in hdr]


def old_write(group, ldr, hdr):
    # write_pairs before: zarr's default config, which compares every chunk with the fill value
    for name, data in (("ldr", ldr), ("hdr", hdr)):
        arr = group[name]
        _shard_io.delete_shards(arr, 0, 1)
        arr[0:len(data)] = data


def main() -> None:
    here = Path(__file__).resolve().parent.parent
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--frames", type=Path, default=here.parent / "shared" / "data" / "hdr")
    ap.add_argument("--repeat", type=int, default=5)
    args = ap.parse_args()

    import numcodecs

    numcodecs.blosc.set_nthreads(1)
    ldr, hdr32 = sample_pairs(args.frames, PER_SHARD)
    n = len(ldr)
    hdr = store.to_half(hdr32)[0]
    blosc = [numcodecs.Blosc("zstd", 1, numcodecs.Blosc.SHUFFLE, typesize=t) for t in (1, 2)]
    with tempfile.TemporaryDirectory() as tmp:
        group, _ = store.create_arrays(Path(tmp) / "s.zarr", 2 * n, 512, n)
        rows = [
            ("to_half", best_ms(lambda: old_to_half(hdr32), args.repeat, n),
             best_ms(lambda: [store.to_half(h) for h in hdr32], args.repeat, n)),
            ("pair_checksum (SHA-1)", None,
             best_ms(lambda: [store.pair_checksum(a, b) for a, b in zip(ldr, hdr)], args.repeat, n)),
            ("write_pairs, one shard", best_ms(lambda: old_write(group, ldr, hdr), args.repeat, n),
             best_ms(lambda: store.write_pairs(group, 0, ldr, hdr), args.repeat, n)),
            ("  floor: bare Blosc encode", None,
             best_ms(lambda: [(blosc[0].encode(a), blosc[1].encode(b)) for a, b in zip(ldr, hdr)], args.repeat, n)),
        ]
    total_old = sum(o if o is not None else new for name, o, new in rows if not name.startswith(" "))
    total_new = sum(new for name, _, new in rows if not name.startswith(" "))
    rows.append(("total (without the floor)", total_old, total_new))
    print(f"{n} pairs of 512x512 from {args.frames}, CPU ms per pair (process time, best of {args.repeat})")
    print("| step | old | new | old / new |\n| --- | ---: | ---: | ---: |")
    for name, old, new in rows:
        o = f"{old:.2f}" if old is not None else ""
        r = f"{old / new:.2f}x" if old is not None else ""
        print(f"| {name} | {o} | {new:.2f} | {r} |")

if __name__ == "__main__":
    main()
