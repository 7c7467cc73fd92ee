"""Listing the files under a folder: sorted, bounded in depth, safe with links and special files.

Used by :func:`mrisr.discovery.find_studies` and by :func:`mrisr.io.read_volume` for a DICOM folder,
so that both see the same files.
"""

from __future__ import annotations

import logging
import os
import stat
from collections.abc import Iterable
from pathlib import Path

from mrisr.io import is_nifti_path
from mrisr.io.formats import itk_format

log = logging.getLogger(__name__)

#: Folder levels searched below an input folder.
DEFAULT_MAX_DEPTH = 12


def walk_files(
    root: Path,
    *,
    max_depth: int = DEFAULT_MAX_DEPTH,
    problems: list[tuple[Path, str]] | None = None,
    skip: frozenset[Path] = frozenset(),
) -> Iterable[Path]:
    """Files under ``root`` in sorted order.

    Symbolic links to files are followed wherever they point; links to folders outside ``root`` and
    loops are not followed, nor folders in ``skip`` (resolved paths), nor hidden entries (names
    starting with ``.``). Special files (FIFOs, devices, sockets) are named in a warning and never
    opened. Folders that cannot be listed and broken links are added to ``problems`` (a missing file
    must not go unnoticed: it may be a slice of a series); logged when ``problems`` is ``None``.

    Args:
        root: The folder to search.
        max_depth: Folder levels to descend below ``root``.
        problems: Collects ``(path, reason)`` for what could not be searched.
        skip: Resolved folders not to descend into.
    """
    real_root = root.resolve()
    seen: set[Path] = set()

    def problem(path: Path, why: str) -> None:
        if problems is None:
            log.warning("not searched: %s: %s", path, why)
        else:
            problems.append((path, why))

    def visit(folder: Path, depth: int) -> Iterable[Path]:
        real = folder.resolve()
        if real in skip:
            log.info("skipping %s: the output folder", folder)
            return
        if real in seen:
            log.info("skipping %s: symlink loop", folder)
            return
        seen.add(real)
        try:
            entries = sorted(os.scandir(folder), key=lambda e: e.name)
        except OSError as exc:
            problem(folder, f"cannot list the folder ({exc.strerror or exc})")
            return
        for entry in entries:
            p = Path(entry.path)
            if entry.name.startswith("."):
                if is_nifti_path(p) or itk_format(p) is not None or entry.name.lower().endswith(".dcm"):
                    log.warning("not searched: %s is hidden (a name starting with '.'); rename it to use it", p)
                else:
                    log.debug("skipping hidden %s", p)
                continue
            if entry.is_symlink():
                try:
                    target = p.resolve(strict=True)
                except (OSError, RuntimeError):
                    problem(p, "broken symbolic link (its target does not exist or loops)")
                    continue
                if target.is_dir() and not target.is_relative_to(real_root):
                    log.warning("not searching %s: a link to a folder outside %s", p, root)
                    continue
            if entry.is_dir():
                if depth >= max_depth:
                    log.warning(
                        "not searched: %s is more than %d folder levels below %s (the depth cap; "
                        "give that folder as an input to search it)",
                        p,
                        max_depth,
                        root,
                    )
                    continue
                yield from visit(p, depth + 1)
            elif entry.is_file():
                yield p
            else:  # never opened: reading a FIFO would block the batch
                log.warning("not searched: %s is %s, not a regular file", p, path_kind(p))

    yield from visit(root, 0)


def path_kind(path: Path) -> str:
    """What a path that is neither a folder nor a regular file is (``stat``, never ``open``)."""
    try:
        mode = path.stat().st_mode
    except OSError:
        return "unreadable"
    for test, name in (
        (stat.S_ISFIFO, "a FIFO (named pipe)"),
        (stat.S_ISCHR, "a character device"),
        (stat.S_ISBLK, "a block device"),
        (stat.S_ISSOCK, "a socket"),
    ):
        if test(mode):
            return name + (" (through a symbolic link)" if path.is_symlink() else "")
    return "not a regular file"
