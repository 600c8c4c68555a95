"""Each named loss term of the trainers, on tiny nets and tensors: finite, zero where it should be, and
moving the networks it should (and no frozen one)."""

import math

import torch

from core.labels import AUS, EXPRESSIONS
from core.models.generator import (
    DiscriminatorNet,
    EncoderNet,
    GeneratorNet,
    LatentCriticNet,
    make_condition,
    random_shift_flip,
)
from core.models.recognizer import RecognizerConfig, RecognizerNet, recognizer_loss
from core.training import generator_losses as losses
from core.training.au_regressor import au_regressor_batch, au_regressor_step, read_aus
from core.training.generator import (
    GeneratorData,
    GeneratorTrainConfig,
    d_loss_weights,
    g_loss_weights,
    synthetic_conditions,
)
from core.training.schedule import ema_update
from tests.conftest import TINY_GENERATOR

N = 4
TINY_RECOGNIZER = RecognizerConfig(widths=(8,), depths=(1,), embed_dim=8, dropout=0.0)
TINY_AU_CRITIC = RecognizerConfig(widths=(8,), depths=(1,), embed_dim=8, num_classes=len(AUS), num_fer2013_classes=0)
D_TERMS = ("adversarial", "expression", "au", "latent")
G_TERMS = ("adversarial", "reconstruction", "latent", "expression", "au", "recognizer", "cycle", "au_critic")


def _frozen(net):
    net.eval()
    for p in net.parameters():
        p.requires_grad_(False)
    return net


def _nets(au_critic: bool = True) -> losses.GeneratorNets:
    torch.manual_seed(0)
    cfg = TINY_GENERATOR
    return losses.GeneratorNets(GeneratorNet(cfg), EncoderNet(cfg), DiscriminatorNet(cfg), LatentCriticNet(cfg),
                         _frozen(RecognizerNet(TINY_RECOGNIZER)),
                         _frozen(RecognizerNet(TINY_AU_CRITIC)) if au_critic else None)


def _batch(typical=(True, True, False, False), au_known=(True, False, True, True)) -> losses.GeneratorBatch:
    g = torch.Generator().manual_seed(1)
    expression = torch.eye(len(EXPRESSIONS))[torch.tensor([1, 2, 3, 4])]
    cond_new = make_condition(expression, torch.full((N,), 0.8), torch.rand(N, len(AUS), generator=g))
    return losses.GeneratorBatch(
        x=torch.rand(N, 1, 48, 48, generator=g) * 2 - 1,
        targets=torch.softmax(torch.randn(N, len(EXPRESSIONS), generator=g), 1),
        aus=torch.rand(N, len(AUS), generator=g),
        au_known=torch.tensor(au_known),
        cond_new=cond_new,
        typical_aus=torch.tensor(typical),
        z_prior=torch.randn(N, TINY_GENERATOR.z_dim, generator=g),
    )


def _grads(term: torch.Tensor, net: torch.nn.Module) -> float:
    """Total |gradient| of `term` on the trainable parameters of `net` (0 when it does not reach them)."""
    params = [p for p in net.parameters() if p.requires_grad]
    grads = torch.autograd.grad(term, params, retain_graph=True, allow_unused=True)
    return sum(float(g.abs().sum()) for g in grads if g is not None)


def _g_terms(nets, batch, fakes=None, seed=0):
    for p in nets.critics:  # as in the G step: D and the latent critic only pass gradients through
        p.requires_grad_(False)
    fakes = fakes or losses.generate(nets, batch)
    return losses.generator_g_losses(nets, batch, fakes, torch.Generator().manual_seed(seed))


# ---------------------------------------------------------------- D step

def test_d_terms_are_named_finite_and_move_only_d_and_the_latent_critic():
    nets, batch = _nets(), _batch()
    terms = losses.generator_d_losses(nets, batch, losses.generate(nets, batch))
    assert tuple(terms) == D_TERMS
    assert all(t.dim() == 0 and math.isfinite(float(t.detach())) for t in terms.values())
    moves = {name: {net: _grads(term, getattr(nets, net)) > 0 for net in ("g", "e", "d", "dz")}
             for name, term in terms.items()}
    assert moves["adversarial"] == {"g": False, "e": False, "d": True, "dz": False}  # fakes are detached
    assert moves["expression"] == moves["au"] == moves["adversarial"]
    assert moves["latent"] == {"g": False, "e": False, "d": False, "dz": True}  # E's codes are detached
    assert _grads(terms["expression"], nets.d.aus) == 0 and _grads(terms["au"], nets.d.expression) == 0


def test_d_au_term_is_zero_without_measured_aus():
    nets, batch = _nets(), _batch(au_known=(False,) * N)
    assert float(losses.generator_d_losses(nets, batch, losses.generate(nets, batch))["au"].detach()) == 0.0


# ---------------------------------------------------------------- G step

def test_g_terms_are_named_finite_and_move_g_or_e_but_no_critic():
    nets, batch = _nets(), _batch()
    terms, r_logits = _g_terms(nets, batch)
    assert tuple(terms) == G_TERMS
    assert all(t.dim() == 0 and math.isfinite(float(t.detach())) for t in terms.values())
    assert r_logits.shape == (int(batch.typical_aus.sum()), len(EXPRESSIONS))  # only typical-AU faces
    moves = {name: (_grads(term, nets.g) > 0, _grads(term, nets.e) > 0) for name, term in terms.items()}
    assert moves == {  # (G, E)
        "adversarial": (True, True), "reconstruction": (True, True), "latent": (False, True),
        "expression": (True, True), "au": (True, True), "recognizer": (True, False), "cycle": (True, True),
        "au_critic": (True, False),
    }
    losses.total(terms, g_loss_weights(GeneratorTrainConfig(au_critic="x", au_critic_weight=1.0), 10**6)).backward()
    for frozen in (nets.d, nets.dz, nets.recognizer, nets.au_critic):
        assert all(p.grad is None for p in frozen.parameters())


def test_g_reconstruction_and_cycle_are_zero_for_perfect_fakes():
    nets, batch = _nets(), _batch()
    fakes = losses.generate(nets, batch)
    batch.z_prior = nets.e(fakes.new).detach()  # E gives back exactly the codes G drew from
    terms, _ = _g_terms(nets, batch, losses.Fakes(fakes.z_real, batch.x.clone(), fakes.new))
    assert float(terms["reconstruction"].detach()) == 0.0 and float(terms["cycle"].detach()) == 0.0


def test_g_critic_terms_vanish_without_typical_faces_or_critic():
    nets, batch = _nets(au_critic=False), _batch(typical=(False,) * N)
    terms, r_logits = _g_terms(nets, batch)
    assert r_logits is None and float(terms["recognizer"]) == 0.0 and float(terms["au_critic"]) == 0.0
    assert not terms["recognizer"].requires_grad and not terms["au_critic"].requires_grad  # not in G's graph


def test_g_au_critic_term_is_zero_when_the_critic_reads_the_requested_aus():
    nets, batch = _nets(), _batch(typical=(False,) * N)  # no recognizer read: the critic's shift is gen's first draw
    fakes = losses.generate(nets, batch)
    with torch.no_grad():
        read = read_aus(nets.au_critic, random_shift_flip(fakes.new, torch.Generator().manual_seed(7)))
    batch.cond_new[:, -len(AUS):] = read
    terms, _ = _g_terms(nets, batch, fakes, seed=7)
    assert float(terms["au_critic"].detach()) == 0.0


def test_g_expression_critics_judge_only_typical_faces():
    nets, a, b = _nets(), _batch(), _batch()
    nets.d.eval()  # spectral norm's power iteration would move D between the two reads
    b.cond_new[2:, : len(EXPRESSIONS)] = torch.eye(len(EXPRESSIONS))[[6, 7]]  # the atypical faces' expression
    fakes = losses.generate(nets, a)
    ta, _ = _g_terms(nets, a, fakes)
    tb, _ = _g_terms(nets, b, fakes)
    # Only typical-AU faces are judged for their expression: changing the others' changes nothing.
    assert torch.equal(ta["expression"], tb["expression"]) and torch.equal(ta["recognizer"], tb["recognizer"])
    b.cond_new[:1, : len(EXPRESSIONS)] = torch.eye(len(EXPRESSIONS))[[7]]  # a typical face's: both change
    tc, _ = _g_terms(nets, b, fakes)
    assert not torch.equal(tc["expression"], ta["expression"]) and not torch.equal(tc["recognizer"], ta["recognizer"])


# ---------------------------------------------------------------- weights and sum

def test_total_weighs_in_order_and_counts_an_unweighted_term_once():
    a, b, c = torch.tensor(1.5), torch.tensor(0.25), torch.tensor(3.0)
    assert torch.equal(losses.total({"a": a, "b": b, "c": c}, {"b": 4.0, "c": 0.5}), a + 4.0 * b + 0.5 * c)
    assert torch.equal(losses.total({"a": a}, {}), a)


def test_every_term_but_the_adversarial_one_has_a_weight():
    tc = GeneratorTrainConfig(recognizer_warmup=100)
    assert set(D_TERMS) - set(d_loss_weights(tc)) == {"adversarial"}
    assert set(G_TERMS) - set(g_loss_weights(tc, 0)) == {"adversarial"}
    assert g_loss_weights(tc, 0)["recognizer"] == 0.0  # warm-up: G learns faces first
    assert g_loss_weights(tc, 50)["recognizer"] == tc.recognizer_weight / 2
    assert g_loss_weights(tc, 10**6)["recognizer"] == tc.recognizer_weight


def test_synthetic_conditions_mark_redrawn_aus_as_atypical():
    n = 16
    data = GeneratorData(images=torch.zeros(n, 48, 48, dtype=torch.uint8), targets=torch.eye(8)[torch.arange(n) % 8],
                         aus=torch.rand(n, len(AUS)), au_known=torch.ones(n, dtype=torch.bool),
                         by_class=[torch.tensor([k, k + 8]) for k in range(8)], class_aus={})
    for perturb, expected in ((0.0, True), (1.0, False)):
        cond, typical = synthetic_conditions(data, 32, torch.Generator().manual_seed(0), len(AUS), perturb)
        assert cond.shape == (32, TINY_GENERATOR.cond_dim) and bool(typical.all() if expected else (~typical).all())


# ---------------------------------------------------------------- recognizer and AU regressor

def test_recognizer_loss_is_small_when_right_and_trains_the_fer2013_head_only_with_labels():
    targets = torch.eye(len(EXPRESSIONS))[[0, 1, 2, 3]]
    assert float(recognizer_loss(20 * targets, None, targets)) < 1e-6
    net = RecognizerNet(RecognizerConfig(widths=(8,), depths=(1,), embed_dim=8)).train()
    logits8, logits7 = net(torch.randn(4, 1, 48, 48))
    for labels, head_moves in ((torch.tensor([1, -1, 2, 0]), True), (torch.full((4,), -1), False)):
        loss = recognizer_loss(logits8, logits7, targets, labels, torch.ones(8), 0.5)
        assert math.isfinite(float(loss.detach())) and _grads(loss, net.features) > 0
        # With no FER2013 label the head stays in the graph (DDP) with a zero gradient.
        grads = torch.autograd.grad(loss, list(net.fer2013_head.parameters()), retain_graph=True)
        assert (sum(float(g.abs().sum()) for g in grads) > 0) is head_moves


def test_au_regressor_batch_and_step():
    crops = torch.randint(0, 256, (6, 48, 48), dtype=torch.uint8)
    x = au_regressor_batch(crops, torch.Generator().manual_seed(0), augment=0.0)
    plain = crops.float().div(255).unsqueeze(1)
    assert all(torch.allclose(x[i], plain[i], atol=1e-6) or torch.allclose(x[i], plain[i].flip(-1), atol=1e-6)
               for i in range(6))  # mirror only
    x = au_regressor_batch(crops, torch.Generator().manual_seed(0), augment=1.0)
    assert x.min() >= 0 and x.max() <= 1
    torch.manual_seed(0)
    net = RecognizerNet(TINY_AU_CRITIC)
    before = RecognizerNet(TINY_AU_CRITIC)
    ema_update(before, net, 0.0)  # a copy of the weights
    opt = torch.optim.SGD(net.parameters(), lr=0.1)
    loss = au_regressor_step(net, opt, x, torch.rand(6, len(AUS)), torch.autocast("cpu", enabled=False), "cpu")
    assert math.isfinite(float(loss.detach()))
    assert any(not torch.equal(p, q) for p, q in zip(net.parameters(), before.parameters()))
