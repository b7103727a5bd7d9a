"""Reading an hdrprep store for training: the pair Dataset, splits and the sample stream.

The store (see :mod:`hdrprep.schema`) is a Zarr v3 group with ``ldr`` uint8 (N, P, P, 3),
``hdr`` float16 (N, P, P, 3) and ``index.parquet``; the soft mask is not stored
but recomputed from the LDR with the build's ``camera.mask_alpha``.

Randomness follows "sample parameters, then apply": :class:`StreamSampler`
turns (seed, stream position) into (row, flip_h, flip_v) keys, or with a crop
(row, flip_h, flip_v, y, x) keys, and the Dataset (for compact batches,
:func:`expand_batch`) applies them deterministically. The
batches therefore depend only on the seed and the position, never on the number
of DataLoader workers, and a resumed run restarts the stream at ``step * batch_size``.
"""

from __future__ import annotations

import os
import time

import numpy as np
import torch

from hdrprep.errors import ConfigError, StoreError

__all__ = [
    "BatchLoader",
    "StoreInfo",
    "read_store_info",
    "soft_mask",
    "split_by_source",
    "PairDataset",
    "StreamSampler",
    "make_loader",
    "expand_batch",
]


class StoreInfo:
    """What the trainer needs from a store: index table, mask threshold, provenance.

    Attributes
    ----------
    path : Path
    index : pyarrow.Table, one row per pair
    n_pairs, patch_size : int
    mask_alpha : float, soft-mask threshold of the build
    attrs : dict, the group attribute ``hdrprep``
    """

    def __init__(self, path, index, n_pairs, patch_size, mask_alpha, attrs):
        self.path, self.index, self.n_pairs = path, index, n_pairs
        self.patch_size, self.mask_alpha, self.attrs = patch_size, mask_alpha, attrs


def read_store_info(path: str | os.PathLike) -> StoreInfo:
    """Open a store read-only (:func:`hdrprep.store.open_store`) and check that a trainer can use it.

    Raises
    ------
    StoreError
        Missing folder, foreign or unfinished store, unknown format version,
        index and arrays that disagree, no pairs, no ``camera.mask_alpha``.
    """
    from hdrprep.store import open_store

    st = open_store(path)
    try:
        alpha = float(st.config["camera"]["mask_alpha"])
    except (KeyError, TypeError) as exc:
        raise StoreError(f"{path}: attribute hdrprep.config.camera.mask_alpha missing; rebuild the store") from exc
    if st.n_pairs == 0:
        raise StoreError(f"{path}: the store holds no pairs; loosen the selection (select.threshold) and rebuild")
    return StoreInfo(st.path, st.index, st.n_pairs, st.patch_size, alpha, st.attrs)


def soft_mask(ldr01: torch.Tensor, alpha: float) -> torch.Tensor:
    """Santos Fig. 2 soft mask, M = clip((1 - T) / (1 - alpha), 0, 1) per pixel and channel.

    Parameters
    ----------
    ldr01 : float tensor, any shape, values in [0, 1]
    alpha : float in (0, 1), threshold where the ramp to 0 starts

    Returns
    -------
    float tensor of the same shape, values in [0, 1] (1 = well exposed); a new
    tensor, ``ldr01`` is not changed
    """
    return torch.rsub(ldr01, 1.0).div_(1.0 - alpha).clamp_(0.0, 1.0)


def split_by_source(info: StoreInfo, val_fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Split pair rows into (train, val) so that no source frame is in both.

    A seeded permutation of the sorted distinct ``source`` values puts
    ``ceil(val_fraction * n_sources)`` frames into validation.

    Returns
    -------
    train_rows, val_rows : int64 arrays, sorted
    """
    if not 0.0 <= val_fraction < 1.0:
        raise ConfigError(f"invalid value {val_fraction!r} for 'val_fraction': use a fraction in [0, 1)")
    rows = np.arange(info.n_pairs)
    if val_fraction == 0.0:
        return rows, rows[:0]
    source = np.asarray(info.index.column("source").to_pylist(), dtype=object)
    names = np.array(sorted(set(source)), dtype=object)
    if len(names) < 2:
        raise ConfigError(f"val_fraction={val_fraction} needs pairs from at least 2 source frames, "
                          f"{info.path} has {len(names)}; use val_fraction 0 (no validation) or more frames")
    n_val = min(len(names) - 1, int(np.ceil(val_fraction * len(names))))
    val_names = set(names[np.random.default_rng([seed, 0x5A11]).permutation(len(names))[:n_val]])
    is_val = np.array([s in val_names for s in source])
    return rows[~is_val], rows[is_val]


class PairDataset(torch.utils.data.Dataset):
    """(LDR, HDR, mask) pairs of a store as float32 CHW tensors, read a batch at a time.

    Items are addressed by a key: a row number, or a tuple ``(row, flip_h, flip_v)``,
    or with ``crop`` ``(row, flip_h, flip_v, y, x)``, as yielded by :class:`StreamSampler`.
    Shards are opened lazily in each process (never shared across fork).

    ``dataset[key]`` gives one item, :meth:`read_batch` a batch of them stacked:
    ``ldr`` (B, 3, S, S) float32 in [0, 1]; ``hdr`` (B, 3, S, S) float32 >= 0, linear,
    1.0 = LDR clipping point; ``mask`` (B, 3, S, S) float32 in [0, 1]; ``row`` (B,) int64
    (one item: the same without the leading B). S is ``crop``, or the patch size P.

    With ``crop`` each item is the S x S window of the stored pair whose top-left
    corner is (y, x) of its key (0, 0 for shorter keys), cut before the flips: a
    horizontal flip mirrors the window, not the patch.

    With ``compact=True`` items hold the pairs exactly as stored instead, unflipped:
    ``ldr`` uint8 and ``hdr`` float16 (B, S, S, 3), ``flip`` bool (B, 2) (horizontal,
    vertical) and ``row``; no mask. DataLoader workers then only decode (a quarter of
    the bytes of the float form, no per-pair copy), and :func:`expand_batch` flips and
    permutes them into the float32 form above (bit-identical), on the training device.

    Parameters
    ----------
    info : StoreInfo
    compact : bool
    crop : int
        Side S of the windows, 1 <= S <= P; 0 (or P) = whole patches.
    """

    def __init__(self, info: StoreInfo, compact: bool = False, crop: int = 0):
        if not 0 <= crop <= info.patch_size:
            raise ConfigError(f"invalid value {crop!r} for 'crop' (--crop): the store's patches are "
                              f"{info.patch_size} px; use 0 (whole patches) or a size up to {info.patch_size}")
        self.info = info
        self.compact = compact
        self.size = crop or info.patch_size
        # the mask of each 8-bit level, computed by the same soft_mask that expand_batch applies
        levels = torch.arange(256, dtype=torch.float32) / 255.0
        self._mask_lut = soft_mask(levels, info.mask_alpha).numpy()
        self._reader = None
        self._pid = None

    def __len__(self) -> int:
        return self.info.n_pairs

    def _open(self):
        if self._pid != os.getpid():  # each DataLoader worker opens its own reader
            import zarr

            from hdrprep.store import PairReader

            self._reader = PairReader(zarr.open_group(str(self.info.path), mode="r"))
            self._pid = os.getpid()
        return self._reader

    def __getstate__(self):
        state = dict(self.__dict__)
        state["_reader"], state["_pid"] = None, None
        state.pop("_scratch_pair", None), state.pop("_scratch_pid", None)
        return state

    def __getitem__(self, key):
        return {k: v[0] for k, v in self.read_batch([key]).items()}

    def read_batch(self, keys) -> dict:
        """Read and stack the items of ``keys`` (row numbers or (row, flip_h, flip_v) tuples)."""
        p = self.size
        ldr8 = torch.empty((len(keys), p, p, 3), dtype=torch.uint8)
        hdr16 = torch.empty((len(keys), p, p, 3), dtype=torch.float16)
        rows, flips = self.read_into(keys, ldr8.numpy(), hdr16.numpy())
        return self.finish(ldr8, hdr16, rows, flips)

    def read_into(self, keys, ldr8: np.ndarray, hdr16: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Decode the stored pairs of ``keys`` into ``ldr8`` uint8 and ``hdr16`` float16 (B, S, S, 3).

        The arrays are filled as stored (HWC, unflipped); rows are read in ascending order
        and a pair asked for twice is read once. Whole patches are decoded straight into
        their place; with a crop each pair is decoded once into a per-process scratch
        pair and its windows copied out.

        Returns
        -------
        rows : int64 (B,)
        flips : bool (B, 2), (horizontal, vertical) flip of each item, applied by :meth:`finish`
        """
        keys = [(int(k), 0, 0, 0, 0) if np.isscalar(k) else tuple(int(v) for v in k) + (0, 0) for k in keys]
        rows = np.array([k[0] for k in keys], dtype=np.int64)
        if len(keys) == 0 or rows.min() < 0 or rows.max() >= self.info.n_pairs:
            raise IndexError(f"rows must be in 0..{self.info.n_pairs - 1}, got {rows.tolist()}")
        flips = np.array([k[1:3] for k in keys], dtype=bool).reshape(len(keys), 2)
        p, s = self.info.patch_size, self.size
        corners = np.array([k[3:5] for k in keys], dtype=np.int64).reshape(len(keys), 2)
        if corners.min() < 0 or corners.max() > p - s:
            raise IndexError(f"crop corners must be in 0..{p - s} for {s} px windows of {p} px patches, "
                             f"got {corners.tolist()}")
        reader = self._open()
        first = {}
        for i in np.argsort(rows, kind="stable"):
            j = first.setdefault(rows[i], i)
            if s == p:
                if j == i:
                    reader.read_into(rows[i], ldr8[i], hdr16[i])
                else:
                    ldr8[i], hdr16[i] = ldr8[j], hdr16[j]
                continue
            if j == i:  # rows come in ascending order: the scratch pair holds this row from here on
                reader.read_into(rows[i], *self._scratch())
            full_ldr, full_hdr = self._scratch()
            y, x = corners[i]
            ldr8[i], hdr16[i] = full_ldr[y:y + s, x:x + s], full_hdr[y:y + s, x:x + s]
        return rows, flips

    def _scratch(self) -> tuple[np.ndarray, np.ndarray]:
        """One whole stored pair's buffers (P, P, 3), allocated once per process, for cropping."""
        if getattr(self, "_scratch_pid", None) != os.getpid():
            p = self.info.patch_size
            self._scratch_pair = (np.empty((p, p, 3), np.uint8), np.empty((p, p, 3), np.float16))
            self._scratch_pid = os.getpid()
        return self._scratch_pair

    def finish(self, ldr8: torch.Tensor, hdr16: torch.Tensor, rows: np.ndarray, flips: np.ndarray) -> dict:
        """The batch dict of stored (B, S, S, 3) pairs: as they are if compact, else flipped float32 CHW."""
        rows = torch.from_numpy(rows)
        if self.compact:
            return {"ldr": ldr8, "hdr": hdr16, "flip": torch.from_numpy(flips), "row": rows}
        # flipped CHW copies of the stored types, then numpy division and a lookup table:
        # a path independent of expand_batch's torch ops
        n, p = len(rows), self.size
        ldr8_chw, hdr16_chw = np.empty((n, 3, p, p), np.uint8), np.empty((n, 3, p, p), np.float16)
        for i, (fh, fv) in enumerate(flips):
            view = (slice(None, None, -1 if fv else 1), slice(None, None, -1 if fh else 1))
            ldr8_chw[i] = ldr8[i].numpy()[view].transpose(2, 0, 1)
            hdr16_chw[i] = hdr16[i].numpy()[view].transpose(2, 0, 1)
        ldr, mask = np.divide(ldr8_chw, np.float32(255.0), dtype=np.float32), self._mask_lut[ldr8_chw]
        return {"ldr": torch.from_numpy(ldr), "hdr": torch.from_numpy(hdr16_chw).float(),
                "mask": torch.from_numpy(mask), "row": rows}


class StreamSampler(torch.utils.data.Sampler):
    """An endless, seeded stream of keys over ``rows``, cut to [start, start + count).

    Epoch e is the permutation ``default_rng([seed, e])`` of ``rows``. Each position
    also gets a horizontal and a vertical flip bit, both drawn from
    ``default_rng([seed, e, 1])``; ``flips`` then keeps both (``'hv'``), the horizontal
    one (``'h'``: the vertical bit is set to 0) or neither (``'none'``). Drawing both
    whatever the choice keeps the order and the horizontal flips of a seed the same
    under every choice. With ``crop`` < ``patch_size`` each position also gets the
    top-left corner (y, x) of its window, uniform in [0, patch_size - crop], from
    ``default_rng([seed, e, 2])``; keys are then (row, flip_h, flip_v, y, x), else
    (row, flip_h, flip_v). Position p of the stream is thus a pure function of
    (seed, p), which is what makes resume exact and the batches independent of the
    number of DataLoader workers.

    Parameters
    ----------
    rows : int array, the rows to draw from
    seed, start, count : int
    flips : 'h', 'hv', 'none', or a bool (True = 'hv', False = 'none', their meaning before the choice)
    crop, patch_size : int
        Window side and the stored patch side; crop 0 = whole patches.
    """

    def __init__(self, rows: np.ndarray, seed: int, start: int, count: int, flips: bool | str = "hv",
                 crop: int = 0, patch_size: int = 0):
        if len(rows) == 0:
            raise ConfigError("no training pairs left after the validation split; lower val_fraction")
        if isinstance(flips, bool):
            flips = "hv" if flips else "none"
        if flips not in ("h", "hv", "none"):
            raise ConfigError(f"invalid value {flips!r} for 'flips' (--flips): use h, hv or none")
        if crop and not 0 < crop <= patch_size:
            raise ConfigError(f"invalid value {crop!r} for 'crop' (--crop): use a size up to the patch size "
                              f"{patch_size}, or 0 for whole patches")
        self.rows, self.seed, self.start, self.count, self.flips = np.asarray(rows), seed, start, count, flips
        self.crop, self.patch_size = (crop if crop < patch_size else 0), patch_size

    def __len__(self) -> int:
        return self.count

    def __iter__(self):
        n = len(self.rows)
        pos, end = self.start, self.start + self.count
        while pos < end:
            epoch, offset = divmod(pos, n)
            order = self.rows[np.random.default_rng([self.seed, epoch]).permutation(n)]
            flip = np.random.default_rng([self.seed, epoch, 1]).integers(0, 2, (n, 2))
            if self.flips != "hv":
                flip[:, 1] = 0
            if self.flips == "none":
                flip[:, 0] = 0
            take = min(n - offset, end - pos)
            if self.crop:
                corner = np.random.default_rng([self.seed, epoch, 2]).integers(0, self.patch_size - self.crop + 1,
                                                                              (n, 2))
                for i in range(offset, offset + take):
                    yield int(order[i]), int(flip[i, 0]), int(flip[i, 1]), int(corner[i, 0]), int(corner[i, 1])
            else:
                for i in range(offset, offset + take):
                    yield int(order[i]), int(flip[i, 0]), int(flip[i, 1])
            pos += take


def expand_batch(batch: dict, mask_alpha: float, device: torch.device | str = "cpu") -> tuple:
    """(ldr, hdr, mask) float32 (B, 3, S, S), C-contiguous, on ``device`` from a batch of either item form.

    A compact batch (stored HWC pairs and their ``flip`` flags) is moved as it is and
    flipped, permuted to CHW and converted there: on a GPU that costs nothing next to
    a training step, and it is the work the DataLoader workers are spared.
    """
    ldr = batch["ldr"].to(device, non_blocking=True)
    hdr = batch["hdr"].to(device, non_blocking=True)
    if ldr.dtype == torch.uint8:
        flips = batch["flip"].tolist()
        ldr = _oriented_float(ldr, flips).div_(255.0)
        return ldr, _oriented_float(hdr, flips), soft_mask(ldr, mask_alpha)
    return ldr, hdr.float(), batch["mask"].to(device, non_blocking=True)


def _oriented_float(x: torch.Tensor, flips: list) -> torch.Tensor:
    """float32 (B, 3, S, S) from (B, S, S, 3), item i flipped as ``flips[i]`` = (horizontal, vertical)."""
    b, p, _, c = x.shape
    out = torch.empty((b, c, p, p), dtype=torch.float32, device=x.device)
    chw = x.permute(0, 3, 1, 2)
    for i, (fh, fv) in enumerate(flips):
        dims = [d for d, f in ((1, fv), (2, fh)) if f]
        out[i] = chw[i].flip(dims) if dims else chw[i]  # the copy converts to float32
    return out


def _check_shared_memory(need: int, workers: int, batch_size: int, shm: str = "/dev/shm") -> None:
    """Refuse, with the numbers and the fix, slots that do not fit in /dev/shm.

    torch allocates shared tensors there lazily, so an overcommitted /dev/shm
    (Docker's default is 64 MB) shows up only later, as a SIGBUS in a worker.
    """
    import shutil

    try:
        free = shutil.disk_usage(shm).free
    except OSError:  # no /dev/shm (not Linux): torch uses another mechanism
        return
    if need > free:
        raise ConfigError(f"the DataLoader's shared batch slots need {need / 2**20:.0f} MiB of {shm} "
                          f"({workers} workers x batch {batch_size}), but only {free / 2**20:.0f} MiB is free; "
                          f"use fewer workers or a smaller batch, or enlarge {shm} "
                          f"(docker run --shm-size=2g)")


class _SlotBatches(torch.utils.data.Dataset):
    """Worker side of :class:`BatchLoader`: reads a batch into a free slot of shared buffers.

    The buffers are allocated once, before the workers start, ``slots`` per worker;
    ``busy[w, s]`` is set by worker ``w`` when it fills slot ``s`` and cleared by the
    main process once it has taken the batch out. (Fresh shared memory for every batch,
    what torch's collation does, costs more than decoding the pairs on the VMs measured.)
    Slots hold pairs as stored, (S, S, 3) (S = the dataset's window side), so that workers decode into them.
    """

    def __init__(self, dataset: PairDataset, workers: int, slots: int, batch_size: int):
        p = dataset.size
        _check_shared_memory(workers * slots * batch_size * p * p * 3 * (1 + 2), workers, batch_size)
        self.dataset = dataset
        self.ldr = torch.empty((workers, slots, batch_size, p, p, 3), dtype=torch.uint8).share_memory_()
        self.hdr = torch.empty((workers, slots, batch_size, p, p, 3), dtype=torch.float16).share_memory_()
        self.busy = torch.zeros((workers, slots), dtype=torch.uint8).share_memory_()

    def __getitem__(self, keys) -> tuple:
        w = torch.utils.data.get_worker_info().id
        busy = self.busy[w].numpy()
        while busy.all():  # every slot of this worker is still waiting in the main process
            time.sleep(1e-4)
        s = int(np.argmin(busy))
        busy[s] = 1
        n = len(keys)
        rows, flips = self.dataset.read_into(keys, self.ldr[w, s, :n].numpy(), self.hdr[w, s, :n].numpy())
        return w, s, rows, flips

    def take(self, w: int, s: int, rows: np.ndarray, flips: np.ndarray) -> dict:
        """Main process: finish batch (w, s) into arrays of its own (a copy if compact), free the slot."""
        n = len(rows)
        ldr8, hdr16 = self.ldr[w, s, :n], self.hdr[w, s, :n]
        if self.dataset.compact:
            ldr8, hdr16 = ldr8.clone(), hdr16.clone()
        batch = self.dataset.finish(ldr8, hdr16, rows, flips)
        self.busy[w, s] = 0
        return batch


def _as_is(x):
    return x


class BatchLoader:
    """Batches of a :class:`PairDataset` in the order of a key stream; see :func:`make_loader`."""

    def __init__(self, dataset: PairDataset, sampler, batch_size: int, num_workers: int, pin_memory: bool):
        self.dataset, self.sampler, self.batch_size = dataset, sampler, batch_size
        self.num_workers, self.pin_memory = num_workers, pin_memory

    def __len__(self) -> int:
        return -(-len(self.sampler) // self.batch_size)

    def __iter__(self):
        batches = torch.utils.data.BatchSampler(self.sampler, self.batch_size, drop_last=False)
        if self.num_workers == 0:
            for keys in batches:
                yield self._pin(self.dataset.read_batch(keys))
            return
        # a worker has at most prefetch_factor batches queued, and the main process takes one
        prefetch = 2
        slots = _SlotBatches(self.dataset, self.num_workers, prefetch + 2, self.batch_size)
        # batch_size=None: each list of keys reaches _SlotBatches as one index. Workers run torch
        # in one thread (the DataLoader sets it) and blosc too (importing zarr sets
        # numcodecs.blosc.use_threads = False)
        loader = torch.utils.data.DataLoader(slots, batch_size=None, sampler=batches, collate_fn=_as_is,
                                             num_workers=self.num_workers, prefetch_factor=prefetch)
        for w, s, rows, flips in loader:
            yield self._pin(slots.take(w, s, rows, flips))

    def _pin(self, batch: dict) -> dict:
        return {k: v.pin_memory() for k, v in batch.items()} if self.pin_memory else batch


def make_loader(dataset: PairDataset, sampler, batch_size: int, num_workers: int = 0,
                pin_memory: bool = False) -> BatchLoader:
    """An iterable of batches over ``sampler``'s keys; batches do not depend on ``num_workers``.

    ``sampler`` is a :class:`StreamSampler` or any sequence of keys, cut into batches of
    ``batch_size`` (the last one may be shorter). A batch is read whole by one process (a
    DataLoader worker, or the main process if ``num_workers`` is 0), with no per-item
    collation. Batches are dicts of stacked tensors (``ldr``, ``hdr``, ``mask`` (B, 3, S, S)
    float32, ``row`` (B,) int64; compact datasets: ``ldr`` uint8 and ``hdr`` float16 (B, S, S, 3)
    as stored, ``flip`` bool (B, 2), ``row``, for :func:`expand_batch`), owned by the caller.
    """
    if num_workers < 0:
        raise ConfigError(f"invalid value {num_workers!r} for 'num_workers': use 0 (main process) or more")
    return BatchLoader(dataset, sampler, batch_size, num_workers, pin_memory)
