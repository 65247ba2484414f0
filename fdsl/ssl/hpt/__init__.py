"""Hierarchical pre-training (Reed et al. 2021): the stages' options, data and records. The stages' run wiring
is fdsl.recipes.hpt_pretrain / hpt_probe; the study workflow around them (project, runner, results, plots) is
fdsl.study.hpt."""
