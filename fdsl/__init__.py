"""fdsl: formula-driven supervised learning — databases from formulas, pre-training, fine-tuning.

As a library (see fdsl.api): ``from fdsl import OnTheFlyDataset, BatchSource, AugmentSpec, databases``.
"""

__version__ = "0.1.0"

__all__ = ["AugmentSpec", "BatchSource", "OnTheFlyDataset", "__version__", "databases"]
_API = frozenset(__all__) - {"__version__"}


def __getattr__(name: str):
    # imported on first use, so `fdsl render` and `import fdsl` stay light (no torch until asked for)
    if name in _API:
        from fdsl import api

        return getattr(api, name)
    raise AttributeError(f"module 'fdsl' has no attribute {name!r}")
