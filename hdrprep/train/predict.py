"""``predict(checkpoint, input, out)``: HDR reconstruction of one real LDR image."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import torch

from hdrprep.errors import ConfigError
from hdrprep.train.dataset import soft_mask
from hdrprep.train.loop import _device, build_model, load_checkpoint
from hdrprep.train.model import reconstruct

__all__ = ["read_ldr", "predict"]

LDR_SUFFIXES = (".png", ".jpg", ".jpeg")


def read_ldr(path: str | os.PathLike) -> np.ndarray:
    """Read an 8- or 16-bit PNG/JPEG as RGB float32 (H, W, 3) in [0, 1].

    Grey images are repeated to three channels; an alpha channel is dropped.
    """
    import cv2

    path = Path(path)
    if path.suffix.lower() not in LDR_SUFFIXES:
        raise ConfigError(f"--input {path}: unsupported file type {path.suffix!r}; give a .png, .jpg or .jpeg image")
    if not path.is_file():
        raise ConfigError(f"--input {path}: file not found")
    img = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
    if img is None:
        raise ConfigError(f"--input {path}: OpenCV cannot decode it; is the file complete?")
    if img.dtype not in (np.uint8, np.uint16):
        raise ConfigError(f"--input {path}: pixel type {img.dtype}; give an 8- or 16-bit image")
    scale = float(np.iinfo(img.dtype).max)
    if img.ndim == 2:
        img = np.repeat(img[..., None], 3, axis=2)
    elif img.shape[2] == 4:
        img = img[..., :3]
    elif img.shape[2] != 3:
        raise ConfigError(f"--input {path}: {img.shape[2]} channels; give a grey, RGB or RGBA image")
    return np.ascontiguousarray(img[..., ::-1], dtype=np.float32) / np.float32(scale)


def predict(checkpoint: str | os.PathLike, input: str | os.PathLike, out: str | os.PathLike, *,
            device: str = "auto", mask_alpha: float | None = None) -> np.ndarray:
    """Reconstruct the linear HDR of an LDR image of any size and write it as OpenEXR.

    Parameters
    ----------
    checkpoint : a checkpoint written by ``train`` (loaded with weights_only=True)
    input : .png/.jpg/.jpeg, 8 or 16 bit, any size (padded to the network stride and cropped back)
    out : .exr path, written atomically (float16, or float32 where values exceed the half range)
    device : auto, cpu, cuda or cuda:N
    mask_alpha : soft-mask threshold; default: the one of the store the model was trained on

    Returns
    -------
    float32 (H, W, 3) linear HDR, 1.0 = the input's clipping point.
    """
    from hdrprep.io import HALF_MAX, write_exr

    if Path(out).suffix.lower() != ".exr":
        raise ConfigError(f"--out {out}: the output is OpenEXR; give a path ending in .exr")
    dev = _device(device)
    ckpt = load_checkpoint(checkpoint)
    if (ckpt.get("data") or {}).get("task") == "inpainting":
        raise ConfigError(f"--checkpoint {checkpoint}: an inpainting pre-training (hdrprep pretrain), not an HDR "
                          f"model; fine-tune it first: hdrprep train --data STORE --out RUN --init {checkpoint}")
    alpha = float(ckpt["data"]["mask_alpha"] if mask_alpha is None else mask_alpha)
    if not 0 < alpha < 1:
        raise ConfigError(f"invalid value {alpha!r} for 'mask_alpha': use a threshold in (0, 1), e.g. 0.96")
    model = build_model(ckpt["config"])
    model.load_state_dict(ckpt["model"])
    model.to(dev).eval()
    ldr = torch.from_numpy(read_ldr(input)).permute(2, 0, 1)[None].to(dev)
    mask = soft_mask(ldr.clone(), alpha)
    with torch.no_grad():
        hdr = reconstruct(ldr, mask, model(ldr, mask).float())[0].permute(1, 2, 0).cpu().numpy()
    finite_max = float(np.abs(hdr[np.isfinite(hdr)]).max(initial=0.0))
    write_exr(out, hdr, half=finite_max <= HALF_MAX)
    return hdr
