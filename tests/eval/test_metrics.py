import json

import numpy as np
import pytest
from sklearn.metrics import (accuracy_score, balanced_accuracy_score, cohen_kappa_score, confusion_matrix, f1_score,
                             roc_auc_score)

from ssmamba.eval.metrics import (SCALAR_METRICS, _AurocParts, compute_metrics, scores_from_confusion,
                                  summarise_folds)

# Binary, worked by hand: predictions (p > 0.5) are 0 0 1 0 | 1 0.
BINARY_TRUE = [0, 0, 0, 0, 1, 1]
BINARY_POSITIVE = [0.1, 0.4, 0.6, 0.2, 0.8, 0.3]

# Three classes, worked by hand: predictions are 0 1 | 1 1 | 2 0.
THREE_TRUE = [0, 0, 1, 1, 2, 2]
THREE_PROBS = [[.7, .2, .1], [.3, .6, .1], [.1, .8, .1], [.2, .5, .3], [.1, .2, .7], [.5, .1, .4]]


def test_binary_case_by_hand():
    m = compute_metrics(BINARY_TRUE, BINARY_POSITIVE, ["benign", "tumour"], n_bootstrap=0)
    assert m["confusion_matrix"] == [[3, 1], [1, 1]]
    assert m["accuracy"] == pytest.approx(4 / 6)
    assert m["balanced_accuracy"] == pytest.approx((3 / 4 + 1 / 2) / 2)      # 0.625, not the accuracy
    assert m["macro_f1"] == pytest.approx((0.75 + 0.5) / 2)
    assert m["weighted_f1"] == pytest.approx((4 * 0.75 + 2 * 0.5) / 6)
    assert m["auroc"] == pytest.approx(6 / 8)                                # 0.8 beats 4 negatives, 0.3 beats 2
    assert m["kappa"] == pytest.approx((4 / 6 - 20 / 36) / (1 - 20 / 36))     # 0.25
    assert m["per_class"]["tumour"] == pytest.approx(
        {"precision": 0.5, "recall": 0.5, "f1": 0.5, "support": 2, "auroc": 0.75})
    two_column = compute_metrics(BINARY_TRUE, np.stack([1 - np.array(BINARY_POSITIVE), BINARY_POSITIVE], 1),
                                 ["benign", "tumour"], n_bootstrap=0)
    assert two_column == m


def test_three_class_case_by_hand():
    m = compute_metrics(THREE_TRUE, THREE_PROBS, ["G1", "G2", "G3"], n_bootstrap=0)
    assert m["confusion_matrix"] == [[1, 1, 0], [0, 2, 0], [1, 0, 1]]
    assert m["accuracy"] == pytest.approx(4 / 6)
    assert m["balanced_accuracy"] == pytest.approx((0.5 + 1 + 0.5) / 3)
    assert m["macro_f1"] == pytest.approx((0.5 + 0.8 + 2 / 3) / 3)
    assert m["kappa"] == pytest.approx(0.5) and m["kappa_weights"] is None
    assert [m["per_class"][c]["auroc"] for c in ("G1", "G2", "G3")] == pytest.approx([7 / 8, 7 / 8, 1.0])
    assert m["auroc"] == pytest.approx((7 / 8 + 7 / 8 + 1) / 3)
    ordinal = compute_metrics(THREE_TRUE, THREE_PROBS, ["G1", "G2", "G3"], ordinal=True, n_bootstrap=0)
    assert ordinal["kappa"] == pytest.approx(1 - 5 / 7) and ordinal["kappa_weights"] == "quadratic"


def _random_case(n, n_classes, seed, skill=0.4):
    rng = np.random.default_rng(seed)
    y = rng.integers(0, n_classes, n)
    probs = rng.dirichlet(np.ones(n_classes), n)
    probs[np.arange(n), y] += skill
    return y, probs / probs.sum(1, keepdims=True)


@pytest.mark.parametrize("n_classes", [2, 4])
def test_confidence_intervals_contain_the_point_estimate(n_classes):
    y, probs = _random_case(300, n_classes, seed=n_classes)
    m = compute_metrics(y, probs, [f"c{k}" for k in range(n_classes)], n_bootstrap=500, seed=1)
    for key in SCALAR_METRICS:
        low, high = m["ci95"][key]
        assert low <= m[key] <= high, key
        assert high - low < 0.25, key                       # 300 cases: intervals are informative
    again = compute_metrics(y, probs, [f"c{k}" for k in range(n_classes)], n_bootstrap=500, seed=1)
    assert again["ci95"] == m["ci95"]
    json.dumps(m, allow_nan=False)                          # JSON-ready


@pytest.mark.parametrize("ordinal", [False, True])
def test_bootstrap_scores_match_scikit_learn(ordinal):
    rng = np.random.default_rng(0)
    for _ in range(20):
        y_true, y_pred = rng.integers(0, 4, 40), rng.integers(0, 4, 40)
        y_pred[:5] = y_true[:5]
        matrix = confusion_matrix(y_true, y_pred, labels=range(4))[None]
        scores = {k: v[0] for k, v in scores_from_confusion(matrix, ordinal).items()}
        assert scores["accuracy"] == pytest.approx(accuracy_score(y_true, y_pred))
        assert scores["balanced_accuracy"] == pytest.approx(balanced_accuracy_score(y_true, y_pred))
        assert scores["macro_f1"] == pytest.approx(f1_score(y_true, y_pred, labels=range(4), average="macro",
                                                            zero_division=0))
        assert scores["weighted_f1"] == pytest.approx(f1_score(y_true, y_pred, average="weighted"))
        assert scores["kappa"] == pytest.approx(cohen_kappa_score(y_true, y_pred,
                                                                  weights="quadratic" if ordinal else None))


def test_bootstrap_auroc_matches_scikit_learn_with_ties():
    rng = np.random.default_rng(0)
    y = rng.integers(0, 2, 60).astype(bool)
    scores = np.round(rng.random(60) + 0.3 * y, 1)           # rounded: many ties
    parts = _AurocParts(y, scores)
    draws = rng.integers(0, 60, (10, 60))
    counts = np.stack([np.bincount(d, minlength=60) for d in draws]).astype(float)
    expected = [roc_auc_score(y[d], scores[d]) for d in draws]
    assert parts.auroc(counts) == pytest.approx(expected)


@pytest.mark.filterwarnings("ignore:y_pred contains classes not in y_true")
def test_class_absent_from_the_truth():
    y = [0, 0, 1, 1, 0, 1]
    probs = [[.6, .3, .1], [.2, .2, .6], [.1, .8, .1], [.3, .6, .1], [.7, .2, .1], [.4, .5, .1]]
    m = compute_metrics(y, probs, ["a", "b", "c"], n_bootstrap=200)
    assert m["per_class"]["c"]["auroc"] is None and m["per_class"]["c"]["support"] == 0
    assert m["auroc"] == pytest.approx(np.mean([m["per_class"]["a"]["auroc"], m["per_class"]["b"]["auroc"]]))
    assert m["ci95"]["auroc"] is None                        # every resample misses class c
    assert m["ci95"]["accuracy"] is not None


def test_bad_inputs_are_reported():
    with pytest.raises(ValueError, match=r"probs must be \(N=6, K=3\)"):
        compute_metrics(BINARY_TRUE, BINARY_POSITIVE, ["a", "b", "c"])
    with pytest.raises(ValueError, match="outside 0..1"):
        compute_metrics([0, 2], [0.1, 0.9], ["a", "b"])
    with pytest.raises(ValueError, match="NaN"):
        compute_metrics([0, 1], [0.1, float("nan")], ["a", "b"])
    with pytest.raises(ValueError, match="empty"):
        compute_metrics([], np.zeros((0, 2)), ["a", "b"])


def test_summarise_folds_mean_and_sample_std():
    folds = [{"accuracy": 0.8, "auroc": 0.9}, {"accuracy": 0.9, "auroc": None}, {"accuracy": 1.0, "auroc": 0.7}]
    summary = summarise_folds(folds)
    assert summary["accuracy"]["mean"] == pytest.approx(0.9)
    assert summary["accuracy"]["std"] == pytest.approx(0.1)   # ddof=1
    assert summary["accuracy"]["text"] == "0.900 ± 0.100"
    assert summary["auroc"]["n"] == 2 and summary["auroc"]["mean"] == pytest.approx(0.8)
    assert "kappa" not in summary
    assert summarise_folds([{"accuracy": 0.5}])["accuracy"]["std"] == 0.0
    with pytest.raises(ValueError):
        summarise_folds([])
