"""What a sidecar may make the report read or link: files inside the output folder, nothing else.

A sidecar is data from disk, possibly hostile (a copied folder, a hand-edited file): its ``figure``
entry is a path the report would embed (read and base64-encode) or link. :func:`figure_link` is the
one gate every such path passes: it refuses URL schemes (``javascript:``, ``file:``, ``http:``),
absolute paths, NUL bytes and backslashes, and any path that — symbolic links resolved — leaves the
output folder (``../../etc/hostname``, a link to ``/etc/passwd``). What it returns is relative to
the output folder and percent-encoded for an ``href``/``src`` attribute (still to be HTML-escaped
by whoever writes the attribute).
"""

from __future__ import annotations

import logging
import os
import re
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import quote

from mrisr.errors import MrisrError

logger = logging.getLogger(__name__)

#: ``scheme:`` at the start of a link (RFC 3986), which would make it a URL rather than a file.
_SCHEME = re.compile(r"^[A-Za-z][A-Za-z0-9+.\-]*:")
#: Longest figure path accepted from a sidecar (characters).
MAX_LINK_CHARS = 1024


class UnsafeLinkError(MrisrError):
    """A path from a sidecar that the report refuses to read or link (``path`` is the sidecar)."""


@dataclass(frozen=True)
class FigureLink:
    """A figure a sidecar names, checked to lie inside the output folder.

    Attributes:
        file: The resolved file (inside the resolved output folder).
        rel: Its path relative to the output folder, POSIX separators (for CSV, JSON and display).
        href: ``rel`` percent-encoded: a relative URL for ``href``/``src`` attributes.
        exists: Whether it is a regular file now.
    """

    file: Path
    rel: str
    href: str
    exists: bool


def inside(root: Path, path: Path) -> Path | None:
    """``path`` with symbolic links resolved when that lies inside the resolved ``root``, else ``None``."""
    try:
        real_root, real = root.resolve(), path.resolve()
    except (OSError, RuntimeError):  # a symlink loop
        return None
    return real if real == real_root or real.is_relative_to(real_root) else None


def figure_link(out_dir: Path, sidecar: Path, value: object, *, what: str = "figure") -> FigureLink:
    """Check the ``figure`` entry ``value`` of ``sidecar`` (a file under ``out_dir``).

    Args:
        out_dir: The report's output folder: nothing outside it is read or linked.
        sidecar: The sidecar naming the figure (relative figure paths are taken from its folder).
        value: The sidecar's ``figure`` entry (or another file it names).
        what: What the entry is, for the messages (``figure``, ``mosaic``, ``output``...).

    Returns:
        The checked link (the file need not exist: ``exists`` says).

    Raises:
        UnsafeLinkError: Not a non-empty string, too long, a URL scheme, an absolute path, a NUL
            byte or backslash, or a path outside ``out_dir`` once symbolic links are resolved.
    """
    if not isinstance(value, str) or not value.strip():
        raise UnsafeLinkError(sidecar, f"{what} entry {type(value).__name__} is not a file name")
    shown = value if len(value) <= 80 else value[:77] + "..."
    if len(value) > MAX_LINK_CHARS:
        raise UnsafeLinkError(sidecar, f"{what} {shown!r} is longer than {MAX_LINK_CHARS} characters")
    if "\0" in value or "\\" in value:
        raise UnsafeLinkError(sidecar, f"{what} {shown!r} holds a NUL byte or backslash")
    if _SCHEME.match(value) or value.startswith("//"):
        raise UnsafeLinkError(sidecar, f"{what} {shown!r} is a URL, not a file of the output folder")
    if os.path.isabs(value):
        raise UnsafeLinkError(sidecar, f"{what} {shown!r} is an absolute path, not a file of the output folder")
    real = inside(out_dir, sidecar.parent / value)
    if real is None:
        raise UnsafeLinkError(sidecar, f"{what} {shown!r} lies outside the output folder {out_dir}")
    rel = real.relative_to(out_dir.resolve()).as_posix()
    return FigureLink(file=real, rel=rel, href=quote(rel), exists=real.is_file())


def sidecar_link(out_dir: Path, sidecar: Path, value: object, *, what: str) -> FigureLink | None:
    """:func:`figure_link` for any file a sidecar names: ``None`` (logged) when it is refused, and
    ``None`` silently when the entry is absent (``None`` or ``""``)."""
    if value is None or value == "":
        return None
    try:
        return figure_link(out_dir, sidecar, value, what=what)
    except UnsafeLinkError as exc:
        logger.warning("%s", exc)
        return None


def from_page(href: str, *, depth: int) -> str:
    """A link's ``href`` (relative to the output folder) as seen from a page ``depth`` folders below it."""
    return "../" * depth + href
