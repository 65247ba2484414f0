"""On-the-fly training batches rendered on a device: ``--synthetic DB --synthetic-device cuda`` (or cpu).

No files and no DataLoader workers: each step draws class and instance indices, renders the whole batch
with the torch renderers (fdsl.render.gpu_*), augments it per sample (fdsl.data.gpu_augment) and hands
``(images, targets)`` to the loop already on the device.

- Class parameters come from the database registry (``Database.class_params``): the same per-(seed, class)
  streams as the CPU renderers, so a class is the same shape on either path. They are computed once at
  start-up, split over the ranks and the ``-j`` processes of each rank.
- Epoch ``e`` is a permutation of the ``classes x instances`` indices seeded by (seed, e); rank ``r`` takes
  every world-th index from ``r`` (with ``--repeated-aug``, each index three times in a row before dealing,
  as fdsl.data.samplers.RASampler). Batch ``s`` of epoch ``e`` on rank ``r`` is a pure function of (seed,
  database seed, e, r, s): its render and augmentation generators are seeded from exactly that, so a
  resumed run (``skip``) sees the same images.
"""
from __future__ import annotations

import gc
import multiprocessing
from collections.abc import Callable, Iterator

import numpy as np
import torch
from tqdm import tqdm

from fdsl.data import registry, start_method
from fdsl.data.gpu_augment import AugmentSpec, BatchAugment, RandAugmentSpec
from fdsl.data.seeds import derive_seed
from fdsl.errors import UserError
from fdsl.render import gpu_contour, gpu_ifs, ifs3d
from fdsl.render.gpu import device_generator, to_device

# -- class parameters, computed once -----------------------------------------------------------------------
_POOL_DB = None  # the database a pool worker computes class parameters of


def _set_pool_db(db) -> None:
    global _POOL_DB
    _POOL_DB = db


def _class_params(cls: int):
    return cls, _POOL_DB.class_params(cls)


def pool_context():
    """fdsl's start method (fork on Linux) while CUDA is untouched; spawn once it is initialised: a forked child
    of a process with a CUDA context inherits a broken one (and NCCL's threads), so the trainer, which has
    picked its GPU by now, starts fresh interpreters."""
    return multiprocessing.get_context("spawn") if torch.cuda.is_initialized() else start_method.context()


def all_class_params(db, workers: int = 1, progress: bool = True) -> list:
    """``db.class_params(c)`` for every class: split over the ranks when torch.distributed is running, and
    over ``workers`` processes per rank (the FractalDB and 3D searches take ~0.1 s a class)."""
    rank, world = 0, 1
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        rank, world = torch.distributed.get_rank(), torch.distributed.get_world_size()
    mine = list(range(rank, db.num_classes, world))
    bar = tqdm(total=len(mine), desc=f"{db.name} class parameters", unit="class", disable=not progress,
               leave=False, delay=2.0)  # shown only when it takes a while (FractalDB and 3D searches)
    found = {}
    if workers > 1 and len(mine) > 1:
        with pool_context().Pool(min(workers, len(mine)), initializer=_set_pool_db, initargs=(db,)) as pool:
            for cls, params in pool.imap_unordered(_class_params, mine, chunksize=max(1, len(mine) // (8 * workers))):
                found[cls] = params
                bar.update()
    else:
        for cls in mine:
            found[cls] = db.class_params(cls)
            bar.update()
    bar.close()
    if world > 1:
        gathered = [None] * world
        torch.distributed.all_gather_object(gathered, found)
        for part in gathered:
            found.update(part)
    return [found[cls] for cls in range(db.num_classes)]


def _padded_systems(systems: list[np.ndarray], device) -> tuple[torch.Tensor, torch.Tensor]:
    """A list of (N_c, P) arrays as one zero-padded (C, N_max, P) float32 tensor and the counts N_c."""
    most = max(len(s) for s in systems)
    table = np.zeros((len(systems), most, systems[0].shape[1]), np.float32)
    for c, system in enumerate(systems):
        table[c, :len(system)] = system
    return torch.from_numpy(table).to(device), torch.tensor([len(s) for s in systems], device=device)


# -- one family of databases each ----------------------------------------------------------------------------
class DeviceBatches:
    """Renders ``(classes, instances)`` (host LongTensors) of one database as a uint8 (B, C, S, S) batch on the
    device. ``instances`` are the database's own instance indices (taken modulo its instance count)."""

    def __init__(self, db, device: torch.device, workers: int = 1, progress: bool = True):
        self.db = db
        self.device = torch.device(device)
        self.size = int(db.options["size"])
        self.params = all_class_params(db, workers, progress)

    def render(self, classes: torch.Tensor, instances: torch.Tensor, host: torch.Generator,
               device: torch.Generator) -> torch.Tensor:
        """``host`` draws the per-image shape parameters, ``device`` the renderer's random numbers; the
        renderer (``self.renderer``, made in the constructor with all its constants) draws the images."""
        raise NotImplementedError

    def heaviest(self, count: int) -> torch.Tensor:
        """Classes of the most memory-hungry batch of ``count`` images (for the memory probe)."""
        return torch.arange(count) % self.db.num_classes


class IFS2DBatches(DeviceBatches):
    """FractalDB (class system x published weight row, flips), 2D-OFDB and 1p-frac (the class system)."""

    def __init__(self, db, device, workers=1, progress=True):
        super().__init__(db, device, workers, progress)
        self.systems, self.num_maps = _padded_systems(self.params, self.device)
        plans = [db.plan(i) for i in range(db.num_instances)] if hasattr(db, "plan") else [(0, 0, 0)]
        weights = getattr(db, "weights", np.ones((1, 6)))
        self.weights = torch.as_tensor(weights, dtype=torch.float32, device=self.device)
        self.rows = torch.tensor([row % len(weights) for row, _, _ in plans])
        self.flips = torch.tensor([flip for _, _, flip in plans])
        o = db.options
        self.renderer = gpu_ifs.IFS2DRenderer(self.device, self.size, int(o["iterations"]), o["draw_type"],
                                              int(o["pad"]))

    def render(self, classes, instances, host, device):
        plan = instances % len(self.rows)
        classes = to_device(classes, self.device)
        systems = self.systems[classes].clone()
        systems[..., :6] *= self.weights[to_device(self.rows[plan], self.device)][:, None, :]  # p stays the class's
        return self.renderer(systems, self.num_maps[classes], self.flips[plan], device)


class ContourBatches(DeviceBatches):
    """RCDB (radius, oval rates and centre redrawn per instance) and VisualAtom (centre redrawn)."""

    def __init__(self, db, device, workers=1, progress=True):
        super().__init__(db, device, workers, progress)
        self.rcdb = db.name == "rcdb"
        columns = {name: [p.get(name, 0) for p in self.params] for name in gpu_contour.FIELDS}
        columns["wave_1"] = [p.get("nami1", 0) for p in self.params]
        columns["wave_2"] = [p.get("nami2", 0) for p in self.params]
        self.table = {name: torch.tensor(values) for name, values in columns.items()}
        self.renderer = gpu_contour.ContourRenderer(self.device, self.size, self.rcdb, 255 if self.rcdb else 0)

    def render(self, classes, instances, host, device):
        shapes = {name: column[classes] for name, column in self.table.items()}
        ranges = self.db.ranges
        if self.rcdb:
            shapes.update(gpu_contour.rcdb_geometry(len(classes), host, ranges))
        else:
            shapes.update(gpu_contour.centers(len(classes), host, ranges.start_pos))
        return self.renderer(shapes, device)

    def heaviest(self, count: int) -> torch.Tensor:
        work = self.table["vertices"] * self.table["lines"]
        return work.argsort(descending=True)[torch.arange(count) % len(work)]


class IFS3DBatches(DeviceBatches):
    """ExFractalDB / 3D-OFDB (random viewpoints) and MV-FractalDB (fixed views): cloud ``i // views`` of a
    class is its system with one parameter scaled (ifs3d.instance_system)."""

    def __init__(self, db, device, workers=1, progress=True):
        super().__init__(db, device, workers, progress)
        self.systems, self.num_maps = _padded_systems(self.params, self.device)
        unit = np.ones((1, 13))
        scales = [ifs3d.instance_system(unit, k)[0, :12] for k in range(ifs3d.INSTANCES_PER_CLASS)]
        self.scales = torch.as_tensor(np.array(scales), dtype=torch.float32, device=self.device)
        self.renderer = gpu_ifs.IFS3DRenderer(self.device, self.size, int(db.options["points"]))

    def render(self, classes, instances, host, device):
        o = self.db.options
        instances = instances % self.db.num_instances
        cloud = to_device(instances // o["views"], self.device)
        on_device = to_device(classes, self.device)
        systems = self.systems[on_device].clone()
        systems[..., :12] *= self.scales[cloud][:, None, :]
        if self.db.name == "mvfractaldb":
            eyes = gpu_ifs.fixed_views(instances % o["views"], o["views"], host, o["elevation"], o["jitter"])
        else:
            eyes = gpu_ifs.random_views(len(classes), host)
        return self.renderer(systems, self.num_maps[on_device], to_device(eyes, self.device), device)


FAMILIES = {"fractaldb": IFS2DBatches, "ofdb2d": IFS2DBatches, "onepfrac": IFS2DBatches, "rcdb": ContourBatches,
            "visualatom": ContourBatches, "exfractaldb": IFS3DBatches, "mvfractaldb": IFS3DBatches,
            "ofdb3d": IFS3DBatches}


def create_batches(db, device, workers: int = 1, progress: bool = True) -> DeviceBatches:
    if db.name not in FAMILIES:
        raise UserError(f"database {db.name!r} has no device renderer; choose one of: {', '.join(sorted(FAMILIES))}")
    return FAMILIES[db.name](db, device, workers, progress)


# -- the training source -------------------------------------------------------------------------------------
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

    # -- memory ------------------------------------------------------------------------------------------------
    def check_memory(self) -> None:
        """On CUDA: render + augment the heaviest batch once; if it does not fit, say the largest that does. The
        search starts from an estimate (free memory / the peak bytes an image took in a small batch), so a
        batch far too large is never rendered in part, nor bisected down from its own size."""
        if self.device.type != "cuda":
            return

        def render(count: int) -> None:
            classes = self.batches.heaviest(count)
            self.render(classes, torch.zeros_like(classes), (-1, self.rank, count))

        fits = memory_probe(render, torch.cuda.synchronize, _release_cuda_memory)
        largest = largest_batch(fits, self.batch_size, guess=self.batches_that_fit(render))
        if largest < self.batch_size:
            raise UserError(f"--batch-size {self.batch_size}: on-the-fly {self.batches.db.name} batches at "
                            f"{self.batches.size}px do not fit in GPU memory; the largest that fits is {largest} "
                            f"(rendering and augmentation alone, the model needs room too): lower --batch-size")

    def batches_that_fit(self, render: Callable[[int], None], sample: int = 16) -> int:
        """About how many images fit: free device memory over the peak bytes per image of a batch of ``sample``."""
        _release_cuda_memory()
        before = torch.cuda.memory_allocated(self.device)
        torch.cuda.reset_peak_memory_stats(self.device)
        render(sample)
        torch.cuda.synchronize(self.device)
        per_image = max(1, (torch.cuda.max_memory_allocated(self.device) - before) // sample)
        _release_cuda_memory()
        free, _ = torch.cuda.mem_get_info(self.device)
        return max(1, int(0.9 * free // per_image))


def _release_cuda_memory() -> None:
    gc.collect()
    torch.cuda.empty_cache()


def memory_probe(render: Callable[[int], None], synchronize: Callable[[], None] = lambda: None,
                 release: Callable[[], None] = lambda: None) -> Callable[[int], bool]:
    """fits(n): whether ``render(n)`` runs without running out of device memory (``release`` frees it after)."""

    def fits(count: int) -> bool:
        try:
            render(count)
            synchronize()
            return True
        except torch.OutOfMemoryError:
            return False
        finally:
            release()

    return fits


def largest_batch(fits: Callable[[int], bool], wanted: int, guess: int | None = None) -> int:
    """``wanted`` if it fits, else the largest smaller batch that does (bisection; 0 if not even 1 does).

    With ``guess`` (an estimate of the largest, trusted to within 2x), a ``wanted`` above twice the guess is not
    tried, the search runs between the guess and twice it (or below it), and stops within 1/16: a few renders
    near the answer instead of halving down from a batch that may be thousands of times too large."""
    low, high = 0, wanted  # low fits (trivially for 0), high does not
    if (guess is None or wanted <= 2 * guess) and fits(wanted):
        return wanted
    if guess is not None and guess < high:
        if fits(guess):
            low, high = guess, min(high, 2 * guess)
        else:
            high = guess
    while high - low > (1 if guess is None else max(1, low // 16)):
        middle = (low + high) // 2
        if fits(middle):
            low = middle
        else:
            high = middle
    return low


# -- from the command line -------------------------------------------------------------------------------------
def parse_options(pairs: list[str] | None) -> dict:
    """``--synthetic-opt iterations=50000 draw_type=point_gray`` as database options (YAML-typed values)."""
    import yaml

    options = {}
    for pair in pairs or []:
        key, eq, value = pair.partition("=")
        if not eq or not key:
            raise UserError(f"--synthetic-opt {pair}: expected KEY=VALUE, e.g. iterations=50000")
        options[key.strip().lstrip("-").replace("-", "_")] = yaml.safe_load(value)
    return options


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


def build_device_source(args, info) -> DeviceBatchSource:
    """The source of ``--synthetic DB --synthetic-device D`` for this rank (``info``: rank, world_size, device,
    is_main, as the engine's DistInfo)."""
    registry.get(args.synthetic)  # an unknown name is one line naming the choices
    device = render_device(args.synthetic_device, info.device)
    size = args.synthetic_size or (args.input_size[-1] if args.input_size else args.img_size) or 224
    if args.aa and not args.no_aug:  # fail before the class parameters are computed, not after
        RandAugmentSpec.parse(args.aa, size)
    options = parse_options(args.synthetic_opt)
    for key, flag in (("classes", "--num-classes"), ("size", "--synthetic-size"), ("seed", "--synthetic-seed")):
        if key in options:
            raise UserError(f"--synthetic-opt {key}=...: set it with {flag}")
    db = registry.create(args.synthetic, classes=args.num_classes, size=size, seed=args.synthetic_seed, **options)
    if db.num_classes * args.synthetic_instances // info.world_size < args.batch_size:
        raise UserError(f"--batch-size {args.batch_size} is larger than the {db.num_classes * args.synthetic_instances}"
                        f" on-the-fly images per epoch split over {info.world_size} process(es); lower --batch-size "
                        f"or raise --synthetic-instances")
    batches = create_batches(db, device, workers=max(1, args.workers), progress=info.is_main)
    return DeviceBatchSource(batches, db.num_classes, args.synthetic_instances, args.batch_size, info.rank,
                             info.world_size, args.seed, args.repeated_aug)
