import numpy as np
import pytest
from PIL import Image

from core.face.alignment import (
    ALIGN_LANDMARKS,
    FER_TEMPLATE,
    NUM_LANDMARKS,
    align_face,
    alignment_matrix,
    similarity_transform,
)
from core.face.detection import DetectedFace, FaceDetector


def test_similarity_transform_recovers_a_known_transform():
    rng = np.random.default_rng(0)
    src = rng.uniform(0, 100, (20, 2))
    angle, scale, shift = 0.3, 1.7, np.array([5.0, -3.0])
    rot = scale * np.array([[np.cos(angle), -np.sin(angle)], [np.sin(angle), np.cos(angle)]])
    dst = src @ rot.T + shift
    m = similarity_transform(src, dst)
    assert np.allclose(m[:, :2], rot, atol=1e-8) and np.allclose(m[:, 2], shift, atol=1e-6)


def test_alignment_puts_landmarks_on_the_template():
    landmarks = np.zeros((NUM_LANDMARKS, 3), np.float32)
    landmarks[list(ALIGN_LANDMARKS), :2] = FER_TEMPLATE * 5 + 100  # a face 5x larger, shifted
    m = alignment_matrix(landmarks, 48)
    mapped = landmarks[list(ALIGN_LANDMARKS), :2] @ m[:, :2].T + m[:, 2]
    assert np.allclose(mapped, FER_TEMPLATE, atol=1e-3)
    grey = np.zeros((400, 400), np.uint8)
    face = DetectedFace((0, 0, 1, 1), landmarks, 1.0, "test")
    assert align_face(grey, face, 48).shape == (48, 48)
    assert align_face(grey, face, 64).shape == (64, 64)


@pytest.mark.integration
def test_grace_hopper_one_face_with_478_landmarks_in_image_pixels(grace_hopper):
    rgb = np.asarray(Image.open(grace_hopper).convert("RGB"))
    faces = FaceDetector("photo").detect(rgb)
    assert len(faces) == 1
    face = faces[0]
    x0, y0, x1, y1 = face.box
    assert 100 < x0 < x1 < 450 and 50 < y0 < y1 < 400  # her face is left of centre, upper half
    assert face.landmarks.shape == (478, 3) and face.has_landmarks
    inside = ((face.landmarks[:, 0] > x0 - 30) & (face.landmarks[:, 0] < x1 + 30)
              & (face.landmarks[:, 1] > y0 - 60) & (face.landmarks[:, 1] < y1 + 30))
    assert inside.mean() > 0.95


@pytest.mark.integration
def test_landmarks_read_from_the_wire_bytes_equal_the_field_by_field_reading(grace_hopper):
    import mediapipe as mp

    from core.face.detection import landmarks_to_pixels

    rgb = np.asarray(Image.open(grace_hopper).convert("RGB"))
    with mp.solutions.face_mesh.FaceMesh(static_image_mode=True, refine_landmarks=True) as mesh:
        landmarks = mesh.process(rgb).multi_face_landmarks[0]
    h, w = rgb.shape[:2]
    slow = np.array([(p.x * w, p.y * h, p.z * w) for p in landmarks.landmark], np.float32)
    fast = landmarks_to_pixels(landmarks, w, h)
    assert fast.dtype == np.float32 and fast.shape == (478, 3)
    np.testing.assert_array_equal(fast, slow)
    np.testing.assert_array_equal(landmarks_to_pixels(landmarks.SerializeToString(), w, h), slow)
    landmarks.landmark[5].visibility = 0.5  # another wire layout: the field-by-field path answers
    np.testing.assert_array_equal(landmarks_to_pixels(landmarks, w, h), slow)
    np.testing.assert_array_equal(landmarks_to_pixels(landmarks.SerializeToString(), w, h), slow)


@pytest.mark.integration
def test_threaded_graphs_give_the_solutions_landmarks(grace_hopper):
    import mediapipe as mp
    from mediapipe.calculators.tensor.inference_calculator_pb2 import InferenceCalculatorOptions

    from core.face.detection import landmarks_to_pixels
    from core.face.mp_graph import _expanded, _with_threads, lean

    rgb = np.asarray(Image.open(grace_hopper).convert("RGB"))
    h, w = rgb.shape[:2]
    with mp.solutions.face_mesh.FaceMesh(static_image_mode=True, refine_landmarks=True,
                                         min_detection_confidence=0.3) as mesh:
        expected = landmarks_to_pixels(mesh.process(rgb).multi_face_landmarks[0], w, h)
    for threads in (1, 2):
        graph = lean(mp.solutions.face_mesh.FaceMesh, threads, static_image_mode=True, refine_landmarks=True,
                     min_detection_confidence=0.3)  # a calculator parameter still reaches its node
        try:
            (wire,) = graph.run({"image": rgb})["multi_face_landmarks"]
        finally:
            graph.close()
        if threads == 1:  # the solution's own graph, expanded: the same landmarks to the bit
            np.testing.assert_array_equal(landmarks_to_pixels(wire, w, h), expected)
        else:  # same models: only the order of float sums may differ
            assert np.abs(landmarks_to_pixels(wire, w, h) - expected).max() < 0.1
    config = _with_threads(_expanded("mediapipe/modules/face_landmark/face_landmark_front_cpu.binarypb"), 3)
    counts = []
    for node in config.node:
        if node.calculator.startswith("InferenceCalculator"):
            options = (InferenceCalculatorOptions.FromString(node.node_options[0].value) if node.node_options
                       else node.options.Extensions[InferenceCalculatorOptions.ext])
            counts.append(options.delegate.xnnpack.num_threads)
    assert counts == [3, 3]  # the face detector's model and the landmark model


@pytest.mark.integration
def test_lean_graph_gives_what_the_solution_gives(grace_hopper):
    import mediapipe as mp
    from mediapipe.framework.formats.detection_pb2 import Detection

    from core.face.detection import landmarks_to_pixels
    from core.face.mp_graph import LeanGraph, parse

    rgb = np.asarray(Image.open(grace_hopper).convert("RGB"))
    h, w = rgb.shape[:2]
    with mp.solutions.face_mesh.FaceMesh(static_image_mode=True, refine_landmarks=True) as mesh:
        expected = landmarks_to_pixels(mesh.process(rgb).multi_face_landmarks[0], w, h)
    lean = LeanGraph(mp.solutions.face_mesh.FaceMesh(static_image_mode=True, refine_landmarks=True))
    try:
        (wire,) = lean.run({"image": rgb})["multi_face_landmarks"]
        np.testing.assert_array_equal(landmarks_to_pixels(wire, w, h), expected)
        assert lean.run({"image": np.zeros_like(rgb)})["multi_face_landmarks"] == []  # no face: an empty list
        with pytest.raises(ValueError, match="no input stream"):
            lean.run({"frame": rgb})
    finally:
        lean.close()
    finder = LeanGraph(mp.solutions.face_detection.FaceDetection(model_selection=1))
    try:
        (detection,) = parse(finder.run({"image": rgb})["detections"], Detection)
        assert detection.score[0] > 0.5 and len(detection.location_data.relative_keypoints) == 6
    finally:
        finder.close()


@pytest.mark.integration
def test_photo_mesh_starts_from_the_detection_and_lands_where_the_re_detecting_mesh_does(grace_hopper):
    rgb = np.asarray(Image.open(grace_hopper).convert("RGB"))
    default = FaceDetector("photo")
    (plain,) = default.detect(rgb)
    assert default._roi_mesh is None and plain.has_landmarks  # by default the mesh detects the face in the crop
    detector = FaceDetector("photo", mesh_from_detection=True)
    (face,) = detector.detect(rgb)
    assert detector._roi_mesh is not None and face.has_landmarks  # the ROI graph fitted it
    # the FaceMesh solution on the same crop, detecting the face again (the path MTCNN's boxes still take)
    again = detector._mesh_in_box(rgb, face.box, None)
    width = face.box[2] - face.box[0]
    displacement = np.linalg.norm(face.landmarks[:, :2] - again[:, :2], axis=1)
    assert displacement.mean() < 0.03 * width  # 0.012 of the width on 430 faces (core.bench photo-mesh)


def test_a_detection_moved_into_the_crop_keeps_its_pixels():
    from mediapipe.framework.formats import detection_pb2

    from core.face.roi_mesh import _into_crop

    detection = detection_pb2.Detection()
    box = detection.location_data.relative_bounding_box
    box.xmin, box.ymin, box.width, box.height = 0.25, 0.5, 0.125, 0.25
    point = detection.location_data.relative_keypoints.add()
    point.x, point.y = 0.3, 0.6
    photo, crop, left, top, scale = (800, 400), (150, 150), 150.0, 160.0, 0.5
    moved = _into_crop(detection, photo, crop, left, top, scale)

    def to_crop(x, y):  # photo pixels (continuous) -> crop pixels, as the warp in _mesh_in_box places them
        return (x - 0.5 - left) * scale + 0.5, (y - 0.5 - top) * scale + 0.5

    cx, cy = to_crop(0.3 * 800, 0.6 * 400)
    assert moved.location_data.relative_keypoints[0].x * 150 == pytest.approx(cx)
    assert moved.location_data.relative_keypoints[0].y * 150 == pytest.approx(cy)
    bx, by = to_crop(0.25 * 800, 0.5 * 400)
    got = moved.location_data.relative_bounding_box
    assert (got.xmin * 150, got.ymin * 150) == (pytest.approx(bx), pytest.approx(by))
    assert (got.width * 150, got.height * 150) == (pytest.approx(100 * scale), pytest.approx(100 * scale))
    assert detection.location_data.relative_bounding_box.xmin == 0.25  # the photo's detection is left as it was


@pytest.mark.integration
def test_close_up_faces_are_found_without_mtcnn(fer_test):
    """A face filling most of the picture (the full-range model misses many) is found by MediaPipe."""
    detector = FaceDetector("photo", use_mtcnn=False)
    found = 0
    for crop in fer_test.images[:30]:
        canvas = Image.new("L", (400, 360), 128)
        canvas.paste(Image.fromarray(crop).resize((220, 220), Image.BICUBIC), (90, 70))
        found += len(detector.detect(np.asarray(canvas.convert("RGB")))) == 1
    assert found >= 27


@pytest.mark.integration
def test_every_face_largest_first_and_none_on_blank(grace_hopper):
    photo = Image.open(grace_hopper).convert("RGB")
    small = photo.resize((photo.width // 2, photo.height // 2))
    canvas = Image.new("RGB", (photo.width + small.width + 40, photo.height), (128, 128, 128))
    canvas.paste(small, (0, 100))
    canvas.paste(photo, (small.width + 40, 0))
    faces = FaceDetector("photo").detect(np.asarray(canvas))
    assert len(faces) == 2
    assert faces[0].area > faces[1].area and faces[0].box[0] > small.width  # the big one first
    assert FaceDetector("photo").detect(np.full((300, 300, 3), 128, np.uint8)) == []


@pytest.mark.integration
def test_mtcnn_fallback_runs_offline(grace_hopper):
    import sys

    from core.face.mtcnn import load_mtcnn

    boxes, probs = load_mtcnn().detect(np.asarray(Image.open(grace_hopper).convert("RGB")))
    assert boxes.shape == (1, 4) and boxes.dtype == np.float32 and float(probs[0]) > 0.95
    x0, y0, x1, y1 = boxes[0]
    assert 100 < x0 < x1 < 450 and 50 < y0 < y1 < 400
    assert "torchvision" not in sys.modules  # nothing pulls torchvision in (transformers would trip on it)
    assert load_mtcnn().detect(np.full((200, 200, 3), 128, np.uint8))[0].shape == (0, 4)


@pytest.mark.integration
def test_mtcnn_used_when_mediapipe_finds_nothing(grace_hopper, monkeypatch):
    detector = FaceDetector("photo")
    detector._graphs()

    class NoDetections:
        def run(self, inputs):
            return {"detections": []}

    monkeypatch.setattr(detector, "_detector", NoDetections())
    monkeypatch.setattr(detector, "_close_detector", NoDetections())
    faces = detector.detect(np.asarray(Image.open(grace_hopper).convert("RGB")))
    assert len(faces) == 1 and faces[0].detector == "mtcnn" and faces[0].has_landmarks


@pytest.mark.integration
def test_faces_mediapipe_misses_are_found_by_mtcnn(grace_hopper):
    """Two hard cases MediaPipe's detectors miss: a face about 27 px wide, and one upside down."""
    photo = Image.open(grace_hopper).convert("RGB")
    canvas = Image.new("RGB", (640, 480), (128, 128, 128))
    canvas.paste(photo.resize((int(photo.width * 0.14), int(photo.height * 0.14)), Image.BICUBIC), (200, 150))
    upside_down = photo.rotate(180, expand=True, fillcolor=(128, 128, 128))
    for picture, inside in ((canvas, (200, 150, 290, 230)), (upside_down, (100, 200, 450, 512))):
        rgb = np.asarray(picture)
        assert FaceDetector("photo", use_mtcnn=False).detect(rgb) == []
        faces = FaceDetector("photo").detect(rgb)
        assert len(faces) == 1 and faces[0].detector == "mtcnn" and faces[0].has_landmarks
        x0, y0, x1, y1 = faces[0].box
        assert inside[0] <= x0 < x1 <= inside[2] and inside[1] <= y0 < y1 <= inside[3]


@pytest.mark.integration
def test_alignment_reproduces_fer_framing(fer_test):
    """On FER test crops the fitted alignment is close to identity: our framing is FER's framing."""
    from core.face.alignment import fer_crop_landmarks

    points = fer_crop_landmarks(fer_test.images[:100])
    found = np.isfinite(points[:, 0, 0])
    assert found.mean() > 0.85
    scales, shifts = [], []
    for p in points[found]:
        m = alignment_matrix(p, 48)
        scales.append(np.sqrt(abs(np.linalg.det(m[:, :2]))))
        centre = np.array([24.0, 24.0])
        shifts.append(np.linalg.norm(m[:, :2] @ centre + m[:, 2] - centre))
    assert 0.95 < np.median(scales) < 1.05
    assert np.median(shifts) < 2.5  # pixels of a 48-px crop


def test_supersampled_warp_keeps_pixel_centres():
    """A pure 4x shrink through warp_grey equals an area resize: no half-pixel drift."""
    import cv2

    from core.face.alignment import warp_grey

    grey = (np.add.outer(np.arange(192), np.arange(192) * 3) % 256).astype(np.uint8)
    matrix = np.array([[0.25, 0.0, 0.0], [0.0, 0.25, 0.0]])
    ours = warp_grey(grey, matrix, 48).astype(int)
    reference = cv2.resize(grey, (48, 48), interpolation=cv2.INTER_AREA).astype(int)
    assert np.abs(ours - reference)[2:-2, 2:-2].max() <= 1


def test_aligned_grey_matches_the_warp_of_the_grey_image():
    from core.face.alignment import aligned_grey, warp_grey
    from core.face.images import to_grey

    rgb = np.random.default_rng(0).integers(0, 256, (300, 400, 3), dtype=np.uint8)
    for scale in (0.1, 0.5, 1.5):  # with and without the anti-aliasing supersampling
        matrix = np.array([[scale, 0.05, -20.0], [-0.05, scale, -10.0]])
        expected = warp_grey(to_grey(rgb), matrix, 48).astype(int)
        got = aligned_grey(rgb, matrix, 48)
        assert got.shape == (48, 48) and got.dtype == np.uint8
        assert np.abs(got.astype(int) - expected).max() <= 1


def test_a_bad_thread_count_is_a_clear_error(monkeypatch):
    import mediapipe as mp

    from core.face.mp_graph import inference_threads, lean

    for raw in ("two", "0", "-1", "1.5"):
        monkeypatch.setenv("EXPRESSIONLAB_MP_THREADS", raw)
        with pytest.raises(ValueError, match="EXPRESSIONLAB_MP_THREADS"):
            inference_threads()
    monkeypatch.setenv("EXPRESSIONLAB_MP_THREADS", "2")
    assert inference_threads() == 2
    with pytest.raises(ValueError, match="at least one thread"):
        lean(mp.solutions.face_detection.FaceDetection, 0)


@pytest.mark.integration
@pytest.mark.parametrize("model_selection", [0, 1])
def test_blazeface_on_litert_finds_what_mediapipes_detection_graph_finds(grace_hopper, model_selection):
    """The same model file run outside MediaPipe: boxes, keypoints and scores as its graph gives them, on a photo,
    a webcam frame with the face off-centre, two faces side by side, a small face and a blank frame; short range
    (model_selection 0) and full range (1)."""
    import mediapipe as mp
    from mediapipe.framework.formats.detection_pb2 import Detection

    from core.face.blazeface import FULL_RANGE, SHORT_RANGE, BlazeFace
    from core.face.mp_graph import lean, parse

    photo = np.asarray(Image.open(grace_hopper).convert("RGB"))
    frame = np.full((480, 640, 3), 90, np.uint8)
    frame[220:460, 330:611] = np.asarray(Image.fromarray(photo).resize((281, 240)))
    group = np.full((480, 640, 3), 90, np.uint8)
    small = np.asarray(Image.fromarray(photo).resize((282, 240)))
    group[120:360, 20:302] = small
    group[120:360, 330:612] = small
    far = np.full((480, 640, 3), 90, np.uint8)
    far[300:430, 400:511] = np.asarray(Image.fromarray(photo).resize((111, 130)))  # a face about 42 px wide
    graph = lean(mp.solutions.face_detection.FaceDetection, model_selection=model_selection)
    ours = BlazeFace((SHORT_RANGE, FULL_RANGE)[model_selection])
    try:
        for rgb in (photo, frame, group, far, np.full_like(frame, 90)):
            h, w = rgb.shape[:2]
            theirs = sorted(parse(graph.run({"image": rgb})["detections"], Detection), key=lambda d: -d.score[0])
            found = ours.detect(rgb)
            assert len(found) == len(theirs)
            for mine, their in zip(found, theirs):
                data = their.location_data
                box = data.relative_bounding_box
                side = box.width * w
                expected = (box.xmin * w, box.ymin * h, (box.xmin + box.width) * w, (box.ymin + box.height) * h)
                assert np.abs(np.array(mine.box) - expected).max() < 0.002 * side
                keypoints = np.array([(p.x * w, p.y * h) for p in data.relative_keypoints])
                assert np.abs(mine.keypoints - keypoints).max() < 0.002 * side
                assert abs(mine.score - their.score[0]) < 0.002
        assert len(ours.detect(frame)) == 1 and len(ours.detect(group)) == 2
        assert len(ours.detect(far)) == model_selection  # a face only the full-range model sees
    finally:
        graph.close()
        ours.close()
