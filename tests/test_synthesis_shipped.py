"""The shipped generator, end to end with the shipped recognizer and the AU measurement.

Smaller versions of the acceptance measurements (python -m core.evaluate_synth runs the full ones):
they catch a broken export, a config/weights mismatch or a generator that ignores its controls.
"""

import numpy as np
import pytest

from core.labels import AUS, EXPRESSIONS

pytestmark = [pytest.mark.integration, pytest.mark.slow]


@pytest.fixture(scope="module")
def synth():
    from core import get_synthesizer

    return get_synthesizer()


def test_shipped_generator_is_registered_and_verified(synth):
    from core.weights import REGISTRY, WEIGHTS_DIR, sha256_of

    info = REGISTRY["generator"]
    assert sha256_of(WEIGHTS_DIR / info.file) == info.sha256
    assert (WEIGHTS_DIR / info.file).stat().st_size < 10 * 2**20
    assert synth.source == "shipped:generator"


def test_same_seed_same_faces_and_new_seeds_new_people(synth):
    a = synth.generate(expression={"happiness": 1.0}, seed=7, n=4)
    b = synth.generate(expression={"happiness": 1.0}, seed=7, n=4)
    c = synth.generate(expression={"happiness": 1.0}, seed=8, n=4)
    assert all(np.array_equal(x, y) for x, y in zip(a, b))
    assert all(x.shape == (48, 48) and x.dtype == np.uint8 for x in a)
    assert np.abs(np.stack(a).astype(int) - np.stack(c).astype(int)).mean() > 5


def test_recognizer_reads_the_requested_expressions(synth, recognizer):
    hits = []
    for k, name in enumerate(EXPRESSIONS):
        faces = np.stack(synth.generate(expression={name: 1.0}, seed=500 + k, n=16))
        hits.append((recognizer.predict_crops(faces).argmax(axis=1) == k).mean())
    assert np.mean(hits) >= 0.7, dict(zip(EXPRESSIONS, hits))


@pytest.mark.parametrize("warp_aus", [False, True])  # G alone, and G with the motion model's warp
@pytest.mark.parametrize("au", ["AU02", "AU12", "AU14", "AU26"])
def test_au_slider_raises_the_measured_au(synth, au, warp_aus):
    from core.face.aus import measure_aus_crops

    low = measure_aus_crops(np.stack(synth.generate({"neutral": 1.0}, {au: 0.0}, seed=900, n=12, warp_aus=warp_aus)))
    high = measure_aus_crops(np.stack(synth.generate({"neutral": 1.0}, {au: 1.0}, seed=900, n=12, warp_aus=warp_aus)))
    i = AUS.index(au)
    assert np.nanmean(high[:, i]) > np.nanmean(low[:, i]) + 0.05


def test_edit_keeps_the_person_better_than_another_seed(synth, grace_hopper):
    face = synth.encode_face(grace_hopper)
    edited = synth.edit_crop(face, expression={"surprise": 1.0})
    other = synth.generate(expression={"surprise": 1.0}, seed=3)[0]
    own = float(np.linalg.norm(synth.encode(edited[None])[0] - face.code))
    stranger = float(np.linalg.norm(synth.encode(other[None])[0] - face.code))
    assert own < stranger
