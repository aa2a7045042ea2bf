"""Run your own loop with the ask/tell interface, save the state, resume exactly.

SPSA finds the target weights (to 0.002 in every coordinate in 300 steps), and a second
optimiser restored from ``state_dict()`` then takes the same 100 steps bit for bit.

Run: ``python examples/ask_tell.py``
"""

import numpy as np

import spsa_mix

target = np.array([0.5, 0.3, 0.15, 0.05])


def batch_loss(points: np.ndarray) -> np.ndarray:
    """Losses of all probes of one step; in a real job, one minibatch scores them all."""
    return ((points - target) ** 2).sum(axis=1)


def main() -> dict[str, float]:
    """Run the loop; returns what the script prints (``key=value``) and the test checks."""
    opt = spsa_mix.SimplexSPSA(k=4, m=2, lr=0.05, seed=0)
    for step in range(300):
        probes = opt.ask()  # (2 m, k): softmax(beta +- mu u_r), interleaved
        info = opt.tell(batch_loss(probes))
        if step % 100 == 0:
            print(f"step {info.step:4d}  loss {info.loss:.2e}  alpha {np.round(opt.alpha, 3)}")
    error = float(np.abs(opt.alpha - target).max())

    state = opt.state_dict()  # logits, Adam moments, generator state, pending probes
    resumed = spsa_mix.SimplexSPSA(k=4, m=2, lr=0.05)
    resumed.load_state_dict(state)
    for _ in range(100):
        opt.tell(batch_loss(opt.ask()))
        resumed.tell(batch_loss(resumed.ask()))
    print("final alpha", np.round(opt.alpha, 3), "target", target)
    return {"max_abs_error": error,  # max |alpha - target| after 300 steps
            "resumed_bit_for_bit": bool(np.array_equal(opt.alpha, resumed.alpha))}


if __name__ == "__main__":
    for key, value in main().items():
        print(f"{key}={value}")
