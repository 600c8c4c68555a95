"""Each AU of the motion model moves only its own face part; the measure of what an AU edit changes elsewhere."""

from __future__ import annotations

import numpy as np
import pytest

from core.evaluation.edit_locality import band_mask, off_region, off_region_change
from core.labels import AU_REGIONS, AUS, UPPER_FACE_AUS
from core.models.motion import FACE_LINES, MotionModel, region_masks


@pytest.fixture(scope="module")
def shipped():
    return MotionModel.load()


def _lines(base):
    return {name: base[list(points), 1].mean() for name, points in FACE_LINES.items()}


def test_region_masks_keep_each_au_to_its_face_part(shipped):
    base = shipped.base
    lines, y = _lines(base), base[:, 1]
    masks = region_masks(base, 1.0)
    forehead, chin = y < lines["brow"] - 3, y > lines["mouth"] + 3
    mouth_corners = [61, 291]
    for k, au in enumerate(AUS):
        region = AU_REGIONS[au]
        if region == "mouth":
            assert masks[k, forehead].max() < 1e-3, au
            assert masks[k, mouth_corners].min() > 0.99, au
        if region in ("brows", "eyes"):
            assert masks[k, chin].max() < 1e-3, au
    assert masks[AUS.index("AU01"), 10] > 0.99  # the top of the forehead moves with the brows
    assert 0.0 <= masks.min() and masks.max() <= 1.0


def test_no_locality_leaves_the_fitted_rows_as_they_are(shipped):
    masks = region_masks(shipped.base, 1.0)
    # a smooth fade, not a cut: some points are partly in (the warp through them must not tear)
    assert ((masks > 0.05) & (masks < 0.95)).any()


def test_the_shipped_model_moves_no_forehead_for_a_mouth_au(shipped):
    y = shipped.base[:, 1]
    forehead = y < _lines(shipped.base)["brow"] - 3
    for au in ("AU12", "AU25", "AU26"):
        row = shipped.basis[AUS.index(au)]
        assert np.linalg.norm(row[forehead, :2], axis=1).max() < 0.01, au  # template units (48-px frame)
        assert np.linalg.norm(row[:, :2], axis=1).max() > 0.5, au  # ... while it moves the mouth


def test_upper_face_aus_are_the_brows_eyes_and_cheeks():
    assert set(UPPER_FACE_AUS) == {a for a in AUS if AU_REGIONS[a] in ("brows", "eyes", "cheeks")}
    assert "AU12" not in UPPER_FACE_AUS and "AU04" in UPPER_FACE_AUS


def test_off_region_change_sees_only_its_band():
    landmarks = np.zeros((478, 3), np.float32)
    landmarks[[105, 334], 1] = 40  # brows at row 40 of a 100-px face box (0..100)
    landmarks[0, 1] = 70  # upper lip at row 70
    box = (0, 0, 100, 100)
    before = np.full((100, 100, 3), 120, np.uint8)
    mouth_edit = before.copy()
    mouth_edit[75:90] = 160  # below the upper lip
    assert off_region("AU12") == "forehead" and off_region("AU04") == "chin" and off_region("AU06") is None
    assert off_region_change(before, mouth_edit, box, landmarks, "AU12") == 0.0
    assert off_region_change(before, mouth_edit, box, landmarks, "AU04") > 0
    forehead = band_mask((100, 100), box, landmarks, "forehead")
    assert forehead[:36].all() and not forehead[37:].any()  # above the brows, less a 4% margin
    assert np.isnan(off_region_change(before, mouth_edit, box, landmarks, "AU06"))


def test_set_motion_model_replaces_the_shared_model_and_its_warp():
    import core

    shipped = core.get_motion_model()
    other = MotionModel.load()  # another object of the same file
    try:
        core.set_motion_model(other)
        assert core.get_motion_model() is other and core.get_au_warp().motion is other
    finally:
        core.set_motion_model(shipped)
    assert core.get_au_warp().motion is shipped
