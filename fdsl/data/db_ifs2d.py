"""Registry entries of the 2D IFS databases: FractalDB, 1p-frac and 2D-OFDB."""
from __future__ import annotations

import argparse
import math
import os
from collections.abc import Iterator, Sequence
from functools import cached_property

import numpy as np

from fdsl.data import params_csv
from fdsl.data.registry import Database
from fdsl.errors import UserError
from fdsl.render import ifs2d


def _add_render_options(parser: argparse.ArgumentParser, iterations: int) -> None:
    parser.add_argument("--iterations", "--iteration", type=int, default=iterations,
                        help=f"chaos-game points per image (default {iterations:,})")
    parser.add_argument("--draw-type", "--draw_type", default="patch_gray", choices=ifs2d.DRAW_TYPES,
                        help="point or 3x3 random-mask patch, gray or coloured (default patch_gray)")
    parser.add_argument("--pad", type=int, default=ifs2d.PAD, help="padding in pixels on each side (default 6)")


class FractalDB(Database):
    name = "fractaldb"
    device_batches = "fdsl.data.device.batches:IFS2DBatches"
    summary = "FractalDB (ACCV 2020): searched 2D IFS categories; weight rows x patch draws x 4 flips"

    @classmethod
    def add_arguments(cls, parser: argparse.ArgumentParser) -> None:
        super().add_arguments(parser)
        parser.set_defaults(classes=None, instances=1000, size=362)
        parser.add_argument("--category", dest="classes", type=int, help=argparse.SUPPRESS)
        parser.add_argument("--instance", type=int, default=None,
                            help="published spelling: patch draws per weight row; sets --instances to "
                                 "rows x 4 flips x this (10 -> 1,000 images per class)")
        _add_render_options(parser, iterations=200_000)
        parser.add_argument("--weight-interval", type=float, default=0.1,
                            help="build the published weight table for this interval (0.1 -> 25 rows)")
        parser.add_argument("--weights", "--weight_csv", default=None, metavar="FILE",
                            help="CSV of weight rows (six factors for a..f per row) instead of the table")
        parser.add_argument("--csv-dir", "--load_root", default=None, metavar="DIR",
                            help="render the categories of this folder of a,b,c,d,e,f,p CSVs "
                                 "(e.g. the official FractalDB-1k CSVs) instead of searching")
        parser.add_argument("--fill-rate", "--rate", type=float, default=0.2,
                            help="category search: minimum filling rate of an accepted system (default 0.2)")
        parser.add_argument("--search-points", "--numof_point", type=int, default=100_000,
                            help="category search: chaos-game points per candidate (default 100,000)")
        parser.add_argument("--search-size", type=int, default=512,
                            help="category search: render size for the filling rate (default 512)")

    # -- options resolved -------------------------------------------------------------------
    def validate(self) -> None:
        o = self.options
        if o["csv_dir"]:
            found = len(self.csv_params)  # reads every CSV now: a bad row fails before any work
            if o["classes"] is None:
                o["classes"] = found
            elif o["classes"] > found:
                raise UserError(f"--classes {o['classes']} but {o['csv_dir']} holds only {found} CSVs; "
                                f"lower --classes or add CSVs")
        elif o["classes"] is None:
            o["classes"] = 1000
        if o["instance"] is not None:  # resolved into --instances, so both spellings resume each other
            o["instances"], o["instance"] = len(self.weights) * 4 * o["instance"], None
        if o["size"] <= 2 * o["pad"]:
            raise UserError(f"--size {o['size']} must exceed twice the padding ({2 * o['pad']}); "
                            f"use a larger --size or a smaller --pad")
        if o["iterations"] < 2:
            raise UserError("--iterations must be at least 2")
        super().validate()
        if o["draw_type"].startswith("point") and self.num_instances > 4 * len(self.weights):
            raise UserError(f"point draw types give 4 distinct images per weight row "
                            f"({4 * len(self.weights)} per class); lower --instances or use patch_*")

    @cached_property
    def csv_files(self) -> list[str]:
        return params_csv.list_csvs(self.options["csv_dir"])

    @cached_property
    def csv_params(self) -> list[np.ndarray]:
        return [params_csv.read_rows(path, 7, "category CSV") for path in self.csv_files]

    @cached_property
    def weights(self) -> np.ndarray:
        if self.options["weights"]:
            return params_csv.read_rows(self.options["weights"], 6, "weight CSV")
        if not 0 < self.options["weight_interval"] <= 1:
            raise UserError("--weight-interval must be in (0, 1]; the published tables use 0.0125..0.5")
        return ifs2d.weight_table(self.options["weight_interval"])

    @property
    def draws_per_row(self) -> int:
        return math.ceil(self.num_instances / (4 * len(self.weights)))

    def plan(self, inst: int) -> tuple[int, int, int]:
        """Instance -> (weight row, patch draw, flip) in the published order: rows outermost,
        then draws, then the 4 flips, so image i of a full class is the published image i."""
        per_row = 4 * self.draws_per_row
        return inst // per_row, (inst // 4) % self.draws_per_row, inst % 4

    # -- the Database hooks -------------------------------------------------------------------
    def class_name(self, cls: int) -> str:
        if self.options["csv_dir"]:
            return os.path.splitext(os.path.basename(self.csv_files[cls]))[0]
        return super().class_name(cls)

    def class_params(self, cls: int) -> np.ndarray:
        if self.options["csv_dir"]:
            return self.csv_params[cls]
        o = self.options
        return ifs2d.search_category(self.rng(cls), rate=o["fill_rate"], points=o["search_points"],
                                     size=o["search_size"], pad=o["pad"])

    def render(self, cls: int, params: np.ndarray, instances: Sequence[int]) -> Iterator[np.ndarray]:
        o = self.options
        points_of, image_of = None, None
        for inst in instances:
            row, draw, flip = self.plan(inst)
            if points_of is None or points_of[0] != row:  # one chaos game per weight row
                maps = ifs2d.apply_weight(params, self.weights[row % len(self.weights)])
                points_of = (row, ifs2d.render_points(maps, o["iterations"], o["size"], o["pad"]))
            if image_of is None or image_of[0] != (row, draw):  # one raster per patch draw
                xs, ys = points_of[1]
                image = ifs2d.draw(xs, ys, o["size"], o["draw_type"], self.rng(cls, row, draw))
                image_of = ((row, draw), image)
            yield ifs2d.flip(image_of[1], flip)

    def image_path(self, cls: int, inst: int) -> str:
        name = self.class_name(cls)
        row, draw, flip = self.plan(inst)
        return f"{name}/{name}_{row:02d}_count_{draw}_flip{flip}.png"

    def param_files(self, cls: int, params: np.ndarray) -> dict[str, bytes]:
        return {f"param/{self.class_name(cls)}.csv": params_csv.format_rows(params)}

    def manifest(self) -> dict:
        return {**super().manifest(), "weights": self.weights.tolist()}


class OFDB2D(FractalDB):
    name = "ofdb2d"
    summary = "2D-OFDB (ICCV 2023): one image per FractalDB category (the unweighted system)"

    @classmethod
    def add_arguments(cls, parser: argparse.ArgumentParser) -> None:
        super().add_arguments(parser)
        parser.set_defaults(instances=1, size=512, iterations=100_000)

    @cached_property
    def identity_row(self) -> int:
        ones = np.flatnonzero(np.all(self.weights == 1.0, axis=1))
        return int(ones[0]) if len(ones) else 0

    def plan(self, inst: int) -> tuple[int, int, int]:
        return self.identity_row, inst, 0

    def image_path(self, cls: int, inst: int) -> str:
        name = self.class_name(cls)
        return f"{name}/{name}_{inst:04d}.png"


class OnePFrac(Database):
    name = "onepfrac"
    device_batches = "fdsl.data.device.batches:IFS2DBatches"
    summary = "1p-frac (ECCV 2024): one sigma-factor fractal, each class a delta-perturbation of it"

    @classmethod
    def add_arguments(cls, parser: argparse.ArgumentParser) -> None:
        super().add_arguments(parser)
        parser.add_argument("--sample", dest="classes", type=int, help=argparse.SUPPRESS)
        _add_render_options(parser, iterations=100_000)
        parser.add_argument("--sigma", type=float, default=4.0, help="sigma factor of the base fractal (default 4.0)")
        parser.add_argument("--sigma-margin", type=float, default=0.1,
                            help="the sigma factor is drawn in [sigma - margin, sigma + margin] (default 0.1)")
        parser.add_argument("--delta", type=float, default=0.1,
                            help="each a..f is multiplied by U(1 - delta, 1 + delta) per class (default 0.1)")
        parser.add_argument("--num-maps", "--N", type=int, default=2, help="maps of the base fractal (default 2)")
        parser.add_argument("--pixel-threshold", "--pixel_threshold", type=float, default=0.05,
                            help="a class whose image fills less than this fraction is redrawn (default 0.05)")
        parser.add_argument("--base-csv", default=None, metavar="FILE",
                            help="perturb this a,b,c,d,e,f,p system instead of sampling one")

    def validate(self) -> None:
        o = self.options
        if o["size"] <= 2 * o["pad"]:
            raise UserError(f"--size {o['size']} must exceed twice the padding ({2 * o['pad']}); "
                            f"use a larger --size or a smaller --pad")
        if not 0 <= o["delta"] < 1:
            raise UserError(f"--delta must be in [0, 1) (got {o['delta']})")
        if o["num_maps"] < 1:
            raise UserError("--num-maps must be at least 1")
        if not (0 < o["sigma"] - o["sigma_margin"] and o["sigma"] + o["sigma_margin"] <= 3 * o["num_maps"]):
            raise UserError(f"--sigma {o['sigma']} +- {o['sigma_margin']} is unreachable with {o['num_maps']} "
                            f"maps; it must lie in (0, {3 * o['num_maps']}]")
        super().validate()
        self.base  # noqa: B018  (read the base CSV now, so a bad file fails before any work)

    @cached_property
    def base(self) -> np.ndarray:
        o = self.options
        if o["base_csv"]:
            return ifs2d.with_det_probabilities(params_csv.read_rows(o["base_csv"], 7, "base CSV"))
        return ifs2d.sigma_factor_system(self.rng(), o["num_maps"], o["sigma"], o["sigma_margin"])

    def _draw(self, cls: int, inst: int, maps: np.ndarray) -> np.ndarray:
        o = self.options
        xs, ys = ifs2d.render_points(maps, o["iterations"], o["size"], o["pad"])
        return ifs2d.draw(xs, ys, o["size"], o["draw_type"], self.rng(cls, inst))

    def class_params(self, cls: int) -> np.ndarray:
        rng = self.rng(cls)
        for _ in range(1000):
            maps = ifs2d.perturb(self.base, rng, self.options["delta"])
            image = self._draw(cls, 0, maps)
            if ifs2d.filling_rate(image) >= self.options["pixel_threshold"]:
                self._accepted = (cls, image)  # render() reuses it: no second chaos game
                return maps
        raise UserError(f"class {cls}: no perturbation reached --pixel-threshold "
                        f"{self.options['pixel_threshold']} in 1000 draws; lower it or change the base")

    def render(self, cls: int, params: np.ndarray, instances: Sequence[int]) -> Iterator[np.ndarray]:
        for inst in instances:
            accepted = getattr(self, "_accepted", None)
            if inst == 0 and accepted is not None and accepted[0] == cls:
                yield accepted[1]
            else:
                yield self._draw(cls, inst, params)

    def param_files(self, cls: int, params: np.ndarray) -> dict[str, bytes]:
        return {f"param/{self.class_name(cls)}.csv": params_csv.format_rows(params)}

    def manifest(self) -> dict:
        return {**super().manifest(), "base_params": self.base.tolist()}
