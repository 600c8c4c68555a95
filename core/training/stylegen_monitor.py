"""What a StyleGen training run logs about its EMA generator: Frechet distance and the recognizer's reading
(quick, 1,000 faces), and a sample grid to look at."""

from __future__ import annotations

import time

import numpy as np
import torch

from core.labels import EXPRESSIONS
from core.metrics import class_weights, majority_labels


def generate_uniform(synth, n: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """n new faces, classes uniform (core.evaluation.synthesis.uniform_faces), from seed block `seed`."""
    from core.evaluation.synthesis import uniform_faces

    return uniform_faces(synth, n, base_seed=seed * 100_000)


def frechet(a: np.ndarray, b: np.ndarray, recognizer=None) -> float:
    """Frechet distance between uint8 face sets in the recognizer's embedding."""
    from core import get_recognizer
    from core.evaluation.synthesis import embeddings
    from core.metrics import frechet_distance

    recognizer = recognizer or get_recognizer()
    return float(frechet_distance(embeddings(recognizer, np.asarray(a, np.uint8)),
                                  embeddings(recognizer, np.asarray(b, np.uint8))))


def within_class_spread(faces: np.ndarray, classes: np.ndarray, per_class: int = 64) -> float:
    """Mean L1 (pixels in [0, 1]) between two faces of one class, averaged over the classes present:
    how varied a class's faces are (one face per class: 0)."""
    spreads = []
    for k in np.unique(classes[classes >= 0]):
        x = torch.from_numpy(faces[classes == k][:per_class]).float().div(255).flatten(1)
        if len(x) > 1:
            spreads.append(float(torch.cdist(x, x, p=1).sum() / (len(x) * (len(x) - 1)) / x.shape[1]))
    return float(np.mean(spreads))


class QuickMetrics:
    """On the EMA generator: the Frechet distance in the recognizer's embedding (n generated faces, classes
    uniform, vs n real test faces, as is and with the test faces weighted to a uniform class mix), how often
    the recognizer reads the requested class (per class too), and the within-class spread beside real faces'."""

    def __init__(self, data_dir, recognizer, n: int = 1000):
        from core.evaluation.synthesis import embeddings
        from core.training.data import load_split

        test = load_split(data_dir, "test")
        pick = np.random.default_rng(0).choice(len(test.images), min(n, len(test.images)), replace=False)
        self.recognizer, self.n = recognizer, n
        self.real = embeddings(recognizer, test.images[pick])
        targets = test.soft_targets[pick]
        labels = majority_labels(targets)
        self.weights = class_weights(labels)
        self.real_spread = within_class_spread(test.images[pick], labels)

    def __call__(self, trainer) -> dict:
        from core.evaluation.synthesis import embeddings
        from core.metrics import frechet_distance
        from core.synthesizer import Synthesizer

        started = time.time()
        synth = Synthesizer(trainer.g_ema, trainer.e, trainer.pools.class_aus, torch.device("cpu"))
        faces, classes = generate_uniform(synth, self.n, seed=1)
        fake = embeddings(self.recognizer, faces)
        read = self.recognizer.predict_crops(faces).argmax(axis=1) == classes
        per_class = {name: round(float(read[classes == k].mean()), 3) for k, name in enumerate(EXPRESSIONS)}
        return {"frechet": round(frechet_distance(fake, self.real), 3),
                "frechet_class_weighted": round(frechet_distance(fake, self.real, weights_b=self.weights), 3),
                "recognizer_reads": round(float(read.mean()), 3), "per_class": per_class,
                "spread": round(within_class_spread(faces, classes), 4), "real_spread": round(self.real_spread, 4),
                "faces": int(len(faces)), "seconds": round(time.time() - started, 1)}


def sample_grid(path, synth, people: int = 8) -> None:
    """A PNG for the eye: rows are the 8 expressions at full strength, columns the same 8 people."""
    from PIL import Image

    rows = [np.concatenate(synth.generate({name: 1.0}, seed=123, n=people), axis=1) for name in EXPRESSIONS]
    Image.fromarray(np.concatenate(rows, axis=0)).resize((people * 96, len(EXPRESSIONS) * 96), Image.NEAREST).save(path)
