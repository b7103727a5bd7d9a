"""``evaluate(src, out, ...)``: score a trained model and baselines on held-out HDR frames.

For every test frame (``--src``, or the test split of a data manifest):

1. read it (:func:`hdrprep.io.read_frame`), optionally downscale it (``max_size``);
2. draw one evaluation camera for the whole frame, seeded by the frame's path
   (``candidates.frame_seed(seed, key)`` -> ``camera.sample_params``), expose it
   with ``camera.exposure_for`` on the whole frame and render it
   (``camera.render``): an 8-bit LDR input and the HDR target in the camera's
   scale (1.0 = the LDR's clipping point);
3. reconstruct the HDR with the checkpoint (the building blocks of
   ``hdrprep.train.predict``: the network pads to its stride and crops back)
   and with the baselines (:data:`BASELINES`);
4. show every image on one display model and score it with
   :mod:`hdrprep.quality` on the whole image and on the saturated pixels (the
   input's soft mask M < 1 in any channel), plus ColorVideoVDP where the
   ``pycvvdp`` package imports.

Writes ``out/metrics.csv`` (one row per image and method), ``out/summary.json``
(mean and median per method, display model, camera, seed, images) and one PNG
per image (``out/images/<key>.png``: input, predictions, ground truth, one
shared tonemap). Heavy imports (torch, pycvvdp) happen inside functions.

A test frame whose bytes are a source of the training store (``store`` or the
checkpoint's own ``data.path``) is refused before any work.
"""

from __future__ import annotations

import csv
import dataclasses
import io as _io
import json
import logging
import math
import os
from collections.abc import Callable
from pathlib import Path

import numpy as np

from hdrprep import quality
from hdrprep.errors import BadFrameError, ConfigError
from hdrprep.files import atomic_write_bytes, file_sha256

log = logging.getLogger(__name__)

__all__ = ["AKYUZ_GAMMA", "AKYUZ_LINEARISE", "AKYUZ_PEAK", "BASELINES", "akyuz2007", "check_overlap", "evaluate",
           "evaluation_camera", "format_table", "inverse_curve", "list_test_frames", "saturated_region"]

#: Baselines that need no checkpoint: the inverse of the camera's mean curve, and
#: the inverse tone-mapping operator of Akyuz et al. 2007.
BASELINES = ("inverse-curve", "akyuz2007")
MODEL = "model"
GROUND_TRUTH = "ground truth"

#: Akyuz et al. 2007 ("Do HDR displays support LDR content? A psychophysical evaluation",
#: ACM TOG 26(3), SIGGRAPH 2007): L = k ((Y - Y_min) / (Y_max - Y_min))^gamma with k the
#: peak of their HDR display (BrightSide DR37-P, 3000 cd/m^2) and gamma = 1 (linear
#: expansion), the values of the HDR Toolbox's reference implementation AkyuzEO.m
#: (Banterle et al.).
AKYUZ_PEAK = 3000.0
AKYUZ_GAMMA = 1.0
#: The LDR is linearised with a display gamma of 2.2 before the expansion (AkyuzEO's
#: gammaRemoval); an iTMO knows nothing of the camera that made the image.
AKYUZ_LINEARISE = 2.2
#: Rec. 709 luminance weights (the HDR Toolbox's lum()).
_LUM = np.array([0.2126, 0.7152, 0.0722])

#: Longest side of each panel of the per-image PNG.
PANEL_MAX = 512
_PREVIEW_MU = 500.0  # as hdrprep.preview.mu_law

CVVDP_DISPLAY = "standard_hdr_linear"


# --------------------------------------------------------------------------- baselines


def inverse_curve(ldr: np.ndarray, camera_cfg) -> np.ndarray:
    """Baseline (a): the LDR linearised with the inverse of the camera's mean curve, nothing more.

    Sigmoid (santos2020): f(H) = (1 + s) H^n / (H^n + s) with n and s the means of
    their draws (0.9 and 0.6), inverted analytically: with y = LDR / 255,
    H^n = s y / (1 + s - y), so f^-1(0) = 0 and f^-1(1) = 1. Gamma: H = y^g with
    g the middle of [gamma_min, gamma_max]. Linear: H = y. No exposure knowledge:
    the result stays in [0, 1], the camera's scale below its clipping point.

    Parameters
    ----------
    ldr : ndarray, uint8, (H, W, 3)
    camera_cfg : hdrprep.config.CameraConfig

    Returns
    -------
    ndarray, float32, (H, W, 3), values in [0, 1].
    """
    y = np.asarray(ldr, np.float64) / 255.0
    curve = camera_cfg.curve
    if curve == "sigmoid":
        n, s = camera_cfg.sigmoid_n_mean, camera_cfg.sigmoid_sigma_mean
        if not (n > 0 and s > 0):
            raise ConfigError(f"inverse-curve baseline: the mean sigmoid (n={n}, sigma={s}) has no inverse; "
                              "it needs n > 0 and sigma > 0")
        h = (s * y / (1.0 + s - y)) ** (1.0 / n)
    elif curve == "gamma":
        h = y ** ((camera_cfg.gamma_min + camera_cfg.gamma_max) / 2.0)
    elif curve == "linear":
        h = y
    else:
        raise ConfigError(f"inverse-curve baseline: camera curve '{curve}' has no mean curve here; "
                          "use a preset with curve sigmoid, gamma or linear, or drop --baseline inverse-curve")
    return h.astype(np.float32)


def akyuz2007(ldr: np.ndarray, *, peak: float = AKYUZ_PEAK, gamma: float = AKYUZ_GAMMA,
              linearise: float = AKYUZ_LINEARISE) -> np.ndarray:
    """Baseline (b): the inverse tone-mapping operator of Akyuz et al. 2007.

    Akyuz, Fleming, Riecke, Reinhard and Buelthoff, "Do HDR displays support LDR
    content? A psychophysical evaluation", ACM Trans. Graph. 26(3), 2007:
    ``L_hdr = k ((Y - Y_min) / (Y_max - Y_min))^gamma`` on the luminance Y of the
    linearised LDR, k = 3000 cd/m^2 (their display's peak), gamma = 1; colour is
    carried by scaling each channel with L_hdr / Y (the HDR Toolbox's
    ChangeLuminance; black pixels stay black). An image of one luminance maps to
    black (the normalisation is 0/0).

    Parameters
    ----------
    ldr : ndarray, uint8, (H, W, 3)
    peak, gamma, linearise : float
        k, gamma, and the display gamma that linearises the LDR.

    Returns
    -------
    ndarray, float64, (H, W, 3): ABSOLUTE display luminance in cd/m^2, in [0, peak]
    up to the colour ratios.
    """
    rgb = (np.asarray(ldr, np.float64) / 255.0) ** linearise
    lum = rgb @ _LUM
    lo, hi = float(lum.min()), float(lum.max())
    expanded = peak * ((lum - lo) / (hi - lo)) ** gamma if hi > lo else np.zeros_like(lum)
    with np.errstate(divide="ignore", invalid="ignore"):
        ratio = np.where(lum > 0, expanded / lum, 0.0)
    return rgb * ratio[..., None]


def saturated_region(ldr: np.ndarray, alpha: float) -> np.ndarray:
    """Pixels where the input's soft mask M = clip((1 - T) / (1 - alpha), 0, 1) is < 1 in any channel.

    Parameters
    ----------
    ldr : ndarray, uint8, (H, W, 3)
    alpha : float in (0, 1), the camera's ``mask_alpha`` (0.96)

    Returns
    -------
    ndarray, bool, (H, W)
    """
    from hdrprep.camera import soft_mask

    return (soft_mask(ldr, alpha) < 1.0).any(axis=2)


# --------------------------------------------------------------------------- frames and camera


def evaluation_camera(frame: np.ndarray, key: str, seed: int, config, curves=None):
    """The seeded evaluation capture of a whole frame.

    Parameters
    ----------
    frame : ndarray, float32, (H, W, 3), scene-linear, >= 0
    key : str
        The frame's POSIX path relative to ``--src``: with ``seed`` it fixes the camera.
    seed : int
        Global evaluation seed, in [0, 2**63).
    config : hdrprep.config.Config
    curves : hdrprep.camera.CurveTable, optional (curve 'table')

    Returns
    -------
    ldr : ndarray, uint8, (H, W, 3)
    target : ndarray, float32, (H, W, 3), linear, 1.0 = the LDR's clipping point
    params : hdrprep.camera.CameraParams
    """
    from hdrprep import camera
    from hdrprep.candidates import frame_seed

    params = camera.sample_params(np.random.default_rng(frame_seed(seed, key)), config.camera, curves=curves)
    params = dataclasses.replace(params, exposure=camera.exposure_for(frame, params.clip_quantile))
    ldr, target = camera.render(frame, params, config.camera, curves)
    return ldr, target, params


def _downscale(frame: np.ndarray, max_size: int | None) -> np.ndarray:
    """Area-average the frame so that its longest side is at most ``max_size`` (None: unchanged)."""
    import cv2

    h, w = frame.shape[:2]
    if max_size is None or max(h, w) <= max_size:
        return frame
    f = max_size / max(h, w)
    size = (max(1, round(w * f)), max(1, round(h * f)))
    return np.ascontiguousarray(cv2.resize(frame, size, interpolation=cv2.INTER_AREA), dtype=np.float32)


def list_test_frames(src: str | os.PathLike, manifest: str | os.PathLike | None = None) -> list[str]:
    """Sorted POSIX keys (relative to ``src``) of the frames to evaluate.

    With ``manifest``: that manifest's test split (``load_manifest(manifest).test_frames(src)``);
    without: every .exr/.hdr file under ``src`` (as ``hdrprep build`` finds them).
    """
    src = Path(src)
    if not src.is_dir():
        raise ConfigError(f"--src {src}: not a folder; give the folder of test HDR frames")
    if manifest is not None:
        from hdrprep.manifest import load_manifest

        keys = load_manifest(manifest).test_frames(src)
        if not keys:
            raise ConfigError(f"--manifest {manifest}: no test-split frame found under --src {src}; "
                              "declare a 'test' split in the manifest or point --src at the data folder")
        return keys
    from hdrprep.build import discover

    keys, _ = discover(src)
    if not keys:
        raise ConfigError(f"--src {src}: no .exr or .hdr file found; give the folder of test HDR frames")
    return keys


def check_overlap(hashes: dict[str, str], store: str | os.PathLike, how: str = "--store") -> int:
    """Refuse test frames that are sources of a training store.

    Parameters
    ----------
    hashes : dict
        ``{frame key: sha256 hex}`` of the test frames.
    store : path
        A store written by ``hdrprep build``; its ``sources`` attribute lists the
        sha256 of every frame it was built from.
    how : str
        Where the store came from, for the message.

    Returns
    -------
    int, the number of sources compared against.

    Raises
    ------
    ConfigError
        Naming the first overlapping frame and the store, or when ``store`` is not an hdrprep store.
    """
    from hdrprep.store import read_attrs

    attrs = read_attrs(store)
    if attrs is None or not isinstance(attrs.get("sources"), list):
        raise ConfigError(f"{how} {store}: not an hdrprep store (no 'hdrprep' attribute with 'sources' in "
                          f"{Path(store) / 'zarr.json'}); give the store the model was trained on")
    trained = {s.get("sha256"): s.get("source") for s in attrs["sources"] if isinstance(s, dict) and s.get("sha256")}
    for key, digest in hashes.items():
        if digest in trained:
            raise ConfigError(
                f"test frame {key} is a training source of the store {store} ({how}; it is the store's "
                f"'{trained[digest]}', sha256 {digest[:16]}...): a test split must never overlap the training "
                "data; evaluate on frames the store was not built from, or build it with --manifest so the "
                "manifest's test split is excluded")
    return len(trained)


# --------------------------------------------------------------------------- the network


class _Network:
    """A checkpoint's MaskedUNet, run as ``hdrprep predict`` runs it (mask, forward, Santos Eq. 1)."""

    def __init__(self, checkpoint: str | os.PathLike, device: str):
        from hdrprep.train.loop import _device, build_model, load_checkpoint

        self.device = _device(device)
        self.ckpt = load_checkpoint(checkpoint)
        data = self.ckpt.get("data") or {}
        self.alpha = float(data.get("mask_alpha", 0.96))
        if not 0 < self.alpha < 1:
            raise ConfigError(f"checkpoint {checkpoint}: mask_alpha {self.alpha!r} is not in (0, 1)")
        self.model = build_model(self.ckpt["config"])
        self.model.load_state_dict(self.ckpt["model"])
        self.model.to(self.device).eval()

    def __call__(self, ldr: np.ndarray) -> np.ndarray:
        """uint8 (H, W, 3) LDR -> float32 (H, W, 3) linear HDR, camera scale (1.0 = clipping point)."""
        import torch

        from hdrprep.train.dataset import soft_mask
        from hdrprep.train.model import reconstruct

        x = torch.from_numpy(np.ascontiguousarray(ldr, np.float32) / np.float32(255)).permute(2, 0, 1)[None]
        x = x.to(self.device)
        mask = soft_mask(x, self.alpha)
        with torch.no_grad():  # the model pads to its stride and crops back
            hdr = reconstruct(x, mask, self.model(x, mask).float())
        return hdr[0].permute(1, 2, 0).cpu().numpy().astype(np.float32)


# --------------------------------------------------------------------------- ColorVideoVDP


class _Cvvdp:
    """ColorVideoVDP (``pycvvdp``, the 'eval' extra) on absolute linear BT.709 RGB, or a reason why not."""

    def __init__(self, peak: float, device: str):
        self.metric, self.error = None, None
        try:
            import pycvvdp
        except Exception as exc:  # noqa: BLE001 -- not installed, or its torch and torchvision do not import together
            self.error = (f"ColorVideoVDP not computed: cannot import pycvvdp ({type(exc).__name__}: "
                          f"{str(exc).splitlines()[0] if str(exc) else exc}); install the 'eval' extra "
                          "(pip install 'hdrprep[eval]', needs a torchvision that matches torch)")
            return
        try:
            import torch

            dev = torch.device("cuda" if device == "auto" and torch.cuda.is_available() else
                               "cpu" if device == "auto" else device)
            # standard_hdr_linear's geometry (30-inch 4K at 2 display heights, 10 lux), with its peak raised
            # from 1500 to ours, so that its 'linear' EOTF does not clip what the other metrics see
            photometry = pycvvdp.vvdp_display_photo_eotf(peak, contrast=1_000_000, source_colorspace="BT.709-linear",
                                                         E_ambient=10)
            self.metric = pycvvdp.cvvdp(display_name=CVVDP_DISPLAY, display_photometry=photometry, quiet=True,
                                        device=dev)
        except Exception as exc:  # noqa: BLE001 -- an optional metric never stops the evaluation
            self.error = f"ColorVideoVDP not computed: pycvvdp failed to start ({type(exc).__name__}: {exc})"

    def __call__(self, pred: np.ndarray, ref: np.ndarray) -> float:
        """JOD (10 = identical) of display images in cd/m^2, (H, W, 3); NaN after a failure (recorded)."""
        if self.metric is None:
            return math.nan
        import torch

        try:
            jod, _ = self.metric.predict(torch.from_numpy(np.ascontiguousarray(pred, np.float32)),
                                         torch.from_numpy(np.ascontiguousarray(ref, np.float32)), dim_order="HWC")
            return float(jod)
        except Exception as exc:  # noqa: BLE001 -- an optional metric never stops the evaluation
            self.error = f"ColorVideoVDP failed ({type(exc).__name__}: {exc}); its column is empty"
            self.metric = None
            return math.nan


# --------------------------------------------------------------------------- pictures


def _tonemap(img: np.ndarray, norm: float) -> np.ndarray:
    """uint8 mu-law image (mu 500, as hdrprep.preview.mu_law) of a camera-scale HDR with a given scale."""
    x = np.clip(np.asarray(img, np.float64) / norm, 0, 1)
    return (np.log1p(_PREVIEW_MU * x) / np.log1p(_PREVIEW_MU) * 255 + 0.5).astype(np.uint8)


def _sheet(panels: list[tuple[str, np.ndarray]]) -> np.ndarray:
    """Side-by-side uint8 panels, each scaled to at most PANEL_MAX on its longest side, with a title strip."""
    import cv2

    out = []
    for title, img in panels:
        h, w = img.shape[:2]
        f = min(1.0, PANEL_MAX / max(h, w))
        if f < 1:
            img = cv2.resize(img, (max(1, round(w * f)), max(1, round(h * f))), interpolation=cv2.INTER_AREA)
        strip = np.zeros((18, img.shape[1], 3), np.uint8)
        cv2.putText(strip, title, (3, 13), cv2.FONT_HERSHEY_SIMPLEX, 0.4, (230, 230, 230), 1, cv2.LINE_AA)
        gap = np.zeros((img.shape[0] + 18, 4, 3), np.uint8)
        out += [np.concatenate([strip, img], axis=0), gap]
    return np.concatenate(out[:-1], axis=1)


# --------------------------------------------------------------------------- the run


def _stats(values: list[float]) -> dict:
    a = np.asarray(values, np.float64)
    a = a[~np.isnan(a)]
    if not a.size:
        return {"mean": None, "median": None, "n": 0}
    return {"mean": _num(float(np.mean(a))), "median": _num(float(np.median(a))), "n": int(a.size)}


def _num(v):
    """JSON-safe float: NaN -> None, +-inf -> 'inf'/'-inf' (identical images give an infinite PSNR)."""
    if isinstance(v, float):
        if math.isnan(v):
            return None
        if math.isinf(v):
            return "inf" if v > 0 else "-inf"
    return v


METRIC_COLUMNS = [m + s for m in (*quality.METRICS, "cvvdp_jod") for s in ("", "_sat")]


def evaluate(src: str | os.PathLike, out: str | os.PathLike, *, checkpoint: str | os.PathLike | None = None,
             baselines: tuple[str, ...] | None = None, manifest: str | os.PathLike | None = None, seed: int = 0,
             store: str | os.PathLike | None = None, device: str = "auto", max_size: int | None = None,
             preset: str | os.PathLike | None = None, display_peak: float = quality.DISPLAY_PEAK,
             cvvdp: bool = True, progress: bool = False, echo: Callable[[str], None] | None = None) -> dict:
    """Evaluate a checkpoint and/or baselines on test frames; write the report into ``out``.

    Parameters
    ----------
    src : folder of test HDR frames (.exr, .hdr), searched recursively
    out : report folder (created; files in it are replaced)
    checkpoint : a checkpoint written by ``hdrprep train`` (optional when baselines are given)
    baselines : names from :data:`BASELINES`; None = all of them
    manifest : data_manifest.yaml: evaluate its test split under ``src`` instead of every frame
    seed : global seed of the evaluation cameras, in [0, 2**63)
    store : training store to check for overlap (the checkpoint's own store is checked too, where it exists)
    device : auto, cpu, cuda or cuda:N (network and ColorVideoVDP)
    max_size : downscale frames (area average) whose longest side exceeds this, to save time
    preset : configuration preset whose camera and ingest policy are used (default santos2020)
    display_peak : cd/m^2 the reference's maximum is shown at (see :mod:`hdrprep.quality`)
    cvvdp : compute ColorVideoVDP where pycvvdp imports
    progress : tqdm bar over frames
    echo : where one-line notes go (e.g. click.echo); default: the logger

    Returns
    -------
    dict, the content of ``summary.json``.
    """
    from hdrprep import camera
    from hdrprep.config import load_preset
    from hdrprep.io import read_frame, write_png

    say = echo or log.warning
    baselines = BASELINES if baselines is None else tuple(dict.fromkeys(baselines))
    unknown = [b for b in baselines if b not in BASELINES]
    if unknown:
        raise ConfigError(f"unknown baseline {unknown[0]!r}; choose from {', '.join(BASELINES)}")
    if checkpoint is None and not baselines:
        raise ConfigError("nothing to evaluate: give --checkpoint, --baseline NAME, or both")
    if not 0 <= seed < 2**63:
        raise ConfigError(f"invalid value {seed!r} for --seed: use an integer in [0, 2**63)")
    if max_size is not None and max_size < 16:
        raise ConfigError(f"invalid value {max_size!r} for --max-size: use at least 16 pixels")
    if not (math.isfinite(display_peak) and quality.PU21_L_MIN < display_peak <= quality.PU21_L_MAX):
        raise ConfigError(f"invalid value {display_peak!r} for --display-peak: use a peak in (0.005, 10000] cd/m^2, "
                          "e.g. 4000")
    config = load_preset(preset)
    curves = camera.load_curves(config.camera)
    if "inverse-curve" in baselines:
        inverse_curve(np.zeros((1, 1, 3), np.uint8), config.camera)  # refuse an uninvertible camera before any work
    src, out = Path(src), Path(out)
    keys = list_test_frames(src, manifest)

    # the overlap check comes first: no work, no file, when a test frame was trained on
    hashes = {k: file_sha256(src / k)[1] for k in keys}
    overlap = {"checked": [], "not_checked": []}
    if store is not None:
        n = check_overlap(hashes, store, "--store")
        overlap["checked"].append({"store": str(store), "how": "--store", "sources": n})
    network = _Network(checkpoint, device) if checkpoint is not None else None
    if network is not None:
        trained_on = (network.ckpt.get("data") or {}).get("path")
        if trained_on and Path(trained_on).is_dir():
            if store is None or Path(trained_on).resolve() != Path(store).resolve():
                n = check_overlap(hashes, trained_on, "the checkpoint's training store")
                overlap["checked"].append({"store": str(trained_on), "how": "checkpoint data.path", "sources": n})
        elif trained_on:
            overlap["not_checked"].append({"store": str(trained_on), "how": "checkpoint data.path",
                                           "reason": "not found on this machine"})
            say(f"note: the checkpoint's training store {trained_on} is not here; test/train overlap not checked "
                "against it (pass --store)")

    methods = ([MODEL] if network is not None else []) + list(baselines)
    vdp = _Cvvdp(display_peak, device) if cvvdp else None
    if vdp is not None and vdp.error:
        say(vdp.error)
    out.mkdir(parents=True, exist_ok=True)
    rows, images, skipped = [], [], []
    alpha = config.camera.mask_alpha
    from tqdm import tqdm

    for key in tqdm(keys, disable=not progress, unit="frame", dynamic_ncols=True):
        try:
            frame, _ = read_frame(src / key, ingest=config.ingest)
            frame = _downscale(frame, max_size)
            ldr, target, params = evaluation_camera(frame, key, seed, config, curves)
        except BadFrameError as exc:
            skipped.append({"image": key, "reason": exc.reason, "detail": exc.detail or str(exc)})
            say(f"skip {key}: {exc.reason} ({exc.detail})")
            continue
        except ValueError as exc:  # exposure_for: an all-black frame cannot be exposed
            skipped.append({"image": key, "reason": "no-signal", "detail": str(exc)})
            say(f"skip {key}: no-signal ({exc})")
            continue
        region = saturated_region(ldr, alpha)
        ref_max = float(target.max())
        ref = quality.to_display(target, ref_max, display_peak)
        preds: dict[str, np.ndarray] = {}  # camera scale
        if network is not None:
            preds[MODEL] = network(ldr)
        if "inverse-curve" in baselines:
            preds["inverse-curve"] = inverse_curve(ldr, config.camera)
        if "akyuz2007" in baselines:  # absolute cd/m^2 -> camera scale, so the display model shows it as it is
            preds["akyuz2007"] = (akyuz2007(ldr) * (ref_max / display_peak)).astype(np.float32)
        cam = params.to_dict()
        h, w = ldr.shape[:2]
        for method, pred in preds.items():
            shown = quality.to_display(pred, ref_max, display_peak)
            row = {"image": key, "method": method, **quality.all_metrics(shown, ref, region, peak=display_peak)}
            if vdp is not None:
                row["cvvdp_jod"] = vdp(shown, ref)
                # saturated region alone: the prediction's unsaturated pixels replaced by the reference's
                row["cvvdp_jod_sat"] = vdp(np.where(region[..., None], shown, ref), ref) if region.any() \
                    else math.nan
            else:
                row["cvvdp_jod"] = row["cvvdp_jod_sat"] = math.nan
            row.update(width=w, height=h, saturated_fraction=float(region.mean()), reference_max=ref_max, **cam)
            rows.append(row)
        norm = max(float(np.percentile(target, 99.9)), 1.0)
        panels = [("input LDR", np.ascontiguousarray(ldr))]
        panels += [(m, _tonemap(p, norm)) for m, p in preds.items()]
        panels.append((GROUND_TRUTH, _tonemap(target, norm)))
        png = out / "images" / (key.replace("/", "__") + ".png")
        png.parent.mkdir(parents=True, exist_ok=True)
        write_png(png, _sheet(panels))
        images.append({"image": key, "sha256": hashes[key], "width": w, "height": h, "png": str(png.relative_to(out)),
                       "saturated_fraction": float(region.mean()), "camera": cam})
    if vdp is not None and vdp.error and vdp.metric is None and vdp.error.startswith("ColorVideoVDP failed"):
        say(vdp.error)

    _write_csv(out / "metrics.csv", rows)
    summary = {
        "methods": {m: {c: _stats([r[c] for r in rows if r["method"] == m]) for c in METRIC_COLUMNS}
                    for m in methods},
        "higher_is_better": {**{m: hb for m, hb in quality.METRICS.items()}, "cvvdp_jod": True},
        "images": images,
        "skipped": skipped,
        "seed": seed,
        "max_size": max_size,
        "checkpoint": None if network is None else {
            "path": str(checkpoint), "step": network.ckpt.get("step"), "mask_alpha": network.alpha,
            "width": network.ckpt["config"].get("width"), "depth": network.ckpt["config"].get("depth"),
            "data": {k: v for k, v in (network.ckpt.get("data") or {}).items()}},
        "baselines": {b: _BASELINE_TEXT[b] for b in baselines},
        "camera": {"preset": config.name, **dataclasses.asdict(config.camera),
                   "how": "one capture per whole frame: params = sample_params(default_rng(frame_seed(seed, key))), "
                          "exposure = exposure_for(frame, clip_quantile), (ldr, target) = render(frame, params)"},
        "saturated_region": f"pixels where the input's soft mask M = clip((1 - LDR/255) / (1 - {alpha}), 0, 1) "
                            "is < 1 in any channel",
        "display_model": {
            "peak_cd_m2": display_peak,
            "mapping": "display = clip(x * peak / max(reference), 0, peak) for every image x in the camera's "
                       "scale; akyuz2007 is already absolute (its own peak 3000 cd/m^2) and only clipped",
            "source": "gfxdisp/pu21 README and matlab/examples/ex_hdr_images.m (I_ref/max(I_ref(:)) * L_peak)",
        },
        "metrics": {
            "gamma_mse": "mean(((pred/peak)^(1/2.2) - (ref/peak)^(1/2.2))^2); Santos et al. 2020, Sec. 5.1: "
                         "'MSE values on the gamma corrected images' (gamma and normalisation ours)",
            "mulaw_psnr": "10 log10(1/MSE) of log(1 + 5000 x)/log(1 + 5000), x = image/peak (= /max(reference)), "
                          "as hdrprep.train.metrics.psnr_mulaw",
            "pu21_psnr": "10 log10(256^2/MSE) of PU21 banding_glare (Mantiuk & Azimi, PCS 2021) of each RGB channel "
                         "in cd/m^2 clamped to [0.005, 10000], as gfxdisp/pu21 pu21_metric(..., 'PSNR')",
            "cvvdp_jod": f"ColorVideoVDP JOD (pycvvdp), display '{CVVDP_DISPLAY}' geometry with a linear BT.709 "
                         f"photometric model of peak {display_peak} cd/m^2, contrast 1e6, 10 lux; _sat: the "
                         "prediction's unsaturated pixels replaced by the reference's",
            "_sat": "the same metric averaged over the saturated region only (normalisation of the whole image)",
        },
        "cvvdp": {"computed": bool(vdp is not None and vdp.metric is not None),
                  "note": None if vdp is None else vdp.error} if cvvdp else {"computed": False, "note": "--no-cvvdp"},
        "overlap_check": overlap,
        "source": str(src), "manifest": None if manifest is None else str(manifest),
    }
    atomic_write_bytes(out / "summary.json", json.dumps(_json_safe(summary), indent=1).encode())
    return summary


_BASELINE_TEXT = {
    "inverse-curve": "LDR linearised with the inverse of the camera's mean curve (santos2020: sigmoid "
                     "(1+s)H^n/(H^n+s), n = 0.9, s = 0.6), no exposure knowledge; values in [0, 1]",
    "akyuz2007": "Akyuz et al. 2007, 'Do HDR displays support LDR content? A psychophysical evaluation', ACM TOG "
                 "26(3): L = k ((Y - Ymin)/(Ymax - Ymin))^gamma, k = 3000 cd/m^2, gamma = 1, on the luminance of "
                 "the LDR linearised with gamma 2.2; colour by the ratio L/Y (HDR Toolbox AkyuzEO)",
}


def _json_safe(obj):
    if isinstance(obj, dict):
        return {k: _json_safe(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_json_safe(v) for v in obj]
    if isinstance(obj, (np.floating, np.integer)):
        obj = obj.item()
    return _num(obj)


def _write_csv(path: Path, rows: list[dict]) -> None:
    """metrics.csv: fixed columns first, then the camera parameters; NaN as an empty cell."""
    first = ["image", "method", *METRIC_COLUMNS, "saturated_fraction", "width", "height", "reference_max"]
    cols = first + [c for c in (rows[0] if rows else {}) if c not in first]
    buf = _io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=cols, lineterminator="\n")
    writer.writeheader()
    for r in rows:
        writer.writerow({c: "" if isinstance(r.get(c), float) and math.isnan(r[c]) else r.get(c) for c in cols})
    atomic_write_bytes(path, buf.getvalue().encode())


def _cell(v, metric: str) -> str:
    if v is None:
        return "-"
    if isinstance(v, str):  # 'inf'
        return v
    return f"{v:.4g}" if metric.startswith("gamma_mse") else f"{v:.2f}"


def format_table(summary: dict) -> str:
    """The console table: one row per method, the mean (median) of every metric over the images."""
    cols = [c for c in METRIC_COLUMNS if not c.startswith("cvvdp") or summary["cvvdp"]["computed"]]
    head = ["method", *cols]
    lines = [[method] + [f"{_cell(stats[c]['mean'], c)} ({_cell(stats[c]['median'], c)})" for c in cols]
             for method, stats in summary["methods"].items()]
    widths = [max(len(r[i]) for r in [head, *lines]) for i in range(len(head))]
    text = ["  ".join(h.ljust(w) for h, w in zip(head, widths))]
    text += ["  ".join(c.ljust(w) for c, w in zip(r, widths)) for r in lines]
    n = len(summary["images"])
    text.append(f"mean (median) over {n} image(s); _sat = saturated pixels only; gamma_mse lower is better, "
                f"PSNRs (dB) and JOD higher; display peak {summary['display_model']['peak_cd_m2']:g} cd/m^2")
    return "\n".join(text)
