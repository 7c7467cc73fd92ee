"""Fault injection (issue 16): processes killed at every rename and lock step, and real processes
racing for the same stale lock.

The kills use the ``MRISR_FAULT`` hook of :mod:`mrisr.faults` (``<point>[@n]:kill`` SIGKILLs the
process the n-th time it reaches the point); each killed run is followed by a plain rerun that must
give the uninterrupted result and leave no temporary, lock or moved lock behind.
"""

from __future__ import annotations

import json
import multiprocessing as mp
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import torch

from mrisr.checkpoint import save_checkpoint
from mrisr.cli import main
from mrisr.discovery import find_studies
from mrisr.fsutil import TMP_MARK
from mrisr.locks import lock_path, study_lock
from mrisr.models import SRCNN, SRCNNConfig

AFFINE = np.diag([1.5, 1.2, 3.0, 1.0])


def _dead_pid() -> int:
    return int(subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True).stdout)


# -- concurrent takeover of one stale lock ------------------------------------------------------------


def _racer(folder: str, trials: int, barrier: mp.synchronize.Barrier, queue: mp.Queue, hold_s: float) -> None:
    """Try every trial's lock at the instant the others do; report when it was held."""
    for trial in range(trials):
        barrier.wait()
        with study_lock(Path(folder), f"t{trial}") as lock:
            if lock:
                start = time.monotonic()
                time.sleep(hold_s)
                queue.put((trial, os.getpid(), start, time.monotonic()))
        barrier.wait()
    queue.put(None)


@pytest.mark.parametrize("widen", [False, True], ids=["natural", "widened"])
def test_racing_processes_never_hold_one_stale_lock_together(tmp_path: Path, widen: bool) -> None:
    """4 processes × 40 trials: each trial's lock is stale (dead pid) and all four go for it at once.

    'widened' sleeps 20 ms between judging the lock stale and taking it over, so that every racer
    has judged before any acts (the window where a takeover by unlink-and-create lets two in)."""
    n_proc, trials, hold_s = 4, 40, 0.03
    dead = _dead_pid()
    for trial in range(trials):
        (tmp_path / f".t{trial}.lock").write_text(f"{socket.gethostname()} {dead}\n")
    ctx = mp.get_context("fork")
    barrier, queue = ctx.Barrier(n_proc), ctx.Queue()
    env_before = os.environ.get("MRISR_FAULT")
    if widen:
        os.environ["MRISR_FAULT"] = "lock.judged-stale:sleep=0.02"
    try:
        procs = [
            ctx.Process(target=_racer, args=(str(tmp_path), trials, barrier, queue, hold_s)) for _ in range(n_proc)
        ]
        for p in procs:
            p.start()
        held: list[tuple[int, int, float, float]] = []
        finished = 0
        while finished < n_proc:
            item = queue.get(timeout=120)
            if item is None:
                finished += 1
            else:
                held.append(item)
        for p in procs:
            p.join(timeout=30)
            assert p.exitcode == 0
    finally:
        if env_before is None:
            os.environ.pop("MRISR_FAULT", None)
        else:
            os.environ["MRISR_FAULT"] = env_before
    by_trial: dict[int, list[tuple[float, float]]] = {}
    for trial, _, start, end in held:
        by_trial.setdefault(trial, []).append((start, end))
    assert sorted(by_trial) == list(range(trials))  # every stale lock was taken over
    overlaps = [
        t for t, spans in by_trial.items() for a in spans for b in spans if a < b and b[0] < a[1]
    ]  # two holders at the same time
    assert not overlaps, f"{len(set(overlaps))} of {trials} trials had two holders at once"
    assert not [p.name for p in tmp_path.iterdir()]  # no lock, temporary or moved lock left


# -- SIGKILL at each rename and lock step, then a rerun -------------------------------------------------


@pytest.fixture(scope="module")
def kill_setup(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, dict[str, bytes]]:
    """A BIDS dataset whose file name holds glob characters, a checkpoint, and the uninterrupted result."""
    root = tmp_path_factory.mktemp("faults")
    torch.manual_seed(0)
    cfg = SRCNNConfig(kernel_sizes=(3, 1, 3), filters=(8, 4), residual=True)
    ckpt = save_checkpoint(root / "net.pt", SRCNN(cfg), cfg.to_dict(), {"scale": [2, 2, 1]})
    data = root / "bids"
    (data / "sub-03" / "anat").mkdir(parents=True)
    (data / "dataset_description.json").write_text(json.dumps({"Name": "t", "BIDSVersion": "1.9.0"}))
    arr = (np.random.default_rng(0).random((8, 6, 3)) * 900 + 50).astype(np.int16)
    nib.save(nib.Nifti1Image(arr, AFFINE), str(data / "sub-03" / "anat" / "sub-03_acq-[x]_T1w.nii.gz"))
    ref = root / "ref"
    assert main(_args(data, ref, ckpt)) == 0
    return data, ckpt, _results(ref)


def _args(data: Path, out: Path, ckpt: Path) -> list[str]:
    return ["enhance", str(data), "--out", str(out), "--checkpoint", str(ckpt), "--device", "cpu", "--no-figure"]


def _results(out: Path) -> dict[str, bytes]:
    """Voxel bytes of every output volume and the sidecars' status, by relative path."""
    got: dict[str, bytes] = {}
    for p in sorted(out.rglob("*")):
        rel = p.relative_to(out).as_posix()
        if p.name.endswith(".nii.gz"):
            got[rel] = np.asarray(nib.load(p).dataobj).tobytes()
        elif p.name.endswith(".json") and p.name != "dataset_description.json":
            got[rel] = json.loads(p.read_text())["status"].encode()
    return got


#: (fault point, files a stale lock of a dead process is planted for first)
KILL_POINTS = [
    ("lock.before-link", False),
    ("lock.claimed", True),
    ("lock.moved-stale", True),
    ("lock.acquired", False),
    # The atomic writes of one study, in order: the staged volume, the description files, the staged
    # sidecar, the commit journal (mrisr.outputs); then the commit's moves.
    *((f"atomic.before-rename@{n}", False) for n in range(1, 6)),
    ("atomic.after-rename@5", False),
    ("commit.before-move@1", False),
    ("commit.before-move@2", False),
    ("lock.before-release", False),
]


@pytest.mark.slow
@pytest.mark.parametrize(("point", "stale"), KILL_POINTS, ids=[p for p, _ in KILL_POINTS])
def test_kill_at_each_step_then_rerun_equals_uninterrupted(
    kill_setup: tuple[Path, Path, dict[str, bytes]], tmp_path: Path, point: str, stale: bool
) -> None:
    data, ckpt, ref = kill_setup
    ref_dir = ckpt.parent / "ref"
    out = tmp_path / "out"
    out.mkdir()
    if stale:
        (study,) = find_studies([data])
        lock_path(out, study.id).write_text(f"{socket.gethostname()} {_dead_pid()}\n")
    env = {**os.environ, "MRISR_FAULT": f"{point}:kill", "OMP_NUM_THREADS": "1"}
    env.pop("SLURM_ARRAY_TASK_ID", None)
    killed = subprocess.run([sys.executable, "-m", "mrisr.cli", *_args(data, out, ckpt)], env=env, capture_output=True)
    assert killed.returncode == -9, f"the fault point {point} was not reached: {killed.stderr.decode()[-2000:]}"
    assert main(_args(data, out, ckpt)) == 0
    assert _results(out) == ref
    hidden = {p.relative_to(out).as_posix() for p in out.rglob(".*")}
    ref_hidden = {p.relative_to(ref_dir).as_posix() for p in ref_dir.rglob(".*")}  # e.g. .bidsignore
    assert hidden == ref_hidden, f"left behind after the rerun: {sorted(hidden - ref_hidden)}"


# -- a second SIGTERM ---------------------------------------------------------------------------------


def _batch(root: Path, n: int = 3, shape: tuple[int, int, int] = (8, 6, 3)) -> tuple[Path, Path]:
    torch.manual_seed(0)
    cfg = SRCNNConfig(residual=True)
    ckpt = save_checkpoint(root / "net.pt", SRCNN(cfg), cfg.to_dict(), {"scale": [2, 2, 1]})
    data = root / "data"
    data.mkdir()
    for i in range(n):
        arr = (np.random.default_rng(i).random(shape) * 900).astype(np.int16)
        nib.save(nib.Nifti1Image(arr, AFFINE), str(data / f"s{i}.nii.gz"))
    return data, ckpt


def _wait_for(cond: object, timeout: float = 120.0) -> None:
    deadline = time.time() + timeout
    while time.time() < deadline:
        if cond():  # type: ignore[operator]
            return
        time.sleep(0.02)
    raise AssertionError("timed out")


@pytest.mark.slow
@pytest.mark.parametrize("when", ["during-a-study", "during-shutdown"])
def test_a_second_sigterm_still_exits_3_with_the_interrupted_line(tmp_path: Path, when: str) -> None:
    """First SIGTERM: finish the study in progress. A second one abandons that study (during-a-study:
    each rename sleeps 1 s) or comes while the command winds down (during-shutdown: 2 s before the
    summary): either way exit 3 and one 'interrupted' line, and no temporary left behind."""
    # Studies of a few seconds each, so that without the fault hook (today's main) the second signal
    # also lands inside a study.
    data, ckpt = _batch(tmp_path, shape=(48, 40, 8) if when == "during-a-study" else (8, 6, 3))
    out = tmp_path / "out"
    fault = "atomic.before-rename:sleep=1" if when == "during-a-study" else "enhance.after-batch:sleep=2"
    env = {**os.environ, "MRISR_FAULT": fault, "OMP_NUM_THREADS": "1"}
    env.pop("SLURM_ARRAY_TASK_ID", None)
    proc = subprocess.Popen(
        [sys.executable, "-m", "mrisr.cli", *_args(data, out, ckpt)], env=env, stderr=subprocess.PIPE, text=True
    )
    _wait_for(lambda: out.is_dir() and any(p.name.endswith(".lock") for p in out.iterdir()))
    proc.send_signal(signal.SIGTERM)
    if when == "during-a-study":
        time.sleep(0.3)  # the study in progress is sleeping before a rename
    else:
        _wait_for(lambda: not any(p.name.endswith(".lock") for p in out.iterdir()))  # the batch loop is over
        time.sleep(0.5)
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 3, err[-3000:]
    lines = [ln for ln in err.splitlines() if ln.startswith("interrupted by signal 15")]
    assert len(lines) == 1, err[-3000:]
    assert ("abandoned" in lines[0]) == (when == "during-a-study"), lines
    assert len(list(out.glob("*_sr.json"))) < 3
    assert not [p.name for p in out.iterdir() if TMP_MARK in p.name]
    assert main(_args(data, out, ckpt)) == 0  # and a rerun completes the batch
    assert len(list(out.glob("*_sr.json"))) == 3


# -- training stopped mid-epoch -----------------------------------------------------------------------


def test_stop_mid_epoch_resume_gives_the_uninterrupted_loss_row(tmp_path: Path) -> None:
    """SIGTERM (``should_stop``) after step 4 of 9 (epoch 2 of 3, 3 steps each), then ``--resume``:
    every row of metrics.csv, the loss of the interrupted epoch included, equals the uninterrupted run's."""
    import csv

    from mrisr.training import Callbacks, TrainConfig, train

    data = tmp_path / "data"
    data.mkdir()
    for i in range(3):
        arr = (np.random.default_rng(i).random((16, 16, 8)) * 400).astype(np.int16)
        nib.save(nib.Nifti1Image(arr, np.eye(4)), str(data / f"sub{i}.nii.gz"))
    cfg = TrainConfig(
        scale=2, epochs=3, steps_per_epoch=3, batch_size=2, patch_size=8, val_fraction=0.34, device="cpu", seed=3,
        model=SRCNNConfig(kernel_sizes=(3, 1, 3), filters=(4, 4), residual=True),
    )  # fmt: skip
    train([data], tmp_path / "full", cfg)
    steps: list[int] = []
    stop = Callbacks(on_step=lambda s, _: steps.append(s), should_stop=lambda: len(steps) >= 4)
    assert train([data], tmp_path / "part", cfg, callbacks=stop).stopped
    train([data], tmp_path / "part", cfg, resume=True)

    def rows(run: str) -> list[dict[str, str]]:
        with open(tmp_path / run / "metrics.csv", newline="") as fh:
            return [{k: v for k, v in r.items() if k != "seconds"} for r in csv.DictReader(fh)]

    full, part = rows("full"), rows("part")
    assert len(full) == 3 and [r["loss"] for r in part] == [r["loss"] for r in full]
    assert part == full


def test_lock_wait_waits_for_a_live_holder_to_finish(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """A racing worker's lock (a live process here): without --lock-wait the study is not done (exit 4);
    with it, the study is done once the lock is released 1.5 s into the run (exit 0)."""
    import threading

    data, ckpt = _batch(tmp_path, n=2)
    for wait, code in (("0", 4), ("60", 0)):
        out = tmp_path / f"out-{wait}"
        out.mkdir()
        lock = lock_path(out, "s0")
        lock.write_text(f"{socket.gethostname()} {os.getpid()} racing-worker\n")
        release = threading.Timer(1.5, lock.unlink)
        if code == 0:
            release.start()
        try:
            assert main([*_args(data, out, ckpt), "--lock-wait", wait]) == code
        finally:
            if code == 0:
                release.join()
        assert (out / "s0_sr.json").exists() == (code == 0)
    err = [ln for ln in capsys.readouterr().err.splitlines() if ln.startswith("error:")]
    assert len(err) == 1 and "s0.nii.gz: not processed" in err[0], err
