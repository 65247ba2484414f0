"""The HPT study workflow (hierarchical pre-training, docs/hpt.md): one project YAML -> every stage's config
(project), the shareable runner of those stages (runner), the published aggregation of their evaluations
(results) and the standard figures (plots). The stages themselves are methods in fdsl.ssl.hpt."""
