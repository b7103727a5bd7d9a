"""Numba kernel of ``hdrprep.store``: float32 -> float16 with clamping, on the bits.

Private: imported lazily by ``hdrprep.store.to_half``, which checks its input.
numpy's ``astype(np.float16)`` takes a scalar software path on CPUs without
F16C (about 8 ms per 512x512x3 patch here); this does the same rounding in one
integer pass. It follows numpy's ``npy_floatbits_to_halfbits`` (round to
nearest, ties to even), so the result is bit-identical to
``np.minimum(x, 65504).astype(np.float16)`` for every float32 input, NaN and
infinities included.
"""

from __future__ import annotations

import numpy as np
from numba import njit

_HALF_MAX_BITS = np.uint32(0x477FE000)  # float32 bits of 65504.0, the largest finite float16
_F32_INF_BITS = np.uint32(0x7F800000)


@njit(cache=True, nogil=True)
def to_half_bits(src, dst) -> int:
    """Round float32 bit patterns to float16 bit patterns, clamping above 65504.

    Parameters
    ----------
    src : numpy.ndarray
        uint32 (n,), the bits of float32 values.
    dst : numpy.ndarray
        uint16 (n,), filled with the bits of the float16 results.

    Returns
    -------
    int
        How many values were greater than 65504 (+inf included), i.e. clamped.
    """
    clamped = 0
    for i in range(src.size):
        f = src[i]
        # unsigned compare: negative values (sign bit set) and NaN (above +inf) are not clamped,
        # as np.minimum leaves them
        if f > _HALF_MAX_BITS and f <= _F32_INF_BITS:
            clamped += 1
            f = _HALF_MAX_BITS
        a = f & np.uint32(0x7FFFFFFF)
        if a - np.uint32(0x38800000) < np.uint32(0x47800000 - 0x38800000):
            # float16 normal range, the common case: rebias the exponent and round to nearest, ties
            # to even, by adding 0xFFF plus the lowest kept bit; a carry correctly bumps the exponent
            sgn = (f >> np.uint32(16)) & np.uint32(0x8000)
            dst[i] = sgn | ((a - np.uint32(0x38000000) + np.uint32(0xFFF) + ((a >> np.uint32(13)) & np.uint32(1)))
                            >> np.uint32(13))
        else:
            dst[i] = _other_bits(f)
    return clamped


@njit(cache=True, nogil=True)
def _other_bits(f):
    """float16 bits of float32 bits ``f`` outside the float16 normal range (numpy's branches)."""
    h_sgn = np.uint16((f & np.uint32(0x80000000)) >> np.uint32(16))
    f_exp = f & np.uint32(0x7F800000)
    f_sig = f & np.uint32(0x007FFFFF)
    if f_exp >= np.uint32(0x47800000):  # overflow, inf or NaN; after the clamp only negatives and NaN
        if f_exp == _F32_INF_BITS and f_sig != 0:
            h = np.uint16(0x7C00) + np.uint16(f_sig >> np.uint32(13))
            if h == np.uint16(0x7C00):  # keep a NaN whose payload sits in the dropped bits a NaN
                h += np.uint16(1)
            return np.uint16(h_sgn + h)
        return np.uint16(h_sgn + np.uint16(0x7C00))
    if f_exp < np.uint32(0x33000000):  # below half the smallest float16 subnormal: zero
        return h_sgn
    e = f_exp >> np.uint32(23)
    sig = (np.uint32(0x00800000) + f_sig) >> (np.uint32(113) - e)
    # ties to even; the shift above may have dropped set bits, so look at the original too
    if (sig & np.uint32(0x3FFF)) != np.uint32(0x1000) or (f & np.uint32(0x7FF)) != 0:
        sig += np.uint32(0x1000)
    return np.uint16(h_sgn + np.uint16(sig >> np.uint32(13)))
