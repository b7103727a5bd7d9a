"""The CLI maps flags onto library calls; importing it stays light."""

import subprocess
import sys

from click.testing import CliRunner

from hdrprep.cli import main


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
