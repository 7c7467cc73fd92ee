"""Faithful outputs (issue 15): physical values kept, honest NIfTI headers."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import nibabel as nib
import numpy as np
import pytest
import torch

from mrisr.checkpoint import save_checkpoint
from mrisr.cli import main
from mrisr.enhance import ArraySR
from mrisr.geometry import coarsen_affine, refine_affine, voxel_to_world
from mrisr.models import SRCNN, SRCNNConfig


@pytest.fixture()
def net(tmp_path: Path) -> Path:
    """A small random residual SRCNN (an output that is not bicubic)."""
    torch.manual_seed(0)
    cfg = SRCNNConfig(residual=True)
    model = SRCNN(cfg)
    last = [m for m in model.modules() if isinstance(m, torch.nn.Conv2d)][-1]
    with torch.no_grad():
        last.weight.normal_(0, 0.05)
    path = tmp_path / "net.pt"
    save_checkpoint(path, model, cfg.to_dict(), {"scale": [4, 4, 1], "degradation": "bicubic"})
    return path


def _oblique(spacing: tuple[float, float, float] = (2.0, 1.5, 3.0)) -> np.ndarray:
    a = np.deg2rad(25.0)
    rot = np.array([[np.cos(a), -np.sin(a), 0], [np.sin(a), np.cos(a), 0], [0, 0, 1]])
    aff = np.eye(4)
    aff[:3, :3] = rot @ np.diag(spacing)
    aff[:3, 3] = [-40.0, 12.0, 5.5]
    return aff


def _psnr(test: np.ndarray, ref: np.ndarray) -> float:
    mse = float(np.mean((test.astype(np.float64) - ref.astype(np.float64)) ** 2))
    return float("inf") if mse == 0 else 10 * np.log10(float(np.ptp(ref)) ** 2 / mse)


def _capture(monkeypatch: pytest.MonkeyPatch) -> list[np.ndarray]:
    """Record the in-memory float SR result of each study."""
    seen: list[np.ndarray] = []
    original = ArraySR.enhance_array

    def spy(self: ArraySR, *args: Any, **kwargs: Any) -> Any:
        out = original(self, *args, **kwargs)
        seen.append(np.array(out[0], dtype=np.float64))
        return out

    monkeypatch.setattr(ArraySR, "enhance_array", spy)
    return seen


@pytest.mark.parametrize(
    ("dtype", "slope", "inter"),
    [
        (np.int16, 1.0, 0.0),
        (np.uint8, 1.0, 0.0),
        (np.int16, 1e-4, 0.0),
        (np.int16, 1e-3, 0.0),
        (np.int16, 1e-3, 0.2),
        (np.uint16, 0.5, 0.0),
        (np.int16, 0.5, -100.0),
        (np.int16, 3.0, 0.0),
        (np.int16, 3.0, -1024.0),
        (np.float32, 1.0, 0.0),
    ],
)
def test_written_output_holds_the_sr_result_in_physical_units(
    tmp_path: Path, net: Path, monkeypatch: pytest.MonkeyPatch, dtype: type, slope: float, inter: float
) -> None:
    rng = np.random.default_rng(3)
    top = 200 if dtype == np.uint8 else 900
    yy, xx = np.mgrid[0:10, 0:9]
    base = np.stack([(np.sin(xx / 2.0 + k) * np.cos(yy / 3.0) + 1.2) for k in range(3)], axis=-1)
    raw = (base / base.max() * top + rng.normal(0, 3, base.shape)).clip(0, top).astype(dtype)
    img = nib.Nifti1Image(raw, _oblique())
    img.header.set_slope_inter(slope, inter)
    nib.save(img, str(tmp_path / "q.nii.gz"))
    seen = _capture(monkeypatch)
    out = tmp_path / "out"
    args = ["enhance", str(tmp_path / "q.nii.gz"), "--out", str(out), "--checkpoint", str(net), "--no-figure"]
    assert main([*args, "--ensemble", "1"]) == 0
    (result,) = seen
    assert np.ptp(result) > 0
    back = nib.load(out / "q_sr.nii.gz")
    values = back.get_fdata()
    assert values.shape == result.shape == (40, 36, 3)
    assert _psnr(values, result) >= 60.0
    assert len(np.unique(values)) > 0.5 * values.size  # today: 2 distinct values for slope 1e-3
    assert back.get_data_dtype() == (np.int16 if dtype == np.uint8 else dtype)
    # In physical units: within the input's physical range (the result is clamped to it).
    phys = raw.astype(np.float64) * slope + inter
    assert values.min() >= phys.min() - slope and values.max() <= phys.max() + slope


def test_simulate_of_a_scaled_input_measures_in_physical_units(tmp_path: Path, net: Path) -> None:
    yy, xx = np.mgrid[0:16, 0:12]
    raw = np.stack([(np.sin(xx / 3.0 + k) * np.cos(yy / 4.0) + 1.5) * 600 for k in range(2)], axis=-1)
    img = nib.Nifti1Image(raw.astype(np.int16), _oblique())
    img.header.set_slope_inter(1e-3, 0.0)  # a quantitative map in [0, 1.5]
    nib.save(img, str(tmp_path / "m.nii.gz"))
    out = tmp_path / "out"
    args = ["enhance", str(tmp_path / "m.nii.gz"), "--out", str(out), "--checkpoint", str(net), "--simulate"]
    assert main([*args, "--no-figure", "--ensemble", "1"]) == 0
    import json

    side = json.loads((out / "m_sr.json").read_text())
    sr = nib.load(out / "m_sr.nii.gz").get_fdata()
    ref = raw.astype(np.int16) * 1e-3
    assert _psnr(sr, ref) == pytest.approx(side["metrics"]["psnr_sr"], abs=0.05)
    assert side["metrics"]["psnr_bicubic"] > 20.0  # today the LR is rounded to 0, 1 and 2: bicubic ~ 5 dB


def _rotated(degrees: float, axis: int, spacing: tuple[float, float, float], origin: list[float]) -> np.ndarray:
    a = np.deg2rad(degrees)
    c, s = np.cos(a), np.sin(a)
    i, j = [n for n in range(3) if n != axis]
    rot = np.eye(3)
    rot[i, i], rot[i, j], rot[j, i], rot[j, j] = c, -s, s, c
    aff = np.eye(4)
    aff[:3, :3] = rot @ np.diag(spacing)
    aff[:3, 3] = origin
    return aff


#: Output voxels to test, and the input (fractional) index each lies at for factors (4, 4, 1).
IJK = np.array([[0, 0, 0], [39, 35, 2], [7, 20, 1]], dtype=float)
IJK_IN = np.stack([(IJK[:, 0] + 0.5) / 4 - 0.5, (IJK[:, 1] + 0.5) / 4 - 0.5, IJK[:, 2]], axis=1)


def test_qform_and_sform_are_refined_each_with_its_own_code(
    tmp_path: Path, net: Path, caplog: pytest.LogCaptureFixture
) -> None:
    sform = _oblique()
    qform = _rotated(-10.0, 0, (2.0, 1.5, 3.0), [3.0, -20.0, 41.0])  # another place: a registration's sform
    img = nib.Nifti1Image(np.random.default_rng(0).integers(50, 500, (10, 9, 3)).astype(np.int16), None)
    img.header.set_sform(sform, code=2)
    img.header.set_qform(qform, code=1)
    img.header.set_xyzt_units("mm", "sec")
    img.header.set_intent("z score")
    nib.save(img, str(tmp_path / "two.nii.gz"))
    out = tmp_path / "out"
    base = ["--out", str(out), "--checkpoint", str(net), "--no-figure", "--ensemble", "1"]
    assert main(["enhance", str(tmp_path / "two.nii.gz"), *base]) == 0
    hdr = nib.load(out / "two_sr.nii.gz").header
    q, q_code = hdr.get_qform(coded=True)
    s, s_code = hdr.get_sform(coded=True)
    assert (int(q_code), int(s_code)) == (1, 2)
    np.testing.assert_allclose(voxel_to_world(s, IJK), voxel_to_world(sform, IJK_IN), atol=1e-4)
    np.testing.assert_allclose(voxel_to_world(q, IJK), voxel_to_world(qform, IJK_IN), atol=1e-4)
    np.testing.assert_allclose(q, refine_affine(qform, (4, 4, 1)), atol=1e-4)
    assert hdr.get_xyzt_units() == ("mm", "sec") and hdr.get_intent()[0] == "z score"
    descrip = hdr["descrip"].item().decode()
    assert descrip.startswith("mrisr ") and "4x4x1" in descrip
    assert "orientation unknown" not in caplog.text


def test_codes_zero_stay_zero_with_a_warning(tmp_path: Path, net: Path, caplog: pytest.LogCaptureFixture) -> None:
    img = nib.Nifti1Image(np.random.default_rng(1).integers(50, 500, (10, 9, 3)).astype(np.int16), None)
    img.header.set_zooms((2.0, 1.5, 3.0))
    img.header.set_qform(None, code=0)
    img.header.set_sform(None, code=0)
    nib.save(img, str(tmp_path / "bare.nii.gz"))
    src_affine = nib.load(tmp_path / "bare.nii.gz").affine  # nibabel's pixdim-only fallback
    out = tmp_path / "out"
    with caplog.at_level(logging.WARNING):
        args = ["enhance", str(tmp_path / "bare.nii.gz"), "--out", str(out), "--checkpoint", str(net), "--no-figure"]
        assert main(args) == 0
    back = nib.load(out / "bare_sr.nii.gz")
    assert (int(back.header["qform_code"]), int(back.header["sform_code"])) == (0, 0)
    assert back.header.get_zooms() == pytest.approx((0.5, 0.375, 3.0))
    # The fallback of the refined grid is the refined fallback: the field of view is the same.
    np.testing.assert_allclose(back.affine, refine_affine(src_affine, (4, 4, 1)), atol=1e-5)
    lines = [r.getMessage() for r in caplog.records if "orientation unknown" in r.getMessage()]
    assert len(lines) == 1 and "bare.nii.gz" in lines[0] and "\n" not in lines[0]


def _timed_header(img: nib.Nifti1Image) -> None:
    img.header.set_dim_info(freq=0, phase=1, slice=2)
    img.header.set_slice_duration(0.08)
    img.header["slice_code"] = 3  # alternating increasing
    img.header["slice_start"] = 0
    img.header["slice_end"] = 3
    img.header.set_xyzt_units("mm", "sec")


@pytest.mark.parametrize(("factors", "timing_kept"), [((4, 4, 1), True), ((1, 1, 2), False), ((2, 2, 2), False)])
def test_slice_timing_is_kept_only_while_the_slice_axis_is_untouched(
    tmp_path: Path, factors: tuple[int, int, int], timing_kept: bool
) -> None:
    from mrisr.io.nifti import read_nifti, write_nifti

    data = np.random.default_rng(2).integers(0, 900, (6, 5, 4, 3)).astype(np.int16)
    img = nib.Nifti1Image(data, _oblique())
    _timed_header(img)
    img.header.set_zooms((2.0, 1.5, 3.0, 2.2))
    img.header.set_intent("label")
    nib.save(img, str(tmp_path / "bold.nii.gz"))
    vol = read_nifti(tmp_path / "bold.nii.gz")
    fine = np.repeat(np.repeat(np.repeat(vol.data, factors[0], 0), factors[1], 1), factors[2], 2)
    out = write_nifti(vol.with_data(fine + 0.25, refine_affine(vol.affine, factors)), tmp_path / "o.nii.gz")
    hdr = nib.load(out).header
    assert hdr.get_zooms()[3] == pytest.approx(2.2) and hdr.get_xyzt_units() == ("mm", "sec")  # TR kept
    assert hdr.get_dim_info()[:2] == (0, 1)  # frequency and phase axes are still those axes
    assert hdr.get_intent()[0] == "none"  # interpolated values are no longer labels
    if timing_kept:
        assert hdr.get_dim_info()[2] == 2 and int(hdr["slice_code"]) == 3 and int(hdr["slice_end"]) == 3
        assert hdr.get_slice_duration() == pytest.approx(0.08)
    else:
        assert hdr.get_dim_info()[2] is None
        assert int(hdr["slice_code"]) == 0 and int(hdr["slice_end"]) == 0 and float(hdr["slice_duration"]) == 0


def test_coarsened_grid_maps_qform_and_sform_too(tmp_path: Path) -> None:
    from mrisr.io.nifti import read_nifti, write_nifti

    qform = _rotated(15.0, 2, (1.0, 1.0, 1.2), [0.0, 4.0, -3.0])
    img = nib.Nifti1Image(np.zeros((8, 8, 4), np.float32), None)
    img.header.set_qform(qform, code=1)
    img.header.set_sform(None, code=0)
    nib.save(img, str(tmp_path / "q.nii"))
    vol = read_nifti(tmp_path / "q.nii")
    out = write_nifti(
        vol.with_data(np.zeros((4, 2, 4), np.float32), coarsen_affine(vol.affine, (2, 4, 1))), tmp_path / "c.nii"
    )
    hdr = nib.load(out).header
    assert int(hdr["sform_code"]) == 0 and int(hdr["qform_code"]) == 1
    np.testing.assert_allclose(hdr.get_qform(), coarsen_affine(qform, (2, 4, 1)), atol=1e-5)
