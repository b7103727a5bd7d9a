"""The data manifest: which HDR frames a training set may use, and which it must not.

A manifest (``data_manifest.yaml``) lists datasets. Each dataset lives in a
sub-folder of ``--src`` and declares its licence, the glob patterns of its
frames, how video frames group into sequences and are subsampled, and its test
split: frames that must never enter training shards.

Selection rules, in this order, per dataset:

1. Frames are the regular files under ``<src>/<path>`` whose names end in
   ``.exr`` or ``.hdr`` (any case) and whose path relative to the dataset folder
   matches one of ``patterns`` (``*`` and ``?`` stay within one folder, ``**``
   spans folders, ``[abc]`` is a character class; matching is case-sensitive).
   Symbolic links to folders are not followed, as in :func:`hdrprep.build.discover`.
2. Video datasets (``sequence: folder`` or ``sequence: {regex: ...}``) group
   their frames into sequences, order each sequence naturally (``f9`` before
   ``f10``) and keep every ``every``-th frame from ``offset``; if more than
   ``max_frames`` remain, ``max_frames`` of them evenly spread are kept.
   Subsampling comes before the test split, so that adding a test entry never
   shifts which other frames are kept.
3. Frames named by the test split (``files``, ``globs``, ``sequences``) are
   removed from training. Each test entry must match at least one frame of its
   dataset, or loading fails: a misspelt entry would otherwise let the frames it
   meant silently into training.

A dataset whose folder is absent under ``src`` is skipped and logged as a
warning (and listed in :attr:`Selection.skipped`); a frame claimed by two
datasets is an error. Output paths are POSIX, relative to ``src``, sorted.
"""

from __future__ import annotations

import difflib
import logging
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import yaml

from hdrprep.errors import ConfigError

__all__ = ["ManifestError", "Subsample", "TestSplit", "Dataset", "Selection", "Manifest", "load_manifest",
           "parse_manifest"]

log = logging.getLogger(__name__)

MANIFEST_VERSION = 1
_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*$")
_TOP_KEYS = {"version": "required, 1", "description": "optional text", "datasets": "required, a list"}
_DATASET_KEYS = ("name", "licence", "path", "patterns", "url", "citation", "used_by", "note", "sequence",
                 "subsample", "test")
_SUBSAMPLE_KEYS = ("every", "offset", "max_frames")
_TEST_KEYS = ("files", "globs", "sequences")


class ManifestError(ConfigError):
    """A data manifest is malformed or does not fit the frames under ``--src``."""


# --------------------------------------------------------------------------- globs

def _glob_regex(pattern: str) -> re.Pattern:
    """Compile a POSIX glob (``*``, ``?``, ``[...]``, ``**`` segments) to an anchored regex.

    Raises ValueError with the reason when the pattern is malformed.
    """
    if not pattern or pattern.startswith("/") or "\\" in pattern:
        raise ValueError("must be a non-empty relative POSIX path without backslashes")
    parts = pattern.split("/")
    if any(p in ("", ".", "..") for p in parts):
        raise ValueError("has an empty, '.' or '..' path component")
    out = []
    for k, part in enumerate(parts):
        last = k == len(parts) - 1
        if part == "**":
            out.append(".*" if last else "(?:[^/]+/)*")
            continue
        if "**" in part:
            raise ValueError("'**' must be a whole path component, as in 'a/**/b.exr'")
        i, seg = 0, []
        while i < len(part):
            c = part[i]
            if c == "*":
                seg.append("[^/]*")
            elif c == "?":
                seg.append("[^/]")
            elif c == "[":
                # As in fnmatch: '[!...]' negates, and a ']' right after '[' or '[!' is literal.
                neg = part[i + 1:i + 2] == "!"
                start = i + 2 if neg else i + 1
                j = part.find("]", start + 1)
                if j < 0:
                    raise ValueError("has '[' without a closing ']'")
                body = "".join("\\" + ch if ch in "^[]&~|" else ch for ch in part[start:j])
                seg.append("[" + ("^/" if neg else "") + body + "]")
                i = j
            else:
                seg.append(re.escape(c))
            i += 1
        out.append("".join(seg) + ("" if last else "/"))
    try:
        return re.compile("".join(out) + r"\Z")
    except re.error as exc:
        raise ValueError(f"is not a valid glob ({exc})") from None


def _natural_key(path: str) -> list:
    """Sort key that orders embedded integers numerically (``f9`` before ``f10``)."""
    return [(0, int(t), t) if t.isdigit() else (1, 0, t) for t in re.split(r"(\d+)", path)]


# --------------------------------------------------------------------------- model

@dataclass(frozen=True)
class Subsample:
    """Which frames of each video sequence to keep.

    every : keep every ``every``-th frame (>= 1) of the naturally ordered sequence,
    offset : starting at index ``offset`` (0 <= offset < every);
    max_frames : then at most this many (>= 1), evenly spread; None = no cap.
    """

    every: int = 1
    offset: int = 0
    max_frames: int | None = None

    def apply(self, frames: list[str]) -> list[str]:
        """Subsample one sequence, given in natural order; returns frames in the same order."""
        kept = frames[self.offset::self.every]
        m = self.max_frames
        if m is not None and len(kept) > m:
            n = len(kept)
            kept = [kept[(i * n) // m] for i in range(m)]
        return kept


@dataclass(frozen=True)
class TestSplit:
    """Frames that must never enter training, relative to the dataset folder.

    files : exact paths; globs : glob patterns; sequences : whole sequences by
    name (video datasets only).
    """

    __test__ = False  # not a pytest test class despite the name

    files: tuple[str, ...] = ()
    globs: tuple[str, ...] = ()
    sequences: tuple[str, ...] = ()


@dataclass(frozen=True)
class Dataset:
    """One declared source of HDR frames; see the module docstring for the rules."""

    name: str
    licence: str
    path: str
    patterns: tuple[str, ...]
    url: str | None = None
    citation: str | None = None
    used_by: tuple[str, ...] = ()
    note: str | None = None
    sequence: Literal["none", "folder", "regex"] = "none"
    sequence_regex: str | None = None
    subsample: Subsample = Subsample()
    test: TestSplit = TestSplit()

    def sequence_of(self, rel: str) -> str | None:
        """Sequence name of a frame (path relative to the dataset folder), None for still images."""
        if self.sequence == "none":
            return None
        if self.sequence == "folder":
            return rel.rpartition("/")[0]
        m = re.search(self.sequence_regex, rel)
        if m is None:
            raise ManifestError(f"dataset '{self.name}': frame {rel!r} does not match sequence regex "
                                f"{self.sequence_regex!r}; widen the regex or narrow 'patterns'")
        return m.group(1)

    def find_frames(self, root: Path) -> list[str]:
        """Frames under ``root`` (the dataset folder) matching ``patterns``, relative POSIX paths, sorted."""
        # The build's own suffix list, so that the manifest never names a frame the build would not discover.
        from hdrprep.io import HDR_SUFFIXES

        regexes = [_glob_regex(p) for p in self.patterns]
        found = []
        for dirpath, dirnames, filenames in os.walk(root, followlinks=False):
            dirnames.sort()
            base = Path(dirpath)
            for name in filenames:
                if not name.lower().endswith(HDR_SUFFIXES) or not (base / name).is_file():
                    continue
                rel = (base / name).relative_to(root).as_posix()
                if any(r.match(rel) for r in regexes):
                    found.append(rel)
        return sorted(found)

    def split(self, frames: list[str]) -> tuple[list[str], list[str]]:
        """Split this dataset's frames into (training, test), relative to the dataset folder.

        Raises ManifestError when a test entry matches none of ``frames``.
        """
        groups: dict[str | None, list[str]] = {}
        for f in frames:
            groups.setdefault(self.sequence_of(f), []).append(f)
        test = set()
        frame_set = set(frames)
        for entry in self.test.files:
            if entry not in frame_set:
                raise self._unmatched("files", entry)
            test.add(entry)
        for entry in self.test.globs:
            rx = _glob_regex(entry)
            hits = [f for f in frames if rx.match(f)]
            if not hits:
                raise self._unmatched("globs", entry)
            test.update(hits)
        for entry in self.test.sequences:
            if entry not in groups:
                raise self._unmatched("sequences", entry)
            test.update(groups[entry])
        if self.sequence == "none":
            kept = frames
        else:
            kept = [f for seq in groups.values() for f in self.subsample.apply(sorted(seq, key=_natural_key))]
        return sorted(f for f in kept if f not in test), sorted(test)

    def _unmatched(self, key: str, entry: str) -> ManifestError:
        return ManifestError(f"dataset '{self.name}': test.{key} entry {entry!r} matches no frame under its "
                             f"folder '{self.path}'; fix the name (paths are relative to that folder, "
                             f"case-sensitive) or remove the entry")


@dataclass(frozen=True)
class Selection:
    """Result of applying a manifest to a ``--src`` folder.

    training, test : sorted POSIX paths relative to ``src``.
    skipped : names of datasets whose folder is absent under ``src``.
    counts : per present dataset, ``{"found": n, "training": n, "test": n}``.
    """

    training: tuple[str, ...]
    test: tuple[str, ...]
    skipped: tuple[str, ...]
    counts: dict[str, dict[str, int]] = field(default_factory=dict)


@dataclass(frozen=True)
class Manifest:
    """A loaded, schema-checked data manifest."""

    datasets: tuple[Dataset, ...]
    version: int = MANIFEST_VERSION
    description: str | None = None
    source: str | None = None

    def select(self, src: str | Path) -> Selection:
        """Apply the manifest to the frames under ``src``.

        Raises ManifestError when no dataset folder exists under ``src``, when a
        present dataset has no frame, when a test entry matches nothing, or when
        a frame is claimed by two datasets.
        """
        src = Path(src)
        training, test, skipped, counts, owner = [], [], [], {}, {}
        for ds in self.datasets:
            root = src / ds.path
            if not root.is_dir():
                if root.exists():
                    raise ManifestError(f"dataset '{ds.name}': path '{ds.path}' under --src {src} is not a folder; "
                                        f"point 'path' at the folder that holds the frames")
                skipped.append(ds.name)
                continue
            frames = ds.find_frames(root)
            if not frames:
                raise ManifestError(f"dataset '{ds.name}': no .exr/.hdr file under {root} matches patterns "
                                    f"{list(ds.patterns)}; fix 'patterns' or 'path'")
            prefix = Path(ds.path).as_posix()
            for f in frames:
                key = f"{prefix}/{f}"
                if key in owner:
                    raise ManifestError(f"frame {key} is matched by datasets '{owner[key]}' and '{ds.name}'; "
                                        f"make their 'path' or 'patterns' disjoint")
                owner[key] = ds.name
            tr, te = ds.split(frames)
            training += [f"{prefix}/{f}" for f in tr]
            test += [f"{prefix}/{f}" for f in te]
            counts[ds.name] = {"found": len(frames), "training": len(tr), "test": len(te)}
        if skipped:
            log.warning("data manifest: skipped %d dataset(s) without a folder under %s: %s", len(skipped), src,
                        ", ".join(skipped))
        if len(skipped) == len(self.datasets):
            raise ManifestError(f"none of the manifest's dataset folders exist under --src {src} "
                                f"(expected e.g. {src / self.datasets[0].path}); point --src at their parent folder")
        return Selection(tuple(sorted(training)), tuple(sorted(test)), tuple(skipped), counts)

    def training_frames(self, src: str | Path) -> list[str]:
        """Sorted POSIX paths relative to ``src`` of the frames that may enter training shards."""
        return list(self.select(src).training)

    def test_frames(self, src: str | Path) -> list[str]:
        """Sorted POSIX paths relative to ``src`` of every test-split frame (not subsampled)."""
        return list(self.select(src).test)


# --------------------------------------------------------------------------- loading

class _Checker:
    """Builds error messages that name the file, the dataset, the key, the value and the fix."""

    def __init__(self, source: str):
        self.source = source

    def fail(self, where: str, key: str, value: Any, fix: str) -> None:
        raise ManifestError(f"{self.source}: {where}key '{key}' = {value!r}: {fix}")

    def unknown(self, where: str, mapping: dict, allowed) -> None:
        for k in mapping:
            if k not in allowed:
                close = difflib.get_close_matches(str(k), list(allowed), n=1)
                hint = f"did you mean '{close[0]}'? " if close else ""
                self.fail(where, k, mapping[k], f"unknown key; {hint}allowed keys: {', '.join(allowed)}")

    def text(self, where: str, d: dict, key: str, required: bool = False) -> str | None:
        v = d.get(key)
        if v is None and not required:
            return None
        if not isinstance(v, str) or not v.strip():
            self.fail(where, key, v, "must be a non-empty string" + (" (required)" if required else ""))
        return v

    def str_list(self, where: str, d: dict, key: str, required: bool = False) -> tuple[str, ...]:
        v = d.get(key)
        if v is None and not required:
            return ()
        if not isinstance(v, list) or not v or not all(isinstance(s, str) and s for s in v):
            self.fail(where, key, v, "must be a non-empty list of strings" + (" (required)" if required else ""))
        if len(set(v)) != len(v):
            self.fail(where, key, v, "has duplicate entries; list each once")
        return tuple(v)

    def globs(self, where: str, key: str, values: tuple[str, ...]) -> None:
        for p in values:
            try:
                _glob_regex(p)
            except ValueError as exc:
                self.fail(where, key, p, f"bad pattern: {exc}")

    def integer(self, where: str, d: dict, key: str, default: int | None, low: int) -> int | None:
        v = d.get(key, default)
        if v is None:
            return None
        if isinstance(v, bool) or not isinstance(v, int) or v < low:
            self.fail(where, key, v, f"must be an integer >= {low}")
        return v


def _parse_dataset(chk: _Checker, i: int, raw: Any) -> Dataset:
    if not isinstance(raw, dict):
        chk.fail(f"datasets[{i}]: ", "datasets", raw,
                 "each dataset must be a mapping with name, licence, path, patterns")
    name = raw.get("name")
    if not isinstance(name, str) or not _NAME_RE.match(name):
        chk.fail(f"datasets[{i}]: ", "name", name, "required; letters, digits, '.', '_' or '-', e.g. 'hdm-hdr-2014'")
    w = f"dataset '{name}': "
    chk.unknown(w, raw, _DATASET_KEYS)
    licence = chk.text(w, raw, "licence", required=True)
    path = chk.text(w, raw, "path", required=True)
    try:
        _glob_regex(path)
    except ValueError as exc:
        chk.fail(w, "path", path, f"must be a sub-folder of --src: {exc}")
    if any(c in path for c in "*?["):
        chk.fail(w, "path", path, "must be a plain folder name, not a pattern; put patterns in 'patterns'")
    patterns = chk.str_list(w, raw, "patterns", required=True)
    chk.globs(w, "patterns", patterns)

    seq_raw = raw.get("sequence", "none")
    seq_regex = None
    if isinstance(seq_raw, dict):
        chk.unknown(w + "sequence: ", seq_raw, ("regex",))
        seq_regex = chk.text(w + "sequence: ", seq_raw, "regex", required=True)
        try:
            rx = re.compile(seq_regex)
        except re.error as exc:
            chk.fail(w, "sequence.regex", seq_regex, f"not a valid regular expression ({exc})")
        if rx.groups < 1:
            chk.fail(w, "sequence.regex", seq_regex, "needs a capturing group for the sequence name, "
                     "e.g. '^(.+)_\\d+\\.exr$'")
        sequence = "regex"
    elif seq_raw in ("none", "folder"):
        sequence = seq_raw
    else:
        chk.fail(w, "sequence", seq_raw, "must be 'none' (still images), 'folder' (frames of a sequence share a "
                 "folder) or {regex: PATTERN} (group 1 of the match on the relative path names the sequence)")

    sub_raw = raw.get("subsample")
    subsample = Subsample()
    if sub_raw is not None:
        if sequence == "none":
            chk.fail(w, "subsample", sub_raw, "applies to video sequences only; set 'sequence' or remove 'subsample'")
        if not isinstance(sub_raw, dict):
            chk.fail(w, "subsample", sub_raw, "must be a mapping with every, offset, max_frames")
        sw = w + "subsample: "
        chk.unknown(sw, sub_raw, _SUBSAMPLE_KEYS)
        every = chk.integer(sw, sub_raw, "every", 1, 1)
        offset = chk.integer(sw, sub_raw, "offset", 0, 0)
        if offset >= every:
            chk.fail(sw, "offset", offset, f"must be smaller than every ({every})")
        subsample = Subsample(every, offset, chk.integer(sw, sub_raw, "max_frames", None, 1))

    test_raw = raw.get("test")
    test = TestSplit()
    if test_raw is not None:
        if not isinstance(test_raw, dict) or not test_raw:
            chk.fail(w, "test", test_raw, "must be a mapping with files, globs and/or sequences (lists)")
        tw = w + "test: "
        chk.unknown(tw, test_raw, _TEST_KEYS)
        files = chk.str_list(tw, test_raw, "files")
        for f in files:
            try:
                _glob_regex(f)
            except ValueError as exc:
                chk.fail(tw, "files", f, f"bad path: {exc}")
            if any(c in f for c in "*?["):
                chk.fail(tw, "files", f, "is a pattern; move it to test.globs")
        globs = chk.str_list(tw, test_raw, "globs")
        chk.globs(tw, "globs", globs)
        sequences = chk.str_list(tw, test_raw, "sequences")
        if sequences and sequence == "none":
            chk.fail(tw, "sequences", list(sequences), "needs a video dataset; set 'sequence' or use files/globs")
        test = TestSplit(files, globs, sequences)

    return Dataset(name=name, licence=licence, path=path, patterns=patterns, url=chk.text(w, raw, "url"),
                   citation=chk.text(w, raw, "citation"), used_by=chk.str_list(w, raw, "used_by"),
                   note=chk.text(w, raw, "note"), sequence=sequence, sequence_regex=seq_regex,
                   subsample=subsample, test=test)


def parse_manifest(data: Any, source: str = "<manifest>") -> Manifest:
    """Schema-check a manifest already parsed from YAML; ``source`` names it in errors."""
    chk = _Checker(source)
    if not isinstance(data, dict):
        raise ManifestError(f"{source}: the top level must be a mapping with 'version' and 'datasets'")
    chk.unknown("", data, tuple(_TOP_KEYS))
    if data.get("version") != MANIFEST_VERSION:
        chk.fail("", "version", data.get("version"), f"must be {MANIFEST_VERSION} (the only manifest version)")
    raw = data.get("datasets")
    if not isinstance(raw, list) or not raw:
        chk.fail("", "datasets", raw, "must be a non-empty list of datasets")
    datasets = tuple(_parse_dataset(chk, i, r) for i, r in enumerate(raw))
    seen: dict[str, int] = {}
    for i, ds in enumerate(datasets):
        if ds.name in seen:
            chk.fail(f"datasets[{i}]: ", "name", ds.name,
                     f"already used by datasets[{seen[ds.name]}]; names must be unique")
        seen[ds.name] = i
    return Manifest(datasets=datasets, version=MANIFEST_VERSION, description=chk.text("", data, "description"),
                    source=source)


def load_manifest(path: str | Path) -> Manifest:
    """Load and schema-check a data manifest YAML file.

    Raises ManifestError (a ConfigError) naming the file, dataset, key, value and fix.
    """
    path = Path(path)
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise ManifestError(f"{path}: cannot read the manifest ({exc.strerror}); check the --manifest path") from exc
    except yaml.YAMLError as exc:
        raise ManifestError(f"{path}: not valid YAML ({exc}); fix the syntax") from exc
    return parse_manifest(data, str(path))
