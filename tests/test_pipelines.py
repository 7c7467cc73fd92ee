"""The Snakemake workflow in pipelines/ runs for real on three tiny studies; sbatch scripts parse."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from mrisr.checkpoint import save_checkpoint
from mrisr.models import SRCNN, SRCNNConfig

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent


def _snakemake() -> Path:
    """The snakemake of this environment (or the PATH's); skips the test without one."""
    snakemake = BIN / "snakemake"
    if not snakemake.exists():
        snakemake = Path(shutil.which("snakemake") or "")
    if not snakemake.is_file():
        pytest.skip("snakemake is not installed (pip install -e '.[cluster]')")
    return snakemake


@pytest.mark.slow
def test_snakemake_workflow_runs_locally(tmp_path: Path) -> None:
    snakemake = _snakemake()
    data = tmp_path / "data"
    data.mkdir()
    rng = np.random.default_rng(0)
    for i in range(3):
        arr = (rng.random((8, 8, 3)) * 500).astype(np.int16)
        nib.save(nib.Nifti1Image(arr, np.diag([2.0, 2.0, 4.0, 1.0])), str(data / f"sub-{i}_T1w.nii.gz"))
    nan = np.ones((8, 8, 3), np.float32)
    nan[2, 2, 1] = np.nan
    nib.save(nib.Nifti1Image(nan, np.eye(4)), str(data / "bad.nii.gz"))  # fails, and is reported
    (data / "broken.nii.gz").write_bytes(b"\x1f\x8b not really gzip")  # fails when read
    cfg = SRCNNConfig(residual=True)
    ckpt = save_checkpoint(tmp_path / "net.pt", SRCNN(cfg), cfg.to_dict(), {"scale": [4, 4, 1]})
    out = data / "sr"  # inside the input: a rerun must not take the outputs for new studies
    config = tmp_path / "cfg.json"
    config.write_text(
        json.dumps(
            {
                "input": str(data),
                "output": str(out),
                "checkpoint": str(ckpt),
                "device": "cpu",
                "mrisr": f"{sys.executable} -m mrisr.cli",
                "threads": 1,
            }
        )
    )
    cmd = [str(snakemake), "-s", str(ROOT / "pipelines" / "Snakefile"), "--configfile", str(config)]
    done = subprocess.run([*cmd, "--cores", "2", "--directory", str(tmp_path)], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr[-3000:]
    assert sorted(p.name for p in out.glob("*_sr.nii.gz")) == [f"sub-{i}_T1w_sr.nii.gz" for i in range(3)]
    for i in range(3):
        side = json.loads((out / f"sub-{i}_T1w_sr.json").read_text())
        assert side["status"] == "done" and side["output"]["shape"] == [32, 32, 3]
    for name in ("bad", "broken"):
        assert json.loads((out / f"{name}_sr.json").read_text())["status"] == "failed"
        assert (out / "logs" / f"{name}.done").read_text().strip() == "1"
    assert (out / "report.html").is_file()
    rows = (out / "report.csv").read_text().strip().splitlines()
    assert len(rows) == 6 and sum(",failed," in r for r in rows) == 2, rows
    # A second run has nothing to do.
    again = subprocess.run([*cmd, "--cores", "2", "--directory", str(tmp_path), "-n"], capture_output=True, text=True)
    assert again.returncode == 0 and "Nothing to be done" in again.stdout + again.stderr
    # A changed setting (extra_args as one string, output spelled with a trailing slash) redoes every
    # study and replaces the results, instead of being refused as "output exists".
    cfg = json.loads(config.read_text()) | {"extra_args": "--ensemble 2", "output": f"{out}/"}
    config.write_text(json.dumps(cfg))
    redo = subprocess.run([*cmd, "--cores", "2", "--directory", str(tmp_path)], capture_output=True, text=True)
    assert redo.returncode == 0, redo.stderr[-3000:]
    for i in range(3):
        side = json.loads((out / f"sub-{i}_T1w_sr.json").read_text())
        assert side["status"] == "done" and side["ensemble"] == 2


@pytest.mark.parametrize(("scale", "expect"), [(None, None), (2, "--scale 2")])
def test_snakefile_passes_only_the_settings_it_is_given(tmp_path: Path, scale: int | None, expect: str | None) -> None:
    """A setting left null is not passed, so `mrisr enhance` uses its own default (the checkpoint's
    scale); a set one is (control)."""
    snakemake = _snakemake()
    data = tmp_path / "data"
    data.mkdir()
    nib.save(nib.Nifti1Image(np.ones((4, 4, 2), np.int16), np.eye(4)), str(data / "s.nii.gz"))
    config = tmp_path / "cfg.json"
    cfg = {"input": str(data), "output": str(tmp_path / "out"), "scale": scale, "device": None}
    config.write_text(json.dumps(cfg | {"mrisr": f"{sys.executable} -m mrisr.cli"}))
    cmd = [str(snakemake), "-s", str(ROOT / "pipelines" / "Snakefile"), "--configfile", str(config)]
    dry_run = [*cmd, "-n", "-p", "--cores", "1", "--directory", str(tmp_path)]
    dry = subprocess.run(dry_run, capture_output=True, text=True)
    assert dry.returncode == 0, dry.stderr[-3000:]
    shell = next(line for line in (dry.stdout + dry.stderr).splitlines() if " enhance " in line and "--only s" in line)
    assert "--device" not in shell and "--checkpoint" not in shell
    assert ("--scale" not in shell) if expect is None else (expect in shell), shell


@pytest.mark.parametrize("script", sorted((ROOT / "pipelines" / "slurm").glob("*.sbatch")), ids=lambda p: p.name)
def test_sbatch_scripts_are_valid_bash(script: Path) -> None:
    assert subprocess.run(["bash", "-n", str(script)]).returncode == 0
    text = script.read_text()
    assert "#SBATCH" in text and "mrisr" in text
