#!/usr/bin/env python3
"""ECLARE (IACL, PyPI ``eclare``) beside ``mrisr enhance`` on the same thick-slice cases, same CPU.

    .venv/bin/python benchmarks/bench_peers.py OUTDIR [--cases small|all|NAME ...] [--threads 1]
        [--eclare-venv DIR] [--eclare-long CASE:STEPS] [--skip-eclare] [--study-time]

One command. What it does:

1. **ECLARE in its own virtual environment** (``--eclare-venv``, default ``OUTDIR/eclare-venv``; never a
   dependency of mrisr): ``python3 -m venv DIR``, then ``pip install torch==2.13.0`` (the CPU build
   this machine's index serves; eclare 1.0.1 asks only ``torch>=2.5``, so pip keeps it instead of
   pulling a multi-GB CUDA build), then ``pip install eclare==1.0.1``. It is run with its own
   console script ``run-eclare --in-fpath LR --out-dir D --relative-slice-thickness W
   --relative-slice-profile-type gaussian|rect --n-patches N --gpu-id -1`` (CPU).
2. **Sources** (ordinary clients only, into ``OUTDIR/src``): the held-out EPI (nibabel's
   ``example4d.nii.gz`` volume 0, as ``benchmarks/heldout_data.py`` ``epi0``); the Colin27 T1 at 1 mm
   (``ch2.nii.gz`` of Debian ``mricron-data``, ``apt-get download``); a 1.5 mm DWI b0 (volume
   ``b0dwi_for_fmap+00001.dcm`` of PyPI ``heudiconv``'s test data, a Siemens mosaic, unpacked with
   nibabel's ``nicom`` mosaic reader: mrisr does not read mosaics yet).
3. **Crops** (so that ECLARE's network fits the 2-core CPU): 64×64 in-plane, centred, by 24 slices
   (EPI, 128×96×24 at 2×2×2.2 mm: ×3 → 8 thick slices; ×5 → the first 20 slices, 4 thick) or 30
   slices (T1: slices 75–104 of 181; b0: the middle 30 of 81; ×3 → 10 thick slices, ×5 → 6). The
   slice axis is axis 2 in every case. Every truth is written with a diagonal affine of its in-plane
   spacing on all three axes (the EPI's 2.2 mm slices are relabelled 2 mm, the b0's oblique
   orientation is dropped), so that ECLARE's ``slice_separation`` (thick spacing / finest in-plane
   spacing) is exactly the factor and both tools get the same file.
4. **Degradation along axis 2** by factor F, with the slice profile in fine voxels:
   ``box`` = the mean of each block of F slices (sr_gain.py's box); ``gauss`` = a Gaussian of
   FWHM = the slice thickness (F fine voxels), centred on each block, truncated at ±F voxels (the
   taps ECLARE's own Gaussian kernel has) and renormalised at the volume's ends; ``gap`` = a box
   2/3 of the spacing wide (thickness 2, spacing 3 at ×3), each fine voxel weighted by its overlap
   (weights 1/4, 1/2, 1/4: exactly ECLARE's ``rect`` kernel of width 2). The thick volume is rounded
   to the source's dtype and saved on the coarse grid (voxel-centre convention, sr_gain.py's
   ``coarse_affine``).
5. **Runs**, each as a child process in a fresh output folder with
   ``OMP_NUM_THREADS=MKL_NUM_THREADS=--threads``; its wall time, CPU time (user + system of the child's
   process tree, from ``os.wait4``: what a shared CPU stretches least) and peak RSS (``ru_maxrss``: the
   largest process of the tree, which for ECLARE includes its one DataLoader worker) are recorded:
   - ``mrisr``: ``mrisr enhance LR --out D --scale 1,1,F --device cpu --threads T --no-figure``
     (its default: adapted through-plane network, slice consistency). For the gap case it is also run
     on a DICOM series of the same thick slices with ``SliceThickness`` 2/3 of the spacing
     (``mrisr-dicom``, ``--format nifti``), the only way mrisr is told of a gap;
   - ``eclare-min``: ECLARE with the slice profile given (no ESPRESO) and the smallest schedule
     its command line takes at its default batch: ``--n-patches 128`` = 1 training step of 128
     patches (its default is 1,000,000 patches = 7,813 steps);
   - ``eclare-STEPSsteps`` (``--eclare-long CASE:STEPS``, one case): the same with STEPS steps.
6. **Grid**: every output is mapped onto the truth's voxels through world coordinates
   (``inverse(truth affine) @ output affine`` must be a signed permutation with integer offsets to
   1e-3 voxel, else that row gets no score); ECLARE writes ``update_affine`` of the input (radifox: same field
   of view, voxel centres), which equals the truth's affine, and its through-plane resampling puts
   each thick slice's value on the centre of its block (checked on a ramp in the docs).
7. **Scores** against the cropped truth in its own units: PSNR with data range max − min of the
   truth, gain over bicubic along axis 2 clamped to the thick volume's range (sr_gain.py's
   baseline), and 3D SSIM (``mrisr.metrics.ssim3d``, 11³ Gaussian window σ = 1.5).

Writes ``OUTDIR/results.json`` and ``OUTDIR/results.md`` (one row per case and tool; rewritten after
every case, so an interrupted run keeps the cases it finished; a rerun replaces a case's rows).
The figures of ``docs/beyond.md`` ("ECLARE side by side") are in ``benchmarks/results/bench_peers/``.
``--study-time`` instead times mrisr's default thick-slice run of a 256×256×40 study at ×3 (the
Colin27 T1, 120 slices box-averaged 3 at a time, zero-padded in-plane to 256×256) with the CPU's
threads, and prints the sidecar's adaptation steps and seconds.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import subprocess
import sys
import time
import zipfile
from dataclasses import dataclass
from pathlib import Path

import nibabel as nib
import numpy as np
import torch
import torch.nn.functional as F
from _common import mrisr_command

from mrisr.metrics import psnr, ssim3d

ECLARE_VERSION = "1.0.1"
TORCH_FOR_ECLARE = "torch==2.13.0"
ECLARE_BATCH = 128  # run-eclare's default --batch-size
ECLARE_DEFAULT_PATCHES = 1_000_000  # run-eclare's default --n-patches
CROP = 64


@dataclass(frozen=True)
class Case:
    """One thick-slice case: a source volume, a factor along axis 2 and a slice profile."""

    source: str
    factor: int
    profile: str  # box | gauss | gap

    @property
    def name(self) -> str:
        return f"{self.source}-x{self.factor}-{self.profile}"


ALL_CASES = [Case(s, f, p) for s in ("epi", "t1", "b0") for f in (3, 5) for p in ("box", "gauss")] + [
    Case("t1", 3, "gap")
]
SMALL_CASES = [Case("epi", 3, "box")]


# ---------------------------------------------------------------- sources


def _run(cmd: list[str], **kw: object) -> None:
    print("$", " ".join(cmd), flush=True)
    subprocess.run(cmd, check=True, **kw)  # type: ignore[call-overload]


def _source_epi() -> tuple[np.ndarray, float]:
    img = nib.load(Path(nib.__file__).parent / "tests" / "data" / "example4d.nii.gz")
    return np.asarray(img.dataobj)[..., 0], float(img.header.get_zooms()[0])


def _source_t1(src: Path) -> tuple[np.ndarray, float]:
    ch2 = src / "deb" / "usr" / "share" / "mricron" / "templates" / "ch2.nii.gz"
    if not ch2.is_file():
        src.mkdir(parents=True, exist_ok=True)
        if not sorted(src.glob("mricron-data_*.deb")):
            _run(["apt-get", "download", "mricron-data"], cwd=src)
        _run(["dpkg-deb", "-x", str(sorted(src.glob("mricron-data_*.deb"))[-1]), str(src / "deb")])
    img = nib.load(ch2)
    return np.asarray(img.dataobj), float(img.header.get_zooms()[0])


def _source_b0(src: Path) -> tuple[np.ndarray, float]:
    member = "heudiconv/tests/data/b0dwiForFmap/b0dwi_for_fmap+00001.dcm"
    dcm = src / member
    if not dcm.is_file():
        src.mkdir(parents=True, exist_ok=True)
        if not sorted(src.glob("heudiconv-*.whl")):
            _run([sys.executable, "-m", "pip", "download", "--no-deps", "-q", "heudiconv==1.5.1", "-d", str(src)])
        with zipfile.ZipFile(sorted(src.glob("heudiconv-*.whl"))[-1]) as zf:
            zf.extract(member, src)
    from nibabel.nicom import dicomwrappers  # the mosaic reader; mrisr does not read mosaics

    wrapper = dicomwrappers.wrapper_from_file(str(dcm))
    return np.asarray(wrapper.get_data()), float(wrapper.voxel_sizes[0])


def _crop(vol: np.ndarray, depth: int, z_centre: int | None = None) -> np.ndarray:
    """A centred CROP×CROP in-plane window of ``depth`` slices (around ``z_centre``, default middle)."""
    x0, y0 = (vol.shape[0] - CROP) // 2, (vol.shape[1] - CROP) // 2
    zc = vol.shape[2] // 2 if z_centre is None else z_centre
    z0 = max(0, min(vol.shape[2] - depth, zc - depth // 2))
    return np.ascontiguousarray(vol[x0 : x0 + CROP, y0 : y0 + CROP, z0 : z0 + depth])


def truths(src: Path) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """The cropped truth volumes and their (diagonal, isotropic) affines."""
    out = {}
    epi, s = _source_epi()
    out["epi"] = (_crop(epi, 24), np.diag([s, s, s, 1.0]))
    t1, s = _source_t1(src)
    out["t1"] = (_crop(t1, 30, z_centre=90), np.diag([s, s, s, 1.0]))
    b0, s = _source_b0(src)
    out["b0"] = (_crop(b0, 30), np.diag([s, s, s, 1.0]))
    return out


# ---------------------------------------------------------------- degradation


def profile_matrix(n_fine: int, factor: int, profile: str) -> np.ndarray:
    """The (n_thick, n_fine) averaging matrix of the slice profile (rows sum to 1)."""
    n = n_fine // factor
    fine = np.arange(n_fine, dtype=np.float64)
    p = np.zeros((n, n_fine))
    for k in range(n):
        c = k * factor + (factor - 1) / 2.0  # the thick slice's centre, in fine voxels
        if profile == "box":
            p[k, k * factor : (k + 1) * factor] = 1.0
        elif profile == "gauss":
            sigma = factor / (2.0 * np.sqrt(2.0 * np.log(2.0)))  # FWHM = factor fine voxels
            near = np.abs(fine - c) <= factor
            p[k, near] = np.exp(-((fine[near] - c) ** 2) / (2 * sigma**2))
        elif profile == "gap":
            half = factor * (2.0 / 3.0) / 2.0  # a slab 2/3 of the spacing thick
            p[k] = np.clip(np.minimum(fine + 0.5, c + half) - np.maximum(fine - 0.5, c - half), 0, None)
        else:
            raise ValueError(profile)
        p[k] /= p[k].sum()
    return p


def degrade(hr: np.ndarray, factor: int, profile: str) -> np.ndarray:
    p = profile_matrix(hr.shape[2], factor, profile)
    lr = np.tensordot(hr.astype(np.float64), p, axes=([2], [1]))
    if np.issubdtype(hr.dtype, np.integer):
        info = np.iinfo(hr.dtype)
        lr = np.clip(np.rint(lr), info.min, info.max)
    return lr.astype(hr.dtype)


def coarse_affine(affine: np.ndarray, factor: int) -> np.ndarray:
    m = np.eye(4)
    m[2, 2], m[2, 3] = factor, (factor - 1) / 2.0
    return affine @ m


def bicubic_z(lr: np.ndarray, n_fine: int) -> np.ndarray:
    """sr_gain.py's baseline: bicubic along axis 2 (half-pixel convention), clamped to the LR range."""
    t = torch.from_numpy(lr.astype(np.float32)).reshape(-1, 1, 1, lr.shape[2])
    up = F.interpolate(t, size=(1, n_fine), mode="bicubic", align_corners=False)
    return up.reshape(*lr.shape[:2], n_fine).numpy().clip(float(lr.min()), float(lr.max()))


# ---------------------------------------------------------------- grids


def on_truth_grid(data: np.ndarray, affine: np.ndarray, truth_affine: np.ndarray, shape: tuple[int, ...]) -> np.ndarray:
    """``data`` rearranged onto the truth's voxels through world coordinates (exact voxel match only)."""
    m = np.linalg.inv(truth_affine) @ affine
    rot = np.rint(m[:3, :3])
    shift = np.rint(m[:3, 3])
    if np.abs(m[:3, :3] - rot).max() > 1e-3 or np.abs(m[:3, 3] - shift).max() > 1e-3:
        raise RuntimeError(f"output grid is not the truth's: voxel map {np.round(m, 4).tolist()}")
    if sorted(np.abs(rot).sum(axis=0)) != [1, 1, 1] or sorted(np.abs(rot).sum(axis=1)) != [1, 1, 1]:
        raise RuntimeError(f"output axes are not a permutation of the truth's: {rot.tolist()}")
    data = np.asarray(data).reshape(data.shape[:3])
    idx = np.indices(data.shape).reshape(3, -1)
    q = (rot @ idx + shift[:, None]).astype(int)
    if any(q[a].min() != 0 or q[a].max() != shape[a] - 1 for a in range(3)) or data.size != int(np.prod(shape)):
        raise RuntimeError(f"output {data.shape} does not cover the truth's grid {shape}")
    out = np.empty(shape, dtype=np.float64)
    out[q[0], q[1], q[2]] = data.reshape(-1)
    return out


# ---------------------------------------------------------------- child processes


def timed(cmd: list[str], log: Path, threads: int) -> tuple[int, float, float, float]:
    """Run ``cmd``; returns (exit status, wall seconds, peak RSS in MiB of its largest process, CPU
    seconds of its process tree: user + system, which a shared CPU stretches less than the wall)."""
    env = dict(os.environ, OMP_NUM_THREADS=str(threads), MKL_NUM_THREADS=str(threads), PYTHONUNBUFFERED="1")
    with log.open("w") as fh:
        fh.write("$ " + " ".join(cmd) + "\n")
        fh.flush()
        t0 = time.perf_counter()
        proc = subprocess.Popen(cmd, stdout=fh, stderr=subprocess.STDOUT, env=env)
        _, status, usage = os.wait4(proc.pid, 0)
        wall = time.perf_counter() - t0
    proc.returncode = os.waitstatus_to_exitcode(status)
    return proc.returncode, wall, usage.ru_maxrss / 1024.0, usage.ru_utime + usage.ru_stime


def ensure_eclare(venv: Path) -> Path:
    """``run-eclare`` of a virtual environment holding torch 2.13.0 (CPU) and eclare (made if missing)."""
    script = venv / "bin" / "run-eclare"
    if not script.is_file():
        _run(["python3", "-m", "venv", str(venv)])
        _run([str(venv / "bin" / "pip"), "install", "-q", TORCH_FOR_ECLARE])
        _run([str(venv / "bin" / "pip"), "install", "-q", f"eclare=={ECLARE_VERSION}"])
    return script


def write_dicom_series(lr: np.ndarray, folder: Path, spacing_xy: float, spacing_z: float, thickness: float) -> None:
    """The thick slices as an axial DICOM series (MR_small.dcm's header) stating ``SliceThickness``."""
    import pydicom
    from pydicom.data import get_testdata_file
    from pydicom.uid import generate_uid

    folder.mkdir(parents=True, exist_ok=True)
    series, study, frame = generate_uid(), generate_uid(), generate_uid()
    pixels = lr.astype(np.uint16) if lr.min() >= 0 else lr.astype(np.int16)
    for k in range(lr.shape[2]):
        ds = pydicom.dcmread(get_testdata_file("MR_small.dcm"))
        ds.SOPInstanceUID = generate_uid()
        ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
        ds.SeriesInstanceUID, ds.StudyInstanceUID, ds.FrameOfReferenceUID = series, study, frame
        ds.SeriesNumber, ds.InstanceNumber = 1, k + 1
        ds.Rows, ds.Columns = lr.shape[1], lr.shape[0]  # pixel (row r, column c) = voxel (i=c, j=r)
        ds.PixelSpacing = [spacing_xy, spacing_xy]
        ds.ImageOrientationPatient = [1, 0, 0, 0, 1, 0]
        ds.ImagePositionPatient = [0.0, 0.0, k * spacing_z]
        ds.SliceLocation = k * spacing_z
        ds.SliceThickness = thickness
        ds.SpacingBetweenSlices = spacing_z
        ds.BitsAllocated, ds.BitsStored, ds.HighBit = 16, 16, 15
        ds.PixelRepresentation = 0 if pixels.dtype == np.uint16 else 1
        ds.PixelData = np.ascontiguousarray(pixels[:, :, k].T).tobytes()
        for tag in ("WindowCenter", "WindowWidth", "SmallestImagePixelValue", "LargestImagePixelValue"):
            if tag in ds:
                delattr(ds, tag)
        ds.save_as(folder / f"slice{k:03d}.dcm", enforce_file_format=True)


def dicom_truth_affine(shape: tuple[int, ...], spacing_xy: float, spacing_z: float, factor: int) -> np.ndarray:
    """The truth's grid in the RAS world of ``write_dicom_series`` (LPS x, y flipped)."""
    fine = spacing_z / factor
    return np.array(
        [[-spacing_xy, 0, 0, 0], [0, -spacing_xy, 0, 0], [0, 0, fine, -(factor - 1) / 2 * fine], [0, 0, 0, 1]]
    )


# ---------------------------------------------------------------- one case


def score(sr: np.ndarray, truth: np.ndarray, base_psnr: float) -> dict[str, float]:
    rng = float(truth.max() - truth.min())
    got = psnr(sr, truth, data_range=rng)
    return {"psnr": got, "gain_db": got - base_psnr, "ssim": ssim3d(sr, truth, data_range=rng)}


def run_case(
    case: Case,
    truth: np.ndarray,
    affine: np.ndarray,
    work: Path,
    threads: int,
    eclare: Path | None,
    eclare_steps: list[int],
) -> list[dict[str, object]]:
    f = case.factor
    truth = truth[:, :, : truth.shape[2] // f * f]  # the EPI's 24 slices: 20 at x5
    d = work / case.name
    d.mkdir(parents=True, exist_ok=True)
    lr = degrade(truth, f, case.profile)
    lr_path = d / f"{case.name}.nii.gz"
    nib.save(nib.Nifti1Image(lr, coarse_affine(affine, f)), lr_path)
    ref = truth.astype(np.float64)
    rng = float(ref.max() - ref.min())
    base = psnr(bicubic_z(lr, truth.shape[2]), ref, data_range=rng)
    common = {
        "case": case.name,
        "truth_shape": list(truth.shape),
        "thick_shape": list(lr.shape),
        "bicubic_psnr": base,
        "bicubic_ssim": ssim3d(bicubic_z(lr, truth.shape[2]), ref, data_range=rng),
        "threads": threads,
    }
    rows: list[dict[str, object]] = []

    def record(tool: str, sr: np.ndarray | None, rc: int, wall: float, rss: float, cpu: float, **extra: object) -> None:
        row: dict[str, object] = {**common, "tool": tool, "rc": rc, "seconds": wall, "cpu_seconds": cpu}
        row["peak_rss_mib"] = rss
        row["load_after"] = os.getloadavg()[0]
        if sr is not None:
            row.update(score(sr, ref, base))
        row.update(extra)
        rows.append(row)
        g = row.get("gain_db")
        print(
            f"{case.name} {tool}: rc {rc}, {wall:.1f} s ({cpu:.1f} s CPU), {rss:.0f} MiB, "
            f"gain {g if g is None else f'{g:+.3f}'} dB"
        )

    mrisr = mrisr_command()
    flags = ["--device", "cpu", "--threads", str(threads), "--no-figure"]
    runs = [("mrisr", lr_path, affine, [])]
    if case.profile == "gap":
        dcm = d / "dicom"
        sp = float(affine[0, 0])
        write_dicom_series(lr, dcm, sp, sp * f, thickness=sp * f * 2.0 / 3.0)
        runs.append(("mrisr-dicom", dcm, dicom_truth_affine(truth.shape, sp, sp * f, f), ["--format", "nifti"]))
    for tool, src, t_aff, more in runs:
        out = d / tool
        cmd = [*mrisr, "enhance", str(src), "--out", str(out), "--scale", f"1,1,{f}", *flags, *more]
        shutil.rmtree(out, ignore_errors=True)  # mrisr skips a study whose output is already there
        rc, wall, rss, cpu = timed(cmd, d / f"{tool}.log", threads)
        sr, extra = None, {}
        if rc == 0:
            img = nib.load(sorted(out.rglob("*.nii.gz"))[0])
            try:
                sr = on_truth_grid(np.asarray(img.dataobj, dtype=np.float64), img.affine, t_aff, truth.shape)
            except RuntimeError as exc:
                print(f"{case.name} {tool}: {exc}")
            side = json.loads(sorted(out.rglob("*_sr.json"))[0].read_text())
            ad = side.get("adapt") or {}
            extra = {
                "study_seconds": side.get("seconds"),
                "output_from": side.get("output_from"),
                "adapt_used": ad.get("used"),
                "adapt_steps": ad.get("steps"),
                "adapt_seconds": ad.get("seconds"),
                "slice_profile": side.get("slice_profile"),
            }
        record(tool, sr, rc, wall, rss, cpu, **extra)

    if eclare is None:
        return rows
    width = {"box": float(f), "gauss": float(f), "gap": f * 2.0 / 3.0}[case.profile]
    kind = "gaussian" if case.profile == "gauss" else "rect"
    for steps in eclare_steps:
        tool = "eclare-min" if steps == 1 else f"eclare-{steps}steps"
        out = d / tool
        cmd = [
            str(eclare),
            "--in-fpath", str(lr_path), "--out-dir", str(out), "--gpu-id", "-1",
            "--relative-slice-thickness", f"{width:g}", "--relative-slice-profile-type", kind,
            "--n-patches", str(steps * ECLARE_BATCH), "--batch-size", str(ECLARE_BATCH),
        ]  # fmt: skip
        shutil.rmtree(out, ignore_errors=True)  # mrisr skips a study whose output is already there
        rc, wall, rss, cpu = timed(cmd, d / f"{tool}.log", threads)
        sr, extra = None, {}
        if rc == 0:
            img = nib.load(out / lr_path.name.replace(".nii", "_eclare.nii"))
            extra = {
                "eclare_affine_equals_truth": bool(np.allclose(img.affine, affine, atol=1e-3)),
                "eclare_steps": steps,
                "eclare_patches": steps * ECLARE_BATCH,
            }
            try:
                sr = on_truth_grid(np.asarray(img.dataobj, dtype=np.float64), img.affine, affine, truth.shape)
            except RuntimeError as exc:
                print(f"{case.name} {tool}: {exc}")
        record(tool, sr, rc, wall, rss, cpu, **extra)
    return rows


# ---------------------------------------------------------------- report


def table(rows: list[dict[str, object]]) -> str:
    head = (
        "| case | thick → truth | tool | gain over bicubic (dB) | SSIM (bicubic) | wall s (CPU s) | peak RSS (MiB) "
        "| notes |\n"
        "| --- | --- | --- | --- | --- | --- | --- | --- |\n"
    )
    lines = []
    for r in rows:
        gain = f"{r['gain_db']:+.2f}" if "gain_db" in r else f"failed (rc {r['rc']})"
        ssim = f"{r['ssim']:.4f} ({r['bicubic_ssim']:.4f})" if "ssim" in r else "—"
        shapes = "×".join(map(str, r["thick_shape"])) + " → " + "×".join(map(str, r["truth_shape"]))  # type: ignore[arg-type]
        if str(r["tool"]).startswith("mrisr"):
            note = f"{r.get('output_from')}; adapt {r.get('adapt_steps')} steps, {r.get('adapt_seconds') or 0:.1f} s"
        else:
            note = f"{r.get('eclare_patches')} patches ({r.get('eclare_steps')} step(s) of {ECLARE_BATCH})"
        note += f"; load {r['load_after']:.1f}"
        lines.append(
            f"| {r['case']} | {shapes} | {r['tool']} | {gain} | {ssim} | "
            f"{r['seconds']:.1f} ({r.get('cpu_seconds', 0):.1f}) | "
            f"{r['peak_rss_mib']:.0f} | {note} |"
        )
    return head + "\n".join(lines) + "\n"


def machine() -> dict[str, object]:
    cpu = next(
        (ln.split(":", 1)[1].strip() for ln in Path("/proc/cpuinfo").read_text().splitlines() if "model name" in ln),
        "?",
    )
    return {"cpu": cpu, "cores": os.cpu_count(), "python": platform.python_version(), "torch": torch.__version__}


def study_time(work: Path) -> None:
    """mrisr's default thick-slice run of a 256×256×40 study at ×3 (all of the CPU's threads)."""
    t1, s = _source_t1(work / "src")
    vol = np.zeros((256, 256, 120), dtype=np.float32)
    x0, y0 = (256 - t1.shape[0]) // 2, (256 - t1.shape[1]) // 2
    z0 = (t1.shape[2] - 120) // 2
    vol[x0 : x0 + t1.shape[0], y0 : y0 + t1.shape[1]] = t1[:, :, z0 : z0 + 120][:256, :256]
    lr = degrade(vol.astype(np.uint8), 3, "box")
    d = work / "study-256x256x40"
    d.mkdir(parents=True, exist_ok=True)
    path = d / "t1_256x256x40.nii.gz"
    nib.save(nib.Nifti1Image(lr, coarse_affine(np.diag([s, s, s, 1.0]), 3)), path)
    threads = os.cpu_count() or 1
    cmd = [*mrisr_command(), "enhance", str(path), "--out", str(d / "out"), "--scale", "1,1,3", "--device", "cpu"]
    cmd += ["--no-figure", "--overwrite"]
    rc, wall, rss, cpu = timed(cmd, d / "mrisr.log", threads)
    side = json.loads(sorted((d / "out").rglob("*_sr.json"))[0].read_text()) if rc == 0 else {}
    ad = side.get("adapt") or {}
    print(
        f"256×256×40 ×3 ({threads} threads): rc {rc}, process {wall:.1f} s ({cpu:.1f} s CPU), "
        f"study {side.get('seconds')} s, "
        f"peak RSS {rss:.0f} MiB, adaptation {ad.get('steps')} steps in {ad.get('seconds')} s "
        f"(used {ad.get('used')}: {ad.get('reason')}), output from {side.get('output_from')}, "
        f"load {os.getloadavg()[0]:.1f}"
    )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("outdir", type=Path)
    ap.add_argument("--cases", nargs="+", default=["small"], help="small | all | case names (epi-x3-box …)")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--eclare-venv", type=Path, default=None)
    ap.add_argument("--eclare-long", default=None, help="CASE:STEPS, one longer ECLARE run")
    ap.add_argument("--skip-eclare", action="store_true")
    ap.add_argument("--study-time", action="store_true", help="only time the 256×256×40 ×3 study")
    a = ap.parse_args()
    a.outdir.mkdir(parents=True, exist_ok=True)
    if a.study_time:
        study_time(a.outdir)
        return
    by_name = {c.name: c for c in ALL_CASES}
    if a.cases == ["small"]:
        cases = SMALL_CASES
    elif a.cases == ["all"]:
        cases = ALL_CASES
    else:
        cases = [by_name[n] for n in a.cases]
    eclare = None if a.skip_eclare else ensure_eclare(a.eclare_venv or a.outdir / "eclare-venv")
    long_case, long_steps = [*a.eclare_long.split(":"), ""][:2] if a.eclare_long else ("", "0")
    vols = truths(a.outdir / "src")
    results = a.outdir / "results.json"
    rows: list[dict[str, object]] = json.loads(results.read_text())["rows"] if results.is_file() else []
    for case in cases:
        truth, affine = vols[case.source]
        steps = [1] + ([int(long_steps)] if case.name == long_case else [])
        rows = [r for r in rows if r["case"] != case.name]
        rows += run_case(case, truth, affine, a.outdir / "cases", a.threads, eclare, steps)
        doc = {"machine": machine(), "command": " ".join(sys.argv), "eclare": ECLARE_VERSION, "rows": rows}
        results.write_text(json.dumps(doc, indent=1, default=float))
        (a.outdir / "results.md").write_text(table(rows))
    print(table(rows))


if __name__ == "__main__":
    main()
