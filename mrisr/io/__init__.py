"""Reading and writing volumes: the one volume contract of mrisr.

The volume contract
-------------------
Every reader returns, and every writer takes, a :class:`Volume`:

``data``
    A NumPy array in the *voxel index order of the file* — axes ``(i, j, k)`` for a 3D volume, or
    ``(i, j, k, t)`` for a 4D series (time points, diffusion directions). A 2D image is a 3D volume of
    depth 1, shape ``(i, j, 1)``. Values are in the scan's own physical units: NIfTI scaling
    (``scl_slope``/``scl_inter``) and DICOM rescale (``RescaleSlope``/``RescaleIntercept``) are applied.
    The array's dtype is the on-disk dtype when no scaling applies, else ``float32``/``float64``.
``affine``
    A 4×4 float64 matrix mapping voxel indices ``(i, j, k, 1)`` of voxel *centres* to **RAS+ world
    coordinates in mm** (x to the Right, y to the Anterior, z to the Superior). DICOM and ITK
    (MetaImage, NRRD) are LPS+: the conversion ``RAS = diag(-1, -1, 1) · LPS`` is one matrix, defined
    in :mod:`mrisr.io.dicom` and used by its reader and writer and by :mod:`mrisr.io.itk`. A NIfTI
    file whose ``xyzt_units`` says metres or micrometres is converted to mm on reading.
``dtype``
    The on-disk data type (without the scaling), which writers use by default through
    :func:`default_output_dtype`. A writer of an integer type stores real values with a scaling
    computed from their range (:func:`encode_values`); it never rounds them to whole units.
``fmt``
    ``"nifti"``, ``"dicom"``, ``"metaimage"`` or ``"nrrd"`` (the last two read through SimpleITK and
    written as NIfTI, :func:`same_output_format`; see :mod:`mrisr.io.formats` for what is refused).
``meta``
    What a writer needs to write the study back faithfully. NIfTI: ``header`` (a copy of the
    ``nibabel.Nifti1Header`` with qform/sform codes, units, intent, description, the 4th-dimension
    step). DICOM: ``tags`` (patient, study and series tags as ``{keyword: value}``) and ``dicom`` (a
    :class:`mrisr.io.dicom.DicomSource`: the source slices' headers, from which a derived series is made).

Anything that changes a grid (see :mod:`mrisr.geometry`) returns the new affine with the new array.

:func:`read_volume` and :func:`write_volume` are the one dispatch between the formats. This package
knows files, series and volumes, never studies: naming and grouping inputs into studies is
:mod:`mrisr.discovery`'s, which imports from here (never the reverse).
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Literal

import numpy as np

from mrisr.errors import UnsupportedDataError
from mrisr.geometry import voxel_spacing

Format = Literal["nifti", "dicom", "metaimage", "nrrd"]

NIFTI_SUFFIXES = (".nii", ".nii.gz")


@dataclass
class Volume:
    """A volume and its geometry (see the module docstring for the contract)."""

    data: np.ndarray
    affine: np.ndarray
    dtype: np.dtype
    fmt: Format
    path: Path | None = None
    meta: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.data.ndim == 2:
            self.data = self.data[:, :, None]
        if self.data.ndim not in (3, 4):
            raise ValueError(f"a volume is 3D or 4D, got shape {self.data.shape}")
        self.affine = np.asarray(self.affine, dtype=np.float64)
        self.dtype = np.dtype(self.dtype)

    @property
    def shape3(self) -> tuple[int, int, int]:
        """Spatial shape ``(i, j, k)``."""
        s = self.data.shape
        return (int(s[0]), int(s[1]), int(s[2]))

    @property
    def n_frames(self) -> int:
        """Number of 3D frames (1 for a 3D volume)."""
        return int(self.data.shape[3]) if self.data.ndim == 4 else 1

    @property
    def spacing(self) -> tuple[float, float, float]:
        """Voxel size in mm along ``(i, j, k)``."""
        return voxel_spacing(self.affine)

    def frame(self, t: int) -> np.ndarray:
        """The 3D array of frame ``t``."""
        return self.data[..., t] if self.data.ndim == 4 else self.data

    def with_data(self, data: np.ndarray, affine: np.ndarray) -> Volume:
        """A copy with a new array and affine (metadata kept), for a resampled grid."""
        return replace(self, data=data, affine=np.asarray(affine, dtype=np.float64))


def is_nifti_path(path: str | Path) -> bool:
    """True when the file name ends in ``.nii`` or ``.nii.gz``."""
    return str(path).lower().endswith(NIFTI_SUFFIXES)


def nifti_stem(path: str | Path) -> str:
    """File name without ``.nii``/``.nii.gz`` (or the suffix of another single-file image format
    mrisr reads: ``.mha``, ``.mhd``, ``.nrrd``, ``.nhdr``)."""
    from mrisr.io.formats import ITK_SUFFIXES

    name = Path(path).name
    for suf in (".nii.gz", ".nii", *ITK_SUFFIXES):
        if name.lower().endswith(suf):
            return name[: -len(suf)]
    return name


def same_output_format(fmt: Format) -> Literal["nifti", "dicom"]:
    """The format ``--format same`` writes a study of format ``fmt`` in: DICOM for DICOM, NIfTI for
    the rest (MetaImage and NRRD are read, not written)."""
    return "dicom" if fmt == "dicom" else "nifti"


def read_volume(path: str | Path) -> Volume:
    """Read a NIfTI, MetaImage or NRRD file, or a DICOM series: a folder holding one series, or one
    DICOM file alone (as ``mrisr enhance FILE`` reads it).

    For folders holding several series use :func:`mrisr.discovery.find_studies` and
    :meth:`mrisr.discovery.Study.load`, or :func:`mrisr.io.dicom.read_dicom_series` with the file
    list of one series.

    Raises:
        FileNotFoundError: ``path`` does not exist.
        UnreadableFileError, UnsupportedDataError, InconsistentGeometryError: See
            :func:`mrisr.io.nifti.read_nifti`, :func:`mrisr.io.itk.read_itk` and
            :func:`mrisr.io.dicom.read_dicom_path`; UnsupportedDataError also for a format mrisr
            refuses (:func:`mrisr.io.formats.refusal`).
    """
    p = Path(path)
    if is_nifti_path(p):
        from mrisr.io.nifti import read_nifti

        return read_nifti(p)
    from mrisr.io.formats import itk_format, refusal

    if itk_format(p) is not None:
        from mrisr.io.itk import read_itk

        return read_itk(p)
    refused = refusal(p) if p.is_file() else None
    if refused is not None:
        raise UnsupportedDataError(p, refused.reason)
    from mrisr.io.dicom import read_dicom_path

    return read_dicom_path(p)


def write_volume(vol: Volume, path: Path, fmt: str, dtype: np.dtype, *, description: str | None = None) -> None:
    """Write ``vol`` to ``path`` as NIfTI (a file) or DICOM (a series folder), replacing it atomically.

    Args:
        vol: The volume (see the module docstring).
        path: The ``.nii``/``.nii.gz`` file, or the folder of the DICOM series.
        fmt: ``"nifti"`` or ``"dicom"``.
        dtype: On-disk type of a NIfTI file (a DICOM series takes its source's, see
            :func:`mrisr.io.dicom.write_dicom_series`).
        description: Goes into a NIfTI header's ``descrip``.
    """
    if fmt == "dicom":
        from mrisr.io.dicom import write_dicom_series

        write_dicom_series(vol, path)
    else:
        from mrisr.io.nifti import write_nifti

        write_nifti(vol, path, dtype=dtype, description=description)


def check_finite(data: np.ndarray, path: str | Path | None) -> None:
    """Refuse an array holding NaN or infinite values (no network, metric or writer takes them).

    Raises:
        UnsupportedDataError: Naming ``path`` and how many voxels are not finite.
    """
    finite = np.isfinite(data)
    if not finite.all():
        raise UnsupportedDataError(path, f"{int(finite.size - finite.sum())} NaN/Inf voxels of {data.size}")


def cast_to_dtype(data: np.ndarray, dtype: np.dtype | str, *, chunk: int = 16) -> np.ndarray:
    """Cast float data to ``dtype``: integers are rounded and clipped to the type's range.

    Works in blocks of ``chunk`` indices along axis 0, so that no full-size temporary is made; an
    array already of a float ``dtype`` is returned as it is.
    """
    dt = np.dtype(dtype)
    arr = np.asarray(data)
    if dt == np.bool_:
        return arr > 0.5
    if not np.issubdtype(dt, np.integer):
        return arr if arr.dtype == dt else arr.astype(dt)
    info = np.iinfo(dt)
    out = np.empty(arr.shape, dtype=dt)
    for start in range(0, arr.shape[0], chunk):
        block = np.rint(arr[start : start + chunk])
        np.clip(block, info.min, info.max, out=block)
        out[start : start + chunk] = block
    return out


#: NIfTI-1 stores ``scl_slope`` and ``scl_inter`` as float32.
_F32 = np.float32
#: Share of an integer type's range left unused, so that float32 rounding of the intercept cannot
#: push an extreme value out of the type's range.
_HEADROOM = 1e-3


def default_output_dtype(dtype: np.dtype | str) -> np.dtype:
    """The on-disk type an SR result of data stored as ``dtype`` is written in when none is asked.

    The input's own type, except 8-bit integers, which become ``int16``: 255 steps of a scaling
    cannot hold a real-valued result to 60 dB (at best 20·log10(255·√12) = 58.9 dB).
    """
    dt = np.dtype(dtype)
    return np.dtype(np.int16) if np.issubdtype(dt, np.integer) and dt.itemsize == 1 else dt


def _integral(arr: np.ndarray, chunk: int) -> bool:
    if np.issubdtype(arr.dtype, np.integer):
        return True
    return all(np.array_equal(b, np.rint(b)) for b in (arr[s : s + chunk] for s in range(0, arr.shape[0], chunk)))


def encode_values(data: np.ndarray, dtype: np.dtype | str, *, chunk: int = 16) -> tuple[np.ndarray, float, float]:
    """Stored values and the scaling ``(slope, inter)`` that hold ``data`` in ``dtype``:
    ``data ≈ stored * slope + inter``.

    Float types store the values as they are (slope 1, intercept 0). Integer types store whole
    numbers that fit the type as they are; any other values with a slope and intercept (float32, as
    NIfTI holds them) that map the data's range onto the type's whole range, so that the error is at
    most half a slope: (max − min) / 131070 for ``int16``, whatever the input's scaling was.

    Args:
        data: Values in physical units, any shape.
        dtype: The on-disk type.
        chunk: Indices along axis 0 worked on at a time (no full-size float temporary is made).

    Returns:
        The stored array (of ``dtype``), slope and intercept.
    """
    dt = np.dtype(dtype)
    arr = np.asarray(data)
    if not np.issubdtype(dt, np.integer):
        return (arr if arr.dtype == dt else arr.astype(dt)), 1.0, 0.0
    info = np.iinfo(dt)
    lo, hi = (float(arr.min()), float(arr.max())) if arr.size else (0.0, 0.0)
    if info.min <= lo and hi <= info.max and _integral(arr, chunk):
        return cast_to_dtype(arr, dt, chunk=chunk), 1.0, 0.0
    if hi == lo:  # one value (not whole, or out of range): all in the intercept
        return np.zeros(arr.shape, dtype=dt), 1.0, float(_F32(lo))
    slope = float(_F32((hi - lo) / ((float(info.max) - float(info.min)) * (1.0 - _HEADROOM))))
    mid_stored = (float(info.max) + float(info.min)) / 2.0
    inter = float(_F32((hi + lo) / 2.0 - mid_stored * slope))
    out = np.empty(arr.shape, dtype=dt)
    for start in range(0, arr.shape[0], chunk):
        block = np.rint((arr[start : start + chunk].astype(np.float64) - inter) / slope)
        np.clip(block, info.min, info.max, out=block)
        out[start : start + chunk] = block
    return out, slope, inter


def as_written(data: np.ndarray, dtype: np.dtype | str) -> np.ndarray:
    """The values a reader gets back when ``data`` is written as ``dtype`` (:func:`encode_values`),
    as float32 (float64 for float64); what metrics of a written output are computed on."""
    dt = np.dtype(dtype)
    stored, slope, inter = encode_values(data, dt)
    if not np.issubdtype(dt, np.integer):
        return stored
    out = stored.astype(np.float32)
    if slope != 1.0 or inter != 0.0:
        out *= _F32(slope)
        out += _F32(inter)
    return out
