"""The curves of a run: loss and validation PSNR/SSIM per epoch (``curves.png``)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from mrisr.fsutil import atomic_path

#: ``curves.png`` is redrawn at most this often, s (drawing costs seconds on a busy CPU), and at the end.
PLOT_EVERY_S = 120.0


def plot_curves(rows: Sequence[dict[str, float]], path: Path) -> None:
    """Loss and validation PSNR/SSIM (SR against bicubic) per epoch, as a PNG (matplotlib Agg)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    ep = [r["epoch"] for r in rows]
    fig, axs = plt.subplots(1, 3, figsize=(13, 3.6))
    axs[0].plot(ep, [r["loss"] for r in rows], "o-")
    axs[0].set(title="training loss", xlabel="epoch")
    for ax, key, unit in ((axs[1], "psnr", "dB"), (axs[2], "ssim", "")):
        if all(f"val_{key}_sr" in r for r in rows):
            ax.plot(ep, [r[f"val_{key}_sr"] for r in rows], "o-", label="SR")
            ax.plot(ep, [r[f"val_{key}_bicubic"] for r in rows], "s--", label="bicubic (clamped)")
            ax.legend()
        ax.set(title=f"validation {key.upper()} {unit}".strip(), xlabel="epoch")
    fig.subplots_adjust(left=0.06, right=0.98, bottom=0.14, top=0.9, wspace=0.28)
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=90)
    plt.close(fig)
