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

import logging
import os
import re
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any, Literal

from hdrprep._typed import check, check_keys, context, invalid, load, read_yaml, setting
from hdrprep.errors import ConfigError

__all__ = ["Dataset", "Manifest", "ManifestError", "Selection", "Subsample", "TestSplit", "load_manifest",
           "parse_manifest"]

log = logging.getLogger(__name__)

MANIFEST_VERSION = 1
_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*$")
_TOP_KEYS = ("version", "description", "datasets")
_DATASET_KEYS = ("name", "licence", "path", "patterns", "url", "citation", "used_by", "note", "sequence",
                 "subsample", "test")


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

    every: int = setting(1, min=1)
    offset: int = setting(0, min=0)
    max_frames: int | None = setting(None, min=1)

    def __post_init__(self) -> None:
        check(self.offset < self.every, "offset", self.offset, f"must be smaller than every ({self.every})")

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

def _text(d: dict, key: str, required: bool = False) -> str | None:
    v = d.get(key)
    if v is None and not required:
        return None
    check(isinstance(v, str) and bool(v.strip()), key, v, "must be a non-empty string" + (" (required)" * required))
    return v


def _str_list(d: dict, key: str, required: bool = False) -> tuple[str, ...]:
    v = d.get(key)
    if v is None and not required:
        return ()
    check(isinstance(v, list) and bool(v) and all(isinstance(s, str) and s for s in v), key, v,
          "must be a non-empty list of strings" + (" (required)" * required))
    check(len(set(v)) == len(v), key, v, "has duplicate entries; list each once")
    return tuple(v)


def _relative_path(key: str, value: str, what: str) -> None:
    try:
        _glob_regex(value)
    except ValueError as exc:
        raise invalid(key, value, f"{what}: {exc}") from None


def _parse_dataset(i: int, raw: Any) -> Dataset:
    check(isinstance(raw, dict), f"datasets[{i}]", raw, "each dataset must be a mapping with name, licence, path, "
                                                        "patterns")
    name = raw.get("name")
    with context(f"datasets[{i}]: "):
        check(isinstance(name, str) and bool(_NAME_RE.match(name)), "name", name,
              "required; letters, digits, '.', '_' or '-', e.g. 'hdm-hdr-2014'")
    with context(f"dataset '{name}': "):
        check_keys(raw, _DATASET_KEYS)
        licence = _text(raw, "licence", required=True)
        path = _text(raw, "path", required=True)
        _relative_path("path", path, "must be a sub-folder of --src")
        check(not any(c in path for c in "*?["), "path", path,
              "must be a plain folder name, not a pattern; put patterns in 'patterns'")
        patterns = _str_list(raw, "patterns", required=True)
        for p in patterns:
            _relative_path("patterns", p, "bad pattern")
        sequence, seq_regex = _parse_sequence(raw.get("sequence", "none"))
        subsample = _parse_subsample(raw.get("subsample"), sequence)
        test = _parse_test(raw.get("test"), sequence)
        return Dataset(name=name, licence=licence, path=path, patterns=patterns, url=_text(raw, "url"),
                       citation=_text(raw, "citation"), used_by=_str_list(raw, "used_by"), note=_text(raw, "note"),
                       sequence=sequence, sequence_regex=seq_regex, subsample=subsample, test=test)


def _parse_sequence(raw: Any) -> tuple[str, str | None]:
    if isinstance(raw, dict):
        with context("sequence: "):
            check_keys(raw, ("regex",))
            regex = _text(raw, "regex", required=True)
        try:
            rx = re.compile(regex)
        except re.error as exc:
            raise invalid("sequence.regex", regex, f"not a valid regular expression ({exc})") from None
        check(rx.groups >= 1, "sequence.regex", regex, "needs a capturing group for the sequence name, "
                                                       "e.g. '^(.+)_\\d+\\.exr$'")
        return "regex", regex
    check(raw in ("none", "folder"), "sequence", raw, "must be 'none' (still images), 'folder' (frames of a "
          "sequence share a folder) or {regex: PATTERN} (group 1 of the match on the relative path names the sequence)")
    return raw, None


def _parse_subsample(raw: Any, sequence: str) -> Subsample:
    if raw is None:
        return Subsample()
    check(sequence != "none", "subsample", raw, "applies to video sequences only; set 'sequence' or remove 'subsample'")
    check(isinstance(raw, dict), "subsample", raw, "must be a mapping with every, offset, max_frames")
    with context("subsample: "):
        return load(Subsample, raw)


def _parse_test(raw: Any, sequence: str) -> TestSplit:
    if raw is None:
        return TestSplit()
    check(isinstance(raw, dict) and bool(raw), "test", raw,
          "must be a mapping with files, globs and/or sequences (lists)")
    with context("test: "):
        check_keys(raw, [f.name for f in fields(TestSplit)])
        files = _str_list(raw, "files")
        for f in files:
            _relative_path("files", f, "bad path")
            check(not any(c in f for c in "*?["), "files", f, "is a pattern; move it to test.globs")
        globs = _str_list(raw, "globs")
        for g in globs:
            _relative_path("globs", g, "bad pattern")
        sequences = _str_list(raw, "sequences")
        check(not sequences or sequence != "none", "sequences", list(sequences),
              "needs a video dataset; set 'sequence' or use files/globs")
    return TestSplit(files, globs, sequences)


def parse_manifest(data: Any, source: str = "<manifest>") -> Manifest:
    """Schema-check a manifest already parsed from YAML; ``source`` names it in errors."""
    with context(f"{source}: ", ManifestError):
        if not isinstance(data, dict):
            raise ConfigError("the top level must be a mapping with 'version' and 'datasets'")
        check_keys(data, _TOP_KEYS)
        check(data.get("version") == MANIFEST_VERSION, "version", data.get("version"),
              f"must be {MANIFEST_VERSION} (the only manifest version)")
        raw = data.get("datasets")
        check(isinstance(raw, list) and bool(raw), "datasets", raw, "must be a non-empty list of datasets")
        datasets = tuple(_parse_dataset(i, r) for i, r in enumerate(raw))
        seen: dict[str, int] = {}
        for i, ds in enumerate(datasets):
            with context(f"datasets[{i}]: "):
                check(ds.name not in seen, "name", ds.name,
                      f"already used by datasets[{seen.get(ds.name)}]; names must be unique")
            seen[ds.name] = i
        return Manifest(datasets=datasets, version=MANIFEST_VERSION, description=_text(data, "description"),
                        source=source)


def load_manifest(path: str | Path) -> Manifest:
    """Load and schema-check a data manifest YAML file.

    Raises ManifestError (a ConfigError) naming the file, dataset, key, value and fix.
    """
    with context(f"{path}: ", ManifestError):
        data = read_yaml(path)
    return parse_manifest(data, str(path))
