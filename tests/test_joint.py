import copy

import numpy as np
import pytest
import torch

from core.errors import InputError
from core.models.recognizer import RecognizerConfig, RecognizerNet
from core.recognizer import Recognizer
from core.training.finetune import fine_tune, split_train_valid
from core.training.joint import JointConfig, JointState, intra_class_loss, pseudo_label_targets, run_joint

TINY_R = RecognizerConfig(widths=(8, 16), depths=(1, 1), embed_dim=16, dropout=0.0)


def test_rdbp_stops_gradient_into_real_features():
    real = torch.randn(6, 4, requires_grad=True)
    synth = torch.randn(4, 4, requires_grad=True)
    real_labels = torch.tensor([0, 0, 1, 1, 2, 2])
    synth_labels = torch.tensor([0, 1, 1, 3])  # class 3 has no real face and no centre: skipped
    loss = intra_class_loss(real, real_labels, synth, synth_labels, rdbp=True)
    loss.backward()
    assert real.grad is None or torch.count_nonzero(real.grad) == 0
    assert torch.count_nonzero(synth.grad[:3]) > 0 and torch.count_nonzero(synth.grad[3]) == 0
    r, s = torch.nn.functional.normalize(real, dim=1), torch.nn.functional.normalize(synth, dim=1)
    expected = torch.stack([
        (s[0] - r[:2].mean(0)).pow(2).sum(),
        (s[1:3] - r[2:4].mean(0)).pow(2).sum(1).mean(),
    ]).mean()
    assert torch.allclose(loss, expected)
    # Scale-free: R cannot lower it by shrinking its features.
    assert torch.allclose(intra_class_loss(real * 0.01, real_labels, synth * 0.01, synth_labels), loss, atol=1e-6)

    real.grad = synth.grad = None
    intra_class_loss(real, real_labels, synth, synth_labels, rdbp=False).backward()
    assert torch.count_nonzero(real.grad) > 0  # without RDBP the real branch is pulled too


def test_pseudo_labels():
    probs = torch.tensor([[0.9, 0.1] + [0.0] * 6, [0.05, 0.95] + [0.0] * 6])
    requested = torch.tensor([0, 0])
    targets, keep = pseudo_label_targets(probs, requested, "none", 0.5)
    assert keep.all() and targets[1, 0] == 1
    targets, keep = pseudo_label_targets(probs, requested, "filter", 0.5)
    assert keep.tolist() == [True, False]
    targets, keep = pseudo_label_targets(probs, requested, "rectify", 0.5)
    assert torch.allclose(targets[0, :2], torch.tensor([0.95, 0.05])) and keep.tolist() == [True, False]


def _data(n=48, seed=0):
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, 8, n)
    images = rng.integers(0, 256, (n, 48, 48)).astype(np.uint8)
    return images, np.eye(8, dtype=np.float32)[labels], labels


@pytest.mark.parametrize("update_generator", [True, False])
def test_joint_updates_the_generator_only_when_asked(tiny_synthesizer, update_generator):
    images, targets, _ = _data()
    g, d = copy.deepcopy(tiny_synthesizer.g), copy.deepcopy(tiny_synthesizer.d)
    before = {k: v.clone() for k, v in g.state_dict().items()}
    state = JointState(RecognizerNet(TINY_R), g, d, tiny_synthesizer.class_aus)
    config = JointConfig(steps=3, batch_real=8, batch_synth=8, intra_weight=0.1, update_generator=update_generator,
                         augment=0.0)
    run_joint(state, images, targets, config)
    changed = any(not torch.equal(before[k], v) for k, v in g.state_dict().items() if k in before)
    assert changed == update_generator
    assert len(state.history) == 3
    assert "loss_synth" in state.history[-1] or state.history[-1]["kept"] == 0  # all filtered: no synthetic loss


def test_generator_joins_at_generator_start_and_every_k_steps(tiny_synthesizer):
    images, targets, _ = _data()
    g, d = copy.deepcopy(tiny_synthesizer.g), copy.deepcopy(tiny_synthesizer.d)
    state = JointState(RecognizerNet(TINY_R), g, d, tiny_synthesizer.class_aus)
    snapshots = []
    config = JointConfig(steps=7, batch_real=8, batch_synth=8, intra_weight=0.1, generator_start=3, generator_every=2,
                         pseudo_labels="none", augment=0.0)
    run_joint(state, images, targets, config,
              on_step=lambda record: snapshots.append(next(iter(g.parameters())).detach().clone()))
    moved = [not torch.equal(a, b) for a, b in zip(snapshots, snapshots[1:])]  # did step i+1 change G?
    assert moved == [False, False, True, False, True, False]  # G changes at steps 3 and 5 (0-based)
    assert all("loss_intra" not in r for r in state.history[:3]) and "loss_intra" in state.history[3]
    assert all("loss_adv" in r for r in state.history[3::2]) and "loss_adv" not in state.history[4]
    with pytest.raises(ValueError):
        JointConfig(generator_every=0)


def test_frozen_stages_keep_their_weights_and_statistics(tiny_synthesizer):
    images, targets, _ = _data()
    r = RecognizerNet(TINY_R)
    before = {k: v.clone() for k, v in r.state_dict().items()}
    frozen = {f"features.{k}" for k, _ in r.stages(1).state_dict().items()}  # conv 1, its norm, the pooling
    state = JointState(r, copy.deepcopy(tiny_synthesizer.g), copy.deepcopy(tiny_synthesizer.d), tiny_synthesizer.class_aus)
    run_joint(state, images, targets, JointConfig(steps=3, batch_real=8, batch_synth=8, intra_weight=0.1, frozen_stages=1))
    after = r.state_dict()
    assert frozen and all(torch.equal(before[k], after[k]) for k in frozen)  # weights and running statistics
    assert not torch.equal(before["features.2.0.weight"], after["features.2.0.weight"])  # the second stage learns
    assert all(p.requires_grad for p in r.parameters())  # the net leaves as trainable as it came
    with pytest.raises(ValueError):
        JointConfig(frozen_stages=-1)


def test_recognizer_only_and_early_stop():
    images, targets, _ = _data()
    state = JointState(RecognizerNet(TINY_R))
    calls = []
    run_joint(state, images, targets, JointConfig(steps=10, batch_real=8, augment=0.0), on_step=calls.append,
              should_stop=lambda: len(calls) >= 4)
    assert len(calls) == 4 and "loss_synth" not in calls[-1]


def test_fine_tune_returns_new_models_and_leaves_the_old_ones(tiny_synthesizer):
    recognizer = Recognizer(RecognizerNet(TINY_R), torch.device("cpu"))
    before = {k: v.clone() for k, v in recognizer.net.state_dict().items()}
    g_before = {k: v.clone() for k, v in tiny_synthesizer.g.state_dict().items()}
    images, _, labels = _data(16)
    names = [("neutral", "happy", "surprised", "sad", "angry", "disgusted", "scared", "contempt")[k] for k in labels]
    result = fine_tune(recognizer, tiny_synthesizer, list(images), names,
                       JointConfig(steps=2, batch_real=8, batch_synth=8, augment=0.0))
    assert result.recognizer is not recognizer and result.synthesizer is not tiny_synthesizer
    assert all(torch.equal(before[k], v) for k, v in recognizer.net.state_dict().items())
    assert all(torch.equal(g_before[k], v) for k, v in tiny_synthesizer.g.state_dict().items())
    assert len(result.history) == 2 and result.rejected == []
    with pytest.raises(InputError, match="labels"):
        fine_tune(recognizer, None, list(images), names[:3])
    with pytest.raises(InputError):
        fine_tune(recognizer, None, list(images[:2]), ["happy", "bored"])
    for bad, message in ((None, "class name or an index"), (2.7, "class name or an index"), (True, "class name"),
                         (8, "not between 0 and 7"), (-1, "not between 0 and 7")):
        with pytest.raises(InputError, match=message):
            fine_tune(recognizer, None, list(images[:2]), ["happy", bad])
    assert len(fine_tune(recognizer, None, list(images[:2]), [np.int64(1), 0], JointConfig(steps=1)).history) == 1


def test_fine_tune_reads_accuracy_for_the_curves():
    recognizer = Recognizer(RecognizerNet(TINY_R), torch.device("cpu"))
    images, _, labels = _data(16)
    result = fine_tune(recognizer, None, list(images[:12]), list(labels[:12]),
                       JointConfig(steps=7, batch_real=8, augment=0.0), valid=(images[12:], labels[12:]), eval_every=3)
    assert all(0 <= r["acc_real"] <= 1 for r in result.history)
    assert [r["step"] for r in result.history if "acc_valid" in r] == [3, 6, 7]  # every 3rd step and the last
    net = result.recognizer.net
    assert not net.training and all(p.requires_grad for p in net.parameters())  # reading left it as trained


def test_stratified_hold_out():
    labels = np.array([0] * 10 + [1] * 5 + [2] * 2)
    train, valid = split_train_valid(labels)
    assert set(train) | set(valid) == set(range(len(labels))) and not set(train) & set(valid)
    assert (labels[valid] == 0).sum() == 2 and (labels[valid] == 1).sum() == 1 and (labels[valid] == 2).sum() == 0
