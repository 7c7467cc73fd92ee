"""Study discovery: sorted, deterministic, safe ids, links and depth handled."""

from __future__ import annotations

import os
import re
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest

from mrisr.discovery import find_studies, sanitize_id, short_hash

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
    assert [s.id for s in find_studies([nifti_tree])] == ["a", "b", "c"]


def test_links_leaving_the_root_are_not_followed(nifti_tree: Path, tmp_path: Path) -> None:
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "secret.nii").write_bytes((nifti_tree / "a.nii").read_bytes())
    os.symlink(outside, nifti_tree / "out_dir")
    os.symlink(outside / "secret.nii", nifti_tree / "secret_link.nii")
    os.symlink(tmp_path / "missing", nifti_tree / "broken.nii")
    assert [s.id for s in find_studies([nifti_tree])] == ["a", "b", "c"]


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
