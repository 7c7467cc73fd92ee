"""Helpers shared by the benchmark scripts (run as files: this folder is on ``sys.path``)."""

from __future__ import annotations

import sys
from pathlib import Path


def mrisr_command() -> list[str]:
    """The ``mrisr`` console script beside this Python, else ``python -m mrisr.cli`` (a source tree)."""
    script = Path(sys.executable).with_name("mrisr")
    return [str(script)] if script.is_file() else [sys.executable, "-m", "mrisr.cli"]
