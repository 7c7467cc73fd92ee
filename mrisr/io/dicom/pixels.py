"""Pixel data of DICOM slices and frames: length checks, decoding, rescale.

SimpleITK (GDCM) decodes single-frame slices (it handles the compressed transfer syntaxes); it is
imported inside the function that needs it. pydicom decodes where SimpleITK is not installed, and
always decodes multi-frame objects, whose rescale may differ per frame.

One rule for every reader: a voxel's value is its *stored* value × RescaleSlope + RescaleIntercept,
whatever the PhotometricInterpretation. A MONOCHROME1 image (low values displayed white) is not
inverted: its values stay the scanner's physical values, and a series derived from it says
MONOCHROME1 too (:func:`mrisr.io.dicom.write_dicom_series`), so that it displays as its source did.
GDCM (under SimpleITK) inverts MONOCHROME1 stored values on reading, so such slices are decoded with
pydicom, which does not; where pydicom has no decoder for the transfer syntax, GDCM's inversion is
undone (:func:`_undo_gdcm_inversion`).

SimpleITK returns a full ``Rows × Columns`` buffer even when the file holds fewer pixel bytes,
with its tail never written (uninitialised memory), so the length of native (uncompressed) pixel
data is checked against the header before any decoder sees it.
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pydicom
from pydicom.dataelem import RawDataElement
from pydicom.dataset import Dataset
from pydicom.errors import InvalidDicomError
from pydicom.uid import UID

from mrisr.errors import UnreadableFileError, UnsupportedDataError

log = logging.getLogger(__name__)

_DECODE_ERRORS = (InvalidDicomError, OSError, EOFError, ValueError, RuntimeError, NotImplementedError, AttributeError)


def _header_int(ds: Dataset, keyword: str, default: int) -> int:
    try:
        value = ds.get(keyword)
        return default if value in (None, "") else int(value)
    except (TypeError, ValueError):
        return default


def rescale(ds: Dataset, path: Path | None = None) -> tuple[float, float]:
    """``(RescaleSlope, RescaleIntercept)`` of a header, ``(1, 0)`` where absent or empty.

    Raises:
        UnreadableFileError: A value that is not one finite number, or a slope of 0 (the values
            would be guessed, not read).
    """
    try:
        raw_slope, raw_inter = ds.get("RescaleSlope"), ds.get("RescaleIntercept")
        slope = 1.0 if raw_slope in (None, "") else float(raw_slope)
        inter = 0.0 if raw_inter in (None, "") else float(raw_inter)
    except (TypeError, ValueError) as exc:
        raise UnreadableFileError(
            path, f"bad RescaleSlope/RescaleIntercept {ds.get('RescaleSlope')!r}/{ds.get('RescaleIntercept')!r}"
        ) from exc
    if not (np.isfinite(slope) and np.isfinite(inter)) or slope == 0:
        raise UnreadableFileError(path, f"bad RescaleSlope/RescaleIntercept {slope!r}/{inter!r}")
    return slope, inter


def _transfer_syntax(ds: Dataset) -> UID | None:
    meta = getattr(ds, "file_meta", None)
    ts = meta.get("TransferSyntaxUID") if meta is not None else None
    return UID(str(ts)) if ts else None


#: The pydicom decoder plugins of the ``dicom-codecs`` extra (pyproject.toml): JPEG baseline,
#: extended (12-bit), lossless and JPEG-LS (pylibjpeg-libjpeg), JPEG 2000 (pylibjpeg-openjpeg), RLE.
CODEC_PACKAGES = ("pylibjpeg", "pylibjpeg-libjpeg", "pylibjpeg-openjpeg", "pylibjpeg-rle")


def _first_line(exc: BaseException) -> str:
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    return lines[0] if lines else type(exc).__name__


def decoder_available(ds: Dataset) -> bool:
    """Whether an installed pydicom plugin decodes the pixel data's transfer syntax (uncompressed
    syntaxes always; ``False`` when pydicom cannot tell, as pydicom 2 cannot)."""
    ts = _transfer_syntax(ds)
    if ts is None or not ts.is_valid or not ts.is_compressed:
        return True
    try:
        from pydicom.pixels import get_decoder
    except ImportError:  # pydicom 2: no way to ask
        return False
    try:
        return bool(get_decoder(ts).is_available)
    except (NotImplementedError, ValueError):  # a compressed syntax pydicom has no decoder for at all
        return False


def no_decoder_error(path: Path, ds: Dataset) -> UnsupportedDataError:
    """The error for pixel data that no installed pydicom plugin decodes, naming what to install."""
    ts = _transfer_syntax(ds)
    name = ts.name if ts is not None else "unknown transfer syntax"
    return UnsupportedDataError(
        path,
        f"no installed decoder for {name} pixel data: pip install 'mrisr[dicom-codecs]' "
        f"(pydicom plugins {', '.join(CODEC_PACKAGES)})",
    )


def check_pixel_length(path: Path, ds: Dataset) -> None:
    """Refuse a file whose native pixel data hold fewer bytes than its header promises.

    ``ds`` is the header read with pixel data deferred (or read). Encapsulated (compressed) pixel
    data are left to the decoder, which fails on a cut-short fragment.

    Raises:
        UnreadableFileError: Naming ``path``, the bytes present and the bytes needed.
    """
    ts = _transfer_syntax(ds)
    if ts is not None and ts.is_valid and ts.is_compressed:
        return
    raw = ds.get_item("PixelData", keep_deferred=True)
    if raw is None:
        raise UnreadableFileError(path, "no pixel data")
    if isinstance(raw, RawDataElement):
        if raw.length == 0xFFFFFFFF:  # undefined length: encapsulated, whatever the meta says
            return
        present = int(raw.length) if raw.value is None else len(raw.value)
        # value_tell is an offset into the file, except in a deflated dataset (into the inflated stream)
        deflated = ts is not None and ts.is_valid and ts.is_deflated
        if raw.value is None and raw.value_tell is not None and not deflated:
            try:
                size = path.stat().st_size
            except OSError as exc:
                raise UnreadableFileError(path, f"cannot be read ({exc.strerror or exc})") from exc
            present = max(0, min(present, size - int(raw.value_tell)))
    else:
        value = raw.value
        present = len(value) if isinstance(value, (bytes, bytearray)) else 0
    rows, cols = _header_int(ds, "Rows", 0), _header_int(ds, "Columns", 0)
    frames = max(1, _header_int(ds, "NumberOfFrames", 1))
    samples = max(1, _header_int(ds, "SamplesPerPixel", 1))
    bits = _header_int(ds, "BitsAllocated", 16)
    count = rows * cols * frames * samples
    needed = (count + 7) // 8 if bits == 1 else count * max(1, bits // 8)
    if present < needed:
        raise UnreadableFileError(
            path,
            f"pixel data hold {present} bytes, Rows×Columns×frames ({rows}×{cols}×{frames}) at "
            f"{bits} bits need {needed} (truncated file?)",
        )


def is_monochrome1(ds: Dataset) -> bool:
    """True for an image whose PhotometricInterpretation is MONOCHROME1 (minimum value shown white)."""
    return str(ds.get("PhotometricInterpretation", "") or "").strip().upper() == "MONOCHROME1"


def read_slice_pixels(path: Path, ds: Dataset, shape: tuple[int, int]) -> np.ndarray:
    """Pixels of one single-frame slice in physical units (stored × slope + intercept, never
    inverted), ``(rows, columns)``, float64.

    Raises:
        UnreadableFileError: Short or undecodable pixel data, or a size other than ``shape``.
    """
    check_pixel_length(path, ds)
    try:
        import SimpleITK  # noqa: F401
    except ImportError:
        log.debug("SimpleITK not available; decoding %s with pydicom", path)
        return _read_pixels_pydicom(path, shape)
    if not is_monochrome1(ds):
        return _read_pixels_sitk(path, shape)
    try:
        return _read_pixels_pydicom(path, shape, missing_codec_ok=True)
    except _NoDecoderError:
        log.debug("pydicom cannot decode %s; undoing GDCM's MONOCHROME1 inversion", path)
        return _undo_gdcm_inversion(_read_pixels_sitk(path, shape), ds, path)


class _NoDecoderError(Exception):
    """pydicom has no installed decoder for the pixel data's transfer syntax."""


def _read_pixels_sitk(path: Path, shape: tuple[int, int]) -> np.ndarray:
    import SimpleITK as sitk  # noqa: N813

    try:
        img = sitk.ReadImage(str(path), sitk.sitkFloat64, imageIO="GDCMImageIO")
    except RuntimeError as exc:
        msg = str(exc).strip().splitlines()
        raise UnreadableFileError(path, f"cannot read pixel data ({msg[-1] if msg else 'SimpleITK error'})") from exc
    arr = sitk.GetArrayFromImage(img)
    if arr.size != shape[0] * shape[1]:
        raise UnreadableFileError(path, f"pixel data of {arr.shape} does not match Rows×Columns {shape}")
    return arr.reshape(shape)


def _undo_gdcm_inversion(values: np.ndarray, ds: Dataset, path: Path) -> np.ndarray:
    """Physical values of a MONOCHROME1 slice from what GDCM gave for it.

    GDCM turns MONOCHROME1 into MONOCHROME2 by storing ``M − v`` for a stored value ``v`` (``M`` =
    2**BitsStored − 1 for unsigned pixels, −1 for signed ones) before the rescale, so it gives
    ``g = slope·(M − v) + inter``; the physical value ``slope·v + inter`` is ``slope·M + 2·inter − g``.
    """
    slope, inter = rescale(ds, path)
    bits = _header_int(ds, "BitsStored", _header_int(ds, "BitsAllocated", 16))
    top = -1.0 if _header_int(ds, "PixelRepresentation", 0) == 1 else float(2**bits - 1)
    return slope * top + 2.0 * inter - values


def _decode_pydicom(path: Path) -> tuple[Dataset, np.ndarray]:
    """The dataset of ``path`` and its stored pixel values (float64) as pydicom decodes them.

    Raises:
        UnsupportedDataError: Compressed pixel data that no installed pydicom plugin decodes (the
            message names what to install).
        UnreadableFileError: A file or pixel data that cannot be read.
    """
    try:
        ds = pydicom.dcmread(path)
    except _DECODE_ERRORS as exc:
        raise UnreadableFileError(path, f"cannot read pixel data ({_first_line(exc)})") from exc
    try:
        return ds, np.asarray(ds.pixel_array, dtype=np.float64)
    except (NotImplementedError, RuntimeError) as exc:
        if not decoder_available(ds):
            raise no_decoder_error(path, ds) from exc
        raise UnreadableFileError(path, f"cannot read pixel data ({_first_line(exc)})") from exc
    except _DECODE_ERRORS as exc:
        raise UnreadableFileError(path, f"cannot read pixel data ({_first_line(exc)})") from exc


def _read_pixels_pydicom(path: Path, shape: tuple[int, int], *, missing_codec_ok: bool = False) -> np.ndarray:
    """Pixels decoded by pydicom with the rescale applied (pydicom never inverts MONOCHROME1).

    Raises:
        _NoDecoderError: With ``missing_codec_ok``, when no installed pydicom plugin decodes the data.
        UnsupportedDataError: Without it, in that case (naming what to install).
        UnreadableFileError: Undecodable pixel data or a size other than ``shape``.
    """
    try:
        ds, arr = _decode_pydicom(path)
    except UnsupportedDataError as exc:
        if missing_codec_ok:
            raise _NoDecoderError(exc.reason) from exc
        raise
    if arr.size != shape[0] * shape[1]:
        raise UnreadableFileError(path, f"pixel data of {arr.shape} does not match Rows×Columns {shape}")
    slope, inter = rescale(ds, path)
    return arr.reshape(shape) * slope + inter


def read_frame_pixels(path: Path, ds: Dataset, shape: tuple[int, int]) -> np.ndarray:
    """Stored pixel values of every frame of a multi-frame object, ``(frames, rows, columns)``, float64.

    The rescale of each frame (its own functional groups) is applied by the caller.

    Raises:
        UnreadableFileError: Short or undecodable pixel data.
        UnsupportedDataError: Compressed pixel data that no installed pydicom plugin decodes.
    """
    check_pixel_length(path, ds)
    frames = max(1, _header_int(ds, "NumberOfFrames", 1))
    _, arr = _decode_pydicom(path)
    if arr.size != frames * shape[0] * shape[1]:
        raise UnreadableFileError(path, f"pixel data of {arr.shape} do not match {frames} frames of {shape}")
    return arr.reshape(frames, *shape)
