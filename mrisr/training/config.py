"""Configuration of a training run."""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from typing import Any

from mrisr.degradation import TRAIN_DEGRADATIONS
from mrisr.models import AxisESPCNConfig, ESPCNConfig, SRCNNConfig

LOSSES: tuple[str, ...] = ("mse", "l1", "ssim")


@dataclass(frozen=True)
class TrainConfig:
    """Everything that defines a training run (the data folder and output folder apart).

    Attributes:
        scale: In-plane refinement factor ``s``; the network is trained for scale ``(s, s, 1)``.
        epochs: Epochs of the cosine learning-rate schedule; the run ends after the last one.
        steps_per_epoch: Optimisation steps per epoch (an epoch is a fixed number of random patches,
            ``steps_per_epoch * batch_size`` in all, across all processes).
        max_steps: Stop after this many optimisation steps in total (``None``: no cap). The learning-rate
            schedule still follows ``epochs``, so a run stopped early can be resumed exactly.
        batch_size: Patches per step and process.
        patch_size: Side of the square high-resolution training patch in voxels (rounded down to a
            multiple of ``scale``).
        lr: Peak learning rate of Adam; it decays by a cosine to ``lr * min_lr_ratio``.
        min_lr_ratio: Final learning rate as a fraction of ``lr``.
        val_fraction: Fraction of the studies held out for validation (at least one when there are two
            or more). With one study, a slab of this fraction of its axis-2 slices is held out instead.
        degradation: ``bicubic``, ``box``, ``kspace`` or ``mixed`` (bicubic or box, drawn per patch).
        device: ``auto``, ``cpu``, ``cuda`` or ``cuda:N``.
        seed: Seed of the split, the initial weights and every patch.
        workers: Data-loader worker processes (0: load in the training process).
        model: Network architecture.
        loss: ``mse``, ``l1`` or ``ssim`` (``1 - SSIM``).
        axes: Slice axes to train on; ``None``: all three for near-isotropic volumes, else axis 2.
        invert_prob: Probability that a patch has its tissue contrast inverted inside the head
            (``x -> c - x``, T2-like), which helps the network generalise to T2/DWI/EPI contrasts.
        random_contrast: Probability that a patch's intensities inside the head go through a random
            piecewise-linear curve (7 knots over 0–1.2 of the normalised range, each drawn in
            0.05–1, the largest scaled to 1): a tissue contrast of any order, beyond ``invert_prob``'s
            one inversion. Drawn before the inversion, which it replaces for that patch.
        tissue_contrast: Probability that a patch of a study with tissue probability maps on its grid
            (``mrisr train --tissue-map``) is re-synthesised from them: one random intensity per tissue,
            mixed linearly by the probabilities, the rest through :attr:`random_contrast`'s curve
            (:func:`mrisr.training.augment.tissue_contrast`). Drawn before, and instead of, ``random_contrast``.
        bias_field: Probability that a patch is multiplied by a smooth random gain (a coil's bias
            field, :func:`mrisr.training.augment.random_bias_field`), after its contrast is drawn.
        hr_blur: Probability that a patch is smoothed by a Gaussian of standard deviation drawn in
            0.3–1 voxel before it is degraded: the target is then softer than the template, as the truth
            of an EPI or DWI scan is (its own point-spread function is wide).
        zoom_out: Probability that a patch is cut from a region up to twice as wide and shrunk to the
            patch size (factor drawn in 1–2), so that the anatomy is smaller per voxel, as in a 2 mm EPI or
            a 4 mm scan, than in the 1 mm template.
        augment: Random flips, 90° rotations, gamma, intensity scaling and noise.
        noise_std: Largest standard deviation of the Gaussian noise added to a high-resolution patch
            before degradation, in normalised units (each noisy patch draws its own in 0–``noise_std``).
        noise_prob: Probability that a patch gets that noise.
        val_axis: Slicing axis used to super-resolve the validation volumes (as ``mrisr enhance``).
        through_plane: Train for one axis instead of the plane (thick slices, ``mrisr enhance --scale
            1,1,s``): each patch is degraded by ``s`` along its rows or its columns only (SRCNN only).
    """

    scale: int = 4
    epochs: int = 10
    steps_per_epoch: int = 200
    max_steps: int | None = None
    batch_size: int = 16
    patch_size: int = 64
    lr: float = 1e-3
    min_lr_ratio: float = 0.01
    val_fraction: float = 0.1
    degradation: str = "bicubic"
    device: str = "auto"
    seed: int = 0
    workers: int = 0
    model: SRCNNConfig | ESPCNConfig | AxisESPCNConfig = field(default_factory=lambda: SRCNNConfig(residual=True))
    loss: str = "mse"
    axes: tuple[int, ...] | None = None
    invert_prob: float = 0.5
    random_contrast: float = 0.0
    tissue_contrast: float = 0.0
    bias_field: float = 0.0
    hr_blur: float = 0.0
    zoom_out: float = 0.0
    augment: bool = True
    noise_std: float = 0.02
    noise_prob: float = 0.3
    val_axis: int = 2
    through_plane: bool = False

    def __post_init__(self) -> None:
        for name in (
            "random_contrast",
            "tissue_contrast",
            "bias_field",
            "hr_blur",
            "zoom_out",
            "noise_prob",
            "invert_prob",
        ):
            if not 0.0 <= getattr(self, name) <= 1.0:
                raise ValueError(f"{name} is a probability in [0, 1], got {getattr(self, name)}")
        if not (math.isfinite(self.noise_std) and self.noise_std >= 0):
            raise ValueError(f"noise_std must be a finite number not below 0, got {self.noise_std}")
        if not (math.isfinite(self.lr) and self.lr >= 0):  # inf trains NaN weights into best.pt
            raise ValueError(f"lr must be a finite number not below 0, got {self.lr}")
        if self.scale < 1:
            raise ValueError(f"scale must be positive, got {self.scale}")
        if isinstance(self.model, ESPCNConfig) and tuple(self.model.factors) != (self.scale, self.scale):
            raise ValueError(f"an ESPCN for factors {self.model.factors} cannot train at scale {self.scale}")
        if self.through_plane and isinstance(self.model, ESPCNConfig):
            raise ValueError("through-plane training needs a network on the fine grid (srcnn) or axis-espcn, not espcn")
        if isinstance(self.model, AxisESPCNConfig):
            if not self.through_plane:
                raise ValueError("an axis-espcn refines one axis: it trains --through-plane only")
            if tuple(self.model.factors) != (1, self.scale):
                raise ValueError(f"an axis-espcn for factors {self.model.factors} cannot train at scale {self.scale}")
        if self.degradation not in TRAIN_DEGRADATIONS:
            raise ValueError(f"unknown degradation {self.degradation!r}; choose from {', '.join(TRAIN_DEGRADATIONS)}")
        if self.loss not in LOSSES:
            raise ValueError(f"unknown loss {self.loss!r}; choose from {', '.join(LOSSES)}")
        if self.epochs < 1 or self.steps_per_epoch < 1 or self.batch_size < 1:
            raise ValueError("epochs, steps_per_epoch and batch_size must be positive")
        if self.patch_size < self.scale:
            raise ValueError(f"patch size {self.patch_size} is smaller than the scale {self.scale}")
        if not 0.0 <= self.val_fraction < 1.0:
            raise ValueError(f"val_fraction must be in [0, 1), got {self.val_fraction}")
        if self.axes is not None and (not self.axes or any(a not in (0, 1, 2) for a in self.axes)):
            raise ValueError(f"axes must be a non-empty subset of (0, 1, 2), got {self.axes}")

    @property
    def hr_patch(self) -> int:
        """Patch side actually used: ``patch_size`` rounded down to a multiple of ``scale``."""
        return self.patch_size - self.patch_size % self.scale

    @property
    def factors(self) -> tuple[int, int, int]:
        """The scale the network is trained for: ``(s, s, 1)``, or ``(1, 1, s)`` through-plane."""
        s = self.scale
        return (1, 1, s) if self.through_plane else (s, s, 1)

    @property
    def total_steps(self) -> int:
        """Length of the learning-rate schedule in steps."""
        return self.epochs * self.steps_per_epoch

    def to_dict(self) -> dict[str, Any]:
        """Plain-JSON form (stored in checkpoints)."""
        d = asdict(self)
        d["model"] = self.model.to_dict()
        d["axes"] = None if self.axes is None else list(self.axes)
        return d
