"""Write the 256×256×40 thick-slice study of docs/performance.md: 120 axial 1 mm slices of the MNI
ICBM152 2009a template (the corpus's training copy) averaged 3 at a time (3 mm slices), padded
in-plane to 256×256, int16, spacing 1×1×3 mm.

    .venv/bin/python benchmarks/thick_256.py corpus/train/mni_icbm152_2009a_t1.nii.gz OUT.nii.gz
"""

from __future__ import annotations

import sys

import nibabel as nib
import numpy as np


def main(src: str, dst: str) -> None:
    data = np.asarray(nib.load(src).dataobj, dtype=np.float32)
    sub = data[:, :, 60:180]
    thick = sub.reshape(sub.shape[0], sub.shape[1], 40, 3).mean(-1)
    out = np.zeros((256, 256, 40), np.float32)
    ox, oy = (256 - thick.shape[0]) // 2, (256 - thick.shape[1]) // 2
    out[ox : ox + thick.shape[0], oy : oy + thick.shape[1]] = thick[:, :256]
    nib.save(nib.Nifti1Image(np.round(out).astype(np.int16), np.diag([1.0, 1.0, 3.0, 1.0])), dst)


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
