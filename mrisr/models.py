"""Network architectures: pure ``nn.Module`` classes that know nothing of files, devices or training.

Two kinds: ``SRCNN`` works on the target grid (its input is the bicubic-upsampled slice), ``ESPCN``
works on the low-resolution grid and upsamples at its end (sub-pixel convolution), about 16× fewer
operations at ×4. Each network class has ``input_space``: ``"hr"`` or ``"lr"``.

``SRCNN`` is the network of Dong et al. (2014): feature extraction (``f1×f1``, ``n1`` filters), non-linear
mapping (``f2×f2``, ``n2`` filters), reconstruction (``f3×f3``, one channel), ReLU after the first two
layers. It works on a slice already upsampled to the target grid by bicubic interpolation. Padding
keeps the size (``replicate`` by default, so borders do not darken). With ``residual=True`` the network
predicts the detail that bicubic interpolation misses and adds it to its input.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn


def _check_layers(kernel_sizes: tuple[int, ...], filters: tuple[int, ...], padding_mode: str) -> None:
    """Validate a plain convolution stack's description."""
    if len(kernel_sizes) != len(filters) + 1:
        raise ValueError("kernel_sizes needs one entry more than filters")
    if any(k < 1 or k % 2 == 0 for k in kernel_sizes):
        raise ValueError(f"kernel sizes must be odd and positive, got {kernel_sizes}")
    if padding_mode not in ("replicate", "reflect", "zeros"):
        raise ValueError(f"unknown padding mode {padding_mode!r}")


def _conv_stack(kernel_sizes: tuple[int, ...], channels: list[int], padding_mode: str) -> nn.Sequential:
    """Size-keeping convolutions ``channels[i] -> channels[i+1]`` with ReLU between them.

    Hidden layers are Kaiming-normal; the last layer starts small, so a residual network starts near
    its bicubic input.
    """
    layers: list[nn.Module] = []
    for i, (k, cin, cout) in enumerate(zip(kernel_sizes, channels[:-1], channels[1:], strict=True)):
        layers.append(nn.Conv2d(cin, cout, k, padding=k // 2, padding_mode=padding_mode))  # type: ignore[arg-type]
        if i < len(kernel_sizes) - 1:
            layers.append(nn.ReLU(inplace=True))
    body = nn.Sequential(*layers)
    convs = [m for m in body if isinstance(m, nn.Conv2d)]
    for conv in convs:
        if conv is convs[-1]:
            nn.init.normal_(conv.weight, std=1e-3)
        else:
            nn.init.kaiming_normal_(conv.weight, nonlinearity="relu")
        if conv.bias is not None:
            nn.init.zeros_(conv.bias)
    return body


def _coarse_grid_dict(cfg: ESPCNConfig | AxisESPCNConfig) -> dict[str, Any]:
    """The plain-JSON form of a coarse-grid network's configuration (tuples as lists)."""
    d = asdict(cfg)
    for key in ("factors", "kernel_sizes", "filters"):
        d[key] = list(d[key])
    return d


def _coarse_grid_fields(d: dict[str, Any]) -> dict[str, Any]:
    """The constructor arguments of a coarse-grid configuration read back from its JSON form."""
    f = [int(v) for v in d["factors"]]
    return {
        "factors": (f[0], f[1]),
        "kernel_sizes": tuple(int(k) for k in d["kernel_sizes"]),
        "filters": tuple(int(v) for v in d["filters"]),
        "residual": bool(d.get("residual", True)),
        "padding_mode": str(d.get("padding_mode", "replicate")),
    }


@dataclass(frozen=True)
class SRCNNConfig:
    """Architecture of an SRCNN.

    Attributes:
        kernel_sizes: Kernel size of each layer, e.g. ``(9, 1, 5)`` (the seed) or ``(9, 5, 5)``.
        filters: Filters of the hidden layers, e.g. ``(64, 32)``; the last layer has one channel.
        residual: Predict the residual over the (bicubic) input instead of the image.
        padding_mode: ``"replicate"``, ``"reflect"`` or ``"zeros"``.
    """

    kernel_sizes: tuple[int, ...] = (9, 1, 5)
    filters: tuple[int, ...] = (64, 32)
    residual: bool = False
    padding_mode: str = "replicate"
    name: str = field(default="srcnn")

    def __post_init__(self) -> None:
        _check_layers(self.kernel_sizes, self.filters, self.padding_mode)

    def to_dict(self) -> dict[str, Any]:
        """Plain-JSON form (lists, not tuples), as stored in checkpoints and sidecars."""
        d = asdict(self)
        d["kernel_sizes"] = list(self.kernel_sizes)
        d["filters"] = list(self.filters)
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> SRCNNConfig:
        """Inverse of :meth:`to_dict`."""
        return cls(
            kernel_sizes=tuple(int(k) for k in d["kernel_sizes"]),
            filters=tuple(int(f) for f in d["filters"]),
            residual=bool(d.get("residual", False)),
            padding_mode=str(d.get("padding_mode", "replicate")),
        )

    @property
    def receptive_radius(self) -> int:
        """Pixels each output depends on, on each side (the halo needed for exact tiling)."""
        return sum(k // 2 for k in self.kernel_sizes)

    @property
    def macs_per_pixel(self) -> int:
        """Multiply-accumulates per output pixel."""
        chans = [1, *self.filters, 1]
        return sum(k * k * cin * cout for k, cin, cout in zip(self.kernel_sizes, chans[:-1], chans[1:], strict=True))


class SRCNN(nn.Module):
    """SRCNN on single-channel images, input and output of shape ``(N, 1, H, W)``."""

    input_space = "hr"

    def __init__(self, config: SRCNNConfig | None = None) -> None:
        super().__init__()
        self.config = config or SRCNNConfig()
        self.body = _conv_stack(self.config.kernel_sizes, [1, *self.config.filters, 1], self.config.padding_mode)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.body(x)
        return x + y if self.config.residual else y


@dataclass(frozen=True)
class ESPCNConfig:
    """Architecture of an ESPCN-style network working on the low-resolution grid.

    Attributes:
        factors: Upsampling factors ``(f_rows, f_cols)`` of the 2D slices it is trained for.
        kernel_sizes: Kernel size of each layer, e.g. ``(5, 3, 3)``.
        filters: Filters of the hidden layers; the last layer has ``f_rows * f_cols`` channels,
            rearranged into the fine grid (voxel-centre convention: low-res voxel ``i`` becomes fine
            voxels ``f*i ... f*i + f - 1``).
        residual: Add the bicubic upsampling of the input (the network predicts the detail).
        padding_mode: ``"replicate"``, ``"reflect"`` or ``"zeros"``.
    """

    factors: tuple[int, int] = (4, 4)
    kernel_sizes: tuple[int, ...] = (5, 3, 3)
    filters: tuple[int, ...] = (64, 32)
    residual: bool = True
    padding_mode: str = "replicate"
    name: str = field(default="espcn")

    def __post_init__(self) -> None:
        _check_layers(self.kernel_sizes, self.filters, self.padding_mode)

    def to_dict(self) -> dict[str, Any]:
        """Plain-JSON form, as stored in checkpoints and sidecars."""
        return _coarse_grid_dict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> ESPCNConfig:
        """Inverse of :meth:`to_dict`."""
        return cls(**_coarse_grid_fields(d))

    @property
    def macs_per_pixel(self) -> float:
        """Multiply-accumulates per *output* (fine-grid) pixel."""
        fh, fw = self.factors
        chans = [1, *self.filters, fh * fw]
        per_lr = sum(k * k * a * b for k, a, b in zip(self.kernel_sizes, chans[:-1], chans[1:], strict=True))
        return per_lr / (fh * fw)


class ESPCN(nn.Module):
    """ESPCN-style network: ``(N, 1, h, w)`` low-resolution slices to ``(N, 1, h·f_rows, w·f_cols)``."""

    input_space = "lr"

    def __init__(self, config: ESPCNConfig | None = None) -> None:
        super().__init__()
        self.config = config or ESPCNConfig()
        fh, fw = self.config.factors
        self.body = _conv_stack(self.config.kernel_sizes, [1, *self.config.filters, fh * fw], self.config.padding_mode)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        fh, fw = self.config.factors
        y = self.body(x)
        n, _, h, w = y.shape
        y = y.view(n, fh, fw, h, w).permute(0, 3, 1, 4, 2).reshape(n, 1, h * fh, w * fw)
        if self.config.residual:
            y = y + F.interpolate(x, size=(h * fh, w * fw), mode="bicubic", align_corners=False)
        return y


def build_model_config(arch: dict[str, Any]) -> SRCNNConfig | ESPCNConfig | AxisESPCNConfig:
    """The configuration a stored description (``{"name": "srcnn" | "espcn" | "axis-espcn", ...}``)
    stands for, with the defaults of older records filled in."""
    name = arch.get("name", "srcnn")
    if name == "srcnn":
        return SRCNNConfig.from_dict(arch)
    if name == "espcn":
        return ESPCNConfig.from_dict(arch)
    if name == "axis-espcn":
        return AxisESPCNConfig.from_dict(arch)
    raise ValueError(f"unknown architecture {name!r}")


def build_model(arch: dict[str, Any]) -> nn.Module:
    """Build a network from its stored description (:func:`build_model_config`)."""
    cfg = build_model_config(arch)
    if isinstance(cfg, SRCNNConfig):
        return SRCNN(cfg)
    if isinstance(cfg, ESPCNConfig):
        return ESPCN(cfg)
    return AxisESPCN(cfg)


@dataclass(frozen=True)
class AxisESPCNConfig:
    """Architecture of a one-axis coarse-grid network (thick slices): ESPCN-style, sub-pixel along ONE
    axis of the plane.

    Attributes:
        factors: ``(1, F)`` (the columns refined ×F) or ``(F, 1)`` (the rows; the network transposes
            the slice, refines its columns and transposes back, with the same weights).
        kernel_sizes: Kernel size of each layer.
        filters: Filters of the hidden layers; the last layer has ``F`` channels, laid side by side
            along the refined axis (voxel-centre convention: coarse voxel ``i`` becomes fine voxels
            ``F·i … F·i + F − 1``).
        residual: Add the bicubic upsampling of the input along the refined axis.
        padding_mode: ``"replicate"``, ``"reflect"`` or ``"zeros"``.
    """

    factors: tuple[int, int] = (1, 3)
    kernel_sizes: tuple[int, ...] = (3, 3, 3, 3, 3)
    filters: tuple[int, ...] = (32, 32, 32, 32)
    residual: bool = True
    padding_mode: str = "replicate"
    name: str = field(default="axis-espcn")

    def __post_init__(self) -> None:
        _check_layers(self.kernel_sizes, self.filters, self.padding_mode)
        if min(self.factors) != 1 or max(self.factors) < 2:
            raise ValueError(f"a one-axis network refines exactly one axis, got factors {self.factors}")

    @property
    def factor(self) -> int:
        """The refinement ``F`` of the refined axis."""
        return max(self.factors)

    def to_dict(self) -> dict[str, Any]:
        """Plain-JSON form, as stored in checkpoints and sidecars."""
        return _coarse_grid_dict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> AxisESPCNConfig:
        """Inverse of :meth:`to_dict`."""
        return cls(**_coarse_grid_fields(d))

    @property
    def macs_per_pixel(self) -> float:
        """Multiply-accumulates per *output* (fine-grid) pixel."""
        chans = [1, *self.filters, self.factor]
        per_lr = sum(k * k * a * b for k, a, b in zip(self.kernel_sizes, chans[:-1], chans[1:], strict=True))
        return per_lr / self.factor


class AxisESPCN(nn.Module):
    """One-axis coarse-grid network: ``(N, 1, h, w)`` to ``(N, 1, h, w·F)`` (factors ``(1, F)``) or
    ``(N, 1, h·F, w)`` (factors ``(F, 1)``); :meth:`oriented` gives the other orientation with the
    same weights."""

    input_space = "lr"

    def __init__(self, config: AxisESPCNConfig | None = None) -> None:
        super().__init__()
        self.config = config or AxisESPCNConfig()
        c = self.config
        self.body = _conv_stack(c.kernel_sizes, [1, *c.filters, c.factor], c.padding_mode)

    def oriented(self, factors: tuple[int, int]) -> AxisESPCN:
        """This network (the same parameters, not a copy) refining ``factors`` instead."""
        from dataclasses import replace

        if tuple(factors) == tuple(self.config.factors):
            return self
        if max(factors) != self.config.factor or min(factors) != 1:
            raise ValueError(f"this network refines one axis ×{self.config.factor}, not {tuple(factors)}")
        twin = AxisESPCN.__new__(AxisESPCN)
        nn.Module.__init__(twin)
        twin.config = replace(self.config, factors=(int(factors[0]), int(factors[1])))
        twin.body = self.body  # shared module: the same weights
        twin.train(self.training)
        return twin

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        rows = self.config.factors[0] > 1
        if rows:
            x = x.transpose(-1, -2)
        f = self.config.factor
        y = self.body(x)
        n, _, h, w = y.shape
        y = y.permute(0, 2, 3, 1).reshape(n, 1, h, w * f)
        if self.config.residual:
            y = y + F.interpolate(x, size=(h, w * f), mode="bicubic", align_corners=False)
        return y.transpose(-1, -2) if rows else y
