"""Finding studies under files and folders.

A *study* is one volume to process: a NIfTI, MetaImage or NRRD file, or one DICOM series (grouped
by SeriesInstanceUID). What is recognised but not read (:mod:`mrisr.io.formats`: Analyze, MINC,
PAR/REC, MGH, archives) and any file named as an input that is no image mrisr reads become studies
with a :attr:`Study.problem`, never silently dropped; inside a folder, files that are no image
(notes, JSON sidecars) are skipped, and archives are named in a warning.

Discovery is sorted and deterministic, does not follow symbolic links to folders outside the root
it was given (links to files are followed), and stops at a maximum depth. Every study gets a stable
id that is safe as a file name (no path separators, no ``..``).
"""

from __future__ import annotations

import hashlib
import logging
import os
import re
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path

from mrisr.errors import UnreadableFileError
from mrisr.io import Format, Volume, is_nifti_path, nifti_stem
from mrisr.io.formats import itk_format, paired_with_hdr, refusal
from mrisr.io.walk import DEFAULT_MAX_DEPTH, path_kind, walk_files

log = logging.getLogger(__name__)

#: Folders of a BIDS dataset that hold no raw data (derivatives are never enhanced again).
BIDS_SKIP = ("derivatives", "sourcedata", "code")
_UNSAFE = re.compile(r"[^A-Za-z0-9._+-]+")


@dataclass(frozen=True)
class Study:
    """One volume to process.

    Attributes:
        id: Stable, sanitised identifier usable as a file name.
        fmt: ``"nifti"``, ``"metaimage"``, ``"nrrd"`` or ``"dicom"`` (also for a study with a
            :attr:`problem` that is no DICOM series).
        path: The file, or the folder holding the DICOM series.
        files: The files of the study (one for a file format; the slices of a DICOM series).
        series_uid: SeriesInstanceUID of a DICOM series.
        description: SeriesDescription of a DICOM series (for display).
        bids: For a NIfTI file inside a BIDS dataset (a folder given as input that holds
            ``dataset_description.json``), its path relative to the dataset root; outputs then mirror
            it as a BIDS derivative.
        problem: Why this study cannot be processed, found during discovery (a folder that cannot be
            listed, a file that cannot be read, a DICOM series whose folder holds a broken DICOM file
            that may be one of its slices); ``None`` when none. :meth:`load` raises it.
    """

    id: str
    fmt: Format
    path: Path
    files: tuple[Path, ...] = field(default=())
    series_uid: str | None = None
    description: str = ""
    bids: Path | None = None
    problem: str | None = None

    @property
    def location(self) -> str:
        """Where the study's files are, for a message: the file, the series' folder, or, for a series
        spread over several folders, those folders and the number of files."""
        folders = sorted({str(f.parent) for f in self.files})
        if self.fmt != "dicom" or len(folders) <= 1:
            return str(self.path)
        shown = ", ".join(folders[:4]) + (f" and {len(folders) - 4} more" if len(folders) > 4 else "")
        return f"{len(self.files)} files in {shown}"

    def where(self, path: str | Path | None) -> str:
        """The file an error names, for a message; the study's :attr:`location` when the error names
        none or the study's own folder (which, for a series in sibling folders, may be ``.``)."""
        return str(path) if path is not None and Path(path) != self.path else self.location

    def load(self) -> Volume:
        """Read the study into a :class:`~mrisr.io.Volume`.

        Raises:
            UnreadableFileError: The study has a :attr:`problem`, or a file cannot be read.
        """
        if self.problem is not None:
            raise UnreadableFileError(self.path, self.problem)
        if self.fmt == "nifti":
            from mrisr.io.nifti import read_nifti

            return read_nifti(self.path)
        if self.fmt != "dicom":
            from mrisr.io.itk import read_itk

            return read_itk(self.path)
        from mrisr.io.dicom import read_dicom_series

        return read_dicom_series(list(self.files), uid=self.series_uid)


def sanitize_id(text: str, *, max_len: int = 96) -> str:
    """Make ``text`` safe as a file name: only ``[A-Za-z0-9._+-]``, no leading dots, no ``..``."""
    s = _UNSAFE.sub("_", text)
    s = re.sub(r"\.{2,}", "_", s).strip("._-")
    return (s[:max_len].rstrip("._-")) or "study"


def short_hash(text: str, n: int = 8) -> str:
    """First ``n`` hex digits of the SHA-1 of ``text`` (a stable disambiguator)."""
    return hashlib.sha1(text.encode()).hexdigest()[:n]


def group_dicom_series(
    files: list[tuple[Path, Path]],
    broken: list[tuple[Path, str, str | None]] | None = None,
    skipped: dict[Path, str] | None = None,
) -> list[Study]:
    """Group DICOM files into studies, one per series (:func:`mrisr.io.dicom.series.group_series`).

    Args:
        files: Pairs ``(file, root)``: a candidate file and the input folder it was found under.
        broken: Collects ``(file, reason, series_uid)`` for files that cannot be used (see
            :func:`~mrisr.io.dicom.series.group_series`).
        skipped: Collects ``{file: reason}`` for files skipped as not DICOM or not an image.

    Returns:
        One study per series, sorted by id. ``Study.path`` is the deepest folder holding all the
        series' files; ``Study.files`` are sorted by path. The id joins the folder name, the
        SeriesNumber and the SeriesDescription, sanitised, and a short hash of the UID.
    """
    from mrisr.io.dicom.series import group_series

    studies: list[Study] = []
    for series in group_series(files, broken, skipped):
        folder = series.folder
        # Slices in sibling folders given relatively ("a", "b") have the common folder "": name the
        # folder they are in, not nothing (the id would be only the series number and a hash).
        label = "_".join(s for s in (folder.name or folder.resolve().name, series.number, series.description) if s)
        studies.append(
            Study(
                id=f"{sanitize_id(label, max_len=80)}_{short_hash(series.key)}",
                fmt="dicom",
                path=folder,
                files=series.files,
                series_uid=series.series_uid,
                description=series.description,
            )
        )
    studies.sort(key=lambda s: s.id)
    return studies


def _nifti_ids(paths: Sequence[Path], roots: dict[Path, Path]) -> dict[Path, str]:
    """Ids for NIfTI files: the stem, or the relative path when stems clash."""
    stems: dict[str, list[Path]] = {}
    for p in paths:
        stems.setdefault(sanitize_id(nifti_stem(p)), []).append(p)
    ids: dict[Path, str] = {}
    for stem, group in stems.items():
        if len(group) == 1:
            ids[group[0]] = stem
            continue
        for p in group:
            root = roots[p]
            rel = p.relative_to(root) if p.is_relative_to(root) else Path(p.name)
            parts = [*rel.parent.parts, nifti_stem(rel)]
            ids[p] = sanitize_id("_".join(parts) or stem)
    used: dict[str, int] = {}
    for p in paths:  # last resort: identical sanitised paths
        n = used.get(ids[p], 0)
        used[ids[p]] = n + 1
        if n:
            ids[p] = f"{ids[p]}_{short_hash(str(p.resolve()))}"  # the same however the input was spelled
    return ids


class _Identities:
    """The identity of a file: the absolute, normalised path of its folder joined with its name, the
    same for every spelling of one file (relative, absolute, through ``..`` or a linked folder). The
    file's own link is not followed: two links are two studies, even to one blob (a DataLad dataset's
    annexed files). Folders are resolved once each."""

    def __init__(self) -> None:
        self._folders: dict[Path, Path] = {}

    def __call__(self, path: Path) -> Path:
        folder = self._folders.get(path.parent)
        if folder is None:
            try:
                folder = path.parent.resolve()
            except (OSError, RuntimeError):  # a link loop above it: its spelling is all there is
                folder = Path(os.path.abspath(path.parent))
            self._folders[path.parent] = folder
        return folder / path.name


def recorded_outputs(out_dir: Path) -> set[Path]:
    """What ``mrisr enhance`` wrote under ``out_dir``, as its records name it: the files and DICOM
    series folders named by the done sidecars (outputs, intermediates, maps) and the destinations of
    commit journals a killed run left (outputs moved in before their sidecar). Resolved paths inside
    ``out_dir``; a name leading out of it is ignored.
    """
    import json

    from mrisr.sidecar import is_sidecar_name, load_sidecar

    root = out_dir.resolve()
    made: set[Path] = set()

    def add(base: Path, value: object) -> None:
        if isinstance(value, str) and value and "\0" not in value:
            p = Path(os.path.normpath(base / value))
            if p != root and p.is_relative_to(root):
                made.add(p)

    candidates: list[Path] = []
    for folder, subs, names in os.walk(root):  # links to folders are not followed: no loop
        here = Path(folder)
        subs[:] = sorted(d for d in subs if not d.startswith("."))
        candidates += [here / n for n in sorted(names) if n.endswith(".json")]
    for path in candidates:
        rel = path.relative_to(root).parts
        if not path.is_file():  # a FIFO named like a sidecar would block the read
            continue
        if rel[-1].endswith(".mrisr-commit.json") and len(rel) == 1:
            try:
                plan = json.loads(path.read_text(encoding="utf-8"))
            except (OSError, ValueError, RecursionError):
                continue
            ops = plan.get("ops") if isinstance(plan, dict) else None
            for op in ops if isinstance(ops, list) else []:
                if (
                    isinstance(op, list)
                    and len(op) == 3
                    and op[0] == "move"
                    and isinstance(op[2], str)
                    and "\0" not in op[2]
                ):
                    # The writer's path, relative to its working folder (unknown): each of its tails
                    # under this folder that exists (the journal names only this folder's outputs).
                    parts = Path(op[2]).parts
                    for k in range(len(parts)):
                        tail = Path(*parts[k:])
                        if not tail.is_absolute() and (root / tail).exists():
                            add(root, str(tail))
                    if Path(op[2]).is_absolute():
                        add(root, op[2])
            continue
        if any(part.startswith(".") for part in rel) or not is_sidecar_name(rel[-1]):
            continue
        data, _ = load_sidecar(path)
        if data is None or data.get("status") != "done":
            continue
        output = data.get("output")
        if isinstance(output, dict):  # the output, and the intermediates of --save-intermediates
            for key in ("path", "lowres", "bicubic"):
                add(path.parent, output.get(key))
        for group in ("uncertainty", "consistency"):  # the maps
            entry = data.get(group)
            if isinstance(entry, dict):
                add(path.parent, entry.get("map"))
    return made


def is_bids_root(folder: Path) -> bool:
    """True when ``folder`` is the root of a BIDS dataset (it holds ``dataset_description.json``)."""
    return (folder / "dataset_description.json").is_file()


def find_studies(
    inputs: str | Path | Sequence[str | Path],
    *,
    max_depth: int = DEFAULT_MAX_DEPTH,
    exclude: Sequence[str | Path] = (),
    outputs: Sequence[str | Path] = (),
) -> list[Study]:
    """Find the studies under files and folders.

    What cannot be used is returned too, as studies with a :attr:`Study.problem` (so that a batch
    reports it and fails, rather than silently processing less): a folder that cannot be listed, a
    file that cannot be read or a DICOM file whose header is broken. A DICOM series with several
    slices in the folder of such a file gets that problem (the file may be one of its slices, and the
    series would be incomplete); a broken file that taints no series is a study of its own.

    Args:
        inputs: Files (NIfTI, MetaImage, NRRD, DICOM) and folders to search, or one of them.
        max_depth: Folder levels to descend below each input folder.
        exclude: Folders not to descend into.
        outputs: Output folders of ``mrisr enhance``: searched like any folder (one may be an input,
            hold one or lie inside one), but what mrisr recorded writing there
            (:func:`recorded_outputs`) is never a study, on a first run or a rerun.

    Returns:
        Studies sorted by id (ids are unique).

    Raises:
        FileNotFoundError: If an input does not exist.
    """
    nifti: list[Path] = []
    roots: dict[Path, Path] = {}
    bids_roots: dict[Path, Path] = {}
    others: list[tuple[Path, Path]] = []
    refused: list[Study] = []
    problems: list[tuple[Path, str, Path, str | None]] = []
    taken: set[Path] = set()  # files (and problems) already taken, by their identity
    _identity = _Identities()
    given = _as_list(inputs)
    folders = [Path(raw).resolve() for raw in given if Path(raw).is_dir()]
    skip_dirs = {Path(e).resolve() for e in exclude}
    for o in outputs:
        out = Path(o).resolve()
        if any(f.is_relative_to(out) or out.is_relative_to(f) for f in folders):  # searched
            made = recorded_outputs(out)
            taken |= {_identity(p) for p in made}  # as if taken already: never a study
            skip_dirs |= {p for p in made if p.is_dir()}  # a DICOM output series
    skip = frozenset(skip_dirs)
    for raw in given:
        inp = Path(raw)
        if not inp.exists():
            raise FileNotFoundError(f"{inp}: no such file or folder")
        found: list[tuple[Path, str]] = []
        if not inp.is_file() and not inp.is_dir():  # never opened: a FIFO would block
            problems.append((inp, f"{path_kind(inp)}, not a file or folder of studies", inp.parent, None))
            continue
        files = [inp] if inp.is_file() else list(walk_files(inp, max_depth=max_depth, problems=found, skip=skip))
        root = inp.parent if inp.is_file() else inp
        for p, why in found:
            if _identity(p) not in taken:
                taken.add(_identity(p))
                problems.append((p, why, root, None))
        if inp.is_dir() and is_bids_root(inp):
            # The files at a BIDS root (README, CHANGES, LICENSE, participants.tsv) are metadata.
            files = [
                f
                for f in files
                if f.relative_to(inp).parts[0] not in BIDS_SKIP
                and (len(f.relative_to(inp).parts) > 1 or is_nifti_path(f))
            ]
            bids_roots.update(
                {f: inp for f in files if is_nifti_path(f) and f.relative_to(inp).parts[0].startswith("sub-")}
            )
        for f in files:
            if _identity(f) in taken:  # named twice (relative and absolute, or a file inside a folder given)
                continue
            taken.add(_identity(f))
            if is_nifti_path(f) or itk_format(f) is not None:
                nifti.append(f)
                roots[f] = root
            elif not _refused(f, root, named=inp.is_file(), into=refused):
                others.append((f, root))
    ids = _nifti_ids(nifti, roots)
    studies = [
        Study(
            id=ids[p],
            fmt=itk_format(p) or "nifti",
            path=p,
            files=(p,),
            bids=p.relative_to(bids_roots[p]) if p in bids_roots else None,
        )
        for p in nifti
    ]
    if others:
        if len({f.is_absolute() for f, _ in others}) > 1:  # one series may span both spellings
            others = [(Path(os.path.abspath(f)), Path(os.path.abspath(r))) for f, r in others]
        broken: list[tuple[Path, str, str | None]] = []
        skipped: dict[Path, str] = {}
        studies.extend(group_dicom_series(others, broken, skipped))
        root_of = dict(others)
        problems += [(p, why, root_of[p], uid) for p, why, uid in broken]
        # A file named as an input is processed or fails with its reason, never skipped silently.
        named = {Path(raw) for raw in _as_list(inputs)}
        for f, why in skipped.items():
            if f in named:
                refused.append(_problem_study(f, f.parent, f"{why}: not an image mrisr reads ({READ_FORMATS})"))
    studies.extend(refused)
    studies = _with_problems(studies, problems)
    studies.sort(key=lambda s: s.id)
    seen: dict[str, int] = {}
    unique: list[Study] = []
    for s in studies:
        if s.id in seen:
            s = replace(s, id=s.id + "_" + short_hash(str(s.path.resolve()) + (s.series_uid or "")))
        seen[s.id] = 1
        unique.append(s)
    return unique


#: What mrisr reads, for messages.
READ_FORMATS = "NIfTI, DICOM, MetaImage, NRRD"


def _as_list(inputs: str | Path | Sequence[str | Path]) -> list[str | Path]:
    return [inputs] if isinstance(inputs, str | Path) else list(inputs)


def _problem_study(path: Path, root: Path, why: str) -> Study:
    """A study that fails with ``why`` when processed, named by ``path`` relative to ``root``."""
    rel = path.relative_to(root) if path.is_relative_to(root) else Path(path.name)
    return Study(id=sanitize_id("_".join(rel.parts) or path.name), fmt="dicom", path=path, files=(path,), problem=why)


def _refused(path: Path, root: Path, *, named: bool, into: list[Study]) -> bool:
    """Whether ``path`` is a recognised format mrisr does not read (:func:`mrisr.io.formats.refusal`),
    or the ``.img`` of a pair whose ``.hdr`` speaks for it; a refused file named as an input, or an
    image file found in a folder, is added to ``into`` as a study with its problem, an archive found
    in a folder is named in a warning."""
    if not named and paired_with_hdr(path):
        return True
    why = refusal(path)
    if why is None:
        return False
    if why.archive and not named:
        log.warning("not searched: %s: %s", path, why.reason)
    else:
        into.append(_problem_study(path, root, why.reason))
    return True


def _with_problems(studies: list[Study], problems: list[tuple[Path, str, Path, str | None]]) -> list[Study]:
    """``studies`` with the discovery problems attached. A broken file taints the DICOM series its
    header names, if it names one; else the series with two or more files in its folder
    (single-file series, as in folders of unrelated test images, are whole). A problem that taints
    no series becomes a study of its own."""
    out = list(studies)
    for path, why, root, uid in problems:
        tainted: list[int] = []
        if uid is not None:
            tainted = [k for k, s in enumerate(out) if s.fmt == "dicom" and s.series_uid == uid]
        elif not path.is_dir():
            tainted = [
                k for k, s in enumerate(out) if s.fmt == "dicom" and sum(f.parent == path.parent for f in s.files) >= 2
            ]
        if uid is not None:
            taint = f"one of its slices, {path.name}, cannot be used: {why}"
        else:
            taint = f"its folder also holds {path.name}, which may be one of its slices and cannot be used: {why}"
        for k in tainted:
            if out[k].problem is None:
                out[k] = replace(out[k], problem=taint)
        if not tainted:
            rel = path.relative_to(root) if path.is_relative_to(root) else Path(path.name)
            out.append(Study(id=sanitize_id("_".join(rel.parts) or path.name), fmt="dicom", path=path, problem=why))
    return out
