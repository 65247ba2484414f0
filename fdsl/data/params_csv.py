"""Reading and writing the published parameter CSVs: one row of numbers per map, no header.

2D systems: ``a,b,c,d,e,f,p`` (FractalDB's category CSVs); weight tables: six factors a row.
"""
from __future__ import annotations

import os

import numpy as np

from fdsl.errors import UserError


def read_rows(path: str, width: int, what: str = "parameter CSV") -> np.ndarray:
    """An (N, width) float array from ``path``; one header line of non-numbers is tolerated."""
    if not os.path.isfile(path):
        raise UserError(f"{what} {path} does not exist; check the path")
    rows = []
    with open(path, encoding="utf-8") as handle:
        for number, line in enumerate(handle, start=1):
            cells = [c.strip() for c in line.strip().split(",")]
            if cells == [""]:
                continue
            try:
                values = [float(c) for c in cells]
            except ValueError:
                if number == 1 and not rows:
                    continue  # a header line
                raise UserError(f"{path} line {number}: {line.strip()!r} is not {width} numbers; "
                                f"fix or remove that row") from None
            if len(values) != width or not np.all(np.isfinite(values)):
                raise UserError(f"{path} line {number}: expected {width} finite comma-separated numbers, "
                                f"got {len(values)}; fix or remove that row")
            rows.append(values)
    if not rows:
        raise UserError(f"{what} {path} holds no rows; give a file with {width} numbers per row")
    return np.array(rows, dtype=np.float64)


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
