"""Thick slices with the one-axis coarse-grid network (``AxisESPCN``): its grid, its per-study
adaptation (the slice profile, a stated gap, the bound on its cost), and the choice between the
adapted network, the unadapted one and bicubic interpolation."""

from __future__ import annotations

import json
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import torch
import torch.nn.functional as F

from mrisr.adapt import STEPS_AXIS, AdaptConfig, adapt_model, effective_steps
from mrisr.adapt.axis_net import MAX_BATCH, MAX_PATCH, VAL_SIDE, VAL_SLICES, _gaussian_matrix, degrade_columns
from mrisr.adapt.one_axis import match_slices, profile_matrix
from mrisr.checkpoint import load_checkpoint, save_checkpoint
from mrisr.cli import main
from mrisr.degradation import degrade_volume
from mrisr.enhance import Enhancer
from mrisr.inference import RunOptions
from mrisr.models import AxisESPCN, AxisESPCNConfig

#: The factors a one-axis coarse-grid network ships for (docs/weights.md).
SHIPPED = (3, 4, 5, 6)


def _blobs(shape: tuple[int, int, int], seed: int = 0) -> np.ndarray:
    """Smooth blobs with sharp-edged boxes: structure along every axis, in [0, 1]."""
    rng = np.random.default_rng(seed)
    grid = np.stack(np.meshgrid(*[np.linspace(-1, 1, n) for n in shape], indexing="ij"), axis=-1)
    x = np.zeros(shape)
    for _ in range(8):
        c, r = rng.uniform(-0.7, 0.7, 3), rng.uniform(0.1, 0.4)
        x += np.exp(-(((grid - c) ** 2).sum(-1)) / (2 * r * r))
    for _ in range(6):
        lo = rng.uniform(-0.9, 0.5, 3)
        hi = lo + rng.uniform(0.1, 0.4, 3)
        x += 0.7 * np.all((grid > lo) & (grid < hi), axis=-1)
    return (x / x.max()).astype(np.float32)


def _net(factor: int, seed: int = 0, scale_last: float | None = None) -> AxisESPCN:
    torch.manual_seed(seed)
    net = AxisESPCN(AxisESPCNConfig(factors=(1, factor), kernel_sizes=(3, 3, 3), filters=(8, 8)))
    if scale_last is not None:
        with torch.no_grad():
            last = [m for m in net.modules() if isinstance(m, torch.nn.Conv2d)][-1]
            last.weight.normal_(std=scale_last)
    return net.eval()


def test_one_axis_network_refines_its_columns_or_rows_with_the_same_weights() -> None:
    """With its last layer at zero the network is bicubic interpolation along the refined axis alone
    (voxel-centre convention); turned to its rows it is the transpose of itself on the transpose."""
    net = _net(3)
    with torch.no_grad():
        [m for m in net.modules() if isinstance(m, torch.nn.Conv2d)][-1].weight.zero_()
    x = torch.rand(2, 1, 7, 5)
    y = net(x)
    assert y.shape == (2, 1, 7, 15)
    want = F.interpolate(x.reshape(14, 1, 1, 5), size=(1, 15), mode="bicubic", align_corners=False).reshape(2, 1, 7, 15)
    torch.testing.assert_close(y, want + 0 * y)  # the last layer's bias is zero too
    net2 = _net(3, seed=4)
    rows = net2.oriented((3, 1))
    assert rows.body is net2.body and rows.config.factors == (3, 1)
    with torch.no_grad():
        torch.testing.assert_close(rows(x.transpose(-1, -2)), net2(x).transpose(-1, -2))
    with pytest.raises(ValueError, match="refines one axis"):
        net2.oriented((1, 4))
    with pytest.raises(ValueError, match="exactly one axis"):
        AxisESPCNConfig(factors=(2, 2))


def test_slice_profiles_of_the_adaptation() -> None:
    """Box = block means, Gaussian of FWHM F (half the peak weight F/2 voxels from the centre), and a
    stated profile with a gap = the averaging of :func:`profile_matrix` (what the slices measured)."""
    x = torch.rand(1, 1, 4, 12)
    torch.testing.assert_close(degrade_columns(x, 3, "box"), x.reshape(1, 1, 4, 4, 3).mean(-1))
    g = _gaussian_matrix(24, 4)[2]  # centre at fine index 4·2 + 1.5 = 9.5
    assert float(g[9]) == pytest.approx(float(g[10]))
    sigma = 4 / (2 * np.sqrt(2 * np.log(2)))
    assert float(g[7] / g[9]) == pytest.approx(np.exp(-0.5 * (2.5**2 - 0.5**2) / sigma**2), rel=1e-4)
    assert float(g.sum()) == pytest.approx(1.0)
    # FWHM = F: at F/2 = 2 voxels from the centre the profile is half its peak.
    assert np.exp(-0.5 * 2.0**2 / sigma**2) == pytest.approx(0.5)
    gap = degrade_columns(x, 3, "profile", 1.5)
    torch.testing.assert_close(gap, x @ profile_matrix(12, 3, 1.5).T)
    with pytest.raises(ValueError, match="unknown slice profile"):
        degrade_columns(x, 3, "profile")


def test_adaptation_learns_from_the_study_slices_and_records_a_stated_gap() -> None:
    """A stated gap (slices half as thick as their spacing) degrades the donor slices with that box;
    the adapted network lowers the held-out error, is deterministic, and records the profile."""
    hr = _blobs((40, 40, 24))
    thick = hr @ profile_matrix(24, 3, 1.5).numpy().T  # the scanner's profile: 1.5 of 3 fine voxels
    net = _net(3, scale_last=0.05)
    cfg = AdaptConfig(steps=30, val_every=10)
    adapted, info = adapt_model(net, thick, (1, 1, 3), (1.0, 1.0, 3.0), config=cfg, profile=(1.0, 1.0, 0.5))
    assert info.method == "axis-coarse-grid" and info.source == "own slices"
    assert info.blur_width == pytest.approx(1.5) and info.factor == 3 and info.steps == 30
    # Both orientations of the slices with signal (the flat edge slices are dropped), same held out.
    assert info.n_train_planes % 2 == 0 and info.n_val_planes % 2 == 0 and info.n_train_planes >= 10
    assert info.best_step > 0 and info.val_mse_after < info.val_mse_before
    again, info2 = adapt_model(net, thick, (1, 1, 3), (1.0, 1.0, 3.0), config=cfg, profile=(1.0, 1.0, 0.5))
    assert info2.val_mse_after == info.val_mse_after
    for a, b in zip(adapted.state_dict().values(), again.state_dict().values(), strict=True):
        torch.testing.assert_close(a, b, rtol=0, atol=0)
    _, flat = adapt_model(net, thick, (1, 1, 3), (1.0, 1.0, 3.0), config=cfg, profile=(1.0, 1.0, 1.0))
    assert flat.blur_width is None  # contiguous: the box / Gaussian / bicubic mix


def test_adaptation_cost_is_bounded_in_steps_whatever_the_study_size(monkeypatch: pytest.MonkeyPatch) -> None:
    """The time budget as a bound on work: the default runs STEPS_AXIS steps, each on at most
    MAX_BATCH patches of MAX_PATCH² fine voxels, and the held-out check on at most VAL_SLICES slices of
    VAL_SIDE² — the same for a 256×256×40 study as for a small one."""
    net = _net(3)
    assert effective_steps(AdaptConfig(), net) == STEPS_AXIS
    assert STEPS_AXIS <= 150  # the per-study budget on 2 cores (docs/performance.md)
    seen: list[int] = []
    real = AxisESPCN.forward

    def counting(self: AxisESPCN, x: torch.Tensor) -> torch.Tensor:
        seen.append(int(x.numel()) * self.config.factor)  # fine voxels produced
        return real(self, x)

    monkeypatch.setattr(AxisESPCN, "forward", counting)
    big = np.random.default_rng(0).random((256, 256, 40), dtype=np.float32)
    cfg = AdaptConfig(steps=3, val_every=100, batch_size=64, patch_size=200)  # asks for more than allowed
    _, info = adapt_model(net, big, (1, 1, 3), (1.0, 1.0, 3.0), config=cfg)
    assert info.steps == 3
    train = [n for n in seen if n <= MAX_BATCH * MAX_PATCH * MAX_PATCH]
    assert len(train) >= 3
    assert max(seen) <= max(MAX_BATCH * MAX_PATCH * MAX_PATCH, VAL_SLICES * VAL_SIDE * VAL_SIDE)


def test_the_lowest_held_out_error_refines_the_study(tmp_path: Path) -> None:
    """A network much worse than bicubic on the study, not improved by 0 steps: bicubic interpolation
    (slice-consistent), bit for bit what bicubic then slice consistency give."""
    hr = _blobs((32, 32, 24), seed=1)
    thick = degrade_volume(hr, (1, 1, 3), "box") * 1000
    bad = _net(3, scale_last=3.0)
    path = save_checkpoint(tmp_path / "a.pt", bad, bad.config.to_dict(), {"scale": [1, 1, 3]})
    enh = Enhancer(load_checkpoint(path), RunOptions(device=torch.device("cpu"), ensemble=1))
    sr, norm, rec = enh.enhance_array(thick, (1, 1, 3), spacing=(1.0, 1.0, 3.0), auto_adapt=AdaptConfig(steps=0))
    assert rec is not None and not rec["used"] and rec["fallback"] == "bicubic", rec
    x = norm.apply(thick)
    from mrisr.inference import super_resolve_array

    want = norm.invert(match_slices(super_resolve_array(None, x, (1, 1, 3)), x, (1, 1, 3)))
    np.testing.assert_allclose(sr, np.clip(want, thick.min(), thick.max()), rtol=1e-5, atol=1e-2)


@pytest.mark.parametrize(("factor", "axis"), [(3, 2), (5, 0)])
def test_refined_slices_sit_on_the_fine_grid_and_average_back(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], factor: int, axis: int
) -> None:
    """World coordinates of the refined slices: fine voxel F·c + (F − 1)/2 (odd F) of the output is
    where thick slice c was, on an oblique grid; the fine slices are spacing / F apart; the output's
    block means along the refined axis give the thick slices back."""
    spacing = tuple(float(factor) * 1.2 if a == axis else 1.2 for a in range(3))
    a_, b_ = np.deg2rad(25.0), np.deg2rad(-15.0)
    rz = np.array([[np.cos(a_), -np.sin(a_), 0], [np.sin(a_), np.cos(a_), 0], [0, 0, 1]])
    rx = np.array([[1, 0, 0], [0, np.cos(b_), -np.sin(b_)], [0, np.sin(b_), np.cos(b_)]])
    affine = np.eye(4)
    affine[:3, :3] = rz @ rx @ np.diag(spacing)
    affine[:3, 3] = [12.0, -4.0, 9.0]
    shape = tuple(6 if a == axis else 30 for a in range(3))
    thick = (_blobs(shape, seed=2) * 900 + 50).astype(np.float32)  # type: ignore[arg-type]
    src = tmp_path / "s.nii.gz"
    nib.save(nib.Nifti1Image(thick, affine), str(src))
    net = _net(factor, scale_last=0.02)
    ckpt = save_checkpoint(tmp_path / "n.pt", net, net.config.to_dict(), {"scale": [1, 1, factor]})
    scale = ",".join(str(factor if a == axis else 1) for a in range(3))
    args = ["enhance", str(src), "--out", str(tmp_path / "o"), "--scale", scale, "--checkpoint", str(ckpt)]
    assert main([*args, "--adapt-steps", "4", "--no-figure", "--device", "cpu", "--dtype", "float32"]) == 0, (
        capsys.readouterr().err
    )
    img = nib.load(tmp_path / "o" / "s_sr.nii.gz")
    out = np.asarray(img.dataobj, dtype=np.float64)
    assert out.shape[axis] == 6 * factor
    for c in range(6):
        fine_idx = [0, 0, 0]
        fine_idx[axis] = factor * c + (factor - 1) // 2
        coarse_idx = [0, 0, 0]
        coarse_idx[axis] = c
        np.testing.assert_allclose(
            img.affine @ [*fine_idx, 1], affine @ [*coarse_idx, 1], atol=1e-4
        )  # the centre fine slice of thick slice c is where c was
    step = img.affine[:3, axis]
    assert np.linalg.norm(step) == pytest.approx(spacing[axis] / factor)
    np.testing.assert_allclose(step / np.linalg.norm(step), affine[:3, axis] / spacing[axis], atol=1e-6)
    fs = tuple(factor if a == axis else 1 for a in range(3))
    means = degrade_volume(out.astype(np.float32), fs, "box")
    # Blocks with a voxel clamped to the input's range may depart from their mean: left out.
    clamped = ((out <= thick.min() + 1e-3) | (out >= thick.max() - 1e-3)).astype(np.float32)
    inside = degrade_volume(clamped, fs, "box") == 0
    np.testing.assert_allclose(means[inside], thick[inside], atol=0.5)
    side = json.loads((tmp_path / "o" / "s_sr.json").read_text())
    assert side["adapt"]["method"] == "axis-coarse-grid" and side["adapt"]["steps"] == 4


@pytest.mark.parametrize("factor", SHIPPED)
def test_thick_slices_start_from_the_shipped_one_axis_network(factor: int) -> None:
    """Where a one-axis coarse-grid network ships for the factor, it is the default, whatever --arch;
    its checkpoint records the corpus and the command that trained it."""
    from mrisr.enhance.options import resolve_checkpoint

    for arch in ("espcn", "srcnn"):
        ckpt = resolve_checkpoint(None, (1, 1, factor) if arch == "espcn" else (factor, 1, 1), arch=arch)
        assert ckpt.path is not None and ckpt.path.name == f"axis-espcn_x1-1-{factor}.pt"
    model = ckpt.build()
    assert isinstance(model, AxisESPCN) and model.config.factors == (1, factor)
    assert ckpt.scale == (1, 1, factor)
    assert "--arch axis-espcn --through-plane" in ckpt.meta["command"]
    assert {d["id"] for d in ckpt.meta["training_data"]} >= {"mni_icbm152_2009a_t1", "colin27_ch2_t1"}
    # ×2 has no one-axis network of its own (it failed the shipping rule): the through-plane SRCNN.
    assert resolve_checkpoint(None, (1, 1, 2)).path.name == "srcnn_x1-1-4.pt"  # type: ignore[union-attr]


def test_console_line_says_what_was_adapted_and_why_not() -> None:
    from mrisr.enhance.compute import note

    rec = {
        "used": True, "method": "axis-coarse-grid", "n_train_planes": 12, "n_val_planes": 2, "steps": 300,
        "seconds": 17.04, "reason": "held-out error 0.91× the unadapted network's, 0.70× bicubic's",
    }  # fmt: skip
    line = note(rec, (1, 1, 3), 2)
    assert line == (
        "through-plane network adapted on 14 of the study's own slices in 300 steps (17.0 s): "
        "held-out error 0.91× the unadapted network's, 0.70× bicubic's"
    )
    kept = {**rec, "used": False, "fallback": "axis-espcn", "reason": "adaptation did not lower the held-out error"}
    assert note(kept, (1, 1, 3), 2) == (
        "adaptation rejected (adaptation did not lower the held-out error); the unadapted axis-espcn ran"
    )


def test_a_study_too_thin_to_measure_gets_bicubic() -> None:
    """Two thick slices leave none to hold out: nothing says the network beats bicubic on this study,
    so the study is interpolated (dipy's test_piesno at ×5 lost 0.24 dB with the unadapted network)."""
    from mrisr.checkpoint import Checkpoint

    net = _net(5, scale_last=0.05)
    ckpt = Checkpoint(arch=net.config.to_dict(), state_dict=net.state_dict(), meta={"scale": [1, 1, 5]})
    enh = Enhancer(ckpt, RunOptions(device=torch.device("cpu"), ensemble=1))
    thick = _blobs((30, 30, 2), seed=3) * 100
    _, _, rec = enh.enhance_array(thick, (1, 1, 5), spacing=(1.0, 1.0, 5.0), auto_adapt=AdaptConfig(steps=2))
    assert rec is not None and not rec["used"] and rec["fallback"] == "bicubic", rec
    assert "too few slices" in rec["reason"]
