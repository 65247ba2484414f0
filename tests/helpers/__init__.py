"""Shared helpers of the tests, imported as `tests.helpers...` (no file here is named test_*, so none is collected).

runs: tiny image folders, the `fdsl` CLI in a child process, summary.csv, a free TCP port;
tiny_models: tiny timm models and a named image folder (export, evaluate, zoo layouts);
cluster_images: oriented tiny images and a miniature VOC2007 devkit (clustering and probes);
ssl_nets: a tiny BatchNorm backbone and a loop context (MoCo, BYOL)."""
import hashlib
import os

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def tree_hashes(root: str, suffixes=(".png", ".tar", ".csv")) -> dict:
    """{relative path: sha1} of the files under root with these suffixes."""
    out = {}
    for directory, _, files in os.walk(root):
        for name in files:
            if name.endswith(suffixes):
                path = os.path.join(directory, name)
                with open(path, "rb") as handle:
                    out[os.path.relpath(path, root)] = hashlib.sha1(handle.read()).hexdigest()
    return out
