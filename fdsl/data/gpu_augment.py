"""The training recipe's augmentation on a batch tensor, with its own parameters for every sample.

Equivalent to timm's training transform (fdsl.data.transforms.train_transform): random resized crop with
random bilinear/bicubic interpolation, flips, RandAugment (``--aa rand-...``) or ColorJitter, normalisation,
random erasing. Written here because the libraries draw one parameter set per call: torchvision's functional
ops take one crop/factor per call, so a batch call gives every image the same crop, and kornia's RandAugment
picks one op sequence per batch. Here every sample draws its own crop, flips, ops, magnitudes and erasing box.

The small per-sample parameters are drawn on the host from a CPU ``torch.Generator`` (cheap, the same on
every device); only the erasing noise is drawn on the device. Crop, flips and RandAugment's geometric ops
(rotate, shear, translate) are one affine map per sample, applied by ONE resampling (``grid_sample``), so
colour ops act on that result (timm applies them in the order drawn; only the fill colour of a geometric op
can differ). Downscaling is antialiased by averaging s x s sub-samples per output pixel.

Every constant table (normalisation, fill colour, the sharpness kernel) is made on the device in the
constructor: a table first copied in the middle of a step would be a blocking host-to-device copy, which
waits for the GPU (torch.cuda.set_sync_debug_mode("error") rejects it). Host parameters are float32.
The device work (``BatchAugment.apply``) takes device tensors only and has static shapes: each colour op
runs on the whole batch and is kept where the sample drew it, the random erasing noise is drawn before it,
so it compiles as one graph (``torch.compile(fullgraph=True)``, used under ``--torch-compile``).

Two callers: ``--synthetic-device`` (rendered batches, fdsl.data.gpu_source) and ``--gpu-augment`` (image
folders: the DataLoader workers send whole decoded uint8 images and their crop boxes, ``DeviceAugment``).
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
import torch
import torch.nn.functional as F

from fdsl.data.images import ResizedCrop, crop_params
from fdsl.data.seeds import derive_seed
from fdsl.errors import UserError
from fdsl.render.gpu import device_generator, to_device

LEVEL_DENOM = 10.0  # timm's magnitude scale
GEOMETRIC = {"Rotate", "ShearX", "ShearY", "TranslateXRel", "TranslateYRel", "TranslateX", "TranslateY"}
COLOUR = {"AutoContrast", "Equalize", "Invert", "Posterize", "PosterizeIncreasing", "PosterizeOriginal",
          "Solarize", "SolarizeIncreasing", "SolarizeAdd", "Color", "ColorIncreasing", "Contrast",
          "ContrastIncreasing", "Brightness", "BrightnessIncreasing", "Sharpness", "SharpnessIncreasing"}
INTERPOLATIONS = ("bilinear", "bicubic")  # timm's 'random' choice


@dataclass
class RandAugmentSpec:
    """timm's parsed ``rand-...`` string: which ops, how many per image, with which magnitude."""

    ops: list
    num_layers: int = 2
    prob: float = 0.5
    magnitude: float = 10.0
    magnitude_std: float = 0.0
    magnitude_max: float | None = None
    weights: list | None = None  # weighted choice without replacement ('tweights'), else uniform with replacement
    translate_pct: float = 0.45
    translate_const: float = 100.0

    @classmethod
    def parse(cls, text: str, image_size: int) -> RandAugmentSpec:
        """Parse with timm's own parser, so every ``rand-m9-mstd0.5-inc1``-style option means what it does there."""
        from timm.data import auto_augment

        if not text.startswith("rand"):
            raise UserError(f"--aa {text}: device augmentation (--synthetic-device, --gpu-augment) supports "
                            f"RandAugment ('rand-...') only; use e.g. --aa rand-m9-mstd0.5-inc1, or drop the flag")
        try:
            ra = auto_augment.rand_augment_transform(text, {"translate_const": int(image_size * 0.45)})
        except (AssertionError, ValueError, KeyError) as err:
            raise UserError(f"--aa {text}: not a RandAugment spec timm understands ({err})") from None
        names = [op.name for op in ra.ops]
        unknown = sorted(set(names) - GEOMETRIC - COLOUR)
        if unknown:
            raise UserError(f"--aa {text}: op(s) {unknown} are not implemented for device augmentation "
                            f"(--synthetic-device, --gpu-augment); use the default op set (e.g. rand-m9-mstd0.5-inc1)")
        first = ra.ops[0]
        weights = None if ra.choice_weights is None else [float(w) for w in ra.choice_weights]
        return cls(names, ra.num_layers, first.prob, float(first.magnitude), float(first.magnitude_std),
                   first.magnitude_max, weights, first.hparams.get("translate_pct", 0.45),
                   float(first.hparams["translate_const"]))


@dataclass
class AugmentSpec:
    size: tuple = (224, 224)  # output (H, W)
    mean: tuple = (0.485, 0.456, 0.406)
    std: tuple = (0.229, 0.224, 0.225)
    scale: tuple = (0.08, 1.0)
    ratio: tuple = (3 / 4, 4 / 3)
    hflip: float = 0.5
    vflip: float = 0.0
    interpolation: str = "random"
    randaugment: RandAugmentSpec | None = None
    color_jitter: float = 0.0
    re_prob: float = 0.0
    re_mode: str = "const"
    re_count: int = 1
    no_aug: bool = False
    channels: int = 3
    fill: tuple = field(default=(124, 116, 104))

    @classmethod
    def from_args(cls, args, cfg: dict) -> AugmentSpec:
        """The engine's flags and the resolved data config (fdsl.data.transforms.data_config)."""
        channels, height, width = cfg["input_size"]
        mean, std = tuple(cfg["mean"]), tuple(cfg["std"])
        interpolation = cfg["interpolation"] if args.no_aug else args.train_interpolation
        if interpolation not in (*INTERPOLATIONS, "random", "nearest"):
            raise UserError(f"--train-interpolation {interpolation}: device batches support random, bilinear, "
                            f"bicubic or nearest")
        if (args.remode or "const") not in ("const", "rand", "pixel"):
            raise UserError(f"--remode {args.remode}: use const, rand or pixel")
        aa = RandAugmentSpec.parse(args.aa, min(height, width)) if args.aa and not args.no_aug else None
        jitter = 0.0 if aa or args.no_aug or args.color_jitter is None else float(args.color_jitter)
        return cls(size=(height, width), mean=mean, std=std, scale=tuple(args.scale), ratio=tuple(args.ratio),
                   hflip=args.hflip, vflip=args.vflip, interpolation=interpolation, randaugment=aa,
                   color_jitter=jitter, re_prob=0.0 if args.no_aug else args.reprob, re_mode=args.remode or "const",
                   re_count=args.recount, no_aug=args.no_aug, channels=channels,
                   fill=tuple(min(255, round(255 * m)) for m in mean) if len(mean) == 3 else (128, 128, 128))


class BatchAugment:
    """``augment(images, host_generator, device_generator)``: uint8 (B, C, S, S) -> normalised float
    (B, channels, H, W) on ``device`` (the images' device), every sample with its own random parameters.
    ``crops`` (B, 4) (top, left, h, w), when given, are the crop boxes (drawn by the caller)."""

    def __init__(self, spec: AugmentSpec, device=None):
        self.spec = spec
        self.device: torch.device | None = None
        if device is not None:  # else the constant tables go to the device of the first batch augmented
            self.to(device)

        ops = spec.randaugment.ops if spec.randaugment else []
        self.colour_names = [name for name in dict.fromkeys(ops) if name not in GEOMETRIC]  # index = op id
        self.modes = ["nearest"] if spec.interpolation == "nearest" else (
            [spec.interpolation] if spec.interpolation in INTERPOLATIONS else list(INTERPOLATIONS))

    def to(self, device) -> BatchAugment:
        """The constant tables (normalisation, fill colour, sharpness kernel) on ``device``, made there once and
        copied without a stream synchronisation (a blocking copy would wait for the step queued before it)."""
        device = torch.device(device)
        here = self.device
        if here is not None and here.type == device.type and device.index in (None, here.index):
            return self
        channels = self.spec.channels

        def table(values):
            return to_device(torch.tensor(values, dtype=torch.float32), device)

        self.mean = table(self.spec.mean).view(1, -1, 1, 1)
        self.std = table(self.spec.std).view(1, -1, 1, 1)
        self.fill = table(self.spec.fill[:channels]).view(1, -1, 1, 1)
        self.smooth = table([[1.0, 1, 1], [1, 5, 1], [1, 1, 1]]).div(13).expand(channels, 1, 3, 3).contiguous()
        self.device = self.mean.device
        return self

    def __call__(self, images: torch.Tensor, host: torch.Generator, device_generator: torch.Generator,
                 crops: torch.Tensor | None = None):
        plan = self.sample(images.shape[0], images.shape[-1], host, crops)
        self.to(images.device)
        return self.apply(images, self.upload(plan, images.device), self.erase_noise(images, device_generator))

    def apply(self, images: torch.Tensor, params: dict, noise: list) -> torch.Tensor:
        """The device work, from device tensors only: no host copy, no data-dependent shape, no generator, so
        it compiles as one graph (torch.compile(fullgraph=True)). The tables must be on the images' device
        (``to``; ``__call__`` sees to it)."""
        x, inside = self.warp(images.float(), params)
        x = self.to_channels(x, inside)
        x = self.colour(x, params)
        x = (x / 255.0 - self.mean) / self.std
        return self.erase(x, params, noise)

    # -- parameters (host) ---------------------------------------------------------------------------------
    def sample(self, batch: int, source: int, g: torch.Generator, crops: torch.Tensor | None = None) -> dict:
        spec = self.spec
        if crops is not None:
            plan = {"crop": crops.to(torch.float32)}
        else:
            plan = {"crop": _full_crops(batch, source) if spec.no_aug else _resized_crops(batch, source, spec, g)}
        plan["hflip"] = torch.rand(batch, generator=g) < (0 if spec.no_aug else spec.hflip)
        plan["vflip"] = torch.rand(batch, generator=g) < (0 if spec.no_aug else spec.vflip)
        if spec.interpolation == "random":
            plan["interp"] = torch.randint(0, 2, (batch,), generator=g)
        else:
            plan["interp"] = torch.zeros(batch, dtype=torch.long)
        augmenting = not spec.no_aug  # --no-aug: resize and normalise only, as timm's no_aug transform
        plan["layers"] = _randaugment_layers(batch, spec, g) if spec.randaugment and augmenting else []
        if spec.color_jitter > 0 and augmenting:
            low = max(0.0, 1 - spec.color_jitter)
            plan["jitter"] = low + torch.rand(batch, 3, generator=g) * (1 + spec.color_jitter - low)
            plan["jitter_order"] = torch.rand(batch, 3, generator=g).argsort(1)
        plan["erase"] = _erase_boxes(batch, spec, g) if spec.re_prob > 0 and augmenting else []
        return plan

    # -- the plan on the device ------------------------------------------------------------------------------
    def upload(self, plan: dict, device) -> dict:
        """The host plan as device tensors (copied without waiting for the device) and python numbers."""
        height, width = self.spec.size
        batch = len(plan["crop"])
        crop, zero = plan["crop"], torch.zeros(batch, dtype=torch.float32)
        top, left, crop_h, crop_w = crop.unbind(1)
        crop_map = _affine(crop_w / width, zero, left, zero, crop_h / height, top)  # output -> crop box
        hflip, vflip = plan["hflip"], plan["vflip"]
        flip_map = _affine(torch.where(hflip, -1.0, 1.0), zero, torch.where(hflip, float(width), 0.0),
                           zero, torch.where(vflip, -1.0, 1.0), torch.where(vflip, float(height), 0.0))
        identity = torch.eye(3, dtype=torch.float32).expand(batch, 3, 3)
        # one map per layer, identity where the layer drew no geometric op: the same list length every batch
        op_maps = [identity if layer.get("geometry") is None else layer["geometry"] for layer in plan["layers"]]
        geometry = identity
        for op_map in op_maps:
            geometry = geometry @ op_map
        scale = float((crop[:, 2:] / torch.tensor([height, width], dtype=torch.float32)).max())
        params = {"map": to_device(crop_map @ flip_map @ geometry, device),
                  "supersample": max(1, min(4, math.ceil(scale - 1e-6))),
                  "interp": to_device(plan["interp"], device),
                  "op_maps": [to_device(op_map, device) for op_map in op_maps],
                  "colour": [], "erase": [to_device(box, device) for box in plan.get("erase", [])]}
        for layer in (layer for layer in plan["layers"] if "colour" in layer):
            op_id = torch.full((batch,), -1, dtype=torch.long)
            for name, rows in layer["colour"].items():
                op_id[rows] = self.colour_names.index(name)
            params["colour"].append((to_device(op_id, device), to_device(layer["arg"], device)))
        if "jitter" in plan:
            params["jitter"] = (to_device(plan["jitter"], device), to_device(plan["jitter_order"], device))
        return params

    def erase_noise(self, images: torch.Tensor, device_generator: torch.Generator) -> list:
        """The random fill of each erasing round (drawn on the device, outside the compiled part)."""
        if not (self.spec.re_prob > 0 and not self.spec.no_aug) or self.spec.re_mode == "const":
            return []
        batch, channels, (height, width) = images.shape[0], self.spec.channels, self.spec.size
        shape = (batch, channels, height, width) if self.spec.re_mode == "pixel" else (batch, channels, 1, 1)
        return [torch.randn(shape, generator=device_generator, device=images.device)
                for _ in range(self.spec.re_count)]

    # -- geometry: one resampling ----------------------------------------------------------------------------
    def resample(self, images: torch.Tensor, plan: dict) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Crop, flip and geometric RandAugment ops of a host plan as one output->source map per sample."""
        return self.warp(images, self.upload(dict({"layers": []}, **plan), images.device))

    def warp(self, images: torch.Tensor, params: dict) -> tuple[torch.Tensor, torch.Tensor | None]:
        height, width = self.spec.size
        supersample, source = params["supersample"], images.shape[-1]
        grid = _grid(params["map"], height, width, supersample, source, images.device)
        outs = [F.grid_sample(images, grid, mode=mode, padding_mode="border", align_corners=False)
                for mode in self.modes]
        out = outs[0]
        for index, other in enumerate(outs[1:], 1):  # each sample keeps its own interpolation's result
            out = torch.where((params["interp"] == index).view(-1, 1, 1, 1), other, out)
        if supersample > 1:
            out = F.avg_pool2d(out, supersample)
        inside = _inside_fill(params["op_maps"], height, width, images.device) if params["op_maps"] else None
        return out.clamp(0, 255).round(), inside

    def to_channels(self, x: torch.Tensor, inside: torch.Tensor | None) -> torch.Tensor:
        """Gray renders become RGB (as PIL's convert('RGB')); geometric ops' outside gets the fill colour."""
        channels = self.spec.channels
        if x.shape[1] == 1 and channels == 3:
            x = x.expand(-1, 3, -1, -1)
        elif x.shape[1] == 3 and channels == 1:
            x = _luma(x)
        if inside is not None:
            x = torch.where(inside, x, self.fill)
        return x.contiguous()

    # -- colour --------------------------------------------------------------------------------------------
    def colour(self, x: torch.Tensor, params: dict) -> torch.Tensor:
        """Each layer: every colour op of the policy on the whole batch, kept where the sample drew it (a
        masked select instead of gathering rows keeps the shapes static for torch.compile)."""
        for op_id, arg in params["colour"]:
            for index, name in enumerate(self.colour_names):
                op = _COLOUR_OPS[_base_name(name)]
                out = op(x, arg, self.smooth) if op is _sharpness else op(x, arg)
                x = torch.where((op_id == index).view(-1, 1, 1, 1), out, x)
        if "jitter" in params:
            factors, order = params["jitter"]
            ops = (_brightness, _contrast, _color)  # torchvision ColorJitter order ids 0, 1, 2 (hue is off)
            for position in range(3):
                for op_index, op in enumerate(ops):
                    chosen = (order[:, position] == op_index).view(-1, 1, 1, 1)
                    x = torch.where(chosen, op(x, factors[:, op_index]), x)
        return x

    # -- random erasing ------------------------------------------------------------------------------------
    def erase(self, x: torch.Tensor, params: dict, noise: list) -> torch.Tensor:
        """timm's RandomErasing per sample: up to ``re_count`` boxes filled with 0 (const), one normal colour
        per channel (rand) or normal noise per pixel (pixel), on the normalised image."""
        _, _, height, width = x.shape
        rows = torch.arange(height, device=x.device).view(1, height, 1)
        cols = torch.arange(width, device=x.device).view(1, 1, width)
        for k, box in enumerate(params["erase"]):
            top, left, h, w = (box[:, i].view(-1, 1, 1) for i in range(4))
            inside = (rows >= top) & (rows < top + h) & (cols >= left) & (cols < left + w)
            fill = noise[k] if noise else torch.zeros((), device=x.device)
            x = torch.where(inside[:, None], fill, x)
        return x


# -- image folders (--gpu-augment) ------------------------------------------------------------------------------
class FolderInput:
    """The DataLoader worker's whole job under --gpu-augment: uint8 array -> ((C, S, S) uint8 tensor, crop box).

    An image of the folder's common square size S is sent whole, with its RandomResizedCrop box drawn here by
    timm's rule (fdsl.data.images.crop_params, the worker's seeded ``random``); the device cuts and resizes
    it in the one resampling of BatchAugment. An image of another size is cropped and resized to S x S here
    (PIL, timm's crop), and its box is the whole S x S."""

    def __init__(self, source_size: int, spec: AugmentSpec):
        self.size = source_size
        self.scale, self.ratio, self.no_aug = spec.scale, spec.ratio, spec.no_aug
        interpolation = spec.interpolation if spec.interpolation in ("bilinear", "bicubic", "nearest") else "bilinear"
        self.resize = ResizedCrop(source_size, None if spec.no_aug else spec.scale, spec.ratio, interpolation)

    def __call__(self, pixels: np.ndarray) -> tuple[torch.Tensor, np.ndarray]:
        size = self.size
        whole = (0, 0, size, size)
        if pixels.shape[:2] != (size, size):
            pixels, box = np.asarray(self.resize(pixels)), whole
        else:
            box = whole if self.no_aug else crop_params(size, size, self.scale, self.ratio)
        image = torch.from_numpy(np.array(pixels if pixels.ndim == 3 else pixels[..., None], copy=True))
        return image.permute(2, 0, 1), np.asarray(box, np.float32)


def collate_folder_input(samples):
    """[((image, box), target)] -> ((uint8 (B, C, S, S), boxes (B, 4) numpy), targets). Gray images are
    repeated to RGB when the batch mixes both. The boxes stay a numpy array, so the loop leaves them on the
    host, where BatchAugment plans."""
    inputs, targets = zip(*samples)
    images, boxes = zip(*inputs)
    if len({image.shape[0] for image in images}) > 1:
        images = [image.expand(3, -1, -1) for image in images]
    return (torch.stack(images), np.stack(boxes)), torch.as_tensor(targets)


class DeviceAugment:
    """The training step's half of --gpu-augment: ``(uint8 images on the device, host boxes)`` -> normalised
    float batch. Batch ``step`` of ``epoch`` on ``rank`` draws from generators seeded by exactly that, so a
    run resumed mid-epoch (``skip``) augments the same way."""

    def __init__(self, spec: AugmentSpec, device, seed: int = 0, rank: int = 0, compile: bool = False):
        self.batch_augment = BatchAugment(spec, device)
        self.device = self.batch_augment.device
        augment = self.batch_augment
        # --torch-compile: the device half as one graph (a few variants: the supersampling factor 1..4)
        self.apply = torch.compile(augment.apply, fullgraph=True) if compile else augment.apply
        self.seed, self.rank = seed, rank
        self.epoch, self.step = 0, 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch, self.step = epoch, 0

    def skip(self, num_batches: int) -> None:
        self.step = num_batches

    def __call__(self, batch) -> torch.Tensor:
        images, boxes = batch
        key = (self.seed, self.rank, self.epoch, self.step)
        self.step += 1
        host = torch.Generator().manual_seed(derive_seed(*key, 0))
        on_device = device_generator(images.device, derive_seed(*key, 1))
        channels_last = images.dim() == 4 and images.is_contiguous(memory_format=torch.channels_last)
        augment = self.batch_augment
        with torch.no_grad():
            plan = augment.sample(images.shape[0], images.shape[-1], host, torch.from_numpy(np.asarray(boxes)))
            augment.to(images.device)
            out = self.apply(images, augment.upload(plan, images.device), augment.erase_noise(images, on_device))
        return out.contiguous(memory_format=torch.channels_last) if channels_last else out


# -- parameter sampling (host) -------------------------------------------------------------------------------
def _uniform(shape, low, high, g):
    return low + torch.rand(shape, generator=g, dtype=torch.float32) * (high - low)


def _randint_inclusive(high: torch.Tensor, g) -> torch.Tensor:
    """U{0..high} per element (python's random.randint(0, high))."""
    return (torch.rand(high.shape, generator=g, dtype=torch.float32) * (high + 1)).floor().clamp(max=high)


def _full_crops(batch: int, source: int) -> torch.Tensor:
    return torch.tensor([[0.0, 0.0, source, source]], dtype=torch.float32).expand(batch, 4).clone()


def _resized_crops(batch: int, source: int, spec: AugmentSpec, g) -> torch.Tensor:
    """(top, left, h, w) per sample, as timm's RandomResizedCropAndInterpolation.get_params on a square:
    10 attempts, the first that fits, else the central fallback."""
    area = float(source * source)
    attempts = 10
    target = _uniform((batch, attempts), *spec.scale, g) * area
    ratio = torch.exp(_uniform((batch, attempts), math.log(spec.ratio[0]), math.log(spec.ratio[1]), g))
    w = torch.round(torch.sqrt(target * ratio))
    h = torch.round(torch.sqrt(target / ratio))
    fits = (w <= source) & (h <= source)
    first = torch.where(fits.any(1), fits.float().argmax(1), -1)
    pick = first.clamp(min=0)[:, None]
    h, w = h.gather(1, pick)[:, 0], w.gather(1, pick)[:, 0]
    top = _randint_inclusive(source - h, g)
    left = _randint_inclusive(source - w, g)
    fallback = _central_crop(source, spec.ratio)
    none_fit = (first < 0)[:, None]
    return torch.where(none_fit, fallback, torch.stack([top, left, h, w], 1))


def _central_crop(source: int, ratio) -> torch.Tensor:
    w = h = float(source)
    if 1.0 < min(ratio):
        h = float(round(w / min(ratio)))
    elif 1.0 > max(ratio):
        w = float(round(h * max(ratio)))
    return torch.tensor([(source - h) // 2, (source - w) // 2, h, w], dtype=torch.float32)


def _randaugment_layers(batch: int, spec: AugmentSpec, g) -> list[dict]:
    """Per layer: which op each sample draws, whether it applies (prob), its magnitude argument, and for
    geometric ops the output->input map."""
    ra = spec.randaugment
    n_ops = len(ra.ops)
    if ra.weights is None:
        choice = torch.randint(0, n_ops, (batch, ra.num_layers), generator=g)
    else:
        weights = torch.tensor(ra.weights, dtype=torch.float32).expand(batch, n_ops)
        choice = torch.multinomial(weights, ra.num_layers, replacement=False, generator=g)
    height, width = spec.size
    layers = []
    for layer in range(ra.num_layers):
        applied = torch.rand(batch, generator=g) <= ra.prob
        magnitude = torch.full((batch,), ra.magnitude, dtype=torch.float32)
        if ra.magnitude_std == math.inf:
            magnitude = _uniform(batch, 0.0, ra.magnitude, g)
        elif ra.magnitude_std > 0:
            magnitude = magnitude + ra.magnitude_std * torch.randn(batch, generator=g, dtype=torch.float32)
        level = magnitude.clamp(0.0, ra.magnitude_max or LEVEL_DENOM) / LEVEL_DENOM
        sign = torch.where(torch.rand(batch, generator=g) > 0.5, -1.0, 1.0).to(torch.float32)
        arg = torch.zeros(batch, dtype=torch.float32)
        colour, geometry_rows = {}, []
        for k in choice[:, layer].unique().tolist():
            name = ra.ops[k]
            rows = ((choice[:, layer] == k) & applied).nonzero().flatten()
            if not len(rows):
                continue
            arg[rows] = _level(name, level[rows], sign[rows], ra)
            if name in GEOMETRIC:
                geometry_rows.append((name, rows))
            else:
                colour[name] = rows
        geometry = None
        if geometry_rows:
            geometry = torch.eye(3, dtype=torch.float32).repeat(batch, 1, 1)
            for name, rows in geometry_rows:
                geometry[rows] = _geometric_map(name, arg[rows], height, width)
        layers.append({"colour": colour, "arg": arg, "geometry": geometry})
    return layers


def _level(name: str, level: torch.Tensor, sign: torch.Tensor, ra: RandAugmentSpec) -> torch.Tensor:
    """timm's LEVEL_TO_ARG for a magnitude fraction ``level`` = m / 10 (and the random sign)."""
    base = _base_name(name)
    increasing = name.endswith("Increasing")
    if name == "Rotate":
        return level * 30.0 * sign
    if name in ("ShearX", "ShearY"):
        return level * 0.3 * sign
    if name in ("TranslateXRel", "TranslateYRel"):
        return level * ra.translate_pct * sign
    if name in ("TranslateX", "TranslateY"):
        return level * ra.translate_const * sign
    if name == "PosterizeOriginal":
        return (level * 4).floor() + 4
    if base == "Posterize":
        bits = (level * 4).floor()
        return 4 - bits if increasing else bits
    if base == "Solarize":
        thresh = (level * 256).floor().clamp(max=256)
        return 256 - thresh if increasing else thresh
    if name == "SolarizeAdd":
        return (level * 110).floor().clamp(max=128)
    if base in ("Color", "Contrast", "Brightness", "Sharpness"):
        return (1.0 + sign * level * 0.9).clamp(min=0.1) if increasing else level * 1.8 + 0.1
    return torch.zeros_like(level)  # AutoContrast, Equalize, Invert


def _base_name(name: str) -> str:
    return name.removesuffix("Increasing").removesuffix("Original")


def _geometric_map(name: str, arg: torch.Tensor, height: int, width: int) -> torch.Tensor:
    """Output->input 3x3 maps in pixel units, as PIL's affine transforms in timm's ops."""
    zero, one = torch.zeros_like(arg), torch.ones_like(arg)
    if name == "ShearX":
        return _affine(one, arg, zero, zero, one, zero)
    if name == "ShearY":
        return _affine(one, zero, zero, arg, one, zero)
    if name in ("TranslateXRel", "TranslateX"):
        return _affine(one, zero, arg * width if name.endswith("Rel") else arg, zero, one, zero)
    if name in ("TranslateYRel", "TranslateY"):
        return _affine(one, zero, zero, zero, one, arg * height if name.endswith("Rel") else arg)
    # Rotate: PIL's rotate(degrees) about the centre, counter-clockwise on screen
    a = torch.deg2rad(-arg)
    cx, cy = width / 2.0, height / 2.0
    cos, sin = torch.cos(a), torch.sin(a)
    return _affine(cos, sin, cx - cos * cx - sin * cy, -sin, cos, cy + sin * cx - cos * cy)


def _erase_boxes(batch: int, spec: AugmentSpec, g) -> list[torch.Tensor]:
    """Per box round: (top, left, h, w) per sample, h = 0 where nothing is erased (timm's RandomErasing:
    probability, 1..re_count boxes each of area U(0.02, 1/3) / count, 10 attempts for one that fits)."""
    height, width = spec.size
    erased = torch.rand(batch, generator=g) <= spec.re_prob
    count = torch.randint(1, spec.re_count + 1, (batch,), generator=g) if spec.re_count > 1 else torch.ones(
        batch, dtype=torch.long)
    boxes = []
    for k in range(spec.re_count):
        attempts = 10
        target = _uniform((batch, attempts), 0.02, 1 / 3, g) * (height * width) / count[:, None]
        ratio = torch.exp(_uniform((batch, attempts), math.log(0.3), math.log(1 / 0.3), g))
        h = torch.round(torch.sqrt(target * ratio))
        w = torch.round(torch.sqrt(target / ratio))
        fits = (w < width) & (h < height)
        pick = fits.float().argmax(1, keepdim=True)
        h, w = h.gather(1, pick)[:, 0], w.gather(1, pick)[:, 0]
        top = _randint_inclusive(height - h, g)
        left = _randint_inclusive(width - w, g)
        active = erased & fits.any(1) & (k < count)
        boxes.append(torch.stack([top, left, torch.where(active, h, 0.0), w], 1))
    return boxes


# -- geometry helpers ------------------------------------------------------------------------------------------
def _affine(a, b, c, d, e, f) -> torch.Tensor:
    """(B, 3, 3) maps (x, y) -> (a x + b y + c, d x + e y + f), from (B,) float tensors."""
    a = torch.as_tensor(a, dtype=torch.float32)
    rows = [torch.as_tensor(v, dtype=torch.float32).expand_as(a) for v in (a, b, c, d, e, f)]
    zero, one = torch.zeros_like(a), torch.ones_like(a)
    return torch.stack([torch.stack(rows[:3], -1), torch.stack(rows[3:], -1), torch.stack([zero, zero, one], -1)], 1)


def _grid(maps: torch.Tensor, height: int, width: int, supersample: int, source: int, device) -> torch.Tensor:
    """grid_sample's (B, H s, W s, 2) grid: sub-pixel centres of the output mapped into the source's [-1, 1]."""
    ys = (torch.arange(height * supersample, device=device) + 0.5) / supersample
    xs = (torch.arange(width * supersample, device=device) + 0.5) / supersample
    yy, xx = torch.meshgrid(ys, xs, indexing="ij")
    points = torch.stack([xx, yy, torch.ones_like(xx)], -1).view(-1, 3)
    source_xy = torch.einsum("bij,pj->bpi", maps[:, :2], points)
    return (source_xy / source * 2 - 1).view(len(maps), height * supersample, width * supersample, 2)


def _inside_fill(op_maps: list, height: int, width: int, device) -> torch.Tensor:
    """(B, 1, H, W): False where a geometric op sampled outside its input (PIL fills with the fill colour)."""
    ys = torch.arange(height, device=device) + 0.5
    xs = torch.arange(width, device=device) + 0.5
    yy, xx = torch.meshgrid(ys, xs, indexing="ij")
    points = torch.stack([xx, yy, torch.ones_like(xx)], -1).view(-1, 3)
    inside = torch.ones(len(op_maps[0]), points.shape[0], dtype=torch.bool, device=device)
    current = points.expand(len(op_maps[0]), -1, -1)
    for op_map in reversed(op_maps):
        current = torch.einsum("bij,bpj->bpi", op_map, current)
        inside &= (current[..., 0] >= 0) & (current[..., 0] < width) & (current[..., 1] >= 0) & (
            current[..., 1] < height)
    return inside.view(-1, 1, height, width)


# -- colour ops on float images holding 0..255 integers (PIL semantics) -------------------------------------------
def _per_sample(v: torch.Tensor) -> torch.Tensor:
    return v.to(torch.float32).view(-1, 1, 1, 1)


def _luma(x: torch.Tensor) -> torch.Tensor:
    """PIL's RGB -> L: (299 R + 587 G + 114 B) / 1000, rounded."""
    if x.shape[1] == 1:
        return x
    return torch.round((x[:, :1] * 299 + x[:, 1:2] * 587 + x[:, 2:3] * 114) / 1000)


def _blend(degenerate: torch.Tensor, x: torch.Tensor, factor: torch.Tensor) -> torch.Tensor:
    return (degenerate + _per_sample(factor) * (x - degenerate)).clamp(0, 255).round()


def _brightness(x, factor):
    return _blend(torch.zeros_like(x), x, factor)


def _contrast(x, factor):
    mean = torch.floor(_luma(x).mean((1, 2, 3), keepdim=True) + 0.5)
    return _blend(mean.expand_as(x), x, factor)


def _color(x, factor):
    return _blend(_luma(x).expand_as(x), x, factor)


def _sharpness(x, factor, kernel):
    """PIL's SMOOTH filter (``kernel``: (C, 1, 3, 3), BatchAugment.smooth) blended with the image."""
    channels = x.shape[1]
    smooth = F.conv2d(x, kernel[:channels], groups=channels).round()
    degenerate = x.clone()
    degenerate[..., 1:-1, 1:-1] = smooth  # PIL keeps the border pixels
    return _blend(degenerate, x, factor)


def _autocontrast(x, _):
    low = x.amin((2, 3), keepdim=True)
    high = x.amax((2, 3), keepdim=True)
    scale = 255.0 / (high - low).clamp(min=1)
    return torch.where(high > low, torch.floor((x - low) * scale).clamp(0, 255), x)


def _equalize(x, _):
    """PIL's ImageOps.equalize per channel: a lookup table from the histogram's running sum."""
    n, channels = x.shape[:2]
    values = x.to(torch.long).view(n * channels, -1)
    hist = torch.zeros(n * channels, 256, dtype=torch.long, device=x.device)
    hist.scatter_add_(1, values, torch.ones_like(values))
    last_nonzero = 255 - (hist.flip(1) > 0).to(torch.long).argmax(1, keepdim=True)
    step = (hist.sum(1, keepdim=True) - hist.gather(1, last_nonzero)) // 255
    running = torch.cumsum(hist, 1) - hist
    lut = ((step // 2 + running) // step.clamp(min=1)).clamp(max=255)
    lut = torch.where(step > 0, lut, torch.arange(256, device=x.device).expand_as(lut))
    return lut.gather(1, values).view_as(x).to(x.dtype)


def _invert(x, _):
    return 255 - x


def _posterize(x, bits):
    keep = _per_sample(bits)
    quantum = torch.pow(2.0, 8 - keep.clamp(0, 8))
    return torch.where(keep <= 0, torch.zeros_like(x), torch.floor(x / quantum) * quantum)


def _solarize(x, thresh):
    return torch.where(x >= _per_sample(thresh), 255 - x, x)


def _solarize_add(x, add):
    return torch.where(x < 128, (x + _per_sample(add)).clamp(max=255), x)


_COLOUR_OPS = {"AutoContrast": _autocontrast, "Equalize": _equalize, "Invert": _invert, "Posterize": _posterize,
               "Solarize": _solarize, "SolarizeAdd": _solarize_add, "Color": _color, "Contrast": _contrast,
               "Brightness": _brightness, "Sharpness": _sharpness}
