import math

import pytest

from spsa_mix.core.schedules import Constant, Cosine, PowerDecay, evaluate_schedule, resolve_schedule


def test_every_builtin_starts_at_one():
    for name in ["constant", "power", "cosine"]:
        for which in ["lr_schedule", "mu_schedule"]:
            assert resolve_schedule(name, name=which, total_steps=50)(0) == pytest.approx(1.0)


def test_spall_exponents_and_stability_constant():
    lr = resolve_schedule("power", name="lr_schedule", total_steps=200)
    assert lr == PowerDecay(exponent=0.602, offset=20.0)
    assert lr(79) == pytest.approx((21 / 100) ** 0.602)
    mu = resolve_schedule("power", name="mu_schedule", total_steps=200)
    assert mu(99) == pytest.approx(0.01**0.101)


def test_cosine_reaches_floor_and_stays():
    c = Cosine(total_steps=10, floor=0.1)
    assert c(5) == pytest.approx(0.55)
    assert c(10) == pytest.approx(0.1) and c(20) == pytest.approx(0.1)


def test_callable_is_used_as_is():
    f = lambda n: 1.0 / (n + 1)  # noqa: E731
    assert resolve_schedule(f, name="lr_schedule", total_steps=None) is f
    assert isinstance(resolve_schedule(None, name="mu_schedule", total_steps=None), Constant)


def test_errors():
    with pytest.raises(ValueError, match=r"lr_schedule must be one of \['constant', 'power', 'cosine'\] .* but got 'linear'"):
        resolve_schedule("linear", name="lr_schedule", total_steps=10)
    with pytest.raises(ValueError, match=r"mu_schedule='cosine' needs a known number of steps"):
        resolve_schedule("cosine", name="mu_schedule", total_steps=None)
    with pytest.raises(ValueError, match=r"mu_schedule must return a finite positive factor, but returned nan at step 4"):
        evaluate_schedule(lambda n: math.nan, 4, name="mu_schedule")
