"""Registry entries of the contour databases: RCDB (CVPR 2022) and VisualAtom (CVPR 2023).

Every option also takes its published spelling with underscores (``--vertex_num``), so the papers'
build commands translate one to one. Lengths are in pixels of the published 512-px canvas and
scale with ``--size``.
"""
from __future__ import annotations

import argparse
from collections.abc import Iterator, Sequence
from typing import ClassVar

import numpy as np

from fdsl.data import params_csv
from fdsl.data.params_csv import ParamDir
from fdsl.data.registry import Database
from fdsl.errors import UserError
from fdsl.render import contour

LAYOUTS = ("published", "trainer")


def add_option(parser: argparse.ArgumentParser, name: str, help: str, aliases: Sequence[str] = (),
               **kwargs) -> None:
    """``--name-with-dashes`` plus its published ``--name_with_underscores`` spelling (and aliases')."""
    spellings = []
    for spelling in (name, *aliases):
        spellings += [f"--{spelling}", f"--{spelling.replace('-', '_')}"]
    if kwargs.get("type") in (int, float):
        kwargs.setdefault("metavar", "N" if kwargs["type"] is int else "X")
    parser.add_argument(*dict.fromkeys(spellings), dest=name.replace("-", "_"), help=help, **kwargs)


def add_layout_option(parser: argparse.ArgumentParser, published: str) -> None:
    add_option(parser, "layout", choices=LAYOUTS, default="published",
               help=f"published: {published}; trainer: image/<class>/<class>_<inst>.png as the "
                    f"pre-training scripts read it, plus param/<class>.csv (default published)")


def check_range(options: dict, low: str, high: str) -> None:
    if options[low] > options[high]:
        a, b = "--" + low.replace("_", "-"), "--" + high.replace("_", "-")
        raise UserError(f"{a} {options[low]} is above {b} {options[high]}; give {a} <= {b}")


def check_at_least(options: dict, key: str, minimum, meaning: str = "") -> None:
    if options[key] < minimum:
        flag = "--" + key.replace("_", "-")
        raise UserError(f"{flag} must be at least {minimum}{meaning} (got {options[key]})")


def add_shared_options(parser: argparse.ArgumentParser, r) -> None:
    """Options RCDB and VisualAtom share, with ``r`` (a ranges dataclass) giving the defaults."""
    add_option(parser, "line-num-min", type=int, default=r.line_min,
               help=f"fewest contour lines of a class; L ~ U{{min..max}} (default {r.line_min})")
    add_option(parser, "line-num-max", type=int, default=r.line_max,
               help=f"most contour lines of a class (default {r.line_max})")
    add_option(parser, "perlin-min", type=float, default=r.perlin_min,
               help=f"lowest Perlin coefficient P of a class; P ~ U(min, max) scales the per-vertex "
                    f"noise and the outward step (default {r.perlin_min:g})")
    add_option(parser, "line-width", type=float, default=r.line_width,
               help=f"w ~ U(0, this): extra outward step of every vertex per line, in pixels at size 512 "
                    f"(default {r.line_width:g}; strokes are always 1 px)")
    add_option(parser, "radius-min", type=int, default=r.radius_min,
               help=f"smallest starting-ellipse radius in pixels at size 512 (lengths scale with "
                    f"--size); r ~ U{{min..max}} (default {r.radius_min})")
    add_option(parser, "oval-rate", type=float, default=r.oval_rate,
               help=f"ellipse axis factors ox, oy ~ U(1, this) (default {r.oval_rate:g}; 1 = circles)")


def validate_shared(o: dict) -> None:
    check_at_least(o, "line_num_min", 1, " (one contour line)")
    check_range(o, "line_num_min", "line_num_max")
    check_range(o, "perlin_min", "perlin_max")
    check_at_least(o, "line_width", 0.0)
    check_at_least(o, "radius_min", 0)
    check_range(o, "radius_min", "radius_max")
    check_at_least(o, "oval_rate", 1.0, " (U(1, rate) needs rate >= 1)")
    check_at_least(o, "start_pos", 0)


# The class parameters the images use, as (type, least value) for reading them back from param/<class>.csv.
SHAPE_FIELDS = {"vertices": (int, 3), "lines": (int, 1), "perlin": (float, -np.inf),
                "line_width": (float, -np.inf)}
VISUALATOM_FIELDS = {**SHAPE_FIELDS, "radius": (int, 0), "oval_x": (float, -np.inf),
                     "oval_y": (float, -np.inf), "nami1": (int, 0), "nami2": (int, 0)}


class ContourDatabase(ParamDir, Database):
    """What RCDB and VisualAtom share: --param-dir and the param/<class>.csv files."""

    fields: ClassVar[dict] = {}
    device_batches = "fdsl.data.device.batches:ContourBatches"

    def read_class_file(self, path: str) -> dict:
        return params_csv.read_named_row(path, self.fields)

    def param_files(self, cls: int, params: dict) -> dict[str, bytes]:
        return {f"param/{self.class_name(cls)}.csv": params_csv.format_named_row(params),
                f"param/{params_csv.RENDER_RECORD}": self.render_record()}


class RCDB(ContourDatabase):
    name = "rcdb"
    summary = "RCDB (CVPR 2022): radial contours, noisier outward copies in gray on white"
    fields = SHAPE_FIELDS
    # each instance redraws radius, oval rates and centre from (seed, class, instance) with these
    image_options = ("seed", "radius_min", "radius_max", "oval_rate", "start_pos")
    output_defaults: ClassVar[dict] = {"classes": 1000, "instances": 1000, "size": 512}

    @classmethod
    def add_arguments(cls, parser: argparse.ArgumentParser) -> None:
        super().add_arguments(parser)
        parser.set_defaults(classes=None, instances=None, size=None)
        r = contour.RCDBRanges()
        add_option(parser, "vertex-num", type=int, default=r.vertex_max,
                   help=f"most vertices of a class polygon; V ~ Exponential(mean --vertex-mean) "
                        f"redrawn until 2 < V <= this (default {r.vertex_max})")
        add_option(parser, "vertex-mean", type=float, default=r.vertex_mean,
                   help=f"mean of the exponential vertex count (default {r.vertex_mean:g})")
        add_shared_options(parser, r)
        add_option(parser, "perlin-max", type=float, default=r.perlin_max,
                   help=f"highest Perlin coefficient P (default {r.perlin_max:g})")
        add_option(parser, "radius-max", type=int, default=r.radius_max,
                   help=f"largest starting radius in pixels (default {r.radius_max})")
        add_option(parser, "start-pos", type=int, default=r.start_pos,
                   help=f"centre = (512 + U{{-this..this}}) / 2 per axis at size 512, redrawn per instance "
                        f"(default {r.start_pos})")
        add_layout_option(parser, "image/<class>/<class>_<inst>.png and param/<class>.csv "
                                  "(RCDB's published layout already has the image/ level)")
        cls.add_param_dir_option(add_option, parser)

    def validate(self) -> None:
        self.resolve_param_dir()
        o = self.options
        check_at_least(o, "vertex_num", 3, " (a polygon needs 3 vertices)")
        if not o["vertex_mean"] > 0:
            raise UserError(f"--vertex-mean must be positive (got {o['vertex_mean']})")
        validate_shared(o)
        super().validate()

    @property
    def ranges(self) -> contour.RCDBRanges:
        o = self.options
        return contour.RCDBRanges(
            vertex_max=o["vertex_num"], vertex_mean=o["vertex_mean"], line_min=o["line_num_min"],
            line_max=o["line_num_max"], perlin_min=o["perlin_min"], perlin_max=o["perlin_max"],
            line_width=o["line_width"], radius_min=o["radius_min"], radius_max=o["radius_max"],
            oval_rate=o["oval_rate"], start_pos=o["start_pos"])

    def class_params(self, cls: int) -> dict:
        return self.param_class_params(cls) or contour.rcdb_class(self.rng(cls), self.ranges)

    def render(self, cls: int, params: dict, instances: Sequence[int]) -> Iterator[np.ndarray]:
        ranges, size = self.ranges, self.options["size"]
        for inst in instances:
            yield contour.rcdb_image(params, self.rng(cls, inst), size, ranges)

    def image_path(self, cls: int, inst: int) -> str:
        return "image/" + super().image_path(cls, inst)


class VisualAtom(ContourDatabase):
    name = "visualatom"
    summary = "VisualAtom (CVPR 2023): contours of two sine waves plus Perlin noise, gray on black"
    fields = VISUALATOM_FIELDS
    image_options = ("seed", "start_pos")  # each instance redraws the centre from (seed, class, instance)
    output_defaults: ClassVar[dict] = {"classes": 1000, "instances": 1000, "size": 512}

    @classmethod
    def add_arguments(cls, parser: argparse.ArgumentParser) -> None:
        super().add_arguments(parser)
        parser.set_defaults(classes=None, instances=None, size=None)
        r = contour.VisualAtomRanges()
        add_option(parser, "vertex-num", type=int, default=r.vertex_max,
                   help=f"most vertices of a class polygon; V ~ U{{--vertex-num-min..this}} "
                        f"(default {r.vertex_max})")
        add_option(parser, "vertex-num-min", type=int, default=r.vertex_min,
                   help=f"fewest vertices of a class polygon (default {r.vertex_min})")
        add_shared_options(parser, r)
        add_option(parser, "perlin-max", type=float, default=None,
                   help="highest Perlin coefficient P (default --perlin-min + 4)")
        add_option(parser, "radius-max", type=int, default=None,
                   help="largest starting radius in pixels (default --radius-min + 50)")
        add_option(parser, "start-pos", type=int, default=r.start_pos,
                   help=f"centre = (512 + U{{-this..this}}) / 2 per axis at size 512, redrawn per instance "
                        f"(default {r.start_pos})")
        for k in (1, 2):
            add_option(parser, f"nami-{k}-min", aliases=[f"nami{k}-min"], type=int, default=getattr(r, f"nami{k}_min"),
                       help=f"lowest frequency n{k} of the sine wave 0.5 sin(n{k} theta) added to "
                            f"the radial noise; n1 != n2 unless n1 = 0 (default 0)")
            add_option(parser, f"nami-{k}-max", aliases=[f"nami{k}-max"], type=int, default=getattr(r, f"nami{k}_max"),
                       help=f"highest wave frequency n{k} (default 20)")
        add_layout_option(parser, "<class>/<class>_<inst>.png as the published renderer writes")
        cls.add_param_dir_option(add_option, parser)

    def validate(self) -> None:
        self.resolve_param_dir()
        o = self.options
        if o["perlin_max"] is None:
            o["perlin_max"] = o["perlin_min"] + 4.0
        if o["radius_max"] is None:
            o["radius_max"] = o["radius_min"] + 50
        check_at_least(o, "vertex_num_min", 3, " (a polygon needs 3 vertices)")
        check_range(o, "vertex_num_min", "vertex_num")
        validate_shared(o)
        for k in (1, 2):
            check_at_least(o, f"nami_{k}_min", 0)
            check_range(o, f"nami_{k}_min", f"nami_{k}_max")
        super().validate()

    @property
    def ranges(self) -> contour.VisualAtomRanges:
        o = self.options
        return contour.VisualAtomRanges(
            vertex_min=o["vertex_num_min"], vertex_max=o["vertex_num"], line_min=o["line_num_min"],
            line_max=o["line_num_max"], perlin_min=o["perlin_min"], perlin_max=o["perlin_max"],
            line_width=o["line_width"], radius_min=o["radius_min"], radius_max=o["radius_max"],
            oval_rate=o["oval_rate"], start_pos=o["start_pos"], nami1_min=o["nami_1_min"],
            nami1_max=o["nami_1_max"], nami2_min=o["nami_2_min"], nami2_max=o["nami_2_max"])

    def class_params(self, cls: int) -> dict:
        return self.param_class_params(cls) or contour.visualatom_class(self.rng(cls), self.ranges)

    def render(self, cls: int, params: dict, instances: Sequence[int]) -> Iterator[np.ndarray]:
        ranges, size = self.ranges, self.options["size"]
        for inst in instances:
            yield contour.visualatom_image(params, self.rng(cls, inst), size, ranges)

    def image_path(self, cls: int, inst: int) -> str:
        path = super().image_path(cls, inst)
        return "image/" + path if self.options["layout"] == "trainer" else path

    def param_files(self, cls: int, params: dict) -> dict[str, bytes]:
        # in the published layout a param/ folder would sit among the class folders
        if self.options["layout"] != "trainer":
            return {}
        return super().param_files(cls, params)
