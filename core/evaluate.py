"""Evaluation CLI and metrics.

    python -m core.evaluate --data ../shared/data/fer2013plus --split test --json

ferplus: images with a FER+ majority label (8 classes); fer2013: images with an original label
(7 classes); clean_*: without the images whose pixels also occur in train (`dup_in_train`).
"""

from __future__ import annotations

import argparse
import json
import sys

import numpy as np

from core.labels import EXPRESSIONS, FER2013_LABELS, FER2013_TO_EXPRESSION


def confusion_matrix(y_true: np.ndarray, y_pred: np.ndarray, num_classes: int) -> np.ndarray:
    cm = np.zeros((num_classes, num_classes), np.int64)
    np.add.at(cm, (y_true, y_pred), 1)
    return cm


def classification_metrics(y_true: np.ndarray, y_pred: np.ndarray, names: tuple[str, ...]) -> dict:
    """accuracy, macro-F1 (over classes present in y_true or y_pred), per-class recall, confusion."""
    k = len(names)
    cm = confusion_matrix(y_true, y_pred, k)
    tp = np.diag(cm).astype(float)
    support = cm.sum(axis=1)
    predicted = cm.sum(axis=0)
    recall = np.divide(tp, support, out=np.zeros(k), where=support > 0)
    precision = np.divide(tp, predicted, out=np.zeros(k), where=predicted > 0)
    f1 = np.divide(2 * precision * recall, precision + recall, out=np.zeros(k), where=precision + recall > 0)
    present = (support + predicted) > 0
    return {
        "accuracy": float(tp.sum() / max(1, cm.sum())),
        "macro_f1": float(f1[present].mean()) if present.any() else 0.0,
        "per_class_recall": {name: float(r) for name, r in zip(names, recall)},
        "confusion": cm.tolist(),
        "n": int(cm.sum()),
    }


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


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m core.evaluate", description=__doc__.split("\n")[0])
    parser.add_argument("--data", required=True, help="data directory (FER+ npz layout, class folders or CSV)")
    parser.add_argument("--split", default="test", choices=("train", "valid", "test"))
    parser.add_argument("--weights", default=None, help="a .safetensors file instead of the shipped weights")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    args = parser.parse_args(argv)

    from core.data import load_split
    from core.recognizer import Recognizer

    data = load_split(args.data, args.split)
    recognizer = Recognizer.load(path=args.weights, device=args.device)
    ferplus_probs, fer2013_probs = recognizer.predict_crops(data.images, with_fer2013=True)
    report = evaluate_predictions(data, ferplus_probs, fer2013_probs)
    report["split"] = args.split
    report["weights"] = recognizer.source
    if args.json:
        sys.stdout.write(json.dumps(report) + "\n")
    else:
        p, f = report["ferplus"], report.get("fer2013", {})
        print(f"{args.split}: FER+ accuracy {p['accuracy']:.4f} (clean {p['clean_accuracy']:.4f}), "
              f"macro-F1 {p['macro_f1']:.4f}; FER2013 accuracy {f.get('accuracy', float('nan')):.4f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
