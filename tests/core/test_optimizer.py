import numpy as np
import pytest

from spsa_mix import NonFiniteLossError, SimplexForwardGradient, SimplexGradient, SimplexSPSA
from spsa_mix.core.domain import Domain
from spsa_mix.core.simplex import softmax_vjp
from spsa_mix.problems import Quadratic, ScaledQuadratic


def _run(opt, q, steps):
    for _ in range(steps):
        opt.tell(q(opt.ask()))
    return opt


def test_ask_returns_antithetic_probes_on_the_simplex():
    opt = SimplexSPSA(5, m=3, seed=0)
    probes = opt.ask()
    assert probes.shape == (6, 5)
    assert np.all(probes > 0)
    np.testing.assert_allclose(probes.sum(axis=1), 1.0)
    log = np.log(probes)
    mid = 0.5 * (log[0::2] + log[1::2])  # beta +- mu u average back to beta (up to a shift)
    np.testing.assert_allclose(mid - mid.mean(axis=1, keepdims=True), 0.0, atol=1e-12)
    np.testing.assert_array_equal(opt.ask(), probes)  # ask() is idempotent until tell()


def test_several_simplices():
    opt = SimplexSPSA((3, 4), m=2, seed=0)
    probes = opt.ask()
    assert probes.shape == (4, 3, 4)
    np.testing.assert_allclose(probes.sum(axis=-1), 1.0)
    opt.tell(np.arange(4.0))
    assert opt.alpha.shape == (3, 4)


def test_x0_is_the_start():
    x0 = np.array([0.1, 0.2, 0.7])
    np.testing.assert_allclose(SimplexSPSA(3, x0=x0).alpha, x0)
    np.testing.assert_allclose(SimplexSPSA(4).alpha, 0.25)


def test_same_seed_same_trajectory_other_seed_differs():
    q = Quadratic.random(6, rng=0)
    a = _run(SimplexSPSA(6, seed=3, m=2), q, 50).alpha
    b = _run(SimplexSPSA(6, seed=3, m=2), q, 50).alpha
    c = _run(SimplexSPSA(6, seed=4, m=2), q, 50).alpha
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, c)


@pytest.mark.parametrize("pending", [False, True])
@pytest.mark.parametrize("cls_kwargs", [dict(), dict(update="sgd", momentum=0.9, lr=0.5),
                                        dict(mu_schedule="power", lr_schedule="cosine", total_steps=80)])
def test_resume_from_state_dict_equals_uninterrupted(pending, cls_kwargs):
    q = Quadratic.random(5, rng=1)
    ref = _run(SimplexSPSA(5, seed=7, m=2, **cls_kwargs), q, 60)

    first = _run(SimplexSPSA(5, seed=7, m=2, **cls_kwargs), q, 25)
    if pending:
        first.ask()  # saved between ask and tell: the probes must be the same after resume
    state = first.state_dict()
    del first
    resumed = SimplexSPSA(5, seed=12345, m=2, **cls_kwargs)  # a different seed: the state wins
    resumed.load_state_dict(state)
    _run(resumed, q, 35)
    np.testing.assert_array_equal(resumed.alpha, ref.alpha)
    assert resumed.step_count == ref.step_count == 60


def test_state_dict_is_a_snapshot():
    opt = SimplexSPSA(3, seed=0)
    state = opt.state_dict()
    opt.ask()
    opt.tell(np.array([1.0, 0.0]))
    assert state["step"] == 0 and np.all(state["beta"] == 0)


def test_gradient_estimate_error_falls_with_m():
    """Averaging more directions lowers the error against the analytic gradient."""
    q = Quadratic.random(8, rng=2)
    alpha0 = np.random.default_rng(0).dirichlet(np.ones(8))
    true = softmax_vjp(alpha0, q.grad(alpha0))
    errors = {}
    for m in (1, 4, 16):
        errs = []
        for seed in range(300):
            opt = SimplexSPSA(8, x0=alpha0, m=m, mu=1e-4, seed=seed, update="sgd", lr=1.0)
            beta0 = opt.beta
            opt.tell(q(opt.ask()))
            est = beta0 - opt.beta  # lr=1 SGD step without momentum moves by the estimate
            errs.append(np.sum((est - true) ** 2))
        errors[m] = np.mean(errs)
    assert errors[4] < errors[1] / 2.5 and errors[16] < errors[4] / 2.5


def test_forward_gradient_and_exact_gradient_classes_converge():
    q = Quadratic.random(4, rng=3)
    fg = SimplexForwardGradient(4, seed=0, lr=0.05, m=2)
    gd = SimplexGradient(4, lr=0.05)
    for _ in range(500):
        a, t = fg.ask()
        fg.tell(*q.jvp(a, t))
        gd.tell(*q.value_and_grad(gd.ask()))
    for opt in (fg, gd):
        assert q.value(opt.alpha) - q.minimum() < 1e-4


def test_tell_errors_leave_state_unchanged():
    opt = SimplexSPSA(3, m=2, seed=0)
    with pytest.raises(RuntimeError, match=r"tell\(\) called without a pending ask\(\)"):
        opt.tell(np.zeros(4))
    opt.ask()
    before = opt.state_dict()
    with pytest.raises(ValueError, match=r"tell\(\) expects 4 losses as an array of shape \(4,\), but got shape \(3,\)"):
        opt.tell(np.zeros(3))
    with pytest.raises(ValueError, match=r"but got shape \(2, 2\)"):
        opt.tell(np.zeros((2, 2)))
    with pytest.raises(NonFiniteLossError, match=r"losses must be finite, but entry 2 is nan; the optimiser state is unchanged"):
        opt.tell(np.array([1.0, 2.0, np.nan, 0.0]))
    with pytest.raises(NonFiniteLossError, match=r"entry 0 is inf"):
        opt.tell(np.array([np.inf, 2.0, 1.0, 0.0]))
    after = opt.state_dict()
    np.testing.assert_array_equal(after["beta"], before["beta"])
    assert after["rng"] == before["rng"] and after["step"] == 0
    opt.tell(np.zeros(4))  # the pending probes can still be told


def test_gradient_class_errors():
    opt = SimplexGradient(3)
    opt.ask()
    with pytest.raises(ValueError, match=r"expects a gradient of shape \(3,\), but got shape \(2,\)"):
        opt.tell(1.0, np.zeros(2))
    with pytest.raises(NonFiniteLossError, match=r"gradient entries must be finite, but entry 1 is nan"):
        opt.tell(1.0, np.array([0.0, np.nan, 0.0]))


@pytest.mark.parametrize(
    "kwargs, error, match",
    [
        (dict(k=0), ValueError, r"k must be an integer >= 1 or a shape \(groups, k\) of such integers, but got 0"),
        (dict(k=(2, 0)), ValueError, r"but got \(2, 0\)"),
        (dict(k=2.5), ValueError, r"but got 2\.5"),
        (dict(k=3, m=0), ValueError, r"m must be an integer >= 1, but got 0"),
        (dict(k=3, lr=0.0), ValueError, r"lr must be positive, but got 0\.0"),
        (dict(k=3, lr=-1), ValueError, r"lr must be positive, but got -1"),
        (dict(k=3, lr="fast"), ValueError, r"lr must be a positive number, but got 'fast'"),
        (dict(k=3, mu=0), ValueError, r"mu must be positive, but got 0"),
        (dict(k=3, mu=float("nan")), ValueError, r"mu must be positive, but got nan"),
        (dict(k=3, betas=(1.0, 0.9)), ValueError, r"Invalid beta parameter at index 0: 1\.0"),
        (dict(k=3, betas=(0.9,)), ValueError, r"betas must be a pair \(beta1, beta2\), but got \(0\.9,\)"),
        (dict(k=3, eps=-1.0), ValueError, r"eps must be a non-negative number, but got -1\.0"),
        (dict(k=3, update="lbfgs"), ValueError, r"update must be 'adam' or 'sgd', but got 'lbfgs'"),
        (dict(k=3, momentum=1.5), ValueError, r"momentum must be in \[0, 1\), but got 1\.5"),
        (dict(k=3, x0=[0.5, 0.5]), ValueError, r"x0 must have shape \(3,\), but got shape \(2,\)"),
        (dict(k=3, x0=[0.0, 0.5, 0.5]), ValueError, r"x0 must be strictly positive"),
        (dict(k=3, directions="uniform"), ValueError, r"directions must be one of .* but got 'uniform'"),
        (dict(k=3, m=2, orthogonal=True), ValueError, r"orthogonal=True is defined for kind=.normalized-gaussian. or .gaussian., but got kind=.rademacher."),
        (dict(k=3, m=3, orthogonal=True, directions="gaussian"), ValueError, r"orthogonal=True needs m <= 2"),
        (dict(k=3, seed=1, rng=np.random.default_rng(0)), ValueError, r"give seed or rng, not both"),
        (dict(k=3, seed=-1), ValueError, r"seed must be a non-negative integer or None, but got -1"),
        (dict(k=3, rng=42), ValueError, r"rng must be a numpy\.random\.Generator, but got int"),
        (dict(k=3, lr_schedule="step"), ValueError, r"lr_schedule must be one of"),
        (dict(k=3, mu_schedule="cosine"), ValueError, r"mu_schedule='cosine' needs a known number of steps"),
    ],
)
def test_constructor_errors(kwargs, error, match):
    k = kwargs.pop("k")
    with pytest.raises(error, match=match):
        SimplexSPSA(k, **kwargs)


def test_load_state_dict_errors():
    state = SimplexSPSA(3, seed=0).state_dict()
    with pytest.raises(ValueError, match=r"state has shape \(3,\), but this optimiser has shape \(4,\)"):
        SimplexSPSA(4).load_state_dict(state)
    with pytest.raises(ValueError, match=r"state has m=1, but this optimiser has m=2"):
        SimplexSPSA(3, m=2).load_state_dict(state)
    with pytest.raises(ValueError, match=r"state was saved by SimplexSPSA, but this optimiser is SimplexGradient"):
        SimplexGradient(3).load_state_dict(state)
    with pytest.raises(ValueError, match=r"state must be a dict from state_dict\(\)"):
        SimplexSPSA(3).load_state_dict({"beta": [0, 0, 0]})


# ---------------------------------------------------------------- domains with extra coordinates
SCALED = Domain(3, positive=1, names=("scale",))


def test_mixed_domain_probes_are_flat_points_around_the_logits_and_log_scale():
    opt = SimplexSPSA(SCALED, m=2, seed=0, x0=[0.2, 0.3, 0.5, 2.0])
    np.testing.assert_allclose(opt.x, [0.2, 0.3, 0.5, 2.0])
    np.testing.assert_allclose(opt.alpha, [0.2, 0.3, 0.5])
    assert opt.alpha.shape == (3,) and opt.x.shape == opt.beta.shape == (4,)
    probes = opt.ask()
    assert probes.shape == (4, 4)
    assert np.all(probes > 0)
    np.testing.assert_allclose(probes[:, :3].sum(axis=1), 1.0)
    log_s = np.log(probes[:, 3])  # log s +- mu u: the pair averages back to log 2
    np.testing.assert_allclose(0.5 * (log_s[0::2] + log_s[1::2]), np.log(2.0))
    np.testing.assert_allclose(np.abs(log_s[0::2] - log_s[1::2]), 2 * opt.mu)  # Rademacher +-1, not projected


def test_mixed_domain_default_start_and_x0_errors():
    np.testing.assert_allclose(SimplexSPSA(Domain((2, 2), positive=1, real=1)).x, [0.5, 0.5, 0.5, 0.5, 1.0, 0.0])
    with pytest.raises(ValueError, match=r"x0 must be a point of Domain\(simplex=\(3,\), positive=1, names=\('scale',\)\) "
                                         r"of shape \(4,\) \(the weights row by row, then scale\), but got shape \(3,\)"):
        SimplexSPSA(SCALED, x0=[0.2, 0.3, 0.5])
    with pytest.raises(ValueError, match=r"x0's scale must be a finite number > 0, but got -1\.0"):
        SimplexGradient(SCALED, x0=[0.2, 0.3, 0.5, -1.0])
    with pytest.raises(ValueError, match=r"x0's weights must sum to 1"):
        SimplexForwardGradient(SCALED, x0=[0.2, 0.3, 0.6, 1.0])


def test_every_class_reaches_the_scaled_optimum():
    p = ScaledQuadratic.random(3, rng=0, s_star=2.5)
    spsa = SimplexSPSA(p.domain, seed=0, lr=0.05, lr_schedule="cosine", total_steps=1500)
    fg = SimplexForwardGradient(p.domain, seed=0, lr=0.05, m=2, lr_schedule="cosine", total_steps=600)
    gd = SimplexGradient(p.domain, lr=0.05)
    for _ in range(1500):
        spsa.tell(p(spsa.ask()))
    for _ in range(600):
        x, t = fg.ask()
        assert x.shape == (4,) and t.shape == (2, 4)
        fg.tell(*p.jvp(x, t))
        gd.tell(*p.value_and_grad(gd.ask()))
    for opt in (spsa, fg, gd):  # SPSA: the radius mu = 0.05 in log s biases s by about 0.4%
        np.testing.assert_allclose(opt.alpha, p.c, atol=0.01)
        assert opt.x[3] == pytest.approx(p.s_star, rel=0.01)


def test_forward_tangents_and_pulled_back_gradients_follow_the_domain():
    p = ScaledQuadratic.random(3, rng=1)
    fg = SimplexForwardGradient(p.domain, seed=0, m=3, x0=[0.2, 0.3, 0.5, 1.5])
    x, t = fg.ask()
    np.testing.assert_array_equal(t, p.domain.jvp(fg.beta, fg.state_dict()["pending"]["directions"]))
    gd = SimplexGradient(p.domain, update="sgd", lr=1.0, x0=[0.2, 0.3, 0.5, 1.5])
    beta0 = gd.beta
    gd.tell(*p.value_and_grad(gd.ask()))
    expected = p.domain.project(p.domain.vjp(beta0, p.grad(p.domain.to_point(beta0))))
    np.testing.assert_allclose(beta0 - gd.beta, expected, atol=1e-12)


@pytest.mark.parametrize("pending", [False, True])
@pytest.mark.parametrize("cls", [SimplexSPSA, SimplexForwardGradient, SimplexGradient])
def test_mixed_domain_state_round_trip_is_bit_for_bit(cls, pending):
    p = ScaledQuadratic.random(3, rng=2)

    def steps(opt, n):
        for _ in range(n):
            if cls is SimplexSPSA:
                opt.tell(p(opt.ask()))
            elif cls is SimplexForwardGradient:
                opt.tell(*p.jvp(*opt.ask()))
            else:
                opt.tell(*p.value_and_grad(opt.ask()))
        return opt

    ref = steps(cls(p.domain, seed=7, lr_schedule="cosine", total_steps=40), 40)
    first = steps(cls(p.domain, seed=7, lr_schedule="cosine", total_steps=40), 15)
    if pending:
        first.ask()
    state = first.state_dict()
    assert state["config"]["domain"] == p.domain.to_dict()
    resumed = cls(p.domain, seed=1, total_steps=5)  # another seed and schedule: the state wins
    resumed.load_state_dict(state)
    steps(resumed, 25)
    np.testing.assert_array_equal(resumed.x, ref.x)


def test_a_state_of_another_domain_is_refused_naming_both():
    state = SimplexSPSA(SCALED, seed=0).state_dict()
    with pytest.raises(ValueError, match=r"state has domain Domain\(simplex=\(3,\), positive=1, names=\('scale',\)\), "
                                         r"but this optimiser has domain Domain\(simplex=\(3,\)\)"):
        SimplexSPSA(3).load_state_dict(state)
    with pytest.raises(ValueError, match=r"state has domain Domain\(simplex=\(3,\)\), but this optimiser has domain "
                                         r"Domain\(simplex=\(3,\), real=1\)"):
        SimplexSPSA(Domain(3, real=1)).load_state_dict(SimplexSPSA(3).state_dict())


def test_a_version_1_state_of_a_plain_simplex_still_loads():
    q = Quadratic.random(4, rng=3)
    ref = _run(SimplexSPSA(4, seed=2), q, 30)
    first = _run(SimplexSPSA(4, seed=2), q, 10)
    state = first.state_dict()
    state["version"] = 1  # what a state looked like before the domain and the schedules were stored
    for key in ("domain", "lr_schedule", "mu_schedule"):
        del state["config"][key]
    resumed = SimplexSPSA(4)
    resumed.load_state_dict(state)
    np.testing.assert_array_equal(_run(resumed, q, 20).alpha, ref.alpha)


# ---------------------------------------------------------------- load_state_dict: checked, then loaded
def _edited(state, path, value):
    import copy

    out = copy.deepcopy(state)
    where = out
    for key in path[:-1]:
        where = where[key]
    if value is KeyError:
        del where[path[-1]]
    else:
        where[path[-1]] = value
    return out


@pytest.mark.parametrize(("path", "value", "match"), [
    (("exp_avg",), KeyError, r"state lacks the keys \['exp_avg'\]"),
    (("config", "mu"), KeyError, r"state\['config'\] lacks the keys \['mu'\]"),
    (("beta",), np.zeros(4), r"state\['beta'\] must have shape \(3,\), but got shape \(4,\)"),
    (("beta",), np.array([0.0, np.nan, 0.0]), r"state\['beta'\] must be finite"),
    (("exp_avg_sq",), np.array([0.0, -1.0, 0.0]), r"state\['exp_avg_sq'\] must be >= 0, but got"),
    (("momentum_buffer",), "abc", r"state\['momentum_buffer'\] must be an array of shape \(3,\)"),
    (("step",), -1, r"state\['step'\] must be an integer >= 0, but got -1"),
    (("step",), 2.5, r"state\['step'\] must be an integer >= 0, but got 2\.5"),
    (("config", "lr"), float("nan"), r"state\['config'\]\['lr'\] must be positive, but got nan"),
    (("config", "mu"), 0, r"state\['config'\]\['mu'\] must be positive, but got 0"),
    (("config", "update"), "bogus", r"state\['config'\]\['update'\] must be 'adam' or 'sgd', but got 'bogus'"),
    (("config", "betas"), (0.9, 1.0), r"Invalid beta parameter at index 1 of state\['config'\]\['betas'\]: 1\.0"),
    (("config", "momentum"), -0.5, r"state\['config'\]\['momentum'\] must be in \[0, 1\), but got -0\.5"),
    (("config", "directions"), "sobol", r"state\['config'\]\['directions'\] must be one of"),
    (("config", "sum_zero"), "yes", r"state\['config'\]\['sum_zero'\] must be True or False, but got 'yes'"),
    (("config", "orthogonal"), True, r"state\['config'\] asks for directions that cannot be drawn: orthogonal=True "
                                     r"is defined for"),
    (("config", "lr_schedule"), {"name": "cosine", "total_steps": 0, "floor": 0.01},
     r"state\['config'\]\['lr_schedule'\]\['total_steps'\] must be an integer >= 1, but got 0"),
    (("config", "mu_schedule"), {"name": "warp"}, r"state\['config'\]\['mu_schedule'\] must be a schedule spec"),
    (("config", "domain"), {"simplex": [3]}, r"state\['config'\]\['domain'\] is not a domain"),
    (("pending",), {"directions": np.zeros((2, 3)), "mu": 0.05},
     r"state\['pending'\]\['directions'\] must have shape \(1, 3\), but got shape \(2, 3\)"),
    (("pending",), {"directions": np.zeros((1, 3)), "mu": -1.0}, r"state\['pending'\]\['mu'\] must be positive"),
    (("rng",), {"bit_generator": "MT19937"}, r"state\['rng'\] must be the state of a PCG64 generator"),
])
def test_a_bad_state_is_refused_naming_the_key_and_changes_nothing(path, value, match):
    q = Quadratic.random(3, rng=0)
    saved = _run(SimplexSPSA(3, seed=1), q, 5)
    saved.ask()
    state = saved.state_dict()
    opt = _run(SimplexSPSA(3, seed=2, lr=0.3), q, 2)
    before = opt.state_dict()
    with pytest.raises(ValueError, match=match):
        opt.load_state_dict(_edited(state, path, value))
    after = opt.state_dict()
    assert after["config"] == before["config"] and after["step"] == before["step"] and after["rng"] == before["rng"]
    for key in ("beta", "exp_avg", "exp_avg_sq", "momentum_buffer"):
        np.testing.assert_array_equal(after[key], before[key])
    assert opt.lr == 0.3
    opt.load_state_dict(state)  # the good state still loads into it
    assert opt.step_count == 5 and opt.lr == saved.lr  # the saved run's default lr


def test_the_state_restores_the_schedules_with_their_planned_steps():
    q = Quadratic.random(5, rng=1)
    kw = dict(seed=7, lr_schedule="cosine", mu_schedule="power")
    ref = _run(SimplexSPSA(5, total_steps=80, **kw), q, 60)
    first = _run(SimplexSPSA(5, total_steps=80, **kw), q, 25)
    resumed = SimplexSPSA(5, total_steps=35, lr_schedule="power")  # built for another plan: the state's wins
    resumed.load_state_dict(first.state_dict())
    assert resumed.current_lr() == first.current_lr() and resumed.current_mu() == first.current_mu()
    np.testing.assert_array_equal(_run(resumed, q, 35).alpha, ref.alpha)
    callable_state = SimplexSPSA(5, lr_schedule=lambda n: 1.0).state_dict()
    with pytest.raises(ValueError, match=r"is a callable, which a state cannot hold"):
        SimplexSPSA(5).load_state_dict(callable_state)
