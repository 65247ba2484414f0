# Kept for `pip install -e .` on old pips; all metadata lives in pyproject.toml.
from setuptools import setup

setup()
