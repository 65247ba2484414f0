"""The database registry: every formula-driven database the builder can write.

A database entry glues one pure renderer (``fdsl.render.*``) to the builder: its command-line
options, its per-class parameters, its file layout, and the class that renders its batches with
torch (``device_batches``, for ``--synthetic-device``). Every image is a pure function of
(seed, class, instance, options), so any worker or rank can render any class.

Use it from code::

    db = create("fractaldb", classes=10, size=64)
    params = db.class_params(3)                       # pure function of (seed, 3)
    img = next(db.render(3, params, [0]))             # uint8 HxW (gray) or HxWx3 (RGB)

Adding a database: subclass :class:`Database` in a module of this package and add one line
to ``_ENTRIES``; name its torch batch renderer in ``device_batches`` if it has one.
"""
from __future__ import annotations

import argparse
import importlib
from collections.abc import Iterator, Sequence
from typing import Any

import numpy as np

from fdsl.errors import UserError

# name -> "module:Class"; modules are imported only when their database is used.
_ENTRIES = {
    "fractaldb": "fdsl.data.db_ifs2d:FractalDB",
    "onepfrac": "fdsl.data.db_ifs2d:OnePFrac",
    "ofdb2d": "fdsl.data.db_ifs2d:OFDB2D",
    "rcdb": "fdsl.data.db_contour:RCDB",
    "visualatom": "fdsl.data.db_contour:VisualAtom",
    "exfractaldb": "fdsl.data.db_ifs3d:ExFractalDB",
    "mvfractaldb": "fdsl.data.db_ifs3d:MVFractalDB",
    "ofdb3d": "fdsl.data.db_ifs3d:OFDB3D",
}
_ALIASES = {"1p-frac": "onepfrac", "1pfrac": "onepfrac", "2d-ofdb": "ofdb2d"}


class Database:
    """Base class of a database entry. Subclasses set ``name``/``summary`` and implement the hooks."""

    name = ""
    summary = ""
    #: folder names are zero-padded to this many digits when the layout asks for it
    class_digits = 5
    #: "module:Class" of its torch batch renderer (fdsl.data.device.batches), None if it has none
    device_batches: str | None = None

    def __init__(self, options: dict):
        self.options = dict(options)
        self.validate()

    # -- construction -------------------------------------------------------------------
    @classmethod
    def add_arguments(cls, parser: argparse.ArgumentParser) -> None:
        """Add this database's options. ``--classes``, ``--instances``, ``--size`` and ``--seed``
        must exist; subclasses call ``super().add_arguments`` and add the rest."""
        parser.add_argument("--classes", type=int, default=1000, help="number of classes (default 1000)")
        parser.add_argument("--instances", type=int, default=1, help="images per class")
        parser.add_argument("--size", type=int, default=512, help="image side in pixels")
        parser.add_argument("--seed", type=int, default=0, help="database seed; images are pure functions of it")

    @classmethod
    def defaults(cls) -> dict:
        parser = argparse.ArgumentParser(add_help=False)
        cls.add_arguments(parser)
        return vars(parser.parse_args([]))

    def validate(self) -> None:
        """Raise UserError naming a bad option and its fix."""
        if self.num_classes <= 0:
            raise UserError(f"--classes must be at least 1 (got {self.num_classes})")
        if self.num_instances <= 0:
            raise UserError(f"--instances must be at least 1 (got {self.num_instances})")
        if self.options["size"] <= 0:
            raise UserError(f"--size must be positive (got {self.options['size']})")

    # -- what the builder asks ------------------------------------------------------------
    @property
    def seed(self) -> int:
        return int(self.options["seed"])

    @property
    def num_classes(self) -> int:
        return int(self.options["classes"])

    @property
    def num_instances(self) -> int:
        return int(self.options["instances"])

    def rng(self, *keys: int) -> np.random.Generator:
        """The random stream for (seed, *keys): class parameters use (cls,), images (cls, inst)."""
        return np.random.default_rng([self.seed, *[int(k) for k in keys]])

    def class_params(self, cls: int) -> Any:
        """Parameters of class ``cls``: a pure function of (seed, cls, options)."""
        raise NotImplementedError

    def render(self, cls: int, params: Any, instances: Sequence[int]) -> Iterator[np.ndarray]:
        """Yield the images of ``instances`` of class ``cls`` in order: uint8 HxW or HxWx3 (RGB).
        Consecutive instances may share work (e.g. one chaos game for 40 FractalDB images)."""
        raise NotImplementedError

    def class_name(self, cls: int) -> str:
        return f"{cls:0{self.class_digits}d}"

    def image_path(self, cls: int, inst: int) -> str:
        """Relative path of one image, with extension, in the published layout."""
        return f"{self.class_name(cls)}/{self.class_name(cls)}_{inst:04d}.png"

    def param_files(self, cls: int, params: Any) -> dict[str, bytes]:
        """Extra files written beside the images for this class: {relative path: content}."""
        return {}

    def manifest(self) -> dict:
        return {"database": self.name, "options": self.options}


def names() -> list[str]:
    return sorted(_ENTRIES)


def get(name: str) -> type[Database]:
    """The Database class registered under ``name`` (aliases such as ``1p-frac`` accepted)."""
    key = _ALIASES.get(name.lower(), name.lower())
    if key not in _ENTRIES:
        raise UserError(f"unknown database {name!r}; choose one of: {', '.join(names())}")
    return load(_ENTRIES[key])


def load(path: str) -> type:
    """The class at ``"module:Class"``, its module imported now (entries import only what is used)."""
    module, name = path.split(":")
    return getattr(importlib.import_module(module), name)


def create(name: str, **options) -> Database:
    """A database with its defaults overridden by ``options`` (the argparse dest names)."""
    db_cls = get(name)
    merged = db_cls.defaults()
    unknown = set(options) - set(merged)
    if unknown:
        raise UserError(f"unknown option(s) {sorted(unknown)} for {db_cls.name}; valid: {sorted(merged)}")
    merged.update(options)
    return db_cls(merged)
