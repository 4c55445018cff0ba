"""Backbones, the normalisation layer and the classifier that wraps them.

Four encoders, built by name with :func:`build_encoder`:

- ``"resnet18"``: the CIFAR ResNet-18 that SimCLR and RUSH use on 32x32 images (He et al. 2016,
  with the 3x3 stride-1 stem and no max-pool of Chen et al. 2020, SimCLR, Appendix B.9);
- ``"cifar_resnet20"`` and ``"cifar_resnet110"``: the CIFAR ResNets of depth 20 and 110 (He et al.
  2016, Section 4.2) that Cohen, Rosenfeld and Kolter (2019) train their CIFAR-10 base classifiers
  on, without their linear layer; the parameter names are those of Cohen et al.'s checkpoints
  (:mod:`encoders.published` adds the linear layer ``fc`` to load them);
- ``"small_cnn"``: conv 32-64-128 with batch norm and global average pooling, for the 8x8 digits.

A base classifier is ``Normalize -> encoder -> Linear``: normalisation is its first layer (a
registered buffer), so Gaussian noise and attacks live in pixel space [0, 1].

Example:
    >>> model = build_classifier("small_cnn", num_classes=10, input_shape=(1, 8, 8),
    ...                          mean=(0.3,), std=(0.4,))
    >>> model(torch.rand(5, 1, 8, 8)).shape
    torch.Size([5, 10])
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

ARCHITECTURES = ("resnet18", "small_cnn", "cifar_resnet20", "cifar_resnet110")
CIFAR_RESNET_DEPTHS = {"cifar_resnet20": 20, "cifar_resnet110": 110}


class Normalize(nn.Module):
    """Per-channel (x - mean) / std, with mean and std stored as buffers of shape (1, C, 1, 1)."""

    mean: torch.Tensor
    std: torch.Tensor

    def __init__(self, mean: Sequence[float], std: Sequence[float]) -> None:
        super().__init__()
        if len(mean) != len(std) or any(s <= 0 for s in std):
            raise ValueError(
                f"mean and std must have one entry per channel and std > 0, got {mean}, {std}"
            )
        self.register_buffer("mean", torch.tensor(mean, dtype=torch.float32).view(1, -1, 1, 1))
        self.register_buffer("std", torch.tensor(std, dtype=torch.float32).view(1, -1, 1, 1))

    def forward(self, pixels: torch.Tensor) -> torch.Tensor:
        return (pixels - self.mean) / self.std


def _conv_bn_relu(in_channels: int, out_channels: int) -> list[nn.Module]:
    return [
        nn.Conv2d(in_channels, out_channels, 3, padding=1, bias=False),
        nn.BatchNorm2d(out_channels),
        nn.ReLU(inplace=True),
    ]


class SmallCNN(nn.Sequential):
    """Conv 32-64-128 (3x3, batch norm, ReLU; 2x2 max-pool after the first two) and global
    average pooling: (B, C, H, W) -> (B, 128) features. About 93k parameters."""

    feature_dim = 128

    def __init__(self, in_channels: int = 1) -> None:
        super().__init__(
            *_conv_bn_relu(in_channels, 32),
            nn.MaxPool2d(2),
            *_conv_bn_relu(32, 64),
            nn.MaxPool2d(2),
            *_conv_bn_relu(64, 128),
            nn.AdaptiveAvgPool2d(1),
            nn.Flatten(),  # (B, 128, 1, 1) -> (B, 128)
        )


class BasicBlock(nn.Module):
    """The two-convolution residual block of ResNet-18 (He et al. 2016)."""

    def __init__(self, in_channels: int, out_channels: int, stride: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, out_channels, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(out_channels)
        self.conv2 = nn.Conv2d(out_channels, out_channels, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(out_channels)
        self.shortcut = nn.Sequential()
        if stride != 1 or in_channels != out_channels:
            self.shortcut = nn.Sequential(
                nn.Conv2d(in_channels, out_channels, 1, stride, bias=False),
                nn.BatchNorm2d(out_channels),
            )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = torch.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return torch.relu(out + self.shortcut(x))


class CifarResNet18(nn.Module):
    """ResNet-18 with a 3x3 stride-1 stem and no max-pool: (B, C, 32, 32) -> (B, 512) features."""

    feature_dim = 512

    def __init__(self, in_channels: int = 3) -> None:
        super().__init__()
        self.stem = nn.Sequential(*_conv_bn_relu(in_channels, 64))
        stages: list[nn.Module] = []
        channels = 64
        for out_channels, stride in ((64, 1), (128, 2), (256, 2), (512, 2)):
            stages += [
                BasicBlock(channels, out_channels, stride),
                BasicBlock(out_channels, out_channels, 1),
            ]
            channels = out_channels
        self.stages = nn.Sequential(*stages)
        self.pool = nn.Sequential(
            nn.AdaptiveAvgPool2d(1), nn.Flatten()
        )  # (B, 512, h, w) -> (B, 512)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.pool(self.stages(self.stem(x)))


class CifarBasicBlock(nn.Module):
    """Two 3x3 convolutions with batch norm and a shortcut (a 1x1 convolution where the shape
    changes); the names of its parameters are those of Cohen et al.'s checkpoints."""

    def __init__(self, in_channels: int, channels: int, stride: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, channels, 3, stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(channels)
        self.conv2 = nn.Conv2d(channels, channels, 3, 1, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(channels)
        self.downsample: nn.Module | None = None
        if stride != 1 or in_channels != channels:
            self.downsample = nn.Sequential(
                nn.Conv2d(in_channels, channels, 1, stride, bias=False), nn.BatchNorm2d(channels)
            )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = torch.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        shortcut = x if self.downsample is None else self.downsample(x)
        return torch.relu(out + shortcut)


class CifarResNetFeatures(nn.Module):
    """The CIFAR ResNet of depth 6n + 2 (16-32-64 channels, n basic blocks a stage) up to its
    8x8 average pooling: (B, C, 32, 32) -> (B, 64) features. 0.27 M parameters at depth 20,
    1.7 M at depth 110."""

    feature_dim = 64

    def __init__(self, depth: int, in_channels: int = 3) -> None:
        super().__init__()
        if (depth - 2) % 6 != 0:
            raise ValueError(f"depth must be 6n + 2 (20, 32, 44, 56, 110, ...), got {depth}")
        blocks = (depth - 2) // 6
        self.conv1 = nn.Conv2d(in_channels, 16, 3, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(16)
        self.layer1 = self._stage(16, 16, blocks, stride=1)
        self.layer2 = self._stage(16, 32, blocks, stride=2)
        self.layer3 = self._stage(32, 64, blocks, stride=2)
        self.avgpool = nn.AvgPool2d(8)

    @staticmethod
    def _stage(in_channels: int, channels: int, blocks: int, stride: int) -> nn.Sequential:
        rest = [CifarBasicBlock(channels, channels, 1) for _ in range(blocks - 1)]
        return nn.Sequential(CifarBasicBlock(in_channels, channels, stride), *rest)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = torch.relu(self.bn1(self.conv1(x)))  # (B, 16, 32, 32)
        x = self.layer3(self.layer2(self.layer1(x)))  # (B, 64, 8, 8)
        return self.avgpool(x).flatten(1)  # (B, 64, 1, 1) -> (B, 64)


def default_architecture(dataset: str) -> str:
    """small_cnn for the 8x8 digits, the CIFAR ResNet-18 for every other data set."""
    return "small_cnn" if dataset == "digits" else "resnet18"


def feature_dim(encoder: nn.Module) -> int:
    """The width of the (B, D) features an encoder of :func:`build_encoder` returns.

    Raises:
        ValueError: if the encoder does not declare an integer ``feature_dim``.
    """
    dim = getattr(encoder, "feature_dim", None)
    if not isinstance(dim, int):
        raise ValueError(f"encoder must declare an integer feature_dim, got {dim!r}")
    return dim


def build_encoder(architecture: str, in_channels: int) -> nn.Module:
    """The encoder named ``architecture`` (one of :data:`ARCHITECTURES`); it has ``feature_dim``.

    Raises:
        ValueError: if the name is unknown.
    """
    if architecture == "resnet18":
        return CifarResNet18(in_channels)
    if architecture == "small_cnn":
        return SmallCNN(in_channels)
    if architecture in CIFAR_RESNET_DEPTHS:
        return CifarResNetFeatures(CIFAR_RESNET_DEPTHS[architecture], in_channels)
    raise ValueError(f"architecture must be one of {ARCHITECTURES}, got {architecture!r}")


class Classifier(nn.Module):
    """Base classifier: pixels in [0, 1], (B, C, H, W) -> logits (B, K).

    Attributes:
        normalize: the first layer, :class:`Normalize`.
        encoder: the backbone, (B, C, H, W) -> (B, feature_dim).
        head: the linear classifier, (B, feature_dim) -> (B, K).
    """

    def __init__(self, normalize: Normalize, encoder: nn.Module, num_classes: int) -> None:
        super().__init__()
        self.normalize = normalize
        self.encoder = encoder
        self.head = nn.Linear(feature_dim(encoder), num_classes)

    def features(self, pixels: torch.Tensor) -> torch.Tensor:
        """Encoder features (B, feature_dim) of pixels (B, C, H, W) in [0, 1]."""
        return self.encoder(self.normalize(pixels))

    def forward(self, pixels: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(pixels))


def build_classifier(
    architecture: str,
    num_classes: int,
    input_shape: Sequence[int],
    mean: Sequence[float],
    std: Sequence[float],
) -> Classifier:
    """A freshly initialised :class:`Classifier`.

    Args:
        architecture: one of :data:`ARCHITECTURES`.
        num_classes: number of logits K >= 2.
        input_shape: (C, H, W) of the images.
        mean: per-channel pixel mean of the training data.
        std: per-channel pixel standard deviation of the training data, > 0.

    Returns:
        The classifier in training mode on the CPU.

    Raises:
        ValueError: if an argument is out of range.
    """
    if isinstance(num_classes, bool) or not isinstance(num_classes, int) or num_classes < 2:
        raise ValueError(f"num_classes must be an integer >= 2, got {num_classes!r}")
    if len(input_shape) != 3 or len(mean) != input_shape[0]:
        raise ValueError(
            f"input_shape must be (C, H, W) with C == len(mean), got {tuple(input_shape)}"
        )
    encoder = build_encoder(architecture, input_shape[0])
    return Classifier(Normalize(mean, std), encoder, num_classes)
