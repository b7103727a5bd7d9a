"""`hdrprep verify`: a sound store passes; every kind of damage is found and named, and its fix works."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import zarr

from hdrprep import build, schema, store
from hdrprep.config import load_preset
from hdrprep.verify import verify

SMOKE = load_preset("smoke")


@pytest.fixture(scope="module")
def frames(tmp_path_factory) -> Path:
    from hdrprep import synth

    root = tmp_path_factory.mktemp("frames")
    synth.write_frames(root, n=3, height=256, width=384)
    return root


@pytest.fixture(scope="module")
def sound(frames, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("ref") / "s.zarr"
    build.build(frames, out, SMOKE, scheduler="synchronous", progress=False)
    return out


@pytest.fixture
def copy(sound, tmp_path) -> Path:
    out = tmp_path / "s.zarr"
    shutil.copytree(sound, out)
    return out


def _n_shards(out: Path) -> int:
    return -(-zarr.open_group(str(out), mode="r")["ldr"].shape[0] // SMOKE.output.pairs_per_shard)


def _shard_file(out: Path, arr: str, k: int) -> Path:
    return out / arr / "c" / str(k) / "0" / "0" / "0"


def test_sound_store_has_no_problem(sound):
    assert _n_shards(sound) >= 3, "the fixture should give several shards"
    assert verify(sound) == []
    assert verify(sound, checksums=False) == []


@pytest.mark.parametrize("arr", ["ldr", "hdr"])
@pytest.mark.parametrize("where", [0.3, 0.6, -1], ids=["data-30%", "data-60%", "last-byte"])
def test_flipped_byte_in_a_shard_is_found(copy, arr, where):
    path = _shard_file(copy, arr, 1)
    data = bytearray(path.read_bytes())
    i = int(len(data) * where) if where >= 0 else len(data) - 1
    data[i] ^= 0x10
    path.write_bytes(bytes(data))
    problems = verify(copy)
    assert len(problems) == 1, problems
    assert problems[0].where.startswith("shard 1 (pairs 4-7")
    assert "_work/shards/000001.json" in problems[0].fix


def test_truncated_and_missing_shards_are_found(copy):
    path = _shard_file(copy, "hdr", 0)
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    _shard_file(copy, "ldr", 2).unlink()  # reads as fill value 0: caught by the checksums
    problems = verify(copy)
    assert [p.where.split(" (")[0] for p in problems] == ["shard 0", "shard 2"], problems
    assert "cannot be read" in problems[0].what
    assert "4 of 4 pairs do not match" in problems[1].what
    # the structure-only check cannot see damage inside shards
    assert verify(copy, checksums=False) == []


def test_following_the_fix_repairs_a_damaged_shard(copy, frames, sound):
    path = _shard_file(copy, "ldr", 1)
    path.write_bytes(path.read_bytes()[:100])
    (problem,) = verify(copy)
    assert problem.where.startswith("shard 1") and "000001.json" in problem.fix
    (copy / schema.WORK_DIR / "shards" / "000001.json").unlink()  # as the fix says
    report = build.build(frames, copy, SMOKE, scheduler="synchronous", progress=False)
    assert report["tasks"] == {"frames_scored": 0, "shards_written": 1}
    assert verify(copy) == []
    assert path.read_bytes() == _shard_file(sound, "ldr", 1).read_bytes()


def test_missing_index_is_found(copy):
    (copy / schema.INDEX_NAME).unlink()
    problems = verify(copy)
    assert [(p.where, p.what) for p in problems] == [(schema.INDEX_NAME, "missing")]
    assert "rerun the same `hdrprep build`" in problems[0].fix


def test_damaged_index_is_found(copy):
    path = copy / schema.INDEX_NAME
    path.write_bytes(path.read_bytes()[:-20])
    (problem,) = verify(copy)
    assert problem.where == schema.INDEX_NAME and "cannot be read" in problem.what


def test_stale_index_from_another_build_is_found(copy, frames, tmp_path):
    other = tmp_path / "other.zarr"
    build.build(frames, other, SMOKE.override(seed=5), scheduler="synchronous", progress=False)
    shutil.copy(other / schema.INDEX_NAME, copy / schema.INDEX_NAME)
    (problem,) = verify(copy)
    assert problem.where == schema.INDEX_NAME and "stale" in problem.what
    # same row count but other rows: the checksums disagree almost everywhere
    other_index = pq.read_table(other / schema.INDEX_NAME)
    n = zarr.open_group(str(copy), mode="r")["ldr"].shape[0]
    pq.write_table(other_index.slice(0, n), copy / schema.INDEX_NAME)
    problems = verify(copy)
    assert problems[-1].where == schema.INDEX_NAME and "may be stale" in problems[-1].what, problems


def test_index_rows_not_matching_arrays_are_found(copy):
    """Rows 0 and 1 swapped, numbering kept: only the checksums can tell, and they name the pairs."""
    index = pq.read_table(copy / schema.INDEX_NAME)
    order = np.arange(index.num_rows)
    order[[0, 1]] = [1, 0]
    swapped = index.take(pa.array(order))
    swapped = swapped.set_column(0, "pair", index["pair"]).set_column(
        swapped.column_names.index("shard"), "shard", index["shard"])
    pq.write_table(swapped, copy / schema.INDEX_NAME)
    (problem,) = verify(copy)
    assert problem.where.startswith("shard 0") and "(pairs 0, 1)" in problem.what


def test_bad_pair_numbering_and_missing_columns_are_found(copy):
    index = pq.read_table(copy / schema.INDEX_NAME)
    pair = index["pair"].to_numpy().copy()
    pair[3] = 99
    pq.write_table(index.set_column(0, "pair", pa.array(pair)), copy / schema.INDEX_NAME)
    (problem,) = verify(copy)
    assert "column 'pair' is not 0.." in problem.what and "row 3 holds 99" in problem.what
    pq.write_table(index.drop_columns(["checksum"]), copy / schema.INDEX_NAME)
    (problem,) = verify(copy)
    assert "checksum" in problem.what and "missing" in problem.what


def _edit_attrs(out: Path, **changes) -> None:
    meta = json.loads((out / "zarr.json").read_text())
    meta["attributes"][schema.ATTR].update(changes)
    (out / "zarr.json").write_text(json.dumps(meta))


def test_unfinished_store_is_refused(copy):
    _edit_attrs(copy, complete=False)
    (problem,) = verify(copy)
    assert "did not finish" in problem.what and "resume" in problem.fix
    with pytest.raises(store.StoreError, match="did not finish"):
        store.open_store(copy)


def test_unknown_format_version_and_foreign_folder(copy, tmp_path):
    _edit_attrs(copy, format_version=99)
    (problem,) = verify(copy)
    assert "format version 99" in problem.what
    (problem,) = verify(tmp_path)
    assert "not an hdrprep store" in problem.what


def test_wrong_array_shape_is_found(copy):
    _edit_attrs(copy, config=dict(SMOKE.to_dict(), sampling=dict(SMOKE.to_dict()["sampling"], patch_size=64)))
    problems = verify(copy)
    assert {p.where for p in problems} == {"ldr/", "hdr/"} and "(N, 64, 64, 3)" in problems[0].what


def test_cli_exit_code(sound, copy):
    from click.testing import CliRunner

    from hdrprep import cli

    if "verify" not in cli.main.commands:
        pytest.skip("hdrprep.cli has no `verify` command yet (the code to paste is in the issue-7 report)")
    runner = CliRunner()
    assert runner.invoke(cli.main, ["verify", str(sound)]).exit_code == 0
    _shard_file(copy, "ldr", 0).unlink()
    result = runner.invoke(cli.main, ["verify", str(copy)])
    assert result.exit_code == 1 and "shard 0" in result.output


def _rewrite_index(out: Path, change) -> None:
    import pyarrow.parquet as pq

    index = pq.read_table(out / schema.INDEX_NAME)
    rows = index.to_pylist()
    change(rows)
    pq.write_table(pa.Table.from_pylist(rows, schema=index.schema), out / schema.INDEX_NAME)


def test_rows_of_another_build_are_found(frames, copy, tmp_path):
    """A store whose index mixes rows of two builds never passes, even with matching checksums."""
    other = tmp_path / "seed1.zarr"
    build.build(frames, other, SMOKE.override(seed=1), scheduler="synchronous", progress=False)
    theirs = {(r["source"], r["candidate"]): r for r in pq.read_table(other / schema.INDEX_NAME).to_pylist()}

    def seed_only(rows):
        rows[2]["seed"] = 1

    _rewrite_index(copy, seed_only)
    (problem,) = verify(copy, checksums=False)
    assert "another seed than the store's 0" in problem.what and "pairs 2" in problem.what
    assert "mixes" in problem.what and "--overwrite" in problem.fix

    def params_of_seed_1(rows):  # the seed column says 0, the camera parameters are seed 1's draws
        rows[2]["seed"] = 0
        for r in rows:
            mine = theirs.get((r["source"], r["candidate"]))
            if mine is not None:
                r.update({k: mine[k] for k in ("hue_shift", "sat_shift", "noise_seed")})
                break

    _rewrite_index(copy, params_of_seed_1)
    (problem,) = verify(copy, checksums=False)
    assert "do not repeat the store's seeded draws" in problem.what


def test_library_versions_are_recorded_and_differences_named(copy):
    from click.testing import CliRunner

    from hdrprep import cli, versions

    recorded = store.read_attrs(copy)["versions"]
    assert recorded == versions.current() and {"python", "numpy", "numba", "zarr", "pyarrow"} <= set(recorded)
    assert "opencv-jpeg" in recorded  # the JPEG library OpenCV was built with shapes every LDR
    result = CliRunner().invoke(cli.main, ["verify", str(copy), "--quiet"])
    assert result.exit_code == 0 and "note:" not in result.output
    _edit_attrs(copy, versions={**recorded, "numpy": "1.0.0"})
    result = CliRunner().invoke(cli.main, ["verify", str(copy), "--quiet"])
    assert result.exit_code == 0, result.output  # other versions are a note, not damage
    assert f"numpy 1.0.0 -> {recorded['numpy']}" in result.output and "may differ" in result.output


def test_worker_processes_find_the_same_damage(copy, monkeypatch):
    """Shards checked by worker processes: the same findings as in one process, in shard order."""
    import zarr

    from hdrprep import verify as verify_mod

    monkeypatch.setattr(verify_mod, "_SERIAL_SHARDS", 0)
    group = zarr.open_group(str(copy), mode="r")
    n, per = group["ldr"].shape[0], SMOKE.output.pairs_per_shard
    expected = pq.read_table(copy / schema.INDEX_NAME)["checksum"].to_pylist()
    expected[1] = "0" * 16
    expected[n - 1] = "f" * 16
    got = {}
    for workers in (1, 2):
        problems = []
        verify_mod._check_pairs(copy, n, expected, per, problems, False, workers)
        got[workers] = problems
    assert got[1] == got[2] and [p.where.split(" (")[0] for p in got[1]] == ["shard 0", f"shard {(n - 1) // per}"]
