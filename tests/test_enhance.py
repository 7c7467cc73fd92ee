"""Enhance: geometry, units, dtype, identity network == bicubic, bad inputs in a batch, skipping."""

from __future__ import annotations

import json
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import torch
import torch.nn.functional as F

from mrisr.checkpoint import save_checkpoint
from mrisr.cli import main
from mrisr.geometry import fov_corner_world, refine_affine, voxel_to_world
from mrisr.inference import RunOptions, super_resolve_array
from mrisr.models import SRCNN, SRCNNConfig


def _oblique() -> np.ndarray:
    """A rotated (not axis-aligned), anisotropic, LPS-like affine: 2 × 1.2 × 3 mm voxels."""
    a, b = np.deg2rad(20.0), np.deg2rad(-10.0)
    rz = np.array([[np.cos(a), -np.sin(a), 0], [np.sin(a), np.cos(a), 0], [0, 0, 1]])
    rx = np.array([[1, 0, 0], [0, np.cos(b), -np.sin(b)], [0, np.sin(b), np.cos(b)]])
    aff = np.eye(4)
    aff[:3, :3] = np.diag([-1.0, -1.0, 1.0]) @ rz @ rx @ np.diag([2.0, 1.2, 3.0])
    aff[:3, 3] = [10.0, -5.0, 7.0]
    return aff


OBLIQUE = _oblique()


def _ckpt(path: Path, *, identity: bool, seed: int = 0) -> Path:
    torch.manual_seed(seed)
    cfg = SRCNNConfig(residual=True)
    model = SRCNN(cfg)
    last = [m for m in model.modules() if isinstance(m, torch.nn.Conv2d)][-1]
    with torch.no_grad():
        if identity:
            last.weight.zero_()
            last.bias.zero_()
        else:
            last.weight.normal_(0, 0.05)
    save_checkpoint(path, model, cfg.to_dict(), {"scale": [4, 4, 1], "degradation": "bicubic"})
    return path


@pytest.fixture()
def identity_ckpt(tmp_path: Path) -> Path:
    return _ckpt(tmp_path / "identity.pt", identity=True)


@pytest.fixture()
def random_ckpt(tmp_path: Path) -> Path:
    return _ckpt(tmp_path / "random.pt", identity=False)


def _blob(shape: tuple[int, ...], seed: int = 0, dtype: type = np.int16) -> np.ndarray:
    rng = np.random.default_rng(seed)
    x = rng.random(shape) * 800 + 100
    return x.astype(dtype)


def _save(path: Path, data: np.ndarray, affine: np.ndarray = OBLIQUE) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    nib.save(nib.Nifti1Image(data, affine), str(path))
    return path


def _bicubic_reference(lr: np.ndarray, s: int) -> np.ndarray:
    """Bicubic ×s of axes 0/1, computed independently of mrisr, clamped to the input range."""
    t = torch.from_numpy(lr.astype(np.float32)).permute(2, 0, 1)[:, None]
    up = F.interpolate(t, scale_factor=s, mode="bicubic", align_corners=False)[:, 0].permute(1, 2, 0).numpy()
    return np.clip(up, lr.min(), lr.max())


def test_identity_network_reproduces_bicubic_and_geometry(tmp_path: Path, identity_ckpt: Path) -> None:
    lr = _blob((6, 5, 3))
    src = _save(tmp_path / "in" / "s1.nii.gz", lr)
    out = tmp_path / "out"
    args = ["enhance", str(src), "--checkpoint", str(identity_ckpt), "--scale", "4"]
    assert main([*args, "--out", str(out), "--ensemble", "1"]) == 0
    img = nib.load(out / "s1_sr.nii.gz")
    sr = img.get_fdata()
    assert sr.shape == (24, 20, 3)
    assert img.get_data_dtype() == np.int16  # the input's type, with a scaling (values are not rounded)
    expect = _bicubic_reference(lr, 4)
    half_step = float(img.dataobj.slope) / 2
    assert half_step < 0.01
    np.testing.assert_allclose(sr, expect, atol=half_step + 1e-3)
    # The default 8-view ensemble of an identity network is bicubic up to float rounding.
    assert main([*args, "--out", str(tmp_path / "ens")]) == 0
    ens = nib.load(tmp_path / "ens" / "s1_sr.nii.gz").get_fdata()
    np.testing.assert_allclose(ens, expect, atol=0.05)
    # Geometry: the output voxel (i, j, k) sits at input index ((i+.5)/4-.5, (j+.5)/4-.5, k) in world space.
    np.testing.assert_allclose(img.affine, refine_affine(OBLIQUE, (4, 4, 1)), atol=1e-6)
    np.testing.assert_allclose(img.header.get_sform(), img.header.get_qform(), atol=1e-4)
    ijk = np.array([[0, 0, 0], [23, 19, 2], [5, 11, 1]], dtype=float)
    lr_idx = np.stack([(ijk[:, 0] + 0.5) / 4 - 0.5, (ijk[:, 1] + 0.5) / 4 - 0.5, ijk[:, 2]], axis=1)
    np.testing.assert_allclose(voxel_to_world(img.affine, ijk), voxel_to_world(OBLIQUE, lr_idx), atol=1e-4)
    np.testing.assert_allclose(fov_corner_world(img.affine, sr.shape), fov_corner_world(OBLIQUE, lr.shape), atol=1e-4)
    side = json.loads((out / "s1_sr.json").read_text())
    assert side["status"] == "done"
    assert side["model"]["kernel_sizes"] == [9, 1, 5] and side["model"]["filters"] == [64, 32]
    assert side["model"]["residual"] is True
    assert side["scale"] == [4, 4, 1] and side["axis"] == 2
    assert len(side["input"]["sha256"]) == 64 and len(side["checkpoint"]["sha256"]) == 64
    assert side["output"]["shape"] == [24, 20, 3]


def test_real_network_differs_from_bicubic_and_stays_nonnegative(tmp_path: Path, random_ckpt: Path) -> None:
    lr = _blob((8, 8, 2), seed=3).astype(np.float32) - 100  # values in [0, 800]
    lr[0, 0, 0] = 0.0
    src = _save(tmp_path / "s2.nii.gz", lr)
    out = tmp_path / "out"
    assert main(["enhance", str(src), "--out", str(out), "--checkpoint", str(random_ckpt), "--no-figure"]) == 0
    sr = nib.load(out / "s2_sr.nii.gz").get_fdata()
    bic = _bicubic_reference(lr, 4)
    assert np.abs(sr - bic).max() > 1.0
    assert sr.min() >= 0.0


def test_dtype_float32_option_and_4d(tmp_path: Path, identity_ckpt: Path) -> None:
    lr = _blob((4, 4, 2, 3), seed=1)
    lr[..., 1] = lr[..., 0] // 2
    src = _save(tmp_path / "dwi.nii.gz", lr)
    hdr_img = nib.load(src)
    hdr_img.header.set_zooms((2.0, 1.2, 3.0, 2.5))
    nib.save(hdr_img, str(src))
    out = tmp_path / "out"
    args = ["enhance", str(src), "--out", str(out), "--checkpoint", str(identity_ckpt), "--dtype", "float32"]
    assert main(args) == 0
    img = nib.load(out / "dwi_sr.nii.gz")
    assert img.shape == (16, 16, 2, 3)
    assert img.get_data_dtype() == np.float32
    assert img.header.get_zooms()[3] == pytest.approx(2.5)
    sr = img.get_fdata()
    for t in range(3):
        np.testing.assert_allclose(sr[..., t], _bicubic_reference(lr[..., t], 4), atol=1e-3)


def test_tiled_equals_untiled() -> None:
    torch.manual_seed(1)
    model = SRCNN(SRCNNConfig(residual=True))
    with torch.no_grad():
        model.body[-1].weight.normal_(0, 0.1)
    x = np.random.default_rng(0).random((20, 18, 2)).astype(np.float32)
    whole = super_resolve_array(model, x, (4, 4, 1))
    tiled = super_resolve_array(model, x, (4, 4, 1), opts=RunOptions(max_tile_pixels=24 * 24))
    np.testing.assert_allclose(tiled, whole, atol=1e-5)


def test_batch_survives_bad_studies(tmp_path: Path, identity_ckpt: Path, capsys: pytest.CaptureFixture[str]) -> None:
    data = tmp_path / "batch"
    good = _save(data / "good.nii.gz", _blob((4, 4, 2)))
    _save(data / "const.nii.gz", np.full((4, 4, 2), 7, np.int16))
    nan = _blob((4, 4, 2)).astype(np.float32)
    nan[1, 1, 1] = np.nan
    _save(data / "nan.nii.gz", nan)
    (data / "empty.nii.gz").write_bytes(b"")
    (data / "text.nii.gz").write_text("not a nifti at all")
    raw = good.read_bytes()
    (data / "trunc.nii.gz").write_bytes(raw[: len(raw) // 2])
    plain = bytearray(nib.Nifti1Image(_blob((4, 4, 2)), np.eye(4)).to_bytes())
    plain[70:72] = np.array([9999], dtype="<i2").tobytes()  # an unknown datatype code
    (data / "dtype.nii").write_bytes(bytes(plain))
    out = tmp_path / "out"
    code = main(["enhance", str(data), "--out", str(out), "--checkpoint", str(identity_ckpt), "--no-figure"])
    assert code == 1
    err = capsys.readouterr().err
    cases = [("nan", "NaN"), ("empty", "empty"), ("text", "gzip"), ("trunc", "truncated"), ("dtype", "9999")]
    for name, why in cases:
        line = next(ln for ln in err.splitlines() if ln.startswith("error:") and f"{name}.nii" in ln)
        assert why.lower() in line.lower(), line
        assert not (out / f"{name}_sr.nii.gz").exists()
        assert json.loads((out / f"{name}_sr.json").read_text())["status"] == "failed"
    assert "Traceback" not in err
    assert (out / "good_sr.nii.gz").exists()
    const = np.asarray(nib.load(out / "const_sr.nii.gz").dataobj)
    assert const.shape == (16, 16, 2) and np.all(const == 7)
    assert not list(out.glob(".*"))  # no temporaries left


def test_rerun_skips_and_overwrite_redoes(tmp_path: Path, identity_ckpt: Path, random_ckpt: Path) -> None:
    src = _save(tmp_path / "s.nii.gz", _blob((4, 4, 2)))
    out = tmp_path / "out"
    base = ["enhance", str(src), "--out", str(out), "--no-figure"]
    assert main([*base, "--checkpoint", str(identity_ckpt)]) == 0
    first = (out / "s_sr.json").read_text()
    assert main([*base, "--checkpoint", str(identity_ckpt)]) == 0
    assert (out / "s_sr.json").read_text() == first  # skipped: sidecar untouched
    assert main([*base, "--checkpoint", str(random_ckpt)]) == 1  # another checkpoint: refuses to overwrite
    assert main([*base, "--checkpoint", str(random_ckpt), "--overwrite"]) == 0
    side = json.loads((out / "s_sr.json").read_text())
    assert side["checkpoint"]["path"].endswith("random.pt")
    # Same input and checkpoint but other settings: not the same result, so not skipped.
    assert main([*base, "--checkpoint", str(random_ckpt), "--scale", "2"]) == 1
    assert main([*base, "--checkpoint", str(random_ckpt), "--adapt", "--adapt-steps", "1"]) == 1
    assert json.loads((out / "s_sr.json").read_text()) == side
    # A sidecar written before the in-plane ESPCN adaptation (its request named the adaptation base,
    # null without --adapt, and the default steps) still counts as the same request.
    old_style = {**side, "request": {**side["request"], "adapt_base_sha256": None}}
    old_style["request"]["auto_adapt"] = {**side["request"]["auto_adapt"], "steps": 300}
    (out / "s_sr.json").write_text(json.dumps(old_style))
    assert main([*base, "--checkpoint", str(random_ckpt)]) == 0
    assert json.loads((out / "s_sr.json").read_text()) == old_style  # skipped


def test_deleted_output_is_made_again_and_only_ignores_slurm_sharding(
    tmp_path: Path, identity_ckpt: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    src = _save(tmp_path / "s.nii.gz", _blob((4, 4, 2)))
    out = tmp_path / "out"
    base = ["enhance", str(src), "--out", str(out), "--checkpoint", str(identity_ckpt), "--no-figure"]
    assert main(base) == 0
    first = (out / "s_sr.nii.gz").read_bytes()
    (out / "s_sr.nii.gz").unlink()  # the sidecar still says done
    assert main(base) == 0 and (out / "s_sr.nii.gz").read_bytes() == first
    # Inside a SLURM array task whose shard does not hold "s", --only s still enhances it.
    monkeypatch.setenv("SLURM_ARRAY_TASK_ID", "1")
    monkeypatch.setenv("SLURM_ARRAY_TASK_COUNT", "50")
    other = tmp_path / "other"
    assert main([*base[:3], str(other), *base[4:], "--only", "s"]) == 0
    assert (other / "s_sr.nii.gz").exists()


#: Empty, garbage, a truncated zip, text, a pickle of a bare int (torch raises other exception types).
BAD_CHECKPOINTS = [b"", b"garbage" * 10, b"PK\x03\x04truncated zip", b"hello\n", b"\x80\x04K\x01."]


@pytest.mark.parametrize("content", BAD_CHECKPOINTS)
def test_corrupted_checkpoint_is_one_line_error(
    tmp_path: Path, content: bytes, capsys: pytest.CaptureFixture[str]
) -> None:
    src = _save(tmp_path / "s.nii.gz", _blob((4, 4, 2)))
    bad = tmp_path / "bad.pt"
    bad.write_bytes(content)
    assert main(["enhance", str(src), "--out", str(tmp_path / "o"), "--checkpoint", str(bad)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "bad.pt" in err[0] and "checkpoint" in err[0], err


@pytest.mark.parametrize(
    ("extra", "why"),
    [
        (["--device", "foo"], "not one of auto, cpu, cuda"),
        (["--device", "mps"], "not one of auto, cpu, cuda"),
        (["--out", "FILE"], "cannot be used as the output folder"),
        (["--dtype", "complex64"], "not a real integer or floating-point type"),
        (["--dtype", "float16"], "float32 or float64 only"),
    ],
)
def test_bad_device_or_output_folder_is_a_usage_error(
    tmp_path: Path, extra: list[str], why: str, capsys: pytest.CaptureFixture[str]
) -> None:
    src = _save(tmp_path / "s.nii.gz", _blob((4, 4, 2)))
    args = ["enhance", str(src), "--out", str(tmp_path / "o"), *extra]
    args = [str(src) if a == "FILE" else a for a in args]  # --out an existing file
    assert main(args) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and why in err[0], err


def test_header_promising_more_voxels_than_the_file_holds(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """A corrupt header that promises 2000³ float32 voxels is refused as truncated, before any
    memory is allocated for them (plain and gzipped)."""
    import gzip

    def header_only(shape: tuple[int, int, int]) -> bytes:
        hdr = nib.Nifti1Header()
        hdr.set_data_shape(shape)
        hdr.set_data_dtype(np.float32)
        hdr["magic"] = b"n+1"
        hdr.set_data_offset(352)
        return hdr.binaryblock + b"\0" * 4 + np.zeros(8, np.float32).tobytes()

    data = tmp_path / "data"
    data.mkdir()
    (data / "huge.nii").write_bytes(header_only((2000, 2000, 2000)))  # checked against the file size
    (data / "hugez.nii.gz").write_bytes(gzip.compress(header_only((1000, 1000, 100))))  # against the gzip trailer
    assert main(["enhance", str(data), "--out", str(tmp_path / "o"), "--no-figure"]) == 1
    err = sorted(ln for ln in capsys.readouterr().err.splitlines() if ln.startswith("error:"))
    assert len(err) == 2, err
    assert "huge.nii: truncated file" in err[0] and "32000000352 bytes" in err[0], err
    assert "hugez.nii.gz: truncated file" in err[1] and "400000352 bytes" in err[1], err


def test_foreign_torch_file_is_refused(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    bad = tmp_path / "foreign.pt"
    torch.save({"weights": torch.zeros(3)}, bad)
    src = _save(tmp_path / "s.nii.gz", _blob((4, 4, 2)))
    assert main(["enhance", str(src), "--out", str(tmp_path / "o"), "--checkpoint", str(bad)]) == 2
    assert "not an mrisr checkpoint" in capsys.readouterr().err


def test_no_weights_for_scale_refuses(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    src = _save(tmp_path / "s.nii.gz", _blob((4, 4, 2)))
    assert main(["enhance", str(src), "--out", str(tmp_path / "o"), "--scale", "5"]) == 2
    assert "--checkpoint" in capsys.readouterr().err


def test_dicom_in_dicom_out_geometry(tmp_path: Path, identity_ckpt: Path) -> None:
    from mrisr.geometry import corner_world
    from mrisr.io import Volume
    from mrisr.io.dicom import read_dicom_path, write_dicom_series

    lr = _blob((6, 5, 3), seed=5)
    src = write_dicom_series(
        Volume(lr, OBLIQUE, np.dtype(np.int16), "dicom", meta={"tags": {"PatientID": "P1", "Modality": "MR"}}),
        tmp_path / "in" / "series",
    )
    out = tmp_path / "out"
    assert main(["enhance", str(src), "--out", str(out), "--checkpoint", str(identity_ckpt), "--no-figure"]) == 0
    (folder,) = [p for p in out.iterdir() if p.is_dir()]
    assert folder.name.endswith("_sr")
    vol = read_dicom_path(folder)
    assert vol.shape3 == (24, 20, 3)
    expect = refine_affine(OBLIQUE, (4, 4, 1))
    np.testing.assert_allclose(corner_world(vol.affine, vol.shape3), corner_world(expect, (24, 20, 3)), atol=1e-4)
    np.testing.assert_allclose(vol.data, _bicubic_reference(lr, 4), atol=0.02)  # RescaleSlope ~ range/65000
    assert vol.meta["tags"]["PatientID"] == "P1"
    # NIfTI requested from a DICOM input lands on the same grid.
    out2 = tmp_path / "out2"
    args = ["enhance", str(src), "--out", str(out2), "--checkpoint", str(identity_ckpt), "--format", "nifti"]
    assert main([*args, "--no-figure"]) == 0
    (nii,) = out2.glob("*_sr.nii.gz")
    np.testing.assert_allclose(nib.load(nii).affine, expect, atol=1e-4)


def test_simulate_metrics_match_the_written_file(tmp_path: Path, random_ckpt: Path) -> None:
    from mrisr.metrics import psnr

    rng = np.random.default_rng(7)
    yy, xx = np.mgrid[0:32, 0:28]
    ref = np.stack([(np.sin(xx / 3.0 + k) * np.cos(yy / 4.0) + 1.5) * 300 for k in range(3)], axis=-1)
    ref = (ref + rng.normal(0, 5, ref.shape)).astype(np.int16)
    src = _save(tmp_path / "ref.nii.gz", ref)
    out = tmp_path / "out"
    args = ["enhance", str(src), "--out", str(out), "--checkpoint", str(random_ckpt), "--simulate"]
    assert main([*args, "--save-intermediates"]) == 0
    side = json.loads((out / "ref_sr.json").read_text())
    sr = np.asarray(nib.load(out / "ref_sr.nii.gz").dataobj).astype(np.float64)
    assert sr.shape == ref.shape
    np.testing.assert_allclose(nib.load(out / "ref_sr.nii.gz").affine, OBLIQUE, atol=1e-5)
    got = 10 * np.log10(float(ref.max() - ref.min()) ** 2 / np.mean((sr - ref) ** 2))
    assert side["metrics"]["psnr_sr"] == pytest.approx(got, abs=0.01)
    assert side["metrics"]["psnr_sr"] == pytest.approx(psnr(sr, ref.astype(np.float64)), abs=0.01)
    lr_img = nib.load(out / "ref_lr.nii.gz")
    assert lr_img.shape == (8, 7, 3)
    np.testing.assert_allclose(
        lr_img.affine, OBLIQUE @ np.array([[4, 0, 0, 1.5], [0, 4, 0, 1.5], [0, 0, 1, 0], [0, 0, 0, 1]]), atol=1e-6
    )
    bic = np.asarray(nib.load(out / "ref_bicubic.nii.gz").dataobj).astype(np.float64)
    lr = np.asarray(lr_img.dataobj)
    np.testing.assert_allclose(bic, _bicubic_reference(lr, 4), atol=0.01)
    got_b = 10 * np.log10(float(ref.max() - ref.min()) ** 2 / np.mean((bic - ref) ** 2))
    assert side["metrics"]["psnr_bicubic"] == pytest.approx(got_b, abs=0.01)
    assert (out / "ref_compare.png").stat().st_size > 10_000


def test_simulate_metrics_of_a_4d_study_filter_each_frame(tmp_path: Path, random_ckpt: Path) -> None:
    """3D SSIM of a 4D study: the window never spans two frames (docs/metrics.md)."""
    from mrisr.metrics import ssim, ssim3d

    rng = np.random.default_rng(3)
    ref = np.stack([_blob((16, 16, 12), seed=t) for t in range(2)], axis=-1)
    ref[..., 1] = ref[..., 1] // 3 + 40 * np.arange(12, dtype=np.int16)  # frames that differ at the seam
    src = _save(tmp_path / "ref4d.nii.gz", ref + rng.integers(0, 5, ref.shape, dtype=np.int16))
    out = tmp_path / "out"
    args = ["enhance", str(src), "--out", str(out), "--checkpoint", str(random_ckpt), "--simulate", "--no-figure"]
    assert main(args) == 0
    m = json.loads((out / "ref4d_sr.json").read_text())["metrics"]
    sr = np.asarray(nib.load(out / "ref4d_sr.nii.gz").dataobj).astype(np.float64)
    hr = np.asarray(nib.load(src).dataobj).astype(np.float64)
    assert sr.shape == hr.shape == (16, 16, 12, 2)
    rng_hr = float(hr.max() - hr.min())
    assert m["ssim3d_sr"] == pytest.approx(ssim3d(sr, hr, data_range=rng_hr), abs=1e-6)
    frames = np.mean([ssim3d(sr[..., t], hr[..., t], data_range=rng_hr) for t in range(2)])
    assert m["ssim3d_sr"] == pytest.approx(frames, abs=1e-6)
    assert m["ssim_sr"] == pytest.approx(ssim(sr, hr, data_range=rng_hr), abs=1e-6)


def test_sidecar_is_strict_json_when_a_metric_is_not_finite(tmp_path: Path, identity_ckpt: Path) -> None:
    """An 8×8 reference at ×4 leaves no voxel inside the 4-voxel border: the masked metrics are NaN,
    written as null (``NaN`` is not JSON)."""
    src = _save(tmp_path / "tiny.nii.gz", _blob((8, 8, 2)))
    out = tmp_path / "out"
    assert main(["enhance", str(src), "--out", str(out), "--checkpoint", str(identity_ckpt), "--simulate"]) == 0

    def refuse(name: str) -> None:
        raise AssertionError(f"{name} in the sidecar")

    side = json.loads((out / "tiny_sr.json").read_text(), parse_constant=refuse)
    assert side["metrics"]["psnr_sr_masked"] is None and side["metrics"]["psnr_sr"] > 0
    const = _save(tmp_path / "const.nii.gz", np.full((8, 8, 2), 7, np.int16))  # nothing to measure
    assert main(["enhance", str(const), "--out", str(out), "--checkpoint", str(identity_ckpt), "--simulate"]) == 1
    assert "constant image" in json.loads((out / "const_sr.json").read_text())["error"]


@pytest.mark.parametrize("axis", [0, 1, 2])
def test_axis_option_refines_the_plane_of_its_slices(tmp_path: Path, identity_ckpt: Path, axis: int) -> None:
    """`--scale 4 --axis A` refines the two axes other than A, and equals bicubic in that plane."""
    lr = _blob((5, 6, 7), seed=2)
    src = _save(tmp_path / "s.nii.gz", lr)
    out = tmp_path / "out"
    args = [
        "enhance",
        str(src),
        "--out",
        str(out),
        "--checkpoint",
        str(identity_ckpt),
        "--no-figure",
        "--ensemble",
        "1",
    ]
    assert main([*args, "--scale", "4", "--axis", str(axis)]) == 0
    img = nib.load(out / "s_sr.nii.gz")
    factors = tuple(1 if a == axis else 4 for a in range(3))
    assert img.shape == tuple(n * f for n, f in zip(lr.shape, factors, strict=True))
    np.testing.assert_allclose(img.affine, refine_affine(OBLIQUE, factors), atol=1e-6)
    moved = np.moveaxis(lr, axis, 2)
    expect = np.moveaxis(_bicubic_reference(moved, 4), 2, axis)
    np.testing.assert_allclose(img.get_fdata(), expect, atol=0.01)
    assert json.loads((out / "s_sr.json").read_text())["adapt"] is None  # the in-plane network fits


def test_default_network_handles_every_scale_pattern(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """The default (coarse-grid ESPCN) serves the slice plane; other patterns take the shipped SRCNN."""
    src = _save(tmp_path / "s.nii.gz", _blob((8, 8, 8), seed=4))
    base = ["enhance", str(src), "--no-figure", "--device", "cpu"]
    for scale, axis, shape, weights in [
        ("4", "2", (32, 32, 8), "espcn_x4.pt"),
        ("4", "0", (8, 32, 32), "espcn_x4.pt"),
        ("4,4,4", "2", (32, 32, 32), "espcn_x4.pt"),  # in-plane ESPCN, then the one-axis network
        ("1,4,4", "2", (8, 32, 32), "srcnn_x4.pt"),
        ("1,1,4", "2", (8, 8, 32), "axis-espcn_x1-1-4.pt"),
    ]:
        out = tmp_path / f"o{scale}{axis}"
        args = [*base, "--out", str(out), "--scale", scale, "--axis", axis, "--adapt-steps", "2"]
        assert main(args) == 0, capsys.readouterr().err
        assert nib.load(out / "s_sr.nii.gz").shape == shape
        side = json.loads((out / "s_sr.json").read_text())
        assert Path(side["checkpoint"]["path"]).name == weights
        assert side["model"]["name"] == weights.split("_")[0]
        second = side["checkpoint_through_plane"]
        want = "axis-espcn_x1-1-4.pt" if scale == "4,4,4" else None
        assert (Path(second["path"]).name if second else None) == want
    out = tmp_path / "adapt"
    assert main([*base, "--out", str(out), "--adapt", "--adapt-steps", "2"]) == 0
    side = json.loads((out / "s_sr.json").read_text())
    # The ESPCN adapts itself in-plane; rejected here (8×8×8 is too little to learn from): the default ran.
    assert side["adapt"]["method"] == "coarse-grid" and "slices too small" in side["adapt"]["reason"]
    assert not side["adapt"]["used"] and side["adapt"]["fallback"] == "espcn"
    assert side["model"]["name"] == "espcn"
    plain = tmp_path / "o42"
    np.testing.assert_array_equal(
        np.asarray(nib.load(out / "s_sr.nii.gz").dataobj), np.asarray(nib.load(plain / "s_sr.nii.gz").dataobj)
    )


def test_coarse_grid_checkpoint_refuses_other_patterns_before_reading(tmp_path: Path) -> None:
    from mrisr.checkpoint import shipped_checkpoint

    espcn = shipped_checkpoint((4, 4, 1), arch="espcn")
    assert espcn is not None
    src = _save(tmp_path / "s.nii.gz", _blob((8, 8, 8)))
    args = ["enhance", str(src), "--out", str(tmp_path / "o"), "--checkpoint", str(espcn), "--scale", "1,4,4"]
    assert main(args) == 2
    assert not (tmp_path / "o").exists()


def test_simulated_low_resolution_scan_stays_in_the_true_scan_value_range(tmp_path: Path, random_ckpt: Path) -> None:
    """A magnitude scan (0 background, sharp edges): bicubic downsampling overshoots below 0; the
    simulated scan is kept inside the true scan's range, as a real low-resolution acquisition would be
    (unclipped, the demo's SR lost 0.4 dB through a negative clamp floor)."""
    ref = np.zeros((32, 32, 3), dtype=np.uint8)
    ref[8:24, 8:24] = 250
    ref[14:18, 14:18] = 40
    src = _save(tmp_path / "edge.nii.gz", ref)
    out = tmp_path / "out"
    args = ["enhance", str(src), "--out", str(out), "--checkpoint", str(random_ckpt), "--simulate"]
    assert main([*args, "--save-intermediates", "--no-figure"]) == 0
    lr = np.asarray(nib.load(out / "edge_lr.nii.gz").get_fdata())
    step = 250 / 255  # the uint8 input type's step: the simulated scan is stored as the input would be
    assert lr.min() >= -step / 2 and lr.max() <= 250 + step / 2, (lr.min(), lr.max())
    assert lr.max() > 100  # the object survived the degradation (not a vacuous all-zero check)
