"""Run your own loop with the ask/tell interface, save the state, resume exactly.

Run: ``python examples/ask_tell.py``
"""

import numpy as np

import spsa_mix

target = np.array([0.5, 0.3, 0.15, 0.05])


def batch_loss(points: np.ndarray) -> np.ndarray:
    """Losses of all probes of one step; in a real job, one minibatch scores them all."""
    return ((points - target) ** 2).sum(axis=1)


opt = spsa_mix.SimplexSPSA(k=4, m=2, lr=0.05, seed=0)
for step in range(300):
    probes = opt.ask()  # (2 m, k): softmax(beta +- mu u_r), interleaved
    info = opt.tell(batch_loss(probes))
    if step % 100 == 0:
        print(f"step {info.step:4d}  loss {info.loss:.2e}  alpha {np.round(opt.alpha, 3)}")

state = opt.state_dict()  # logits, Adam moments, generator state, pending probes
resumed = spsa_mix.SimplexSPSA(k=4, m=2, lr=0.05)
resumed.load_state_dict(state)
for _ in range(100):
    opt.tell(batch_loss(opt.ask()))
    resumed.tell(batch_loss(resumed.ask()))
assert np.array_equal(opt.alpha, resumed.alpha)  # bit for bit
print("final alpha", np.round(opt.alpha, 3), "target", target)
