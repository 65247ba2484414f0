"""`fdsl evaluate CKPT --data DIR`: timm's validate.py for fdsl. Top-1, top-5, loss and per-class accuracy of a
checkpoint (fdsl's, a released one, an `fdsl export` folder) on an image folder, with fine-tuning's evaluation
preprocessing (fdsl.data.transforms: the checkpoint's data config); writes results.json and confusion.png."""
from __future__ import annotations

import argparse
import json
import os
import sys

import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader

from fdsl.cli.common import Parser
from fdsl.cli.export import add_model_options, load_model
from fdsl.data import folder, transforms
from fdsl.engine import released
from fdsl.errors import UserError

EXAMPLES = """examples:
  fdsl evaluate output/finetune/run/model_best.pth.tar --data data/CIFAR10          # its val/ or validation/
  fdsl evaluate exported-dir --data data/CIFAR10 --split test --out eval/cifar10
  fdsl evaluate FractalDB-1000_resnet50_epoch90.pth --model resnet50 --data data/FractalDB-1k --split ''
"""
MAX_TICK_LABELS = 40  # beyond this many classes the confusion matrix is drawn without class names


def build_parser() -> argparse.ArgumentParser:
    p = Parser(prog="fdsl evaluate", description=EXAMPLES + "\n" + __doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("ckpt", metavar="CKPT", help="checkpoint file or exported directory (any layout in docs/zoo.md)")
    p.add_argument("--data", required=True, metavar="DIR", help="image folder: DIR/<split>/<class>/*.png or DIR/<class>")
    p.add_argument("--split", default="validation",
                   help="subfolder of DIR to evaluate (validation also tries val; '' = DIR itself)")
    p.add_argument("--out", default=None, metavar="DIR", help="results folder (default output/evaluate/<CKPT name>)")
    p.add_argument("-b", "--batch-size", type=int, default=64)
    p.add_argument("-j", "--workers", type=int, default=2, help="DataLoader worker processes")
    p.add_argument("--device", default=None, help="cpu or cuda (default: cuda when available)")
    add_model_options(p)
    return p


def class_indices(root: str, labels: list[str] | None, num_classes: int) -> list[str]:
    """The classifier's class list the folder's labels index into: the model's label names when known (a folder
    class missing from them is an error), else the folder's classes in order (as fine-tuning numbered them)."""
    _, found = folder.scan(root)
    if labels is None:
        if len(found) > num_classes:
            raise UserError(f"{root} has {len(found)} classes but the model has {num_classes}; evaluate on the "
                            "label set it was trained on")
        return found
    unknown = [name for name in found if name not in labels]
    if unknown:
        raise UserError(f"{root} has classes the model does not know: {', '.join(unknown[:5])} (its labels are "
                        f"e.g. {', '.join(labels[:5])}); pass the folder of its label set")
    return labels


@torch.inference_mode()
def predict(model, loader, device) -> tuple[torch.Tensor, torch.Tensor, float]:
    """(top-5 predictions [N, k], targets [N], summed cross-entropy) over the loader."""
    model.to(device).eval()
    tops, targets, loss = [], [], 0.0
    for images, target in loader:
        logits = model(images.to(device)).float().cpu()
        loss += F.cross_entropy(logits, target, reduction="sum").item()
        tops.append(logits.topk(min(5, logits.shape[1]), dim=1).indices)
        targets.append(target)
    return torch.cat(tops), torch.cat(targets), loss


def metrics(top: torch.Tensor, targets: torch.Tensor, loss: float, classes: list[str]) -> dict:
    """top-1/top-5 (percent), loss, per-class accuracy and the confusion matrix of the classes present (rows:
    true class, columns: predicted; a last 'other' column counts predictions outside them)."""
    n = len(targets)
    present = sorted(set(targets.tolist()))
    column = {c: i for i, c in enumerate(present)}
    confusion = torch.zeros(len(present), len(present) + 1, dtype=torch.long)
    for t, p in zip(targets.tolist(), top[:, 0].tolist()):
        confusion[column[t], column.get(p, len(present))] += 1
    per_class = {classes[c]: {"images": int(confusion[i].sum()), "top1": 100.0 * confusion[i, i].item()
                              / max(1, int(confusion[i].sum()))} for i, c in enumerate(present)}
    out = {"images": n, "top1": 100.0 * (top[:, 0] == targets).sum().item() / n, "loss": loss / n}
    if top.shape[1] == 5:
        out["top5"] = 100.0 * (top == targets[:, None]).any(dim=1).sum().item() / n
    return dict(out, per_class=per_class, confusion={"classes": [classes[c] for c in present],
                                                     "other_column": bool(confusion[:, -1].any()),
                                                     "matrix": confusion.tolist()})


def plot_confusion(result: dict, path: str, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = result["confusion"]["classes"] + ["other"]
    matrix = torch.tensor(result["confusion"]["matrix"], dtype=torch.float64)
    if not result["confusion"]["other_column"]:
        matrix, names = matrix[:, :-1], names[:-1]
    rates = matrix / matrix.sum(dim=1, keepdim=True).clamp(min=1)
    side = min(16.0, 3.0 + 0.25 * len(names))
    fig, ax = plt.subplots(figsize=(side + 1.5, side))
    image = ax.imshow(rates.numpy(), cmap="Blues", vmin=0.0, vmax=1.0)
    fig.colorbar(image, ax=ax, label="fraction of the true class")
    if len(names) <= MAX_TICK_LABELS:
        ax.set_xticks(range(len(names)), names, rotation=90, fontsize=7)
        ax.set_yticks(range(len(result["confusion"]["classes"])), result["confusion"]["classes"], fontsize=7)
    ax.set(xlabel="predicted", ylabel="true", title=title)
    fig.tight_layout()
    tmp = f"{path}.tmp{os.getpid()}"
    fig.savefig(tmp, format="png", dpi=100)
    plt.close(fig)
    os.replace(tmp, path)


def write_json(obj, path: str) -> None:
    tmp = f"{path}.tmp{os.getpid()}"
    with open(tmp, "w", encoding="utf-8") as f:
        json.dump(obj, f, indent=2)
        f.write("\n")
    os.replace(tmp, path)


def report(result: dict) -> None:
    top5 = f" top5 {result['top5']:.2f}" if "top5" in result else ""
    print(f"evaluate: {result['images']} images, top1 {result['top1']:.2f}{top5} loss {result['loss']:.4f}")
    ranked = sorted(result["per_class"].items(), key=lambda kv: kv[1]["top1"])
    shown = ranked if len(ranked) <= 20 else ranked[:10]
    print("per class (worst first):" if len(ranked) > 20 else "per class:")
    for name, row in shown:
        print(f"  {name:<24} {row['top1']:6.2f}  ({row['images']} images)")


def default_out(ckpt: str) -> str:
    name = os.path.basename(os.path.normpath(ckpt))
    for suffix in (".tar", ".pth", ".pt", ".safetensors", ".bin", ".torch"):
        name = name.removesuffix(suffix)
    return os.path.join("output", "evaluate", name)


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(sys.argv[1:] if argv is None else argv)
    weights, model, data_cfg = load_model(args, "evaluate")
    if model.num_classes == 0:
        raise UserError(f"{args.ckpt} is a backbone without a classifier ({weights.describe()}); fine-tune it first "
                        "(fdsl finetune DATA --pretrained-path CKPT) and evaluate the run's model_best.pth.tar")
    root = folder.find_split(args.data, args.split) if args.split else args.data
    classes = class_indices(root, released.label_names(weights, model.num_classes), model.num_classes)
    dataset = folder.ImageFolder(root, transforms.eval_transform(data_cfg), classes)
    loader = DataLoader(dataset, batch_size=args.batch_size, num_workers=args.workers, shuffle=False)
    device = torch.device(args.device or ("cuda" if torch.cuda.is_available() else "cpu"))
    result = metrics(*predict(model, loader, device), classes)
    report(result)
    out = args.out or default_out(args.ckpt)
    os.makedirs(out, exist_ok=True)
    result = {"checkpoint": args.ckpt, "layout": weights.layout.name, "model": args.model or weights.arch,
              "data": root, "data_config": {k: list(v) if isinstance(v, tuple) else v for k, v in data_cfg.items()},
              **result}
    plot_confusion(result, os.path.join(out, "confusion.png"), f"{os.path.basename(root)}: top-1 {result['top1']:.1f}%")
    write_json(result, os.path.join(out, "results.json"))
    print(f"evaluate: wrote {out}/results.json and {out}/confusion.png")
    return 0
