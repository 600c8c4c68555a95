import numpy as np
import pytest
import torch

from core.errors import InputError, UnknownLabelError
from core.labels import AUS
from core.models.generator import (
    DiscriminatorNet,
    EncoderNet,
    GeneratorNet,
    LatentCriticNet,
    d_logistic_loss,
    g_nonsaturating_loss,
    lift_mouth_corner,
    make_condition,
    masked_mse,
)
from core.models.recognizer import RecognizerConfig, RecognizerNet
from core.synthesizer import NoFaceError
from tests.conftest import TINY_GENERATOR as TINY


def test_networks_have_the_documented_shapes():
    z, cond = torch.randn(3, 8), torch.rand(3, TINY.cond_dim)
    image = GeneratorNet(TINY)(z, cond)
    assert image.shape == (3, 1, 48, 48) and image.min() >= -1 and image.max() <= 1
    adv, expr, aus = DiscriminatorNet(TINY)(image)
    assert adv.shape == (3,) and expr.shape == (3, 8) and aus.shape == (3, len(AUS))
    assert EncoderNet(TINY)(image).shape == (3, 8)
    assert LatentCriticNet(TINY)(z).shape == (3,)


def test_condition_intensity_zero_is_neutral():
    expression = torch.eye(8)[[1, 2]]
    cond = make_condition(expression, torch.tensor([0.0, 1.0]), torch.zeros(2, len(AUS)))
    assert torch.allclose(cond[0, :8], torch.eye(8)[0]) and cond[0, 8] == 0
    assert torch.allclose(cond[1, :8], torch.eye(8)[2]) and cond[1, 8] == 1


def test_losses_prefer_the_right_answer():
    good, bad = torch.full((4,), 5.0), torch.full((4,), -5.0)
    assert d_logistic_loss(good, bad) < d_logistic_loss(bad, good)
    assert g_nonsaturating_loss(good) < g_nonsaturating_loss(bad)
    pred, target = torch.zeros(3, 2), torch.ones(3, 2)
    assert masked_mse(pred, target, torch.tensor([False, False, False])) == 0
    assert masked_mse(pred, target, torch.tensor([True, False, False])) == 1


def test_same_seed_same_face_and_n_faces(tiny_synthesizer):
    s = tiny_synthesizer
    a = s.generate(expression={"happiness": 1.0}, aus={"AU12": 0.8}, seed=0, n=4, warp_aus=False)
    b = s.generate(expression={"happy": 1.0}, aus={"au12": 0.8}, seed=0, n=4, warp_aus=False)
    assert len(a) == 4 and a[0].shape == (48, 48) and a[0].dtype == np.uint8
    assert all(np.array_equal(x, y) for x, y in zip(a, b))
    assert not np.array_equal(a[0], s.generate(expression="happiness", seed=1, n=1)[0])


@pytest.mark.parametrize("kwargs,error", [
    ({"expression": {"bored": 1.0}}, UnknownLabelError),
    ({"aus": {"AU99": 0.5}}, UnknownLabelError),
    ({"aus": {"AU12": float("nan")}}, InputError),
    ({"aus": {"AU12": 1.5}}, InputError),
    ({"intensity": -0.1}, InputError),
    ({"n": 0}, InputError),
    ({"n": 10_000}, InputError),
    ({"seed": "x"}, InputError),
    ({"guidance": float("inf")}, InputError),
])
def test_bad_requests_are_typed_errors(tiny_synthesizer, kwargs, error):
    with pytest.raises(error):
        tiny_synthesizer.generate(**kwargs)


def test_guidance_raises_the_recognizers_belief(tiny_synthesizer, monkeypatch):
    s = tiny_synthesizer
    net = RecognizerNet(RecognizerConfig(widths=(8, 16), depths=(1, 1), embed_dim=16)).eval()
    monkeypatch.setattr(s, "_recognizer", type("R", (), {"net": net})())
    cond = s._condition({"surprise": 1.0})
    target = cond[:, :8]
    z = s._identities(3, 4)

    def belief(codes):
        with torch.no_grad():
            logits, _ = net(((s.g(codes, cond.expand(len(codes), -1)) + 1) / 2 - 0.5) / 0.25)
        return (target * torch.log_softmax(logits, 1)).sum(1).mean()

    assert belief(s._guide(z, cond, target, 2.0)) > belief(z)


def test_morph_goes_from_neutral_to_target(tiny_synthesizer):
    frames = tiny_synthesizer.morph({"anger": 1.0}, seed=2, steps=4)
    assert len(frames) == 4 and all(f.shape == (48, 48) for f in frames)


@pytest.mark.integration
def test_edit_a_real_face_and_refuse_a_blank_one(tiny_synthesizer, grace_hopper):
    out = tiny_synthesizer.edit_crop(grace_hopper, expression={"happiness": 1.0})
    assert out.shape == (48, 48) and out.dtype == np.uint8
    with pytest.raises(NoFaceError):
        tiny_synthesizer.edit_crop(np.full((200, 200, 3), 128, np.uint8))
    with pytest.raises(NoFaceError):
        tiny_synthesizer.edit(np.full((200, 200, 3), 128, np.uint8))


def test_cycle_loss_and_recognizer_augmentation():
    from core.models.generator import latent_cycle_loss, random_shift_flip

    encoder = EncoderNet(TINY)
    x = (torch.rand(4, 1, 48, 48) * 2 - 1).requires_grad_(True)
    z = encoder(x).detach()
    assert float(latent_cycle_loss(encoder, x, z).detach()) == pytest.approx(0.0, abs=1e-6)
    moved = random_shift_flip(x, torch.Generator().manual_seed(0))
    assert moved.shape == x.shape
    moved.sum().backward()  # differentiable: G still learns through it
    assert x.grad is not None


def test_training_continues_from_exported_weights(tiny_synthesizer, tmp_path):
    from core.checkpoint import export_recognizer
    from core.models.recognizer import RecognizerConfig, RecognizerNet
    from core.training.generator import GeneratorTrainConfig, train_generator
    from tests.conftest import write_tiny_npz_dataset

    data = write_tiny_npz_dataset(tmp_path / "data", n=64)
    recognizer = tmp_path / "recognizer.safetensors"
    export_recognizer(recognizer, RecognizerNet(RecognizerConfig(widths=(8, 16), depths=(1, 1), embed_dim=16)))
    source = tiny_synthesizer.source
    tc = GeneratorTrainConfig(steps=8, batch_size=8, sample_every=0, log_every=2, amp=False)
    assert train_generator(data, tmp_path / "more", None, None, tc, recognizer_path=recognizer, device="cpu",
                           init=source)["step"] == 8  # the export was at step 6: two more steps


def test_lift_mouth_corner_moves_that_corner_up_and_nothing_else():
    from core.models.generator import CORNER_LIFT, MOUTH_CORNER_XY

    image = -torch.ones(2, 1, 48, 48)
    image[:, :, 38:, :] = 1.0  # a bright band below a horizontal edge through both mouth corners
    lifted = lift_mouth_corner(image, torch.tensor([0.0, 1.0]))
    assert torch.allclose(lifted[0], image[0], atol=1e-6)  # amount 0: unchanged
    x = round(MOUTH_CORNER_XY[0] * 48)
    edge = lambda column: int((column > 0).float().argmax())  # noqa: E731  first bright row
    assert edge(lifted[1, 0, :, x]) == 38 - round(CORNER_LIFT * 48)  # the edge rises by the full lift there
    assert edge(lifted[1, 0, :, 48 - x]) == 38  # the other corner stays
    assert torch.allclose(lifted[1, 0, :, 48 - x], image[1, 0, :, 48 - x], atol=0.05)


def test_au14_is_drawn_as_a_corner_lift_beyond_the_neutral_level(tiny_synthesizer):
    from core.models.generator import CORNER_RADIUS, MOUTH_CORNER_XY

    aus = {name: [0.2] * len(AUS) for name in tiny_synthesizer.class_aus}
    synth = type(tiny_synthesizer)(tiny_synthesizer.g, tiny_synthesizer.e, aus, tiny_synthesizer.device)
    faces = [np.stack(synth.generate("neutral", {"AU14": v}, seed=1, n=2, warp_aus=False)).astype(int)
             for v in (0.0, 0.2, 1.0)]
    assert np.array_equal(faces[0], faces[1])  # up to neutral's typical AU14: no lift, and G's input is the same
    changed = np.argwhere(np.abs(faces[2] - faces[1]).max(axis=0) > 0)
    assert len(changed)
    centre = np.array([MOUTH_CORNER_XY[1], MOUTH_CORNER_XY[0]]) * 48  # (row, column)
    assert np.linalg.norm(changed - centre, axis=1).max() < 4 * CORNER_RADIUS * 48  # only around that corner


def test_a_set_au_slider_beats_the_typical_value_of_its_antagonist(tiny_synthesizer):
    au01, au04 = AUS.index("AU01"), AUS.index("AU04")
    aus = {name: [0.0] * len(AUS) for name in tiny_synthesizer.class_aus}
    aus["neutral"][au01] = 0.3  # a typical inner-brow raise
    synth = type(tiny_synthesizer)(tiny_synthesizer.g, tiny_synthesizer.e, aus, tiny_synthesizer.device)
    offset = -len(AUS)
    typical = synth._condition({"neutral": 1.0})[0, offset:]
    assert typical[au01] == pytest.approx(0.3) and typical[au04] == 0
    lowered = synth._condition({"neutral": 1.0}, {"AU04": 0.1})[0, offset:]
    assert lowered[au04] == pytest.approx(0.1) and lowered[au01] == 0  # the slider wins though weaker
    both = synth._condition({"neutral": 1.0}, {"AU01": 0.2, "AU04": 0.6})[0, offset:]
    assert both[au04] == pytest.approx(0.6) and both[au01] == 0


def test_reexport_keeps_faces_and_halves_the_discriminator(tiny_synthesizer, tmp_path):
    from core.synthesizer import Synthesizer
    from core.train import main
    from core.weights import read_safetensors

    out = tmp_path / "g.safetensors"
    assert main(["export-generator", tiny_synthesizer.source, str(out)]) == 0
    tensors, meta = read_safetensors(out)
    assert meta["kind"] == "generator" and "class_aus" in meta and "step" in meta
    assert tensors["d.adv.bias"].dtype == torch.float16 and tensors["g.fc.weight"].dtype == torch.float32
    again = Synthesizer.load(path=out, device="cpu")
    assert all(np.array_equal(a, b) for a, b in zip(again.generate(seed=3, n=2), tiny_synthesizer.generate(seed=3, n=2)))


def test_an_expression_slider_alone_sets_how_much_of_it_the_face_shows(tiny_synthesizer):
    from core.synthesizer import expression_strength

    s = tiny_synthesizer
    assert torch.equal(s._condition({"happiness": 0.3}), s._condition({"happiness": 1.0}, intensity=0.3))
    assert torch.equal(s._condition({"happiness": 0.5, "surprise": 0.5}),
                       s._condition({"happiness": 1.0, "surprise": 1.0}))  # a mix, at full strength
    assert torch.equal(s._condition({"happiness": 0.6}, intensity=0.5), s._condition({"happiness": 0.3}))
    assert expression_strength({"neutral": 1.0, "happiness": 1.0}) == 0.5  # neutral dilutes
    assert expression_strength({"happy": 0.2, "happiness": 0.2}) == pytest.approx(0.4)  # synonyms add up
    assert expression_strength({"happiness": 0.0}) == 0.0 and expression_strength("anger") == 1.0
    faces = [s.generate({"anger": v}, seed=1)[0] for v in (0.0, 0.5, 1.0)]
    assert not np.array_equal(faces[0], faces[1]) and not np.array_equal(faces[1], faces[2])
