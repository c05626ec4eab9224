"""The asymmetric 3D U-Net of the paper: a 3D ResNet encoder, decoder stopping at stride 2.

Encoder: a stem of three 3x3x3 convolutions (the first with stride 2) in place of
ResNet's 7x7x7, a max-pool, then four stages of basic residual blocks (ResNet-34
depths 3-4-6-3 in the ``paper`` preset) at strides 4, 8, 16, 32. Decoder: upsample,
concatenate the skip, convolve, back up to stride 2 (the stem's output), where a 1x1x1
head gives one sigmoid heatmap per class.
"""

from __future__ import annotations

import copy
import math
from dataclasses import asdict, dataclass, field
from typing import TypeVar

import torch
from torch import nn
from torch.nn.utils.fusion import fuse_conv_bn_eval

#: Input sides must be multiples of this (the deepest stage is at stride 32).
SIZE_MULTIPLE = 32

NETWORK_PRESETS: dict[str, dict] = {
    # ResNet-34 depths and (halved) widths, in 3D: for GPUs.
    "paper": dict(stem_channels=(32, 32, 64), encoder_channels=(64, 128, 256, 512),
                  encoder_depths=(3, 4, 6, 3), decoder_channels=(256, 128, 64, 32)),
    # Few channels at fine strides, where 3D convolutions cost most: for CPUs.
    "light": dict(stem_channels=(8, 16, 16), encoder_channels=(24, 48, 96, 128),
                  encoder_depths=(1, 2, 2, 1), decoder_channels=(96, 48, 24, 16)),
    # light's stem and decoder, a wider, deeper encoder (where channels are cheap): for CPU
    # runs of thousands of steps. czii-20A, 2000 supervised steps: CZII 0.837 / 0.826
    # against light's 0.803 / 0.781 (seeds 2-3) at 1.2-1.5x light's step time; light at 3000
    # steps, about the same time, 0.794 (seed 2). benchmarks/results, session 13.
    "medium": dict(stem_channels=(8, 16, 16), encoder_channels=(32, 64, 128, 192),
                   encoder_depths=(2, 2, 2, 2), decoder_channels=(128, 64, 32, 16)),
    # For tests: tiny and quick.
    "tiny": dict(stem_channels=(4, 8, 8), encoder_channels=(8, 16, 16, 16),
                 encoder_depths=(1, 1, 1, 1), decoder_channels=(16, 16, 8, 8)),
}


@dataclass
class ModelConfig:
    """Everything needed to rebuild the network; stored as JSON beside the weights."""

    n_classes: int
    preset: str = "light"
    stem_channels: tuple[int, ...] = field(default_factory=tuple)
    encoder_channels: tuple[int, ...] = field(default_factory=tuple)
    encoder_depths: tuple[int, ...] = field(default_factory=tuple)
    decoder_channels: tuple[int, ...] = field(default_factory=tuple)
    output_stride: int = 2

    def __post_init__(self) -> None:
        if self.preset not in NETWORK_PRESETS and not self.stem_channels:
            raise ValueError(f"unknown model preset {self.preset!r}; "
                             f"choose {', '.join(NETWORK_PRESETS)}")
        defaults = NETWORK_PRESETS.get(self.preset, {})
        for name, value in defaults.items():
            if not getattr(self, name):
                setattr(self, name, value)
        for name in ("stem_channels", "encoder_channels", "encoder_depths", "decoder_channels"):
            setattr(self, name, tuple(int(v) for v in getattr(self, name)))
        if len(self.stem_channels) != 3:
            raise ValueError("stem_channels needs three widths (three 3x3x3 convolutions)")
        if len(self.encoder_channels) != 4 or len(self.encoder_depths) != 4:
            raise ValueError("the encoder has four stages: four widths and four depths")
        if len(self.decoder_channels) != 4:
            raise ValueError("the decoder has four stages (stride 32 up to 2): four widths")
        if self.output_stride != 2:
            raise ValueError("only output stride 2 is implemented (the paper's choice)")

    def to_dict(self) -> dict:
        return asdict(self)


def conv_bn_relu(cin: int, cout: int, stride: int = 1) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv3d(cin, cout, 3, stride=stride, padding=1, bias=False),
        nn.BatchNorm3d(cout),
        nn.ReLU(inplace=True),
    )


class BasicBlock(nn.Module):
    """ResNet basic block in 3D; a strided 1x1x1 projection when the shape changes."""

    def __init__(self, cin: int, cout: int, stride: int = 1) -> None:
        super().__init__()
        self.conv1 = conv_bn_relu(cin, cout, stride)
        self.conv2 = nn.Sequential(nn.Conv3d(cout, cout, 3, padding=1, bias=False),
                                   nn.BatchNorm3d(cout))
        self.shortcut = nn.Identity() if stride == 1 and cin == cout else nn.Sequential(
            nn.Conv3d(cin, cout, 1, stride=stride, bias=False), nn.BatchNorm3d(cout))
        self.relu = nn.ReLU(inplace=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.relu(self.conv2(self.conv1(x)) + self.shortcut(x))


class DecoderBlock(nn.Module):
    """Upsample 2x, concatenate the skip connection, two 3x3x3 convolutions."""

    def __init__(self, cin: int, cskip: int, cout: int) -> None:
        super().__init__()
        self.up = nn.Upsample(scale_factor=2, mode="nearest")
        self.conv = nn.Sequential(conv_bn_relu(cin + cskip, cout), conv_bn_relu(cout, cout))

    def forward(self, x: torch.Tensor, skip: torch.Tensor) -> torch.Tensor:
        return self.conv(torch.cat([self.up(x), skip], dim=1))


class AsymmetricUNet3D(nn.Module):
    """Input (B, 1, D, H, W), sides multiples of 32; output (B, C, D/2, H/2, W/2) in [0, 1]."""

    def __init__(self, config: ModelConfig) -> None:
        super().__init__()
        self.config = config
        s0, s1, s2 = config.stem_channels
        self.stem = nn.Sequential(conv_bn_relu(1, s0, stride=2), conv_bn_relu(s0, s1),
                                  conv_bn_relu(s1, s2))
        self.pool = nn.MaxPool3d(3, stride=2, padding=1)
        stages, cin = [], s2
        for i, (cout, depth) in enumerate(zip(config.encoder_channels, config.encoder_depths)):
            blocks = [BasicBlock(cin, cout, stride=1 if i == 0 else 2)]
            blocks += [BasicBlock(cout, cout) for _ in range(depth - 1)]
            stages.append(nn.Sequential(*blocks))
            cin = cout
        self.stages = nn.ModuleList(stages)
        skips = [*config.encoder_channels[:3][::-1], s2]  # strides 16, 8, 4, 2
        decoders = []
        for cskip, cout in zip(skips, config.decoder_channels):
            decoders.append(DecoderBlock(cin, cskip, cout))
            cin = cout
        self.decoders = nn.ModuleList(decoders)
        self.head = nn.Conv3d(cin, config.n_classes, 1)
        # Start near the background level so early training is not swamped by false peaks.
        assert self.head.bias is not None  # Conv3d has a bias by default
        nn.init.constant_(self.head.bias, -math.log(99.0))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.sigmoid(self.logits(x))

    def logits(self, x: torch.Tensor) -> torch.Tensor:
        """Pre-sigmoid output (for losses or blending that want it)."""
        stem = self.stem(x)
        features = [stem]
        y = self.pool(stem)
        for stage in self.stages:
            y = stage(y)
            features.append(y)
        skips = features[-2::-1]  # stride 16, 8, 4, 2
        y = features[-1]
        for decoder, skip in zip(self.decoders, skips):
            y = decoder(y, skip)
        if y.dtype == torch.float32:
            return self.head(y)
        # Under bf16 autocast the cheap 1x1x1 head runs in float32: bfloat16 logits and
        # sigmoids have 2**-8 steps, which flatten peak tops into tied plateaus.
        with torch.autocast(y.device.type, enabled=False):
            return self.head(y.float())


def build_model(config: ModelConfig) -> AsymmetricUNet3D:
    """The network for a config (weights initialised; load a checkpoint for trained ones)."""
    return AsymmetricUNet3D(config)


def count_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


ModuleT = TypeVar("ModuleT", bound=nn.Module)


def channels_last(model: ModuleT) -> ModuleT:
    """``model`` with its weights in the channels-last layout (in place): oneDNN's preferred
    layout on CPUs and the tensor cores', markedly faster for training steps and picking.
    Every model the trainer computes with gets it, so that a resumed run computes exactly
    as an unbroken one (the layout changes the convolutions' rounding)."""
    # Module.to takes memory_format; torch's stubs omit it
    return model.to(memory_format=torch.channels_last_3d)  # type: ignore[call-overload]


def fold_batch_norms(model: ModuleT) -> ModuleT:
    """An inference copy of ``model`` in eval mode with every batch norm folded into the
    convolution before it (the same function: BN in eval mode is a per-channel affine map).

    One pass fewer over every activation; on a 2-core CPU the light network's sliding window
    runs about 13 % faster. The copy leaves the caller's model (and its training) untouched;
    a model without batch norms is itself the answer (put in eval mode).
    """
    if not any(isinstance(m, nn.BatchNorm3d) for m in model.modules()):
        return model.eval()
    folded = copy.deepcopy(model).eval()
    for module in folded.modules():
        if not isinstance(module, nn.Sequential):
            continue
        for i in range(len(module) - 1):
            conv, norm = module[i], module[i + 1]
            if isinstance(conv, nn.Conv3d) and isinstance(norm, nn.BatchNorm3d):
                module[i] = fuse_conv_bn_eval(conv, norm)
                module[i + 1] = nn.Identity()
    return folded
