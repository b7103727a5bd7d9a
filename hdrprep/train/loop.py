"""The training loop: ``train(data, out, **options)``, read top to bottom.

Layout of ``out``::

    out/config.json            resolved TrainConfig and data provenance (written at start)
    out/log.jsonl              one JSON object per logged step / validation
    out/checkpoints/last.pt    written every ``ckpt_every`` steps and at the end
    out/checkpoints/best.pt    the checkpoint with the lowest validation loss
    out/previews/step_NNNNNNN.png   rows of (input LDR, prediction, target), tonemapped

A checkpoint is a dict of tensors and plain Python values (loads with
``torch.load(..., weights_only=True)``): ``model``, ``optimizer``, ``scheduler``,
``scaler``, ``step``, ``best_val``, ``config`` (TrainConfig as a dict),
``data`` (store path, format version, mask alpha, pair count),
``format_version`` (of the data) and ``package_version``. The data stream is
a pure function of (seed, step) (see ``dataset.StreamSampler``), so
``resume`` continues exactly where an uninterrupted run would be.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import time
from pathlib import Path

import numpy as np
import torch

from hdrprep import __version__
from hdrprep.config import TrainConfig
from hdrprep.errors import ConfigError
from hdrprep.files import atomic_write, atomic_write_bytes
from hdrprep.io import write_png
from hdrprep.schema import FORMAT_VERSION
from hdrprep.train.dataset import (PairDataset, StreamSampler, expand_batch, make_loader, read_store_info,
                                   split_by_source)
from hdrprep.train.loss import SantosLoss, load_vgg19
from hdrprep.train.metrics import mu_psnr, psnr_mulaw, tonemap_preview
from hdrprep.train.model import MaskedUNet, reconstruct

__all__ = ["TrainConfig", "train", "save_checkpoint", "load_checkpoint", "build_model"]


def build_model(cfg: dict) -> MaskedUNet:
    """The model a checkpoint's ``config`` describes."""
    return MaskedUNet(width=int(cfg["width"]), depth=int(cfg["depth"]), seed=int(cfg["seed"]))


def save_checkpoint(path: Path, state: dict) -> None:
    """torch.save, atomically (:func:`hdrprep.files.atomic_write`): a killed run never leaves a half file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write(path, lambda tmp: torch.save(state, tmp))


def optimizer_step(optimizer, scaler, total: torch.Tensor, step: int, fix: str) -> float:
    """One optimizer step on ``total`` (scaled for mixed precision); the loss value.

    Raises FloatingPointError, naming the step and ``fix``, when the loss is not finite.
    """
    optimizer.zero_grad(set_to_none=True)
    scaler.scale(total).backward()
    scaler.step(optimizer)
    scaler.update()
    loss = total.item()
    if not math.isfinite(loss):
        raise FloatingPointError(f"loss became {loss} at step {step + 1}; {fix}")
    return loss


class Throughput:
    """Items per second, smoothed over the last ten or so steps (exponential moving average)."""

    def __init__(self):
        self.tick, self.rate = time.perf_counter(), None

    def update(self, items: int) -> float:
        now = time.perf_counter()
        inst = items / max(now - self.tick, 1e-9)
        self.rate = inst if self.rate is None else 0.9 * self.rate + 0.1 * inst
        self.tick = now
        return self.rate


def load_checkpoint(path: str | os.PathLike, device: str | torch.device = "cpu") -> dict:
    """Load a checkpoint with ``weights_only=True``; ConfigError names the file if it is not one of ours."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"checkpoint {path}: file not found")
    try:
        ckpt = torch.load(path, map_location=device, weights_only=True)
    except Exception as exc:
        raise ConfigError(f"checkpoint {path}: cannot be read as a weights-only torch file ({exc})") from exc
    if not isinstance(ckpt, dict) or "model" not in ckpt or "config" not in ckpt:
        raise ConfigError(f"checkpoint {path}: not an hdrprep checkpoint (no 'model'/'config'); "
                          "give a file written by 'hdrprep train'")
    return ckpt


def _read_init(path) -> tuple[dict, dict | None]:
    """The model weights of ``--init`` and, for an hdrprep checkpoint (``train`` or ``pretrain``), its config.

    A plain state dict of a MaskedUNet gives (state dict, None).
    """
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:
        raise ConfigError(f"--init {path}: cannot be read as a weights-only torch file ({exc})") from exc
    if isinstance(state, dict) and "model" in state:
        config = state.get("config")
        return state["model"], (config if isinstance(config, dict) else None)
    return state, None


def _load_init(model: MaskedUNet, state, path, config: dict | None = None) -> None:
    """Start from the weights of ``--init`` (from :func:`_read_init`); ConfigError if they do not fit ``model``."""
    try:
        model.load_state_dict(state)
    except (RuntimeError, TypeError, AttributeError) as exc:
        trained = (f"it was trained with width={config['width']}, depth={config['depth']}: drop --width/--depth "
                   "(they are then taken from --init) or pass those" if config and "width" in config and
                   "depth" in config else "pass the --width/--depth it was trained with")
        raise ConfigError(f"--init {path}: weights do not fit a MaskedUNet(width={model.width}, depth={model.depth}); "
                          f"{trained} ({str(exc).splitlines()[0]})") from exc


def _device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        dev = torch.device(name)
    except RuntimeError as exc:
        raise ConfigError(f"invalid value {name!r} for 'device': use auto, cpu, cuda or cuda:N") from exc
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError(f"device {name!r} requested but torch sees no CUDA device; use --device cpu")
    return dev


def _write_preview(path: Path, ldr, pred, hdr) -> None:
    rows = []
    for t, p, h in zip(ldr, pred, hdr):
        inp = (t.clamp(0, 1) * 255 + 0.5).to(torch.uint8).permute(1, 2, 0).cpu().numpy()
        rows.append(np.concatenate([inp, tonemap_preview(p, h), tonemap_preview(h, h)], axis=1))
    path.parent.mkdir(parents=True, exist_ok=True)
    write_png(path, np.concatenate(rows, axis=0))


@torch.no_grad()
def _validate(model, loss_fn, dataset, rows, cfg, device, preview_path) -> dict:
    model.eval()
    sums = {"val_loss": 0.0, "val_l_r": 0.0, "psnr_mulaw": 0.0, "mu_psnr": 0.0}
    n = 0
    loader = make_loader(dataset, [int(r) for r in rows], cfg.batch_size, num_workers=0)
    for i, batch in enumerate(loader):
        ldr, hdr, mask = expand_batch(batch, dataset.info.mask_alpha, device)
        y_hat = model(ldr, mask).float()
        terms = loss_fn(y_hat, ldr, mask, hdr)
        h_hat = reconstruct(ldr, mask, y_hat)
        b = ldr.shape[0]
        sums["val_loss"] += float(terms["total"]) * b
        sums["val_l_r"] += float(terms["l_r"]) * b
        sums["psnr_mulaw"] += float(psnr_mulaw(h_hat, hdr).clamp(max=100).sum())
        sums["mu_psnr"] += float(mu_psnr(h_hat, hdr).clamp(max=100).sum())
        n += b
        if i == 0 and cfg.preview_pairs and preview_path is not None:
            k = cfg.preview_pairs
            _write_preview(preview_path, ldr[:k], h_hat[:k], hdr[:k])
    model.train()
    return {k: v / n for k, v in sums.items()}


def train(data: str | os.PathLike, out: str | os.PathLike, *, resume: bool = False,
          init: str | os.PathLike | None = None, vgg_weights: str | os.PathLike | None = None,
          no_perceptual: bool = False, progress: bool = True, **options) -> dict:
    """Train the Santos et al. 2020 masked U-Net on a store.

    Parameters
    ----------
    data : store folder written by ``hdrprep build`` (Zarr v3 group + index.parquet)
    out : run folder (created); refuses to overwrite a run unless ``resume``
    resume : continue ``out/checkpoints/last.pt`` exactly (same next step as an uninterrupted run)
    init : checkpoint whose model weights start a new run (e.g. ``hdrprep pretrain``'s
        ``checkpoints/last.pt``); ``width`` and ``depth`` not given are taken from its config
    vgg_weights : torchvision VGG-19 state dict (required unless ``no_perceptual``)
    no_perceptual : train with the reconstruction loss only
    progress : show a tqdm bar with loss and pairs/s
    **options : TrainConfig fields (None = default / unchanged)

    Returns
    -------
    dict with ``step``, ``last`` (checkpoint path), ``best`` (path or None) and the
    last validation metrics (``val_loss``, ``psnr_mulaw``, ``mu_psnr``) if any.
    """
    from tqdm import tqdm

    out = Path(out)
    last_path, best_path = out / "checkpoints" / "last.pt", out / "checkpoints" / "best.pt"
    ckpt = None
    if resume:
        if not last_path.is_file():
            raise ConfigError(f"--resume: no checkpoint at {last_path}; start a new run without --resume")
        ckpt = load_checkpoint(last_path)
        if init is not None:
            raise ConfigError("--init and --resume exclude each other: a resumed run keeps its own weights")
    elif last_path.is_file():
        raise ConfigError(f"--out {out} already holds a run ({last_path}); pass --resume to continue it "
                          "or choose a new --out")
    if no_perceptual:
        options["perceptual"] = False
    init_state = init_config = None
    if init is not None:
        init_state, init_config = _read_init(init)
        for key in ("width", "depth"):  # the architecture of the weights, unless asked otherwise
            if options.get(key) is None and init_config is not None and key in init_config:
                options[key] = int(init_config[key])
    cfg = TrainConfig.from_options(options, None if ckpt is None else ckpt["config"])
    device = _device(cfg.device)
    use_amp = cfg.amp and device.type == "cuda"

    info = read_store_info(data)
    if cfg.crop > info.patch_size:
        raise ConfigError(f"invalid value {cfg.crop} for 'crop' (--crop): {data} holds {info.patch_size} px "
                          f"patches; use a crop up to {info.patch_size} (a multiple of {2 ** cfg.depth}) or 0")
    if ckpt is not None and ckpt["data"]["n_pairs"] != info.n_pairs:
        raise ConfigError(f"--resume: the run was trained on {ckpt['data']['n_pairs']} pairs, {data} has "
                          f"{info.n_pairs}; resume on the same store")
    train_rows, val_rows = split_by_source(info, cfg.val_fraction, cfg.seed)
    val_rows = val_rows[: cfg.val_max_pairs]
    # workers ship uint8/float16; floats are made on the device. Validation always sees whole
    # patches, so that its numbers do not depend on --crop
    dataset = PairDataset(info, compact=True, crop=cfg.crop)
    val_dataset = PairDataset(info, compact=True)

    vgg = load_vgg19(vgg_weights) if cfg.perceptual else None
    loss_fn = SantosLoss(vgg, cfg.lambda_r, cfg.lambda_p, cfg.lambda_vgg, cfg.lambda_style, cfg.mu).to(device)
    model = build_model(dataclasses.asdict(cfg))
    if init is not None:
        _load_init(model, init_state, init, init_config)
    model.to(device)
    optimizer = torch.optim.Adam(model.parameters(), lr=cfg.lr, betas=(cfg.beta1, cfg.beta2))
    scheduler = torch.optim.lr_scheduler.ReduceLROnPlateau(optimizer, mode="min", factor=cfg.lr_factor,
                                                           patience=cfg.lr_patience)
    scaler = torch.amp.GradScaler("cuda", enabled=use_amp)
    step, best_val = 0, math.inf
    if ckpt is not None:
        model.load_state_dict(ckpt["model"])
        optimizer.load_state_dict(ckpt["optimizer"])
        scheduler.load_state_dict(ckpt["scheduler"])
        if ckpt["scaler"]:
            scaler.load_state_dict(ckpt["scaler"])
        step, best_val = int(ckpt["step"]), float(ckpt["best_val"])

    data_meta = {"path": str(Path(data).resolve()), "format_version": FORMAT_VERSION,
                 "mask_alpha": info.mask_alpha, "n_pairs": info.n_pairs, "patch_size": info.patch_size}
    out.mkdir(parents=True, exist_ok=True)
    run_meta = {"train": dataclasses.asdict(cfg), "data": data_meta, "package_version": __version__}
    if init is not None:
        run_meta["init"] = str(Path(init).resolve())
    atomic_write_bytes(out / "config.json", json.dumps(run_meta, indent=2).encode())

    def checkpoint(path: Path) -> None:
        save_checkpoint(path, {
            "model": model.state_dict(), "optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict(),
            "scaler": scaler.state_dict(), "step": step, "best_val": best_val,
            "config": dataclasses.asdict(cfg), "data": data_meta,
            "format_version": FORMAT_VERSION, "package_version": __version__,
        })

    sampler = StreamSampler(train_rows, cfg.seed, start=step * cfg.batch_size,
                            count=max(0, cfg.max_steps - step) * cfg.batch_size, flips=cfg.flips,
                            crop=cfg.crop, patch_size=info.patch_size)
    loader = make_loader(dataset, sampler, cfg.batch_size, cfg.num_workers, pin_memory=device.type == "cuda")
    result: dict = {}
    bar = tqdm(total=cfg.max_steps, initial=step, disable=not progress, unit="step", dynamic_ncols=True)
    model.train()
    with open(out / "log.jsonl", "a") as log:
        meter = Throughput()
        for batch in loader:
            ldr, hdr, mask = expand_batch(batch, info.mask_alpha, device)
            with torch.autocast(device.type, dtype=torch.float16, enabled=use_amp):
                y_hat = model(ldr, mask)
            # the loss stays float32: exp(Y_hat) and the Gram sums (easily > 65504) overflow float16
            terms = loss_fn(y_hat.float(), ldr, mask, hdr)
            loss = optimizer_step(optimizer, scaler, terms["total"], step,
                                  f"lower --lr or check the store ({data}) for extreme HDR values")
            step += 1
            rate = meter.update(ldr.shape[0])
            bar.set_postfix(loss=f"{loss:.4f}", pairs_s=f"{rate:.1f}", refresh=False)
            bar.update(1)
            if step % cfg.log_every == 0 or step == cfg.max_steps:
                log.write(json.dumps({"kind": "train", "step": step, "loss": loss,
                                      **{k: terms[k].item() for k in ("l_r", "l_vgg", "l_style")},
                                      "lr": optimizer.param_groups[0]["lr"], "pairs_per_s": rate}) + "\n")
                log.flush()
            # on schedule only: an extra validation at the end of a shorter run would step the
            # lr scheduler and make a resumed run differ from an uninterrupted one
            if len(val_rows) and step % cfg.val_every == 0:
                result = _validate(model, loss_fn, val_dataset, val_rows, cfg, device,
                                   out / "previews" / f"step_{step:07d}.png")
                scheduler.step(result["val_loss"])
                log.write(json.dumps({"kind": "val", "step": step, **result}) + "\n")
                log.flush()
                bar.write(f"step {step}: " + ", ".join(f"{k} {v:.4g}" for k, v in result.items()))
                if result["val_loss"] < best_val:
                    best_val = result["val_loss"]
                    checkpoint(best_path)
            if step % cfg.ckpt_every == 0 or step == cfg.max_steps:
                checkpoint(last_path)
    bar.close()
    return {"step": step, "last": str(last_path), "best": str(best_path) if best_path.is_file() else None, **result}
