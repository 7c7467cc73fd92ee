"""Grouping DICOM files into series, one per SeriesInstanceUID (what a series is named and how it
becomes a study is :mod:`mrisr.discovery`'s business)."""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from pathlib import Path

from mrisr.errors import UnreadableFileError
from mrisr.io.dicom.common import _Header, _image_header, _read_header, _suspect_non_dicom, _tag_str

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class DicomSeries:
    """The files of one DICOM image series.

    Attributes:
        key: The SeriesInstanceUID, or ``no-uid:<folder>`` for files that name none.
        series_uid: SeriesInstanceUID (``None`` when the files name none).
        folder: The deepest folder holding all the series' files.
        files: The files, sorted by path.
        number: SeriesNumber of the first file (``""`` when absent).
        description: SeriesDescription of the first file (``""`` when absent).
    """

    key: str
    series_uid: str | None
    folder: Path
    files: tuple[Path, ...]
    number: str
    description: str


def group_series(
    files: list[tuple[Path, Path]],
    broken: list[tuple[Path, str, str | None]] | None = None,
    skipped: dict[Path, str] | None = None,
) -> list[DicomSeries]:
    """Group DICOM files into series, one per SeriesInstanceUID.

    Files that are not DICOM, DICOMDIR indexes and objects without pixel data (structure sets,
    reports, presentation states) are skipped with a log line. Files that cannot be read, DICOM
    files whose header cannot be parsed or that are cut short, and files named like DICOM that are
    not (or tiny files without an extension) are skipped too and added to ``broken`` (logged when
    ``broken`` is not given).

    Args:
        files: Pairs ``(file, root)``: a candidate file and the input folder it was found under.
        broken: Collects ``(file, reason, series_uid)`` for those files (``series_uid`` when the file
            names its series, else ``None``).
        skipped: Collects ``{file: reason}`` for the files skipped as not DICOM or not an image (so
            that a file named on the command line is not skipped silently).

    Returns:
        One record per series, in the order their first files were given.
    """
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
                if skipped is not None:
                    skipped[path] = "not a DICOM file"
            continue
        why = _image_header(path, ds)
        if why is not None:
            log.info("skipping %s: %s", path, why)
            if skipped is not None:
                skipped[path] = f"a DICOM file that is not an image: {why}"
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
    series: list[DicomSeries] = []
    for key, members in groups.items():
        paths = sorted({m.path for m in members})
        folder = Path(os.path.commonpath([str(p.parent) for p in paths]))
        first = members[0]
        series.append(
            DicomSeries(
                key=key,
                series_uid=first.series_uid,
                folder=folder,
                files=tuple(paths),
                number=first.number,
                description=first.description,
            )
        )
        log.debug("series %s: %d files in %s", key, len(paths), folder)
    return series
