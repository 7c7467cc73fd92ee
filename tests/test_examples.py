"""The scripts in examples/ run as documented (they need the shipped weights)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from mrisr.checkpoint import shipped_checkpoint

ROOT = Path(__file__).resolve().parents[1]
# train_briefly.py is run (and its checkpoint checked) by tests/test_training.py.
EXAMPLES = sorted(p for p in (ROOT / "examples").glob("*.py") if p.name != "train_briefly.py")


@pytest.mark.parametrize("script", EXAMPLES, ids=lambda p: p.name)
def test_example_runs(script: Path, tmp_path: Path) -> None:
    if shipped_checkpoint((4, 4, 1)) is None:
        pytest.fail("no shipped ×4 weights in mrisr/weights/")
    done = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=300, cwd=tmp_path)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    if script.name == "enhance_file.py":
        assert "field of view kept: True" in done.stdout
    if script.name == "evaluate_folder.py":
        assert "report:" in done.stdout and "dB" in done.stdout
