"""`hdrprep evaluate`: baselines by hand, a wrong prediction loses, overlap refusals, the CLI end to end."""

import csv
import json
import math
import sys

import numpy as np
import pytest

from hdrprep import quality
from hdrprep.config import CameraConfig, Config
from hdrprep.errors import ConfigError
from hdrprep.evaluate import AKYUZ_PEAK, akyuz2007, evaluate, evaluation_camera, inverse_curve, saturated_region

FRAMES = ("Desk.exr", "adams_place_bridge_1k.hdr")  # an indoor window and an outdoor sun: both saturate


@pytest.fixture(scope="module")
def small_src(hdr_dir, tmp_path_factory):
    """Two real frames, area-downscaled by 8 (about 80x110 and 64x128), as EXR files in a fresh --src."""
    import cv2

    from hdrprep.io import read_frame, write_exr

    src = tmp_path_factory.mktemp("eval-src")
    for name in FRAMES:
        frame, _ = read_frame(hdr_dir / name)
        small = cv2.resize(frame, (frame.shape[1] // 8, frame.shape[0] // 8), interpolation=cv2.INTER_AREA)
        write_exr(src / (name.split(".")[0] + ".exr"), small, half=False)
    return src


def tiny_checkpoint(path, store_path):
    """An untrained MaskedUNet(width=4, depth=2) saved in the format `hdrprep train` writes."""
    import dataclasses

    torch = pytest.importorskip("torch")
    from hdrprep.config import TrainConfig
    from hdrprep.train.model import MaskedUNet

    cfg = dataclasses.asdict(TrainConfig(width=4, depth=2))
    model = MaskedUNet(width=4, depth=2, seed=cfg["seed"])
    torch.save({"model": model.state_dict(), "config": cfg, "step": 0,
                "data": {"path": str(store_path), "mask_alpha": 0.96, "n_pairs": 0, "patch_size": 64}}, path)
    return path


def fake_store(path, sha256s):
    """The part of a store the overlap check reads: zarr.json's 'hdrprep' attribute with its sources."""
    path.mkdir(parents=True)
    sources = [{"source": f"frame_{i}.exr", "bytes": 1, "sha256": s, "status": "ok"} for i, s in enumerate(sha256s)]
    (path / "zarr.json").write_text(json.dumps({"zarr_format": 3, "node_type": "group",
                                                "attributes": {"hdrprep": {"sources": sources}}}))
    return path


# --------------------------------------------------------------------------- baselines by hand


def test_inverse_curve_inverts_the_mean_sigmoid():
    cam = CameraConfig()  # santos2020: n = 0.9, s = 0.6
    ldr = np.array([[[0, 0, 0], [255, 255, 255]], [[51, 102, 153], [204, 230, 250]]], np.uint8)
    y = ldr / 255.0
    # f(H) = 1.6 H^0.9 / (H^0.9 + 0.6) = y  <=>  H = (0.6 y / (1.6 - y))^(1/0.9)
    np.testing.assert_allclose(inverse_curve(ldr, cam), (0.6 * y / (1.6 - y)) ** (1 / 0.9), rtol=1e-6)
    assert inverse_curve(ldr, cam)[0, 1].tolist() == [1.0, 1.0, 1.0]
    # and the camera's own sigmoid maps it back
    from hdrprep.camera import CameraParams, apply_curve

    params = CameraParams(exposure=1.0, clip_quantile=0.9, curve="sigmoid", curve_n=0.9, curve_sigma=0.6,
                          curve_gamma=None, curve_index=None, noise_sigma=0.0, noise_seed=0, hue_shift=0.0,
                          sat_shift=0.0, jpeg_quality=0)
    np.testing.assert_allclose(apply_curve(inverse_curve(ldr, cam), params), y, atol=1e-6)
    with pytest.raises(ConfigError, match="table"):
        inverse_curve(ldr, CameraConfig(curve="table", table_path="x.txt"))


def test_akyuz2007_by_hand():
    ldr = np.array([[[255, 255, 255], [0, 0, 0]], [[128, 128, 128], [200, 100, 50]]], np.uint8)
    out = akyuz2007(ldr)
    # grey: Y = (v/255)^2.2, Y_min = 0, Y_max = 1 -> L = 3000 Y, and each channel is Y * L / Y = L
    np.testing.assert_allclose(out[0, 0], [3000.0] * 3)
    np.testing.assert_allclose(out[0, 1], [0.0] * 3)
    np.testing.assert_allclose(out[1, 0], [3000 * (128 / 255) ** 2.2] * 3)
    # colour: each linear channel times L / Y = 3000 (Y_min = 0, Y_max = 1, gamma = 1)
    np.testing.assert_allclose(out[1, 1], 3000 * (np.array([200, 100, 50]) / 255) ** 2.2)
    assert AKYUZ_PEAK == 3000.0
    assert not akyuz2007(np.full((2, 2, 3), 77, np.uint8)).any()  # one luminance: 0/0 -> black


def test_saturated_region_is_where_the_soft_mask_drops_below_one():
    # alpha 0.96: M < 1 iff LDR/255 > 0.96, i.e. from level 245 on, in any channel
    ldr = np.array([[[244, 244, 244], [245, 0, 0]], [[0, 0, 255], [10, 20, 30]]], np.uint8)
    assert saturated_region(ldr, 0.96).tolist() == [[False, True], [True, False]]


# --------------------------------------------------------------------------- a wrong prediction loses


def test_wrong_predictions_score_worse_than_the_inverse_curve(small_src):
    from hdrprep.io import read_frame

    cfg = Config()
    for path in sorted(small_src.iterdir()):
        frame, _ = read_frame(path)
        ldr, target, _ = evaluation_camera(frame, path.name, 0, cfg)
        region = saturated_region(ldr, cfg.camera.mask_alpha)
        assert region.any(), path.name
        ref_max = float(target.max())
        ref = quality.to_display(target, ref_max)

        def score(pred, ref_max=ref_max, ref=ref, region=region):
            return quality.all_metrics(quality.to_display(pred, ref_max), ref, region)

        base = score(inverse_curve(ldr, cfg.camera))
        rng = np.random.default_rng(1)
        for wrong in (ldr / np.float32(255) * 0.1, rng.random(target.shape, np.float32)):
            bad = score(wrong)
            for name, higher_better in quality.METRICS.items():
                for key in (name, name + "_sat"):
                    assert (bad[key] < base[key]) if higher_better else (bad[key] > base[key]), (path.name, key)


# --------------------------------------------------------------------------- overlap refusal


def test_a_test_frame_in_the_training_store_is_refused(small_src, tmp_path):
    from hdrprep.files import file_sha256

    sha = file_sha256(small_src / "Desk.exr")[1]
    store = fake_store(tmp_path / "train.zarr", ["0" * 64, sha])
    out = tmp_path / "report"
    with pytest.raises(ConfigError, match=r"test frame Desk\.exr .*train\.zarr.*never overlap"):
        evaluate(small_src, out, baselines=("inverse-curve",), store=store, cvvdp=False)
    assert not out.exists()  # refused before any work
    # the same store, found through the checkpoint's data.path alone
    ckpt = tiny_checkpoint(tmp_path / "model.pt", store)
    with pytest.raises(ConfigError, match=r"Desk\.exr .*checkpoint's training store"):
        evaluate(small_src, out, checkpoint=ckpt, cvvdp=False)
    assert not out.exists()
    with pytest.raises(ConfigError, match="not an hdrprep store"):
        evaluate(small_src, out, baselines=("inverse-curve",), store=tmp_path, cvvdp=False)
    # a store without the test frames passes
    clean = fake_store(tmp_path / "clean.zarr", ["1" * 64])
    s = evaluate(small_src, out, baselines=("inverse-curve",), store=clean, cvvdp=False)
    assert s["overlap_check"]["checked"] == [{"store": str(clean), "how": "--store", "sources": 1}]


def test_manifest_test_split_and_missing_cvvdp(small_src, tmp_path, monkeypatch):
    import yaml

    manifest = tmp_path / "m.yaml"
    manifest.write_text(yaml.safe_dump({"version": 1, "datasets": [{
        "name": "fx", "licence": "CC0-1.0", "path": small_src.name, "patterns": ["*.exr"],
        "test": {"files": ["Desk.exr"]}}]}))
    monkeypatch.setitem(sys.modules, "pycvvdp", None)  # import fails as where the extra is not installed
    notes = []
    s = evaluate(small_src.parent, tmp_path / "r", manifest=manifest, baselines=("akyuz2007",), echo=notes.append)
    key = f"{small_src.name}/Desk.exr"  # keys are relative to --src, the manifest's dataset folder included
    assert [i["image"] for i in s["images"]] == [key]
    assert len(notes) == 1 and notes[0].startswith("ColorVideoVDP not computed: cannot import pycvvdp")
    assert s["cvvdp"]["computed"] is False and s["methods"]["akyuz2007"]["cvvdp_jod"]["n"] == 0
    with open(tmp_path / "r" / "metrics.csv") as f:
        rows = list(csv.DictReader(f))
    assert [(r["image"], r["method"], r["cvvdp_jod"]) for r in rows] == [(key, "akyuz2007", "")]
    assert (tmp_path / "r" / "images" / f"{small_src.name}__Desk.exr.png").is_file()


# --------------------------------------------------------------------------- the CLI end to end


def test_cli_evaluate_end_to_end(small_src, tmp_path):
    pytest.importorskip("torch")
    from click.testing import CliRunner

    from hdrprep.cli import main

    ckpt = tiny_checkpoint(tmp_path / "model.pt", tmp_path / "gone.zarr")
    out = tmp_path / "report"
    args = ["evaluate", "--checkpoint", str(ckpt), "--src", str(small_src), "--out", str(out), "--seed", "3",
            "--device", "cpu", "--no-cvvdp", "--quiet"]
    res = CliRunner().invoke(main, args)
    assert res.exit_code == 0, res.output
    for method in ("model", "inverse-curve", "akyuz2007"):
        assert method in res.output
    assert "gone.zarr is not here" in res.output  # the checkpoint's store is missing: said, not checked

    with open(out / "metrics.csv") as f:
        rows = list(csv.DictReader(f))
    assert [(r["image"], r["method"]) for r in rows] == [
        (img, m) for img in ("Desk.exr", "adams_place_bridge_1k.exr") for m in ("model", "inverse-curve", "akyuz2007")]
    for r in rows:
        for c in ("gamma_mse", "gamma_mse_sat", "mulaw_psnr", "mulaw_psnr_sat", "pu21_psnr", "pu21_psnr_sat"):
            assert math.isfinite(float(r[c])), (r["image"], r["method"], c)
        assert r["curve"] == "sigmoid" and float(r["exposure"]) > 0 and float(r["saturated_fraction"]) > 0

    summary = json.loads((out / "summary.json").read_text())
    assert summary["seed"] == 3 and summary["display_model"]["peak_cd_m2"] == 4000.0
    assert summary["camera"]["preset"] == "santos2020" and summary["camera"]["mask_alpha"] == 0.96
    assert summary["checkpoint"]["depth"] == 2 and summary["overlap_check"]["not_checked"]
    assert set(summary["methods"]) == {"model", "inverse-curve", "akyuz2007"}
    stats = summary["methods"]["inverse-curve"]["pu21_psnr"]
    vals = [float(r["pu21_psnr"]) for r in rows if r["method"] == "inverse-curve"]
    assert stats["n"] == 2 and stats["mean"] == pytest.approx(np.mean(vals))
    assert stats["median"] == pytest.approx(np.median(vals))

    # the recorded camera is the seeded evaluation camera of the whole frame
    from hdrprep.io import read_frame

    frame, _ = read_frame(small_src / "Desk.exr")
    ldr, _, params = evaluation_camera(frame, "Desk.exr", 3, Config())
    image = next(i for i in summary["images"] if i["image"] == "Desk.exr")
    assert image["camera"] == params.to_dict() and (image["height"], image["width"]) == ldr.shape[:2]

    import cv2

    png = cv2.imread(str(out / image["png"]))
    assert png.shape[0] == ldr.shape[0] + 18 and png.shape[1] == 5 * ldr.shape[1] + 4 * 4  # 5 panels

    # nothing to evaluate
    res = CliRunner().invoke(main, ["evaluate", "--src", str(small_src), "--out", str(out)])
    assert res.exit_code == 2 and "--checkpoint" in res.output


def test_frames_a_real_store_was_built_from_are_refused(smoke_frames, smoke_store, tmp_path):
    from click.testing import CliRunner

    from hdrprep.cli import main

    out = tmp_path / "report"
    res = CliRunner().invoke(main, ["evaluate", "--src", str(smoke_frames), "--out", str(out), "--store",
                                    str(smoke_store), "--baseline", "inverse-curve", "--quiet"])
    assert res.exit_code == 2
    assert "test frame synth_000.exr is a training source of the store" in res.output and str(smoke_store) in res.output
    assert not out.exists()


def test_cvvdp_where_installed():
    """ColorVideoVDP through the evaluation's wrapper: 10 JOD for identical images, less for a blurred one.

    Skips where the 'eval' extra (pycvvdp) is not installed, as in the default test environment.
    """
    pytest.importorskip("pycvvdp")
    from hdrprep.evaluate import _Cvvdp

    vdp = _Cvvdp(4000.0, "cpu")
    assert vdp.error is None
    yy, xx = np.mgrid[0:128, 0:160]
    ref = 50 + 1000 * np.exp(-((yy - 64) ** 2 + (xx - 80) ** 2) / 400.0) + 20 * np.sin(xx / 3.0)
    ref = np.repeat(ref[..., None], 3, axis=2)
    blur = sum(np.roll(ref, k, axis=1) for k in (-2, -1, 0, 1, 2)) / 5
    assert vdp(ref, ref) == pytest.approx(10.0, abs=1e-3)
    assert vdp(blur, ref) < 9.9
