"""Shared test fixtures.

Real dataset files are read from ``../shared/datasets`` beside the repository (or ``$CONVEMERGE_TEST_DATA``);
tests that need them skip with a clear reason when that folder is absent.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

REPO_ROOT = Path(__file__).resolve().parents[1]


def _shared_datasets() -> Path | None:
    env = os.environ.get("CONVEMERGE_TEST_DATA")
    candidates = [Path(env)] if env else []
    candidates.append(REPO_ROOT.parent / "shared" / "datasets")
    for c in candidates:
        if c.is_dir():
            return c
    return None


@pytest.fixture(scope="session")
def shared_datasets() -> Path:
    path = _shared_datasets()
    if path is None:
        pytest.skip("official dataset files not found (set CONVEMERGE_TEST_DATA or place them in ../shared/datasets)")
    return path


@pytest.fixture(autouse=True)
def _deterministic_torch():
    torch.manual_seed(0)
    yield


@pytest.fixture
def one_torch_thread():
    """One torch thread for the test (restored after): on a shared 2-core machine LAPACK's eigh with two threads
    can be 20x slower. Modules opt in with ``pytestmark = pytest.mark.usefixtures("one_torch_thread")``."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)
