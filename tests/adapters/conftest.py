"""Shared helpers of the adapter tests."""

from __future__ import annotations

import numpy as np
import pytest


@pytest.fixture
def counting():
    """``counting(q) -> (f, calls)``: ``f`` evaluates ``q`` and records every batch of points it gets."""

    def wrap(q):
        calls = []

        def f(points):
            calls.append(np.array(points, copy=True))
            return q(points)

        return f, calls

    return wrap
