"""Training curves for the report: the ``metrics.csv`` that ``mrisr train`` writes (one row per
validation: ``epoch, step, loss, lr, val_psnr_sr, val_psnr_bicubic, val_ssim_sr, ...``)."""

from __future__ import annotations

import csv
import logging
import math
from dataclasses import dataclass
from pathlib import Path

log = logging.getLogger(__name__)

MAX_ROWS = 100_000


@dataclass(frozen=True)
class TrainingRun:
    """One training run's history.

    Attributes:
        path: ``metrics.csv`` relative to the report's folder (POSIX separators).
        columns: ``{column: values}`` (``None`` where a cell is empty or not a number), rows by step.
    """

    path: str
    columns: dict[str, list[float | None]]

    @property
    def steps(self) -> list[float]:
        """The ``step`` column."""
        return [s or 0.0 for s in self.columns["step"]]


def _float(text: str | None) -> float | None:
    try:
        v = float(text) if text not in (None, "") else None
    except ValueError:
        return None
    return v if v is not None and math.isfinite(v) else None


def read_training_run(path: Path, root: Path) -> TrainingRun | None:
    """The run in ``path``, or ``None`` when it is not a readable training ``metrics.csv``."""
    try:
        with open(path, newline="", encoding="utf-8") as fh:
            reader = csv.DictReader(fh)
            fields = reader.fieldnames or []
            if "step" not in fields or "loss" not in fields:
                return None
            cols: dict[str, list[float | None]] = {f: [] for f in fields}
            for n, row in enumerate(reader):
                if n >= MAX_ROWS:
                    break
                for f in fields:
                    cols[f].append(_float(row.get(f)))
    except (OSError, UnicodeDecodeError, csv.Error) as exc:
        log.warning("%s: not read as a training run: %s", path, exc)
        return None
    if not cols["step"] or all(s is None for s in cols["step"]):
        return None
    return TrainingRun(path.relative_to(root).as_posix(), cols)


def find_training_runs(root: Path) -> list[TrainingRun]:
    """Training runs in ``root`` itself or one folder below it (``metrics.csv`` with step and loss)."""
    candidates = [root / "metrics.csv", *sorted(root.glob("*/metrics.csv"))]
    runs = [read_training_run(p, root) for p in candidates if p.is_file() and not p.is_symlink()]
    return [r for r in runs if r is not None]
