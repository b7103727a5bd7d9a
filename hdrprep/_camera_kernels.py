"""Numba kernels of the virtual camera. Private: use :mod:`hdrprep.camera`.

One pass per window does what the camera's numpy steps did in five:
exposure, colour jitter (HSV in the sqrt domain), seeded Gaussian noise, clip,
camera curve and 8-bit quantisation.

Curve + quantisation as thresholds: the LDR level of a linear value x is
``floor(255 f(clip(x)) + 0.5)``; for a monotone curve f that is the number of
thresholds ``t_k = f^-1((k - 1/2) / 255)``, k = 1..255, with ``x >= t_k``. The
wrapper computes the 255 thresholds in float64 (rounded up to float32, so the
comparison on a float32 x is exact) and :func:`level_table` tabulates, for
``_BINS`` equal bins of [0, 1], the level at each bin's lower edge; a value
then needs one table read and, for the rare bin with a threshold in it, one or
two comparisons. This avoids a per-value ``powf`` (scalar in Numba: PyPI
llvmlite has no vector maths library) and is exact, where the float32 curve
of the numpy reference is off by one level at a few rounding boundaries.

Noise: a counter-based generator, so a value's noise depends only on
(seed, index of the value in the window), never on thread or call order. The
index goes through two rounds of a 32-bit integer hash (``lowbias32`` of
C. Wellons) keyed by two words derived from the 63-bit seed with splitmix64;
the 32-bit result is a uniform u = (h + 1/2) / 2**32, turned into a standard
normal by the inverse CDF tabulated at ``_NORM_BINS`` + 1 points of u and
interpolated linearly, with a finer table for the outermost bin of each tail
(|z| > 3.5). Everything is integer or correctly rounded float32 arithmetic
(no libm call, no fast-math flag), so the output is bit-identical on every
machine, and NaN/Inf propagate as IEEE says (``error_model="numpy"``: a float
division by zero gives Inf, not Python's ZeroDivisionError).
"""

import numpy as np
from numba import njit

#: Equal bins of [0, 1] in the level table (power of two: x * _BINS is exact).
LEVEL_BINS = 1 << 14
_BIN_SCALE = np.float32(LEVEL_BINS - 0.01)
_NORM_SHIFT = 20          # 32-bit uniform -> 12-bit main-table bin + 20-bit fraction
_NORM_BINS = 1 << (32 - _NORM_SHIFT)
_TAIL_SHIFT = 8           # the outermost main bin, split again into 4096 bins
_TAIL_BINS = 1 << (_NORM_SHIFT - _TAIL_SHIFT)


def normal_tables() -> tuple[np.ndarray, np.ndarray]:
    """Inverse normal CDF tables (float32) for :func:`render_window`.

    ``main[i]`` is Phi^-1 at u = (i * 2**20 + 1/2) / 2**32 for i < 4096 and at
    (2**32 - 1/2) / 2**32 for i = 4096; ``tail[j]`` is Phi^-1 at
    (j * 2**8 + 1/2) / 2**32, j = 0..4096, covering the lowest main bin (the
    upper tail is its mirror image). Computed with ``statistics.NormalDist``
    (Wichura's AS241, pure Python) so the tables are the same on every machine.
    """
    from statistics import NormalDist

    inv = NormalDist().inv_cdf
    scale = 2.0 ** -32
    main = [inv((i * (1 << _NORM_SHIFT) + 0.5) * scale) for i in range(_NORM_BINS)]
    main.append(-main[0])
    tail = [inv((j * (1 << _TAIL_SHIFT) + 0.5) * scale) for j in range(_TAIL_BINS + 1)]
    return np.array(main, np.float32), np.array(tail, np.float32)


def noise_keys(seed: int) -> tuple[int, int]:
    """Two 32-bit keys of a 63-bit noise seed (splitmix64 output of the seed)."""
    mask = (1 << 64) - 1
    z = (seed + 0x9E3779B97F4A7C15) & mask
    z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & mask
    z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & mask
    z ^= z >> 31
    return z & 0xFFFFFFFF, z >> 32


@njit(cache=True, nogil=True, error_model="numpy", inline="always")
def _lowbias32(x):
    x = np.uint32(x)
    x ^= x >> np.uint32(16)
    x = np.uint32(x * np.uint32(0x7FEB352D))
    x ^= x >> np.uint32(15)
    x = np.uint32(x * np.uint32(0x846CA68B))
    x ^= x >> np.uint32(16)
    return x


@njit(cache=True, nogil=True, error_model="numpy", inline="always")
def _uniform_bits(i, k1, k2):
    """The 32-bit random word of counter i (uint32) under keys k1, k2."""
    return _lowbias32(_lowbias32(np.uint32(i + k1)) ^ k2)


@njit(cache=True, nogil=True, error_model="numpy", inline="always")
def _normal(h, main, tail):
    """Standard normal from a 32-bit uniform word h, by the tabulated inverse CDF."""
    frac_scale = np.float32(1.0 / (1 << _NORM_SHIFT))
    i = h >> np.uint32(_NORM_SHIFT)
    low = h & np.uint32((1 << _NORM_SHIFT) - 1)
    if i == 0 or i == _NORM_BINS - 1:
        # outermost bins: the CDF bends too fast for one linear piece; use the tail table
        # (mirrored for the upper tail: Phi^-1(1 - u) = -Phi^-1(u))
        if i == 0:
            off = low
            sign = np.float32(1.0)
        else:
            off = np.uint32((1 << _NORM_SHIFT) - 1) - low
            sign = np.float32(-1.0)
        j = off >> np.uint32(_TAIL_SHIFT)
        f = np.float32(off & np.uint32((1 << _TAIL_SHIFT) - 1)) * np.float32(1.0 / (1 << _TAIL_SHIFT))
        return sign * (tail[j] + f * (tail[j + 1] - tail[j]))
    f = np.float32(low) * frac_scale
    return main[i] + f * (main[i + 1] - main[i])


@njit(cache=True, nogil=True, error_model="numpy", inline="always")
def _normal_inner(h, main):
    """:func:`_normal` for h outside the two tail bins (any float32 for those: see :func:`_in_tail`)."""
    i = h >> np.uint32(_NORM_SHIFT)
    # low < 2**20 converts exactly either way; the signed conversion is one instruction
    f = np.float32(np.int32(h & np.uint32((1 << _NORM_SHIFT) - 1))) * np.float32(1.0 / (1 << _NORM_SHIFT))
    return main[i] + f * (main[i + np.uint32(1)] - main[i])


@njit(cache=True, nogil=True, error_model="numpy", inline="always")
def _in_tail(h):
    """Whether :func:`_normal` takes its tail branch for h (bin 0 or the last bin), without a branch."""
    return ((h >> np.uint32(_NORM_SHIFT)) + np.uint32(1)) & np.uint32(_NORM_BINS - 1) <= np.uint32(1)


@njit(cache=True, nogil=True, error_model="numpy")
def _row_words(i0, k1, k2, word):
    """word[j] = the random word of counter i0 + j (a function of its own: inlined into the
    kernel's loop nest, LLVM vectorised the hash in 64-bit lanes, at half the speed)."""
    for j in range(word.shape[0]):
        word[j] = _uniform_bits(i0 + np.uint32(j), k1, k2)


@njit(cache=True, nogil=True, error_model="numpy", inline="always")
def _level_step(x, b, thr, start):
    """:func:`_level` of a clipped x in bin b, if b's range holds at most one threshold <= x.

    ``thr`` is the thresholds with +Inf appended; the level is exact when
    ``thr[result] > x`` (else continue with :func:`_level_search`).
    """
    lev = np.uint32(start[b])
    return lev + np.uint32(thr[lev] <= x)


@njit(cache=True, nogil=True, error_model="numpy", inline="always")
def _level_search(x, b, thr, start):
    """:func:`_level` of a clipped x in bin b (``thr`` as in :func:`_level_step`)."""
    lev = np.uint32(start[b])
    while thr[lev] <= x:
        lev += np.uint32(1)
    return lev


@njit(cache=True, nogil=True, error_model="numpy")
def standard_normal(n, k1, k2, main, tail, out):
    """out[i] = the standard normal of counter i, i < n (the noise :func:`render_window` adds)."""
    for i in range(n):
        out[i] = _normal(_uniform_bits(np.uint32(i), np.uint32(k1), np.uint32(k2)), main, tail)


@njit(cache=True, nogil=True, error_model="numpy")
def level_table(thresholds, out):
    """out[b] = number of thresholds <= b / LEVEL_BINS (the level at each bin's lower edge)."""
    inv = np.float32(1.0 / LEVEL_BINS)
    lev = 0
    n = thresholds.shape[0]
    for b in range(out.shape[0]):
        edge = np.float32(b) * inv
        while lev < n and thresholds[lev] <= edge:
            lev += 1
        out[b] = lev


@njit(cache=True, nogil=True, error_model="numpy", inline="always")
def _level(x, thresholds, start):
    """8-bit level of a linear value x: number of thresholds <= clip(x, 0, 1) (0 for NaN)."""
    # branch-free clip (NaN -> 0): early returns here made the loop 6x slower
    x = x if x > np.float32(0.0) else np.float32(0.0)
    x = x if x < np.float32(1.0) else np.float32(1.0)
    # x * _BIN_SCALE < x * LEVEL_BINS even after float32 rounding (relative gap 6e-7 > 2**-24),
    # so the bin's lower edge b / LEVEL_BINS is <= x and start[b] is a lower bound of the level
    lev = np.intp(start[np.intp(x * _BIN_SCALE)])
    n = thresholds.shape[0]
    while lev < n and thresholds[lev] <= x:
        lev += 1
    return lev


@njit(cache=True, nogil=True, error_model="numpy", inline="always")
def _jitter(r, g, b, hue6, sat):
    """Hue shift (sextants, in [0, 6)) and saturation shift of one RGB value, at constant gray.

    The shift is Eilertsen's (HSV on sqrt of the value, V kept); the result is
    then scaled so that its gray 0.299 R + 0.587 G + 0.114 B (the patch metric's)
    equals the input's, so the colour jitter leaves the metric's log luminance,
    and thus the detail layer, unchanged. Selects instead of branches (which channel is the maximum is a coin toss
    per pixel; mispredicted branches cost more than the arithmetic).
    """
    zero = np.float32(0.0)
    one = np.float32(1.0)
    six = np.float32(6.0)
    gray_in = np.float32(0.299) * r + np.float32(0.587) * g + np.float32(0.114) * b
    r = np.sqrt(r)
    g = np.sqrt(g)
    b = np.sqrt(b)
    v = r if r > g else g  # selects: numba's min/max builtins compile to branches
    v = v if v > b else b
    lo = r if r < g else g
    lo = lo if lo < b else b
    d = v - lo
    grey = not d > zero  # grey or black: hue 0, saturation 0 (a positive shift tints it red-ward)
    rd = one / d
    h = (g - b) * rd if v == r else (np.float32(2.0) + (b - r) * rd if v == g else np.float32(4.0) + (r - g) * rd)
    h = zero if grey else h
    h = h + six if h < zero else h
    h = h + hue6
    h = h - six if h >= six else h
    s = zero if grey else d / v
    s = s + sat
    s = s if s > zero else zero
    s = s if s < one else one
    vs = v * s
    out_r = _hsv_channel(np.float32(5.0), h, v, vs)
    out_g = _hsv_channel(np.float32(3.0), h, v, vs)
    out_b = _hsv_channel(np.float32(1.0), h, v, vs)
    out_r = out_r * out_r
    out_g = out_g * out_g
    out_b = out_b * out_b
    gray_out = np.float32(0.299) * out_r + np.float32(0.587) * out_g + np.float32(0.114) * out_b
    k = gray_in / gray_out if gray_out > zero else one  # V > 0 keeps gray_out > 0 unless black
    return out_r * k, out_g * k, out_b * k


@njit(cache=True, nogil=True, error_model="numpy", inline="always")
def _hsv_channel(n, h, v, vs):
    """HSV -> one RGB channel: v - v s clamp(min(k, 4 - k), 0, 1), k = (n + h) mod 6."""
    k = n + h
    k = k - np.float32(6.0) if k >= np.float32(6.0) else k
    w = np.float32(4.0) - k
    w = k if k < w else w
    w = w if w > np.float32(0.0) else np.float32(0.0)
    w = w if w < np.float32(1.0) else np.float32(1.0)
    return v - vs * w


@njit(cache=True, nogil=True, error_model="numpy")
def render_window(hdr, exposure, jitter, hue6, sat, sigma, k1, k2, main, tail, thresholds, start, bgr,
                  target, ldr):
    """One capture of a window, all steps before JPEG, in one pass.

    Parameters
    ----------
    hdr : float32 (h, w, 3)
        Scene-linear window (any strides).
    exposure : float32
    jitter : bool
        Apply the hue (``hue6``, sextants in [0, 6)) and saturation (``sat``) shift.
    sigma : float32
        Noise standard deviation; 0 for no noise.
    k1, k2 : uint32
        Noise keys (:func:`noise_keys`); value (y, x, c) uses counter (y * w + x) * 3 + c.
    main, tail : float32
        :func:`normal_tables`.
    thresholds : float32 (255,)
        Non-decreasing, in (0, 1]; ``start`` : uint8 (LEVEL_BINS,) from :func:`level_table`.
    bgr : bool
        Write the LDR channels in B, G, R order (what OpenCV's JPEG encoder takes).
    target : float32 (h, w, 3), C-contiguous
        Out: exposure * hdr after the jitter.
    ldr : uint8 (h, w, 3), C-contiguous
        Out: the quantised camera output.
    """
    h, w = hdr.shape[0], hdr.shape[1]
    n3 = 3 * w
    # Per row, in loops that each do one kind of work: LLVM vectorises the arithmetic loops
    # (no gathers on this target), leaving only the table reads scalar and branch-free.
    value = np.empty(n3, np.float32)   # RGB interleaved, the noise counter's order
    red = np.empty(w, np.float32)      # planar for the jitter (vectorises, interleaved does not)
    green = np.empty(w, np.float32)
    blue = np.empty(w, np.float32)
    word = np.empty(n3, np.uint32)
    clipped = np.empty(n3, np.float32)
    binned = np.empty(n3, np.uint32)  # unsigned: no negative-index wraparound in the table reads
    noise = np.zeros(n3, np.float32)
    in_tail = np.empty(n3 + 1, np.intp)
    # thresholds + one +Inf: "lev < n and t[lev] <= x" becomes "t[lev] <= x" for x <= 1
    n = thresholds.shape[0]
    thr = np.empty(n + 1, np.float32)
    thr[:n] = thresholds
    thr[n] = np.inf
    ukey1 = np.uint32(k1)
    ukey2 = np.uint32(k2)
    noisy = sigma > np.float32(0.0)
    c_r, c_b = (2, 0) if bgr else (0, 2)
    for y in range(h):
        trow = target[y]
        if jitter:
            for x in range(w):
                red[x] = hdr[y, x, 0] * exposure
                green[x] = hdr[y, x, 1] * exposure
                blue[x] = hdr[y, x, 2] * exposure
            for x in range(w):
                red[x], green[x], blue[x] = _jitter(red[x], green[x], blue[x], hue6, sat)
            for x in range(w):
                value[3 * x] = trow[x, 0] = red[x]
                value[3 * x + 1] = trow[x, 1] = green[x]
                value[3 * x + 2] = trow[x, 2] = blue[x]
        else:
            for x in range(w):
                value[3 * x] = trow[x, 0] = hdr[y, x, 0] * exposure
                value[3 * x + 1] = trow[x, 1] = hdr[y, x, 1] * exposure
                value[3 * x + 2] = trow[x, 2] = hdr[y, x, 2] * exposure
        if noisy:
            _row_words(np.uint32(y * n3), ukey1, ukey2, word)
            # the rare tail bins (2 in 4096) are noted branch-free and redone after the loop
            n_tail = 0
            for j in range(n3):
                noise[j] = sigma * _normal_inner(word[j], main)
                in_tail[n_tail] = j
                n_tail += _in_tail(word[j])
            for k in range(n_tail):
                j = in_tail[k]
                noise[j] = sigma * _normal(word[j], main, tail)
        for j in range(n3):
            x = value[j] + noise[j]
            x = x if x > np.float32(0.0) else np.float32(0.0)   # NaN -> 0
            x = x if x < np.float32(1.0) else np.float32(1.0)
            clipped[j] = x
            # x * _BIN_SCALE < x * LEVEL_BINS even after float32 rounding (relative gap 6e-7 > 2**-24),
            # so the bin's lower edge is <= x and start[bin] is a lower bound of the level
            binned[j] = np.uint32(np.int32(x * _BIN_SCALE))
        # the level: start[bin], then one step, which is all it takes unless the bin holds two or
        # more thresholds below x (dark bins of steep curves); such rows take the full search after
        lrow = ldr[y]
        more = False
        for x in range(w):
            j = 3 * x
            lev_r = _level_step(clipped[j], binned[j], thr, start)
            lev_g = _level_step(clipped[j + 1], binned[j + 1], thr, start)
            lev_b = _level_step(clipped[j + 2], binned[j + 2], thr, start)
            lrow[x, c_r] = lev_r
            lrow[x, 1] = lev_g
            lrow[x, c_b] = lev_b
            more |= (thr[lev_r] <= clipped[j]) | (thr[lev_g] <= clipped[j + 1]) | (thr[lev_b] <= clipped[j + 2])
        if more:
            for x in range(w):
                j = 3 * x
                lrow[x, c_r] = _level_search(clipped[j], binned[j], thr, start)
                lrow[x, 1] = _level_search(clipped[j + 1], binned[j + 1], thr, start)
                lrow[x, c_b] = _level_search(clipped[j + 2], binned[j + 2], thr, start)


@njit(cache=True, nogil=True, error_model="numpy")
def base_levels(hdr, exposure, thresholds, start, vmin, ldr):
    """Levels at or above ``vmin`` of the deterministic camera (exposure, clip, curve, quantisation).

    Writes ``ldr[y, x, c]`` = the level of ``exposure * hdr[y, x, c]`` where it is
    >= ``vmin``, else 0, and returns the number of pixels with such a channel.
    The arithmetic of each value is :func:`render_window`'s without jitter and
    noise; only values at or above ``thresholds[vmin - 1]`` are looked up.
    """
    h, w = hdr.shape[0], hdr.shape[1]
    tv = thresholds[vmin - 1]
    exposed = np.empty(3 * w, np.float32)
    over = np.empty(w, np.uint8)
    count = 0
    for y in range(h):
        # branch-free passes that LLVM vectorises; most rows have few values at or above tv
        for x in range(w):
            exposed[3 * x] = hdr[y, x, 0] * exposure
            exposed[3 * x + 1] = hdr[y, x, 1] * exposure
            exposed[3 * x + 2] = hdr[y, x, 2] * exposure
        hits = 0
        for x in range(w):
            o = (np.uint8(exposed[3 * x] >= tv) | np.uint8(exposed[3 * x + 1] >= tv)
                 | np.uint8(exposed[3 * x + 2] >= tv))
            over[x] = o
            hits += o
        lrow = ldr[y]
        lrow[:] = 0
        if hits == 0:
            continue
        count += hits
        for x in range(w):
            if over[x]:
                for c in range(3):
                    v = exposed[3 * x + c]
                    if v >= tv:
                        lrow[x, c] = _level(v, thresholds, start)
    return count


# ---------------------------------------------------------------------------------------------
# The eilertsen2017 camera (``CameraConfig.mode``): the steps of HDR-CNN's virtualcamera.cpp,
# with OpenCV's float arithmetic where it is OpenCV's (cv::resize INTER_LINEAR, the HSV
# conversions of its SIMD path, calcHist on non-uniform bins).

_CLAMP_LOW = np.float32(1e-5)      # virtualcamera.cpp's max(x, 1e-5) (before exposure and after the jitter)
_CLAMP_IN_HIGH = np.float32(1e5)   # its min(x, 1e5) of the resized crop
_CLAMP_OUT_HIGH = np.float32(1e10)  # its min(x, 1e10) of the target
_FLT_EPSILON = np.float32(np.finfo(np.float32).eps)
_HSV_TO_SEXTANT = np.float32(6.0) / np.float32(360.0)  # OpenCV's hscale of HSV2RGB_f (hrange 360)
_ONE_SIXTH = np.float32(1.0 / 6.0)
#: Bins of virtualcamera.cpp's exposure histogram.
HIST_BINS = 256


@njit(cache=True, nogil=True, error_model="numpy")
def resize_linear(src, yofs, beta, xofs, alpha, xmax, area2, flip, out):
    """cv::resize(INTER_LINEAR) of a float32 (H, W, 3) crop into ``out`` (oh, ow, 3), optionally mirrored.

    The tables are OpenCV's (computed by the wrapper): for output column dx the source
    column ``xofs[dx]`` and weight ``alpha[dx]`` of the next one (columns at or after
    ``xmax`` copy ``src[:, xofs]``); for output row dy the row ``yofs[dy]`` and weight
    ``beta[dy]`` of the next, rows clamped to the crop. Each value is
    ``S0 * (1 - a) + S1 * a`` in float32, horizontally then vertically, as OpenCV's
    float path computes it. ``area2``: the crop is exactly twice the output size, where
    OpenCV switches to INTER_AREA: ``(((a + b) + c) + d) * 0.25`` of each 2x2 block.
    ``flip`` mirrors the output left-right (``cv::flip(x, 1)``).
    """
    h_src = src.shape[0]
    oh, ow = out.shape[0], out.shape[1]
    quarter = np.float32(0.25)
    if area2:
        for y in range(oh):
            for x in range(ow):
                xo = ow - 1 - x if flip else x
                for c in range(3):
                    out[y, xo, c] = (((src[2 * y, 2 * x, c] + src[2 * y, 2 * x + 1, c]) + src[2 * y + 1, 2 * x, c])
                                     + src[2 * y + 1, 2 * x + 1, c]) * quarter
        return
    one = np.float32(1.0)
    row0 = np.empty((ow, 3), np.float32)
    row1 = np.empty((ow, 3), np.float32)
    for y in range(oh):
        b = beta[y]
        b0 = one - b
        s0 = min(max(yofs[y], 0), h_src - 1)
        s1 = min(max(yofs[y] + 1, 0), h_src - 1)
        for k in range(2):
            sy = s0 if k == 0 else s1
            row = row0 if k == 0 else row1
            for x in range(ow):
                sx = xofs[x]
                if x < xmax:
                    a = alpha[x]
                    a0 = one - a
                    for c in range(3):
                        row[x, c] = src[sy, sx, c] * a0 + src[sy, sx + 1, c] * a
                else:
                    for c in range(3):
                        row[x, c] = src[sy, sx, c]
        for x in range(ow):
            xo = ow - 1 - x if flip else x
            for c in range(3):
                out[y, xo, c] = row0[x, c] * b0 + row1[x, c] * b


@njit(cache=True, nogil=True, error_model="numpy")
def histogram_exposure(window, q, edges, counts):
    """virtualcamera.cpp's exposure of a resized crop: 1 / its estimate of the q-quantile (float32).

    The values are clamped to [1e-5, 1e5] first (as the C++ does before it); ``edges``
    (float32, HIST_BINS + 1) get the bin edges ``(sqrt(mi) + (sqrt(ma) - sqrt(mi)) i / 256)^2``
    (double, then float32) with mi, ma the clamped minimum and maximum + 1e-5, and
    ``counts`` the histogram of all 3 h w channel values on them (OpenCV's calcHist with
    non-uniform bins: R[i] <= v < R[i + 1]). The cumulative share is summed in float32
    until it reaches q (not before the second bin), and the quantile interpolated
    linearly inside that bin, in float32, as the C++ does. Returns 0 where the edges
    are not strictly increasing (a window too flat for 256 float32 bins: there OpenCV's
    calcHist raises and the C++ drops the crop).
    """
    h, w = window.shape[0], window.shape[1]
    lo = _CLAMP_LOW
    hi = _CLAMP_IN_HIGH
    mi = np.inf
    ma = -np.inf
    for y in range(h):
        for x in range(w):
            for c in range(3):
                v = window[y, x, c]
                v = v if v > lo else lo
                v = v if v < hi else hi
                vd = np.float64(v)
                mi = vd if vd < mi else mi
                ma = vd if vd > ma else ma
    ma += 1e-5
    smi = np.sqrt(mi)
    sma = np.sqrt(ma)
    for i in range(HIST_BINS + 1):
        t = smi + ((sma - smi) * np.float64(i)) / np.float64(HIST_BINS)
        edges[i] = np.float32(t * t)
    for i in range(HIST_BINS):
        if not edges[i] < edges[i + 1]:
            return np.float32(0.0)
        counts[i] = 0
    # first guess of the bin from the square root, then exact comparisons with the float32 edges
    step = np.float64(HIST_BINS) / (sma - smi)
    for y in range(h):
        for x in range(w):
            for c in range(3):
                v = window[y, x, c]
                v = v if v > lo else lo
                v = v if v < hi else hi
                if v < edges[0] or v >= edges[HIST_BINS]:
                    continue
                k = np.intp((np.sqrt(np.float64(v)) - smi) * step)
                k = min(max(k, 0), HIST_BINS - 1)
                while v < edges[k]:
                    k -= 1
                while v >= edges[k + 1]:
                    k += 1
                counts[k] += 1
    n = np.float32(h * w * 3)
    cum = np.float32(0.0)
    c0 = np.float32(0.0)
    i = 0
    while i < HIST_BINS:
        c0 = cum
        cum = cum + np.float32(counts[i]) / n
        if cum >= q and i > 0:
            break
        i += 1
    a = (q - c0) / (cum - c0)
    a = a if a < np.float32(1.0) else np.float32(1.0)   # std::min(1.0f, a): NaN -> 1
    a = a if np.float32(0.0) < a else np.float32(0.0)   # std::max(0.0f, a)
    upper = edges[min(i + 1, HIST_BINS)]
    lower = edges[min(i, HIST_BINS)]
    sc = a * upper + (np.float32(1.0) - a) * lower
    return np.float32(1.0) / sc


@njit(cache=True, nogil=True, error_model="numpy", inline="always")
def _fma32(a, b, c):
    """float32 a * b + c rounded once (as the FMA of OpenCV's AVX2 path; via float64, exact product)."""
    return np.float32(np.float64(a) * np.float64(b) + np.float64(c))


@njit(cache=True, nogil=True, error_model="numpy", inline="always")
def _hsv_jitter(r, g, b, hue, sat):
    """OpenCV's float RGB -> HSV, H += hue (degrees), S += sat, HSV -> RGB, as its SIMD path computes them.

    RGB2HSV: V = max, S = (max - min) / (|max| + FLT_EPSILON), H = h * 60 / (max - min +
    FLT_EPSILON) + (0, 120, 240 or 360) with one rounding (FMA). HSV2RGB: h = H * 6/360,
    sector = trunc(h) mod 6 by truncation, f = h - trunc(h), and the four table values
    V, V (1 - S), V (1 - S f), V (1 - S (1 - f)), the last two with one rounding (FMA).
    S is not clipped (S > 1 gives negative channels) and a negative h is not wrapped
    (its sector is 0 with f < 0): OpenCV's behaviour, kept.
    """
    one = np.float32(1.0)
    mx = r if r > g else g
    mx = mx if mx > b else b
    mn = r if r < g else g
    mn = mn if mn < b else b
    diff = mx - mn
    s = diff / (abs(mx) + _FLT_EPSILON)
    if r == mx:
        h0 = g - b
        res = np.float32(360.0) if g < b else np.float32(0.0)
    elif g == mx:
        h0 = b - r
        res = np.float32(120.0)
    else:
        h0 = r - g
        res = np.float32(240.0)
    rev = np.float32(60.0) / (diff + _FLT_EPSILON)
    hh = _fma32(h0, rev, res)  # times OpenCV's hscale 360 * (1/360.f), which is exactly 1
    hh = hh + hue
    s = s + sat
    v = mx
    hs = hh * _HSV_TO_SEXTANT
    pre = np.float32(np.trunc(hs))
    f = hs - pre
    t0 = v
    t1 = v * (one - s)
    t2 = v * _fma32(-s, f, one)
    t3 = v * _fma32(-s, one - f, one)
    sector = pre - np.float32(np.trunc(pre * _ONE_SIXTH)) * np.float32(6.0)
    if sector < np.float32(1.0):
        out_r, out_g, out_b = t0, t3, t1
    elif sector == np.float32(1.0):
        out_r, out_g, out_b = t2, t0, t1
    elif sector == np.float32(2.0):
        out_r, out_g, out_b = t1, t0, t3
    elif sector == np.float32(3.0):
        out_r, out_g, out_b = t1, t2, t0
    elif sector == np.float32(4.0):
        out_r, out_g, out_b = t3, t1, t0
    else:
        out_r, out_g, out_b = t0, t1, t2
    return out_r, out_g, out_b


@njit(cache=True, nogil=True, error_model="numpy")
def eilertsen_target(hdr, exposure, jitter, hue, sat, sigma, k1, k2, main, tail, target):
    """The HDR target of virtualcamera.cpp's steps after the crop: clamp, exposure, noise, jitter, clamp.

    ``x = min(max(hdr, 1e-5), 1e5) * exposure``; ``x = max(0, x + sigma z)`` with z the
    seeded standard normal of counter (y * w + x) * 3 + c (:func:`render_window`'s);
    with ``jitter``: sqrt, :func:`_hsv_jitter`, square; then ``min(max(x, 1e-5), 1e10)``.
    All in float32; the target keeps the noise and the jitter.
    """
    h, w = hdr.shape[0], hdr.shape[1]
    n3 = 3 * w
    value = np.empty(n3, np.float32)
    word = np.empty(n3, np.uint32)
    noise = np.zeros(n3, np.float32)
    ukey1 = np.uint32(k1)
    ukey2 = np.uint32(k2)
    noisy = sigma > np.float32(0.0)
    zero = np.float32(0.0)
    for y in range(h):
        for x in range(w):
            for c in range(3):
                v = hdr[y, x, c]
                v = v if v > _CLAMP_LOW else _CLAMP_LOW
                v = v if v < _CLAMP_IN_HIGH else _CLAMP_IN_HIGH
                value[3 * x + c] = v * exposure
        if noisy:
            _row_words(np.uint32(y * n3), ukey1, ukey2, word)
            for j in range(n3):
                noise[j] = sigma * _normal(word[j], main, tail)
        for j in range(n3):
            v = value[j] + noise[j]
            value[j] = v if v > zero else zero
        trow = target[y]
        for x in range(w):
            r = value[3 * x]
            g = value[3 * x + 1]
            b = value[3 * x + 2]
            if jitter:
                r, g, b = _hsv_jitter(np.sqrt(r), np.sqrt(g), np.sqrt(b), hue, sat)
                r = r * r
                g = g * g
                b = b * b
            r = r if r > _CLAMP_LOW else _CLAMP_LOW
            g = g if g > _CLAMP_LOW else _CLAMP_LOW
            b = b if b > _CLAMP_LOW else _CLAMP_LOW
            trow[x, 0] = r if r < _CLAMP_OUT_HIGH else _CLAMP_OUT_HIGH
            trow[x, 1] = g if g < _CLAMP_OUT_HIGH else _CLAMP_OUT_HIGH
            trow[x, 2] = b if b < _CLAMP_OUT_HIGH else _CLAMP_OUT_HIGH
