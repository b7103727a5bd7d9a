"""``hdrprep inspect``: what a store holds, as a dict (for ``--json``) and as text."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from hdrprep import schema, store

__all__ = ["summarize", "format_summary", "gini", "QUANTILES"]

#: Quantiles reported for every distribution (0 and 1 are the minimum and maximum).
QUANTILES = (0.0, 0.05, 0.25, 0.5, 0.75, 0.95, 1.0)

#: Camera parameters summarised as distributions (the curve family is counted instead; a seed is no quantity).
_NUMERIC_PARAMS = tuple(c for c in schema.CAMERA_COLUMNS if c not in ("curve", "noise_seed"))
#: The columns of the candidate table a summary reads (it can hold hundreds of thousands of rows).
_CANDIDATE_COLUMNS = ["source", "score", "saturated_fraction", "rendered"]


def _distribution(column) -> dict | None:
    """Count, mean and QUANTILES of a numeric column's non-null finite values, or None when there are none."""
    a = column.to_numpy(zero_copy_only=False).astype(np.float64)  # nulls become NaN
    a = a[np.isfinite(a)]
    if a.size == 0:
        return None
    q = np.quantile(a, QUANTILES)
    return dict(count=int(a.size), mean=float(a.mean()),
                quantiles={f"{p:g}": float(v) for p, v in zip(QUANTILES, q)})


def gini(counts) -> float | None:
    """Gini coefficient of pairs per frame: 0 when every frame gives as many, near 1 when one gives all.

    G = sum_i sum_j |x_i - x_j| / (2 n^2 mean(x)), over the frames read (zeros included); None
    without pairs.
    """
    x = np.asarray(counts, dtype=np.float64)
    if x.size == 0 or x.sum() == 0:
        return None
    return float(np.abs(x[:, None] - x[None, :]).sum() / (2 * x.size ** 2 * x.mean()))


def _overlaps(index) -> dict:
    """How much the kept windows of each frame overlap: per pair, its largest IoU with another of its frame."""
    from hdrprep.selection import iou, window_boxes

    boxes = window_boxes(index)
    source = index["source"].to_numpy(zero_copy_only=False)
    worst = np.zeros(len(boxes))
    for key in np.unique(source):
        rows = np.flatnonzero(source == key)
        for i in rows:
            others = rows[rows != i]
            if others.size:
                worst[i] = iou(boxes[i], boxes[others]).max()
    return dict(max_iou=_distribution(pa.array(worst)) if len(worst) else None,
                pairs_over_iou_half=int((worst > 0.5).sum()))


def _counts(column) -> dict:
    """How often each value of a (string) column occurs."""
    return {d["values"]: d["counts"] for d in column.value_counts().to_pylist()}


def _dir_bytes(path: Path) -> int:
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file()) if path.is_dir() else 0


def summarize(root: str | Path) -> dict:
    """Summarise a finished store.

    Parameters
    ----------
    root : path
        A complete hdrprep store (``store.open_store`` must accept it).

    Returns
    -------
    dict
        JSON-serialisable (no NaN): ``store``, ``format_version``, ``package_version``,
        ``seed``, ``pairs``, ``patch_size``, ``pairs_per_shard``, ``shards``,
        ``threshold``, ``counts`` (the build's), ``rendered`` (candidates scored on
        their final LDR; the others have the prescore; None for stores written before
        the prescreen), ``sources`` (one entry per frame:
        ``source``, ``status``, ``reason``, ``candidates``, ``pairs``),
        ``score`` and ``saturated_fraction`` (each ``{"pairs": dist, "candidates": dist}``),
        ``camera`` (``curves``: pairs per curve family; ``params``: a dist per
        numeric parameter over the pairs), ``hdr_clamped`` and ``bytes``. A dist is
        ``{"count", "mean", "quantiles": {"0": min, ..., "1": max}}`` or None.
    """
    root = Path(root)
    st = store.open_store(root)
    index, attrs, config = st.index, st.attrs, st.config
    cand_path = root / schema.CANDIDATES_NAME
    cand = st.candidates(_CANDIDATE_COLUMNS)
    n = index.num_rows

    pairs_of, candidates_of = _counts(index["source"]), _counts(cand["source"])
    sources = [dict(source=rec["source"], status=rec.get("status", "skipped"), reason=rec.get("reason"),
                    candidates=candidates_of.get(rec["source"], 0), pairs=pairs_of.get(rec["source"], 0))
               for rec in attrs.get("sources", [])]
    curves = _counts(index["curve"])
    read = [r["pairs"] for r in sources if r["status"] == "ok"]
    index_bytes = (root / schema.INDEX_NAME).stat().st_size
    cand_bytes = cand_path.stat().st_size
    arrays = {name: _dir_bytes(root / name) for name in ("ldr", "hdr")}
    size = config["sampling"]["patch_size"]
    raw = n * size * size * 3 * (1 + 2)  # uint8 LDR + float16 HDR
    stored = sum(arrays.values())
    per = config["output"]["pairs_per_shard"]
    return dict(
        store=str(root),
        format_version=attrs["format_version"],
        package_version=attrs.get("package_version"),
        seed=attrs.get("seed"),
        pairs=n,
        patch_size=size,
        pairs_per_shard=per,
        shards=-(-n // per),
        threshold=config["select"]["threshold"],
        counts=attrs.get("counts", {}),
        rendered=None if cand["rendered"].null_count else int(pc.sum(cand["rendered"]).as_py() or 0),
        sources=sources,
        score=dict(pairs=_distribution(index["score"]), candidates=_distribution(cand["score"])),
        saturated_fraction=dict(pairs=_distribution(index["saturated_fraction"]),
                                candidates=_distribution(cand["saturated_fraction"])),
        camera=dict(curves=curves, params={p: _distribution(index[p]) for p in _NUMERIC_PARAMS}),
        diversity=dict(pairs_per_frame_gini=gini(read), frames_with_pairs=sum(k > 0 for k in read),
                       frames_read=len(read), largest_frame_share=max(read) / n if n else None,
                       **_overlaps(index)),
        hdr_clamped=int(pc.sum(index["hdr_clamped"]).as_py() or 0),
        bytes=dict(ldr=arrays["ldr"], hdr=arrays["hdr"], index=index_bytes, candidates=cand_bytes,
                   arrays_raw=raw, compression=raw / stored if stored else None,
                   per_pair=stored / n if n else None),
    )


def _fmt(v: float) -> str:
    return f"{v:.4g}" if math.isfinite(v) else str(v)


def _dist_line(name: str, d: dict | None, width: int = 20) -> str:
    if d is None:
        return f"  {name:<{width}} -"
    q = d["quantiles"]
    return (f"  {name:<{width}} n={d['count']:<6} mean={_fmt(d['mean']):<9} min={_fmt(q['0']):<9} "
            f"p5={_fmt(q['0.05']):<9} median={_fmt(q['0.5']):<9} p95={_fmt(q['0.95']):<9} max={_fmt(q['1'])}")


def format_summary(s: dict) -> str:
    """The summary of :func:`summarize` as aligned plain text (one fact per line)."""
    c = s["counts"]
    b = s["bytes"]
    lines = [
        f"store: {s['store']}",
        f"format version {s['format_version']}, written by hdrprep {s['package_version']}, seed {s['seed']}",
        f"pairs: {s['pairs']} of {s['patch_size']}x{s['patch_size']} in {s['shards']} shards "
        f"of {s['pairs_per_shard']}",
        f"frames: {c.get('frames', len(s['sources']))} found, {c.get('frames_read', '?')} used, "
        f"{c.get('frames_skipped', '?')} skipped; candidates: {c.get('candidates', '?')}, kept {s['pairs']}",
        "sources (pairs / candidates):",
    ]
    width = max([len(r["source"]) for r in s["sources"]] + [6])
    for r in s["sources"]:
        note = "" if r["status"] == "ok" else f"  skipped: {r['reason']}"
        lines.append(f"  {r['source']:<{width}} {r['pairs']:>6} / {r['candidates']}{note}")
    lines.append(f"score (threshold {s['threshold']:g}):")
    if s.get("rendered") is not None and s["rendered"] < c.get("candidates", 0):
        lines.append(f"  ({s['rendered']} candidates scored on their final LDR, the others on the prescreen "
                     f"of the deterministic camera)")
    lines += [_dist_line(k, s["score"][k]) for k in ("pairs", "candidates")]
    lines.append("saturated fraction:")
    lines += [_dist_line(k, s["saturated_fraction"][k]) for k in ("pairs", "candidates")]
    curves = ", ".join(f"{k} {v}" for k, v in sorted(s["camera"]["curves"].items())) or "-"
    lines.append(f"camera over the pairs (curves: {curves}):")
    lines += [_dist_line(k, d) for k, d in s["camera"]["params"].items() if d is not None]
    d = s["diversity"]
    if d["pairs_per_frame_gini"] is not None:
        lines.append(f"diversity: {d['frames_with_pairs']} of {d['frames_read']} frames give pairs, pairs per frame "
                     f"Gini {d['pairs_per_frame_gini']:.2f}, the largest frame holds "
                     f"{100 * d['largest_frame_share']:.0f} % of the pairs")
        lines.append(f"  {d['pairs_over_iou_half']} pairs overlap another kept window of their frame by IoU > 0.5")
        lines.append(_dist_line("max IoU with another kept window of the frame", d["max_iou"], width=46))
    if s["hdr_clamped"]:
        lines.append(f"HDR values clamped at 65504: {s['hdr_clamped']}")
    stored = b["ldr"] + b["hdr"]
    lines.append(f"bytes: ldr {b['ldr'] / 1e6:.2f} MB, hdr {b['hdr'] / 1e6:.2f} MB, index {b['index'] / 1e3:.1f} kB, "
                 f"candidates {b['candidates'] / 1e3:.1f} kB"
                 + (f"; {b['per_pair'] / 1e6:.3f} MB per pair, compression {b['compression']:.2f}x"
                    if stored and s["pairs"] else ""))
    return "\n".join(lines)
