"""`fdsl hpt <command>`: hierarchical pre-training (MoCo v2 / BYOL from a base checkpoint) and its bookkeeping.

    fdsl hpt pretrain  --config STAGE.yaml | --train-list L --base B.pth --iters N ...   one pre-training
    fdsl hpt linear    --config STAGE.yaml --weights final_backbone.pth --output DIR     linear probe
    fdsl hpt finetune  --config STAGE.yaml --weights final_backbone.pth --output DIR     fine-tuning
    fdsl hpt project   PROJECT.yaml [--out ROOT]        write every stage config of a study
    fdsl hpt run       ROOT [--stage pretrain|linear|finetune|all] [-t] [-b] [-n]   run them (shareable)
    fdsl hpt aggregate ROOT                             best-val -> test records, results/<dataset>_results.json
    fdsl hpt plot      ROOT                             the standard figures (PNG + PDF)
    fdsl hpt extract   CKPT OUT.pth                     backbone of a MoCo/BYOL checkpoint, torchvision names
    fdsl hpt detectron2 CKPT OUT.pkl                    the same in detectron2's names
    fdsl hpt subset    TRAIN_LIST N [--seed S]          class-balanced N-label list (TRAIN_LIST-N.txt)
"""
from __future__ import annotations

import sys

from fdsl.cli.common import HelpFormatter, Parser
from fdsl.errors import UserError

COMMANDS = {
    "pretrain": "MoCo v2 or BYOL pre-training of one stage",
    "linear": "linear probe of a backbone (frozen, BN included)",
    "finetune": "fine-tune a backbone",
    "project": "write every stage config of an HPT study from one YAML",
    "run": "run a project's stages; several runners may share the work",
    "aggregate": "collect the evaluation results into results/<dataset>_results.json",
    "plot": "draw the standard HPT figures",
    "extract": "extract the backbone of a MoCo/BYOL checkpoint (torchvision-style state dict)",
    "detectron2": "convert a backbone to detectron2's key names",
    "subset": "write a class-balanced N-label subset of a labeled list",
}


def usage() -> str:
    lines = ["usage: fdsl hpt <command> [options]   (fdsl hpt <command> --help for each)", "", "commands:"]
    return "\n".join(lines + [f"  {name:<11} {text}" for name, text in COMMANDS.items()])


def main(argv: list[str]) -> int:
    if not argv or argv[0] in ("-h", "--help"):
        print(usage())
        return 0 if argv else 2
    command, rest = argv[0], argv[1:]
    if command not in COMMANDS:
        import difflib

        near = difflib.get_close_matches(command, list(COMMANDS), n=1)
        raise UserError(f"unknown hpt command {command!r}" + (f"; did you mean {near[0]!r}?" if near else "")
                        + f"; choose one of: {', '.join(COMMANDS)}")
    return globals()[f"cmd_{command}"](rest)


def _stage_parser(name: str, table: dict, text: str) -> Parser:
    from fdsl.cli.hpt_options import add_options

    p = Parser(prog=f"fdsl hpt {name}", formatter_class=HelpFormatter, description=text)
    p.add_argument("--config", help="stage YAML (written by `fdsl hpt project`); its keys are these options")
    p.add_argument("--resume", default="auto", help="auto: continue the run in --output if it has a checkpoint; "
                                                     "PATH: that checkpoint; none: start over")
    add_options(p, table)
    return p


def cmd_pretrain(argv: list[str]) -> int:
    from fdsl.cli import hpt_options
    from fdsl.ssl.hpt import options

    parser = _stage_parser("pretrain", options.PRETRAIN, "Pre-train a backbone with MoCo v2 or BYOL for a fixed "
                           "number of optimiser steps, from a base checkpoint or random init; writes "
                           "final_backbone.pth (+ .json naming the chain) in --output.")
    args = hpt_options.parse(parser, argv, options.PRETRAIN)
    hpt_options.fill_method_defaults(args)
    from fdsl.recipes.hpt_pretrain import run

    return run(args)


def _probe(argv: list[str], protocol: str) -> int:
    from fdsl.cli import hpt_options
    from fdsl.ssl.hpt import options

    table = dict(options.PROBE)
    if protocol == "finetune":
        table.update({"lr": (0.01, table["lr"][1]), "lr_steps": ([833, 1667], table["lr_steps"][1]),
                      "iters": (2500, table["iters"][1]), "head_lr_mult": (100.0, table["head_lr_mult"][1]),
                      "batch_size": (64, table["batch_size"][1]), "accum_steps": (4, table["accum_steps"][1]),
                      "eval_interval": (25, table["eval_interval"][1])})
    parser = _stage_parser(protocol, table, "Linear probe (frozen backbone incl. BN stats, SGD, step schedule) "
                           "or fine-tuning (head lr x100) of a backbone, with val and test tracked; writes "
                           "metrics.jsonl and result.json in --output.")
    args = hpt_options.parse(parser, argv, table)
    args.protocol = protocol
    from fdsl.recipes.hpt_probe import run

    return run(args)


def cmd_linear(argv: list[str]) -> int:
    return _probe(argv, "linear")


def cmd_finetune(argv: list[str]) -> int:
    return _probe(argv, "finetune")


def cmd_project(argv: list[str]) -> int:
    p = Parser(prog="fdsl hpt project", formatter_class=HelpFormatter,
               description="Write every pre-training, linear-eval and fine-tune config of an HPT study from one "
                           "YAML (keys: see docs/hpt.md), and the N-label training lists.")
    p.add_argument("project", help="the study's YAML")
    p.add_argument("--out", help="project folder (default: hpt/<shortname>)")
    p.add_argument("--overwrite", action="store_true", help="rewrite configs that already exist")
    args = p.parse_args(argv)
    from fdsl.study.hpt.project import generate

    root = generate(args.project, args.out, args.overwrite)
    print(f"next: fdsl hpt run {root}")
    return 0


def cmd_run(argv: list[str]) -> int:
    p = Parser(prog="fdsl hpt run", formatter_class=HelpFormatter,
               description="Run the stages of a generated project. Each job's run folder W gets W.proc while it "
                           "runs and W.done when it finished; jobs with either are skipped, so several runners "
                           "(processes or nodes on a shared file system) split the work. Delete W.done to redo.")
    p.add_argument("root", help="project folder (from fdsl hpt project)")
    p.add_argument("--stage", choices=("pretrain", "linear", "finetune", "all"), default="all")
    p.add_argument("-t", "--trial", action="store_true", help="only the smallest pre-training budget, one job")
    p.add_argument("-b", "--byol", action="store_true", help="only BYOL stages")
    p.add_argument("-n", "--bn", action="store_true", help="only HPT-BN (BatchNorm-only) stages")
    p.add_argument("-a", "--all-seeds", action="store_true", help="every linear-eval seed (default: s0 only)")
    p.add_argument("--launcher", help="prefix of pre-training commands, e.g. 'torchrun --nproc_per_node 4' or "
                                      "'mpirun -np 4' (default: one process)")
    p.add_argument("--list", action="store_true", help="print the jobs and their state, run nothing")
    args = p.parse_args(argv)
    from fdsl.study.hpt import runner

    stages = runner.STAGES if args.stage == "all" else (args.stage,)
    for stage in stages:
        if stage == "pretrain":
            jobs = runner.pretrain_jobs(args.root, args.trial, args.byol, args.bn)
        else:
            jobs = runner.eval_jobs(args.root, stage, args.all_seeds, args.byol, args.bn)
        if args.list:
            for job in jobs:
                state = "done" if _exists(job.done) else "running" if _exists(job.proc) else "todo"
                print(f"{state:<8} {job.name}")
            continue
        ran, skipped = runner.run_jobs(jobs, lambda job: runner.execute(job, args.launcher),
                                       stop_after_first=args.trial)
        print(f"hpt run: {stage}: {ran} run, {skipped} skipped (done or held by another runner)")
        if args.trial:
            break
    return 0


def _exists(path: str) -> bool:
    import os

    return os.path.exists(path)


def cmd_aggregate(argv: list[str]) -> int:
    p = Parser(prog="fdsl hpt aggregate", formatter_class=HelpFormatter,
               description="For every evaluation run: the test value at the best validation value of the second "
                           "half of training. Prints `<run> ::: <test>`, flags incomplete runs on stderr and "
                           "merges the records into ROOT/results/<dataset>_results.json.")
    p.add_argument("root")
    p.add_argument("--out-dir", help="where the JSON files go (default: ROOT/results)")
    _selection_option(p)
    args = p.parse_args(argv)
    from fdsl.study.hpt import results

    records = results.collect(args.root, selection=args.selection)
    for r in sorted(records, key=lambda r: r["file"]):
        if r["result"] is not None:
            print(f"{r['file']} ::: {r['result']:.4f}")
    for path in results.write(args.root, records, args.out_dir):
        print(f"wrote {path}", file=sys.stderr)
    return 0


def _selection_option(p) -> None:
    p.add_argument("--selection", choices=("published", "fixed"), default="published",
                   help="published: the late evaluations of agg-results.sh (indices compared as strings) and, "
                        "across lrs/schedules, the best test value of plot-results.py; fixed: the second half "
                        "compared as numbers, variants chosen on val")


def cmd_plot(argv: list[str]) -> int:
    p = Parser(prog="fdsl hpt plot", formatter_class=HelpFormatter,
               description="Linear-eval and fine-tune accuracy vs pre-training steps per base (seeds as bands), "
                           "and the k-NN probe logged during pre-training; PNG and PDF under ROOT/plots.")
    p.add_argument("root")
    p.add_argument("--out-dir", help="default: ROOT/plots")
    _selection_option(p)
    args = p.parse_args(argv)
    import os

    from fdsl.study.hpt import plots, results
    from fdsl.study.hpt.runner import load_root

    dataset = load_root(args.root)["shortname"]
    out_dir = args.out_dir or os.path.join(args.root, "plots")
    records = results.collect(args.root, selection=args.selection)
    made = plots.linear_plot(records, dataset, out_dir, args.selection)
    made += plots.finetune_plots(records, dataset, out_dir, args.selection)
    made += plots.knn_plot(args.root, dataset, out_dir)
    for path in made:
        print(path)
    if not made:
        print("nothing to plot yet (no finished evaluation or k-NN log)", file=sys.stderr)
    return 0


def cmd_extract(argv: list[str]) -> int:
    p = Parser(prog="fdsl hpt extract", formatter_class=HelpFormatter,
               description="Write the backbone of a MoCo/BYOL (fdsl, OpenSelfSup, official MoCo) or supervised "
                           "checkpoint as a torchvision-style state dict {state_dict, author}.")
    p.add_argument("checkpoint")
    p.add_argument("out", help="OUT.pth")
    args = p.parse_args(argv)
    from fdsl.ssl.backbone import extract_backbone

    n = extract_backbone(args.checkpoint, args.out)
    print(f"wrote {n} backbone tensors to {args.out}")
    return 0


def cmd_detectron2(argv: list[str]) -> int:
    p = Parser(prog="fdsl hpt detectron2", formatter_class=HelpFormatter,
               description="Convert a backbone (or a MoCo/BYOL checkpoint) to detectron2's ResNet names "
                           "(stem., resN, convK.norm, shortcut) with numpy arrays and matching_heuristics. "
                           "OUT.pkl is a pickle detectron2 reads directly; OUT.pth uses torch.save as published.")
    p.add_argument("checkpoint")
    p.add_argument("out", help="OUT.pkl (recommended) or OUT.pth")
    args = p.parse_args(argv)
    from fdsl.ssl.backbone import to_detectron2

    n = to_detectron2(args.checkpoint, args.out)
    print(f"wrote {n} tensors in detectron2 names to {args.out}")
    return 0


def cmd_subset(argv: list[str]) -> int:
    p = Parser(prog="fdsl hpt subset", formatter_class=HelpFormatter,
               description="Write a class-balanced N-image subset of a labeled list (deterministic for a seed), "
                           "named like the published low-label lists: train.txt -> train-N.txt.")
    p.add_argument("train_list")
    p.add_argument("n", type=int)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", help="default: TRAIN_LIST-N.txt beside it")
    args = p.parse_args(argv)
    from fdsl.data.image_list import balanced_subset

    print(f"wrote {balanced_subset(args.train_list, args.n, args.seed, args.out)}")
    return 0
