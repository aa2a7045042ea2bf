"""Training experts and the expert cache: reuse, retrain on change, survive interruption."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

import spsa_mix.experiment.experts as experts_mod
from spsa_mix.data.images import ImageData, load_dataset
from spsa_mix.experiment.experts import (
    ExpertCache,
    TrainSpec,
    expert_key,
    train_or_load_experts,
)


@pytest.fixture(scope="module")
def digits() -> ImageData:
    return load_dataset("digits")


def make_model() -> torch.nn.Module:
    return torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(64, 16), torch.nn.ReLU(), torch.nn.Linear(16, 10))


SPLITS = [np.arange(0, 60), np.arange(60, 120)]
SPEC = TrainSpec(epochs=2)


def _train(digits: ImageData, cache: ExpertCache | None, *, spec: TrainSpec = SPEC, splits=SPLITS,
           **kw):
    return train_or_load_experts(make_model, digits, splits, spec=spec, cache=cache, arch="mlp", progress=False, **kw)


def _state(model: torch.nn.Module) -> list[torch.Tensor]:
    return [t.clone() for t in model.state_dict().values()]


def test_second_run_loads_and_does_not_retrain(digits: ImageData, tmp_path: Path, monkeypatch) -> None:
    cache = ExpertCache(tmp_path)
    first = _train(digits, cache)
    assert [e.cached for e in first] == [False, False]
    assert len(list(tmp_path.glob("*.safetensors"))) == 2 and len(list(tmp_path.glob("*.json"))) == 2

    def refuse(*args, **kwargs):
        raise AssertionError("train_model must not run when the experts are cached")

    monkeypatch.setattr(experts_mod, "train_model", refuse)
    again = _train(digits, cache)
    assert [e.cached for e in again] == [True, True]
    for a, b in zip(first, again, strict=True):
        assert all(torch.equal(x, y) for x, y in zip(_state(a.model), _state(b.model), strict=True))
        assert a.meta["test_accuracy"] == b.meta["test_accuracy"]


def test_record_holds_config_indices_size_and_accuracy(digits: ImageData, tmp_path: Path) -> None:
    e = _train(digits, ExpertCache(tmp_path))[1]
    meta = json.loads(e.path.with_suffix(".json").read_text())
    assert meta["indices"] == list(range(60, 120)) and meta["size"] == 60
    assert meta["spec"]["train"]["epochs"] == 2 and meta["spec"]["arch"] == "mlp"
    assert 0.0 <= meta["test_accuracy"] <= 1.0 and len(meta["train_loss"]) == 2
    assert sum(meta["class_counts"]) == 60 and meta["key"] == e.path.stem


@pytest.mark.parametrize(
    "change",
    [
        {"spec": TrainSpec(epochs=3)},
        {"spec": TrainSpec(epochs=2, lr=2e-3)},
        {"spec": TrainSpec(epochs=2, data_seed=1)},
        {"splits": [np.arange(0, 60), np.arange(61, 121)]},
    ],
)
def test_a_changed_configuration_retrains(digits: ImageData, tmp_path: Path, change: dict) -> None:
    cache = ExpertCache(tmp_path)
    _train(digits, cache)
    changed = _train(digits, cache, **change)
    retrained = [not e.cached for e in changed]
    if "splits" in change:
        assert retrained == [False, True]  # expert 0's data did not change
    else:
        assert retrained == [True, True]


def test_another_architecture_retrains(digits: ImageData, tmp_path: Path) -> None:
    cache = ExpertCache(tmp_path)
    _train(digits, cache)

    def wider() -> torch.nn.Module:
        return torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(64, 32), torch.nn.ReLU(), torch.nn.Linear(32, 10))

    out = train_or_load_experts(wider, digits, SPLITS, spec=TrainSpec(epochs=2), cache=cache, arch="mlp", progress=False)
    assert [e.cached for e in out] == [False, False]


def test_an_interrupted_run_keeps_the_experts_already_trained(digits: ImageData, tmp_path: Path) -> None:
    cache = ExpertCache(tmp_path)
    seen = []

    def interrupt_after_first(expert) -> None:
        seen.append(expert.index)
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        _train(digits, cache, on_expert=interrupt_after_first)
    assert seen == [0]
    resumed = _train(digits, cache)
    assert [e.cached for e in resumed] == [True, False]


def test_a_corrupt_record_is_retrained(digits: ImageData, tmp_path: Path) -> None:
    cache = ExpertCache(tmp_path)
    first = _train(digits, cache)
    first[0].path.with_suffix(".json").write_text("{not json")
    again = _train(digits, cache)
    assert [e.cached for e in again] == [False, True]


def test_training_is_deterministic_without_touching_the_global_rng(digits: ImageData) -> None:
    torch.manual_seed(123)
    before = torch.random.get_rng_state()
    a = _train(digits, None)
    assert torch.equal(before, torch.random.get_rng_state())
    b = _train(digits, None)
    for x, y in zip(a, b, strict=True):
        assert all(torch.equal(s, t) for s, t in zip(_state(x.model), _state(y.model), strict=True))
    # the two experts differ (own seed, own data)
    assert not torch.equal(_state(a[0].model)[0], _state(a[1].model)[0])


def test_training_learns(digits: ImageData) -> None:
    e = _train(digits, None, spec=TrainSpec(epochs=15), splits=[np.arange(600)])[0]
    assert e.meta["train_loss"][-1] < e.meta["train_loss"][0]
    assert e.test_accuracy > 0.6  # chance is 0.1


def test_expert_key_depends_on_every_field() -> None:
    spec = {"a": 1, "b": [1, 2]}
    assert expert_key(spec) == expert_key(dict(reversed(list(spec.items()))))
    assert expert_key(spec) != expert_key({"a": 1, "b": [2, 1]})


def test_experts_share_one_initialisation_unless_told_otherwise(digits: ImageData) -> None:
    zero = TrainSpec(epochs=0)  # no training: the weights are the initialisation
    shared = _train(digits, None, spec=zero)
    assert all(torch.equal(x, y) for x, y in zip(_state(shared[0].model), _state(shared[1].model), strict=True))
    independent = _train(digits, None, spec=TrainSpec(epochs=0, shared_init=False))
    assert not torch.equal(_state(independent[0].model)[1], _state(independent[1].model)[1])
    assert shared[0].meta["spec"]["init_seed"] == shared[1].meta["spec"]["init_seed"]


def _truncate(path: Path) -> None:
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])


def _garbage(path: Path) -> None:
    path.write_bytes(b"these are not weights " * 20)


def _flip_last_bytes(path: Path) -> None:  # a valid header, wrong data: only the record's checksum tells
    raw = path.read_bytes()
    path.write_bytes(raw[:-4] + bytes(255 - b for b in raw[-4:]))


@pytest.mark.parametrize(("damage", "checksum", "what"), [
    (_truncate, True, "SHA-256"), (_garbage, True, "SHA-256"), (_flip_last_bytes, True, "SHA-256"),
    # records written before they held a checksum: safetensors' own error is caught
    (_truncate, False, "SafetensorError"), (_garbage, False, "SafetensorError"),
])
def test_a_corrupt_weights_file_is_retrained_with_a_warning(digits: ImageData, tmp_path: Path, caplog,
                                                           damage, checksum, what) -> None:
    cache = ExpertCache(tmp_path)
    first = _train(digits, cache)
    if not checksum:
        record = first[0].path.with_suffix(".json")
        record.write_text(json.dumps({k: v for k, v in json.loads(record.read_text()).items()
                                      if k != "weights_sha256"}))
    damage(first[0].path)
    with caplog.at_level("WARNING", logger="spsa_mix.experiment"):
        again = _train(digits, cache)
    assert [e.cached for e in again] == [False, True]
    warnings = [r.getMessage() for r in caplog.records if r.levelname == "WARNING"]
    assert len(warnings) == 1 and str(first[0].path) in warnings[0] and what in warnings[0], warnings
    assert "retraining" in warnings[0]
    # retrained from its own initialisation: the same weights as the first time, and the file is whole again
    assert all(torch.equal(x, y) for x, y in zip(_state(first[0].model), _state(again[0].model), strict=True))
    assert [e.cached for e in _train(digits, cache)] == [True, True]


def test_an_expert_whose_training_loss_is_not_finite_is_not_cached(digits: ImageData, tmp_path: Path) -> None:
    from spsa_mix.core.errors import NonFiniteLossError

    class Diverged(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.body = make_model()

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.body(x) * float("nan")

    cache = ExpertCache(tmp_path)
    with pytest.raises(NonFiniteLossError, match="training loss is nan at epoch 1, batch 1"):
        train_or_load_experts(Diverged, digits, SPLITS, spec=SPEC, cache=cache, arch="nan", progress=False)
    assert list(tmp_path.iterdir()) == []
