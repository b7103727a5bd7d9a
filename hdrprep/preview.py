"""Look at a store before training on it: contact sheets, one frame's candidates, and plots.

Images are drawn with OpenCV; the plots need matplotlib (the ``plots`` extra),
imported only by :func:`plots`, through its object interface (no pyplot, so
no global backend is switched). Every PNG is written to a temporary name and
renamed into place.
"""

from __future__ import annotations

import fnmatch
import io
from pathlib import Path

import cv2
import numpy as np

from hdrprep import camera, files, store
from hdrprep.io import write_png
from hdrprep.errors import ConfigError, HdrprepError

__all__ = ["mu_law", "contact_sheet", "candidates_sheet", "plots", "match_sources"]

_KEPT, _DISCARDED = (40, 200, 40), (230, 50, 50)  # RGB frame colours
_TEXT = (230, 230, 230)


def mu_law(hdr: np.ndarray, mu: float = 500.0) -> np.ndarray:
    """Tonemap linear HDR (>= 0) for display: log(1 + mu x) / log(1 + mu) with x = hdr / p99.9.

    Normalising by the image's 99.9th percentile (at least 1.0, the LDR's clip
    point) keeps the texture inside saturated regions visible.

    Returns
    -------
    numpy.ndarray
        float32, same shape, in [0, 1].
    """
    hdr = np.asarray(hdr, np.float32)
    x = np.clip(hdr / max(float(np.percentile(hdr, 99.9)), 1.0), 0, 1)
    return (np.log1p(mu * x) / np.log1p(mu)).astype(np.float32)


def _u8(x: np.ndarray) -> np.ndarray:
    return (np.clip(x, 0, 1) * 255 + 0.5).astype(np.uint8)


def _put(img: np.ndarray, text: str, x: int, y: int, colour=_TEXT, scale: float = 0.38) -> None:
    cv2.putText(img, text, (x, y), cv2.FONT_HERSHEY_SIMPLEX, scale, colour, 1, cv2.LINE_AA)


def _write_png(out: str | Path, rgb: np.ndarray) -> Path:
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    write_png(out, rgb)
    return out


def match_sources(keys: list[str], pattern: str, what: str = "frames of the store") -> list[str]:
    """The source keys ``pattern`` names: the key itself, else a glob over keys, else a file name.

    ``what`` describes ``keys`` in the error message.

    Raises
    ------
    ConfigError
        If nothing matches; the message lists some of the store's sources.
    """
    uniq = sorted(set(keys))
    if pattern in uniq:
        return [pattern]
    found = [k for k in uniq if fnmatch.fnmatchcase(k, pattern)] or [k for k in uniq if Path(k).name == pattern]
    if not found:
        some = ", ".join(uniq[:8]) + (", ..." if len(uniq) > 8 else "")
        raise ConfigError(f"{pattern!r} matches none of the {len(uniq)} {what}: {some} "
                          f"(give a path as listed, a glob such as '*.hdr', or a file name)")
    return found


def contact_sheet(root: str | Path, out: str | Path, *, n: int = 32, sort: str = "spread",
                  thumb: int = 128, seed: int = 0, source: str | None = None) -> Path:
    """Write a PNG with, per pair, the LDR, the HDR (mu-law up to its 99.9th percentile) and 1 - mask.

    The third thumbnail is white where the LDR is saturated (the weights of the
    patch metric). Each tile is labelled with the pair number, score, saturated
    fraction and source file name.

    Parameters
    ----------
    root : path
        A finished store.
    out : path
        PNG file to write.
    n : int
        Number of pairs shown (the first ``n`` by the sort order), >= 1.
    sort : {'spread', 'score', 'random'}
        ``spread``: across sources, the best pair of each frame, then the second best
        of each, and so on (frames in order of their best score), so a sheet shows
        many scenes rather than the top ``n`` of one; ``score``: highest scores first;
        ``random``: a seeded random sample shown in pair order.
    thumb : int
        Side of each thumbnail in pixels.
    seed : int
        Seed of the random sample.
    source : str, optional
        Only pairs from these frames (see :func:`match_sources`).

    Returns
    -------
    pathlib.Path
        ``out``.
    """
    st = store.open_store(root)
    group, index = st.group, st.index
    if sort not in ("spread", "score", "random"):
        raise ConfigError(f"--sort {sort!r}: choose 'spread', 'score' or 'random'")
    if n < 1 or thumb < 16:
        raise ConfigError(f"--n {n} / thumb {thumb}: show at least one pair, thumbnails of >= 16 pixels")
    if index.num_rows == 0:
        raise HdrprepError(f"{root}: the store has no pairs to show")
    alpha = st.config["camera"]["mask_alpha"]
    scores = index["score"].to_numpy()
    sat = index["saturated_fraction"].to_numpy()
    sources = index["source"].to_pylist()
    pool = np.arange(index.num_rows)
    if source is not None:
        wanted = set(match_sources(sources, source, "frames with pairs"))
        pool = np.array([i for i, s in enumerate(sources) if s in wanted])
    if sort == "spread":
        picks = _round_robin(pool, scores, sources)[:n]
    elif sort == "score":
        picks = pool[np.argsort(-scores[pool], kind="stable")][:n]
    else:
        picks = np.sort(np.random.default_rng(seed).permutation(pool)[:n])
    label_h = 16
    cols = max(1, min(4, len(picks)))
    rows = -(-len(picks) // cols)
    tile_w, tile_h = 3 * thumb + 8, thumb + label_h + 8
    sheet = np.full((rows * tile_h, cols * tile_w, 3), 32, np.uint8)
    for k, i in enumerate(picks):
        ldr = group["ldr"][int(i)]
        hdr = group["hdr"][int(i)].astype(np.float32)
        mask = camera.soft_mask(ldr, alpha)
        parts = [ldr, _u8(mu_law(hdr)), _u8(1 - mask)]
        y, x = (k // cols) * tile_h, (k % cols) * tile_w
        for j, img in enumerate(parts):
            small = cv2.resize(img, (thumb, thumb), interpolation=cv2.INTER_AREA)
            sheet[y + label_h:y + label_h + thumb, x + j * thumb:x + (j + 1) * thumb] = small
        chars = max(8, (3 * thumb) // 7)  # about 7 pixels per character at this font scale
        _put(sheet, f"#{int(i)} s={scores[i]:.2f} sat={sat[i]:.2f} {Path(sources[i]).name}"[:chars], x + 2, y + 12)
    return _write_png(out, sheet)


def _round_robin(pool: np.ndarray, scores: np.ndarray, sources: list[str]) -> np.ndarray:
    """``pool``'s pairs ordered by (rank within their frame, the frame's best score): one per frame at a time."""
    best = pool[np.argsort(-scores[pool], kind="stable")]
    rank, seen, first = np.empty(len(best), np.int64), {}, {}
    for i, k in enumerate(best.tolist()):
        rank[i] = seen.get(sources[k], 0)
        seen[sources[k]] = rank[i] + 1
        first.setdefault(sources[k], i)  # frames in order of their best pair
    frame_order = np.array([first[sources[k]] for k in best.tolist()], np.int64)
    return best[np.lexsort((frame_order, rank))]


def _spread(order: np.ndarray, n: int) -> np.ndarray:
    """At most ``n`` entries of ``order`` at evenly spaced ranks (first and last included)."""
    if len(order) <= n:
        return order
    return order[np.unique(np.linspace(0, len(order) - 1, n).round().astype(int))]


def candidates_sheet(root: str | Path, src: str | Path, frame: str, out: str | Path, *, n: int = 24,
                     thumb: int = 112, width: int = 1024) -> Path:
    """Write a PNG of one frame's candidates: the frame with every window drawn, and kept beside discarded.

    Left: the frame (mu-law at the candidates' exposure), kept windows in green,
    discarded ones in red, each labelled with its candidate number. Right: the
    re-rendered LDR of up to ``n`` kept and ``n`` discarded candidates (evenly
    spread over their score ranks, highest first), labelled with candidate
    number, score and saturated fraction.

    Parameters
    ----------
    root : path
        A finished store (its ``candidates.parquet`` lists every candidate).
    src : path
        The folder the store was built from (the store records paths relative to it).
    frame : str
        The frame: its key as in the index, or a glob or file name naming exactly one frame.
    out : path
        PNG file to write.
    n : int
        Most thumbnails per group.
    thumb : int
        Thumbnail side in pixels.
    width : int
        Most pixels of the frame's width in the sheet (larger frames are scaled down).

    Returns
    -------
    pathlib.Path
        ``out``.
    """
    import pyarrow.compute as pc

    from hdrprep import candidates

    st = store.open_store(root)
    table = st.candidates()
    if table.num_rows == 0:
        raise HdrprepError(f"{root}: the store has no scored candidates")
    keys = match_sources(table["source"].to_pylist(), frame)
    if len(keys) > 1:
        raise ConfigError(f"--candidates {frame!r} names {len(keys)} frames ({', '.join(keys[:5])}); name one")
    key = keys[0]
    rows = table.filter(pc.equal(table["source"], key)).to_pylist()
    config = st.build_config()
    size = config.sampling.patch_size
    image = st.source_frame(src, key)
    curves = camera.load_curves(config.camera)

    # the frame, scaled to at most `width` pixels, windows drawn discarded first so kept ones stay on top
    exposure = float(np.median([r["exposure"] for r in rows]))
    scale = min(1.0, width / image.shape[1])
    shown = cv2.resize(_u8(mu_law(image * np.float32(exposure))), None, fx=scale, fy=scale,
                       interpolation=cv2.INTER_AREA)
    for r in sorted(rows, key=lambda r: r["kept"]):
        colour = _KEPT if r["kept"] else _DISCARDED
        p0 = (int(r["col"] * scale), int(r["row"] * scale))
        p1 = (int((r["col"] + size) * scale) - 1, int((r["row"] + size) * scale) - 1)
        cv2.rectangle(shown, p0, p1, colour, 2 if r["kept"] else 1, cv2.LINE_AA)
        _put(shown, str(r["candidate"]), p0[0] + 3, p0[1] + 13, colour, 0.45)

    # thumbnail panels
    label_h, cols, pad = 14, 3, 4
    tile_w, tile_h = thumb + pad, thumb + label_h + pad
    panels = []
    for kept in (True, False):
        members = sorted((r for r in rows if r["kept"] == kept), key=lambda r: -r["score"])
        picks = [members[i] for i in _spread(np.arange(len(members)), n)]
        title = f"{'kept' if kept else 'discarded'}: {len(picks)} of {len(members)}"
        nrows = max(1, -(-len(picks) // cols))
        panel = np.full((24 + nrows * tile_h, cols * tile_w, 3), 24, np.uint8)
        _put(panel, title, 4, 16, _KEPT if kept else _DISCARDED, 0.5)
        for k, r in enumerate(picks):
            ldr, _ = candidates.render_row(image, r, config, curves)
            y, x = 24 + (k // cols) * tile_h, (k % cols) * tile_w
            img = cv2.resize(ldr, (thumb, thumb), interpolation=cv2.INTER_AREA)
            cv2.rectangle(img, (0, 0), (thumb - 1, thumb - 1), _KEPT if kept else _DISCARDED, 2)
            panel[y + label_h:y + label_h + thumb, x:x + thumb] = img
            _put(panel, f"{r['candidate']} s={r['score']:.2f} {r['saturated_fraction']:.2f}", x + 1, y + 11,
                 scale=0.33)
        panels.append(panel)

    header = 22
    height = header + max(shown.shape[0], *(p.shape[0] for p in panels))
    title = f"{key}: {len(rows)} candidates, threshold {config.select.threshold:g}; labels: candidate, score, " \
            "saturated fraction"
    total_w = max(shown.shape[1] + sum(p.shape[1] + 8 for p in panels), 8 * len(title))
    sheet = np.full((height, total_w, 3), 24, np.uint8)
    _put(sheet, title, 4, 15, scale=0.45)
    sheet[header:header + shown.shape[0], :shown.shape[1]] = shown
    x = shown.shape[1] + 8
    for p in panels:
        sheet[header:header + p.shape[0], x:x + p.shape[1]] = p
        x += p.shape[1] + 8
    return _write_png(out, sheet)


def _figure(width: float, height: float):
    try:
        from matplotlib.figure import Figure
    except ImportError as exc:
        raise HdrprepError("plots need matplotlib, which is not installed; "
                           "install it with: pip install 'hdrprep[plots]'") from exc
    return Figure(figsize=(width, height), dpi=100, layout="constrained")


def _save(fig, path: Path) -> Path:
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    files.atomic_write_bytes(path, buf.getvalue())
    return path


def plots(root: str | Path, out_dir: str | Path, *, max_curves: int = 200, seed: int = 0) -> list[Path]:
    """Write the store's distributions as PNG plots (needs matplotlib).

    Files written in ``out_dir``:

    - ``scores.png``: histogram of every candidate's score, kept and discarded
      stacked, with the selection threshold as a vertical line;
    - ``saturation.png``: histogram of the candidates' saturated fractions, kept
      and discarded stacked (with ``select.min_saturated_fraction`` when it is > 0);
    - ``curves.png``: the camera curve f(x), x in [0, 1], of up to ``max_curves``
      pairs (a seeded sample), and the identity for reference.

    Returns
    -------
    list of pathlib.Path
        The three files.
    """
    st = store.open_store(root)
    index, cand = st.index, st.candidates()
    if cand.num_rows == 0:
        raise HdrprepError(f"{root}: the store has no scored candidates to plot")
    config = st.config
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    kept = cand["kept"].to_numpy(zero_copy_only=False)
    written = []

    for name, column, xlabel, line, line_label in (
            ("scores.png", "score", "score (Santos et al. 2020, Algorithm 1)", config["select"]["threshold"],
             "threshold"),
            ("saturation.png", "saturated_fraction", "saturated fraction of the LDR",
             config["select"]["min_saturated_fraction"] or None, "min. saturated fraction")):
        values = cand[column].to_numpy()
        fig = _figure(7, 4)
        ax = fig.add_subplot()
        top = max(float(values.max()), line or 0.0) or 1.0
        width = top / 40
        # the line is a bin edge, so no bar mixes values on both sides of it
        shift = (line or 0.0) % width
        bins = np.arange(shift - width if shift else 0.0, top + width, width)
        ax.hist([values[kept], values[~kept]], bins=bins, stacked=True,
                color=[np.array(_KEPT) / 255, np.array(_DISCARDED) / 255],
                label=[f"kept ({int(kept.sum())})", f"discarded ({int((~kept).sum())})"])
        if line is not None:
            ax.axvline(line, color="black", linestyle="--", linewidth=1.2, label=f"{line_label} {line:g}")
        ax.set_xlim(left=0)
        ax.set_xlabel(xlabel)
        ax.set_ylabel("candidates")
        ax.set_title(f"{Path(root).name}: {cand.num_rows} candidates from "
                     f"{len(set(cand['source'].to_pylist()))} frames")
        ax.legend()
        written.append(_save(fig, out_dir / name))

    fig = _figure(6, 5)
    ax = fig.add_subplot()
    x = np.linspace(0.0, 1.0, 257, dtype=np.float32)
    n = index.num_rows
    picks = np.sort(np.random.default_rng(seed).permutation(n)[:max_curves])
    if n:
        import dataclasses

        curves = camera.CurveTable.load(config["camera"]["table_path"]) \
            if config["camera"]["curve"] == "table" else None
        fields = [f.name for f in dataclasses.fields(camera.CameraParams)]
        rows = index.take(picks).to_pylist()
        for r in rows:
            params = camera.CameraParams.from_dict({f: r[f] for f in fields})
            ax.plot(x, camera.apply_curve(x, params, curves), color="tab:blue", alpha=0.25, linewidth=0.8)
    ax.plot(x, x, color="black", linestyle="--", linewidth=1, label="identity")
    families = sorted(set(index["curve"].to_pylist())) if n else []
    ax.set_title(f"camera curves of {len(picks)} of {n} pairs ({', '.join(families) or 'none'})")
    ax.set_xlabel("linear exposed value (1 = clip point)")
    ax.set_ylabel("camera output (before 8-bit quantisation)")
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1)
    ax.legend(loc="lower right")
    written.append(_save(fig, out_dir / "curves.png"))
    return written
