"""Selection of candidates (hdrprep.selection.select) against a plain-Python reference."""

import numpy as np
import pyarrow as pa
import pytest

from hdrprep.config import SelectConfig
from hdrprep.selection import select


def reference(score, saturated, frame, index, cfg):
    """The rules written out one candidate at a time."""
    n = len(score)
    if cfg.keep_all:
        return np.ones(n, bool)
    eligible = [i for i in range(n) if saturated[i] > cfg.min_saturated_fraction and score[i] >= cfg.threshold]
    if cfg.per_frame_cap is None and cfg.target_pairs is None:
        return np.isin(np.arange(n), eligible)
    best_first = sorted(eligible, key=lambda i: (-score[i], frame[i], index[i]))
    if cfg.per_frame_cap is not None:
        taken = {}
        capped = []
        for i in best_first:
            if taken.get(frame[i], 0) < cfg.per_frame_cap:
                taken[frame[i]] = taken.get(frame[i], 0) + 1
                capped.append(i)
        best_first = capped
    if cfg.target_pairs is not None:
        best_first = best_first[:cfg.target_pairs]
    return np.isin(np.arange(n), best_first)


def candidates(seed, n=600, frames=17):
    rng = np.random.default_rng(seed)
    frame = np.array([f"frame_{k:03d}.exr" for k in rng.integers(0, frames, n)])
    index = rng.integers(0, 250, n)
    score = np.round(rng.gamma(2.0, 0.5, n), 2)  # rounded: many exact ties
    saturated = np.where(rng.random(n) < 0.3, 0.0, rng.random(n) * 0.2)
    return score, saturated, frame, index


def paper(**kw) -> SelectConfig:
    """The paper's rule (any saturated pixel, score >= threshold) and the count rules, without ours."""
    return SelectConfig(**{"min_saturated_fraction": 0.0, "max_overlap": None, **kw})


CONFIGS = [
    paper(),
    paper(threshold=0.5, min_saturated_fraction=0.05),
    paper(threshold=0.0, target_pairs=100),
    paper(target_pairs=40, per_frame_cap=3),
    paper(per_frame_cap=2),
    paper(threshold=0.0, target_pairs=10_000),
    paper(keep_all=True),
]


@pytest.mark.parametrize("cfg", CONFIGS, ids=range(len(CONFIGS)))
@pytest.mark.parametrize("seed", [0, 1])
def test_matches_reference(cfg, seed):
    score, saturated, frame, index = candidates(seed)
    keep = select(score, saturated, frame, index, cfg)
    assert keep.dtype == bool and keep.shape == score.shape
    assert np.array_equal(keep, reference(score, saturated, frame, index, cfg))


def test_default_rules():
    """The paper's rule: at least one saturated pixel and score >= 0.85 (>= is inclusive); santos2020's defaults
    add at least 1 % saturated pixels and no two windows of a frame overlapping by IoU > 0.5."""
    score = np.array([0.85, 0.85, 0.8499, 2.0, 3.0])
    saturated = np.array([0.01, 0.0, 0.5, 1e-6, 0.0])
    keep = select(score, saturated, np.zeros(5, int), np.arange(5), paper())
    assert keep.tolist() == [True, False, False, True, False]
    boxes = np.array([[0, 0, 8, 8], [0, 0, 8, 8], [0, 0, 8, 8], [0, 0, 8, 8], [100, 0, 8, 8]])
    saturated = np.array([0.02, 0.02, 0.5, 0.005, 0.3])
    keep = select(np.array([0.9, 1.0, 0.8, 2.0, 3.0]), saturated, np.zeros(5, int), np.arange(5), boxes=boxes)
    assert keep.tolist() == [False, True, False, False, True]  # 0 duplicates 1; 3 has only 0.5 % saturated
    from hdrprep.config import load_preset

    assert load_preset("santos2020").select == SelectConfig()


def test_ties_are_deterministic_and_order_independent():
    """Equal scores: the lower frame key, then the lower index wins, whatever the row order."""
    score = np.full(6, 1.0)
    saturated = np.full(6, 0.1)
    frame = np.array(["b", "a", "b", "a", "c", "a"])
    index = np.array([0, 5, 1, 2, 0, 9])
    cfg = paper(target_pairs=3)
    keep = select(score, saturated, frame, index, cfg)
    assert sorted(zip(frame[keep], index[keep])) == [("a", 2), ("a", 5), ("a", 9)]
    perm = np.random.default_rng(0).permutation(6)
    keep_perm = select(score[perm], saturated[perm], frame[perm], index[perm], cfg)
    assert sorted(zip(frame[perm][keep_perm], index[perm][keep_perm])) == [("a", 2), ("a", 5), ("a", 9)]


def test_per_frame_cap_spreads_the_pairs():
    score = np.array([9.0, 8.0, 7.0, 6.0, 1.0, 0.9])
    frame = np.array(["bright"] * 4 + ["dim"] * 2)
    keep = select(score, np.full(6, 0.2), frame, np.arange(6), paper(threshold=0.0, target_pairs=4,
                                                                           per_frame_cap=2))
    assert keep.tolist() == [True, True, False, False, True, True]


def test_pyarrow_columns_and_integer_frames():
    score, saturated, frame, index = candidates(3, n=200)
    table = pa.table({"score": score, "sat": saturated, "frame": frame, "index": index})
    cfg = paper(target_pairs=25, per_frame_cap=4)
    keep = select(table["score"], table["sat"], table["frame"], table["index"], cfg)
    assert np.array_equal(keep, select(score, saturated, frame, index, cfg))
    codes = np.unique(frame, return_inverse=True)[1]  # same order as the strings
    assert np.array_equal(select(score, saturated, codes, index, cfg), keep)


def test_empty_and_bad_inputs():
    assert select(np.array([]), np.array([]), np.array([], str), np.array([], int),
                  paper(target_pairs=5, per_frame_cap=1)).shape == (0,)
    with pytest.raises(ValueError, match="length 3"):
        select(np.ones(3), np.ones(2), np.zeros(3), np.arange(3))
    with pytest.raises(ValueError, match="NaN"):
        select(np.array([1.0, np.nan]), np.ones(2), np.zeros(2), np.arange(2))


def test_prescored_candidates_are_never_kept_and_the_bar_follows_the_rule():
    from hdrprep.config import MetricConfig
    from hdrprep.selection import decided_per_frame, eligible, prescreen_bar

    score, saturated, frame, index = candidates(3)
    rendered = np.random.default_rng(3).random(len(score)) < 0.7
    for cfg in (paper(threshold=0.8), paper(threshold=0.5, per_frame_cap=2)):
        keep = select(score, saturated, frame, index, cfg, rendered)
        assert not keep[~rendered].any()
        assert np.array_equal(keep, select(score, saturated, frame, index, cfg) & rendered) \
            if cfg.per_frame_cap is None else keep.sum() <= select(score, saturated, frame, index, cfg).sum()
    assert select(score, saturated, frame, index, paper(keep_all=True), rendered).all()
    # the bar: below threshold - margin nothing is eligible, so skipping the full camera loses no pair
    metric = MetricConfig(prescreen_margin=0.1)
    bar = prescreen_bar(SelectConfig(threshold=0.85), metric)
    assert bar == pytest.approx(0.75) and not eligible(np.nextafter(bar, 0), 1.0, SelectConfig(threshold=0.85))
    assert prescreen_bar(SelectConfig(target_pairs=10), metric) is None  # ranking needs every real score
    assert prescreen_bar(SelectConfig(keep_all=True), metric) is None
    assert prescreen_bar(SelectConfig(), MetricConfig(prescreen_margin=None)) is None
    assert decided_per_frame(SelectConfig()) and decided_per_frame(SelectConfig(keep_all=True))
    assert decided_per_frame(SelectConfig(per_frame_cap=3))  # a per-frame rule: the frame alone decides
    assert not decided_per_frame(SelectConfig(target_pairs=3))


def _iou_reference(a, b):
    """Intersection over union of two windows (row, col, height, width), one pixel at a time."""
    pa = {(y, x) for y in range(a[0], a[0] + a[2]) for x in range(a[1], a[1] + a[3])}
    pb = {(y, x) for y in range(b[0], b[0] + b[2]) for x in range(b[1], b[1] + b[3])}
    return len(pa & pb) / len(pa | pb)


def test_iou_is_the_pixel_count_ratio():
    from hdrprep.selection import iou

    rng = np.random.default_rng(5)
    boxes = np.concatenate([rng.integers(0, 20, (30, 2)), rng.integers(1, 12, (30, 2))], axis=1)
    for a in boxes[:6]:
        assert iou(a, boxes) == pytest.approx([_iou_reference(a, b) for b in boxes], abs=1e-12)


def test_max_overlap_is_greedy_suppression_per_frame():
    """Best first within each frame, a window overlapping a kept one by IoU > max_overlap is dropped."""
    score, saturated, frame, index = candidates(9, n=300, frames=5)
    rng = np.random.default_rng(9)
    boxes = np.concatenate([rng.integers(0, 40, (300, 2)), np.full((300, 2), 16)], axis=1)
    for limit, cap in ((0.5, None), (0.2, None), (0.5, 3)):
        cfg = paper(threshold=0.5, max_overlap=limit, per_frame_cap=cap)
        keep = select(score, saturated, frame, index, cfg, boxes=boxes)
        # the reference: eligible candidates best first, suppression, then the cap
        ok = [i for i in range(300) if saturated[i] > 0 and score[i] >= 0.5]
        kept: dict = {}
        for i in sorted(ok, key=lambda i: (-score[i], frame[i], index[i])):
            mine = kept.setdefault(frame[i], [])
            if all(_iou_reference(boxes[i], boxes[j]) <= limit for j in mine):
                mine.append(i)
        expect = [i for f in kept for i in (kept[f] if cap is None else kept[f][:cap])]
        assert np.array_equal(np.flatnonzero(keep), np.sort(expect))
        for f in set(frame):  # the goal: no two kept windows of a frame overlap by more than the limit
            mine = np.flatnonzero(keep & (frame == f))
            assert all(_iou_reference(boxes[a], boxes[b]) <= limit for a in mine for b in mine if a < b)
    with pytest.raises(ValueError, match="boxes"):
        select(score, saturated, frame, index, SelectConfig(max_overlap=0.5))
