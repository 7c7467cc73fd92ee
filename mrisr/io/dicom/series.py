"""Grouping DICOM files into series: one study per SeriesInstanceUID."""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import TYPE_CHECKING

from mrisr.errors import UnreadableFileError

if TYPE_CHECKING:
    from mrisr.discovery import Study
from mrisr.io.dicom.common import _Header, _image_header, _read_header, _suspect_non_dicom, _tag_str

log = logging.getLogger(__name__)


def group_dicom_series(
    files: list[tuple[Path, Path]], broken: list[tuple[Path, str, str | None]] | None = None
) -> list[Study]:
    """Group DICOM files into series, one :class:`~mrisr.discovery.Study` per SeriesInstanceUID.

    Files that are not DICOM, DICOMDIR indexes and objects without pixel data (structure sets,
    reports, presentation states) are skipped with a log line. Files that cannot be read, DICOM
    files whose header cannot be parsed or that are cut short, and files named like DICOM that are
    not (or tiny files without an extension) are skipped too and added to ``broken`` (logged when
    ``broken`` is not given).

    Args:
        files: Pairs ``(file, root)``: a candidate file and the input folder it was found under.
        broken: Collects ``(file, reason, series_uid)`` for those files (``series_uid`` when the file
            names its series, else ``None``).

    Returns:
        One study per series, sorted by id. ``Study.path`` is the deepest folder holding all the
        series' files; ``Study.files`` are sorted by path. The id joins the folder name, the
        SeriesNumber and the SeriesDescription, sanitised, and a short hash of the UID.
    """
    from mrisr.discovery import Study, sanitize_id, short_hash

    groups: dict[str, list[_Header]] = {}
    for path, root in files:
        path = Path(path)
        try:
            ds = _read_header(path)
        except UnreadableFileError as exc:
            if broken is None:
                log.warning("skipping %s", exc)
            else:
                broken.append((path, exc.reason, getattr(exc, "series_uid", None)))
            continue
        if ds is None:
            if broken is not None and (suspect := _suspect_non_dicom(path)) is not None:
                broken.append((path, suspect, None))
            else:
                log.info("skipping %s: not a DICOM file", path)
            continue
        why = _image_header(path, ds)
        if why is not None:
            log.info("skipping %s: %s", path, why)
            continue
        uid = _tag_str(ds, "SeriesInstanceUID") or None
        key = uid if uid is not None else f"no-uid:{path.parent.resolve()}"
        groups.setdefault(key, []).append(
            _Header(
                path=path,
                root=Path(root),
                series_uid=uid,
                description=_tag_str(ds, "SeriesDescription"),
                number=_tag_str(ds, "SeriesNumber"),
            )
        )
    studies: list[Study] = []
    for key, members in groups.items():
        paths = sorted({m.path for m in members})
        folder = Path(os.path.commonpath([str(p.parent) for p in paths]))
        first = members[0]
        # Slices in sibling folders given relatively ("a", "b") have the common folder "": name the
        # folder they are in, not nothing (the id would be only the series number and a hash).
        label = "_".join(s for s in (folder.name or folder.resolve().name, first.number, first.description) if s)
        study_id = f"{sanitize_id(label, max_len=80)}_{short_hash(key)}"
        studies.append(
            Study(
                id=study_id,
                fmt="dicom",
                path=folder,
                files=tuple(paths),
                series_uid=first.series_uid,
                description=first.description,
            )
        )
        log.debug("series %s: %d files in %s", key, len(paths), folder)
    studies.sort(key=lambda s: s.id)
    return studies
