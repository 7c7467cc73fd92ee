"""Exception hierarchy of mrisr.

Every error raised for a user's input names the offending path, so that the CLI can print one line
per failed study (``path: reason``) and carry on with the rest of a batch.
"""

from __future__ import annotations

import re
from pathlib import Path

#: ``np.float64(1.5)``, ``np.int64(3)``: how NumPy 2 writes its scalars inside lists and tuples.
_NUMPY_SCALAR = re.compile(r"\bnp\.(?:float|int|uint|bool|longdouble|double|single|half)\w*\(([^()]*)\)")


def plain_numbers(text: str) -> str:
    """``text`` with NumPy scalar reprs written as plain numbers (``np.float64(0.30000000000000004)``
    becomes ``0.3``: six significant digits; integers as they are)."""

    def plain(m: re.Match[str]) -> str:
        inner = m.group(1).strip()
        try:
            value = float(inner)
        except ValueError:
            return inner
        return inner if inner.lstrip("-").isdigit() else f"{value:.6g}"

    return _NUMPY_SCALAR.sub(plain, text)


#: Characters that would break or corrupt a line of output: C0/C1 controls (newline, carriage return,
#: escape sequences), Unicode line and paragraph separators, and lone surrogates (bytes of a file
#: name that are not UTF-8, as Python keeps them; they cannot be written to a UTF-8 stream).
_UNPRINTABLE = re.compile("[\x00-\x1f\x7f-\x9f\u2028\u2029\ud800-\udfff]")


def printable(text: str) -> str:
    """``text`` as one printable line: every control character, line separator and lone surrogate
    written as its Python escape (a newline in a file name as ``\\n``, ESC as ``\\x1b``, an
    undecodable byte as ``\\udcff``). Nothing else changes; a line already printable is returned as is."""
    return _UNPRINTABLE.sub(lambda m: m.group().encode("unicode_escape", "backslashreplace").decode("ascii"), text)


class MrisrError(Exception):
    """Base class of all mrisr errors.

    Args:
        path: The file or folder the error is about (``None`` when it is about no file).
        reason: A short human-readable reason, one line.
    """

    def __init__(self, path: str | Path | None, reason: str) -> None:
        self.path = None if path is None else Path(path)
        self.reason = plain_numbers(" ".join(str(reason).split()))
        super().__init__(f"{self.path}: {self.reason}" if self.path is not None else self.reason)


class UnreadableFileError(MrisrError):
    """A file exists but cannot be read or decoded (truncated, corrupt, wrong format, no permission)."""


class UnsupportedDataError(MrisrError):
    """The file is readable but holds data mrisr does not process (non-image DICOM, 5D, RGB, NaN ...)."""


class InconsistentGeometryError(MrisrError):
    """A series whose slices do not form one regular grid (missing slice, uneven spacing, ...)."""


class CheckpointError(MrisrError):
    """A checkpoint file that is corrupt, truncated, foreign, or incompatible with the request."""


class OutputExistsError(MrisrError):
    """An output exists and ``overwrite`` was not requested."""


class OutputBlockedError(MrisrError):
    """Something mrisr does not write stands at an output's path (a folder where a NIfTI file goes,
    a file where a DICOM series folder goes): it is left alone and the study fails."""


class OutputWriteError(MrisrError):
    """An output could not be written (a full disk, a quota, a read-only folder): ``path`` is the
    output's final path, never the input's."""


class NonFiniteOutputError(MrisrError):
    """The network gave NaN or infinite values for a study (overflowing weights, a broken checkpoint);
    ``path`` is the checkpoint, the study is named by whoever processes it."""
