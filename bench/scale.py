"""The full job's shape at a small size: 2,000 frames x 250 candidates on 2 workers.

The real job (2,000 frames, 500K candidates, ~100K pairs of 512x512) does not fit
these machines' disks; its per-frame and per-pair bookkeeping does fit at a small
patch size. This script generates ``--frames`` small frames (``hdrprep.synth``),
starts a local Dask cluster of ``--workers`` processes, builds on it with the
santos2020 preset at ``--patch`` pixels and ``--candidates`` per frame, then runs
``hdrprep verify`` and ``hdrprep inspect`` on the result, and reports:

- wall time of each build stage (score, select, write, finish) and of verify and inspect;
- per-task overhead of the cluster (a no-op task round trip, wall x workers per task);
- peak RSS of the client (this process) and of each worker process;
- counts: candidates, pairs, shards.

    python bench/scale.py                      # 2,000 frames, 250 candidates of 32x32, 2 workers

Under 10 minutes here. Writes ``scale.json`` in ``--out``.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("NUMBA_NUM_THREADS", "1")

from hdrprep import synth  # noqa: E402
from hdrprep.build import THREAD_ENV, build  # noqa: E402
from hdrprep.config import load_preset  # noqa: E402
from hdrprep.summary import summarize  # noqa: E402
from hdrprep.verify import verify  # noqa: E402


def _rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux


def _noop(i: int) -> int:
    return i


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--frames", type=int, default=2000)
    ap.add_argument("--candidates", type=int, default=250)
    ap.add_argument("--patch", type=int, default=32, help="window side in pixels")
    ap.add_argument("--height", type=int, default=96)
    ap.add_argument("--width", type=int, default=128)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--out", type=Path, default=None, help="work folder (default: a temporary one)")
    args = ap.parse_args()
    work = args.out or Path(tempfile.mkdtemp(prefix="hdrprep-scale-"))
    src, out = work / "frames", work / "s.zarr"
    if out.exists():
        sys.exit(f"{out} exists; give an empty --out")

    t0 = time.perf_counter()
    synth.write_frames(src, n=args.frames, seed=0, height=args.height, width=args.width)
    t_frames = time.perf_counter() - t0
    config = load_preset("santos2020").override(**{"sampling.patch_size": args.patch,
                                                   "sampling.patches_per_frame": args.candidates})

    from distributed import Client, LocalCluster

    with LocalCluster(n_workers=args.workers, threads_per_worker=1, env=THREAD_ENV, dashboard_address=":0",
                      silence_logs=40, local_directory=str(work / "dask")) as cluster, Client(cluster) as client:
        n_noop = 2000
        t0 = time.perf_counter()
        client.gather(client.map(_noop, range(n_noop), pure=False))
        overhead_ms = 1e3 * (time.perf_counter() - t0) * args.workers / n_noop

        t0 = time.perf_counter()
        report = build(src, out, config, scheduler=cluster.scheduler_address, progress=False)
        t_build = time.perf_counter() - t0
        workers_rss = client.run(lambda: resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)

    t0 = time.perf_counter()
    problems = verify(out, workers=args.workers)
    t_verify = time.perf_counter() - t0
    t0 = time.perf_counter()
    summarize(out)
    t_inspect = time.perf_counter() - t0

    c, t = report["counts"], report["timings"]
    result = dict(
        command=" ".join(sys.argv), frames=args.frames, candidates_per_frame=args.candidates, patch=args.patch,
        frame_size=[args.height, args.width], workers=args.workers, generate_frames_s=t_frames,
        candidates=c["candidates"], pairs=c["kept"], shards=-(-c["kept"] // config.output.pairs_per_shard),
        build_s=t_build, stages_s={k: t[k] for k in ("score_s", "select_s", "write_s", "finish_s", "total_s")},
        task_overhead_ms=overhead_ms, client_peak_rss_mb=_rss_mb(),
        worker_peak_rss_mb=sorted(workers_rss.values()), verify_s=t_verify, verify_problems=len(problems),
        inspect_s=t_inspect)
    (work / "scale.json").write_text(json.dumps(result, indent=1))
    print(f"{args.frames} frames of {args.height}x{args.width}, {args.candidates} candidates of {args.patch}x"
          f"{args.patch} each, {args.workers} workers")
    print(f"candidates {result['candidates']}, pairs {result['pairs']}, shards {result['shards']}")
    print("build {build_s:.1f} s: score {score_s:.1f}, select {select_s:.1f}, write {write_s:.1f}, "
          "finish {finish_s:.1f}".format(build_s=t_build, **result["stages_s"]))
    print(f"verify {t_verify:.1f} s ({len(problems)} problems), inspect {t_inspect:.1f} s")
    rss = ", ".join(f"{r:.0f}" for r in result["worker_peak_rss_mb"])
    print(f"per-task overhead {overhead_ms:.2f} ms (no-op round trip x workers); peak RSS client "
          f"{result['client_peak_rss_mb']:.0f} MB, workers {rss} MB")
    print(f"written: {work / 'scale.json'}")


if __name__ == "__main__":
    main()
