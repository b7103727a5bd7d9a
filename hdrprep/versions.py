"""The library versions a store's bytes depend on, recorded at build time and compared later.

"Same inputs, configuration and seed give the same bytes" holds for one set of
libraries: OpenCV's JPEG codec and resampling, numpy's and Numba's float rounding,
the OpenEXR decoder and the Blosc/zstd encoder all shape the pairs. A store records
the versions it was built with (group attribute ``versions``); ``hdrprep render``
and ``hdrprep verify`` say which differ from the running ones, since a re-render
may then differ in a few levels without anything being wrong.
"""

from __future__ import annotations

import platform
import re
from importlib import metadata

__all__ = ["current", "differences"]

#: Distribution names whose versions are recorded.
_PACKAGES = ("numpy", "numba", "opencv-python-headless", "opencv-python", "OpenEXR", "zarr", "numcodecs",
             "pyarrow", "hdrprep")


def _jpeg_library() -> str | None:
    """The JPEG library OpenCV was built with, from its build information (e.g. 'libjpeg-turbo (ver 3.0.3-70)')."""
    import cv2

    match = re.search(r"^\s*JPEG:\s*(.+)$", cv2.getBuildInformation(), re.M)
    return match.group(1).strip() if match else None


def current() -> dict[str, str]:
    """Versions of Python and of the libraries that shape a store's bytes, as ``{name: version}``.

    Keys: ``python``, each installed distribution of ``_PACKAGES`` (OpenCV under
    the name of the wheel that is installed) and ``opencv-jpeg``.
    """
    out = {"python": platform.python_version()}
    for name in _PACKAGES:
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            continue
    jpeg = _jpeg_library()
    if jpeg:
        out["opencv-jpeg"] = jpeg
    return out


def differences(recorded: dict | None) -> list[str]:
    """``'name recorded -> running'`` for each recorded version that differs from the running one.

    Returns ``['the store records no versions (built before hdrprep recorded them)']``
    for a store without the record.
    """
    if not recorded:
        return ["the store records no versions (built before hdrprep recorded them)"]
    now = current()
    return [f"{name} {was} -> {now.get(name, 'not installed')}" for name, was in sorted(recorded.items())
            if now.get(name) != was]
