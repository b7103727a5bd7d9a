"""Inpainting pre-training: masks, the Liu et al. loss against literal formulas, the loop, pretrain -> train --init."""

import json

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytestmark = pytest.mark.torch

from test_train_store import make_tiny_store, one_torch_thread  # noqa: E402,F401

TINY = dict(width=4, depth=3, crop=32, num_workers=0, progress=False, no_perceptual=True)


def write_images(folder, seed=0):
    """Five small photographs-to-be: PNG and JPEG, nested, one grey, one narrower than the crops (32 px)."""
    import cv2

    rng = np.random.default_rng(seed)
    (folder / "a" / "b").mkdir(parents=True)
    yy, xx = np.mgrid[0:48, 0:64]
    smooth = np.stack([yy * 5, xx * 4, (yy + xx) * 2], axis=-1).astype(np.uint8)
    cv2.imwrite(str(folder / "a" / "smooth.png"), smooth)
    cv2.imwrite(str(folder / "a" / "b" / "noise.png"), rng.integers(0, 256, (40, 50, 3), dtype=np.uint8))
    cv2.imwrite(str(folder / "a" / "b" / "photo.JPG"), rng.integers(0, 256, (64, 64, 3), dtype=np.uint8))
    cv2.imwrite(str(folder / "grey.png"), rng.integers(0, 256, (36, 40), dtype=np.uint8))
    cv2.imwrite(str(folder / "narrow.jpeg"), rng.integers(0, 256, (20, 60, 3), dtype=np.uint8))
    (folder / "notes.txt").write_text("not an image")
    return folder


def read_log(run):
    return [json.loads(line) for line in (run / "log.jsonl").read_text().splitlines()]


def test_masks_are_binary_seeded_and_span_hole_ratios():
    from hdrprep.train.masks import hole_ratio, irregular_mask

    m = irregular_mask(96, 128, seed=3, step=7, item=1)
    assert m.dtype == np.uint8 and m.shape == (96, 128) and set(np.unique(m)) <= {0, 1} and m.flags.c_contiguous
    np.random.seed(123)  # no global random state: the same key gives the same mask whatever happened before
    assert np.array_equal(m, irregular_mask(96, 128, seed=3, step=7, item=1))
    others = [irregular_mask(96, 128, 4, 7, 1), irregular_mask(96, 128, 3, 8, 1), irregular_mask(96, 128, 3, 7, 2)]
    assert not any(np.array_equal(m, o) for o in others)
    ratios = np.array([hole_ratio(irregular_mask(64, 64, seed=0, step=s, item=i)) for s in range(20) for i in range(3)])
    assert ratios.min() >= 0.1 - 1e-9 and ratios.max() <= 0.6 + 1e-9
    assert ratios.min() < 0.2 and ratios.max() > 0.5 and np.std(ratios) > 0.08  # the range is covered
    narrow = [hole_ratio(irregular_mask(64, 64, 1, s, hole_min=0.3, hole_max=0.35)) for s in range(10)]
    assert all(0.3 <= r <= 0.35 for r in narrow)
    assert hole_ratio(irregular_mask(32, 32, 0, 0, hole_min=0.0, hole_max=0.0)) == 0.0
    with pytest.raises(ValueError, match="hole ratio"):
        irregular_mask(32, 32, 0, 0, hole_min=0.5, hole_max=0.4)


def literal_inpainting_terms(out, mask, gt):
    """Liu et al. 2018 L_valid, L_hole, L_tv with explicit loops (float64, numpy)."""
    o, m, g = (t.double().numpy() for t in (out, mask, gt))
    n = o.size
    comp = m * g + (1 - m) * o
    *_, h, w = o.shape
    hole = 1 - m
    region = np.zeros_like(m)  # 1-pixel dilation of the holes, 3x3 neighbourhood
    for i in range(h):
        for j in range(w):
            region[:, :, i, j] = hole[:, :, max(0, i - 1):i + 2, max(0, j - 1):j + 2].max(axis=(2, 3))
    tv = 0.0
    for i in range(h):
        for j in range(w):
            if j + 1 < w:
                both = region[:, :, i, j] * region[:, :, i, j + 1]
                tv += (both * np.abs(comp[:, :, i, j + 1] - comp[:, :, i, j])).sum()
            if i + 1 < h:
                both = region[:, :, i, j] * region[:, :, i + 1, j]
                tv += (both * np.abs(comp[:, :, i + 1, j] - comp[:, :, i, j])).sum()
    return {"l_valid": np.abs(m * (o - g)).sum() / n, "l_hole": np.abs(hole * (o - g)).sum() / n, "l_tv": tv / n}


def test_inpainting_loss_against_literal_terms(tmp_path):
    from hdrprep.train.loss import InpaintingLoss, load_vgg19, vgg19_features

    gen = torch.Generator().manual_seed(0)
    gt = torch.rand(2, 3, 32, 32, generator=gen)
    out = gt + 0.3 * torch.randn(2, 3, 32, 32, generator=gen)
    mask = (torch.rand(2, 1, 32, 32, generator=gen) > 0.4).float().expand(-1, 3, -1, -1).contiguous()
    mask[1, :, :8] = 0  # a wide hole too

    plain = InpaintingLoss(None)(out, mask, gt)
    expect = literal_inpainting_terms(out, mask, gt)
    for k, v in expect.items():
        assert plain[k].item() == pytest.approx(v, rel=1e-5), k
    assert plain["l_perceptual"].item() == plain["l_style"].item() == 0.0
    assert plain["total"].item() == pytest.approx(expect["l_valid"] + 6 * expect["l_hole"] + 0.1 * expect["l_tv"],
                                                  rel=1e-5)

    torch.manual_seed(1)
    torch.save({f"features.{k}": v for k, v in vgg19_features().state_dict().items()}, tmp_path / "vgg.pth")
    vgg = load_vgg19(tmp_path / "vgg.pth")
    terms = InpaintingLoss(vgg)(out, mask, gt)
    # literal: ImageNet normalisation, VGG cut after pool1, pool2, pool3; I_out and I_comp against I_gt
    mean = torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1)
    std = torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1)
    comp = mask * gt + (1 - mask) * out
    prc = style = 0.0
    for cut in (5, 10, 19):
        f_gt = vgg[:cut]((gt - mean) / std)
        g_gt = torch.einsum("nchw,ndhw->ncd", f_gt, f_gt) / f_gt[0].numel()
        for img in (out, comp):
            f = vgg[:cut]((img - mean) / std)
            g = torch.einsum("nchw,ndhw->ncd", f, f) / f[0].numel()
            prc = prc + (f - f_gt).abs().mean()
            style = style + (g - g_gt).abs().mean()
    assert terms["l_perceptual"].item() == pytest.approx(prc.item(), rel=1e-5)
    assert terms["l_style"].item() == pytest.approx(style.item(), rel=1e-4)
    total = (expect["l_valid"] + 6 * expect["l_hole"] + 0.1 * expect["l_tv"] + 0.05 * prc.item()
             + 120 * style.item())
    assert terms["total"].item() == pytest.approx(total, rel=1e-4)
    # a perfect output: every term but the image's own variation in the holes is 0
    zero = InpaintingLoss(vgg)(gt.clone(), mask, gt)
    assert all(v.item() == pytest.approx(0.0, abs=1e-7) for k, v in zero.items() if k not in ("l_tv", "total"))
    assert zero["total"].item() == pytest.approx(0.1 * literal_inpainting_terms(gt, mask, gt)["l_tv"], rel=1e-5)


def test_items_and_loader_are_pure_functions_of_the_key(tmp_path):
    from hdrprep.errors import ConfigError
    from hdrprep.train.inpaint import (
        InpaintingImages,
        KeyStream,
        find_images,
        make_pretrain_loader,
        network_input,
        read_rgb8,
    )
    from hdrprep.train.masks import irregular_mask

    folder = write_images(tmp_path / "img")
    paths = find_images(folder)
    assert [p.relative_to(folder).as_posix() for p in paths] == [
        "a/b/noise.png", "a/b/photo.JPG", "a/smooth.png", "grey.png", "narrow.jpeg"]
    ds = InpaintingImages(paths, crop=32, seed=5)
    item = ds[(2, 3, 1)]
    assert item["image"].dtype == item["mask"].dtype == torch.uint8
    assert item["image"].shape == (32, 32, 3) and item["mask"].shape == (32, 32)
    assert np.array_equal(item["mask"].numpy(), irregular_mask(32, 32, 5, 3, 1))
    # the window is a piece of the image (RGB, possibly mirrored)
    img = read_rgb8(paths[2])
    assert img[0, 1].tolist() == [2, 4, 0]  # smooth.png was written BGR (0, 4, 2): read back as RGB
    window = item["image"].numpy()
    pieces = [img[y:y + 32, x:x + 32] for y in range(17) for x in range(33)]
    assert any(np.array_equal(p, window) or np.array_equal(p[:, ::-1], window) for p in pieces)
    assert ds[(4, 0, 0)]["image"].shape == (32, 32, 3)  # 20 px high: scaled up to the crop
    keys = list(KeyStream(len(paths), seed=5, batch_size=3, start_step=2, stop_step=5))
    assert [k[1:] for k in keys] == [(s, i) for s in range(2, 5) for i in range(3)]
    assert keys[3:] == list(KeyStream(len(paths), seed=5, batch_size=3, start_step=3, stop_step=5))
    b0 = list(make_pretrain_loader(ds, keys, batch_size=3, num_workers=0))
    b2 = list(make_pretrain_loader(ds, keys, batch_size=3, num_workers=2))
    assert len(b0) == len(b2) == 3
    assert all(torch.equal(x[k], y[k]) for x, y in zip(b0, b2) for k in ("image", "mask"))
    inp, mask, gt = network_input(b0[0], hole_value=1.0)
    assert inp.shape == mask.shape == gt.shape == (3, 3, 32, 32)
    assert torch.equal(mask[:, 0], mask[:, 2]) and set(mask.unique().tolist()) == {0.0, 1.0}
    assert torch.equal(inp[mask == 0], torch.ones_like(inp[mask == 0])) and torch.equal(inp[mask == 1], gt[mask == 1])
    assert torch.equal(network_input(b0[0], hole_value=0.0)[0], gt * mask)
    (tmp_path / "empty").mkdir()
    with pytest.raises(ConfigError, match="no .jpg"):
        find_images(tmp_path / "empty")
    (folder / "broken.png").write_bytes(b"\x89PNG not really")
    paths = find_images(folder)
    with pytest.raises(ConfigError, match="cannot decode .*broken.png"):
        InpaintingImages(paths, crop=32, seed=0)[([p.name for p in paths].index("broken.png"), 0, 0)]


def test_pretrain_runs_resumes_exactly_and_refuses(tmp_path):
    from hdrprep.errors import ConfigError
    from hdrprep.train.inpaint import pretrain
    from hdrprep.train.loop import load_checkpoint

    folder = write_images(tmp_path / "img")
    opts = dict(batch_size=2, log_every=1, ckpt_every=2, preview_items=2, **TINY)
    whole = pretrain(folder, tmp_path / "a", max_steps=3, **opts)
    pretrain(folder, tmp_path / "b", max_steps=2, **opts)
    resumed = pretrain(folder, tmp_path / "b", max_steps=3, resume=True, **opts)
    assert whole["step"] == resumed["step"] == 3 and np.isfinite(whole["loss"])
    a, b = load_checkpoint(whole["last"]), load_checkpoint(resumed["last"])
    assert all(torch.equal(a["model"][k], b["model"][k]) for k in a["model"])
    assert [r["loss"] for r in read_log(tmp_path / "a")] == [r["loss"] for r in read_log(tmp_path / "b")]
    row = read_log(tmp_path / "a")[0]
    assert {"l_valid", "l_hole", "l_tv", "l_perceptual", "l_style", "lr"} <= set(row) and row["l_hole"] > 0
    assert {"model", "optimizer", "scaler", "step", "config", "data", "package_version"} <= set(a)
    assert a["data"]["task"] == "inpainting" and a["data"]["n_images"] == 5
    assert (a["config"]["width"], a["config"]["depth"], a["config"]["crop"]) == (4, 3, 32)
    assert json.loads((tmp_path / "a" / "config.json").read_text())["pretrain"]["lambda_hole"] == 6.0
    import cv2

    for step in (2, 3):
        preview = cv2.imread(str(tmp_path / "a" / "previews" / f"step_{step:07d}.png"))
        assert preview.shape == (2 * 32, 3 * 32, 3)  # (input with holes | output | ground truth) x 2 images
    with pytest.raises(ConfigError, match="already holds a run"):
        pretrain(folder, tmp_path / "a", max_steps=4, **opts)
    with pytest.raises(ConfigError, match="width=8"):
        pretrain(folder, tmp_path / "a", max_steps=4, resume=True, **{**opts, "width": 8})
    with pytest.raises(ConfigError, match=r"'crop'.*2\*\*depth = 8"):
        pretrain(folder, tmp_path / "c", max_steps=1, **{**opts, "crop": 36})
    with pytest.raises(ConfigError, match="IMAGENET1K_V1"):
        pretrain(folder, tmp_path / "c", max_steps=1, **{**opts, "no_perceptual": False})


def test_pretrain_then_train_init_end_to_end(tmp_path):
    """CLI: pretrain, then train --init from its last.pt: width/depth come from it and the weights start there."""
    from click.testing import CliRunner

    from hdrprep.cli import main
    from hdrprep.train.loop import load_checkpoint

    folder = write_images(tmp_path / "img")
    make_tiny_store(tmp_path / "s.zarr", n=3, size=32, pairs_per_shard=2)
    r = CliRunner().invoke(main, ["pretrain", "--images", str(folder), "--out", str(tmp_path / "pre"),
                                  "--width", "4", "--depth", "3", "--crop", "32", "--max-steps", "2",
                                  "--batch-size", "2", "--num-workers", "0", "--flips", "none", "--hole-max", "0.5",
                                  "--no-perceptual", "--device", "cpu", "--quiet"])
    assert r.exit_code == 0, r.output
    pre = load_checkpoint(tmp_path / "pre" / "checkpoints" / "last.pt")
    assert pre["step"] == 2 and pre["config"]["flips"] == "none" and pre["config"]["hole_max"] == 0.5
    init = str(tmp_path / "pre" / "checkpoints" / "last.pt")
    common = ["--data", str(tmp_path / "s.zarr"), "--init", init, "--no-perceptual", "--max-steps", "1",
              "--val-fraction", "0", "--num-workers", "0", "--device", "cpu", "--quiet"]
    # lr 1e-30: the fine-tuned run's weights are the pre-trained ones
    r = CliRunner().invoke(main, ["train", "--out", str(tmp_path / "ft"), "--lr", "1e-30", "--crop", "16",
                                  "--flips", "hv", *common])
    assert r.exit_code == 0, r.output
    ft = load_checkpoint(tmp_path / "ft" / "checkpoints" / "last.pt")
    assert (ft["config"]["width"], ft["config"]["depth"], ft["config"]["crop"]) == (4, 3, 16)
    assert ft["model"].keys() == pre["model"].keys()
    assert all(torch.allclose(ft["model"][k], pre["model"][k], rtol=0, atol=1e-20) for k in ft["model"])
    from hdrprep.train.model import MaskedUNet

    fresh = MaskedUNet(4, 3, seed=0).state_dict()  # what train would start from without --init
    assert not all(torch.equal(v, fresh[k]) for k, v in pre["model"].items())
    assert json.loads((tmp_path / "ft" / "config.json").read_text())["init"].endswith("last.pt")
    # an architecture that does not fit, and predicting with a pre-training, are refused with the fix
    r = CliRunner().invoke(main, ["train", "--out", str(tmp_path / "ft8"), "--width", "8", *common])
    assert r.exit_code == 2 and "trained with width=4, depth=3" in r.output
    (tmp_path / "x.png").write_bytes((tmp_path / "img" / "grey.png").read_bytes())
    r = CliRunner().invoke(main, ["predict", "--checkpoint", init, "--input", str(tmp_path / "x.png"),
                                  "--out", str(tmp_path / "x.exr")])
    assert r.exit_code == 2 and "train --data STORE --out RUN --init" in r.output
