"""Study discovery: sorted, deterministic, safe ids, links and depth handled."""

from __future__ import annotations

import json
import os
import re
from collections.abc import Callable
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from mrisr.discovery import find_studies, sanitize_id, short_hash
from mrisr.errors import UnreadableFileError

GridMaker = Callable[[str], tuple[np.ndarray, np.ndarray]]
SAFE = re.compile(r"^[A-Za-z0-9+_-][A-Za-z0-9._+-]*$")


@pytest.fixture
def nifti_tree(grid_volume: GridMaker, write_nifti_file: Callable[..., Path], tmp_path: Path) -> Path:
    """tree/{b.nii.gz, a.nii, sub/c.nii.gz, .hidden.nii.gz, notes.txt}"""
    data, affine = grid_volume("lps")
    for name in ("tree/b.nii.gz", "tree/a.nii", "tree/sub/c.nii.gz", "tree/.hidden.nii.gz"):
        write_nifti_file(name, data, affine)
    (tmp_path / "tree" / "notes.txt").write_text("not an image\n")
    return tmp_path / "tree"


def test_finds_nifti_sorted_by_id_and_skips_hidden_and_non_images(nifti_tree: Path) -> None:
    studies = find_studies([nifti_tree])
    assert [s.id for s in studies] == ["a", "b", "c"]
    assert [s.path for s in studies] == [nifti_tree / "a.nii", nifti_tree / "b.nii.gz", nifti_tree / "sub" / "c.nii.gz"]
    assert all(s.fmt == "nifti" and s.files == (s.path,) for s in studies)
    assert find_studies([nifti_tree]) == studies  # deterministic
    assert studies[2].load().shape3 == (6, 5, 4)


def test_one_path_or_str_is_one_input(nifti_tree: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(nifti_tree)
    by_str = find_studies("b.nii.gz")  # not the characters "b", ".", "n", ...
    assert [(s.id, s.path) for s in by_str] == [("b", Path("b.nii.gz"))]
    assert find_studies(Path("b.nii.gz")) == by_str == find_studies(["b.nii.gz"])
    assert [s.id for s in find_studies(str(nifti_tree))] == ["a", "b", "c"]  # one folder given as a str


def test_same_file_given_twice_is_one_study(nifti_tree: Path) -> None:
    studies = find_studies([nifti_tree / "a.nii", nifti_tree / "a.nii", nifti_tree])
    assert [s.id for s in studies] == ["a", "b", "c"]


def test_clashing_stems_get_their_relative_path(
    grid_volume: GridMaker, write_nifti_file: Callable[..., Path], tmp_path: Path
) -> None:
    data, affine = grid_volume("lps")
    write_nifti_file("root/site1/t1.nii.gz", data, affine)
    write_nifti_file("root/site2/t1.nii", data, affine)
    assert [s.id for s in find_studies([tmp_path / "root"])] == ["site1_t1", "site2_t1"]


def test_identical_names_under_two_inputs_get_unique_ids(
    grid_volume: GridMaker, write_nifti_file: Callable[..., Path], tmp_path: Path
) -> None:
    data, affine = grid_volume("lps")
    write_nifti_file("x/t1.nii.gz", data, affine)
    write_nifti_file("y/t1.nii.gz", data, affine)
    ids = [s.id for s in find_studies([tmp_path / "x", tmp_path / "y"])]
    assert len(ids) == 2 and len(set(ids)) == 2
    assert all(i.startswith("t1") for i in ids)


def test_symlink_loop_terminates(nifti_tree: Path) -> None:
    os.symlink(nifti_tree, nifti_tree / "sub" / "loop")
    os.symlink("self", nifti_tree / "self")  # a link to itself
    studies = find_studies([nifti_tree])
    assert [s.id for s in studies if s.problem is None] == ["a", "b", "c"]
    assert [(s.id, s.problem) for s in studies if s.problem] == [
        ("self", "broken symbolic link (its target does not exist or loops)")
    ]


def test_links_to_folders_outside_the_root_are_not_followed(nifti_tree: Path, tmp_path: Path) -> None:
    """Links to files are followed (a slice may be a link into a store); links to folders outside
    the root are not searched; a broken link is reported, not dropped."""
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "other.nii").write_bytes((nifti_tree / "a.nii").read_bytes())
    (outside / "linked.nii").write_bytes((nifti_tree / "a.nii").read_bytes())
    os.symlink(outside, nifti_tree / "out_dir")
    os.symlink(outside / "linked.nii", nifti_tree / "file_link.nii")
    os.symlink(tmp_path / "missing", nifti_tree / "broken.nii")
    studies = find_studies([nifti_tree])
    assert [s.id for s in studies if s.problem is None] == ["a", "b", "c", "file_link"]
    assert [s.id for s in studies if s.problem] == ["broken.nii"]


def test_max_depth(nifti_tree: Path) -> None:
    assert [s.id for s in find_studies([nifti_tree], max_depth=0)] == ["a", "b"]
    assert [s.id for s in find_studies([nifti_tree], max_depth=1)] == ["a", "b", "c"]


def test_missing_input_raises_file_not_found(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="nope"):
        find_studies([tmp_path / "nope"])


def test_hostile_file_names_give_safe_ids(
    grid_volume: GridMaker, write_nifti_file: Callable[..., Path], tmp_path: Path
) -> None:
    data, affine = grid_volume("lps")
    write_nifti_file("in/x..\\..;rm -rf ~.nii.gz", data, affine)
    write_nifti_file("in/ü ber ..nii.gz", data, affine)
    ids = [s.id for s in find_studies([tmp_path / "in"])]
    assert len(ids) == 2
    for i in ids:
        assert SAFE.match(i), i
        assert ".." not in i and "/" not in i and "\\" not in i


def test_dicom_and_nifti_together(
    grid_volume: GridMaker,
    write_nifti_file: Callable[..., Path],
    axial_series: Callable[..., list[Path]],
    tmp_path: Path,
) -> None:
    data, affine = grid_volume("lps")
    write_nifti_file("mix/t1.nii.gz", data, affine)
    files = axial_series("mix/series01", [0.0, 1.0, 2.0])
    (tmp_path / "mix" / "series01" / "readme.txt").write_text("x\n")
    studies = find_studies([tmp_path / "mix"])
    assert [s.fmt for s in studies] == ["dicom", "nifti"]
    dcm = studies[0]
    assert dcm.path == tmp_path / "mix" / "series01"
    assert dcm.files == tuple(files)
    assert dcm.description == "T2 axial"
    assert re.fullmatch(r"series01_7_T2_axial_[0-9a-f]{8}", dcm.id)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("sub-01_T1w", "sub-01_T1w"),
        ("../../etc/passwd", "etc_passwd"),
        ("a/b\\c", "a_b_c"),
        ("...", "study"),
        ("x..y", "x_y"),
        ("", "study"),
    ],
)
def test_sanitize_id(text: str, expected: str) -> None:
    assert sanitize_id(text) == expected


def test_sanitize_id_length_and_short_hash() -> None:
    assert len(sanitize_id("a" * 300)) == 96
    assert short_hash("1.2.3") == short_hash("1.2.3") != short_hash("1.2.4")
    assert re.fullmatch(r"[0-9a-f]{8}", short_hash("1.2.3"))


# ------------------------------------------------------------------------------------------------
# what discovery cannot use is reported, not dropped
# ------------------------------------------------------------------------------------------------


def test_a_broken_slice_fails_its_series_naming_the_file(
    axial_series: Callable[..., list[Path]], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A truncated slice at the end of a series would leave a complete-looking shorter series: the
    series fails instead, naming the file; a separate good series still runs."""
    from mrisr.cli import main

    files = axial_series("data/ser", [0.0, 2.0, 4.0, 6.0])
    files[-1].write_bytes(files[-1].read_bytes()[:400])
    axial_series("data/other", [0.0, 2.0])
    out = tmp_path / "out"
    assert main(["enhance", str(tmp_path / "data"), "--out", str(out), "--no-figure"]) == 1
    err = [ln for ln in capsys.readouterr().err.splitlines() if ln.startswith("error:")]
    assert len(err) == 1 and "IM003.dcm" in err[0] and "may be one of its slices" in err[0], err
    sidecars = {p.name: json.loads(p.read_text())["status"] for p in out.glob("*.json")}
    assert sorted(sidecars.values()) == ["done", "failed"], sidecars
    assert len([p for p in out.iterdir() if p.is_dir()]) == 1  # only the good series was written


def test_unreadable_files_and_folders_are_problem_studies(
    axial_series: Callable[..., list[Path]], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import builtins

    import mrisr.io.dicom.common as common
    import mrisr.io.walk as walk

    files = axial_series("data/ser", [0.0, 2.0, 4.0])
    locked_dir = tmp_path / "data" / "locked"
    locked_dir.mkdir()
    real_open, real_scandir = builtins.open, os.scandir

    def no_read(path: object, *a: object, **k: object) -> object:
        if Path(str(path)) == files[1]:
            raise PermissionError(13, "Permission denied")
        return real_open(path, *a, **k)  # type: ignore[call-overload]

    def no_list(path: object) -> object:
        if Path(str(path)) == locked_dir:
            raise PermissionError(13, "Permission denied")
        return real_scandir(path)  # type: ignore[arg-type]

    monkeypatch.setattr(common, "open", no_read, raising=False)
    monkeypatch.setattr(walk.os, "scandir", no_list)
    studies = {s.id: s for s in find_studies([tmp_path / "data"])}
    problems = {s.id: s.problem for s in studies.values() if s.problem}
    assert len(studies) == 2 and len(problems) == 2, studies
    series = next(s for s in studies.values() if s.files)
    assert "IM001.dcm" in str(series.problem) and "Permission denied" in str(series.problem)
    assert problems["locked"] == "cannot list the folder (Permission denied)"
    with pytest.raises(UnreadableFileError, match="cannot list"):
        studies["locked"].load()


def test_output_folder_inside_the_input_is_not_searched(tmp_path: Path) -> None:
    from mrisr.cli import main

    data = tmp_path / "data"
    data.mkdir()
    nib.save(nib.Nifti1Image(np.arange(32, dtype=np.int16).reshape(4, 4, 2), np.eye(4)), data / "tiny.nii.gz")
    args = ["enhance", str(data), "--out", str(data / "out"), "--no-figure"]
    assert main(args) == 0
    first = (data / "out" / "tiny_sr.json").read_text()
    assert main(args) == 0  # the output is not taken for a new input: nothing new, nothing redone
    assert not list(data.rglob("*_sr_sr*")) and (data / "out" / "tiny_sr.nii.gz").exists()
    assert (data / "out" / "tiny_sr.json").read_text() == first


def test_a_broken_slice_that_names_its_series_fails_that_series_only(
    axial_series: Callable[..., list[Path]], tmp_path: Path
) -> None:
    """Two series in one folder; a slice of the second is cut before its pixel data but still names
    its series: only that series fails. A 0-byte ``.dcm`` beside a series fails it (it may be a slice)."""
    axial_series("mixed", [0.0, 2.0, 4.0], names=["a0.dcm", "a1.dcm", "a2.dcm"])
    t1 = axial_series("mixed", [0.0, 2.0, 4.0], names=["b0.dcm", "b1.dcm", "b2.dcm"])
    raw = t1[2].read_bytes()
    t1[2].write_bytes(raw[: raw.rindex(b"\xe0\x7f\x10\x00")])  # up to the PixelData tag
    studies = find_studies([tmp_path / "mixed"])
    assert len(studies) == 2
    by_first = {s.files[0].name: s for s in studies}
    assert by_first["a0.dcm"].problem is None
    assert by_first["b0.dcm"].problem is not None and "one of its slices, b2.dcm" in by_first["b0.dcm"].problem
    assert "without pixel data" in by_first["b0.dcm"].problem
    t1[2].write_bytes(raw)
    (tmp_path / "mixed" / "c.dcm").touch()
    problems = [s.problem for s in find_studies([tmp_path / "mixed"])]
    assert len(problems) == 2 and all(p and "c.dcm" in p and "named like a DICOM file" in p for p in problems)


def test_fallback_ids_do_not_depend_on_how_the_input_is_spelled(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    data = tmp_path / "in"
    data.mkdir()
    for name in ("a b.nii.gz", "a_b.nii.gz"):  # the same sanitised stem: a hash tells them apart
        nib.save(nib.Nifti1Image(np.ones((4, 4, 2), np.int16), np.eye(4)), str(data / name))
    monkeypatch.chdir(tmp_path)
    relative = sorted(s.id for s in find_studies([Path("in")]))
    absolute = sorted(s.id for s in find_studies([data]))
    assert relative == absolute and len(set(relative)) == 2 and any(i != "a_b" for i in relative)
