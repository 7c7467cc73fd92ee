"""Where and how a study's outputs are written: the flat and the BIDS-derivative layouts.

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
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from mrisr import faults
from mrisr.bids import figures_folder
from mrisr.discovery import Study
from mrisr.errors import OutputBlockedError
from mrisr.fsutil import remove_path, temp_sibling, write_json_atomic
from mrisr.io import nifti_stem

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Targets:
    """Where one study's outputs go.

    Flat layout: ``OUT/<id>_sr.nii.gz`` (or ``OUT/<id>_sr/`` for DICOM), ``OUT/<id>_sr.json``,
    ``OUT/<id>_compare.png``, ``OUT/<id>_mosaic.png``, ``OUT/<id>_lr.nii.gz``, ``OUT/<id>_bicubic.nii.gz``,
    ``OUT/<id>_uncertainty.nii.gz``, ``OUT/<id>_residual.nii.gz``. A study of a BIDS
    dataset written as NIfTI mirrors its place as a BIDS derivative instead:
    ``OUT/sub-01/anat/sub-01_desc-sr_T1w.nii.gz`` with the sidecar ``..._desc-sr_T1w.json`` and the
    figures ``OUT/sub-01/figures/sub-01_desc-srcompare_T1w.png`` and ``..._desc-srmosaic_T1w.png``
    (``sub-*/ses-*/figures`` in a session).
    """

    output: Path
    sidecar: Path
    figure: Path
    lowres: Path
    bicubic: Path
    mosaic: Path
    uncertainty: Path
    residual: Path

    @classmethod
    def for_study(cls, out_dir: Path, study: Study, fmt: str) -> Targets:
        """The targets of ``study`` written as ``fmt`` into ``out_dir``."""
        if study.bids is not None and fmt == "nifti":
            folder = out_dir / study.bids.parent
            figures = figures_folder(out_dir, study.bids)
            stem = bids_derivative_stem(study.bids.name, "sr")
            return cls(
                output=folder / f"{stem}.nii.gz",
                sidecar=folder / f"{stem}.json",
                figure=figures / f"{bids_derivative_stem(study.bids.name, 'srcompare')}.png",
                lowres=folder / f"{bids_derivative_stem(study.bids.name, 'lr')}.nii.gz",
                bicubic=folder / f"{bids_derivative_stem(study.bids.name, 'bicubic')}.nii.gz",
                mosaic=figures / f"{bids_derivative_stem(study.bids.name, 'srmosaic')}.png",
                uncertainty=folder / f"{bids_derivative_stem(study.bids.name, 'srstd')}.nii.gz",
                residual=folder / f"{bids_derivative_stem(study.bids.name, 'srresidual')}.nii.gz",
            )
        return cls(
            output=out_dir / (f"{study.id}_sr" if fmt == "dicom" else f"{study.id}_sr.nii.gz"),
            sidecar=out_dir / f"{study.id}_sr.json",
            figure=out_dir / f"{study.id}_compare.png",
            lowres=out_dir / f"{study.id}_lr.nii.gz",
            bicubic=out_dir / f"{study.id}_bicubic.nii.gz",
            mosaic=out_dir / f"{study.id}_mosaic.png",
            uncertainty=out_dir / f"{study.id}_uncertainty.nii.gz",
            residual=out_dir / f"{study.id}_residual.nii.gz",
        )

    @classmethod
    def every_format(cls, out_dir: Path, study: Study) -> list[Targets]:
        """The targets of ``study`` in each output format (a rerun in another format replaces them)."""
        return [cls.for_study(out_dir, study, fmt) for fmt in ("nifti", "dicom")]

    def all(self) -> tuple[Path, ...]:
        """Every target path."""
        return (self.output, self.sidecar, self.figure, self.lowres, self.bicubic, self.mosaic, self.uncertainty,
                self.residual)  # fmt: skip


def bids_derivative_stem(name: str, desc: str) -> str:
    """``sub-01_ses-2_T1w.nii.gz`` → ``sub-01_ses-2_desc-<desc>_T1w``.

    An existing ``desc`` is kept in front (``desc-preproc`` → ``desc-preproc<desc>``), so that inputs
    differing only in their ``desc`` keep distinct outputs.
    """
    stem = nifti_stem(name)
    parts = stem.split("_")
    old = next((p[len("desc-") :] for p in parts[:-1] if p.startswith("desc-")), "")
    entities, suffix = [p for p in parts[:-1] if not p.startswith("desc-")], parts[-1]
    return "_".join([*entities, f"desc-{old}{desc}", suffix])


def standing_result(out_dir: Path, study: Study, targets: Targets) -> tuple[dict[str, Any] | None, Path]:
    """The 'done' sidecar that stands for ``study`` (in ``targets``' place or another format's), and
    its path (``targets.sidecar`` when none stands)."""
    places = [targets.sidecar, *(t.sidecar for t in Targets.every_format(out_dir, study))]
    for path in dict.fromkeys(places):
        old = read_sidecar(path) if path.exists() else None
        if old is not None and old.get("status") == "done":
            return old, path
    return None, targets.sidecar


def read_sidecar(path: Path) -> dict[str, Any] | None:
    try:
        obj = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return obj if isinstance(obj, dict) else None


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
        """Remove what was staged (the study failed; the old result stays)."""
        for staged, _ in self.moves:
            remove_path(staged)
        self.moves.clear()

    def commit(self, journal: Path, sidecar: Path, record: dict[str, Any], stale: Iterable[Path]) -> None:
        """Put the staged files and the sidecar ``record`` in place and remove the ``stale`` paths
        that the new result does not write (an old output of another format, an old figure)."""
        for staged, final in self.moves:
            # A DICOM series replaces a series folder, a file a file: anything else at a final path
            # was not written by mrisr (a kill leaves neither), so it is not removed.
            kind_differs = final.exists() and (final.is_dir() and not final.is_symlink()) != staged.is_dir()
            if staged.exists() and kind_differs:
                raise OutputBlockedError(final, "a file or folder that mrisr did not write stands at this output path")
        staged_sidecar = temp_sibling(sidecar)
        write_json_atomic(staged_sidecar, record)
        finals = {final for _, final in self.moves} | {sidecar}
        ops: list[list[str]] = [["move", str(a), str(b)] for a, b in self.moves if a.exists()]
        ops += [["remove", str(p)] for p in dict.fromkeys(stale) if p not in finals and (p.exists() or p.is_symlink())]
        ops.append(["move", str(staged_sidecar), str(sidecar)])
        write_json_atomic(journal, {"ops": ops})  # the commit point
        self.moves.clear()  # committed: nothing staged may be discarded now, the journal needs it
        finish_commit(journal, journal.parent)


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


def finish_commit(journal: Path, root: Path) -> bool:
    """Carry out the commit ``journal`` (one left by a killed run, or one just written): every step
    is idempotent. Paths outside ``root`` (a hostile journal) are ignored.

    Returns:
        Whether a journal was found.
    """
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
        if op[0] == "move" and len(paths) == 2:
            _move(paths[0], paths[1])
        elif op[0] == "remove":
            remove_path(paths[0])
    journal.unlink(missing_ok=True)
    return True
