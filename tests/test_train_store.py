"""Trainer data path: tiny store fixture, Dataset, split, sample stream, loaders."""

import json
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytestmark = pytest.mark.torch


def make_tiny_store(path, n=12, size=128, pairs_per_shard=4, alpha=0.96, seed=0):
    """Build a small store with the real pipeline (``hdrprep.build``) from synthetic frames.

    ``n // 3`` generated frames, 3 candidate windows each, selection off, so the
    store holds exactly ``n`` pairs from ``n // 3`` source frames (splits by
    source work). Returns the stored (ldr uint8, hdr float32) arrays.
    """
    import zarr

    from hdrprep import build, synth
    from hdrprep.config import load_preset

    path = Path(path)
    frames = path.parent / f"{path.name}-frames"
    synth.write_frames(frames, n=n // 3, seed=seed, height=max(2 * size, 96), width=max(3 * size, 128))
    config = load_preset("smoke").override(**{
        "seed": seed, "sampling.patch_size": size, "sampling.patches_per_frame": 3, "select.keep_all": True,
        "output.pairs_per_shard": pairs_per_shard, "camera.mask_alpha": alpha})
    build.build(frames, path, config, scheduler="synchronous", progress=False)
    group = zarr.open_group(str(path), mode="r")
    return group["ldr"][:], group["hdr"][:].astype(np.float32)


@pytest.fixture(scope="module")
def tiny_store(tmp_path_factory):
    path = tmp_path_factory.mktemp("store") / "tiny.zarr"
    ldr, hdr = make_tiny_store(path)
    return path, ldr, hdr


def test_dataset_items_match_arrays(tiny_store):
    from hdrprep.train.dataset import PairDataset, read_store_info

    path, ldr, hdr = tiny_store
    info = read_store_info(path)
    assert (info.n_pairs, info.patch_size, info.mask_alpha) == (12, 128, 0.96)
    ds = PairDataset(info)
    item = ds[(5, 1, 0)]  # horizontal flip
    assert item["ldr"].dtype == torch.float32 and item["ldr"].shape == (3, 128, 128)
    np.testing.assert_array_equal(item["ldr"].permute(1, 2, 0).numpy(), ldr[5, :, ::-1] / np.float32(255))
    np.testing.assert_array_equal(item["hdr"].permute(1, 2, 0).numpy(), hdr[5, :, ::-1])
    item = ds[(7, 0, 1)]  # vertical flip
    np.testing.assert_array_equal(item["hdr"].permute(1, 2, 0).numpy(), hdr[7, ::-1])
    # literal soft mask, Santos Fig. 2: 1 below alpha, linear ramp to 0 at 1.0
    t = ldr[7, ::-1].astype(np.float64) / 255
    expect = np.where(t <= 0.96, 1.0, (1 - t) / (1 - 0.96))
    np.testing.assert_allclose(item["mask"].permute(1, 2, 0).numpy(), expect, atol=1e-5)
    assert 0 < (item["mask"] < 1).float().mean() < 0.9  # the fixture really saturates


def test_soft_mask_equals_camera_module():
    camera = pytest.importorskip("hdrprep.camera")
    if not hasattr(camera, "soft_mask"):
        pytest.skip("hdrprep.camera.soft_mask not written yet")
    from hdrprep.train.dataset import soft_mask

    ldr = np.arange(256, dtype=np.uint8).reshape(16, 16, 1).repeat(3, axis=2)
    ref = np.asarray(camera.soft_mask(ldr, 0.96), dtype=np.float64)
    ours = soft_mask(torch.from_numpy(ldr).float() / 255, 0.96).numpy()
    np.testing.assert_allclose(ours, ref, atol=1e-6)


def test_split_by_source_is_disjoint_and_seeded(tiny_store):
    from hdrprep.train.dataset import read_store_info, split_by_source

    info = read_store_info(tiny_store[0])
    train, val = split_by_source(info, 0.25, seed=3)
    source = np.array(info.index.column("source").to_pylist())
    assert len(train) + len(val) == 12 and len(val) == 3
    assert not set(source[train]) & set(source[val])
    assert np.array_equal(val, split_by_source(info, 0.25, seed=3)[1])


def test_stream_is_a_function_of_seed_and_position():
    from hdrprep.train.dataset import StreamSampler

    rows = np.arange(10, 17)
    whole = list(StreamSampler(rows, seed=4, start=0, count=30))
    assert whole[10:30] == list(StreamSampler(rows, seed=4, start=10, count=20))
    assert sorted(k[0] for k in whole[:7]) == rows.tolist()  # each epoch is a permutation
    assert whole != list(StreamSampler(rows, seed=5, start=0, count=30))
    assert {k[1] for k in whole} == {0, 1} and {k[2] for k in whole} == {0, 1}
    assert whole == list(StreamSampler(rows, seed=4, start=0, count=30, flips="hv"))  # the default, as before
    assert whole == list(StreamSampler(rows, seed=4, start=0, count=30, flips=True))  # a bool of old configs
    # 'h': the same order and horizontal flips, never a vertical one; 'none': no flips
    h = list(StreamSampler(rows, seed=4, start=0, count=30, flips="h"))
    assert h == [(r, fh, 0) for r, fh, _ in whole]
    assert list(StreamSampler(rows, seed=4, start=0, count=30, flips=False)) == [(r, 0, 0) for r, _, _ in whole]
    # a crop adds the window's corner, from its own stream: order and flips unchanged
    cropped = list(StreamSampler(rows, seed=4, start=0, count=30, flips="h", crop=32, patch_size=128))
    assert [k[:3] for k in cropped] == h
    corners = np.array([k[3:] for k in cropped])
    assert corners.min() >= 0 and corners.max() <= 96 and len(set(map(tuple, corners))) > 20
    assert cropped[10:] == list(StreamSampler(rows, seed=4, start=10, count=20, flips="h", crop=32, patch_size=128))
    assert list(StreamSampler(rows, 4, 0, 30, crop=128, patch_size=128)) == whole  # a crop of the whole patch
    from hdrprep.errors import ConfigError

    with pytest.raises(ConfigError, match="--flips"):
        StreamSampler(rows, 4, 0, 30, flips="v")
    with pytest.raises(ConfigError, match="--crop"):
        StreamSampler(rows, 4, 0, 30, crop=256, patch_size=128)


def test_cropped_items_are_windows_flipped_after_the_cut(tiny_store):
    from hdrprep.errors import ConfigError
    from hdrprep.train.dataset import PairDataset, read_store_info

    path, ldr, hdr = tiny_store
    info = read_store_info(path)
    ds = PairDataset(info, crop=48)
    item = ds[(5, 1, 0, 10, 70)]  # rows 10..57, columns 70..117, mirrored left-right
    assert item["ldr"].shape == item["hdr"].shape == item["mask"].shape == (3, 48, 48)
    np.testing.assert_array_equal(item["ldr"].permute(1, 2, 0).numpy(),
                                  ldr[5, 10:58, 70:118][:, ::-1] / np.float32(255))
    np.testing.assert_array_equal(item["hdr"].permute(1, 2, 0).numpy(), hdr[5, 10:58, 70:118][:, ::-1])
    item = ds[(5, 0, 1, 80, 0)]
    np.testing.assert_array_equal(item["hdr"].permute(1, 2, 0).numpy(), hdr[5, 80:128, 0:48][::-1])
    # the same row twice in a batch, two windows: read once, cut twice
    batch = ds.read_batch([(3, 0, 0, 0, 0), (7, 0, 0, 1, 2), (3, 0, 0, 80, 80)])
    np.testing.assert_array_equal(batch["hdr"][2].permute(1, 2, 0).numpy(), hdr[3, 80:, 80:])
    np.testing.assert_array_equal(batch["hdr"][1].permute(1, 2, 0).numpy(), hdr[7, 1:49, 2:50])
    with pytest.raises(IndexError, match="crop corners"):
        ds[(5, 0, 0, 81, 0)]
    with pytest.raises(ConfigError, match="--crop"):
        PairDataset(info, crop=256)


@pytest.mark.slow
@pytest.mark.parametrize("compact,crop", [(False, 0), (True, 0), (True, 64)])
def test_batches_identical_with_0_1_and_2_workers(tiny_store, compact, crop):
    from hdrprep.train.dataset import PairDataset, StreamSampler, make_loader, read_store_info

    info = read_store_info(tiny_store[0])
    ds = PairDataset(info, compact=compact, crop=crop)
    ds[(0, 0, 0, 0, 0)]  # a handle (and a crop's scratch pair) opened in the parent must not leak into the workers

    def batches(workers):
        sampler = StreamSampler(np.arange(12), seed=7, start=2, count=20, crop=crop, patch_size=info.patch_size)
        return list(make_loader(ds, sampler, batch_size=4, num_workers=workers))

    # one worker fills its 4 shared slots more than once: batches kept by the caller must not change
    b0, b1, b2 = batches(0), batches(1), batches(2)
    assert len(b0) == len(b1) == len(b2) == 5
    for x, y, z in zip(b0, b1, b2):
        assert set(x) == set(y) == set(z) == ({"ldr", "hdr", "flip", "row"} if compact
                                              else {"ldr", "hdr", "mask", "row"})
        for k in x:
            assert torch.equal(x[k], y[k]) and torch.equal(x[k], z[k])
        assert x["ldr"].shape[1 if compact else 2] == (crop or 128)


@pytest.mark.parametrize("crop", [0, 64])
def test_compact_batches_expand_to_the_float_items(tiny_store, crop):
    from hdrprep.train.dataset import PairDataset, StreamSampler, expand_batch, make_loader, read_store_info

    info = read_store_info(tiny_store[0])
    keys = list(StreamSampler(np.arange(12), seed=1, start=0, count=8, crop=crop, patch_size=128))
    # a row twice more: read once, flipped apart (and with a crop, cut at two other corners)
    keys += [(keys[0][0], 1 - keys[0][1], 1) + ((64, 0) if crop else ()),
             (keys[0][0], 0, 0) + ((0, 64) if crop else ())]
    assert {k[1:3] for k in keys} == {(0, 0), (0, 1), (1, 0), (1, 1)}
    full = next(iter(make_loader(PairDataset(info, crop=crop), keys, batch_size=10)))
    small = next(iter(make_loader(PairDataset(info, compact=True, crop=crop), keys, batch_size=10)))
    # compact: the pairs exactly as stored (cut, with a crop), unflipped, HWC; the flips travel as flags
    _, ldr, hdr = tiny_store
    s = crop or 128
    win = [(k[0], slice(k[3], k[3] + s) if crop else slice(None), slice(k[4], k[4] + s) if crop else slice(None))
           for k in keys]
    assert small["ldr"].dtype == torch.uint8 and small["hdr"].dtype == torch.float16
    assert np.array_equal(small["ldr"].numpy(), np.stack([ldr[w] for w in win]))
    assert np.array_equal(small["hdr"].numpy(), np.stack([hdr[w] for w in win]).astype(np.float16))
    assert small["flip"].dtype == torch.bool and small["flip"].tolist() == [[bool(f) for f in k[1:3]] for k in keys]
    for a, b in zip(expand_batch(small, info.mask_alpha), expand_batch(full, info.mask_alpha)):
        assert a.dtype == b.dtype == torch.float32 and a.shape == (10, 3, s, s) and a.is_contiguous()
        assert torch.equal(a, b)


def test_refuses_foreign_or_unfinished_store(tmp_path):
    import zarr

    from hdrprep.errors import StoreError
    from hdrprep.train.dataset import read_store_info

    with pytest.raises(StoreError, match="not an hdrprep store"):
        read_store_info(tmp_path)
    zarr.open_group(str(tmp_path / "a.zarr"), mode="w", attributes={"hdrprep": {"format_version": 2}})
    with pytest.raises(StoreError, match="format version 2"):
        read_store_info(tmp_path / "a.zarr")
    make_tiny_store(tmp_path / "b.zarr", n=3, size=32, pairs_per_shard=2)
    g = zarr.open_group(str(tmp_path / "b.zarr"), mode="r+")
    g.attrs["hdrprep"] = {**g.attrs["hdrprep"], "complete": False}
    with pytest.raises(StoreError, match="did not finish"):
        read_store_info(tmp_path / "b.zarr")
    json.dumps(dict(g.attrs))  # attributes stay plain JSON


@pytest.fixture(autouse=True)
def one_torch_thread():
    """The test machines are small and shared: torch's thread pool only adds contention here."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


def test_shared_slots_that_do_not_fit_are_refused_with_the_fix(tmp_path):
    import shutil

    from hdrprep.errors import ConfigError
    from hdrprep.train.dataset import _check_shared_memory

    free = shutil.disk_usage(tmp_path).free
    _check_shared_memory(1 << 20, 2, 4, shm=str(tmp_path))  # fits: nothing happens
    with pytest.raises(ConfigError, match=r"2 workers x batch 4.*--shm-size"):
        _check_shared_memory(free + (1 << 30), 2, 4, shm=str(tmp_path))
