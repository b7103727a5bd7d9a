"""Numba kernels of the patch metric. Private: use :mod:`hdrprep.metric`.

The detail layer of Santos et al. (2020), D = L - bilateral(L), is computed with
OpenCV's bilateral filter geometry (a circular window of radius R, spatial
weights exp(-r^2 / (2 sigma_s^2)), REFLECT_101 borders), but with the range
weight exp(-c (Lq - Lp)^2), c = 1 / (2 sigma_c^2), replaced by its Taylor
polynomial of order n. On log luminance with sigma_c = 100 the argument
c (Lq - Lp)^2 stays below about 0.006, so order 1 is exact to float32 rounding;
the wrapper picks the order from the frame's range. The filter then becomes a
ratio of sums over spatial moments S_k(p) = sum_q s(q - p) Lq^k, k = 0..2n+1,
and every S_k is a linear spatial filter: each disc column is a truncated 1-D
Gaussian, so a vertical pass stores the running column sums at the few heights
the disc needs and a horizontal pass combines 2R + 1 of them. The 2R + 1 source
rows an output row needs are kept, as powers, in a ring buffer.

The frame's D and G are computed in square tiles, each the first time a
window needs it (:func:`ensure`): G only enters a score where a weight is
nonzero, so tiles that no window sees saturated are never computed. Per window
('exact' mode) only the band of R + 1 pixels along the window's edges differs
from the frame's G; the band is cut into blocks, and only the bounding box of a
block's nonzero weights is computed on the window alone.

Numbers: float32 images and moments (L is centred on ``ref`` so that the powers
stay small), float64 per-pixel Taylor sums and score totals. Fast-math flags are
limited to 'contract' (fused multiply-add) and, for the score sums, 'reassoc';
no flag that assumes finite values: NaN and Inf propagate as IEEE says.
"""

import numpy as np
from numba import njit

_FMA = {"contract"}
# Reassociation lets LLVM vectorise the score sums; nnan/ninf stay off.
_SUM_MATH = {"reassoc", "contract"}
_BLOCK = 64  # band block length along the window edge
_CHUNK = 32  # LDR pixels checked for saturation at once


@njit(cache=True, nogil=True)
def _reflect(p, n):
    """OpenCV's BORDER_REFLECT_101 index (``cv::borderInterpolate``)."""
    if n == 1:
        return 0
    while p < 0 or p >= n:
        p = -p if p < 0 else 2 * n - 2 - p
    return p


@njit(cache=True, nogil=True)
def _load_powers(L, top, left, w, r, xs, transpose, ref, dst):
    """dst[m, k] = (image[r, reflect(xs + k, w)] - ref) ** (m + 1), float32.

    The image is ``L[top:, left:]`` (its row r is L's row top + r) or, with
    ``transpose``, its transpose (image row r is L's column left + r); w is the
    image's width.
    """
    n = dst.shape[1]
    d0 = dst[0]
    a = min(max(0, -xs), n)  # k < a: left of the image
    b = max(a, min(n, w - xs))  # k >= b: right of it
    if transpose:
        col = left + r
        for k in range(a):
            d0[k] = np.float32(L[top + _reflect(xs + k, w), col] - ref)
        for k in range(a, b):
            d0[k] = np.float32(L[top + xs + k, col] - ref)
        for k in range(b, n):
            d0[k] = np.float32(L[top + _reflect(xs + k, w), col] - ref)
    else:
        src = L[top + r]
        for k in range(a):
            d0[k] = np.float32(src[left + _reflect(xs + k, w)] - ref)
        inner = src[left + xs + a:left + xs + b]
        out = d0[a:b]
        for k in range(b - a):
            out[k] = np.float32(inner[k] - ref)
        for k in range(b, n):
            d0[k] = np.float32(src[left + _reflect(xs + k, w)] - ref)
    for m in range(1, dst.shape[0]):
        pm = dst[m]
        pp = dst[m - 1]
        for k in range(n):
            pm[k] = pp[k] * d0[k]


@njit(cache=True, nogil=True, fastmath=_FMA)
def _moments_row(ring, slots, g, row_width, width_slot, acc, cols_sum, vsum):
    """Spatial moments S_{m+1} of one output row, vsum[m, x] (float32).

    ring[slots[i + R], m] : the (m+1)-th power of the source row at vertical
    offset i, padded by R columns on each side. Vertical pass first: the column
    sums over |i| <= h at every disc height h go to cols_sum[width_slot[h]]; then
    each disc column j adds its column sum of height row_width[j].
    """
    R = g.shape[0] - 1
    nmom = ring.shape[1]
    npad = ring.shape[2]
    nx = vsum.shape[1]
    g0 = g[0]
    # 1-D views indexed by the bare loop variable: Numba's negative-index
    # wraparound on offset indices would keep LLVM from vectorising these loops
    for m in range(nmom):
        centre = ring[slots[R], m]
        for k in range(npad):
            acc[k] = g0 * centre[k]
        ws = width_slot[0]
        if ws >= 0:
            dst = cols_sum[ws]
            for k in range(npad):
                dst[k] = acc[k]
        for i in range(1, R + 1):
            gi = g[i]
            up = ring[slots[R - i], m]
            down = ring[slots[R + i], m]
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
def _taylor_row(lc, vsum, kernel_sum, taylor, binom, negp, num, den, drow):
    """D = L - B on one row from the moments vsum[m] = S_{m+1} (float32 out).

    lc = L - ref of the row (float32). B - ref = N / Z,
    Z = sum_m taylor[m] sum_k C(2m, k) (-l)^(2m-k) S_k and N the same with
    S_{k+1}, l = L - ref, S_0 = kernel_sum.
    """
    nterm = taylor.shape[0]
    nx = lc.shape[0]
    neg = negp[1]
    for x in range(nx):
        neg[x] = -lc[x]
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

    The image is ``L[top:top+h, left:left+w]`` (float32 log luminance), or with
    ``transpose`` its transpose (then h is the number of L's columns it spans,
    w the number of rows); the filter sees only it, reflected at its own edges,
    exactly as OpenCV does for an image of that size. D (float32) of image rows
    [y0, y1) and columns [x0, x1) goes to ``out[oy + y - y0, ox + x - x0]``, or
    with ``transpose`` to ``out[oy + x - x0, ox + y - y0]`` (``out`` in L's
    orientation).

    g : (R+1,) float32 1-D spatial weights; row_width[i] : half-width of the
    disc row at offset i (= half-height of the disc column at offset i);
    width_slot[j] : buffer slot of the partial sums of half-extent j, -1 when
    the disc has no row of that width; kernel_sum : sum of the disc's weights
    (S_0); taylor[m] = (-c)^m / m!; binom[a, b] = a choose b.
    """
    R = g.shape[0] - 1
    nterm = taylor.shape[0]
    nmom = 2 * nterm - 1
    n = 2 * R + 1
    nx = x1 - x0
    npad = nx + 2 * R
    # ring[p % n]: powers of the source row at unreflected position p
    ring = np.empty((n, nmom, npad), np.float32)
    slots = np.empty(n, np.int64)
    acc = np.empty(npad, np.float32)
    cols_sum = np.empty((n_widths, npad), np.float32)
    vsum = np.empty((nmom, nx), np.float32)
    negp = np.empty((2 * nterm - 1, nx), np.float64)
    num = np.empty(nx, np.float64)
    den = np.empty(nx, np.float64)
    drow = np.empty(nx, np.float32)
    for p in range(y0 - R, y0 + R):
        _load_powers(L, top, left, w, _reflect(p, h), x0 - R, transpose, ref, ring[p % n])
    for y in range(y0, y1):
        p = y + R
        _load_powers(L, top, left, w, _reflect(p, h), x0 - R, transpose, ref, ring[p % n])
        for i in range(n):
            slots[i] = (y - R + i) % n
        _moments_row(ring, slots, g, row_width, width_slot, acc, cols_sum, vsum)
        _taylor_row(ring[y % n, 0, R:R + nx], vsum, kernel_sum, taylor, binom, negp, num, den, drow)
        if transpose:
            for x in range(nx):
                out[oy + x, ox + y - y0] = drow[x]
        else:
            out[oy + y - y0, ox:ox + nx] = drow


@njit(cache=True, nogil=True)
def _sobel_row(rm, rc, rp, w, x0, x1, off, out):
    """|Sobel_x| + |Sobel_y| (ksize 3, REFLECT_101, OpenCV's operation order).

    rm, rc, rp : rows y - 1, y, y + 1 (already reflected) of an image of width
    w whose column x is at index x - off. G of columns [x0, x1) goes to
    out[x - x0].
    """
    two = np.float32(2.0)
    xs = max(x0, 1)
    xe = max(xs, min(x1, w - 1))
    for x in range(x0, x1):
        if x < xs or x >= xe:
            xc = x - off
            xm = _reflect(x - 1, w) - off
            xp = _reflect(x + 1, w) - off
            gx = (rm[xp] - rm[xm]) + two * (rc[xp] - rc[xm]) + (rp[xp] - rp[xm])
            gy = (rp[xm] + two * rp[xc] + rp[xp]) - (rm[xm] + two * rm[xc] + rm[xp])
            out[x - x0] = abs(gx) + abs(gy)
    # interior through shifted views (bare loop index: vectorisable)
    a = xs - off
    b = xe - off
    mm, mc, mp = rm[a - 1:b - 1], rm[a:b], rm[a + 1:b + 1]
    cm, cp = rc[a - 1:b - 1], rc[a + 1:b + 1]
    pm, pc, pp = rp[a - 1:b - 1], rp[a:b], rp[a + 1:b + 1]
    dst = out[xs - x0:xe - x0]
    for i in range(xe - xs):
        gx = (mp[i] - mm[i]) + two * (cp[i] - cm[i]) + (pp[i] - pm[i])
        gy = (pm[i] + two * pc[i] + pp[i]) - (mm[i] + two * mc[i] + mp[i])
        dst[i] = abs(gx) + abs(gy)


@njit(cache=True, nogil=True)
def _tile(F, ty, tx):
    """The frame's D and G on tile (ty, tx); D of its 1-pixel ring goes to scratch only.

    Each D value in the frame is written by the one tile that holds it, so the
    result does not depend on the order in which tiles are computed.
    """
    L, D, G, _, T, ref, g, row_width, width_slot, n_widths, kernel_sum, taylor, binom = F
    h, w = L.shape
    y0, x0 = ty * T, tx * T
    y1, x1 = min(h, y0 + T), min(w, x0 + T)
    ya, yb, xa, xb = max(0, y0 - 1), min(h, y1 + 1), max(0, x0 - 1), min(w, x1 + 1)
    buf = np.empty((yb - ya, xb - xa), np.float32)
    detail_block(L, 0, 0, h, w, ya, yb, xa, xb, False, ref, g, row_width, width_slot, n_widths, kernel_sum,
                 taylor, binom, buf, 0, 0)
    for y in range(y0, y1):
        D[y, x0:x1] = buf[y - ya, x0 - xa:x1 - xa]
        _sobel_row(buf[_reflect(y - 1, h) - ya], buf[y - ya], buf[_reflect(y + 1, h) - ya], w, x0, x1, xa,
                   G[y, x0:x1])


@njit(cache=True, nogil=True)
def ensure(F, y0, y1, x0, x1):
    """Make the frame's D and G valid on rows [y0, y1), columns [x0, x1) (tiles computed on first use).

    F = (L, D, G, state, T, ref, g, row_width, width_slot, n_widths,
    kernel_sum, taylor, binom): the frame's log luminance L (h, w) float32, its
    D and G (h, w) float32, valid on the T x T tiles (ty, tx) with
    state[ty, tx] = 1, and the filter parameters of :func:`detail_block`.
    """
    state = F[3]
    T = F[4]
    if y0 >= y1 or x0 >= x1:
        return
    for ty in range(y0 // T, (y1 - 1) // T + 1):
        for tx in range(x0 // T, (x1 - 1) // T + 1):
            if state[ty, tx] == 0:
                _tile(F, ty, tx)
                state[ty, tx] = 1


@njit(cache=True, nogil=True)
def whole_window(size, R):
    """True when a window is too small for a separate band: it is then computed whole."""
    return size < 2 * (R + 2)


@njit(cache=True, nogil=True)
def band_blocks(size, R):
    """Blocks (K, 4) of window rows [y0, y1) x columns [x0, x1) where the window's G differs from the frame's.

    The band of R + 1 pixels along the edges (or the whole window when it is
    too small for a band), cut into pieces of at most ``_BLOCK`` along the edge.
    """
    s = size
    if whole_window(s, R):
        out = np.empty((1, 4), np.int64)
        out[0, 0], out[0, 1], out[0, 2], out[0, 3] = 0, s, 0, s
        return out
    b = R + 1
    along = (s + _BLOCK - 1) // _BLOCK
    down = (s - 2 * b + _BLOCK - 1) // _BLOCK
    out = np.empty((2 * along + 2 * down, 4), np.int64)
    k = 0
    for i in range(along):
        x0, x1 = i * _BLOCK, min(s, i * _BLOCK + _BLOCK)
        out[k, 0], out[k, 1], out[k, 2], out[k, 3] = 0, b, x0, x1
        out[k + 1, 0], out[k + 1, 1], out[k + 1, 2], out[k + 1, 3] = s - b, s, x0, x1
        k += 2
    for i in range(down):
        y0, y1 = b + i * _BLOCK, min(s - b, b + i * _BLOCK + _BLOCK)
        out[k, 0], out[k, 1], out[k, 2], out[k, 3] = y0, y1, 0, b
        out[k + 1, 0], out[k + 1, 1], out[k + 1, 2], out[k + 1, 3] = y0, y1, s - b, s
        k += 2
    return out


@njit(cache=True, nogil=True)
def _window_detail(F, r0, c0, s, ya, yb, xa, xb, out):
    """The window's own D on window rows [ya, yb), columns [xa, xb), to out[y - ya, x - xa].

    Pixels at least R from every window edge see only window pixels: their D is
    the frame's. The others are filtered on the window alone, along the
    rectangle's longer side (a tall rectangle on the transposed window), whole
    lines at a time: a line with any pixel near an edge is computed whole.
    """
    L, D, _, _, _, ref, g, row_width, width_slot, n_widths, kernel_sum, taylor, binom = F
    R = g.shape[0] - 1
    tall = yb - ya > xb - xa
    # lines (rows, or columns when tall) [la, lb) across [ca, cb)
    la, lb, ca, cb = (xa, xb, ya, yb) if tall else (ya, yb, xa, xb)
    near = ca < R or cb > s - R  # every line has a pixel near an edge
    # lines [la, lo) and [hi, lb) are computed, [lo, hi) copied
    if near:
        lo, hi = lb, lb
        detail_block(L, r0, c0, s, s, la, lb, ca, cb, tall, ref, g, row_width, width_slot, n_widths,
                     kernel_sum, taylor, binom, out, 0, 0)
    else:
        lo = max(la, min(lb, R))
        hi = max(lo, min(lb, s - R))
        if la < lo:
            detail_block(L, r0, c0, s, s, la, lo, ca, cb, tall, ref, g, row_width, width_slot, n_widths,
                         kernel_sum, taylor, binom, out, 0, 0)
        if hi < lb:
            oy, ox = (0, hi - la) if tall else (hi - la, 0)
            detail_block(L, r0, c0, s, s, hi, lb, ca, cb, tall, ref, g, row_width, width_slot, n_widths,
                         kernel_sum, taylor, binom, out, oy, ox)
    if lo >= hi:
        return
    # lines [lo, hi) are far from every edge: the frame's D
    if tall:
        ensure(F, r0 + ya, r0 + yb, c0 + lo, c0 + hi)
        for y in range(ya, yb):
            out[y - ya, lo - xa:hi - xa] = D[r0 + y, c0 + lo:c0 + hi]
    else:
        ensure(F, r0 + lo, r0 + hi, c0 + xa, c0 + xb)
        for y in range(lo, hi):
            out[y - ya, :xb - xa] = D[r0 + y, c0 + xa:c0 + xb]


@njit(cache=True, nogil=True)
def block_gradient(F, r0, c0, s, ya, yb, xa, xb, dbuf, gbuf):
    """The window's own G on window rows [ya, yb), columns [xa, xb), to gbuf[y - ya, x - xa].

    dbuf : float32 scratch of at least (yb - ya + 2, xb - xa + 2).
    """
    Ya = max(0, ya - 1)
    Yb = min(s, yb + 1)
    Xa = max(0, xa - 1)
    Xb = min(s, xb + 1)
    _window_detail(F, r0, c0, s, Ya, Yb, Xa, Xb, dbuf)
    for y in range(ya, yb):
        _sobel_row(dbuf[_reflect(y - 1, s) - Ya], dbuf[y - Ya], dbuf[_reflect(y + 1, s) - Ya], s, xa, xb,
                   Xa, gbuf[y - ya])


@njit(cache=True, nogil=True, fastmath=_SUM_MATH)
def _weights_row(W, lut, vmin, y, x0, x1, out):
    """Channel sums of the weights of row y, columns [x0, x1), to out[x - x0].

    W : (h, w, 3) float32 weights 1 - M (``lut`` None), or uint8 LDR with
    ``lut`` (256,) float32 = 1 - M of each code value, 0 below ``vmin``.
    Returns (row sum in float32, whether any weight is nonzero or NaN).
    """
    n = x1 - x0
    row = W[y, x0:x1]
    rw = np.float32(0.0)
    nz = 0
    if lut is None:
        for x in range(n):
            ws = row[x, 0] + row[x, 1] + row[x, 2]
            out[x] = ws
            rw += ws
            nz += ws != 0
        return rw, nz > 0
    codes = W[y].reshape(-1)  # the row's channel values, pixel-major
    for a in range(x0, x1, _CHUNK):
        b = min(x1, a + _CHUNK)
        chunk = codes[3 * a:3 * b]
        top = np.uint8(0)
        for i in range(3 * (b - a)):
            top = max(top, chunk[i])
        if top < vmin:  # no saturated channel: skip the table look-ups
            out[a - x0:b - x0] = 0
            continue
        nz += 1
        for x in range(a, b):
            ws = lut[codes[3 * x]] + lut[codes[3 * x + 1]] + lut[codes[3 * x + 2]]
            out[x - x0] = ws
            rw += ws
    return rw, nz > 0


@njit(cache=True, nogil=True, fastmath=_SUM_MATH)
def _dot(a, b, n):
    t = np.float32(0.0)
    for x in range(n):
        t += a[x] * b[x]
    return t


@njit(cache=True, nogil=True)
def _weighted_sum(F, G, gr0, gc0, W, lut, vmin, y0, y1, x0, x1, ws):
    """(sum G*W over channels, sum W) on window rows [y0, y1), columns [x0, x1).

    G is read at (gr0 + y, gc0 + x), only where a weight is nonzero; with the
    frame context F (see :func:`ensure`) G is the frame's, computed there on
    first use, with F None any array. ws : float32 scratch of at least x1 - x0.
    Rows are summed in float32 (at most a few thousand terms), the row sums in
    float64.
    """
    tot = 0.0
    wsum = 0.0
    for y in range(y0, y1):
        rw, nz = _weights_row(W, lut, vmin, y, x0, x1, ws)
        wsum += rw
        if not nz:
            continue
        first, last = _nonzero_span(ws, x1 - x0)
        if F is not None:
            ensure(F, gr0 + y, gr0 + y + 1, gc0 + x0 + first, gc0 + x0 + last)
        tot += _dot(G[gr0 + y, gc0 + x0 + first:gc0 + x0 + last], ws[first:], last - first)
    return tot, wsum


@njit(cache=True, nogil=True)
def _nonzero_span(row, n):
    """[first, last + 1) of the entries of row[:n] that are not 0 (NaN counts); (n, n) if none."""
    first = 0
    while first < n and row[first] == 0:
        first += 1
    if first == n:
        return n, n
    last = n
    while row[last - 1] == 0:
        last -= 1
    return first, last


@njit(cache=True, nogil=True)
def normalise(tot, wsum, count, patch):
    """The score: tot / count ('patch') or tot / wsum ('saturated', 0 when wsum is 0)."""
    if patch:
        return tot / count
    return tot / wsum if wsum > 0.0 else 0.0


@njit(cache=True, nogil=True)
def weighted_score(F, G, r0, c0, W, lut, vmin, patch):
    """Score of G[r0:r0+h, c0:c0+w] with weights W (h, w, 3) ('frame' mode; F as in :func:`_weighted_sum`)."""
    ws = np.empty(W.shape[1], np.float32)
    tot, wsum = _weighted_sum(F, G, r0, c0, W, lut, vmin, 0, W.shape[0], 0, W.shape[1], ws)
    return normalise(tot, wsum, W.size, patch)


@njit(cache=True, nogil=True)
def window_score(F, r0, c0, W, lut, vmin, patch):
    """Score of the window at (r0, c0) with its own borders ('exact' mode).

    W : (size, size, 3) float32 weights (lut None) or uint8 LDR (see
    :func:`_weights_row`). The interior takes the frame's G; the band, in
    blocks, is computed on the window alone, only on the bounding box of the
    block's nonzero weights (elsewhere G does not count).
    """
    G = F[2]
    R = F[6].shape[0] - 1
    s = W.shape[0]
    blocks = band_blocks(s, R)
    e = min(s, max(_BLOCK, 2 * (R + 2)))
    ws = np.empty(s, np.float32)
    wbuf = np.empty((e, e), np.float32)
    gbuf = np.empty((e, e), np.float32)
    dbuf = np.empty((e + 2, e + 2), np.float32)
    tot = 0.0
    wsum = 0.0
    if not whole_window(s, R):
        b = R + 1
        tot, wsum = _weighted_sum(F, G, r0, c0, W, lut, vmin, b, s - b, b, s - b, ws)
    for k in range(blocks.shape[0]):
        ya, yb, xa, xb = blocks[k, 0], blocks[k, 1], blocks[k, 2], blocks[k, 3]
        by0, by1, bx0, bx1 = yb, ya, xb, xa
        for y in range(ya, yb):
            row = wbuf[y - ya]
            rw, any_row = _weights_row(W, lut, vmin, y, xa, xb, row)
            wsum += rw
            if any_row:
                first, last = _nonzero_span(row, xb - xa)
                if first < last:
                    by0 = min(by0, y)
                    by1 = y + 1
                    bx0 = min(bx0, xa + first)
                    bx1 = max(bx1, xa + last)
        if by0 >= by1:
            continue
        block_gradient(F, r0, c0, s, by0, by1, bx0, bx1, dbuf, gbuf)
        for y in range(by0, by1):
            tot += _dot(gbuf[y - by0], wbuf[y - ya, bx0 - xa:], bx1 - bx0)
    return normalise(tot, wsum, W.size, patch)


@njit(cache=True, nogil=True)
def window_gradient(F, r0, c0, exact, out):
    """G (size, size) float32 of the window at (r0, c0): the frame's, with the band recomputed when exact."""
    G = F[2]
    R = F[6].shape[0] - 1
    s = out.shape[0]
    ensure(F, r0, r0 + s, c0, c0 + s)
    for y in range(s):
        out[y] = G[r0 + y, c0:c0 + s]
    if not exact:
        return
    blocks = band_blocks(s, R)
    e = min(s, max(_BLOCK, 2 * (R + 2)))
    gbuf = np.empty((e, e), np.float32)
    dbuf = np.empty((e + 2, e + 2), np.float32)
    for k in range(blocks.shape[0]):
        ya, yb, xa, xb = blocks[k, 0], blocks[k, 1], blocks[k, 2], blocks[k, 3]
        block_gradient(F, r0, c0, s, ya, yb, xa, xb, dbuf, gbuf)
        out[ya:yb, xa:xb] = gbuf[:yb - ya, :xb - xa]


@njit(cache=True, nogil=True)
def saturated_fraction(mask):
    """Share of pixels where any channel of the soft mask (h, w, 3) is below 1."""
    n = 0
    for y in range(mask.shape[0]):
        for x in range(mask.shape[1]):
            if mask[y, x, 0] < 1.0 or mask[y, x, 1] < 1.0 or mask[y, x, 2] < 1.0:
                n += 1
    return n / (mask.shape[0] * mask.shape[1])
