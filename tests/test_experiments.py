import json

import numpy as np
import pytest

from core.labels import EXPRESSIONS
from core.training.joint_experiments import (
    FEW_LABEL_METHODS,
    few_labels,
    merge_into,
    rectify_pool,
    stratified_fraction,
    synthetic_pool,
)
from tests.conftest import write_tiny_npz_dataset


def test_stratified_fraction_keeps_every_class_and_the_share():
    labels = np.repeat(np.arange(8), [400, 200, 100, 50, 20, 10, 5, 1])
    rows = stratified_fraction(labels, 0.1, seed=0)
    counts = np.bincount(labels[rows], minlength=8)
    assert counts.tolist() == [40, 20, 10, 5, 2, 1, 1, 1]  # at least one face per class
    assert len(np.unique(rows)) == len(rows)
    assert not np.array_equal(rows, stratified_fraction(labels, 0.1, seed=1))


def test_results_file_has_the_issue_format_and_merges(tmp_path):
    path = tmp_path / "results" / "joint.json"
    def row(seed, accuracy):
        return {"accuracy": accuracy, "runs": [{"seed": seed, "accuracy": accuracy, "macro_f1": accuracy - 0.1}]}

    merge_into(path, "few_labels", {"10%": {"recognizer_only": row(0, 0.5)}}, {"command": "a"})
    merge_into(path, "few_labels", {"10%": {"joint_intra_rdbp": row(0, 0.6)}}, {"command": "b"})
    merge_into(path, "few_labels", {"10%": {"joint_intra_rdbp": row(1, 0.7)}}, {"command": "c"})  # another process
    results = merge_into(path, "synthetic_only", {"real": row(0, 0.5), "5x_rectified": row(0, 0.45)}, {})
    assert results == json.loads(path.read_text())
    assert results["few_labels"] == {"10%": {"recognizer_only": 0.5, "joint_intra_rdbp": pytest.approx(0.65)}}
    assert results["synthetic_only"] == {"real": 0.5, "5x_rectified": 0.45}
    detail = results["details"]["few_labels"]["10%"]["joint_intra_rdbp"]
    assert len(detail["runs"]) == 2 and detail["accuracy_std"] == pytest.approx(0.0707, abs=1e-3)
    assert results["settings"]["few_labels"]["commands"] == ["a", "b", "c"]
    for seed, steps, accuracy in ((0, 10, 0.2), (1, 99, 0.9)):
        run = {"seed": seed, "accuracy": accuracy, "macro_f1": 0.1, "steps": steps, "generator": "g"}
        results = merge_into(path, "few_labels", {"25%": {"joint": {"runs": [run]}}}, {})
    assert results["few_labels"]["25%"]["joint"] == 0.9  # a run with other settings is not averaged in
    assert not list(path.parent.glob("*.tmp"))


@pytest.mark.slow
def test_few_labels_runs_every_method(tiny_synthesizer, tmp_path):
    data = write_tiny_npz_dataset(tmp_path / "data", n=64)
    saved = []
    table = few_labels(str(data), tiny_synthesizer, fractions=[0.5], seeds=[0, 1], steps=2, on_run=saved.append)
    assert set(table["50%"]) == set(FEW_LABEL_METHODS)
    assert len(saved) == 2 * len(FEW_LABEL_METHODS)  # every run is handed over as soon as it ends
    assert all(len(t["50%"]) == 1 and len(next(iter(t["50%"].values()))["runs"]) == 1 for t in saved)
    for summary in table["50%"].values():
        assert 0 <= summary["accuracy"] <= 1 and len(summary["runs"]) == 2
        assert summary["runs"][0]["train_faces"] < 64


def test_rectified_pool_relabels_and_drops_unsure_faces(tiny_synthesizer):
    import torch

    from core.models.recognizer import RecognizerConfig, RecognizerNet, predict_probs
    from core.recognizer import Recognizer

    mix = np.full(len(EXPRESSIONS), 1 / len(EXPRESSIONS))
    crops, targets = synthetic_pool(tiny_synthesizer, 40, mix, seed=0)
    assert crops.shape == (40, 48, 48) and crops.dtype == np.uint8
    assert set(targets.max(axis=1)) == {1.0}  # the requests, one-hot

    torch.manual_seed(0)
    labeller = Recognizer(RecognizerNet(RecognizerConfig(widths=(8,), depths=(1,), embed_dim=8)).eval(),
                          torch.device("cpu"))
    crops_all, targets_all = rectify_pool(labeller, crops, threshold=0.0)
    np.testing.assert_array_equal(crops_all, crops)  # the same faces, relabelled
    expected = predict_probs(labeller.net, torch.from_numpy(crops), labeller.device)[0].numpy()
    mirrored = predict_probs(labeller.net, torch.from_numpy(np.ascontiguousarray(crops[:, :, ::-1])),
                             labeller.device)[0].numpy()
    np.testing.assert_allclose(targets_all, (expected + mirrored) / 2, atol=1e-5)  # two-view ensemble
    threshold = float(np.median(targets_all.max(axis=1)))
    crops_r, targets_r = rectify_pool(labeller, crops, threshold=threshold)
    keep = targets_all.max(axis=1) >= threshold
    assert 0 < len(crops_r) == keep.sum() < 40  # faces the labeller is unsure of are dropped
    np.testing.assert_array_equal(crops_r, crops[keep])
    np.testing.assert_allclose(targets_r, targets_all[keep])


@pytest.mark.slow
def test_joint_cli_exports_both_models(tiny_synthesizer, tmp_path):
    from core.checkpoint import export_recognizer
    from core.models.recognizer import RecognizerConfig, RecognizerNet
    from core.synthesizer import Synthesizer
    from core.train import main
    from core.weights import read_safetensors

    data = write_tiny_npz_dataset(tmp_path / "data", n=64)
    recognizer = tmp_path / "recognizer.safetensors"
    export_recognizer(recognizer, RecognizerNet(RecognizerConfig(widths=(8, 16), depths=(1, 1), embed_dim=16)))
    out = tmp_path / "joint"
    assert main(["joint", "--data", str(data), "--out", str(out), "--recognizer", str(recognizer),
                 "--generator", tiny_synthesizer.source, "--steps", "3", "--batch-real", "8", "--batch-synth", "8",
                 "--fraction", "0.5", "--device", "cpu"]) == 0
    _, meta = read_safetensors(out / "recognizer.safetensors")
    assert meta["kind"] == "recognizer" and meta["joint"]["intra_weight"] > 0 and meta["joint"]["rdbp"]
    assert len(Synthesizer.load(path=out / "generator.safetensors", device="cpu").generate(n=2)) == 2


def test_markdown_tables_show_mean_std_and_missing_cells(tmp_path):
    from core.training.joint_experiments import _summary, markdown_tables

    path = tmp_path / "joint.json"
    for seed, acc in ((0, 0.6), (1, 0.7)):
        merge_into(path, "few_labels", {"10%": {"recognizer_only": {"runs": [
            {"seed": seed, "accuracy": acc, "macro_f1": 0.5}]}}}, {})
    merge_into(path, "synthetic_only", {"real": _summary([{"seed": 0, "accuracy": 0.8, "macro_f1": 0.5}]),
                                        "5x_rectified": _summary([{"seed": 0, "accuracy": 0.6, "macro_f1": 0.4}])}, {})
    text = markdown_tables(json.loads(path.read_text()))
    assert "| recognizer_only | 0.650 ± 0.071 / 0.500 ± 0.000 (2 seeds) |" in text
    assert "| joint_intra_rdbp | not run |" in text
    assert "| 5x_rectified | 0.600 ± 0.000 / 0.400 ± 0.000 (1 seed) | 75.0% |" in text
