"""``--gpu-augment`` on image folders: the DataLoader worker's half (``FolderInput``, ``collate_folder_input``)
sends whole decoded uint8 images and their crop boxes; the training step's half (``DeviceAugment``) augments
them on the device with ``BatchAugment``."""
from __future__ import annotations

import numpy as np
import torch

from fdsl.data.batch_augment.batch import BatchAugment
from fdsl.data.batch_augment.spec import AugmentSpec
from fdsl.data.images import ResizedCrop, crop_params
from fdsl.data.seeds import derive_seed
from fdsl.render.gpu import device_generator


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
