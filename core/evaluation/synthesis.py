"""Evaluation of a generator: controllability, AU control, identity, realism."""

from __future__ import annotations

import numpy as np
import torch

from core.labels import AUS, EXPRESSIONS
from core.metrics import frechet_distance


def _read(recognizer, faces: list[np.ndarray]) -> np.ndarray:
    return recognizer.predict_crops(np.stack(faces))


def controllability(synth, recognizer, seeds: int = 100) -> dict:
    per_class = {}
    for k, name in enumerate(EXPRESSIONS):
        # generate() draws at most 64 people per call: 50 per seed block
        faces = [face for start in range(0, seeds, 50)
                 for face in synth.generate({name: 1.0}, seed=10_000 + 100 * k + start // 50, n=min(50, seeds - start))]
        per_class[name] = float((_read(recognizer, faces).argmax(axis=1) == k).mean())
    return {"overall": float(np.mean(list(per_class.values()))), "per_class": per_class, "seeds": seeds}


def au_control(synth, seeds: int = 20, steps: int = 7, warp_aus: bool = True) -> dict:
    from scipy.stats import spearmanr

    from core.face.aus import measure_aus_crops

    values = np.linspace(0, 1, steps)
    report = {}
    for i, au in enumerate(AUS):
        faces = []
        for v in values:
            faces += synth.generate({"neutral": 1.0}, {au: float(v)}, seed=20_000, n=seeds, warp_aus=warp_aus)
        measured = measure_aus_crops(np.stack(faces))[:, i].reshape(steps, seeds)
        known = np.isfinite(measured)
        curve = np.array([np.nanmean(row) if np.isfinite(row).any() else np.nan for row in measured])
        xs = np.repeat(values, seeds)[known.ravel()]
        ys = measured.ravel()[known.ravel()]
        per_seed = per_seed_rho(values, measured)
        report[au] = {
            "rho_mean_curve": float(spearmanr(values, curve, nan_policy="omit").statistic),
            "rho_pooled": float(spearmanr(xs, ys).statistic) if len(xs) > 2 else float("nan"),
            # per face: a 20-seed mean curve can rise while single faces barely move
            "rho_per_seed_median": float(np.nanmedian(per_seed)) if np.isfinite(per_seed).any() else float("nan"),
            "mean_rise": float(np.nanmean(measured[-1] - measured[0])),
            "measured_at_0": float(curve[0]), "measured_at_1": float(curve[-1]),
            "faces_with_mesh": float(known.mean()),
            "same_person_rank1": same_person_rank1(faces[:seeds], faces[-seeds:]),
        }
    return report


def same_person_rank1(start: list[np.ndarray], end: list[np.ndarray]) -> float:
    """A slider's sweep keeps the person: each seed's face at the end re-identified among all seeds' faces at the
    start (the same order), by LBP histograms (core/evaluation/lbp.py); 1 / seeds by chance."""
    from core.evaluation.lbp import lbp_histograms, rank1

    ids = np.arange(len(start))
    return rank1(np.stack([lbp_histograms(f) for f in end]), ids, np.stack([lbp_histograms(f) for f in start]), ids)


def per_seed_rho(values: np.ndarray, measured: np.ndarray) -> np.ndarray:
    """Spearman rho of slider values [steps] against each seed's measurements [steps, seeds] (NaN: too few)."""
    from scipy.stats import spearmanr

    rho = np.full(measured.shape[1], np.nan)
    for k in range(measured.shape[1]):
        known = np.isfinite(measured[:, k])
        if known.sum() > 2 and np.ptp(measured[known, k]) > 0:
            rho[k] = spearmanr(values[known], measured[known, k]).statistic
        elif known.sum() > 2:
            rho[k] = 0.0  # a face that does not move at all
    return rho


def expression_sliders(synth, recognizer, seeds: int = 20, steps: int = 6) -> dict:
    """Each expression slider alone, 0 -> 1: per seed, Spearman rho of the slider against the recognizer's
    probability of that class, and how far that probability rises."""
    values = np.linspace(0, 1, steps)
    report = {}
    for k, name in enumerate(EXPRESSIONS):
        if name == "neutral":
            continue  # neutral alone is the same face at every value
        faces = [face for v in values for face in synth.generate({name: float(v)}, seed=50_000, n=seeds)]
        probs = recognizer.predict_crops(np.stack(faces))[:, k].reshape(steps, seeds)
        per_seed = per_seed_rho(values, probs)
        report[name] = {"rho_per_seed_median": float(np.nanmedian(per_seed)),
                        "prob_at_0": float(probs[0].mean()), "prob_at_1": float(probs[-1].mean()),
                        "same_person_rank1": same_person_rank1(faces[:seeds], faces[-seeds:])}
    return report


@torch.no_grad()
def identity(synth, seeds: int = 50) -> dict:
    codes = []
    for name in EXPRESSIONS:
        codes.append(synth.encode(np.stack(synth.generate({name: 1.0}, seed=30_000, n=seeds))))
    codes = np.stack(codes)  # [expressions, seeds, z]
    same_person = [np.linalg.norm(codes[a] - codes[b], axis=1).mean()
                   for a in range(len(EXPRESSIONS)) for b in range(a + 1, len(EXPRESSIONS))]
    other_person = [np.linalg.norm(codes[k][:, None] - codes[k][None], axis=2)[np.triu_indices(seeds, 1)].mean()
                    for k in range(len(EXPRESSIONS))]
    same, other = float(np.mean(same_person)), float(np.mean(other_person))
    return {"same_seed_other_expression": same, "other_seed_same_expression": other, "ratio": same / other}


@torch.no_grad()
def embeddings(recognizer, crops: np.ndarray) -> np.ndarray:
    from core.models.recognizer import normalize_crops

    out = []
    net = recognizer.net.eval()
    for start in range(0, len(crops), 500):
        x = normalize_crops(torch.from_numpy(crops[start : start + 500]).to(recognizer.device), net.config)
        out.append(net.embedding(x).float().cpu().numpy())
    return np.concatenate(out)


def uniform_counts(n: int) -> list[int]:
    """Faces per class when n faces are spread uniformly over the 8 classes (the first classes take the rest)."""
    return [n // len(EXPRESSIONS) + (k < n % len(EXPRESSIONS)) for k in range(len(EXPRESSIONS))]


def uniform_faces(synth, n: int, base_seed: int) -> tuple[np.ndarray, np.ndarray]:
    """n new faces, expressions uniform over the 8 classes at full strength, new people (seed base_seed + 1000 k
    + start for class k): uint8 faces [n, H, W] and their requested classes [n]."""
    counts = uniform_counts(n)
    faces = [face for k, count in enumerate(counts) for start in range(0, count, 64)
             for face in synth.generate({EXPRESSIONS[k]: 1.0}, seed=base_seed + k * 1000 + start,
                                        n=min(64, count - start))]
    return np.stack(faces), np.repeat(np.arange(len(EXPRESSIONS)), counts)


def realism(synth, recognizer, data: str, n: int = 2000) -> dict:
    """n generated faces (expressions uniform over the 8 classes at full strength, random people) against n real
    test faces, beside n real train faces (FER+'s class mix, and uniform classes: what a perfect generator would
    score) against the same test faces: the Frechet distance in the recognizer's embedding and a classifier
    two-sample test's held-out accuracy (core/evaluation/realism.py)."""
    from core.evaluation.realism import two_sample_tests
    from core.metrics import class_weights, majority_labels
    from core.training.data import load_split

    rng = np.random.default_rng(0)
    test_split, train_split = load_split(data, "test"), load_split(data, "train")
    pick_test = rng.choice(len(test_split.images), min(n, len(test_split.images)), replace=False)
    pick_train = rng.choice(len(train_split.images), n, replace=False)
    test, train = test_split.images[pick_test], train_split.images[pick_train]
    gen, _ = uniform_faces(synth, n, base_seed=40_000)
    e_test, e_train, e_gen = (embeddings(recognizer, x) for x in (test, train, gen))
    # The generated faces' classes are uniform, the test faces' are FER+'s (36% neutral, 0.6% contempt): weighted
    # to a uniform class mix, the real side has the generated side's class mix without repeating faces.
    w_test, w_train = (class_weights(majority_labels(s.soft_targets[p])) for s, p in ((test_split, pick_test),
                                                                                 (train_split, pick_train)))
    # What a perfect generator would score: real train faces with the generated side's uniform class mix
    uniform, unique = uniform_real_faces(train_split, n, rng)
    e_uniform = embeddings(recognizer, uniform)
    return {"generated_vs_test": frechet_distance(e_gen, e_test), "train_vs_test": frechet_distance(e_train, e_test),
            "class_weighted": {"generated_vs_test": frechet_distance(e_gen, e_test, weights_b=w_test),
                               "train_vs_test": frechet_distance(e_train, e_test, weights_b=w_test, weights_a=w_train),
                               "uniform_train_vs_test": frechet_distance(e_uniform, e_test, weights_b=w_test)},
            "two_sample": {"generated_vs_test": two_sample_tests(gen, test),
                           "train_vs_test": two_sample_tests(train, test),
                           "uniform_train_vs_test": two_sample_tests(uniform, test)},
            "uniform_train_vs_test": frechet_distance(e_uniform, e_test), "uniform_train_unique_faces": unique,
            "n": n, "classes": "uniform over the 8 expressions", "features": "recognizer penultimate (embed) layer"}


def uniform_real_faces(split, n: int, rng: np.random.Generator) -> tuple[np.ndarray, int]:
    """n real faces of a split, classes (majority vote) uniform as uniform_faces draws them; a class with fewer
    faces than its share repeats some (FER+ train has 170 contempt faces). Returns the faces and how many differ."""
    from core.metrics import majority_labels

    labels = majority_labels(split.soft_targets)
    counts = uniform_counts(n)
    picks = []
    for k, count in enumerate(counts):
        rows = np.flatnonzero(labels == k)
        picks.append(rng.choice(rows, count, replace=len(rows) < count))
    index = np.concatenate(picks)
    return split.images[index], int(len(np.unique(index)))


# A dozen descriptions a user might type, each with the expression it asks for.
TEXT_CASES = (
    ("a slightly surprised woman raising her eyebrows", "surprise"),
    ("a very happy man with a broad smile", "happiness"),
    ("an angry face frowning", "anger"),
    ("a sad boy about to cry", "sadness"),
    ("a terrified person screaming", "fear"),
    ("someone disgusted by a bad smell, wrinkling the nose", "disgust"),
    ("a contemptuous smirk", "contempt"),
    ("a calm neutral face", "neutral"),
    ("a mildly amused smile", "happiness"),
    ("a shocked face with the mouth wide open", "surprise"),
    ("a furious woman", "anger"),
    ("a gloomy, unhappy face", "sadness"),
)


def text_control(synth, recognizer, seeds: int = 20, warp_aus: bool = True) -> dict:
    """Each description read into sliders (as the tab's text box does) and drawn for `seeds` people: how often the
    recognizer reads the expression the sentence asks for."""
    from core.text import parse_text

    report = {}
    for k, (sentence, wanted) in enumerate(TEXT_CASES):
        reading = parse_text(sentence)
        faces = synth.generate(reading.expression, reading.aus or None, seed=60_000 + 100 * k, n=seeds,
                               intensity=reading.intensity, warp_aus=warp_aus)
        read = recognizer.predict_crops(np.stack(faces)).argmax(axis=1)
        report[sentence] = {"wanted": wanted, "understood": reading.summary(),
                            "read_as_wanted": float((read == EXPRESSIONS.index(wanted)).mean()),
                            "read_most": EXPRESSIONS[int(np.bincount(read, minlength=len(EXPRESSIONS)).argmax())]}
    return {"overall": float(np.mean([r["read_as_wanted"] for r in report.values()])), "sentences": report}
