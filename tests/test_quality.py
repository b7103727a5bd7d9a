"""The evaluation metrics (hdrprep.quality): hand-computed values on 2x2 images, PU21 against cited values."""

import math

import numpy as np
import pytest

from hdrprep import quality
from hdrprep.quality import all_metrics, gamma_mse, mulaw_psnr, pu21_encode, pu21_psnr, to_display


def grey(values) -> np.ndarray:
    """(2, 2, 3) image with the same value in all channels."""
    return np.repeat(np.asarray(values, np.float64)[..., None], 3, axis=2)


# --------------------------------------------------------------------------- display model


def test_to_display_maps_the_reference_max_to_the_peak_and_clips():
    img = grey([[2.0, 1.0], [-0.5, 8.0]])
    out = to_display(img, ref_max=4.0, peak=4000.0)
    # x * 4000 / 4, clipped to [0, 4000]
    np.testing.assert_allclose(out[..., 0], [[2000.0, 1000.0], [0.0, 4000.0]])
    with pytest.raises(ValueError, match="reference's maximum"):
        to_display(img, ref_max=0.0)


# --------------------------------------------------------------------------- gamma MSE (Santos 2020, Sec. 5.1)


def test_gamma_mse_by_hand():
    peak = 4000.0
    ref = grey([[peak, 0.0], [0.0, 0.0]])
    # one pixel of four differs by 1 after (x / peak)^(1/2.2) in all three channels: MSE = 1/4
    assert gamma_mse(np.zeros_like(ref), ref, peak=peak) == pytest.approx(0.25)
    # (0.5^2.2 * peak / peak)^(1/2.2) = 0.5: a difference of 0.5 on one pixel of four -> 0.25 / 4
    pred = grey([[0.5 ** 2.2 * peak, 0.0], [0.0, 0.0]])
    assert gamma_mse(pred, ref, peak=peak) == pytest.approx(0.0625)
    # on the region of the first pixel alone: 0.5^2 = 0.25
    region = np.array([[True, False], [False, False]])
    assert gamma_mse(pred, ref, region, peak=peak) == pytest.approx(0.25)
    assert gamma_mse(ref, ref, peak=peak) == 0.0


# --------------------------------------------------------------------------- mu-law PSNR


def test_mulaw_psnr_by_hand():
    peak, mu = 4000.0, 5000.0
    ref = grey([[peak, 0.0], [0.0, 0.0]])
    # T(1) = 1, T(0) = 0: MSE = 1/4 -> 10 log10(4)
    assert mulaw_psnr(np.zeros_like(ref), ref, peak=peak) == pytest.approx(10 * math.log10(4))
    # T(v) = 0.5 for v = (sqrt(1 + mu) - 1) / mu: MSE = 0.25 / 4 -> 10 log10(16)
    v = (math.sqrt(1 + mu) - 1) / mu
    pred = grey([[v * peak, 0.0], [0.0, 0.0]])
    assert mulaw_psnr(pred, ref, peak=peak) == pytest.approx(10 * math.log10(16))
    assert mulaw_psnr(ref, ref, peak=peak) == math.inf
    assert math.isnan(mulaw_psnr(pred, ref, np.zeros((2, 2), bool), peak=peak))


def test_mulaw_psnr_matches_the_trainers_torch_metric():
    torch = pytest.importorskip("torch")
    from hdrprep.train.metrics import psnr_mulaw

    rng = np.random.default_rng(0)
    ref = rng.gamma(0.5, 2.0, (16, 12, 3))
    pred = np.clip(ref + rng.normal(0, 0.5, ref.shape), 0, None)
    ref_max = ref.max()
    ours = mulaw_psnr(to_display(pred, ref_max), to_display(ref, ref_max))
    theirs = psnr_mulaw(torch.from_numpy(pred).permute(2, 0, 1)[None], torch.from_numpy(ref).permute(2, 0, 1)[None])
    assert ours == pytest.approx(float(theirs[0]), abs=1e-9)


# --------------------------------------------------------------------------- PU21

# PU21 of 0.005 and 10000 cd/m^2 (the ends of its range) per variant, as tabulated (p_min, p_max) by
# VQEG/siti-tools (siti_tools/siti.py, the PU21 OETF) and FFmpeg's libavfilter/vf_siti.c (oetf_pu21);
# the parameters themselves are those of gfxdisp/pu21 matlab/pu21_encoder.m.
CITED_ENDS = {
    "banding": (-1.5580e-07, 520.4673),
    "banding_glare": (5.4705e-10, 595.3939),
    "peaks": (1.3674e-07, 380.9853),
    "peaks_glare": (-9.7360e-08, 407.5066),
}


@pytest.mark.parametrize("kind", sorted(CITED_ENDS))
def test_pu21_matches_cited_values_at_both_ends(kind):
    lo, hi = CITED_ENDS[kind]
    v = pu21_encode(np.array([0.005, 10000.0]), kind)
    assert v[0] == pytest.approx(lo, rel=1e-3, abs=1e-12)
    assert v[1] == pytest.approx(hi, abs=1e-4)
    # clamped outside [0.005, 10000]
    np.testing.assert_array_equal(pu21_encode(np.array([0.0, 1e6]), kind), v)


def test_pu21_banding_glare_is_the_default_and_100_nits_is_about_256():
    # gfxdisp/pu21 pytorch/pu21_metric.py: PU values are "in the range 0-256 for the luminance range 0.1 to
    # 100 cd/m^2", which is why pu21_metric computes psnr(P_test, P_ref, 256)
    assert pu21_encode(np.array(100.0)) == pytest.approx(256.0, abs=0.5)
    assert pu21_encode(np.array(100.0)) == pu21_encode(np.array(100.0), "banding_glare")
    assert np.all(np.diff(pu21_encode(np.geomspace(0.005, 10000, 200))) > 0)
    with pytest.raises(ValueError, match="unknown PU21 variant"):
        pu21_encode(np.array(1.0), "glare")


def test_pu21_psnr_by_hand():
    ref = grey([[10000.0, 0.005], [0.005, 0.005]])
    pred = grey([[0.005, 0.005], [0.005, 0.005]])
    # one pixel of four differs by PU21(10000) - PU21(0.005) = 595.3939 - 5.4705e-10 (cited) in every channel:
    # MSE = d^2 / 4 -> 10 log10(256^2 / (d^2 / 4)) = 20 log10(512 / d)
    d = 595.3939 - 5.4705e-10
    assert pu21_psnr(pred, ref) == pytest.approx(20 * math.log10(512 / d), abs=1e-4)
    # values below 0.005 are clamped: a black prediction scores the same
    assert pu21_psnr(np.zeros_like(pred), ref) == pytest.approx(20 * math.log10(512 / d), abs=1e-4)
    # on the differing pixel alone: MSE = d^2 -> 20 log10(256 / d)
    region = np.array([[True, False], [False, False]])
    assert pu21_psnr(pred, ref, region) == pytest.approx(20 * math.log10(256 / d), abs=1e-4)


def test_all_metrics_whole_and_saturated():
    ref = grey([[4000.0, 10.0], [20.0, 30.0]])
    pred = grey([[1000.0, 10.0], [20.0, 30.0]])
    region = np.array([[True, False], [False, False]])
    m = all_metrics(pred, ref, region)
    assert set(m) == {"gamma_mse", "gamma_mse_sat", "mulaw_psnr", "mulaw_psnr_sat", "pu21_psnr", "pu21_psnr_sat"}
    assert set(quality.METRICS) == {"gamma_mse", "mulaw_psnr", "pu21_psnr"}
    # the whole-image error is the region's error spread over 4 pixels
    assert m["gamma_mse"] == pytest.approx(m["gamma_mse_sat"] / 4)
    assert m["pu21_psnr"] == pytest.approx(m["pu21_psnr_sat"] + 10 * math.log10(4))
    empty = all_metrics(pred, ref, np.zeros((2, 2), bool))
    assert math.isnan(empty["gamma_mse_sat"]) and math.isnan(empty["pu21_psnr_sat"])
