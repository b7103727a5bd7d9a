"""One loader for hdrprep's frozen config dataclasses (build presets, cluster presets, trainer options).

:func:`load` turns a nested mapping (usually YAML) into a dataclass, driven by the
field annotations: ``bool``, ``int``, ``float``, ``str`` (non-empty), ``X | None``,
``Literal[...]``, ``tuple[str, ...]`` (from a list), :data:`ByteSize` and nested
dataclasses (from a mapping). A ``null`` value means ``None`` for an optional field,
``()`` for a list and the defaults for a nested section; elsewhere it is an error.
Field metadata, written with :func:`setting`, adds a lower bound (``min``), the fix
to print instead of the generic one (``fix``), misspellings people reach for
(``aliases``) and the help text the CLI shows (``help``).

Every failure is a :class:`~hdrprep.errors.ConfigError` whose message names the
dotted key, the value and the fix; :func:`context` prefixes it with the file.
Range checks that involve several fields stay in the dataclasses'
``__post_init__`` and report through :func:`check`.
"""

from __future__ import annotations

import dataclasses
import difflib
import functools
import numbers
import types
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import MISSING, Field
from pathlib import Path
from typing import (
    Annotated,
    Any,
    Literal,
    TypeVar,
    Union,
    get_args,
    get_origin,
    get_type_hints,
)

from hdrprep.errors import ConfigError

__all__ = ["ByteSize", "check", "check_keys", "context", "invalid", "load", "override", "read_yaml", "setting"]

T = TypeVar("T")


class _Bytes:
    """Marker of :data:`ByteSize`."""


#: A ``str`` field holding a byte size such as ``"16GB"`` (checked with ``dask.utils.parse_bytes``).
ByteSize = Annotated[str, _Bytes]


def setting(default: Any = MISSING, help: str = "", *, min: float | None = None, fix: str | None = None,
            aliases: Sequence[str] = (), **extra: Any) -> Any:
    """A dataclass field with the metadata :func:`load` and the CLI read.

    Parameters
    ----------
    default : optional
        The default; omitted = a required key.
    help : str
        One sentence for ``--help`` and the reader of the class.
    min : number, optional
        Inclusive lower bound of an ``int`` or ``float`` field.
    fix : str, optional
        What to tell the user when the value is refused, instead of the generic fix.
    aliases : sequence of str
        Keys people write for this one; an unknown key among them gets "use '<field>'".
    **extra
        Further metadata for other readers (e.g. ``runtime=True`` of the trainer options).
    """
    return dataclasses.field(default=default, metadata={"help": help, "min": min, "fix": fix,
                                                        "aliases": tuple(aliases), **extra})


def invalid(key: str, value: Any, fix: str) -> ConfigError:
    """The error for a refused value: ``invalid value V for 'KEY': FIX``."""
    return ConfigError(f"invalid value {value!r} for '{key}': {fix}")


def check(ok: bool, key: str, value: Any, fix: str) -> None:
    """Raise :func:`invalid` unless ``ok``; for the range checks in ``__post_init__``."""
    if not ok:
        raise invalid(key, value, fix)


def check_keys(data: Mapping, known: Sequence[str], prefix: str = "",
               aliases: Mapping[str, str] | None = None) -> None:
    """Refuse the first key of ``data`` not in ``known``, suggesting the key that was probably meant.

    Parameters
    ----------
    data : Mapping
        The mapping read from the file.
    known : sequence of str
        The allowed keys, in the order the message lists them.
    prefix : str
        Dotted path of ``data`` (``"camera."``), put before the key in the message.
    aliases : Mapping, optional
        Unknown key -> the known key to use instead.
    """
    for key, value in data.items():
        if key in known:
            continue
        name = str(key)
        close = difflib.get_close_matches(name, list(known), n=1)
        if aliases and name in aliases:
            hint = f"use '{prefix}{aliases[name]}'"
        elif close:
            hint = f"did you mean '{prefix}{close[0]}'?"
        else:
            hint = "remove it or use one of the known keys"
        raise ConfigError(f"unknown key '{prefix}{name}' = {value!r}; {hint} (allowed keys: {', '.join(known)})")


@contextmanager
def context(prefix: str, error: type[ConfigError] = ConfigError) -> Iterator[None]:
    """Re-raise a ConfigError raised inside as ``error`` with ``prefix`` before its message.

    Used to name the file (``preset pipelines/x.yaml: ``) or the part of it (``dataset 'a': ``).
    """
    try:
        yield
    except ConfigError as exc:
        raise error(f"{prefix}{exc}") from exc


def read_yaml(path: str | Path) -> Any:
    """Parse a YAML file safely (no Python object tags); ConfigError if unreadable or not YAML."""
    import yaml

    try:
        text = Path(path).read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(f"cannot read it ({exc.strerror or exc})") from exc
    except UnicodeDecodeError as exc:
        raise ConfigError(f"cannot read it as UTF-8 text ({exc})") from exc
    try:
        return yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise ConfigError(f"not valid YAML ({exc})") from exc


@functools.cache
def _fields(cls: type) -> tuple[tuple[Field, Any], ...]:
    hints = get_type_hints(cls, include_extras=True)
    return tuple((f, hints[f.name]) for f in dataclasses.fields(cls) if f.init)


def load(cls: type[T], data: Any, prefix: str = "") -> T:
    """Build the frozen dataclass ``cls`` from a nested mapping, checking keys and types.

    Parameters
    ----------
    cls : dataclass type
        Its field annotations decide how each value is checked and converted.
    data : Mapping
        Keys = field names; absent keys take the field's default.
    prefix : str
        Dotted path of ``data`` inside a larger mapping, for the messages.

    Returns
    -------
    cls
        The instance (its ``__post_init__`` ran its own range checks).

    Raises
    ------
    ConfigError
        ``data`` is not a mapping, a key is unknown or a required one missing, or a
        value has the wrong type or is below the field's ``min``.
    """
    spec = _fields(cls)
    names = [f.name for f, _ in spec]
    if not isinstance(data, Mapping):
        if prefix:
            raise invalid(prefix[:-1], data, f"use a mapping of keys ({', '.join(names)})")
        raise ConfigError(f"expected a mapping of keys ({', '.join(names)}), got {type(data).__name__}")
    check_keys(data, names, prefix, {a: f.name for f, _ in spec for a in f.metadata.get("aliases", ())})
    kwargs = {}
    for f, hint in spec:
        if f.name in data:
            kwargs[f.name] = _coerce(hint, data[f.name], prefix + f.name, f.metadata)
        elif f.default is MISSING and f.default_factory is MISSING:
            raise ConfigError(f"missing required key '{prefix}{f.name}'")
    return cls(**kwargs)


def override(obj: T, changes: Mapping[str, Any]) -> T:
    """A copy of the dataclass ``obj`` with dotted keys replaced, checked as by :func:`load`.

    ``None`` values are skipped, so that options that were not given pass through.
    """
    data = dataclasses.asdict(obj)
    for key, value in changes.items():
        if value is None:
            continue
        *parents, leaf = key.split(".")
        node = data
        for part in parents:
            node = node.setdefault(part, {})  # an unknown section: load() names it
            if not isinstance(node, dict):
                raise ConfigError(f"unknown key '{key}': '{part}' is a value, not a section")
        node[leaf] = value
    return load(type(obj), data)


def _coerce(hint: Any, value: Any, key: str, meta: Mapping) -> Any:
    fix = meta.get("fix")
    origin, args = get_origin(hint), get_args(hint)
    if origin is Annotated and _Bytes in args[1:]:
        return _byte_size(value, key, fix)
    if origin is Literal:
        check(value in args, key, value, fix or f"use one of {', '.join(map(str, args))}")
        return value
    if origin in (Union, types.UnionType):
        inner = [a for a in args if a is not type(None)]
        if len(inner) != 1 or len(args) != 2:
            raise TypeError(f"{key}: the loader reads X | None unions only, not {hint}")
        return None if value is None else _coerce(inner[0], value, key, meta)
    if dataclasses.is_dataclass(hint):
        return load(hint, {} if value is None else value, key + ".")
    if origin is tuple:
        if args[1:] != (...,) or args[0] is not str:
            raise TypeError(f"{key}: the loader reads tuple[str, ...] only, not {hint}")
        if value is None:
            return ()
        check(isinstance(value, (list, tuple)) and all(isinstance(v, str) and v.strip() for v in value),
              key, value, fix or "use a list of strings")
        return tuple(value)
    if hint is bool:
        check(isinstance(value, bool), key, value, fix or "use true or false")
        return value
    if hint is str:
        check(isinstance(value, str) and bool(value.strip()), key, value, fix or "use a non-empty string")
        return value
    if hint is int or hint is float:
        kind, what = (numbers.Integral, "an integer") if hint is int else (numbers.Real, "a number")
        low = meta.get("min")
        fix = fix or (f"use {what} >= {low}" if low is not None else f"use {what}")
        check(isinstance(value, kind) and not isinstance(value, bool), key, value, fix)
        value = hint(value)
        check(low is None or value >= low, key, value, fix)
        return value
    raise TypeError(f"{key}: the loader cannot read a field of type {hint}")


def _byte_size(value: Any, key: str, fix: str | None) -> str:
    # dask is a dependency of the build, not of loading a config: imported only here
    from dask.utils import parse_bytes

    fix = fix or "use a size with a unit, e.g. '16GB'"
    check(isinstance(value, (str, int)) and not isinstance(value, bool) and str(value).strip() != "", key, value,
          fix)
    try:
        parse_bytes(value)
    except (ValueError, TypeError):
        raise invalid(key, value, fix) from None
    return str(value)
