"""`fdsl export CKPT --out DIR`: any checkpoint fdsl reads (its own, the papers' released files, SSL backbones) to
the timm / Hugging Face layout: model.safetensors (weights only, no pickle), config.json (as timm's push_to_hub
writes it: architecture, num_classes, label names, pretrained_cfg with the preprocessing) and a README.md model
card. `timm.create_model("local-dir:DIR", pretrained=True)`, `timm.create_model(arch, pretrained=True,
pretrained_cfg_overlay=dict(file="DIR/model.safetensors"))` and `finetune.py --pretrained-path DIR` load it."""
from __future__ import annotations

import argparse
import json
import os
import sys

from fdsl.cli import model_card
from fdsl.data import transforms
from fdsl.engine import released
from fdsl.errors import UserError
from fdsl.recipes.common import spec_of

EXAMPLES = """examples:
  fdsl export output/pretrain/run/model_best.pth.tar --out fractaldb-deit-tiny
  fdsl export exfractal_21k_base.pth.tar --out exfractal-21k-base          # a released file (docs/zoo.md)
  fdsl export FractalDB-1000_resnet50_epoch90.pth --model resnet50 --out fractaldb-1k-r50
  fdsl export last.pth.tar --out DIR --ema --labels-from data/CIFAR10/train
  fdsl export last.pth.tar --out DIR --push-to-hub me/fractaldb-deit-tiny   # needs huggingface_hub and a login

then:  timm.create_model("local-dir:DIR", pretrained=True)   or   python finetune.py DATA --pretrained-path DIR
"""


NOT_OURS = ("tag", "license", "paper_ids", "paper_name", "notes", "origin_url", "description")


def add_model_options(p: argparse.ArgumentParser) -> None:
    """The options that say which timm model the weights belong to and how its input is prepared (by default
    what the checkpoint recorded, else the architecture's timm defaults)."""
    g = p.add_argument_group("model (default: what the checkpoint recorded)")
    g.add_argument("--model", default=None, help="timm architecture (needed for files that do not name it)")
    g.add_argument("--model-kwargs", nargs="*", default=[], metavar="KEY=VALUE",
                   help="extra timm model kwargs, as at training, e.g. patch_size=4 depth=4")
    g.add_argument("--img-size", type=int, default=None, help="input image side")
    g.add_argument("--mean", type=float, nargs="+", default=None)
    g.add_argument("--std", type=float, nargs="+", default=None)
    g.add_argument("--interpolation", default=None, help="eval resize interpolation, e.g. bicubic")
    g.add_argument("--crop-pct", type=float, default=None, help="eval center-crop fraction")
    g.add_argument("--ema", action="store_true", help="the EMA weights (state_dict_ema) of an fdsl/timm checkpoint")


def load_model(args, command: str):
    """(weights, timm model holding them, timm data config) of args.ckpt."""
    weights = released.read(args.ckpt, use_ema=args.ema)
    released.check_timm(weights, command)
    opts = released.model_options(weights, args.model, args.model_kwargs, args.img_size)
    for name in ("mean", "std", "interpolation", "crop_pct"):
        if getattr(args, name) is not None:
            setattr(opts, name, getattr(args, name))
    model = released.build_model(weights, opts)
    return weights, model, transforms.data_config(spec_of(transforms.InputSpec, opts), model)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="fdsl export", description=EXAMPLES + "\n" + __doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("ckpt", metavar="CKPT", help="checkpoint file or exported directory (any layout in docs/zoo.md)")
    p.add_argument("--out", required=True, metavar="DIR", help="folder to write (created; files in it replaced)")
    p.add_argument("--labels-from", default=None, metavar="DIR",
                   help="image folder whose class subfolders name the classes (default: the training folder the "
                        "checkpoint recorded, when it is still there)")
    p.add_argument("--push-to-hub", default=None, metavar="REPO",
                   help="also upload DIR to this Hugging Face repo (needs huggingface_hub, network and a login)")
    p.add_argument("--private", action="store_true", help="with --push-to-hub: create the repo private")
    add_model_options(p)
    return p


def _write_atomic(path: str, write) -> None:
    tmp = f"{path}.tmp{os.getpid()}"
    try:
        write(tmp)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)


def _write_text(path: str, text: str) -> None:
    def write(tmp: str) -> None:
        with open(tmp, "w", encoding="utf-8") as f:
            f.write(text)

    _write_atomic(path, write)


def write_config(model, path: str, weights, data_cfg: dict, labels) -> dict:
    """config.json through timm's own writer, so it is exactly what timm's push_to_hub writes."""
    from timm.models._hub import save_config_for_hf

    preprocessing = {k: data_cfg[k] for k in ("input_size", "interpolation", "mean", "std", "crop_pct", "crop_mode")
                     if k in data_cfg}
    # the architecture's default cfg describes timm's own weights: their tag and licence are not these weights'
    model.pretrained_cfg = {**model.pretrained_cfg, **preprocessing, **dict.fromkeys(NOT_OURS)}
    provenance = {"source": os.path.basename(os.path.normpath(weights.path)), "layout": weights.layout.name,
                  "args": json.loads(json.dumps(weights.args, default=str))}
    extra = {"fdsl": provenance, **({"label_names": labels} if labels else {})}
    _write_atomic(path, lambda tmp: save_config_for_hf(model, tmp, model_config=extra))
    with open(path, encoding="utf-8") as f:
        return json.load(f)


def write_weights(model, path: str) -> int:
    from safetensors.torch import save_file

    tensors = {k: v.detach().contiguous() for k, v in model.state_dict().items()}
    _write_atomic(path, lambda tmp: save_file(tensors, tmp, metadata={"format": "pt"}))
    return len(tensors)


def push(out: str, repo: str, private: bool, user_offline: bool) -> None:
    """Upload the folder. Model creation switched huggingface_hub offline (fdsl never downloads); an upload the
    user asked for lifts that again, unless the user's own HF_HUB_OFFLINE says otherwise."""
    try:
        import huggingface_hub.constants
        from huggingface_hub import HfApi
    except ImportError:
        raise UserError(f"--push-to-hub needs huggingface_hub (pip install huggingface_hub); {out} is written, "
                        "upload it later") from None
    if not user_offline:
        os.environ.pop("HF_HUB_OFFLINE", None)
        huggingface_hub.constants.HF_HUB_OFFLINE = False
    try:
        api = HfApi()
        api.create_repo(repo, private=private, exist_ok=True)
        api.upload_folder(repo_id=repo, folder_path=out, commit_message="fdsl export")
    except Exception as err:  # noqa: BLE001 - network, auth and offline errors come in many types
        raise UserError(f"--push-to-hub {repo}: {type(err).__name__}: {str(err).splitlines()[0][:200]}; {out} is "
                        "written: log in (huggingface-cli login), unset HF_HUB_OFFLINE, and re-run") from None


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(sys.argv[1:] if argv is None else argv)
    user_offline = os.environ.get("HF_HUB_OFFLINE", "").lower() in ("1", "true", "yes", "on")
    weights, model, data_cfg = load_model(args, "export")
    labels = released.label_names(weights, model.num_classes, args.labels_from)
    if os.path.exists(args.out) and not os.path.isdir(args.out):
        raise UserError(f"--out {args.out} is a file; pass a folder to write")
    os.makedirs(args.out, exist_ok=True)
    config = write_config(model, os.path.join(args.out, "config.json"), weights, data_cfg, labels)
    card = model_card.render(weights, model, config, labels, args.out)
    _write_text(os.path.join(args.out, "README.md"), card)
    count = write_weights(model, os.path.join(args.out, "model.safetensors"))  # last: the folder loads once it exists
    print(f"export: {args.out}: {config['architecture']}, {model.num_classes} classes"
          f"{' (backbone)' if model.num_classes == 0 else ''}, {count} tensors from {weights.path} "
          f"({weights.layout.name} layout); model.safetensors, config.json, README.md")
    if args.push_to_hub:
        push(args.out, args.push_to_hub, args.private, user_offline)
        print(f"export: pushed {args.out} to https://huggingface.co/{args.push_to_hub}")
    return 0
