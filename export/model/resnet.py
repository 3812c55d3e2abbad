"""torchvision-layout ResNet pieces: the ResNet-50 pixel encoder (spec 5), the ResNet-18 pixel
encoder of cutie-small (CUTIE_DELTA 4) and the ResNet-18 layers of the mask encoder (spec 7.1).
Names match the reference state dicts."""

from __future__ import annotations

from torch import Tensor, nn

from s3rt.configs import ResNet50Config


def projection_shortcut(in_dim: int, out_dim: int, stride: int) -> nn.Sequential | None:
    """The 1x1 strided conv + BN skip of torchvision ResNets, or None for an identity skip."""
    if stride == 1 and in_dim == out_dim:
        return None
    return nn.Sequential(nn.Conv2d(in_dim, out_dim, 1, stride=stride, bias=False), nn.BatchNorm2d(out_dim))


class BasicBlock(nn.Module):
    def __init__(self, *, in_dim: int, out_dim: int, stride: int = 1) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_dim, out_dim, 3, stride=stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(out_dim)
        self.relu = nn.ReLU(inplace=False)
        self.conv2 = nn.Conv2d(out_dim, out_dim, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(out_dim)
        self.downsample = projection_shortcut(in_dim, out_dim, stride)

    def forward(self, x: Tensor) -> Tensor:
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        skip = x if self.downsample is None else self.downsample(x)
        return self.relu(out + skip)


class Bottleneck(nn.Module):
    """ResNet v1.5 bottleneck: the stride sits on the 3x3 conv."""

    def __init__(self, *, in_dim: int, width: int, expansion: int, stride: int = 1) -> None:
        super().__init__()
        out_dim = width * expansion
        self.conv1 = nn.Conv2d(in_dim, width, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(width)
        self.conv2 = nn.Conv2d(width, width, 3, stride=stride, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(width)
        self.conv3 = nn.Conv2d(width, out_dim, 1, bias=False)
        self.bn3 = nn.BatchNorm2d(out_dim)
        self.relu = nn.ReLU(inplace=False)
        self.downsample = projection_shortcut(in_dim, out_dim, stride)

    def forward(self, x: Tensor) -> Tensor:
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        skip = x if self.downsample is None else self.downsample(x)
        return self.relu(out + skip)


def basic_layer(*, in_dim: int, out_dim: int, blocks: int, stride: int) -> nn.Sequential:
    layers = [BasicBlock(in_dim=in_dim, out_dim=out_dim, stride=stride)]
    layers += [BasicBlock(in_dim=out_dim, out_dim=out_dim) for _ in range(blocks - 1)]
    return nn.Sequential(*layers)


def bottleneck_layer(*, in_dim: int, width: int, expansion: int, blocks: int, stride: int) -> nn.Sequential:
    layers = [Bottleneck(in_dim=in_dim, width=width, expansion=expansion, stride=stride)]
    layers += [Bottleneck(in_dim=width * expansion, width=width, expansion=expansion) for _ in range(blocks - 1)]
    return nn.Sequential(*layers)


class ResNet50Encoder(nn.Module):
    """ResNet stem..layer3 returning (f16, f8, f4) of a normalised image: bottleneck blocks
    (ResNet-50, spec 5) or basic blocks (ResNet-18, CUTIE_DELTA 4), per cfg.block."""

    def __init__(self, cfg: ResNet50Config) -> None:
        super().__init__()
        e = cfg.expansion
        self.conv1 = nn.Conv2d(3, cfg.stem, 7, stride=2, padding=3, bias=False)
        self.bn1 = nn.BatchNorm2d(cfg.stem)
        self.relu = nn.ReLU(inplace=False)
        self.maxpool = nn.MaxPool2d(kernel_size=3, stride=2, padding=1)
        in_dims = (cfg.stem, cfg.widths[0] * e, cfg.widths[1] * e)
        stages = []
        for in_dim, width, blocks, stride in zip(in_dims, cfg.widths, cfg.blocks, (1, 2, 2)):
            if cfg.block == "basic":
                stages.append(basic_layer(in_dim=in_dim, out_dim=width, blocks=blocks, stride=stride))
            else:
                stages.append(bottleneck_layer(in_dim=in_dim, width=width, expansion=e, blocks=blocks, stride=stride))
        self.res2, self.layer2, self.layer3 = stages

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """x: (B, 3, H, W) normalised -> f16 (B, 4*w2, H/16, W/16), f8, f4."""
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))   # (B, stem, H/4, W/4)
        f4 = self.res2(x)
        f8 = self.layer2(f4)
        f16 = self.layer3(f8)
        return f16, f8, f4
