"""AU sliders on new faces: the drawn face warped by the motion model (core/synthesis/au_warp.py)."""

from __future__ import annotations

import numpy as np
import pytest


@pytest.fixture(scope="module")
def shipped():
    from core import get_synthesizer

    return get_synthesizer()


@pytest.mark.integration
def test_no_slider_and_no_mesh_leave_the_face_as_drawn():
    from core.synthesis.au_warp import AuWarp

    warp = AuWarp()
    faces = [np.full((48, 48), 128, np.uint8), np.random.default_rng(0).integers(0, 255, (48, 48), dtype=np.uint8)]
    assert all(a is b for a, b in zip(warp.apply(faces, {}), faces))  # nothing asked: nothing done
    out = warp.apply(faces, {"AU12": 1.0})
    assert warp.missed == 2 and all(np.array_equal(a, b) for a, b in zip(out, faces))  # no face: as drawn
    warp.close()


@pytest.mark.integration
def test_the_warp_carries_a_slider_further_and_keeps_the_person(shipped):
    from core.evaluation.lbp import lbp_histograms, rank1
    from core.face.aus import measure_aus_crops
    from core.labels import AUS

    seeds, k = 6, AUS.index("AU25")
    drawn = {v: shipped.generate("neutral", {"AU25": v}, seed=40, n=seeds, warp_aus=False) for v in (0.0, 1.0)}
    warped = {v: shipped.generate("neutral", {"AU25": v}, seed=40, n=seeds) for v in (0.0, 1.0)}
    rise = {name: measure_aus_crops(np.stack(faces[1.0]))[:, k] - measure_aus_crops(np.stack(faces[0.0]))[:, k]
            for name, faces in (("drawn", drawn), ("warped", warped))}
    # G alone parts the lips by 0.2 on average (docs/synthesis.md); the warp takes each face further
    assert np.nanmedian(rise["warped"]) > np.nanmedian(rise["drawn"]) + 0.1
    assert np.nanmin(rise["warped"]) > 0.15  # every face, not only the mean
    for before, after in zip(drawn[1.0], warped[1.0]):
        change = np.abs(before.astype(int) - after)
        # the change is at the mouth; the forehead (above the brows, rows < 12 of the 48-px frame) keeps G's pixels
        # (the motion model's AU25 moved it by about a pixel before its rows were kept to their face part)
        assert change[32:].max() > 10 and change[:10].max() <= 1
    ids = np.arange(seeds)
    gallery = np.stack([lbp_histograms(f) for f in drawn[1.0]])
    assert rank1(np.stack([lbp_histograms(f) for f in warped[1.0]]), ids, gallery, ids) == 1.0


@pytest.mark.integration
def test_morph_warps_every_frame_with_the_sliders(shipped):
    from core.face.aus import measure_aus_crops
    from core.labels import AUS

    frames = shipped.morph({"happiness": 1.0}, {"AU25": 1.0}, seed=3, steps=3)
    plain = shipped.morph({"happiness": 1.0}, {"AU25": 1.0}, seed=3, steps=3, warp_aus=False)
    assert len(frames) == 3
    lips = [measure_aus_crops(np.stack(faces))[:, AUS.index("AU25")] for faces in (frames, plain)]
    assert (lips[0] > lips[1]).all()  # each frame's lips parted further than G alone parts them


@pytest.mark.integration
def test_of_two_set_antagonist_sliders_the_warp_carries_only_the_one_g_draws(shipped):
    from core.synthesizer import settled_aus

    assert settled_aus({"AU01": 0.9, "AU04": 0.4, "AU12": 0.5}) == {"AU01": 0.9, "AU12": 0.5}
    assert settled_aus({"AU01": 0.2, "AU04": 0.4}) == {"AU04": 0.4}
    both = shipped.generate("neutral", {"AU01": 0.9, "AU04": 0.4}, seed=5, n=3)
    alone = shipped.generate("neutral", {"AU01": 0.9}, seed=5, n=3)
    assert all(np.array_equal(a, b) for a, b in zip(both, alone))  # G was conditioned on AU01 alone too


@pytest.mark.integration
def test_the_warp_is_shared_and_leaves_what_it_does_not_move_exactly_as_drawn(shipped):
    from core import get_au_warp, get_motion_model

    assert get_au_warp() is get_au_warp() and get_au_warp().motion is get_motion_model()
    assert shipped._photo_editor().motion is get_motion_model()
    drawn = shipped.generate("neutral", {"AU12": 1.0}, seed=11, n=4, warp_aus=False)
    warped = shipped.generate("neutral", {"AU12": 1.0}, seed=11, n=4)
    for before, after in zip(drawn, warped):
        same, change = before == after, np.abs(before.astype(int) - after)
        # outside the face's mask (the crop's corners) G's pixels exactly; the smile's change at the mouth
        assert min(same[:6, :6].mean(), same[:6, -6:].mean(), same[-6:, :6].mean(), same[-6:, -6:].mean()) > 0.85
        # (the motion model's AU12 row also moves the top of the face a little)
        assert change[32:40].mean() > 1.5 * change[:8].mean()
