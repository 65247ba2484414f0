"""Hierarchical pre-training (Reed et al. 2021): the stages (pretrain, probe), their options, data and
records. The study workflow around them (project, runner, results, plots) is fdsl.study.hpt."""
