"""fdsl as a library: formula-driven databases as data for any training loop (timm's, lightly's, your own).

    from fdsl import OnTheFlyDataset, BatchSource, databases

- :class:`OnTheFlyDataset`: a map-style ``torch.utils.data.Dataset`` of ``(PIL image, class)`` rendered on the
  CPU when read; use it with a DataLoader and any torchvision/timm transform.
- :class:`BatchSource`: whole batches ``(images, classes)`` rendered (and augmented) by torch on a device
  (``"cuda"``, or ``"cpu"``), no DataLoader and no workers.

Both render the same classes as ``fdsl render`` with the same seed: every image is a pure function of (seed,
class, instance), and epoch ``e`` (``set_epoch``) shows new instances. Database options are the ones
``fdsl render <database> --help`` lists, as keyword arguments (``iterations=50000``, ``draw_type="point_gray"``).
This module sits above fdsl.data and imports nothing else of fdsl.
"""
from __future__ import annotations

import torch

from fdsl.data import onthefly, registry
from fdsl.data.batch_augment.batch import BatchAugment
from fdsl.data.batch_augment.spec import AugmentSpec
from fdsl.data.device.batches import create_batches
from fdsl.data.device.source import DeviceBatchSource
from fdsl.errors import UserError

__all__ = ["AugmentSpec", "BatchSource", "OnTheFlyDataset", "databases"]


def databases() -> list[str]:
    """The names of the databases fdsl renders (``fractaldb``, ``rcdb``, ``visualatom``, ...)."""
    return registry.names()


def _database(database, num_classes: int | None, size: int | None, seed: int, options: dict):
    """A registry Database from a name and options, or the Database object given."""
    if isinstance(database, registry.Database):
        if num_classes is not None or size is not None or options:
            raise UserError("pass num_classes, size and options to fdsl.data.registry.create, not with a Database")
        return database
    given = {"classes": num_classes, "size": size, "seed": seed}
    return registry.create(database, **{k: v for k, v in given.items() if v is not None}, **options)


class OnTheFlyDataset(onthefly.OnTheFlyDataset):
    """A map-style Dataset of ``(image, class)``: ``len = num_classes x instances_per_class``; item ``i`` is class
    ``i % num_classes``, instance ``epoch x instances_per_class + i // num_classes``, rendered when read.

    Args:
        database: a name from :func:`databases` (or a ``fdsl.data.registry`` Database object).
        instances_per_class: images of each class per epoch.
        transform: applied to the PIL RGB image (e.g. a torchvision or ``timm.data.create_transform`` one).
        num_classes, size, seed: classes, image side in pixels and database seed (database defaults otherwise:
            1000 classes at 512 px).
        **options: database options, as ``fdsl render <database> --help`` names them (dashes as underscores).

    Call ``set_epoch(e)`` before each epoch for new instances; DataLoader workers started per epoch (not
    ``persistent_workers``) see it. One image is rendered at construction, so JIT-compiled renderers are
    compiled once here, not in every worker.
    """

    def __init__(self, database="fractaldb", instances_per_class: int = 1000, transform=None, *,
                 num_classes: int | None = None, size: int | None = None, seed: int = 0, **options):
        super().__init__(_database(database, num_classes, size, seed, options), instances_per_class, transform)
        self.warm_up()


class BatchSource(DeviceBatchSource):
    """Batches ``(images, classes)`` rendered on ``device`` by torch: ``len(source)`` batches per epoch, each a
    pure function of (seed, database seed, epoch, rank, step); iterate it as a loader.

    Args:
        database: a name from :func:`databases` (or a ``fdsl.data.registry`` Database object).
        batch_size: images per batch (on this rank).
        device: ``"cuda"``, ``"cuda:N"`` or ``"cpu"`` (the same code, slowly).
        augment: ``True`` (default): random resized crop to ``size``, flips and ImageNet normalisation, float
            (B, 3, size, size); an :class:`AugmentSpec` for your own (RandAugment, erasing, other sizes...);
            ``False``: the rendered images as floats in [0, 1], (B, 1 or 3, size, size).
        num_classes, instances_per_class, size, seed: as :class:`OnTheFlyDataset`.
        rank, world_size: this process's share of every epoch (default: torch.distributed's when initialised).
        workers: processes computing the class parameters at construction (FractalDB's and the 3D databases'
            searches take ~0.1 s a class).
        **options: database options, as :class:`OnTheFlyDataset`.

    Call ``set_epoch(e)`` before each epoch; ``skip(n)`` starts the next iteration at batch ``n`` (resume).
    """

    def __init__(self, database="fractaldb", batch_size: int = 64, device="cpu", augment=True, *,
                 num_classes: int | None = None, instances_per_class: int = 1000, size: int | None = None,
                 seed: int = 0, rank: int | None = None, world_size: int | None = None, workers: int = 1,
                 progress: bool = False, **options):
        db = _database(database, num_classes, size, seed, options)
        rank, world_size = _share(rank, world_size)
        batches = create_batches(db, torch.device(device), workers, progress)
        super().__init__(batches, db.num_classes, instances_per_class, batch_size, rank, world_size, seed)
        if len(self) == 0:
            raise UserError(f"batch_size {batch_size} is larger than the {self.per_rank} images per epoch of this "
                            f"rank; lower batch_size or raise instances_per_class")
        if augment is True:
            augment = AugmentSpec(size=(batches.size, batches.size))
        self.augment = BatchAugment(augment, self.device) if augment else None


def _share(rank: int | None, world_size: int | None) -> tuple[int, int]:
    if rank is not None and world_size is not None:
        return rank, world_size
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        return torch.distributed.get_rank(), torch.distributed.get_world_size()
    return rank or 0, world_size or 1
