import json
import subprocess
import sys

import pytest

from tests.conftest import ROOT


@pytest.mark.integration
def test_live_bench_prints_json_with_every_stage():
    result = subprocess.run([sys.executable, "-m", "core.bench", "live", "--json", "--frames", "10"], cwd=ROOT,
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]
    report = json.loads(result.stdout.strip().splitlines()[-1])
    for stage in ("live_frame_ms", "photo_frame_ms", "photo_pipeline_ms", "empty_frame_ms", "detect_ms", "align_ms", "recognize_ms"):
        assert report[stage]["median"] > 0 and report[stage]["p90"] >= report[stage]["median"]
    assert report["faces_per_frame"] == 1.0


@pytest.mark.integration
def test_finetune_bench_prints_json(data_dir):
    result = subprocess.run([sys.executable, "-m", "core.bench", "finetune", "--json", "--steps", "5", "--uploads", "120", "--data",
                             str(data_dir)], cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-2000:]
    report = json.loads(result.stdout.strip().splitlines()[-1])
    assert report["finetune_100_s"] > 0 and report["ingest_120_s"] > 0 and report["faces_ingested"] > 100
    # The faces beyond the first 100 are held out and read before and after fine-tuning.
    assert report["held_out_faces"] == report["faces_ingested"] - 100
    assert 0 <= report["held_out_acc_before"] <= 1 and 0 <= report["held_out_acc_after"] <= 1
