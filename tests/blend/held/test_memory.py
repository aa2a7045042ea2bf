"""Resident or streamed: the budget, the choice, and the line that says it."""

from __future__ import annotations

import logging

import numpy as np
import pytest
import torch

from spsa_mix.blend import BlendedObjective
from spsa_mix.blend.held.memory import (
    AUTO_BUDGET_SHARE,
    RESIDENT_SHARE,
    check_memory,
    choose_memory,
    memory_budget,
    memory_estimate,
    resident_bytes,
)
from spsa_mix.blend.held.experts import plan_experts

from ..blend_helpers import TinyNet, make_tiny_experts, tiny_batch
from ..hf_helpers import lm_batch


def test_the_resident_bytes_are_the_stack_and_the_probe_buffer():
    experts = make_tiny_experts(3)
    plan = plan_experts(TinyNet().state_dict(), experts, device=torch.device("cpu"), dtype=torch.float32)
    obj = BlendedObjective(TinyNet(), experts, device="cpu", memory="resident")
    mem = obj.memory()
    assert resident_bytes(plan, torch.float32) == mem["stack"] + mem["blended"]
    assert resident_bytes(plan, torch.bfloat16) == mem["stack"] + mem["blended"] // 2


def test_the_formula_is_what_the_resident_stack_holds(llama_family):
    obj = BlendedObjective.from_pretrained(llama_family.experts, device="cpu", memory="resident")
    mem = obj.memory()
    size = obj._stack.layout.size  # P with each tensor's padding to 128 elements
    assert memory_estimate(size, 0, 3, mode="resident", stored_bytes=4, forward_bytes=4)["device"] == \
        mem["stack"] + mem["blended"]


def test_auto_is_resident_while_the_stack_fits_half_the_budget():
    assert choose_memory("auto", resident=50, budget=100) == "resident"
    assert choose_memory("auto", resident=51, budget=100) == "streamed"
    assert choose_memory("streamed", resident=1, budget=100) == "streamed"
    assert RESIDENT_SHARE == 0.5


def test_the_automatic_budget_is_a_share_of_the_free_memory(monkeypatch):
    import spsa_mix.blend.held.memory as memory

    monkeypatch.setattr(memory, "_available_cpu", lambda: 10 * 10**9)
    budget, how = memory_budget(torch.device("cpu"), None)
    assert budget == int(AUTO_BUDGET_SHARE * 10 * 10**9)
    assert how == "90% of 10.00 GB available on the host"
    assert memory_budget(torch.device("cpu"), "2GiB") == (2**31, "max_memory=2GiB")


@pytest.mark.parametrize("memory, max_memory, message", [
    ("streaming", None, "memory must be one of"),
    ("auto", "lots", "max_memory must be a positive number of bytes or a string such as '5GB', but got 'lots'"),
    ("auto", -3, "max_memory must be a positive number"),
])
def test_bad_modes_and_budgets_are_named(memory, max_memory, message):
    with pytest.raises(ValueError, match=message):
        check_memory(memory, max_memory)
    with pytest.raises(ValueError, match=message):
        BlendedObjective(TinyNet(), make_tiny_experts(2), device="cpu", memory=memory, max_memory=max_memory)


def test_the_objective_says_what_it_chose(llama_family, caplog):
    with caplog.at_level(logging.INFO, logger="spsa_mix"):
        small = BlendedObjective.from_pretrained(llama_family.experts, data=lm_batch(), device="cpu",
                                                 max_memory="100MB")
        tight = BlendedObjective.from_pretrained(llama_family.experts, data=lm_batch(), device="cpu",
                                                 max_memory="200kB")
    assert small.memory_mode == "resident" and tight.memory_mode == "streamed"
    assert small.memory_choice.startswith("experts resident on cpu: the resident stack (")
    assert "fits in half the budget of 100.00 MB (max_memory=100MB)" in small.memory_choice
    assert tight.memory_choice.startswith("experts streamed from their files (")
    assert "exceeds half the budget of 200.00 kB (max_memory=200kB)" in tight.memory_choice
    assert small.memory_choice in caplog.text and tight.memory_choice in caplog.text
    points = np.random.default_rng(0).dirichlet(np.ones(3), size=2)
    np.testing.assert_allclose(tight(points), small(points), rtol=1e-6)


def test_a_small_model_in_memory_stays_resident_by_default():
    obj = BlendedObjective(TinyNet(), make_tiny_experts(3), data=tiny_batch(), device="cpu")
    assert obj.memory_mode == "resident" and "fits in half the budget" in obj.memory_choice
