"""Train and test a detectron2 config of configs/detectron2/ (run by scripts/hpt_detectron2.sh).

detectron2 is not on PyPI: install it for your torch/CUDA (https://detectron2.readthedocs.io). What this adds
to detectron2's own training loop: the `Res5ROIHeadsExtraNorm` ROI head of the configs (the C4 res5 head
followed by one more normalisation layer of MODEL.RESNETS.NORM, as in MoCo's detection benchmark), and
the evaluator of each test set (Pascal VOC AP for voc_*, COCO AP otherwise).
"""
import os
import sys

try:
    from detectron2.config import get_cfg
    from detectron2.engine import DefaultTrainer, default_argument_parser, default_setup, launch
    from detectron2.evaluation import COCOEvaluator, PascalVOCDetectionEvaluator
    from detectron2.layers import get_norm
    from detectron2.modeling.roi_heads import ROI_HEADS_REGISTRY, Res5ROIHeads
except ImportError:
    sys.exit("error: detectron2 is not installed; install it for your torch/CUDA "
             "(https://detectron2.readthedocs.io/en/latest/tutorials/install.html)")


@ROI_HEADS_REGISTRY.register()
class Res5ROIHeadsExtraNorm(Res5ROIHeads):
    """Res5ROIHeads whose res5 stage ends with one more norm layer (MODEL.RESNETS.NORM, SyncBN here)."""

    def _build_res5_block(self, cfg):
        stage, channels = super()._build_res5_block(cfg)
        stage.add_module("norm", get_norm(cfg.MODEL.RESNETS.NORM, channels))
        return stage, channels


class Trainer(DefaultTrainer):
    @classmethod
    def build_evaluator(cls, cfg, dataset_name, output_folder=None):
        if "voc" in dataset_name:
            return PascalVOCDetectionEvaluator(dataset_name)
        return COCOEvaluator(dataset_name, output_dir=output_folder or os.path.join(cfg.OUTPUT_DIR, "inference"))


def main(args):
    cfg = get_cfg()
    cfg.merge_from_file(args.config_file)
    cfg.merge_from_list(args.opts)
    cfg.freeze()
    default_setup(cfg, args)
    if args.eval_only:
        model = Trainer.build_model(cfg)
        from detectron2.checkpoint import DetectionCheckpointer

        DetectionCheckpointer(model, save_dir=cfg.OUTPUT_DIR).resume_or_load(cfg.MODEL.WEIGHTS, resume=args.resume)
        return Trainer.test(cfg, model)
    trainer = Trainer(cfg)
    trainer.resume_or_load(resume=args.resume)
    return trainer.train()


if __name__ == "__main__":
    args = default_argument_parser().parse_args()
    launch(main, args.num_gpus, num_machines=args.num_machines, machine_rank=args.machine_rank,
           dist_url=args.dist_url, args=(args,))
