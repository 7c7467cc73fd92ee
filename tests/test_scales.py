"""Every practical scale through ``mrisr enhance``: thick slices ×2–×6 along any axis, in-plane and
through-plane in one call, ``--target-spacing``, factors refused up front, and the console note."""

from __future__ import annotations

import json
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import torch

from mrisr.cli import main
from mrisr.geometry import refine_affine

ADAPT = ["--adapt-steps", "2", "--no-figure", "--device", "cpu", "--ensemble", "1"]


def _affine(spacing: tuple[float, float, float]) -> np.ndarray:
    """Oblique voxel axes (20° about z, −10° about x) with the given lengths, origin (10, −5, 7) mm."""
    a, b = np.deg2rad(20.0), np.deg2rad(-10.0)
    rz = np.array([[np.cos(a), -np.sin(a), 0], [np.sin(a), np.cos(a), 0], [0, 0, 1]])
    rx = np.array([[1, 0, 0], [0, np.cos(b), -np.sin(b)], [0, np.sin(b), np.cos(b)]])
    aff = np.eye(4)
    aff[:3, :3] = rz @ rx @ np.diag(spacing)
    aff[:3, 3] = [10.0, -5.0, 7.0]
    return aff


def _phantom(shape: tuple[int, int, int], seed: int = 0) -> np.ndarray:
    """Smooth blobs plus a little noise, int16: structure that a network and a bicubic both see."""
    rng = np.random.default_rng(seed)
    grid = np.stack(np.meshgrid(*[np.linspace(-1, 1, n) for n in shape], indexing="ij"), axis=-1)
    x = np.zeros(shape)
    for _ in range(6):
        c, r = rng.uniform(-0.6, 0.6, 3), rng.uniform(0.2, 0.5)
        x += np.exp(-(((grid - c) ** 2).sum(-1)) / (2 * r * r))
    return (x / x.max() * 900 + 50 + rng.normal(0, 5, shape)).astype(np.int16)


def _save(path: Path, data: np.ndarray, affine: np.ndarray) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    nib.save(nib.Nifti1Image(data, affine), str(path))
    return path


def _first_fine_centre(affine: np.ndarray, factors: tuple[int, int, int]) -> np.ndarray:
    """World position of fine voxel (0, 0, 0): the coarse first centre moved back along each axis by
    (f − 1) / 2 fine voxels of (spacing / f) mm — from directions and lengths, not refine_affine."""
    cols = affine[:3, :3]
    lengths = np.linalg.norm(cols, axis=0)
    pos = affine[:3, 3].copy()
    for a, f in enumerate(factors):
        pos -= cols[:, a] / lengths[a] * (f - 1) / 2 * (lengths[a] / f)
    return pos


@pytest.mark.parametrize(
    "args",
    [
        ["--scale", "0"],
        ["--scale", "7"],
        ["--scale", "2.5"],
        ["--scale", "1,1,7"],
        ["--scale", "1,1,2.5"],
        ["--scale", "1,1,1"],
        ["--target-spacing", "0"],
        ["--target-spacing", "-1"],
        ["--target-spacing", "1,2"],
        ["--target-spacing", "nan"],
        ["--target-spacing", "3"],  # coarser than the 2 mm voxels
        ["--target-spacing", "0.25"],  # ×8
        ["--scale", "2", "--target-spacing", "1"],
    ],
)
def test_factors_that_cannot_be_served_are_usage_errors_before_any_voxel_is_read(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], args: list[str]
) -> None:
    """The input's header is fine but its voxel data are cut short: reading them would fail the study
    (exit 1); a usage error exits 2 with one line, before that, and makes no output folder."""
    whole = nib.Nifti1Image(_phantom((8, 8, 6)), _affine((2.0, 2.0, 2.0))).to_bytes()
    trunc = tmp_path / "in" / "s.nii"
    trunc.parent.mkdir()
    trunc.write_bytes(whole[: len(whole) // 2])
    out = tmp_path / "out"
    code = main(["enhance", str(trunc), "--out", str(out), *args])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2, err
    assert len(err) == 1 and err[0].startswith("error:"), err
    assert not out.exists()


@pytest.mark.parametrize(("factor", "axis"), [(2, 2), (3, 1), (5, 0), (6, 2)])
def test_thick_slices_at_any_factor_along_any_axis(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], factor: int, axis: int
) -> None:
    spacing = tuple(float(factor) if a == axis else 1.0 for a in range(3))
    shape = tuple(6 if a == axis else 28 for a in range(3))
    affine = _affine(spacing)  # type: ignore[arg-type]
    src = _save(tmp_path / "s.nii.gz", _phantom(shape), affine)  # type: ignore[arg-type]
    factors = tuple(factor if a == axis else 1 for a in range(3))
    scale = ",".join(map(str, factors))
    assert main(["enhance", str(src), "--out", str(tmp_path / "o"), "--scale", scale, *ADAPT]) == 0, (
        capsys.readouterr().err
    )
    img = nib.load(tmp_path / "o" / "s_sr.nii.gz")
    assert img.shape == tuple(n * f for n, f in zip(shape, factors, strict=True))
    assert np.allclose(img.affine[:3, 3], _first_fine_centre(affine, factors), atol=1e-5)  # type: ignore[arg-type]
    fine_spacing = [s / f for s, f in zip(spacing, factors, strict=True)]
    assert np.allclose(np.linalg.norm(img.affine[:3, :3], axis=0), fine_spacing)
    side = json.loads((tmp_path / "o" / "s_sr.json").read_text())
    # The one-axis coarse-grid network for its factor where one ships, else the nearest SRCNN.
    own = factor in (3, 4, 5, 6)
    weights = f"axis-espcn_x1-1-{factor}.pt" if own else "srcnn_x1-1-4.pt"
    assert Path(side["checkpoint"]["path"]).name == weights
    assert side["adapt"]["factor"] == factor
    assert side["adapt"]["method"] == ("axis-coarse-grid" if own else "one-axis")
    assert side["refined_axes"] == [axis]
    data = np.asarray(img.dataobj)
    assert data.min() >= _phantom(shape).min() and data.max() <= _phantom(shape).max()  # type: ignore[arg-type]


def test_in_plane_and_through_plane_in_one_call(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """4 × 4 × 3 mm → ``--scale 4,4,3``: the in-plane ESPCN, then the one-axis network for ×3 adapted
    on the in-plane result (whose fine axes are then donors)."""
    affine = _affine((4.0, 4.0, 3.0))
    src = _save(tmp_path / "s.nii.gz", _phantom((8, 8, 8)), affine)
    assert main(["enhance", str(src), "--out", str(tmp_path / "o"), "--scale", "4,4,3", *ADAPT]) == 0, (
        capsys.readouterr().err
    )
    img = nib.load(tmp_path / "o" / "s_sr.nii.gz")
    assert img.shape == (32, 32, 24)
    assert np.allclose(img.affine[:3, 3], _first_fine_centre(affine, (4, 4, 3)), atol=1e-5)
    side = json.loads((tmp_path / "o" / "s_sr.json").read_text())
    assert Path(side["checkpoint"]["path"]).name == "espcn_x4.pt"
    assert Path(side["checkpoint_through_plane"]["path"]).name == "axis-espcn_x1-1-3.pt"
    assert side["adapt"]["stage"] == "through-plane" and side["adapt"]["factor"] == 3
    assert side["adapt"]["donor_axis"] in (0, 1)  # the in-plane axes, fine after the first stage
    assert side["output_from"].endswith("through-plane") and side["output_from"].startswith("network in-plane")


def _expected_target_centre(affine: np.ndarray, shape: tuple[int, ...], target: float, idx: tuple[int, ...]):
    """From the input's outer FOV corner, along each direction: the left-out margin, then (i + 0.5)
    target voxels; the margin is half of what ``floor(fov / t)`` whole voxels leave."""
    cols = affine[:3, :3]
    lengths = np.linalg.norm(cols, axis=0)
    units = cols / lengths
    pos = affine[:3, 3] - 0.5 * cols.sum(axis=1)
    for a in range(3):
        fov = shape[a] * lengths[a]
        m = int(np.floor(fov / target + 1e-6))
        pos = pos + units[:, a] * ((fov - m * target) / 2 + (idx[a] + 0.5) * target)
    return pos


def test_target_spacing_lands_on_the_target_grid(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """4 × 4 × 2.2 mm → 1 mm: ×4 in-plane, ×3 through-plane (2.2 is not an integer ratio), then
    resampled along k onto the centred 1 mm grid (7 slices of 2.2 mm = 15.4 mm hold 15 voxels)."""
    affine = _affine((4.0, 4.0, 2.2))
    shape = (8, 8, 7)
    src = _save(tmp_path / "s.nii.gz", _phantom(shape), affine)
    out = tmp_path / "o"
    assert main(["enhance", str(src), "--out", str(out), "--target-spacing", "1", *ADAPT]) == 0, capsys.readouterr().err
    img = nib.load(out / "s_sr.nii.gz")
    assert img.shape == (32, 32, 15)
    assert np.allclose(np.linalg.norm(img.affine[:3, :3], axis=0), 1.0)
    for idx in [(0, 0, 0), (31, 31, 14), (31, 0, 14), (16, 16, 7)]:
        got = img.affine[:3, :3] @ np.array(idx, dtype=float) + img.affine[:3, 3]
        assert np.allclose(got, _expected_target_centre(affine, shape, 1.0, idx), atol=1e-5), idx
    side = json.loads((out / "s_sr.json").read_text())
    assert side["scale"] == [4, 4, 3] and side["target_spacing"] == [1.0, 1.0, 1.0]
    assert side["resampled"]["from_shape"] == [32, 32, 21]
    assert side["output"]["shape"] == [32, 32, 15]
    # a rerun with the same request is skipped; another target spacing is refused without --overwrite
    assert main(["enhance", str(src), "--out", str(out), "--target-spacing", "1", *ADAPT]) == 0
    assert "skipped" in capsys.readouterr().err
    assert main(["enhance", str(src), "--out", str(out), "--target-spacing", "1,1,2", *ADAPT]) == 1


def test_target_spacing_groups_studies_by_their_factors(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    _save(tmp_path / "in" / "a.nii.gz", _phantom((8, 8, 6)), _affine((4.0, 4.0, 1.0)))
    _save(tmp_path / "in" / "b.nii.gz", _phantom((24, 24, 6), seed=1), _affine((1.0, 1.0, 5.0)))
    out = tmp_path / "o"
    assert main(["enhance", str(tmp_path / "in"), "--out", str(out), "--target-spacing", "1", *ADAPT]) == 0, (
        capsys.readouterr().err
    )
    a = json.loads((out / "a_sr.json").read_text())
    b = json.loads((out / "b_sr.json").read_text())
    assert a["scale"] == [4, 4, 1] and Path(a["checkpoint"]["path"]).name == "espcn_x4.pt"
    assert b["scale"] == [1, 1, 5] and Path(b["checkpoint"]["path"]).name == "axis-espcn_x1-1-5.pt"
    assert nib.load(out / "b_sr.nii.gz").shape == (24, 24, 30)
    assert a["resampled"] is None and b["resampled"] is None  # integer ratios: the refined grid itself


def test_console_says_when_a_study_fell_back_to_bicubic(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """Slices of 6 × 6 voxels hold no donor planes to learn from: the adaptation is rejected, the
    study is interpolated, and the console line of the study says so with the reason."""
    src = _save(tmp_path / "tiny.nii.gz", _phantom((6, 6, 4)), _affine((1.0, 1.0, 4.0)))
    assert main(["enhance", str(src), "--out", str(tmp_path / "o"), "--scale", "1,1,4", *ADAPT]) == 0
    err = capsys.readouterr().err
    side = json.loads((tmp_path / "o" / "tiny_sr.json").read_text())
    assert side["output_from"] == "bicubic"
    # Without a terminal the study's one log line carries the note (at a terminal: a `note:` line).
    lines = [line for line in err.splitlines() if " done tiny " in f" {line} "]
    assert len(lines) == 1, err
    assert "by bicubic (slice-consistent bicubic along axis 2: adaptation rejected (" in lines[0]
    assert side["adapt"]["reason"] in lines[0]
    assert f"({side['note']})" in lines[0]


def test_slice_profile_weights() -> None:
    from mrisr.adapt.one_axis import profile_matrix

    w = profile_matrix(12, 3, 3.0)  # contiguous slices: block averages of 3
    x = torch.arange(12.0)
    assert torch.allclose(w @ x, x.reshape(4, 3).mean(1))
    gap = profile_matrix(12, 3, 1.5)  # thickness half the spacing: the centre voxel and half of each neighbour
    assert torch.allclose(gap[1, 2:7], torch.tensor([0.0, 0.25 / 1.5, 1 / 1.5, 0.25 / 1.5, 0.0]))
    over = profile_matrix(12, 3, 4.5)  # overlap: reaches 0.75 of a voxel into the next block
    assert torch.allclose(over[1, 1:8], torch.tensor([0, 0.75, 1, 1, 1, 0.75, 0]) / 4.5)


def test_dicom_slice_thickness_sets_the_adaptation_profile(
    tmp_path: Path, axial_series, capsys: pytest.CaptureFixture[str]
) -> None:
    """1.5 mm slices every 3 mm (a gap): the one-axis adaptation degrades its donor planes with a box
    0.5 × 3 = 1.5 output voxels wide; with SliceThickness equal to the spacing it uses the usual mix."""
    from mrisr.io.dicom.read import read_dicom_grid, read_dicom_series

    z = [3.0 * k for k in range(6)]
    gap = axial_series("gap", z, shape=(28, 28), tags={"SliceThickness": "1.5"})
    vol = read_dicom_series(gap)
    assert vol.meta["slice_thickness"] == 1.5
    affine, shape, thickness = read_dicom_grid(gap)
    assert np.allclose(affine, vol.affine) and shape == vol.data.shape and thickness == 1.5
    assert main(["enhance", str(tmp_path / "gap"), "--out", str(tmp_path / "o"), "--scale", "1,1,3", *ADAPT]) == 0, (
        capsys.readouterr().err
    )
    side = json.loads(next((tmp_path / "o").glob("*.json")).read_text())
    assert side["slice_profile"] == [1.0, 1.0, 0.5]
    assert side["adapt"]["blur_width"] == pytest.approx(1.5)
    axial_series("flat", z, shape=(28, 28), tags={"SliceThickness": "3.0"})
    assert main(["enhance", str(tmp_path / "flat"), "--out", str(tmp_path / "p"), "--scale", "1,1,3", *ADAPT]) == 0
    side = json.loads(next((tmp_path / "p").glob("*.json")).read_text())
    assert side["slice_profile"] == [1.0, 1.0, 1.0] and side["adapt"]["blur_width"] is None


@pytest.mark.parametrize(
    ("scale", "arch", "weights", "shape"),
    [
        ("2", "espcn", "espcn_x2.pt", (16, 16, 3)),
        ("3", "espcn", "espcn_x3.pt", (24, 24, 3)),
        ("2", "srcnn", "srcnn_x2.pt", (16, 16, 3)),
        ("3", "srcnn", "srcnn_x3.pt", (24, 24, 3)),
    ],
)
def test_in_plane_x2_and_x3_use_their_shipped_weights(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], scale: str, arch: str, weights: str, shape: tuple[int, ...]
) -> None:
    affine = _affine((2.0, 2.0, 3.0))
    src = _save(tmp_path / "s.nii.gz", _phantom((8, 8, 3)), affine)
    args = ["enhance", str(src), "--out", str(tmp_path / "o"), "--scale", scale, "--arch", arch, *ADAPT]
    assert main(args) == 0, capsys.readouterr().err
    img = nib.load(tmp_path / "o" / "s_sr.nii.gz")
    f = int(scale)
    assert img.shape == shape
    assert np.allclose(img.affine[:3, 3], _first_fine_centre(affine, (f, f, 1)), atol=1e-5)
    side = json.loads((tmp_path / "o" / "s_sr.json").read_text())
    assert Path(side["checkpoint"]["path"]).name == weights
    assert side["model"]["name"] == arch and side["adapt"] is None
    from mrisr.checkpoint import load_checkpoint

    meta = load_checkpoint(Path(side["checkpoint"]["path"])).meta
    assert meta["scale"] == [f, f, 1] and f"--scale {f}" in meta["training_command"]


def test_target_spacing_on_an_epi_grid(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """The issue's case, 2 × 2 × 2.2 mm → 1 mm: ESPCN ×2 in-plane, the through-plane SRCNN ×3, then k
    resampled from 0.733 mm onto 1 mm (6 slices: 13.2 mm hold 13 voxels, 0.1 mm left at each end)."""
    affine = _affine((2.0, 2.0, 2.2))
    shape = (12, 12, 6)
    src = _save(tmp_path / "epi.nii.gz", _phantom(shape), affine)
    out = tmp_path / "o"
    assert main(["enhance", str(src), "--out", str(out), "--target-spacing", "1", *ADAPT]) == 0, capsys.readouterr().err
    img = nib.load(out / "epi_sr.nii.gz")
    assert img.shape == (24, 24, 13)
    for idx in [(0, 0, 0), (23, 23, 12), (12, 12, 6)]:
        got = img.affine[:3, :3] @ np.array(idx, dtype=float) + img.affine[:3, 3]
        assert np.allclose(got, _expected_target_centre(affine, shape, 1.0, idx), atol=1e-5), idx
    side = json.loads((out / "epi_sr.json").read_text())
    assert side["scale"] == [2, 2, 3] and Path(side["checkpoint"]["path"]).name == "espcn_x2.pt"


def test_uncertainty_map_of_a_resampled_study_is_placed_on_its_own_grid(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """With --target-spacing the output is resampled; the ensemble spread is not, so its map carries the
    integer-factor grid's affine (it took the target grid's before: every voxel misplaced)."""
    affine = _affine((4.0, 4.0, 2.2))
    src = _save(tmp_path / "s.nii.gz", _phantom((8, 8, 7)), affine)
    out = tmp_path / "o"
    args = ["enhance", str(src), "--out", str(out), "--target-spacing", "1", "--save-uncertainty"]
    assert main([*args, *ADAPT, "--ensemble", "2"]) == 0, capsys.readouterr().err
    spread = nib.load(out / "s_uncertainty.nii.gz")
    assert spread.shape == (32, 32, 21)
    assert np.allclose(spread.affine, refine_affine(affine, (4, 4, 3)), atol=1e-6)
    assert np.allclose(nib.load(out / "s_sr.nii.gz").shape, (32, 32, 15))
