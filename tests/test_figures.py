"""Tests of mrisr.display (radiological orientation) and mrisr.figures (comparison figure, mosaic)."""

from __future__ import annotations

import numpy as np
import pytest

from mrisr.display import Display, busiest_window, main_plane, nice_length, plane_image, plane_letters
from mrisr.figures import FigureData, compare_figure, mosaic_figure
from tests.conftest import GRIDS, THREE_D_GRIDS

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
RAS = np.diag([1.2, 1.0, 2.0, 1.0])


def _world(affine: np.ndarray, shape: tuple[int, ...]) -> np.ndarray:
    idx = np.stack(np.meshgrid(*[np.arange(n) for n in shape[:3]], indexing="ij"), axis=-1).reshape(-1, 3)
    return (idx @ affine[:3, :3].T + affine[:3, 3]).reshape(*shape[:3], 3)


def _marker_volume(affine: np.ndarray, shape: tuple[int, ...]) -> tuple[np.ndarray, tuple[int, ...]]:
    """Zeros with one bright voxel at the corner furthest to patient Left, Anterior and Superior."""
    xyz = _world(affine, shape)
    score = -xyz[..., 0] + xyz[..., 1] + xyz[..., 2]  # RAS: left is -x, anterior +y, superior +z
    where = np.unravel_index(int(np.argmax(score)), shape[:3])
    vol = np.zeros(shape[:3], dtype=np.float32)
    vol[where] = 100.0
    return vol, tuple(int(w) for w in where)


@pytest.mark.parametrize("grid", [*THREE_D_GRIDS, "ras"])
def test_marker_lands_radiologically(grid: str) -> None:
    shape, affine = ((6, 5, 4), RAS) if grid == "ras" else GRIDS[grid]
    vol, vox = _marker_volume(affine, shape)
    disp = Display.of(affine, shape)
    ras = disp.turn(vol)
    pos = np.unravel_index(int(np.argmax(ras)), ras.shape)
    # the turned array runs towards R, A, S: the left-anterior-superior corner is (0, max, max)
    assert pos == (0, ras.shape[1] - 1, ras.shape[2] - 1)
    for plane, index, want in (
        ("axial", pos[2], (0, -1)),  # anterior at the top, patient left on the image right
        ("coronal", pos[1], (0, -1)),  # superior at the top, patient left on the image right
        ("sagittal", pos[0], (0, 0)),  # superior at the top, anterior on the left
    ):
        img = plane_image(ras, plane, index)
        r, c = np.unravel_index(int(np.argmax(img)), img.shape)
        assert (r, c - img.shape[1] if want[1] < 0 else c) == want, plane
    # the voxel index shown in a label is the voxel's own index along the matched voxel axis
    for ras_axis in range(3):
        assert disp.vox_index(ras_axis, pos[ras_axis]) == vox[disp.vox_axis(ras_axis)]


def test_control_raw_voxel_order_is_not_radiological() -> None:
    # The old display (raw (i, j) with origin="lower") puts an LPS study's anterior at the bottom.
    shape, affine = GRIDS["lps"]
    vol, (_, _, k) = _marker_volume(affine, shape)
    raw = vol[:, :, k].T[::-1]  # what imshow(origin="lower") showed, top row first
    r, _ = np.unravel_index(int(np.argmax(raw)), raw.shape)
    assert r == raw.shape[0] - 1  # at the bottom: wrong, which the test above would catch


def test_letters_and_spacing() -> None:
    assert plane_letters("axial") == {"left": "R", "right": "L", "top": "A", "bottom": "P"}
    assert plane_letters("coronal") == {"left": "R", "right": "L", "top": "S", "bottom": "I"}
    assert plane_letters("sagittal") == {"left": "A", "right": "P", "top": "S", "bottom": "I"}
    shape, affine = GRIDS["sagittal"]  # i: P→A 1.2 mm, j: S→I 1.3 mm, k: L→R 4 mm
    disp = Display.of(affine, shape)
    assert disp.shape == (4, 6, 5)
    assert disp.spacing == pytest.approx((4.0, 1.2, 1.3))
    assert not disp.oblique and Display.of(*GRIDS["oblique"][::-1]).oblique
    coarse = disp.coarse((2, 1, 4))  # voxel order: i (A) ×2, k (R) ×4
    assert coarse.shape == (1, 3, 5) and coarse.spacing == pytest.approx((16.0, 2.4, 1.3))


def test_main_plane_contains_the_refined_axis() -> None:
    disp = Display.of(RAS, (8, 8, 8))
    assert main_plane(disp, (4, 4, 1)) == "axial"
    assert main_plane(disp, (1, 1, 3)) == "coronal"  # thick axial slices: a plane through S
    assert main_plane(disp, (1, 5, 1)) == "axial"  # refined A lies in the axial plane
    sag = Display.of(GRIDS["sagittal"][1], (6, 5, 4))  # voxel k runs along R
    assert main_plane(sag, (1, 1, 4)) == "axial"  # thick sagittal slices: R in the plane
    assert main_plane(sag, (4, 4, 1)) == "sagittal"


def test_busiest_window_and_bar() -> None:
    d = np.zeros((20, 30))
    d[12:15, 2:5] = 1.0
    assert busiest_window(d, (3, 3)) == (12, 2)
    assert busiest_window(np.ones((4, 4)), (8, 8)) == (0, 0)
    # the strongest difference on the edge of the head loses to one inside it
    head = np.zeros((20, 30), dtype=bool)
    head[5:20, 8:30] = True
    d[10:13, 20:23] = 0.5
    assert busiest_window(d, (3, 3), inside=head) == (10, 20)
    assert busiest_window(d, (3, 3), inside=np.zeros_like(head)) == (12, 2)  # nothing inside: all compete
    assert nice_length(100.0) == 20.0 and nice_length(12.0) == 2.0 and nice_length(260.0) == 50.0


def _study(seed: int = 0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    ref = rng.random((24, 20, 8)).astype(np.float32)
    ref[6:18, 5:15] += 2.0
    lr = ref.reshape(6, 4, 5, 4, 8).mean(axis=(1, 3))
    return ref, lr, np.diag([-1.0, -1.0, 2.0, 1.0])


def test_compare_figure_with_reference(tmp_path) -> None:
    import matplotlib.image as mpimg

    ref, lr, affine = _study()
    data = FigureData(sr=ref + 0.05, affine=affine, factors=(4, 4, 1), lowres=lr, bicubic=ref + 0.3, reference=ref,
                      residual=lr * 0.01, uncertainty=np.abs(ref) * 0.01, sr_label="ESPCN")  # fmt: skip
    p = compare_figure(tmp_path / "f.png", data, metrics={"psnr_sr": 30.0}, title="f")
    img = mpimg.imread(p)
    assert img.shape[1] >= 1300 and img.shape[0] >= 1000  # legible when shown at ~1000 px
    assert float(img[..., :3].std()) > 0.05
    assert not list(tmp_path.glob(".*"))
    with pytest.raises(ValueError, match="one grid"):
        compare_figure(tmp_path / "g.png", FigureData(sr=ref, affine=affine, factors=(4, 4, 1), reference=ref[:8]),
                       title="g")  # fmt: skip
    assert not (tmp_path / "g.png").exists()


def test_bicubic_plane_equals_the_whole_volume_interpolation(tmp_path) -> None:
    from mrisr.degradation import upsample_volume
    from mrisr.figures import _bicubic_plane

    rng = np.random.default_rng(3)
    lr = rng.random((5, 6, 9)).astype(np.float32)
    full = np.clip(upsample_volume(lr, (5, 6, 27)), lr.min(), lr.max())
    for k in (0, 1, 13, 26):
        np.testing.assert_allclose(_bicubic_plane(lr, (1, 1, 3), 2, k)[:, :, 0], full[:, :, k], atol=1e-6)


def test_thick_slice_figure_and_mosaic(tmp_path) -> None:
    rng = np.random.default_rng(2)
    lr = rng.random((12, 10, 4)).astype(np.float32)
    sr = np.repeat(lr, 3, axis=2)
    data = FigureData(sr=sr, affine=np.diag([1.0, 1.0, 1.0, 1.0]), factors=(1, 1, 3), lowres=lr,
                      sr_label="bicubic (fallback)", frames=3)  # fmt: skip
    assert compare_figure(tmp_path / "t.png", data, title="t").read_bytes().startswith(PNG_MAGIC)
    assert mosaic_figure(tmp_path / "m.png", sr, np.eye(4), title="m").read_bytes().startswith(PNG_MAGIC)
