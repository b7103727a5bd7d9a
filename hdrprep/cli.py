"""Command-line interface: maps flags onto library calls, nothing more."""

from __future__ import annotations

import dataclasses
import errno
import json
import sys
import typing
from pathlib import Path

import click
from click.core import ParameterSource

from hdrprep import __version__
from hdrprep.config import PretrainConfig, TrainConfig
from hdrprep.errors import HdrprepError

# what to install for a missing optional module, by top-level package name
_INSTALL = {
    "torch": "install the trainer with: pip install torch==2.13.0 && pip install -e '.[train]'",
    "dask_jobqueue": "install it with: pip install 'hdrprep[jobqueue]'",
    "matplotlib": "install it with: pip install 'hdrprep[plots]'",
}
_OS_FIX = {
    errno.ENOSPC: "free some space or choose another folder",
    errno.EACCES: "check the permissions or choose another path",
    errno.EPERM: "check the permissions or choose another path",
    errno.EROFS: "the file system is read-only; choose another path",
    errno.ENOENT: "check the path",
}


class _Main(click.Group):
    """The command group; turns every error a user can meet into one ``error:`` line and an exit status.

    Exit status 2: a usage or input error (bad flag, preset, store, path; a missing
    optional package). Exit status 1: the work itself failed (training diverged, out of
    memory, an internal check). ``verify`` and ``render`` exit 1 themselves on a damaged
    store or a differing pair.
    """

    def invoke(self, ctx: click.Context):
        try:
            return super().invoke(ctx)
        except HdrprepError as exc:
            _fail(ctx, str(exc), 2)
        except ImportError as exc:
            package = (exc.name or "").partition(".")[0]
            if package == "hdrprep":  # our own import failing is a bug, not a missing extra
                raise
            _fail(ctx, f"{exc}; {_INSTALL[package]}" if package in _INSTALL else str(exc), 2)
        except OSError as exc:
            _fail(ctx, _os_message(exc), 2)
        except FloatingPointError as exc:
            _fail(ctx, f"numerical failure: {exc}", 1)
        except MemoryError:
            _fail(ctx, "out of memory; use fewer --workers, or a smaller --batch-size or --patch-size", 1)
        except RuntimeError as exc:
            # torch's CUDA out-of-memory error is a RuntimeError; other RuntimeErrors are bugs
            if type(exc).__name__ != "OutOfMemoryError":
                raise
            _fail(ctx, f"{str(exc).splitlines()[0]}; lower --batch-size or --width, or use --device cpu", 1)
        except AssertionError as exc:
            _fail(ctx, f"internal check failed ({exc or 'assertion'}); this is a bug: please report it with the "
                       f"command line", 1)


def _os_message(exc: OSError) -> str:
    if not exc.filename:
        return str(exc)
    what = f"{exc.filename}: {exc.strerror or exc}"
    return f"{what}; {_OS_FIX[exc.errno]}" if exc.errno in _OS_FIX else what


def _fail(ctx: click.Context, message: str, code: int) -> typing.NoReturn:
    click.echo(f"error: {message}", err=True)
    ctx.exit(code)


def _given(ctx: click.Context, param: click.Parameter, value):
    """None unless the option was given: unset options must not override a resumed run's checkpoint."""
    return None if ctx.get_parameter_source(param.name) is ParameterSource.DEFAULT else value


def _field_options(cls: type, *names: str):
    """Decorator adding one click option per named field of a config dataclass.

    Flag, type, lower bound, default and help come from the field. The command gets
    None for an option that was not given (see :func:`_given`).
    """
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls)}

    def decorate(fn):
        for name in reversed(names):
            f, hint, low = fields[name], hints[name], fields[name].metadata.get("min")
            flag = "--" + name.replace("_", "-")
            kwargs = {"default": f.default, "show_default": True, "help": f.metadata.get("help"), "callback": _given}
            if hint is bool:
                flag = f"{flag}/--no-{flag[2:]}"
            elif hint is int:
                kwargs["type"] = int if low is None else click.IntRange(min=low)
            elif hint is float:
                kwargs["type"] = float if low is None else click.FloatRange(min=low)
            elif typing.get_origin(hint) is typing.Literal:
                kwargs["type"] = click.Choice(typing.get_args(hint))
            elif hint is not str:
                raise TypeError(f"{cls.__name__}.{name}: no click type for {hint}")
            fn = click.option(flag, **kwargs)(fn)
        return fn

    return decorate


@click.group(cls=_Main, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="hdrprep")
def main() -> None:
    """Prepare (LDR, HDR) training pairs for single-image HDR reconstruction."""


def _summary(report: dict) -> str:
    c, b, t = report["counts"], report["bytes"], report["timings"]
    lines = [
        f"frames: {c['frames']} found, {c['frames_read']} used, {c['frames_skipped']} skipped",
        *(f"  skipped {s['source']}: {s['reason']} ({s['detail']})" for s in report["skipped"]),
        f"candidates: {c['candidates']}, kept pairs: {c['kept']}"
        + (f" ({100 * c['kept'] / c['candidates']:.1f} %)" if c["candidates"] else ""),
        (f"time: {t['total_s']:.1f} s (score {t['score_s']:.1f} s, write {t['write_s']:.1f} s); "
         f"tasks run now: {report['tasks']['frames_scored']} frames, {report['tasks']['shards_written']} shards"),
    ]
    tp = report.get("throughput", {})
    if tp.get("candidates_per_s") or tp.get("pairs_per_s"):
        lines.append("throughput: " + ", ".join(
            f"{v:.1f} {k.replace('_per_s', '')}/s" for k, v in tp.items() if v))
    if b["stored"]:
        lines.append(f"bytes: {b['stored'] / 1e6:.1f} MB stored, {b['per_pair'] / 1e6:.2f} MB per pair, "
                     f"compression {b['ratio']:.2f}x")
    if c["hdr_clamped_values"]:
        lines.append(f"HDR values above 65504 clamped: {c['hdr_clamped_values']}")
    return "\n".join(lines)


@main.command()
@click.option("--src", required=True, type=click.Path(path_type=Path),
              help="Folder of HDR frames (.exr, .hdr), searched recursively.")
@click.option("--out", required=True, type=click.Path(path_type=Path),
              help="Store to create or resume (a Zarr folder).")
@click.option("--preset", default="santos2020", show_default=True,
              help="Preset name (pipelines/NAME.yaml) or YAML path.")
@click.option("--workers", type=click.IntRange(min=1), show_default="one per core", help="Local worker processes.")
@click.option("--scheduler", help="tcp://host:port of a running dask scheduler, 'threads', or 'synchronous'.")
@click.option("--cluster", "cluster_spec", type=click.Path(exists=True, dir_okay=False, path_type=Path),
              help="Batch-cluster preset YAML (dask-jobqueue), e.g. pipelines/cluster-slurm.yaml.")
@click.option("--manifest", type=click.Path(exists=True, dir_okay=False, path_type=Path),
              help="data_manifest.yaml: which frames to use; the test split is excluded.")
@click.option("--overwrite", is_flag=True, help="Replace a store built with another configuration.")
@click.option("--dry-run", is_flag=True, help="List the frames and the plan; write nothing.")
@click.option("--limit-frames", type=click.IntRange(min=1), help="Use only the first N frames.")
@click.option("--patches-per-frame", type=click.IntRange(min=1), help="Override sampling.patches_per_frame.")
@click.option("--patch-size", type=int, help="Override sampling.patch_size.")
@click.option("--threshold", type=float, help="Override select.threshold.")
@click.option("--target-pairs", type=click.IntRange(min=1), help="Keep the N best-scoring eligible candidates.")
@click.option("--seed", type=click.IntRange(min=0), help="Override the global seed.")
@click.option("--quiet", is_flag=True, help="No progress bars.")
def build(src, out, preset, workers, scheduler, cluster_spec, manifest, overwrite, dry_run, limit_frames,
          patches_per_frame, patch_size, threshold, target_pairs, seed, quiet):
    """Build a store of training pairs from a folder of HDR frames."""
    from hdrprep import build as build_mod
    from hdrprep.config import load_preset

    if workers and scheduler and scheduler != "threads":
        raise click.UsageError(f"--workers sizes a local cluster; it cannot be used with --scheduler {scheduler}")
    if cluster_spec and (scheduler or workers):
        raise click.UsageError("--cluster starts its own workers; drop --scheduler/--workers")
    config = load_preset(preset).override(**{
        "sampling.patches_per_frame": patches_per_frame, "sampling.patch_size": patch_size,
        "select.threshold": threshold, "select.target_pairs": target_pairs, "seed": seed})
    frames = None
    if manifest:
        from hdrprep.manifest import load_manifest

        frames = load_manifest(manifest).training_frames(src)
    kwargs = {"workers": workers, "scheduler": scheduler, "overwrite": overwrite, "dry_run": dry_run,
              "limit_frames": limit_frames, "frames": frames, "progress": not quiet}
    if cluster_spec:
        from hdrprep.cluster import batch_cluster

        with batch_cluster(cluster_spec) as cluster:
            report = build_mod.build(src, out, config, cluster=cluster, **kwargs)
    else:
        report = build_mod.build(src, out, config, **kwargs)
    if dry_run:
        click.echo(f"{len(report['frames'])} frames, {report['candidates']} candidates "
                   f"(preset {config.name}, seed {config.seed}):")
        for key in report["frames"]:
            click.echo(f"  {key}")
        for bad in report["not_files"]:
            click.echo(f"  skip {bad['source']}: {bad['reason']} ({bad['detail']})")
        return
    click.echo(_summary(report))
    click.echo(f"store: {out}  (report: {out / 'report.json'})")


@main.command()
@click.option("--out", default="hdrprep-demo", show_default=True, type=click.Path(path_type=Path),
              help="Folder for the generated frames, the store and a contact sheet.")
@click.option("--frames", "n_frames", default=4, show_default=True, type=click.IntRange(min=1))
@click.option("--patches-per-frame", default=60, show_default=True, type=click.IntRange(min=1))
@click.option("--preset", default="santos2020", show_default=True)
@click.option("--workers", type=click.IntRange(min=1))
@click.option("--quiet", is_flag=True)
def demo(out, n_frames, patches_per_frame, preset, workers, quiet):
    """Build a store from procedurally generated HDR frames (no data needed)."""
    from hdrprep import build as build_mod
    from hdrprep import synth
    from hdrprep.config import load_preset
    from hdrprep.preview import contact_sheet

    config = load_preset(preset).override(**{"sampling.patches_per_frame": patches_per_frame})
    frames = out / "frames"
    synth.write_frames(frames, n_frames)
    report = build_mod.build(frames, out / "shards.zarr", config, workers=workers, progress=not quiet,
                             overwrite=True)
    sheet = contact_sheet(out / "shards.zarr", out / "contact_sheet.png", n=24) if report["counts"]["kept"] \
        else None
    click.echo(_summary(report))
    click.echo(f"store: {out / 'shards.zarr'}" + (f"\ncontact sheet: {sheet}" if sheet else ""))


@main.command()
@click.argument("path", type=click.Path(exists=True, path_type=Path))
@click.option("--json", "as_json", is_flag=True, help="Print the header facts as JSON.")
def probe(path, as_json):
    """Print an HDR file's header facts without decoding its pixels."""
    from hdrprep.io import probe as probe_fn

    d = dataclasses.asdict(probe_fn(path))
    click.echo(json.dumps(d, indent=1, default=str) if as_json else "\n".join(f"{k}: {v}" for k, v in d.items()))


@main.command()
@click.option("--images", required=True, type=click.Path(exists=True, file_okay=False, path_type=Path),
              help="Folder of .jpg/.jpeg/.png photographs, searched recursively (Santos: MIT Places).")
@click.option("--out", required=True, type=click.Path(path_type=Path), help="Run folder (checkpoints, log, previews).")
@click.option("--resume", is_flag=True, help="Continue the run in --out from its last checkpoint.")
@click.option("--vgg-weights", type=click.Path(exists=True, dir_okay=False, path_type=Path),
              help="VGG-19 state dict (torchvision layout) for the perceptual and style terms.")
@click.option("--no-perceptual", is_flag=True, help="Drop the perceptual and style terms (no VGG needed).")
@_field_options(PretrainConfig, "max_steps", "batch_size", "lr", "width", "depth", "crop", "flips", "hole_min",
                "hole_max", "hole_value", "seed", "ckpt_every", "num_workers", "device", "amp")
@click.option("--quiet", is_flag=True, help="No progress bar.")
def pretrain(images, out, resume, vgg_weights, no_perceptual, quiet, **options):
    """Pre-train the masked U-Net on inpainting (stage 1; then `train --init OUT/checkpoints/last.pt`)."""
    from hdrprep.train.inpaint import pretrain as pretrain_fn

    result = pretrain_fn(images, out, resume=resume, vgg_weights=vgg_weights, no_perceptual=no_perceptual,
                         progress=not quiet, **options)
    click.echo(json.dumps(result, indent=1, default=str))


@main.command()
@click.option("--data", required=True, type=click.Path(exists=True, file_okay=False, path_type=Path),
              help="A store built by `hdrprep build`.")
@click.option("--out", required=True, type=click.Path(path_type=Path), help="Run folder (checkpoints, log, previews).")
@click.option("--resume", is_flag=True, help="Continue the run in --out from its last checkpoint.")
@click.option("--init", type=click.Path(exists=True, dir_okay=False, path_type=Path),
              help="Start from the weights of a checkpoint (e.g. an inpainting pre-training).")
@click.option("--vgg-weights", type=click.Path(exists=True, dir_okay=False, path_type=Path),
              help="VGG-19 state dict (torchvision layout) for the perceptual loss.")
@click.option("--no-perceptual", is_flag=True, help="Train with the reconstruction loss only (no VGG needed).")
@_field_options(TrainConfig, "max_steps", "batch_size", "lr", "lr_patience", "width", "depth", "crop", "flips", "seed",
                "val_fraction", "val_every", "ckpt_every", "num_workers", "device", "amp")
@click.option("--quiet", is_flag=True, help="No progress bar.")
def train(data, out, resume, init, vgg_weights, no_perceptual, quiet, **options):
    """Train the Santos et al. 2020 masked U-Net on a store (needs the `train` extra)."""
    from hdrprep.train.loop import train as train_fn

    result = train_fn(data, out, resume=resume, init=init, vgg_weights=vgg_weights, no_perceptual=no_perceptual,
                      progress=not quiet, **options)
    click.echo(json.dumps(result, indent=1, default=str))


@main.command()
@click.option("--checkpoint", required=True, type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--input", "input_", required=True, type=click.Path(exists=True, dir_okay=False, path_type=Path),
              help="An 8- or 16-bit PNG or JPEG, any size.")
@click.option("--out", required=True, type=click.Path(path_type=Path), help="The HDR reconstruction (.exr).")
@click.option("--device", default="auto", show_default=True)
@click.option("--mask-alpha", type=float, show_default="the checkpoint's", help="Soft-mask threshold.")
def predict(checkpoint, input_, out, device, mask_alpha):
    """Reconstruct the HDR image of an LDR photograph with a trained checkpoint."""
    from hdrprep.train.predict import predict as predict_fn

    hdr = predict_fn(checkpoint, input_, out, device=device, mask_alpha=mask_alpha)
    click.echo(f"wrote {out} ({hdr.shape[1]}x{hdr.shape[0]}, max {float(hdr.max()):.3g})")


@main.command()
@click.option("--src", required=True, type=click.Path(exists=True, file_okay=False, path_type=Path),
              help="Folder of test HDR frames (.exr, .hdr), searched recursively.")
@click.option("--out", required=True, type=click.Path(file_okay=False, path_type=Path),
              help="Report folder: metrics.csv, summary.json, images/*.png.")
@click.option("--checkpoint", type=click.Path(exists=True, dir_okay=False, path_type=Path),
              help="A checkpoint written by `hdrprep train` (optional when --baseline is given).")
@click.option("--baseline", "baselines", multiple=True, type=click.Choice(["inverse-curve", "akyuz2007"]),
              help="Baseline to evaluate (repeatable); default with --checkpoint: every baseline, else name one.")
@click.option("--manifest", type=click.Path(exists=True, dir_okay=False, path_type=Path),
              help="data_manifest.yaml: evaluate its test split under --src.")
@click.option("--seed", default=0, show_default=True, type=click.IntRange(min=0),
              help="Seed of the per-frame evaluation cameras.")
@click.option("--store", type=click.Path(exists=True, file_okay=False, path_type=Path),
              help="Training store: refuse test frames that are among its sources.")
@click.option("--device", default="auto", show_default=True)
@click.option("--max-size", type=click.IntRange(min=16), help="Downscale frames whose longest side is larger.")
@click.option("--preset", default="santos2020", show_default=True, help="Preset whose camera renders the inputs.")
@click.option("--display-peak", default=4000.0, show_default=True, type=float,
              help="cd/m^2 the reference's maximum is shown at (PU21, ColorVideoVDP).")
@click.option("--no-cvvdp", is_flag=True, help="Skip ColorVideoVDP even where pycvvdp is installed.")
@click.option("--quiet", is_flag=True, help="No progress bar.")
def evaluate(src, out, checkpoint, baselines, manifest, seed, store, device, max_size, preset, display_peak,
             no_cvvdp, quiet):
    """Score a checkpoint and baselines on held-out HDR frames (MSE, mu-PSNR, PU21-PSNR, ColorVideoVDP)."""
    from hdrprep import evaluate as ev

    if checkpoint is None and not baselines:
        raise click.UsageError("give --checkpoint, --baseline NAME, or both")
    summary = ev.evaluate(src, out, checkpoint=checkpoint, baselines=baselines or None, manifest=manifest, seed=seed,
                          store=store, device=device, max_size=max_size, preset=preset, display_peak=display_peak,
                          cvvdp=not no_cvvdp, progress=not quiet, echo=lambda m: click.echo(m, err=True))
    click.echo(ev.format_table(summary))
    click.echo(f"report: {out / 'metrics.csv'}, {out / 'summary.json'}, {out / 'images'}/")


@main.command("inspect")
@click.argument("store_path", metavar="STORE", type=click.Path(exists=True, file_okay=False, path_type=Path))
@click.option("--json", "as_json", is_flag=True, help="Print the summary as JSON.")
def inspect_cmd(store_path, as_json):
    """Summarise a store: pairs, sources, score/saturation/camera distributions, bytes."""
    from hdrprep import summary

    s = summary.summarize(store_path)
    click.echo(json.dumps(s, indent=1) if as_json else summary.format_summary(s))


@main.command()
@click.argument("store_path", metavar="STORE", type=click.Path(exists=True, file_okay=False, path_type=Path))
@click.option("--out", type=click.Path(dir_okay=False, path_type=Path),
              help="PNG to write: the contact sheet, or with --candidates the candidates sheet.")
@click.option("--n", default=64, show_default=True, type=click.IntRange(min=1),
              help="Pairs on the contact sheet (with --candidates: most thumbnails per group).")
@click.option("--sort", type=click.Choice(["spread", "score", "random"]), default="spread", show_default=True,
              help="spread: the best pair of each frame, then the second of each, ...")
@click.option("--seed", default=0, show_default=True, type=click.IntRange(min=0), help="Seed of --sort random.")
@click.option("--source", help="Only pairs from these frames: a path as in the index, a glob or a file name.")
@click.option("--candidates", "frame", metavar="FRAME",
              help="Show every candidate of this frame, kept beside discarded (needs --src).")
@click.option("--src", type=click.Path(exists=True, file_okay=False, path_type=Path),
              help="The folder the store was built from (for --candidates).")
@click.option("--plots", "plots_dir", type=click.Path(file_okay=False, path_type=Path),
              help="Also write scores.png, saturation.png and curves.png here (needs matplotlib).")
def preview(store_path, out, n, sort, seed, source, frame, src, plots_dir):
    """Contact sheet PNG of a store's pairs (LDR, mu-law HDR, 1 - mask); candidates sheet; plots."""
    from hdrprep import preview as pv

    if out is None and plots_dir is None:
        raise click.UsageError("give --out, --plots or both")
    if frame is not None and src is None:
        raise click.UsageError("--candidates FRAME needs --src, the folder the store was built from")
    if out is not None and frame is not None:
        click.echo(f"candidates sheet: {pv.candidates_sheet(store_path, src, frame, out, n=n)}")
    elif out is not None:
        click.echo(f"contact sheet: {pv.contact_sheet(store_path, out, n=n, sort=sort, seed=seed, source=source)}")
    if plots_dir is not None:
        for path in pv.plots(store_path, plots_dir):
            click.echo(f"plot: {path}")


@main.command("export")
@click.argument("store_path", metavar="STORE", type=click.Path(exists=True, file_okay=False, path_type=Path))
@click.option("--format", "fmt", type=click.Choice(["eilertsen", "exr-png"]), required=True,
              help="eilertsen: bin/ + jpg/ (HDR-CNN, Santos et al.); exr-png: exr/ + png/.")
@click.option("--out", required=True, type=click.Path(path_type=Path),
              help="New or empty folder, or an earlier export of the same format.")
@click.option("--ldr-format", type=click.Choice(["jpg", "png"]), default="jpg", show_default=True,
              help="LDR files of the eilertsen layout: jpg (quality 100, 4:4:4; changes values by a few "
                   "levels) or png (lossless; Santos' loader reads it, hdrcnn_train.py looks for .jpg).")
@click.option("--quiet", is_flag=True, help="No progress bar.")
def export_cmd(store_path, fmt, out, ldr_format, quiet):
    """Write every pair as files other training code reads."""
    from hdrprep import export as ex

    marker = ex.export(store_path, out, format=fmt, ldr_format=ldr_format, progress=not quiet)
    click.echo(f"{marker['pairs']} pairs exported to {out} ({fmt}, LDR as {marker['ldr_format']})")


@main.command()
@click.argument("store_path", metavar="STORE", type=click.Path(exists=True, file_okay=False, path_type=Path))
@click.option("--pair", "k", required=True, type=click.IntRange(min=0), help="Pair number (index row).")
@click.option("--src", required=True, type=click.Path(exists=True, file_okay=False, path_type=Path),
              help="The folder the store was built from.")
@click.option("--out", type=click.Path(file_okay=False, path_type=Path),
              help="Folder for the re-rendered pair_K.exr and pair_K.png.")
def render(store_path, k, src, out):
    """Re-render pair K from its source frame and index row; exit 1 if it differs from the stored pair."""
    from hdrprep.render import render_pair_from_index

    _version_note(store_path)
    _, _, equal = render_pair_from_index(store_path, src, k, out)
    where = f" (written to {out})" if out is not None else ""
    if not equal:
        click.echo(f"pair {k}: the re-rendered pair DIFFERS from the stored one{where}", err=True)
        sys.exit(1)
    click.echo(f"pair {k}: re-rendered from its index row, bit-identical to the stored pair{where}")


def _version_note(store_path) -> None:
    """Say which libraries differ from those the store was built with (a re-render may then differ)."""
    from hdrprep.store import read_attrs
    from hdrprep.versions import differences

    attrs = read_attrs(store_path)
    if attrs and attrs.get("complete"):
        changed = differences(attrs.get("versions"))
        if changed:
            click.echo(f"note: running other library versions than the build ({'; '.join(changed)}); a re-rendered "
                       f"pair may differ in a few levels", err=True)


@main.command()
@click.argument("store_path", metavar="STORE", type=click.Path(path_type=Path))
@click.option("--no-checksums", is_flag=True, help="Check the structure only; do not read every pair.")
@click.option("--workers", type=click.IntRange(min=1), help="Processes reading the shards [default: one per core].")
@click.option("--quiet", is_flag=True, help="No progress bar.")
def verify(store_path, no_checksums, workers, quiet):
    """Check a store: format, completeness, shapes, index and every pair's checksum (exit 1 if wrong)."""
    from hdrprep.verify import verify as verify_fn

    _version_note(store_path)
    problems = verify_fn(store_path, checksums=not no_checksums, progress=not quiet, workers=workers)
    for problem in problems:
        click.echo(f"problem: {problem}", err=True)
    if problems:
        click.echo(f"{store_path}: {len(problems)} problem(s)", err=True)
        sys.exit(1)
    click.echo(f"{store_path}: ok" + (" (structure only)" if no_checksums else ""))
