"""What a StyleGen training run logs about its EMA generator: Frechet distance and the recognizer's reading
(quick, 1,000 faces), and a sample grid to look at."""

from __future__ import annotations

import time

import numpy as np
import torch

from core.labels import EXPRESSIONS


def generate_uniform(synth, n: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """n new faces, expressions uniform over the 8 classes at full strength, random people: uint8 faces [n, H, W]
    and their requested classes [n]."""
    counts = [n // len(EXPRESSIONS) + (k < n % len(EXPRESSIONS)) for k in range(len(EXPRESSIONS))]
    faces, classes = [], []
    for k, (name, count) in enumerate(zip(EXPRESSIONS, counts)):
        for start in range(0, count, 64):
            faces += synth.generate({name: 1.0}, seed=seed * 100_000 + k * 1000 + start, n=min(64, count - start))
        classes += [k] * count
    return np.stack(faces), np.array(classes)


def frechet(a: np.ndarray, b: np.ndarray, recognizer=None) -> float:
    """Frechet distance between uint8 face sets in the recognizer's embedding."""
    from core import get_recognizer
    from core.evaluation.synthesis import embeddings
    from core.metrics import frechet_distance

    recognizer = recognizer or get_recognizer()
    return float(frechet_distance(embeddings(recognizer, np.asarray(a, np.uint8)),
                                  embeddings(recognizer, np.asarray(b, np.uint8))))


class QuickMetrics:
    """On the EMA generator: the Frechet distance in the recognizer's embedding (n generated faces, classes
    uniform, vs n real test faces) and how often the recognizer reads the requested class (per class too)."""

    def __init__(self, data_dir, recognizer, n: int = 1000):
        from core.evaluation.synthesis import embeddings
        from core.training.data import load_split

        test = load_split(data_dir, "test").images
        pick = np.random.default_rng(0).choice(len(test), min(n, len(test)), replace=False)
        self.recognizer, self.n = recognizer, n
        self.real = embeddings(recognizer, test[pick])

    def __call__(self, trainer) -> dict:
        from core.evaluation.synthesis import embeddings
        from core.metrics import frechet_distance
        from core.synthesizer import Synthesizer

        started = time.time()
        synth = Synthesizer(trainer.g_ema, trainer.e, trainer.pools.class_aus, torch.device("cpu"))
        faces, classes = generate_uniform(synth, self.n, seed=1)
        fid = frechet_distance(embeddings(self.recognizer, faces), self.real)
        read = self.recognizer.predict_crops(faces).argmax(axis=1) == classes
        per_class = {name: round(float(read[classes == k].mean()), 3) for k, name in enumerate(EXPRESSIONS)}
        return {"frechet": round(fid, 3), "recognizer_reads": round(float(read.mean()), 3),
                "per_class": per_class, "faces": int(len(faces)), "seconds": round(time.time() - started, 1)}


def sample_grid(path, synth, people: int = 8) -> None:
    """A PNG for the eye: rows are the 8 expressions at full strength, columns the same 8 people."""
    from PIL import Image

    rows = [np.concatenate(synth.generate({name: 1.0}, seed=123, n=people), axis=1) for name in EXPRESSIONS]
    Image.fromarray(np.concatenate(rows, axis=0)).resize((people * 96, len(EXPRESSIONS) * 96), Image.NEAREST).save(path)
