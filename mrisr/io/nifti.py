"""NIfTI-1/2 reading and writing through nibabel, honouring the volume contract of :mod:`mrisr.io`."""

from __future__ import annotations

import gzip
import logging
import math
import os
import zlib
from pathlib import Path

import nibabel as nib
import numpy as np
from nibabel.filebasedimages import ImageFileError
from nibabel.spatialimages import HeaderDataError

from mrisr.errors import UnreadableFileError, UnsupportedDataError
from mrisr.fsutil import atomic_path
from mrisr.io import Volume, default_output_dtype, encode_values
from mrisr.io.nifti_header import SPATIAL_UNIT_BITS, output_header, set_spatial_unit_mm

log = logging.getLogger(__name__)

_READ_ERRORS = (
    ImageFileError,
    HeaderDataError,
    EOFError,
    OSError,
    zlib.error,
    gzip.BadGzipFile,
    ValueError,
    TypeError,
    IndexError,
)


#: Deflate cannot expand data more than about 1032-fold; a .gz file that would need more holds less
#: than its header promises, whatever its gzip trailer says.
_MAX_DEFLATE_RATIO = 1032


def _gunzipped_bytes(path: Path, limit: int) -> int:
    """Bytes that ``path`` decompresses to, counted up to ``limit`` in bounded chunks (no allocation
    of the whole). Reads every member of a multi-member file (bgzip) and skips zero padding between
    and after members, as Python's gzip module (and so nibabel) does."""
    total = 0
    dec = zlib.decompressobj(16 + zlib.MAX_WBITS)
    with open(path, "rb") as fh:
        buf = b""
        while total < limit:
            if not buf:
                buf = fh.read(1 << 20)
                if not buf:
                    break
            if dec.eof:  # between members: zero padding, or the next member
                buf = buf.lstrip(b"\0")
                if not buf:
                    continue
                dec = zlib.decompressobj(16 + zlib.MAX_WBITS)
            total += len(dec.decompress(buf, 1 << 24))
            buf = dec.unused_data if dec.eof else dec.unconsumed_tail
    return total


def _check_size(path: Path, img: nib.Nifti1Image | nib.Nifti2Image) -> None:
    """Refuse a file that holds fewer bytes than its header promises, before memory is allocated
    for them (a corrupt header can promise terabytes), at any size.

    A ``.gz`` file is refused at once when even deflate's best ratio could not make its size hold
    the promise; it is accepted at once when its gzip trailer (the last member's size modulo 2³²)
    shows enough; otherwise (several members as bgzip writes, zero padding, over 4 GiB) its
    decompressed bytes are counted in bounded chunks up to the promised size.

    Raises:
        UnreadableFileError: The file is too short for the header's shape and data type.
    """
    offset = int(getattr(img.dataobj, "offset", img.header.get_data_offset()))
    need = offset + math.prod(img.shape) * img.get_data_dtype().itemsize
    size = path.stat().st_size
    if not path.name.lower().endswith(".gz"):
        have = size
    elif need > _MAX_DEFLATE_RATIO * size + 4096:
        raise UnreadableFileError(
            path,
            f"truncated file (its header promises {need} bytes of header and voxels; "
            f"{size} compressed bytes cannot hold more than {_MAX_DEFLATE_RATIO * size})",
        )
    else:
        with open(path, "rb") as fh:
            fh.seek(-4, os.SEEK_END)
            trailer = int.from_bytes(fh.read(4), "little")
        if (trailer >= need) if need < 1 << 32 else (trailer == need % (1 << 32)):
            return
        have = _gunzipped_bytes(path, need)
    if have < need:
        raise UnreadableFileError(
            path, f"truncated file (its header promises {need} bytes of header and voxels, it holds {have})"
        )


def _diagnose(path: Path) -> str | None:
    """Why nibabel could not read ``path``, in words (``None`` when nothing specific is found)."""
    try:
        if path.name.lower().endswith(".gz"):
            with gzip.open(path, "rb") as fh:
                head = fh.read(540)
                while fh.read(1 << 20):
                    pass
        else:
            with open(path, "rb") as fh:
                head = fh.read(540)
    except gzip.BadGzipFile:
        return "not a gzip file (the .gz name promises one)"
    except EOFError:
        return "truncated file (the gzip stream ends early)"
    except (OSError, zlib.error) as exc:
        return f"unreadable ({exc})"
    if len(head) < 348:
        return f"truncated file (too short for a NIfTI header: {len(head)} bytes)"
    if head[344:348] not in (b"n+1\0", b"ni1\0") and head[4:8] not in (b"n+2\0", b"ni2\0"):
        return "not a NIfTI file (no NIfTI magic in the header)"
    return None


#: Millimetres per spatial unit of ``xyzt_units`` (its low 3 bits): 1 metre, 2 mm, 3 micrometre.
#: Unknown (0) and the codes NIfTI does not define (4-7) are taken as mm, as NIfTI readers
#: conventionally do.
_MM_PER_UNIT = {1: 1000.0, 2: 1.0, 3: 0.001}


def mm_per_unit(header: nib.Nifti1Header) -> float:
    """Millimetres per spatial unit that ``header``'s ``xyzt_units`` states (1000 for metres, 0.001
    for micrometres, 1 for mm and for unknown). The time bits of the same field are ignored."""
    return _MM_PER_UNIT.get(int(header["xyzt_units"]) & SPATIAL_UNIT_BITS, 1.0)


def affine_in_mm(header: nib.Nifti1Header) -> np.ndarray:
    """``header``'s voxel-to-RAS affine (nibabel's precedence: sform, qform, pixdim) in mm, whatever
    spatial unit the file states (:func:`mm_per_unit`)."""
    scale = mm_per_unit(header)
    return np.diag([scale, scale, scale, 1.0]) @ np.asarray(header.get_best_affine(), dtype=np.float64)


def header_in_mm(header: nib.Nifti1Header) -> nib.Nifti1Header:
    """A copy of ``header`` whose qform, sform and voxel sizes are in mm and whose spatial unit says
    mm (the time unit and the 4th dimension's step untouched), so that writers that map the input's
    header onto a new grid (:mod:`mrisr.io.nifti_header`) work in the contract's unit."""
    hdr = header.copy()
    scale = mm_per_unit(header)
    if scale != 1.0:
        to_mm = np.diag([scale, scale, scale, 1.0])
        q_code, s_code = int(header["qform_code"]), int(header["sform_code"])
        # Codes 0 keep 0; the matrices are still scaled (pixdim holds the voxel size either way).
        hdr.set_qform(to_mm @ header.get_qform(), code=q_code)
        hdr.set_sform(to_mm @ header.get_sform(), code=s_code)  # pixdim[4], the time step, untouched
    set_spatial_unit_mm(hdr)
    return hdr


def read_nifti(path: str | Path) -> Volume:
    """Read a ``.nii``/``.nii.gz`` file into a :class:`~mrisr.io.Volume`.

    The affine follows nibabel's precedence (sform when its code is set, else qform, else the
    pixdim-only fallback), converted to mm from the spatial unit ``xyzt_units`` states (metres ×1000,
    micrometres ×0.001; unknown is taken as mm), and ``meta["header"]`` is that header in mm
    (:func:`header_in_mm`). Scaled data are returned in physical units (float).

    Raises:
        UnreadableFileError: Empty, truncated, not gzip, not NIfTI, or unreadable file.
        UnsupportedDataError: More than 4 non-singleton dimensions, or a non-numeric dtype (RGB).
    """
    p = Path(path)
    try:
        if p.stat().st_size == 0:
            raise UnreadableFileError(p, "empty file (0 bytes)")
        img = nib.load(str(p))
        if not isinstance(img, (nib.Nifti1Image, nib.Nifti2Image)):
            raise UnreadableFileError(p, f"not a NIfTI image ({type(img).__name__})")
        _check_size(p, img)
        try:
            data = np.asanyarray(img.dataobj)
        except MemoryError as exc:
            shape, dt = img.shape, img.get_data_dtype()
            need = math.prod(shape) * dt.itemsize / 1e9
            raise UnreadableFileError(p, f"its {shape} voxels of {dt} ({need:.1f} GB) do not fit in memory") from exc
    except UnreadableFileError:
        raise
    except gzip.BadGzipFile as exc:
        raise UnreadableFileError(p, f"not a valid gzip file ({exc})") from exc
    except EOFError as exc:
        raise UnreadableFileError(p, "truncated file (unexpected end of data)") from exc
    except _READ_ERRORS as exc:
        msg = _diagnose(p) or (str(exc).splitlines()[0] if str(exc) else type(exc).__name__)
        if "truncated" in msg.lower() or "too short" in msg.lower() or "buffer is too small" in msg:
            msg = f"truncated file ({msg})" if not msg.startswith("truncated") else msg
        raise UnreadableFileError(p, msg.replace(f'"{p}"', "").replace(f"'{p}'", "").strip(" :")) from exc
    if data.dtype.fields is not None or not np.issubdtype(data.dtype, np.number):
        raise UnsupportedDataError(p, f"non-scalar voxel type {data.dtype} (RGB or complex?)")
    if np.iscomplexobj(data):
        raise UnsupportedDataError(p, "complex-valued data")
    while data.ndim > 4 and data.shape[-1] == 1:
        data = data[..., 0]
    if data.ndim > 4:
        if all(n == 1 for n in data.shape[4:]):
            data = data.reshape(data.shape[:4])
        else:
            raise UnsupportedDataError(p, f"{data.ndim}D data of shape {data.shape} (at most 4D)")
    if data.ndim == 4 and data.shape[3] == 1:
        data = data[..., 0]
    if data.ndim < 2 or data.size == 0:
        raise UnsupportedDataError(p, f"no image data (shape {data.shape})")
    header = header_in_mm(img.header)
    # nibabel moves the scaling from a loaded header into the array proxy (the header then reads
    # NaN); put it back so that writers know the input stored scaled integers.
    slope = float(getattr(img.dataobj, "slope", 1.0))
    inter = float(getattr(img.dataobj, "inter", 0.0))
    header.set_slope_inter(slope, inter)
    return Volume(
        data=np.asarray(data),
        affine=affine_in_mm(img.header),
        dtype=img.get_data_dtype(),
        fmt="nifti",
        path=p,
        meta={"header": header},
    )


def write_nifti(
    volume: Volume,
    path: str | Path,
    *,
    dtype: np.dtype | str | None = None,
    description: str | None = None,
) -> Path:
    """Write ``volume`` to ``path`` atomically (``.nii`` or ``.nii.gz``).

    Values: written as ``dtype`` by :func:`mrisr.io.encode_values`; real values in an integer type
    get a slope and intercept computed from their range (never rounded to whole units).
    Header: :func:`mrisr.io.nifti_header.output_header` (NIfTI-2 when a dimension exceeds NIfTI-1's
    32,767, spatial unit mm, qform and sform each mapped with their own
    codes, codes 0 kept, slice timing cleared when the slice axis changed).

    Args:
        volume: The volume; ``volume.data`` in physical units.
        path: Target file.
        dtype: On-disk type; default :func:`mrisr.io.default_output_dtype` of ``volume.dtype``.
        description: Text for the header's ``descrip`` (default: the input's).

    Returns:
        The path written.
    """
    out = Path(path)
    dt = np.dtype(dtype) if dtype is not None else default_output_dtype(volume.dtype)
    src = volume.meta.get("header")
    header = output_header(
        src if isinstance(src, nib.Nifti1Header) else None,
        volume.affine,
        volume.data.shape,
        description=description,
    )
    stored, slope, inter = encode_values(volume.data, dt)
    header.set_data_dtype(dt)
    kind = nib.Nifti2Image if isinstance(header, nib.Nifti2Header) else nib.Nifti1Image
    img = kind(stored, None, header=header)
    # The constructor resets the scaling; set after it, it is written as it is (nibabel computes none).
    img.header.set_slope_inter(slope, inter)
    with atomic_path(out) as tmp:
        nib.save(img, str(tmp))
    log.debug("wrote %s", out)
    return out
