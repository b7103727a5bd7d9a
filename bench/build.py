"""End-to-end benchmark of ``hdrprep build`` against a naive baseline and the floor.

Usage: python bench/build.py [--patches K] [--synth N] [--json OUT.json] [--hdr-dir DIR] [--profile]

Two frame sets: the real fixtures of ../shared/data/hdr (frames smaller than the
patch skipped; absent on a fresh clone) and N procedurally generated 2048x1365
frames (``hdrprep.synth``, written as ZIP EXR). For each set, in one process run:

- ``build``: the full ``hdrprep.build.build`` (santos2020 preset, K candidates
  per frame instead of 250 to stay within minutes) with 1 and 2 local workers;
  peak RSS of every worker process sampled with psutil. Cold (``build``: the
  build starts its own cluster, whose workers load the Numba caches on their
  first task) and ``warm`` (on a cluster started and warmed up by a one-frame
  build beforehand: what the bulk of a long job sees);
- ``keep-all``: the same with ``select.keep_all`` (selection off, every
  candidate rendered with the full camera and stored), 1 worker: pairs per
  core-second against Eilertsen's C++ virtualcamera (51 ms per 512x512 pair on
  one core, measured on the real fixtures with OpenCV 4.6);
- ``naive``: the paper's way, timed on a subset and extrapolated per candidate:
  the same camera and soft mask, and Santos Algorithm 1 with
  ``cv2.bilateralFilter`` on each window; plus the build's own stage-3 time;
- ``floor``: the unavoidable parts, each timed alone with plain numpy/cv2:
  decode every frame once; every candidate's mask once (exposure, curve,
  8-bit quantisation, soft mask: the cheapest mask); every kept pair's full
  camera once; float16 conversion, compression with the store's codec and a
  file write of every kept pair once.

Core-seconds are wall seconds x workers. ``--profile`` also runs the 1-worker
build in this process (``scheduler='synchronous'``) under cProfile and prints
where stage 1 (score) and stage 3 (write) spend their time.
"""

import argparse
import cProfile
import io as _io
import json
import os
import pstats
import shutil
import sys
import tempfile
import threading
import time
from contextlib import contextmanager
from pathlib import Path

os.environ.setdefault("NUMBA_NUM_THREADS", "1")

import cv2  # noqa: E402
import numpy as np  # noqa: E402
import psutil  # noqa: E402
from oracle import oracle_score  # noqa: E402  (bench/ is on sys.path when run as a script)

from hdrprep import camera, candidates, io, store, synth  # noqa: E402
from hdrprep.build import THREAD_ENV, build, discover  # noqa: E402
from hdrprep.config import Config  # noqa: E402

HDR_DIR = Path(__file__).resolve().parent.parent.parent / "shared" / "data" / "hdr"
CPP_MS_PER_PAIR = 51.0  # Eilertsen's virtualcamera, 512x512, one core, measured on the real fixtures


class RssSampler:
    """Peak RSS of each descendant process of this one (the Dask workers), sampled every 0.1 s."""

    def __init__(self):
        self.peak: dict[int, int] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self):
        me = psutil.Process()
        while not self._stop.is_set():
            for p in me.children(recursive=True):
                try:
                    if "worker" in " ".join(p.cmdline()) or p.name().startswith("python"):
                        self.peak[p.pid] = max(self.peak.get(p.pid, 0), p.memory_info().rss)
                except psutil.Error:
                    pass
            self._stop.wait(0.1)

    def __enter__(self):
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join()


def frame_sets(args, tmp: Path) -> dict[str, Path]:
    sets = {}
    hdr_dir = Path(args.hdr_dir)
    if hdr_dir.is_dir():
        real = tmp / "real"
        real.mkdir()
        for key in discover(hdr_dir)[0]:
            info = io.probe(hdr_dir / key)
            if min(info.height, info.width) >= args.size:
                (real / key).symlink_to(hdr_dir / key)
        sets["real"] = real
    else:
        print(f"(no fixtures at {hdr_dir}: synthetic frames only)")
    if args.synth:
        syn = tmp / "synth"
        syn.mkdir()
        rng = np.random.default_rng(0)
        for i in range(args.synth):
            io.write_exr(syn / f"synth_{i:03d}.exr", synth.make_frame(rng, 1365, 2048))
        sets["synth"] = syn
    return sets


def run_build(src: Path, out: Path, config: Config, workers: int, warm: bool = False) -> dict:
    """One build; ``warm``: on a cluster started and warmed up (Numba caches loaded) beforehand,
    as the bulk of a long job runs, so start-up is not counted."""
    shutil.rmtree(out, ignore_errors=True)
    with RssSampler() as rss, _warm_cluster(src, out.with_name("warmup"), config, workers, warm) as cluster:
        t0 = time.perf_counter()
        report = build(src, out, config, workers=workers, cluster=cluster, progress=False)
        wall = time.perf_counter() - t0
    peaks = sorted(rss.peak.values(), reverse=True)[:workers]
    c = report["counts"]
    return dict(workers=workers, wall_s=wall, score_s=report["timings"]["score_s"],
                write_s=report["timings"]["write_s"], frames=c["frames_read"], candidates=c["candidates"],
                pairs=c["kept"], bytes_per_pair=report["bytes"]["per_pair"],
                peak_rss_mb=[round(p / 2**20) for p in peaks])


@contextmanager
def _warm_cluster(src: Path, scratch: Path, config: Config, workers: int, warm: bool):
    """A local cluster like the build's own, warmed by a one-frame build per worker; None if not ``warm``."""
    if not warm:
        yield None
        return
    from distributed import LocalCluster

    with LocalCluster(n_workers=workers, threads_per_worker=1, env=THREAD_ENV, dashboard_address=":0",
                      silence_logs=40) as cluster:
        shutil.rmtree(scratch, ignore_errors=True)
        build(src, scratch, config, cluster=cluster, limit_frames=workers, progress=False)
        shutil.rmtree(scratch, ignore_errors=True)
        yield cluster


def frames_of(src: Path, config: Config):
    for key in discover(src)[0]:
        frame, _ = io.read_frame(src / key, ingest=config.ingest, min_size=config.sampling.patch_size)
        yield key, frame


def naive_s_per_candidate(src: Path, config: Config, n: int) -> float:
    """Stage-1 seconds per candidate the paper's way, on the first n candidates (spread over frames)."""
    size = config.sampling.patch_size
    keys = discover(src)[0]
    per_frame = max(1, n // len(keys))
    t, done = 0.0, 0
    for key, frame in frames_of(src, config):
        q, windows, params = candidates.sample_windows(frame.shape[:2], key, config)
        params = candidates.expose(frame, windows[:per_frame], params[:per_frame], q, config)
        for (r, c), p in zip(windows[:per_frame], params):
            t0 = time.perf_counter()
            ldr, _ = camera.render(frame[r:r + size, c:c + size], p, config.camera)
            w = 1.0 - camera.soft_mask(ldr, config.camera.mask_alpha)
            oracle_score(frame[r:r + size, c:c + size] * np.float32(p.exposure), w, config.metric.normalisation)
            t += time.perf_counter() - t0
            done += 1
        if done >= n:
            break
    return t / done


def floor_s(src: Path, out: Path, config: Config, n_kept: int) -> dict:
    """Seconds of the unavoidable work on the build's frames, each part timed alone."""
    import numcodecs

    size = config.sampling.patch_size
    codec = numcodecs.Blosc("zstd", clevel=config.output.level, shuffle=numcodecs.Blosc.SHUFFLE,
                            blocksize=store.BLOSC_BLOCK)  # the store's codec
    t = dict(decode=0.0, mask=0.0, render=0.0, encode_write=0.0)
    n_candidates, kept = 0, []
    for key in discover(src)[0]:
        t0 = time.perf_counter()
        frame, _ = io.read_frame(src / key, ingest=config.ingest, min_size=size)
        t["decode"] += time.perf_counter() - t0
        q, windows, params = candidates.sample_windows(frame.shape[:2], key, config)
        params = candidates.expose(frame, windows, params, q, config)
        t0 = time.perf_counter()
        for (r, c), p in zip(windows, params):  # exposure, curve, quantisation and the mask: plain numpy/cv2
            x = np.clip(frame[r:r + size, c:c + size] * np.float32(p.exposure), 0, 1)
            ldr = (camera.apply_curve(x, p, out=x) * np.float32(255) + np.float32(0.5)).astype(np.uint8)
            camera.soft_mask(ldr, config.camera.mask_alpha)
        t["mask"] += time.perf_counter() - t0
        n_candidates += len(windows)
        kept += [(frame, r, c, p) for (r, c), p in zip(windows, params)][:max(0, n_kept - len(kept))]
    # the kept pairs' full camera, then float16 + compression + one file write per pair
    path = out / "floor.bin"
    with open(path, "wb") as fh:
        for frame, r, c, p in kept:
            t0 = time.perf_counter()
            ldr, target = camera.render(frame[r:r + size, c:c + size], p, config.camera)
            t1 = time.perf_counter()
            fh.write(codec.encode(ldr))
            fh.write(codec.encode(np.minimum(target, store.HALF_MAX).astype(np.float16)))
            t["encode_write"] += time.perf_counter() - t1
            t["render"] += t1 - t0
    return dict(t, total=sum(t.values()), candidates=n_candidates, pairs=len(kept))


def profile_build(src: Path, out: Path, config: Config) -> str:
    shutil.rmtree(out, ignore_errors=True)
    prof = cProfile.Profile()
    prof.enable()
    build(src, out, config, scheduler="synchronous", progress=False)
    prof.disable()
    text = []
    for stage in ("score_frame_task", "write_shard_task"):
        s = _io.StringIO()
        st = pstats.Stats(prof, stream=s)
        st.sort_stats("cumulative").print_callees(stage)
        text.append(s.getvalue())
    s = _io.StringIO()
    pstats.Stats(prof, stream=s).sort_stats("tottime").print_stats(25)
    text.append(s.getvalue())
    return "\n".join(text)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--patches", type=int, default=48, help="candidates per frame (preset: 250)")
    ap.add_argument("--synth", type=int, default=4, help="synthetic 2048x1365 frames")
    ap.add_argument("--naive", type=int, default=12, help="candidates timed the naive way per frame set")
    ap.add_argument("--json", default="/tmp/bench_build.json")
    ap.add_argument("--hdr-dir", default=str(HDR_DIR), help="real frames (default: ../shared/data/hdr)")
    ap.add_argument("--profile", action="store_true")
    args = ap.parse_args(argv)
    cv2.setNumThreads(1)
    config = Config().override(**{"sampling.patches_per_frame": args.patches})
    args.size = config.sampling.patch_size
    results = dict(patches_per_frame=args.patches, cpu_count=os.cpu_count(), sets={})
    with tempfile.TemporaryDirectory(prefix="hdrprep-bench-") as tmp:
        tmp = Path(tmp)
        for name, src in frame_sets(args, tmp).items():
            print(f"--- {name}: {len(discover(src)[0])} frames, {args.patches} candidates each", flush=True)
            res = {}
            for workers in (1, 2):
                res[f"build_{workers}w"] = run_build(src, tmp / "out", config, workers)
                print(f"  build {workers}w: {res[f'build_{workers}w']}", flush=True)
                res[f"warm_{workers}w"] = run_build(src, tmp / "out", config, workers, warm=True)
                print(f"  warm {workers}w: {res[f'warm_{workers}w']}", flush=True)
            res["keep_all_1w"] = run_build(src, tmp / "out", config.override(**{"select.keep_all": True}), 1)
            print(f"  keep-all 1w: {res['keep_all_1w']}", flush=True)
            b1 = res["build_1w"]
            res["naive_s_per_candidate"] = naive_s_per_candidate(src, config, args.naive)
            res["floor"] = floor_s(src, tmp, config, b1["pairs"])
            if args.profile:
                res["profile"] = profile_build(src, tmp / "out", config)
            results["sets"][name] = res
    print_table(results)
    Path(args.json).write_text(json.dumps({k: v for k, v in results.items()}, indent=1, default=str))
    print(f"JSON: {args.json}")
    for name, res in results["sets"].items():
        if "profile" in res:
            print(f"\n===== profile, {name} (1 worker, in process) =====\n{res['profile']}")
    return 0


def print_table(results):
    print(f"\nhdrprep build, {results['patches_per_frame']} candidates per frame, {results['cpu_count']} cores")
    head = (f"{'set':6s} {'run':12s} {'cand':>6s} {'pairs':>6s} {'wall s':>7s} {'cand/s':>7s} {'pairs/s':>8s} "
            f"{'core-ms/cand':>13s} {'x naive':>8s} {'x floor':>8s} {'RSS MB/worker':>14s}")
    print(head)
    for name, res in results["sets"].items():
        b1 = res["build_1w"]
        n = b1["candidates"]
        # the naive way: stage 1 with the oracle per window, the same stage 3 as the build
        naive = res["naive_s_per_candidate"] * n + b1["write_s"]
        floor = res["floor"]["total"]
        for run in ("build_1w", "build_2w", "warm_1w", "warm_2w", "keep_all_1w"):
            r = res[run]
            core = r["wall_s"] * r["workers"]
            print(f"{name:6s} {run:12s} {r['candidates']:6d} {r['pairs']:6d} {r['wall_s']:7.1f} "
                  f"{r['candidates'] / r['wall_s']:7.1f} {r['pairs'] / r['wall_s']:8.2f} "
                  f"{1e3 * core / max(r['candidates'], 1):13.2f} "
                  f"{naive / core:7.1f}x {core / floor:7.2f}x {str(r['peak_rss_mb']):>14s}")
        print(f"{name:6s} {'naive (est.)':12s} {n:6d} {b1['pairs']:6d} {naive:7.1f} {n / naive:7.1f} "
              f"{b1['pairs'] / naive:8.2f} {1e3 * naive / n:13.2f}")
        fl = res["floor"]
        print(f"{name:6s} {'floor':12s} {fl['candidates']:6d} {fl['pairs']:6d} {floor:7.1f} "
              f"{fl['candidates'] / floor:7.1f} {fl['pairs'] / floor:8.2f} {1e3 * floor / fl['candidates']:13.2f}"
              f"   parts s: " + ", ".join(f"{k} {fl[k]:.2f}" for k in ("decode", "mask", "render", "encode_write")))
        scaling = res["build_1w"]["wall_s"] / res["build_2w"]["wall_s"]
        warm_scaling = res["warm_1w"]["wall_s"] / res["warm_2w"]["wall_s"]
        ka = res["keep_all_1w"]
        ms_pair = 1e3 * ka["wall_s"] / max(ka["pairs"], 1)
        print(f"{name:6s} 2 vs 1 worker: {scaling:.2f}x (warm: {warm_scaling:.2f}x); "
              f"selection off: {ms_pair:.1f} core-ms per pair "
              f"= {CPP_MS_PER_PAIR / ms_pair:.2f}x the C++ virtualcamera's pairs per core-second; "
              f"{(b1['bytes_per_pair'] or 0) / 1e6:.2f} MB per stored pair "
              f"({(b1['bytes_per_pair'] or 0) / 3.1e6:.0%} of Santos' 3.1 MB)")


if __name__ == "__main__":
    sys.exit(main())
