"""The losses of spsa_mix.blend.losses, checked against PyTorch and Hugging Face conventions."""

from __future__ import annotations

import math
from types import SimpleNamespace

import pytest
import torch
import torch.nn.functional as F

from spsa_mix.blend import evaluate
from spsa_mix.blend.losses import CausalLM, CrossEntropy, Entropy, correct_counts, logits_of, resolve_loss


def test_causal_lm_equals_a_hand_shifted_cross_entropy_over_real_tokens() -> None:
    gen = torch.Generator().manual_seed(0)
    logits = torch.randn(3, 6, 11, generator=gen)
    labels = torch.randint(0, 11, (3, 6), generator=gen)
    labels[0, 4:] = -100  # padding
    terms = [F.cross_entropy(logits[b, t], labels[b, t + 1], reduction="sum")
             for b in range(3) for t in range(5) if labels[b, t + 1] != -100]
    expected = torch.stack(terms).sum() / len(terms)
    assert torch.allclose(CausalLM()(logits, labels), expected, atol=1e-6)
    hits, count = CausalLM().correct(logits, labels)
    manual = sum(int(logits[b, t].argmax() == labels[b, t + 1]) for b in range(3) for t in range(5)
                 if labels[b, t + 1] != -100)
    assert (int(hits), count) == (manual, len(terms))


def test_causal_lm_matches_transformers_own_loss() -> None:
    transformers = pytest.importorskip("transformers")
    cfg = transformers.LlamaConfig(vocab_size=32, hidden_size=16, intermediate_size=32, num_hidden_layers=1,
                                   num_attention_heads=2, num_key_value_heads=2, max_position_embeddings=16)
    torch.manual_seed(0)
    model = transformers.LlamaForCausalLM(cfg).eval()
    ids = torch.randint(0, 32, (2, 7))
    labels = ids.clone()
    labels[1, 5:] = -100
    with torch.no_grad():
        out = model(input_ids=ids, labels=labels)
    assert torch.allclose(CausalLM()(out, labels), out.loss, atol=1e-5)


def test_entropy_is_log_k_for_uniform_predictions_and_masks_padding() -> None:
    assert math.isclose(float(Entropy()(torch.zeros(5, 7), None)), math.log(7), rel_tol=1e-6)
    logits = torch.zeros(1, 3, 4)
    logits[0, 2] = torch.tensor([50.0, 0.0, 0.0, 0.0])  # a confident token, padded out below
    mask_all = torch.tensor([[1, 1, 1]])
    mask_two = torch.tensor([[1, 1, -100]])
    assert float(Entropy()(logits, mask_all)) < math.log(4) - 0.1
    assert math.isclose(float(Entropy()(logits, mask_two)), math.log(4), rel_tol=1e-6)


def test_logits_are_found_in_model_outputs() -> None:
    t = torch.zeros(2, 3)
    assert logits_of(t) is t and logits_of(SimpleNamespace(logits=t)) is t and logits_of((t, 1)) is t
    with pytest.raises(ValueError, match="cannot find logits in the model's outputs: got dict"):
        logits_of({"x": t})


def test_resolve_loss_names_callables_and_import_paths() -> None:
    assert isinstance(resolve_loss("cross-entropy"), CrossEntropy)
    assert resolve_loss(F.mse_loss) is F.mse_loss
    assert resolve_loss("torch.nn.functional:cross_entropy") is F.cross_entropy
    with pytest.raises(ValueError, match="cannot import 'nope' from 'torch.nn.functional'"):
        resolve_loss("torch.nn.functional:nope")
    with pytest.raises(ValueError, match="loss must be one of"):
        resolve_loss(3)


def test_correct_counts_falls_back_to_argmax_per_example() -> None:
    hits, count = correct_counts(F.cross_entropy, torch.eye(3), torch.tensor([0, 2, 2]))
    assert (int(hits), count) == (2, 3)
    hits, _ = correct_counts(F.mse_loss, torch.zeros(3), torch.zeros(3))  # float targets: no accuracy
    assert int(hits) == -1


def test_evaluate_reports_token_accuracy_for_a_causal_lm() -> None:
    class Echo(torch.nn.Module):  # predicts token t+1 = token t
        def forward(self, ids: torch.Tensor) -> torch.Tensor:
            return F.one_hot(ids, 5).float() * 10

    ids = torch.tensor([[1, 1, 2, 2], [3, 3, 3, 0]])
    labels = ids.clone()
    labels[1, 3] = -100
    m = evaluate(Echo(), (ids, labels), loss_fn=CausalLM())
    # scored tokens: (1->1 hit, 1->2 miss, 2->2 hit), (3->3 hit, 3->3 hit); 4 of 5
    assert m["n"] == 2 and math.isclose(m["accuracy"], 4 / 5)


def test_calibrated_cross_entropy_is_the_minimum_over_temperatures() -> None:
    from spsa_mix.blend.losses import CalibratedCrossEntropy

    gen = torch.Generator().manual_seed(0)
    logits, labels = torch.randn(64, 5, generator=gen, dtype=torch.float64), torch.randint(0, 5, (64,), generator=gen)
    labels[:3] = -100  # ignored, as by F.cross_entropy
    grid = torch.logspace(-2, 2, 4001, dtype=torch.float64)
    brute = min(float(F.cross_entropy(logits * b, labels)) for b in grid)
    loss = CalibratedCrossEntropy()
    assert float(loss(logits, labels)) == pytest.approx(brute, abs=1e-6)
    assert float(loss(logits, labels)) <= float(F.cross_entropy(logits, labels))
    assert float(loss(7.0 * logits, labels)) == pytest.approx(float(loss(logits, labels)), abs=1e-9)  # scale-free
    assert [int(v) for v in loss.correct(logits, labels)] == [int((logits.argmax(1) == labels).sum()), 61]
    with pytest.raises(ValueError, match="needs logits"):
        loss(torch.zeros(2, 3, 4), torch.zeros(2, 3, dtype=torch.int64))


def test_calibrated_cross_entropy_gradient_is_that_of_the_profiled_loss() -> None:
    """The temperature is held fixed in the backward pass (envelope theorem): the gradient is
    the derivative of min_T CE(z / T) itself, checked by central differences."""
    from spsa_mix.blend.losses import CalibratedCrossEntropy

    gen = torch.Generator().manual_seed(1)
    z = torch.randn(32, 4, generator=gen, dtype=torch.float64).requires_grad_(True)
    y = torch.randint(0, 4, (32,), generator=gen)
    loss = CalibratedCrossEntropy()
    (grad,) = torch.autograd.grad(loss(z, y), z)
    direction = torch.randn(32, 4, generator=gen, dtype=torch.float64)
    h = 1e-5
    with torch.no_grad():
        numeric = (loss(z + h * direction, y) - loss(z - h * direction, y)) / (2 * h)
    assert float((grad * direction).sum()) == pytest.approx(float(numeric), rel=1e-5)


def test_calibrated_cross_entropy_in_a_blended_objective_for_every_method() -> None:
    import numpy as np

    import spsa_mix
    from spsa_mix.blend import BlendedObjective

    gen = torch.Generator().manual_seed(2)
    experts = [torch.nn.Linear(6, 3) for _ in range(3)]
    x, y = torch.randn(48, 6, generator=gen), torch.randint(0, 3, (48,), generator=gen)
    obj = BlendedObjective(torch.nn.Linear(6, 3), experts, loss_fn="calibrated-cross-entropy", data=(x, y),
                           device="cpu")
    alpha = np.array([0.5, 0.3, 0.2])
    value, grad = obj.value_and_grad(alpha)
    assert value == pytest.approx(float(obj(alpha[None])[0]), abs=1e-6)
    tangent = np.array([[1.0, -1.0, 0.0]])
    _, deriv = obj.jvp(alpha, tangent)
    assert float(deriv[0]) == pytest.approx(float(grad @ tangent[0]), rel=1e-4, abs=1e-7)
    for method in ("spsa", "backprop", "forward-grad"):
        res = spsa_mix.minimize(obj, k=3, method=method, vectorized=True, maxiter=5, seed=0)
        assert res.success, method


def test_a_loss_by_name_with_the_wrong_signature_is_named():
    from spsa_mix.blend.losses import resolve_loss

    with pytest.raises(ValueError, match=r"loss 'math:sqrt' must take \(outputs, targets\), but its signature is"):
        resolve_loss("math:sqrt")
    with pytest.raises(ValueError, match=r"loss 'os.path:isdir' must take"):
        resolve_loss("os.path:isdir")
    resolve_loss("torch.nn.functional:cross_entropy")


def test_multiple_choice_is_the_softmax_over_each_choices_log_likelihood() -> None:
    from spsa_mix.blend.losses import MultipleChoice

    gen = torch.Generator().manual_seed(0)
    q, c, t, v = 3, 3, 5, 7
    logits = torch.randn(q * c, t, v, generator=gen)
    labels = torch.full((q, c, t), -100)
    scored = {(0, 0): [3, 4], (0, 1): [2, 3, 4], (0, 2): [4], (1, 0): [1, 2], (1, 1): [4], (2, 0): [3, 4],
              (2, 1): [2, 3, 4], (2, 2): [1]}  # question 1 has two choices: its third row is padding
    for (i, j), positions in scored.items():
        labels[i, j, positions] = torch.randint(0, v, (len(positions),), generator=gen)
    answers = [2, 0, 1]
    targets = torch.cat([labels, F.one_hot(torch.tensor(answers), c)[..., None]], -1)
    loss, hits = 0.0, 0
    for i in range(q):  # by hand: each choice's sum of log p(token | what precedes it)
        lls = []
        for j in range(c):
            if (i, j) in scored:
                logp = torch.log_softmax(logits[i * c + j], -1)
                lls.append(sum(float(logp[p - 1, labels[i, j, p]]) for p in scored[i, j]))
        loss -= math.log(math.exp(lls[answers[i]]) / sum(math.exp(x) for x in lls))
        hits += int(max(range(len(lls)), key=lls.__getitem__) == answers[i])
    mc = resolve_loss("multiple-choice")
    assert isinstance(mc, MultipleChoice)
    assert float(mc(logits, targets)) == pytest.approx(loss / q, rel=1e-5)
    assert [int(x) for x in mc.correct(logits, targets)] == [hits, q]
    stacked = torch.stack([logits, 2 * logits])  # under vmap (batched probes), as one by one
    by_vmap = torch.func.vmap(lambda z: mc(z, targets))(stacked)
    assert torch.allclose(by_vmap, torch.stack([mc(z, targets) for z in stacked]), atol=1e-6)
    with pytest.raises(ValueError, match=r"multiple-choice needs logits \(q \* c, T, V\) and targets"):
        mc(logits, labels)
