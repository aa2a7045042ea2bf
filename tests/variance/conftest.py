"""Shared fixtures of the variance tests: a one-thread PyTorch for the network tests."""

from __future__ import annotations

import pytest


@pytest.fixture
def one_thread():
    """Run PyTorch on one thread (the test machine is shared), restoring the setting after."""
    torch = pytest.importorskip("torch")
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
