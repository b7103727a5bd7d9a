"""Typed, frozen configuration and YAML presets.

A :class:`Config` is a tree of frozen dataclasses. Its defaults are the
``santos2020`` preset (``pipelines/santos2020.yaml`` states the same values and
a test checks that they agree). Presets are YAML files with the same nesting as
the dataclasses, read by the one loader of :mod:`hdrprep._typed`; unknown keys
and out-of-range values raise :class:`~hdrprep.errors.ConfigError` naming the
dotted key and the fix. :class:`TrainConfig` holds the trainer's options (it
lives here, not beside the torch code, so that the CLI can build its flags
without importing torch).
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any, Literal

from hdrprep._typed import check, context, load, override, read_yaml, setting
from hdrprep.errors import ConfigError

__all__ = [
    "PRESET_DIR_ENV",
    "CameraConfig",
    "Config",
    "CropScale",
    "IngestConfig",
    "MetricConfig",
    "OutputConfig",
    "PretrainConfig",
    "SamplingConfig",
    "SelectConfig",
    "TrainConfig",
    "load_preset",
    "preset_names",
]

PRESET_DIR_ENV = "HDRPREP_PRESETS"


@dataclass(frozen=True)
class IngestConfig:
    """How frames are read and validated.

    nonfinite : 'reject' skips frames with NaN/Inf pixels; 'repair' replaces
        them (NaN -> 0, +Inf -> largest finite value of the frame) and counts them.
    negative : 'reject' skips frames with negative values; 'clamp' sets them to 0
        and counts them.
    part : name of the EXR part (multipart files) to read; None = first part
        with colour channels.
    """

    nonfinite: Literal["reject", "repair"] = "reject"
    negative: Literal["reject", "clamp"] = "clamp"
    part: str | None = None


@dataclass(frozen=True)
class CameraConfig:
    """Virtual camera of Eilertsen et al. 2017 (the numbers: README, "The science").

    ``mode`` chooses the order and arithmetic of the steps: ``santos2020`` (the
    default: noise only in the LDR, a gray-preserving jitter with the saturation
    clipped, so the score's detail layer can be computed once per frame) or
    ``eilertsen2017`` (HDR-CNN's ``virtualcamera.cpp`` step by step: clamps, noise
    kept in the target, OpenCV's HSV jitter keeping V, no saturation clip; see
    :mod:`hdrprep.camera`). Every random step can be switched off.
    ``exposure_mode`` chooses how the exposure (a scale such that a fraction
    U(clip_low, clip_high) of channel values stays below 1) is found: once per
    frame (``frame``), per candidate window exactly (``window``), or per window
    from virtualcamera.cpp's 256-bin histogram of the square root (``histogram``).
    """

    mode: Literal["santos2020", "eilertsen2017"] = "santos2020"
    exposure_mode: Literal["frame", "window", "histogram"] = "frame"
    clip_low: float = 0.85
    clip_high: float = 0.95
    curve: Literal["sigmoid", "gamma", "table", "linear"] = "sigmoid"
    sigmoid_n_mean: float = 0.9
    sigmoid_n_std: float = 0.1
    sigmoid_n_min: float = 0.2
    sigmoid_n_max: float = 2.5
    sigmoid_sigma_mean: float = 0.6
    sigmoid_sigma_std: float = 0.1
    sigmoid_sigma_min: float = 0.0
    sigmoid_sigma_max: float = 5.0
    gamma_min: float = 1.8
    gamma_max: float = 2.6
    table_path: str | None = None
    noise: bool = True
    noise_sigma_max: float = 0.01
    color_jitter: bool = True
    hue_std_deg: float = 7.0
    sat_std: float = 0.1
    jpeg: bool = True
    jpeg_quality_min: int = 30
    jpeg_quality_span: int = 74
    mask_alpha: float = 0.96

    def __post_init__(self) -> None:
        check(0.0 < self.clip_low <= self.clip_high < 1.0, "camera.clip_low/clip_high",
               (self.clip_low, self.clip_high), "use 0 < clip_low <= clip_high < 1, e.g. 0.85 and 0.95")
        check(self.sigmoid_n_min > 0 and self.sigmoid_n_min <= self.sigmoid_n_max, "camera.sigmoid_n_min",
               self.sigmoid_n_min, "use 0 < sigmoid_n_min <= sigmoid_n_max")
        check(0 <= self.sigmoid_sigma_min <= self.sigmoid_sigma_max, "camera.sigmoid_sigma_min",
               self.sigmoid_sigma_min, "use 0 <= sigmoid_sigma_min <= sigmoid_sigma_max")
        check(self.sigmoid_n_std >= 0 and self.sigmoid_sigma_std >= 0, "camera.sigmoid_*_std",
               (self.sigmoid_n_std, self.sigmoid_sigma_std), "standard deviations must be >= 0")
        check(0 < self.gamma_min <= self.gamma_max, "camera.gamma_min", self.gamma_min,
               "use 0 < gamma_min <= gamma_max")
        check(self.curve != "table" or bool(self.table_path), "camera.table_path", self.table_path,
               "curve 'table' needs table_path: a DoRF-format text file of curves")
        check(0 <= self.noise_sigma_max <= 0.5, "camera.noise_sigma_max", self.noise_sigma_max,
               "use a value in [0, 0.5]; Eilertsen uses 0.01")
        check(self.hue_std_deg >= 0 and self.sat_std >= 0, "camera.hue_std_deg/sat_std",
               (self.hue_std_deg, self.sat_std), "standard deviations must be >= 0")
        check(1 <= self.jpeg_quality_min <= 100, "camera.jpeg_quality_min", self.jpeg_quality_min,
               "use an integer in [1, 100]")
        check(self.jpeg_quality_span >= 0, "camera.jpeg_quality_span", self.jpeg_quality_span,
               "use an integer >= 0")
        check(0.0 < self.mask_alpha < 1.0, "camera.mask_alpha", self.mask_alpha,
               "use a threshold in (0, 1); the paper uses 0.96")


@dataclass(frozen=True)
class MetricConfig:
    """Patch metric of Santos et al. 2020, Algorithm 1.

    normalisation : 'saturated' divides the weighted gradient sum by the sum of
        the weights (1 - M) (the paper's text); 'patch' divides by the pixel
        count (Algorithm 1 as written).
    mode : 'exact' reproduces the per-window oracle; 'frame' takes window
        borders from the frame (faster, documented agreement).
    prescreen_margin : with a score threshold, each candidate is first scored
        on the deterministic camera's mask (exposure, curve, quantisation), and
        the full camera (jitter, noise, JPEG) is rendered and scored only where
        that prescore is >= threshold - margin; the others keep the prescore
        and are discarded. None renders and scores every candidate in full.
        Ignored with ``select.target_pairs`` or ``select.keep_all``, where every
        candidate's score can decide. ``bench/prescreen.py`` measures the
        decisions it changes (0 of 332 keeps on the real fixtures at 0.1).
    """

    normalisation: Literal["saturated", "patch"] = "saturated"
    mode: Literal["exact", "frame"] = "exact"
    sigma_color: float = 100.0
    sigma_space: float = 10.0
    prescreen_margin: float | None = 0.1

    def __post_init__(self) -> None:
        check(self.prescreen_margin is None or self.prescreen_margin >= 0, "metric.prescreen_margin",
               self.prescreen_margin, "use a margin >= 0, or null to score every candidate on the full camera")
        check(self.sigma_color > 0, "metric.sigma_color", self.sigma_color, "use a positive value (paper: 100)")
        check(0 < self.sigma_space <= 50, "metric.sigma_space", self.sigma_space,
               "use a value in (0, 50] (paper: 10)")


@dataclass(frozen=True)
class SelectConfig:
    """Which candidates become training pairs.

    A candidate is eligible when its saturated fraction is above
    ``min_saturated_fraction`` (0 = at least one saturated pixel) and its score
    is >= ``threshold``. With ``target_pairs`` set, the eligible candidates with
    the highest scores are kept (at most ``per_frame_cap`` per frame). ``keep_all``
    disables selection (every candidate becomes a pair). ``max_overlap`` drops a
    candidate whose window overlaps a better kept one of its frame by more than this
    intersection over union; ``per_frame_cap`` keeps at most that many per frame.
    """

    threshold: float = 0.85
    min_saturated_fraction: float = 0.01
    target_pairs: int | None = None
    per_frame_cap: int | None = None
    max_overlap: float | None = 0.5
    keep_all: bool = False

    def __post_init__(self) -> None:
        check(self.threshold >= 0, "select.threshold", self.threshold, "use a score >= 0 (paper: 0.85)")
        check(0 <= self.min_saturated_fraction < 1, "select.min_saturated_fraction",
               self.min_saturated_fraction, "use a fraction in [0, 1)")
        check(self.target_pairs is None or self.target_pairs > 0, "select.target_pairs", self.target_pairs,
               "use a positive count (e.g. 100000) or leave it unset")
        check(self.max_overlap is None or 0 <= self.max_overlap < 1, "select.max_overlap", self.max_overlap,
              "use an intersection over union in [0, 1), e.g. 0.5, or leave it unset")
        check(self.per_frame_cap is None or self.per_frame_cap > 0, "select.per_frame_cap", self.per_frame_cap,
               "use a positive count or leave it unset")


@dataclass(frozen=True)
class CropScale:
    """Range of the source crop's side as a fraction of the frame width: U(low, high)."""

    low: float = 0.2
    high: float = 0.6

    def __post_init__(self) -> None:
        check(0 < self.low <= self.high <= 1, "sampling.scale.low/high", (self.low, self.high),
              "use 0 < low <= high <= 1, e.g. 0.2 and 0.6 (Eilertsen et al. 2017)")


@dataclass(frozen=True)
class SamplingConfig:
    """Candidate windows: ``patches_per_frame`` windows of ``patch_size`` squared.

    scale : None (default, santos2020) takes every window at native resolution,
        ``patch_size`` pixels of the frame. A range ``{low, high}`` takes a square
        crop of side ``floor(U(low, high) * frame width)``, clamped to
        [patch_size, min(frame height, width)], and resizes it to ``patch_size``
        (bilinear, as OpenCV's ``cv::resize``): Eilertsen et al.'s 0.2-0.6.
    flip : probability that a window is mirrored left-right (Eilertsen: 0.5;
        santos2020: 0, the trainer flips instead).
    """

    patch_size: int = 512
    patches_per_frame: int = 250
    scale: CropScale | None = None
    flip: float = 0.0

    def __post_init__(self) -> None:
        check(self.patch_size >= 32 and self.patch_size % 16 == 0, "sampling.patch_size", self.patch_size,
               "use a multiple of 16 that is at least 32 (paper: 512)")
        check(self.patches_per_frame >= 1, "sampling.patches_per_frame", self.patches_per_frame,
               "use a positive count (paper: 250)")
        check(0 <= self.flip <= 1, "sampling.flip", self.flip,
              "use a probability in [0, 1] (Eilertsen: 0.5; santos2020: 0)")


@dataclass(frozen=True)
class OutputConfig:
    """On-disk layout: pairs per Zarr shard and the lossless codec."""

    pairs_per_shard: int = 16
    compressor: Literal["zstd", "blosc-zstd", "none"] = "blosc-zstd"
    level: int = 1

    def __post_init__(self) -> None:
        check(self.pairs_per_shard >= 1, "output.pairs_per_shard", self.pairs_per_shard, "use a positive count")
        check(0 <= self.level <= 22, "output.level", self.level, "use a zstd level in [0, 22]")


@dataclass(frozen=True)
class Config:
    """The whole build configuration. Defaults = the ``santos2020`` preset."""

    name: str = "santos2020"
    seed: int = 0
    sampling: SamplingConfig = field(default_factory=SamplingConfig)
    ingest: IngestConfig = field(default_factory=IngestConfig)
    camera: CameraConfig = field(default_factory=CameraConfig)
    metric: MetricConfig = field(default_factory=MetricConfig)
    select: SelectConfig = field(default_factory=SelectConfig)
    output: OutputConfig = field(default_factory=OutputConfig)

    def __post_init__(self) -> None:
        check(0 <= self.seed < 2**63, "seed", self.seed, "use an integer in [0, 2**63)")

    def to_dict(self) -> dict:
        """Nested plain dict (YAML/JSON-ready)."""
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: Mapping) -> Config:
        """Build from a nested dict; unknown keys and bad types raise ConfigError naming the dotted key."""
        return load(cls, data)

    def override(self, **dotted: Any) -> Config:
        """Return a copy with dotted keys replaced, e.g. ``override(**{"select.threshold": 0.5})``.

        ``None`` values are ignored, so CLI flags that were not given pass through.
        """
        return override(self, dotted)


def _check_crop(crop: int, depth: int, alternative: str) -> None:
    """A crop side the network takes: a multiple of its stride 2**depth."""
    stride = 2 ** min(depth, 30)
    check(crop % stride == 0, "crop", crop, f"use --crop {alternative}a multiple of the network stride "
          f"2**depth = {stride} (depth {depth}), e.g. --crop {max(stride, crop // stride * stride)}")


@dataclass(frozen=True)
class TrainConfig:
    """Trainer options; defaults follow Santos et al. 2020 (Adam 2e-4, batch 4, lr halved on plateau).

    Each field's ``help`` metadata documents it (``hdrprep train --help`` shows it).
    Fields marked ``runtime`` may change when a run is resumed; all others must
    match the checkpoint (:meth:`from_options`).
    """

    max_steps: int = setting(200_000, "Training steps in total; a resumed run continues up to it.", min=1,
                             runtime=True)
    batch_size: int = setting(4, "Pairs per step.", min=1)
    lr: float = setting(2e-4, "Adam learning rate.")
    beta1: float = setting(0.9, "Adam beta1.")
    beta2: float = setting(0.999, "Adam beta2.")
    lr_factor: float = setting(0.5, "Factor applied to the lr on a plateau of the validation loss.")
    lr_patience: int = setting(5, "Validations without improvement before the lr is multiplied by lr_factor.",
                               min=0)
    width: int = setting(64, "Channels of the first U-Net level.", min=1)
    depth: int = setting(7, "U-Net levels.", min=1)
    perceptual: bool = setting(True, "Add the VGG-19 perceptual and style terms to the loss.")
    lambda_r: float = setting(6.0, "Weight of the reconstruction loss.")
    lambda_p: float = setting(1.0, "Weight of the perceptual terms together.")
    lambda_vgg: float = setting(1.0, "Weight of the VGG feature term.")
    lambda_style: float = setting(120.0, "Weight of the style (Gram) term.")
    mu: float = setting(500.0, "mu of the mu-law compressor in the perceptual terms.")
    flips: Literal["h", "hv", "none"] = setting(
        "h", "Random flips of training pairs: h = horizontal only (upside-down scenes are not in the test data), "
             "hv = horizontal and vertical, none.")
    crop: int = setting(0, "Train on random CROP x CROP windows of the stored patches (a multiple of 2**depth, "
                           "at most the patch size); 0 = the whole patch.", min=0)
    seed: int = setting(0, "Seed of the weights, the validation split and the data stream.", min=0)
    val_fraction: float = setting(0.05, "Share of source frames (not pairs) held out for validation.")
    val_max_pairs: int = setting(64, "Most held-out pairs evaluated per validation.", min=1)
    val_every: int = setting(1000, "Steps between validations.", min=1, runtime=True)
    ckpt_every: int = setting(1000, "Steps between checkpoints.", min=1, runtime=True)
    log_every: int = setting(10, "Steps between lines of log.jsonl.", min=1, runtime=True)
    preview_pairs: int = setting(4, "Pairs in each validation preview PNG.", min=0, runtime=True)
    num_workers: int = setting(2, "DataLoader worker processes.", min=0, runtime=True)
    device: str = setting("auto", "auto, cpu, cuda or cuda:N.", runtime=True)
    amp: bool = setting(True, "Mixed precision on CUDA.")

    def __post_init__(self) -> None:
        check(self.lr > 0, "lr", self.lr, "use a learning rate > 0")
        check(0 < self.lr_factor < 1, "lr_factor", self.lr_factor, "use a factor in (0, 1)")
        _check_crop(self.crop, self.depth, "0 (whole patches) or ")

    @classmethod
    def from_options(cls, options: Mapping[str, Any], saved: Mapping[str, Any] | None = None) -> TrainConfig:
        """The configuration of a new run, or of a resumed one.

        Parameters
        ----------
        options : Mapping
            Field values; ``None`` = not given (the default, or the checkpoint's value).
        saved : Mapping, optional
            The ``config`` of the checkpoint being resumed. Checkpoints written before
            ``flips`` became a choice hold a bool there: ``true`` is read as ``'hv'`` (what
            it did then), ``false`` as ``'none'``.

        Raises
        ------
        ConfigError
            An unknown option or a bad value, or (resuming) an option other than the
            ``runtime`` ones that differs from the checkpoint's.
        """
        if saved is not None and isinstance(saved.get("flips"), bool):
            saved = {**saved, "flips": "hv" if saved["flips"] else "none"}
        return _from_options(cls, options, saved)


@dataclass(frozen=True)
class PretrainConfig:
    """Inpainting pre-training options (Santos et al. 2020, Sec. 3.3; ``hdrprep pretrain``).

    Stage 1 of the two-stage recipe: the masked U-Net learns to fill irregular holes
    of photographs (MIT Places in the paper) with the loss of Liu et al. 2018; ``hdrprep
    train --init RUN/checkpoints/last.pt`` then fine-tunes it on HDR pairs. ``width``,
    ``depth`` and ``seed`` mean what they mean in :class:`TrainConfig` (a checkpoint of
    either kind builds its model from them). Fields marked ``runtime`` may change when a
    run is resumed.
    """

    max_steps: int = setting(500_000, "Training steps in total (Santos: until convergence); a resumed run "
                                      "continues up to it.", min=1, runtime=True)
    batch_size: int = setting(4, "Images per step (Santos: 4).", min=1)
    lr: float = setting(2e-4, "Adam learning rate (Santos: 2e-4 in both stages).")
    beta1: float = setting(0.9, "Adam beta1.")
    beta2: float = setting(0.999, "Adam beta2.")
    width: int = setting(64, "Channels of the first U-Net level (must match the later `train`).", min=1)
    depth: int = setting(7, "U-Net levels (must match the later `train`).", min=1)
    crop: int = setting(256, "Side of the random square crops, a multiple of 2**depth; smaller images are "
                             "scaled up to it (MIT Places images are 256x256).", min=1)
    flips: Literal["h", "none"] = setting("h", "Random horizontal flips of the crops: h or none.")
    hole_min: float = setting(0.1, "Smallest share of a crop the holes of a mask cover.", min=0.0)
    hole_max: float = setting(0.6, "Largest share of a crop the holes of a mask cover.", min=0.0)
    hole_value: float = setting(1.0, "Value of hole pixels in the network input (1 = like clipped pixels, "
                                     "as in Santos' released code; 0 = image * mask).", min=0.0)
    perceptual: bool = setting(True, "Add the VGG-19 perceptual and style terms to the loss.")
    lambda_valid: float = setting(1.0, "Weight of the L1 loss on the valid pixels.", min=0.0)
    lambda_hole: float = setting(6.0, "Weight of the L1 loss on the hole pixels.", min=0.0)
    lambda_tv: float = setting(0.1, "Weight of the total variation on the dilated holes.", min=0.0)
    lambda_perceptual: float = setting(0.05, "Weight of the VGG feature term.", min=0.0)
    lambda_style: float = setting(120.0, "Weight of the style (Gram) term.", min=0.0)
    seed: int = setting(0, "Seed of the weights, the image order, the crops and the masks.", min=0)
    ckpt_every: int = setting(1000, "Steps between checkpoints (and preview PNGs).", min=1, runtime=True)
    log_every: int = setting(10, "Steps between lines of log.jsonl.", min=1, runtime=True)
    preview_items: int = setting(4, "Images in each preview PNG.", min=0, runtime=True)
    num_workers: int = setting(2, "DataLoader worker processes.", min=0, runtime=True)
    device: str = setting("auto", "auto, cpu, cuda or cuda:N.", runtime=True)
    amp: bool = setting(True, "Mixed precision on CUDA.")

    def __post_init__(self) -> None:
        check(self.lr > 0, "lr", self.lr, "use a learning rate > 0")
        check(0 <= self.hole_min <= self.hole_max < 1, "hole_min/hole_max", (self.hole_min, self.hole_max),
              "use 0 <= --hole-min <= --hole-max < 1, e.g. 0.1 and 0.6")
        _check_crop(self.crop, self.depth, "")

    @classmethod
    def from_options(cls, options: Mapping[str, Any], saved: Mapping[str, Any] | None = None) -> PretrainConfig:
        """As :meth:`TrainConfig.from_options`, for a pre-training run."""
        return _from_options(cls, options, saved)


def _from_options(cls: type, options: Mapping[str, Any], saved: Mapping[str, Any] | None):
    """A run's configuration from options (None = not given), checked against a resumed run's ``saved`` one."""
    given = {k: v for k, v in options.items() if v is not None}
    new = load(cls, given)
    if saved is None:
        return new
    with context("checkpoint config: "):
        base = load(cls, saved)
    runtime = sorted(f.name for f in fields(cls) if f.metadata.get("runtime"))
    given = {k: getattr(new, k) for k in given}
    clash = [k for k in sorted(given) if k not in runtime and getattr(base, k) != given[k]]
    if clash:
        clashes = ", ".join(f"{k}={given[k]!r} (checkpoint: {getattr(base, k)!r})" for k in clash)
        raise ConfigError(f"--resume: option(s) {clashes} differ from the run being resumed; "
                          f"only {', '.join(runtime)} may change")
    return override(base, {k: v for k, v in given.items() if k in runtime})


def _preset_dirs() -> list[Path]:
    dirs = []
    if os.environ.get(PRESET_DIR_ENV):
        dirs.append(Path(os.environ[PRESET_DIR_ENV]))
    dirs.append(Path.cwd() / "pipelines")
    # a source checkout or editable install: <repo>/hdrprep/config.py -> <repo>/pipelines
    dirs.append(Path(__file__).resolve().parent.parent / "pipelines")
    return dirs


def preset_names() -> list[str]:
    """Names of the presets found in the preset folders (plus the built-in default)."""
    names = {"santos2020"}
    for d in _preset_dirs():
        if d.is_dir():
            names.update(p.stem for p in d.glob("*.yaml") if not p.stem.startswith("cluster"))
    return sorted(names)


def load_preset(name_or_path: str | os.PathLike | None = None) -> Config:
    """Load a preset by name (``pipelines/NAME.yaml``) or by path.

    ``None`` or ``"santos2020"`` without a preset file gives the built-in
    defaults, which equal ``pipelines/santos2020.yaml``.
    """
    if name_or_path is None:
        name_or_path = "santos2020"
    path = Path(name_or_path)
    if not (path.suffix in (".yaml", ".yml") and path.is_file()):
        candidates = [d / f"{name_or_path}.yaml" for d in _preset_dirs()]
        found = [c for c in candidates if c.is_file()]
        if not found:
            if str(name_or_path) == "santos2020":
                return Config()
            raise ConfigError(
                f"unknown preset '{name_or_path}': give a preset name ({', '.join(preset_names())}) "
                f"or the path of a YAML file; preset folders searched: "
                f"{', '.join(str(d) for d in _preset_dirs())}"
            )
        path = found[0]
    with context(f"preset {path}: "):
        return Config.from_dict(read_yaml(path) or {})
