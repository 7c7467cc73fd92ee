"""Input formats (issue 27 items 4, 5, 9): a metre-unit NIfTI ends in mm at the same physical points;
MetaImage and NRRD are read with their geometry and written as NIfTI; formats mrisr does not read,
and files that are no image, are named when given, never skipped silently; an output longer than
NIfTI-1 holds along an axis is written as NIfTI-2."""

from __future__ import annotations

from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import torch

from mrisr.checkpoint import FORMAT, FORMAT_VERSION
from mrisr.cli import main
from mrisr.models import SRCNN, SRCNNConfig


@pytest.fixture
def tiny_net(tmp_path: Path) -> Path:
    """A small residual SRCNN checkpoint at ×2 in-plane (as ``save_checkpoint`` writes it)."""
    torch.manual_seed(0)
    cfg = SRCNNConfig(kernel_sizes=(3, 1, 3), filters=(8, 4), residual=True)
    obj = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "arch": cfg.to_dict(),
        "state_dict": {k: v.detach().clone() for k, v in SRCNN(cfg).state_dict().items()},
        "meta": {"scale": [2, 2, 1], "degradation": "bicubic"},
    }
    path = tmp_path / "net.pt"
    with open(path, "wb") as fh:
        torch.save(obj, fh)
    return path


def _run(tmp_path: Path, src: Path, net: Path, *extra: str) -> int:
    args = ["enhance", str(src), "--out", str(tmp_path / "out"), "--checkpoint", str(net), "--no-figure"]
    return main([*args, "--ensemble", "1", *extra])


def test_metre_input_is_enhanced_in_mm_at_the_same_physical_points(tmp_path: Path, tiny_net: Path) -> None:
    affine_m = np.array([[0.0012, 0.0, 0.0, -0.09], [0.0, 0.0, 0.004, 0.02], [0.0, -0.001, 0.0, 0.05], [0, 0, 0, 1]])
    data = (np.random.default_rng(0).random((10, 8, 3)) * 500 + 50).astype(np.int16)
    img = nib.Nifti1Image(data, affine_m)
    img.header.set_xyzt_units("meter", "sec")
    src = tmp_path / "m.nii.gz"
    nib.save(img, str(src))
    assert _run(tmp_path, src, tiny_net) == 0
    out = nib.load(str(tmp_path / "out" / "m_sr.nii.gz"))
    assert out.shape == (20, 16, 3) and out.header.get_xyzt_units()[0] == "mm"
    np.testing.assert_allclose(out.header.get_zooms(), [0.6, 0.5, 4.0], rtol=1e-5)
    # Output voxel (i, j, k) has its centre at input index ((i + 0.5) / 2 - 0.5, (j + 0.5) / 2 - 0.5, k).
    ijk = np.array([[0, 0, 0, 1], [7, 12, 2, 1], [19, 15, 1, 1]], dtype=float).T
    in_ijk = ijk.copy()
    in_ijk[:2] = (ijk[:2] + 0.5) / 2 - 0.5
    np.testing.assert_allclose((out.affine @ ijk)[:3], (affine_m @ in_ijk)[:3] * 1000.0, atol=1e-3)


def test_output_longer_than_nifti1_holds_is_written_as_nifti2(tmp_path: Path, tiny_net: Path) -> None:
    data = (np.random.default_rng(1).random((16400, 4, 1)) * 500 + 50).astype(np.int16)
    affine = np.diag([0.5, 0.7, 3.0, 1.0])
    affine[:3, 3] = (-20.0, 4.0, 9.0)
    src = tmp_path / "long.nii"
    nib.save(nib.Nifti2Image(data, affine), str(src))
    assert _run(tmp_path, src, tiny_net) == 0
    out = nib.load(str(tmp_path / "out" / "long_sr.nii.gz"))
    assert isinstance(out, nib.Nifti2Image) and out.shape == (32800, 8, 1)
    expected = affine.copy()
    expected[:2, :2] /= 2
    expected[:2, 3] -= np.array([0.5, 0.7]) / 4  # the first fine centre is a quarter of a coarse voxel back
    np.testing.assert_allclose(out.affine, expected, atol=1e-5)
    values = np.asarray(out.dataobj, dtype=np.float32)
    assert np.isfinite(values).all() and 40 <= values.mean() <= 560


# -- MetaImage and NRRD (item 5): read with ITK's geometry, written as NIfTI --------------------------


def _rotation() -> np.ndarray:
    """An oblique, right-handed direction matrix (ITK's, LPS)."""
    a, b = 0.4, -0.25
    rz = np.array([[np.cos(a), -np.sin(a), 0.0], [np.sin(a), np.cos(a), 0.0], [0.0, 0.0, 1.0]])
    rx = np.array([[1.0, 0.0, 0.0], [0.0, np.cos(b), -np.sin(b)], [0.0, np.sin(b), np.cos(b)]])
    return rz @ rx


def _itk_file(path: Path, dtype: type, *, shape_zyx: tuple[int, int, int] = (3, 8, 10), seed: int = 0) -> Path:
    import SimpleITK as sitk  # noqa: N813

    values = np.random.default_rng(seed).random(shape_zyx) * 900 + 100
    img = sitk.GetImageFromArray(values.astype(dtype))
    img.SetSpacing((0.9, 1.3, 4.0))
    img.SetOrigin((-37.5, 12.25, 80.0))
    img.SetDirection(_rotation().ravel().tolist())
    sitk.WriteImage(img, str(path))
    return path


def _ras(path: Path, index: np.ndarray) -> np.ndarray:
    """World points (RAS, mm) of continuous voxel indices ``(n, 3)`` as SimpleITK places them."""
    import SimpleITK as sitk  # noqa: N813

    img = sitk.ReadImage(str(path))
    lps = np.array([img.TransformContinuousIndexToPhysicalPoint([float(v) for v in idx]) for idx in index])
    return lps * np.array([-1.0, -1.0, 1.0])


@pytest.mark.parametrize(
    ("name", "dtype", "fmt"),
    [("f.mha", np.float32, "metaimage"), ("s.nrrd", np.int16, "nrrd"), ("d.mhd", np.uint16, "metaimage")],
)
def test_metaimage_and_nrrd_are_read_with_their_geometry(tmp_path: Path, name: str, dtype: type, fmt: str) -> None:
    import SimpleITK as sitk  # noqa: N813

    from mrisr.io import read_volume

    path = _itk_file(tmp_path / name, dtype)
    vol = read_volume(path)
    assert vol.fmt == fmt and vol.dtype == np.dtype(dtype) and vol.data.shape == (10, 8, 3)
    zyx = sitk.GetArrayFromImage(sitk.ReadImage(str(path)))
    np.testing.assert_array_equal(vol.data, zyx.transpose(2, 1, 0))  # (i, j, k): i fastest in the file
    idx = np.array([[0, 0, 0], [9, 0, 0], [3, 7, 2], [9, 7, 2]], dtype=float)
    world = (vol.affine @ np.c_[idx, np.ones(len(idx))].T).T[:, :3]
    np.testing.assert_allclose(world, _ras(path, idx), atol=1e-4)
    np.testing.assert_allclose(vol.spacing, [0.9, 1.3, 4.0], rtol=1e-6)


def _enhance(tmp_path: Path, net: Path, *inputs: Path, extra: tuple[str, ...] = ()) -> int:
    args = ["enhance", *map(str, inputs), "--out", str(tmp_path / "out"), "--checkpoint", str(net), "--no-figure"]
    return main([*args, "--ensemble", "1", *extra])


@pytest.mark.parametrize(("name", "dtype", "fmt"), [("f.mha", np.float32, "metaimage"), ("s.nrrd", np.int16, "nrrd")])
def test_enhanced_metaimage_and_nrrd_are_nifti_at_the_same_world_points(
    tmp_path: Path, tiny_net: Path, name: str, dtype: type, fmt: str
) -> None:
    import json

    (tmp_path / "in").mkdir()
    src = _itk_file(tmp_path / "in" / name, dtype)
    assert _enhance(tmp_path, tiny_net, src) == 0
    stem = name.split(".")[0]
    out = nib.load(str(tmp_path / "out" / f"{stem}_sr.nii.gz"))
    assert out.shape == (20, 16, 3) and out.get_data_dtype() == np.dtype(dtype)
    # Output voxel (i, j, k) has its centre at input index ((i + 0.5) / 2 - 0.5, (j + 0.5) / 2 - 0.5, k).
    ijk = np.array([[0, 0, 0], [19, 0, 1], [7, 12, 2], [19, 15, 2]], dtype=float)
    in_ijk = ijk.copy()
    in_ijk[:, :2] = (ijk[:, :2] + 0.5) / 2 - 0.5
    world = (out.affine @ np.c_[ijk, np.ones(len(ijk))].T).T[:, :3]
    np.testing.assert_allclose(world, _ras(src, in_ijk), atol=1e-4)
    # Values in the input's units: inside its range, same mean to a few per cent.
    vin = read_volume_data(src)
    vout = np.asarray(out.dataobj, dtype=np.float64)
    assert vin.min() - 1 <= vout.min() and vout.max() <= vin.max() + 1
    assert abs(vout.mean() - vin.mean()) < 0.05 * vin.mean()
    side = json.loads((tmp_path / "out" / f"{stem}_sr.json").read_text())
    assert side["input"]["format"] == fmt and side["output"]["format"] == "nifti"


def read_volume_data(path: Path) -> np.ndarray:
    from mrisr.io import read_volume

    return np.asarray(read_volume(path).data, dtype=np.float64)


def test_target_spacing_of_a_metaimage_comes_from_its_header(tmp_path: Path) -> None:
    from mrisr.discovery import find_studies
    from mrisr.enhance.spacing import plan_target_spacing

    studies = find_studies([_itk_file(tmp_path / "f.mha", np.float32)])
    assert [s.fmt for s in studies] == ["metaimage"] and [s.id for s in studies] == ["f"]
    groups, unreadable = plan_target_spacing(studies, (0.45, 0.65, 4.0))
    assert not unreadable and [g for g, _ in groups] == [(2, 2, 1)]


# -- formats mrisr does not read (item 5): named, never skipped silently ------------------------------


def _refused_files(folder: Path) -> dict[str, Path]:
    """One file of each refused kind (and a text file), as their makers write them."""
    import zipfile

    folder.mkdir(parents=True, exist_ok=True)
    data = np.arange(60, dtype=np.int16).reshape(5, 4, 3)
    nib.save(nib.AnalyzeImage(data, np.diag([1.0, 1.0, 2.0, 1.0])), str(folder / "analyze.hdr"))
    nib.save(nib.Nifti1Pair(data, np.eye(4)), str(folder / "pair.hdr"))
    (folder / "brain.mnc").write_bytes(b"\x89HDF\r\n\x1a\n" + b"\0" * 64)
    (folder / "scan.PAR").write_text("# === DATA DESCRIPTION FILE ===\n")
    (folder / "scan.REC").write_bytes(b"\0" * 64)
    (folder / "orig.mgz").write_bytes(b"\x1f\x8b" + b"\0" * 30)
    with zipfile.ZipFile(folder / "dicoms.zip", "w") as zf:
        zf.writestr("IM0001.dcm", b"\0" * 200)
    (folder / "notes.txt").write_text("not an image\n")
    return {p.name: p for p in folder.iterdir()}


def test_every_refused_input_named_on_the_command_line_is_one_error_line(
    tmp_path: Path, tiny_net: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    files = _refused_files(tmp_path / "in")
    good = tmp_path / "good" / "good.nii.gz"
    good.parent.mkdir()
    nib.save(nib.Nifti1Image(np.full((6, 5, 3), 300, np.int16), np.eye(4)), str(good))
    named = sorted(files.values())
    assert _enhance(tmp_path, tiny_net, good, *named) == 1
    err = [ln for ln in capsys.readouterr().err.splitlines() if ln.startswith("error:")]
    assert (tmp_path / "out" / "good_sr.nii.gz").exists()  # the good study is done beside them
    words = {
        "analyze.hdr": "Analyze 7.5",
        "analyze.img": "Analyze 7.5 or NIfTI-1 pair",
        "pair.hdr": "NIfTI-1 pair",
        "pair.img": "Analyze 7.5 or NIfTI-1 pair",
        "brain.mnc": "MINC",
        "scan.PAR": "PAR/REC",
        "scan.REC": "PAR/REC",
        "orig.mgz": "FreeSurfer MGH",
        "dicoms.zip": "archive",
        "notes.txt": "not an image mrisr reads",
    }
    assert len(err) == len(named) == len(words), err
    for name, word in words.items():
        assert sum(name in ln and word in ln for ln in err) == 1, (name, err)


def test_refused_images_inside_a_folder_fail_archives_warn_notes_stay_silent(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    from mrisr.discovery import find_studies

    files = _refused_files(tmp_path / "in")
    (tmp_path / "in" / "sidecar.json").write_text("{}")
    nib.save(nib.Nifti1Image(np.ones((4, 4, 2), np.int16), np.eye(4)), str(tmp_path / "in" / "ok.nii.gz"))
    with caplog.at_level("WARNING", logger="mrisr.discovery"):
        studies = find_studies([tmp_path / "in"])
    fine = [s.id for s in studies if s.problem is None]
    failed = {s.path.name: s.problem for s in studies if s.problem is not None}
    assert fine == ["ok"]
    # The pairs once each (on the header), every other image file; not the archive nor the notes.
    assert sorted(failed) == ["analyze.hdr", "brain.mnc", "orig.mgz", "pair.hdr", "scan.PAR", "scan.REC"]
    assert "no reliable orientation" in str(failed["analyze.hdr"])
    warned = [r.getMessage() for r in caplog.records]
    assert len(warned) == 1 and "dicoms.zip" in warned[0] and "unpack" in warned[0], warned
    assert files["notes.txt"].exists()


def test_an_envi_or_text_hdr_in_a_folder_is_not_taken_for_analyze(tmp_path: Path) -> None:
    from mrisr.discovery import find_studies

    (tmp_path / "in").mkdir()
    (tmp_path / "in" / "cube.hdr").write_text("ENVI\nsamples = 10\n")
    nib.save(nib.Nifti1Image(np.ones((4, 4, 2), np.int16), np.eye(4)), str(tmp_path / "in" / "ok.nii.gz"))
    assert [(s.id, s.problem) for s in find_studies([tmp_path / "in"])] == [("ok", None)]


def test_bad_metaimage_and_nrrd_files_fail_with_their_reason_before_allocating(tmp_path: Path) -> None:
    import SimpleITK as sitk  # noqa: N813

    from mrisr.errors import UnreadableFileError, UnsupportedDataError
    from mrisr.io import read_volume

    good = _itk_file(tmp_path / "g.mha", np.int16).read_bytes()
    (tmp_path / "short.mha").write_bytes(good[:-7])
    huge = good.replace(b"DimSize = 10 8 3", b"DimSize = 100000 100000 1000")
    assert huge != good
    (tmp_path / "huge.mha").write_bytes(huge)
    nrrd = _itk_file(tmp_path / "g.nrrd", np.float32).read_bytes()
    (tmp_path / "short.nrrd").write_bytes(nrrd[:-5])
    _itk_file(tmp_path / "detached.nhdr", np.int16)
    (tmp_path / "detached.raw").unlink()
    (tmp_path / "empty.nrrd").write_bytes(b"")
    for name, words in [
        ("short.mha", "truncated file (its header promises 480 bytes of voxels, it holds 473)"),
        ("huge.mha", "truncated file (its header promises 20000000000000 bytes"),
        ("short.nrrd", "truncated file (its header promises 960 bytes of voxels, it holds 955)"),
        ("detached.nhdr", "detached.raw"),
        ("empty.nrrd", "empty file"),
    ]:
        with pytest.raises(UnreadableFileError) as info:
            read_volume(tmp_path / name)
        assert info.value.path == tmp_path / name and words in info.value.reason, (name, info.value.reason)
    rgb = sitk.GetImageFromArray(np.zeros((4, 5, 3), np.uint8), isVector=True)
    sitk.WriteImage(rgb, str(tmp_path / "rgb.mha"))
    with pytest.raises(UnsupportedDataError, match="3 components per voxel"):
        read_volume(tmp_path / "rgb.mha")
