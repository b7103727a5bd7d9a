"""Exception types of hdrprep.

Every error a user can cause derives from :class:`HdrprepError` and carries a
message that names the file or key, the offending value and the fix.
"""


class HdrprepError(Exception):
    """Base class of all errors raised on purpose by hdrprep."""


class ConfigError(HdrprepError, ValueError):
    """A configuration key, flag or preset is invalid."""


class BadFrameError(HdrprepError):
    """An HDR frame cannot be used; the build skips it and reports ``reason``.

    Parameters
    ----------
    path : str
        The offending file.
    reason : str
        Short machine-friendly reason code, e.g. ``"truncated"``, ``"nonfinite"``.
    detail : str
        Human explanation with the value and the fix.
    """

    def __init__(self, path, reason, detail=""):
        self.path = str(path)
        self.reason = reason
        self.detail = detail
        super().__init__(f"{self.path}: {reason}" + (f" ({detail})" if detail else ""))


class StoreError(HdrprepError):
    """An output store is missing, foreign, stale or corrupted."""
