"""Frozen-feature probes: the linear probe picks its regularisation on validation data, kNN votes by cosine
similarity, and both give a probability column for every class."""

from __future__ import annotations

import numpy as np
import pytest

from ssmamba.eval.probe import knn_probe, linear_probe


def _blobs(n_per_class: int, centres: np.ndarray, spread: float, rng) -> tuple[np.ndarray, np.ndarray]:
    x = np.concatenate([c + spread * rng.standard_normal((n_per_class, centres.shape[1])) for c in centres])
    return x, np.repeat(np.arange(len(centres)), n_per_class)


def test_linear_probe_separates_separable_classes_and_returns_full_probabilities():
    rng = np.random.default_rng(0)
    centres = np.eye(3, 8) * 4
    (tx, ty), (vx, vy), (sx, sy) = (_blobs(n, centres, 1.0, rng) for n in (30, 10, 20))
    probs, c = linear_probe(tx, ty, vx, vy, sx, n_classes=4)  # a fourth class never seen in training
    assert probs.shape == (60, 4)
    np.testing.assert_allclose(probs.sum(1), 1.0)
    assert (probs[:, 3] == 0).all()
    assert (probs.argmax(1) == sy).mean() > 0.95
    assert c in (0.01, 0.1, 1.0, 10.0)


def test_linear_probe_chooses_the_cost_that_scores_best_on_validation():
    """Validation labels that only one candidate cost can fit: the probe must pick that cost."""
    rng = np.random.default_rng(1)
    tx, ty = _blobs(40, np.eye(2, 6) * 0.3, 1.0, rng)  # weakly separated: strong regularisation predicts one class
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    costs = (1e-4, 10.0)
    weak = make_pipeline(StandardScaler(), LogisticRegression(C=10.0, max_iter=2000, random_state=0)).fit(tx, ty)
    vx = rng.standard_normal((30, 6))
    vy = weak.predict(vx)  # exactly what C=10 predicts
    _, chosen = linear_probe(tx, ty, vx, vy, vx, n_classes=2, costs=costs)
    assert chosen == 10.0
    _, chosen = linear_probe(tx, ty, vx, 1 - vy, vx, n_classes=2, costs=costs)  # now C=10 is the worst
    assert chosen == 1e-4


def test_knn_votes_by_cosine_similarity_not_distance():
    """Same directions, very different norms: cosine kNN ignores the norm."""
    train_x = np.array([[1.0, 0.0], [100.0, 1.0], [0.0, 1.0], [1.0, 100.0]])
    train_y = np.array([0, 0, 1, 1])
    test_x = np.array([[0.001, 0.0], [0.0, 50.0], [3.0, 2.9]])
    probs = knn_probe(train_x, train_y, test_x, n_classes=3, k=1)
    np.testing.assert_array_equal(probs, [[1, 0, 0], [0, 1, 0], [1, 0, 0]])


def test_knn_weights_neighbours_by_distance_and_caps_k():
    train_x = np.array([[1.0, 0.0], [1.0, 0.2], [0.0, 1.0]])
    train_y = np.array([0, 0, 1])
    probs = knn_probe(train_x, train_y, np.array([[0.5, 0.6]]), n_classes=2, k=50)  # k > samples: all three
    query = np.array([0.5, 0.6])
    distance = 1 - train_x @ query / (np.linalg.norm(train_x, axis=1) * np.linalg.norm(query))
    weight = 1 / distance  # scikit-learn's weights="distance"
    assert probs.shape == (1, 2)
    np.testing.assert_allclose(probs[0], [weight[:2].sum() / weight.sum(), weight[2] / weight.sum()])
