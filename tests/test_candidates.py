"""candidates.score_frame: the prescreen on the deterministic camera changes cost, not the scores of what it renders."""

import dataclasses

import numpy as np
import pytest

from conftest import HDR_DIR
from hdrprep import camera, candidates
from hdrprep.config import Config
from hdrprep.io import read_frame

# a bright daylight frame and a night frame with lamps: many saturated windows, and few
PARAMS = [f.name for f in dataclasses.fields(camera.CameraParams)]
FRAMES = ("forest_slope_1k.hdr", "moonless_golf_1k.hdr")


def _frame(name):
    path = HDR_DIR / name
    if not path.is_file():
        pytest.skip(f"real HDR fixture {path} not found")
    return read_frame(path)[0]


def _config(margin=0.1, **dotted):
    base = {"sampling.patches_per_frame": 24, "sampling.patch_size": 256}
    cfg = Config().override(**{**base, **dotted})
    # override() skips None (unset CLI flags), so switch the prescreen off by hand
    return dataclasses.replace(cfg, metric=dataclasses.replace(cfg.metric, prescreen_margin=margin))


@pytest.mark.parametrize("name", FRAMES)
@pytest.mark.parametrize("exposure_mode", ["frame", "window"])
def test_prescreen_renders_in_full_what_can_pass_and_scores_it_exactly(name, exposure_mode):
    frame = _frame(name)
    full = candidates.score_frame(frame, name, _config(None, **{"camera.exposure_mode": exposure_mode}))
    cfg = _config(0.1, **{"camera.exposure_mode": exposure_mode})
    pre = candidates.score_frame(frame, name, cfg)
    assert all(full["rendered"])
    bar = cfg.select.threshold - 0.1
    rendered = np.array(pre["rendered"])
    score, full_score = np.array(pre["score"]), np.array(full["score"])
    # rendered candidates carry exactly the full camera's score and saturation
    np.testing.assert_array_equal(score[rendered], full_score[rendered])
    np.testing.assert_array_equal(np.array(pre["saturated_fraction"])[rendered],
                                  np.array(full["saturated_fraction"])[rendered])
    # the others are below the bar on their prescore, so selection discards them
    assert np.all(score[~rendered] < bar)
    # same windows and cameras either way
    for column in ("row", "col", "exposure", "noise_seed", "jpeg_quality"):
        assert pre[column] == full[column]


def test_prescreen_skips_some_and_is_off_where_every_score_decides():
    frame = _frame(FRAMES[0])
    assert not all(candidates.score_frame(frame, "f", _config())["rendered"])
    for dotted in ({"select.target_pairs": 5}, {"select.keep_all": True}):
        assert all(candidates.score_frame(frame, "f", _config(**dotted))["rendered"])


def test_on_pair_sees_every_rendered_candidate_with_its_score():
    frame = _frame(FRAMES[0])
    cfg = _config()
    seen = {}

    def on_pair(j, ldr, target, score, sat):
        seen[j] = (ldr.copy(), target.copy(), score, sat)

    cols = candidates.score_frame(frame, "f", cfg, on_pair=on_pair)
    assert sorted(seen) == [j for j, r in enumerate(cols["rendered"]) if r]
    for j, (ldr, target, score, sat) in seen.items():
        assert (score, sat) == (cols["score"][j], cols["saturated_fraction"][j])
        ref = candidates.render_pair(frame, cols["row"][j], cols["col"][j], cfg.sampling.patch_size,
                                camera.CameraParams.from_dict({k: cols[k][j] for k in PARAMS}), cfg)
        np.testing.assert_array_equal(ldr, ref[0])
        np.testing.assert_array_equal(target, ref[1])
