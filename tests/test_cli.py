"""The CLI maps flags onto library calls; importing it stays light."""

import errno
import subprocess
import sys

import numpy as np
import pytest
from click.testing import CliRunner

from hdrprep.cli import main
from hdrprep.errors import ConfigError


def test_import_and_help_do_not_import_heavy_modules():
    code = ("import sys, hdrprep, hdrprep.cli, hdrprep.config;"
            "from click.testing import CliRunner; r = CliRunner().invoke(hdrprep.cli.main, ['--help']);"
            "assert r.exit_code == 0, r.output;"
            "r = CliRunner().invoke(hdrprep.cli.main, ['build', '--help']); assert r.exit_code == 0, r.output;"
            "heavy = sorted(m for m in ('dask', 'distributed', 'numba', 'torch', 'zarr') if m in sys.modules);"
            "assert not heavy, heavy")
    subprocess.run([sys.executable, "-c", code], check=True)


def test_build_refuses_bad_preset_with_a_clear_message(tmp_path):
    (tmp_path / "src").mkdir()
    r = CliRunner().invoke(main, ["build", "--src", str(tmp_path / "src"), "--out", str(tmp_path / "o"),
                                  "--preset", "nope"])
    assert r.exit_code == 2
    assert "unknown preset 'nope'" in r.output
    assert not (tmp_path / "o").exists()


def test_build_refuses_contradicting_flags(tmp_path):
    (tmp_path / "src").mkdir()
    r = CliRunner().invoke(main, ["build", "--src", str(tmp_path / "src"), "--out", str(tmp_path / "o"),
                                  "--workers", "2", "--scheduler", "tcp://127.0.0.1:1"])
    assert r.exit_code != 0 and "--workers" in r.output
    assert not (tmp_path / "o").exists()


def test_train_then_predict_through_the_cli(tmp_path):
    """The CLI wiring of the trainer: a 2-step run on a pipeline-built store, then predict an LDR PNG."""
    pytest.importorskip("torch")
    import cv2
    import zarr
    from test_train_store import make_tiny_store

    ldr, _ = make_tiny_store(tmp_path / "s.zarr", n=6, size=64)
    run = tmp_path / "run"
    r = CliRunner().invoke(main, ["train", "--data", str(tmp_path / "s.zarr"), "--out", str(run), "--no-perceptual",
                                  "--max-steps", "2", "--width", "4", "--depth", "2", "--num-workers", "0",
                                  "--val-every", "2", "--ckpt-every", "2", "--quiet"])
    assert r.exit_code == 0, r.output
    assert (run / "checkpoints" / "last.pt").is_file()
    png = tmp_path / "in.png"
    cv2.imwrite(str(png), np.ascontiguousarray(ldr[0][..., ::-1]))
    r = CliRunner().invoke(main, ["predict", "--checkpoint", str(run / "checkpoints" / "last.pt"),
                                  "--input", str(png), "--out", str(tmp_path / "out.exr")])
    assert r.exit_code == 0, r.output
    from hdrprep.io import read_frame

    hdr, _ = read_frame(tmp_path / "out.exr")
    assert hdr.shape == (64, 64, 3) and np.isfinite(hdr).all()
    assert zarr.open_group(str(tmp_path / "s.zarr"), mode="r")["ldr"].shape[0] == 6


def test_train_without_vgg_weights_refuses_with_the_recipe(tmp_path):
    pytest.importorskip("torch")
    from test_train_store import make_tiny_store

    make_tiny_store(tmp_path / "s.zarr", n=6, size=32)
    r = CliRunner().invoke(main, ["train", "--data", str(tmp_path / "s.zarr"), "--out", str(tmp_path / "run"),
                                  "--max-steps", "1", "--quiet"])
    assert r.exit_code == 2
    assert "vgg19" in r.output.lower() and "--no-perceptual" in r.output


@pytest.mark.parametrize("exc, code, words", [
    (ConfigError("invalid value 3 for 'x': use 2"), 2, ["error: invalid value 3 for 'x': use 2"]),
    (PermissionError(errno.EACCES, "Permission denied", "/x/y"), 2, ["error: /x/y: Permission denied", "permissions"]),
    (OSError(errno.ENOSPC, "No space left on device", "/x/y"), 2, ["No space left", "free some space"]),
    (ModuleNotFoundError("No module named 'torch'", name="torch"), 2, ["'torch'", "pip install torch"]),
    (FloatingPointError("loss became nan at step 3; lower --lr"), 1, ["loss became nan", "lower --lr"]),
    (AssertionError("a kept candidate was scored on the prescreen only"), 1, ["internal check failed", "bug"]),
    (MemoryError(), 1, ["out of memory"]),
])
def test_errors_a_user_can_meet_print_one_line(tmp_path, monkeypatch, exc, code, words):
    import hdrprep.io

    def fail(path):
        raise exc

    monkeypatch.setattr(hdrprep.io, "probe", fail)
    (tmp_path / "x.exr").write_bytes(b"")
    r = CliRunner().invoke(main, ["probe", str(tmp_path / "x.exr")])
    assert r.exit_code == code and isinstance(r.exception, SystemExit), r.output
    assert r.output.startswith("error: ") and "Traceback" not in r.output
    for w in words:
        assert w in r.output


def test_a_bug_is_not_dressed_as_a_user_error(tmp_path, monkeypatch):
    import hdrprep.io

    monkeypatch.setattr(hdrprep.io, "probe", lambda path: {}["missing"])
    (tmp_path / "x.exr").write_bytes(b"")
    r = CliRunner().invoke(main, ["probe", str(tmp_path / "x.exr")])
    assert isinstance(r.exception, KeyError)


def test_train_flags_come_from_trainconfig_and_unset_ones_stay_none(tmp_path, monkeypatch):
    """Defaults are shown from TrainConfig; a flag not given reaches train() as None (a resume keeps its own)."""
    import types

    from hdrprep.config import TrainConfig

    seen = {}
    fake = types.ModuleType("hdrprep.train.loop")
    fake.train = lambda data, out, **kw: seen.update(kw) or {"step": 0}
    monkeypatch.setitem(sys.modules, "hdrprep.train.loop", fake)
    (tmp_path / "s.zarr").mkdir()
    r = CliRunner().invoke(main, ["train", "--data", str(tmp_path / "s.zarr"), "--out", str(tmp_path / "run"),
                                  "--width", "8", "--flips", "none", "--quiet"])
    assert r.exit_code == 0, r.output
    assert seen["width"] == 8 and seen["flips"] == "none" and seen["max_steps"] is None and seen["amp"] is None
    help_text = " ".join(CliRunner().invoke(main, ["train", "--help"]).output.split())
    assert f"[default: {TrainConfig().max_steps}; x>=1]" in help_text and "--amp / --no-amp" in help_text
    r = CliRunner().invoke(main, ["train", "--data", str(tmp_path / "s.zarr"), "--out", str(tmp_path / "run"),
                                  "--width", "0"])
    assert r.exit_code == 2 and "--width" in r.output
