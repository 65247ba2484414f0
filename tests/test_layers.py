"""The house rules of fdsl/, checked on the source: the rooms import only the rooms below them, no module imports
a circle at import time, and the command line's argparse Namespace is read in fdsl/cli/ (the parsers) and
fdsl/recipes/ (the run wiring) only: everything below them takes typed specs (dataclasses) built there."""
from __future__ import annotations

import ast
import pathlib
import re

ROOT = pathlib.Path(__file__).resolve().parents[1] / "fdsl"
EDGE = ("cli", "recipes")
# `args.name` (not a dict's `args.get(...)`, not the file args.yaml), `getattr(args, ...)`, `vars(args)`
NAMESPACE = re.compile(r"getattr\(args\b|\bargs\.(?!get\(|yaml\b)\w|vars\(args\)")
# files below the edge that still read the command line by name, each with the reason
ALLOWED = {
    "data/batch_augment/spec.py": "AugmentSpec.from_args reads the augmentation options by name from the typed "
                                  "fdsl.data.transforms.TrainAugment the engine hands it (or a Namespace)",
    "data/device/options.py": "DeviceSourceOptions.from_args: the --synthetic-device options, read once where the "
                              "device source is built",
    "engine/released.py": "checkpoints of timm's train.py hold their options as a pickled argparse Namespace; "
                          "_plain_args turns it into a dict",
}


def namespace_readers() -> dict[str, list[int]]:
    found = {}
    for path in sorted(ROOT.rglob("*.py")):
        rel = path.relative_to(ROOT).as_posix()
        if rel.split("/")[0] in EDGE:
            continue
        lines = [n for n, line in enumerate(path.read_text().splitlines(), 1)
                 if NAMESPACE.search(line.split("#")[0])]
        if lines:
            found[rel] = lines
    return found


def test_only_the_cli_and_the_recipes_read_an_argparse_namespace():
    unexpected = {rel: lines for rel, lines in namespace_readers().items() if rel not in ALLOWED}
    assert not unexpected, f"argparse Namespace read below fdsl/cli and fdsl/recipes (file: lines): {unexpected}"


def test_every_allowed_file_still_needs_its_exception():
    stale = sorted(set(ALLOWED) - set(namespace_readers()))
    assert not stale, f"these files no longer read a Namespace; drop them from ALLOWED: {stale}"


# the rooms from the bottom up; a room imports only rooms below it (a set is one level)
LAYERS = [{"errors", "__version__", "launch", "checkpoint_io"}, {"render"}, {"data"}, {"models"}, {"engine"},
          {"eval"}, {"ssl"}, {"recipes"}, {"study"}, {"cli"}, {"api", "__init__", "__main__"}]
LEVEL = {room: level for level, rooms in enumerate(LAYERS) for room in rooms}
# (importing module, imported module): imports that run up, each with the reason
UP_ALLOWED = {
    ("fdsl.study.worker", "fdsl.cli.main"): "a study's runs are fdsl command lines, run in-process in its workers "
                                            "(imported inside the worker, never at import time)",
}


def fdsl_imports() -> dict[str, list[tuple[str, bool]]]:
    """{module: [(imported fdsl module, at import time?)]} of every module under fdsl/."""
    graph = {}
    for path in sorted(ROOT.rglob("*.py")):
        parts = path.relative_to(ROOT.parent).with_suffix("").parts
        module = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
        tree = ast.parse(path.read_text())
        top = {id(n) for n in tree.body}
        found = []
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom) and node.module and node.module.split(".")[0] == "fdsl":
                names = [f"{node.module}.{a.name}" for a in node.names]
                # `from fdsl import __version__` names a room's module-level value: its room is the name
                targets = [n for n in names if _is_module(n) or node.module == "fdsl"] or [node.module]
                found += [(t, id(node) in top) for t in targets]
            elif isinstance(node, ast.Import):
                found += [(a.name, id(node) in top) for a in node.names if a.name.split(".")[0] == "fdsl"]
        graph[module] = found
    return graph


def _is_module(name: str) -> bool:
    path = ROOT.parent.joinpath(*name.split("."))
    return path.with_suffix(".py").exists() or (path / "__init__.py").exists()


def _room(module: str) -> str:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else "__init__"


def test_the_rooms_import_only_the_rooms_below_them():
    up = [(a, b) for a, imports in fdsl_imports().items() for b, _ in imports
          if LEVEL[_room(b)] > LEVEL[_room(a)] and (a, b) not in UP_ALLOWED]
    assert not up, f"imports that run up the house (LAYERS): {sorted(set(up))}"
    assert all(_room(a) in LEVEL for a in fdsl_imports()), "a new room: place it in LAYERS"


def test_no_module_imports_a_circle_at_import_time():
    graph = {a: sorted({b for b, at_top in imports if at_top and b in fdsl_imports_cached()})
             for a, imports in fdsl_imports_cached().items()}
    state: dict[str, int] = {}

    def visit(node: str, path: list[str]) -> list[str] | None:
        state[node] = 1
        for nxt in graph.get(node, []):
            if state.get(nxt) == 1:
                return path + [node, nxt]
            if not state.get(nxt):
                found = visit(nxt, path + [node])
                if found:
                    return found
        state[node] = 2
        return None

    for module in graph:
        if not state.get(module):
            circle = visit(module, [])
            assert circle is None, f"an import circle at import time: {' -> '.join(circle)}"


_CACHE: dict = {}


def fdsl_imports_cached() -> dict:
    if not _CACHE:
        _CACHE.update(fdsl_imports())
    return _CACHE
