"""Feature trunks for the self-supervised methods and their probes: the published VGG16-BN (optionally with
the Sobel front end), or any timm model, whose pooled feature (num_classes=0) is the output."""
from __future__ import annotations

from torch import nn

from fdsl.errors import UserError
from fdsl.models.vgg import create_vgg16, sobel_layer

VGG_NAMES = ("vgg16", "vgg16_bn")


class SobelFront(nn.Module):
    """The fixed greyscale + Sobel layers in front of a timm model built with in_chans=2."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.sobel = sobel_layer()
        self.model = model
        self.num_features = model.num_features

    def forward(self, x):
        return self.model(self.sobel(nn.functional.pad(x, (1, 1, 1, 1))))


def create_trunk(arch: str = "vgg16", sobel: bool = False, img_size: int = 224, width: float = 1.0,
                 relu: bool = False) -> nn.Module:
    """A module mapping images [B, 3, H, W] to features [B, trunk.num_features]."""
    if arch in VGG_NAMES:
        return create_vgg16(sobel=sobel, relu=relu, img_size=img_size, width=width)
    import timm

    if not timm.is_model(arch):
        raise UserError(f"--arch {arch}: not vgg16 and not a timm model")
    from fdsl.models.factory import _offline

    _offline()
    try:
        model = timm.create_model(arch, num_classes=0, in_chans=2 if sobel else 3, img_size=img_size)
    except TypeError:
        model = timm.create_model(arch, num_classes=0, in_chans=2 if sobel else 3)
    return SobelFront(model) if sobel else model
