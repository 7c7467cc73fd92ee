"""Cohort statistics of the report: natural sort, mean/sd, robust z-scores and outlier flags."""

from __future__ import annotations

import math
import re
from collections.abc import Iterable, Sequence
from typing import Any

#: Robust z beyond which a study is flagged, and the columns checked (gain, consistency, spread).
OUTLIER_Z = 3.0
OUTLIER_COLUMNS: tuple[str, ...] = ("gain_db", "psnr_lr", "uncertainty_rel_head")
#: Fewest values for a robust z to mean anything.
MIN_COHORT = 5

_DIGITS = re.compile(r"(\d+)")


def natural_key(text: str) -> tuple[Any, ...]:
    """Sort key with digit runs compared as numbers: ``s2`` before ``s10``; ties by the plain text."""
    parts = _DIGITS.split(text)
    return (tuple(int(p) if i % 2 else p.casefold() for i, p in enumerate(parts)), text)


def finite(values: Iterable[Any]) -> list[float]:
    """The finite floats among ``values``."""
    return [float(v) for v in values if isinstance(v, float) and math.isfinite(v)]


def mean_sd(values: Sequence[float]) -> tuple[float | None, float | None]:
    """Mean and sample standard deviation (``n − 1``); the sd is ``None`` below two values."""
    if not values:
        return None, None
    mean = math.fsum(values) / len(values)
    if len(values) == 1:
        return mean, None
    return mean, math.sqrt(math.fsum((v - mean) ** 2 for v in values) / (len(values) - 1))


def median(values: Sequence[float]) -> float:
    """The median of a non-empty sequence."""
    s = sorted(values)
    n = len(s)
    return s[n // 2] if n % 2 else 0.5 * (s[n // 2 - 1] + s[n // 2])


def robust_z(values: Sequence[float]) -> tuple[float, float] | None:
    """``(median, scale)`` so that ``(x − median) / scale`` is a robust z-score, or ``None``.

    ``scale = 1.4826 · MAD`` (the sd of a normal sample); when more than half the values are equal
    (MAD 0), ``1.2533 · mean absolute deviation``; ``None`` for fewer than :data:`MIN_COHORT` values or
    no spread at all.
    """
    if len(values) < MIN_COHORT:
        return None
    med = median(values)
    dev = [abs(v - med) for v in values]
    scale = 1.4826 * median(dev)
    if scale <= 0:
        scale = 1.2533 * math.fsum(dev) / len(dev)
    return (med, scale) if scale > 0 else None


def flag_outliers(rows: Sequence[dict[str, Any]], columns: Sequence[str] = OUTLIER_COLUMNS) -> list[dict[str, Any]]:
    """Set ``row["flags"]`` (text) and ``row["_z"]`` on done rows; return ``{study, column, value, z}``.

    A value is flagged when its robust z-score against the other done studies' values of that
    column exceeds :data:`OUTLIER_Z` in either direction.
    """
    found: list[dict[str, Any]] = []
    done = [r for r in rows if r["status"] == "done"]
    for r in rows:
        r.setdefault("_z", {})
    for col in columns:
        stats = robust_z(finite(r.get(col) for r in done))
        if stats is None:
            continue
        med, scale = stats
        for r in done:
            v = r.get(col)
            if not (isinstance(v, float) and math.isfinite(v)):
                continue
            z = (v - med) / scale
            r["_z"][col] = z
            if abs(z) > OUTLIER_Z:
                found.append({"study": r["study"], "column": col, "value": v, "z": z, "median": med})
    by_study: dict[str, list[str]] = {}
    for f in found:
        by_study.setdefault(f["study"], []).append(f"{f['column']} z={f['z']:+.1f}")
    for r in rows:
        r["flags"] = "; ".join(by_study.get(r["study"], [])) or None
    return found
