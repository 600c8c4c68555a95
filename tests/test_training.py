import json
import os
import shutil
import subprocess
import sys

import numpy as np
import pytest
import torch

from core.models.recognizer import RecognizerConfig, RecognizerNet, predict_probs
from core.training.augment import augment_batch
from core.training.recognizer import RecognizerTrainConfig, train_recognizer
from core.weights import read_safetensors

TINY = RecognizerConfig(widths=(8, 16), depths=(1, 1), embed_dim=16, dropout=0.0)
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_augment_keeps_shape_range_and_is_seeded():
    x = torch.rand(8, 1, 48, 48)
    a = augment_batch(x, torch.Generator().manual_seed(1))
    b = augment_batch(x, torch.Generator().manual_seed(1))
    assert a.shape == x.shape and a.min() >= 0 and a.max() <= 1
    assert torch.equal(a, b)
    assert not torch.equal(a, augment_batch(x, torch.Generator().manual_seed(2)))


def test_tiny_training_learns_and_resumes(tiny_dataset, tmp_path):
    out = tmp_path / "run"
    tc = RecognizerTrainConfig(epochs=10, batch_size=32, lr=0.1, warmup_steps=5, augment=0.0, max_steps=40,
                               ema_decay=0.9)
    train_recognizer(tiny_dataset, out, TINY, tc, device="cpu")
    tensors, meta = read_safetensors(out / "last.safetensors")
    assert meta["step"] == 40 and any(k.startswith("opt.") for k in tensors)
    first_log = (out / "log.jsonl").read_text().splitlines()

    tc.max_steps = 80
    best = train_recognizer(tiny_dataset, out, TINY, tc, resume=True, device="cpu")
    _, meta = read_safetensors(out / "last.safetensors")
    assert meta["step"] == 80
    records = [json.loads(line) for line in (out / "log.jsonl").read_text().splitlines()]
    assert records[len(first_log)]["event"] == "start" and records[len(first_log)]["step"] == 40
    assert best["score"] > 0.5  # the blobs are easy: well above 1/8 chance

    tensors, meta = read_safetensors(out / "best.safetensors")
    net = RecognizerNet(RecognizerConfig.from_dict(meta["config"]))
    net.load_state_dict(tensors)
    probs, fer7 = predict_probs(net, np.zeros((3, 48, 48), np.uint8))
    assert probs.shape == (3, 8) and torch.allclose(probs.sum(1), torch.ones(3), atol=1e-5)
    assert fer7.shape == (3, 7)


@pytest.mark.slow
@pytest.mark.skipif(shutil.which("torchrun") is None and not os.path.exists(os.path.join(os.path.dirname(sys.executable), "torchrun")),
                    reason="torchrun not installed")
def test_same_cli_under_torchrun_with_two_cpu_processes(tiny_dataset, tmp_path):
    torchrun = os.path.join(os.path.dirname(sys.executable), "torchrun")
    out = tmp_path / "ddp"
    cmd = [torchrun, "--standalone", "--nproc_per_node", "2", "-m", "core.train", "recognizer",
           "--data", str(tiny_dataset), "--out", str(out), "--max-steps", "6", "--batch-size", "16",
           "--widths", "8", "16", "--depths", "1", "1", "--embed-dim", "16", "--device", "cpu"]
    result = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=180,
                            env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert result.returncode == 0, result.stderr[-3000:]
    records = [json.loads(line) for line in result.stdout.splitlines() if line.startswith("{")]
    start = next(r for r in records if r["event"] == "start")
    assert start["world"] == 2
    _, meta = read_safetensors(out / "last.safetensors")
    assert meta["step"] == 6


@pytest.mark.slow
@pytest.mark.skipif(not os.path.exists(os.path.join(os.path.dirname(sys.executable), "torchrun")),
                    reason="torchrun not installed")
def test_generator_cli_under_torchrun_with_two_cpu_processes(tmp_path):
    from core.checkpoint import export_recognizer
    from core.models.generator import GeneratorConfig, GeneratorNet
    from tests.conftest import write_tiny_npz_dataset

    data = write_tiny_npz_dataset(tmp_path / "data", n=64)
    recognizer = tmp_path / "recognizer.safetensors"
    export_recognizer(recognizer, RecognizerNet(TINY))
    out = tmp_path / "gan"
    cmd = [os.path.join(os.path.dirname(sys.executable), "torchrun"), "--standalone", "--nproc_per_node", "2",
           "-m", "core.train", "generator", "--data", str(data), "--out", str(out), "--recognizer", str(recognizer),
           "--steps", "4", "--batch-size", "8", "--z-dim", "8", "--g-channels", "16", "8", "4", "4",
           "--d-channels", "4", "8", "8", "8", "--sample-every", "0", "--device", "cpu"]
    result = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=180,
                            env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert result.returncode == 0, result.stderr[-3000:]
    records = [json.loads(line) for line in result.stdout.splitlines() if line.startswith("{")]
    assert next(r for r in records if r["event"] == "start")["world"] == 2
    assert next(r for r in records if r["event"] == "end")["ranks_in_sync"] is True
    tensors, meta = read_safetensors(out / "generator.safetensors")
    assert meta["step"] == 4
    g = GeneratorNet(GeneratorConfig.from_dict(meta["config"]))
    g.load_state_dict({k[2:]: v for k, v in tensors.items() if k.startswith("g.")})


def test_fine_tune_from_exported_weights(tiny_dataset, tmp_path):
    tc = RecognizerTrainConfig(epochs=10, batch_size=32, lr=0.1, warmup_steps=5, augment=0.0, max_steps=60)
    first = train_recognizer(tiny_dataset, tmp_path / "a", TINY, tc, device="cpu")
    tc2 = RecognizerTrainConfig(epochs=1, batch_size=32, lr=0.001, warmup_steps=1, augment=0.0, max_steps=2)
    other = RecognizerConfig(widths=(4,), depths=(1,))  # ignored: the init weights bring their config
    again = train_recognizer(tiny_dataset, tmp_path / "b", other, tc2, device="cpu",
                             init=tmp_path / "a" / "best.safetensors")
    assert again["score"] >= first["score"] - 0.1
    _, meta = read_safetensors(tmp_path / "b" / "best.safetensors")
    assert tuple(meta["config"]["widths"]) == TINY.widths


def test_au_regressor_learns_pixel_measurable_targets_and_critic_loads(tmp_path):
    from core.checkpoint import export_recognizer
    from core.labels import AUS
    from core.training.au_regressor import AURegressorTrainConfig, fit_au_regressor, load_au_regressor, read_aus

    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (600, 48, 48)).astype(np.uint8)
    images[:, 30:40, 12:36] = rng.integers(0, 256, (600, 1, 1))  # a "mouth" whose brightness is the target
    targets = np.repeat(images[:, 35, 20:21] / 255.0, len(AUS), axis=1).astype(np.float32)
    tiny = RecognizerConfig(widths=(8, 16), depths=(1, 1), embed_dim=16, dropout=0.0, num_classes=len(AUS),
                            num_fer2013_classes=0)
    net, rho = fit_au_regressor(images[:500], targets[:500], images[500:], targets[500:], tiny,
                                AURegressorTrainConfig(steps=150, batch_size=32, lr=0.05), device="cpu")
    assert min(rho.values()) > 0.8, rho
    path = tmp_path / "au.safetensors"
    export_recognizer(path, net, kind="au_regressor")  # as train_au_regressor writes it
    critic = load_au_regressor(path, torch.device("cpu"))
    assert not any(p.requires_grad for p in critic.parameters())
    x = torch.zeros(2, 1, 48, 48, requires_grad=True)
    read_aus(critic, x).sum().backward()  # differentiable towards the image, as G needs
    assert x.grad is not None and read_aus(critic, x).shape == (2, len(AUS))


def test_generator_trains_with_a_frozen_au_critic(tmp_path):
    from core.checkpoint import export_recognizer
    from core.labels import AUS
    from core.models.generator import GeneratorConfig
    from core.training.generator import GeneratorTrainConfig, train_generator
    from tests.conftest import write_tiny_npz_dataset

    data = write_tiny_npz_dataset(tmp_path / "data", n=32)
    recognizer = tmp_path / "recognizer.safetensors"
    export_recognizer(recognizer, RecognizerNet(TINY))
    critic_config = RecognizerConfig(widths=(8,), depths=(1,), embed_dim=8, num_classes=len(AUS), num_fer2013_classes=0)
    critic = tmp_path / "au.safetensors"
    export_recognizer(critic, RecognizerNet(critic_config), kind="au_regressor")  # as train_au_regressor writes it
    tc = GeneratorTrainConfig(steps=2, batch_size=8, sample_every=0, log_every=1, amp=False, au_critic=str(critic),
                              au_critic_weight=5.0)
    gc = GeneratorConfig(z_dim=8, g_channels=(16, 8, 8, 4), d_channels=(4, 8, 8, 16))
    assert train_generator(data, tmp_path / "g", None, gc, tc, recognizer_path=recognizer, device="cpu")["step"] == 2
    with pytest.raises(Exception, match="AU regressor"):
        train_generator(data, tmp_path / "g2", None, gc, GeneratorTrainConfig(
            steps=1, batch_size=8, sample_every=0, amp=False, au_critic=str(recognizer), au_critic_weight=1.0),
            recognizer_path=recognizer, device="cpu")


def test_bf16_autocast_only_where_the_hardware_runs_it_fast(monkeypatch):
    from core import device as device_module

    cpu = torch.device("cpu")
    assert not device_module.train_autocast(cpu, enabled=False)._enabled  # a config's amp=False always wins
    for native in (False, True):
        monkeypatch.setattr(torch.ops.mkldnn, "_is_mkldnn_bf16_supported", lambda native=native: native)
        assert device_module.bf16_is_fast(cpu) is native
        assert device_module.train_autocast(cpu)._enabled is native  # emulated bf16 is ~8x slower: fp32
