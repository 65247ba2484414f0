"""Studies: pre-training sources x downstream sets x seeds with one recipe, each run done once and resumable,
aggregated into transfer tables (fdsl study; docs/study.md).

    spec       the study file: loading, --set, checks (one-line errors naming the key)
    template   the {field} expressions of its command templates
    graph      its runs (data, build, pretrain, finetune), their keys and dependencies
    worker     running a command in a pool of processes that import torch once
    local      running the unfinished runs here, JOBS at a time, with an ETA
    emit       the same runs as SLURM array scripts or an mpirun list
    session    what `fdsl study` does: --dry-run, --emit, or run and report
    aggregate  mean, std and gains paired by seed
    report     report.md, report.csv and report.png
"""
