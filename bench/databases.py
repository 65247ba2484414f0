"""Every database's build time per core and size on disk at its published settings, and a preview of each.

    python bench/databases.py [--previews docs/previews] [--only RCDB-1k ...]

Each row runs the database's own build script (renderers/<db>.sh, the published parameters) with
`--estimate`: fdsl renders a sample, measures CPU time per image (rendered, encoded, written) and the encoded
size, and scales both to the whole database. With --previews it also builds 4 classes (9 for one-image
databases) with the same script and writes a contact sheet DIR/<database>.png.
"""
from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys
import tempfile

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# README name, build command (a renderer script or `fdsl render` arguments), images per class in the preview
DATABASES = [
    ("FractalDB-1k", ["renderers/fractaldb.sh"], 4),
    ("1p-frac", ["renderers/onepfrac.sh"], 1),
    ("2D-OFDB-1k", ["renderers/ofdb2d.sh"], 1),
    ("RCDB-1k", ["renderers/rcdb.sh"], 4),
    ("VisualAtom-1k", ["renderers/visualatom.sh"], 4),
    ("ExFractalDB-1k", ["renderers/exfractaldb.sh"], 4),
    ("MV-FractalDB-1k", ["fdsl", "mvfractaldb", "--classes", "1000"], 4),
    ("3D-OFDB-1k", ["fdsl", "ofdb3d", "--classes", "1000"], 1),
]


def command(build: list[str], out: str, *extra: str) -> tuple[list[str], dict]:
    env = {**os.environ, "PYTHONPATH": REPO, "FDSL": f"{sys.executable} -m fdsl", "WORKERS": "1", "OUT": out}
    if build[0] == "fdsl":
        return [sys.executable, "-m", "fdsl", "render", *build[1:], "--out", out, *extra], env
    return ["bash", os.path.join(REPO, build[0]), *extra], env


def estimate(build: list[str]) -> dict:
    with tempfile.TemporaryDirectory() as tmp:
        cmd, env = command(build, os.path.join(tmp, "db"), "--estimate")
        text = subprocess.run(cmd, env=env, check=True, capture_output=True, text=True).stdout
    return {"per_core": re.search(r"([\d,]+) images/s per core", text)[1],
            "one_core": re.search(r"\(([\d.]+ \w+) on one core", text)[1],
            "disk": re.search(r"PNG folders ([\d.]+ \w+)", text)[1],
            "shards": re.search(r"shards \(--format wds\) ([\d.]+ \w+)", text)[1]}


def preview(build: list[str], per_class: int, path: str) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        out = os.path.join(tmp, "db")
        classes = 9 if per_class == 1 else 4
        cmd, env = command(build, out, "--classes", str(classes), "--instances", str(max(per_class, 1)),
                           "--no-progress")
        subprocess.run(cmd, env=env, check=True, capture_output=True)
        subprocess.run([sys.executable, "-m", "fdsl", "preview", out, "--out", path, "--classes", str(classes),
                        "--per-class", str(per_class), "--tile", "80"], env=env, check=True, capture_output=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--previews", default=None, help="also write DIR/<database>.png contact sheets")
    parser.add_argument("--only", nargs="*", default=None, help="database names to run")
    args = parser.parse_args()
    print("| database | images/s per core | build time, one core | PNG folders | shards |")
    print("| --- | --- | --- | --- | --- |")
    for name, build, per_class in DATABASES:
        if args.only and name not in args.only:
            continue
        e = estimate(build)
        print(f"| {name} | {e['per_core']} | {e['one_core']} | {e['disk']} | {e['shards']} |", flush=True)
        if args.previews:
            os.makedirs(args.previews, exist_ok=True)
            preview(build, per_class, os.path.join(args.previews, name.removesuffix("-1k").lower() + ".png"))


if __name__ == "__main__":
    main()
