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
