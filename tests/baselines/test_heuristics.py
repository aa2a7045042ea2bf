import math

import numpy as np
import pytest

from spsa_mix.baselines import (
    best_single_weights,
    data_size_weights,
    greedy_soup,
    proxy_accuracy_weights,
    uniform_weights,
)


def test_uniform():
    np.testing.assert_array_equal(uniform_weights(5), np.full(5, 0.2))
    assert uniform_weights(1).tolist() == [1.0]
    for bad in [0, -2, 2.0, True]:
        with pytest.raises(ValueError, match=f"k must be an integer >= 1, but got {bad!r}"):
            uniform_weights(bad)


def test_data_size_by_hand():
    # GLUE Config 1: alpha_i = n_i / sum n; 600 + 300 + 100 = 1000
    np.testing.assert_allclose(data_size_weights([600, 300, 100]), [0.6, 0.3, 0.1])
    np.testing.assert_allclose(data_size_weights([0, 5]), [0.0, 1.0])
    with pytest.raises(ValueError, match=r"sizes must be non-negative, but got \[3.0, -1.0\]"):
        data_size_weights([3, -1])
    with pytest.raises(ValueError, match=r"sizes must be a non-empty 1-D sequence, but got shape \(0,\)"):
        data_size_weights([])
    with pytest.raises(ValueError, match=r"sizes must be finite, but got \[1.0, nan\]"):
        data_size_weights([1, math.nan])


def test_proxy_accuracy_by_hand():
    # GLUE Config 2: alpha_i = acc_i / sum acc; 0.9 + 0.6 + 0.3 = 1.8
    np.testing.assert_allclose(proxy_accuracy_weights([0.9, 0.6, 0.3]), [0.5, 1 / 3, 1 / 6])
    with pytest.raises(ValueError, match=r"accuracies must have a positive sum \(at least one positive entry\), "
                                         r"but got \[0.0, 0.0\]"):
        proxy_accuracy_weights([0.0, 0.0])
    with pytest.raises(ValueError, match="accuracies must be a sequence of numbers, but got"):
        proxy_accuracy_weights(["a", "b"])


def test_best_single():
    assert best_single_weights([0.2, 0.7, 0.5]).tolist() == [0.0, 1.0, 0.0]
    assert best_single_weights([0.7, 0.7]).tolist() == [1.0, 0.0]  # first on ties
    assert best_single_weights([-3.0, -1.0]).tolist() == [0.0, 1.0]  # any real score
    with pytest.raises(ValueError, match=r"scores must be a non-empty 1-D sequence, but got shape \(1, 2\)"):
        best_single_weights([[0.1, 0.2]])


def soup_oracle(table):
    """Held-out accuracy of the soup of the experts with nonzero weight (checking that the
    weights are uniform over them), looked up in ``table`` and logged."""
    calls = []

    def evaluate(w):
        w = np.asarray(w)
        idx = tuple(int(i) for i in np.flatnonzero(w))
        np.testing.assert_allclose(w[list(idx)], 1 / len(idx))
        assert w.sum() == pytest.approx(1.0)
        calls.append(idx)
        return table[idx]

    return evaluate, calls


def test_greedy_soup_by_hand():
    # order by score: 2 (0.9), 0 (0.8), 3 (0.7), 1 (0.6)
    table = {(0, 2): 0.91, (0, 2, 3): 0.89, (0, 1, 2): 0.91}
    evaluate, calls = soup_oracle(table)
    w, rec = greedy_soup([0.8, 0.6, 0.9, 0.7], evaluate)
    assert calls == [(0, 2), (0, 2, 3), (0, 1, 2)]  # 3 is rejected (drop), 1 kept (no drop)
    np.testing.assert_allclose(w, [1 / 3, 1 / 3, 1 / 3, 0.0])
    assert rec["order"] == [2, 0, 3, 1] and rec["ingredients"] == [0, 1, 2]
    assert [s["kept"] for s in rec["steps"]] == [True, False, True]
    assert rec["steps"][1] == {"expert": 3, "accuracy": 0.89, "best_before": 0.91, "kept": False}
    assert rec["accuracy"] == 0.91


def test_greedy_soup_keeps_only_the_best_when_every_addition_hurts():
    evaluate, calls = soup_oracle({(0, 1): 0.5, (1, 2): 0.4})
    w, rec = greedy_soup([0.6, 0.9, 0.3], evaluate)
    assert w.tolist() == [0.0, 1.0, 0.0] and rec["ingredients"] == [1] and rec["accuracy"] == 0.9
    assert len(calls) == 2


def test_greedy_soup_ties_visit_lower_index_first_and_single_expert():
    evaluate, calls = soup_oracle({(0, 1): 0.7})
    w, rec = greedy_soup([0.7, 0.7], evaluate)
    assert rec["order"] == [0, 1] and w.tolist() == [0.5, 0.5]
    w, rec = greedy_soup([0.3], lambda w: pytest.fail("no soup to try"))
    assert w.tolist() == [1.0] and rec["steps"] == []


def test_greedy_soup_errors():
    with pytest.raises(ValueError, match="evaluate must be callable, but got 3"):
        greedy_soup([0.1, 0.2], 3)
    with pytest.raises(ValueError, match=r"evaluate must return a finite number, but returned nan for weights \[0.5, 0.5\]"):
        greedy_soup([0.1, 0.2], lambda w: math.nan)
