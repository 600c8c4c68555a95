"""Photo editing (issue 14): size and colour kept, background untouched, bad input refused, the
motion model's file round trip, and a face that already shows the expression barely moves."""

import numpy as np
import pytest

from core.errors import InputError


@pytest.fixture(scope="module")
def editor():
    from core.synthesis.photo_edit import PhotoEditor

    return PhotoEditor.load()


@pytest.fixture(scope="module")
def photo(grace_hopper):
    from core.face.images import load_image

    return load_image(grace_hopper)  # 600x512 colour portrait


def test_colour_photo_keeps_size_colour_and_background(editor, photo):
    from core.evaluation.edit import unchanged_outside

    result = editor.edit(photo, expression="surprise")
    out = result.image
    assert out.shape == photo.shape and out.dtype == np.uint8
    assert unchanged_outside(photo, out, result.faces[0].box) == 1.0  # nothing beyond the grown face box
    changed = (out != photo).any(axis=2)
    assert changed.mean() > 0.01  # the face did change
    # colour kept: the face's mean chroma moves by under 2 levels (only luminance is edited)
    import cv2

    ycc_in, ycc_out = (cv2.cvtColor(im, cv2.COLOR_RGB2YCrCb).astype(float) for im in (photo, out))
    assert np.abs(ycc_in[changed][:, 1:].mean(axis=0) - ycc_out[changed][:, 1:].mean(axis=0)).max() < 2.0


def test_grey_and_rgba_inputs_keep_their_size(editor, photo):
    grey = photo.mean(axis=2).astype(np.uint8)
    out = editor.edit(grey, expression="happiness").image
    assert out.shape == (*grey.shape, 3)
    assert (out[:, :, 0] == out[:, :, 1]).all() and (out[:, :, 1] == out[:, :, 2]).all()  # grey stays grey
    rgba = np.dstack([photo, np.full(photo.shape[:2], 255, np.uint8)])
    assert editor.edit(rgba, aus={"AU12": 0.8}).image.shape == photo.shape


def test_no_face_raises_a_clear_input_error(editor):
    from core.synthesizer import NoFaceError

    with pytest.raises(NoFaceError, match="no face"):
        editor.edit(np.full((240, 320, 3), 128, np.uint8), expression="happiness")


def test_bad_controls_raise_input_errors(editor, photo):
    with pytest.raises(InputError):
        editor.edit(photo, expression="boredom")
    with pytest.raises(InputError):
        editor.edit(photo, aus={"AU99": 0.5})
    with pytest.raises(InputError):
        editor.edit(photo, expression="happiness", faces="some")


def _face(box, landmarks):
    from core.face.detection import DetectedFace

    return DetectedFace(box, landmarks.astype(np.float32), 1.0, "mediapipe")


def test_tiny_border_and_profile_faces_are_refused(editor, photo):
    from core.synthesis.photo_edit import FaceAtBorderError, FaceTooSmallError, ProfileFaceError, check_face

    face = editor.detector.detect(photo)[0]
    template = editor.motion.template
    assert check_face(face, photo.shape, template) == []
    small = _face((0, 0, 30, 30), face.landmarks * 0.1)
    with pytest.raises(FaceTooSmallError):
        check_face(small, photo.shape, template)
    shifted = face.landmarks.copy()
    shifted[:, 0] -= face.box[2] - 10  # most of the face beyond the left edge
    with pytest.raises(FaceAtBorderError):
        check_face(_face(face.box, shifted), photo.shape, template)
    # the same mesh turned 70 degrees about the vertical axis
    centre = face.landmarks.mean(axis=0)
    a = np.radians(70)
    turn = np.array([[np.cos(a), 0, np.sin(a)], [0, 1, 0], [-np.sin(a), 0, np.cos(a)]])
    with pytest.raises(ProfileFaceError):
        check_face(_face(face.box, (face.landmarks - centre) @ turn.T + centre), photo.shape, template)


def test_motion_model_save_load_round_trip(editor, tmp_path):
    from core.models.motion import MotionModel

    path = tmp_path / "motion.safetensors"
    editor.motion.save(path)
    back = MotionModel.load(path)
    assert back.config == editor.motion.config
    for name in ("base", "basis", "class_aus", "class_upper", "template", "photo_gain"):
        np.testing.assert_allclose(getattr(back, name), getattr(editor.motion, name), rtol=1e-6, atol=1e-6)
    points = back.base * 4 + 50
    current, target = np.zeros(17), np.full(17, 0.5)
    np.testing.assert_allclose(back.predict(points, current, target), editor.motion.predict(points, current, target),
                               atol=1e-4)


def test_a_broad_smile_edited_to_happiness_barely_moves(editor):
    from core.labels import EXPRESSIONS

    motion = editor.motion
    happy = np.eye(len(EXPRESSIONS))[EXPRESSIONS.index("happiness")]
    points = motion.base * 4 + 50
    smiling = motion.class_upper[EXPRESSIONS.index("happiness")]  # already as happy as the target
    neutral = motion.class_aus[EXPRESSIONS.index("neutral")]
    still = motion.predict(points, smiling, motion.target_aus(smiling, happy))
    moved = motion.predict(points, neutral, motion.target_aus(neutral, happy))
    assert np.abs(still - points).max() < 0.05
    assert np.abs(moved - points)[:, :2].max() > 2.0


def test_smiling_photo_edited_to_happiness_changes_little(editor, fer_test):
    from core.evaluation.edit import as_photo, box_change
    from core.labels import EXPRESSIONS

    happy = np.flatnonzero(fer_test.ferplus_label == EXPRESSIONS.index("happiness"))[:8]
    changes = {"happiness": [], "surprise": []}
    for i in happy:
        photo = as_photo(fer_test.images[i])
        try:
            box = editor.detector.detect(photo)[0].box
            for name in changes:
                changes[name].append(box_change(photo, editor.edit(photo, expression=name).image, box))
        except (InputError, IndexError):
            continue
    assert len(changes["happiness"]) >= 4
    assert np.mean(changes["happiness"]) < 0.5 * np.mean(changes["surprise"])


def test_all_faces_edits_each_face(editor, photo):
    import cv2

    small = cv2.resize(photo, (photo.shape[1] // 2, photo.shape[0] // 2), interpolation=cv2.INTER_AREA)
    pair = np.hstack([small, small])
    result = editor.edit(pair, expression="happiness", faces="all")
    assert len(result.faces) == 2 and result.image.shape == pair.shape
    half = pair.shape[1] // 2
    for side in (slice(0, half), slice(half, None)):
        assert (result.image[:, side] != pair[:, side]).any()
    only = editor.edit(pair, expression="happiness")  # the largest face only
    assert len(only.faces) == 1


def test_edit_series_detects_once_and_matches_single_edits(editor, photo, monkeypatch):
    calls = []
    detect = editor.detector.detect
    monkeypatch.setattr(editor.detector, "detect", lambda rgb: calls.append(1) or detect(rgb))
    series = editor.edit_series(photo, [0.0, 0.5, 1.0], expression="surprise")
    assert len(calls) == 1 and len(series) == 3
    assert np.array_equal(series[2].image, editor.edit(photo, expression="surprise", intensity=1.0).image)
    change = [np.abs(r.image.astype(int) - photo).mean() for r in series]
    assert change[0] < change[1] < change[2]  # neutral -> target: the photo moves further at each step


def test_a_strong_blink_narrows_the_eye_without_folding(editor):
    """However far the lids are pushed, each upper lid point stays above the lower one facing it (the
    warp through them would fold otherwise) and the irises stay between the lids."""
    import copy

    from core.labels import AUS
    from core.models.motion import IRIS_CENTRES, LOWER_LIDS, UPPER_LIDS

    motion = copy.deepcopy(editor.motion)
    motion.photo_gain[AUS.index("AU45")] = 10.0  # far beyond a closed eye
    points = motion.base * 4 + 50
    current, target = np.zeros(len(AUS)), np.zeros(len(AUS))
    target[AUS.index("AU45")] = 1.0
    moved = motion.predict(points, current, target)
    gap = moved[list(LOWER_LIDS), 1] - moved[list(UPPER_LIDS), 1]
    assert gap.min() > 0 and gap.max() < (points[list(LOWER_LIDS), 1] - points[list(UPPER_LIDS), 1]).min()
    for iris, (up, low) in IRIS_CENTRES:
        assert moved[up, 1] < moved[iris, 1] < moved[low, 1]


def test_a_face_beyond_the_calibrated_range_moves_from_its_own_value(editor):
    """Eyes opened wider than any neutral face measure AU45 = 0 (clipped); asked to half close, they
    move further than an average face does, from where they really are."""
    from core.labels import AUS
    from core.models.motion import UPPER_LIDS

    motion, k = editor.motion, AUS.index("AU45")
    points = motion.base * 4 + 50
    wide = points.copy()
    wide[list(UPPER_LIDS), 1] -= 4.0  # upper lids raised by a unit of the 48-px frame
    target = np.zeros(len(AUS))
    target[k] = 0.5
    lids = list(UPPER_LIDS)
    closing = [(motion.predict(p, np.zeros(len(AUS)), target) - p)[lids, 1].mean() for p in (points, wide)]
    assert closing[1] > closing[0] + 1.0


def test_guidance_climbs_a_second_recognizer(editor):
    """Guidance follows the shipped edit_guide recognizer, not the one that reads the edits."""
    from core.weights import REGISTRY

    guide = editor.guide_recognizer
    assert guide is not editor.recognizer and guide.weights_sha256 == REGISTRY["edit_guide"].sha256


def test_the_default_edit_is_guided_in_proportion_to_how_far_it_moves(editor, photo):
    """Guidance is on by default for expressions, and does nothing where the edit does not move the face."""
    import torch

    default = editor.edit(photo, expression="anger").image
    assert np.array_equal(default, editor.edit(photo, expression="anger", guidance=10.0).image)
    assert not np.array_equal(default, editor.edit(photo, expression="anger", guidance=0.0).image)
    assert np.array_equal(editor.edit(photo, expression="anger", intensity=0.0).image,
                          editor.edit(photo, expression="anger", intensity=0.0, guidance=0.0).image)
    with torch.no_grad():  # a caller's no_grad does not break the guidance's gradient
        assert np.array_equal(editor.edit(photo, expression="anger").image, default)


def test_guidance_takes_no_step_where_the_guide_reads_the_class_already(editor, photo, monkeypatch):
    import core.synthesis.photo_edit as photo_edit

    monkeypatch.setattr(photo_edit, "CONFIDENT", 0.0)  # any reading is confident enough
    assert np.array_equal(editor.edit(photo, expression="anger").image,
                          editor.edit(photo, expression="anger", guidance=0.0).image)


def test_warp_only_aus_get_no_generator_change(editor, photo):
    """A slider edit of AU14 or AU12 alone is the warp alone: the generator's two draws share their condition, and
    its source draw is not moved by those AUs' motion (moving it left that motion in the difference, reversed)."""
    for au in ("AU14", "AU12"):
        whole = editor.edit(photo, aus={au: 1.0}).image.astype(int)
        warp = editor.edit(photo, aus={au: 1.0}, appearance=0.0).image.astype(int)
        assert np.abs(whole - warp).max() <= 2, au  # resampling and the colour round trip, nothing drawn
    # an AU the generator draws does add its change
    drawn = editor.edit(photo, aus={"AU04": 1.0}).image.astype(int)
    assert np.abs(drawn - editor.edit(photo, aus={"AU04": 1.0}, appearance=0.0).image.astype(int)).max() > 10


def test_the_expression_part_reports_the_edits_realism_against_real_faces_of_each_class(editor, data_dir):
    from core.evaluation.edit import Bench, part_expression

    bench = Bench(str(data_dir), editor, 4, seed=0)
    report = part_expression(bench, {"geometry_only": (0.0, 0.0)}, redetect=False, real_per_class=5,
                             critic=dict(seeds=(0,), epochs=1, min_steps=5))
    realism = report["geometry_only"]["realism_vs_real"]
    # class by class, each side the smaller count: 4 edits per class against 5 real faces of it
    assert realism["faces_per_class"] == {name: 4 for name in realism["faces_per_class"]}
    assert len(realism["faces_per_class"]) == 7 and 0.0 <= realism["accuracy"] <= 1.0
    assert report["realism_control"]["faces_per_class"] == {"neutral": 4}


def test_the_contact_sheet_shows_the_photo_and_its_seven_edits_in_two_rows(editor, tmp_path):
    from PIL import Image

    from core.evaluation.edit_sheet import FACE_SIDE, write_sheet

    info = write_sheet(editor, tmp_path / "sheet.png")
    sheet = np.asarray(Image.open(info["path"]))
    assert sheet.shape == (2 * FACE_SIDE, 8 * FACE_SIDE, 3) and len(info["columns"]) == 8
    cells = sheet.reshape(2, FACE_SIDE, 8, FACE_SIDE, 3)
    assert np.array_equal(cells[0, :, 0], cells[1, :, 0])  # the unedited photo heads both rows
    assert all(not np.array_equal(cells[0, :, 0], cells[r, :, c]) for r in (0, 1) for c in range(1, 8))


def test_an_expression_opens_the_mouth_only_a_little_beyond_the_faces_own():
    from core.labels import AUS
    from core.synthesis.expression_policy import MAX_MOUTH_OPENING, limit_mouth_opening

    target, current = np.full(len(AUS), 0.8), np.full(len(AUS), 0.1)
    current[AUS.index("AU26")] = np.nan  # not measured: from closed
    out = limit_mouth_opening(target, current, {})
    assert out[AUS.index("AU25")] == pytest.approx(0.1 + MAX_MOUTH_OPENING)
    assert out[AUS.index("AU26")] == pytest.approx(MAX_MOUTH_OPENING)
    assert np.delete(out, [AUS.index("AU25"), AUS.index("AU26")]).tolist() == [0.8] * (len(AUS) - 2)
    assert limit_mouth_opening(target, current, {"AU25": 0.8})[AUS.index("AU25")] == 0.8  # a slider set by name


def test_expression_edits_move_the_photo_without_the_slider_gains(editor, photo):
    motion = editor.motion
    face = editor.detector.detect(photo)[0]
    from core.face.aus import measure_aus

    current = measure_aus(face.landmarks)
    target = np.clip(current + 0.3, 0, 1)
    plain = motion.predict(face.landmarks, current, target, photo_gain=False)
    kept = motion.photo_gain
    try:
        motion.photo_gain = np.ones_like(kept)
        assert np.allclose(plain, motion.predict(face.landmarks, current, target))
    finally:
        motion.photo_gain = kept
    assert not np.allclose(plain, motion.predict(face.landmarks, current, target))  # the gains do move it further


def test_a_slider_changes_only_its_own_face_part(editor, photo):
    """The lip sliders leave the forehead as it was and the brow and lid sliders the mouth and chin, warp and
    the generator's change alike (G redraws the whole face; its change is kept to the AU's part)."""
    from core.evaluation.edit_locality import off_region_change

    face = editor.detector.detect(photo)[0]
    base = photo
    for au in ("AU15", "AU25", "AU26", "AU04", "AU45"):
        moved = editor.edit(photo, aus={au: 1.0}).image
        assert off_region_change(base, moved, face.box, face.landmarks, au) < 1.0, au
        assert np.abs(moved.astype(int) - base.astype(int)).mean() > 0.3, au  # ... while it does edit the face
