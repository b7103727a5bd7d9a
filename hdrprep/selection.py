"""Which candidates become training pairs: the keep rule, in one place.

Santos et al. 2020 discard patches without saturated pixels and keep those whose
Algorithm 1 score reaches 0.85. :func:`eligible` is that rule for any number of
candidates; :func:`select` adds the global rules (top ``target_pairs``,
``per_frame_cap``) that need every candidate's score. Two speed-ups of the build
are derived from the rule here, so they can never disagree with it:

- :func:`decided_per_frame`: whether a candidate's fate depends on its frame
  alone (no global ranking), so stage 1 can keep a frame's pairs as soon as the
  frame is scored;
- :func:`prescreen_bar`: the prescore below which a candidate cannot be kept
  and is not rendered with the full camera.
"""

from __future__ import annotations

import numpy as np

from hdrprep.config import MetricConfig, SelectConfig

__all__ = ["decided_per_frame", "eligible", "iou", "prescreen_bar", "select", "window_boxes"]


def eligible(score, saturated, config: SelectConfig):
    """Santos' rule: some saturation (above ``min_saturated_fraction``) and score >= ``threshold``.

    Parameters
    ----------
    score, saturated : float or numpy.ndarray of float
        Algorithm 1 score and saturated fraction in [0, 1] of each candidate.

    Returns
    -------
    bool or numpy.ndarray of bool, the shape of the inputs
    """
    return (saturated > config.min_saturated_fraction) & (score >= config.threshold)


def decided_per_frame(config: SelectConfig) -> bool:
    """True if a candidate's keep decision depends on its own frame's candidates alone (no global ranking)."""
    return config.keep_all or config.target_pairs is None


def prescreen_bar(select_cfg: SelectConfig, metric_cfg: MetricConfig) -> float | None:
    """The prescore below which a candidate is not rendered with the full camera, or None (render all).

    A candidate is prescored on the deterministic camera's mask; its final score
    differs by the noise, jitter and JPEG, measured to stay within
    ``metric.prescreen_margin``. So a prescore below ``threshold - margin`` means
    the candidate cannot be :func:`eligible`. Where the rule ranks candidates
    (``target_pairs``), every candidate needs its real score; ``keep_all`` looks at
    no score; and a margin of None turns the prescreen off.
    """
    if metric_cfg.prescreen_margin is None or select_cfg.target_pairs is not None or select_cfg.keep_all:
        return None
    return select_cfg.threshold - metric_cfg.prescreen_margin


def select(score, saturated, frame, index, config: SelectConfig | None = None, rendered=None,
           boxes=None) -> np.ndarray:
    """Which candidates become training pairs.

    Parameters
    ----------
    score, saturated : array_like, (N,) float
        Metric score and saturated fraction of each candidate (numpy arrays or
        pyarrow columns).
    frame : array_like, (N,)
        Frame key of each candidate (str or int); used for the per-frame cap and
        for ties.
    index : array_like, (N,) int
        Candidate index within its frame; breaks ties.
    config : SelectConfig, optional
    rendered : array_like, (N,) bool, optional
        False for a candidate whose score is the prescore on the deterministic camera
        (:func:`prescreen_bar`); such a candidate is never kept outside ``keep_all``.
    boxes : array_like, (N, 4) int, optional
        Each candidate's window in its frame as (row, col, height, width) pixels;
        needed by ``max_overlap``.

    Returns
    -------
    keep : ndarray, (N,) bool

    Notes
    -----
    ``keep_all`` keeps everything. Otherwise a candidate is eligible when its
    saturated fraction is above ``min_saturated_fraction`` (default 0: at least
    one saturated pixel) and its score is >= ``threshold``. With
    ``max_overlap``, going through a frame's eligible candidates best first, one
    whose window overlaps a kept one of the frame by an intersection over union
    above ``max_overlap`` is dropped (a greedy non-maximum suppression). With
    ``per_frame_cap`` only the best ``per_frame_cap`` of what remains of each
    frame stay eligible; with ``target_pairs`` the best ``target_pairs``
    eligible candidates overall are kept. "Best" orders by score (descending),
    then frame key, then index, so ties are decided the same way on every run.
    The per-frame rules look at one frame's candidates only, so a frame's
    selection can be made as soon as it is scored (:func:`decided_per_frame`).
    """
    cfg = SelectConfig() if config is None else config
    score = np.asarray(score, dtype=np.float64)
    saturated = np.asarray(saturated, dtype=np.float64)
    frame = np.asarray(frame)
    index = np.asarray(index)
    n = score.shape[0]
    for name, arr in (("score", score), ("saturated", saturated), ("frame", frame), ("index", index)):
        if arr.ndim != 1 or arr.shape[0] != n:
            raise ValueError(f"{name} must be a 1-D array of length {n} (one per candidate), got shape {arr.shape}")
    if cfg.keep_all:  # scores are not looked at
        return np.ones(n, bool)
    if np.isnan(score).any() or np.isnan(saturated).any():
        raise ValueError(
            f"{int(np.isnan(score).sum())} scores and {int(np.isnan(saturated).sum())} saturated fractions "
            "are NaN; recompute them from finite HDR frames and masks"
        )
    keep = eligible(score, saturated, cfg)
    if rendered is not None:
        keep &= np.asarray(rendered, dtype=bool)
    if cfg.per_frame_cap is None and cfg.target_pairs is None and cfg.max_overlap is None:
        return keep
    _, frame_code = np.unique(frame, return_inverse=True)
    frame_code = frame_code.reshape(-1)
    order = np.lexsort((index, frame_code, -score))  # best first, deterministic ties
    order = order[keep[order]]
    if cfg.max_overlap is not None:
        if boxes is None:
            raise ValueError("select.max_overlap needs each candidate's window (boxes)")
        order = _suppress_overlaps(order, frame_code, np.asarray(boxes, dtype=np.int64), cfg.max_overlap)
    if cfg.per_frame_cap is not None:
        # rank of each candidate within its frame, in the best-first order
        fc = frame_code[order]
        by_frame = np.argsort(fc, kind="stable")
        sorted_fc = fc[by_frame]
        rank = np.empty(order.shape[0], np.int64)
        rank[by_frame] = np.arange(order.shape[0]) - np.searchsorted(sorted_fc, sorted_fc, "left")
        order = order[rank < cfg.per_frame_cap]
    if cfg.target_pairs is not None:
        order = order[:cfg.target_pairs]
    out = np.zeros(n, bool)
    out[order] = True
    return out


def window_boxes(columns) -> np.ndarray:
    """Each candidate's window in its frame from table columns: (N, 4) int64 (row, col, height, width).

    Parameters
    ----------
    columns : mapping
        ``row``, ``col``, ``size`` and, where the store has it, ``crop`` (the source
        side of a resized crop; 0 or null for a native window of ``size`` pixels):
        numpy arrays, pyarrow columns or lists.
    """
    def column(name):
        c = columns[name]
        c = c.to_numpy(zero_copy_only=False) if hasattr(c, "to_numpy") else np.asarray(c)
        return np.nan_to_num(np.asarray(c, dtype=np.float64)).astype(np.int64)  # a null crop: native

    side = column("size")
    if "crop" in getattr(columns, "column_names", columns):
        crop = column("crop")
        side = np.where(crop > 0, crop, side)
    return np.stack([column("row"), column("col"), side, side], axis=1).reshape(-1, 4)


def iou(box, boxes) -> np.ndarray:
    """Intersection over union of window ``box`` with each of ``boxes``; windows are (row, col, height, width).

    Returns
    -------
    numpy.ndarray
        float64 (K,) in [0, 1].
    """
    box = np.asarray(box, dtype=np.int64)
    boxes = np.asarray(boxes, dtype=np.int64).reshape(-1, 4)
    dy = np.minimum(box[0] + box[2], boxes[:, 0] + boxes[:, 2]) - np.maximum(box[0], boxes[:, 0])
    dx = np.minimum(box[1] + box[3], boxes[:, 1] + boxes[:, 3]) - np.maximum(box[1], boxes[:, 1])
    inter = np.clip(dy, 0, None) * np.clip(dx, 0, None)
    return inter / (box[2] * box[3] + boxes[:, 2] * boxes[:, 3] - inter)


def _suppress_overlaps(order: np.ndarray, frame_code: np.ndarray, boxes: np.ndarray, limit: float) -> np.ndarray:
    """``order`` (best first) without the candidates whose window overlaps a better kept one of its frame."""
    kept: dict[int, list[int]] = {}
    out = []
    for i in order.tolist():
        mine = kept.setdefault(int(frame_code[i]), [])
        if not mine or iou(boxes[i], boxes[mine]).max() <= limit:
            mine.append(i)
            out.append(i)
    return np.array(out, dtype=np.int64)
