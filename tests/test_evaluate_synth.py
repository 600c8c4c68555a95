import numpy as np
import pytest

from core.benchmarks.synth import bench_synth
from core.evaluation.synthesis import au_control, controllability, identity
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
    i = identity(tiny_synthesizer, seeds=3)
    assert i["ratio"] > 0
    b = bench_synth(runs=4, warmup=1, synthesizer=tiny_synthesizer)
    assert b["generate_ms"]["median"] > 0 and b["edit_ms"]["n"] == 2
