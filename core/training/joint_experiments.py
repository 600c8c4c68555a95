"""The joint-learning experiments: few labels (table a) and synthetic-only training (table b).

The command is `python -m core.experiments` (core/experiments.py); results merge into one JSON file.
"""

from __future__ import annotations

import json
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch

from core.evaluation.recognition import evaluate_crops
from core.labels import EXPRESSIONS
from core.models.recognizer import RecognizerConfig, RecognizerNet
from core.training.joint import JointConfig, JointState, run_joint

SMALL_RECOGNIZER = RecognizerConfig(widths=(16, 32, 64, 128), depths=(1, 1, 1, 1), embed_dim=128, dropout=0.3,
                                   num_fer2013_classes=0)


# Few-label methods: name -> JointConfig overrides (the base turns synthetic faces off).
FEW_LABEL_METHODS = {
    "recognizer_only": {"use_synthetic": False},
    "frozen_g": {"update_generator": False},
    "joint": {},
    "joint_intra": {"intra_weight": 0.05, "rdbp": False},
    "joint_intra_rdbp": {"intra_weight": 0.05, "rdbp": True},
}


POOL_CONFIDENCE = 0.4  # rectified pools drop faces whose relabelled top class gets less


POOL_INTENSITY_LOW = 0.3  # pool intensities are drawn from [this, 1]


def base_config(steps: int, seed: int) -> JointConfig:
    # Labels of synthetic faces are the requests here: an EMA of a recognizer trained from scratch
    # is no pseudo-labeller, and the ablation isolates the FESGAN terms.
    # G joins after a third of the steps: updated by a recognizer trained from scratch it drifts
    # (measured: 10% labels, joint 0.638 +- 0.077 vs frozen G 0.684); every 2nd step halves its cost.
    return JointConfig(steps=steps, batch_real=64, batch_synth=32, lr_recognizer=0.02, pseudo_labels="none",
                       generator_start=steps // 3, generator_every=2, seed=seed)


def stratified_fraction(labels: np.ndarray, fraction: float, seed: int) -> np.ndarray:
    """Indices of `fraction` of each class (at least one face per class present)."""
    rng = np.random.default_rng(seed)
    keep = []
    for k in np.unique(labels):
        rows = np.flatnonzero(labels == k)
        keep.append(rng.choice(rows, max(1, round(fraction * len(rows))), replace=False))
    return np.sort(np.concatenate(keep))


def _fresh_recognizer(config: RecognizerConfig, seed: int) -> RecognizerNet:
    torch.manual_seed(seed)
    return RecognizerNet(config)


def train_and_score(images, targets, test, joint: JointConfig, synthesizer=None, recognizer_config=None) -> dict:
    """One recognizer from scratch on (images, targets) [+ synthetic faces], scored on FER+ test."""
    state = JointState.with_synthesizer(_fresh_recognizer(recognizer_config or SMALL_RECOGNIZER, joint.seed),
                                        synthesizer if joint.use_synthetic else None)
    started = time.time()
    run_joint(state, images, targets, joint, device="cpu")
    metrics = evaluate_crops(state.recognizer, test.images, test.ferplus_label)
    return {"accuracy": metrics["accuracy"], "macro_f1": metrics["macro_f1"], "seconds": round(time.time() - started, 1)}


def _test_split(data: str):
    from core.training.data import load_split

    test = load_split(data, "test")
    return test.subset(np.flatnonzero(test.ferplus_label >= 0))


def _train_split(data: str):
    from core.training.data import load_split, trainable_index

    train = load_split(data, "train")
    return train.subset(trainable_index(train))


def _summary(runs: list[dict]) -> dict:
    acc = np.array([r["accuracy"] for r in runs])
    f1 = np.array([r["macro_f1"] for r in runs])
    return {"accuracy": float(acc.mean()), "accuracy_std": float(acc.std(ddof=1)) if len(acc) > 1 else 0.0,
            "macro_f1": float(f1.mean()), "macro_f1_std": float(f1.std(ddof=1)) if len(f1) > 1 else 0.0,
            "runs": runs}


def few_labels(data: str, synthesizer, fractions, seeds, steps: int, methods=None, log=None, on_run=None) -> dict:
    """on_run(table) gets a one-run table after every run, so a stopped process keeps what it finished."""
    train, test = _train_split(data), _test_split(data)
    labels = train.soft_targets.argmax(axis=1)
    table = {}
    for fraction in fractions:
        row = {}
        parts = {seed: train.subset(stratified_fraction(labels, fraction, seed)) for seed in seeds}
        for method in methods or FEW_LABEL_METHODS:
            runs = []
            for seed in seeds:
                part = parts[seed]
                joint = replace(base_config(steps, seed), **FEW_LABEL_METHODS[method])
                result = train_and_score(part.images, part.soft_targets, test, joint,
                                         synthesizer if joint.use_synthetic else None)
                runs.append({"seed": seed, "train_faces": len(part), "steps": steps,
                             "generator": synthesizer.source if joint.use_synthetic else None, **result})
                if log:
                    log({"fraction": fraction, "method": method, **runs[-1]})
                if on_run:
                    on_run({f"{round(fraction * 100)}%": {method: _summary(runs[-1:])}})
            row[method] = _summary(runs)
        table[f"{round(fraction * 100)}%"] = row
    return table


@torch.no_grad()
def synthetic_pool(synthesizer, size: int, class_mix: np.ndarray, seed: int,
                   intensity_low: float = POOL_INTENSITY_LOW) -> tuple[np.ndarray, np.ndarray]:
    """`size` generated faces with the class mix of the train set, labelled by their requests:
    crops [M, 48, 48] uint8, one-hot targets [M, 8]. Intensities are drawn from [intensity_low, 1],
    so the pool has subtle faces too, whose request is the least reliable label."""
    from core.models.generator import make_condition, to_uint8

    gen = torch.Generator().manual_seed(seed)
    typical = torch.tensor(np.array([synthesizer.class_aus[name] for name in EXPRESSIONS], np.float32))
    requested = torch.from_numpy(np.random.default_rng(seed).choice(len(EXPRESSIONS), size, p=class_mix))
    crops = []
    for start in range(0, size, 512):
        k = requested[start : start + 512]
        n = len(k)
        intensity = torch.rand(n, generator=gen) * (1 - intensity_low) + intensity_low
        aus = (typical[k] + 0.1 * torch.randn(n, typical.shape[1], generator=gen)).clamp(0, 1)
        cond = make_condition(torch.nn.functional.one_hot(k, len(EXPRESSIONS)).float(), intensity, aus)
        z = torch.randn(n, synthesizer.g.config.z_dim, generator=gen)
        crops.append(to_uint8(synthesizer.g(z.to(synthesizer.device), cond.to(synthesizer.device))).cpu().numpy())
    targets = torch.nn.functional.one_hot(requested, len(EXPRESSIONS)).float().numpy()
    return np.concatenate(crops), targets


def rectify_pool(labeller, crops: np.ndarray, threshold: float = POOL_CONFIDENCE) -> tuple[np.ndarray, np.ndarray]:
    """SynFER's pseudo-label generator on a synthetic pool: each face is relabelled by `labeller` (a
    recognizer trained on real faces), reading the face and its mirror image (a two-view ensemble,
    averaged), and dropped when that reading's top class gets less than `threshold`."""
    from core.models.recognizer import predict_probs

    # predict_probs averages each face with its mirror image: that is the two-view ensemble.
    targets = predict_probs(labeller.net, torch.from_numpy(crops), labeller.device, flip_tta=True)[0].numpy()
    keep = targets.max(axis=1) >= threshold
    return crops[keep], targets[keep]


def synthetic_cells(multiples) -> list[str]:
    """The synthetic-only table's rows: real, then each multiple with request labels and rectified."""
    return ["real"] + [f"{m}x{suffix}" for m in multiples for suffix in ("", "_rectified")]


def synthetic_only(data: str, synthesizer, labeller, multiples, seeds, steps: int, log=None, on_run=None,
                   cells=None) -> dict:
    """cells: run only these (e.g. {"real", "5x_rectified"}); default all of synthetic_cells(multiples)."""
    cells = set(cells or synthetic_cells(multiples))
    train, test = _train_split(data), _test_split(data)
    labels = train.soft_targets.argmax(axis=1)
    class_mix = np.bincount(labels, minlength=len(EXPRESSIONS)) / len(labels)
    table, runs = {}, {}

    def add(name, run):
        runs.setdefault(name, []).append(run)
        if log:
            log({"setting": name, **run})
        if on_run:
            on_run({name: _summary([run])})

    for seed in seeds:
        joint = replace(base_config(steps, seed), use_synthetic=False)
        if "real" in cells:
            add("real", {"seed": seed, "train_faces": len(train), "steps": steps, "generator": None,
                         **train_and_score(train.images, train.soft_targets, test, joint)})
        for multiple in multiples:
            wanted = [name for name in (f"{multiple}x", f"{multiple}x_rectified") if name in cells]
            if not wanted:
                continue
            # One pool per multiple: the rectified row trains on the same faces, relabelled.
            pool, requests = synthetic_pool(synthesizer, multiple * len(train), class_mix, seed * 1000 + multiple)
            for name in wanted:
                crops, targets = rectify_pool(labeller, pool) if name.endswith("_rectified") else (pool, requests)
                add(name, {"seed": seed, "train_faces": len(crops), "steps": steps, "generator": synthesizer.source,
                           **train_and_score(crops, targets, test, joint)})
    for name, values in runs.items():
        table[name] = _summary(values)
    return table


def merge_into(path: Path, key: str, table: dict, settings: dict) -> dict:
    """Merge one experiment's table into the results file (other rows and experiments are kept).

    results[key] holds mean FER+ test accuracies, as the issue's format asks; the std, macro-F1 and
    every run are under results["details"][key].
    """
    import fcntl

    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path.with_suffix(".lock"), "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # several experiment processes may finish at once
        return _merge_locked(path, key, table, settings)


def _merge_locked(path: Path, key: str, table: dict, settings: dict) -> dict:
    results = json.loads(path.read_text()) if path.is_file() else {}
    def setting(run):
        return run.get("steps"), run.get("generator")

    def combined(old: dict | None, new: dict) -> dict:
        """Runs of other seeds (other processes) are kept, unless made with other steps or generator."""
        now = {setting(r) for r in new["runs"]}
        runs = {r["seed"]: r for r in (old or {}).get("runs", []) if setting(r) in now or setting(r) == (None, None)}
        runs.update({r["seed"]: r for r in new["runs"]})
        return _summary([runs[seed] for seed in sorted(runs)])

    details = results.setdefault("details", {}).setdefault(key, {})
    for name, row in table.items():
        if "accuracy" in row:  # synthetic-only rows are one summary each
            details[name] = combined(details.get(name), row)
            results.setdefault(key, {})[name] = details[name]["accuracy"]
        else:
            for method, summary in row.items():
                details.setdefault(name, {})[method] = combined(details.get(name, {}).get(method), summary)
                results.setdefault(key, {}).setdefault(name, {})[method] = details[name][method]["accuracy"]
    commands = results.get("settings", {}).get(key, {}).get("commands", [])
    command = settings.pop("command", None)
    results.setdefault("settings", {})[key] = {**settings, "commands": sorted(set(commands + [command] if command else commands))}
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(results, indent=1) + "\n")
    tmp.replace(path)  # atomic: a killed run never leaves half a file
    return results


def markdown_tables(results: dict) -> str:
    """The docs' tables from a results file: mean ± std over seeds of FER+ test accuracy and macro-F1."""
    def cell(summary):
        if summary is None:
            return "not run"
        n = len(summary["runs"])
        return (f"{summary['accuracy']:.3f} ± {summary['accuracy_std']:.3f} / "
                f"{summary['macro_f1']:.3f} ± {summary['macro_f1_std']:.3f} ({n} seed{'s' if n > 1 else ''})")

    lines = []
    few = results.get("details", {}).get("few_labels", {})
    if few:
        fractions = sorted(few, key=lambda f: float(f.rstrip("%")))
        lines += ["| method | " + " | ".join(fractions) + " |", "|---" * (len(fractions) + 1) + "|"]
        for method in FEW_LABEL_METHODS:
            lines.append(f"| {method} | " + " | ".join(cell(few[f].get(method)) for f in fractions) + " |")
        lines.append("")
    synthetic = results.get("details", {}).get("synthetic_only", {})
    if synthetic:
        real = synthetic.get("real")
        lines += ["| training data | accuracy / macro-F1 | share of real-trained accuracy |", "|---|---|---|"]
        for name, summary in synthetic.items():
            share = f"{summary['accuracy'] / real['accuracy']:.1%}" if real else "—"
            lines.append(f"| {name} | {cell(summary)} | {share} |")
    return "\n".join(lines) + "\n"
