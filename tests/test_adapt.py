"""Per-study adaptation and per-axis (through-plane) scales."""

from __future__ import annotations

import json
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import torch

from mrisr.adapt import AdaptConfig, adapt_model
from mrisr.checkpoint import save_checkpoint
from mrisr.cli import main
from mrisr.geometry import coarsen_affine
from mrisr.inference import super_resolve_array
from mrisr.models import SRCNN, SRCNNConfig
from mrisr.transforms import degrade_volume


def _rectangles(shape: tuple[int, int, int], seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    x = np.zeros(shape, np.float32)
    for k in range(shape[2]):
        for _ in range(25):
            y0, x0 = rng.integers(0, shape[0] - 16), rng.integers(0, shape[1] - 16)
            h, w = rng.integers(12, 48, 2)
            x[y0 : y0 + h, x0 : x0 + w, k] += rng.random()
    return x


def _harmful_model(seed: int = 0) -> SRCNN:
    """A residual SRCNN whose learned detail does not fit the study (out of its domain)."""
    torch.manual_seed(seed)
    model = SRCNN(SRCNNConfig(residual=True))
    with torch.no_grad():
        model.body[-1].weight.normal_(0, 0.02)
    return model


def _psnr(a: np.ndarray, ref: np.ndarray) -> float:
    return float(10 * np.log10(float(ref.max() - ref.min()) ** 2 / np.mean((a - ref) ** 2)))


def test_adaptation_improves_out_of_domain_study_deterministically() -> None:
    hr = _rectangles((96, 96, 6))
    lr = degrade_volume(hr, (4, 4, 1), "box")
    model = _harmful_model()
    cfg = AdaptConfig(steps=60, lr=1e-3, batch_size=8, patch_size=24, val_every=10, degradation="box")
    before = _psnr(super_resolve_array(model, lr, (4, 4, 1)), hr)
    adapted, info = adapt_model(model, lr, (4, 4, 1), config=cfg)
    after = _psnr(super_resolve_array(adapted, lr, (4, 4, 1)), hr)
    assert after > before + 0.5, (before, after)
    assert info.val_mse_after < info.val_mse_before and not info.kept_original
    # The original network is untouched, and a second run gives the very same weights.
    assert _psnr(super_resolve_array(model, lr, (4, 4, 1)), hr) == pytest.approx(before)
    again, _ = adapt_model(model, lr, (4, 4, 1), config=cfg)
    for a, b in zip(adapted.state_dict().values(), again.state_dict().values(), strict=True):
        assert torch.equal(a, b)


def test_adaptation_keeps_original_when_nothing_helps() -> None:
    lr = _rectangles((24, 24, 6), seed=2)
    model = SRCNN(SRCNNConfig(residual=True))
    adapted, info = adapt_model(model, lr, (4, 4, 1), config=AdaptConfig(steps=3, lr=0.5, val_every=1))
    if info.kept_original:
        for a, b in zip(adapted.state_dict().values(), model.state_dict().values(), strict=True):
            assert torch.equal(a, b)
    assert info.val_mse_after <= info.val_mse_before


@pytest.mark.parametrize(
    ("scale", "factors"), [("4", (4, 4, 1)), ("4,4,1", (4, 4, 1)), ("1,1,4", (1, 1, 4)), ("1,4,1", (1, 4, 1))]
)
def test_per_axis_scales_land_on_the_fine_grid(tmp_path: Path, scale: str, factors: tuple[int, int, int]) -> None:
    """A thick-voxel study enhanced by its factors lands exactly on the thin-voxel grid it came from."""
    thin_affine = np.array([[0.0, 0.0, 1.0, -20.0], [-1.0, 0.0, 0.0, 30.0], [0.0, 1.0, 0.0, -5.0], [0, 0, 0, 1]])
    thin_shape = (16, 12, 8)
    thick_shape = tuple(n // f for n, f in zip(thin_shape, factors, strict=True))
    thick = (np.random.default_rng(0).random(thick_shape) * 100).astype(np.int16)
    src = tmp_path / "thick.nii.gz"
    nib.save(nib.Nifti1Image(thick, coarsen_affine(thin_affine, factors)), str(src))
    cfg = SRCNNConfig(residual=True)
    ckpt = save_checkpoint(tmp_path / "n.pt", SRCNN(cfg), cfg.to_dict(), {"scale": [4, 4, 1]})
    out = tmp_path / "out"
    assert main(["enhance", str(src), "--out", str(out), "--checkpoint", str(ckpt), "--scale", scale]) == 0
    img = nib.load(out / "thick_sr.nii.gz")
    assert img.shape == thin_shape
    np.testing.assert_allclose(img.affine, thin_affine, atol=1e-5)
    assert json.loads((out / "thick_sr.json").read_text())["scale"] == list(factors)


def test_enhance_adapt_records_what_was_adapted(tmp_path: Path) -> None:
    hr = _rectangles((64, 64, 5), seed=3)
    lr = (degrade_volume(hr, (4, 4, 1), "box") * 1000).astype(np.int16)
    src = tmp_path / "s.nii.gz"
    nib.save(nib.Nifti1Image(lr, np.eye(4)), str(src))
    model = _harmful_model()
    ckpt = save_checkpoint(tmp_path / "n.pt", model, model.config.to_dict(), {"scale": [4, 4, 1]})
    out = tmp_path / "out"
    args = ["enhance", str(src), "--out", str(out), "--checkpoint", str(ckpt), "--adapt", "--adapt-steps", "5"]
    assert main([*args, "--no-figure"]) == 0
    side = json.loads((out / "s_sr.json").read_text())
    assert side["adapt"]["steps"] == 5 and side["adapt"]["config"]["seed"] == 0
    assert side["adapt"]["val_mse_after"] <= side["adapt"]["val_mse_before"]
