"""Where and how a study's outputs are written: the flat and the BIDS-derivative layouts.

Every file goes through :func:`mrisr.fsutil.atomic_path`; the sidecar is written last by
:mod:`mrisr.enhance` and marks the study as done.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from mrisr import __version__
from mrisr.discovery import Study
from mrisr.fsutil import write_json_atomic
from mrisr.io import Volume, nifti_stem


@dataclass(frozen=True)
class Targets:
    """Where one study's outputs go.

    Flat layout: ``OUT/<id>_sr.nii.gz`` (or ``OUT/<id>_sr/`` for DICOM), ``OUT/<id>_sr.json``,
    ``OUT/<id>_compare.png``, ``OUT/<id>_lr.nii.gz``, ``OUT/<id>_bicubic.nii.gz``. A study of a BIDS
    dataset mirrors its place as a BIDS derivative instead:
    ``OUT/sub-01/anat/sub-01_desc-sr_T1w.nii.gz`` with the sidecar ``..._desc-sr_T1w.json``.
    """

    output: Path
    sidecar: Path
    figure: Path
    lowres: Path
    bicubic: Path

    @classmethod
    def for_study(cls, out_dir: Path, study: Study, fmt: str) -> Targets:
        """The targets of ``study`` written as ``fmt`` into ``out_dir``."""
        if study.bids is not None and fmt == "nifti":
            folder = out_dir / study.bids.parent
            stem = bids_derivative_stem(study.bids.name, "sr")
            return cls(
                output=folder / f"{stem}.nii.gz",
                sidecar=folder / f"{stem}.json",
                figure=folder / f"{stem}_compare.png",
                lowres=folder / f"{bids_derivative_stem(study.bids.name, 'lr')}.nii.gz",
                bicubic=folder / f"{bids_derivative_stem(study.bids.name, 'bicubic')}.nii.gz",
            )
        return cls(
            output=out_dir / (f"{study.id}_sr" if fmt == "dicom" else f"{study.id}_sr.nii.gz"),
            sidecar=out_dir / f"{study.id}_sr.json",
            figure=out_dir / f"{study.id}_compare.png",
            lowres=out_dir / f"{study.id}_lr.nii.gz",
            bicubic=out_dir / f"{study.id}_bicubic.nii.gz",
        )

    def all(self) -> tuple[Path, ...]:
        """Every target path."""
        return (self.output, self.sidecar, self.figure, self.lowres, self.bicubic)


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


def write_bids_description(out_dir: Path, network: str = "") -> None:
    """Write ``dataset_description.json`` of a BIDS derivatives dataset (once; atomically)."""
    path = out_dir / "dataset_description.json"
    if path.exists():
        return
    write_json_atomic(
        path,
        {
            "Name": "mrisr super-resolution",
            "BIDSVersion": "1.9.0",
            "DatasetType": "derivative",
            "GeneratedBy": [
                {"Name": "mrisr", "Version": __version__, "Description": f"{network.upper() or 'CNN'} super-resolution"}
            ],
        },
    )


def read_sidecar(path: Path) -> dict[str, Any] | None:
    try:
        obj = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return obj if isinstance(obj, dict) else None


def write_volume(vol: Volume, path: Path, fmt: str, dtype: np.dtype, *, description: str | None = None) -> None:
    """Write ``vol`` to ``path`` as NIfTI (a file) or DICOM (a series folder), replacing it atomically.

    ``description`` goes into a NIfTI header's ``descrip``.
    """
    if fmt == "dicom":
        from mrisr.io.dicom import write_dicom_series

        write_dicom_series(vol, path)
    else:
        from mrisr.io.nifti import write_nifti

        write_nifti(vol, path, dtype=dtype, description=description)
