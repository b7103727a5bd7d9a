"""Shared test fixtures.

Real HDR fixtures live in ``../shared/data`` next to the repository (or in
``$HDRPREP_SHARED_DATA``); tests that need them skip cleanly where it is absent.
"""

import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent


def _shared_data() -> Path:
    env = os.environ.get("HDRPREP_SHARED_DATA")
    return Path(env) if env else REPO.parent / "shared" / "data"


SHARED_DATA = _shared_data()
HDR_DIR = SHARED_DATA / "hdr"
EDGE_DIR = SHARED_DATA / "hdr-edge"


@pytest.fixture(scope="session")
def hdr_dir() -> Path:
    """Folder of real HDR photographs (``shared/data/hdr``); skips if absent."""
    if not HDR_DIR.is_dir():
        pytest.skip(f"real HDR fixtures not found at {HDR_DIR}")
    return HDR_DIR


@pytest.fixture(scope="session")
def edge_dir() -> Path:
    """Folder of awkward HDR files (``shared/data/hdr-edge``); skips if absent."""
    if not EDGE_DIR.is_dir():
        pytest.skip(f"edge-case HDR fixtures not found at {EDGE_DIR}")
    return EDGE_DIR


def real_frames() -> list[Path]:
    """Sorted real fixture frames, or [] where the shared data is absent (for parametrize)."""
    if not HDR_DIR.is_dir():
        return []
    return sorted(p for p in HDR_DIR.iterdir() if p.suffix.lower() in (".exr", ".hdr"))


@pytest.fixture(scope="session")
def smoke_frames(tmp_path_factory) -> Path:
    """Two generated 256x384 frames (``synth_000.exr``, ``synth_001.exr``) for small builds."""
    from hdrprep import synth

    root = tmp_path_factory.mktemp("smoke-frames")
    synth.write_frames(root, n=2, height=256, width=384)
    return root


@pytest.fixture(scope="session")
def smoke_store(smoke_frames, tmp_path_factory) -> Path:
    """A store built from ``smoke_frames`` with the smoke preset. Read-only: copy it before changing it."""
    from hdrprep import build
    from hdrprep.config import load_preset

    out = tmp_path_factory.mktemp("smoke-store") / "s.zarr"
    build.build(smoke_frames, out, load_preset("smoke"), scheduler="synchronous", progress=False)
    return out
