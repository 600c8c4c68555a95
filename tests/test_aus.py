import numpy as np
import pytest

from core.face.au_calibration import ALIGN_MIRROR, symmetric_template
from core.face.aus import intensities_from_raw, load_calibration, measure_aus, measure_aus_crops, similarity_3d
from core.labels import AU_NAMES, AUS, EXPRESSIONS, PROTOTYPE_AUS
from core.metrics import roc_auc


def _rotation(a, b, c):
    rx = np.array([[1, 0, 0], [0, np.cos(a), -np.sin(a)], [0, np.sin(a), np.cos(a)]])
    ry = np.array([[np.cos(b), 0, np.sin(b)], [0, 1, 0], [-np.sin(b), 0, np.cos(b)]])
    rz = np.array([[np.cos(c), -np.sin(c), 0], [np.sin(c), np.cos(c), 0], [0, 0, 1]])
    return rz @ ry @ rx


def test_names_are_defined_once_and_cover_the_prototypes():
    assert len(AUS) >= 12 and len(set(AUS)) == len(AUS)
    assert set(AU_NAMES) == set(AUS)
    assert all(set(units) <= set(AUS) for units in PROTOTYPE_AUS.values())


def test_similarity_3d_recovers_a_known_transform():
    rng = np.random.default_rng(0)
    src = rng.normal(size=(30, 3))
    rotation = _rotation(0.2, -0.4, 0.1)
    dst = 2.5 * src @ rotation.T + np.array([1.0, 2.0, 3.0])
    scale, r, t = similarity_3d(src, dst)
    assert scale == pytest.approx(2.5) and np.allclose(r, rotation) and np.allclose(t, [1, 2, 3])


def test_aus_do_not_change_with_head_pose_or_face_size():
    calibration = load_calibration()
    face = np.random.default_rng(1).normal(24, 8, (478, 3))  # the pose fit is equivariant for any points
    moved = 3.7 * face @ _rotation(0.15, 0.3, -0.2).T + np.array([200.0, 150.0, 5.0])
    assert np.allclose(measure_aus(face, calibration), measure_aus(moved, calibration), atol=1e-6)


def test_intensities_are_clipped_to_the_unit_interval():
    calibration = {"zero": np.zeros(len(AUS)), "one": np.full(len(AUS), 2.0)}
    raw = np.linspace(-3, 5, len(AUS))
    values = intensities_from_raw(raw, calibration)
    assert values.min() >= 0 and values.max() <= 1 and values[-1] == 1 and values[0] == 0


def test_missing_landmarks_give_nan():
    assert np.isnan(measure_aus(np.full((478, 3), np.nan))).all()


def test_roc_auc_known_values():
    assert roc_auc(np.array([3.0, 4.0]), np.array([1.0, 2.0])) == 1.0
    assert roc_auc(np.array([1.0]), np.array([1.0])) == 0.5
    assert roc_auc(np.array([1.0, 3.0]), np.array([2.0])) == 0.5


@pytest.mark.integration
def test_aus_of_fer_faces_follow_the_prototypes(fer_test):
    happy = np.flatnonzero(fer_test.ferplus_label == EXPRESSIONS.index("happiness"))[:60]
    neutral = np.flatnonzero(fer_test.ferplus_label == EXPRESSIONS.index("neutral"))[:60]
    surprised = np.flatnonzero(fer_test.ferplus_label == EXPRESSIONS.index("surprise"))[:60]
    aus = measure_aus_crops(fer_test.images[np.concatenate([happy, neutral, surprised])])
    assert aus.shape == (180, len(AUS))
    h, n, s = aus[:60], aus[60:120], aus[120:]
    i12, i26, i25 = AUS.index("AU12"), AUS.index("AU26"), AUS.index("AU25")
    assert np.nanmean(h[:, i12]) > np.nanmean(n[:, i12]) + 0.1
    assert np.nanmean(s[:, i26]) > np.nanmean(n[:, i26]) + 0.1
    assert np.nanmean(s[:, i25]) > np.nanmean(n[:, i25]) + 0.1
    blank = measure_aus_crops(np.full((2, 48, 48), 128, np.uint8))
    assert np.isnan(blank).all()


def test_the_frontal_template_is_its_own_mirror_image():
    template = load_calibration()["template"]
    mirrored = template[list(ALIGN_MIRROR)].copy()
    centre = template[[i for i, j in enumerate(ALIGN_MIRROR) if i == j], 0].mean()
    mirrored[:, 0] = 2 * centre - mirrored[:, 0]
    np.testing.assert_allclose(mirrored, template, atol=1e-3)  # no roll: one-sided AUs read the face, not a tilt
    tilted = template + np.array([0.0, 0.05, 0.0]) * (template[:, :1] - centre)
    np.testing.assert_allclose(symmetric_template(tilted)[:, 1], symmetric_template(template)[:, 1], atol=1e-3)


@pytest.mark.integration
def test_aus_of_a_mirrored_face_agree_with_the_face(fer_test):
    from scipy.stats import spearmanr

    crops = fer_test.images[:300]
    aus = measure_aus_crops(crops)
    mirrored = measure_aus_crops(np.ascontiguousarray(crops[:, :, ::-1]))
    found = np.isfinite(aus[:, 0]) & np.isfinite(mirrored[:, 0])
    rho = {name: spearmanr(aus[found, k], mirrored[found, k]).statistic for k, name in enumerate(AUS)}
    # A mirror image is the same face: every AU, one-sided AU14 included (it read -0.09 with a tilted template).
    assert all(value > 0.3 for value in rho.values()), rho
    assert np.median(list(rho.values())) > 0.8, rho


@pytest.mark.integration
def test_recognizer_reports_aus(recognizer, grace_hopper):
    face = recognizer.predict(grace_hopper)[0]
    assert set(face.aus) == set(AUS) and all(0 <= v <= 1 for v in face.aus.values())


def test_measured_antagonists_are_never_both_on():
    import torch

    from core.face.aus import consistent_aus

    aus = np.zeros((2, len(AUS)))
    aus[0, AUS.index("AU01")], aus[0, AUS.index("AU04")] = 0.7, 0.3
    aus[1, AUS.index("AU01")], aus[1, AUS.index("AU04")] = 0.2, 0.9
    for out in (consistent_aus(aus), consistent_aus(torch.tensor(aus)).numpy()):
        assert out[0, AUS.index("AU01")] == pytest.approx(0.7) and out[0, AUS.index("AU04")] == 0
        assert out[1, AUS.index("AU01")] == 0 and out[1, AUS.index("AU04")] == pytest.approx(0.9)


def test_raw_measurements_equal_the_pair_by_pair_reading():
    """The gathered subtraction gives the very numbers the mean of each left/right pair gives."""
    from core.face import aus

    rng = np.random.default_rng(0)
    for _ in range(50):
        frontal = rng.normal(0, 20, (478, 3)) + 24
        y = frontal[:, 1]
        got = dict(zip(aus.AUS, aus.raw_measurements(frontal)))
        assert got["AU01"] == float(np.mean([y[e] - y[b] for e, b in zip(aus.EYE_INNER, aus.BROW_INNER)]))
        assert got["AU05"] == float(np.mean([y[i] - y[u] for u, i in zip(aus.UPPER_LID, aus.IRIS)]))
        assert got["AU09"] == float(np.mean([y[aus.NOSE_TIP] - y[w] for w in aus.NOSE_WING]))
        centre = (y[aus.LIP_UPPER_INNER] + y[aus.LIP_LOWER_INNER]) / 2
        assert got["AU12"] == float(np.mean([centre - y[c] for c in aus.MOUTH_CORNER]))
        assert got["AU45"] == -float(np.mean([y[lo] - y[up] for up, lo in zip(aus.UPPER_LID, aus.LOWER_LID)]))
