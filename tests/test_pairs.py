"""pairs.score_frame: the prescreen on the deterministic camera changes cost, not the scores of what it renders."""

import dataclasses

import numpy as np
import pytest

from conftest import HDR_DIR
from hdrprep import pairs
from hdrprep.config import Config
from hdrprep.io import read_frame

# a bright daylight frame and a night frame with lamps: many saturated windows, and few
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
    full = pairs.score_frame(frame, name, _config(None, **{"camera.exposure_mode": exposure_mode}))
    cfg = _config(0.1, **{"camera.exposure_mode": exposure_mode})
    pre = pairs.score_frame(frame, name, cfg)
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
    assert not all(pairs.score_frame(frame, "f", _config())["rendered"])
    assert all(pairs.score_frame(frame, "f", _config(**{"select.target_pairs": 5}))["rendered"])
    # keep-all scores nothing in stage 1: the build scores each pair as it writes it
    cols = pairs.score_frame(frame, "f", _config(**{"select.keep_all": True}))
    assert not any(cols["rendered"])
    assert np.isnan(cols["score"]).all() and np.isnan(cols["saturated_fraction"]).all()
