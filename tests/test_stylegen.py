"""StyleGen (issue 15): shapes, loss terms, R1, save / load, exact resume, realism measures; tiny configs."""

import dataclasses
import json

import numpy as np
import pytest
import torch

import core.training.stylegen as st
import core.training.stylegen_losses as sl
import core.training.stylegen_warm_start as ws
from core.labels import AUS, EXPRESSIONS
from core.models import stylegen as sg
from core.training.augment import augment_pair

TINY = sg.StyleGenConfig(z_dim=8, w_dim=16, mapping_layers=2, g_channels=(16, 8, 8, 4), d_channels=(4, 8, 8, 16),
                         e_channels=(4, 8, 8, 16))
TINY_TRAIN = st.StyleTrainConfig(steps=4, batch_size=8, e_batch=8, log_every=2, r1_every=2, e_every=2,
                                 recognizer_start=1, recognizer_weight=0.3, amp=False, metric_faces=16)


def _pools(n: int = 64, seed: int = 0) -> st.Pools:
    rng = np.random.default_rng(seed)
    labels = np.arange(n) % len(EXPRESSIONS)
    targets = np.eye(len(EXPRESSIONS), dtype=np.float32)[labels]
    aus = rng.uniform(0, 1, (n, len(AUS))).astype(np.float32)
    images = rng.integers(0, 256, (n, 48, 48)).astype(np.uint8)
    class_aus = {name: aus[labels == k].mean(0).tolist() for k, name in enumerate(EXPRESSIONS)}
    return st.Pools(torch.from_numpy(images), torch.from_numpy(targets), torch.from_numpy(aus),
                    torch.ones(n, dtype=torch.bool), [torch.from_numpy(np.flatnonzero(labels == k)) for k in range(8)],
                    class_aus)


def _tiny_recognizer():
    from core.models.recognizer import RecognizerConfig, RecognizerNet

    return RecognizerNet(RecognizerConfig(widths=(8, 16), depths=(1, 1), embed_dim=16)).eval().requires_grad_(False)


def _batch(trainer, seed=1):
    gen = torch.Generator().manual_seed(seed)
    real, real_cond, targets, aus, known = st.real_batch(trainer.pools, 8, gen)
    info = st.fake_conditions(trainer.pools, 8, gen, trainer.tc)
    z = torch.randn(8, TINY.z_dim, generator=gen)
    return gen, real, real_cond, targets, aus, known, info, z


def test_shapes_and_range():
    g, d, e = sg.StyleGenerator(TINY), sg.StyleDiscriminator(TINY), sg.StyleEncoder(TINY)
    z, c = torch.randn(5, TINY.z_dim), torch.rand(5, TINY.cond_dim)
    x = g(z, c)
    assert x.shape == (5, 1, 48, 48)
    g.eval()
    assert float(g(z, c).detach().abs().max()) <= 1.0  # inference keeps the [-1, 1] contract
    logit, expr, au = d(x, c)
    assert logit.shape == (5,) and expr.shape == (5, len(EXPRESSIONS)) and au.shape == (5, len(AUS))
    assert e(x).shape == (5, TINY.z_dim)
    assert TINY.cond_dim == len(EXPRESSIONS) + 1 + len(AUS)


def test_condition_changes_the_face():
    g = sg.StyleGenerator(TINY).eval()
    z = torch.randn(2, TINY.z_dim)
    c0, c1 = torch.zeros(2, TINY.cond_dim), torch.zeros(2, TINY.cond_dim)
    c1[:, 1] = 1.0
    assert float((g(z, c0) - g(z, c1)).abs().mean()) > 1e-4


def test_modulated_conv_equals_per_sample_weights():
    conv = sg.ModConv(3, 4, 3, w_dim=5)
    x, w = torch.randn(2, 3, 6, 6), torch.randn(2, 5)
    style = conv.affine(w)
    for i in range(2):  # the StyleGAN2 definition: weights scaled by the style, then demodulated
        weight = conv.weight * conv.scale * style[i][None, :, None, None]
        weight = weight * torch.rsqrt(weight.square().sum(dim=(1, 2, 3), keepdim=True) + 1e-8)
        expected = torch.nn.functional.conv2d(x[i : i + 1], weight, conv.bias, padding=1)
        assert torch.allclose(conv(x[i : i + 1], w[i : i + 1]), expected, atol=1e-5)


def _moves(loss: torch.Tensor, module: torch.nn.Module) -> bool:
    grads = torch.autograd.grad(loss, [p for p in module.parameters() if p.requires_grad], allow_unused=True,
                                retain_graph=True)
    return any(gr is not None and float(gr.abs().sum()) > 0 for gr in grads)


def test_each_loss_term_is_finite_and_moves_its_network():
    trainer = st.Trainer(TINY, TINY_TRAIN, _pools(), _tiny_recognizer())
    gen, real, real_cond, targets, aus, known, info, z = _batch(trainer)
    info["readable"][:] = True
    fake = trainer.g(z, info["cond"])
    d_terms = sl.d_losses(trainer.d, real, real_cond, targets, aus, known, fake.detach(), info["cond"], info, gen,
                          TINY_TRAIN)
    assert set(d_terms) == {"d_adv", "d_expression", "d_au"}
    for name, term in d_terms.items():
        assert torch.isfinite(term), name
        assert _moves(term, trainer.d), name
    g_terms = sl.g_losses(trainer.d, fake, info, gen, TINY_TRAIN, step=5, recognizer=trainer.recognizer)
    assert {"g_adv", "g_au", "g_expression", "g_recognizer"} <= set(g_terms)
    for name, term in g_terms.items():
        assert torch.isfinite(term), name
        if float(term) > 0:  # the recognizer hinge is zero when the class is already read
            assert _moves(term, trainer.g), name
    e_terms = sl.e_losses(trainer.e, trainer.g_ema, z, info["cond"], real, real_cond, TINY_TRAIN)
    for name, term in e_terms.items():
        assert torch.isfinite(term), name
        assert _moves(term, trainer.e), name
    assert not any(p.requires_grad for p in trainer.g_ema.parameters())  # E never trains the generator


def test_recognizer_hinge_is_zero_once_the_class_is_read():
    logits = torch.tensor([[4.0, 0.0, 0.0], [0.0, 0.0, 0.0]])
    assert float(sg.recognizer_hinge(logits[:1], torch.tensor([0]))) == 0.0
    assert float(sg.recognizer_hinge(logits[1:], torch.tensor([0]))) > 0.0


def test_r1_penalty():
    d = sg.StyleDiscriminator(TINY)
    real = torch.randn(4, 1, 48, 48)
    cond = torch.rand(4, TINY.cond_dim)
    term = sl.r1_losses(d, real, cond, TINY_TRAIN)["r1"]
    assert torch.isfinite(term) and float(term) > 0
    assert _moves(term, d)
    x = real.clone().requires_grad_(True)  # a logit linear in x: the penalty is the squared weight norm
    assert float(sg.r1_penalty(x, (x * 2).sum(dim=(1, 2, 3)))) == pytest.approx(4 * 48 * 48)


def test_augment_pair_shifts_and_keeps_gradients():
    x = torch.randn(6, 1, 48, 48, requires_grad=True)
    y = augment_pair(x, torch.Generator().manual_seed(0), max_shift=3)
    assert y.shape == x.shape
    y.sum().backward()
    assert x.grad is not None and float(x.grad.abs().sum()) > 0



def test_augment_colour_and_cutout_are_opt_in_and_do_what_they_say():
    x = torch.rand(8, 1, 48, 48) * 2 - 1
    plain = augment_pair(x, torch.Generator().manual_seed(3), max_shift=3)
    # off (the recipe to step 11,502): the same draws as before, bit for bit
    assert torch.equal(plain, augment_pair(x, torch.Generator().manual_seed(3), max_shift=3, color=0, cutout=0))
    coloured = augment_pair(x, torch.Generator().manual_seed(3), max_shift=3, color=1.0)
    assert not torch.equal(coloured, plain)
    shift = (coloured - plain).mean(dim=(1, 2, 3))  # brightness within DiffAugment's +-0.5 (contrast keeps the mean)
    assert float(shift.abs().max()) <= 0.5 + 1e-5
    holes = augment_pair(torch.ones(8, 1, 48, 48), torch.Generator().manual_seed(3), max_shift=0, cutout=0.25)
    zeros = (holes == 0).flatten(1).sum(dim=1)
    assert int(zeros.max()) <= 13 * 13 and int(zeros.min()) >= 6 * 6  # a 12-13 px square, clipped at the border
    x.requires_grad_(True)
    augment_pair(x, torch.Generator().manual_seed(0), color=1.0, cutout=0.25).sum().backward()
    assert float(x.grad.abs().sum()) > 0


def test_d_losses_report_the_overfitting_heuristic():
    trainer = st.Trainer(TINY, TINY_TRAIN, _pools(), _tiny_recognizer())
    gen, real, real_cond, targets, aus, known, info, z = _batch(trainer)
    diagnostics = {}
    fake = trainer.g(z, info["cond"]).detach()
    tc = dataclasses.replace(TINY_TRAIN, augment_color=1.0, augment_cutout=0.25)
    terms = sl.d_losses(trainer.d, real, real_cond, targets, aus, known, fake, info["cond"], info, gen, tc, diagnostics)
    assert "d_real_sign" not in terms  # a diagnostic, never summed into D's loss
    assert -1.0 <= float(diagnostics["d_real_sign"]) <= 1.0

def test_one_step_changes_g_d_e_and_ema():
    trainer = st.Trainer(TINY, TINY_TRAIN, _pools(), _tiny_recognizer())
    before = {k: [p.detach().clone() for p in net.parameters()] for k, net in trainer.nets().items()}
    terms = trainer.train_step(torch.autocast("cpu", enabled=False))
    assert all(np.isfinite(v) for v in terms.values())
    for k, net in trainer.nets().items():
        assert any(not torch.equal(a, b) for a, b in zip(before[k], net.parameters())), k


def test_config_round_trip():
    values = TINY.to_dict()
    assert values["arch"] == sg.ARCH
    assert sg.StyleGenConfig.from_dict({**values, "g_channels": list(TINY.g_channels)}) == TINY


def test_export_load_round_trip_drives_the_synthesizer(tmp_path):
    trainer = st.Trainer(TINY, TINY_TRAIN, _pools(), None)
    st.export(tmp_path / "g.safetensors", trainer)
    synth = sg.load_synthesizer(tmp_path / "g.safetensors")
    z = synth._identities(3, 2)
    cond = synth._condition({"happiness": 1.0}, {"AU12": 0.5}).expand(2, -1)
    with torch.no_grad():
        ours = trainer.g_ema(z, cond)
        theirs = synth.g(z, cond)
    assert torch.equal(ours, theirs)
    faces = synth.generate(expression="surprise", seed=1, n=3)
    assert len(faces) == 3 and faces[0].shape == (48, 48) and faces[0].dtype == np.uint8
    crop = faces[0]
    assert synth.encode(crop[None]).shape == (1, TINY.z_dim)


def test_resume_continues_exactly(tiny_dataset, tmp_path):
    from core.checkpoint import export_recognizer
    from core.models.recognizer import RecognizerConfig, RecognizerNet
    from core.weights import read_safetensors

    recognizer = tmp_path / "r.safetensors"
    export_recognizer(recognizer, RecognizerNet(RecognizerConfig(widths=(8, 16), depths=(1, 1), embed_dim=16)))

    def run(out, steps, resume=False):
        tc = dataclasses.replace(TINY_TRAIN, steps=steps)
        # metrics on: measuring the EMA generator must not disturb training (no shared random state)
        return st.train(tiny_dataset, out, None, TINY, tc, resume=resume, recognizer_path=recognizer, metrics=True)

    run(tmp_path / "a", 6)
    run(tmp_path / "b", 3)
    assert run(tmp_path / "b", 6, resume=True)["step"] == 6
    a, _ = read_safetensors(tmp_path / "a" / "last.safetensors")
    b, meta = read_safetensors(tmp_path / "b" / "last.safetensors")
    assert meta["step"] == 6 and set(a) == set(b)
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert (tmp_path / "b" / "generator.safetensors").is_file() and (tmp_path / "b" / "sample_000006.png").is_file()
    assert {p.name for p in (tmp_path / "b").glob("generator_*.safetensors")} == {
        "generator_000003.safetensors", "generator_000006.safetensors"}  # each measured export kept
    log = [json.loads(line) for line in (tmp_path / "b" / "log.jsonl").read_text().splitlines()]
    metrics = [r for r in log if r["event"] == "metrics"]
    assert [r["step"] for r in metrics] == [3, 6] and all(np.isfinite(r["frechet"]) for r in metrics)
    assert 0 <= metrics[-1]["recognizer_reads"] <= 1


def test_two_sample_test_separates_different_sets_and_not_equal_ones():
    from core.evaluation.realism import two_sample_test

    rng = np.random.default_rng(0)
    noise = rng.integers(0, 256, (200, 48, 48)).astype(np.uint8)
    other = rng.integers(0, 256, (200, 48, 48)).astype(np.uint8)
    bright = np.clip(noise.astype(int) // 2 + 128, 0, 255).astype(np.uint8)
    assert two_sample_test(noise, bright, seed=0, epochs=4, min_steps=100)["accuracy"] > 0.9
    same = two_sample_test(noise, other, seed=0, epochs=4, min_steps=100)
    assert 0.3 < same["accuracy"] < 0.7
    assert same == two_sample_test(noise, other, seed=0, epochs=4, min_steps=100)  # deterministic


def test_two_sample_tests_take_the_best_critic(monkeypatch):
    import core.evaluation.realism as realism

    scores = {0: 0.509, 1: 0.956, 2: 0.955}  # a failed critic (seed 0) must not read as "indistinguishable"
    monkeypatch.setattr(realism, "two_sample_test", lambda a, b, seed, **kw: {"accuracy": scores[seed], "seed": seed})
    out = realism.two_sample_tests(None, None)
    assert out["accuracy"] == 0.956 and out["seed"] == 1 and out["per_seed"] == [0.509, 0.956, 0.955]


def test_generate_uniform_and_frechet():
    from core.synthesizer import Synthesizer
    from core.training.stylegen_monitor import frechet, generate_uniform

    trainer = st.Trainer(TINY, TINY_TRAIN, _pools(), None)
    synth = Synthesizer(trainer.g_ema, trainer.e, trainer.pools.class_aus, torch.device("cpu"))
    faces, classes = generate_uniform(synth, 20, seed=0)
    assert faces.shape == (20, 48, 48) and faces.dtype == np.uint8
    assert np.bincount(classes, minlength=8).tolist() == [3, 3, 3, 3, 2, 2, 2, 2]
    again, _ = generate_uniform(synth, 20, seed=0)
    assert np.array_equal(faces, again)
    rng = np.random.default_rng(0)
    a = rng.integers(0, 256, (300, 48, 48)).astype(np.uint8)
    recognizer_like = type("R", (), {"net": _tiny_recognizer(), "device": torch.device("cpu")})()
    assert frechet(a, a, recognizer_like) == pytest.approx(0.0, abs=1e-3)


def test_resume_may_change_only_named_fields(tmp_path):
    mc, tc = TINY, dataclasses.replace(TINY_TRAIN, recognizer_weight=0.3)
    trainer = st.Trainer(mc, tc, _pools(), None)
    st.save_checkpoint(tmp_path / "last.safetensors", trainer)
    asked = dataclasses.replace(TINY_TRAIN, steps=9, recognizer_weight=0.0, lr=1.0)
    _, kept, _, _ = st.restore(tmp_path, mc, asked, resume=True)
    assert (kept.steps, kept.recognizer_weight, kept.lr) == (9, 0.3, tc.lr)
    _, changed, _, _ = st.restore(tmp_path, mc, asked, resume=True, overrides=("recognizer_weight",))
    assert (changed.steps, changed.recognizer_weight, changed.lr) == (9, 0.0, tc.lr)


def test_a_warm_start_is_small_and_continues_the_run(tmp_path):
    trainer = st.Trainer(TINY, TINY_TRAIN, _pools(), None)
    trainer.step = 7
    ws.export_warm_start(tmp_path / "warm.safetensors", trainer)
    fresh = st.Trainer(TINY, TINY_TRAIN, _pools(), None)
    ws.load_warm_start(fresh, tmp_path / "warm.safetensors")
    assert fresh.step == 7
    for a, b in ((fresh.g, trainer.g_ema), (fresh.g_ema, trainer.g_ema), (fresh.d, trainer.d), (fresh.e, trainer.e)):
        for (name, x), y in zip(a.state_dict().items(), b.state_dict().values()):
            assert torch.allclose(x, y.half().float()), name  # half precision, as stored
    model, config = ws.warm_start_configs(tmp_path / "warm.safetensors")
    assert model == TINY and config == TINY_TRAIN


def test_redrawn_aus_are_marked_and_weigh_more_in_g_au_loss():
    trainer = st.Trainer(TINY, dataclasses.replace(TINY_TRAIN, au_perturb=1.0), _pools(), None)
    gen = torch.Generator().manual_seed(0)
    info = st.fake_conditions(trainer.pools, 8, gen, trainer.tc, classes=st.batch_classes(trainer.pools, 8, gen, 0.5))
    redrawn = info["redrawn"]
    assert redrawn.shape == (8, len(AUS)) and redrawn.any() and not redrawn.all()
    assert torch.equal(redrawn[:4], redrawn[4:])  # pairs share their condition
    pred, target = torch.zeros(8, len(AUS)), torch.ones(8, len(AUS))
    weight = 1 + 7 * redrawn.float()
    assert float(sg.au_loss(pred, target, weight)) == pytest.approx(float(weight.mean()))
    assert float(sg.au_loss(pred, target)) == pytest.approx(1.0)


def test_uniform_real_faces_give_every_class_its_share():
    from core.evaluation.synthesis import uniform_real_faces

    labels = np.array([0] * 50 + [1] * 30 + [7] * 2 + list(range(2, 7)) * 4)
    split = type("S", (), {"soft_targets": np.eye(8, dtype=np.float32)[labels],
                           "images": np.arange(len(labels), dtype=np.int64)})()
    faces, unique = uniform_real_faces(split, 80, np.random.default_rng(0))
    assert np.bincount(labels[faces], minlength=8).tolist() == [10] * 8
    assert unique == len(np.unique(faces)) < 80  # contempt (2 faces) and classes 2-6 (4 each) repeat


def test_after_a_warm_start_the_lr_ramps_up_and_a_resume_keeps_the_ramp(tmp_path):
    tc = dataclasses.replace(TINY_TRAIN, init_lr_rampup=4)
    trainer = st.Trainer(TINY, tc, _pools(), None)
    trainer.step = 7
    ws.export_warm_start(tmp_path / "warm.safetensors", trainer)
    fresh = st.Trainer(TINY, tc, _pools(), None)
    ws.load_warm_start(fresh, tmp_path / "warm.safetensors")
    fresh.train_step(torch.autocast("cpu", enabled=False))
    assert fresh.opt_g.param_groups[0]["lr"] == pytest.approx(tc.lr / 4)
    assert fresh.opt_d.param_groups[0]["lr"] == pytest.approx(fresh.base_lrs["opt_d"][0] / 4)
    tensors, meta = fresh.state()
    resumed = st.Trainer(TINY, tc, _pools(), None)
    resumed.load_state(tensors, json.loads(json.dumps(meta)))
    resumed.train_step(torch.autocast("cpu", enabled=False))
    assert resumed.opt_g.param_groups[0]["lr"] == pytest.approx(tc.lr / 2)
    for _ in range(3):
        resumed.train_step(torch.autocast("cpu", enabled=False))
    assert resumed.opt_g.param_groups[0]["lr"] == pytest.approx(tc.lr)
    scratch = st.Trainer(TINY, tc, _pools(), None)  # a run from scratch has no ramp of its own
    scratch.train_step(torch.autocast("cpu", enabled=False))
    assert scratch.opt_g.param_groups[0]["lr"] == pytest.approx(tc.lr)


def _tiny_trunk():
    from core.models.recognizer import RecognizerConfig, RecognizerNet

    return RecognizerNet(RecognizerConfig(widths=(8, 16, 16), depths=(1, 1, 1), embed_dim=16))


def test_the_feature_discriminator_trains_its_heads_only_and_passes_gradients_to_the_faces():
    from core.models.feature_d import FeatureDiscriminator

    trunk = _tiny_trunk()
    before = {k: v.clone() for k, v in trunk.state_dict().items()}
    fd = FeatureDiscriminator(trunk, TINY.cond_dim, taps=(2, 3)).train()
    x = torch.rand(4, 1, 48, 48, requires_grad=True) * 2 - 1
    logit = fd(x, torch.rand(4, TINY.cond_dim))
    assert logit.shape == (4,)
    logit.sum().backward()
    assert all(p.grad is None for p in fd.stages.parameters())  # the recognizer's weights never train
    assert all(p.grad is not None and float(p.grad.abs().sum()) > 0 for p in fd.trainable())
    assert not fd.stages.training  # its batch-norm statistics stay the recognizer's
    assert all(torch.equal(before[k], v) for k, v in trunk.state_dict().items())
    assert set(fd.head_state()) and all(k.startswith("heads.") for k in fd.head_state())
    faces = torch.rand(2, 1, 48, 48).requires_grad_(True)
    fd(faces, torch.rand(2, TINY.cond_dim)).sum().backward()
    assert float(faces.grad.abs().sum()) > 0  # G learns through it


def test_a_run_with_the_feature_discriminator_trains_it_and_resumes_exactly(tmp_path):
    from core.checkpoint import export_recognizer

    trunk_path = tmp_path / "trunk.safetensors"
    export_recognizer(trunk_path, _tiny_trunk())
    tc = dataclasses.replace(TINY_TRAIN, recognizer_weight=0.0, feature_d_weight=0.5, feature_d_net=str(trunk_path))
    trainer = st.Trainer(TINY, tc, _pools(), None)
    heads = {k: v.clone() for k, v in trainer.fd.head_state().items()}
    terms = trainer.train_step(torch.autocast("cpu", enabled=False))
    assert {"fd_adv", "g_feature"} <= set(terms) and all(np.isfinite(list(terms.values())))
    assert any(not torch.equal(heads[k], v) for k, v in trainer.fd.head_state().items())
    st.save_checkpoint(tmp_path / "last.safetensors", trainer)
    twin = st.Trainer(TINY, tc, _pools(), None)
    from core.weights import read_safetensors

    twin.load_state(*read_safetensors(tmp_path / "last.safetensors"))
    a, b = trainer.train_step(torch.autocast("cpu", enabled=False)), twin.train_step(torch.autocast("cpu", enabled=False))
    assert a == b
