"""Command-line interface: maps flags onto library calls, nothing more."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import click

from hdrprep import __version__
from hdrprep.errors import HdrprepError


def _fail(exc: Exception) -> None:
    click.echo(f"error: {exc}", err=True)
    sys.exit(2)


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
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
        f"time: {t['total_s']:.1f} s (score {t['score_s']:.1f} s, write {t['write_s']:.1f} s); "
        f"tasks run now: {report['tasks']['frames_scored']} frames, {report['tasks']['shards_written']} shards",
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
@click.option("--workers", type=click.IntRange(min=1), help="Local worker processes [default: one per core].")
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

    try:
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
        kwargs = dict(workers=workers, scheduler=scheduler, overwrite=overwrite, dry_run=dry_run,
                      limit_frames=limit_frames, frames=frames, progress=not quiet)
        if cluster_spec:
            from hdrprep.cluster import batch_cluster

            with batch_cluster(cluster_spec) as cluster:
                report = build_mod.build(src, out, config, cluster=cluster, **kwargs)
        else:
            report = build_mod.build(src, out, config, **kwargs)
    except HdrprepError as exc:
        _fail(exc)
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
    from hdrprep import build as build_mod, synth
    from hdrprep.config import load_preset
    from hdrprep.preview import contact_sheet

    try:
        config = load_preset(preset).override(**{"sampling.patches_per_frame": patches_per_frame})
        frames = out / "frames"
        synth.write_frames(frames, n_frames)
        report = build_mod.build(frames, out / "shards.zarr", config, workers=workers, progress=not quiet,
                                 overwrite=True)
        sheet = contact_sheet(out / "shards.zarr", out / "contact_sheet.png", n=24) if report["counts"]["kept"] \
            else None
    except HdrprepError as exc:
        _fail(exc)
    click.echo(_summary(report))
    click.echo(f"store: {out / 'shards.zarr'}" + (f"\ncontact sheet: {sheet}" if sheet else ""))


@main.command()
@click.argument("path", type=click.Path(exists=True, path_type=Path))
@click.option("--json", "as_json", is_flag=True, help="Print the header facts as JSON.")
def probe(path, as_json):
    """Print an HDR file's header facts without decoding its pixels."""
    import dataclasses

    from hdrprep.io import probe as probe_fn

    try:
        info = probe_fn(path)
    except HdrprepError as exc:
        _fail(exc)
    d = dataclasses.asdict(info)
    click.echo(json.dumps(d, indent=1, default=str) if as_json else "\n".join(f"{k}: {v}" for k, v in d.items()))


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
@click.option("--max-steps", type=click.IntRange(min=1), help="[default: 200000]")
@click.option("--batch-size", type=click.IntRange(min=1), help="[default: 4]")
@click.option("--lr", type=float, help="Adam learning rate [default: 2e-4].")
@click.option("--lr-patience", type=click.IntRange(min=0), help="Validations without improvement before halving lr.")
@click.option("--width", type=click.IntRange(min=1), help="Channels of the first U-Net level [default: 64].")
@click.option("--depth", type=click.IntRange(min=1), help="U-Net levels [default: 7].")
@click.option("--flips/--no-flips", default=None, help="Random flips of training pairs.")
@click.option("--seed", type=click.IntRange(min=0))
@click.option("--val-fraction", type=float, help="Share of source frames held out for validation [default: 0.05].")
@click.option("--val-every", type=click.IntRange(min=1), help="Steps between validations [default: 1000].")
@click.option("--ckpt-every", type=click.IntRange(min=1), help="Steps between checkpoints [default: 1000].")
@click.option("--num-workers", type=click.IntRange(min=0), help="DataLoader worker processes [default: 2].")
@click.option("--device", help="auto, cpu, cuda or cuda:N [default: auto].")
@click.option("--amp/--no-amp", default=None, help="Mixed precision on CUDA [default: on].")
@click.option("--quiet", is_flag=True, help="No progress bar.")
def train(data, out, resume, init, vgg_weights, no_perceptual, quiet, **options):
    """Train the Santos et al. 2020 masked U-Net on a store (needs the `train` extra)."""
    try:
        from hdrprep.train.loop import train as train_fn
    except ImportError as exc:
        _fail(ImportError(f"{exc}; install the trainer with: pip install torch==2.13.0 && pip install -e '.[train]'"))
    options = {k: v for k, v in options.items() if v is not None}
    try:
        result = train_fn(data, out, resume=resume, init=init, vgg_weights=vgg_weights,
                          no_perceptual=no_perceptual, progress=not quiet, **options)
    except HdrprepError as exc:
        _fail(exc)
    click.echo(json.dumps(result, indent=1, default=str))


@main.command()
@click.option("--checkpoint", required=True, type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--input", "input_", required=True, type=click.Path(exists=True, dir_okay=False, path_type=Path),
              help="An 8- or 16-bit PNG or JPEG, any size.")
@click.option("--out", required=True, type=click.Path(path_type=Path), help="The HDR reconstruction (.exr).")
@click.option("--device", default="auto", show_default=True)
@click.option("--mask-alpha", type=float, help="Soft-mask threshold [default: the checkpoint's].")
def predict(checkpoint, input_, out, device, mask_alpha):
    """Reconstruct the HDR image of an LDR photograph with a trained checkpoint."""
    try:
        from hdrprep.train.predict import predict as predict_fn
    except ImportError as exc:
        _fail(ImportError(f"{exc}; install the trainer with: pip install torch==2.13.0 && pip install -e '.[train]'"))
    try:
        hdr = predict_fn(checkpoint, input_, out, device=device, mask_alpha=mask_alpha)
    except HdrprepError as exc:
        _fail(exc)
    click.echo(f"wrote {out} ({hdr.shape[1]}x{hdr.shape[0]}, max {float(hdr.max()):.3g})")


@main.command("inspect")
@click.argument("store_path", metavar="STORE", type=click.Path(exists=True, file_okay=False, path_type=Path))
@click.option("--json", "as_json", is_flag=True, help="Print the summary as JSON.")
def inspect_cmd(store_path, as_json):
    """Summarise a store: pairs, sources, score/saturation/camera distributions, bytes."""
    from hdrprep import summary

    try:
        s = summary.summarize(store_path)
    except HdrprepError as exc:
        _fail(exc)
    click.echo(json.dumps(s, indent=1) if as_json else summary.format_summary(s))


@main.command()
@click.argument("store_path", metavar="STORE", type=click.Path(exists=True, file_okay=False, path_type=Path))
@click.option("--out", type=click.Path(dir_okay=False, path_type=Path),
              help="PNG to write: the contact sheet, or with --candidates the candidates sheet.")
@click.option("--n", default=64, show_default=True, type=click.IntRange(min=1),
              help="Pairs on the contact sheet (with --candidates: most thumbnails per group).")
@click.option("--sort", type=click.Choice(["score", "random"]), default="score", show_default=True)
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
    try:
        if out is not None and frame is not None:
            click.echo(f"candidates sheet: {pv.candidates_sheet(store_path, src, frame, out, n=n)}")
        elif out is not None:
            click.echo(f"contact sheet: {pv.contact_sheet(store_path, out, n=n, sort=sort, seed=seed, source=source)}")
        if plots_dir is not None:
            for path in pv.plots(store_path, plots_dir):
                click.echo(f"plot: {path}")
    except HdrprepError as exc:
        _fail(exc)


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

    try:
        marker = ex.export(store_path, out, format=fmt, ldr_format=ldr_format, progress=not quiet)
    except HdrprepError as exc:
        _fail(exc)
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
    from hdrprep.export import render_pair_from_index

    try:
        _, _, equal = render_pair_from_index(store_path, src, k, out)
    except HdrprepError as exc:
        _fail(exc)
    where = f" (written to {out})" if out is not None else ""
    if not equal:
        click.echo(f"pair {k}: the re-rendered pair DIFFERS from the stored one{where}", err=True)
        sys.exit(1)
    click.echo(f"pair {k}: re-rendered from its index row, bit-identical to the stored pair{where}")


@main.command()
@click.argument("store_path", metavar="STORE", type=click.Path(path_type=Path))
@click.option("--no-checksums", is_flag=True, help="Check the structure only; do not read every pair.")
@click.option("--quiet", is_flag=True, help="No progress bar.")
def verify(store_path, no_checksums, quiet):
    """Check a store: format, completeness, shapes, index and every pair's checksum (exit 1 if wrong)."""
    from hdrprep.verify import verify as verify_fn

    problems = verify_fn(store_path, checksums=not no_checksums, progress=not quiet)
    for problem in problems:
        click.echo(f"problem: {problem}", err=True)
    if problems:
        click.echo(f"{store_path}: {len(problems)} problem(s)", err=True)
        sys.exit(1)
    click.echo(f"{store_path}: ok" + (" (structure only)" if no_checksums else ""))
