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


def frechet_distance(a: np.ndarray, b: np.ndarray, weights_b: np.ndarray | None = None) -> float:
    """Fréchet distance between two sets of embeddings [N, D] (each taken as a Gaussian).

    weights_b [M]: b's rows weighted (e.g. to give b the class mix of a without repeating faces)."""
    from scipy import linalg

    mu_a, cov_a = a.mean(axis=0), np.cov(a, rowvar=False)
    if weights_b is None:
        mu_b, cov_b = b.mean(axis=0), np.cov(b, rowvar=False)
    else:
        mu_b, cov_b = b.T @ (weights_b / weights_b.sum()), np.cov(b, rowvar=False, aweights=weights_b)
    root, _ = linalg.sqrtm(cov_a @ cov_b, disp=False)
    return float(((mu_a - mu_b) ** 2).sum() + np.trace(cov_a + cov_b - 2 * np.real(root)))
