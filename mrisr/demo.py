"""The embedded demo: what ``make demo`` / ``mrisr demo`` runs, offline, in well under two minutes.

1. ``--simulate`` on a T1 slab bundled in the package (16 axial slices of the MNI ICBM152 2009a T1
   template — the data the shipped weights were trained on, so its figures are *not* a held-out
   measure; see ``docs/weights.md`` for those);
2. plain enhance of a real low-resolution scan available offline: the EPI time series that nibabel
   ships for its tests (``nibabel/tests/data/example4d.nii.gz``, 128×96×24, 2 volumes);
3. the report over both.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import TYPE_CHECKING

from mrisr.discovery import find_studies

if TYPE_CHECKING:
    from mrisr.enhance import StudyResult

log = logging.getLogger(__name__)

DATA_DIR = Path(__file__).parent / "data"
T1_SLAB = DATA_DIR / "mni152_t1_slab.nii.gz"


def example_epi() -> Path | None:
    """nibabel's example EPI, when the installed nibabel ships its test data."""
    import nibabel

    path = Path(nibabel.__file__).parent / "tests" / "data" / "example4d.nii.gz"
    return path if path.is_file() else None


def run_demo(out_dir: Path, *, device: str = "auto") -> tuple[Path, list[StudyResult]]:
    """Run the demo into ``out_dir``; returns the path of the HTML report and the study results."""
    from mrisr.enhance import EnhanceOptions, Enhancer, default_run, resolve_checkpoint
    from mrisr.report import build_report

    ckpt = resolve_checkpoint(None, (4, 4, 1))
    sim_dir = out_dir / "simulate"
    with Enhancer(ckpt, default_run(device)) as enhancer:
        # The demo always recomputes, so a rerun after an upgrade or a change of defaults never trips
        # on its own earlier outputs.
        results = enhancer.enhance(
            find_studies([T1_SLAB]),
            EnhanceOptions(out_dir=sim_dir, simulate=True, save_intermediates=True, redo=True),
        )
        epi = example_epi()
        if epi is not None:
            results += enhancer.enhance(find_studies([epi]), EnhanceOptions(out_dir=out_dir / "enhance", redo=True))
        else:
            log.warning("nibabel's example EPI is not installed; skipping the plain-enhance part of the demo")
    return build_report(out_dir).html, results
