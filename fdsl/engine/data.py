"""The data of a supervised run: the training source (image folder, webdataset shards, on-the-fly rendering
in the workers or on the device; one class each), its transforms, sampler and loader, plus the validation
folder. Bad input is checked here, before any file is written."""
from __future__ import annotations

import os
import sys
from dataclasses import dataclass, field

import numpy as np
import torch
from timm.data import AugMixDataset
from timm.data.random_erasing import RandomErasing
from torch.utils.data import DataLoader, DistributedSampler

from fdsl.data import builder, cache, folder, samplers, shards, start_method, transforms
from fdsl.data.batch_augment.folder import DeviceAugment, FolderInput, collate_folder_input
from fdsl.data.batch_augment.spec import AugmentSpec
from fdsl.data.images import image_shape
from fdsl.engine.logging import print0
from fdsl.errors import UserError


@dataclass(frozen=True)
class DataSpec:
    """The data options of a supervised run, typed (the recipe fills it from the command line; options a
    command lacks keep these defaults). docs/training.md has each flag."""

    # where the training images come from
    data_dir: str | None = None
    train_dir: str | None = None
    train_split: str = "train"
    val_dir: str | None = None
    val_split: str = "validation"
    num_classes: int | None = None
    webdataset: bool = False
    trainshards: str | None = None
    dataset_size: int | None = None
    synthetic: str | None = None
    synthetic_device: str | None = None
    synthetic_opt: list[str] = ()
    synthetic_size: int | None = None
    synthetic_seed: int = 0
    synthetic_instances: int = 1000
    strict_data: bool = False
    cache_images: str = "off"
    # how they are read
    batch_size: int = 32  # per process
    validation_batch_size_multiplier: int = 1
    workers: int = 4
    pin_mem: bool = False
    repeated_aug: bool = False
    seed: int = 42
    gpu_augment: bool = False
    torch_compile: bool = False
    # the flags AugMix must agree with
    jsd: bool = False
    split_bn: bool = False
    mixup: float = 0.0
    cutmix: float = 0.0
    cutmix_minmax: list[float] | None = None
    inputs: transforms.InputSpec = field(default_factory=transforms.InputSpec)
    augment: transforms.TrainAugment = field(default_factory=transforms.TrainAugment)


class TrainSource:
    """What a supervised run trains on, one subclass per kind of source. `build_train_source` makes one from a
    DataSpec; the recipe then calls `set_transforms` (once the model fixes the input size) and `loader`;
    the epoch driver calls `set_epoch` and `take_bad_files`."""

    refuses_augmix = ""  # the flag that names this source in the error when it cannot do AugMix

    def __init__(self, dataset, num_classes: int, samples_per_epoch: int | None = None):
        self.dataset = dataset
        self.num_classes = num_classes
        self.samples_per_epoch = samples_per_epoch
        self.cfg = None  # timm's data config (input size, mean, std, ...), from set_transforms
        self.sampler = None
        self.device_augment = None  # --gpu-augment: the training step's half (fdsl.data.batch_augment.folder.DeviceAugment)

    def __len__(self) -> int:
        return self.samples_per_epoch if self.samples_per_epoch is not None else len(self.dataset)

    def set_transforms(self, spec: DataSpec, model) -> None:
        check_aug_splits(spec, self.refuses_augmix)
        self.cfg = transforms.data_config(spec.inputs, model)
        if spec.gpu_augment:
            raise UserError("--gpu-augment works with image folders (use --synthetic-device for on-the-fly "
                            "rendering); drop --gpu-augment")
        self.dataset.transform = transforms.train_transform(spec.augment, self.cfg)

    def loader(self, spec: DataSpec, info):
        raise NotImplementedError

    def set_epoch(self, epoch: int) -> None:
        for obj in (self.sampler, self.dataset, self.device_augment):
            if hasattr(obj, "set_epoch"):
                obj.set_epoch(epoch)

    def take_bad_files(self) -> tuple[int, str]:
        """(unreadable images skipped since the last call, one of their paths); image folders count them."""
        bad = getattr(self.dataset, "bad_files", None)
        return bad.take() if bad is not None else (0, "")


class SampledSource(TrainSource):
    """A map-style dataset read through a seeded, resumable sampler; AugMix (--aug-splits) wraps it."""

    def __init__(self, dataset, num_classes: int):
        super().__init__(dataset, num_classes)
        self.loader_dataset = dataset  # what the DataLoader reads: the dataset, or its AugMix wrapper
        self.collate = None

    def set_transforms(self, spec: DataSpec, model) -> None:
        super().set_transforms(spec, model)
        augment = spec.augment
        if augment.aug_splits:
            self.loader_dataset = AugMixSplits(self.dataset, augment.aug_splits, erase_clean=not augment.resplit)

    def loader(self, spec: DataSpec, info) -> TrainLoader:
        """drop_last, RASampler / DistributedSampler. Workers are not persistent, so each epoch's worker seeds
        come from the per-epoch RNG and a resumed run replays the same augmentation."""
        n = len(self)
        if spec.repeated_aug:
            sampler = samplers.RASampler(n, info.world_size, info.rank, seed=spec.seed)
        else:  # seeded by (seed, epoch) also on one process, so the order survives a resume
            sampler = DistributedSampler(self.dataset, info.world_size, info.rank, shuffle=True, seed=spec.seed)
        self.sampler = samplers.Resumable(sampler, spec.seed, info.rank)
        per_rank = len(self.sampler)
        if per_rank < spec.batch_size:
            raise UserError(f"--batch-size {spec.batch_size} is larger than the {per_rank} training images per "
                            f"process ({n} images, {info.world_size} process(es)); lower --batch-size")
        collate = concat_splits if spec.augment.aug_splits else self.collate
        loader = DataLoader(samplers.Seeded(self.loader_dataset), batch_size=spec.batch_size, sampler=self.sampler,
                            drop_last=True, worker_init_fn=_worker_init, collate_fn=collate,
                            **loader_options(spec, info))
        return TrainLoader(loader, self.sampler, spec.batch_size, self.device_augment)


class FolderSource(SampledSource):
    """An image folder (fdsl.data.folder.ImageFolder), optionally cached in memory; the only source that
    --gpu-augment can augment on the device."""

    def __init__(self, dataset, num_classes: int, info):
        super().__init__(dataset, num_classes)
        self.info = info  # the engine's DistInfo (rank, device)

    def set_transforms(self, spec: DataSpec, model) -> None:
        if not spec.gpu_augment:
            super().set_transforms(spec, model)
            if not spec.augment.aug_splits:  # crop the uint8 image first (same draws, same output)
                self.dataset.pixel_transform = transforms.crop_first(self.dataset.transform)
            return
        check_aug_splits(spec)
        self.cfg = transforms.data_config(spec.inputs, model)
        self.set_device_augment(spec)

    def set_device_augment(self, spec: DataSpec) -> None:
        """--gpu-augment: workers read, decode and draw crop boxes; the step augments on the device."""
        if spec.augment.aug_splits:
            raise UserError("--gpu-augment does not do AugMix; drop --aug-splits or --gpu-augment")
        device_spec = AugmentSpec.from_args(spec.augment, self.cfg)
        info = self.info
        self.device_augment = DeviceAugment(device_spec, info.device if info else "cpu", spec.seed,
                                                        info.rank if info else 0, spec.torch_compile)
        self.dataset.pixel_transform = FolderInput(source_size(self.dataset, device_spec.size),
                                                               device_spec)
        self.collate = collate_folder_input


class OnTheFlySource(SampledSource):
    """A database rendered on the fly in the DataLoader workers (fdsl.data.onthefly)."""


class ShardSource(TrainSource):
    """Webdataset shards, streamed: each rank reads its own shards for a fixed number of samples per epoch."""

    refuses_augmix = "-w/--webdataset shards"

    def loader(self, spec: DataSpec, info) -> shards.LimitedLoader:
        per_rank_batches = len(self) // (spec.batch_size * info.world_size)
        if per_rank_batches == 0:
            raise UserError(f"--dataset_size {len(self)} is smaller than one global batch "
                            f"({spec.batch_size} x {info.world_size}); lower --batch-size")
        loader = DataLoader(self.dataset, batch_size=spec.batch_size, drop_last=True, **loader_options(spec, info))
        return shards.LimitedLoader(loader, per_rank_batches)


class DeviceSource(TrainSource):
    """A database rendered and augmented per sample on the device (fdsl.data.device): no DataLoader, the
    source is its own loader."""

    refuses_augmix = "--synthetic-device"

    def set_transforms(self, spec: DataSpec, model) -> None:
        check_aug_splits(spec, self.refuses_augmix)
        self.cfg = transforms.data_config(spec.inputs, model)
        self.dataset.configure(spec.augment, self.cfg)

    def loader(self, spec: DataSpec, info):
        self.dataset.check_memory()
        return self.dataset


def loader_options(spec: DataSpec, info) -> dict:
    return {"num_workers": spec.workers, "pin_memory": spec.pin_mem and info.device.type == "cuda",
            "multiprocessing_context": start_method.context() if spec.workers > 0 else None}


def source_size(dataset, output_size) -> int:
    """The square size S the --gpu-augment workers send whole: the folder's images' size when they are all
    one square size (the cache knows every shape; else the first image's header decides), else the output."""
    if dataset.cache is not None:
        readable = np.ones(len(dataset.cache), bool)
        readable[list(dataset.cache.errors)] = False
        sizes = np.unique(dataset.cache.shapes[readable, :2], axis=0)
        return int(sizes[0, 0]) if len(sizes) == 1 and sizes[0, 0] == sizes[0, 1] else max(output_size)
    for path, _ in dataset.samples[:1]:
        try:
            height, width, _ = image_shape(path)
        except (OSError, ValueError, SyntaxError):
            break
        if height == width:
            return height
    return max(output_size)


class AugMixSplits(AugMixDataset):
    """timm's AugMixDataset; with erase_clean=False (--resplit) the clean view skips RandomErasing, as timm's
    split-aware erasing did on its GPU path (the CPU path erased every view)."""

    def __init__(self, dataset, num_splits: int, erase_clean: bool = True):
        super().__init__(dataset, num_splits=num_splits)
        self.clean_normalize = self.normalize
        if not erase_clean:
            kept = [t for t in self.normalize.transforms if not isinstance(t, RandomErasing)]
            self.clean_normalize = type(self.normalize)(kept)

    def __getitem__(self, i):
        x, y = self.dataset[i]
        views = [self.clean_normalize(x)] + [self._normalize(self.augmentation(x)) for _ in range(self.num_splits - 1)]
        return tuple(views), y


def check_aug_splits(spec: DataSpec, refused_by: str = "") -> None:
    """The AugMix flag combinations timm's trainer accepted (it asserted on the others); `refused_by` names a
    source that cannot do AugMix."""
    if spec.augment.aug_splits == 1 or spec.augment.aug_splits < 0:
        raise UserError(f"--aug-splits {spec.augment.aug_splits}: use 0 (off) or >= 2 (clean + augmented views)")
    if spec.jsd and not spec.augment.aug_splits:
        raise UserError("--jsd needs --aug-splits N (N >= 2), e.g. --aug-splits 3 --jsd --aa augmix-m5-w4-d2")
    if spec.split_bn and not spec.augment.aug_splits:
        raise UserError("--split-bn needs --aug-splits N (N >= 2)")
    if not spec.augment.aug_splits:
        return
    if refused_by:
        raise UserError(f"--aug-splits works with image folders and --synthetic, not {refused_by}")
    if spec.augment.no_aug:
        raise UserError("--aug-splits needs augmentation; drop --no-aug")
    if spec.jsd and (spec.mixup > 0 or spec.cutmix > 0 or spec.cutmix_minmax is not None):
        raise UserError("--jsd needs hard labels; drop --mixup/--cutmix (or --jsd)")


def concat_splits(batch):
    """Collate AugMix samples ((view_0, ..., view_n-1), label): view s of sample i goes to row s * B + i, so
    torch.split(images, B) gives the splits (timm's layout); labels are repeated per split."""
    views, targets = zip(*batch)
    images = torch.cat([torch.stack(split) for split in zip(*views)])
    return images, torch.as_tensor(targets).repeat(len(views[0]))


def _check_num_classes(spec: DataSpec, found: list[str], root: str) -> int:
    if spec.num_classes is None:
        return len(found)
    if spec.num_classes < len(found):
        raise UserError(f"--num-classes {spec.num_classes} is fewer than the {len(found)} classes found in {root}; "
                        f"pass --num-classes {len(found)} or more")
    return spec.num_classes


def build_train_source(spec: DataSpec, info, device_source=None) -> TrainSource:
    """The training source the options name: --synthetic (with --synthetic-device on the device: the source
    `device_source()` builds, fdsl.data.device), -w/--webdataset shards, or an image folder."""
    if spec.synthetic:
        if not spec.num_classes:
            raise UserError("--synthetic needs --num-classes (how many classes to render)")
        if spec.synthetic_device:
            source = device_source()
            return DeviceSource(source, spec.num_classes, source.samples_per_epoch)
        if spec.synthetic_opt:
            raise UserError("--synthetic-opt needs --synthetic-device (the DataLoader path renders database defaults)")
        return OnTheFlySource(_onthefly_dataset(spec), spec.num_classes)
    if spec.synthetic_device:
        raise UserError("--synthetic-device needs --synthetic DB (the database to render)")
    if spec.webdataset:
        return _shard_source(spec, info)
    root = spec.train_dir or (folder.find_split(spec.data_dir, spec.train_split) if spec.data_dir else None)
    if not root:
        raise UserError("no training data: pass DIR (an image folder), -w --trainshards, or --synthetic DB")
    ds = folder.ImageFolder(root, strict=spec.strict_data)
    ds.cache = cache.for_folder([path for path, _ in ds.samples], spec.cache_images,
                                max(1, spec.workers), lambda line: print0(info, line))
    return FolderSource(ds, _check_num_classes(spec, ds.classes, root), info)


def _onthefly_dataset(spec: DataSpec):
    from fdsl.data.onthefly import OnTheFlyDataset

    inputs = spec.inputs
    size = spec.synthetic_size or (inputs.input_size[-1] if inputs.input_size else inputs.img_size) or 224
    return OnTheFlyDataset.from_registry(spec.synthetic, spec.num_classes, size, spec.synthetic_seed,
                                         spec.synthetic_instances, None)


def _shard_source(spec: DataSpec, info) -> ShardSource:
    if not spec.trainshards:
        raise UserError("-w/--webdataset needs --trainshards '/PATH/SHARDS-{000000..000099}.tar'")
    if not spec.num_classes:
        raise UserError("-w/--webdataset needs --num-classes (shards carry no class list)")
    ds = shards.ShardDataset(spec.trainshards, None, info.rank, info.world_size, spec.seed)
    size, rule = shard_epoch_size(spec, ds.urls)
    if info.is_main:
        print(f"epoch: {size:,} samples ({rule})", flush=True)
    return ShardSource(ds, spec.num_classes, size)


def shard_epoch_size(spec: DataSpec, urls: list[str]) -> tuple[int, str]:
    """(samples per epoch, the rule that gave it): --dataset_size when given; else the samples the shards hold
    when fdsl's manifest.json lies beside them; else the published rule (--num-classes x 1000)."""
    if spec.dataset_size:
        return spec.dataset_size, "--dataset_size"
    counted = builder.shard_sample_count(urls)
    if counted is not None:
        return counted[0], f"the samples in the shards, from {counted[1]}"
    return (shards.default_size(spec.trainshards, spec.num_classes),
            "published rule: --num-classes x 1000 (x 2000 for _2ki shards); no fdsl manifest.json beside the shards")


def build_val_data(spec: DataSpec, info, train: TrainSource):
    """The validation folder: --val-dir, DIR's val split, or (image folders only) the training images."""
    labeled = train.dataset if isinstance(train, FolderSource) else None
    if spec.val_dir:
        root = spec.val_dir
    elif spec.data_dir and folder.has_split(spec.data_dir, spec.val_split):
        root = folder.find_split(spec.data_dir, spec.val_split)
    elif labeled is not None:
        print(f"warning: no val/ or validation/ under {spec.data_dir}; validating on the training images",
              flush=True) if info.is_main else None
        root = labeled.root
    else:
        return None
    ds = folder.ImageFolder(root, transforms.eval_transform(train.cfg), labeled.classes if labeled else None)
    if len(ds.classes) > train.num_classes:
        raise UserError(f"validation folder {root} has {len(ds.classes)} classes, more than the model's "
                        f"{train.num_classes}")
    return ds


def val_loader(spec: DataSpec, info, dataset) -> DataLoader:
    sampler = samplers.ShardSampler(len(dataset), info.world_size, info.rank)
    batch = spec.batch_size * spec.validation_batch_size_multiplier
    return DataLoader(dataset, batch_size=batch, sampler=sampler, drop_last=False, **loader_options(spec, info))


class TrainLoader:
    """A training DataLoader whose next epoch can start at a given batch (a run resumed mid-epoch)."""

    def __init__(self, loader: DataLoader, sampler: samplers.Resumable, batch_size: int, device_augment=None):
        self.loader = loader
        self.sampler = sampler
        self.batch_size = batch_size
        self.dataset = loader.dataset
        self.device_augment = device_augment

    def __len__(self) -> int:
        return len(self.loader)

    def __iter__(self):
        return iter(self.loader)

    def skip(self, batches: int) -> None:
        self.sampler.skip(batches * self.batch_size)
        if self.device_augment is not None:
            self.device_augment.skip(batches)


def _worker_init(worker_id: int) -> None:
    """One thread per worker for every library that keeps a thread pool (torch, numba, OpenCV): the workers
    are the parallelism, and extra pool threads only compete with the training process for the cores."""
    torch.set_num_threads(1)
    os.environ["OMP_NUM_THREADS"] = "1"
    if "numba" in sys.modules:
        sys.modules["numba"].set_num_threads(1)
    if "cv2" in sys.modules:
        sys.modules["cv2"].setNumThreads(1)
