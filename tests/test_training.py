"""Training: checkpoints, split, exact resume, determinism, the patch pairs, the CLI and DDP."""

from __future__ import annotations

import csv
import json
import os
import shutil
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import torch
import torch.nn.functional as F

from mrisr.checkpoint import load_checkpoint
from mrisr.cli import main
from mrisr.degradation import degrade_and_upsample
from mrisr.discovery import Study
from mrisr.models import SRCNN, SRCNNConfig
from mrisr.training import Callbacks, PatchDataset, TrainConfig, split_studies, train, validate
from mrisr.training.data import (
    SLAB_GAP,
    LoadedStudy,
    Piece,
    Split,
    TrainingData,
    build_pieces,
    head_mask,
    slab_for,
)
from mrisr.training.losses import ssim_loss

TINY_MODEL = SRCNNConfig(kernel_sizes=(3, 1, 3), filters=(4, 4), residual=True)


#: Options of a tiny CPU training run (a few steps of a 3-1-3 network with 4 filters).
TINY_RUN = [
    "--scale", "2", "--epochs", "1", "--steps-per-epoch", "2", "--batch-size", "2", "--patch-size", "8",
    "--kernel-sizes", "3,1,3", "--filters", "4,4", "--device", "cpu",
]  # fmt: skip


def _phantom(shape: tuple[int, int, int], seed: int) -> np.ndarray:
    """An ellipsoid 'head' with textured tissue and a dark 'ventricle', uint16-like values."""
    rng = np.random.default_rng(seed)
    g = np.mgrid[: shape[0], : shape[1], : shape[2]].astype(np.float32)
    c = [(s - 1) / 2 for s in shape]
    r = np.sqrt(sum(((g[a] - c[a]) / (0.42 * shape[a])) ** 2 for a in range(3)))
    x = np.where(r < 1, 400 + 150 * np.sin(g[0] / 1.7 + seed) * np.cos(g[1] / 2.3), 0.0)
    x[r < 0.3] = 60.0
    x += rng.normal(0, 5, shape)
    return np.clip(x, 0, None).astype(np.int16)


@pytest.fixture
def studies(tmp_path: Path) -> Path:
    root = tmp_path / "data"
    root.mkdir()
    for i in range(3):
        nib.save(nib.Nifti1Image(_phantom((16, 16, 8), i), np.diag([1.0, 1.0, 1.0, 1.0])), root / f"sub{i}.nii.gz")
    return root


def _cfg(**kw: object) -> TrainConfig:
    base: dict[str, object] = dict(
        scale=2,
        epochs=2,
        steps_per_epoch=3,
        batch_size=2,
        patch_size=8,
        lr=1e-3,
        val_fraction=0.34,
        degradation="mixed",
        device="cpu",
        seed=3,
        model=TINY_MODEL,
    )
    base.update(kw)
    return TrainConfig(**base)  # type: ignore[arg-type]


def _weights(path: Path) -> dict[str, torch.Tensor]:
    return load_checkpoint(path).state_dict


def test_tiny_run_writes_loadable_checkpoints(studies: Path, tmp_path: Path) -> None:
    out = tmp_path / "run"
    res = train([studies], out, _cfg())
    assert res.step == 6 and res.epoch == 2
    best, last = load_checkpoint(out / "best.pt"), load_checkpoint(out / "last.pt")
    assert best.scale == (2, 2, 1) and last.scale == (2, 2, 1)
    assert best.train_state is None and last.train_state is not None
    assert last.train_state["step"] == 6
    assert best.meta["normalization"]["method"] == "percentile"
    assert best.meta["normalization"]["upper_percentile"] == 99.5
    assert best.meta["degradation"] == "mixed"
    assert best.meta["patch_size"] == 8
    files = {d["file"] for d in best.meta["training_data"]}
    assert len(files) == 2 and all(len(d["sha256"]) == 64 for d in best.meta["training_data"])
    net = best.build()
    assert net(torch.zeros(1, 1, 8, 8)).shape == (1, 1, 8, 8)
    lines = (out / "metrics.csv").read_text().splitlines()
    assert lines[0].startswith("epoch,step,loss,val_psnr_sr,val_psnr_bicubic,val_ssim_sr,val_ssim_bicubic")
    assert len(lines) == 3
    assert (out / "curves.png").read_bytes()[:4] == b"\x89PNG"
    split = json.loads((out / "split.json").read_text())
    assert not set(split["train"]) & set(split["val"])
    assert sorted(split["train"] + split["val"]) == ["sub0", "sub1", "sub2"]
    assert {d["id"] for d in best.meta["training_data"]} == set(split["train"])


# No validation in these two: the weights are what must match, and validation only costs time.
NO_VAL = dict(epochs=4, steps_per_epoch=2, val_fraction=0.0)


def test_runs_are_deterministic(studies: Path, tmp_path: Path) -> None:
    full = train([studies], tmp_path / "full", _cfg(**NO_VAL))
    again = train([studies], tmp_path / "again", _cfg(**NO_VAL))
    w_full, w_again = _weights(full.last), _weights(again.last)
    for k in w_full:
        assert torch.equal(w_full[k], w_again[k]), k
    # A different seed gives different weights (so the equality above is not vacuous).
    other = train([studies], tmp_path / "other", _cfg(**{**NO_VAL, "seed": 4}))
    assert not torch.equal(_weights(other.last)["body.0.weight"], w_full["body.0.weight"])


def test_resume_equals_uninterrupted(studies: Path, tmp_path: Path) -> None:
    full = train([studies], tmp_path / "full", _cfg(**NO_VAL))
    # Stopped after 2 of 4 epochs, resumed, stopped again in the middle of an epoch, resumed to the end.
    train([studies], tmp_path / "part", _cfg(**NO_VAL, max_steps=4))
    stopped = load_checkpoint(tmp_path / "part" / "last.pt")
    assert stopped.train_state is not None and stopped.train_state["step"] == 4
    train([studies], tmp_path / "part", _cfg(**NO_VAL, max_steps=5), resume=True)
    resumed = train([studies], tmp_path / "part", _cfg(**NO_VAL), resume=True)
    assert full.step == resumed.step == 8
    w_full, w_res = _weights(full.last), _weights(resumed.last)
    for k in w_full:
        assert torch.allclose(w_full[k], w_res[k], rtol=0, atol=1e-7), k
    # The last 4 steps moved the weights (so matching at the end is not trivial).
    assert any(not torch.allclose(stopped.state_dict[k], w_res[k], rtol=0, atol=1e-6) for k in w_res)


def test_stop_mid_epoch_then_resume_equals_uninterrupted(studies: Path, tmp_path: Path) -> None:
    """A stop request (SIGTERM in the CLI) after step 4 of 9, in the middle of epoch 2: last.pt holds
    that step, no row or validation is added, and the resumed run ends as the uninterrupted one,
    best.pt and the validation rows included."""
    cfg = _cfg(epochs=3)
    full = train([studies], tmp_path / "full", cfg)
    steps: list[int] = []
    stopped = train(
        [studies],
        tmp_path / "part",
        cfg,
        callbacks=Callbacks(on_step=lambda s, _: steps.append(s), should_stop=lambda: len(steps) >= 4),
    )
    assert stopped.stopped and stopped.step == 4 and [r["step"] for r in stopped.history] == [3]
    state = load_checkpoint(tmp_path / "part" / "last.pt").train_state
    assert state is not None and (state["step"], state["epoch"], state["batch_in_epoch"]) == (4, 1, 1)
    resumed = train([studies], tmp_path / "part", cfg, resume=True)
    assert not resumed.stopped and resumed.step == full.step == 9
    for a, b in ((full.last, resumed.last), (full.best, resumed.best)):
        wa, wb = _weights(a), _weights(b)
        assert all(torch.allclose(wa[k], wb[k], rtol=0, atol=1e-7) for k in wa)

    def rows(run: str) -> list[list[str]]:
        with open(tmp_path / run / "metrics.csv", newline="") as fh:
            return [
                # the loss too: the stopped epoch's mean covers its steps before and after the stop
                [v for k, v in r.items() if k.startswith("val_") or k in ("step", "epoch", "loss")]
                for r in csv.DictReader(fh)
            ]

    assert rows("part") == rows("full") and len(rows("full")) == 3


def test_resume_refuses_other_settings_or_data(studies: Path, tmp_path: Path) -> None:
    """A resumed run must be the run it continues: only max_steps, workers and device may change."""
    train([studies], tmp_path / "run", _cfg(**NO_VAL, max_steps=2))
    for change, why in (({"lr": 0.1}, "lr 0.001 -> 0.1"), ({"epochs": 8}, "epochs"), ({"scale": 3}, "scale")):
        with pytest.raises(ValueError, match=why):
            train([studies], tmp_path / "run", _cfg(**{**NO_VAL, **change}), resume=True)
    nib.save(nib.Nifti1Image(_phantom((16, 16, 8), 9), np.eye(4)), studies / "sub1.nii.gz")  # other data
    with pytest.raises(ValueError, match="training studies differ"):
        train([studies], tmp_path / "run", _cfg(**NO_VAL), resume=True)


def test_refused_resume_writes_nothing_and_checks_validation_studies(studies: Path, tmp_path: Path) -> None:
    run = tmp_path / "run"
    train([studies], run, _cfg(max_steps=2))
    split_before = (run / "split.json").read_text()
    with pytest.raises(ValueError, match="seed 3 -> 4"):
        train([studies], run, _cfg(seed=4), resume=True)  # another seed: another split too
    assert (run / "split.json").read_text() == split_before
    (val_id,) = json.loads(split_before)["val"]
    nib.save(nib.Nifti1Image(_phantom((16, 16, 8), 7), np.eye(4)), studies / f"{val_id}.nii.gz")
    with pytest.raises(ValueError, match=f"validation studies differ.*{val_id}"):
        train([studies], run, _cfg(), resume=True)


def test_a_study_smaller_than_the_scale_is_skipped(studies: Path, tmp_path: Path) -> None:
    nib.save(nib.Nifti1Image(_phantom((3, 16, 8), 1), np.eye(4)), studies / "thin.nii.gz")
    res = train([studies], tmp_path / "run", _cfg(scale=4, epochs=1, steps_per_epoch=2))
    assert {d["id"] for d in load_checkpoint(res.last).meta["training_data"]} <= {"sub0", "sub1", "sub2"}
    split = json.loads((tmp_path / "run" / "split.json").read_text())
    assert "thin" not in split["train"] + split["val"]


def test_split_is_by_study_seeded_and_disjoint() -> None:
    ids = [f"s{i:02d}" for i in range(20)]
    a = split_studies(ids, 0.2, seed=1)
    assert len(a.val) == 4 and len(a.train) == 16
    assert not set(a.train) & set(a.val) and sorted(a.train + a.val) == ids
    assert split_studies(list(reversed(ids)), 0.2, seed=1) == a  # input order does not matter
    assert split_studies(ids, 0.2, seed=2).val != a.val
    two = split_studies(["a", "b"], 0.1, seed=0)
    assert len(two.val) == 1 and len(two.train) == 1  # at least one validation study
    one = split_studies(["a"], 0.1, seed=0)
    assert one.train == ("a",) and one.val == ()


def test_single_study_holds_out_a_slab() -> None:
    slab = slab_for(100, 0.1)
    assert slab is not None
    a, b = slab
    assert b - a == 10 and a >= SLAB_GAP and b + SLAB_GAP <= 100
    vol = np.arange(8 * 8 * 100, dtype=np.float32).reshape(8, 8, 100)
    study = Study(id="x", fmt="nifti", path=Path("x.nii.gz"))
    loaded = TrainingData({"x": LoadedStudy(study, (vol,), (1.0, 1.0, 1.0), {}, "0" * 64)})
    pieces, val = build_pieces(loaded, Split(("x",), (), slab), _cfg())
    assert len(val) == 1 and np.array_equal(val[0][1], vol[:, :, a:b])
    used = np.concatenate([p.data[0, 0, :] for p in pieces])
    held = vol[0, 0, a - SLAB_GAP : b + SLAB_GAP]
    assert not np.isin(held, used).any()
    assert used.size == 100 - (b - a) - 2 * SLAB_GAP


def test_single_study_run_validates_on_slab(tmp_path: Path) -> None:
    root = tmp_path / "one"
    root.mkdir()
    nib.save(nib.Nifti1Image(_phantom((16, 16, 40), 0), np.eye(4)), root / "only.nii.gz")
    out = tmp_path / "run"
    train([root], out, _cfg(epochs=1, steps_per_epoch=2, val_fraction=0.2))
    split = json.loads((out / "split.json").read_text())
    assert split["validation"] == "slab of the training study" and split["slab_axis2"] is not None
    assert "val_psnr_sr" in (out / "metrics.csv").read_text().splitlines()[0]


def test_patch_pairs_are_seeded_and_input_is_degraded_target() -> None:
    vol = _phantom((24, 24, 12), 5).astype(np.float32) / 500
    pieces = [Piece(vol, (0, 1, 2), 0.05)]
    cfg = _cfg(degradation="box", patch_size=12, invert_prob=0.0)
    ds = PatchDataset(pieces, cfg, length=10)
    a, b = ds[3], ds[3]
    assert torch.equal(a["target"], b["target"]) and torch.equal(a["input"], b["input"])
    assert not torch.equal(ds[4]["target"], a["target"])
    ds.epoch = 1
    assert not torch.equal(ds[3]["target"], a["target"])
    assert a["target"].shape == (1, 12, 12)
    torch.testing.assert_close(a["input"], degrade_and_upsample(a["target"][None], (2, 2), "box")[0])


def test_patches_are_centred_on_the_foreground() -> None:
    vol = np.zeros((48, 48, 6), np.float32)
    vol[18:30, 18:30] = 1.0  # a small 'head': uniform 12x12 crops would mostly miss it (~10 % cover)
    cfg = _cfg(patch_size=12, invert_prob=0.0, augment=False, degradation="box")
    ds = PatchDataset([Piece(vol, (2,), 0.05)], cfg, length=20)
    fg = [float((ds[i]["target"] > 0.5).float().mean()) for i in range(20)]
    assert min(fg) >= 0.25


def test_contrast_inversion_inverts_inside_the_head_only() -> None:
    vol = np.zeros((16, 16, 4), np.float32)
    vol[4:12, 4:12] = 0.8
    vol[7:9, 7:9] = 0.1  # dark 'CSF' enclosed by tissue counts as head
    cfg = _cfg(patch_size=16, invert_prob=1.0, augment=False, degradation="box")
    t = PatchDataset([Piece(vol, (2,), 0.04)], cfg, length=1)[0]["target"][0].numpy()
    assert t[0, 0] == 0.0  # background untouched
    assert t[8, 8] - t[5, 5] > 0.6  # the dark centre is now the brightest tissue
    mask = head_mask(vol[:, :, 0], 0.04)
    assert mask[8, 8] and not mask[0, 0]


def _bicubic_by_hand(hr: np.ndarray, fh: int, fw: int) -> tuple[np.ndarray, np.ndarray]:
    """Slices across axis 2 degraded by antialiased bicubic ``(fh, fw)`` and bicubic back, with torch
    alone (not mrisr's degradation code): ``(low-resolution, upsampled)``, axes ``(i, j, k)``."""
    t = torch.from_numpy(hr).permute(2, 0, 1)[:, None]
    h, w = hr.shape[:2]
    lr = F.interpolate(t, size=(h // fh, w // fw), mode="bicubic", antialias=True, align_corners=False)
    up = F.interpolate(lr, size=(h, w), mode="bicubic", align_corners=False)
    return lr[:, 0].permute(1, 2, 0).numpy(), up[:, 0].permute(1, 2, 0).numpy()


def _psnr(a: np.ndarray, ref: np.ndarray) -> float:
    rng = float(ref.max() - ref.min())
    return float(10 * np.log10(rng**2 / np.mean((a.astype(np.float64) - ref) ** 2)))


def test_validate_matches_an_independent_bicubic() -> None:
    hr = _phantom((16, 16, 6), 2).astype(np.float32) / 400
    net = SRCNN(TINY_MODEL)
    torch.nn.init.zeros_(net.body[-1].weight)  # residual net that adds nothing: SR == bicubic
    m = validate(net, [("v", hr)], 2, "bicubic")
    lr, up = _bicubic_by_hand(hr, 2, 2)
    assert m["val_psnr_sr"] == pytest.approx(_psnr(up, hr), abs=1e-3)
    # The baseline is the bicubic clamped to the low-resolution range, and here the clamp matters.
    clamped = up.clip(lr.min(), lr.max())
    assert _psnr(clamped, hr) > _psnr(up, hr) + 0.01
    assert m["val_psnr_bicubic"] == pytest.approx(_psnr(clamped, hr), abs=1e-3)
    assert 0 < m["val_ssim_sr"] < 1


def test_ssim_loss_is_zero_for_identical_images() -> None:
    x = torch.rand(2, 1, 16, 16, generator=torch.Generator().manual_seed(0))
    assert float(ssim_loss(x, x)) == pytest.approx(0.0, abs=1e-6)
    assert float(ssim_loss(x, torch.rand_like(x))) > 0.5


def test_cli_trains_and_refuses_to_overwrite(studies: Path, tmp_path: Path) -> None:
    out = tmp_path / "cli"
    args = ["train", str(studies), "--out", str(out), *TINY_RUN, "--loss", "l1"]
    assert main(args) == 0
    assert load_checkpoint(out / "best.pt").meta["train_config"]["loss"] == "l1"
    assert main(args) == 2  # an existing run is not overwritten without --resume
    assert main([*args[:-2], "--loss", "huber"]) == 2


def test_cli_records_the_patch_ingredients(studies: Path, tmp_path: Path) -> None:
    out = tmp_path / "ingredients"
    extra = ["--bias-field", "0.5", "--hr-blur", "0.25", "--zoom-out", "0.75", "--noise-std", "0.04"]
    assert main(["train", str(studies), "--out", str(out), *TINY_RUN, *extra, "--noise-prob", "0.6"]) == 0
    cfg = load_checkpoint(out / "best.pt").meta["train_config"]
    got = {k: cfg[k] for k in ("bias_field", "hr_blur", "zoom_out", "noise_std", "noise_prob")}
    assert got == {"bias_field": 0.5, "hr_blur": 0.25, "zoom_out": 0.75, "noise_std": 0.04, "noise_prob": 0.6}
    assert main(["train", str(studies), "--out", str(tmp_path / "x"), *TINY_RUN, "--zoom-out", "1.5"]) == 2


@pytest.mark.parametrize(
    ("extra", "why"), [(["--device", "foo"], "not one of auto"), (["--out", "FILE"], "output folder")]
)
def test_cli_training_usage_errors_are_one_line(
    studies: Path, tmp_path: Path, extra: list[str], why: str, capsys: pytest.CaptureFixture[str]
) -> None:
    afile = tmp_path / "afile"
    afile.write_text("x")
    args = ["train", str(studies), "--out", str(tmp_path / "run"), *TINY_RUN[:-2], *extra]
    assert main([str(afile) if a == "FILE" else a for a in args]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and why in err[0], err


def test_cli_training_skips_bad_studies_with_one_line_each(
    studies: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    raw = (studies / "sub0.nii.gz").read_bytes()
    (studies / "trunc.nii.gz").write_bytes(raw[: len(raw) // 2])
    (studies / "empty.nii.gz").write_bytes(b"")
    nan = _phantom((16, 16, 8), 5).astype(np.float32)
    nan[3, 3, 3] = np.nan
    nib.save(nib.Nifti1Image(nan, np.eye(4)), studies / "nan.nii.gz")
    out = tmp_path / "run"
    with caplog.at_level("ERROR", logger="mrisr"):
        assert main(["train", str(studies), "--out", str(out), *TINY_RUN]) == 0
    skipped = [r.getMessage() for r in caplog.records if r.getMessage().startswith("skipping")]
    assert len(skipped) == 3 and all(len(m.splitlines()) == 1 for m in skipped), skipped
    for name, why in (("trunc", "truncated"), ("empty", "empty"), ("nan", "NaN")):
        assert any(f"{name}.nii.gz" in m and why in m for m in skipped), (name, skipped)
    split = json.loads((out / "split.json").read_text())
    assert sorted(split["train"] + split["val"]) == ["sub0", "sub1", "sub2"]


@pytest.mark.slow
def test_torchrun_two_processes_on_cpu(studies: Path, tmp_path: Path) -> None:
    out = tmp_path / "ddp"
    torchrun = Path(sys.executable).with_name("torchrun")
    launcher = [str(torchrun)] if torchrun.exists() else [sys.executable, "-m", "torch.distributed.run"]
    cmd = [
        *launcher,
        "--standalone",
        "--nproc_per_node",
        "2",
        "-m",
        "mrisr.cli",
        "train",
        str(studies),
        "--out",
        str(out),
        *TINY_RUN,
    ]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=300, env=env, cwd=tmp_path)
    assert done.returncode == 0, done.stderr[-2000:]
    ck = load_checkpoint(out / "last.pt")
    assert ck.scale == (2, 2, 1) and ck.meta["device"] == "cpu x2"
    assert ck.train_state is not None and ck.train_state["step"] == 2
    shutil.rmtree(out)


@pytest.mark.slow
def test_example_trains_briefly(tmp_path: Path) -> None:
    script = Path(__file__).resolve().parents[1] / "examples" / "train_briefly.py"
    done = subprocess.run(
        [sys.executable, str(script), str(tmp_path / "ex")], capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stderr[-2000:]
    assert "validation PSNR" in done.stdout
    assert load_checkpoint(tmp_path / "ex" / "best.pt").scale == (2, 2, 1)


def test_patches_do_not_depend_on_the_number_of_workers() -> None:
    from torch.utils.data import DataLoader

    vol = _phantom((24, 24, 12), 6).astype(np.float32) / 500
    ds = PatchDataset([Piece(vol, (0, 1, 2), 0.05)], _cfg(patch_size=8), length=8)
    one = next(iter(DataLoader(ds, batch_size=8, num_workers=0)))
    two = next(iter(DataLoader(ds, batch_size=8, num_workers=2)))
    assert torch.equal(one["target"], two["target"]) and torch.equal(one["input"], two["input"])


def test_shipped_x4_weights() -> None:
    from mrisr.checkpoint import shipped_checkpoint

    path = shipped_checkpoint((4, 4, 1))
    assert path is not None and path.stat().st_size < 500_000
    ck = load_checkpoint(path)
    assert ck.scale == (4, 4, 1) and ck.train_state is None
    assert ck.arch["kernel_sizes"] == [9, 1, 5] and ck.arch["residual"] and ck.arch["padding_mode"] == "replicate"
    assert [d["file"] for d in ck.meta["training_data"]] == ["mni_icbm152_t1_tal_nlin_sym_09a_converted.nii.gz"]
    assert ck.meta["best_val"]["val_psnr_sr"] > ck.meta["best_val"]["val_psnr_bicubic"] + 1.0
    assert (path.parent / ck.meta["licence_notice"]).is_file()
    # On a smooth ramp (no detail to add), the residual network stays close to its bicubic input.
    x = torch.linspace(0, 1, 32)[:, None].expand(32, 32)[None, None].contiguous()
    with torch.no_grad():
        y = ck.build()(x)
    assert float((y - x)[..., 8:-8, 8:-8].abs().max()) < 0.05


def test_through_plane_patches_are_degraded_along_one_axis_only() -> None:

    vol = _phantom((24, 24, 12), 6).astype(np.float32) / 500
    cfg = _cfg(degradation="box", patch_size=12, invert_prob=0.0, through_plane=True)
    ds = PatchDataset([Piece(vol, (0, 1, 2), 0.05)], cfg, length=12)
    seen = set()
    for i in range(12):
        item = ds[i]
        t = item["target"][None]
        rows, cols = degrade_and_upsample(t, (2, 1), "box")[0], degrade_and_upsample(t, (1, 2), "box")[0]
        if torch.equal(item["input"], rows):
            seen.add("rows")
        elif torch.equal(item["input"], cols):
            seen.add("cols")
        else:
            raise AssertionError(f"patch {i} is not a one-axis degradation of its target")
    assert seen == {"rows", "cols"}  # both orientations, so any plane containing the thick axis works
    with pytest.raises(ValueError, match="fine grid"):
        from mrisr.models import ESPCNConfig

        _cfg(through_plane=True, model=ESPCNConfig(factors=(2, 2)))


def test_axis_espcn_patches_are_coarse_along_their_columns_only() -> None:
    """--arch axis-espcn --through-plane: the input is the target averaged ×s along its columns (the
    target itself transposed for half of the patches, so both in-plane orientations are learnt)."""
    from mrisr.models import AxisESPCNConfig

    vol = _phantom((24, 24, 12), 6).astype(np.float32) / 500
    model = AxisESPCNConfig(factors=(1, 2), kernel_sizes=(3, 3), filters=(4,))
    cfg = _cfg(degradation="box", patch_size=12, invert_prob=0.0, through_plane=True, model=model)
    ds = PatchDataset([Piece(vol, (0, 1, 2), 0.05)], cfg, length=12)
    for i in range(12):
        item = ds[i]
        assert item["input"].shape == (1, 12, 6) and item["target"].shape == (1, 12, 12)
        torch.testing.assert_close(item["input"], item["target"].reshape(1, 12, 6, 2).mean(-1))
    with pytest.raises(ValueError, match="through-plane only"):
        _cfg(model=model)
    with pytest.raises(ValueError, match="cannot train at scale"):
        _cfg(through_plane=True, model=AxisESPCNConfig(factors=(1, 3)))


def test_through_plane_run_makes_a_one_axis_checkpoint_enhance_uses(studies: Path, tmp_path: Path) -> None:
    res = train([studies], tmp_path / "run", _cfg(through_plane=True))
    ckpt = load_checkpoint(tmp_path / "run" / "best.pt")
    assert ckpt.scale == (1, 1, 2) and ckpt.meta["train_config"]["through_plane"] is True
    assert res.step == 6
    # Validation degraded one axis only: a residual net that adds nothing scores exactly 1D bicubic.
    hr = _phantom((16, 16, 6), 2).astype(np.float32) / 400
    net = SRCNN(TINY_MODEL)
    torch.nn.init.zeros_(net.body[-1].weight)
    m = validate(net, [("v", hr)], (1, 2, 1), "bicubic")
    _, up = _bicubic_by_hand(hr, 1, 2)
    assert m["val_psnr_sr"] == pytest.approx(_psnr(up, hr), abs=1e-3)
    src = tmp_path / "thick.nii.gz"
    nib.save(nib.Nifti1Image(_phantom((12, 12, 4), 9), np.diag([1.0, 1.0, 2.0, 1.0])), src)
    out = tmp_path / "out"
    args = ["enhance", str(src), "--out", str(out), "--checkpoint", str(tmp_path / "run" / "best.pt")]
    assert main([*args, "--scale", "1,1,2", "--no-figure", "--no-adapt"]) == 0
    side = json.loads((out / "thick_sr.json").read_text())
    # Run as it is (not adapted), then made slice-consistent.
    assert side["adapt"] == {"used": False, "reason": "--no-adapt", "slice_consistency": {"profile_width": 2.0}}
    assert side["scale"] == [1, 1, 2]
    img = nib.load(out / "thick_sr.nii.gz")
    assert img.shape == (12, 12, 8)
    np.testing.assert_allclose(img.affine[:3, 3], [0.0, 0.0, -0.5], atol=1e-6)  # voxel-centre convention


def test_training_normalisation_is_the_plain_rule_per_frame(tmp_path: Path) -> None:
    """The MONAI transform in the data path gives the numbers of ``fit_normalization`` bit for bit, for
    every frame of a 4D study (fitted once to the whole series)."""
    from mrisr.training.data import LoadNormalized
    from mrisr.transforms import fit_normalization

    rng = np.random.default_rng(5)
    data = (rng.random((10, 9, 4, 3)) * 800 - 100).astype(np.int16)
    nib.save(nib.Nifti1Image(data, np.eye(4)), tmp_path / "dwi.nii.gz")
    out = LoadNormalized()({"study": Study(id="dwi", fmt="nifti", path=tmp_path / "dwi.nii.gz")})
    plain = fit_normalization(data.astype(np.float32))
    assert len(out["frames"]) == 3 and out["normalization"] == plain.to_dict()
    for t, frame in enumerate(out["frames"]):
        assert frame.dtype == np.float32 and frame.flags.c_contiguous
        np.testing.assert_array_equal(frame, plain.apply(data[..., t]))


def test_random_contrast_reorders_tissues_inside_the_head_only() -> None:
    from mrisr.training.data import CONTRAST_KNOTS, random_contrast

    hr = np.tile(np.linspace(0.0, 1.2, 64, dtype=np.float32), (8, 1))
    mask = hr > 0.1
    outs = [random_contrast(hr, mask, np.random.default_rng(s)) for s in range(6)]
    for out in outs:
        assert out.dtype == np.float32
        np.testing.assert_array_equal(out[~mask], hr[~mask])  # the air is left alone
        assert out[mask].min() >= 0.05 / 1.0 - 1e-6 and out[mask].max() <= 1.0 + 1e-6
        # The curve passes through its knots: at a knot inside the head, one of the drawn values.
        k = int(np.argmin(np.abs(hr[0] - CONTRAST_KNOTS[3])))
        assert out[0, k] > 0
    # Different draws give different tissue orders (not one monotone rescaling of the input).
    orders = {tuple(np.argsort(o[0, mask[0]][::8])) for o in outs}
    assert len(orders) > 1


def test_random_bias_field_is_a_smooth_positive_gain() -> None:
    from mrisr.training.data import random_bias_field

    hr = np.full((64, 64), 0.5, dtype=np.float32)
    gains = [random_bias_field(hr, np.random.default_rng(s)) / hr for s in range(8)]
    assert all(g.dtype == np.float32 and g.shape == hr.shape for g in gains)
    assert all(g.min() > 0 for g in gains)
    assert max(float(np.ptp(g)) for g in gains) > 0.05  # it varies over the patch ...
    for g in gains:  # ... slowly: neighbouring voxels differ by far less than the gain's range
        step = max(np.abs(np.diff(g, axis=0)).max(), np.abs(np.diff(g, axis=1)).max())
        assert step <= 0.1 * float(np.ptp(g)) + 1e-6
    np.testing.assert_array_equal(gains[3], random_bias_field(hr, np.random.default_rng(3)) / hr)


def test_gaussian_blur_keeps_flat_images_and_the_mean_and_spreads_a_point() -> None:
    from mrisr.training.data import gaussian_blur

    flat = np.full((12, 16), 0.7, dtype=np.float32)
    np.testing.assert_allclose(gaussian_blur(flat, 0.8), flat, rtol=1e-6)  # no darkened border
    point = np.zeros((21, 21), dtype=np.float32)
    point[10, 10] = 1.0
    out = gaussian_blur(point, 1.0)
    assert abs(float(out.sum()) - 1.0) < 1e-5
    # The spread of the result is the Gaussian's: variance 1 voxel² along each axis.
    ii = np.arange(21) - 10
    assert abs(float((out.sum(axis=1) * ii**2).sum()) - 1.0) < 0.02
    assert abs(float((out.sum(axis=0) * ii**2).sum()) - 1.0) < 0.02


@pytest.mark.parametrize("zoom", [1.0, 1.5, 2.0])
def test_zoomed_out_patches_show_smaller_anatomy(zoom: float) -> None:
    from mrisr.training.data import PatchDataset, Piece

    ramp = np.broadcast_to(np.arange(80, dtype=np.float32)[:, None, None], (80, 80, 3)) / 80 + 0.5
    cfg = TrainConfig(scale=2, patch_size=16, model=SRCNNConfig(residual=True))
    ds = PatchDataset([Piece(np.ascontiguousarray(ramp), (2,), 0.1)], cfg, 1)
    patch, mask, tissue = ds._crop(np.random.default_rng(1), zoom)
    assert tissue is None  # no maps
    assert patch.shape == mask.shape == (16, 16) and patch.dtype == np.float32 and mask.all()
    # Each patch row spans `zoom` rows of the slice: the ramp climbs `zoom` times faster (on average:
    # an antialiased kernel at a fractional factor ripples by a few per cent from row to row).
    np.testing.assert_allclose((patch[12, 8] - patch[4, 8]) / 8, zoom / 80, rtol=0.01)


@pytest.mark.parametrize("setting", [("bias_field", 0.5), ("noise_prob", 1.0), ("hr_blur", 0.5), ("zoom_out", 0.5)])
def test_patch_ingredients_change_the_patches_only_when_asked(setting: tuple[str, float]) -> None:
    from mrisr.training.data import PatchDataset, Piece

    rng = np.random.default_rng(0)
    vol = rng.uniform(0.2, 1.0, (24, 24, 24)).astype(np.float32)
    cfg = TrainConfig(scale=2, patch_size=16, model=SRCNNConfig(residual=True), seed=3)
    base = PatchDataset([Piece(vol, (2,), 0.1)], cfg, 8)
    other = PatchDataset([Piece(vol, (2,), 0.1)], replace(cfg, **{setting[0]: setting[1]}), 8)
    # With the defaults, the patches the code gave before the settings existed (sums pinned then).
    sums = [round(float(base[i]["target"].double().sum()), 4) for i in range(8)]
    assert sums == [125.3194, 108.8266, 113.9129, 159.1616, 148.3682, 147.5334, 174.5882, 112.8533]
    assert any(not np.array_equal(base[i]["target"].numpy(), other[i]["target"].numpy()) for i in range(8))


@pytest.mark.parametrize(
    "name", ["random_contrast", "bias_field", "noise_prob", "hr_blur", "zoom_out", "tissue_contrast"]
)
def test_resume_of_a_run_recorded_before_a_setting_existed(name: str) -> None:
    from mrisr.training.run_state import check_resume

    cfg = TrainConfig(scale=2, epochs=1, steps_per_epoch=2)
    recorded = cfg.to_dict()
    del recorded[name]  # a run started before the setting existed did without it
    meta = {"train_config": recorded, "training_data": []}
    check_resume(meta, cfg, [], val_data=[], path=Path("run"))  # its default: nothing changed
    with pytest.raises(ValueError, match=rf"{name} {getattr(cfg, name)!r} -> 0\.5"):
        check_resume(meta, replace(cfg, **{name: 0.5}), [], val_data=[], path=Path("run"))
