"""Registry entries of the 3D IFS databases: ExFractalDB, MV-FractalDB (CVPR 2022) and 3D-OFDB.

A class is a searched 3D IFS; it has up to 145 point clouds (the identity plus 12 parameters x
12 scalings), and image ``i`` of a class is view ``i % views`` of cloud ``i // views``. Layout:
``image/<class>/<class>_<image>.png``, ``param/<class>.csv`` (N rows of 12 parameters and the
probability), ``param/render.json`` (the seed and options of the per-image draws, for ``--param-dir``)
and, with ``--save-ply``, ``ply/<class>/<class>_<cloud>.ply``.
"""
from __future__ import annotations

import argparse
import math
from collections.abc import Iterator, Sequence

import numpy as np

from fdsl.data import params_csv
from fdsl.data.db_contour import add_option, check_at_least
from fdsl.data.params_csv import ParamDir
from fdsl.data.registry import Database
from fdsl.errors import UserError
from fdsl.render import ifs3d

CLOUD_STREAM = 3  # rng key suffix of the chaos game of a cloud (image streams are (cls, inst))


class IFS3DDatabase(ParamDir, Database):
    name = ""
    device_batches = "fdsl.data.device.batches:IFS3DBatches"
    views_default = 1
    instances_default = 1
    # a cloud's chaos game and a view's camera draw from (seed, class, ...) with these
    image_options = ("seed", "points", "views")

    @classmethod
    def add_arguments(cls, parser: argparse.ArgumentParser) -> None:
        super().add_arguments(parser)
        parser.set_defaults(classes=None, instances=None, size=None)
        add_option(parser, "views", type=int, default=cls.views_default, help=cls.views_help())
        add_option(parser, "variance", type=float, default=0.05,
                   help="category search: accept a system when its normalised cloud's variance along "
                        "each of x, y, z exceeds this (default 0.05)")
        add_option(parser, "points", aliases=["numof-point"], type=int, default=ifs3d.POINTS,
                   help=f"points per cloud, in the search and in every instance (default {ifs3d.POINTS:,})")
        add_option(parser, "point-instances", type=int, default=ifs3d.INSTANCES_PER_CLASS,
                   help="point clouds per class, from the 12 x 12 + 1 parameter scalings "
                        f"(default {ifs3d.INSTANCES_PER_CLASS})")
        add_option(parser, "save-ply", action="store_true",
                   help="also write every point cloud used as ply/<class>/<class>_<cloud>.ply, binary PLY "
                        "(default off)")
        cls.add_param_dir_option(add_option, parser)

    @classmethod
    def views_help(cls) -> str:
        return f"images per point cloud (default {cls.views_default})"

    @property
    def output_defaults(self) -> dict:
        return {"classes": 1000, "instances": self.instances_default, "size": 224}

    def validate(self) -> None:
        self.resolve_param_dir()
        o = self.options
        check_at_least(o, "views", 1, " (images per point cloud)")
        check_at_least(o, "points", 2)
        if not 0 < o["point_instances"] <= ifs3d.INSTANCES_PER_CLASS:
            raise UserError(f"--point-instances must be in 1..{ifs3d.INSTANCES_PER_CLASS} "
                            f"(got {o['point_instances']})")
        if not 0 <= o["variance"] < 1:
            raise UserError(f"--variance must be in [0, 1) for clouds normalised into [-1, 1] "
                            f"(got {o['variance']})")
        super().validate()
        most = o["point_instances"] * o["views"]
        if self.num_instances > most:
            raise UserError(f"--instances {self.num_instances} exceeds --point-instances "
                            f"{o['point_instances']} x --views {o['views']} = {most}; raise --views "
                            f"or lower --instances")

    @property
    def clouds_used(self) -> int:
        return math.ceil(self.num_instances / self.options["views"])

    def read_class_file(self, path: str) -> np.ndarray:
        system = params_csv.read_rows(path, 13, "3D IFS parameter CSV")
        probabilities = system[:, 12]
        if (probabilities < 0).any() or not probabilities.sum() > 0:
            raise UserError(f"{path}: field 13 (the map probabilities) must be >= 0 with a positive sum; "
                            f"fix that column")
        return system

    def class_params(self, cls: int) -> np.ndarray:
        if self.file_params is not None:
            return self.file_params[cls]
        o = self.options
        try:
            return ifs3d.search_system(self.rng(cls), variance=o["variance"], points=o["points"])
        except ifs3d.SearchFailed as err:
            raise UserError(f"class {cls}: {err}; lower --variance (published: 0.05)") from None

    def cloud(self, cls: int, system: np.ndarray, index: int) -> np.ndarray:
        try:
            return ifs3d.instance_cloud(system, index, self.rng(cls, index, CLOUD_STREAM), self.options["points"])
        except ValueError as err:  # only a hand-made parameter file can hold such a system
            raise UserError(f"class {self.class_name(cls)}: {err}; fix its parameter file") from None

    def eye(self, cls: int, inst: int) -> np.ndarray:
        return ifs3d.random_view(self.rng(cls, inst))

    def render(self, cls: int, params: np.ndarray, instances: Sequence[int]) -> Iterator[np.ndarray]:
        views, size = self.options["views"], self.options["size"]
        cached = (None, None)
        for inst in instances:
            inst %= self.num_instances  # on-the-fly epochs count past the class's finite set of instances
            index = inst // views
            if cached[0] != index:  # consecutive views share one chaos game
                cached = (index, self.cloud(cls, params, index))
            yield ifs3d.render_view(cached[1], self.eye(cls, inst), size)

    def image_path(self, cls: int, inst: int) -> str:
        return "image/" + super().image_path(cls, inst)

    def param_files(self, cls: int, params: np.ndarray) -> dict[str, bytes]:
        name = self.class_name(cls)
        files = {f"param/{name}.csv": params_csv.format_rows(params),
                 f"param/{params_csv.RENDER_RECORD}": self.render_record()}
        if self.options["save_ply"]:
            for index in range(self.clouds_used):
                files[f"ply/{name}/{name}_{index:04d}.ply"] = ifs3d.ply_bytes(self.cloud(cls, params, index))
        return files


class ExFractalDB(IFS3DDatabase):
    name = "exfractaldb"
    summary = "ExFractalDB (CVPR 2022): 3D IFS point clouds seen from random viewpoints, white on black"
    views_default = 7  # 145 clouds x 7 random views >= 1,000 images per class
    instances_default = 1000

    @classmethod
    def views_help(cls) -> str:
        return (f"random viewpoints per point cloud; image i shows cloud i // views "
                f"(default {cls.views_default}: 145 x 7 covers 1,000 images)")


class MVFractalDB(IFS3DDatabase):
    name = "mvfractaldb"
    summary = "MV-FractalDB (CVPR 2022): 3D IFS point clouds from 12 fixed views around the vertical axis"
    views_default = 12
    instances_default = 12 * ifs3d.INSTANCES_PER_CLASS
    image_options = (*IFS3DDatabase.image_options, "elevation", "jitter")

    @classmethod
    def add_arguments(cls, parser: argparse.ArgumentParser) -> None:
        super().add_arguments(parser)
        add_option(parser, "elevation", type=float, default=30.0,
                   help="camera elevation above the horizontal plane in degrees (default 30)")
        add_option(parser, "jitter", type=float, default=3.0,
                   help="uniform jitter of each view's azimuth and elevation, +- degrees (default 3)")

    @classmethod
    def views_help(cls) -> str:
        return ("views evenly spaced around the vertical axis; image i is view i %% views of cloud "
                "i // views (default 12)")

    def eye(self, cls: int, inst: int) -> np.ndarray:
        o = self.options
        return ifs3d.fixed_view(inst % o["views"], o["views"], self.rng(cls, inst), o["elevation"], o["jitter"])


class OFDB3D(IFS3DDatabase):
    name = "ofdb3d"
    summary = "3D-OFDB (ICCV 2023): one random view of the class's own 3D IFS cloud per class"
