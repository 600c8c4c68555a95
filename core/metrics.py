"""Measures shared by the evaluations, on scikit-learn where it has them."""

from __future__ import annotations

import numpy as np


def confusion_matrix(y_true: np.ndarray, y_pred: np.ndarray, num_classes: int) -> np.ndarray:
    from sklearn.metrics import confusion_matrix as sk_confusion

    return sk_confusion(y_true, y_pred, labels=np.arange(num_classes)).astype(np.int64)


def classification_metrics(y_true: np.ndarray, y_pred: np.ndarray, names: tuple[str, ...]) -> dict:
    """accuracy, macro-F1 (over classes present in y_true or y_pred), per-class recall, confusion."""
    from sklearn.metrics import f1_score, recall_score

    y_true, y_pred = np.asarray(y_true), np.asarray(y_pred)
    k = len(names)
    cm = confusion_matrix(y_true, y_pred, k)
    present = np.flatnonzero((cm.sum(axis=1) + cm.sum(axis=0)) > 0)
    recall = recall_score(y_true, y_pred, labels=np.arange(k), average=None, zero_division=0) if len(y_true) else (
        np.zeros(k))
    macro_f1 = f1_score(y_true, y_pred, labels=present, average="macro", zero_division=0) if len(present) else 0.0
    return {
        "accuracy": float(np.trace(cm) / max(1, cm.sum())),
        "macro_f1": float(macro_f1),
        "per_class_recall": {name: float(r) for name, r in zip(names, recall)},
        "confusion": cm.tolist(),
        "n": int(cm.sum()),
    }


def roc_auc(positive: np.ndarray, negative: np.ndarray) -> float:
    """Probability that a random positive scores above a random negative (ties count half)."""
    from sklearn.metrics import roc_auc_score

    scores = np.concatenate([positive, negative])
    labels = np.concatenate([np.ones(len(positive)), np.zeros(len(negative))])
    return float(roc_auc_score(labels, scores))


def frechet_distance(a: np.ndarray, b: np.ndarray, *, weights_b: np.ndarray | None = None,
                     weights_a: np.ndarray | None = None) -> float:
    """Fréchet distance between two sets of embeddings [N, D] (each taken as a Gaussian).

    weights_a [N], weights_b [M]: rows weighted (e.g. to give a set another class mix without repeating faces)."""
    from scipy import linalg

    def moments(x, w):
        if w is None:
            return x.mean(axis=0), np.cov(x, rowvar=False)
        return x.T @ (w / w.sum()), np.cov(x, rowvar=False, aweights=w)

    (mu_a, cov_a), (mu_b, cov_b) = moments(a, weights_a), moments(b, weights_b)
    root, _ = linalg.sqrtm(cov_a @ cov_b, disp=False)
    return float(((mu_a - mu_b) ** 2).sum() + np.trace(cov_a + cov_b - 2 * np.real(root)))


def majority_labels(soft_targets: np.ndarray) -> np.ndarray:
    """FER+ majority class per face [N], -1 where a face has no votes."""
    return np.where(soft_targets.sum(axis=1) > 0, soft_targets.argmax(axis=1), -1)


def class_weights(labels: np.ndarray, num_classes: int = 8) -> np.ndarray:
    """Per-face weights giving every class the same total (label -1: no class, weight 0)."""
    counts = np.bincount(labels[labels >= 0], minlength=num_classes).astype(float)
    return np.where(labels >= 0, 1.0 / np.maximum(counts[np.maximum(labels, 0)], 1), 0.0)
