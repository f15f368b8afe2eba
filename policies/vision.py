"""Camera image encoders, one per camera and chosen by name (`ENCODERS`): uint8 images (B, H, W, C) -> features
(B, feature_dim), with random-shift augmentation in training; and the two layers they share with the token policy
(`RandomShift`, `SpatialSoftmax`). Torch alone: torchvision is not a dependency.

| name | network | for |
|---|---|---|
| `cnn` | three strided convolutions (x8 down), flattened into a linear layer | a CPU: the cheapest |
| `keypoints` | a light convolution stem (x4 down), spatial-softmax keypoints, a linear layer | a CPU: where things are |
| `resnet18` | ResNet-18 with GroupNorm (x32 down), spatial-softmax or average-pool head | a GPU: paper-size configs |
"""

from __future__ import annotations

import inspect
import math
from typing import Any, ClassVar

import torch
from torch import nn


class ImageTooSmall(ValueError):
    """An image smaller than an encoder's downsampling reads: `reason` says so, `min_side` is the smallest side it
    takes; the message adds the fix."""

    def __init__(self, reason: str, min_side: int):
        super().__init__(f"{reason}: use larger images or another encoder")
        self.reason, self.min_side = reason, min_side


class RandomShift(nn.Module):
    """Shifts each image (B, H, W, C) by its own random offset of up to `pad` pixels in each direction, as padding
    with the edge pixels and cropping back would (DrQ; robomimic's crop randomiser): what lets a pixel policy
    generalise from few demonstrations. Training mode only: the identity in eval mode, so an exported graph holds no
    random op. Keeps the dtype (uint8 in, uint8 out)."""

    def __init__(self, pad: int):
        super().__init__()
        if pad < 0:
            raise ValueError(f"random shift: pad must be >= 0 pixels, got {pad}")
        self.pad = int(pad)

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        if not self.training or self.pad == 0:
            return image
        b, h, w, c = image.shape
        device = image.device
        offset = torch.randint(-self.pad, self.pad + 1, (2, b, 1), device=device)  # (dy, dx) per image
        # reading past the border clamps to the edge pixel: the replicate padding, without building the padded copy
        rows = (torch.arange(h, device=device) + offset[0]).clamp(0, h - 1)  # (B, H)
        cols = (torch.arange(w, device=device) + offset[1]).clamp(0, w - 1)  # (B, W)
        pixel = (torch.arange(b, device=device)[:, None, None] * h + rows[:, :, None]) * w + cols[:, None, :]
        # one index_select of whole pixels: 3x faster on a CPU than indexing (B, H, W) with three index tensors
        return image.reshape(b * h * w, c).index_select(0, pixel.flatten()).view(b, h, w, c)

    def extra_repr(self) -> str:
        return f"pad={self.pad}"


class SpatialSoftmax(nn.Module):
    """Feature maps (B, C, H, W) -> keypoints (B, K, 2): a 1x1 convolution to K maps (none when K == C), a softmax
    over each map's H x W with a learned scale (an inverse temperature, `scale` at the start), and the expected
    (x, y) under it, from -1 at the left/top pixel centre to 1 at the right/bottom one: where each map fires rather
    than what (robomimic's spatial softmax)."""

    def __init__(self, channels: int, num_keypoints: int, scale: float = 10.0):
        super().__init__()
        self.num_keypoints = int(num_keypoints)
        self.project = nn.Identity() if num_keypoints == channels else nn.Conv2d(channels, num_keypoints, 1)
        # a sharp softmax from the start (the default, 10, suits a fresh unnormalised stem): with its small activations
        # a scale of 1 spreads every keypoint over the whole image, and the gradient that would localise it is tiny
        self.log_scale = nn.Parameter(torch.full((1, num_keypoints, 1), math.log(scale)))

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        x = self.project(features)  # (B, K, H, W)
        h, w = x.shape[-2:]
        attention = (x.flatten(2) * self.log_scale.exp()).softmax(-1)  # (B, K, H*W)
        ys = torch.linspace(-1.0, 1.0, h, device=x.device, dtype=x.dtype)
        xs = torch.linspace(-1.0, 1.0, w, device=x.device, dtype=x.dtype)
        grid = torch.stack([xs.expand(h, w), ys[:, None].expand(h, w)], -1).flatten(0, 1)  # (H*W, 2): (x, y)
        return attention @ grid  # (B, K, 2)


def feature_layer(in_dim: int, feature_dim: int) -> list[nn.Module]:
    """The last layer of every encoder: linear, LayerNorm, ReLU."""
    return [nn.Linear(in_dim, feature_dim), nn.LayerNorm(feature_dim), nn.ReLU()]


class CameraEncoder(nn.Module):
    """What every encoder does: uint8 images (B, H, W, C) -> random shift (training only) -> floats in [-1, 1]
    (B, C, H, W) -> `conv` (feature maps) -> `head` -> (B, feature_dim). A subclass builds the two networks."""

    name: ClassVar[str]
    min_map: ClassVar[int] = 2  # the smallest feature map (side) the head reads: one cell keeps no layout
    conv: nn.Module
    head: nn.Module

    def __init__(self, image_shape: tuple[int, int, int], feature_dim: int, shift: int):
        super().__init__()
        if len(image_shape) != 3:
            raise ValueError(f"{self.name} encoder: image_shape is (height, width, channels), got {tuple(image_shape)}")
        if feature_dim < 1:
            raise ValueError(f"{self.name} encoder: feature_dim must be >= 1, got {feature_dim}")
        self.image_shape = tuple(int(n) for n in image_shape)
        self.feature_dim = int(feature_dim)
        self.shift = RandomShift(shift)

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        x = self.shift(image).permute(0, 3, 1, 2).float() / 127.5 - 1.0  # (B, C, H, W) in [-1, 1]
        return self.head(self.conv(x))

    def feature_map(self) -> torch.Size:
        """The convolutions' output (C', H', W') for one image; ValueError, naming the smallest size the encoder takes,
        when the image is too small for their downsampling."""
        h, w, c = self.image_shape
        out = self._map(c, h, w)
        if out is None or min(out[-2:]) < self.min_map:
            side = next(s for s in range(1, 4097) if self._reads(c, s))
            raise ImageTooSmall(
                f"the {self.name} image encoder takes images of at least {side}x{side} pixels (its downsampling "
                f"leaves too little of a {h}x{w} image)",
                side,
            )
        return out

    def _map(self, channels: int, h: int, w: int) -> torch.Size | None:
        with torch.no_grad():
            try:
                return self.conv(torch.zeros(1, channels, h, w)).shape[1:]
            except RuntimeError:  # a kernel larger than the (padded) input
                return None

    def _reads(self, channels: int, side: int) -> bool:
        out = self._map(channels, side, side)
        return out is not None and min(out[-2:]) >= self.min_map


class CNNEncoder(CameraEncoder):
    """cnn: three strided convolutions (5x5, then 3x3s; x8 down), flattened into the feature layer. The cheapest on a
    CPU; where things are is left to the linear layer to work out."""

    name = "cnn"

    def __init__(
        self,
        image_shape: tuple[int, int, int],
        feature_dim: int,
        shift: int = 4,
        channels: tuple[int, ...] = (32, 64, 64),
    ):
        super().__init__(image_shape, feature_dim, shift)
        layers: list[nn.Module] = []
        in_c = self.image_shape[2]
        for i, out_c in enumerate(channels):
            layers += [nn.Conv2d(in_c, out_c, kernel_size=5 if i == 0 else 3, stride=2, padding=1), nn.ReLU()]
            in_c = out_c
        self.conv = nn.Sequential(*layers)
        # the same parameter names as the CNN of policies/encoders.py before it: its checkpoints load
        self.head = nn.Sequential(nn.Flatten(), *feature_layer(self.feature_map().numel(), feature_dim))


class KeypointEncoder(CameraEncoder):
    """keypoints: a light convolution stem (x4 down, so keypoints land on a fine grid), `num_keypoints` spatial-softmax
    keypoints (x, y), the feature layer. Few parameters; sees where the cube and the gripper are."""

    name = "keypoints"

    def __init__(
        self,
        image_shape: tuple[int, int, int],
        feature_dim: int,
        shift: int = 4,
        channels: tuple[int, int, int] = (32, 32, 32),
        num_keypoints: int = 32,
    ):
        super().__init__(image_shape, feature_dim, shift)
        c0, c1, c2 = channels
        self.conv = nn.Sequential(
            nn.Conv2d(self.image_shape[2], c0, 5, stride=2, padding=2),
            nn.ReLU(),
            nn.Conv2d(c0, c1, 3, stride=2, padding=1),
            nn.ReLU(),
            nn.Conv2d(c1, c2, 3, padding=1),
        )
        self.feature_map()
        self.head = nn.Sequential(
            SpatialSoftmax(c2, num_keypoints), nn.Flatten(), *feature_layer(2 * num_keypoints, feature_dim)
        )


def group_norm(channels: int) -> nn.GroupNorm:
    """GroupNorm of 16 channels per group (diffusion policy's replacement for BatchNorm)."""
    return nn.GroupNorm(max(1, channels // 16), channels)


class BasicBlock(nn.Module):
    """ResNet's basic block with GroupNorm: two 3x3 convolutions plus a shortcut (1x1 when the shape changes)."""

    def __init__(self, in_c: int, out_c: int, stride: int):
        super().__init__()
        self.main = nn.Sequential(
            nn.Conv2d(in_c, out_c, 3, stride=stride, padding=1, bias=False),
            group_norm(out_c),
            nn.ReLU(),
            nn.Conv2d(out_c, out_c, 3, padding=1, bias=False),
            group_norm(out_c),
        )
        self.shortcut = (
            nn.Identity()
            if stride == 1 and in_c == out_c
            else nn.Sequential(nn.Conv2d(in_c, out_c, 1, stride=stride, bias=False), group_norm(out_c))
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.relu(self.main(x) + self.shortcut(x))


RESNET_HEADS = ("softmax", "avgpool")


class ResNet18Encoder(CameraEncoder):
    """resnet18: ResNet-18's layout (7x7 stem and max-pool, BasicBlocks [2, 2, 2, 2] of widths `width` x 1-2-4-8,
    64-128-256-512 by default; x32 down) with GroupNorm for BatchNorm (small batches, EMA weights), then spatial-softmax
    keypoints (robomimic's) or an average pool, and the feature layer. The paper-size encoder, for GPUs."""

    name = "resnet18"

    def __init__(
        self,
        image_shape: tuple[int, int, int],
        feature_dim: int,
        shift: int = 4,
        head: str = "softmax",
        num_keypoints: int = 32,
        width: int = 64,
    ):
        super().__init__(image_shape, feature_dim, shift)
        if head not in RESNET_HEADS:
            raise ValueError(f"resnet18 image encoder: head must be one of {', '.join(RESNET_HEADS)}, got {head!r}")
        widths = [width, 2 * width, 4 * width, 8 * width]
        layers: list[nn.Module] = [
            nn.Conv2d(self.image_shape[2], width, 7, stride=2, padding=3, bias=False),
            group_norm(width),
            nn.ReLU(),
            nn.MaxPool2d(3, stride=2, padding=1),
        ]
        in_c = width
        for i, out_c in enumerate(widths):
            layers += [BasicBlock(in_c, out_c, 1 if i == 0 else 2), BasicBlock(out_c, out_c, 1)]
            in_c = out_c
        self.conv = nn.Sequential(*layers)
        self.feature_map()
        if head == "softmax":
            # GroupNorm keeps the maps near unit scale: a softmax scale of 10 would start saturated (a one-hot that
            # passes no gradient); 3 starts sharp but trainable
            pool: list[nn.Module] = [SpatialSoftmax(in_c, num_keypoints, scale=3.0), nn.Flatten()]
            in_dim = 2 * num_keypoints
        else:
            pool, in_dim = [nn.AdaptiveAvgPool2d(1), nn.Flatten()], in_c
        self.head = nn.Sequential(*pool, *feature_layer(in_dim, feature_dim))


ENCODERS: dict[str, type[CameraEncoder]] = {e.name: e for e in (CNNEncoder, KeypointEncoder, ResNet18Encoder)}


def encoder_options(name: str) -> list[str]:
    """The options the encoder `name` takes besides its image shape and feature size; ValueError naming the choices
    for an unknown name."""
    if name not in ENCODERS:
        raise ValueError(f"unknown image encoder {name!r}; choose one of {', '.join(ENCODERS)}")
    return [p for p in inspect.signature(ENCODERS[name]).parameters if p not in ("image_shape", "feature_dim")]


def make_encoder(name: str, image_shape: tuple[int, int, int], feature_dim: int, **options: Any) -> CameraEncoder:
    """The encoder `name` (a key of ENCODERS) for images of `image_shape` (H, W, C), with its own `options` (shift,
    channels, num_keypoints, head, width); ValueError naming the choices for an unknown name or option, ImageTooSmall
    naming the smallest size for too small an image."""
    accepted = encoder_options(name)
    unknown = sorted(set(options) - set(accepted))
    if unknown:
        raise ValueError(
            f"the {name} image encoder has no option {', '.join(unknown)}; its options: {', '.join(accepted)}"
        )
    return ENCODERS[name](tuple(image_shape), feature_dim, **options)
