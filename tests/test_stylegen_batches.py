"""StyleGen (issue 15) against per-class collapse: class-matched D batches, the diversity hinge, per-layer noise,
loading files saved before the noise, evaluating a StyleGen file, the class-weighted Frechet distance."""

import dataclasses

import numpy as np
import pytest
import torch

import core.training.stylegen as st
import core.training.stylegen_data as sd
import core.training.stylegen_losses as sl
import core.training.stylegen_warm_start as ws
from core.errors import WeightsError
from core.labels import EXPRESSIONS
from core.models import stylegen as sg

TINY = sg.StyleGenConfig(z_dim=8, w_dim=16, mapping_layers=2, g_channels=(16, 8, 8, 4), d_channels=(4, 8, 8, 16),
                         e_channels=(4, 8, 8, 16))
TINY_TRAIN = st.StyleTrainConfig(steps=4, batch_size=8, e_batch=8, log_every=2, r1_every=2, e_every=2, amp=False,
                                 metric_faces=16, diversity_weight=1.0)


def _pools(counts=(40, 30, 10, 10, 5, 2, 2, 1), seed: int = 0) -> sd.Pools:
    rng = np.random.default_rng(seed)
    labels = np.repeat(np.arange(len(EXPRESSIONS)), counts)
    n = len(labels)
    targets = np.eye(len(EXPRESSIONS), dtype=np.float32)[labels]
    aus = rng.uniform(0, 1, (n, 17)).astype(np.float32)
    images = rng.integers(0, 256, (n, 48, 48)).astype(np.uint8)
    rows = [torch.from_numpy(np.flatnonzero(labels == k)) for k in range(len(EXPRESSIONS))]
    class_aus = {name: aus[labels == k].mean(0).tolist() for k, name in enumerate(EXPRESSIONS)}
    return sd.Pools(torch.from_numpy(images), torch.from_numpy(targets), torch.from_numpy(aus),
                    torch.ones(n, dtype=torch.bool), rows, class_aus, rows)


def test_class_probabilities_follow_the_temper():
    pools = _pools()
    counts = torch.tensor([40, 30, 10, 10, 5, 2, 2, 1], dtype=torch.float)
    assert torch.allclose(sd.class_probabilities(pools, 1.0), counts / counts.sum())
    assert torch.allclose(sd.class_probabilities(pools, 0.0), torch.full((8,), 1 / 8))
    half = sd.class_probabilities(pools, 0.5)
    assert half[7] > 1 / counts.sum() and half[7] < 1 / 8  # rare classes: between their share and uniform


def test_real_and_fake_faces_of_a_batch_share_classes_in_pairs():
    pools, gen = _pools(), torch.Generator().manual_seed(0)
    classes = sd.batch_classes(pools, 10, gen, 0.5)
    assert torch.equal(classes[:5], classes[5:])
    real, real_cond, targets, _, _ = sd.real_batch(pools, 10, gen, classes)
    assert torch.equal(targets.argmax(dim=1), classes)  # each real face is of its entry's class
    info = sd.fake_conditions(pools, 10, gen, TINY_TRAIN, classes)
    assert torch.equal(info["classes"], classes) and info["paired"]
    assert torch.equal(info["cond"][:5], info["cond"][5:])  # a fake pair differs only in z
    assert real.shape == (10, 1, 48, 48) and real_cond.shape == (10, TINY.cond_dim)


def test_class_matched_draws_rare_classes_as_often_for_real_as_for_fake():
    pools, gen = _pools(), torch.Generator().manual_seed(1)
    classes = torch.cat([sd.batch_classes(pools, 64, gen, 0.5) for _ in range(20)])
    share = torch.bincount(classes, minlength=8).float() / len(classes)
    assert torch.allclose(share, sd.class_probabilities(pools, 0.5), atol=0.03)
    unmatched = sd.fake_conditions(pools, 8, gen, TINY_TRAIN)  # without classes: uniform, unpaired (old scheme)
    assert not unmatched["paired"] and len(unmatched["cond"]) == 8


def test_diversity_hinge_is_zero_when_pairs_differ_like_real_ones_and_moves_g():
    real = torch.rand(8, 1, 48, 48) * 2 - 1
    same = torch.zeros(8, 1, 48, 48)
    assert float(sg.diversity_hinge(same, real)) > 0.3  # one face per condition: penalised
    assert float(sg.diversity_hinge(real, real)) == pytest.approx(0.0, abs=1e-6)  # as varied as real: zero
    assert float(sg.diversity_hinge(real * 2, real)) == 0.0  # more varied than real is never rewarded
    g = sg.StyleGenerator(TINY)
    z, c = torch.randn(8, TINY.z_dim), torch.rand(4, TINY.cond_dim).repeat(2, 1)
    far = torch.cat([torch.full((4, 1, 48, 48), 5.0), torch.full((4, 1, 48, 48), -5.0)])  # real pairs 10 apart
    loss = sg.diversity_hinge(g(z, c), far)
    assert float(loss) > 0
    loss.backward()
    assert float(g.mapping.layers[0].weight.grad.abs().sum()) > 0


def test_train_step_logs_the_diversity_term():
    trainer = st.Trainer(TINY, TINY_TRAIN, _pools(), None)
    terms = trainer.train_step(torch.autocast("cpu", enabled=False))
    assert "g_diversity" in terms and np.isfinite(terms["g_diversity"])
    off = st.Trainer(TINY, dataclasses.replace(TINY_TRAIN, class_matched=False), _pools(), None)
    assert "g_diversity" not in off.train_step(torch.autocast("cpu", enabled=False))


def test_identity_hold_sees_coarse_changes_not_fine_ones_and_is_a_term_only_when_weighted():
    rng = np.random.default_rng(0)
    face = torch.from_numpy(rng.uniform(-1, 1, (4, 1, 48, 48)).astype(np.float32))
    fine = face.clone()
    fine[:, :, 24:32, 16:32] = fine[:, :, 24:32, 16:32].flip(2)  # lips changed inside the 8x8 cells: means kept
    coarse = torch.roll(face, 6, dims=3)  # the face moved: every cell's mean changes
    assert float(sg.identity_hold(face, face)) == 0.0
    assert float(sg.identity_hold(face, coarse)) > 3 * float(sg.identity_hold(face, fine))
    amp = torch.autocast("cpu", enabled=False)
    assert "g_identity" not in st.Trainer(TINY, TINY_TRAIN, _pools(), None).train_step(amp)  # default: off
    held = st.Trainer(TINY, dataclasses.replace(TINY_TRAIN, identity_hold_weight=2.0), _pools(), None)
    assert np.isfinite(held.train_step(amp)["g_identity"])
    for block in held.g.blocks:  # per-pixel noise on: the term still sees no change under one condition
        block.noise1.strength.data.fill_(0.5)
    z, cond = torch.randn(3, TINY.z_dim), st.fake_conditions(held.pools, 3, torch.Generator(), held.tc)["cond"]
    assert float(sl.identity_losses(held.g, z, cond, cond, 2.0, torch.Generator())["g_identity"]) == 0.0


def test_noise_varies_training_faces_not_inference_ones():
    g = sg.StyleGenerator(TINY)
    for block in g.blocks:
        block.noise1.strength.data.fill_(1.0)
    z, c = torch.randn(2, TINY.z_dim), torch.rand(2, TINY.cond_dim)
    a = g(z, c, noise=torch.Generator().manual_seed(0))
    assert torch.equal(a, g(z, c, noise=torch.Generator().manual_seed(0)))  # drawn from the given generator
    assert not torch.equal(a, g(z, c, noise=torch.Generator().manual_seed(1)))
    g.eval()
    assert torch.equal(g(z, c), g(z, c))  # inference: fixed maps, a seed gives one face
    assert torch.equal(sg.StyleGenerator(TINY).blocks[2].noise1.fixed, g.blocks[2].noise1.fixed)


def test_files_saved_before_the_noise_load_with_noise_off():
    g = sg.StyleGenerator(TINY)
    old = {k: v for k, v in g.state_dict().items() if not k.endswith(".strength")}
    fresh = sg.StyleGenerator(TINY)
    sg.load_generator_state(fresh, old)
    assert all(float(b.noise1.strength) == 0 and float(b.noise2.strength) == 0 for b in fresh.blocks)
    with pytest.raises(WeightsError):
        sg.load_generator_state(fresh, {k: v for k, v in old.items() if not k.startswith("const")})


def test_synthesizer_load_reads_a_stylegen_export(tmp_path):
    from core.synthesizer import Synthesizer

    trainer = st.Trainer(TINY, TINY_TRAIN, _pools(), None)
    st.export(tmp_path / "g.safetensors", trainer)
    assert sg.is_stylegen_file(tmp_path / "g.safetensors")
    assert not sg.is_stylegen_file(tmp_path / "missing.safetensors")
    synth = Synthesizer.load(path=tmp_path / "g.safetensors", device="cpu")
    assert isinstance(synth.g, sg.StyleGenerator) and synth.source == str(tmp_path / "g.safetensors")
    assert synth.generate({"happiness": 1.0}, seed=3, n=2)[0].shape == (48, 48)


def test_weighted_frechet_equals_repeating_rows():
    from core.metrics import frechet_distance

    rng = np.random.default_rng(0)
    a, b = rng.normal(size=(200, 4)), rng.normal(size=(30, 4)) + 0.5
    repeat = np.array([1] * 10 + [3] * 20)
    expected = frechet_distance(a, np.repeat(b, repeat, axis=0))
    # np.cov with aweights is the weighted covariance; repeating rows changes the ddof correction slightly
    assert frechet_distance(a, b, weights_b=repeat.astype(float)) == pytest.approx(expected, rel=0.05)
    assert frechet_distance(a, b, weights_b=np.ones(30)) == pytest.approx(frechet_distance(a, b))


def test_class_weights_and_within_class_spread():
    from core.metrics import class_weights
    from core.training.stylegen_monitor import within_class_spread

    labels = np.array([0, 0, 0, 1, -1])
    w = class_weights(labels, 2)
    assert np.allclose(w, [1 / 3, 1 / 3, 1 / 3, 1, 0])
    faces = np.zeros((4, 48, 48), np.uint8)
    assert within_class_spread(faces, np.array([0, 0, 1, 1])) == 0.0
    faces[1] = 255
    assert within_class_spread(faces, np.array([0, 0, 1, 1])) == pytest.approx(0.5)  # class 0: 1, class 1: 0


def test_train_command_passes_typed_fields_over_a_warm_start(monkeypatch, tmp_path):
    import core.train as cli
    import core.training.stylegen as trainer_module

    trainer = st.Trainer(TINY, dataclasses.replace(TINY_TRAIN, g_au_weight=10.0), _pools(), None)
    ws.export_warm_start(tmp_path / "warm.safetensors", trainer)
    seen = {}
    monkeypatch.setattr(trainer_module, "train", lambda *a, **k: seen.update(k, config=a[4]) or {"step": 0})
    argv = ["stylegen", "--data", "x", "--out", str(tmp_path / "run"), "--init", str(tmp_path / "warm.safetensors"),
            "--g-au-weight", "5", "--no-class-matched"]
    assert cli.main(argv) == 0
    assert seen["config"].g_au_weight == 5.0 and seen["config"].class_matched is False
    assert seen["config"].lr == TINY_TRAIN.lr  # not typed: the warm start's value
    assert set(seen["overrides"]) == {"g_au_weight", "class_matched"}


def test_a_run_checkpoint_becomes_the_same_warm_start_as_the_trainer_writes(tmp_path):
    from core.weights import read_safetensors

    trainer = st.Trainer(TINY, TINY_TRAIN, _pools(), None)
    trainer.train_step(torch.autocast("cpu", enabled=False))
    st.save_checkpoint(tmp_path / "last.safetensors", trainer)
    ws.export_warm_start(tmp_path / "a.safetensors", trainer)
    assert ws.warm_start_from_checkpoint(tmp_path / "last.safetensors", tmp_path / "b.safetensors")["step"] == 1
    a, meta_a = read_safetensors(tmp_path / "a.safetensors")
    b, meta_b = read_safetensors(tmp_path / "b.safetensors")
    assert set(a) == set(b) and all(torch.equal(a[k], b[k]) for k in a)  # no optimizer state, no rng
    assert meta_a == meta_b
    fresh = st.Trainer(TINY, TINY_TRAIN, _pools(), None)
    ws.load_warm_start(fresh, tmp_path / "b.safetensors")
    assert fresh.step == 1


def test_class_weighting_removes_a_difference_of_class_mix_only():
    from core.metrics import class_weights, frechet_distance

    rng = np.random.default_rng(0)
    centres = np.array([[0.0, 0.0], [6.0, 0.0], [0.0, 6.0]])
    uniform = np.repeat([0, 1, 2], 2000)  # like the generated faces: classes uniform
    skewed = np.repeat([0, 1, 2], [4000, 1500, 500])  # like FER+ test faces: one class dominates
    a = centres[uniform] + rng.normal(size=(len(uniform), 2))
    b = centres[skewed] + rng.normal(size=(len(skewed), 2))
    assert frechet_distance(a, b) > 3  # the same classes, drawn alike, yet far apart
    assert frechet_distance(a, b, weights_b=class_weights(skewed, 3)) < 0.1
    assert frechet_distance(b, a, weights_a=class_weights(skewed, 3)) < 0.1


def test_the_warm_start_command_also_writes_the_generator_of_the_same_step(tmp_path):
    import core.train as cli
    from core.synthesizer import Synthesizer

    trainer = st.Trainer(TINY, TINY_TRAIN, _pools(), None)
    trainer.train_step(torch.autocast("cpu", enabled=False))
    st.save_checkpoint(tmp_path / "last.safetensors", trainer)
    st.export(tmp_path / "direct.safetensors", trainer)
    argv = ["stylegen-warm-start", str(tmp_path / "last.safetensors"), str(tmp_path / "warm.safetensors"),
            "--generator", str(tmp_path / "g.safetensors")]
    assert cli.main(argv) == 0
    ours, theirs = (Synthesizer.load(path=tmp_path / n, device="cpu") for n in ("g.safetensors", "direct.safetensors"))
    assert ours.metadata["step"] == 1
    assert np.array_equal(ours.generate({"anger": 1.0}, seed=2, n=3), theirs.generate({"anger": 1.0}, seed=2, n=3))


def test_class_matched_batches_must_be_even():
    import pytest

    from core.training.stylegen import StyleTrainConfig

    with pytest.raises(ValueError, match="even"):
        StyleTrainConfig(batch_size=5)
    assert StyleTrainConfig(batch_size=5, class_matched=False).batch_size == 5
