"""The report's columns: one registry of names, units and definitions, used for report.csv, the
table headers (label with unit, definition on hover), the study pages and docs/report.md."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Column:
    """One column of the report.

    Attributes:
        key: Name in report.csv / report.json.
        label: Short header text.
        unit: Unit (``dB``, ``s``, ``input units``, ``%``) or ``""`` for unitless values and text.
        definition: What the value is (shown on hover and on the study pages).
        digits: Decimals shown in the HTML (``None``: text).
    """

    key: str
    label: str
    unit: str
    definition: str
    digits: int | None = None

    @property
    def numeric(self) -> bool:
        """Whether the column holds numbers."""
        return self.digits is not None

    @property
    def header(self) -> str:
        """Label with the unit, e.g. ``PSNR SR (dB)``."""
        return f"{self.label} ({self.unit})" if self.unit else self.label


_SIM = " (--simulate only)"
_PSNR = "10·log10(R²/MSE) against the reference, R its value range"
_SSIM = "mean over slices of the 2D SSIM map (Gaussian window 11 taps, σ 1.5 voxels)"
_MASK = " inside the foreground mask (border crop = scale)"

COLUMN_LIST: tuple[Column, ...] = (
    Column("study", "Study", "", "Study id; the link opens the study's page."),
    Column("status", "Status", "", "done, or failed (with the reason in the error column)."),
    Column("psnr_bicubic", "PSNR bicubic", "dB", f"Clamped bicubic interpolation: {_PSNR}{_SIM}.", 2),
    Column("psnr_sr", "PSNR SR", "dB", f"Super-resolved output: {_PSNR}{_SIM}.", 2),
    Column("gain_db", "PSNR gain", "dB", "PSNR SR − PSNR bicubic: what the network adds over interpolation.", 2),
    Column("ssim_bicubic", "SSIM bicubic", "", f"Bicubic: {_SSIM}{_SIM}.", 4),
    Column("ssim_sr", "SSIM SR", "", f"Output: {_SSIM}{_SIM}.", 4),
    Column("ssim_gain", "SSIM gain", "", "SSIM SR − SSIM bicubic.", 4),
    Column("ssim3d_bicubic", "3D SSIM bicubic", "", f"Bicubic: mean of the 3D SSIM map (11³ window){_SIM}.", 4),
    Column("ssim3d_sr", "3D SSIM SR", "", f"Output: mean of the 3D SSIM map (11³ window){_SIM}.", 4),
    Column("psnr_bicubic_masked", "PSNR bicubic, head", "dB", f"Bicubic PSNR{_MASK}{_SIM}.", 2),
    Column("psnr_sr_masked", "PSNR SR, head", "dB", f"Output PSNR{_MASK}{_SIM}.", 2),
    Column("gain_db_masked", "PSNR gain, head", "dB", "Masked PSNR SR − masked PSNR bicubic.", 2),
    Column("ssim_bicubic_masked", "SSIM bicubic, head", "", f"Bicubic SSIM{_MASK}{_SIM}.", 4),
    Column("ssim_sr_masked", "SSIM SR, head", "", f"Output SSIM{_MASK}{_SIM}.", 4),
    Column(
        "psnr_lr",
        "Consistency PSNR",
        "dB",
        "The output degraded back onto the input grid (the tool's degradation model) against the input, "
        "data range = the input's range. High: the output agrees with the data it was made from; it says "
        "nothing of detail the input does not hold.",
        2,
    ),
    Column(
        "residual_rms_head",
        "Residual RMS, head",
        "input units",
        "RMS of (output degraded onto the input grid − input) inside the head, in the input's intensity units.",
        2,
    ),
    Column(
        "uncertainty_rel_head",
        "Spread, head",
        "%",
        "Mean over the head of the per-voxel standard deviation of the ensemble views, as a percentage of "
        "the output's 99th percentile in the head (--save-uncertainty only). Where the views disagree; "
        "low spread is not proof of a correct output.",
        3,
    ),
    Column("uncertainty_mean_head", "Spread mean, head", "input units", "Mean ensemble spread inside the head.", 3),
    Column("seconds", "Time", "s", "Wall time of the study (read, enhance, write).", 1),
    Column("flags", "Flags", "", "Outliers: a value with robust z > 3 against the cohort (median/MAD)."),
    Column("output_from", "Output from", "", "network, adapted network, or bicubic (a rejected adaptation)."),
    Column("scale", "Scale", "", "Per-axis refinement factors (voxel axes i×j×k)."),
    Column("ensemble", "Views", "", "Ensemble views averaged per slice.", 0),
    Column("checkpoint_sha256", "Checkpoint SHA-256", "", "Hash of the network's weights file."),
    Column("mrisr_version", "mrisr", "", "Version of mrisr that wrote the sidecar."),
    Column("device", "Device", "", "Device the network ran on."),
    Column("input", "Input", "", "Input path as recorded in the sidecar."),
    Column("output", "Output", "", "Output path relative to the report's folder."),
    Column("figure", "Figure", "", "Comparison figure, relative to the report's folder."),
    Column("mosaic", "Mosaic", "", "Three-plane mosaic figure, relative to the report's folder."),
    Column("sidecar", "Sidecar", "", "The JSON sidecar, relative to the report's folder."),
    Column("error", "Error", "", "One-line reason of a failure."),
)
COLUMN_INFO: dict[str, Column] = {c.key: c for c in COLUMN_LIST}

#: Columns of the HTML table of the index page (the rest are on the study pages and in report.csv).
TABLE_COLUMNS: tuple[str, ...] = (
    "study", "status", "psnr_bicubic", "psnr_sr", "gain_db", "ssim_bicubic", "ssim_sr", "ssim_gain",
    "psnr_lr", "uncertainty_rel_head", "seconds", "figure", "flags",
)  # fmt: skip
#: Table columns hidden in a narrow (< 900 px) window.
NARROW_HIDDEN: frozenset[str] = frozenset({"psnr_bicubic", "ssim_bicubic", "seconds", "figure"})
