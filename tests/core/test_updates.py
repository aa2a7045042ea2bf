import numpy as np
import pytest

from spsa_mix.core.updates import AdamState, adam_update, sgd_update, two_point_gradient


def test_adam_matches_torch():
    torch = pytest.importorskip("torch")
    rng = np.random.default_rng(0)
    p0 = rng.standard_normal(5)
    grads = rng.standard_normal((20, 5))
    p_t = torch.tensor(p0, dtype=torch.float64, requires_grad=True)
    opt = torch.optim.Adam([p_t], lr=0.01, betas=(0.9, 0.99), eps=1e-8)
    p, state = p0.copy(), AdamState(np.zeros(5), np.zeros(5), 0)
    for g in grads:
        p_t.grad = torch.tensor(g, dtype=torch.float64)
        opt.step()
        p, state = adam_update(p, g, state, lr=0.01, beta1=0.9, beta2=0.99, eps=1e-8)
    np.testing.assert_allclose(p, p_t.detach().numpy(), rtol=1e-12, atol=1e-14)


def test_sgd_momentum_matches_torch():
    torch = pytest.importorskip("torch")
    rng = np.random.default_rng(1)
    p0, grads = rng.standard_normal(3), rng.standard_normal((10, 3))
    p_t = torch.tensor(p0, requires_grad=True, dtype=torch.float64)
    opt = torch.optim.SGD([p_t], lr=0.1, momentum=0.9)
    p, buf = p0.copy(), np.zeros(3)
    for g in grads:
        p_t.grad = torch.tensor(g, dtype=torch.float64)
        opt.step()
        p, buf = sgd_update(p, g, buf, lr=0.1, momentum=0.9)
    np.testing.assert_allclose(p, p_t.detach().numpy(), rtol=1e-12)


def test_two_point_gradient_is_exact_for_linear_losses():
    g = np.array([1.0, -2.0, 0.5])
    u = np.eye(3)
    mu = 0.3
    lp, lm = (u * mu) @ g, -(u * mu) @ g
    np.testing.assert_allclose(two_point_gradient(lp, lm, u, mu=mu, scale=3.0), g)  # m = d orthonormal


def test_adam_with_eps_zero_takes_no_step_where_no_gradient_was_seen():
    # issue 13, item 8: 0 / 0 gave NaN coordinates
    state = AdamState(np.zeros(3), np.zeros(3), 0)
    p, state = adam_update(np.zeros(3), np.array([0.0, 1.0, 0.0]), state, lr=0.1, beta1=0.9, beta2=0.99, eps=0.0)
    assert np.isfinite(p).all() and p[0] == p[2] == 0.0 and p[1] == pytest.approx(-0.1)
    tiny = np.array([1e-170, 0.0, 0.0])  # its square underflows to 0 while the first moment does not
    p, _ = adam_update(p, tiny, state, lr=0.1, beta1=0.9, beta2=0.99, eps=0.0)
    assert np.isfinite(p).all()


@pytest.mark.parametrize("method", ["spsa", "forward-grad", "backprop"])
def test_a_flat_objective_with_eps_zero_returns_a_finite_point(method):
    import spsa_mix
    from spsa_mix.problems import Quadratic

    class Flat(Quadratic):
        def __call__(self, x):
            return np.zeros(len(x)) if np.ndim(x) > 1 else 0.0

        def value_and_grad(self, x):
            return 0.0, np.zeros(3)

        def jvp(self, x, tangents):
            return 0.0, np.zeros(len(tangents))

    flat = Flat(np.eye(3), np.full(3, 1 / 3))
    res = spsa_mix.minimize(flat, k=3, method=method, eps=0.0, maxiter=20, seed=0, vectorized=True)
    assert res.success and np.isfinite(res.x).all() and np.isfinite(res.history["x"]).all()
    np.testing.assert_allclose(res.x, 1 / 3)
