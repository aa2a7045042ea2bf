"""BlendedObjective's state for checkpoints: the minibatches drawn, skipped on resume."""

import json

import numpy as np
import pytest
import torch
from torch import nn

import spsa_mix
from spsa_mix import Status
from spsa_mix.blend import BlendedObjective
from spsa_mix.data.batches import Batches
from spsa_mix.data.images import ImageData


def _images() -> ImageData:
    rng = np.random.default_rng(0)
    x = rng.integers(0, 256, size=(40, 1, 2, 2), dtype=np.uint8)
    return ImageData.from_arrays("toy", x, np.arange(40) % 3, x[:3], np.arange(3), scale=1 / 255)


def _experts(k: int = 3) -> list[nn.Module]:
    gen = torch.Generator().manual_seed(0)
    experts = []
    for _ in range(k):
        net = nn.Sequential(nn.Flatten(), nn.Linear(4, 3))
        with torch.no_grad():
            for p in net.parameters():
                p.copy_(torch.randn(p.shape, generator=gen))
        experts.append(net)
    return experts


def _objective(data_kind: str) -> BlendedObjective:
    """A fresh objective on shuffled minibatches, its order seeded as every time."""
    images = _images()
    if data_kind == "batches":
        data = Batches(images, batch_size=8, shuffle=True, generator=torch.Generator().manual_seed(5))
    else:  # a DataLoader with a seeded generator
        x, y = images.collate(*images.take("train", None, torch.device("cpu")), torch.arange(40))
        data = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(x, y), batch_size=8, shuffle=True,
                                           generator=torch.Generator().manual_seed(5))
    return BlendedObjective(nn.Sequential(nn.Flatten(), nn.Linear(4, 3)), _experts(), data=data, device="cpu")


@pytest.mark.parametrize("data_kind", ["batches", "dataloader"])
def test_a_resumed_blend_sees_the_minibatches_of_the_uninterrupted_run(tmp_path, data_kind):
    kw = dict(k=3, maxiter=14, seed=0, lr=0.05, m=2, lr_schedule="cosine")  # 14 steps: over two passes of 5 batches
    full_obj = _objective(data_kind)
    full = spsa_mix.minimize(full_obj, vectorized=True, **kw)

    def stop(info):
        if info.nit == 6:
            raise KeyboardInterrupt

    path = tmp_path / "blend.state"
    first = spsa_mix.minimize(_objective(data_kind), vectorized=True, checkpoint=path, callback=stop, **kw)
    assert first.status is Status.INTERRUPTED
    assert json.loads(path.read_text())["objective_state"] == {"batches_drawn": 6}
    obj = _objective(data_kind)
    res = spsa_mix.minimize(obj, vectorized=True, checkpoint=path, **kw)
    assert res.resumed_from == 6
    np.testing.assert_array_equal(res.x, full.x)
    assert res.fun == full.fun
    for key in full.history:
        np.testing.assert_array_equal(res.history[key], full.history[key], err_msg=key)
    assert obj.batches_drawn == full_obj.batches_drawn == 15  # 14 steps and the final evaluation


def test_load_state_dict_skips_without_a_forward_pass_and_checks_the_state():
    obj = _objective("batches")
    calls = []
    handle = obj._model.register_forward_hook(lambda *a: calls.append(1))
    obj.load_state_dict({"batches_drawn": 7})
    assert obj.batches_drawn == 7 and calls == []
    handle.remove()
    reference = _objective("batches")
    for _ in range(7):
        reference(np.full(3, 1 / 3))
    point = np.array([0.2, 0.3, 0.5])
    assert obj(point) == reference(point)  # the eighth minibatch in both
    with pytest.raises(ValueError, match=r"state\['batches_drawn'\] must be an integer >= 0, but got -1"):
        obj.load_state_dict({"batches_drawn": -1})
    with pytest.raises(ValueError, match=r"state must be a dict with 'batches_drawn'"):
        obj.load_state_dict({"step": 1})
