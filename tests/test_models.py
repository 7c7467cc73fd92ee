"""Architectures: SRCNN sizes, the LR-grid ESPCN's sub-pixel layout, identity set-ups, tiling."""

from __future__ import annotations

import json
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import torch

from mrisr.checkpoint import load_checkpoint, save_checkpoint
from mrisr.cli import main
from mrisr.inference import RunOptions, super_resolve_array
from mrisr.models import ESPCN, SRCNN, ESPCNConfig, SRCNNConfig, build_model


def test_srcnn_is_the_seed_network() -> None:
    model = SRCNN()
    convs = [m for m in model.modules() if isinstance(m, torch.nn.Conv2d)]
    assert [c.kernel_size[0] for c in convs] == [9, 1, 5]
    assert [c.out_channels for c in convs] == [64, 32, 1]
    assert sum(p.numel() for p in model.parameters()) == 64 * 81 + 64 + 64 * 32 + 32 + 32 * 25 + 1
    assert model(torch.zeros(2, 1, 13, 11)).shape == (2, 1, 13, 11)


def test_espcn_subpixel_layout_follows_the_voxel_centre_convention() -> None:
    """Output channel a*fw + b of LR voxel (i, j) lands at fine voxel (i*fh + a, j*fw + b)."""
    model = ESPCN(ESPCNConfig(factors=(2, 3), kernel_sizes=(1, 1, 1), filters=(1, 1), residual=False))
    convs = [m for m in model.modules() if isinstance(m, torch.nn.Conv2d)]
    with torch.no_grad():
        for c in convs:
            c.weight.zero_()
            c.bias.zero_()
        convs[0].weight.fill_(1.0)
        convs[1].weight.fill_(1.0)
        convs[2].weight[:, 0] = torch.arange(6, dtype=torch.float32).view(6, 1, 1) + 1  # channel c -> c+1
    x = torch.ones(1, 1, 2, 2)
    y = model(x)[0, 0]
    assert y.shape == (4, 6)
    for a in range(2):
        for b in range(3):
            assert torch.all(y[a::2, b::3] == a * 3 + b + 1)


def test_identity_espcn_is_bicubic_and_tiling_is_exact() -> None:
    x = np.random.default_rng(0).random((30, 26, 2)).astype(np.float32)
    model = ESPCN(ESPCNConfig())
    with torch.no_grad():
        model.body[-1].weight.zero_()
        model.body[-1].bias.zero_()
    np.testing.assert_allclose(
        super_resolve_array(model, x, (4, 4, 1)), super_resolve_array(None, x, (4, 4, 1)), atol=1e-6
    )
    torch.manual_seed(0)
    noisy = ESPCN(ESPCNConfig())
    with torch.no_grad():
        noisy.body[-1].weight.normal_(0, 0.1)
    whole = super_resolve_array(noisy, x, (4, 4, 1))
    tiled = super_resolve_array(noisy, x, (4, 4, 1), opts=RunOptions(max_tile_pixels=20 * 20 * 16))
    np.testing.assert_allclose(tiled, whole, atol=1e-5)
    with pytest.raises(ValueError, match="upsamples by"):
        super_resolve_array(noisy, x, (2, 2, 1))


def test_build_model_round_trips_both_architectures() -> None:
    for cfg in (SRCNNConfig(kernel_sizes=(9, 5, 5), residual=True), ESPCNConfig(factors=(3, 3))):
        model = build_model(cfg.to_dict())
        assert model.config == cfg  # type: ignore[union-attr]
    assert ESPCNConfig().macs_per_pixel < SRCNNConfig().macs_per_pixel / 5


def test_espcn_trains_and_enhances(tmp_path: Path) -> None:
    data = tmp_path / "data"
    data.mkdir()
    rng = np.random.default_rng(0)
    g = np.mgrid[:32, :32, :8].astype(np.float32)
    for i in range(2):
        vol = 300 + 200 * np.sin(g[0] / 2.0 + i) * np.cos(g[1] / 3.0) + rng.normal(0, 5, g[0].shape)
        nib.save(nib.Nifti1Image(vol.astype(np.int16), np.eye(4)), str(data / f"s{i}.nii.gz"))
    out = tmp_path / "run"
    args = ["train", str(data), "--out", str(out), "--arch", "espcn", "--scale", "2", "--epochs", "1"]
    args += ["--steps-per-epoch", "3", "--batch-size", "2", "--patch-size", "16", "--device", "cpu", "--filters", "8,4"]
    assert main(args) == 0
    ckpt = load_checkpoint(out / "best.pt")
    assert ckpt.arch["name"] == "espcn" and ckpt.arch["factors"] == [2, 2]
    src = data / "s0.nii.gz"
    assert main(["enhance", str(src), "--out", str(tmp_path / "o"), "--checkpoint", str(out / "best.pt")]) == 0
    assert nib.load(tmp_path / "o" / "s0_sr.nii.gz").shape == (64, 64, 8)
    other = save_checkpoint(tmp_path / "x.pt", ckpt.build(), ckpt.arch, {"scale": [2, 2, 1]})
    # A factor the coarse-grid network was not built for is refused before any study is read.
    assert main(["enhance", str(src), "--out", str(tmp_path / "o3"), "--checkpoint", str(other), "--scale", "3"]) == 2
    assert not (tmp_path / "o3").exists()


def test_ensemble_views() -> None:
    from mrisr.inference import ensemble_views

    for n in (1, 2, 4, 8):
        views = ensemble_views(n)
        assert len(views) == n and len(set(views)) == n and views[0] == (False, False, False)
        assert all(not v[2] for v in ensemble_views(n, symmetric=False))  # never swap unequal axes
    assert len(ensemble_views(8, symmetric=False)) == 4
    with pytest.raises(ValueError, match="ensemble"):
        RunOptions(ensemble=3)


def test_ensemble_is_the_mean_of_the_turned_back_views() -> None:
    from mrisr.inference import SliceRunner

    torch.manual_seed(1)
    espcn = ESPCN(ESPCNConfig())
    srcnn = SRCNN(SRCNNConfig(residual=True))
    with torch.no_grad():
        espcn.body[-1].weight.normal_(0, 0.1)
        srcnn.body[-1].weight.normal_(0, 0.1)
    x = torch.rand(3, 1, 9, 7, generator=torch.Generator().manual_seed(2))
    plain = SliceRunner(espcn, RunOptions())(x)
    rot = SliceRunner(espcn, RunOptions())(x.transpose(-1, -2)).transpose(-1, -2)
    flips = [SliceRunner(espcn, RunOptions())(x.flip(d)).flip(d) for d in ([-2], [-1], [-2, -1])]
    assert not torch.allclose(plain, rot, atol=1e-4)  # the network is not equivariant by itself
    torch.testing.assert_close(SliceRunner(espcn, RunOptions(ensemble=2))(x), (plain + rot) / 2)
    torch.testing.assert_close(SliceRunner(espcn, RunOptions(ensemble=4))(x), (plain + sum(flips)) / 4)
    # A one-axis pass (unequal factors) never transposes: an 8-ensemble is the four flips.
    up = torch.rand(2, 1, 12, 5, generator=torch.Generator().manual_seed(3))
    four = SliceRunner(srcnn, RunOptions(ensemble=4))(up, symmetric=False)
    torch.testing.assert_close(SliceRunner(srcnn, RunOptions(ensemble=8))(up, symmetric=False), four)
    # Bicubic is flip- and transpose-equivariant, so an identity network is still exactly bicubic.
    ident = SRCNN(SRCNNConfig(residual=True))
    with torch.no_grad():
        ident.body[-1].weight.zero_()
        ident.body[-1].bias.zero_()
    v = np.random.default_rng(4).random((10, 8, 3)).astype(np.float32)
    np.testing.assert_allclose(
        super_resolve_array(ident, v, (4, 4, 1), opts=RunOptions(ensemble=8)),
        super_resolve_array(None, v, (4, 4, 1)),
        atol=1e-6,
    )


def test_cli_ensemble_default_and_sidecar(tmp_path: Path) -> None:
    import inspect

    from mrisr.cli.enhance import enhance
    from mrisr.inference import DEFAULT_ENSEMBLE

    assert inspect.signature(enhance).parameters["ensemble"].default == DEFAULT_ENSEMBLE
    src = tmp_path / "s.nii.gz"
    nib.save(nib.Nifti1Image(np.random.default_rng(0).random((8, 8, 2)).astype(np.float32), np.eye(4)), src)
    out = tmp_path / "o"
    assert main(["enhance", str(src), "--out", str(out), "--no-figure", "--ensemble", "2"]) == 0
    assert json.loads((out / "s_sr.json").read_text())["ensemble"] == 2
    assert main(["enhance", str(src), "--out", str(tmp_path / "p"), "--ensemble", "3"]) == 2


def test_ensemble_with_tiling_equals_untiled() -> None:
    x = np.random.default_rng(5).random((22, 18, 2)).astype(np.float32)
    torch.manual_seed(3)
    net = ESPCN(ESPCNConfig())
    with torch.no_grad():
        net.body[-1].weight.normal_(0, 0.1)
    whole = super_resolve_array(net, x, (4, 4, 1), opts=RunOptions(ensemble=8))
    tiled = super_resolve_array(net, x, (4, 4, 1), opts=RunOptions(ensemble=8, max_tile_pixels=12 * 12 * 16))
    np.testing.assert_allclose(tiled, whole, atol=1e-5)


def test_ensemble_never_writes_into_its_input() -> None:
    from mrisr.inference import SliceRunner

    class Same(torch.nn.Module):
        input_space = "hr"

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return x

    x = torch.rand(2, 1, 6, 6, generator=torch.Generator().manual_seed(0))
    keep = x.clone()
    torch.testing.assert_close(SliceRunner(Same(), RunOptions(ensemble=8, channels_last=False))(x), keep)
    torch.testing.assert_close(x, keep)


def test_batches_are_sized_to_the_memory_budget(monkeypatch: pytest.MonkeyPatch) -> None:
    from mrisr.inference import _batch_size

    # 100×100 output pixels × 400 bytes = 4e6 bytes a slice; the CPU budget is 512 MiB: 134 slices.
    assert _batch_size(RunOptions(), 100 * 100) == 134
    assert _batch_size(RunOptions(batch_size=7), 100 * 100) == 7
    free = {"bytes": 0}
    monkeypatch.setattr(torch.cuda, "mem_get_info", lambda device=None: (free["bytes"], 80 * 10**9))
    cuda = RunOptions(device=torch.device("cuda"))
    for free_bytes, want in ((10**9, 125), (10**12, 1024), (10**6, 1)):  # half the free memory; 1..1024
        free["bytes"] = free_bytes
        assert _batch_size(cuda, 100 * 100) == want, free_bytes


@pytest.mark.parametrize(
    ("axis", "total", "voxels"),
    [
        (2, 396.8051397046074, (-0.09650491923093796, 0.3803552985191345, 0.524423360824585)),
        (0, 396.4735086597502, (-0.06760905683040619, 0.44136691093444824, 0.5622831583023071)),
    ],
)
def test_super_resolved_values_are_pinned(axis: int, total: float, voxels: tuple[float, float, float]) -> None:
    """The shipped x2 SRCNN on a seeded array, pinned before the slicing became a MONAI transform."""
    from mrisr.checkpoint import shipped_checkpoint

    path = shipped_checkpoint((2, 2, 1), arch="srcnn")
    assert path is not None
    ck = load_checkpoint(path)
    model = ck.build()
    model.load_state_dict(ck.state_dict)
    x = np.random.default_rng(11).random((7, 6, 5)).astype(np.float32)
    y = super_resolve_array(model, x, (2, 2, 1), axis=axis, opts=RunOptions(ensemble=2))
    assert y.shape == (14, 12, 5) and y.dtype == np.float32
    assert float(y.astype(np.float64).sum()) == pytest.approx(total, abs=1e-3)
    np.testing.assert_allclose([y[0, 0, 0], y[5, 7, 3], y[13, 11, 4]], voxels, atol=1e-5)
