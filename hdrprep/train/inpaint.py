"""Inpainting pre-training (Santos et al. 2020, Sec. 3.3): ``pretrain(images, out, **options)``.

Stage 1 of the two-stage recipe. The masked U-Net of :mod:`hdrprep.train.model` learns
to fill irregular holes (:mod:`hdrprep.train.masks`) in photographs (MIT Places in the
paper) with the loss of Liu et al. 2018 (:class:`hdrprep.train.loss.InpaintingLoss`);
``hdrprep train --init OUT/checkpoints/last.pt`` then fine-tunes the same network on
HDR pairs. The masks are binary (1 = valid, 0 = hole, the same for the three channels)
and go through the same feature masking as the soft masks of the HDR stage.

What the network sees and returns. Images are RGB in [0, 1], as the LDR inputs of the
HDR stage. The input is ``I_gt * M + (1 - M) * hole_value`` with ``hole_value = 1``
by default: Santos' released Places loader (``dataset/places2.py``) sets the hole pixels
of the input to 1 after masking, so that holes look like the clipped pixels the
network meets in stage 2. The first layer multiplies its input by M, so the fill only
reaches the decoder's last layer, through the unmasked skip connection -- exactly
where clipped pixels reach it in stage 2; ``hole_value 0`` gives ``I_gt * M``. The
output is the network's linear output taken as the image itself, I_out = Y_hat, in
the input's scale, as in the released ``InpaintingLoss`` (which compares the raw
output with the ground truth); no activation is added, so the network is the same
in both stages. (The released code feeds ImageNet-normalised images; here images stay
in [0, 1], as the HDR stage's inputs do in this trainer, and the loss normalises them
only on the way into VGG.)

Layout of ``out`` (as ``train`` writes it; the same checkpoint format)::

    out/config.json            resolved PretrainConfig and data provenance
    out/log.jsonl              one JSON object per logged step
    out/checkpoints/last.pt    every ``ckpt_every`` steps and at the end
    out/previews/step_NNNNNNN.png   rows of (input with holes | output | ground truth)

A checkpoint holds ``model``, ``optimizer``, ``scheduler`` (None), ``scaler``, ``step``,
``best_val`` (None), ``config`` (PretrainConfig as a dict: ``width``, ``depth`` and
``seed`` build the model), ``data`` (``task: inpainting``, image folder, image count),
``format_version`` and ``package_version``. The stream of (image, crop, flip, mask)
is a pure function of (seed, step, item in the batch), so ``resume`` continues exactly
and batches do not depend on the number of DataLoader workers.
"""

from __future__ import annotations

import dataclasses
import json
import os
from pathlib import Path

import numpy as np
import torch

from hdrprep import __version__
from hdrprep.config import PretrainConfig
from hdrprep.errors import ConfigError
from hdrprep.files import atomic_write_bytes
from hdrprep.io import write_png
from hdrprep.schema import FORMAT_VERSION
from hdrprep.train.dataset import StreamSampler
from hdrprep.train.loop import Throughput, _device, build_model, load_checkpoint, optimizer_step, save_checkpoint
from hdrprep.train.loss import InpaintingLoss, load_vgg19
from hdrprep.train.masks import irregular_mask

__all__ = [
    "CROP_STREAM",
    "IMAGE_SUFFIXES",
    "InpaintingImages",
    "KeyStream",
    "find_images",
    "make_pretrain_loader",
    "network_input",
    "pretrain",
    "read_rgb8",
]

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png")
CROP_STREAM = 0x43524F50  # "CROP": the crops' and flips' random stream, apart from the masks' and the order's
TASK = "inpainting"


def find_images(root: str | os.PathLike) -> list[Path]:
    """JPEG and PNG files under ``root`` (recursively, any case of the suffix), sorted by relative path.

    Raises
    ------
    ConfigError
        ``root`` is not a folder or holds no image.
    """
    root = Path(root)
    if not root.is_dir():
        raise ConfigError(f"--images {root}: not a folder; give a folder of .jpg/.jpeg/.png photographs")
    paths = sorted((p for p in root.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file()),
                   key=lambda p: p.relative_to(root).as_posix())
    if not paths:
        raise ConfigError(f"--images {root}: no .jpg, .jpeg or .png file found (searched recursively)")
    return paths


def read_rgb8(path: str | os.PathLike) -> np.ndarray:
    """An image as uint8 RGB (H, W, 3): OpenCV's ``IMREAD_COLOR`` (grey repeated, alpha dropped, 16 bit -> 8 bit)."""
    import cv2

    img = cv2.imread(str(path), cv2.IMREAD_COLOR)
    if img is None:
        raise ConfigError(f"--images: OpenCV cannot decode {path}; remove the file or replace it with a whole one")
    return np.ascontiguousarray(img[..., ::-1])


class InpaintingImages(torch.utils.data.Dataset):
    """Crops of photographs and their hole masks, addressed by keys ``(image, step, item)``.

    Item ``(i, step, item)``: image ``i`` of ``paths``, scaled up (bilinear) where its
    shorter side is below ``crop`` so that it becomes ``crop``; a ``crop`` x ``crop``
    window at a corner uniform over the image and a horizontal flip with probability
    1/2 (``flips='h'``), both from ``default_rng([CROP_STREAM, seed, step, item])``; and
    the mask :func:`~hdrprep.train.masks.irregular_mask` ``(crop, crop, seed, step, item)``.

    Returns a dict: ``image`` uint8 (crop, crop, 3) RGB as decoded, ``mask`` uint8
    (crop, crop), 1 = valid, 0 = hole. :func:`network_input` makes the float tensors
    on the training device (8-bit tensors are a quarter of the bytes to ship).
    """

    def __init__(self, paths: list[Path], crop: int, seed: int, flips: str = "h",
                 hole_min: float = 0.1, hole_max: float = 0.6):
        if flips not in ("h", "none"):
            raise ConfigError(f"invalid value {flips!r} for 'flips' (--flips): use h or none")
        self.paths, self.crop, self.seed, self.flips = list(paths), crop, seed, flips
        self.hole_min, self.hole_max = hole_min, hole_max

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, key) -> dict:
        import cv2

        index, step, item = (int(k) for k in key)
        img = read_rgb8(self.paths[index])
        h, w = img.shape[:2]
        c = self.crop
        if min(h, w) < c:
            scale = c / min(h, w)
            w, h = max(c, round(w * scale)), max(c, round(h * scale))
            img = cv2.resize(img, (w, h), interpolation=cv2.INTER_LINEAR)
        rng = np.random.default_rng([CROP_STREAM, self.seed, step, item])
        y, x, flip = int(rng.integers(0, h - c + 1)), int(rng.integers(0, w - c + 1)), bool(rng.integers(0, 2))
        window = img[y:y + c, x:x + c]
        if flip and self.flips == "h":
            window = window[:, ::-1]
        mask = irregular_mask(c, c, self.seed, step, item, self.hole_min, self.hole_max)
        return {"image": torch.from_numpy(np.ascontiguousarray(window)), "mask": torch.from_numpy(mask)}


class KeyStream(torch.utils.data.Sampler):
    """Keys ``(image, step, item)`` for steps [start_step, stop_step) of batches of ``batch_size``.

    The image of stream position p = step * batch_size + item is position p of
    :class:`~hdrprep.train.dataset.StreamSampler` over the images (a seeded permutation
    per epoch), so every image is used once per epoch and the stream is a pure
    function of (seed, p).
    """

    def __init__(self, n_images: int, seed: int, batch_size: int, start_step: int, stop_step: int):
        self.batch_size, self.start_step = batch_size, start_step
        self.inner = StreamSampler(np.arange(n_images), seed, start=start_step * batch_size,
                                   count=max(0, stop_step - start_step) * batch_size, flips="none")

    def __len__(self) -> int:
        return len(self.inner)

    def __iter__(self):
        for p, key in enumerate(self.inner, start=self.start_step * self.batch_size):
            step, item = divmod(p, self.batch_size)
            yield key[0], step, item


def _worker_init(_worker_id: int) -> None:
    import cv2

    cv2.setNumThreads(1)  # the DataLoader already runs torch in one thread per worker; OpenCV's pool only contends


def make_pretrain_loader(dataset: InpaintingImages, keys: KeyStream, batch_size: int, num_workers: int = 0,
                         pin_memory: bool = False) -> torch.utils.data.DataLoader:
    """Batches of ``dataset`` in the order of ``keys`` (``image`` (B, C, C, 3) and ``mask`` (B, C, C) uint8).

    Each item is a pure function of its key, and the DataLoader keeps the sampler's
    order, so the batches do not depend on ``num_workers``.
    """
    if num_workers < 0:
        raise ConfigError(f"invalid value {num_workers!r} for 'num_workers' (--num-workers): use 0 or more")
    return torch.utils.data.DataLoader(dataset, batch_size=batch_size, sampler=keys, num_workers=num_workers,
                                       pin_memory=pin_memory, worker_init_fn=_worker_init if num_workers else None)


def network_input(batch: dict, hole_value: float, device: torch.device | str = "cpu") -> tuple:
    """(input, mask, ground truth), float32 (B, 3, C, C) on ``device``, from a batch of :class:`InpaintingImages`.

    ground truth = image / 255 in [0, 1]; mask in {0, 1}, the same for the three channels;
    input = ground truth * mask + (1 - mask) * hole_value.
    """
    gt = batch["image"].to(device, non_blocking=True).permute(0, 3, 1, 2).float().div_(255.0).contiguous()
    mask = batch["mask"].to(device, non_blocking=True)[:, None].float().expand_as(gt).contiguous()
    return gt * mask + (1.0 - mask) * hole_value, mask, gt


def _write_preview(path: Path, inp, out, gt) -> None:
    def rgb8(x):
        return (x.detach().float().clamp(0, 1) * 255 + 0.5).to(torch.uint8).permute(1, 2, 0).cpu().numpy()

    rows = [np.concatenate([rgb8(a), rgb8(b), rgb8(c)], axis=1) for a, b, c in zip(inp, out, gt)]
    path.parent.mkdir(parents=True, exist_ok=True)
    write_png(path, np.concatenate(rows, axis=0))


def pretrain(images: str | os.PathLike, out: str | os.PathLike, *, resume: bool = False,
             vgg_weights: str | os.PathLike | None = None, no_perceptual: bool = False, progress: bool = True,
             **options) -> dict:
    """Pre-train the masked U-Net on inpainting (Santos et al. 2020, Sec. 3.3).

    Parameters
    ----------
    images : folder of .jpg/.jpeg/.png photographs, searched recursively (e.g. MIT Places)
    out : run folder (created); refuses to overwrite a run unless ``resume``
    resume : continue ``out/checkpoints/last.pt`` exactly (same next step as an uninterrupted run)
    vgg_weights : torchvision VGG-19 state dict (required unless ``no_perceptual``)
    no_perceptual : drop the perceptual and style terms
    progress : show a tqdm bar
    **options : PretrainConfig fields (None = default / unchanged)

    Returns
    -------
    dict with ``step``, ``last`` (checkpoint path) and ``loss`` (of the last step run, if any).
    """
    from tqdm import tqdm

    out = Path(out)
    last_path = out / "checkpoints" / "last.pt"
    ckpt = None
    if resume:
        if not last_path.is_file():
            raise ConfigError(f"--resume: no checkpoint at {last_path}; start a new run without --resume")
        ckpt = load_checkpoint(last_path)
        if (ckpt.get("data") or {}).get("task") != TASK:
            raise ConfigError(f"--resume: {last_path} is not an inpainting pre-training (hdrprep pretrain) run; "
                              "resume it with 'hdrprep train --resume' or choose another --out")
    elif last_path.is_file():
        raise ConfigError(f"--out {out} already holds a run ({last_path}); pass --resume to continue it "
                          "or choose a new --out")
    if no_perceptual:
        options["perceptual"] = False
    cfg = PretrainConfig.from_options(options, None if ckpt is None else ckpt["config"])
    device = _device(cfg.device)
    use_amp = cfg.amp and device.type == "cuda"

    paths = find_images(images)
    if ckpt is not None and ckpt["data"]["n_images"] != len(paths):
        raise ConfigError(f"--resume: the run was trained on {ckpt['data']['n_images']} images, {images} holds "
                          f"{len(paths)}; resume on the same folder (the image order depends on the count)")
    dataset = InpaintingImages(paths, cfg.crop, cfg.seed, cfg.flips, cfg.hole_min, cfg.hole_max)

    vgg = load_vgg19(vgg_weights) if cfg.perceptual else None
    loss_fn = InpaintingLoss(vgg, cfg.lambda_valid, cfg.lambda_hole, cfg.lambda_tv, cfg.lambda_perceptual,
                             cfg.lambda_style).to(device)
    model = build_model(dataclasses.asdict(cfg)).to(device)
    optimizer = torch.optim.Adam(model.parameters(), lr=cfg.lr, betas=(cfg.beta1, cfg.beta2))
    scaler = torch.amp.GradScaler("cuda", enabled=use_amp)
    step = 0
    if ckpt is not None:
        model.load_state_dict(ckpt["model"])
        optimizer.load_state_dict(ckpt["optimizer"])
        if ckpt["scaler"]:
            scaler.load_state_dict(ckpt["scaler"])
        step = int(ckpt["step"])

    data_meta = {"task": TASK, "path": str(Path(images).resolve()), "n_images": len(paths)}
    out.mkdir(parents=True, exist_ok=True)
    atomic_write_bytes(out / "config.json", json.dumps({"pretrain": dataclasses.asdict(cfg), "data": data_meta,
                                                        "package_version": __version__}, indent=2).encode())

    def checkpoint(path: Path) -> None:
        save_checkpoint(path, {
            "model": model.state_dict(), "optimizer": optimizer.state_dict(), "scheduler": None,
            "scaler": scaler.state_dict(), "step": step, "best_val": None,
            "config": dataclasses.asdict(cfg), "data": data_meta,
            "format_version": FORMAT_VERSION, "package_version": __version__,
        })

    keys = KeyStream(len(paths), cfg.seed, cfg.batch_size, start_step=step, stop_step=cfg.max_steps)
    loader = make_pretrain_loader(dataset, keys, cfg.batch_size, cfg.num_workers, pin_memory=device.type == "cuda")
    result: dict = {}
    bar = tqdm(total=cfg.max_steps, initial=step, disable=not progress, unit="step", dynamic_ncols=True)
    model.train()
    with open(out / "log.jsonl", "a") as log:
        meter = Throughput()
        for batch in loader:
            inp, mask, gt = network_input(batch, cfg.hole_value, device)
            with torch.autocast(device.type, dtype=torch.float16, enabled=use_amp):
                pred = model(inp, mask)
            # the loss stays float32: the Gram sums overflow float16
            terms = loss_fn(pred.float(), mask, gt)
            loss = optimizer_step(optimizer, scaler, terms["total"], step, "lower --lr")
            step += 1
            rate = meter.update(gt.shape[0])
            result = {"loss": loss}
            bar.set_postfix(loss=f"{loss:.4f}", images_s=f"{rate:.1f}", refresh=False)
            bar.update(1)
            if step % cfg.log_every == 0 or step == cfg.max_steps:
                log.write(json.dumps({"kind": "train", "step": step, "loss": loss,
                                      **{k: v.item() for k, v in terms.items() if k != "total"},
                                      "lr": optimizer.param_groups[0]["lr"], "images_per_s": rate}) + "\n")
                log.flush()
            if step % cfg.ckpt_every == 0 or step == cfg.max_steps:
                checkpoint(last_path)
                if cfg.preview_items:
                    k = cfg.preview_items
                    # this step's batch and the output the step was computed from
                    _write_preview(out / "previews" / f"step_{step:07d}.png", inp[:k], pred[:k], gt[:k])
    bar.close()
    return {"step": step, "last": str(last_path), **result}
