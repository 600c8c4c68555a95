"""Evaluation of the generator, as issue "expression synthesis you can steer" measures it.

    python -m core.evaluate_synth --data ../shared/data/fer2013plus --json [--weights generator.safetensors]

controllability  8 classes x 100 seeds at full intensity: share the recognizer reads as requested
au_control       per AU, a 0 -> 1 sweep (7 steps, expression neutral, other AUs fixed) over 20 seeds:
                 Spearman rho between the slider and the AU measured on the generated faces, over the
                 mean curve (rho_mean_curve) and over all (seed, step) pairs (rho_pooled)
identity         distance between identity codes E(G(z, c)) of one seed across the 8 expressions,
                 against the distance between different seeds with the same expression
realism          Frechet distance in the recognizer's penultimate features: 2,000 generated vs 2,000
                 real test faces, next to 2,000 real train vs 2,000 real test faces
"""

from __future__ import annotations

import argparse
import json
import sys

import numpy as np
import torch

from core.labels import AUS, EXPRESSIONS


def _read(recognizer, faces: list[np.ndarray]) -> np.ndarray:
    return recognizer.predict_crops(np.stack(faces))


def controllability(synth, recognizer, seeds: int = 100) -> dict:
    per_class = {}
    for k, name in enumerate(EXPRESSIONS):
        # identities() draws at most 64 per call: 50 per seed block
        z = torch.cat([synth.identities(10_000 + 100 * k + start // 50, min(50, seeds - start))
                       for start in range(0, seeds, 50)])
        faces = synth.render(z, synth.condition({name: 1.0}))
        per_class[name] = float((_read(recognizer, faces).argmax(axis=1) == k).mean())
    return {"overall": float(np.mean(list(per_class.values()))), "per_class": per_class, "seeds": seeds}


def au_control(synth, seeds: int = 20, steps: int = 7) -> dict:
    from scipy.stats import spearmanr

    from core.aus import measure_aus_crops

    values = np.linspace(0, 1, steps)
    report = {}
    z = synth.identities(20_000, seeds)
    for i, au in enumerate(AUS):
        faces = []
        for v in values:
            faces += synth.render(z, synth.condition({"neutral": 1.0}, {au: float(v)}))
        measured = measure_aus_crops(np.stack(faces))[:, i].reshape(steps, seeds)
        known = np.isfinite(measured)
        curve = np.array([np.nanmean(row) if np.isfinite(row).any() else np.nan for row in measured])
        xs = np.repeat(values, seeds)[known.ravel()]
        ys = measured.ravel()[known.ravel()]
        report[au] = {
            "rho_mean_curve": float(spearmanr(values, curve, nan_policy="omit").statistic),
            "rho_pooled": float(spearmanr(xs, ys).statistic) if len(xs) > 2 else float("nan"),
            "measured_at_0": float(curve[0]), "measured_at_1": float(curve[-1]),
            "faces_with_mesh": float(known.mean()),
        }
    return report


@torch.no_grad()
def identity(synth, seeds: int = 50) -> dict:
    z = synth.identities(30_000, seeds)
    codes = []
    for name in EXPRESSIONS:
        faces = synth.render(z, synth.condition({name: 1.0}))
        codes.append(synth.encode(np.stack(faces)).cpu().numpy())
    codes = np.stack(codes)  # [expressions, seeds, z]
    same_person = [np.linalg.norm(codes[a] - codes[b], axis=1).mean()
                   for a in range(len(EXPRESSIONS)) for b in range(a + 1, len(EXPRESSIONS))]
    other_person = [np.linalg.norm(codes[k][:, None] - codes[k][None], axis=2)[np.triu_indices(seeds, 1)].mean()
                    for k in range(len(EXPRESSIONS))]
    same, other = float(np.mean(same_person)), float(np.mean(other_person))
    return {"same_seed_other_expression": same, "other_seed_same_expression": other, "ratio": same / other}


def frechet_distance(a: np.ndarray, b: np.ndarray) -> float:
    from scipy import linalg

    mu_a, mu_b = a.mean(axis=0), b.mean(axis=0)
    cov_a, cov_b = np.cov(a, rowvar=False), np.cov(b, rowvar=False)
    root, _ = linalg.sqrtm(cov_a @ cov_b, disp=False)
    return float(((mu_a - mu_b) ** 2).sum() + np.trace(cov_a + cov_b - 2 * np.real(root)))


@torch.no_grad()
def embeddings(recognizer, crops: np.ndarray) -> np.ndarray:
    from core.recognizer import normalize_crops

    out = []
    net = recognizer.net.eval()
    for start in range(0, len(crops), 500):
        x = normalize_crops(torch.from_numpy(crops[start : start + 500]).to(recognizer.device), net.config)
        out.append(net.embedding(x).float().cpu().numpy())
    return np.concatenate(out)


def realism(synth, recognizer, data: str, n: int = 2000) -> dict:
    from core.data import load_split

    rng = np.random.default_rng(0)
    test = load_split(data, "test").images
    train = load_split(data, "train").images
    test = test[rng.choice(len(test), min(n, len(test)), replace=False)]
    train = train[rng.choice(len(train), n, replace=False)]
    # Generated faces with the class mix of FER+ train.
    classes = rng.choice(len(EXPRESSIONS), n, p=_train_class_mix(data))
    generated = []
    for k in range(len(EXPRESSIONS)):
        count = int((classes == k).sum())
        for start in range(0, count, 64):
            generated += synth.generate(expression={EXPRESSIONS[k]: 1.0}, seed=40_000 + k * 1000 + start,
                                        n=min(64, count - start))
    gen = np.stack(generated)
    e_test, e_train, e_gen = (embeddings(recognizer, x) for x in (test, train, gen))
    return {"generated_vs_test": frechet_distance(e_gen, e_test), "train_vs_test": frechet_distance(e_train, e_test),
            "n": n, "features": "recognizer penultimate (embed) layer"}


def _train_class_mix(data: str) -> np.ndarray:
    from core.data import load_split

    labels = load_split(data, "train").ferplus_label
    counts = np.bincount(labels[labels >= 0], minlength=len(EXPRESSIONS)).astype(float)
    return counts / counts.sum()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m core.evaluate_synth", description=__doc__.split("\n")[0])
    parser.add_argument("--data", required=True)
    parser.add_argument("--weights", default=None, help="generator .safetensors instead of the shipped one")
    parser.add_argument("--only", nargs="+", default=["controllability", "au_control", "identity", "realism"])
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args(argv)

    from core import get_recognizer
    from core.synthesizer import Synthesizer

    synth = Synthesizer.load(path=args.weights) if args.weights else Synthesizer.load()
    recognizer = get_recognizer()
    report = {"weights": synth.source}
    if "controllability" in args.only:
        report["controllability"] = controllability(synth, recognizer)
    if "au_control" in args.only:
        report["au_control"] = au_control(synth)
    if "identity" in args.only:
        report["identity"] = identity(synth)
    if "realism" in args.only:
        report["realism"] = realism(synth, recognizer, args.data)
    sys.stdout.write(json.dumps(report, indent=None if args.json else 1) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
