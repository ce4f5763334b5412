import os

import pytest
import torch

from tests.util import REPO

torch.set_num_threads(max(1, min(2, os.cpu_count() or 1)))


@pytest.fixture
def repo_root():
    return REPO


def pytest_configure(config):
    """Record caches of the test datasets go to a folder of this test session (subprocesses inherit it),
    not to the user's ~/.cache."""
    if "DETGN_CACHE_DIR" not in os.environ:
        import tempfile

        os.environ["DETGN_CACHE_DIR"] = tempfile.mkdtemp(prefix="detgn_test_cache_")
        config._detgn_cache_dir = os.environ["DETGN_CACHE_DIR"]


def pytest_unconfigure(config):
    """Remove the record cache folder this session made (pytest_configure), so runs leave nothing in /tmp."""
    made = getattr(config, "_detgn_cache_dir", None)
    if made:
        import shutil

        shutil.rmtree(made, ignore_errors=True)
        os.environ.pop("DETGN_CACHE_DIR", None)
