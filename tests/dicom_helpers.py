"""Helpers for the DICOM tests: dciodvfy, series built from real files, Enhanced MR objects.

Everything is built from files shipped with pydicom (``MR_small.dcm``) and nibabel (a real Philips
Enhanced MR MPRAGE header, ``philips_mprage.dcm.gz``, whose pixel data are all zero).
"""

from __future__ import annotations

import copy
import gzip
import io
import math
import shutil
import struct
import subprocess
from collections.abc import Sequence
from pathlib import Path

import nibabel
import numpy as np
import pydicom
import pytest
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import generate_uid

DCIODVFY = shutil.which("dciodvfy")
needs_dciodvfy = pytest.mark.skipif(
    DCIODVFY is None, reason="dciodvfy is not installed (Debian package dicom3tools; .ci/run installs it)"
)

PHILIPS_MPRAGE = Path(nibabel.__file__).parent / "nicom" / "tests" / "data" / "philips_mprage.dcm.gz"


def dciodvfy_errors(path: Path) -> set[str]:
    """The ``Error`` lines dciodvfy prints for one file."""
    assert DCIODVFY is not None
    run = subprocess.run([DCIODVFY, str(path)], capture_output=True, text=True, timeout=60, check=False)
    return {line.strip() for line in (run.stdout + run.stderr).splitlines() if line.startswith("Error")}


def new_errors(source: Path, derived_folder: Path) -> set[str]:
    """dciodvfy errors of the derived files that the source file does not have."""
    before = dciodvfy_errors(source)
    files = sorted(derived_folder.iterdir())
    assert files
    return set().union(*(dciodvfy_errors(f) - before for f in (files[0], files[len(files) // 2], files[-1])))


def mr_small_series(
    template: Path,
    folder: Path,
    rng: np.random.Generator,
    *,
    n: int = 4,
    thickness: float = 5.0,
    spacing: float = 6.0,
) -> list[Path]:
    """A multi-slice series made of copies of ``MR_small.dcm``: ``n`` slices ``spacing`` mm apart
    along the slice normal, ``thickness`` mm thick, each with shuffled pixels and a private tag."""
    base = pydicom.dcmread(template)
    iop = np.array([float(v) for v in base.ImageOrientationPatient])
    normal = np.cross(iop[:3], iop[3:])
    ipp0 = np.array([float(v) for v in base.ImagePositionPatient])
    series_uid = generate_uid(entropy_srcs=[str(folder), "series"])
    folder.mkdir(parents=True, exist_ok=True)
    files = []
    for k in range(n):
        ds = copy.deepcopy(base)
        uid = generate_uid(entropy_srcs=[str(folder), str(k)])
        ds.SOPInstanceUID = uid
        ds.file_meta.MediaStorageSOPInstanceUID = uid
        ds.SeriesInstanceUID = series_uid
        ds.InstanceNumber = k + 1
        position = ipp0 + k * spacing * normal
        ds.ImagePositionPatient = [round(float(v), 4) for v in position]
        ds.SliceLocation = round(float(normal @ position), 4)
        ds.SliceThickness = thickness
        ds.SpacingBetweenSlices = spacing
        pixels = base.pixel_array.copy()
        rng.shuffle(pixels.reshape(-1))
        ds.PixelData = pixels.astype(pixels.dtype.newbyteorder("<")).tobytes()
        block = ds.private_block(0x0011, "MRISR TEST", create=True)
        block.add_new(0x01, "LO", "acquisition matrix 64x64")
        path = folder / f"IM{k:03d}.dcm"
        ds.save_as(path, enforce_file_format=True)
        files.append(path)
    return files


def philips_header() -> Dataset:
    """The real Philips Enhanced MR header shipped with nibabel (176 frames of 256×256, zero pixels)."""
    return pydicom.dcmread(io.BytesIO(gzip.open(PHILIPS_MPRAGE).read()))


def enhanced_mr(
    path: Path,
    rng: np.random.Generator,
    *,
    orientation: Sequence[float],
    positions: Sequence[Sequence[float]],
    pixel_spacing: tuple[float, float],
    shape: tuple[int, int] = (12, 10),
    slopes: Sequence[float] | None = None,
    shared_geometry: bool = False,
    orientations: Sequence[Sequence[float]] | None = None,
    stacks: Sequence[str] | None = None,
) -> tuple[Path, np.ndarray]:
    """An Enhanced MR object made from the Philips header: one frame per LPS ``positions`` entry.

    Args:
        orientation: ImageOrientationPatient of every frame (unless ``orientations`` gives one per frame).
        positions: ImagePositionPatient of each frame, mm.
        pixel_spacing: (between rows, between columns), mm.
        shape: (rows, columns).
        slopes: RescaleSlope of each frame (default 1).
        shared_geometry: Put orientation and pixel measures in the Shared Functional Groups
            Sequence instead of each frame's item.
        stacks: StackID of each frame.

    Returns:
        The file and the stored pixel values, ``(frames, rows, columns)`` uint16.
    """
    ds = philips_header()
    n = len(positions)
    ds.PerFrameFunctionalGroupsSequence = ds.PerFrameFunctionalGroupsSequence[:n]
    ds.NumberOfFrames = n
    ds.Rows, ds.Columns = shape
    shared = ds.SharedFunctionalGroupsSequence[0]
    for f, item in enumerate(ds.PerFrameFunctionalGroupsSequence):
        item.PlanePositionSequence[0].ImagePositionPatient = [float(v) for v in positions[f]]
        iop = orientations[f] if orientations is not None else orientation
        item.PlaneOrientationSequence[0].ImageOrientationPatient = [float(v) for v in iop]
        item.PixelMeasuresSequence[0].PixelSpacing = [float(v) for v in pixel_spacing]
        item.PixelValueTransformationSequence[0].RescaleSlope = slopes[f] if slopes is not None else 1.0
        if stacks is not None:
            item.FrameContentSequence[0].StackID = stacks[f]
        if shared_geometry:
            for keyword in ("PlaneOrientationSequence", "PixelMeasuresSequence"):
                if f == 0:
                    shared[keyword] = copy.deepcopy(item[keyword])
                del item[keyword]
    stored = rng.integers(0, 4000, size=(n, *shape)).astype("<u2")
    ds.PixelData = stored.tobytes()
    ds.SOPInstanceUID = generate_uid(entropy_srcs=[str(path)])
    ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    path.parent.mkdir(parents=True, exist_ok=True)
    ds.save_as(path, enforce_file_format=True)
    return path, stored


def csa2_blob(tags: dict[str, tuple[str, Sequence[object]]]) -> bytes:
    """A Siemens CSA2 (``SV10``) header holding ``tags`` (``name: (VR, values)``), in the layout
    nibabel's ``csareader`` parses: header, then per tag its name, VM, VR and items, each item a
    length-prefixed string padded to 4 bytes."""
    out = bytearray(b"SV10" + b"\x04\x03\x02\x01" + struct.pack("<2I", len(tags), 77))
    for name, (vr, values) in tags.items():
        out += struct.pack("<64si4s3i", name.encode(), len(values), vr.encode(), 0, len(values), 77)
        for value in values:
            text = str(value).encode() + b"\0"
            out += struct.pack("<4i", len(text), len(text), 77, len(text))
            out += text + b"\0" * (-len(text) % 4)
    return bytes(out)


def siemens_mosaic(
    path: Path,
    tiles: np.ndarray,
    *,
    row_dir: Sequence[float],
    col_dir: Sequence[float],
    first_position: Sequence[float],
    pixel_spacing: tuple[float, float],
    slice_spacing: float,
    normal_sign: float = 1.0,
    series_uid: str = "1.2.826.0.1.3680043.8.498.1",
    instance: int = 1,
    csa: bool = True,
    n_in_csa: int | None = None,
) -> Path:
    """A Siemens mosaic MR image holding ``tiles`` (``(n, rows, columns)`` uint16), tiled row by row in
    ``ceil(sqrt(n))`` tiles per side, with a CSA image header (NumberOfImagesInMosaic,
    SliceNormalVector) unless ``csa`` is false.

    Tile ``t``'s first pixel lies at LPS ``first_position + t · slice_spacing · normal``, ``normal =
    normal_sign · row_dir × col_dir``; the ImagePositionPatient written is the mosaic's (Siemens'
    convention: the first pixel of a mosaic-sized image centred on the slices).
    """
    n, rows, cols = tiles.shape
    m = math.ceil(math.sqrt(n))
    image = np.zeros((m * rows, m * cols), dtype="<u2")
    for t in range(n):
        r0, c0 = (t // m) * rows, (t % m) * cols
        image[r0 : r0 + rows, c0 : c0 + cols] = tiles[t]
    row, col = np.asarray(row_dir, dtype=float), np.asarray(col_dir, dtype=float)
    normal = normal_sign * np.cross(row, col)
    ipp = (
        np.asarray(first_position, dtype=float)
        - col * pixel_spacing[0] * (m * rows - rows) / 2.0
        - row * pixel_spacing[1] * (m * cols - cols) / 2.0
    )
    meta = FileMetaDataset()
    sop_uid = generate_uid(entropy_srcs=[str(path)])
    meta.MediaStorageSOPClassUID = pydicom.uid.MRImageStorage
    meta.MediaStorageSOPInstanceUID = sop_uid
    meta.TransferSyntaxUID = pydicom.uid.ExplicitVRLittleEndian
    ds = Dataset()
    ds.file_meta = meta
    ds.SOPClassUID = pydicom.uid.MRImageStorage
    ds.SOPInstanceUID = sop_uid
    ds.Modality, ds.Manufacturer = "MR", "SIEMENS"
    ds.PatientName, ds.PatientID, ds.StudyInstanceUID = "Mosaic^Test", "M001", "1.2.3.4.5"
    ds.SeriesInstanceUID, ds.SeriesNumber, ds.SeriesDescription = series_uid, 5, "ep2d_bold"
    ds.InstanceNumber = ds.AcquisitionNumber = instance
    ds.ImageType = ["ORIGINAL", "PRIMARY", "M", "ND", "MOSAIC"]
    ds.ImagePositionPatient = [float(v) for v in ipp]
    ds.ImageOrientationPatient = [float(v) for v in (*row, *col)]
    ds.PixelSpacing = [float(v) for v in pixel_spacing]
    ds.SliceThickness = slice_spacing * 0.8
    ds.SpacingBetweenSlices = slice_spacing
    ds.FrameOfReferenceUID = "1.2.3.4.5.6"
    ds.ScanningSequence, ds.SequenceVariant = "EP", "SK"
    ds.ScanOptions, ds.MRAcquisitionType = "", "2D"
    ds.RepetitionTime, ds.EchoTime, ds.EchoTrainLength = 2000, 30, 1
    ds.Rows, ds.Columns = image.shape
    ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 12, 11, 0
    if csa:
        blob = csa2_blob(
            {
                "NumberOfImagesInMosaic": ("US", [n if n_in_csa is None else n_in_csa]),
                "SliceNormalVector": ("FD", [f"{v:.8f}" for v in normal]),
                "AcquisitionMatrixText": ("SH", [f"{rows}*{cols}"]),
            }
        )
        ds.private_block(0x0029, "SIEMENS CSA HEADER", create=True).add_new(0x10, "OB", blob)
    ds.PixelData = image.tobytes()
    path.parent.mkdir(parents=True, exist_ok=True)
    ds.save_as(path, enforce_file_format=True)
    return path


def jpeg_lossless_sv1(image: np.ndarray, precision: int) -> bytes:
    """A JPEG Lossless (process 14, first-order prediction: selection value 1) codestream of the
    unsigned ``image`` ``(rows, columns)`` at ``precision`` bits (ITU-T T.81 Annex H): one Huffman
    table giving every difference category 0–16 a 5-bit code."""
    rows, cols = image.shape
    img = image.astype(np.int64)
    assert img.min() >= 0 and img.max() < 2**precision
    bits: list[int] = []

    def put(value: int, length: int) -> None:
        bits.extend((value >> (length - 1 - n)) & 1 for n in range(length))

    for r in range(rows):
        for c in range(cols):
            if r == 0 and c == 0:
                pred = 1 << (precision - 1)
            elif r == 0:
                pred = int(img[r, c - 1])
            elif c == 0:
                pred = int(img[r - 1, c])
            else:
                pred = int(img[r, c - 1])
            diff = (int(img[r, c]) - pred) % 65536
            diff = diff - 65536 if diff > 32768 else diff
            ssss = 0 if diff == 0 else int(abs(diff)).bit_length()
            put(ssss, 5)  # category ssss has code ssss, 5 bits long
            if 0 < ssss < 16:
                put(diff if diff > 0 else diff - 1 + (1 << ssss), ssss)
    bits.extend([1] * (-len(bits) % 8))
    scan = bytearray()
    for n in range(0, len(bits), 8):
        byte = int("".join(map(str, bits[n : n + 8])), 2)
        scan.append(byte)
        if byte == 0xFF:
            scan.append(0x00)
    counts = [0, 0, 0, 0, 17] + [0] * 11
    dht = bytes([0x00, *counts, *range(17)])
    sof = struct.pack(">BHHB", precision, rows, cols, 1) + bytes([1, 0x11, 0])
    sos = bytes([1, 1, 0x00, 1, 0, 0])  # one component, table 0, Ss=1 (predictor), Se=0, Ah/Al=0

    def segment(marker: int, body: bytes) -> bytes:
        return struct.pack(">HH", marker, len(body) + 2) + body

    return b"\xff\xd8" + segment(0xFFC3, sof) + segment(0xFFC4, dht) + segment(0xFFDA, sos) + bytes(scan) + b"\xff\xd9"


def jpeg_lossless_series(folder: Path, volume: np.ndarray, *, precision: int = 12) -> list[Path]:
    """An axial MR series of ``volume`` ``(rows, columns, slices)`` (unsigned, < 2**precision) stored
    as JPEG Lossless SV1 (1.2.840.10008.1.2.4.70), 1 mm pixels, 2 mm slices."""
    from pydicom.encaps import encapsulate

    series_uid = generate_uid(entropy_srcs=[str(folder), "jpeg"])
    folder.mkdir(parents=True, exist_ok=True)
    files = []
    for k in range(volume.shape[2]):
        meta = FileMetaDataset()
        uid = generate_uid(entropy_srcs=[str(folder), str(k)])
        meta.MediaStorageSOPClassUID = pydicom.uid.MRImageStorage
        meta.MediaStorageSOPInstanceUID = uid
        meta.TransferSyntaxUID = pydicom.uid.JPEGLosslessSV1
        ds = Dataset()
        ds.file_meta = meta
        ds.SOPClassUID, ds.SOPInstanceUID = pydicom.uid.MRImageStorage, uid
        ds.Modality, ds.PatientID, ds.StudyInstanceUID = "MR", "J001", "1.2.3.9"
        ds.SeriesInstanceUID, ds.SeriesNumber, ds.InstanceNumber = series_uid, 3, k + 1
        ds.ImagePositionPatient = [0.0, 0.0, 2.0 * k]
        ds.ImageOrientationPatient = [1.0, 0.0, 0.0, 0.0, 1.0, 0.0]
        ds.PixelSpacing, ds.SliceThickness = [1.0, 1.0], 2.0
        ds.Rows, ds.Columns = volume.shape[:2]
        ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
        ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, precision, precision - 1, 0
        ds.PixelData = encapsulate([jpeg_lossless_sv1(volume[:, :, k], precision)])
        ds["PixelData"].VR = "OB"
        path = folder / f"IM{k:03d}.dcm"
        ds.save_as(path, enforce_file_format=True)
        files.append(path)
    return files
