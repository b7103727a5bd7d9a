"""Tests of hdrprep.io: every shared fixture, generated bad files, the YCA path and the writers."""

import csv
import os
import time

import cv2
import numpy as np
import OpenEXR
import pytest

from conftest import real_frames
from hdrprep import io
from hdrprep.config import IngestConfig
from hdrprep.errors import BadFrameError

REPAIR = IngestConfig(nonfinite="repair")

# Expected outcome of every file in shared/data/hdr-edge with the default IngestConfig:
# (H, W) of the returned array, or the BadFrameError reason.
EDGE = {
    "2by2.exr": (2, 2),                          # RGBA, alpha dropped
    "AllHalfValues.exr": "nonfinite",            # every half value, +-Inf and NaN included
    "BrightRingsNanInf.exr": "nonfinite",
    "Fog.exr": (672, 1000),                      # Y + right.Y: default view's Y -> gray
    "Garden.exr": (493, 874),                    # luminance only, tiled
    "HDR-A-1x1.exr": (1, 1),
    "Rec709.exr": (406, 610),
    "Single_Channel.exr": "no-colour-channels",  # R only
    "StageEnvLatLong.exr": (500, 1000),          # tiled mip-map, level 0
    "WideFloatRange.exr": "no-colour-channels",  # G only
    "XYZ.exr": (406, 610),                       # R,G,B hold XYZ: converted to Rec.709
    "asakusa.exr": (440, 660),
    "comp_dwab_v2.exr": (675, 587),
    "comp_early_eof_piz.exr": "unreadable",      # damaged header
    "deep_Trunks_lowres.exr": "deep",
    "flaga.exr": (64, 128),                      # only layered channels: 'Warstwa 1.R' ...
    "hdr-rgb-00.hdr": (256, 256),
    "hdr_8x8.hdr": (8, 8),
    "issue-160-piz-decode.exr": (32, 420),       # float32 + PIZ
    "multipart.0001.exr": (876, 877),            # 10 parts, data window inside display window
    "rainbow_flat_16x16.hdr": (16, 16),          # flat (non-RLE) scanlines
    "tiled_half_1x1_alpha.exr": "no-colour-channels",  # A only
    "v1.7.test.1.exr": (155, 178),               # data window offset (20, 20)
}


def _assert_frame(rgb, shape):
    assert rgb.shape == (*shape, 3)
    assert rgb.dtype == np.float32 and rgb.flags.c_contiguous
    assert np.isfinite(rgb).all() and rgb.min() >= 0


def test_edge_table_covers_every_file(edge_dir):
    files = {p.name for p in edge_dir.iterdir() if p.suffix.lower() in io.HDR_SUFFIXES}
    assert files == set(EDGE)


@pytest.mark.parametrize("name", sorted(EDGE))
def test_edge_file_outcome(edge_dir, name):
    expected = EDGE[name]
    if isinstance(expected, str):
        with pytest.raises(BadFrameError) as err:
            io.read_frame(edge_dir / name)
        assert err.value.reason == expected
        assert err.value.path.endswith(name) and err.value.detail
    else:
        rgb, stats = io.read_frame(edge_dir / name)
        _assert_frame(rgb, expected)
        info = io.probe(edge_dir / name)
        assert (info.height, info.width) == expected


def test_edge_facts(edge_dir):
    assert io.probe(edge_dir / "flaga.exr").layer == "Warstwa 1"
    assert io.probe(edge_dir / "flaga.exr").channels == ("Warstwa 1.R", "Warstwa 1.G", "Warstwa 1.B")
    fog = io.probe(edge_dir / "Fog.exr")
    assert (fog.colour, fog.channels) == ("y", ("Y",))
    stage = io.probe(edge_dir / "StageEnvLatLong.exr")
    assert stage.tiled and stage.mipmap
    multi = io.probe(edge_dir / "multipart.0001.exr")
    assert (multi.part, multi.part_index, multi.n_parts) == ("rgba_right", 0, 10)
    assert multi.data_window == (654, 245, 1530, 1120) and multi.display_window == (0, 0, 2047, 1555)
    v17 = io.probe(edge_dir / "v1.7.test.1.exr")
    assert v17.data_window == (20, 20, 197, 174)
    assert io.probe(edge_dir / "rainbow_flat_16x16.hdr").compression == "flat"
    assert io.probe(edge_dir / "hdr_8x8.hdr").compression == "rle"  # SOURCES.tsv: RLE at width 8
    assert io.probe(edge_dir / "hdr-rgb-00.hdr").compression == "rle"


def test_luminance_only_is_gray(edge_dir):
    rgb, _ = io.read_frame(edge_dir / "Garden.exr")
    y = OpenEXR.File(str(edge_dir / "Garden.exr"), separate_channels=True).parts[0].channels["Y"].pixels
    for c in range(3):
        np.testing.assert_array_equal(rgb[..., c], y.astype(np.float32))


def test_named_part_and_missing_part(edge_dir):
    path = edge_dir / "multipart.0001.exr"
    names = [p.header.get("name") for p in OpenEXR.File(str(path), header_only=True).parts]
    other = next(n for n in names[1:] if io._colour_set(
        c.name for c in OpenEXR.File(str(path), header_only=True).parts[names.index(n)].header["channels"]))
    rgb, _ = io.read_frame(path, ingest=IngestConfig(part=other))
    ref = OpenEXR.File(str(path), separate_channels=True).parts[names.index(other)].channels
    info = io.probe(path, part=other)
    np.testing.assert_array_equal(rgb[..., 0], np.maximum(ref[info.channels[0]].pixels.astype(np.float32), 0))
    with pytest.raises(BadFrameError) as err:
        io.read_frame(path, ingest=IngestConfig(part="no such part"))
    assert err.value.reason == "no-such-part" and "rgba_right" in err.value.detail


def test_nonfinite_repair_and_negative_policy(edge_dir):
    raw = OpenEXR.File(str(edge_dir / "BrightRingsNanInf.exr"), separate_channels=True).parts[0].channels
    planes = np.stack([raw[c].pixels.astype(np.float32) for c in "RGB"], axis=-1)
    rgb, stats = io.read_frame(edge_dir / "BrightRingsNanInf.exr", ingest=REPAIR)
    bad = ~np.isfinite(planes)
    assert stats.nonfinite == np.count_nonzero(bad) > 0
    top = planes[~bad].max()
    np.testing.assert_array_equal(rgb[np.isposinf(planes)], top)
    np.testing.assert_array_equal(rgb[np.isnan(planes) | np.isneginf(planes)], 0)
    np.testing.assert_array_equal(rgb[~bad], planes[~bad])

    rgb, stats = io.read_frame(edge_dir / "AllHalfValues.exr", ingest=REPAIR)
    assert stats.negative > 0 and rgb.min() == 0 and rgb.max() == 65504
    with pytest.raises(BadFrameError) as err:
        io.read_frame(edge_dir / "AllHalfValues.exr", ingest=IngestConfig(nonfinite="repair", negative="reject"))
    assert err.value.reason == "negative"


def test_min_size(edge_dir):
    with pytest.raises(BadFrameError) as err:
        io.read_frame(edge_dir / "StageEnvLatLong.exr", min_size=512)
    assert err.value.reason == "too-small" and "1000x500" in err.value.detail
    assert io.read_frame(edge_dir / "StageEnvLatLong.exr", min_size=500)[0].shape == (500, 1000, 3)


def test_xyz_file_converted_to_rec709(edge_dir):
    """XYZ.exr is Rec709.exr's scene stored as CIE XYZ: after conversion both agree."""
    xyz, _ = io.read_frame(edge_dir / "XYZ.exr")
    rec, _ = io.read_frame(edge_dir / "Rec709.exr")
    rel = np.abs(xyz - rec) / np.maximum(rec, 0.05)
    assert np.median(rel) < 1e-3 and np.percentile(rel, 99) < 1e-2


@pytest.mark.parametrize("chroma, weights", [
    (io._REC709, (0.2126, 0.7152, 0.0722)),
    ("Tree", (0.2499, 0.6650, 0.0850)),    # SOURCES.tsv, from the file's chromaticities
    ("XYZ", (0.0, 1.0, 0.0)),
])
def test_luminance_weights(hdr_dir, edge_dir, chroma, weights):
    if chroma == "Tree":
        chroma = io.probe(hdr_dir / "Tree.exr").chromaticities
    elif chroma == "XYZ":
        chroma = io.probe(edge_dir / "XYZ.exr").chromaticities
    np.testing.assert_allclose(io._luminance_weights(chroma), weights, atol=1e-4)


# --------------------------------------------------------------------------- real frames


def _sources(hdr_dir):
    with open(hdr_dir / "SOURCES.tsv") as fh:
        return {r["file"]: r for r in csv.DictReader(fh, delimiter="\t")}


@pytest.mark.parametrize("path", real_frames(), ids=lambda p: p.name)
def test_real_frame_matches_independent_stats(hdr_dir, path):
    """Luminance max and 99.9th percentile equal SOURCES.tsv (rgbe-py for .hdr, OpenEXR-py for EXR)."""
    row = _sources(hdr_dir)[path.name]
    rgb, _ = io.read_frame(path)
    _assert_frame(rgb, (int(row["height"]), int(row["width"])))
    lum = rgb @ np.array([0.2126, 0.7152, 0.0722], np.float32)
    # luminance/chroma files: the table's conversion is not OpenEXR's, so allow 5e-4
    tol = 5e-4 if "Y,RY,BY" in row["channels"] else 1e-4
    np.testing.assert_allclose(lum.max(), float(row["lum_max"]), rtol=tol)
    np.testing.assert_allclose(np.percentile(lum, 99.9), float(row["lum_p99_9"]), rtol=tol)


@pytest.mark.parametrize("path", [p for p in real_frames() if p.suffix == ".hdr"], ids=lambda p: p.name)
def test_real_hdr_equals_opencv_decode(path):
    bgr = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
    rgb, stats = io.read_frame(path)
    np.testing.assert_array_equal(rgb, bgr[..., ::-1])
    assert stats.negative == stats.nonfinite == 0


def _interleaved_channels(path, info):
    """Second decode path of the bindings: channels grouped per layer into one interleaved
    (H, W, 3|4) array (``separate_channels=False``), instead of the per-channel planes that
    read_frame uses."""
    channels = OpenEXR.File(str(path)).parts[info.part_index].channels
    if info.colour != "rgb":
        return [channels[info.channels[0]].pixels.astype(np.float32)]
    layer = channels[info.layer or ("RGBA" if "RGBA" in channels else "RGB")].pixels
    return [layer[..., i].astype(np.float32) for i in range(3)]


@pytest.mark.parametrize("path", [p for p in real_frames() if p.suffix == ".exr"], ids=lambda p: p.name)
def test_real_exr_equals_interleaved_decode(path):
    info = io.probe(path)
    rgb, stats = io.read_frame(path)
    planes = _interleaved_channels(path, info)
    if info.colour == "yc":
        # the Y,RY,BY -> RGB formula keeps luminance: compare it with the file's Y
        lum = rgb @ io._luminance_weights(info.chromaticities or io._REC709)
        rel = np.abs(lum - planes[0]) / np.maximum(planes[0], 1e-3)
        assert np.median(rel) < 1e-3 and np.percentile(rel, 99) < 1e-2
        return
    ref = np.stack(planes, axis=-1)
    assert stats.negative == np.count_nonzero(ref < 0)
    ref = np.maximum(ref, 0)
    if info.chromaticities is not None:
        ref = io._to_rec709(ref, info.chromaticities)
    np.testing.assert_array_equal(rgb, ref)


def test_fixture_policy_counts(hdr_dir):
    """What the defaults do on the real photographs: no NaN/Inf, a few with small negatives."""
    with_negative = {}
    for path in real_frames():
        _, stats = io.read_frame(path)
        assert stats.nonfinite == 0
        if stats.negative:
            with_negative[path.name] = stats.negative
    assert set(with_negative) == {"Adjuster.exr", "CandleGlass.exr", "Desk.exr", "comp_dwaa_v2.exr"}


# --------------------------------------------------------------------------- luminance / chroma


def _slow_rgba_yca(y, ry, by, yw):
    """Scalar transliteration of OpenEXR's RgbaInputFile::FromYca (ImfRgbaFile.cpp, ImfRgbaYca.cpp).

    Per pixel, with every stored value rounded to half as the C++ Rgba type does.
    Assumes even width and height.
    """
    taps = [0.002128, -0.007540, 0.019597, -0.043159, 0.087929, -0.186077, 0.627123,
            0.627123, -0.186077, 0.087929, -0.043159, 0.019597, -0.007540, 0.002128]
    offs = [-13, -11, -9, -7, -5, -3, -1, 1, 3, 5, 7, 9, 11, 13]
    h, w = y.shape
    half = lambda v: float(np.float16(v))  # noqa: E731

    def line(yy):  # readYCAScanLine: clamp, then horizontal chroma reconstruction on even lines
        yy = 0 if yy < 0 else (h - 2 if yy > h - 1 else yy)
        px = [[float(ry[yy // 2, x // 2]) if x % 2 == 0 else 0.0, float(y[yy, x]),
               float(by[yy // 2, x // 2]) if x % 2 == 0 else 0.0] for x in range(w)]
        if yy % 2 == 0:
            pad = lambda i: px[0] if i < 0 else (px[w - 2] if i > w - 1 else px[i])  # noqa: E731
            for x in range(1, w, 2):
                for c in (0, 2):
                    px[x][c] = half(sum(t * pad(x + o)[c] for t, o in zip(taps, offs)))
        return yy, px

    def rgb_line(yy):  # one row of _buf2: vertical reconstruction on odd rows, then YCAtoRGBA
        cur, px = line(yy)
        if yy % 2:  # position parity decides, as in FromYca::readPixels
            for x in range(w):
                for c in (0, 2):
                    px[x][c] = half(sum(t * line(yy + o)[1][x][c] for t, o in zip(taps, offs)))
        out = []
        for r_y, lum, b_y in px:
            if r_y == 0 and b_y == 0:
                out.append([lum, lum, lum])
            else:
                r = (r_y + 1) * lum
                b = (b_y + 1) * lum
                out.append([half(r), half((lum - r * yw[0] - b * yw[2]) / yw[1]), half(b)])
        return out

    def sat(p):
        return 1 - min(p) / max(p) if max(p) > 0 else 0.0

    result = np.zeros((h, w, 3), np.float32)
    for yy in range(h):
        above, mid, below = rgb_line(yy - 1), rgb_line(yy), rgb_line(yy + 1)
        for x in range(w):
            xl, xr = max(x - 1, 0), min(x + 1, w - 1)
            s_mean = min(1.0, 0.25 * (sat(above[xl]) + sat(above[xr]) + sat(below[xl]) + sat(below[xr])))
            p = mid[x]
            s = sat(p)
            s_max = min(1.0, 1 - (1 - s_mean) * 0.25)
            if s > s_mean and s > s_max:
                f = s_max / s
                hi = max(p)
                q = [half(max(hi - (hi - v) * f, 0.0)) for v in p]
                y_in = sum(a * b for a, b in zip(p, yw))
                y_out = sum(a * b for a, b in zip(q, yw))
                if y_out > 0:
                    q = [half(v * y_in / y_out) for v in q]
                p = q
            result[yy, x] = p
    return result


def test_yca_matches_slow_transliteration():
    rng = np.random.default_rng(7)
    h, w = 14, 18
    y = (rng.uniform(0.05, 4, (h, w))).astype(np.float16)
    ry = rng.uniform(-0.8, 1.5, (h // 2, w // 2)).astype(np.float16)
    by = rng.uniform(-0.8, 1.5, (h // 2, w // 2)).astype(np.float16)
    ry[1, 2] = by[1, 2] = 0  # the gray special case
    yw = io._luminance_weights(io._REC709)
    fast = io._yca_to_rgb(y, ry, by, yw)
    slow = _slow_rgba_yca(y, ry, by, [float(v) for v in yw])
    assert fast.shape == slow.shape
    # tolerance: one half-float ulp (summation order differs between float32 numpy and scalar sums)
    ulp = np.spacing(np.abs(slow).astype(np.float16)).astype(np.float32)
    assert np.all(np.abs(fast - slow) <= ulp)
    assert np.mean(fast == slow) > 0.99


def _write_yca(path, y, ry, by, chroma=None):
    """Write Y + 2x2-subsampled RY, BY. The bindings take a subsampled channel as a full-size array
    whose first (H/2)*(W/2) values, in row-major order, are the samples."""
    h, w = y.shape

    def sub(c):
        full = np.zeros((h, w), np.float16)
        full.ravel()[: c.size] = c.ravel()
        return OpenEXR.Channel(full, 2, 2)

    header = {"compression": OpenEXR.PIZ_COMPRESSION, "type": OpenEXR.scanlineimage}
    if chroma is not None:
        header["chromaticities"] = tuple(chroma)
    OpenEXR.File(header, {"Y": OpenEXR.Channel(np.ascontiguousarray(y)), "RY": sub(ry), "BY": sub(by)}).write(str(path))


@pytest.mark.parametrize("chroma", [None, (0.708, 0.292, 0.170, 0.797, 0.131, 0.046, 0.3127, 0.3290)])
def test_yca_round_trip(tmp_path, chroma):
    """Smooth RGB -> Y, RY, BY (OpenEXR's RGBAtoYCA, chroma point-subsampled) -> file -> read_frame."""
    h, w = 64, 96
    yy, xx = np.mgrid[0:h, 0:w] / np.array([h, w])[:, None, None]
    rgb = np.stack([0.5 + 2 * xx, 0.4 + yy, 0.3 + 0.5 * xx * yy], axis=-1).astype(np.float32)
    yw = io._luminance_weights(chroma or io._REC709)
    lum = rgb @ yw
    ry = (rgb[..., 0] - lum) / lum
    by = (rgb[..., 2] - lum) / lum
    path = tmp_path / "yca.exr"
    _write_yca(path, lum.astype(np.float16), ry[::2, ::2].astype(np.float16), by[::2, ::2].astype(np.float16),
               chroma)
    info = io.probe(path)
    assert info.colour == "yc" and info.channels == ("Y", "RY", "BY")
    out, _ = io.read_frame(path)
    # inside: half precision of Y and chroma (~1e-3) plus interpolation of a smooth field;
    # within 7 pixels of a border the filter sees repeated edge samples, which bends the ramp
    np.testing.assert_allclose(out[8:-8, 8:-8], rgb[8:-8, 8:-8], rtol=5e-3, atol=1e-3)
    np.testing.assert_allclose(out, rgb, rtol=2e-2, atol=1e-3)


# --------------------------------------------------------------------------- bad files


def _reason(path, **kw):
    with pytest.raises(BadFrameError) as err:
        io.read_frame(path, **kw)
    assert err.value.detail
    return err.value.reason


def test_generated_bad_files(tmp_path):
    (tmp_path / "empty.exr").write_bytes(b"")
    assert _reason(tmp_path / "empty.exr") == "truncated"
    (tmp_path / "empty.hdr").write_bytes(b"")
    assert _reason(tmp_path / "empty.hdr") == "truncated"
    (tmp_path / "random.exr").write_bytes(np.random.default_rng(0).bytes(4096))
    assert _reason(tmp_path / "random.exr") == "unreadable"
    (tmp_path / "random.hdr").write_bytes(np.random.default_rng(1).bytes(4096))
    assert _reason(tmp_path / "random.hdr") == "unreadable"
    (tmp_path / "noend.hdr").write_bytes(b"#?RADIANCE\nFORMAT=32-bit_rle_rgbe\n")
    assert _reason(tmp_path / "noend.hdr") == "unreadable"
    (tmp_path / "dir.exr").mkdir()
    assert _reason(tmp_path / "dir.exr") == "not-a-file"
    assert _reason(tmp_path / "missing.exr") == "not-a-file"
    os.symlink(tmp_path / "nowhere.exr", tmp_path / "broken.exr")
    assert _reason(tmp_path / "broken.exr") == "not-a-file"
    os.symlink(tmp_path / "loop_b.exr", tmp_path / "loop_a.exr")
    os.symlink(tmp_path / "loop_a.exr", tmp_path / "loop_b.exr")
    assert _reason(tmp_path / "loop_a.exr") == "not-a-file"
    (tmp_path / "frame.png").write_bytes(b"x")
    assert _reason(tmp_path / "frame.png") == "unsupported-format"
    (tmp_path / "xyze.hdr").write_bytes(b"#?RADIANCE\nFORMAT=32-bit_rle_xyze\n\n-Y 4 +X 4\n" + bytes(64))
    assert _reason(tmp_path / "xyze.hdr") == "unsupported-format"
    (tmp_path / "flipped.hdr").write_bytes(b"#?RADIANCE\nFORMAT=32-bit_rle_rgbe\n\n+Y 4 +X 4\n" + bytes(64))
    assert _reason(tmp_path / "flipped.hdr") == "unsupported-format"


@pytest.mark.skipif(os.geteuid() == 0, reason="root reads a chmod 000 file anyway")
def test_unreadable_permissions(tmp_path):
    path = tmp_path / "locked.exr"
    io.write_exr(path, np.ones((4, 4, 3), np.float32))
    path.chmod(0)
    assert _reason(path) == "unreadable"


@pytest.mark.parametrize("suffix", [".exr", ".hdr"])
def test_truncated_pixel_data(tmp_path, suffix):
    """Header intact, pixel data cut: probe works, read_frame says truncated."""
    rgb = np.random.default_rng(2).uniform(0, 4, (64, 80, 3)).astype(np.float32)
    full = tmp_path / f"full{suffix}"
    (io.write_exr if suffix == ".exr" else io.write_hdr)(full, rgb)
    data = full.read_bytes()
    for cut in (len(data) // 3, len(data) - 7):
        path = tmp_path / f"cut{cut}{suffix}"
        path.write_bytes(data[:cut])
        info = io.probe(path)
        assert (info.height, info.width) == (64, 80)
        assert _reason(path) == "truncated"


def _exr_with_data_window(tmp_path, name, x1, y1):
    """A tiny EXR whose header declares a data window (0,0)-(x1,y1): patched in place."""
    path = tmp_path / name
    io.write_exr(path, np.ones((2, 2, 3), np.float32), compression="none")
    data = bytearray(path.read_bytes())
    at = data.index(b"dataWindow\x00box2i\x00") + len(b"dataWindow\x00box2i\x00") + 4
    data[at + 8: at + 16] = np.array([x1, y1], "<i4").tobytes()
    path.write_bytes(bytes(data))
    return path


def test_too_large_refused_before_decoding(tmp_path):
    path = _exr_with_data_window(tmp_path, "huge.exr", 99_999, 99_999)
    info = io.probe(path)
    assert (info.width, info.height) == (100_000, 100_000)
    assert _reason(path) == "too-large"
    assert _reason(path, max_pixels=4) == "too-large"
    big_hdr = tmp_path / "huge.hdr"
    big_hdr.write_bytes(b"#?RADIANCE\nFORMAT=32-bit_rle_rgbe\n\n-Y 100000 +X 100000\n" + bytes(64))
    assert _reason(big_hdr) == "too-large"


def test_probe_does_not_decode(tmp_path):
    rgb = np.random.default_rng(3).uniform(0, 4, (1365, 2048, 3)).astype(np.float32)
    path = tmp_path / "big.exr"
    io.write_exr(path, rgb, compression="piz")
    io.probe(path)
    t0 = time.perf_counter()
    io.probe(path)
    t_probe = time.perf_counter() - t0
    t0 = time.perf_counter()
    io.read_frame(path)
    t_read = time.perf_counter() - t0
    assert t_probe < t_read / 10


def test_library_errors_never_escape(tmp_path):
    """Cut a valid EXR at many lengths: every outcome is a frame or a BadFrameError."""
    path = tmp_path / "src.exr"
    io.write_exr(path, np.random.default_rng(4).uniform(0, 2, (40, 50, 3)).astype(np.float32))
    data = path.read_bytes()
    reasons = set()
    for cut in np.linspace(1, len(data) - 1, 25).astype(int):
        p = tmp_path / f"c{cut}.exr"
        p.write_bytes(data[:cut])
        try:
            io.read_frame(p)
        except BadFrameError as err:
            reasons.add(err.reason)
    assert reasons <= {"unreadable", "truncated"} and reasons


# --------------------------------------------------------------------------- writers


@pytest.mark.parametrize("compression", ["none", "zip", "piz", "zstd"])
@pytest.mark.parametrize("half", [True, False])
def test_write_exr_round_trip(tmp_path, compression, half):
    if compression not in io._COMPRESSIONS:
        pytest.skip(f"bindings lack {compression}")
    rgb = np.random.default_rng(5).uniform(0, 100, (33, 47, 3)).astype(np.float32)
    path = tmp_path / "rt.exr"
    io.write_exr(path, rgb, half=half, compression=compression)
    out, stats = io.read_frame(path)
    expected = rgb.astype(np.float16).astype(np.float32) if half else rgb
    np.testing.assert_array_equal(out, expected)
    assert stats == io.ReadStats(0, 0, 0)
    assert [p.name for p in tmp_path.iterdir()] == ["rt.exr"]  # no temporary left behind


def test_write_exr_non_contiguous_input(tmp_path):
    """A transposed view (non-contiguous) must be written unscrambled."""
    base = np.random.default_rng(6).uniform(0, 1, (20, 30, 3)).astype(np.float32)
    view = base.transpose(1, 0, 2)
    assert not view.flags.c_contiguous
    io.write_exr(tmp_path / "t.exr", view, half=False)
    np.testing.assert_array_equal(io.read_frame(tmp_path / "t.exr")[0], view)


def test_write_exr_rejects_bad_input(tmp_path):
    with pytest.raises(ValueError, match="float16 range"):
        io.write_exr(tmp_path / "x.exr", np.full((2, 2, 3), 1e6, np.float32))
    io.write_exr(tmp_path / "x.exr", np.full((2, 2, 3), 1e6, np.float32), half=False)
    _, stats = io.read_frame(tmp_path / "x.exr")
    assert stats.above_half_max == 12
    with pytest.raises(ValueError, match="shape"):
        io.write_exr(tmp_path / "y.exr", np.ones((2, 2), np.float32))
    with pytest.raises(ValueError, match="compression"):
        io.write_exr(tmp_path / "y.exr", np.ones((2, 2, 3), np.float32), compression="lzw")


def test_write_hdr_round_trip(tmp_path):
    rgb = np.random.default_rng(8).uniform(0.01, 50, (21, 40, 3)).astype(np.float32)
    io.write_hdr(tmp_path / "rt.hdr", rgb)
    out, _ = io.read_frame(tmp_path / "rt.hdr")
    # RGBE: 8-bit mantissa shared by the pixel's largest channel
    err = np.abs(out - rgb) / rgb.max(axis=-1, keepdims=True)
    assert err.max() < 2 ** -7
    assert [p.name for p in tmp_path.iterdir()] == ["rt.hdr"]
