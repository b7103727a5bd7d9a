"""``hdrprep render``: re-render one stored pair from its index row and check it against the store.

The index row of a pair holds its window and every sampled camera parameter, and
the store's provenance holds the configuration and each source frame's sha256, so
a pair can be made again from the source frame alone. :func:`render_pair_from_index`
does that and says whether the result is bit-identical to what the store holds.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from hdrprep import camera, candidates, io, store
from hdrprep.errors import ConfigError, StoreError

__all__ = ["render_pair_from_index"]


def render_pair_from_index(root: str | Path, src: str | Path, k: int,
                           out_dir: str | Path | None = None) -> tuple[np.ndarray, np.ndarray, bool]:
    """Re-render pair ``k`` from its source frame and its index row, and compare it with the stored pair.

    The row holds the window and every camera parameter; the store's resolved
    configuration supplies the reading options and the camera's on/off switches.

    Parameters
    ----------
    root : path
        A finished store.
    src : path
        The folder the store was built from (``--src``).
    k : int
        Pair number, 0 <= k < number of pairs.
    out_dir : path, optional
        If given, the re-rendered pair is written there as ``pair_KKKKKK.exr``
        (float16, exact) and ``pair_KKKKKK.png``.

    Returns
    -------
    ldr : numpy.ndarray
        uint8 (P, P, 3) RGB.
    hdr : numpy.ndarray
        float16 (P, P, 3), as stored (values above 65504 clamped).
    equal : bool
        True when both are bit-identical to the stored pair and match the row's checksum.

    Raises
    ------
    StoreError
        If the frame is missing or its bytes differ from those the store was built from.
    """
    st = store.open_store(root)
    attrs = st.attrs
    if attrs.get("camera_version") != camera.RENDER_VERSION:
        raise StoreError(f"{root} was built by a camera of version {attrs.get('camera_version')!r}; this hdrprep "
                         f"renders version {camera.RENDER_VERSION}, so its pairs cannot be compared. Use the "
                         f"hdrprep version that built the store ({attrs.get('package_version')})")
    if not 0 <= k < st.n_pairs:
        raise ConfigError(f"--pair {k}: the store {root} has pairs 0..{st.n_pairs - 1}")
    row = st.index.slice(k, 1).to_pylist()[0]
    config = st.build_config()
    frame = st.source_frame(src, row["source"])
    ldr, target = candidates.render_row(frame, row, config, camera.load_curves(config.camera))
    hdr, _ = store.to_half(target)
    group = st.group
    equal = (np.array_equal(ldr, group["ldr"][k])
             and np.array_equal(hdr.view(np.uint16), group["hdr"][k].view(np.uint16))
             and store.pair_checksum(ldr, hdr) == row["checksum"])
    if out_dir is not None:
        out_dir = Path(out_dir)
        out_dir.mkdir(parents=True, exist_ok=True)
        io.write_exr(out_dir / f"pair_{k:06d}.exr", hdr, half=True)
        io.write_png(out_dir / f"pair_{k:06d}.png", ldr)
    return ldr, hdr, bool(equal)
