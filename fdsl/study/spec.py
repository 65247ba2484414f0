"""Loading a study file (YAML), applying `--set key=value`, and checking it: every problem is one line that names
the key and says what to give instead. docs/study.md describes the keys; studies/ holds examples."""
from __future__ import annotations

import os
import re

import yaml

from fdsl.errors import UserError
from fdsl.study.template import TemplateError, expand

TOP_KEYS = {"name", "out", "reuse", "seeds", "rows", "baselines", "pretrain_per_seed", "vars", "recipe", "variants",
            "sources", "downstream", "metric"}
SOURCE_KINDS = ("scratch", "database", "checkpoint")
SOURCE_KEYS = {"label", "render", "vars", *SOURCE_KINDS}
SET_KINDS = ("folder", "prepare", "command")
SET_KEYS = {"label", "vars", "rows", "seeds", *SET_KINDS}  # rows, seeds: this set's own (else the study's)
PREPARE_KEYS = {"name", "per_class", "val_from_train", "seed", "from", "labels"}
RECIPE_KEYS = {"pretrain", "finetune"}
# the run's own paths, filled in when it runs (not part of what defines it)
RUN_FIELDS = frozenset({"out", "runs", "name", "python", "repo"})


def load(path: str, sets: list[str] = ()) -> dict:
    """The study in PATH with SETS ('key=value', dotted keys, YAML values) applied, checked, paths made absolute."""
    if not os.path.isfile(path):
        raise UserError(f"no study file {path}; give the path of a study YAML (examples in studies/)")
    with open(path) as f:
        try:
            study = yaml.safe_load(f) or {}
        except yaml.YAMLError as err:
            mark = getattr(err, "problem_mark", None)
            where = f" at line {mark.line + 1}" if mark else ""
            raise UserError(f"{path}: not valid YAML{where}; fix the file") from None
    if not isinstance(study, dict):
        raise UserError(f"{path}: a study is a mapping of keys (seeds, sources, downstream, recipe, ...)")
    for item in sets:
        apply_set(study, item)
    study.setdefault("name", os.path.splitext(os.path.basename(path))[0])
    return check(study, path)


def apply_set(study: dict, item: str) -> None:
    """'vars.pre_epochs=1' -> study['vars']['pre_epochs'] = 1. Keys must exist, except new sources and sets."""
    key, sep, text = item.partition("=")
    if not sep or not key:
        raise UserError(f"--set {item!r}: give key=value (e.g. --set vars.ft_epochs=2)")
    value = yaml.safe_load(text) if text.strip() else ""
    parts = key.split(".")
    node = study
    for depth, part in enumerate(parts):
        creating = depth >= 1 and parts[0] in ("sources", "downstream")
        if part not in node and not creating and (depth > 0 or part not in TOP_KEYS):
            known = ", ".join(sorted(node)) if depth else ", ".join(sorted(TOP_KEYS))
            raise UserError(f"--set {key}: no key {part!r} here; known keys: {known}")
        if depth == len(parts) - 1:
            node[part] = value
        else:
            node = node.setdefault(part, {})
            if not isinstance(node, dict):
                raise UserError(f"--set {key}: {'.'.join(parts[:depth + 1])} is not a mapping")


def _fail(path: str, key: str, problem: str) -> UserError:
    return UserError(f"{path}: {key}: {problem}")


def _words(value, path: str, key: str) -> list[str]:
    """A list, or a string of words ('0 1 2', as the shell variables give them)."""
    if isinstance(value, (str, int, float)):
        return str(value).replace(",", " ").split()
    if isinstance(value, list):
        return [str(v) for v in value]
    raise _fail(path, key, "give a list (or a string of words separated by spaces)")


def check(study: dict, path: str) -> dict:
    unknown = set(study) - TOP_KEYS
    if unknown:
        raise _fail(path, min(unknown), f"unknown key; the keys are: {', '.join(sorted(TOP_KEYS))}")
    study["seeds"] = _seeds(study.get("seeds", [0]), path, "seeds")
    study["out"] = os.path.abspath(str(study.get("out") or study["name"] + "_out"))
    study["reuse"] = [os.path.abspath(d) for d in _words(study.get("reuse") or [], path, "reuse")]
    for folder in study["reuse"]:
        if not os.path.isdir(os.path.join(folder, "results")):
            raise _fail(path, "reuse", f"{folder} is not a study's output folder (no results/ in it); give the "
                                       "`out` folder of an earlier study")
    study["pretrain_per_seed"] = bool(study.get("pretrain_per_seed", False))
    study["metric"] = str(study.get("metric", "eval_top1"))
    for key in ("vars", "variants", "sources", "downstream", "recipe"):
        study[key] = study.get(key) or {}
        if not isinstance(study[key], dict):
            raise _fail(path, key, "give a mapping (name: value)")
    _check_recipe(study, path)
    for name, source in study["sources"].items():
        _check_source(name, source, path)
    for name, dset in study["downstream"].items():
        _check_set(name, dset, path)
    if not study["sources"] or not study["downstream"]:
        raise _fail(path, "sources" if not study["sources"] else "downstream", "give at least one")
    study["rows"] = _words(study.get("rows") or list(study["sources"]), path, "rows")
    study["baselines"] = _words(study.get("baselines") or [], path, "baselines")
    for key in ("rows", "baselines"):
        for row in study[key]:
            row_parts(study, row, f"{path}: {key}")
    for name, dset in study["downstream"].items():
        if dset.get("seeds") is not None:
            dset["seeds"] = _seeds(dset["seeds"], path, f"downstream.{name}.seeds")
        if dset.get("rows") is not None:
            dset["rows"] = _words(dset["rows"], path, f"downstream.{name}.rows")
            for row in dset["rows"]:
                row_parts(study, row, f"{path}: downstream.{name}.rows")
    _check_templates(study, path)
    return study


def _seeds(value, path: str, key: str) -> list[int]:
    try:
        seeds = [int(s) for s in _words(value, path, key)]
    except ValueError:
        raise _fail(path, key, "give whole numbers (e.g. [0, 1, 2])") from None
    if not seeds or len(set(seeds)) != len(seeds):
        raise _fail(path, key, "give one or more different seeds")
    return seeds


def _check_recipe(study: dict, path: str) -> None:
    recipe = study["recipe"]
    if set(recipe) - RECIPE_KEYS or "finetune" not in recipe:
        raise _fail(path, "recipe", "give finetune: (and pretrain: for database sources), each an fdsl command line")
    for key, text in recipe.items():
        if not isinstance(text, str) or not text.split() or text.split()[0] != key:
            raise _fail(path, f"recipe.{key}", f"give the fdsl command line, starting with '{key}'")


def _kind_of(entry, key: str, path: str, keys: set, kinds: tuple, choices: str) -> str:
    """The one kind KEY's mapping is (a source: scratch, database or checkpoint; a set: folder, prepare or
    command); a non-mapping, an unknown key or not exactly one kind is one line naming the key."""
    if not isinstance(entry, dict):
        raise _fail(path, key, f"give a mapping with one of {choices}")
    unknown = set(entry) - keys
    if unknown:
        raise _fail(path, f"{key}.{min(unknown)}", f"unknown key; give {', '.join(sorted(keys))}")
    found = [k for k in kinds if entry.get(k)]
    if len(found) != 1:
        raise _fail(path, key, f"give exactly one of {choices}")
    return found[0]


def _check_source(name: str, source, path: str) -> None:
    key = f"sources.{name}"
    kind = _kind_of(source, key, path, SOURCE_KEYS, SOURCE_KINDS, "scratch: true, database: NAME, checkpoint: FILE")
    if kind == "checkpoint":
        source["checkpoint"] = os.path.abspath(str(source["checkpoint"]))
        if not os.path.isfile(source["checkpoint"]):
            raise _fail(path, f"{key}.checkpoint", f"no file {source['checkpoint']}; give an existing checkpoint")
    if "render" in source and kind != "database":
        raise _fail(path, f"{key}.render", "render flags go with database: NAME only")
    if not isinstance(source.get("vars", {}), dict):
        raise _fail(path, f"{key}.vars", "give a mapping (name: value)")
    source.setdefault("label", name)


def _check_set(name: str, dset, path: str) -> None:
    key = f"downstream.{name}"
    kind = _kind_of(dset, key, path, SET_KEYS, SET_KINDS, "folder: DIR, prepare: {name: ...}, command: '...'")
    if kind == "folder":
        dset["folder"] = os.path.abspath(str(dset["folder"]))
        if not os.path.isdir(os.path.join(dset["folder"], "train")):
            raise _fail(path, f"{key}.folder", f"no {dset['folder']}/train; give a folder with train/ and val/ "
                        "(fdsl data prepare writes one)")
    if kind == "prepare":
        prep = dset["prepare"]
        if not isinstance(prep, dict) or "name" not in prep or set(prep) - PREPARE_KEYS:
            raise _fail(path, f"{key}.prepare", f"give a mapping with name: and any of {sorted(PREPARE_KEYS)}")
        if prep.get("from"):
            prep["from"] = os.path.abspath(str(prep["from"]))
    if not isinstance(dset.get("vars", {}), dict):
        raise _fail(path, f"{key}.vars", "give a mapping (name: value)")
    dset.setdefault("label", name)


def row_parts(study: dict, row: str, where: str) -> tuple[str, list[tuple[str, str]]]:
    """'rcdb@k4@lines' -> ('rcdb', [('k', '4'), ('lines', '')]): the source and its variants (name, value)."""
    source, *parts = row.split("@")
    if source not in study["sources"]:
        raise UserError(f"{where}: no source {source!r}; the sources are: {', '.join(study['sources'])}")
    variants = []
    for part in parts:
        name = next((v for v in sorted(study["variants"], key=len, reverse=True)
                     if part == v or (part.startswith(v) and re.fullmatch(r"[0-9.]+", part[len(v):]))), None)
        if name is None:
            known = ", ".join(f"@{v}" for v in study["variants"]) or "none defined"
            raise UserError(f"{where}: unknown row variant '@{part}' in {row!r} (variants: {known})")
        variants.append((name, part[len(name):]))
    return source, variants


def _check_templates(study: dict, path: str) -> None:
    """Every row's commands expand (a missing var or a bad field is caught before any run starts)."""
    from fdsl.study.graph import row_vars

    for set_name, dset in study["downstream"].items():
        for row in dict.fromkeys((dset.get("rows") or study["rows"]) + study["baselines"]):
            variables = row_vars(study, row, set_name, seed=study["seeds"][0])
            texts = {"recipe.finetune": study["recipe"]["finetune"]}
            source = study["sources"][row.split("@")[0]]
            if "database" in source:
                if "pretrain" not in study["recipe"]:
                    raise _fail(path, "recipe.pretrain", f"source {row!r} is a database: give the pretrain command")
                texts["recipe.pretrain"] = study["recipe"]["pretrain"]
                texts[f"sources.{row.split('@')[0]}.render"] = source.get("render", "")
            for key, text in texts.items():
                try:
                    expand(text, {**variables, "db": "", "data": "", "pretrained": ""}, RUN_FIELDS)
                except TemplateError as err:
                    raise _fail(path, key, f"{err} (row {row}, set {set_name})") from None
