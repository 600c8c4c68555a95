"""What a StyleGen training run logs about its EMA generator: Frechet distance and the recognizer's reading
(quick, 1,000 faces), and a sample grid to look at."""

from __future__ import annotations

import time

import numpy as np
import torch

from core.labels import EXPRESSIONS


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
