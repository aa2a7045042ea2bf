"""The shared argument checks: values returned converted, errors naming the argument and the value."""

from __future__ import annotations

import re

import numpy as np
import pytest

from spsa_mix.core import errors, validation
from spsa_mix.core.validation import check_int, check_positive_int, normalize_rng, normalize_shape


@pytest.mark.parametrize("value, minimum, expected", [(0, 0, 0), (np.int64(5), 2, 5), (7, -3, 7)])
def test_check_int_returns_a_python_int(value, minimum, expected):
    out = check_int(value, "n", minimum=minimum)
    assert out == expected and type(out) is int


@pytest.mark.parametrize("value", [1, True, False, 2.0, "3", None, np.float64(4.0)])
def test_check_int_message(value):
    with pytest.raises(ValueError, match="^" + re.escape(f"max_points must be an integer >= 2, but got {value!r}") + "$"):
        check_int(value, "max_points", minimum=2)


def test_check_int_allow_none_and_positive_int():
    assert check_int(None, "patience", minimum=1, allow_none=True) is None
    assert check_positive_int(None, "maxiter", allow_none=True) is None
    assert check_positive_int(np.int32(3), "m") == 3
    with pytest.raises(ValueError, match=r"^m must be an integer >= 1, but got 0$"):
        check_positive_int(0, "m")
    with pytest.raises(ValueError, match=r"^m must be an integer >= 1, but got None$"):
        check_positive_int(None, "m")


def test_shape_and_rng_checks_reject_bools():
    with pytest.raises(ValueError, match="k must be an integer >= 1 or a shape"):
        normalize_shape(True)
    with pytest.raises(ValueError, match="k must be an integer >= 1 or a shape"):
        normalize_shape((2, False))
    with pytest.raises(ValueError, match=r"seed must be a non-negative integer or None, but got True"):
        normalize_rng(seed=True)
    assert normalize_shape([np.int64(2), 3]) == (2, 3)


def test_errors_holds_the_exceptions_and_validation_the_checks():
    assert errors.__all__ == ["NonFiniteLossError", "ObjectiveError"]
    assert not any(name.startswith(("check_", "normalize_")) for name in vars(errors))
    assert {"check_array", "check_bool", "check_int", "check_positive", "check_positive_int", "check_probability",
            "check_real_array", "real_array", "normalize_shape", "normalize_rng"} == set(validation.__all__)
