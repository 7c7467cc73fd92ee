"""File-system helpers: atomic writes and content hashes.

Every file mrisr writes goes through :func:`atomic_path`: it is written under a hidden temporary name
in the target folder and renamed into place only when complete, so no partial file ever stands at a
final path, whatever kills the process.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import math
import os
import shutil
import socket
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from mrisr import faults

TMP_MARK = ".mrisr-tmp-"


def host_tag() -> str:
    """Eight hex digits naming this host in temporary names (a pid means something only on its host)."""
    return hashlib.sha1(socket.gethostname().encode()).hexdigest()[:8]


#: Longest file name, in bytes, that the file systems mrisr writes to take (NAME_MAX of ext4, XFS,
#: Btrfs, NFS, Lustre, GPFS).
NAME_MAX = 255
#: Longest extension a temporary keeps (``.nii.gz``, ``.json``, ``.png``); a longer "extension" (the
#: tail of a name with dots, e.g. a DICOM series folder ``a.b_sr``) is not one.
_MAX_SUFFIX = 8
#: Bytes after the stem of a temporary at most: the mark, a pid of up to 10 digits, the host tag, 8
#: random digits, the separators and the extension.
_MAX_TAIL = len(TMP_MARK) + 10 + 1 + 8 + 1 + 8 + _MAX_SUFFIX
#: Longest stem (``.<name>``) kept as it is: room for a temporary *of a temporary* (the atomic write of
#: a staged file) within :data:`NAME_MAX`, so that only first-level names are ever shortened.
_MAX_STEM = NAME_MAX - 1 - 2 * _MAX_TAIL


def _nbytes(text: str) -> int:
    return len(os.fsencode(text))


def temp_stem(name: str) -> str:
    """The part of the temporaries of ``name`` before :data:`TMP_MARK`: ``.<name>``, or, when that would
    leave a temporary longer than :data:`NAME_MAX` bytes, ``.<start of name>~<hash of name>``: the
    start cut at a character boundary, the hash (16 hex digits of SHA-1) telling apart names that
    share their start. The same for every writer of ``name``, so :func:`remove_temporaries` finds them.
    A temporary's own name (whose stem left room for this) is kept whenever its temporary fits."""
    is_temporary = name.startswith(".") and TMP_MARK in name
    if 1 + _nbytes(name) <= (NAME_MAX - _MAX_TAIL if is_temporary else _MAX_STEM):
        return f".{name}"
    digest = "~" + hashlib.sha1(os.fsencode(name)).hexdigest()[:16]
    cut = name
    while 1 + _nbytes(cut) + len(digest) > _MAX_STEM:
        cut = cut[: max(0, len(cut) - max(1, (1 + _nbytes(cut) + len(digest) - _MAX_STEM) // 4))]
    return f".{cut}{digest}"


def temp_sibling(path: Path) -> Path:
    """A unique hidden temporary name beside ``path`` that keeps its (possibly double) extension:
    ``<stem>.mrisr-tmp-<pid>-<host>-<random><suffix>``, ``<stem>`` from :func:`temp_stem` (``.<name>``,
    shortened for a long name: the temporary stays within :data:`NAME_MAX` bytes, also a temporary of
    this temporary)."""
    name = path.name
    suffix = "".join(path.suffixes[-2:]) if name.endswith(".nii.gz") else path.suffix
    if _nbytes(suffix) > _MAX_SUFFIX:
        suffix = ""
    return path.with_name(f"{temp_stem(name)}{TMP_MARK}{os.getpid()}-{host_tag()}-{uuid.uuid4().hex[:8]}{suffix}")


def pid_alive(pid: int) -> bool:
    """Whether process ``pid`` runs on this host (``True`` when it exists but belongs to another user)."""
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except (ProcessLookupError, OverflowError):
        return False
    except PermissionError:
        return True
    return True


#: A temporary of another host (whose process cannot be checked) is left alone this long.
FOREIGN_TMP_AFTER_S = 3600.0


def remove_temporaries(target: Path, *, all_of_them: bool = True) -> list[Path]:
    """Remove the temporaries of ``target`` that killed writers left (``.<name>.mrisr-tmp-*``).

    Names are compared as strings, not as glob patterns (a name may hold ``[``, ``*`` or ``?``). The
    temporary of a temporary (``..<name>.mrisr-tmp-*.mrisr-tmp-*``: a writer's own atomic write of a
    staged file) counts too, and so do both forms of a long name's temporaries: the shortened one of
    :func:`temp_stem` and the full ``.<name>.mrisr-tmp-*`` that earlier versions wrote where it fit.

    Args:
        target: The final path whose temporaries to remove.
        all_of_them: Remove every one (the caller holds the lock that keeps other writers away);
            ``False`` removes only those whose process is gone (this host) or that are older than
            :data:`FOREIGN_TMP_AFTER_S` (another host, or a name without pid): for a file that
            several processes may be writing at once.

    Returns:
        The paths removed.
    """
    stems = dict.fromkeys((temp_stem(target.name), f".{target.name}"))  # shortened (if so), then full

    def bare_of(n: str) -> str | None:
        """The ``<stem minus its leading dot>.mrisr-tmp-`` that temporary ``n`` starts with, if any
        (after one or more leading dots: a temporary of a temporary has more)."""
        for stem in stems:
            dots = len(stem) - len(stem.lstrip("."))
            bare = stem.lstrip(".") + TMP_MARK
            if len(n) - len(n.lstrip(".")) >= dots and n.lstrip(".").startswith(bare):
                return bare
        return None

    try:
        names = [(n, bare) for n in os.listdir(target.parent) if (bare := bare_of(n)) is not None]
    except OSError:
        return []
    removed = []
    for name, bare in names:
        tmp = target.parent / name
        if not all_of_them:
            pid, _, rest = name.lstrip(".")[len(bare) :].partition("-")
            ours = pid.isdigit() and rest.startswith(host_tag() + "-")
            try:
                old = time.time() - tmp.lstat().st_mtime > FOREIGN_TMP_AFTER_S
            except FileNotFoundError:
                continue
            if not (old or (ours and not pid_alive(int(pid)))):
                continue
        remove_path(tmp)
        removed.append(tmp)
    return removed


@contextlib.contextmanager
def atomic_path(path: str | Path) -> Iterator[Path]:
    """Yield a temporary path to write; rename it onto ``path`` on success, remove it on failure.

    Works for files and for folders (a DICOM series): an existing folder at ``path`` is replaced.
    """
    final = Path(path)
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = temp_sibling(final)
    try:
        yield tmp
        faults.point("atomic.before-rename")
        if tmp.is_dir():
            if final.exists():
                old = temp_sibling(final)
                final.rename(old)
                faults.point("atomic.between-renames")
                tmp.rename(final)
                shutil.rmtree(old, ignore_errors=True)
            else:
                tmp.rename(final)
        else:
            os.replace(tmp, final)
        faults.point("atomic.after-rename")
    except BaseException:
        remove_path(tmp)
        raise


def check_writable_folder(folder: str | Path) -> None:
    """Create ``folder`` if needed and check that files can be created in it (a probe file is made
    and removed: permission bits say nothing on a read-only mount or for root).

    Raises:
        OSError: Not a folder, cannot be created, or read-only.
    """
    p = Path(folder)
    p.mkdir(parents=True, exist_ok=True)
    probe = p / f".mrisr-probe-{os.getpid()}-{uuid.uuid4().hex[:8]}"
    fd = os.open(probe, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o600)
    os.close(fd)
    probe.unlink()


def missing_folders(folder: str | Path) -> list[Path]:
    """The folders that creating ``folder`` (with its parents) would make: ``folder`` and its missing
    ancestors, deepest first (empty when it exists). For :func:`remove_if_empty` after a failure."""
    p, missing = Path(folder), []
    while not p.exists() and p != p.parent:
        missing.append(p)
        p = p.parent
    return missing


def remove_if_empty(folders: list[Path]) -> None:
    """Remove ``folders`` (deepest first, as :func:`missing_folders` lists them) while they are empty:
    what a command created and then wrote nothing into."""
    for p in folders:
        try:
            p.rmdir()
        except OSError:  # not empty (something was written), or gone
            return


def remove_path(path: Path) -> None:
    """Remove a file or a folder if it exists."""
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, ignore_errors=True)
    else:
        with contextlib.suppress(FileNotFoundError):
            path.unlink()


def write_text_atomic(path: str | Path, text: str) -> None:
    """Write a text file atomically (fsynced before the rename)."""
    with atomic_path(path) as tmp, open(tmp, "w", encoding="utf-8") as fh:
        fh.write(text)
        fh.flush()
        os.fsync(fh.fileno())


def _strict(obj: Any) -> Any:
    """``obj`` with non-finite floats (NaN, ±inf) replaced by ``None``, recursively."""
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, dict):
        return {k: _strict(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [_strict(v) for v in obj]
    return obj


def write_json_atomic(path: str | Path, obj: Any) -> None:
    """Write ``obj`` as indented, strict JSON atomically: NaN and ±inf (an empty mask's metrics, the
    PSNR of identical volumes) are written as ``null``, which every JSON reader accepts."""
    text = json.dumps(_strict(obj), indent=2, sort_keys=False, default=str, allow_nan=False)
    write_text_atomic(path, text + "\n")


def sha256_file(path: str | Path, chunk: int = 1 << 20) -> str:
    """Hex SHA-256 of a file's bytes, or of all files of a folder in sorted order."""
    p = Path(path)
    h = hashlib.sha256()
    files = sorted(f for f in p.rglob("*") if f.is_file()) if p.is_dir() else [p]
    for f in files:
        if p.is_dir():
            h.update(str(f.relative_to(p)).encode())
        with open(f, "rb") as fh:
            while block := fh.read(chunk):
                h.update(block)
    return h.hexdigest()


def sha256_files(files: list[Path] | tuple[Path, ...]) -> str:
    """Hex SHA-256 over the bytes of several files in the order given (one file: its own hash)."""
    if len(files) == 1:
        return sha256_file(files[0])
    h = hashlib.sha256()
    for f in files:
        h.update(Path(f).name.encode())
        with open(f, "rb") as fh:
            while block := fh.read(1 << 20):
                h.update(block)
    return h.hexdigest()
