"""How the selection rules change what a build keeps: pairs, their spread over frames, and near-duplicates.

Builds the real fixtures once with the santos2020 preset (``--patches`` candidates per
frame), then re-applies the keep rule to the build's own candidate table under a ladder
of rules, each adding one to the one before:

1. the paper's rule: some saturation and score >= 0.85;
2. ``select.min_saturated_fraction`` (drops windows with a few saturated pixels on a
   sun's rim, which the 'saturated' normalisation ranks at the top);
3. ``select.max_overlap`` (no two kept windows of a frame overlap by more than this IoU);
4. ``select.per_frame_cap`` (at most this many pairs per frame).

For each it reports pairs kept, frames with pairs, the Gini coefficient of pairs per
frame, the largest frame's share, and how many kept windows overlap another of their
frame by IoU > 0.5; and writes a contact sheet of what each rule drops (the re-rendered
LDR of up to 24 dropped candidates, spread over frames).

    NUMBA_NUM_THREADS=1 python bench/diversity.py --patches 250

Writes ``diversity.json`` and ``drops_*.png`` in ``--out``.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import sys
import tempfile
from pathlib import Path

os.environ.setdefault("NUMBA_NUM_THREADS", "1")

import numpy as np  # noqa: E402

from hdrprep import build, camera, candidates, selection, store, summary  # noqa: E402
from hdrprep.config import load_preset  # noqa: E402
from hdrprep.io import write_png  # noqa: E402

SHARED = Path(__file__).resolve().parents[2] / "shared" / "data" / "hdr"


def _stats(table, keep: np.ndarray, boxes: np.ndarray, frames: list[str]) -> dict:
    source = table["source"].to_numpy(zero_copy_only=False)
    per_frame = [int((keep & (source == f)).sum()) for f in frames]
    worst = np.zeros(len(keep))
    for f in frames:
        rows = np.flatnonzero(keep & (source == f))
        for i in rows:
            others = rows[rows != i]
            if others.size:
                worst[i] = selection.iou(boxes[i], boxes[others]).max()
    n = int(keep.sum())
    sat = table["saturated_fraction"].to_numpy()[keep]
    return dict(pairs=n, frames_with_pairs=sum(k > 0 for k in per_frame), frames=len(frames),
                gini=summary.gini(per_frame), largest_frame_share=max(per_frame) / n if n else None,
                pairs_over_iou_half=int((worst[keep] > 0.5).sum()),
                mean_max_iou=float(worst[keep].mean()) if n else None,
                saturated_fraction_p5=float(np.quantile(sat, 0.05)) if n else None,
                per_frame=dict(zip(frames, per_frame)))


def _sheet(st, src: Path, table, picks: list[int], path: Path, thumb: int = 128) -> None:
    import cv2

    config = st.build_config()
    curves = camera.load_curves(config.camera)
    cols = 6
    sheet = np.full((max(1, -(-len(picks) // cols)) * (thumb + 4), cols * (thumb + 4), 3), 24, np.uint8)
    rows = table.to_pylist()
    frames: dict = {}
    for k, i in enumerate(picks):
        r = rows[i]
        if r["source"] not in frames:
            frames = {r["source"]: st.source_frame(src, r["source"])}
        ldr, _ = candidates.render_row(frames[r["source"]], r, config, curves)
        y, x = (k // cols) * (thumb + 4), (k % cols) * (thumb + 4)
        sheet[y:y + thumb, x:x + thumb] = cv2.resize(ldr, (thumb, thumb), interpolation=cv2.INTER_AREA)
    write_png(path, sheet)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--src", type=Path, default=SHARED, help="HDR frames (default: the real fixtures)")
    ap.add_argument("--patches", type=int, default=250, help="candidates per frame")
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--min-saturated", type=float, default=0.01)
    ap.add_argument("--max-overlap", type=float, default=0.5)
    ap.add_argument("--cap", type=int, default=50)
    ap.add_argument("--out", type=Path, default=None, help="work folder (default: a temporary one)")
    args = ap.parse_args()
    if not args.src.is_dir():
        sys.exit(f"no frames at {args.src}; pass --src")
    work = args.out or Path(tempfile.mkdtemp(prefix="hdrprep-diversity-"))
    work.mkdir(parents=True, exist_ok=True)
    out = work / "s.zarr"
    base = load_preset("santos2020").override(**{"sampling.patches_per_frame": args.patches})
    build.build(args.src, out, base, workers=args.workers, progress=True)
    st = store.open_store(out)
    table = st.candidates()
    boxes = selection.window_boxes(table)
    frames = [r["source"] for r in st.attrs["sources"] if r["status"] == "ok"]

    ladder = [("paper rule", {}),
              (f"+ min_saturated_fraction {args.min_saturated:g}", {"min_saturated_fraction": args.min_saturated}),
              (f"+ max_overlap {args.max_overlap:g}", {"max_overlap": args.max_overlap}),
              (f"+ per_frame_cap {args.cap}", {"per_frame_cap": args.cap})]
    results, cfg, before = [], base.select, None
    for name, change in ladder:
        cfg = dataclasses.replace(cfg, **change)
        keep = selection.select(table["score"].to_numpy(), table["saturated_fraction"].to_numpy(),
                                table["source"].to_numpy(zero_copy_only=False), table["candidate"].to_numpy(), cfg,
                                table["rendered"].to_numpy(), boxes)
        stats = dict(rule=name, select=dataclasses.asdict(cfg), **_stats(table, keep, boxes, frames))
        if before is not None:
            dropped = np.flatnonzero(before & ~keep)
            source = table["source"].to_numpy(zero_copy_only=False)
            # spread over frames: every k-th of the dropped, at most 24
            picks = dropped[np.linspace(0, len(dropped) - 1, min(24, len(dropped))).astype(int)] if len(dropped) \
                else []
            sheet = work / f"drops_{len(results)}.png"
            _sheet(st, args.src, table, [int(i) for i in picks], sheet)
            stats.update(dropped=int(len(dropped)), dropped_frames=len(set(source[dropped])), sheet=str(sheet))
        results.append(stats)
        before = keep
    (work / "diversity.json").write_text(json.dumps(results, indent=1))
    print(f"{len(frames)} frames x {args.patches} candidates = {table.num_rows} (santos2020 camera, seed 0)")
    print(f"{'rule':42s} {'pairs':>6} {'frames':>7} {'Gini':>5} {'top':>5} {'IoU>.5':>7} {'meanIoU':>8} {'dropped':>8}")
    for r in results:
        print(f"{r['rule']:42s} {r['pairs']:6d} {r['frames_with_pairs']:7d} {r['gini'] or 0:5.2f} "
              f"{100 * (r['largest_frame_share'] or 0):4.0f}% {r['pairs_over_iou_half']:7d} "
              f"{r['mean_max_iou'] or 0:8.3f} {r.get('dropped', ''):>8}")
    print(f"written: {work / 'diversity.json'} and the drops_*.png sheets")


if __name__ == "__main__":
    main()
