import numpy as np
import pytest

from core.benchmarks.synth import bench_synth
from core.evaluation.synthesis import (
    au_control,
    controllability,
    expression_sliders,
    identity,
    per_seed_rho,
    same_person_rank1,
)
from core.labels import AUS, EXPRESSIONS
from core.metrics import frechet_distance


def test_frechet_distance_of_known_gaussians():
    rng = np.random.default_rng(0)
    a = rng.normal(0, 1, (4000, 3))
    b = rng.normal(0, 1, (4000, 3)) + np.array([2.0, 0, 0])
    assert frechet_distance(a, a) == pytest.approx(0, abs=1e-6)
    assert frechet_distance(a, b) == pytest.approx(4.0, rel=0.1)


@pytest.mark.integration
def test_synthesis_metrics_run_on_a_tiny_generator(tiny_synthesizer, recognizer):
    c = controllability(tiny_synthesizer, recognizer, seeds=3)
    assert set(c["per_class"]) == set(EXPRESSIONS) and 0 <= c["overall"] <= 1
    a = au_control(tiny_synthesizer, seeds=2, steps=3)
    assert set(a) == set(AUS)
    assert {"rho_per_seed_median", "mean_rise", "same_person_rank1"} <= set(a["AU12"])
    e = expression_sliders(tiny_synthesizer, recognizer, seeds=2, steps=3)
    assert set(e) == set(EXPRESSIONS) - {"neutral"} and all(-1 <= r["rho_per_seed_median"] <= 1 for r in e.values())
    i = identity(tiny_synthesizer, seeds=3)
    assert i["ratio"] > 0
    b = bench_synth(runs=4, warmup=1, synthesizer=tiny_synthesizer)
    assert b["generate_ms"]["median"] > 0 and b["edit_ms"]["n"] == 2


def test_per_seed_rho_sees_single_faces_that_do_not_move():
    values = np.linspace(0, 1, 4)
    measured = np.array([[0.0, 0.5], [0.1, 0.5], [0.2, 0.5], [0.3, 0.5]])  # seed 0 rises, seed 1 never moves
    rho = per_seed_rho(values, measured)
    assert rho[0] == pytest.approx(1.0) and rho[1] == 0.0
    assert np.isnan(per_seed_rho(values, np.full((4, 1), np.nan))[0])  # no mesh found: no verdict


def test_same_person_rank1_tells_a_sweep_that_keeps_people_from_one_that_swaps_them():
    rng = np.random.default_rng(0)
    people = [rng.integers(0, 256, (48, 48), dtype=np.uint8) for _ in range(6)]
    slightly = [np.clip(p.astype(int) + rng.integers(-8, 9, p.shape), 0, 255).astype(np.uint8) for p in people]
    assert same_person_rank1(people, slightly) == 1.0
    assert same_person_rank1(people, slightly[1:] + slightly[:1]) == 0.0  # every face became the next person


def test_the_two_sample_test_tells_different_sets_apart_and_not_the_same_one():
    from core.evaluation.realism import two_sample_test

    rng = np.random.default_rng(0)
    smooth = np.clip(rng.normal(128, 20, (96, 1, 1)) + np.zeros((96, 24, 24)), 0, 255).astype(np.uint8)
    noisy = rng.integers(0, 256, (96, 24, 24), dtype=np.uint8)
    assert two_sample_test(smooth, noisy, seed=0, epochs=1, min_steps=40)["accuracy"] > 0.9
    same = two_sample_test(noisy[:48], noisy[48:], seed=0, epochs=1, min_steps=40)
    assert 0.25 <= same["accuracy"] <= 0.75 and same["held_out_per_set"] == 24
    run = dict(seed=1, epochs=1, min_steps=2)
    assert two_sample_test(noisy, smooth, **run) == two_sample_test(noisy, smooth, **run)  # deterministic


def test_class_matched_tests_give_both_sides_the_same_class_mix():
    from core.evaluation.realism import class_matched_tests

    rng = np.random.default_rng(0)
    noisy = rng.integers(0, 256, (60, 24, 24), dtype=np.uint8)
    smooth = np.clip(rng.normal(128, 20, (50, 1, 1)) + np.zeros((50, 24, 24)), 0, 255).astype(np.uint8)
    run = dict(seeds=(0,), epochs=1, min_steps=40)
    # a class only one side has is left out, and each class is cut to its smaller count
    out = class_matched_tests({"anger": noisy[:40], "fear": noisy[40:]}, {"anger": smooth[:30], "joy": smooth}, **run)
    assert out["faces_per_class"] == {"anger": 30, "fear": 0} and out["train_per_set"] == 15
    assert out["accuracy"] > 0.9  # noise against smooth faces
    same = class_matched_tests({"anger": noisy[:30]}, {"anger": noisy[30:]}, **run)
    assert 0.2 <= same["accuracy"] <= 0.8
    with pytest.raises(ValueError):
        class_matched_tests({"fear": noisy}, {"anger": smooth}, **run)


def test_edit_critics_sets_how_many_critics_each_realism_figure_takes(monkeypatch):
    """--edit-critics N reaches the expression part as seeds 0..N-1; without it the realism default stands."""
    import core.evaluation.edit as edit
    from core.evaluate_synth import build_parser

    seen = []
    monkeypatch.setattr(edit, "Bench", lambda *a, **k: type("B", (), {"photos": [], "refused": {}})())
    monkeypatch.setattr(edit, "part_expression", lambda bench, strengths, critic=None: seen.append(critic) or {})
    for argv, expected in ((["--edit-critics", "5"], {"seeds": (0, 1, 2, 3, 4)}), ([], None)):
        args = build_parser().parse_args(["--data", "unused", *argv])
        edit.evaluate("unused", parts=("expression",), critics=args.edit_critics)
        assert seen.pop() == expected
    with pytest.raises(SystemExit):
        build_parser().parse_args(["--data", "unused", "--edit-critics", "0"])
