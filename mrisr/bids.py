"""BIDS derivatives: the input's metadata by the inheritance principle, what the new grid changes in
it, and the derivative dataset's ``dataset_description.json``.

Inheritance (BIDS specification, "The Inheritance Principle"): the metadata of a data file are the
JSON files on its path from the dataset root down to its own folder whose suffix is the file's and
whose entities are all among the file's entities with the same values. They are merged key by key,
the nearest folder winning; within one folder a file with more entities wins. (pybids does this too,
but imports a database layer for it; this module needs only the file names.)
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from mrisr import __version__
from mrisr.errors import OutputBlockedError
from mrisr.fsutil import write_json_atomic, write_text_atomic
from mrisr.geometry import untouched_axes

log = logging.getLogger(__name__)

BIDS_VERSION = "1.9.0"
_AXES = {"i": 0, "j": 1, "k": 2}


def parse_name(name: str) -> tuple[dict[str, str], str]:
    """``sub-01_ses-2_T1w.nii.gz`` → ``({"sub": "01", "ses": "2"}, "T1w")``."""
    stem = name.split(".", 1)[0]
    parts = stem.split("_")
    entities = dict(p.split("-", 1) for p in parts[:-1] if "-" in p)
    return entities, parts[-1]


def _applies(meta_name: str, entities: dict[str, str], suffix: str) -> bool:
    stem = meta_name[: -len(".json")]
    parts = stem.split("_")
    if parts[-1] != suffix or any("-" not in p for p in parts[:-1]):
        return False
    own = dict(p.split("-", 1) for p in parts[:-1])
    return all(entities.get(k) == v for k, v in own.items())


def inherited_metadata(data_file: Path, root: Path) -> dict[str, Any]:
    """The merged JSON metadata of ``data_file`` inside the BIDS dataset at ``root``.

    A JSON file that cannot be read or is not an object is skipped with a warning.
    """
    entities, suffix = parse_name(data_file.name)
    rel = data_file.parent.relative_to(root)
    folders = [root, *(root.joinpath(*rel.parts[: n + 1]) for n in range(len(rel.parts)))]
    merged: dict[str, Any] = {}
    for folder in folders:
        found = [p for p in sorted(folder.glob("*.json")) if p.is_file() and _applies(p.name, entities, suffix)]
        for meta in sorted(found, key=lambda p: len(p.name.split("_"))):
            try:
                obj = json.loads(meta.read_text(encoding="utf-8"))
            except (OSError, ValueError, RecursionError) as exc:  # a hostile file: skipped
                log.warning("%s: not read as BIDS metadata (%s)", meta, exc)
                continue
            if isinstance(obj, dict):
                merged.update(obj)
    return merged


def _axis(direction: Any, default: int | None) -> int | None:
    if isinstance(direction, str) and direction[:1] in _AXES:
        return _AXES[direction[0]]
    return default


def adjust_metadata(
    meta: dict[str, Any], in_shape: Sequence[int], out_shape: Sequence[int], untouched: Sequence[bool]
) -> dict[str, Any]:
    """``meta`` with the fields that the new grid makes false fixed or removed.

    - ``SliceTiming`` is removed unless the slice axis (``SliceEncodingDirection``, else ``k``) is
      untouched (the timing of new slices between the acquired ones is not known).
    - ``ReconMatrixPE`` becomes the voxel count along the phase-encoding axis
      (``PhaseEncodingDirection``) and ``EffectiveEchoSpacing`` is scaled so that the total readout
      time ``EffectiveEchoSpacing · (ReconMatrixPE − 1)`` is kept, when that axis was refined.

    Args:
        meta: Inherited metadata.
        in_shape: Input voxel counts ``(i, j, k)``.
        out_shape: Output voxel counts.
        untouched: Per voxel axis, whether the output grid keeps it as it was (same count, spacing, start).
    """
    out = dict(meta)
    slice_axis = _axis(out.get("SliceEncodingDirection"), 2)
    if "SliceTiming" in out and slice_axis is not None and not untouched[slice_axis]:
        del out["SliceTiming"]
    pe = _axis(out.get("PhaseEncodingDirection"), None)
    if pe is not None and not untouched[pe]:
        n_old, n_new = int(in_shape[pe]), int(out_shape[pe])
        if "ReconMatrixPE" in out:
            out["ReconMatrixPE"] = n_new
        ees = out.get("EffectiveEchoSpacing")
        if isinstance(ees, (int, float)) and n_new > 1 and n_old > 1:
            out["EffectiveEchoSpacing"] = float(ees) * (n_old - 1) / (n_new - 1)
    return out


def derivative_metadata(
    data_file: Path,
    root: Path,
    link: str,
    *,
    description: str,
    grids: tuple[tuple[np.ndarray, Sequence[int]], tuple[np.ndarray, Sequence[int]]],
) -> dict[str, Any]:
    """The BIDS part of an output's sidecar: the input's inherited metadata, adjusted to the new grid,
    with ``Sources`` naming the input (a BIDS URI through the dataset link ``link``) and
    ``Description`` (``description``: what made this file).

    Args:
        data_file: The input file.
        root: Its dataset's root.
        link: The dataset link of ``root`` (:func:`write_description`).
        description: What made the output.
        grids: ``((affine, shape), (affine, shape))`` of the input and the output grid.
    """
    (a_in, in_shape), (a_out, out_shape) = grids
    untouched = untouched_axes(a_in, in_shape, a_out, out_shape)
    meta = adjust_metadata(inherited_metadata(data_file, root), in_shape, out_shape, untouched)
    meta["Sources"] = [f"bids:{link}:{data_file.relative_to(root).as_posix()}"]
    meta["Description"] = description
    # Required of preprocessed imaging derivatives; mrisr strips nothing, so an input's own value stands.
    meta.setdefault("SkullStripped", False)
    return meta


def check_derivative_folder(out_dir: Path, inputs: Sequence[tuple[Path, Path]]) -> None:
    """Refuse an output folder that is a BIDS input dataset's root or lies in one of its ``sub-*``
    folders: the derivatives would be written among the raw data, and the raw dataset's
    ``dataset_description.json`` marked as a derivative's.

    Args:
        out_dir: The output folder.
        inputs: ``(file, path inside its dataset)`` of the BIDS inputs (:attr:`mrisr.discovery.Study.bids`).

    Raises:
        ValueError: The message names the dataset and where derivatives go instead.
    """
    out = out_dir.resolve()
    for file, rel in inputs:
        root = file.resolve().parents[len(rel.parts) - 1]
        inside = out.relative_to(root).parts if out.is_relative_to(root) else None
        if inside is not None and (not inside or inside[0].startswith("sub-")):
            where = "is the root" if not inside else f"is inside {inside[0]}"
            raise ValueError(
                f"--out {out_dir} {where} of the BIDS dataset {root}: derivatives go in a dataset of "
                f"their own, e.g. --out {root / 'derivatives' / 'mrisr'}"
            )


def description_problem(out_dir: Path) -> str | None:
    """Why ``OUT/dataset_description.json`` is not a derivative dataset's description that mrisr may
    complete (a raw dataset's, or a file that is no description at all), ``None`` when it is one or
    there is none. mrisr never rewrites such a file of the user's."""
    path = out_dir / "dataset_description.json"
    if not (path.exists() or path.is_symlink()):
        return None
    if not path.is_file():  # a folder, a FIFO (whose read would block forever), a device, a broken link
        return "not a regular file"
    try:
        desc = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError, RecursionError) as exc:
        return f"not a readable JSON file ({' '.join(str(exc).split())[:120]})"
    if not isinstance(desc, dict):
        return "not a JSON object"
    kind = desc.get("DatasetType", "raw")  # BIDS: a description without DatasetType is a raw dataset's
    if kind != "derivative":
        return f"the description of a {json.dumps(kind)} dataset, not of a derivative one"
    return None


def check_description(out_dir: Path) -> None:
    """Refuse to write BIDS derivatives into ``out_dir`` when its ``dataset_description.json`` is the
    user's own (:func:`description_problem`).

    Raises:
        OutputBlockedError: Naming the file and why.
    """
    problem = description_problem(out_dir)
    if problem is not None:
        raise OutputBlockedError(
            out_dir / "dataset_description.json",
            f"{problem}: BIDS derivatives are not written into this folder (mrisr would have to rewrite it); "
            "give another --out",
        )


def write_description(out_dir: Path, source_root: Path, network: str = "") -> str:
    """Create or complete ``dataset_description.json`` of the derivatives dataset in ``out_dir``:
    ``DatasetType: derivative``, ``GeneratedBy`` (mrisr and its version), ``SourceDatasets`` and a
    ``DatasetLinks`` entry (``raw``, ``raw2``, ...) for every source dataset seen. Written atomically,
    under a short lock so that concurrent studies do not lose each other's source.

    Returns:
        The name of ``source_root``'s dataset link (for ``bids:<link>:<path>`` URIs).

    Raises:
        OutputBlockedError: ``OUT/dataset_description.json`` is not a derivative's description
            (:func:`check_description`); it is left as it is.
    """
    from mrisr.batch import study_lock

    for _ in range(200):
        with study_lock(out_dir, "dataset_description") as mine:
            if mine:
                return _update_description(out_dir / "dataset_description.json", source_root, network)
        time.sleep(0.05)
    log.warning("%s: dataset_description.json is locked by another process; not updated", out_dir)
    return "raw"


def _update_description(path: Path, source_root: Path, network: str) -> str:
    check_description(path.parent)
    old = json.loads(path.read_text(encoding="utf-8")) if path.exists() else {}
    desc: dict[str, Any] = dict(old)
    desc.setdefault("Name", "mrisr super-resolution")
    desc.setdefault("BIDSVersion", BIDS_VERSION)
    desc["DatasetType"] = "derivative"
    generated = [g for g in desc.get("GeneratedBy", []) if isinstance(g, dict) and g.get("Name") != "mrisr"]
    what = f"{network.upper() or 'CNN'} super-resolution"
    desc["GeneratedBy"] = [{"Name": "mrisr", "Version": __version__, "Description": what}, *generated]
    uri = source_root.resolve().as_uri()
    sources = [s for s in desc.get("SourceDatasets", []) if isinstance(s, dict)]
    if all(s.get("URL") != uri for s in sources):
        entry: dict[str, str] = {"URL": uri}
        doi = _source_doi(source_root)
        if doi:
            entry["DOI"] = doi
        sources.append(entry)
    desc["SourceDatasets"] = sources
    old_links = desc.get("DatasetLinks")
    links: dict[str, Any] = dict(old_links) if isinstance(old_links, dict) else {}
    link = next((k for k, v in links.items() if v == uri), None)
    if link is None:
        link = next(name for n in range(1, len(links) + 2) if (name := "raw" if n == 1 else f"raw{n}") not in links)
        links[link] = uri
    desc["DatasetLinks"] = links
    if desc != old:
        write_json_atomic(path, desc)
    _ignore_extras(path.parent)
    return link


#: What mrisr writes into a derivatives dataset that BIDS does not describe: the figures and the report.
BIDSIGNORE = ("sub-*/figures", "sub-*/ses-*/figures", "report.html", "report.csv", "report.json", "report_studies")


def _ignore_extras(out_dir: Path) -> None:
    """List :data:`BIDSIGNORE` in ``OUT/.bidsignore`` (lines already there are kept)."""
    path = out_dir / ".bidsignore"
    if (path.exists() or path.is_symlink()) and not path.is_file():
        log.warning("%s: not completed: not a regular file", path)
        return
    try:
        have = path.read_text(encoding="utf-8").splitlines() if path.exists() else []
    except (OSError, UnicodeDecodeError) as exc:
        log.warning("%s: not completed: it cannot be read as text (%s)", path, exc)
        return
    missing = [line for line in BIDSIGNORE if line not in have]
    if missing:
        write_text_atomic(path, "".join(f"{line}\n" for line in [*have, *missing]))


def _source_doi(root: Path) -> str | None:
    try:
        doi = json.loads((root / "dataset_description.json").read_text(encoding="utf-8")).get("DatasetDOI")
    except (OSError, ValueError, RecursionError, AttributeError):
        return None
    return doi if isinstance(doi, str) and doi else None


def figures_folder(out_dir: Path, bids_path: Path) -> Path:
    """``OUT/sub-01/[ses-1/]figures`` for the input at ``bids_path`` (relative to its dataset root)."""
    parts = bids_path.parent.parts
    keep = max((n for n, p in enumerate(parts) if p.startswith(("sub-", "ses-"))), default=-1) + 1
    return out_dir.joinpath(*parts[:keep], "figures")
