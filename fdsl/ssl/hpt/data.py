"""Data of the HPT stages: labeled lists or folders, an iteration-budget training loader (fixed-length epochs
from fdsl.data.stream, resumable mid-epoch) and the by-epoch one (fdsl.eval.data.train_loader)."""
from __future__ import annotations

from torch.utils.data import DataLoader

from fdsl.data import folder, samplers
from fdsl.data.image_list import ImageList
from fdsl.data.stream import StreamSampler
from fdsl.engine.data import TrainLoader, _worker_init
from fdsl.errors import UserError


def labeled_dataset(list_path: str | None, folder_path: str | None, root: str | None, transform, class_map=None,
                    num_classes: int | None = None, what: str = "train"):
    """An ImageList (`relpath label` lines under root) or an ImageFolder (class/image)."""
    if list_path:
        return ImageList(list_path, root, transform, class_map, num_classes)
    if folder_path:
        return folder.ImageFolder(folder_path, transform)
    raise UserError(f"no {what} data: pass --{what}-list LIST (with --data-root) or --{what}-folder DIR")


def num_classes_of(dataset) -> int:
    return getattr(dataset, "num_classes", None) or len(dataset.classes)


class Data:
    """What the engine's fit() tells the epoch and asks for unreadable files."""

    def __init__(self, dataset, sampler=None):
        self.dataset = dataset
        self.sampler = sampler

    def set_epoch(self, epoch: int) -> None:
        for obj in (self.sampler, self.dataset):
            if hasattr(obj, "set_epoch"):
                obj.set_epoch(epoch)

    def take_bad_files(self) -> tuple[int, str]:
        bad = getattr(self.dataset, "bad_files", None)
        return bad.take() if bad is not None else (0, "")


def stream_loader(dataset, info, local_batch: int, batches_per_epoch: int, seed: int, workers: int,
                  pin: bool = False) -> tuple[Data, TrainLoader]:
    """Epochs of exactly `batches_per_epoch` batches per rank, each sample's augmentation seeded by its
    position (resumable mid-epoch)."""
    if len(dataset) < local_batch * info.world_size:
        raise UserError(f"{len(dataset)} images are fewer than one global batch ({local_batch} x "
                        f"{info.world_size}); lower --batch-size")
    stream = StreamSampler(len(dataset), batches_per_epoch * local_batch, info.world_size, info.rank, seed)
    sampler = samplers.Resumable(stream, seed, info.rank)
    loader = DataLoader(samplers.Seeded(dataset), batch_size=local_batch, sampler=sampler, drop_last=True,
                        num_workers=workers, worker_init_fn=_worker_init, pin_memory=pin)
    return Data(dataset, sampler), TrainLoader(loader, sampler, local_batch)


def epoch_loader(dataset, info, local_batch: int, seed: int, workers: int) -> tuple[Data, TrainLoader]:
    """Plain epochs over the data set (the by-epoch fine-tune schedule), seeded, resumable."""
    from fdsl.eval.data import train_loader

    loader = train_loader(dataset, local_batch, workers, info, seed)
    return Data(dataset, loader.sampler), loader


def eval_loader(dataset, info, batch_size: int, workers: int) -> DataLoader:
    """Rank r reads r, r+W, ...: every image once (gathered back into order by engine.features)."""
    return DataLoader(dataset, batch_size=batch_size,
                      sampler=samplers.ShardSampler(len(dataset), info.world_size, info.rank),
                      num_workers=workers, worker_init_fn=_worker_init if workers else None)
