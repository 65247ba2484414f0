"""The README.md model card of `fdsl export`, made from what fdsl knows about the weights: the pre-training
database and its build options (the checkpoint's args, the database's manifest.json), the recipe, the command
that trained it, the final metrics of its run, and the paper to cite."""
from __future__ import annotations

import csv
import json
import os

from fdsl.engine import zoo

RECIPE = ("epochs", "batch_size", "opt", "lr", "weight_decay", "sched", "warmup_epochs", "smoothing", "mixup",
          "cutmix", "aa", "drop_path", "reprob", "amp", "seed")
NOT_IN_COMMAND = {"resume", "output", "experiment", "run_dir", "kind", "log_wandb", "device", "workers"}


def database_info(weights, depth: int = 0) -> dict | None:
    """{'database', 'options', 'source', ...} of what the weights were pre-trained on, or None. A fine-tuned
    checkpoint's comes from the checkpoint it started from (--pretrained-path), when that file is still there."""
    from fdsl.data.builder import MANIFEST
    from fdsl.engine import released
    from fdsl.errors import UserError

    args = weights.args
    if args.get("kind") == "finetune":
        start = args.get("pretrained_path")
        if not start or depth > 3 or not os.path.exists(start):
            return None
        try:
            return database_info(released.read(start), depth + 1)
        except UserError:
            return None
    if args.get("synthetic"):
        return {"database": args["synthetic"], "options": args.get("synthetic_opt") or [],
                "num_classes": args.get("num_classes"), "num_instances": args.get("synthetic_instances"),
                "source": "rendered on the fly (--synthetic)"}
    roots = [args.get(k) for k in ("data_dir", "train_dir") if args.get(k)]
    if args.get("trainshards"):
        roots.append(os.path.dirname(args["trainshards"]))
    for root in roots:
        for folder in (root, os.path.dirname(os.path.normpath(root))):
            path = os.path.join(folder, MANIFEST)
            if os.path.isfile(path):
                with open(path, encoding="utf-8") as f:
                    return dict(json.load(f), source=path)
    if weights.released:
        return {"database": weights.released.database, "source": f"released file {weights.released.file}"}
    if weights.config.get("fdsl", {}).get("database"):
        return weights.config["fdsl"]["database"]
    return None


def final_metrics(weights) -> dict | None:
    """The last validated epoch of the run's summary.csv (beside the checkpoint), else the file's metric."""
    path = os.path.join(os.path.dirname(os.path.abspath(weights.path)), "summary.csv")
    if weights.layout.name in ("fdsl", "timm") and os.path.isfile(path):
        with open(path, encoding="utf-8") as f:
            rows = [r for r in csv.DictReader(f) if r.get("eval_top1")]
        if rows:
            keep = ("epoch", "eval_top1", "eval_top5", "eval_loss")
            return {k: rows[-1][k] for k in keep if rows[-1].get(k)}
    if weights.metric is not None:
        return {"epoch": weights.epoch, "metric": weights.metric}
    return weights.config.get("fdsl", {}).get("metrics")


def _flag(action, value) -> str:
    name = next((s for s in action.option_strings if s.startswith("--")), action.option_strings[0])
    if action.nargs == 0:
        return name
    values = value if isinstance(value, (list, tuple)) else [value]
    return " ".join([name, *map(str, values)])


def training_command(args: dict) -> str | None:
    """The `fdsl pretrain|finetune` command line of the training args: every flag that differs from its default."""
    from fdsl.cli.args import build_parser

    if not args.get("model"):
        return None
    kind = args.get("kind") if args.get("kind") in ("pretrain", "finetune") else "pretrain"
    parts = [f"fdsl {kind}", str(args.get("data_dir") or "DATA"), f"--model {args['model']}"]
    for action in build_parser(kind)._actions:
        skip = NOT_IN_COMMAND | {"help", "model"}
        if not action.option_strings or action.dest in skip or action.dest not in args:
            continue
        value = args[action.dest]
        if value is None or value is False or value == action.default or (
                isinstance(value, list) and list(value) == list(action.default or [])):
            continue
        parts.append(_flag(action, value))
    return " ".join(parts)


def _cite(weights, database: dict | None) -> str | None:
    key = (weights.released.paper if weights.released else None) or zoo.paper_of_database(
        (database or {}).get("database"))
    return zoo.PAPERS.get(key) if key else None


def _rows(weights, model, arch: str, data_cfg: dict, labels, database, metrics) -> list[tuple[str, str]]:
    params = sum(p.numel() for p in model.parameters()) / 1e6
    classes = (f"{model.num_classes}" + (" (label names in config.json)" if labels else "")
               if model.num_classes else "none: a backbone (pass num_classes to timm for a new head)")
    size = "x".join(map(str, data_cfg["input_size"]))
    rows = [("architecture", f"`{arch}`"), ("parameters", f"{params:.2f} M"), ("classes", classes),
            ("input", (f"{size}, mean {tuple(data_cfg['mean'])}, std {tuple(data_cfg['std'])}, "
                      f"{data_cfg['interpolation']}, crop_pct {data_cfg['crop_pct']}")),
            ("source file", f"`{os.path.basename(os.path.normpath(weights.path))}` ({weights.describe()})")]
    if database:
        options = database.get("options")
        text = f"{database.get('database')}" + (f", options `{json.dumps(options)}`" if options else "")
        for key in ("num_classes", "num_instances"):
            if database.get(key):
                text += f", {key.replace('num_', '')} {database[key]}"
        rows.append(("pre-training database", text + f" (from {database.get('source')})"))
    if weights.args.get("kind") == "finetune" and weights.args.get("data_dir"):
        rows.append(("fine-tuned on", f"`{weights.args['data_dir']}`"))
    if weights.epoch is not None:
        rows.append(("last epoch", f"{weights.epoch} (counted from 0)"))
    if metrics:
        rows.append(("final metrics", ", ".join(f"{k} {v}" for k, v in metrics.items())))
    return rows


def render(weights, model, config: dict, labels, out_dir: str) -> str:
    """The model card's Markdown; `config`: the config.json written beside it."""
    database, metrics = database_info(weights), final_metrics(weights)
    arch, n, data_cfg = config["architecture"], model.num_classes, config["pretrained_cfg"]
    name = os.path.basename(os.path.normpath(out_dir))
    lines = ["---", "library_name: timm", "tags:", "- image-classification", "- timm", "- fdsl",
             "- formula-driven-supervised-learning", "---", "", f"# {name}", "",
             (f"`{arch}` weights exported by fdsl (`fdsl export`) in the timm / Hugging Face layout: "
             "`model.safetensors` (weights only) and `config.json` (architecture, classes, preprocessing)."), "",
             "| | |", "| --- | --- |"]
    lines += [f"| {k} | {v} |" for k, v in _rows(weights, model, arch, data_cfg, labels, database, metrics)]
    recipe = [f"- {k}: {weights.args[k]}" for k in RECIPE if weights.args.get(k) not in (None, "", False)]
    if recipe:
        lines += ["", "## Recipe", "", *recipe]
    command = training_command(weights.args) if weights.layout.name in ("fdsl", "timm") else None
    if command:
        lines += ["", "## Command", "", ("Reconstructed from the checkpoint's arguments (flags that differ from the "
                  "defaults):"), "", "```bash", command, "```"]
    model_args = {k: v for k, v in config.get("model_args", {}).items() if k not in ("num_classes", "global_pool")}
    kwargs = ", ".join(f"{k}={v!r}" for k, v in model_args.items())
    overlay = f'pretrained_cfg_overlay=dict(file="{name}/model.safetensors", num_classes={n})'
    lines += ["", "## Use", "", "```python", "import timm", "",
              f'model = timm.create_model("local-dir:{name}", pretrained=True)  # weights, head, preprocessing',
              f'model = timm.create_model("{arch}", pretrained=True, num_classes={n}, {overlay}'
              + (f", {kwargs}" if kwargs else "") + ")", "```", "", "```bash",
              f"fdsl finetune DATA --model {arch} --pretrained-path {name}"
              + (f" --model-kwargs {' '.join(weights.args.get('model_kwargs') or [])}"
                 if weights.args.get("model_kwargs") else ""),
              f"fdsl evaluate {name} --data DATA", "```"]
    cite = _cite(weights, database)
    if cite:
        lines += ["", "## Citation", "", f"Please cite: {cite}."]
    return "\n".join(lines) + "\n"
