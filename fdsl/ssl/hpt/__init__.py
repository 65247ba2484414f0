"""Hierarchical pre-training (Reed et al. 2021): stage configs, runner, results, plots."""
