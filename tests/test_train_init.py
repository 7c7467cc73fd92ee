"""``mrisr train --init``: a warm start from a checkpoint's weights (fine-tuning), recorded and resumable."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from train_helpers import tiny_config, write_studies

from mrisr.checkpoint import WEIGHTS_DIR, CheckpointError, load_checkpoint
from mrisr.cli import main
from mrisr.models import SRCNNConfig
from mrisr.training import TrainConfig, train


@pytest.fixture
def data(tmp_path: Path) -> Path:
    return write_studies(tmp_path / "data", ("a", "b", "c"))


def _cfg(**kw: object) -> TrainConfig:
    return tiny_config(**{"steps_per_epoch": 3, **kw})


def _weights(path: Path) -> dict[str, torch.Tensor]:
    return load_checkpoint(path).state_dict


def test_init_starts_from_the_checkpoint_weights_and_records_it(data: Path, tmp_path: Path) -> None:
    train([data], tmp_path / "first", _cfg(seed=3))
    first = load_checkpoint(tmp_path / "first" / "last.pt")
    # With lr 0 nothing moves: the run's weights are exactly the --init file's, not the seed's.
    train([data], tmp_path / "warm", _cfg(lr=0.0), init=tmp_path / "first" / "last.pt")
    warm = load_checkpoint(tmp_path / "warm" / "last.pt")
    for k, v in first.state_dict.items():
        assert torch.equal(warm.state_dict[k], v), k
    assert warm.meta["init"] == {"file": "last.pt", "sha256": first.sha256, "steps": 3}
    train([data], tmp_path / "cold", _cfg(lr=0.0))
    cold = load_checkpoint(tmp_path / "cold" / "last.pt")
    assert cold.meta["init"] is None
    assert any(not torch.equal(cold.state_dict[k], v) for k, v in first.state_dict.items())


def test_init_of_another_architecture_is_refused_before_anything_is_written(data: Path, tmp_path: Path) -> None:
    train([data], tmp_path / "first", _cfg())
    other = SRCNNConfig(kernel_sizes=(3, 1, 3), filters=(8, 4), residual=True)
    with pytest.raises(ValueError, match=r"filters \[4, 4\] \(here \[8, 4\]\)"):
        train([data], tmp_path / "warm", _cfg(model=other), init=tmp_path / "first" / "best.pt")
    assert not (tmp_path / "warm").exists()
    broken = tmp_path / "broken.pt"
    broken.write_bytes((tmp_path / "first" / "best.pt").read_bytes()[:100])
    with pytest.raises(CheckpointError, match=r"broken\.pt"):
        train([data], tmp_path / "warm", _cfg(), init=broken)
    assert not (tmp_path / "warm").exists()


def test_resume_needs_the_same_init(data: Path, tmp_path: Path) -> None:
    train([data], tmp_path / "a", _cfg(seed=1))
    train([data], tmp_path / "b", _cfg(seed=2))
    out = tmp_path / "run"
    train([data], out, _cfg(epochs=2, max_steps=3), init=tmp_path / "a" / "last.pt")
    before = (out / "last.pt").read_bytes()
    for init in (None, tmp_path / "b" / "last.pt"):
        with pytest.raises(ValueError, match=r"--init last\.pt"):
            train([data], out, _cfg(epochs=2), resume=True, init=init)
        assert (out / "last.pt").read_bytes() == before
    # The same --init continues, and the result equals a run that was never stopped.
    train([data], out, _cfg(epochs=2), resume=True, init=tmp_path / "a" / "last.pt")
    train([data], tmp_path / "whole", _cfg(epochs=2), init=tmp_path / "a" / "last.pt")
    for k, v in _weights(tmp_path / "whole" / "last.pt").items():
        assert torch.equal(_weights(out / "last.pt")[k], v), k
    assert load_checkpoint(out / "last.pt").meta["init"]["sha256"] == load_checkpoint(tmp_path / "a" / "last.pt").sha256


def test_cli_init_shipped_and_its_errors(data: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    tiny = ["--epochs", "1", "--steps-per-epoch", "1", "--batch-size", "2", "--patch-size", "8", "--device", "cpu"]
    out = tmp_path / "ft"
    args = ["train", str(data), "--out", str(out), "--arch", "espcn", "--scale", "4", "--kernel-sizes", "5,3,3,3",
            "--filters", "64,64,32", "--init", "shipped", "--lr", "0", *tiny]  # fmt: skip
    assert main(args) == 0
    shipped = load_checkpoint(WEIGHTS_DIR / "espcn_x4.pt")
    got = load_checkpoint(out / "best.pt")
    assert got.meta["init"]["file"] == "espcn_x4.pt" and got.meta["init"]["sha256"] == shipped.sha256
    for k, v in shipped.state_dict.items():
        assert torch.equal(got.state_dict[k], v), k
    capsys.readouterr()
    # The shipped ×4 ESPCN with the default espcn layers (5,3,3): one line naming what differs.
    assert main(["train", str(data), "--out", str(tmp_path / "x"), "--arch", "espcn", "--init", "shipped", *tiny]) != 0
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "espcn_x4.pt" in err[0] and "kernel_sizes" in err[0]
    assert "it needs --arch espcn --scale 4 --kernel-sizes 5,3,3,3 --filters 64,64,32 --residual" in err[0]
    assert main(["train", str(data), "--out", str(tmp_path / "y"), "--scale", "5", "--init", "shipped", *tiny]) != 0
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "ships no srcnn_x5.pt" in err[0]
    assert main(["train", str(data), "--out", str(tmp_path / "z"), "--init", "", *tiny]) != 0
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "--init: empty" in err[0]
    assert not any((tmp_path / n).exists() for n in "xyz")


def test_init_of_another_scale_is_refused_also_where_the_layers_match(data: Path, tmp_path: Path) -> None:
    """An SRCNN's layers are the same at every scale: the checkpoint's recorded scale decides."""
    train([data], tmp_path / "x2", _cfg(scale=2))
    with pytest.raises(ValueError, match=r"scale \[2, 2, 1\] \(here \[4, 4, 1\]\).*--scale 2 "):
        train([data], tmp_path / "x4", _cfg(scale=4), init=tmp_path / "x2" / "best.pt")
    with pytest.raises(ValueError, match=r"scale \[2, 2, 1\] \(here \[1, 1, 2\]\)"):
        train([data], tmp_path / "t2", _cfg(scale=2, through_plane=True), init=tmp_path / "x2" / "best.pt")
    assert not (tmp_path / "x4").exists() and not (tmp_path / "t2").exists()


def test_cli_init_shipped_through_plane(data: Path, tmp_path: Path) -> None:
    """``--init shipped --through-plane`` takes the one-axis file for that factor."""
    tiny = ["--epochs", "1", "--steps-per-epoch", "1", "--batch-size", "2", "--patch-size", "9", "--device", "cpu"]
    out = tmp_path / "axis"
    args = ["train", str(data), "--out", str(out), "--arch", "axis-espcn", "--through-plane", "--scale", "3",
            "--filters", "32,32,32,32", "--init", "shipped", "--lr", "0", *tiny]  # fmt: skip
    assert main(args) == 0
    shipped = load_checkpoint(WEIGHTS_DIR / "axis-espcn_x1-1-3.pt")
    got = load_checkpoint(out / "last.pt")
    assert got.meta["init"]["sha256"] == shipped.sha256 and got.scale == (1, 1, 3)
    for k, v in shipped.state_dict.items():
        assert torch.equal(got.state_dict[k], v), k
