"""`hdrprep inspect` (hdrprep.summary) on a store built by the pipeline."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest

from hdrprep import build, schema, summary
from hdrprep.config import load_preset
from hdrprep.errors import StoreError

SMOKE = load_preset("smoke")


@pytest.fixture(scope="module")
def built(tmp_path_factory) -> Path:
    from hdrprep import synth

    frames = tmp_path_factory.mktemp("frames")
    synth.write_frames(frames, n=2, height=256, width=384)
    out = tmp_path_factory.mktemp("store") / "s.zarr"
    build.build(frames, out, SMOKE, scheduler="synchronous", progress=False)
    return out


def test_summary_matches_the_index_and_candidates(built):
    s = summary.summarize(built)
    index = pq.read_table(built / schema.INDEX_NAME)
    cand = pq.read_table(built / schema.CANDIDATES_NAME)
    n = index.num_rows
    assert n > 0
    assert s["pairs"] == n and s["format_version"] == schema.FORMAT_VERSION
    assert s["patch_size"] == SMOKE.sampling.patch_size and s["threshold"] == SMOKE.select.threshold
    assert s["shards"] == -(-n // SMOKE.output.pairs_per_shard)
    # per-source counts, computed here from the tables directly
    srcs = index["source"].to_pylist()
    assert [r["source"] for r in s["sources"]] == sorted(set(cand["source"].to_pylist()))
    for r in s["sources"]:
        assert r["pairs"] == srcs.count(r["source"])
        assert r["candidates"] == SMOKE.sampling.patches_per_frame
        assert r["status"] == "ok"
    # distributions: numpy's quantiles of the same columns
    for key, table, column in (("pairs", index, "score"), ("candidates", cand, "score"),
                               ("pairs", index, "saturated_fraction")):
        d = s[column][key]
        values = table[column].to_numpy()
        assert d["count"] == len(values)
        assert d["quantiles"]["0"] == values.min() and d["quantiles"]["1"] == values.max()
        assert d["quantiles"]["0.5"] == pytest.approx(np.median(values), rel=1e-12)
        assert d["mean"] == pytest.approx(values.mean(), rel=1e-12)
    assert s["score"]["pairs"]["quantiles"]["0"] >= SMOKE.select.threshold
    assert n <= s["rendered"] == sum(cand["rendered"].to_pylist())
    assert s["camera"]["curves"] == {"sigmoid": n}
    assert s["camera"]["params"]["curve_gamma"] is None  # not used by the sigmoid camera
    assert s["camera"]["params"]["jpeg_quality"]["quantiles"]["0"] >= SMOKE.camera.jpeg_quality_min
    files = sum(p.stat().st_size for p in (built / "ldr").rglob("*") if p.is_file())
    assert s["bytes"]["ldr"] == files > 0


def test_summary_is_strict_json(built):
    s = summary.summarize(built)
    assert json.loads(json.dumps(s, allow_nan=False)) == s


def test_text_summary_names_every_source_and_fact(built):
    s = summary.summarize(built)
    text = summary.format_summary(s)
    for r in s["sources"]:
        assert r["source"] in text
    assert f"pairs: {s['pairs']} of 128x128" in text
    assert "threshold 0.3" in text and "curve_n" in text and "format version 1" in text


def test_not_a_store_is_refused(tmp_path):
    with pytest.raises(StoreError, match="not an hdrprep store"):
        summary.summarize(tmp_path)


def test_diversity_gini_and_overlaps_are_the_formulas(smoke_store):
    from hdrprep.selection import iou

    assert summary.gini([5, 5, 5]) == 0.0 and summary.gini([0, 0, 9]) == pytest.approx(2 / 3)
    assert summary.gini([1, 3]) == pytest.approx(4 / (2 * 4 * 2))  # |1-3| + |3-1| over 2 n^2 mean
    assert summary.gini([0, 0]) is None
    s = summary.summarize(smoke_store)
    d = s["diversity"]
    index = pq.read_table(smoke_store / schema.INDEX_NAME).to_pylist()
    worst = []
    for r in index:
        others = [(o["row"], o["col"], o["size"], o["size"]) for o in index
                  if o["source"] == r["source"] and o is not r]
        worst.append(iou((r["row"], r["col"], r["size"], r["size"]), others).max() if others else 0.0)
    assert d["pairs_over_iou_half"] == sum(w > 0.5 for w in worst)
    assert d["max_iou"]["mean"] == pytest.approx(np.mean(worst))
    per_frame = [r["pairs"] for r in s["sources"] if r["status"] == "ok"]
    assert d["pairs_per_frame_gini"] == pytest.approx(summary.gini(per_frame))
    assert d["largest_frame_share"] == pytest.approx(max(per_frame) / len(index))
    assert "Gini" in summary.format_summary(s)
