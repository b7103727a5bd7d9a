"""The training loop end to end on a tiny store: overfit, resume, checkpoints, previews, predict."""

import json

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytestmark = pytest.mark.torch

from test_train_store import make_tiny_store, one_torch_thread  # noqa: E402,F401

TINY = dict(width=8, depth=3, num_workers=0, progress=False)


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    path = tmp_path_factory.mktemp("store") / "s.zarr"
    make_tiny_store(path, n=12, size=64)  # 4 source frames x 3 pairs
    return path


def read_log(run, kind):
    return [r for r in map(json.loads, (run / "log.jsonl").read_text().splitlines()) if r["kind"] == kind]


@pytest.mark.slow
def test_tiny_model_overfits_a_few_pairs(tmp_path):
    """Four fixed pairs, no flips, lr 2e-3: the loss of steps 56-60 is below a third of steps 1-5."""
    from hdrprep.train.loop import train

    make_tiny_store(tmp_path / "s.zarr", n=4, size=64)
    train(tmp_path / "s.zarr", tmp_path / "run", no_perceptual=True, max_steps=60, val_fraction=0.0,
          log_every=1, lr=2e-3, flips="none", **TINY)
    loss = [r["loss"] for r in read_log(tmp_path / "run", "train")]
    assert len(loss) == 60 and all(np.isfinite(loss))
    assert np.mean(loss[-5:]) < np.mean(loss[:5]) / 3, loss


def test_resume_continues_exactly(store, tmp_path):
    from hdrprep.train.loop import load_checkpoint, train

    opts = dict(no_perceptual=True, val_fraction=0.25, val_every=2, ckpt_every=3, log_every=1, lr_patience=0, **TINY)
    whole = train(store, tmp_path / "a", max_steps=7, **opts)
    train(store, tmp_path / "b", max_steps=3, **opts)
    resumed = train(store, tmp_path / "b", max_steps=7, resume=True, **opts)
    a, b = load_checkpoint(whole["last"]), load_checkpoint(resumed["last"])
    assert a["step"] == b["step"] == 7
    for k in a["model"]:
        assert torch.equal(a["model"][k], b["model"][k]), k
    assert a["scheduler"] == b["scheduler"] and a["best_val"] == b["best_val"]
    losses = [[r["loss"] for r in read_log(tmp_path / run, "train")] for run in ("a", "b")]
    assert losses[0] == losses[1]
    assert whole["val_loss"] == resumed["val_loss"]


def test_checkpoint_contents_previews_and_refusals(store, tmp_path):
    from hdrprep.errors import ConfigError
    from hdrprep.train.loop import train

    with pytest.raises(ConfigError, match="IMAGENET1K_V1"):
        train(store, tmp_path / "run", max_steps=2, **TINY)  # perceptual loss without VGG weights
    assert not (tmp_path / "run" / "checkpoints").exists()
    res = train(store, tmp_path / "run", no_perceptual=True, max_steps=2, val_every=2, val_fraction=0.25,
                preview_pairs=2, **TINY)
    ckpt = torch.load(res["last"], map_location="cpu", weights_only=True)
    assert {"model", "optimizer", "scheduler", "step", "config", "format_version", "package_version"} <= set(ckpt)
    assert ckpt["step"] == 2 and ckpt["format_version"] == 1 and ckpt["config"]["width"] == 8
    assert ckpt["data"]["mask_alpha"] == 0.96
    val = read_log(tmp_path / "run", "val")
    assert len(val) == 1 and {"val_loss", "psnr_mulaw", "mu_psnr"} <= set(val[0])
    import cv2

    preview = cv2.imread(str(tmp_path / "run" / "previews" / "step_0000002.png"))
    assert preview.shape == (2 * 64, 3 * 64, 3)
    with pytest.raises(ConfigError, match="--resume"):
        train(store, tmp_path / "run", no_perceptual=True, max_steps=4, **TINY)
    with pytest.raises(ConfigError, match="width=16"):
        train(store, tmp_path / "run", no_perceptual=True, max_steps=4, resume=True, **{**TINY, "width": 16})
    with pytest.raises(ConfigError, match="do not fit"):
        train(store, tmp_path / "run16", init=res["last"], no_perceptual=True, max_steps=1, **{**TINY, "width": 16})
    # --init with lr 0: the new run's weights are exactly the initial checkpoint's
    init = train(store, tmp_path / "run2", init=res["last"], no_perceptual=True, max_steps=1, lr=1e-30,
                 val_fraction=0.0, **TINY)
    new = torch.load(init["last"], weights_only=True)["model"]
    assert all(torch.allclose(new[k], ckpt["model"][k], rtol=0, atol=1e-20) for k in new)


def test_perceptual_training_step_with_vgg_from_file(store, tmp_path):
    from hdrprep.train.loop import train
    from hdrprep.train.loss import vgg19_features

    state = {f"features.{k}": v for k, v in vgg19_features().state_dict().items()}
    torch.save(state, tmp_path / "vgg19.pth")
    train(store, tmp_path / "run", vgg_weights=tmp_path / "vgg19.pth", max_steps=2, val_fraction=0.0, log_every=1,
          **TINY)
    rows = read_log(tmp_path / "run", "train")
    assert len(rows) == 2 and all(r["l_vgg"] > 0 and r["l_style"] > 0 for r in rows)


def test_predict_any_size_writes_exr(store, tmp_path):
    import cv2
    import OpenEXR

    from hdrprep.train.loop import train
    from hdrprep.train.predict import predict

    res = train(store, tmp_path / "run", no_perceptual=True, max_steps=1, val_fraction=0.0, **TINY)
    rng = np.random.default_rng(0)
    rgb = rng.integers(0, 256, (45, 70, 3), dtype=np.uint8)
    rgb[:10] = 255  # a saturated band
    cv2.imwrite(str(tmp_path / "in.png"), np.ascontiguousarray(rgb[..., ::-1]))
    hdr = predict(res["last"], tmp_path / "in.png", tmp_path / "out.exr")
    assert hdr.shape == (45, 70, 3) and np.isfinite(hdr).all()
    t = rgb.astype(np.float32) / 255
    well = t <= 0.96  # mask 1: H_hat = T^2 exactly (Santos Eq. 1)
    np.testing.assert_allclose(hdr[well], t[well] ** 2, rtol=1e-6, atol=1e-7)
    with OpenEXR.File(str(tmp_path / "out.exr")) as f:
        back = f.channels()
        r = back["R"].pixels if "R" in back else back["RGB"].pixels[..., 0]
    assert r.shape == (45, 70)
    np.testing.assert_allclose(r.astype(np.float32), hdr[..., 0], rtol=1e-3, atol=1e-4)
    # 16-bit grey input: repeated to RGB, scaled by 65535
    grey = (np.arange(33 * 20).reshape(33, 20) * 99).astype(np.uint16)
    cv2.imwrite(str(tmp_path / "grey.png"), grey)
    hdr = predict(res["last"], tmp_path / "grey.png", tmp_path / "grey.exr")
    t = grey.astype(np.float32) / 65535
    assert hdr.shape == (33, 20, 3)
    np.testing.assert_allclose(hdr[..., 1][t <= 0.96], t[t <= 0.96] ** 2, rtol=1e-6, atol=1e-7)
    from hdrprep.errors import ConfigError

    with pytest.raises(ConfigError, match=r"\.exr"):
        predict(res["last"], tmp_path / "in.png", tmp_path / "out.tif")
    with pytest.raises(ConfigError, match="unsupported file type"):
        predict(res["last"], tmp_path / "out.exr", tmp_path / "x.exr")


def test_crop_and_flips_in_training(store, tmp_path, monkeypatch):
    """--crop trains on windows (validation stays on whole patches), resumes exactly; default flips are
    horizontal only; bad crops are refused."""
    from hdrprep.errors import ConfigError
    from hdrprep.train import loop

    seen = []
    expand = loop.expand_batch

    def spy(batch, alpha, device):
        out = expand(batch, alpha, device)
        seen.append((batch["flip"].clone(), tuple(out[0].shape)))
        return out

    monkeypatch.setattr(loop, "expand_batch", spy)
    opts = dict(no_perceptual=True, crop=32, val_fraction=0.25, val_every=2, log_every=1, preview_pairs=1, **TINY)
    whole = loop.train(store, tmp_path / "a", max_steps=4, **opts)
    flips = torch.cat([f for f, shape in seen if shape[-1] == 32])
    assert {shape for _, shape in seen} == {(4, 3, 32, 32), (3, 3, 64, 64)}  # training windows, whole val patches
    assert len(flips) == 16 and not flips[:, 1].any() and flips[:, 0].any()  # 'h': never upside down
    loop.train(store, tmp_path / "b", max_steps=2, **opts)
    resumed = loop.train(store, tmp_path / "b", max_steps=4, resume=True, **opts)
    a, b = loop.load_checkpoint(whole["last"]), loop.load_checkpoint(resumed["last"])
    assert a["config"]["crop"] == 32 and a["config"]["flips"] == "h"
    assert all(torch.equal(a["model"][k], b["model"][k]) for k in a["model"])
    import cv2

    preview = cv2.imread(str(tmp_path / "a" / "previews" / "step_0000002.png"))
    assert preview.shape == (64, 3 * 64, 3)  # validation previews show whole 64 px patches
    with pytest.raises(ConfigError, match=r"'crop'.*multiple of the network stride 2\*\*depth = 8"):
        loop.train(store, tmp_path / "c", no_perceptual=True, crop=20, max_steps=1, **TINY)
    with pytest.raises(ConfigError, match=r"--crop.*64 px patches"):
        loop.train(store, tmp_path / "c", no_perceptual=True, crop=128, max_steps=1, **TINY)
    with pytest.raises(ConfigError, match="flips='hv'.*checkpoint: 'h'"):
        loop.train(store, tmp_path / "b", max_steps=5, resume=True, **{**opts, "flips": "hv"})


def test_resume_reads_a_checkpoint_from_before_flips_was_a_choice(store, tmp_path):
    """A saved flips: true is 'hv' (what it meant), false is 'none'; no crop."""
    from hdrprep.config import TrainConfig
    from hdrprep.train.loop import load_checkpoint, save_checkpoint, train

    res = train(store, tmp_path / "run", no_perceptual=True, max_steps=1, val_fraction=0.0, flips="hv", **TINY)
    ckpt = load_checkpoint(res["last"])
    for old, new in ((True, "hv"), (False, "none")):
        saved = {k: v for k, v in ckpt["config"].items() if k != "crop"}
        saved["flips"] = old  # the config of an older checkpoint
        cfg = TrainConfig.from_options({"max_steps": 2}, saved)
        assert cfg.flips == new and cfg.crop == 0 and cfg.max_steps == 2
    saved = {k: v for k, v in ckpt["config"].items() if k != "crop"}
    save_checkpoint(tmp_path / "run" / "checkpoints" / "last.pt", {**ckpt, "config": {**saved, "flips": True}})
    assert train(store, tmp_path / "run", no_perceptual=True, max_steps=2, val_fraction=0.0, resume=True,
                 **TINY)["step"] == 2
    assert load_checkpoint(tmp_path / "run" / "checkpoints" / "last.pt")["config"]["flips"] == "hv"
