"""`hdrprep preview` (hdrprep.preview) on a store built by the pipeline: the sheets show the right pixels."""

from __future__ import annotations

import sys
from pathlib import Path

import cv2
import numpy as np
import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest
import zarr

from hdrprep import preview, schema
from hdrprep.config import load_preset
from hdrprep.errors import ConfigError, HdrprepError

SMOKE = load_preset("smoke")
THUMB = 64


def _read(path: Path) -> np.ndarray:
    img = cv2.imread(str(path), cv2.IMREAD_COLOR)
    assert img is not None, f"{path} is not a readable image"
    return img[..., ::-1]


def _tile_ldr(sheet: np.ndarray, k: int, cols: int) -> np.ndarray:
    """The LDR thumbnail of tile k of a contact sheet (layout of preview.contact_sheet)."""
    tile_w, tile_h, label_h = 3 * THUMB + 8, THUMB + 16 + 8, 16
    y, x = (k // cols) * tile_h + label_h, (k % cols) * tile_w
    return sheet[y:y + THUMB, x:x + THUMB]


def _thumb(ldr: np.ndarray) -> np.ndarray:
    return cv2.resize(ldr, (THUMB, THUMB), interpolation=cv2.INTER_AREA)


def test_contact_sheet_shows_the_best_pairs_in_order(smoke_store, tmp_path):
    group = zarr.open_group(str(smoke_store), mode="r")
    index = pq.read_table(smoke_store / schema.INDEX_NAME)
    order = np.argsort(-index["score"].to_numpy(), kind="stable")
    out = preview.contact_sheet(smoke_store, tmp_path / "s.png", n=6, thumb=THUMB, sort="score")
    sheet = _read(out)
    assert sheet.shape == (2 * (THUMB + 24), 4 * (3 * THUMB + 8), 3)
    for k in range(6):
        np.testing.assert_array_equal(_tile_ldr(sheet, k, 4), _thumb(group["ldr"][int(order[k])]))


def test_default_contact_sheet_spreads_across_frames(smoke_store, tmp_path):
    """Best pair of each frame first (frames by their best score), then each frame's second best, ..."""
    group = zarr.open_group(str(smoke_store), mode="r")
    index = pq.read_table(smoke_store / schema.INDEX_NAME)
    score, source = index["score"].to_numpy(), index["source"].to_pylist()
    ranked = {}
    for i in np.argsort(-score, kind="stable").tolist():
        ranked.setdefault(source[i], []).append(i)
    expect = [ranked[f][r] for r in range(max(map(len, ranked.values()))) for f in ranked if r < len(ranked[f])]
    assert len(ranked) == 2 and len({source[i] for i in expect[:2]}) == 2
    sheet = _read(preview.contact_sheet(smoke_store, tmp_path / "s.png", n=6, thumb=THUMB))
    for k in range(6):
        np.testing.assert_array_equal(_tile_ldr(sheet, k, 4), _thumb(group["ldr"][expect[k]]))


def test_contact_sheet_source_filter(smoke_store, tmp_path):
    group = zarr.open_group(str(smoke_store), mode="r")
    index = pq.read_table(smoke_store / schema.INDEX_NAME)
    key = index["source"][0].as_py()
    mine = np.flatnonzero(np.array(index["source"].to_pylist()) == key)
    sheet = _read(preview.contact_sheet(smoke_store, tmp_path / "s.png", n=64, sort="random", thumb=THUMB,
                                        source=key))
    cols = min(4, len(mine))
    assert sheet.shape[0] == -(-len(mine) // cols) * (THUMB + 24)
    for k, i in enumerate(mine):  # random sort shows the sample in pair order
        np.testing.assert_array_equal(_tile_ldr(sheet, k, cols), _thumb(group["ldr"][int(i)]))
    # a glob names the same frame
    again = _read(preview.contact_sheet(smoke_store, tmp_path / "g.png", n=64, sort="random", thumb=THUMB,
                                        source="*" + key[-7:]))
    np.testing.assert_array_equal(again, sheet)


def test_contact_sheet_bad_arguments(smoke_store, tmp_path):
    with pytest.raises(ConfigError, match="matches none of the 2 frames with pairs: synth_000.exr, synth_001.exr"):
        preview.contact_sheet(smoke_store, tmp_path / "s.png", source="nope.exr")
    with pytest.raises(ConfigError, match="choose 'spread', 'score' or 'random'"):
        preview.contact_sheet(smoke_store, tmp_path / "s.png", sort="best")
    assert not (tmp_path / "s.png").exists()


def test_candidates_sheet_draws_windows_and_renders_candidates(smoke_store, smoke_frames, tmp_path):
    cand = pq.read_table(smoke_store / schema.CANDIDATES_NAME)
    key = cand["source"][0].as_py()
    rows = cand.filter(pc.equal(cand["source"], key)).to_pylist()
    sheet = _read(preview.candidates_sheet(smoke_store, smoke_frames, key, tmp_path / "c.png", thumb=THUMB))
    header, label_h, title_h = 22, 14, 24
    frame_region = sheet[header:header + 256, :384]
    kept = [r for r in rows if r["kept"]]
    discarded = [r for r in rows if not r["kept"]]
    assert kept, "the smoke build should keep candidates of every synthetic frame"

    def count(colour):
        return int(np.all(frame_region == np.array(colour, np.uint8), axis=-1).sum())

    assert count(preview._KEPT) > 4 * 128 * len(kept) // 2  # at least half of each green outline
    assert (count(preview._DISCARDED) > 0) == bool(discarded)
    # the first kept thumbnail is the re-render of the best kept candidate: it equals the stored pair
    best = max(kept, key=lambda r: r["score"])
    index = pq.read_table(smoke_store / schema.INDEX_NAME)
    pair = index.filter(pc.and_(pc.equal(index["source"], key),
                                pc.equal(index["candidate"], best["candidate"])))["pair"][0].as_py()
    ldr = zarr.open_group(str(smoke_store), mode="r")["ldr"][pair]
    y, x = header + title_h + label_h, 384 + 8
    inner = sheet[y + 2:y + THUMB - 2, x + 2:x + THUMB - 2]  # inside the 2-pixel coloured border
    np.testing.assert_array_equal(inner, _thumb(ldr)[2:-2, 2:-2])


def test_candidates_sheet_needs_one_frame(smoke_store, smoke_frames, tmp_path):
    with pytest.raises(ConfigError, match="names 2 frames"):
        preview.candidates_sheet(smoke_store, smoke_frames, "*.exr", tmp_path / "c.png")


def test_plots_are_written(smoke_store, tmp_path):
    paths = preview.plots(smoke_store, tmp_path / "plots")
    assert [p.name for p in paths] == ["scores.png", "saturation.png", "curves.png"]
    shapes = [_read(p).shape for p in paths]
    assert shapes == [(400, 700, 3), (400, 700, 3), (500, 600, 3)]
    for p in paths:
        assert _read(p).std() > 10  # not a blank canvas


def test_plots_without_matplotlib_say_how_to_install_it(smoke_store, tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "matplotlib.figure", None)  # makes the import fail
    with pytest.raises(HdrprepError, match=r"pip install 'hdrprep\[plots\]'"):
        preview.plots(smoke_store, tmp_path / "plots")
