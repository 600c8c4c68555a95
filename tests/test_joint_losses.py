"""The joint loop's named loss terms (core.training.joint_losses), each on tiny nets: finite, zero or absent
where it should be, and reaching the parameters it should and no others."""

import contextlib

import numpy as np
import pytest
import torch

from core.models.generator import DiscriminatorNet, GeneratorConfig, GeneratorNet, make_condition
from core.models.recognizer import RecognizerConfig, RecognizerNet
from core.training.joint import JointConfig, JointState, run_joint
from core.training.joint_losses import (
    WEIGHTED_TERMS,
    discriminator_losses,
    generator_adversarial_losses,
    recognition_losses,
    weighted_sum,
)

TINY_R = RecognizerConfig(widths=(8, 16), depths=(1, 1), embed_dim=16, dropout=0.0)
TINY_G = GeneratorConfig(z_dim=8, g_channels=(16, 8, 8, 4), d_channels=(4, 8, 8, 16))
N_REAL, N_SYNTH = 6, 6
REAL_LABELS = torch.tensor([0, 0, 1, 1, 2, 2])
REQUESTED = torch.tensor([0, 1, 1, 2, 3, 3])  # class 3 has no real face: its rows have no intra-class anchor


@pytest.fixture
def nets():
    torch.manual_seed(0)
    return RecognizerNet(TINY_R).train(), GeneratorNet(TINY_G).train(), DiscriminatorNet(TINY_G).train()


def _forward(r, g):
    """The joint loop's forward pass: G draws faces for REQUESTED, R reads [real; synthetic] in one batch."""
    x_real = torch.randn(N_REAL, 1, 48, 48, requires_grad=True)
    cond = make_condition(torch.nn.functional.one_hot(REQUESTED, 8).float(), torch.ones(N_SYNTH),
                          torch.full((N_SYNTH, TINY_G.num_aus), 0.5))
    x_gen = g(torch.randn(N_SYNTH, TINY_G.z_dim), cond).float()
    x_in = torch.cat([x_real, ((x_gen + 1) / 2 - TINY_R.mean) / TINY_R.std])
    features = r.embedding(x_in)
    return x_real, x_gen, features, r.head(features), r.fer2013_head(features)


def _terms(features, logits, logits7, keep=None, intra=True, rdbp=True, fer2013=None):
    targets = torch.nn.functional.one_hot(REAL_LABELS, 8).float()
    keep = torch.ones(N_SYNTH, dtype=torch.bool) if keep is None else keep
    return recognition_losses(features, logits, logits7, targets, fer2013, requested=REQUESTED,
                              synth_targets=torch.nn.functional.one_hot(REQUESTED, 8).float(), keep=keep,
                              intra=intra, rdbp=rdbp)


def _grads(loss, tensors):
    """Gradients of loss w.r.t. tensors, zeros where it does not reach."""
    tensors = list(tensors)
    grads = torch.autograd.grad(loss, tensors, retain_graph=True, allow_unused=True)
    return [torch.zeros_like(t) if grad is None else grad for t, grad in zip(tensors, grads)]


def _reaches(loss, module) -> bool:
    return any(torch.count_nonzero(grad) for grad in _grads(loss, module.parameters()))


def _rows(loss, tensor) -> tuple[bool, bool]:
    """(does the gradient reach the real rows of tensor, does it reach the synthetic rows)."""
    (grad,) = _grads(loss, [tensor])
    return bool(torch.count_nonzero(grad[:N_REAL])), bool(torch.count_nonzero(grad[N_REAL:]))


def test_real_term_trains_r_on_the_real_rows_only(nets):
    r, g, d = nets
    _, _, features, logits, logits7 = _forward(r, g)
    real = _terms(features, logits, logits7)["real"]
    assert torch.isfinite(real) and real > 0
    assert _rows(real, logits) == (True, False) and _rows(real, logits7) == (False, False)
    assert _reaches(real, r) and not _reaches(real, d)
    # With FER2013 labels the FER2013 head learns too; labels of -1 (none) leave the term as without labels.
    with_labels = _terms(features, logits, logits7, fer2013=torch.tensor([0, 1, 2, 3, 4, 5]))["real"]
    assert with_labels > real and _rows(with_labels, logits7) == (True, False)
    assert torch.equal(_terms(features, logits, logits7, fer2013=torch.full((N_REAL,), -1))["real"], real)
    r.eval()  # without batch statistics coupling the real and synthetic rows, the real term cannot reach G
    _, _, features, logits, logits7 = _forward(r, g)
    assert not _reaches(_terms(features, logits, logits7)["real"], g)


def test_synth_term_trains_r_and_g_on_the_kept_synthetic_rows(nets):
    r, g, d = nets
    _, _, features, logits, logits7 = _forward(r, g)
    synth = _terms(features, logits, logits7)["synth"]
    assert torch.isfinite(synth) and synth > 0
    assert _rows(synth, logits) == (False, True)
    assert _reaches(synth, r) and _reaches(synth, g) and not _reaches(synth, d)
    keep = torch.tensor([True, False, False, False, False, False])
    (grad,) = _grads(_terms(features, logits, logits7, keep=keep)["synth"], [logits])
    assert torch.count_nonzero(grad[N_REAL]) and not torch.count_nonzero(grad[N_REAL + 1:])  # filtered rows: none
    terms = _terms(features, logits, logits7, keep=torch.zeros(N_SYNTH, dtype=torch.bool))
    assert set(terms) == {"real"}  # nothing kept: no synthetic terms at all (and none in the step's record)
    no_synthetic = recognition_losses(features[:N_REAL], logits[:N_REAL], logits7[:N_REAL],
                                      torch.nn.functional.one_hot(REAL_LABELS, 8).float())
    assert set(no_synthetic) == {"real"} and torch.equal(no_synthetic["real"], terms["real"])


@pytest.mark.parametrize("rdbp", [True, False])
def test_intra_term_with_rdbp_pulls_only_the_synthetic_branch_and_g(nets, rdbp):
    r, g, d = nets
    _, _, features, logits, logits7 = _forward(r, g)
    intra = _terms(features, logits, logits7, rdbp=rdbp)["intra"]
    assert torch.isfinite(intra) and intra > 0
    real_rows, synth_rows = _rows(intra, features)
    assert synth_rows and real_rows == (not rdbp)  # RDBP: the real features are fixed anchors
    (grad,) = _grads(intra, [features])
    assert not torch.count_nonzero(grad[N_REAL + 4:])  # requested class 3 has no real anchor (and no centre)
    assert _reaches(intra, g) and _reaches(intra, r) and not _reaches(intra, d)
    assert not _reaches(intra, r.head) and not _reaches(intra, r.fer2013_head)  # features only, not the heads
    r.eval()  # no batch statistics: the only way from the real images into the term is through the anchors
    x_real, _, features, logits, logits7 = _forward(r, g)
    (grad,) = _grads(_terms(features, logits, logits7, rdbp=rdbp)["intra"], [x_real])
    assert bool(torch.count_nonzero(grad)) == (not rdbp)
    assert "intra" not in _terms(features, logits, logits7, intra=False)


def test_intra_term_is_zero_when_synthetic_faces_sit_on_their_real_class_means():
    real = torch.randn(N_REAL, 16)
    real[1], real[3], real[5] = real[0] * 2, real[2] * 3, real[4] * 0.5  # each class: one direction
    features = torch.cat([real, real[[0, 2, 2, 4, 4, 4]] * 1.7]).requires_grad_(True)
    requested = torch.tensor([0, 1, 1, 2, 2, 2])
    terms = recognition_losses(features, torch.zeros(12, 8), None, torch.nn.functional.one_hot(REAL_LABELS, 8).float(),
                               requested=requested, synth_targets=torch.full((6, 8), 1 / 8),
                               keep=torch.ones(6, dtype=torch.bool), intra=True)
    assert float(terms["intra"].detach()) == pytest.approx(0.0, abs=1e-6)


def test_adv_term_trains_g_only(nets):
    r, g, d = nets
    _, x_gen, _, _, _ = _forward(r, g)
    adv = generator_adversarial_losses(d, x_gen, contextlib.nullcontext())
    assert set(adv) == {"adv"} and torch.isfinite(adv["adv"]) and adv["adv"] > 0
    assert _reaches(adv["adv"], g) and not _reaches(adv["adv"], r)
    # It reaches D's parameters too, but the loop's D step sets D's gradients to None before its own backward.


def test_d_term_trains_d_only(nets):
    r, g, d = nets
    _, x_gen, _, _, _ = _forward(r, g)
    real_uint8 = torch.randint(0, 256, (N_REAL, 48, 48), dtype=torch.uint8)
    loss = discriminator_losses(d, real_uint8, x_gen)
    assert set(loss) == {"d"} and torch.isfinite(loss["d"]) and loss["d"] > 0
    assert _reaches(loss["d"], d) and not _reaches(loss["d"], g) and not _reaches(loss["d"], r)


def test_weighted_sum_adds_the_present_terms_in_order():
    terms = {"real": torch.tensor(1.5), "synth": torch.tensor(0.25), "intra": torch.tensor(3.0),
             "adv": torch.tensor(0.7)}
    weights = {"synth": 1.0, "intra": 0.1, "adv": 0.5}
    assert WEIGHTED_TERMS == ("synth", "intra", "adv")
    expected = ((terms["real"] + 1.0 * terms["synth"]) + 0.1 * terms["intra"]) + 0.5 * terms["adv"]
    assert torch.equal(weighted_sum(terms, weights), expected)  # the same float operations, in the same order
    assert torch.equal(weighted_sum({"real": terms["real"], "adv": terms["adv"]}, weights),
                       terms["real"] + 0.5 * terms["adv"])
    assert torch.equal(weighted_sum(terms, dict.fromkeys(weights, 0.0)), terms["real"])


def test_the_first_record_carries_the_resolved_config():
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (16, 48, 48)).astype(np.uint8)
    targets = np.eye(8, dtype=np.float32)[rng.integers(0, 8, 16)]
    config = JointConfig(steps=2, batch_real=8, augment=0.0, seed=3)
    state = run_joint(JointState(RecognizerNet(TINY_R)), images, targets, config)
    first, second = state.history
    assert first["config"] == {**JointConfig().__dict__, "steps": 2, "batch_real": 8, "augment": 0.0, "seed": 3}
    assert list(first)[:2] == ["step", "config"] and "config" not in second
