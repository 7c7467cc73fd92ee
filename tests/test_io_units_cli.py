"""Issue 27, items 4 and 9 through ``mrisr enhance``: a metre-unit NIfTI ends in mm at the same
physical points; an output longer than NIfTI-1 holds along an axis is written as NIfTI-2."""

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
