"""Frozen-feature protocols used by foundation-model papers: a linear probe and a kNN classifier.

Both take embeddings computed once (``ssmamba.eval.inference.embed``) so that any encoder, ours or a timm model,
is compared on the same split with the same code.
"""

from __future__ import annotations

import numpy as np
from sklearn.linear_model import LogisticRegression
from sklearn.neighbors import KNeighborsClassifier
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

__all__ = ["linear_probe", "knn_probe"]


def linear_probe(train_x: np.ndarray, train_y: np.ndarray, val_x: np.ndarray, val_y: np.ndarray,
                 test_x: np.ndarray, n_classes: int, costs=(0.01, 0.1, 1.0, 10.0), seed: int = 0):
    """Standardised features -> multinomial logistic regression; the inverse regularisation ``C`` is chosen on the
    validation split by balanced accuracy. Returns ``(test probabilities (N, n_classes), chosen C)``."""
    from sklearn.metrics import balanced_accuracy_score

    best, best_c, best_model = -1.0, None, None
    for c in costs:
        model = make_pipeline(StandardScaler(), LogisticRegression(C=c, max_iter=2000, random_state=seed))
        model.fit(train_x, train_y)
        score = balanced_accuracy_score(val_y, model.predict(val_x)) if len(val_y) else 0.0
        if score > best:
            best, best_c, best_model = score, c, model
    return _full_proba(best_model, test_x, n_classes), best_c


def knn_probe(train_x: np.ndarray, train_y: np.ndarray, test_x: np.ndarray, n_classes: int, k: int = 20):
    """Cosine kNN with distance weighting on L2-normalised features: test probabilities ``(N, n_classes)``."""
    def normalise(x):
        return x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)

    model = KNeighborsClassifier(n_neighbors=min(k, len(train_y)), weights="distance", metric="cosine")
    model.fit(normalise(train_x), train_y)
    return _full_proba(model, normalise(test_x), n_classes)


def _full_proba(model, x: np.ndarray, n_classes: int) -> np.ndarray:
    """``predict_proba`` with a column for every class, also those absent from the training labels."""
    proba = model.predict_proba(x)
    full = np.zeros((len(x), n_classes), dtype=np.float64)
    full[:, model.classes_.astype(int)] = proba
    return full
