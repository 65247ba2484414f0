"""VGG16-BN with the fixed Sobel front end of DeepCluster/DeeperCluster (docs/ssl.md), written by hand
because neither timm nor torchvision has the Sobel input, the published padding or the conv taps.

Module names follow the published `Net(padding, sobel, body)` so that fdsl's state dicts and the released
checkpoints share keys: `sobel.0.*`, `sobel.1.*`, `body.features.<i>.*`, `body.classifier.{0,3}.*`.

- `width` scales every conv and fc width (tests and the CPU bench use width 1/16); 1.0 is the published net.
- `img_size` fixes fc6's input (512 x 7 x 7 at 224 px, as published): the body sees img_size + 2 pixels
  (pad 1, or pad 2 then the unpadded 3x3 Sobel), halved by five max-pools.
- `net.conv = k` (1..13) makes forward return the activation after the k-th conv's BN+ReLU.
"""
from __future__ import annotations

import math

import torch
from torch import nn

from fdsl.checkpoint_io import load, unwrap_state_dict
from fdsl.errors import UserError

CFG_D = [64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M", 512, 512, 512, "M"]
NUM_CONVS = 13


def _scaled(channels: int, width: float) -> int:
    return max(1, round(channels * width))


def make_features(in_channels: int, width: float = 1.0) -> nn.Sequential:
    """conv3x3(pad 1) -> BN -> ReLU per conv, 2x2 max-pool per 'M': the published indices (conv k of block
    order sits at a fixed position), so published `features.<i>` keys load unchanged."""
    layers: list[nn.Module] = []
    for v in CFG_D:
        if v == "M":
            layers.append(nn.MaxPool2d(kernel_size=2, stride=2))
            continue
        out = _scaled(v, width)
        conv = nn.Conv2d(in_channels, out, kernel_size=3, padding=1)
        nn.init.normal_(conv.weight, 0.0, math.sqrt(2.0 / (3 * 3 * out)))
        nn.init.zeros_(conv.bias)
        layers += [conv, nn.BatchNorm2d(out), nn.ReLU(inplace=True)]
        in_channels = out
    return nn.Sequential(*layers)


def body_input_side(img_size: int) -> int:
    """Side of the tensor that reaches features[0]: 224 -> 226 with or without Sobel."""
    return img_size + 2


def conv_output_sides(img_size: int) -> list[int]:
    """Spatial side after each of the 13 convs (conv k at index k-1), and the side after the last pool."""
    side, sides = body_input_side(img_size), []
    for v in CFG_D:
        if v == "M":
            side //= 2
        else:
            sides.append(side)
    return sides + [side]


class VGG16Body(nn.Module):
    """features + classifier (fc6 -> ReLU -> Dropout -> fc7 [-> ReLU]); pre-ReLU fc7 when relu=False."""

    def __init__(self, in_channels: int, relu: bool = False, img_size: int = 224, width: float = 1.0,
                 fc_dim: int | None = None, dropout: float = 0.5):
        super().__init__()
        self.features = make_features(in_channels, width)
        last = _scaled(512, width)
        side = conv_output_sides(img_size)[-1]
        if side < 1:
            raise UserError(f"image size {img_size} is too small for VGG16's five max-pools; use 30 px or more")
        fc_dim = fc_dim or _scaled(4096, width)
        classifier = [nn.Linear(last * side * side, fc_dim), nn.ReLU(inplace=True), nn.Dropout(dropout),
                      nn.Linear(fc_dim, fc_dim)]
        if relu:
            classifier.append(nn.ReLU(inplace=True))
        self.classifier = nn.Sequential(*classifier)
        self.dim_output_space = fc_dim

    def forward(self, x):
        return self.classifier(torch.flatten(self.features(x), 1))


def sobel_layer() -> nn.Sequential:
    """Greyscale (mean of the normalised RGB) then the two fixed Sobel kernels, unpadded, no gradient."""
    grey = nn.Conv2d(3, 1, kernel_size=1)
    sobel = nn.Conv2d(1, 2, kernel_size=3)
    with torch.no_grad():
        grey.weight.fill_(1.0 / 3.0)
        grey.bias.zero_()
        sobel.weight[0, 0] = torch.tensor([[1.0, 0.0, -1.0], [2.0, 0.0, -2.0], [1.0, 0.0, -1.0]])
        sobel.weight[1, 0] = torch.tensor([[1.0, 2.0, 1.0], [0.0, 0.0, 0.0], [-1.0, -2.0, -1.0]])
        sobel.bias.zero_()
    layer = nn.Sequential(grey, sobel)
    for p in layer.parameters():
        p.requires_grad = False
    return layer


class VGG16Net(nn.Module):
    """The published Net: padding, optional Sobel, VGG16-BN body. forward -> [B, fc_dim] (or a conv tap)."""

    def __init__(self, sobel: bool = False, relu: bool = False, img_size: int = 224, width: float = 1.0,
                 fc_dim: int | None = None, dropout: float = 0.5):
        super().__init__()
        self.padding = nn.ConstantPad2d(2 if sobel else 1, 0.0)
        self.sobel = sobel_layer() if sobel else None
        self.body = VGG16Body(2 if sobel else 3, relu, img_size, width, fc_dim, dropout)
        self.img_size = img_size
        self.conv: int | None = None
        self.num_features = self.body.dim_output_space

    @property
    def has_sobel(self) -> bool:
        return self.sobel is not None

    def stem(self, x):
        x = self.padding(x)
        return self.sobel(x) if self.sobel is not None else x

    def forward_conv(self, x, k: int):
        """Activation after the k-th conv's BN + ReLU (before any following max-pool)."""
        if not 1 <= k <= NUM_CONVS:
            raise UserError(f"--conv {k}: VGG16 has convs 1..{NUM_CONVS}")
        x = self.stem(x)
        seen = 0
        for layer in self.body.features:
            x = layer(x)
            if isinstance(layer, nn.ReLU):
                seen += 1
                if seen == k:
                    return x
        raise AssertionError("unreachable")

    def forward(self, x):
        if self.conv is not None:
            return self.forward_conv(x, self.conv)
        return self.body(self.stem(x))

    def conv_channels(self, k: int) -> int:
        convs = [m for m in self.body.features if isinstance(m, nn.Conv2d)]
        return convs[k - 1].out_channels

    def conv_side(self, k: int) -> int:
        return conv_output_sides(self.img_size)[k - 1]


def create_vgg16(sobel: bool = False, relu: bool = False, img_size: int = 224, width: float = 1.0,
                 fc_dim: int | None = None, dropout: float = 0.5) -> VGG16Net:
    return VGG16Net(sobel, relu, img_size, width, fc_dim, dropout)


@torch.no_grad()
def sobel2rgb(net: VGG16Net, published: bool = False) -> None:
    """Fold greyscale + Sobel + conv1 into one 5x5 conv from RGB (padding 1, conv1's bias); the outer pad of 2
    stays, so every spatial size is unchanged. Equal to the Sobel net away from the borders (the Sobel net
    zero-pads the Sobel response, the folded conv reads real pixels there).

    published=True: as the published model_factory.sobel2RGB, which looped range(3) over the 5x5 kernel, so
    only taps [0:3, 0:3] are folded and rows/columns 3-4 keep the new conv's random init (drawn from the
    global torch generator, as there); the numbers of the published eval_pretrain came from that fold."""
    if net.sobel is None:
        return
    conv1 = net.body.features[0]
    sob = net.sobel[1].weight[:, 0]  # [2, 3, 3]
    w = conv1.weight  # [out, 2, 3, 3]
    kernel = torch.zeros(w.shape[0], 5, 5, dtype=w.dtype, device=w.device)
    for v0 in range(3):  # conv1 tap v, Sobel tap u: input offset u + v
        for v1 in range(3):
            for u0 in range(3):
                for u1 in range(3):
                    kernel[:, u0 + v0, u1 + v1] += (w[:, :, v0, v1] * sob[:, u0, u1]).sum(1)
    folded = nn.Conv2d(3, w.shape[0], kernel_size=5, padding=1).to(w.device)
    full = (kernel / 3.0)[:, None].expand(-1, 3, -1, -1)
    if published:
        folded.weight[:, :, :3, :3] = full[:, :, :3, :3]
    else:
        folded.weight.copy_(full)
    folded.bias.copy_(conv1.bias)
    net.body.features[0] = folded
    net.sobel = None


# --- checkpoints -------------------------------------------------------------------------------------

def _rename(key: str) -> str:
    """The published rename (strip module.body., module., .module) plus fdsl's own prefixes."""
    for prefix in ("module.body.", "module.", "_orig_mod.", "trunk.", "body."):
        if key.startswith(prefix):
            return _rename(key[len(prefix):])
    return key.replace(".module", "")


def body_state_dict(sd: dict) -> dict:
    """features.* / classifier.* tensors of a published (DDP `module.body.`) or fdsl (`trunk.body.`) state
    dict; Sobel, padding, pred_layer and DeeperCluster head keys are dropped."""
    out = {}
    for key, value in sd.items():
        name = _rename(key)
        if name.startswith(("features.", "classifier.")):
            out[name] = value
    return out


def checkpoint_first_conv(sd: dict) -> tuple[int, int] | None:
    """(input channels, kernel size) of features.0 in a body state dict."""
    w = sd.get("features.0.weight")
    return (int(w.shape[1]), int(w.shape[-1])) if w is not None else None


def load_body(net: VGG16Net, path: str, strict_classifier: bool = True, log=print) -> None:
    """Load a released VGG16 checkpoint (or fdsl's own) into net.body. A missing file, a Sobel/RGB mismatch
    or another architecture is one clear error (the published loader silently ignored a missing file)."""
    import os

    if not path or not os.path.isfile(path):
        raise UserError(f"--pretrained {path!r} does not exist; pass a checkpoint file or drop --pretrained")
    sd = body_state_dict(unwrap_state_dict(load(path)))
    first = checkpoint_first_conv(sd)
    if first is None:
        raise UserError(f"--pretrained {path} holds no VGG16 weights (no features.0.weight)")
    want = net.body.features[0].weight.shape[1]
    if first[0] != want:
        has = "Sobel (2 channels)" if first[0] == 2 else f"RGB ({first[0]} channels)"
        raise UserError(f"--pretrained {path} was trained with {has} input but the model is built with "
                        f"--sobel {'true' if net.has_sobel else 'false'}; pass --sobel "
                        f"{'true' if first[0] == 2 else 'false'}")
    own = net.body.state_dict()
    if not strict_classifier:
        sd = {k: v for k, v in sd.items() if not k.startswith("classifier.")}
    bad = [k for k, v in sd.items() if k in own and own[k].shape != v.shape]
    if bad:
        k = bad[0]
        raise UserError(f"--pretrained {path}: {k} is {tuple(sd[k].shape)} but the model has {tuple(own[k].shape)} "
                        "(another width, image size or a sobel2RGB-folded conv1?)")
    result = net.body.load_state_dict(sd, strict=False)
    missing = [k for k in result.missing_keys if strict_classifier or not k.startswith("classifier.")]
    if missing or result.unexpected_keys:
        raise UserError(f"--pretrained {path} does not fit VGG16-BN: missing {missing[:3]}, "
                        f"unexpected {list(result.unexpected_keys)[:3]}")
    log(f"pretrained: loaded {len(sd)} VGG16 tensors from {path}")
