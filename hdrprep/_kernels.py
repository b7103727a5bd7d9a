"""Numba kernels of the patch metric. Private: use :mod:`hdrprep.metric`.

The detail layer of Santos et al. (2020), D = L - bilateral(L), is computed with
OpenCV's bilateral filter geometry (a circular window of radius R, spatial
weights exp(-r^2 / (2 sigma_s^2)), REFLECT_101 borders), but with the range
weight exp(-c (Lq - Lp)^2), c = 1 / (2 sigma_c^2), replaced by its Taylor
polynomial of order n. On log luminance with sigma_c = 100 the argument
c (Lq - Lp)^2 stays below about 0.006, so order 1 is exact to float32 rounding;
the wrapper picks the order from the frame's range. The filter then becomes a
ratio of sums over spatial moments S_k(p) = sum_q s(q - p) Lq^k, k = 0..2n+1,
and every S_k is a linear spatial filter: each disc row is a truncated 1-D
Gaussian, so a horizontal pass stores the running row sums at the few widths the
disc needs and a vertical pass combines 2R + 1 of them.

Numbers: float32 images and moments (L is centred on ``ref`` so that the powers
stay small), float64 per-pixel Taylor sums and score accumulators. No fast-math
flag that assumes finite values is used: NaN and Inf propagate as IEEE says.
"""

import numpy as np
from numba import njit, prange

# Reassociation lets LLVM vectorise the float64 score sums; nnan/ninf stay off.
_SUM_MATH = {"reassoc", "contract"}


@njit(cache=True, nogil=True)
def _reflect(p, n):
    """OpenCV's BORDER_REFLECT_101 index (``cv::borderInterpolate``)."""
    if n == 1:
        return 0
    while p < 0 or p >= n:
        p = -p if p < 0 else 2 * n - 2 - p
    return p


@njit(cache=True, nogil=True)
def log_luminance(hdr, out):
    """out = log(gray(hdr) + 1), gray with OpenCV's RGB2GRAY weights, in float32."""
    r_w = np.float32(0.299)
    g_w = np.float32(0.587)
    b_w = np.float32(0.114)
    one = np.float32(1.0)
    for y in range(hdr.shape[0]):
        for x in range(hdr.shape[1]):
            gray = hdr[y, x, 0] * r_w + hdr[y, x, 1] * g_w + hdr[y, x, 2] * b_w
            out[y, x] = np.log(gray + one)


@njit(cache=True, nogil=True)
def _moments_row(powers, rows, g, row_width, width_slot, acc, cols_sum, vsum):
    """Spatial moments S_{m+1} of one output row, vsum[m, x] (float32).

    powers[m, r] : the (m+1)-th power of source row r, padded by R columns on
    each side; rows[i + R] : index in ``powers`` of the row at vertical offset i
    (already reflected). Vertical pass first: the column sums over |i| <= h at
    every disc height h go to cols_sum[width_slot[h]]; then each disc column j
    adds its column sum of height row_width[j].
    """
    R = g.shape[0] - 1
    nmom = powers.shape[0]
    npad = powers.shape[2]
    nx = vsum.shape[1]
    g0 = g[0]
    # 1-D views indexed by the bare loop variable: Numba's negative-index
    # wraparound on offset indices would keep LLVM from vectorising these loops
    for m in range(nmom):
        centre = powers[m, rows[R]]
        for k in range(npad):
            acc[k] = g0 * centre[k]
        ws = width_slot[0]
        if ws >= 0:
            dst = cols_sum[ws]
            for k in range(npad):
                dst[k] = acc[k]
        for i in range(1, R + 1):
            gi = g[i]
            up = powers[m, rows[R - i]]
            down = powers[m, rows[R + i]]
            for k in range(npad):
                acc[k] += gi * (up[k] + down[k])
            ws = width_slot[i]
            if ws >= 0:
                dst = cols_sum[ws]
                for k in range(npad):
                    dst[k] = acc[k]
        v = vsum[m]
        c = cols_sum[width_slot[row_width[0]]][R:R + nx]
        for x in range(nx):
            v[x] = g0 * c[x]
        for j in range(1, R + 1):
            gj = g[j]
            cj = cols_sum[width_slot[row_width[j]]]
            left = cj[R - j:R - j + nx]
            right = cj[R + j:R + j + nx]
            for x in range(nx):
                v[x] += gj * (left[x] + right[x])


@njit(cache=True, nogil=True)
def _taylor_row(lrow, ref, vsum, kernel_sum, taylor, binom, negp, num, den, drow):
    """D = L - B on one row from the moments vsum[m] = S_{m+1} (float32 out).

    B - ref = N / Z, Z = sum_m taylor[m] sum_k C(2m, k) (-l)^(2m-k) S_k and N
    the same with S_{k+1}, l = L - ref, S_0 = kernel_sum.
    """
    nterm = taylor.shape[0]
    nx = lrow.shape[0]
    neg = negp[1]
    for x in range(nx):
        neg[x] = -np.float32(lrow[x] - ref)
    if nterm == 2:  # order 1, the usual case, in one pass
        a = taylor[1]
        s1 = vsum[0]
        s2 = vsum[1]
        s3 = vsum[2]
        for x in range(nx):
            t = neg[x]
            z = kernel_sum + a * (s2[x] + 2.0 * t * s1[x] + t * t * kernel_sum)
            n = s1[x] + a * (s3[x] + 2.0 * t * s2[x] + t * t * s1[x])
            drow[x] = np.float32(-t - n / z)
        return
    for x in range(nx):
        negp[0, x] = 1.0
        num[x] = 0.0
        den[x] = 0.0
    for e in range(2, 2 * nterm - 1):
        pe = negp[e]
        pp = negp[e - 1]
        for x in range(nx):
            pe[x] = pp[x] * neg[x]
    for m in range(nterm):
        for k in range(2 * m + 1):
            cf = taylor[m] * binom[2 * m, k]
            pe = negp[2 * m - k]
            sn = vsum[k]
            if k == 0:
                for x in range(nx):
                    t = cf * pe[x]
                    den[x] += t * kernel_sum
                    num[x] += t * sn[x]
            else:
                sd = vsum[k - 1]
                for x in range(nx):
                    t = cf * pe[x]
                    den[x] += t * sd[x]
                    num[x] += t * sn[x]
    for x in range(nx):
        drow[x] = np.float32(-neg[x] - num[x] / den[x])


@njit(cache=True, nogil=True)
def detail_block(L, top, left, h, w, y0, y1, x0, x1, transpose, ref, g, row_width, width_slot, n_widths,
                 kernel_sum, taylor, binom, out, oy, ox):
    """Detail layer D = L - B on one rectangle of an image with REFLECT_101 borders.

    The image is ``L[top:top+h, left:left+w]`` (float32 log luminance); the
    filter sees only it, reflected at its own edges, exactly as OpenCV does for
    an image of that size. D (float32) for image rows [y0, y1) and columns
    [x0, x1) goes to ``out[oy + y - y0, ox + x - x0]``, or with ``transpose`` to
    ``out[ox + x - x0, oy + y - y0]`` (for L given transposed).

    g : (R+1,) float32 1-D spatial weights; row_width[i] : half-width of the
    disc row at offset i (= half-height of the disc column at offset i);
    width_slot[j] : buffer slot of the partial sums of half-extent j, -1 when
    the disc has no row of that width; kernel_sum : sum of the disc's weights
    (S_0); taylor[m] = (-c)^m / m!; binom[a, b] = a choose b.
    """
    R = g.shape[0] - 1
    nterm = taylor.shape[0]
    nmom = 2 * nterm - 1
    nx = x1 - x0
    npad = nx + 2 * R
    cols = np.empty(npad, np.int64)
    for k in range(npad):
        cols[k] = left + _reflect(x0 - R + k, w)
    # the (reflected) image rows the block reads, as powers of L - ref
    rlo = h
    rhi = -1
    for y in range(y0, y1):
        for i in range(-R, R + 1):
            r = _reflect(y + i, h)
            rlo = min(rlo, r)
            rhi = max(rhi, r)
    powers = np.empty((nmom, rhi - rlo + 1, npad), np.float32)
    for r in range(rlo, rhi + 1):
        src = L[top + r]
        p0 = powers[0, r - rlo]
        for k in range(npad):
            p0[k] = np.float32(src[cols[k]] - ref)
        for m in range(1, nmom):
            pm = powers[m, r - rlo]
            pp = powers[m - 1, r - rlo]
            for k in range(npad):
                pm[k] = pp[k] * p0[k]
    rows = np.empty(2 * R + 1, np.int64)
    acc = np.empty(npad, np.float32)
    cols_sum = np.empty((n_widths, npad), np.float32)
    vsum = np.empty((nmom, nx), np.float32)
    negp = np.empty((2 * nterm - 1, nx), np.float64)
    num = np.empty(nx, np.float64)
    den = np.empty(nx, np.float64)
    drow = np.empty(nx, np.float32)
    for y in range(y0, y1):
        for i in range(-R, R + 1):
            rows[i + R] = _reflect(y + i, h) - rlo
        _moments_row(powers, rows, g, row_width, width_slot, acc, cols_sum, vsum)
        _taylor_row(L[top + y, left + x0:left + x1], ref, vsum, kernel_sum, taylor, binom, negp, num, den,
                    drow)
        if transpose:
            for x in range(nx):
                out[ox + x, oy + y - y0] = drow[x]
        else:
            out[oy + y - y0, ox:ox + nx] = drow


@njit(cache=True, nogil=True)
def _sobel_px(rm, rc, rp, x, xm, xp):
    """|Sobel_x| + |Sobel_y| at column x of rows rm, rc, rp (OpenCV's operation order)."""
    two = np.float32(2.0)
    gx = (rm[xp] - rm[xm]) + two * (rc[xp] - rc[xm]) + (rp[xp] - rp[xm])
    gy = (rp[xm] + two * rp[x] + rp[xp]) - (rm[xm] + two * rm[x] + rm[xp])
    return abs(gx) + abs(gy)


@njit(cache=True, nogil=True)
def sobel_abs(D, y0, y1, x0, x1, G):
    """G = |Sobel_x D| + |Sobel_y D| (ksize 3, REFLECT_101) on rows [y0,y1), cols [x0,x1)."""
    h, w = D.shape
    two = np.float32(2.0)
    xs = max(x0, 1)
    xe = max(xs, min(x1, w - 1))
    n = xe - xs
    for y in range(y0, y1):
        rm = D[_reflect(y - 1, h)]
        rc = D[y]
        rp = D[_reflect(y + 1, h)]
        grow = G[y]
        for x in range(x0, xs):
            grow[x] = _sobel_px(rm, rc, rp, x, _reflect(x - 1, w), _reflect(x + 1, w))
        for x in range(xe, x1):
            grow[x] = _sobel_px(rm, rc, rp, x, _reflect(x - 1, w), _reflect(x + 1, w))
        # interior through shifted views (bare loop index: vectorisable)
        mm, mc, mp = rm[xs - 1:xe - 1], rm[xs:xe], rm[xs + 1:xe + 1]
        cm, cp = rc[xs - 1:xe - 1], rc[xs + 1:xe + 1]
        pm, pc, pp = rp[xs - 1:xe - 1], rp[xs:xe], rp[xs + 1:xe + 1]
        out = grow[xs:xe]
        for i in range(n):
            gx = (mp[i] - mm[i]) + two * (cp[i] - cm[i]) + (pp[i] - pm[i])
            gy = (pm[i] + two * pc[i] + pp[i]) - (mm[i] + two * mc[i] + mp[i])
            out[i] = abs(gx) + abs(gy)


@njit(cache=True, nogil=True)
def frame_detail_tile(L, x0, x1, ref, g, row_width, width_slot, n_widths, kernel_sum, taylor, binom, D):
    """D of the frame's columns [x0, x1) (all rows), written to ``D[:, x0:x1]``."""
    h, w = L.shape
    detail_block(L, 0, 0, h, w, 0, h, x0, x1, False, ref, g, row_width, width_slot, n_widths,
                 kernel_sum, taylor, binom, D, 0, x0)


@njit(cache=True, nogil=True, parallel=True)
def frame_gradient_parallel(L, tile, ref, g, row_width, width_slot, n_widths, kernel_sum, taylor,
                            binom, D, G):
    """D and G of the whole frame with Numba threads (column tiles, then row bands)."""
    h, w = L.shape
    for t in prange((w + tile - 1) // tile):
        frame_detail_tile(L, t * tile, min(w, t * tile + tile), ref, g, row_width, width_slot,
                          n_widths, kernel_sum, taylor, binom, D)
    band = 64
    for b in prange((h + band - 1) // band):
        sobel_abs(D, b * band, min(h, b * band + band), 0, w, G)


@njit(cache=True, nogil=True)
def whole_window(size, R):
    """True when a window is too small for a separate band: it is then computed whole."""
    return size < 2 * (R + 2)


@njit(cache=True, nogil=True)
def window_band(L, D, r0, c0, size, ref, g, row_width, width_slot, n_widths, kernel_sum, taylor,
                binom, dwin, gwin):
    """The window's own G near its edges, where it differs from the frame's G.

    Within R + 1 pixels of a window edge the filter disc (radius R) or the Sobel
    stencil reaches past the window, and the per-window oracle reflects the
    window's own pixels there. Fills that band of ``gwin`` (size, size) float32;
    the interior is left untouched (it equals the frame's G). ``dwin`` (size,
    size) float32 is scratch. A window too small for a band is computed whole.
    A window edge on the frame edge gives the frame's values.
    """
    R = g.shape[0] - 1
    s = size
    if whole_window(s, R):
        detail_block(L, r0, c0, s, s, 0, s, 0, s, False, ref, g, row_width, width_slot, n_widths,
                     kernel_sum, taylor, binom, dwin, 0, 0)
        sobel_abs(dwin, 0, s, 0, s, gwin)
        return
    # D at distance R and R + 1 from the edges equals the frame's D (the disc
    # stays inside); the Sobel stencil of the G band reads it.
    e = R + 2
    for y in range(s):
        if y < e or y >= s - e:
            for x in range(s):
                dwin[y, x] = D[r0 + y, c0 + x]
        else:
            for x in range(e):
                dwin[y, x] = D[r0 + y, c0 + x]
                dwin[y, s - 1 - x] = D[r0 + y, c0 + s - 1 - x]
    args = (g, row_width, width_slot, n_widths, kernel_sum, taylor, binom, dwin)
    detail_block(L, r0, c0, s, s, 0, R, 0, s, False, ref, *args, 0, 0)
    detail_block(L, r0, c0, s, s, s - R, s, 0, s, False, ref, *args, s - R, 0)
    # left and right strips on the transposed 2R columns they read, so that they
    # too run along rows of length ~size (image rows = window columns)
    strip = np.empty((2 * R, s), np.float32)
    for side in range(2):
        c = c0 if side == 0 else c0 + s - 2 * R
        for i in range(s):
            src = L[r0 + i, c:c + 2 * R]
            for j in range(2 * R):
                strip[j, i] = src[j]
        if side == 0:
            detail_block(strip, 0, 0, s, s, 0, R, R, s - R, True, ref, *args, 0, R)
        else:  # image rows s - 2R .. s - 1 are strip rows 0 .. 2R - 1
            detail_block(strip, -(s - 2 * R), 0, s, s, s - R, s, R, s - R, True, ref, *args, s - R, R)
    b = R + 1
    sobel_abs(dwin, 0, b, 0, s, gwin)
    sobel_abs(dwin, s - b, s, 0, s, gwin)
    sobel_abs(dwin, b, s - b, 0, b, gwin)
    sobel_abs(dwin, b, s - b, s - b, s, gwin)


@njit(cache=True, nogil=True, fastmath=_SUM_MATH)
def _weighted_sum(G, gr0, gc0, W, y0, y1, x0, x1):
    """(sum G*W over channels, sum W) on window rows [y0,y1), cols [x0,x1).

    G is read at (gr0 + y, gc0 + x). Rows are summed in float32 (at most a few
    thousand terms), the row sums in float64.
    """
    tot = 0.0
    wsum = 0.0
    n = x1 - x0
    for y in range(y0, y1):
        grow = G[gr0 + y, gc0 + x0:gc0 + x1]
        wrow = W[y, x0:x1]
        rt = np.float32(0.0)
        rw = np.float32(0.0)
        for x in range(n):
            ws = wrow[x, 0] + wrow[x, 1] + wrow[x, 2]
            rt += grow[x] * ws
            rw += ws
        tot += rt
        wsum += rw
    return tot, wsum


@njit(cache=True, nogil=True)
def normalise(tot, wsum, count, patch):
    """The score: tot / count ('patch') or tot / wsum ('saturated', 0 when wsum is 0)."""
    if patch:
        return tot / count
    return tot / wsum if wsum > 0.0 else 0.0


@njit(cache=True, nogil=True)
def score_window(G, gwin, r0, c0, W, band, patch):
    """Score of the window at (r0, c0) with weights W (size, size, 3) (any (h, w, 3) if band = 0).

    band = 0: G from the frame everywhere ('frame' mode). band = R + 1: the band
    of that width from ``gwin`` (from :func:`window_band`), the interior from the
    frame's G.
    """
    s = W.shape[0]
    count = W.size
    if band == 0:
        tot, wsum = _weighted_sum(G, r0, c0, W, 0, W.shape[0], 0, W.shape[1])
        return normalise(tot, wsum, count, patch)
    if whole_window(s, band - 1):
        tot, wsum = _weighted_sum(gwin, 0, 0, W, 0, s, 0, s)
        return normalise(tot, wsum, count, patch)
    t1, w1 = _weighted_sum(gwin, 0, 0, W, 0, band, 0, s)
    t2, w2 = _weighted_sum(gwin, 0, 0, W, s - band, s, 0, s)
    t3, w3 = _weighted_sum(gwin, 0, 0, W, band, s - band, 0, band)
    t4, w4 = _weighted_sum(gwin, 0, 0, W, band, s - band, s - band, s)
    t5, w5 = _weighted_sum(G, r0, c0, W, band, s - band, band, s - band)
    return normalise(t1 + t2 + t3 + t4 + t5, w1 + w2 + w3 + w4 + w5, count, patch)


@njit(cache=True, nogil=True, parallel=True)
def scores_parallel(L, D, G, corners, W, exact, patch, ref, g, row_width, width_slot, n_widths,
                    kernel_sum, taylor, binom, out):
    """Scores of K windows (corners (K, 2), W (K, size, size, 3)) with Numba threads."""
    s = W.shape[1]
    band = g.shape[0] if exact else 0
    for k in prange(corners.shape[0]):
        r0 = corners[k, 0]
        c0 = corners[k, 1]
        if exact:
            dwin = np.empty((s, s), np.float32)
            gwin = np.empty((s, s), np.float32)
            window_band(L, D, r0, c0, s, ref, g, row_width, width_slot, n_widths, kernel_sum, taylor,
                        binom, dwin, gwin)
        else:
            gwin = np.empty((1, 1), np.float32)
        out[k] = score_window(G, gwin, r0, c0, W[k], band, patch)


@njit(cache=True, nogil=True)
def saturated_fraction(mask):
    """Share of pixels where any channel of the soft mask (h, w, 3) is below 1."""
    n = 0
    for y in range(mask.shape[0]):
        for x in range(mask.shape[1]):
            if mask[y, x, 0] < 1.0 or mask[y, x, 1] < 1.0 or mask[y, x, 2] < 1.0:
                n += 1
    return n / (mask.shape[0] * mask.shape[1])
