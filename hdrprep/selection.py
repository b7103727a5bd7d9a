"""Which candidates become training pairs: the keep rule, in one place.

Santos et al. 2020 discard patches without saturated pixels and keep those whose
Algorithm 1 score reaches 0.85. :func:`eligible` is that rule for any number of
candidates; :func:`select` adds the global rules (top ``target_pairs``,
``per_frame_cap``) that need every candidate's score. Two speed-ups of the build
are derived from the rule here, so they can never disagree with it:

- :func:`decided_per_candidate`: whether each candidate's fate is its own (no
  ranking), so stage 1 can keep a pair the moment it is scored;
- :func:`prescreen_bar`: the prescore below which a candidate cannot be kept
  and is not rendered with the full camera.
"""

from __future__ import annotations

import numpy as np

from hdrprep.config import MetricConfig, SelectConfig

__all__ = ["decided_per_candidate", "eligible", "prescreen_bar", "select"]


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


def decided_per_candidate(config: SelectConfig) -> bool:
    """True if a candidate's keep decision depends on it alone (no ranking among candidates)."""
    return config.keep_all or (config.target_pairs is None and config.per_frame_cap is None)


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


def select(score, saturated, frame, index, config: SelectConfig | None = None, rendered=None) -> np.ndarray:
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

    Returns
    -------
    keep : ndarray, (N,) bool

    Notes
    -----
    ``keep_all`` keeps everything. Otherwise a candidate is eligible when its
    saturated fraction is above ``min_saturated_fraction`` (default 0: at least
    one saturated pixel) and its score is >= ``threshold``. With
    ``per_frame_cap`` only the best ``per_frame_cap`` eligible candidates of
    each frame stay eligible; with ``target_pairs`` the best ``target_pairs``
    eligible candidates overall are kept. "Best" orders by score (descending),
    then frame key, then index, so ties are decided the same way on every run.
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
    if cfg.per_frame_cap is None and cfg.target_pairs is None:
        return keep
    _, frame_code = np.unique(frame, return_inverse=True)
    frame_code = frame_code.reshape(-1)
    order = np.lexsort((index, frame_code, -score))  # best first, deterministic ties
    order = order[keep[order]]
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
