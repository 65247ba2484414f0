"""Fixtures and markers for every test (fdsl_cli, one_thread; the cuda and slow markers). Shared builders of
test data are plain functions in tests/helpers/."""
import os
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if ROOT not in sys.path:
    sys.path.insert(0, ROOT)


@pytest.fixture
def fdsl_cli(capsys):
    """Run `fdsl ...` in-process; returns (exit code, stdout, stderr)."""
    from fdsl.cli.main import main

    def run(*argv):
        code = main([str(a) for a in argv])
        captured = capsys.readouterr()
        return code, captured.out, captured.err

    return run


@pytest.fixture
def one_thread():
    """One intra-op torch thread for the test (tiny tensors on a shared 2-core machine: more threads only spin)."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def pytest_configure(config):
    config.addinivalue_line("markers", "cuda: needs a CUDA GPU (skips without one); `pytest -m cuda` runs them all")
    config.addinivalue_line("markers", "slow: an end-to-end test of over ~10 s on 2 cores; `pytest -m 'not slow'` "
                                       "(make test-quick) is the quick loop, `pytest -m slow --collect-only -q` lists them")


def pytest_collection_modifyitems(config, items):
    """Every test that skips without CUDA is a `cuda` test, however its skipif is spelled."""
    for item in items:
        if any("cuda" in str(mark.kwargs.get("reason", "")).lower() for mark in item.iter_markers("skipif")):
            item.add_marker("cuda")
