"""The command line's argparse Namespace is read in fdsl/cli/ (the parsers) and fdsl/recipes/ (the run wiring)
only: everything below them takes typed specs (dataclasses) built there."""
from __future__ import annotations

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
