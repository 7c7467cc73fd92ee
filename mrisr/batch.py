"""Batch processing at cluster scale: shards, per-study locks, preemption.

Shards
    ``shard_of(id, n)`` gives each study to exactly one of ``n`` shards by a stable hash (SHA-1) of its
    id, so any number of processes given ``--shard i/n`` for ``i = 0..n-1`` cover every study once,
    whatever order they see the files in. Without ``--shard``, a SLURM array job's
    ``SLURM_ARRAY_TASK_ID`` / ``SLURM_ARRAY_TASK_COUNT`` decide (the task id is taken relative to
    ``SLURM_ARRAY_TASK_MIN``).
Locks
    Per-study locks live in :mod:`mrisr.locks` (re-exported here): ``.<id>.lock`` in the output
    folder, taken over atomically when stale.
Preemption
    :class:`StopFlag` turns SIGTERM/SIGINT into a flag that the batch loop checks between studies.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import os
import signal
from collections.abc import Iterator, Mapping, Sequence
from types import FrameType
from typing import Protocol, TypeVar

from mrisr.locks import STALE_AFTER_S, LockError, StudyLock, lock_path, study_lock

__all__ = [
    "STALE_AFTER_S",
    "LockError",
    "StopFlag",
    "StudyLock",
    "lock_path",
    "parse_shard",
    "resolve_shard",
    "select_shard",
    "select_studies",
    "shard_from_env",
    "shard_of",
    "study_lock",
]

log = logging.getLogger(__name__)

T = TypeVar("T")


class _HasId(Protocol):
    @property
    def id(self) -> str: ...


S = TypeVar("S", bound=_HasId)


def shard_of(study_id: str, count: int) -> int:
    """The shard (``0 <= s < count``) that owns ``study_id``."""
    digest = hashlib.sha1(study_id.encode("utf-8")).digest()
    return int.from_bytes(digest[:8], "big") % count


def parse_shard(text: str) -> tuple[int, int]:
    """Parse ``"I/N"`` (0-based) into ``(I, N)``.

    Raises:
        ValueError: Unless ``0 <= I < N``.
    """
    try:
        a, b = text.split("/")
        index, count = int(a), int(b)
    except ValueError as exc:
        raise ValueError(f"--shard must look like I/N (e.g. 0/4), got {text!r}") from exc
    if count < 1 or not 0 <= index < count:
        raise ValueError(f"--shard {text}: need 0 <= I < N")
    return index, count


def shard_from_env(env: Mapping[str, str] | None = None) -> tuple[int, int] | None:
    """The shard of a SLURM array task, from ``SLURM_ARRAY_TASK_ID``/``_COUNT``/``_MIN``/``_STEP``; else ``None``.

    Raises:
        ValueError: A variable that is not an integer, or a task outside a regular array.
    """
    e = os.environ if env is None else env
    if "SLURM_ARRAY_TASK_ID" not in e or "SLURM_ARRAY_TASK_COUNT" not in e:
        return None
    values = {}
    for name in ("SLURM_ARRAY_TASK_ID", "SLURM_ARRAY_TASK_COUNT", "SLURM_ARRAY_TASK_MIN", "SLURM_ARRAY_TASK_STEP"):
        try:
            values[name] = int(e.get(name, "1" if name.endswith("STEP") else "0"))
        except ValueError:
            raise ValueError(f"{name}={e[name]!r} is not an integer") from None
    offset = values["SLURM_ARRAY_TASK_ID"] - values["SLURM_ARRAY_TASK_MIN"]
    step = max(1, values["SLURM_ARRAY_TASK_STEP"])  # --array=2-6:2 gives tasks 2, 4, 6: shards 0, 1, 2
    index, count = offset // step, values["SLURM_ARRAY_TASK_COUNT"]
    if offset % step or not 0 <= index < count:
        raise ValueError(
            f"SLURM array task {e['SLURM_ARRAY_TASK_ID']} is outside 0..{count - 1} "
            "(use a regular array such as --array=0-N or --array=0-N:S)"
        )
    return index, count


def select_shard(items: Sequence[T], ids: Sequence[str], shard: tuple[int, int] | None) -> list[T]:
    """The items whose id belongs to ``shard`` (all of them when ``shard`` is ``None``)."""
    if shard is None:
        return list(items)
    index, count = shard
    return [it for it, i in zip(items, ids, strict=True) if shard_of(i, count) == index]


def resolve_shard(
    shard: str | tuple[int, int] | None, *, only: Sequence[str] | None = None, env: Mapping[str, str] | None = None
) -> tuple[int, int] | None:
    """The shard a run processes: ``shard`` (``"I/N"`` or ``(I, N)``) when given; else none when
    ``only`` names studies (an inherited SLURM array environment must not drop them silently); else
    the SLURM array task's (:func:`shard_from_env`), if any.

    Raises:
        ValueError: A malformed ``shard`` or SLURM array environment.
    """
    if isinstance(shard, str):
        return parse_shard(shard)
    if shard is not None:
        return parse_shard(f"{shard[0]}/{shard[1]}")
    return None if only else shard_from_env(env)


def select_studies(
    studies: Sequence[S],
    *,
    only: Sequence[str] | None = None,
    shard: str | tuple[int, int] | None = None,
    env: Mapping[str, str] | None = None,
) -> list[S]:
    """The studies a run processes, in order: those whose ``id`` ``only`` names (all when empty),
    then those of the shard (:func:`resolve_shard`, which reads the SLURM array environment ``env``,
    by default ``os.environ``, when neither ``shard`` nor ``only`` is given).

    Raises:
        ValueError: ``only`` names an id none of ``studies`` has (the message names them), or a
            malformed shard.
    """
    sel = resolve_shard(shard, only=only, env=env)
    chosen = list(studies)
    if only:
        ids = {s.id for s in chosen}
        unknown = sorted(set(only) - ids)
        if unknown:
            raise ValueError(f"no study with id {', '.join(unknown)}")
        chosen = [s for s in chosen if s.id in set(only)]
    return select_shard(chosen, [s.id for s in chosen], sel)


class StopFlag:
    """Turns SIGTERM and SIGINT into a flag (a SLURM preemption or Ctrl-C), restoring handlers on exit.

    A second signal while the flag is set abandons the current study — it raises ``KeyboardInterrupt``
    (its temporaries are removed by the atomic writers) — but only inside :meth:`abandonable`, the
    section where the caller catches it; elsewhere (shutting down: the summary, the exit code) it is
    only logged, so the command still ends with its 'interrupted' line and exit code.
    """

    def __init__(self, finishing: str = "the current study") -> None:
        self.signum: int | None = None
        self.finishing = finishing
        self.abandoned = False
        self._pid = os.getpid()
        self._old: dict[int, object] = {}
        self._may_abandon = False

    def __bool__(self) -> bool:
        return self.signum is not None

    def _handle(self, signum: int, frame: FrameType | None) -> None:
        if os.getpid() != self._pid:  # a forked worker (DataLoader) inherited the handler: its parent decides
            return
        if self.signum is None:
            self.signum = signum
            log.warning("received signal %d: finishing %s, then stopping", signum, self.finishing)
        elif self._may_abandon and not self.abandoned:
            self.abandoned, self._may_abandon = True, False
            raise KeyboardInterrupt
        else:
            log.warning("received signal %d again: already stopping", signum)

    @contextlib.contextmanager
    def abandonable(self) -> Iterator[None]:
        """The section in which a second signal raises ``KeyboardInterrupt`` (the caller catches it)."""
        self._may_abandon = True
        try:
            yield
        finally:
            self._may_abandon = False

    def __enter__(self) -> StopFlag:
        for sig in (signal.SIGTERM, signal.SIGINT):
            with contextlib.suppress(ValueError):  # not in the main thread
                self._old[sig] = signal.signal(sig, self._handle)
        return self

    def __exit__(self, *exc: object) -> None:
        for sig, old in self._old.items():
            signal.signal(sig, old)  # type: ignore[arg-type]
