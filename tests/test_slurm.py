"""pipelines/ against a real single-node SLURM (tests/slurm_cluster.py): the array script, the report
job, Snakemake's SLURM executor with the project's profile, preemption, multi-task training.

The cluster is started once for all these tests and stopped at the end. Without root or the Debian
packages the tests skip with the reason; with ``MRISR_REQUIRE_SLURM=1`` (set by ``.ci/run`` once it
has installed them) they fail instead, so that CI cannot skip them silently.
"""

from __future__ import annotations

import csv
import fcntl
import json
import os
import re
import shutil
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import torch
from slurm_cluster import ACCOUNT, PARTITION, SlurmCluster, missing, start_cluster

from mrisr.checkpoint import load_checkpoint, save_checkpoint
from mrisr.models import SRCNN, SRCNNConfig

pytestmark = [pytest.mark.slurm, pytest.mark.slow]

ROOT = Path(__file__).resolve().parents[1]
SCRIPTS = ROOT / "pipelines" / "slurm"
MRISR = f"{sys.executable} -m mrisr.cli"
#: The network options of every enhance job here: a small CPU run, no figure.
FAST = ["--device", "cpu", "--ensemble", "1", "--no-figure", "--no-adapt"]
LOCK = Path("/tmp/mrisr-slurm-tests.lock")  # one test cluster per machine (they share munge's socket)


@pytest.fixture(scope="session")
def slurm(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SlurmCluster]:
    """The running cluster (session-wide); every daemon it started is stopped by pid at the end."""
    why = missing()
    if why is not None:
        if os.environ.get("MRISR_REQUIRE_SLURM") == "1":
            pytest.fail(f"MRISR_REQUIRE_SLURM=1 but {why}")
        pytest.skip(why)
    with open(LOCK, "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # waits for another session's cluster to stop
        cluster = start_cluster(tmp_path_factory.mktemp("slurm"))
        try:
            yield cluster
        finally:
            cluster.stop()


def _cohort(root: Path, n: int, *, shape: tuple[int, int, int] = (12, 12, 3), bad: bool = True) -> tuple[Path, Path]:
    """``n`` seeded int16 NIfTI studies (plus one with a NaN voxel) and a small SRCNN checkpoint."""
    data = root / "data"
    data.mkdir(parents=True)
    rng = np.random.default_rng(17)
    for i in range(n):
        arr = (rng.random(shape) * 500).astype(np.int16)
        nib.save(nib.Nifti1Image(arr, np.diag([2.0, 2.0, 4.0, 1.0])), str(data / f"sub-{i}_T1w.nii.gz"))
    if bad:
        nan = np.ones(shape, np.float32)
        nan[2, 2, 1] = np.nan
        nib.save(nib.Nifti1Image(nan, np.eye(4)), str(data / "bad.nii.gz"))
    torch.manual_seed(0)
    cfg = SRCNNConfig(residual=True)
    ckpt = save_checkpoint(root / "net.pt", SRCNN(cfg), cfg.to_dict(), {"scale": [4, 4, 1]})
    return data, ckpt


def _lines(text: str, status: str) -> list[str]:
    """Study ids of the ``mrisr enhance`` log lines with ``status`` (``start``, ``done``, ``failed``...)."""
    return re.findall(rf"^\d{{4}}-\d\d-\d\d \d\d:\d\d:\d\d {status} (\S+)", text, flags=re.M)


def _wait_for(path: Path, pattern: str, timeout: float = 180) -> None:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if path.exists() and re.search(pattern, path.read_text(), flags=re.M):
            return
        time.sleep(0.2)
    raise TimeoutError(f"{pattern!r} not in {path} after {timeout} s: {path.read_text() if path.exists() else ''}")


def test_array_script_does_each_study_once_and_the_report_lists_the_failure(
    slurm: SlurmCluster, tmp_path: Path
) -> None:
    data, ckpt = _cohort(tmp_path, 4)
    out = tmp_path / "out"
    env = {"MRISR": MRISR}
    # Site settings on the sbatch command line win over the script's #SBATCH lines (--mem=16G).
    jid = slurm.sbatch(
        "--array=0-1", "--mem=1G", "--cpus-per-task=1", f"--partition={PARTITION}", f"--account={ACCOUNT}",
        str(SCRIPTS / "enhance_array.sbatch"), str(data), str(out), "--checkpoint", str(ckpt), *FAST,
        cwd=tmp_path, env=env,
    )  # fmt: skip
    rid = slurm.sbatch(
        f"--dependency=afterany:{jid}", "--mem=500M", str(SCRIPTS / "report.sbatch"), str(out), cwd=tmp_path, env=env
    )
    tasks = slurm.wait(jid, count=2)
    report = slurm.wait(rid)
    logs = {k: (tmp_path / f"mrisr-enhance-{jid}_{k}.log").read_text() for k in (0, 1)}
    everything = "\n".join(logs.values())
    good = [f"sub-{i}_T1w" for i in range(4)]
    assert Counter(_lines(everything, "done")) == Counter(good), everything
    assert _lines(everything, "failed") == ["bad"], everything
    assert not _lines(everything, "skipped") and not _lines(everything, "locked"), everything
    for k, text in logs.items():  # the task with the bad study exits 1, the other 0
        assert tasks[f"{jid}_{k}"]["exit_code"] == ("1:0" if "failed bad" in text else "0:0"), (tasks, text)
        assert tasks[f"{jid}_{k}"]["partition"] == PARTITION and tasks[f"{jid}_{k}"]["account"] == ACCOUNT
    assert "error: bad: " in everything and "NaN" in everything  # the error line names the study
    for sid in good:
        assert json.loads((out / f"{sid}_sr.json").read_text())["status"] == "done"
    assert report[rid]["state"] == "COMPLETED", report
    rows = list(csv.DictReader((out / "report.csv").open()))
    failed = [r for r in rows if r["status"] == "failed"]
    assert len(rows) == 5 and len(failed) == 1 and "bad" in json.dumps(failed), rows
    assert "failed bad: " in (tmp_path / f"mrisr-report-{rid}.log").read_text()
    assert (out / "report.html").is_file()


def test_snakemake_slurm_profile_runs_to_the_end_with_site_settings_from_the_config(
    slurm: SlurmCluster, tmp_path: Path
) -> None:
    snakemake = Path(sys.executable).parent / "snakemake"
    if not snakemake.is_file():
        snakemake = Path(shutil.which("snakemake") or "")
    if not snakemake.is_file():
        pytest.skip("snakemake is not installed (pip install -e '.[cluster]')")
    data, ckpt = _cohort(tmp_path, 2)
    out = tmp_path / "out"
    # The user's own config file: nothing in pipelines/ is edited for this site.
    config = tmp_path / "site.yaml"
    config.write_text(
        json.dumps(
            {
                "input": str(data),
                "output": str(out),
                "checkpoint": str(ckpt),
                "mrisr": MRISR,
                "extra_args": FAST,
                "threads": 1,
                "mem_mb": 900,
                "report_mem_mb": 400,
                "gpus": 0,
                "slurm_partition": PARTITION,
            }
        )
    )
    cmd = [
        str(snakemake), "-s", str(ROOT / "pipelines" / "Snakefile"), "--configfile", str(config),
        "--profile", str(ROOT / "pipelines" / "profiles" / "slurm"), "--directory", str(tmp_path),
        "--config", f"slurm_account={ACCOUNT}",  # a site setting on the command line
        "--slurm-init-seconds-before-status-checks", "2", "--latency-wait", "5",
    ]  # fmt: skip
    before = slurm.last_job_id()
    done = subprocess.run(cmd, env=slurm.env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-4000:]
    assert (out / "report.html").is_file()
    for sid in ("sub-0_T1w", "sub-1_T1w"):
        assert json.loads((out / f"{sid}_sr.json").read_text())["status"] == "done"
    assert json.loads((out / "bad_sr.json").read_text())["status"] == "failed"
    jobs = slurm.run(
        ["sacct", "-X", "-n", "-P", "-S", "2020-01-01", "--format=JobID,Partition,Account,ReqMem,State"]
    ).stdout.split()
    jobs = [j for j in jobs if int(j.split("|")[0].split("_")[0]) > before]
    assert len(jobs) == 4, jobs  # three studies and the report
    assert all(j.split("|")[1:3] == [PARTITION, ACCOUNT] and j.endswith("|COMPLETED") for j in jobs), jobs
    assert sorted(j.split("|")[3] for j in jobs) == ["400M", "900M", "900M", "900M"], jobs
    again = subprocess.run(cmd, env=slurm.env, capture_output=True, text=True, timeout=300)
    assert again.returncode == 0 and "Nothing to be done" in again.stdout + again.stderr, again.stderr[-3000:]
    assert slurm.last_job_id() == before + 4  # the rerun submitted nothing


@pytest.fixture(scope="module")
def preempt_cohort(tmp_path_factory: pytest.TempPathFactory) -> tuple[list[str], Path]:
    """Four studies of about 3 s each, the ``mrisr enhance`` arguments, and a clean run's outputs."""
    root = tmp_path_factory.mktemp("preempt")
    data, ckpt = _cohort(root, 4, shape=(48, 48, 6), bad=False)
    args = [str(data), "--checkpoint", str(ckpt), *FAST, "--ensemble", "8"]
    ref = root / "ref"
    clean = subprocess.run(
        [*MRISR.split(), "enhance", args[0], "--out", str(ref), *args[1:], "--threads", "1"],
        capture_output=True,
        text=True,
    )
    assert clean.returncode == 0, clean.stderr
    return args, ref


@pytest.mark.parametrize("how", ["signal", "requeue"])
def test_a_preempted_array_task_resumes_to_the_outputs_of_a_clean_run(
    slurm: SlurmCluster, tmp_path: Path, how: str, preempt_cohort: tuple[list[str], Path]
) -> None:
    args, ref = preempt_cohort
    out = tmp_path / "out"
    log = tmp_path / "enhance.log"
    jid = slurm.sbatch(
        "--mem=1G", "--cpus-per-task=1", f"--output={log}", str(SCRIPTS / "enhance_array.sbatch"), args[0], str(out),
        *args[1:], cwd=tmp_path, env={"MRISR": MRISR},
    )  # fmt: skip
    _wait_for(log, r" start sub-1_T1w ")  # mid-study: the second study has started
    if how == "signal":
        slurm.run(["scancel", "--batch", "--signal=TERM", jid])
    else:
        slurm.run(["scontrol", "requeue", jid])
    slurm.wait(jid, timeout=300)
    text = log.read_text()
    assert "(restart 1)" in text, text  # it ran twice
    # The signal came while the second study was being made.
    assert re.search(r" start sub-1_T1w .*\n(.*\n)*.*received signal 15(.*\n)*.* (done|failed) sub-1_T1w ", text), text
    if how == "signal":
        assert "stopped by a signal: requeueing" in text, text
        assert "interrupted by signal 15" in text, text
    assert slurm.jobs(jid)[jid]["state"] == "COMPLETED"
    ids = [f"sub-{i}_T1w" for i in range(4)]
    assert set(_lines(text, "done")) == set(ids), text
    for sid in ids:
        got, want = nib.load(out / f"{sid}_sr.nii.gz"), nib.load(ref / f"{sid}_sr.nii.gz")
        assert np.array_equal(np.asarray(got.dataobj), np.asarray(want.dataobj)), sid
        assert np.array_equal(got.affine, want.affine)
        assert json.loads((out / f"{sid}_sr.json").read_text())["status"] == "done"
    assert not [p.name for p in out.iterdir() if p.name.startswith(".")], "temporaries or locks left"


def _phantom(shape: tuple[int, int, int], seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    g = np.mgrid[: shape[0], : shape[1], : shape[2]].astype(np.float32)
    c = [(s - 1) / 2 for s in shape]
    r = np.sqrt(sum(((g[a] - c[a]) / (0.42 * shape[a])) ** 2 for a in range(3)))
    x = np.where(r < 1, 400 + 150 * np.sin(g[0] / 1.7 + seed) * np.cos(g[1] / 2.3), 0.0)
    x += rng.normal(0, 5, shape)
    return np.clip(x, 0, None).astype(np.int16)


def test_two_task_training_is_stopped_resumes_and_ends_like_an_uninterrupted_run(
    slurm: SlurmCluster, tmp_path: Path
) -> None:
    data = tmp_path / "data"
    data.mkdir()
    for i in range(3):
        nib.save(nib.Nifti1Image(_phantom((16, 16, 8), i), np.eye(4)), str(data / f"sub{i}.nii.gz"))
    tiny = [
        "--scale", "2", "--epochs", "3", "--steps-per-epoch", "40", "--batch-size", "4", "--patch-size", "16",
        "--kernel-sizes", "3,1,3", "--filters", "4,4", "--threads", "1", "--val-fraction", "0.34",
    ]  # fmt: skip
    env = {"PYTHON": sys.executable}
    two = ["--nodes=1", "--ntasks-per-node=2", "--cpus-per-task=1", "--mem=2G"]
    script = str(SCRIPTS / "train_multinode.sbatch")
    whole = slurm.sbatch(*two, script, str(data), str(tmp_path / "whole"), *tiny, cwd=tmp_path, env=env)
    cut = slurm.sbatch(*two, script, str(data), str(tmp_path / "cut"), *tiny, cwd=tmp_path, env=env)
    # Stopped once the first epoch is written (two more to go), with SIGTERM to both ranks.
    _wait_for(tmp_path / "cut" / "metrics.csv", r"^1,", timeout=300)
    slurm.run(["scancel", "--signal=TERM", cut])
    slurm.wait(whole, timeout=400)
    slurm.wait(cut, timeout=400)
    log = (tmp_path / f"mrisr-train-{cut}.log").read_text()
    assert "2 ranks on localhost" in log and "stopped by a signal: requeueing" in log, log
    assert "(restart 1, resuming)" in log and "train resumes at step" in log, log
    assert slurm.jobs(cut)[cut]["state"] == "COMPLETED" and slurm.jobs(whole)[whole]["state"] == "COMPLETED"
    epochs = [line for line in log.splitlines() if " epoch " in line]
    assert len(epochs) == 3, log  # each epoch line once, though two ranks ran
    a = load_checkpoint(tmp_path / "whole" / "last.pt").state_dict
    b = load_checkpoint(tmp_path / "cut" / "last.pt").state_dict
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    rows = [list(csv.DictReader((tmp_path / run / "metrics.csv").open())) for run in ("whole", "cut")]
    drop = ("seconds",)
    assert [{k: v for k, v in r.items() if k not in drop} for r in rows[0]] == [
        {k: v for k, v in r.items() if k not in drop} for r in rows[1]
    ]
    assert len(rows[0]) == 3
