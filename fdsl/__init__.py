"""fdsl: formula-driven supervised learning — databases from formulas, pre-training, fine-tuning."""

__version__ = "0.1.0"
