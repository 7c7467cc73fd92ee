"""Per-study locks in the output folder, safe between processes and hosts.

Before a study is processed, ``.<id>.lock`` is created in the output folder holding
``host pid nonce``: written under a temporary name and hard-linked into place, which fails when the
lock exists (atomic on local and NFSv3+ file systems; where hard links are not supported,
``O_CREAT | O_EXCL`` and a write). The holder removes it when done.

A lock is *stale* when its holder is gone: a process that no longer runs on this host, a lock from
another host older than ``stale_after`` (default 24 h), a lock file left empty by a kill between its
creation and its write (only without hard links). Anything else — a live process, another host's
recent lock, a file that is not a lock mrisr wrote — holds the study, and :func:`study_lock` says who.

Taking over a stale lock is atomic. A takeover first creates, exclusively, a *claim* named after the
stale lock (a hash of its inode and text; every lock's text holds a nonce): of all processes that
found the same stale lock, one gets the claim, the others look again a moment later. The claim's
owner checks that the lock is still the one it judged (nobody else may remove it while the claim
stands), renames it to a unique name and deletes it, then competes for a new lock by the same
exclusive link as everyone. So two processes that find one stale lock at the same instant never
both hold it (``tests/test_faults.py`` races four real processes 40 times, with and without a widened
window). A claim left by a process killed mid-takeover is abandoned after
:data:`CLAIM_ABANDONED_S`. The one case not covered: a lock of *another host* judged stale by its age
whose (live) holder releases it, and a new lock is made, in the microseconds between the check and
the rename.
"""

from __future__ import annotations

import contextlib
import datetime as _dt
import errno
import hashlib
import logging
import os
import socket
import stat
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from mrisr import faults
from mrisr.errors import MrisrError
from mrisr.fsutil import host_tag, pid_alive

log = logging.getLogger(__name__)

STALE_AFTER_S = 24 * 3600.0
#: How long an empty lock file may wait for its holder to write its host and pid.
EMPTY_LOCK_GRACE_S = 0.5
#: Leftovers of a killed locker (its temporary or a moved stale lock) are removed once their process
#: is gone (same host) or after this long (another host).
LEFTOVER_AFTER_S = 3600.0
#: A takeover claim older than this was abandoned by a killed process (a takeover takes microseconds).
CLAIM_ABANDONED_S = 10.0
_ATTEMPTS = 200


class LockError(MrisrError):
    """Lock files cannot be created in the output folder (read-only, no permission, full)."""


@dataclass(frozen=True)
class StudyLock:
    """The outcome of trying to lock a study: true when this process holds the lock.

    Attributes:
        acquired: This process holds the lock.
        path: The lock file.
        holder: Who holds it when not acquired (``"process 123 on host node7 since ..."``,
            ``"an unreadable lock file ('...')"``); empty when acquired.
    """

    acquired: bool
    path: Path
    holder: str = ""

    def __bool__(self) -> bool:
        return self.acquired


def lock_path(out_dir: Path, study_id: str) -> Path:
    """Where the lock of a study lives."""
    return out_dir / f".{study_id}.lock"


#: What :func:`_read` gives for a lock path that is no regular file (a FIFO, a device: never read).
_NOT_A_FILE = "\0not a regular file"


def _read(path: Path) -> tuple[str, int] | None:
    """The lock's text and inode number, ``None`` when it is gone. A FIFO or device standing there is
    opened without blocking and not read (a FIFO would block the run forever)."""
    try:
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0))
    except FileNotFoundError:
        return None
    try:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode):
            return _NOT_A_FILE, info.st_ino
        return os.read(fd, 4096).decode("utf-8", "replace"), info.st_ino
    finally:
        os.close(fd)


def _judge(path: Path, text: str, stale_after: float) -> tuple[bool, str]:
    """``(stale, who holds it)`` for a lock whose content is ``text``."""
    try:
        mtime = path.stat().st_mtime
    except FileNotFoundError:
        return True, "nobody (it is gone)"
    since = _dt.datetime.fromtimestamp(mtime).isoformat(sep=" ", timespec="seconds")
    age = time.time() - mtime
    if text == _NOT_A_FILE:
        return False, "a FIFO or device, not a lock file of mrisr (it is left alone)"
    words = text.split()
    if not words:
        return True, "an empty lock file (its holder was killed before writing it)"
    if len(words) >= 2 and words[1].isdigit():
        host, pid = words[0], int(words[1])
        if host == socket.gethostname():
            return not pid_alive(pid), f"process {pid} on this host ({host}) since {since}"
        return age > stale_after, f"process {pid} on host {host} since {since}"
    shown = " ".join(text.split())[:60]
    return age > stale_after, f"an unreadable lock file ({shown!r}, since {since}; not written by mrisr?)"


def _create(path: Path, text: str) -> bool:
    """Create ``path`` holding ``text`` unless it exists (``False`` then).

    Raises:
        OSError: Anything but the lock existing (read-only folder, no permission).
    """
    tmp = path.with_name(f"{path.name}.new-{host_tag()}-{os.getpid()}-{uuid.uuid4().hex[:8]}")
    fd = os.open(tmp, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
    try:
        with os.fdopen(fd, "w") as fh:
            fh.write(text)
        faults.point("lock.before-link")
        try:
            os.link(tmp, path)
            return True
        except FileExistsError:
            return False
        except OSError as exc:
            if exc.errno not in (errno.EPERM, errno.ENOTSUP, errno.EOPNOTSUPP, errno.EXDEV, errno.EMLINK):
                raise
        # No hard links here (some FUSE or SMB mounts): exclusive create, then write.
        try:
            fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
        except FileExistsError:
            return False
        faults.point("lock.created-empty")
        with os.fdopen(fd, "w") as fh:
            fh.write(text)
        return True
    finally:
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()


def _take_over(path: Path, judged: tuple[str, int]) -> None:
    """Remove the stale lock ``judged`` (its text and inode) — and no other lock — atomically.

    One claim per stale lock, made exclusively, decides who removes it; its owner checks that the
    lock is still the one judged (nobody else can remove it while the claim exists) and moves it
    away. Losers return at once and look again (the lock is then gone or new).
    """
    text, ino = judged
    key = hashlib.sha1(f"{ino}:{text}".encode()).hexdigest()[:16]
    claim = path.with_name(f"{path.name}.claim-{key}")
    try:
        fd = os.open(claim, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
    except FileExistsError:
        if _abandoned(claim):  # its owner was killed in the microseconds a takeover takes
            with contextlib.suppress(FileNotFoundError):
                claim.unlink()
        else:
            time.sleep(0.01)  # another process is taking it over right now
        return
    try:
        os.write(fd, f"{socket.gethostname()} {os.getpid()}\n".encode())
        os.close(fd)
        faults.point("lock.claimed")
        if _read(path) != judged:
            return  # released, or taken over and re-created, since it was judged
        grave = path.with_name(f"{path.name}.stale-{host_tag()}-{os.getpid()}-{uuid.uuid4().hex[:8]}")
        os.rename(path, grave)
        faults.point("lock.moved-stale")
        grave.unlink()
    finally:
        with contextlib.suppress(FileNotFoundError):
            claim.unlink()


def _abandoned(claim: Path) -> bool:
    """Whether a takeover claim's owner is gone (a dead process of this host), or it is too old."""
    try:
        words = claim.read_text(errors="replace").split()
        age = time.time() - claim.stat().st_mtime
    except FileNotFoundError:
        return False
    if len(words) == 2 and words[0] == socket.gethostname() and words[1].isdigit():
        return not pid_alive(int(words[1]))
    return age > CLAIM_ABANDONED_S


def _sweep(path: Path) -> None:
    """Remove what killed lockers of this study left: their temporaries and moved stale locks."""
    tag = host_tag()
    try:
        names = os.listdir(path.parent)
    except OSError:
        return
    for name in names:
        if name.startswith(path.name + ".claim-"):
            claim = path.with_name(name)
            if _abandoned(claim):
                with contextlib.suppress(FileNotFoundError):
                    claim.unlink()
            continue
        prefix = next((path.name + k for k in (".new-", ".stale-") if name.startswith(path.name + k)), None)
        if prefix is None:
            continue
        rest = name[len(prefix) :]
        parts = rest.split("-")
        leftover = path.with_name(name)
        try:
            age = time.time() - leftover.stat().st_mtime
        except FileNotFoundError:
            continue
        mine = len(parts) == 3 and parts[0] == tag and parts[1].isdigit()
        gone = mine and not pid_alive(int(parts[1]))
        if gone or age > LEFTOVER_AFTER_S:
            with contextlib.suppress(FileNotFoundError):
                leftover.unlink()


@contextlib.contextmanager
def study_lock(out_dir: Path, study_id: str, *, stale_after: float = STALE_AFTER_S) -> Iterator[StudyLock]:
    """Hold the study's lock for the ``with`` block.

    Yields:
        A :class:`StudyLock`, false (holding nothing, naming the holder) when another holder has it.

    Raises:
        LockError: The lock file cannot be created (read-only output folder, no permission).
    """
    path = lock_path(out_dir, study_id)
    text = f"{socket.gethostname()} {os.getpid()} {uuid.uuid4().hex}\n"
    state = StudyLock(False, path, "another process")
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
        for _ in range(_ATTEMPTS):
            if _create(path, text):
                state = StudyLock(True, path)
                break
            faults.point("lock.exists")
            held = _read(path)
            if held is None:
                continue  # released meanwhile
            if not held[0].strip():
                time.sleep(EMPTY_LOCK_GRACE_S)  # its holder may be writing it (no hard links)
                if _read(path) != held:
                    continue
            stale, who = _judge(path, held[0], stale_after)
            if not stale:
                state = StudyLock(False, path, who)
                break
            faults.point("lock.judged-stale")
            log.info("taking over stale lock %s of %s", path, who)
            _take_over(path, held)
    except OSError as exc:
        raise LockError(out_dir, f"cannot create the lock file {path.name} ({exc.strerror or exc})") from exc
    if state.acquired:
        _sweep(path)
        faults.point("lock.acquired")
    try:
        yield state
    finally:
        if state.acquired:
            faults.point("lock.before-release")
            now = _read(path)
            if now is not None and now[0] == text:  # still ours (not taken over as stale by someone who judged wrongly)
                with contextlib.suppress(FileNotFoundError):
                    path.unlink()
