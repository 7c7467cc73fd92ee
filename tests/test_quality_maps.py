"""Ensemble spread (uncertainty) and data-consistency residual: values, maps beside the output, sidecar."""

from __future__ import annotations

import json
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import torch

from mrisr.cli import main
from mrisr.degradation import degrade_frames
from mrisr.enhance.maps import output_label
from mrisr.geometry import refine_affine
from mrisr.inference import RunOptions, SliceRunner, _unview, _view, ensemble_views, super_resolve_array
from mrisr.models import SRCNN, SRCNNConfig
from tests.test_enhance import OBLIQUE, _blob, _ckpt, _save


def _net(seed: int = 0) -> SRCNN:
    torch.manual_seed(seed)
    return SRCNN(SRCNNConfig(residual=True)).eval()


def test_variance_of_the_views_matches_a_direct_computation() -> None:
    model = _net()
    x = torch.rand(3, 1, 12, 10, generator=torch.Generator().manual_seed(1))
    runner = SliceRunner(model, RunOptions(ensemble=8))
    mean, var = runner.mean_and_variance(x)
    with torch.inference_mode():
        outs = torch.stack([_unview(model(_view(x, v).contiguous()), v) for v in ensemble_views(8)])
    torch.testing.assert_close(mean, outs.mean(0), atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(var, outs.var(0, unbiased=False), atol=1e-6, rtol=1e-4)
    assert float(var.max()) > 1e-6  # a random network is not flip-equivariant: the views disagree
    torch.testing.assert_close(mean, runner(x), atol=1e-5, rtol=1e-5)
    _, one = SliceRunner(model, RunOptions(ensemble=1)).mean_and_variance(x)
    assert float(one.abs().max()) == 0.0


def test_super_resolve_fills_the_variance_without_changing_the_output() -> None:
    x = np.random.default_rng(0).random((6, 5, 3)).astype(np.float32)
    opts = RunOptions(ensemble=4)
    plain = super_resolve_array(_net(), x, (2, 2, 1), opts=opts)
    var = np.full((12, 10, 3), np.nan, dtype=np.float32)
    with_var = super_resolve_array(_net(), x, (2, 2, 1), opts=opts, variance_out=var)
    np.testing.assert_allclose(with_var, plain, atol=1e-5)
    assert np.isfinite(var).all() and var.min() >= 0 and var.max() > 0


def test_enhance_writes_uncertainty_and_residual_maps(tmp_path: Path) -> None:
    ckpt = _ckpt(tmp_path / "random.pt", identity=False)
    lr = _blob((8, 8, 3), seed=3).astype(np.float32)
    lr[:2] = 0.0  # some background, so the head mask is not the whole grid
    src = _save(tmp_path / "s.nii.gz", lr)
    out = tmp_path / "out"
    args = ["enhance", str(src), "--out", str(out), "--checkpoint", str(ckpt), "--ensemble", "4", "--no-figure"]
    assert main([*args, "--save-uncertainty", "--save-residual"]) == 0
    side = json.loads((out / "s_sr.json").read_text())
    unc_img = nib.load(out / "s_uncertainty.nii.gz")
    np.testing.assert_allclose(unc_img.affine, refine_affine(OBLIQUE, (4, 4, 1)), atol=1e-5)  # the output grid
    unc = unc_img.get_fdata()
    assert unc.shape == (32, 32, 3) and unc.min() >= 0 and unc.max() > 0
    u = side["uncertainty"]
    assert u["views"] == 4 and u["map"] == "s_uncertainty.nii.gz"
    assert 0 < u["mean_head"] <= u["p95_head"] * 1.5 and 0 < u["relative_mean_head"] < 1
    # the residual map: the written output degraded onto the input grid minus the input
    res_img = nib.load(out / "s_residual.nii.gz")
    np.testing.assert_allclose(res_img.affine, OBLIQUE, atol=1e-5)  # the input grid
    sr = nib.load(out / "s_sr.nii.gz").get_fdata().astype(np.float32)
    want = degrade_frames(sr, (4, 4, 1), side["consistency"]["degradation"]) - lr
    np.testing.assert_allclose(res_img.get_fdata(), want, atol=1e-2)
    c = side["consistency"]
    assert c["map"] == "s_residual.nii.gz"
    assert c["residual_rms"] == pytest.approx(float(np.sqrt(np.mean(want.astype(np.float64) ** 2))), rel=1e-3)
    rng = float(lr.max() - lr.min())
    assert c["psnr_lr"] == pytest.approx(10 * np.log10(rng**2 / np.mean(want.astype(np.float64) ** 2)), abs=1e-3)
    assert c["residual_rms_head"] > 0 and c["residual_max_abs_head"] >= c["residual_rms_head"]
    assert side["command"][:2] == ["mrisr", "enhance"]

    # not requested: no map, no summary, and the output is the same
    out2 = tmp_path / "out2"
    assert main([*args[:3], str(out2), *args[4:]]) == 0
    side2 = json.loads((out2 / "s_sr.json").read_text())
    assert side2["uncertainty"] is None and "map" not in side2["consistency"]
    assert not (out2 / "s_uncertainty.nii.gz").exists() and not (out2 / "s_residual.nii.gz").exists()
    np.testing.assert_allclose(nib.load(out2 / "s_sr.nii.gz").get_fdata(), sr, atol=1.0)  # int16 rounding
    assert side2["consistency"]["psnr_lr"] == pytest.approx(c["psnr_lr"], abs=0.05)


def test_one_view_has_no_spread_and_simulate_has_consistency(tmp_path: Path) -> None:
    ckpt = _ckpt(tmp_path / "random.pt", identity=False)
    src = _save(tmp_path / "r.nii.gz", _blob((16, 16, 2), seed=4))
    out = tmp_path / "out"
    assert main(["enhance", str(src), "--out", str(out), "--checkpoint", str(ckpt), "--ensemble", "1",
                 "--save-uncertainty", "--simulate"]) == 0  # fmt: skip
    side = json.loads((out / "r_sr.json").read_text())
    assert side["uncertainty"] is None and not (out / "r_uncertainty.nii.gz").exists()
    assert isinstance(side["consistency"]["psnr_lr"], float) and side["metrics"]["psnr_sr"] > 0
    assert (out / side["figure"]).is_file() and (out / side["mosaic"]).is_file()


def test_fallback_is_labelled_bicubic() -> None:
    assert output_label("ESPCN", "bicubic") == "bicubic (fallback)"
    assert output_label("SRCNN", "adapted network") == "SRCNN (adapted)"
    assert output_label("ESPCN", "network") == "ESPCN"


def test_asking_for_a_map_later_is_not_silently_skipped(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    ckpt = _ckpt(tmp_path / "random.pt", identity=False)
    src = _save(tmp_path / "s.nii.gz", _blob((8, 8, 2), seed=5))
    out = tmp_path / "out"
    args = ["enhance", str(src), "--out", str(out), "--checkpoint", str(ckpt), "--ensemble", "2", "--no-figure"]
    assert main(args) == 0
    assert main(args) == 0  # the same request: skipped
    assert main([*args, "--save-uncertainty"]) == 1  # another request: refused, not skipped without a map
    captured = capsys.readouterr()
    assert "use --overwrite" in captured.out + captured.err
    assert main([*args, "--save-uncertainty", "--overwrite"]) == 0
    assert (out / "s_uncertainty.nii.gz").is_file()
