"""Tissue contrast from probability maps (``mrisr train --tissue-map --tissue-contrast``)."""

from __future__ import annotations

from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from mrisr.checkpoint import load_checkpoint
from mrisr.cli import main
from mrisr.discovery import Study
from mrisr.fsutil import sha256_file
from mrisr.models import SRCNNConfig
from mrisr.training import PatchDataset, TrainConfig
from mrisr.training.data import (
    SLAB_GAP,
    LoadedStudy,
    Piece,
    Split,
    TissueMaps,
    TrainingData,
    build_pieces,
    load_tissue_maps,
    tissue_contrast,
)

TINY_RUN = [
    "--scale", "2", "--epochs", "1", "--steps-per-epoch", "2", "--batch-size", "2", "--patch-size", "8",
    "--kernel-sizes", "3,1,3", "--filters", "4,4", "--device", "cpu", "--val-fraction", "0",
]  # fmt: skip
AFFINE = np.array([[1.0, 0, 0, -8], [0, 1.2, 0, -9], [0, 0, 2, 3], [0, 0, 0, 1]])


def test_tissues_mix_linearly_and_the_rest_follows_one_curve() -> None:
    hr = np.tile(np.linspace(0.0, 1.2, 16, dtype=np.float32), (6, 1))
    gm, wm = np.zeros_like(hr), np.zeros_like(hr)
    gm[0], wm[1] = 1.0, 1.0  # pure grey, pure white matter: one value each, whatever the template says
    gm[2], wm[2] = 0.5, 0.5  # shared half and half
    gm[3] = 0.25  # a quarter grey matter, the rest CSF/skull
    mask = np.ones_like(hr, dtype=bool)
    mask[5, :4] = False
    for seed in range(4):
        out = tissue_contrast(hr, mask, np.stack([gm, wm]), np.random.default_rng(seed))
        assert out.dtype == np.float32 and out.shape == hr.shape
        g, w = out[0, 5], out[1, 5]
        np.testing.assert_allclose(out[0], g, rtol=1e-6)
        np.testing.assert_allclose(out[1], w, rtol=1e-6)
        np.testing.assert_allclose(out[2], (g + w) / 2, rtol=1e-5)
        # Where no tissue lies, the template's value goes through one curve: row 4 equals row 5 there.
        np.testing.assert_array_equal(out[4, 4:], out[5, 4:])
        np.testing.assert_allclose(out[3], 0.25 * g + 0.75 * out[4], rtol=1e-5)
        np.testing.assert_array_equal(out[5, :4], hr[5, :4])  # outside the head: left alone
        assert out[mask].min() >= 0.05 - 1e-6 and out[mask].max() <= 1.0 + 1e-6
    draws = {
        round(float(tissue_contrast(hr, mask, np.stack([gm, wm]), np.random.default_rng(s))[0, 0]), 6) for s in range(4)
    }
    assert len(draws) == 4  # each patch draws its own grey-matter value


@pytest.mark.parametrize(("axis", "zoom", "side"), [(0, 1.0, 12), (1, 1.5, 12), (2, 1.0, 5), (2, 1.5, 5)])
def test_patches_cut_the_maps_where_they_cut_the_image(axis: int, zoom: float, side: int) -> None:
    """The maps follow the patch through the slice, the crop, the padding and the shrinking: a map
    equal to the image gives back the image patch."""
    rng = np.random.default_rng(axis)
    vol = rng.uniform(0.2, 1.0, (side, 14, 10)).astype(np.float32)
    cfg = TrainConfig(scale=2, patch_size=8, model=SRCNNConfig(residual=True))
    ds = PatchDataset([Piece(vol, (axis,), 0.1, np.stack([vol, 1 - vol]))], cfg, 1)
    for seed in range(5):
        patch, _, tissue = ds._crop(np.random.default_rng(seed), zoom)
        assert tissue is not None and tissue.shape == (2, 8, 8) and patch.shape == (8, 8)
        np.testing.assert_allclose(tissue[0], patch, atol=1e-6)
        np.testing.assert_allclose(tissue[1], 1 - patch, atol=1e-5)


def _save(arr: np.ndarray, path: Path, affine: np.ndarray = AFFINE) -> Path:
    nib.save(nib.Nifti1Image(arr, affine), path)
    return path


def test_maps_are_read_as_probabilities_on_one_grid(tmp_path: Path) -> None:
    p = np.linspace(0, 1, 4 * 5 * 3).reshape(4, 5, 3)
    eight_bit = _save(np.round(p * 255).astype(np.uint8), tmp_path / "gm.nii.gz")
    plain = _save(p.astype(np.float32), tmp_path / "wm.nii.gz")
    maps = load_tissue_maps([eight_bit, plain])
    assert maps.maps.shape == (2, 4, 5, 3) and maps.maps.dtype == np.float32
    np.testing.assert_allclose(maps.maps[0], p, atol=0.5 / 255)  # 8-bit 0-255 read as 0-1
    np.testing.assert_allclose(maps.affine, AFFINE)
    assert [r["file"] for r in maps.records] == ["gm.nii.gz", "wm.nii.gz"]
    percent = _save(np.round(p * 100).astype(np.uint8), tmp_path / "percent.nii.gz")
    with pytest.raises(ValueError, match=r"percent\.nii\.gz: .* spans 0 to 100 \(percentages\?"):
        load_tissue_maps([percent])  # 0-100 is not guessed to be 0-255
    scaled = nib.Nifti1Image(np.round(p * 255).astype(np.uint8), AFFINE)
    scaled.header.set_slope_inter(1 / 255, 0)  # SPM-style: the scaling makes them 0-1 already
    nib.save(scaled, tmp_path / "scaled.nii.gz")
    np.testing.assert_allclose(load_tissue_maps([tmp_path / "scaled.nii.gz"]).maps[0], p, atol=0.5 / 255)
    bad = {
        "range.nii.gz": (p * 3.0, AFFINE, "probabilities 0-1"),
        "grid.nii.gz": (p, AFFINE @ np.diag([1, 1, 1.5, 1]), "not on the grid of gm.nii.gz"),
        "shape.nii.gz": (p[:3], AFFINE, "not on the grid of gm.nii.gz"),
        "time.nii.gz": (np.stack([p, p], axis=-1), AFFINE, "2 frames"),
    }
    for name, (arr, aff, why) in bad.items():
        path = _save(arr.astype(np.float32), tmp_path / name, aff)
        with pytest.raises(ValueError, match=why) as err:
            load_tissue_maps([eight_bit, path])
        assert name in str(err.value)


def _phantom(seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return (rng.uniform(100, 400, (16, 16, 8)) * (np.arange(16)[:, None, None] > 2)).astype(np.int16)


def test_cli_trains_with_maps_on_the_studies_grid_and_records_them(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], caplog: pytest.LogCaptureFixture
) -> None:
    data = tmp_path / "data"
    data.mkdir()
    _save(_phantom(0), data / "sub0.nii.gz")
    _save(_phantom(1), data / "other_grid.nii.gz", AFFINE @ np.diag([2.0, 2, 2, 1]))
    gm = _save(np.full((16, 16, 8), 0.6, np.float32), data / "gm.nii.gz")  # beside the studies: not one of them
    out = tmp_path / "run"
    args = ["train", str(data), "--out", str(out), *TINY_RUN, "--tissue-contrast", "1", "--tissue-map", str(gm)]
    assert main(args) == 0
    meta = load_checkpoint(out / "last.pt").meta
    assert [d["id"] for d in meta["training_data"]] == ["other_grid", "sub0"]
    assert meta["tissue_maps"] == [{"file": "gm.nii.gz", "sha256": sha256_file(gm)}]
    assert meta["train_config"]["tissue_contrast"] == 1.0
    assert "other_grid: not on the tissue maps' grid" in caplog.text
    # The same maps resume (nothing left to do); other maps are another run.
    assert main([*args, "--resume"]) == 0
    _save(np.full((16, 16, 8), 0.4, np.float32), gm)
    assert main([*args, "--resume"]) == 2
    assert "tissue maps differ" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("extra", "why"),
    [
        (["--tissue-contrast", "0.5"], "needs tissue probability maps"),
        (["--tissue-map", "MAP"], "would go unused"),
        (["--tissue-contrast", "0.5", "--tissue-map", "FAR"], "lie on the grid of no training study"),
        (["--tissue-contrast", "0.5", "--tissue-map", "MISSING"], "missing.nii.gz"),
    ],
)
def test_cli_tissue_map_errors_are_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], extra: list[str], why: str
) -> None:
    data = tmp_path / "data"
    data.mkdir()
    _save(_phantom(0), data / "sub0.nii.gz")
    paths = {
        "MAP": _save(np.full((16, 16, 8), 0.5, np.float32), tmp_path / "map.nii.gz"),
        "FAR": _save(np.full((16, 16, 8), 0.5, np.float32), tmp_path / "far.nii.gz", AFFINE @ np.diag([1, 1, 1.01, 1])),
        "MISSING": tmp_path / "missing.nii.gz",
    }
    args = [str(paths.get(a, a)) for a in extra]
    assert main(["train", str(data), "--out", str(tmp_path / "run"), *TINY_RUN, *args]) == 2
    err = capsys.readouterr().err.strip()
    assert why in err and len(err.splitlines()) == 1


def test_pieces_carry_the_maps_cut_as_the_frames_are() -> None:
    """A 2-frame study with a held-out slab: each piece's maps are its own slices of the maps."""
    rng = np.random.default_rng(0)
    frames = tuple(rng.uniform(0, 1, (6, 7, 30)).astype(np.float32) for _ in range(2))
    loaded = TrainingData(
        {"x": LoadedStudy(Study("x", "nifti", Path("x.nii.gz")), frames, (1.0, 1.0, 1.0), {}, "0", AFFINE)}
    )
    maps = np.stack([frames[0], 1 - frames[0]])
    cfg = TrainConfig(scale=2, patch_size=4, model=SRCNNConfig(residual=True))
    pieces, val = build_pieces(loaded, Split(("x",), (), (14, 20)), cfg, TissueMaps(maps, AFFINE, ()))
    assert len(pieces) == 4 and len(val) == 2
    firsts = [pc for pc in pieces if pc.data.shape[2] == 14 - SLAB_GAP]
    lasts = [pc for pc in pieces if pc.data.shape[2] == 30 - 20 - SLAB_GAP]
    assert len(firsts) == len(lasts) == 2
    for pc in firsts:
        assert pc.tissue is not None and pc.tissue.flags.c_contiguous
        np.testing.assert_array_equal(pc.tissue, maps[..., : 14 - SLAB_GAP])
    for pc in lasts:
        assert pc.tissue is not None
        np.testing.assert_array_equal(pc.tissue, maps[..., 20 + SLAB_GAP :])
    np.testing.assert_array_equal(pieces[0].data, frames[0][..., : 14 - SLAB_GAP])  # the first frame's piece
    # A study on another grid gets no maps.
    moved = TissueMaps(maps, AFFINE @ np.diag([1, 1, 1.01, 1]), ())
    assert all(pc.tissue is None for pc in build_pieces(loaded, Split(("x",), ()), cfg, moved)[0])


def test_a_patch_with_one_tissue_everywhere_is_flat_inside_the_head() -> None:
    """With ``tissue_contrast`` 1 every patch is re-synthesised: one map of probability 1 gives one
    drawn value over the whole head, whatever the template's texture; without maps nothing changes."""
    rng = np.random.default_rng(2)
    vol = np.zeros((20, 20, 20), np.float32)
    vol[2:18, 2:18, 2:18] = rng.uniform(0.3, 1.0, (16, 16, 16))
    ones = np.ones((1, *vol.shape), np.float32)
    cfg = TrainConfig(scale=2, patch_size=8, model=SRCNNConfig(residual=True), augment=False, tissue_contrast=1.0)
    ds = PatchDataset([Piece(vol, (2,), 0.1, ones)], cfg, 6)
    plain = PatchDataset([Piece(vol, (2,), 0.1)], cfg, 6)
    values = set()
    for i in range(6):
        t = ds[i]["target"][0].numpy()
        inside = t[t > 0]
        assert inside.size > 0 and np.ptp(inside) < 1e-6  # flat: one tissue, one value
        values.add(round(float(inside[0]), 6))
        assert np.ptp(plain[i]["target"][0].numpy()[t > 0]) > 0.1  # the template's own texture
    assert len(values) == 6
