#!/usr/bin/env python3
"""Write the project's held-out real scans as NIfTI files, from data carried by Python packages.

    .venv/bin/python benchmarks/heldout_data.py OUTDIR

None of these scans is used to train the shipped weights (those are trained on the MNI template
only). The wheels of dipy and pydicom-data are fetched with ``pip download --no-deps`` (package
registry only) into ``OUTDIR/wheels``; nibabel's test data comes from the installed nibabel.

Files written (first volume of 4D data; 2D images become one-slice volumes):

- ``epi0.nii.gz``: nibabel ``tests/data/example4d.nii.gz``, volume 0 — EPI, 128×96×24, 2×2×2.2 mm.
- ``anatomical.nii.gz``: nibabel ``tests/data/anatomical.nii`` — T1, 33×41×25, 2 mm.
- ``S0_10slices.nii.gz``: dipy — DWI b0, 128×128×10.
- ``aniso_vox.nii.gz``: dipy — 58×58×24 at 4×4×5 mm.
- ``dwi_piesno.nii.gz``: dipy ``test_piesno.nii.gz`` — a diffusion-weighted brain volume, 96×96×14,
  float64, noisy; its header carries no spacing (1 mm written), and its slices are less alike than
  its neighbouring in-plane voxels (thicker or farther apart than the header says).
- ``t1_coronal.nii.gz``: dipy ``t1_coronal_slice.npy`` — one skull-stripped brain T1 slice,
  256×256, stored as 8-bit grey levels (written as uint8, spacing not recorded: 1 mm assumed).
- ``abdomen_t1.nii.gz``: pydicom-data ``MR-SIEMENS-DICOM-WithOverlays.dcm`` — one abdominal
  3D gradient-echo T1 slice (MPR), 484×484 at 0.72 mm.
- ``shoulder_t1.nii.gz``: pydicom-data ``MR2_UNCR.dcm`` — one shoulder spin-echo T1 slice,
  1024×1024 at 0.195 mm (noisy at that pixel size).
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import zipfile
from pathlib import Path

import nibabel as nib
import numpy as np


def _wheel(name: str, wheels: Path) -> Path:
    found = sorted(wheels.glob(f"{name.replace('-', '_')}-*.whl"))
    if not found:
        subprocess.run(
            [sys.executable, "-m", "pip", "download", "--no-deps", "-q", name, "-d", str(wheels)], check=True
        )
        found = sorted(wheels.glob(f"{name.replace('-', '_')}-*.whl"))
    return found[-1]


def _extract(wheel: Path, member: str, dest: Path) -> Path:
    with zipfile.ZipFile(wheel) as zf:
        zf.extract(member, dest)
    return dest / member


def _save(data: np.ndarray, affine: np.ndarray, path: Path) -> None:
    data = data[..., 0] if data.ndim == 4 else data
    data = data[:, :, None] if data.ndim == 2 else data
    nib.save(nib.Nifti1Image(data, affine), path)
    print(f"{path}: {data.shape} {data.dtype}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("outdir", type=Path, nargs="?", default=Path("heldout"), help="where the scans go")
    out = ap.parse_args().outdir
    wheels, raw = out / "wheels", out / "raw"
    wheels.mkdir(parents=True, exist_ok=True)
    nib_data = Path(nib.__file__).parent / "tests" / "data"
    for name, src in (("epi0", "example4d.nii.gz"), ("anatomical", "anatomical.nii")):
        img = nib.load(nib_data / src)
        _save(np.asarray(img.dataobj), img.affine, out / f"{name}.nii.gz")

    dipy = _wheel("dipy", wheels)
    for name, src in (("S0_10slices", "S0_10slices"), ("aniso_vox", "aniso_vox"), ("dwi_piesno", "test_piesno")):
        img = nib.load(_extract(dipy, f"dipy/data/files/{src}.nii.gz", raw))
        _save(np.asarray(img.dataobj), img.affine, out / f"{name}.nii.gz")
    slice_t1 = np.load(_extract(dipy, "dipy/data/files/t1_coronal_slice.npy", raw))
    _save(np.rint(np.clip(slice_t1, 0, 1) * 255).astype(np.uint8), np.eye(4), out / "t1_coronal.nii.gz")

    import pydicom  # test extra; only needed here

    pdata = _wheel("pydicom-data", wheels)
    for name, src in (("abdomen_t1", "MR-SIEMENS-DICOM-WithOverlays.dcm"), ("shoulder_t1", "MR2_UNCR.dcm")):
        ds = pydicom.dcmread(_extract(pdata, f"data_store/data/{src}", raw))
        rows, cols = (float(v) for v in ds.PixelSpacing)
        # pixel_array is (row, column); axis 0 of the volume runs along the columns.
        affine = np.diag([cols, rows, float(ds.SliceThickness), 1.0])
        _save(np.ascontiguousarray(ds.pixel_array.T), affine, out / f"{name}.nii.gz")  # native uint16


if __name__ == "__main__":
    main()
