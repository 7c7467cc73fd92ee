"""How a study's outputs are written (their names: :class:`mrisr.sidecar.Targets`).

Every file goes through :func:`mrisr.fsutil.atomic_path`. A study's new outputs are first written
under temporary names (:class:`Staging`) and then put in place together by a *commit*: a journal
``OUT/.<id>.mrisr-commit.json`` listing the renames and the removals of outputs the new result does
not have (another format, a figure no longer asked for) is written atomically — the commit point —
and then carried out, the sidecar last. A run killed before the journal exists leaves the old
result; one killed after it leaves a journal that the next run of that study (under its lock)
carries out before anything else (:func:`finish_commit`).
"""

from __future__ import annotations

import json
import logging
import os
import re
from collections.abc import Collection, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from mrisr import faults
from mrisr.errors import OutputBlockedError
from mrisr.fsutil import TMP_MARK, remove_path, temp_sibling, temp_stem, write_json_atomic

log = logging.getLogger(__name__)


def commit_journal(out_dir: Path, study_id: str) -> Path:
    """Where the commit journal of a study lives (see the module docstring)."""
    return out_dir / f".{study_id}.mrisr-commit.json"


@dataclass
class Staging:
    """A study's new outputs, written under temporary names and put in place by :meth:`commit`."""

    moves: list[tuple[Path, Path]] = field(default_factory=list)

    def path(self, final: Path) -> Path:
        """A temporary name beside ``final`` to write the new ``final`` to."""
        staged = temp_sibling(final)
        self.moves.append((staged, final))
        return staged

    def discard(self) -> None:
        """Remove what was staged (the study failed; the old result stays). Never raises: a
        temporary that cannot be removed (its folder is gone or is a file) must not hide the
        study's own error, nor keep the others from being removed."""
        for staged, _ in self.moves:
            try:
                remove_path(staged)
            except OSError as exc:
                log.debug("cannot remove %s: %s", staged, exc)
        self.moves.clear()

    def commit(
        self,
        journal: Path,
        sidecar: Path,
        record: dict[str, Any],
        stale: Iterable[Path],
        *,
        owned: Collection[Path],
        overwrite: bool = False,
    ) -> None:
        """Put the staged files and the sidecar ``record`` in place and remove the ``stale`` paths
        that the new result does not write (an old output of another format, an old figure).

        Args:
            journal: The study's commit journal (:func:`commit_journal`).
            sidecar: The sidecar's final path.
            record: The sidecar's content.
            stale: Paths of the study's old outputs the new result may leave behind.
            owned: What mrisr's own records say it wrote (:func:`mrisr.sidecar.owned_outputs`): only
                these are removed, and only these are replaced unless ``overwrite``.
            overwrite: Also replace a *file* standing at a final path that no record names.

        Raises:
            OutputBlockedError: Something mrisr did not write stands at a final path (see
                :func:`check_free`); nothing has been moved.
        """
        finals = [final for _, final in self.moves] + [sidecar]
        root = journal.parent
        staged_dirs = {f for s, f in self.moves if s.is_dir()}
        check_free(finals, owned, overwrite=overwrite, staged_dirs=staged_dirs, root=root)
        owned_norm = {_norm(p) for p in owned}
        # lexists: False, not an error, for a name longer than the file system takes (it cannot be there).
        removals = [
            p for p in dict.fromkeys(stale) if p not in finals and _norm(p) in owned_norm and os.path.lexists(p)
        ]
        check_removable(removals, root=root)
        staged_sidecar = temp_sibling(sidecar)
        write_json_atomic(staged_sidecar, record)
        ops: list[list[str]] = [["move", str(a), str(b)] for a, b in self.moves if a.exists()]
        ops += [["remove", str(p)] for p in removals]
        ops.append(["move", str(staged_sidecar), str(sidecar)])
        write_json_atomic(journal, {"ops": ops})  # the commit point
        self.moves.clear()  # committed: nothing staged may be discarded now, the journal needs it
        finish_commit(journal, journal.parent, allowed=[*finals, *removals])


def _norm(path: Path) -> Path:
    return Path(os.path.normpath(path))


#: The files of a derived DICOM series folder, as :func:`mrisr.io.dicom.write_dicom_series` names them.
_SERIES_FILE = re.compile(r"IM\d{5,}\.dcm")


def foreign_entry(folder: Path) -> Path | None:
    """The first entry of an output series ``folder`` that mrisr does not write there (a file of the
    user's, a subfolder, a link), ``None`` when it holds only slices named as mrisr names them."""
    try:
        entries = sorted(os.scandir(folder), key=lambda e: e.name)
    except OSError:
        return folder
    for entry in entries:
        if not (_SERIES_FILE.fullmatch(entry.name) and entry.is_file(follow_symlinks=False)):
            return Path(entry.path)
    return None


def link_out_of(path: Path, root: Path) -> Path | None:
    """The folder on the way from ``root`` down to ``path``'s folder that leads out of ``root`` (a
    symbolic link to elsewhere; ``path`` itself when it is not under ``root`` at all), ``None``
    when ``path`` would be written inside ``root``."""
    rel = os.path.relpath(_norm(path.parent), _norm(root))
    if rel == os.pardir or rel.startswith(os.pardir + os.sep):
        return path
    real_root = root.resolve()
    here = root
    for part in Path(rel).parts:
        here = here / part
        if here.is_symlink():
            try:
                here.resolve().relative_to(real_root)
            except ValueError:
                return here
    return None


def check_inside(paths: Iterable[Path], root: Path | None) -> None:
    """Refuse output ``paths`` that would be written out of the output folder ``root`` through a link
    (:func:`link_out_of`); nothing when ``root`` is ``None``.

    Raises:
        OutputBlockedError: Naming the link.
    """
    if root is None:
        return
    for path in paths:
        link = link_out_of(path, root)
        if link is not None:
            raise OutputBlockedError(
                link, f"leads out of the output folder {root} (a link); mrisr writes its outputs only inside it"
            )
        here = root
        for part in Path(os.path.relpath(_norm(path.parent), _norm(root))).parts:
            here = here / part
            if (here.exists() or here.is_symlink()) and not here.is_dir():
                raise OutputBlockedError(
                    here, "a file that mrisr did not write stands where its output folder goes; move it away"
                )


def check_removable(paths: Iterable[Path], *, root: Path | None = None) -> None:
    """Refuse to remove an owned output ``paths`` (the stale outputs of a rerun) that now holds
    what mrisr did not write: a series folder with a file of the user's in it, or one reached
    through a link out of ``root``.

    Raises:
        OutputBlockedError: Naming the foreign entry.
    """
    paths = list(paths)
    check_inside(paths, root)
    for path in paths:
        if path.is_dir() and not path.is_symlink():
            _check_series_folder(path)


def _check_series_folder(folder: Path) -> None:
    foreign = foreign_entry(folder)
    if foreign is not None:
        raise OutputBlockedError(
            foreign,
            f"not written by mrisr, inside the series folder {folder.name} that mrisr wrote; move it away "
            "(the folder is replaced or removed only when it holds nothing else)",
        )


def check_free(
    finals: Iterable[Path],
    owned: Collection[Path],
    *,
    overwrite: bool,
    staged_dirs: Collection[Path] = (),
    root: Path | None = None,
) -> None:
    """Refuse to write over what mrisr did not write.

    A final path that exists (or is a dangling link) and that no record of mrisr names (``owned``)
    blocks the study, unless ``overwrite`` and it is a plain file or link where a file goes. A folder
    that mrisr did not write is never replaced, nor is a file replaced by a series folder or a folder
    by a file, nor a series folder of mrisr's that holds anything else (:func:`foreign_entry`). With
    ``root`` (the output folder), a final path reached through a link out of it blocks the study too.

    Args:
        finals: The paths about to be written.
        owned: :func:`mrisr.sidecar.owned_outputs` of the study.
        overwrite: ``--overwrite`` was given.
        staged_dirs: The finals that are written as folders (a DICOM series).
        root: The output folder every final must be written inside.

    Raises:
        OutputBlockedError: Naming the first blocked path.
    """
    finals = list(finals)
    check_inside(finals, root)
    owned_norm = {_norm(p) for p in owned}
    for final in finals:
        if not os.path.lexists(final):
            continue
        is_dir = os.path.isdir(final) and not os.path.islink(final)
        if is_dir != (final in staged_dirs):
            raise OutputBlockedError(final, "a file or folder that mrisr did not write stands at this output path")
        if _norm(final) in owned_norm:
            if is_dir:
                _check_series_folder(final)
            continue
        if overwrite and not is_dir:
            continue
        what = "a folder" if is_dir else "a file"
        hint = "move it away" if is_dir else "move it away or use --overwrite"
        raise OutputBlockedError(final, f"{what} that no mrisr sidecar records stands at this output path; {hint}")


def _inside(path: Path, root: Path) -> bool:
    try:
        path.parent.resolve().relative_to(root.resolve())
    except ValueError:
        return False
    return True


def _move(staged: Path, final: Path) -> None:
    if not staged.exists():
        return  # done before the kill
    faults.point("commit.before-move")
    if staged.is_dir() and final.exists():
        old = temp_sibling(final)  # a temporary name: removed at the next start if killed here
        final.rename(old)
        staged.rename(final)
        remove_path(old)
    else:
        if final.is_dir() and not final.is_symlink():
            remove_path(final)
        os.replace(staged, final)


def _step_allowed(op: str, paths: list[Path], allowed: Collection[Path] | None) -> bool:
    """Whether a journal step touches only the study's own outputs (``allowed``, its target paths):
    a move from a temporary name beside its target (:func:`mrisr.fsutil.temp_sibling`) to the target,
    a removal of a target. ``allowed`` ``None``: any step inside the root."""
    if allowed is None:
        return True
    names = {_norm(p) for p in allowed}
    if op == "move" and len(paths) == 2:
        src, dst = paths
        return (
            _norm(dst) in names
            and _norm(src.parent) == _norm(dst.parent)
            and src.name.startswith((f"{temp_stem(dst.name)}{TMP_MARK}", f".{dst.name}{TMP_MARK}"))
        )
    return op == "remove" and len(paths) == 1 and _norm(paths[0]) in names


def finish_commit(journal: Path, root: Path, *, allowed: Collection[Path] | None = None) -> bool:
    """Carry out the commit ``journal`` (one left by a killed run, or one just written): every step
    is idempotent. Paths outside ``root`` are ignored, and so, with ``allowed`` (the study's own
    output paths), is any step that would move or remove something else (a hostile or foreign
    journal naming a file of the user's in ``root``).

    Returns:
        Whether a journal was found.
    """
    if (journal.exists() or journal.is_symlink()) and not journal.is_file():
        log.warning("%s: not a regular file; left alone", journal)  # a FIFO's read would block forever
        return False
    try:
        plan = json.loads(journal.read_text(encoding="utf-8"))
        ops = plan["ops"] if isinstance(plan, dict) else None
    except FileNotFoundError:
        return False
    except (OSError, ValueError, KeyError):
        ops = None
    for op in ops if isinstance(ops, list) else []:
        if not (isinstance(op, list) and op and all(isinstance(x, str) for x in op)):
            continue
        paths = [Path(x) for x in op[1:]]
        if not paths or not all(_inside(p, root) for p in paths):
            log.warning("%s: ignoring a step outside %s", journal, root)
            continue
        if not _step_allowed(op[0], paths, allowed):
            log.warning("%s: ignoring a step on a path that is not one of the study's outputs: %s", journal, op)
            continue
        if op[0] == "move" and len(paths) == 2:
            _move(paths[0], paths[1])
        elif op[0] == "remove":
            remove_path(paths[0])
    journal.unlink(missing_ok=True)
    return True
