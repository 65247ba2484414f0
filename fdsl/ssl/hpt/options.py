"""The options of the HPT stages, in one place: `fdsl hpt pretrain|linear|finetune` build their argparse
parsers from these tables (fdsl.cli.hpt_options), a stage config YAML sets the same keys, and the project
generator checks its `pretrain:` overrides against them.

Each entry: key -> (default, help). A default of None for a method-dependent value means "the published
value of the method" (METHOD_DEFAULTS).
"""
from __future__ import annotations

import difflib

from fdsl.errors import UserError

# how a stage runs, the same for pre-training and probes
RUN = {
    "workers": (8, "DataLoader workers per process"),
    "amp": (False, "mixed precision on CUDA"),
    "device": (None, "cpu or cuda (default: cuda when available)"),
    "pause_updates": (None, "stop after this many steps of this invocation (the same command resumes)"),
    "log_wandb": (False, "log to wandb (offline unless WANDB_MODE says otherwise)"),
    "log_tensorboard": (False, "log to TensorBoard (<output>/tensorboard)"),
    "project_name": ("fdsl-hpt", "wandb project"),
    "group_name": (None, "wandb group"),
    "entity_name": ("YOUR_ENTITY", "wandb entity"),
}

PRETRAIN = {
    "method": ("moco", "moco (MoCo v2) or byol"),
    "arch": ("resnet50", "backbone: any timm model with a pooled feature, or torchvision:resnet50"),
    "base": ("", "base checkpoint to start from (torchvision-style, MoCo/BYOL/OpenSelfSup, fdsl); '' = random"),
    "random_init": ("auto", ("without --base: auto (ResNets as the published OpenSelfSup init: conv kaiming "
                            "fan_in, BN gamma 1; other models their own), openselfsup, or model (timm's init)")),
    "base_name": (None, "name of the base in output names and the backbone's .json (default: its file stem)"),
    "dataset": ("target", "name of the data set pre-trained on (recorded with the backbone)"),
    "iters": (5000, "training budget in optimiser steps (each of batch_size x accum_steps images)"),
    "bn_only": (False, "HPT-BN: train only the backbone's BatchNorm parameters and statistics"),
    "data_root": (None, "folder the list paths are relative to (default: the list's folder)"),
    "train_list": (None, "image list of the pre-training images (labels ignored)"),
    "train_folder": (None, "... or an image folder"),
    "train_shards": (None, "... or webdataset shards '/path/train-{000000..000009}.tar'"),
    "synthetic": (None, "... or an fdsl database rendered on the fly (e.g. fractaldb)"),
    "synthetic_classes": (1000, "classes of the --synthetic database"),
    "synthetic_instances": (1000, "instances per class of the --synthetic database"),
    "synthetic_seed": (0, "seed of the --synthetic database"),
    "dataset_size": (None, "images per epoch of --train-shards (default: from the shard names)"),
    "mean": ([0.485, 0.456, 0.406], "per-channel pixel mean in 0-1 of the pre-training data (fdsl mean-std)"),
    "std": ([0.229, 0.224, 0.225], "per-channel pixel std in 0-1"),
    "crop_size": (224, "training crop"),
    "aug": ("full", "MoCo augmentation: full, crop_only (= simple), crop_blur, rm_color, rm_gray"),
    "hue": (0.4, "MoCo colour-jitter hue (HPT 0.4; upstream OpenSelfSup 0.1)"),
    "batch_size": (None, "GLOBAL images per forward pass, split over the processes (moco 256, byol 128)"),
    "accum_steps": (None, "forward/backward passes per optimiser step (moco 1, byol 2)"),
    "optimizer": (None, "sgd (moco) or lars (byol)"),
    "lr": (None, "base learning rate (moco 0.03, byol 0.3)"),
    "momentum": (0.9, "optimiser momentum"),
    "weight_decay": (None, "weight decay (moco 1e-4, byol 1e-6; LARS: not on BN/bias)"),
    "lars_eta": (0.001, "LARS trust coefficient"),
    "warmup_iters": (None, "linear warm-up steps before the cosine (moco 0, byol 10)"),
    "warmup_ratio": (1e-4, "warm-up starts at lr x this"),
    "published_schedule": (True, ("BYOL as the published configs and trainer: --iters N trains 2N steps of "
                                 "batch_size x accum_steps, warm-up, cosine and tau count forward passes; "
                                 "false: N steps, all counted in steps (no effect on MoCo)")),
    "queue_size": (65536, "MoCo: negatives in the queue (a multiple of the global batch)"),
    "moco_momentum": (0.999, "MoCo: key-encoder momentum"),
    "temperature": (0.2, "MoCo: InfoNCE temperature"),
    "feat_dim": (128, "MoCo: embedding size"),
    "neck_hidden": (None, "MoCo: hidden width of the MLP neck (default: the backbone's feature size)"),
    "bn_group_size": (64, "MoCo: images per BatchNorm group, as the published 4 GPUs x 64 on any number of "
                          + "devices (0: the whole per-process batch)"),
    "byol_momentum": (0.99, "BYOL: target momentum at the start (cosine to 1)"),
    "proj_dim": (256, "BYOL: projection size"),
    "proj_hidden": (4096, "BYOL: hidden width of projector and predictor"),
    "sync_bn": (True, "BYOL: SyncBatchNorm across processes (CUDA only; one process: plain BN)"),
    "checkpoint_interval": (0, "also keep the backbone every N steps, backbone_<N>.pth (0: only the final one)"),
    "epoch_updates": (500, "optimiser steps per epoch: the resume checkpoint, summary row and k-NN probe"),
    "knn_train_list": (None, "labeled list of the k-NN memory bank, probed at every checkpoint"),
    "knn_val_list": (None, "labeled list the k-NN probe is scored on"),
    "knn_k": (20, "neighbours of the k-NN probe"),
    "test_precrop_size": (256, "resize before the centre crop of the k-NN images"),
    "class_map": (None, "multi-label value map of the lists (unused in pre-training)"),
    "num_classes": (None, "classes of the evaluation lists (unused in pre-training)"),
    "output": ("output/hpt", "run folder (checkpoints, logs, final_backbone.pth)"),
    "seed": (0, "seed of everything random"),
    "log_interval": (25, "steps between log lines"),
    **RUN,
}

METHOD_DEFAULTS = {
    "moco": {"batch_size": 256, "accum_steps": 1, "optimizer": "sgd", "lr": 0.03, "weight_decay": 1e-4,
             "warmup_iters": 0},
    "byol": {"batch_size": 128, "accum_steps": 2, "optimizer": "lars", "lr": 0.3, "weight_decay": 1e-6,
             "warmup_iters": 10},
}

PROBE = {
    "protocol": ("linear", "linear (frozen backbone, BN included) or finetune (everything trains)"),
    "arch": ("resnet50", "backbone: timm name or torchvision:resnet50"),
    "weights": ("", "backbone to evaluate (final_backbone.pth, any base checkpoint); '' = random init"),
    "random_init": ("auto", ("without --weights: auto (ResNets as the published OpenSelfSup init), openselfsup, "
                            "or model (timm's init)")),
    "data_root": (None, "folder the list paths are relative to"),
    "train_list": (None, "labeled training list (`relpath label`; multi-label: comma lists)"),
    "val_list": (None, "labeled validation list"),
    "test_list": (None, "labeled test list"),
    "train_folder": (None, "... or image folders (class/image)"),
    "val_folder": (None, ""),
    "test_folder": (None, ""),
    "num_classes": (None, "classes (default: from the lists)"),
    "class_map": (None, "multi-label value map, e.g. {'1.0': 1, '0.0': 0, '-1.0': 0, '': 0}"),
    "mean": ([0.485, 0.456, 0.406], "per-channel pixel mean in 0-1"),
    "std": ([0.229, 0.224, 0.225], "per-channel pixel std in 0-1"),
    "crop_size": (224, "crop"),
    "test_precrop_size": (256, "resize before the centre crop of val/test images"),
    "by": ("iter", "schedule unit: iter (optimiser steps) or epoch"),
    "iters": (5000, "optimiser steps (by iter)"),
    "epochs": (None, "epochs (by epoch)"),
    "lr": (30.0, "base learning rate (linear 30; fine-tune 0.01 or 0.001)"),
    "lr_steps": ([1651, 3333], "lr x 0.1 at these steps (or epochs, by epoch)"),
    "momentum": (0.9, "SGD momentum"),
    "weight_decay": (0.0, "weight decay"),
    "head_lr_mult": (1.0, "the head's lr multiplier (fine-tune: 100)"),
    "batch_size": (512, "GLOBAL images per forward pass"),
    "accum_steps": (1, "forward/backward passes per optimiser step (fine-tune: 4, so 64 x 4 = 256)"),
    "eval_interval": (100, "steps (by iter) or epochs (by epoch) between val/test evaluations"),
    "published_schedule": (True, ("by iter with accum_steps > 1: lr_steps and eval_interval count forward passes, "
                                 "as the published fine-tune (drops after steps 208/416 of 2500); false: "
                                 "optimiser steps")),
    "seed": (0, "seed (the published reruns s0, s1, s2 differ only by this)"),
    "output": ("output/probe", "run folder (metrics.jsonl, result.json)"),
    "log_interval": (50, "steps between log lines"),
    **RUN,
}


def check_keys(keys, table: dict, where: str) -> None:
    for key in keys:
        if key not in table:
            near = difflib.get_close_matches(str(key), list(table), n=1)
            raise UserError(f"{where}: unknown key {key!r}" + (f"; did you mean {near[0]!r}?" if near else ""))
