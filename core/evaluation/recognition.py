"""Evaluation of a recognizer on a labelled split: FER+ and FER2013 accuracy, macro-F1, confusion."""

from __future__ import annotations

import numpy as np
import torch

from core.labels import EXPRESSIONS, FER2013_LABELS, FER2013_TO_EXPRESSION
from core.metrics import classification_metrics


def fer2013_predictions(ferplus_probs: np.ndarray, fer2013_probs: np.ndarray | None) -> np.ndarray:
    """7-class predictions: the FER2013 head when the model has one, else argmax of the 7 shared classes."""
    if fer2013_probs is not None:
        return fer2013_probs.argmax(axis=1)
    shared = ferplus_probs[:, list(FER2013_TO_EXPRESSION)]
    return shared.argmax(axis=1)


def evaluate_predictions(data, ferplus_probs: np.ndarray, fer2013_probs: np.ndarray | None) -> dict:
    """The report of `python -m core.evaluate` from a split and the model's probabilities on it."""
    pred8 = ferplus_probs.argmax(axis=1)
    has_plus = data.ferplus_label >= 0
    clean = ~data.dup_in_train
    plus = classification_metrics(data.ferplus_label[has_plus], pred8[has_plus], EXPRESSIONS)
    plus_clean = classification_metrics(data.ferplus_label[has_plus & clean], pred8[has_plus & clean], EXPRESSIONS)
    plus["clean_accuracy"] = plus_clean["accuracy"]
    plus["clean_n"] = plus_clean["n"]

    report = {"ferplus": plus}
    has_fer = data.fer2013_label >= 0
    if has_fer.any():
        report["fer2013"] = {}
        heads = {"fer2013_head": fer2013_predictions(ferplus_probs, fer2013_probs)}
        if fer2013_probs is not None:
            heads["ferplus_head"] = fer2013_predictions(ferplus_probs, None)
        for head, pred7 in heads.items():
            full = classification_metrics(data.fer2013_label[has_fer], pred7[has_fer], FER2013_LABELS)
            clean7 = classification_metrics(data.fer2013_label[has_fer & clean], pred7[has_fer & clean], FER2013_LABELS)
            summary = {
                "accuracy": full["accuracy"],
                "clean_accuracy": clean7["accuracy"],
                "macro_f1": full["macro_f1"],
                "n": full["n"],
            }
            if head == "fer2013_head" or fer2013_probs is None:
                report["fer2013"].update(summary)
                report["fer2013"]["head"] = "fer2013" if fer2013_probs is not None else "ferplus (7 shared classes)"
            else:
                report["fer2013"]["from_ferplus_head"] = summary
    return report


def evaluate_crops(recognizer_net, crops: np.ndarray, labels: np.ndarray, device="cpu") -> dict:
    """Accuracy, macro-F1 and confusion of a recognizer net on labelled crops (labels index EXPRESSIONS)."""
    from core.metrics import classification_metrics
    from core.models.recognizer import predict_probs

    probs, _ = predict_probs(recognizer_net, torch.from_numpy(np.ascontiguousarray(crops)), device)
    return classification_metrics(labels, probs.numpy().argmax(axis=1), EXPRESSIONS)
