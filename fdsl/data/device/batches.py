"""One ``DeviceBatches`` class per family of databases: the class parameters as the torch renderer's tables, and
``render(classes, instances, ...)`` -> a uint8 (B, C, S, S) batch on the device. A database names its class
in the registry (``Database.device_batches``)."""
from __future__ import annotations

import numpy as np
import torch

from fdsl.data import registry
from fdsl.data.device.class_params import all_class_params
from fdsl.errors import UserError
from fdsl.render import gpu_contour, gpu_ifs, ifs3d
from fdsl.render.gpu import to_device


def create_batches(db, device, workers: int = 1, progress: bool = True) -> DeviceBatches:
    """``db``'s batches on ``device``, its class parameters computed by ``workers`` processes."""
    if db.device_batches is None:
        have = [name for name in registry.names() if registry.get(name).device_batches]
        raise UserError(f"database {db.name!r} has no device renderer; choose one of: {', '.join(have)}")
    return registry.load(db.device_batches)(db, device, workers, progress)


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


def _padded_systems(systems: list[np.ndarray], device) -> tuple[torch.Tensor, torch.Tensor]:
    """A list of (N_c, P) arrays as one zero-padded (C, N_max, P) float32 tensor and the counts N_c."""
    most = max(len(s) for s in systems)
    table = np.zeros((len(systems), most, systems[0].shape[1]), np.float32)
    for c, system in enumerate(systems):
        table[c, :len(system)] = system
    return torch.from_numpy(table).to(device), torch.tensor([len(s) for s in systems], device=device)


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
