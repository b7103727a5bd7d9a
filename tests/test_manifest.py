"""Tests of the data manifest: schema, frame selection, subsampling, test-split exclusion."""

import copy
import csv
import fnmatch
import logging
import subprocess
import sys

import pytest
import yaml

from conftest import REPO
from hdrprep.manifest import ManifestError, _glob_regex, load_manifest, parse_manifest

REPO_MANIFEST = REPO / "data_manifest.yaml"


def touch(root, rels):
    for rel in rels:
        p = root / rel
        p.parent.mkdir(parents=True, exist_ok=True)
        p.touch()


def write(path, data):
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path


@pytest.fixture
def src(tmp_path):
    """A --src tree of empty files named like frames: 2 video sequences, stills, non-HDR clutter."""
    root = tmp_path / "src"
    touch(root, [f"video/seqA/frame_{i:04d}.exr" for i in range(1, 101)])  # 100 frames, zero-padded
    touch(root, [f"video/seqB/f{i}.exr" for i in range(1, 13)])  # f1..f12: natural != lexicographic order
    touch(root, ["video/seqA/notes.txt", "images/a.exr", "images/b.hdr", "images/c.EXR", "images/sub/d.exr",
                 "images/readme.md"])
    touch(root, [f"flat/shotA_{i:04d}.exr" for i in range(1, 21)] + [f"flat/shotB_{i:04d}.exr" for i in range(1, 6)])
    return root


def video(**kw):
    d = dict(name="vid", licence="CC0-1.0", path="video", patterns=["*/*.exr"], sequence="folder")
    d.update(kw)
    return d


def images(**kw):
    d = dict(name="img", licence="CC0-1.0", path="images", patterns=["**/*"])
    d.update(kw)
    return d


def manifest(*datasets):
    return parse_manifest({"version": 1, "datasets": list(datasets)}, "test.yaml")


# --------------------------------------------------------------------------- the repository's manifest

def test_repo_manifest_passes_schema_check():
    m = load_manifest(REPO_MANIFEST)
    names = [d.name for d in m.datasets]
    assert "fixtures" in names
    assert len({d.path for d in m.datasets}) == len(m.datasets), "two datasets share a folder"
    for d in m.datasets:
        assert d.url or d.citation, f"{d.name}: give a url or a citation"
        assert set(d.used_by) <= {"santos2020", "eilertsen2017"}, d.name
        if d.name != "fixtures":
            assert d.note, f"{d.name}: say in a note what was and was not verified"


def test_repo_manifest_fixtures_entry(hdr_dir, caplog):
    with caplog.at_level(logging.WARNING, logger="hdrprep.manifest"):
        sel = load_manifest(REPO_MANIFEST).select(hdr_dir.parent)
    with open(hdr_dir / "SOURCES.tsv", newline="") as f:
        listed = {"hdr/" + row["file"] for row in csv.DictReader(f, delimiter="\t")}
    expected_test = ["hdr/MtTamWest.exr", "hdr/hdr-rgb-bellparkpier.hdr", "hdr/hdr-rgb-eveningroad.hdr",
                     "hdr/venice_sunset_1k.hdr"]
    assert list(sel.test) == expected_test
    assert set(sel.training) == listed - set(expected_test)
    assert list(sel.training) == sorted(sel.training)
    assert sel.counts["fixtures"] == {"found": len(listed), "training": len(listed) - 4, "test": 4}
    others = [d.name for d in load_manifest(REPO_MANIFEST).datasets if d.name != "fixtures"]
    assert list(sel.skipped) == others
    assert all(name in caplog.text for name in others)


def test_cli_dry_run_with_repo_manifest_excludes_the_test_split(hdr_dir, tmp_path):
    from click.testing import CliRunner

    from hdrprep.cli import main

    out = tmp_path / "s.zarr"
    res = CliRunner().invoke(main, ["build", "--src", str(hdr_dir.parent), "--out", str(out), "--dry-run",
                                    "--manifest", str(REPO_MANIFEST), "--quiet"])
    assert res.exit_code == 0, res.output
    listed = [line.strip() for line in res.output.splitlines() if line.startswith("  hdr/")]
    assert listed == load_manifest(REPO_MANIFEST).training_frames(hdr_dir.parent)
    assert "hdr/MtTamWest.exr" not in res.output and not out.exists()


def test_repo_manifest_frames_are_what_the_build_discovers(hdr_dir):
    from hdrprep.build import discover

    keys, _ = discover(hdr_dir.parent)
    m = load_manifest(REPO_MANIFEST)
    assert set(m.training_frames(hdr_dir.parent)) <= set(keys)
    assert set(m.test_frames(hdr_dir.parent)) <= set(keys)


# --------------------------------------------------------------------------- selection

def test_patterns_match_only_hdr_files_and_stay_within_folders(src):
    assert manifest(images()).training_frames(src) == [
        "images/a.exr", "images/b.hdr", "images/c.EXR", "images/sub/d.exr"]
    # '*' does not cross '/', and matching is case-sensitive: c.EXR and sub/d.exr are not '*.exr'.
    assert manifest(images(patterns=["*.exr"])).training_frames(src) == ["images/a.exr"]
    assert manifest(images(patterns=["*.[eE][xX][rR]", "sub/*.exr"])).training_frames(src) == [
        "images/a.exr", "images/c.EXR", "images/sub/d.exr"]


def test_subsampling_every_offset_max_frames(src):
    sel = manifest(video(subsample={"every": 10, "offset": 3})).select(src)
    seq_a = [f for f in sel.training if "/seqA/" in f]
    assert seq_a == [f"video/seqA/frame_{i:04d}.exr" for i in range(4, 101, 10)]  # indices 3, 13, ..., 93
    # seqB in natural order f1..f12, indices 3 and 13: only f4 (lexicographic order would give f12).
    assert [f for f in sel.training if "/seqB/" in f] == ["video/seqB/f4.exr"]

    sel = manifest(video(subsample={"every": 10, "offset": 3, "max_frames": 4})).select(src)
    # 10 kept frames, 4 evenly spread: indices floor(i * 10 / 4) = 0, 2, 5, 7 of frames 4, 14, ..., 94.
    assert [f for f in sel.training if "/seqA/" in f] == [
        f"video/seqA/frame_{i:04d}.exr" for i in (4, 24, 54, 74)]
    assert sel.counts["vid"] == {"found": 112, "training": 5, "test": 0}


def test_subsampling_uses_natural_order(src):
    sel = manifest(video(patterns=["seqB/*.exr"], subsample={"every": 5})).select(src)
    assert list(sel.training) == ["video/seqB/f1.exr", "video/seqB/f11.exr", "video/seqB/f6.exr"]


def test_max_frames_at_or_above_length_keeps_all(src):
    full = manifest(video()).training_frames(src)
    assert len(full) == 112
    assert manifest(video(subsample={"max_frames": 100})).training_frames(src) == full


def test_test_split_is_excluded_and_not_subsampled(src):
    m = manifest(video(subsample={"every": 10, "offset": 3},
                       test={"files": ["seqA/frame_0014.exr"], "globs": ["seqA/frame_005?.exr"],
                             "sequences": ["seqB"]}))
    sel = m.select(src)
    assert not set(sel.training) & set(sel.test)
    # Subsampled seqA keeps 4, 14, ..., 94; 14 and 54 are test frames.
    assert list(sel.training) == [f"video/seqA/frame_{i:04d}.exr" for i in (4, 24, 34, 44, 64, 74, 84, 94)]
    expected_test = ({"video/seqA/frame_0014.exr"} | {f"video/seqA/frame_{i:04d}.exr" for i in range(50, 60)}
                     | {f"video/seqB/f{i}.exr" for i in range(1, 13)})
    assert list(sel.test) == sorted(expected_test)
    assert m.test_frames(src) == sorted(expected_test)
    assert m.training_frames(src) == list(sel.training)


def test_whole_dataset_held_out(src):
    sel = manifest(images(test={"globs": ["**"]}), video()).select(src)
    assert not any(f.startswith("images/") for f in sel.training)
    assert [f for f in sel.test] == ["images/a.exr", "images/b.hdr", "images/c.EXR", "images/sub/d.exr"]


def test_regex_sequences(src):
    ds = dict(name="flat", licence="x", path="flat", patterns=["*.exr"],
              sequence={"regex": r"^(.+)_\d+\.exr$"}, subsample={"every": 10}, test={"sequences": ["shotB"]})
    sel = manifest(ds).select(src)
    assert list(sel.training) == ["flat/shotA_0001.exr", "flat/shotA_0011.exr"]
    assert list(sel.test) == [f"flat/shotB_{i:04d}.exr" for i in range(1, 6)]


def test_frame_outside_sequence_regex_is_an_error(src):
    ds = dict(name="flat", licence="x", path="flat", patterns=["*.exr"], sequence={"regex": r"^(shotA)_"})
    with pytest.raises(ManifestError, match=r"dataset 'flat'.*'shotB_0001\.exr' does not match sequence regex"):
        manifest(ds).select(src)


def test_absent_dataset_is_skipped_with_a_warning(src, caplog):
    m = manifest(images(), video(name="gone", path="not-here"))
    with caplog.at_level(logging.WARNING, logger="hdrprep.manifest"):
        sel = m.select(src)
    assert sel.skipped == ("gone",)
    assert "gone" in caplog.text and "not-here" not in sel.counts
    assert list(sel.training) == manifest(images()).training_frames(src)


def test_no_dataset_present_is_an_error(src):
    with pytest.raises(ManifestError, match="none of the manifest's dataset folders exist"):
        manifest(video(path="nope")).select(src)


def test_present_dataset_without_frames_is_an_error(src):
    with pytest.raises(ManifestError, match=r"dataset 'img': no \.exr/\.hdr file .* matches patterns"):
        manifest(images(patterns=["*.png"])).select(src)


def test_path_that_is_a_file_is_an_error(src):
    with pytest.raises(ManifestError, match="is not a folder"):
        manifest(images(path="images/a.exr")).select(src)


def test_frame_claimed_by_two_datasets_is_an_error(src):
    m = manifest(images(), images(name="sub", path="images/sub", patterns=["*.exr"]))
    with pytest.raises(ManifestError, match=r"images/sub/d\.exr is matched by datasets 'img' and 'sub'"):
        m.select(src)


def test_selection_is_deterministic_and_independent_of_dataset_order(src):
    a = dict(name="flat", licence="x", path="flat", patterns=["*.exr"], test={"files": ["shotA_0003.exr"]})
    sub = {"every": 7, "offset": 2, "max_frames": 5}
    first = manifest(images(), video(subsample=sub), a).select(src)
    again = manifest(images(), video(subsample=sub), a).select(src)
    reordered = manifest(a, video(subsample=sub), images()).select(src)
    assert first == again
    assert (first.training, first.test) == (reordered.training, reordered.test)


@pytest.mark.parametrize("test_split, entry", [
    ({"files": ["seqA/frame_0200.exr"]}, "'seqA/frame_0200.exr'"),
    ({"files": ["seqa/frame_0001.exr"]}, "'seqa/frame_0001.exr'"),  # case-sensitive
    ({"globs": ["seqC/*.exr"]}, "'seqC/*.exr'"),
    ({"sequences": ["seqZ"]}, "'seqZ'"),
])
def test_test_entry_matching_nothing_is_an_error(src, test_split, entry):
    with pytest.raises(ManifestError) as exc:
        manifest(video(test=test_split)).select(src)
    msg = str(exc.value)
    assert "dataset 'vid'" in msg and entry in msg and "matches no frame" in msg and "fix the name" in msg


# --------------------------------------------------------------------------- schema errors

def _mutate(d, key, value):
    d = copy.deepcopy(d)
    if value is _DELETE:
        del d[key]
    else:
        d[key] = value
    return d


_DELETE = object()

BAD_DATASETS = [
    # (dataset, substrings the error must contain)
    (_mutate(images(), "license", "MIT"), ["dataset 'img'", "'license'", "'MIT'", "did you mean 'licence'"]),
    (_mutate(images(), "licence", _DELETE), ["dataset 'img'", "'licence'", "None", "required"]),
    (_mutate(images(), "licence", ""), ["dataset 'img'", "'licence'", "''", "non-empty string"]),
    (_mutate(images(), "name", _DELETE), ["datasets[0]", "'name'", "None", "required"]),
    (_mutate(images(), "name", "has space"), ["'name'", "'has space'", "letters, digits"]),
    (_mutate(images(), "path", _DELETE), ["dataset 'img'", "'path'", "None", "required"]),
    (_mutate(images(), "path", "/abs/images"), ["dataset 'img'", "'path'", "'/abs/images'", "relative"]),
    (_mutate(images(), "path", "../images"), ["dataset 'img'", "'path'", "'../images'", "'..'"]),
    (_mutate(images(), "path", "img*"), ["dataset 'img'", "'path'", "'img*'", "not a pattern"]),
    (_mutate(images(), "patterns", _DELETE), ["dataset 'img'", "'patterns'", "required"]),
    (_mutate(images(), "patterns", []), ["dataset 'img'", "'patterns'", "[]", "non-empty list"]),
    (_mutate(images(), "patterns", "*.exr"), ["dataset 'img'", "'patterns'", "'*.exr'", "list of strings"]),
    (_mutate(images(), "patterns", ["[ab.exr"]), ["dataset 'img'", "'patterns'", "'[ab.exr'", "closing ']'"]),
    (_mutate(images(), "patterns", ["a**.exr"]), ["dataset 'img'", "'patterns'", "'a**.exr'", "whole path component"]),
    (_mutate(images(), "patterns", ["[z-a].exr"]), ["dataset 'img'", "'patterns'", "'[z-a].exr'", "not a valid glob"]),
    (_mutate(images(), "patterns", ["*.exr", "*.exr"]), ["dataset 'img'", "'patterns'", "duplicate"]),
    (_mutate(images(), "sequence", "video"), ["dataset 'img'", "'sequence'", "'video'", "'folder'"]),
    (_mutate(images(), "sequence", {"regex": "("}), ["dataset 'img'", "'sequence.regex'", "'('", "not a valid"]),
    (_mutate(images(), "sequence", {"regex": r"\d+"}), ["dataset 'img'", "'sequence.regex'", "capturing group"]),
    (_mutate(images(), "sequence", {"re": "(a)"}), ["dataset 'img'", "'re'", "allowed keys: regex"]),
    (_mutate(images(), "subsample", {"every": 2}), ["dataset 'img'", "'subsample'", "video sequences only"]),
    (_mutate(video(), "subsample", {"every": 0}), ["dataset 'vid'", "'every'", "0", "integer >= 1"]),
    (_mutate(video(), "subsample", {"every": "ten"}), ["dataset 'vid'", "'every'", "'ten'", "integer >= 1"]),
    (_mutate(video(), "subsample", {"every": True}), ["dataset 'vid'", "'every'", "True", "integer >= 1"]),
    (_mutate(video(), "subsample", {"every": 3, "offset": 3}), ["dataset 'vid'", "'offset'", "3", "smaller than"]),
    (_mutate(video(), "subsample", {"offset": -1}), ["dataset 'vid'", "'offset'", "-1", "integer >= 0"]),
    (_mutate(video(), "subsample", {"max_frames": 0}), ["dataset 'vid'", "'max_frames'", "0", "integer >= 1"]),
    (_mutate(video(), "subsample", {"step": 2}), ["dataset 'vid'", "'step'", "unknown key"]),
    (_mutate(video(), "subsample", 10), ["dataset 'vid'", "'subsample'", "10", "mapping"]),
    (_mutate(video(), "test", ["seqA"]), ["dataset 'vid'", "'test'", "['seqA']", "mapping"]),
    (_mutate(video(), "test", {"frames": ["a"]}), ["dataset 'vid'", "'frames'", "allowed keys: files, globs"]),
    (_mutate(video(), "test", {"files": ["seqA/*.exr"]}), ["dataset 'vid'", "'files'", "'seqA/*.exr'", "test.globs"]),
    (_mutate(video(), "test", {"globs": ["seqA/[x"]}), ["dataset 'vid'", "'globs'", "'seqA/[x'", "closing ']'"]),
    (_mutate(images(), "test", {"sequences": ["s"]}), ["dataset 'img'", "'sequences'", "needs a video dataset"]),
]


@pytest.mark.parametrize("dataset, needles", BAD_DATASETS,
                         ids=[f"{i}-{n[1]}" for i, (_, n) in enumerate(BAD_DATASETS)])
def test_bad_dataset_errors_name_dataset_key_value_and_fix(dataset, needles):
    with pytest.raises(ManifestError) as exc:
        manifest(dataset)
    msg = str(exc.value)
    assert msg.startswith("test.yaml: ")
    for needle in needles:
        assert needle in msg, f"{needle!r} not in {msg!r}"


@pytest.mark.parametrize("data, needles", [
    ([images()], ["top level must be a mapping"]),
    ({"datasets": [images()]}, ["'version'", "None", "must be 1"]),
    ({"version": 2, "datasets": [images()]}, ["'version'", "2", "must be 1"]),
    ({"version": 1, "datasets": []}, ["'datasets'", "[]", "non-empty list"]),
    ({"version": 1, "datasets": [images()], "dataset": []}, ["'dataset'", "did you mean 'datasets'"]),
    ({"version": 1, "datasets": ["images"]}, ["datasets[0]", "'images'", "mapping"]),
    ({"version": 1, "datasets": [images(), video(name="img")]}, ["datasets[1]", "'img'", "unique"]),
])
def test_bad_top_level_errors(data, needles):
    with pytest.raises(ManifestError) as exc:
        parse_manifest(data, "test.yaml")
    for needle in needles:
        assert needle in str(exc.value), f"{needle!r} not in {str(exc.value)!r}"


def test_load_manifest_file_errors(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("version: 1\ndatasets: [\n")
    with pytest.raises(ManifestError, match=r"bad\.yaml: not valid YAML"):
        load_manifest(bad)
    with pytest.raises(ManifestError, match=r"missing\.yaml: cannot read"):
        load_manifest(tmp_path / "missing.yaml")
    good = write(tmp_path / "m.yaml", {"version": 1, "datasets": [images()]})
    assert load_manifest(good).datasets[0].name == "img"


# --------------------------------------------------------------------------- glob matcher

@pytest.mark.parametrize("pattern", ["*.exr", "?.exr", "[ab]*", "[!a]*", "[]]*", "[!]]*", "[a-c].exr", "*-*",
                                     "[^]a.exr", "[[]a.exr", "a.exr", "*"])
def test_glob_within_one_folder_agrees_with_fnmatch(pattern):
    """fnmatch.fnmatchcase is the reference for one path component."""
    names = ["a.exr", "b.EXR", "ab.hdr", "]x.exr", "!a.exr", "a-b.exr", "^a.exr", "[a.exr", "c.exr", ".exr"]
    rx = _glob_regex(pattern)
    assert [n for n in names if rx.match(n)] == [n for n in names if fnmatch.fnmatchcase(n, pattern)]


def test_glob_double_star_spans_folders():
    rx = _glob_regex("**/x/*.exr")
    assert [p for p in ["x/a.exr", "a/x/b.exr", "a/b/x/c.exr", "x/y/a.exr", "ax/a.exr"] if rx.match(p)] == [
        "x/a.exr", "a/x/b.exr", "a/b/x/c.exr"]
    assert _glob_regex("a/**").match("a/b/c.exr") and not _glob_regex("a/**").match("b/c.exr")
    assert not _glob_regex("*.exr").match("a/b.exr")


def test_import_does_not_pull_heavy_modules():
    code = "import sys, hdrprep.manifest; print(sorted({'dask', 'torch', 'numba'} & set(sys.modules)))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"
