"""Peak disk of a build against the size of its result, sampled while the build runs.

A build keeps each kept pair twice for a while: encoded in ``_work/pairs/`` by stage 1,
then in the shards stage 3 writes. Freeing a frame's encoded pairs as soon as the
shards holding them are written keeps the peak near the final arrays; this script
measures it. It runs ``hdrprep build`` on the real fixtures in a subprocess and
samples the disk usage (allocated blocks) of ``--out`` every ``--every`` seconds.

    NUMBA_NUM_THREADS=1 python bench/disk.py --patches 50

prints the peak, the final arrays (``ldr/`` + ``hdr/``) and their ratio, and writes
``disk.json`` and ``disk.png`` (usage over time) under ``--out``.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

SHARED = Path(__file__).resolve().parents[2] / "shared" / "data" / "hdr"


def usage(root: Path) -> int:
    """Allocated bytes under ``root`` (files vanishing while it walks are skipped)."""
    total = 0
    stack = [root]
    while stack:
        try:
            entries = list(os.scandir(stack.pop()))
        except (FileNotFoundError, NotADirectoryError):
            continue
        for e in entries:
            try:
                if e.is_dir(follow_symlinks=False):
                    stack.append(Path(e.path))
                else:
                    total += e.stat(follow_symlinks=False).st_blocks * 512
            except FileNotFoundError:
                continue
    return total


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--src", type=Path, default=SHARED, help="HDR frames (default: the real fixtures)")
    ap.add_argument("--patches", type=int, default=50, help="candidates per frame (preset: 250)")
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--every", type=float, default=0.05, help="seconds between samples")
    ap.add_argument("--out", type=Path, default=None, help="work folder (default: a temporary one)")
    args = ap.parse_args()
    if not args.src.is_dir():
        sys.exit(f"no frames at {args.src}; pass --src")
    work = args.out or Path(tempfile.mkdtemp(prefix="hdrprep-disk-"))
    work.mkdir(parents=True, exist_ok=True)
    out = work / "s.zarr"
    if out.exists():
        sys.exit(f"{out} exists; give an empty --out")

    samples: list[tuple[float, int, int]] = []  # (seconds, whole --out, _work/pairs)
    stop = threading.Event()

    def sample() -> None:
        t0 = time.perf_counter()
        while not stop.is_set():
            samples.append((time.perf_counter() - t0, usage(out), usage(out / "_work" / "pairs")))
            stop.wait(args.every)

    thread = threading.Thread(target=sample, daemon=True)
    thread.start()
    cmd = [sys.executable, "-m", "hdrprep", "build", "--src", str(args.src), "--out", str(out), "--quiet",
           "--patches-per-frame", str(args.patches), "--workers", str(args.workers)]
    t0 = time.perf_counter()
    subprocess.run(cmd, check=True, env=dict(os.environ, NUMBA_NUM_THREADS="1"))
    wall = time.perf_counter() - t0
    stop.set()
    thread.join()

    arrays = usage(out / "ldr") + usage(out / "hdr")
    peak_t, peak, peak_pairs = max(samples, key=lambda s: s[1])
    result = dict(command=" ".join(cmd), wall_s=wall, samples=len(samples), arrays_bytes=arrays,
                  final_bytes=usage(out), peak_bytes=peak, peak_at_s=peak_t, peak_encoded_pairs_bytes=peak_pairs,
                  max_encoded_pairs_bytes=max(s[2] for s in samples), peak_ratio=peak / arrays if arrays else None)
    (work / "disk.json").write_text(json.dumps(result, indent=1))
    print(f"build: {wall:.1f} s, {len(samples)} samples of --out's disk usage")
    print(f"final arrays (ldr/ + hdr/): {arrays / 1e6:.1f} MB; whole store: {result['final_bytes'] / 1e6:.1f} MB")
    print(f"peak during the build: {peak / 1e6:.1f} MB at {peak_t:.1f} s (of it _work/pairs: "
          f"{peak_pairs / 1e6:.1f} MB; at most {result['max_encoded_pairs_bytes'] / 1e6:.1f} MB)")
    print(f"peak / final arrays: {result['peak_ratio']:.3f}")
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return
    fig, ax = plt.subplots(figsize=(7, 3.5))
    t = [s[0] for s in samples]
    ax.plot(t, [s[1] / 1e6 for s in samples], label="--out")
    ax.plot(t, [s[2] / 1e6 for s in samples], label="_work/pairs (encoded pairs)")
    ax.axhline(arrays / 1e6, color="black", linestyle="--", linewidth=1, label="final arrays")
    ax.set_xlabel("seconds")
    ax.set_ylabel("MB on disk")
    ax.legend()
    fig.tight_layout()
    fig.savefig(work / "disk.png", dpi=100)
    print(f"written: {work / 'disk.json'}, {work / 'disk.png'}")


if __name__ == "__main__":
    main()
