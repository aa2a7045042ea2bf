"""MultiTaskObjective: one stack, per-task heads, streams and losses, the weighted mean."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import spsa_mix
from spsa_mix.blend import BlendedObjective
from spsa_mix.blend.multitask import MultiTaskObjective, TaskSpec

from .blend_helpers import TinyNet, make_tiny_experts, tiny_batch


def _experts_with_heads(classes=(3, 4, 2), seed=0):
    """Experts of one backbone (TinyNet), each with a head of its own class count."""
    experts = []
    for i, c in enumerate(classes):
        net = make_tiny_experts(1, seed=seed * 10 + i, d_out=c)[0]
        experts.append(net)
    return experts


def _loader(seed, n=24, batch=8, classes=3):
    x, y = tiny_batch(n, seed=seed, d_out=classes)
    return [(x[i:i + batch], y[i:i + batch]) for i in range(0, n, batch)]


def _tasks(classes=(3, 4, 2), weights=(1.0, 2.0, 0.5), losses=("entropy", "cross-entropy", "entropy")):
    return [TaskSpec(f"t{i}", _loader(100 + i, classes=c), loss=loss, weight=w, head="fc", model=TinyNet(d_out=c))
            for i, (c, w, loss) in enumerate(zip(classes, weights, losses, strict=True))]


def _single(experts, task, index, **kw):
    """The same task as a BlendedObjective of its own (its own stack): the reference."""
    return BlendedObjective(task.model, experts, loss_fn=task.loss, data=task.data, head="fc", head_from=index,
                            device="cpu", **kw)


def test_the_stack_and_the_blended_buffer_are_shared_by_every_task():
    experts = _experts_with_heads()
    obj = MultiTaskObjective(TinyNet(d_out=3), experts, _tasks(), device="cpu")
    views = [obj.task(n) for n in obj.names]
    assert all(v._stack.weights.data_ptr() == obj.backbone._stack.weights.data_ptr() for v in views)
    assert all(v._theta.data_ptr() == obj.backbone._theta.data_ptr() for v in views)
    assert [tuple(v._stack.constants["fc.weight"].shape) for v in views] == [(3, 6), (4, 6), (2, 6)]
    mem = obj.memory()
    assert mem["stack"] == obj.backbone.memory()["stack"]  # one stack, whatever the number of tasks
    assert mem["heads"] == sum(4 * (c * 6 + c) for c in (3, 4, 2))


def test_losses_are_the_weighted_mean_of_each_task_alone_on_its_own_stream():
    experts = _experts_with_heads()
    tasks = _tasks()
    obj = MultiTaskObjective(TinyNet(d_out=3), experts, tasks, device="cpu")
    singles = [_single(experts, t, i) for i, t in enumerate(tasks)]
    rng = np.random.default_rng(0)
    for _ in range(4):  # past the end of each stream (3 batches): it cycles
        pts = rng.dirichlet(np.ones(3), size=3)
        parts = np.stack([s(pts) for s in singles])  # (T, n)
        got = obj(pts)
        np.testing.assert_allclose(obj.last_task_losses, parts, rtol=1e-6, atol=1e-7)
        w = np.array([1.0, 2.0, 0.5]) / 3.5
        np.testing.assert_allclose(got, w @ parts, rtol=1e-6)
    assert obj.batches_drawn == 4 and obj.state_dict() == {"batches_drawn": {"t0": 4, "t1": 4, "t2": 4}}


def test_every_probe_of_a_call_sees_the_same_minibatches():
    obj = MultiTaskObjective(TinyNet(d_out=3), _experts_with_heads(), _tasks(), device="cpu")
    p = np.array([0.2, 0.3, 0.5])
    out = obj(np.stack([p, p, p]))
    assert out[0] == out[1] == out[2]
    assert out[0] != obj(p)  # the next call: the next minibatches


def test_value_and_grad_and_jvp_match_the_tasks_alone():
    experts = _experts_with_heads()
    tasks = _tasks()
    w = np.array([1.0, 2.0, 0.5]) / 3.5
    point = np.array([0.5, 0.3, 0.2])
    obj = MultiTaskObjective(TinyNet(d_out=3), experts, tasks, device="cpu")
    singles = [_single(experts, t, i) for i, t in enumerate(tasks)]
    ref = [s.value_and_grad(point) for s in singles]
    loss, grad = obj.value_and_grad(point)
    assert loss == pytest.approx(float(w @ [r[0] for r in ref]), rel=1e-6)
    np.testing.assert_allclose(grad, w @ np.stack([r[1] for r in ref]), rtol=1e-5, atol=1e-7)
    tangents = np.array([[1.0, -1.0, 0.0], [0.0, 1.0, -1.0]])
    obj2 = MultiTaskObjective(TinyNet(d_out=3), experts, _tasks(), device="cpu")
    value, derivs = obj2.jvp(point, tangents)
    assert value == pytest.approx(loss, rel=1e-6)
    np.testing.assert_allclose(derivs, tangents @ grad, rtol=1e-4, atol=1e-6)


def test_layer_wise_task_vectors_with_a_learned_scale_and_minimize():
    experts = _experts_with_heads()
    base = make_tiny_experts(1, seed=7)[0]
    tasks = _tasks()
    obj = MultiTaskObjective(TinyNet(d_out=3), experts, tasks, device="cpu", granularity="layer",
                             base=base, space="task-vectors", scale="learned")
    assert obj.groups == ["body", "bn"]  # the heads are not blended
    single = _single(experts, tasks[1], 1, granularity="layer", base=base, space="task-vectors", scale="learned")
    x = obj.domain.join(np.full((2, 3), 1 / 3), np.array([1.5]))
    obj(x)
    assert obj.last_task_losses[1, 0] == pytest.approx(float(single(x)), rel=1e-6)
    res = spsa_mix.minimize(obj, k=obj.shape, vectorized=True, max_evals=60, seed=0)
    assert res.success and res.x.shape == (7,)


@pytest.mark.parametrize("method", ["backprop", "forward-grad"])
def test_every_method_runs_on_it(method):
    obj = MultiTaskObjective(TinyNet(d_out=3), _experts_with_heads(), _tasks(), device="cpu")
    res = spsa_mix.minimize(obj, k=obj.shape, vectorized=True, max_evals=40, seed=0, method=method)
    assert res.success and res.x.shape == (3,) and abs(res.x.sum() - 1) < 1e-9 and res.x.min() >= 0


def test_evaluate_reports_each_task_and_the_means():
    experts = _experts_with_heads()
    tasks = _tasks()
    obj = MultiTaskObjective(TinyNet(d_out=3), experts, tasks, device="cpu")
    point = np.array([0.2, 0.5, 0.3])
    test = {t.name: tiny_batch(40, seed=200 + i, d_out=c) for i, (t, c) in enumerate(zip(tasks, (3, 4, 2)))}
    out = obj.evaluate(point, test)
    for i, t in enumerate(tasks):
        net = obj.task(t.name).blended_model(point).eval()
        with torch.no_grad():
            acc = float((net(test[t.name][0]).argmax(1) == test[t.name][1]).float().mean())
        assert out["tasks"][t.name]["accuracy"] == pytest.approx(acc)  # entropy tasks too: labels are given
    assert out["accuracy"] == pytest.approx(np.mean([out["tasks"][n]["accuracy"] for n in obj.names]))
    w = np.array([1.0, 2.0, 0.5]) / 3.5
    assert out["loss"] == pytest.approx(float(w @ [out["tasks"][n]["loss"] for n in obj.names]))


def test_save_pretrained_writes_each_task_loadable_alone(tmp_path):
    from safetensors.torch import load_file

    experts = _experts_with_heads()
    obj = MultiTaskObjective(TinyNet(d_out=3), experts, _tasks(), device="cpu")
    point = np.array([0.2, 0.5, 0.3])
    written = obj.save_pretrained(point, tmp_path / "merged")
    assert sorted(p.name for p in (tmp_path / "merged").iterdir()) == ["t0", "t1", "t2"]
    x = tiny_batch(8, seed=5)[0]
    for i, (name, c) in enumerate(zip(obj.names, (3, 4, 2))):
        net = TinyNet(d_out=c)
        net.load_state_dict(load_file(f"{written[name]}/model.safetensors"))
        net.eval()
        assert torch.equal(net.fc.weight, experts[i].fc.weight)  # the task's own head, unblended
        with torch.no_grad():
            torch.testing.assert_close(net(x), obj.task(name).blended_model(point).eval()(x))
    with pytest.raises(ValueError, match="exists and is not empty"):
        obj.save_pretrained(point, tmp_path / "merged")


def test_a_head_from_a_file_and_tasks_without_heads(tmp_path):
    from safetensors.torch import save_file

    experts = _experts_with_heads((3, 3, 3))
    head = {"fc.weight": torch.ones(3, 6), "fc.bias": torch.zeros(3)}
    save_file(head, str(tmp_path / "head.safetensors"))
    tasks = [TaskSpec("a", _loader(1), head="fc", head_from=str(tmp_path / "head.safetensors")),
             TaskSpec("b", _loader(2), head="fc", head_from=2)]
    obj = MultiTaskObjective(TinyNet(d_out=3), experts, tasks, device="cpu")
    assert torch.equal(obj.task("a")._stack.constants["fc.weight"], torch.ones(3, 6))
    plain = MultiTaskObjective(TinyNet(), experts, [TaskSpec("a", _loader(1)), TaskSpec("b", _loader(2))],
                               device="cpu")
    single = BlendedObjective(TinyNet(), experts, loss_fn="entropy", data=_loader(2), device="cpu")
    plain(np.full(3, 1 / 3))
    assert plain.last_task_losses[1, 0] == pytest.approx(float(single(np.full(3, 1 / 3))))
    written = plain.save_pretrained(np.full(3, 1 / 3), tmp_path / "one.safetensors")
    assert written == {"a": str(tmp_path / "one.safetensors"), "b": str(tmp_path / "one.safetensors")}


# ------------------------------------------------------------------ bad input, before any weight is read
def _bad(tasks, no_weight_read=None, **kw):
    return MultiTaskObjective(TinyNet(d_out=3), _experts_with_heads(), tasks, device="cpu", **kw)


@pytest.mark.parametrize("tasks, message", [
    ([], "tasks must be a non-empty list"),
    ([TaskSpec("a", None)], "task 'a' has no data"),
    ([TaskSpec("a", [1]), TaskSpec("a", [1])], "task 'a': the name is used by two tasks"),
    ([TaskSpec("", [1])], r"tasks\[0\]: name must be a non-empty string"),
    ([TaskSpec("a", [1], weight=0)], "task 'a': weight must be a positive finite number, but got 0"),
    ([TaskSpec("a", [1], weight=-1.0)], "but got -1.0"),
    ([TaskSpec("a", [1], weight=float("nan"))], "but got nan"),
    ([TaskSpec("a", [1], weight=True)], "but got True"),
    ([TaskSpec("a", [1], head="fc", head_from=0), TaskSpec("b", [1])], "task 'b' has no head, but other tasks do"),
    ([TaskSpec("a", [1], head="fc")], "task 'a': name the expert its head comes from"),
    ([TaskSpec("a", [1], head="fc", head_from=3)], r"head_from must be an expert index in \[0, 2\]"),
    ([TaskSpec("a", [1], head_from=0)], "head_from=0 needs head="),
])
def test_bad_tasks_are_named(tasks, message, no_weight_read):
    with pytest.raises(ValueError, match=message):
        _bad(tasks)


def test_bad_heads_are_named_before_any_weight_is_read(tmp_path, no_weight_read):
    t = [TaskSpec(f"t{i}", [1], head="fc", model=TinyNet(d_out=c)) for i, c in enumerate((3, 4, 2))]
    with pytest.raises(ValueError, match=r"task 't0': head 'head' matches no tensor of the architecture; its "
                                         r"top-level names are \['bn', 'body', 'fc'\]"):
        _bad([TaskSpec("t0", [1], head="head", head_from=0)])
    t[1] = TaskSpec("t1", [1], head="fc", model=TinyNet(d_out=5))
    with pytest.raises(ValueError, match=r"task 't1': head tensor 'fc.weight' has shape \(4, 6\) in experts\[1\], "
                                         r"but the task's architecture has \(5, 6\)"):
        _bad(t)
    t[1] = TaskSpec("t1", [1], head="fc", model=TinyNet(d_out=4, hidden=7))
    with pytest.raises(ValueError, match=r"task 't1': its architecture's tensor 'body.weight' has shape \(7, 5\), "
                                         r"but the shared backbone has \(6, 5\)"):
        _bad(t)
    torch.save({"head.weight": torch.zeros(3, 6)}, tmp_path / "h.pt")
    with pytest.raises(ValueError, match="task 'a': head 'fc' matches no tensor of task 'a''s head file"):
        MultiTaskObjective(TinyNet(d_out=3), _experts_with_heads((3, 3, 3)),
                           [TaskSpec("a", [1], head="fc", head_from=str(tmp_path / "h.pt"))], device="cpu")


def test_bad_state_and_unknown_task_names():
    obj = MultiTaskObjective(TinyNet(d_out=3), _experts_with_heads(), _tasks(), device="cpu")
    with pytest.raises(ValueError, match="no task 'x'; the tasks are"):
        obj.task("x")
    with pytest.raises(ValueError, match="data names a task 'x'"):
        obj.evaluate(np.full(3, 1 / 3), {"x": tiny_batch(4)})
    with pytest.raises(ValueError, match="state must be"):
        obj.load_state_dict({"batches_drawn": {"t0": 1}})


def test_resuming_continues_every_stream():
    def build():
        return MultiTaskObjective(TinyNet(d_out=3), _experts_with_heads(), _tasks(), device="cpu")

    a, b = build(), build()
    pts = np.full((2, 3), 1 / 3)
    for _ in range(2):
        a(pts)
    b.load_state_dict(a.state_dict())
    np.testing.assert_array_equal(a(pts), b(pts))


# ------------------------------------------------------------------ Hugging Face experts
def test_pretrained_language_models_on_two_targets_at_once(llama_family):
    from .hf_helpers import lm_batch

    texts = [lm_batch(0), lm_batch(1)]
    labeled = [lm_batch(2, labels=True), lm_batch(3, labels=True)]
    tasks = [TaskSpec("unlabeled", texts, loss="entropy"), TaskSpec("labeled", labeled, loss="causal-lm", weight=3)]
    obj = MultiTaskObjective.from_pretrained(llama_family.experts, tasks, device="cpu")
    singles = [BlendedObjective.from_pretrained(llama_family.experts, data=d, loss=loss, device="cpu")
               for d, loss in ((texts, "entropy"), (labeled, "causal-lm"))]
    pts = np.array([[0.2, 0.3, 0.5], [1.0, 0.0, 0.0]])
    got = obj(pts)
    parts = np.stack([s(pts) for s in singles])
    np.testing.assert_allclose(obj.last_task_losses, parts, rtol=1e-5)
    np.testing.assert_allclose(got, np.array([0.25, 0.75]) @ parts, rtol=1e-5)
    assert not obj.has_heads


def test_pretrained_classifiers_with_a_head_per_task_load_per_task(tmp_path):
    from .hf_helpers import llama_config, lm_batch, logits, save_family, transformers

    cls = transformers.LlamaForSequenceClassification
    fam = save_family(tmp_path / "fam", k=2, cls=cls, config=llama_config(num_labels=3, tie_word_embeddings=False))
    tasks = [TaskSpec("a", [lm_batch(0)], head="score"), TaskSpec("b", [lm_batch(1)], head="score")]
    obj = MultiTaskObjective.from_pretrained(fam.experts, tasks, device="cpu")
    alpha = np.array([0.3, 0.7])
    written = obj.save_pretrained(alpha, tmp_path / "merged")
    batch = lm_batch(5)
    for i, name in enumerate(("a", "b")):
        loaded = transformers.AutoModelForSequenceClassification.from_pretrained(written[name])
        torch.testing.assert_close(loaded.score.weight, fam.expert_models[i].score.weight)
        torch.testing.assert_close(logits(loaded, batch), logits(obj.task(name).blended_model(alpha), batch))


def test_batched_probes_give_the_looped_losses():
    experts = _experts_with_heads()
    looped = MultiTaskObjective(TinyNet(d_out=3), experts, _tasks(), device="cpu", batched=False)
    batched = MultiTaskObjective(TinyNet(d_out=3), experts, _tasks(), device="cpu", batched=True)
    pts = np.random.default_rng(1).dirichlet(np.ones(3), size=4)
    np.testing.assert_allclose(batched(pts), looped(pts), rtol=1e-5)
    assert batched.backbone.uses_vmap(4)
