"""The header of a written NIfTI file: what is carried over from the input's header, what is refined
with the grid, and what is cleared because it no longer holds.

The rule (also in ``docs/usage.md``, "Values and headers"):

- The header is NIfTI-1, or NIfTI-2 when a dimension of the output exceeds NIfTI-1's 32,767
  (whatever the input's kind). Its spatial unit is mm (the volume contract's unit: the reader
  converted a metre or micrometre input's affine, :func:`mrisr.io.nifti.read_nifti`), its time
  unit the input's.
- The writer gets the output's affine; the *voxel map* ``V = inv(A_in) · A_out`` (``A_in`` the
  input's affine, as nibabel chose it) takes output voxel indices to input ones — for a grid refined
  by :func:`mrisr.geometry.refine_affine` it is that function's step matrix. The qform and the
  sform are each mapped by ``V`` and keep their own codes: ``Q_out = Q_in · V``, ``S_out = S_in · V``.
- A code of 0 stays 0 (the input claimed no orientation, the output claims none either).
- Units, intent (except label-like and non-scalar intents, whose meaning interpolation destroys),
  TR (``pixdim[4]``), ``toffset``, ``cal_min``/``cal_max``, ``aux_file`` and the extensions are kept.
- Slice timing (``slice_code``, ``slice_start``, ``slice_end``, ``slice_duration``) and the slice
  axis of ``dim_info`` are kept only when the slice axis (``dim_info``'s, else axis 2) is untouched:
  same count, same spacing, same first slice. Frequency and phase axes stay (refining an axis keeps
  which acquisition axis it is).
- ``descrip`` is the caller's text (mrisr's version and the scale), else the input's.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

import nibabel as nib
import numpy as np

from mrisr.geometry import untouched_axes
from mrisr.io import Volume

log = logging.getLogger(__name__)

#: Intent codes whose values interpolation no longer fits: label (1002), NeuroNames (1003), matrix,
#: vector, point set, triangle, quaternion (1004–1010), node index (2002) and RGB/RGBA (2003, 2004).
_CLEARED_INTENTS = frozenset({1002, 1003, *range(1004, 1011), 2002, 2003, 2004})
_SLICE_FIELDS = ("slice_code", "slice_start", "slice_end", "slice_duration")
#: The largest dimension a NIfTI-1 header holds (``dim`` is int16); beyond it NIfTI-2 (int64).
NIFTI1_MAX_DIM = 32767
#: The bits of ``xyzt_units`` that hold the spatial unit (the others hold the time unit).
SPATIAL_UNIT_BITS = 0x07
_UNIT_MM = 2


def set_spatial_unit_mm(hdr: nib.Nifti1Header) -> None:
    """Make ``hdr``'s ``xyzt_units`` say mm for space, keeping its time unit."""
    hdr["xyzt_units"] = (int(hdr["xyzt_units"]) & ~SPATIAL_UNIT_BITS) | _UNIT_MM


def orientation_unknown(header: nib.Nifti1Header) -> bool:
    """True when both the qform and the sform code are 0 (the file claims no orientation)."""
    return int(header["qform_code"]) == 0 and int(header["sform_code"]) == 0


def warn_if_orientation_unknown(vol: Volume) -> None:
    """One warning line when a NIfTI volume's header claims no orientation (both codes 0)."""
    header = vol.meta.get("header")
    if vol.fmt == "nifti" and isinstance(header, nib.Nifti1Header) and orientation_unknown(header):
        log.warning("%s: qform and sform codes are 0: orientation unknown (the output keeps code 0)", vol.path)


def output_header(
    src: nib.Nifti1Header | None,
    affine: np.ndarray,
    shape: Sequence[int],
    *,
    description: str | None = None,
) -> nib.Nifti1Header:
    """The NIfTI-1 header (NIfTI-2 when a dimension exceeds :data:`NIFTI1_MAX_DIM`) of an output on
    the grid ``affine``/``shape`` made from an input with header ``src`` (see the module docstring
    for the rule).

    Args:
        src: The input's header (``Volume.meta["header"]``), or ``None`` (an input that was not
            NIfTI, e.g. DICOM: its positions are scanner coordinates, so both codes become 1).
        affine: The output's 4×4 voxel-to-RAS affine (mm).
        shape: The output's array shape.
        description: Text for ``descrip`` (at most 80 bytes are kept).

    Returns:
        A new header; its data type, shape and scaling are set by the writer.
    """
    out_aff = np.asarray(affine, dtype=np.float64)
    kind = nib.Nifti2Header if any(int(n) > NIFTI1_MAX_DIM for n in shape) else nib.Nifti1Header
    if not isinstance(src, nib.Nifti1Header):
        hdr = kind()
        hdr.set_data_shape(tuple(int(n) for n in shape))
        hdr.set_qform(out_aff, code=1)
        hdr.set_sform(out_aff, code=1)
    else:
        hdr = src.copy() if type(src) is kind else kind.from_header(src)
        in_shape = tuple(int(n) for n in src.get_data_shape())
        hdr.set_data_shape(tuple(int(n) for n in shape))
        vox = np.linalg.solve(src.get_best_affine(), out_aff)
        vox[np.abs(vox) < 1e-12] = 0.0  # solver round-off, not a shear
        q_in, q_code = src.get_qform(coded=True)
        s_in, s_code = src.get_sform(coded=True)
        q_out = q_in @ vox if q_in is not None else out_aff
        s_out = s_in @ vox if s_in is not None else out_aff
        # A code of 0 stays 0; the matrix is still written so that pixdim holds the new voxel size.
        hdr.set_qform(q_out, code=int(q_code))
        hdr.set_sform(s_out, code=int(s_code))
        _carry_fields(hdr, src, vox, in_shape, tuple(int(n) for n in shape))
    if len(shape) >= 4 and isinstance(src, nib.Nifti1Header) and len(src.get_zooms()) >= 4:
        zooms = list(hdr.get_zooms())
        zooms[3] = src.get_zooms()[3]
        hdr.set_zooms(zooms)
    set_spatial_unit_mm(hdr)
    if description is not None:
        hdr["descrip"] = description.encode("utf-8")[:80]
    return hdr


def _carry_fields(
    hdr: nib.Nifti1Header,
    src: nib.Nifti1Header,
    vox: np.ndarray,
    in_shape: tuple[int, ...],
    out_shape: tuple[int, ...],
) -> None:
    """Clear what the new grid or values make false (slice timing, label-like intents)."""
    freq, phase, slice_dim = src.get_dim_info()
    axis = 2 if slice_dim is None else int(slice_dim)
    shape_in, shape_out = (tuple(s[:3]) + (1,) * (3 - len(s[:3])) for s in (in_shape, out_shape))
    if not untouched_axes(np.eye(4), shape_in, vox, shape_out)[axis]:
        for name in _SLICE_FIELDS:
            hdr[name] = 0
        hdr.set_dim_info(freq, phase, None)
    if int(src["intent_code"]) in _CLEARED_INTENTS:
        hdr.set_intent(0, (), name="")
