"""`hdrprep export` and `hdrprep render` on a store built by the pipeline: files read back and compared."""

from __future__ import annotations

import json
import shutil

import cv2
import numpy as np
import OpenEXR
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import zarr
from PIL import Image

from hdrprep import export, render, schema
from hdrprep.config import load_preset
from hdrprep.errors import ConfigError, StoreError

SMOKE = load_preset("smoke")

#: Largest change of an 8-bit LDR value by the quality-100, 4:4:4 JPEG of the eilertsen layout
#: (measured 4 on these stores; 11 with OpenCV's default 4:2:0 chroma).
JPEG_MAX_ERROR = 6


@pytest.fixture(scope="module")
def stored(smoke_store):
    group = zarr.open_group(str(smoke_store), mode="r")
    return group["ldr"][:], group["hdr"][:], pq.read_table(smoke_store / schema.INDEX_NAME)


def _santos_load_training_pair(name_hdr, name_jpg):
    """The loader of Santos et al.'s released code (lib/img_io.py, marcelsan/Deep-HdrReconstruction)."""
    data = np.fromfile(name_hdr, dtype=np.float32)
    sz = np.floor(data[0:3]).astype(int)
    npix = sz[0] * sz[1] * sz[2]
    meta_length = len(data) - npix
    y = np.reshape(data[meta_length:meta_length + npix], (sz[0], sz[1], sz[2]))
    x = np.asarray(Image.open(name_jpg).convert("RGB")).astype(np.float32) / 255.0
    return x, y


def test_eilertsen_layout_round_trips(smoke_store, stored, tmp_path):
    ldr, hdr, index = stored
    out = tmp_path / "eil"
    marker = export.export(smoke_store, out, format="eilertsen")
    n = len(ldr)
    assert marker["complete"] and marker["pairs"] == n
    assert json.loads((out / export.MARKER).read_text()) == marker
    names = marker["names"]
    assert names == sorted(names) and len(set(names)) == n  # names sort in pair order
    assert sorted(p.name for p in (out / "bin").iterdir()) == [f"{m}.bin" for m in names]
    assert sorted(p.name for p in (out / "jpg").iterdir()) == [f"{m}.jpg" for m in names]
    worst = 0
    for k, name in enumerate(names):
        row = index.slice(k, 1).to_pylist()[0]
        assert name == f"im_{marker['sources'].index(row['source']):06d}_{row['candidate']:06d}"
        header, y = export.read_bin(out / "bin" / f"{name}.bin")
        assert header[:3].tolist() == [128, 128, 3]
        assert header[3] == np.float32(row["curve_n"]) and header[4] == np.float32(row["curve_sigma"])
        # float16 -> float32 is exact: the bits of the stored half floats come back
        np.testing.assert_array_equal(y.astype(np.float16).view(np.uint16), hdr[k].view(np.uint16))
        np.testing.assert_array_equal(y, hdr[k].astype(np.float32))
        x, y2 = _santos_load_training_pair(out / "bin" / f"{name}.bin", out / "jpg" / f"{name}.jpg")
        np.testing.assert_array_equal(y2, y)
        back = np.rint(x * 255).astype(np.int16)
        worst = max(worst, int(np.abs(back - ldr[k]).max()))
    assert 0 < worst <= JPEG_MAX_ERROR  # JPEG re-compression is lossy (and RGB order right: else ~100s)


def test_eilertsen_png_ldr_is_exact(smoke_store, stored, tmp_path):
    ldr, _, _ = stored
    marker = export.export(smoke_store, tmp_path / "eil", ldr_format="png")
    for k, name in enumerate(marker["names"]):
        x, _ = _santos_load_training_pair(tmp_path / "eil" / "bin" / f"{name}.bin",
                                          tmp_path / "eil" / "jpg" / f"{name}.png")
        np.testing.assert_array_equal(np.rint(x * 255).astype(np.uint8), ldr[k])


def test_exr_png_round_trips_exactly(smoke_store, stored, tmp_path):
    ldr, hdr, _ = stored
    marker = export.export(smoke_store, tmp_path / "ep", format="exr-png")
    for k, name in enumerate(marker["names"]):
        with OpenEXR.File(str(tmp_path / "ep" / "exr" / f"{name}.exr")) as f:
            rgb = f.channels()["RGB"].pixels
        assert rgb.dtype == np.float16
        np.testing.assert_array_equal(rgb.view(np.uint16), hdr[k].view(np.uint16))
        png = cv2.imread(str(tmp_path / "ep" / "png" / f"{name}.png"), cv2.IMREAD_UNCHANGED)
        np.testing.assert_array_equal(png[..., ::-1], ldr[k])


def test_export_refuses_foreign_and_overlapping_folders(smoke_store, tmp_path):
    foreign = tmp_path / "foreign"
    foreign.mkdir()
    (foreign / "notes.txt").write_text("mine")
    with pytest.raises(ConfigError, match="not an hdrprep export"):
        export.export(smoke_store, foreign)
    assert [p.name for p in foreign.iterdir()] == ["notes.txt"]
    with pytest.raises(ConfigError, match="overlaps the store"):
        export.export(smoke_store, smoke_store / "exported")
    with pytest.raises(ConfigError, match="choose one of"):
        export.export(smoke_store, tmp_path / "x", format="hdf5")
    (tmp_path / "file").write_text("")
    with pytest.raises(ConfigError, match="not a folder"):
        export.export(smoke_store, tmp_path / "file")


def test_reexport_replaces_its_own_files_only(smoke_store, tmp_path):
    out = tmp_path / "eil"
    first = export.export(smoke_store, out)
    stale = out / "bin" / "im_999999_000000.bin"
    stale.write_bytes(b"old")
    keep = out / "bin" / "README"
    keep.write_text("user file")
    second = export.export(smoke_store, out)
    assert second["names"] == first["names"]
    assert not stale.exists() and keep.exists()
    with pytest.raises(ConfigError, match="'eilertsen' export"):
        export.export(smoke_store, out, format="exr-png")


def test_read_bin_rejects_a_truncated_file(tmp_path):
    export.write_bin(tmp_path / "a.bin", np.ones((4, 5, 3), np.float16), 0.9, None)
    header, y = export.read_bin(tmp_path / "a.bin")
    assert header[:3].tolist() == [4, 5, 3] and np.isnan(header[4]) and y.shape == (4, 5, 3)
    data = (tmp_path / "a.bin").read_bytes()
    (tmp_path / "b.bin").write_bytes(data[:-4])
    with pytest.raises(StoreError, match="header says 4x5x3"):
        export.read_bin(tmp_path / "b.bin")


def test_render_regenerates_every_pair_from_its_index_row(smoke_store, smoke_frames, stored, tmp_path):
    ldr, hdr, index = stored
    for k in range(len(ldr)):
        got_ldr, got_hdr, equal = render.render_pair_from_index(smoke_store, smoke_frames, k, tmp_path / "r")
        assert equal
        np.testing.assert_array_equal(got_ldr, ldr[k])
        np.testing.assert_array_equal(got_hdr.view(np.uint16), hdr[k].view(np.uint16))
    with OpenEXR.File(str(tmp_path / "r" / "pair_000000.exr")) as f:
        np.testing.assert_array_equal(f.channels()["RGB"].pixels.view(np.uint16), hdr[0].view(np.uint16))
    png = cv2.imread(str(tmp_path / "r" / "pair_000000.png"), cv2.IMREAD_UNCHANGED)
    np.testing.assert_array_equal(png[..., ::-1], ldr[0])


def test_render_detects_a_wrong_recipe(smoke_store, smoke_frames, tmp_path):
    """Change one camera parameter of pair 0 in a copy of the store: the re-render must differ."""
    copy = tmp_path / "copy.zarr"
    shutil.copytree(smoke_store, copy)
    index = pq.read_table(copy / schema.INDEX_NAME)
    seeds = index["noise_seed"].to_pylist()
    seeds[0] += 1
    index = index.set_column(index.column_names.index("noise_seed"), "noise_seed", pa.array(seeds, pa.int64()))
    pq.write_table(index, copy / schema.INDEX_NAME)
    assert not render.render_pair_from_index(copy, smoke_frames, 0)[2]
    assert render.render_pair_from_index(copy, smoke_frames, 1)[2]


def test_render_refuses_a_changed_or_missing_frame(smoke_store, smoke_frames, stored, tmp_path):
    _, _, index = stored
    src = tmp_path / "src"
    shutil.copytree(smoke_frames, src)
    key = index["source"][0].as_py()
    with open(src / key, "ab") as f:
        f.write(b"\0")
    with pytest.raises(StoreError, match="bytes differ"):
        render.render_pair_from_index(smoke_store, src, 0)
    (src / key).unlink()
    with pytest.raises(StoreError, match="is not there"):
        render.render_pair_from_index(smoke_store, src, 0)
    with pytest.raises(ConfigError, match="has pairs 0.."):
        render.render_pair_from_index(smoke_store, smoke_frames, len(index))


def test_render_refuses_a_store_of_another_camera_version(smoke_store, smoke_frames, tmp_path):
    import json

    from hdrprep import camera

    copy = tmp_path / "s.zarr"
    shutil.copytree(smoke_store, copy)
    meta = json.loads((copy / "zarr.json").read_text())
    assert meta["attributes"]["hdrprep"]["camera_version"] == camera.RENDER_VERSION
    meta["attributes"]["hdrprep"]["camera_version"] = camera.RENDER_VERSION + 1
    (copy / "zarr.json").write_text(json.dumps(meta))
    with pytest.raises(StoreError, match="camera of version"):
        render.render_pair_from_index(copy, smoke_frames, 0)
