"""The corpus build (benchmarks/corpus.py) on tiny packages made here: no network, no registry."""

from __future__ import annotations

import csv
import dataclasses
import gzip
import hashlib
import importlib.util
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
from dicom_helpers import siemens_mosaic

ROOT = Path(__file__).resolve().parents[1]
_spec = importlib.util.spec_from_file_location("corpus", ROOT / "benchmarks" / "corpus.py")
assert _spec is not None and _spec.loader is not None
corpus = importlib.util.module_from_spec(_spec)
sys.modules["corpus"] = corpus
_spec.loader.exec_module(corpus)

# An oblique, left-handed (LPS-like) grid with anisotropic voxels: a reader or writer that drops a
# rotation, flips an axis or swaps the spacing gives another affine.
_ROT = np.array([[0.0, -1.0, 0.0], [0.8, 0.0, -0.6], [0.6, 0.0, 0.8]])
AFFINE = np.eye(4)
AFFINE[:3, :3] = _ROT @ np.diag([0.9, 1.1, 2.5])
AFFINE[:3, 3] = [12.5, -40.0, 7.25]


def _nifti_bytes(data: np.ndarray, affine: np.ndarray) -> bytes:
    img = nib.Nifti1Image(data, affine)
    img.header.set_qform(affine, code=1)
    img.header.set_sform(affine, code=1)
    return gzip.compress(img.to_bytes(), mtime=0)


def _scan() -> np.ndarray:
    return np.random.default_rng(7).integers(-300, 3000, (9, 7, 5), dtype=np.int16)


def _wheel(downloads: Path, member: str, payload: bytes, *, licence: str = "MIT") -> Path:
    """``fakepkg-1.0`` as ``pip download`` leaves it: a wheel with METADATA and a LICENSE."""
    downloads.mkdir(parents=True, exist_ok=True)
    whl = downloads / "fakepkg-1.0-py3-none-any.whl"
    with zipfile.ZipFile(whl, "w") as zf:
        zf.writestr(member, payload)
        meta = f"Metadata-Version: 2.4\nName: fakepkg\nVersion: 1.0\nLicense-Expression: {licence}\n"
        zf.writestr("fakepkg-1.0.dist-info/METADATA", meta)
        zf.writestr("fakepkg-1.0.dist-info/licenses/LICENSE", "Copyright 2026 Fake Authors. Keep this line.\n")
    return whl


def _source(member: str, payload: bytes, **kw: str) -> corpus.Source:
    fields = {
        "registry": "pypi",
        "package": "fakepkg",
        "version": "1.0",
        "member": member,
        "sha256": hashlib.sha256(payload).hexdigest(),
        "name": "fake_t1",
        "role": "train",
        "subject": "fake subject",
        "contrast": "T1",
    }
    fields.update(kw)
    return corpus.Source(**fields)


def _no_download(downloads: Path, registry: str, package: str, version: str) -> Path:
    """The fetch step without a registry: the package must already be in ``downloads``."""
    found = corpus.package_file(downloads, registry, package, version)
    assert found is not None, f"the test would have downloaded {package} {version}"
    return found


def _rows(out: Path) -> list[dict[str, str]]:
    with open(out / "SOURCES.tsv", newline="") as fh:
        return list(csv.DictReader(fh, delimiter="\t"))


def test_wheel_scan_converted_with_values_geometry_and_row(tmp_path: Path) -> None:
    data, member = _scan(), "fakepkg/tests/data/scan.nii.gz"
    payload = _nifti_bytes(data, AFFINE)
    out = tmp_path / "corpus"
    _wheel(out / "downloads", member, payload)
    corpus.build(out, [_source(member, payload)], fetcher=_no_download)

    img = nib.load(out / "train" / "fake_t1.nii.gz")
    assert img.get_data_dtype() == np.int16
    np.testing.assert_array_equal(np.asanyarray(img.dataobj), data)
    np.testing.assert_allclose(img.affine, AFFINE, atol=1e-5)

    (row,) = _rows(out)
    assert list(row) == list(corpus.COLUMNS)
    assert row["sha256"] == hashlib.sha256(payload).hexdigest()
    assert (row["registry"], row["package"], row["version"], row["path"]) == ("pypi", "fakepkg", "1.0", member)
    assert (row["shape"], row["spacing"]) == ("9x7x5", "0.9x1.1x2.5")
    assert (row["licence"], row["file"], row["role"]) == ("MIT", "train/fake_t1.nii.gz", "train")
    assert row["notice"] == "NOTICES/fakepkg-1.0.txt"
    assert "Keep this line." in (out / "NOTICES" / "fakepkg-1.0.txt").read_text()


def test_rebuild_downloads_nothing_and_rewrites_identical_files(tmp_path: Path, monkeypatch) -> None:
    member = "fakepkg/data/scan.nii.gz"
    payload = _nifti_bytes(_scan(), AFFINE)
    out = tmp_path / "corpus"
    whl = _wheel(out / "downloads", member, payload)
    src = _source(member, payload)
    corpus.build(out, [src])  # the real fetch step: it finds the wheel and runs no client

    def files() -> dict[str, bytes]:
        return {str(p.relative_to(out)): p.read_bytes() for p in sorted(out.rglob("*")) if p.is_file()}

    first = files()

    def no_client(cmd: list[str], cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
        raise AssertionError(f"ran {cmd}")

    monkeypatch.setattr(corpus, "_run", no_client)
    corpus.build(out, [src])
    assert files() == first
    assert corpus.fetch(out / "downloads", "pypi", "fakepkg", "1.0") == whl


def test_pinned_hash_mismatch_stops_the_build(tmp_path: Path) -> None:
    member = "fakepkg/data/scan.nii.gz"
    payload = _nifti_bytes(_scan(), AFFINE)
    out = tmp_path / "corpus"
    _wheel(out / "downloads", member, payload)
    with pytest.raises(corpus.CorpusError, match="pinned 0000"):
        corpus.build(out, [_source(member, payload, sha256="0" * 64)], fetcher=_no_download)
    assert not (out / "train").exists() and not (out / "SOURCES.tsv").exists()


def test_one_subject_never_on_both_sides(tmp_path: Path) -> None:
    member = "fakepkg/data/scan.nii.gz"
    payload = _nifti_bytes(_scan(), AFFINE)
    a, b = _source(member, payload), _source(member, payload, name="fake_t1_val", role="val")
    with pytest.raises(corpus.CorpusError, match="both train and val"):
        corpus.build(tmp_path, [a, b], fetcher=_no_download)
    # The control: the same subject on one side only builds.
    _wheel(tmp_path / "downloads", member, payload)
    rows = corpus.build(tmp_path, [a, dataclasses.replace(b, role="train")], fetcher=_no_download)
    assert [r["file"] for r in rows] == ["train/fake_t1.nii.gz", "train/fake_t1_val.nii.gz"]


def test_unreachable_registry_is_one_error_line(tmp_path: Path, monkeypatch, capsys) -> None:
    def refused(cmd: list[str], cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
        err = (
            "WARNING: Retrying after connection broken by 'NewConnectionError(\"Failed to establish a new "
            "connection: [Errno 111] Connection refused\")': /simple/nilearn/\n"
            "ERROR: No matching distribution found for nilearn==0.14.1\n"
        )
        return subprocess.CompletedProcess(cmd, 1, "", err)

    monkeypatch.setattr(corpus, "_run", refused)
    assert corpus.main([str(tmp_path / "c")]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "Traceback" not in err
    assert err.startswith("error: pip download nilearn==0.14.1 failed: registry unreachable (NewConnectionError)")


@pytest.mark.skipif(shutil.which("dpkg-deb") is None, reason="dpkg-deb builds the fake Debian package")
def test_deb_scan_and_licence_from_its_copyright_stanza(tmp_path: Path) -> None:
    data = _scan()
    payload = _nifti_bytes(data, AFFINE)
    root = tmp_path / "pkgroot"
    (root / "DEBIAN").mkdir(parents=True)
    (root / "DEBIAN" / "control").write_text(
        "Package: fakedeb\nVersion: 2.0-1\nArchitecture: all\nMaintainer: t <t@example.org>\nDescription: test\n"
    )
    scan = root / "usr/share/fakedeb/data/special.nii.gz"
    scan.parent.mkdir(parents=True)
    scan.write_bytes(payload)
    doc = root / "usr/share/doc/fakedeb"
    doc.mkdir(parents=True)
    (doc / "copyright").write_text(
        "Format: https://www.debian.org/doc/packaging-manuals/copyright-format/1.0/\n\n"
        "Files: *\nCopyright: 2020 Someone\nLicense: BSD-3-clause\n\n"
        "Files: debian/tests/data/special.nii.gz\nCopyright: 2019 Scanner Lab\nLicense: BSD-2-Clause\n"
    )
    downloads = tmp_path / "corpus" / "downloads"
    downloads.mkdir(parents=True)
    subprocess.run(
        ["dpkg-deb", "--root-owner-group", "--build", str(root), str(downloads / "fakedeb_2.0-1_all.deb")],
        check=True,
        capture_output=True,
    )
    member = "usr/share/fakedeb/data/special.nii.gz"
    src = _source(member, payload, registry="debian", package="fakedeb", version="2.0-1", role="val")
    (row,) = corpus.build(tmp_path / "corpus", [src], fetcher=_no_download)
    np.testing.assert_array_equal(np.asanyarray(nib.load(tmp_path / "corpus/val/fake_t1.nii.gz").dataobj), data)
    assert row["licence"] == "BSD-2-Clause (its own Files: stanza)"
    assert "2019 Scanner Lab" in (tmp_path / "corpus/NOTICES/fakedeb-2.0-1.txt").read_text()


# A Siemens mosaic on an oblique grid: four 6×5 tiles in a 2×2 mosaic (tests/dicom_helpers.py).
ROW = np.array([0.8, 0.6, 0.0])
COL = np.cross(np.array([0.0, 0.6, 0.8]), ROW) / np.linalg.norm(np.cross(np.array([0.0, 0.6, 0.8]), ROW))
FIRST = np.array([-30.0, 12.0, 40.0])  # LPS centre of tile 0's first pixel
PIXEL = (0.7, 0.9)  # mm between rows, between columns
GAP = 2.5


def test_mosaic_unpacked_into_its_slices_at_their_positions(tmp_path: Path) -> None:
    """A mosaic inside a package becomes the 3D volume it holds (not one 12×10 tiled slice), each
    tile's pixel at its own world position (the positions written into the mosaic's header)."""
    tiles = (np.random.default_rng(3).permutation(4 * 6 * 5) + 100).reshape(4, 6, 5).astype(np.uint16)
    src_file = siemens_mosaic(
        tmp_path / "m" / "mosaic.dcm",
        tiles,
        row_dir=ROW,
        col_dir=COL,
        first_position=FIRST,
        pixel_spacing=PIXEL,
        slice_spacing=GAP,
    )
    payload = src_file.read_bytes()
    member = "fakepkg/tests/data/mosaic.dcm"
    out = tmp_path / "corpus"
    _wheel(out / "downloads", member, payload, licence="Apache-2.0")
    (row,) = corpus.build(out, [_source(member, payload, name="fake_epi", role="val")], fetcher=_no_download)

    img = nib.load(out / "val" / "fake_epi.nii.gz")
    data = np.asanyarray(img.dataobj)
    assert data.shape == (5, 6, 4)  # (columns, rows, slices) of a tile
    normal = np.cross(ROW, COL)
    inv = np.linalg.inv(img.affine)
    for t, r, c in [(0, 0, 0), (3, 5, 4), (1, 2, 3), (2, 0, 4)]:
        lps = FIRST + c * PIXEL[1] * ROW + r * PIXEL[0] * COL + t * GAP * normal
        ras = np.array([-lps[0], -lps[1], lps[2], 1.0])
        ijk = inv @ ras
        np.testing.assert_allclose(ijk[:3], np.rint(ijk[:3]), atol=1e-4)
        assert data[tuple(np.rint(ijk[:3]).astype(int))] == tiles[t, r, c], (t, r, c)
    assert (row["shape"], row["spacing"], row["file"]) == ("5x6x4", "0.9x0.7x2.5", "val/fake_epi.nii.gz")
    assert (row["sha256"], row["licence"]) == (hashlib.sha256(payload).hexdigest(), "Apache-2.0")


def test_a_scan_the_reader_refuses_stops_the_build(tmp_path: Path) -> None:
    """A mosaic without the CSA header that says how to unpack it: mrisr refuses it, and so does the build
    (one line naming the reason), rather than writing the tiled image as a slice."""
    tiles = np.arange(4 * 6 * 5, dtype=np.uint16).reshape(4, 6, 5)
    kw = {"row_dir": ROW, "col_dir": COL, "first_position": FIRST, "pixel_spacing": PIXEL, "slice_spacing": GAP}
    payload = siemens_mosaic(tmp_path / "m" / "bad.dcm", tiles, csa=False, **kw).read_bytes()
    member = "fakepkg/tests/data/bad.dcm"
    out = tmp_path / "corpus"
    _wheel(out / "downloads", member, payload)
    with pytest.raises(corpus.CorpusError, match="mosaic") as info:
        corpus.build(out, [_source(member, payload, name="bad")], fetcher=_no_download)
    assert "\n" not in str(info.value)
    assert not (out / "train" / "bad.nii.gz").exists()


def test_shipped_weights_carry_the_notices_of_their_corpus_sources() -> None:
    """Every shipped checkpoint trained on corpus scans names, in ``meta["licence_notice"]``, the
    notice of each package its training files came from (and the MNI one), and ships those files."""
    from mrisr.checkpoint import WEIGHTS_DIR, load_checkpoint

    by_file = {f"{s.name}.nii.gz": s for s in corpus.SOURCES}
    checked = 0
    for path in sorted(WEIGHTS_DIR.glob("*.pt")):
        meta = load_checkpoint(path).meta
        listed = meta.get("licence_notice")
        names = [listed] if isinstance(listed, str) else list(listed or [])
        for name in names:
            assert (WEIGHTS_DIR / name).is_file(), f"{path.name}: {name} is not shipped"
        for record in meta.get("training_data") or []:
            src = by_file.get(record["file"])
            if src is not None:
                need = {f"NOTICE-{src.package}-{src.version}.txt"} | ({src.notice} if src.notice else set())
            elif record["file"] == "mni_icbm152_t1_tal_nlin_sym_09a_converted.nii.gz":  # as nilearn ships it
                need = {"NOTICE-mni-icbm152.txt"}
            else:
                raise AssertionError(f"{path.name}: trained on {record['file']}, of no known source")
            assert need <= set(names), f"{path.name} trained on {record['file']} but lists {names}"
            checked += 1
    assert checked > 0
