"""The Python API of enhance does what ``mrisr enhance`` does: defaults, option checks, study
selection, the enhancer's lifetime, ``clamp``; and the sidecar contract (:mod:`mrisr.sidecar`)."""

from __future__ import annotations

import inspect
import json
import threading
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import torch

from mrisr.checkpoint import load_checkpoint, save_checkpoint
from mrisr.cli import main
from mrisr.cli.enhance import enhance as enhance_command
from mrisr.device import resolve_device
from mrisr.discovery import find_studies
from mrisr.enhance import EnhanceOptions, Enhancer
from mrisr.fsutil import sha256_file
from mrisr.inference import RunOptions
from mrisr.models import SRCNN, SRCNNConfig

CPU = RunOptions(device=torch.device("cpu"))


@pytest.fixture()
def identity(tmp_path: Path) -> Path:
    """An SRCNN whose residual is zero: its output is bicubic interpolation (which overshoots)."""
    model = SRCNN(SRCNNConfig(residual=True))
    last = [m for m in model.modules() if isinstance(m, torch.nn.Conv2d)][-1]
    with torch.no_grad():
        last.weight.zero_()
        last.bias.zero_()
    return save_checkpoint(
        tmp_path / "identity.pt", model, model.config.to_dict(), {"scale": [4, 4, 1], "degradation": "bicubic"}
    )


def _step(shape: tuple[int, int, int] = (8, 8, 2)) -> np.ndarray:
    """A sharp step from 100 to 900: bicubic interpolation overshoots below 100 and above 900."""
    x = np.full(shape, 100.0, dtype=np.float32)
    x[shape[0] // 2 :] = 900.0
    return x


def test_clamp_false_clamps_neither_end(identity: Path) -> None:
    """``clamp=False`` leaves the bicubic overshoot at both ends; ``clamp=True`` (control) cuts it."""
    sr_net = Enhancer(load_checkpoint(identity), CPU)
    x = _step()
    free, _, _ = sr_net.enhance_array(x, (4, 4, 1), clamp=False)
    held, _, _ = sr_net.enhance_array(x, (4, 4, 1), clamp=True)
    assert free.min() < 100.0 - 1.0 and free.max() > 900.0 + 1.0
    assert held.min() >= 100.0 and held.max() <= 900.0


def test_options_take_a_string_folder_and_check_every_value(tmp_path: Path) -> None:
    opts = EnhanceOptions(out_dir=str(tmp_path / "out"))  # type: ignore[arg-type]
    assert opts.out_dir == tmp_path / "out" and isinstance(opts.out_dir, Path)
    assert EnhanceOptions(out_dir=tmp_path, scale=[2, 2, 1]).scale == (2, 2, 1)  # type: ignore[arg-type]
    assert EnhanceOptions(out_dir=tmp_path, scale=4, axis=0).scale == (1, 4, 4)  # type: ignore[arg-type]
    for bad, why in [
        ({"fmt": "png"}, "--format"),
        ({"dtype": "float16"}, "float32 or float64 only"),
        ({"dtype": "complex64"}, "not a real integer"),
        ({"degradation": "blur"}, "--degradation"),
        ({"axis": 3}, "--axis"),
        ({"scale": (1, 1, 1)}, "refines nothing"),
        ({"lock_wait": -1.0}, "--lock-wait"),
        ({"simulate": True, "scale": (2, 2, 1), "target_spacing": (1.0, 1.0, 1.0)}, "--simulate"),
    ]:
        with pytest.raises(ValueError, match=why):
            EnhanceOptions(out_dir=tmp_path, **bad)  # type: ignore[arg-type]


def test_enhance_from_python_with_a_string_folder(tmp_path: Path, identity: Path) -> None:
    src = tmp_path / "s.nii.gz"
    nib.save(nib.Nifti1Image(_step(), np.eye(4)), str(src))
    with Enhancer(load_checkpoint(identity), CPU) as enhancer:
        (res,) = enhancer.enhance(find_studies([src]), EnhanceOptions(out_dir=str(tmp_path / "o"), figure=False))  # type: ignore[arg-type]
    assert res.status == "done", res.error
    assert (tmp_path / "o" / "s_sr.nii.gz").is_file()


def _figure_threads() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name.startswith("mrisr-figure") and t.is_alive()]


def test_enhancer_closes_its_figure_thread(tmp_path: Path, identity: Path) -> None:
    """As a context manager (and with ``close()``) the figure thread ends; it is still there while
    the enhancer is open (control)."""
    src = tmp_path / "s.nii.gz"
    nib.save(nib.Nifti1Image(_step(), np.eye(4)), str(src))
    before = set(_figure_threads())
    with Enhancer(load_checkpoint(identity), CPU) as enhancer:
        (res,) = enhancer.enhance(find_studies([src]), EnhanceOptions(out_dir=tmp_path / "o"))
        assert res.status == "done", res.error
        assert set(_figure_threads()) - before  # open: its thread runs
    assert not set(_figure_threads()) - before
    enhancer.close()  # closing twice is harmless


def test_library_defaults_are_the_command_lines(tmp_path: Path, identity: Path) -> None:
    """An Enhancer made without run options runs as ``mrisr enhance`` does by default."""
    from mrisr.enhance import DEFAULT_ARCH, default_run

    params = inspect.signature(enhance_command).parameters
    run = Enhancer(load_checkpoint(identity)).run
    assert run.ensemble == params["ensemble"].default == 8
    assert run.device == resolve_device(params["device"].default)
    assert default_run() == run
    opts = EnhanceOptions(out_dir=tmp_path)
    assert opts.axis == params["axis"].default and opts.figure == params["figure"].default
    assert opts.fmt == params["fmt"].default and opts.dtype == params["dtype"].default
    assert params["arch"].default == DEFAULT_ARCH
    # --degradation also sets how the default (one-axis) adaptation degrades.
    assert EnhanceOptions(out_dir=tmp_path, degradation="box").auto_adapt.degradation == "box"  # type: ignore[union-attr]
    assert opts.auto_adapt is not None and opts.auto_adapt.degradation == "mixed"


class _S:
    def __init__(self, id: str) -> None:
        self.id = id


def test_study_selection_only_shard_and_slurm_array() -> None:
    from mrisr.batch import select_studies

    studies = [_S(f"s{i}") for i in range(12)]
    assert [s.id for s in select_studies(studies, only=["s3", "s1"])] == ["s1", "s3"]  # in the studies' order
    with pytest.raises(ValueError, match="no study with id nope"):
        select_studies(studies, only=["nope"])
    shards = [{s.id for s in select_studies(studies, shard=f"{i}/3", env={})} for i in range(3)]
    assert set().union(*shards) == {s.id for s in studies} and sum(map(len, shards)) == 12
    env = {"SLURM_ARRAY_TASK_ID": "1", "SLURM_ARRAY_TASK_COUNT": "3"}
    assert {s.id for s in select_studies(studies, env=env)} == shards[1]
    # --only names the studies: an inherited SLURM array environment does not drop them.
    assert len(select_studies(studies, only=["s0", "s1", "s2"], env=env)) == 3


def test_sidecar_hash_and_skip_rule_match_what_enhance_wrote(tmp_path: Path, identity: Path) -> None:
    """The sidecar records :func:`study_sha256` of the input; the same request matches, another
    differs by name; a DICOM-like series of two files hashes names and bytes in order."""
    from mrisr.sidecar import Sidecar, read_sidecar, rerun_differences, study_sha256

    src = tmp_path / "s.nii.gz"
    nib.save(nib.Nifti1Image(_step(), np.eye(4)), str(src))
    out = tmp_path / "o"
    args = ["enhance", str(src), "--out", str(out), "--checkpoint", str(identity), "--no-figure"]
    assert main([*args, "--ensemble", "1"]) == 0
    side = read_sidecar(out / "s_sr.json")
    assert isinstance(side, Sidecar) and side.done and side.study == "s"
    assert side.input_sha256 == study_sha256([src]) == sha256_file(src)
    assert side.request is not None
    assert rerun_differences(side, input_sha256=side.input_sha256, request=side.request) == []
    changed = {**side.request, "ensemble": 8}
    assert rerun_differences(side, input_sha256="0" * 64, request=changed) == [
        "input: another file (sha256)",
        "ensemble: 1 → 8",
    ]
    a, b = tmp_path / "a.dcm", tmp_path / "b.dcm"
    a.write_bytes(b"one")
    b.write_bytes(b"two")
    assert study_sha256([a, b]) != study_sha256([b, a])
    # A rerun of the same request skips the study (the sidecar is unchanged).
    before = (out / "s_sr.json").read_text()
    assert main([*args, "--ensemble", "1"]) == 0
    assert (out / "s_sr.json").read_text() == before
    assert json.loads(before)["input"]["sha256"] == side.input_sha256


def test_one_study_from_python_without_an_enhancer(tmp_path: Path, identity: Path) -> None:
    """The one-way pieces alone: ArraySR → Batch → process_study; with no figure thread the figure
    is drawn in turn (and a rerun of the same batch skips the study)."""
    from mrisr.enhance import ArraySR
    from mrisr.enhance.compute import Batch
    from mrisr.enhance.studies import process_study

    src = tmp_path / "s.nii.gz"
    nib.save(nib.Nifti1Image(_step(), np.eye(4)), str(src))
    (study,) = find_studies([src])
    batch = Batch.of(ArraySR(load_checkpoint(identity), CPU), EnhanceOptions(out_dir=tmp_path / "o"))
    assert batch.factors == (4, 4, 1) and batch.background is None  # the checkpoint's own scale
    res = process_study(batch, study)
    assert res.status == "done", res.error
    side = json.loads((tmp_path / "o" / "s_sr.json").read_text())
    assert side["figure"] == "s_compare.png" and (tmp_path / "o" / "s_compare.png").is_file()
    assert side["request"] == batch.request("nifti")
    assert process_study(batch, study).status == "skipped"


@pytest.mark.parametrize("scale", [4, "4", [4], np.int64(4)])
def test_one_factor_refines_the_plane_of_the_axis_slices_in_every_form(scale: object) -> None:
    assert EnhanceOptions(out_dir="o", scale=scale, axis=0).scale == (1, 4, 4)  # type: ignore[arg-type]


def test_lock_wait_may_be_infinite_but_not_nan() -> None:
    assert EnhanceOptions(out_dir="o", lock_wait=float("inf")).lock_wait == float("inf")
    with pytest.raises(ValueError, match="lock-wait"):
        EnhanceOptions(out_dir="o", lock_wait=float("nan"))


def test_simulate_with_target_spacing_is_refused_before_studies_are_read(tmp_path: Path) -> None:
    missing = tmp_path / "no-such-folder"  # never looked at: the options are refused first
    assert main(["enhance", str(missing), "--out", str(tmp_path / "o"), "--simulate", "--target-spacing", "1"]) == 2
