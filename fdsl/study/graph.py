"""The runs of a study and their keys.

A study expands to runs of four kinds: `data` (prepare a downstream set), `build` (render a database),
`pretrain` and `finetune`. Each run is one command line; its key is a hash of that command line with its own
paths left as fields ({out}, {runs}, {name}) and the folders it reads named by the keys of the runs that write
them, so the key covers the recipe, the source and its options, the set, the seed and every run it depends on.
Two rows that need the same run (rcdb and rcdb@e48 render the same database) share it; a changed value anywhere
upstream is a new key, so a new run. A released checkpoint enters the key by the hash of its bytes.
"""
from __future__ import annotations

import hashlib
import json
import os
import re
import shlex
from dataclasses import dataclass, field

from fdsl.study.spec import RUN_FIELDS, row_parts
from fdsl.study.template import FIELD, expand

KINDS = ("data", "build", "pretrain", "finetune")


@dataclass
class Run:
    key: str
    name: str  # its folder under STUDY_OUT/runs, its log and result file names
    kind: str
    argv: list[str]  # fields {out} {runs} {name} {python} {repo} filled in by fill()
    deps: list[str] = field(default_factory=list)  # names of the runs it reads
    meta: dict = field(default_factory=dict)  # row, set, seed (finetune runs)


def layer(variables: dict, overrides: dict) -> dict:
    """VARIABLES with OVERRIDES on top; an override that names itself ('{2 * ft_epochs}') is read from below."""
    merged = dict(variables)
    for name, value in overrides.items():
        own = isinstance(value, str) and any(re.search(rf"\b{re.escape(name)}\b", f) for f in FIELD.findall(value))
        merged[name] = expand(value, variables, RUN_FIELDS) if own else value
    return merged


def row_vars(study: dict, row: str, set_name: str | None, seed: int | None) -> dict:
    """The vars a row's commands see: the study's, the set's, the source's, then each variant's."""
    source_name, variants = row_parts(study, row, "rows")
    variables = dict(study["vars"])
    if set_name is not None:
        variables = layer(variables, study["downstream"][set_name].get("vars", {}))
    variables = layer(variables, study["sources"][source_name].get("vars", {}))
    for name, value in variants:
        spec = study["variants"][name] or {}
        variables = layer(variables, {k: str(v).replace("{value}", value) for k, v in spec.get("vars", {}).items()})
    variables.update(row=row, source=source_name)
    if seed is not None:
        variables["seed"] = seed
    return variables


def row_label(study: dict, row: str) -> str:
    """'rcdb@k4' -> 'RCDB, rendered at 4x' (the source's label, then each variant's)."""
    source_name, variants = row_parts(study, row, "rows")
    parts = [str(study["sources"][source_name]["label"])]
    for name, value in variants:
        spec = study["variants"][name] or {}
        parts.append(str(spec.get("label", f"@{name}{value}")).replace("{value}", value))
    return ", ".join(parts)


# flags that change only what a run prints, with the number of values each takes: left out of the key, so two
# studies whose pre-training lines differ only in them share the run (`reuse:`)
PRINT_ONLY = {"--log-interval": 1}


def defining(argv: list[str]) -> list[str]:
    """ARGV without the print-only flags and their values."""
    out, skip = [], 0
    for arg in argv:
        if skip:
            skip -= 1
        elif arg in PRINT_ONLY:
            skip = PRINT_ONLY[arg]
        else:
            out.append(arg)
    return out


def _key(kind: str, argv: list[str], extra: str = "") -> str:
    text = json.dumps({"kind": kind, "argv": defining(argv), "extra": extra}, sort_keys=True)
    return hashlib.sha256(text.encode()).hexdigest()[:12]


def _file_hash(path: str) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def set_rows(study: dict, set_name: str) -> list[str]:
    """The rows fine-tuned on a set: its own ``rows`` if given, else the study's."""
    return study["downstream"][set_name].get("rows") or study["rows"]


def set_seeds(study: dict, set_name: str) -> list[int]:
    return study["downstream"][set_name].get("seeds") or study["seeds"]


class Plan:
    """Every run of a study, in the order they were added (dependencies first), deduplicated by key."""

    def __init__(self, study: dict, extra_rows: list[str] = ()):
        """``extra_rows``: rows for every set beside its own (the baselines a report shows when done)."""
        self.study = study
        self.runs: dict[str, Run] = {}  # name -> run
        self.cells: list[Run] = []  # the finetune runs, one per (row, set, seed)
        self._file_hashes: dict[str, str] = {}
        self._by_key: dict[tuple[str, str], Run] = {}
        for set_name in study["downstream"]:
            rows, seeds = set_rows(study, set_name), set_seeds(study, set_name)
            for row in dict.fromkeys([*rows, *extra_rows]):
                for seed in seeds:
                    self.cells.append(self._finetune(row, set_name, seed))

    def _add(self, prefix: str, kind: str, argv: list[str], deps: list[Run], extra: str = "", **meta) -> Run:
        """The run of this command, made once: rows that need the same run share it under the first one's name
        (fractaldb@f15 differs from fractaldb only in fine-tuning: one pre-training)."""
        key = _key(kind, argv, extra)
        if kind != "finetune" and (kind, key) in self._by_key:
            return self._by_key[kind, key]
        name = f"{prefix}-{key}"
        if name not in self.runs:
            self.runs[name] = Run(key, name, kind, argv, [d.name for d in deps], meta)
            self._by_key.setdefault((kind, key), self.runs[name])
        return self.runs[name]

    def _data(self, set_name: str) -> tuple[str, list[Run]]:
        """(the set's folder, the run that writes it, if any)."""
        dset = self.study["downstream"][set_name]
        if dset.get("folder"):
            return dset["folder"], []
        if dset.get("prepare"):
            prep = dset["prepare"]
            argv = ["fdsl", "data", "prepare", str(prep["name"]), "--out", "{out}"]
            for key, flag in (("from", "--from"), ("per_class", "--per-class"),
                              ("val_from_train", "--val-from-train"), ("seed", "--seed"), ("labels", "--labels")):
                if prep.get(key) is not None:
                    argv += [flag, str(prep[key])]
        else:
            variables = layer(self.study["vars"], dset.get("vars", {}))
            argv = shlex.split(expand(dset["command"], variables, RUN_FIELDS))
        run = self._add(f"data_{set_name}", "data", argv, [])
        return "{runs}/" + run.name, [run]

    def _pretrained(self, row: str, seed: int) -> tuple[str, list[Run], str]:
        """(--pretrained-path flags, the runs they come from, what else defines them)."""
        source_name = row.split("@")[0]
        source = self.study["sources"][source_name]
        if source.get("scratch"):
            return "", [], ""
        if source.get("checkpoint"):
            path = source["checkpoint"]
            if path not in self._file_hashes:
                self._file_hashes[path] = _file_hash(path)
            return f"--pretrained-path {shlex.quote(path)}", [], self._file_hashes[path]
        build_vars = row_vars(self.study, row, None, None)
        render = ["fdsl", "render", str(source["database"]), "--out", "{out}",
                  *shlex.split(expand(source.get("render", ""), build_vars, RUN_FIELDS))]
        build = self._add(f"db_{source_name}", "build", render, [])
        pre_seed = seed if self.study["pretrain_per_seed"] else self.study["seeds"][0]
        variables = {**row_vars(self.study, row, None, pre_seed), "db": "{runs}/" + build.name}
        argv = ["fdsl", *shlex.split(expand(self.study["recipe"]["pretrain"], variables, RUN_FIELDS))]
        pre = self._add(f"pre_{row}_s{pre_seed}", "pretrain", argv, [build])
        return "--pretrained-path {runs}/" + pre.name + "/last.pth.tar", [pre], ""

    def _finetune(self, row: str, set_name: str, seed: int) -> Run:
        data, data_runs = self._data(set_name)
        pretrained, pre_runs, extra = self._pretrained(row, seed)
        variables = {**row_vars(self.study, row, set_name, seed), "data": data, "pretrained": pretrained}
        argv = ["fdsl", *shlex.split(expand(self.study["recipe"]["finetune"], variables, RUN_FIELDS))]
        return self._add(f"ft_{row}_{set_name}_s{seed}", "finetune", argv, data_runs + pre_runs, extra,
                         row=row, set=set_name, seed=seed)

    def order(self) -> list[Run]:
        return list(self.runs.values())

    def depth(self, run: Run) -> int:
        """1 for a run that needs no other, else one more than its deepest dependency (the SLURM stages)."""
        return 1 + max((self.depth(self.runs[d]) for d in run.deps), default=0)


def fill(run: Run, root: str, python: str) -> list[str]:
    """RUN's command line with its paths filled in: ['python', '-m', 'fdsl', ...] or the command as written."""
    repo = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    values = {"out": os.path.join(root, "runs", run.name), "runs": os.path.join(root, "runs"), "name": run.name,
              "python": python, "repo": repo}
    argv = [FIELD.sub(lambda m: values.get(m[1], m[0]), a) for a in run.argv]
    return [python, "-m", "fdsl", *argv[1:]] if argv[0] == "fdsl" else argv
