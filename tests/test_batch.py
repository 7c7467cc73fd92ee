"""Batch at scale: shards, locks, SIGKILL + rerun, SIGTERM preemption."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import torch

from mrisr.batch import parse_shard, select_shard, shard_from_env, shard_of
from mrisr.checkpoint import save_checkpoint
from mrisr.locks import study_lock
from mrisr.models import SRCNN, SRCNNConfig

MRISR = [sys.executable, "-m", "mrisr.cli"]


def test_shards_cover_every_study_once() -> None:
    ids = [f"sub-{i:03d}_T1w" for i in range(200)]
    owners = [[shard_of(i, 3) == s for s in range(3)] for i in ids]
    assert all(sum(o) == 1 for o in owners)
    sizes = [len(select_shard(ids, ids, (s, 3))) for s in range(3)]
    assert sum(sizes) == 200 and min(sizes) > 40  # a stable hash spreads them
    assert shard_of("sub-001_T1w", 7) == shard_of("sub-001_T1w", 7)


def test_shard_parsing_and_slurm_env() -> None:
    assert parse_shard("2/5") == (2, 5)
    for bad in ("5/5", "-1/3", "a/b", "3"):
        with pytest.raises(ValueError):
            parse_shard(bad)
    env = {"SLURM_ARRAY_TASK_ID": "11", "SLURM_ARRAY_TASK_COUNT": "4", "SLURM_ARRAY_TASK_MIN": "10"}
    assert shard_from_env(env) == (1, 4)
    assert shard_from_env({}) is None
    stepped = {"SLURM_ARRAY_TASK_COUNT": "3", "SLURM_ARRAY_TASK_MIN": "2", "SLURM_ARRAY_TASK_STEP": "2"}
    assert [shard_from_env({**stepped, "SLURM_ARRAY_TASK_ID": i}) for i in ("2", "4", "6")] == [(0, 3), (1, 3), (2, 3)]
    with pytest.raises(ValueError, match="SLURM_ARRAY_TASK_ID='abc' is not an integer"):
        shard_from_env({**env, "SLURM_ARRAY_TASK_ID": "abc"})
    with pytest.raises(ValueError, match="outside"):
        shard_from_env({**stepped, "SLURM_ARRAY_TASK_ID": "5"})


def test_stale_lock_of_dead_process_is_taken_over(tmp_path: Path) -> None:
    proc = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    dead_pid = int(proc.stdout)
    import socket

    (tmp_path / ".s1.lock").write_text(f"{socket.gethostname()} {dead_pid}\n")
    with study_lock(tmp_path, "s1") as mine:
        assert mine
        with study_lock(tmp_path, "s1") as again:  # held by a live process (us): refused
            assert not again
    assert not (tmp_path / ".s1.lock").exists()


def test_empty_lock_left_by_a_kill_is_taken_over(tmp_path: Path) -> None:
    """A holder killed between creating its lock and writing its pid leaves an empty file."""
    import threading

    (tmp_path / ".s2.lock").write_text("")
    with study_lock(tmp_path, "s2") as mine:
        assert mine
    # A live holder that writes its pid within the grace period keeps its lock.
    (tmp_path / ".s3.lock").write_text("")
    import socket

    writer = threading.Timer(0.1, lambda: (tmp_path / ".s3.lock").write_text(f"{socket.gethostname()} {os.getpid()}\n"))
    writer.start()
    with study_lock(tmp_path, "s3") as mine:
        assert not mine
    writer.join()


@pytest.fixture()
def batch(tmp_path: Path) -> tuple[Path, Path]:
    torch.manual_seed(0)
    cfg = SRCNNConfig(residual=True)
    model = SRCNN(cfg)
    with torch.no_grad():
        model.body[-1].weight.normal_(0, 0.05)
    ckpt = save_checkpoint(tmp_path / "net.pt", model, cfg.to_dict(), {"scale": [4, 4, 1]})
    data = tmp_path / "data"
    data.mkdir()
    rng = np.random.default_rng(0)
    for i in range(6):
        arr = (rng.random((24, 20, 6)) * 1000).astype(np.int16)
        nib.save(nib.Nifti1Image(arr, np.diag([1.5, 1.5, 3.0, 1.0])), str(data / f"s{i}.nii.gz"))
    return data, ckpt


def _cmd(data: Path, out: Path, ckpt: Path, *extra: str) -> list[str]:
    return [*MRISR, "enhance", str(data), "--out", str(out), "--checkpoint", str(ckpt), "--device", "cpu", *extra]


def _outputs(out: Path) -> dict[str, np.ndarray]:
    return {p.name: np.asarray(nib.load(p).dataobj) for p in sorted(out.glob("*_sr.nii.gz"))}


def _env() -> dict[str, str]:
    env = dict(os.environ)
    env.pop("SLURM_ARRAY_TASK_ID", None)
    env["OMP_NUM_THREADS"] = "1"
    return env


@pytest.mark.slow
def test_three_concurrent_shards_and_racing_workers(batch: tuple[Path, Path], tmp_path: Path) -> None:
    data, ckpt = batch
    out = tmp_path / "sharded"
    procs = [subprocess.Popen(_cmd(data, out, ckpt, "--shard", f"{i}/3"), env=_env()) for i in range(3)]
    assert [p.wait(timeout=300) for p in procs] == [0, 0, 0]
    sidecars = sorted(out.glob("*_sr.json"))
    assert [p.name for p in sidecars] == [f"s{i}_sr.json" for i in range(6)]
    # Three workers WITHOUT shards on the same folder: locks and sidecars make each study happen once;
    # each waits at the end for the studies the others hold (else: exit 4, not done by that worker).
    race = tmp_path / "race"
    procs = [
        subprocess.Popen(_cmd(data, race, ckpt, "--no-figure", "--lock-wait", "300"), env=_env()) for _ in range(3)
    ]
    assert all(p.wait(timeout=300) == 0 for p in procs)
    created = [json.loads(p.read_text())["created"] for p in sorted(race.glob("*_sr.json"))]
    assert len(created) == 6
    for name, arr in _outputs(race).items():
        np.testing.assert_array_equal(arr, _outputs(out)[name])
    assert not list(race.glob(".*"))


@pytest.mark.slow
def test_sigkill_then_rerun_equals_uninterrupted(batch: tuple[Path, Path], tmp_path: Path) -> None:
    data, ckpt = batch
    ref_out = tmp_path / "ref"
    assert subprocess.run(_cmd(data, ref_out, ckpt), env=_env(), capture_output=True).returncode == 0
    out = tmp_path / "killed"
    proc = subprocess.Popen(_cmd(data, out, ckpt), env=_env(), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 120
    while time.time() < deadline and len(list(out.glob("*_sr.json"))) < 2:
        time.sleep(0.02)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert len(list(out.glob("*_sr.json"))) < 6, "the run finished before the kill; the test proves nothing"
    assert subprocess.run(_cmd(data, out, ckpt), env=_env(), capture_output=True).returncode == 0
    ref, got = _outputs(ref_out), _outputs(out)
    assert sorted(got) == sorted(ref)
    for name in ref:
        np.testing.assert_array_equal(got[name], ref[name])
    assert not [p for p in out.iterdir() if p.name.startswith(".")]


@pytest.mark.slow
def test_sigterm_finishes_current_study_and_exits_3(batch: tuple[Path, Path], tmp_path: Path) -> None:
    data, ckpt = batch
    out = tmp_path / "term"
    proc = subprocess.Popen(_cmd(data, out, ckpt), env=_env(), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.time() + 120
    while time.time() < deadline and not list(out.glob("*_sr.json")):
        time.sleep(0.02)
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=120)
    if proc.returncode == 0:
        pytest.skip("the batch finished before SIGTERM arrived")
    assert proc.returncode == 3, err
    done = list(out.glob("*_sr.json"))
    assert 1 <= len(done) < 6
    for side in done:  # every sidecar points at a complete output
        assert nib.load(out / json.loads(side.read_text())["output"]["path"]).shape == (96, 80, 6)
    assert not [p for p in out.iterdir() if p.name.startswith(".")]


def test_bids_input_gives_bids_derivatives(tmp_path: Path) -> None:
    from mrisr.cli import main

    bids = tmp_path / "bids"
    (bids / "sub-01" / "ses-1" / "anat").mkdir(parents=True)
    (bids / "sub-02" / "anat").mkdir(parents=True)
    (bids / "derivatives" / "old" / "sub-01" / "anat").mkdir(parents=True)
    (bids / "dataset_description.json").write_text('{"Name": "t", "BIDSVersion": "1.9.0"}')
    rng = np.random.default_rng(0)
    files = [
        bids / "sub-01" / "ses-1" / "anat" / "sub-01_ses-1_T1w.nii.gz",
        bids / "sub-02" / "anat" / "sub-02_T2w.nii.gz",
        bids / "sub-02" / "anat" / "sub-02_desc-raw_T2w.nii.gz",
        bids / "derivatives" / "old" / "sub-01" / "anat" / "sub-01_desc-x_T1w.nii.gz",
    ]
    for f in files:
        nib.save(nib.Nifti1Image((rng.random((4, 4, 2)) * 100).astype(np.int16), np.eye(4)), str(f))
    cfg = SRCNNConfig(residual=True)
    ckpt = save_checkpoint(tmp_path / "n.pt", SRCNN(cfg), cfg.to_dict(), {"scale": [4, 4, 1]})
    out = tmp_path / "derivatives" / "mrisr"
    assert main(["enhance", str(bids), "--out", str(out), "--checkpoint", str(ckpt), "--no-figure"]) == 0
    produced = sorted(str(p.relative_to(out)) for p in out.rglob("*") if p.is_file())
    assert produced == [
        ".bidsignore",  # the figures and the report are not BIDS files
        "dataset_description.json",
        "sub-01/ses-1/anat/sub-01_ses-1_desc-sr_T1w.json",
        "sub-01/ses-1/anat/sub-01_ses-1_desc-sr_T1w.nii.gz",
        "sub-02/anat/sub-02_desc-rawsr_T2w.json",
        "sub-02/anat/sub-02_desc-rawsr_T2w.nii.gz",
        "sub-02/anat/sub-02_desc-sr_T2w.json",
        "sub-02/anat/sub-02_desc-sr_T2w.nii.gz",
    ]
    desc = json.loads((out / "dataset_description.json").read_text())
    assert desc["DatasetType"] == "derivative" and desc["GeneratedBy"][0]["Name"] == "mrisr"
    assert main(["report", str(out)]) == 0
    assert len((out / "report.csv").read_text().strip().splitlines()) == 4
