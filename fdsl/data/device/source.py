"""``DeviceBatchSource``, the loop's loader of device batches, and ``create_device_source``, which builds it for
a rank from ``DeviceSourceOptions`` (the checks first, then the class parameters)."""
from __future__ import annotations

from collections.abc import Iterator

import torch

from fdsl.data import registry
from fdsl.data.batch_augment.batch import BatchAugment
from fdsl.data.batch_augment.spec import AugmentSpec, RandAugmentSpec
from fdsl.data.device import memory
from fdsl.data.device.batches import DeviceBatches, create_batches
from fdsl.data.device.options import DeviceSourceOptions
from fdsl.data.seeds import derive_seed
from fdsl.errors import UserError
from fdsl.render.gpu import device_generator, to_device


class DeviceBatchSource:
    """The loop's loader: ``len()`` batches per epoch per rank, ``set_epoch``, ``skip`` and iteration over
    ``(images, targets)`` already on the device (images normalised by the recipe's augmentation)."""

    def __init__(self, batches: DeviceBatches, num_classes: int, instances_per_class: int, batch_size: int,
                 rank: int = 0, world_size: int = 1, seed: int = 0, repeated_aug: bool = False):
        self.batches = batches
        self.device = batches.device
        self.num_classes = num_classes
        self.instances_per_class = instances_per_class
        self.batch_size = batch_size
        self.rank, self.world_size = rank, world_size
        self.seed = seed
        self.repeated_aug = repeated_aug
        self.samples_per_epoch = num_classes * instances_per_class
        self.per_rank = self.samples_per_epoch // world_size
        self.augment: BatchAugment | None = None
        self.epoch = 0
        self._skip = 0
        self._order: tuple[int, torch.Tensor] | None = None

    def configure(self, args, cfg: dict) -> None:
        """Use the recipe's augmentation (flags + the model's data config)."""
        self.augment = BatchAugment(AugmentSpec.from_args(args, cfg), self.device)

    def __len__(self) -> int:
        return self.per_rank // self.batch_size

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def skip(self, num_batches: int) -> None:
        """The next iteration starts at batch ``num_batches`` of the epoch (mid-epoch resume)."""
        self._skip = num_batches

    def indices(self, epoch: int) -> torch.Tensor:
        """This rank's sample indices of the epoch, in order (host LongTensor of ``per_rank``)."""
        if self._order is None or self._order[0] != epoch:
            generator = torch.Generator().manual_seed(derive_seed(self.seed, self.batches.db.seed, epoch))
            permutation = torch.randperm(self.samples_per_epoch, generator=generator)
            position = self.rank + self.world_size * torch.arange(self.per_rank)
            if self.repeated_aug:  # each index 3 times in a row, dealt round-robin (RASampler)
                position = position // 3
            self._order = (epoch, permutation[position])
        return self._order[1]

    def batch(self, epoch: int, step: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Batch ``step`` of ``epoch`` on this rank: a pure function of (seed, database seed, epoch, rank, step)."""
        index = self.indices(epoch)[step * self.batch_size:(step + 1) * self.batch_size]
        return self.render(index % self.num_classes, index // self.num_classes, (epoch, self.rank, step))

    def render(self, classes: torch.Tensor, instances: torch.Tensor, key: tuple) -> tuple[torch.Tensor, torch.Tensor]:
        host = torch.Generator().manual_seed(derive_seed(self.seed, self.batches.db.seed, *key, 0))
        device = device_generator(self.device, derive_seed(self.seed, self.batches.db.seed, *key, 1))
        with torch.no_grad():
            raw = self.batches.render(classes, instances, host, device)
            images = self.augment(raw, host, device) if self.augment else raw.float() / 255.0
        return images, to_device(classes, self.device)

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        epoch, start, self._skip = self.epoch, self._skip, 0
        for step in range(start, len(self)):
            try:
                yield self.batch(epoch, step)
            except torch.OutOfMemoryError:
                raise UserError(f"out of GPU memory rendering on-the-fly batch {step} of epoch {epoch} "
                                f"({self.batch_size} x {self.batches.db.name} at {self.batches.size}px); "
                                f"lower --batch-size") from None

    def check_memory(self) -> None:
        """On CUDA: render + augment the heaviest batch once; if it does not fit, say the largest that does."""
        if self.device.type != "cuda":
            return

        def render(count: int) -> None:
            classes = self.batches.heaviest(count)
            self.render(classes, torch.zeros_like(classes), (-1, self.rank, count))

        largest = memory.largest_batch_that_fits(render, self.batch_size, self.device)
        if largest < self.batch_size:
            raise UserError(f"--batch-size {self.batch_size}: on-the-fly {self.batches.db.name} batches at "
                            f"{self.batches.size}px do not fit in GPU memory; the largest that fits is {largest} "
                            f"(rendering and augmentation alone, the model needs room too): lower --batch-size")


def build_device_source(args, info) -> DeviceBatchSource:
    """The source of ``--synthetic DB --synthetic-device D`` for this rank, from the command line's flags."""
    return create_device_source(DeviceSourceOptions.from_args(args), info)


def create_device_source(options: DeviceSourceOptions, info) -> DeviceBatchSource:
    """The source for this rank (``info``: rank, world_size, device, is_main, as the engine's DistInfo)."""
    registry.get(options.database)  # an unknown name is one line naming the choices
    device = render_device(options.device, info.device)
    if options.randaugment:  # fail before the class parameters are computed, not after
        RandAugmentSpec.parse(options.randaugment, options.size)
    for key, flag in (("classes", "--num-classes"), ("size", "--synthetic-size"), ("seed", "--synthetic-seed")):
        if key in options.database_options:
            raise UserError(f"--synthetic-opt {key}=...: set it with {flag}")
    db = registry.create(options.database, classes=options.num_classes, size=options.size,
                         seed=options.database_seed, **options.database_options)
    images = db.num_classes * options.instances_per_class
    if images // info.world_size < options.batch_size:
        raise UserError(f"--batch-size {options.batch_size} is larger than the {images} on-the-fly images per epoch "
                        f"split over {info.world_size} process(es); lower --batch-size or raise --synthetic-instances")
    batches = create_batches(db, device, workers=options.workers, progress=info.is_main)
    return DeviceBatchSource(batches, db.num_classes, options.instances_per_class, options.batch_size, info.rank,
                             info.world_size, options.seed, options.repeated_aug)


def render_device(requested: str, training_device: torch.device) -> torch.device:
    if requested == "cpu":
        return torch.device("cpu")
    if not torch.cuda.is_available():
        raise UserError("--synthetic-device cuda: no CUDA GPU is visible to this process; use --synthetic-device cpu "
                        "or drop --synthetic-device to render in DataLoader workers")
    if training_device.type != "cuda":
        raise UserError(f"--synthetic-device cuda renders on the training GPU, but training runs on "
                        f"{training_device.type}; drop --device {training_device.type} or use --synthetic-device cpu")
    return training_device
