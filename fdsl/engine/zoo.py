"""The weights the papers' authors released, and the papers to cite: what `fdsl export` writes into a model
card and what it falls back on when a released file carries no architecture (a plain state dict). The same
table, with where each file is published and the commands, is docs/zoo.md.
"""
from __future__ import annotations

import os
from dataclasses import dataclass

# paper key -> how the papers' READMEs ask to be cited
PAPERS = {
    "accv20": "Kataoka et al., Pre-training without Natural Images, ACCV 2020 (IJCV 2022)",
    "aaai22": "Nakashima et al., Can Vision Transformers Learn without Natural Images?, AAAI 2022",
    "cvpr22": "Kataoka et al., Replacing Labeled Real-image Datasets with Auto-generated Contours, CVPR 2022",
    "cvpr23": "Takashima et al., Visual Atoms: Pre-training Vision Transformers with Sinusoidal Waves, CVPR 2023",
    "iccv23": "Nakamura et al., Pre-training Vision Transformers with Very Limited Synthesized Images, ICCV 2023",
    "eccv24": "Nakamura, Tadokoro et al., Scaling Backwards: Minimal Synthetic Pre-training?, ECCV 2024",
    "iros21": "Yamada et al., MV-FractalDB: Formula-driven Supervised Learning for Multi-view Image Recognition, "
              "IROS 2021",
    "iccv19": "Caron et al., Unsupervised Pre-Training of Image Features on Non-Curated Data, ICCV 2019",
    "wacv22": "Reed et al., Self-Supervised Pretraining Improves Self-Supervised Pretraining, WACV 2022",
}

# fdsl database name (fdsl.data.registry) -> paper key
DATABASE_PAPER = {"fractaldb": "accv20", "onepfrac": "eccv24", "ofdb2d": "iccv23", "ofdb3d": "iccv23",
                  "rcdb": "cvpr22", "exfractaldb": "cvpr22", "visualatom": "cvpr23", "mvfractaldb": "iros21"}


@dataclass(frozen=True)
class Released:
    file: str  # the published file name
    arch: str  # the timm model it loads into
    classes: int  # head size; 0: a backbone without a classifier
    database: str  # what it was pre-trained on
    paper: str  # PAPERS key
    layout: str  # fdsl.engine.released layout name


RELEASED = (
    Released("FractalDB-1000_resnet50_epoch90.pth", "resnet50", 1000, "FractalDB-1k", "accv20", "plain"),
    Released("FractalDB-10000_resnet50_epoch90.pth", "resnet50", 10000, "FractalDB-10k", "accv20", "plain"),
    Released("exfractal_21k_base.pth.tar", "deit_base_patch16_224", 21000, "ExFractalDB-21k", "cvpr22", "timm"),
    Released("rcdb_21k_base.pth.tar", "deit_base_patch16_224", 21000, "RCDB-21k", "cvpr22", "timm"),
    Released("vit_tiny_with_visualatom_1k.pth.tar", "deit_tiny_patch16_224", 1000, "VisualAtom-1k", "cvpr23", "timm"),
    Released("vit_base_with_visualatom_21k.pth.tar", "deit_base_patch16_224", 21000, "VisualAtom-21k", "cvpr23",
             "timm"),
    Released("swin_base_with_visualatom_21k.pth.tar", "swin_base_patch4_window7_224", 21000, "VisualAtom-21k",
             "cvpr23", "timm"),
    Released("pretrain_deit_tiny_2d-ofdb1k_patch_lr1.0e-3_epochs80000_bs256-last.pth", "vit_tiny_patch16_224",
             1000, "2D-OFDB-1k", "iccv23", "deit"),
    Released("pretrain_deit_tiny_3d-ofdb1k_patch_lr1.0e-3_epochs80000_bs256-last.pth", "vit_tiny_patch16_224",
             1000, "3D-OFDB-1k", "iccv23", "deit"),
    Released("pretrain_deit_tiny_2d-ofdb21k_patch_lr5.0e-4_epochs15238_bs1024_amp-last.pth.tar",
             "deit_tiny_patch16_224", 21000, "2D-OFDB-21k", "iccv23", "timm"),
    Released("pretrain_deit_tiny_3d-ofdb21k_edgar_lr5.0e-4_epochs15238_bs1024_amp-last.pth.tar",
             "deit_tiny_patch16_224", 21000, "3D-OFDB-21k", "iccv23", "timm"),
    Released("moco_v2_200ep_pretrain.pth.tar", "resnet50", 0, "ImageNet-1k (MoCo v2, HPT base)", "wacv22", "moco"),
    Released("moco_v2_800ep_pretrain.pth.tar", "resnet50", 0, "ImageNet-1k (MoCo v2, HPT base)", "wacv22", "moco"),
    Released("ours.pth", "vgg16_bn (Sobel)", 0, "YFCC100M (DeeperCluster)", "iccv19", "deepercluster"),
    Released("deepcluster_flickr.pth", "vgg16_bn (Sobel)", 0, "YFCC100M 1.3M (DeepCluster)", "iccv19",
             "deepercluster"),
    Released("rotnet_flickr.pth", "vgg16_bn", 0, "YFCC100M 1.3M (RotNet)", "iccv19", "deepercluster"),
    Released("rotnet_imagenet.pth", "vgg16_bn", 0, "ImageNet-1k (RotNet)", "iccv19", "deepercluster"),
)


def released_file(path: str) -> Released | None:
    """The released file `path` is a copy of, by its name."""
    name = os.path.basename(os.path.normpath(path))
    return next((r for r in RELEASED if r.file == name), None)


def paper_of_database(name: str | None) -> str | None:
    """PAPERS key of an fdsl database name (aliases such as 1p-frac accepted) or a released database label."""
    if not name:
        return None
    key = name.lower().replace("-", "").replace("_", "")
    for db in sorted(DATABASE_PAPER, key=len, reverse=True):  # exfractaldb before fractaldb
        if db in key:
            return DATABASE_PAPER[db]
    aliases = {"1pfrac": "eccv24", "2dofdb": "iccv23", "3dofdb": "iccv23"}
    return next((paper for alias, paper in aliases.items() if alias in key), None)
