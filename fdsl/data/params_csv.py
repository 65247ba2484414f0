"""Reading and writing parameter files: the published CSVs and the param/ folder of a database fdsl built.

Headerless rows of numbers, one per map: 2D systems ``a,b,c,d,e,f,p`` (FractalDB's category CSVs), 3D
systems 12 parameters and the probability; weight tables six factors a row. Contour classes (RCDB,
VisualAtom) are one header line and one row of named values. ``param/render.json`` (RENDER_RECORD) records
what else shapes the images: the seed of the per-image draws and the options those draws use, so
``--param-dir`` re-renders a database byte for byte (ParamDir).
"""
from __future__ import annotations

import json
import os
from typing import ClassVar

import numpy as np

from fdsl.errors import UserError


def read_rows(path: str, width: int, what: str = "parameter CSV") -> np.ndarray:
    """An (N, width) float array from ``path``; one header line of non-numbers is tolerated. A bad row is
    one error naming the file, the line and the field (1-based)."""
    if not os.path.isfile(path):
        raise UserError(f"{what} {path} does not exist; check the path")
    rows = []
    with open(path, encoding="utf-8") as handle:
        for number, line in enumerate(handle, start=1):
            cells = [c.strip() for c in line.strip().split(",")]
            if cells == [""]:
                continue
            if number == 1 and not rows and not any(_is_number(c) for c in cells):
                continue  # a header line
            rows.append(_numbers(path, number, cells, width))
    if not rows:
        raise UserError(f"{what} {path} holds no rows; give a file with {width} numbers per row")
    return np.array(rows, dtype=np.float64)


def _is_number(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


def _numbers(path: str, number: int, cells: list[str], width: int) -> list[float]:
    if len(cells) != width:
        raise UserError(f"{path} line {number}: expected {width} comma-separated numbers, got {len(cells)}; "
                        f"fix or remove that row")
    for field, cell in enumerate(cells, start=1):
        if not _is_number(cell) or not np.isfinite(float(cell)):
            raise UserError(f"{path} line {number}, field {field}: {cell!r} is not a finite number; "
                            f"fix or remove that row")
    return [float(c) for c in cells]


def format_rows(rows: np.ndarray) -> bytes:
    """CSV text of ``rows`` with full float precision (round-trips exactly through read_rows)."""
    return "".join(",".join(repr(float(v)) for v in row) + "\n" for row in np.asarray(rows)).encode()


def list_csvs(folder: str) -> list[str]:
    """The .csv files of a folder, sorted by name; an error if there are none."""
    if not os.path.isdir(folder):
        raise UserError(f"CSV folder {folder} does not exist; give --csv-dir the folder of category CSVs")
    names = sorted(n for n in os.listdir(folder) if n.lower().endswith(".csv"))
    if not names:
        raise UserError(f"CSV folder {folder} holds no .csv files; give the folder of category CSVs "
                        f"(one a,b,c,d,e,f,p file per class)")
    return [os.path.join(folder, n) for n in names]


# -- contour classes: a header line and one row of named values ----------------------------------------
def format_named_row(params: dict) -> bytes:
    """One header line and one row of the class parameters (ints as ints, floats at full precision)."""
    keys = list(params)
    return (",".join(keys) + "\n" + ",".join(repr(params[k]) for k in keys) + "\n").encode()


def read_named_row(path: str, fields: dict[str, tuple[type, float]]) -> dict:
    """The row of a format_named_row file as {name: int | float}, in the file's column order. ``fields``
    maps each required name to (int or float, its smallest value); other columns are kept as read."""
    lines = [line.strip() for line in _read_text(path).splitlines() if line.strip()]
    if len(lines) != 2:
        raise UserError(f"{path}: expected a header line and one row of values, found {len(lines)} lines; "
                        f"give the file fdsl render wrote")
    names, cells = ([c.strip() for c in line.split(",")] for line in lines)
    missing = [name for name in fields if name not in names]
    if missing:
        raise UserError(f"{path} line 1: no field {missing[0]!r} (the header names {', '.join(names)}); "
                        f"add that column")
    if len(cells) != len(names):
        raise UserError(f"{path} line 2: {len(cells)} values for the {len(names)} fields of line 1; "
                        f"give one value per field")
    return {name: _named_value(path, name, cell, *fields.get(name, (float, -np.inf)))
            for name, cell in zip(names, cells)}


def _named_value(path: str, name: str, cell: str, kind: type, least: float) -> int | float:
    where = f"{path} line 2, field {name!r}"
    if not _is_number(cell) or not np.isfinite(float(cell)):
        raise UserError(f"{where}: {cell!r} is not a finite number; fix the value")
    value = float(cell)
    if kind is int or cell.lstrip("+-").isdigit():
        if not value.is_integer():
            raise UserError(f"{where}: {cell!r} is not a whole number; fix the value")
        value = int(cell) if cell.lstrip("+-").isdigit() else int(value)
    if value < least:
        raise UserError(f"{where}: {cell} is below its least value {least:g}; fix the value")
    return value


def _read_text(path: str) -> str:
    if not os.path.isfile(path):
        raise UserError(f"{path} is missing; the param dir must hold one CSV per class as fdsl render wrote "
                        f"them (restore the file or lower --classes)")
    with open(path, encoding="utf-8") as handle:
        return handle.read()


# -- the param/ folder: class files plus the record of the per-image draws --------------------------------
RENDER_RECORD = "render.json"
OUTPUT_OPTIONS = ("classes", "instances", "size")  # command-line choices; the record only gives defaults


class ParamDir:
    """Mix-in for a registry Database whose class parameters are written to ``param/<class>.csv``.

    With ``--param-dir DIR`` the class parameters are read from those files instead of drawn. The images
    also draw per instance from (seed, class, instance) with some options (``image_options``): those are
    read from ``DIR/render.json`` and override the command line, so a different ``--seed`` still gives
    the same images. ``--classes``, ``--instances`` and ``--size`` default to the recorded ones.
    Subclasses set ``image_options`` and ``output_defaults`` and implement ``read_class_file``.
    """

    image_options: tuple[str, ...] = ("seed",)
    output_defaults: ClassVar[dict] = {}

    @staticmethod
    def add_param_dir_option(add_option, parser) -> None:
        add_option(parser, "param-dir", default=None, metavar="DIR",
                   help="re-render from the parameter files that fdsl render wrote to <out>/param/ (one "
                        "CSV per class and render.json, which also fixes the seed of the per-image draws, "
                        "overriding --seed); --classes, --instances and --size default to the recorded "
                        "ones (default: draw new class parameters from --seed)")

    def read_class_file(self, path: str):
        """The class parameters in one param file, as class_params returns them."""
        raise NotImplementedError

    def resolve_param_dir(self) -> None:
        """Fill the options from --param-dir (or the defaults) and read every class file now, so a bad
        file fails before any work. Sets ``param_notes``: the options the record overrode."""
        o, self.param_notes, self.file_params = self.options, [], None
        folder = o["param_dir"]
        record = self.read_record(folder) if folder else {}
        for key in OUTPUT_OPTIONS:
            if o[key] is None:
                o[key] = record.get(key, self.output_defaults[key])
        if not folder:
            return
        for key, value in record["options"].items():
            if o[key] != value:
                self.param_notes.append(f"--{key.replace('_', '-')} {value} from {self.record_path} "
                                        f"(not {o[key]}): the parameters define the images")
            o[key] = value
        if o["classes"] > record["classes"]:
            raise UserError(f"--classes {o['classes']} but {self.record_path} records {record['classes']} "
                            f"classes; give --classes {record['classes']} or fewer")
        self.file_params = [self.read_class_file(os.path.join(self.param_folder, self.class_name(cls) + ".csv"))
                            for cls in range(int(o["classes"]))]

    @property
    def param_folder(self) -> str:
        """--param-dir, or its param/ subfolder when given the database root."""
        folder = self.options["param_dir"]
        nested = os.path.join(folder, "param")
        if not os.path.isfile(os.path.join(folder, RENDER_RECORD)) and os.path.isdir(nested):
            return nested
        return folder

    @property
    def record_path(self) -> str:
        return os.path.join(self.param_folder, RENDER_RECORD)

    def read_record(self, folder: str) -> dict:
        if not os.path.isdir(folder):
            raise UserError(f"--param-dir {folder} does not exist; give the param/ folder of a database "
                            f"fdsl render built")
        path = self.record_path
        if not os.path.isfile(path):
            raise UserError(f"{path} is missing; give --param-dir the param/ folder fdsl render wrote "
                            f"(VisualAtom writes one with --layout trainer)")
        try:
            with open(path, encoding="utf-8") as handle:
                record = json.load(handle)
            wanted = {"classes", "options", *OUTPUT_OPTIONS}
            if not isinstance(record, dict) or not wanted <= set(record):
                raise ValueError(f"no {sorted(wanted - set(record))} field")
        except ValueError as err:
            raise UserError(f"{path} is not fdsl's render record ({err}); restore the file fdsl wrote") from None
        if record.get("database") != self.name:
            raise UserError(f"{path} records a {record.get('database')!r} database, not {self.name!r}; "
                            f"use fdsl render {record.get('database')}")
        if set(record["options"]) != set(self.image_options):
            raise UserError(f"{path}: options {sorted(record['options'])} are not the {self.name} ones "
                            f"{sorted(self.image_options)}; restore the file fdsl wrote")
        return record

    def render_record(self) -> bytes:
        """``param/render.json``: the same bytes from every class and worker of one build."""
        o = self.options
        record = {"database": self.name, **{key: o[key] for key in OUTPUT_OPTIONS},
                  "options": {key: o[key] for key in self.image_options}}
        return (json.dumps(record, indent=2, sort_keys=True) + "\n").encode()

    def manifest(self) -> dict:
        manifest = super().manifest()
        if manifest["options"].get("param_dir") is None:  # folders built before --param-dir still resume
            manifest["options"] = {k: v for k, v in manifest["options"].items() if k != "param_dir"}
        return manifest

    def param_class_params(self, cls: int):
        """The class parameters read from --param-dir, or None without one."""
        return None if self.file_params is None else self.file_params[cls]
