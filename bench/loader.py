"""Trainer throughput: random pairs/s from a store with 0, 1, 2 DataLoader workers, and CPU train steps/s.

    .venv/bin/python bench/loader.py [--pairs 256] [--size 512] [--train-steps 2]

Builds a temporary store in the format-1 layout (blosc-zstd level 1, 16 pairs per
shard, textured content like tests/test_train_store.py), then:
1. reference: one pair at a time with plain ``zarr`` indexing (ldr[r], hdr[r]) in the main process,
   against ``hdrprep.store.PairReader.read(r)`` (direct shard reads) and ``read_into(r, ...)``
   (the same decoded into reused arrays, what ``PairDataset`` uses);
2. ``PairDataset`` + ``StreamSampler`` (random order, flips) through ``make_loader``, batch 4,
   with 0, 1 and 2 workers (goal: >= 200 pairs/s per worker process): batches of float32
   (ldr, hdr, mask); compact uint8/float16 batches as delivered (the trainer's path, whose
   ``expand_batch``, flips and HWC -> CHW included, runs on the training device); the same
   expanded on this CPU in the main process (which then competes with the workers for the
   cores); and, for comparison, the previous per-item path (one ``dataset[key]`` per pair,
   torch's default collation); then a CPU profile of a worker's work per pair;
3. full Santos model (width 64, depth 7) on 512x512 at batch 4, perceptual loss with a
   randomly initialised VGG-19 loaded from a file: seconds per training step on CPU.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np
import torch


def make_store(path: Path, n: int, size: int, per_shard: int = 16, seed: int = 0, cname: str = "zstd") -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq
    import zarr
    from zarr.codecs import BloscCodec

    rng = np.random.default_rng(seed)
    attrs = {"format_version": 1, "complete": True, "package_version": "bench", "seed": seed,
             "config": {"camera": {"mask_alpha": 0.96}}}
    zarr.open_group(str(path), mode="w", attributes={"hdrprep": attrs})
    arrays = {name: zarr.create_array(store=str(path), name=name, shape=(n, size, size, 3), dtype=dt,
                                      chunks=(1, size, size, 3), shards=(per_shard, size, size, 3), fill_value=0,
                                      compressors=[BloscCodec(cname=cname, clevel=1, shuffle="shuffle",
                                                              typesize=np.dtype(dt).itemsize)])
              for name, dt in (("ldr", np.uint8), ("hdr", np.float16))}
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32) / size
    for start in range(0, n, per_shard):  # one write per shard
        m = min(per_shard, n - start)
        hdr = np.empty((m, size, size, 3), np.float32)
        for i in range(m):
            base = 0.05 + 0.55 * (0.5 + 0.5 * np.sin(2 * np.pi * (xx * rng.uniform(0.5, 2) + yy * rng.uniform(0.5, 2))))
            img = base[..., None] * rng.uniform(0.6, 1.0, 3).astype(np.float32)
            cy, cx, r = rng.uniform(0.2, 0.8, 3)
            blob = np.exp(-((yy - cy) ** 2 + (xx - cx) ** 2) / (2 * (0.1 + 0.2 * r) ** 2))
            tex = 1 + 0.5 * np.sin(40 * np.pi * xx * rng.uniform(0.5, 1)) * np.sin(40 * np.pi * yy)
            noise = rng.standard_normal((size, size, 3), dtype=np.float32) * 0.01
            hdr[i] = np.maximum(img + (rng.uniform(2, 20) * blob * tex)[..., None] + noise, 0)
        h16 = hdr.astype(np.float16)
        arrays["hdr"][start:start + m] = h16
        arrays["ldr"][start:start + m] = np.round(255 * np.clip(h16.astype(np.float32), 0, 1) ** (1 / 2.2))
    pq.write_table(pa.table({"pair": np.arange(n), "source": [f"f{i // 8}" for i in range(n)],
                             "shard": np.arange(n) // per_shard}), str(path / "index.parquet"))


def cpu_seconds() -> float:
    """CPU time of this process plus its finished children (DataLoader workers are joined at the end)."""
    import resource

    child = resource.getrusage(resource.RUSAGE_CHILDREN)
    return time.process_time() + child.ru_utime + child.ru_stime


def bench_reference(path: Path, count: int) -> tuple[float, float]:
    import zarr

    g = zarr.open_group(str(path), mode="r")
    ldr, hdr = g["ldr"], g["hdr"]
    rows = np.random.default_rng(1).integers(0, ldr.shape[0], count)
    t, c = time.perf_counter(), cpu_seconds()
    for r in rows:
        ldr[r], hdr[r]
    return count / (time.perf_counter() - t), count / (cpu_seconds() - c)


def bench_reader(path: Path, count: int) -> tuple[float, float]:
    import zarr

    from hdrprep.store import PairReader

    reader = PairReader(zarr.open_group(str(path), mode="r"))
    rows = np.random.default_rng(1).integers(0, len(reader), count)
    t, c = time.perf_counter(), cpu_seconds()
    for r in rows:
        reader.read(r)
    return count / (time.perf_counter() - t), count / (cpu_seconds() - c)


def bench_reader_into(path: Path, count: int) -> tuple[float, float]:
    import zarr

    from hdrprep.store import PairReader

    reader = PairReader(zarr.open_group(str(path), mode="r"))
    ldr, hdr = (np.empty(a.shape[1:], a.dtype) for a in reader.arrays)
    rows = np.random.default_rng(1).integers(0, len(reader), count)
    t, c = time.perf_counter(), cpu_seconds()
    for r in rows:
        reader.read_into(r, ldr, hdr)
    return count / (time.perf_counter() - t), count / (cpu_seconds() - c)


def profile_worker(path: Path, count: int, batch: int = 4) -> dict:
    """CPU ms per pair of a worker's work, ``PairDataset.read_into`` of random batches into one
    reused buffer (a worker's slot): in total, and in its ``os.pread`` and blosc decode calls
    (timed by wrapping them for the duration; cProfile cannot see into the Cython codec)."""
    import os

    import numcodecs

    from hdrprep.train.dataset import PairDataset, StreamSampler, read_store_info

    info = read_store_info(path)
    ds = PairDataset(info, compact=True)
    keys = list(StreamSampler(np.arange(info.n_pairs), seed=3, start=0, count=count + batch))
    p = info.patch_size
    ldr8, hdr16 = np.empty((batch, p, p, 3), np.uint8), np.empty((batch, p, p, 3), np.float16)
    ds.read_into(keys[:batch], ldr8, hdr16)  # warm-up: reader opened, buffers touched
    spent = {"decode": 0.0, "pread": 0.0}

    def timed(name, fn):
        def call(*args, **kwargs):
            t = time.thread_time()
            try:
                return fn(*args, **kwargs)
            finally:
                spent[name] += time.thread_time() - t
        return call

    decode, pread = numcodecs.Blosc.decode, os.pread
    numcodecs.Blosc.decode, os.pread = timed("decode", decode), timed("pread", pread)
    try:
        t = time.thread_time()
        for i in range(batch, count + batch, batch):
            ds.read_into(keys[i:i + batch], ldr8, hdr16)
        total = time.thread_time() - t
    finally:
        numcodecs.Blosc.decode, os.pread = decode, pread
    n = len(keys) - batch
    return {"total": 1e3 * total / n, **{k: 1e3 * v / n for k, v in spent.items()},
            "rest": 1e3 * (total - sum(spent.values())) / n}


def _per_item_loader(dataset, sampler, batch: int, workers: int):
    """The previous path, for comparison: one key per __getitem__, torch's default collation."""
    return torch.utils.data.DataLoader(dataset, batch_size=batch, sampler=sampler, num_workers=workers,
                                       prefetch_factor=4 if workers else None)


def bench_loader(path: Path, workers: int, count: int, compact: bool, expand: bool, per_item: bool = False,
                 batch: int = 4) -> tuple[float, float]:
    from hdrprep.train.dataset import PairDataset, StreamSampler, expand_batch, make_loader, read_store_info

    info = read_store_info(path)
    sampler = StreamSampler(np.arange(info.n_pairs), seed=0, start=0, count=count + 4 * batch)
    c = cpu_seconds()
    build = _per_item_loader if per_item else make_loader
    it = iter(build(PairDataset(info, compact=compact), sampler, batch, workers))
    for _ in range(4):  # warm-up: worker start and first chunk reads
        next(it)
    t = time.perf_counter()
    if expand:
        n = sum(expand_batch(b, info.mask_alpha)[0].shape[0] for b in it)
    else:
        n = sum(b["ldr"].shape[0] for b in it)
    wall = time.perf_counter() - t
    del it
    # CPU includes worker start-up and warm-up batches: a conservative pairs per CPU-second
    return n / wall, (n + 4 * batch) / (cpu_seconds() - c)


def bench_train(path: Path, steps: int, tmp: Path) -> tuple[float, float]:
    from hdrprep.train.dataset import PairDataset, StreamSampler, make_loader, read_store_info
    from hdrprep.train.loss import SantosLoss, load_vgg19, vgg19_features
    from hdrprep.train.model import MaskedUNet

    torch.save({f"features.{k}": v for k, v in vgg19_features().state_dict().items()}, tmp / "vgg19.pth")
    info = read_store_info(path)
    batches = make_loader(PairDataset(info), StreamSampler(np.arange(info.n_pairs), 0, 0, 4 * (steps + 1)), 4)
    model = MaskedUNet(64, 7)
    opt = torch.optim.Adam(model.parameters(), lr=2e-4)
    loss_fn = SantosLoss(load_vgg19(tmp / "vgg19.pth"))
    times = []
    for b in batches:
        t = time.perf_counter()
        y = model(b["ldr"], b["mask"])
        loss = loss_fn(y, b["ldr"], b["mask"], b["hdr"])["total"]
        opt.zero_grad()
        loss.backward()
        opt.step()
        times.append(time.perf_counter() - t)
    steady = times[1:] or times
    return float(np.mean(steady)), times[0]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--pairs", type=int, default=256)
    ap.add_argument("--cname", default="zstd", choices=["zstd", "lz4"], help="blosc codec of the bench store")
    ap.add_argument("--size", type=int, default=512)
    ap.add_argument("--count", type=int, default=160, help="pairs read per loader measurement")
    ap.add_argument("--train-steps", type=int, default=2, help="timed training steps (0 = skip)")
    ap.add_argument("--loader-threads", type=int, default=1,
                    help="torch intra-op threads of the main process while timing loaders (workers always use 1)")
    args = ap.parse_args()
    train_threads = torch.get_num_threads()
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        t = time.perf_counter()
        make_store(tmp / "bench.zarr", args.pairs, args.size, cname=args.cname)
        print(f"store: {args.pairs} pairs of {args.size}x{args.size}, built in {time.perf_counter() - t:.1f} s, "
              f"torch {torch.__version__}, {torch.get_num_threads()} threads for training, "
              f"{args.loader_threads} in the main process while timing loaders")
        torch.set_num_threads(args.loader_threads)
        ref, ref_cpu = bench_reference(tmp / "bench.zarr", args.count)
        print("\npairs/s: wall clock; per CPU-s: pairs per second of CPU time of all processes (what a core")
        print("of a quiet machine would give; this one may be shared)")
        print(f"\n{'reader':<34}{'pairs/s':>9}{'per worker':>12}{'per CPU-s':>11}{'vs ref':>8}")
        print(f"{'reference: zarr ldr[r], hdr[r]':<34}{ref:>9.1f}{ref:>12.1f}{ref_cpu:>11.1f}{1.0:>8.2f}")
        rate, cpu = bench_reader(tmp / "bench.zarr", args.count)
        print(f"{'PairReader.read(r)':<34}{rate:>9.1f}{rate:>12.1f}{cpu:>11.1f}{rate / ref:>8.2f}")
        rate, cpu = bench_reader_into(tmp / "bench.zarr", args.count)
        print(f"{'PairReader.read_into(r, buffers)':<34}{rate:>9.1f}{rate:>12.1f}{cpu:>11.1f}{rate / ref:>8.2f}")
        rows = [("float32 items", False, True, False),
                ("compact, per-item (old path)", True, False, True),
                ("compact items", True, False, False),
                ("compact + expand_batch (CPU)", True, True, False)]
        for name, compact, expand, per_item in rows:
            for w in (0, 1, 2):
                rate, cpu = bench_loader(tmp / "bench.zarr", w, args.count, compact, expand, per_item)
                label = f"{name}, {w}w"
                print(f"{label:<34}{rate:>9.1f}{rate / max(w, 1):>12.1f}{cpu:>11.1f}{rate / ref:>8.2f}")
        prof = profile_worker(tmp / "bench.zarr", args.count)
        print(f"\na worker's work (PairDataset.read_into, batch 4, main process), CPU ms per pair: "
              f"{prof['total']:.2f} = blosc decode {prof['decode']:.2f} + pread {prof['pread']:.2f} "
              f"+ rest {prof['rest']:.2f}  (= {1e3 / prof['total']:.0f} pairs per CPU-s)")
        torch.set_num_threads(train_threads)
        if args.train_steps:
            step, first = bench_train(tmp / "bench.zarr", args.train_steps, tmp)
            print(f"\nfull model (64, depth 7), {args.size}x{args.size}, batch 4, perceptual loss, CPU: "
                  f"{step:.2f} s/step = {1 / step:.3f} steps/s ({4 / step:.2f} pairs/s); first step {first:.2f} s")


if __name__ == "__main__":
    main()
