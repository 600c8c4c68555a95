"""The tracking mesh: its training examples, a tiny training run, export/load, the runtime, the tracker's maths."""

import numpy as np
import pytest
import torch

from core.face.alignment import FER_TEMPLATE, alignment_matrix
from core.models.mesh_net import MeshNet, MeshNetConfig
from core.training.mesh_net import MeshTrainConfig, aligned_by, make_batch, mean_mesh, train_mesh_net

TINY = MeshNetConfig(widths=(4, 8, 8), squeeze=4, hidden=16)


def _meshes(n: int, seed: int = 0) -> np.ndarray:
    """Plausible meshes in 48-px crops: the template's points spread over the face, jittered per face."""
    rng = np.random.default_rng(seed)
    base = rng.uniform(8, 40, (478, 3))
    base[:, 2] -= 24
    from core.face.alignment import ALIGN_LANDMARKS

    base[list(ALIGN_LANDMARKS), :2] = FER_TEMPLATE
    return base[None] + rng.normal(0, 0.5, (n, 478, 3))


def test_an_undisplaced_example_is_the_face_aligned_by_its_own_mesh():
    meshes = _meshes(4)
    images = np.random.default_rng(1).integers(0, 255, (4, 48, 48), dtype=np.uint8)
    still = MeshTrainConfig(shift=0.0, scale=0.0, roll=0.0, lost_share=0.0)
    _, targets, present = make_batch(images, meshes, np.arange(4), np.random.default_rng(0), still, 48)
    assert present.all()
    for mesh, target in zip(meshes, targets):
        m = alignment_matrix(mesh, 48)
        np.testing.assert_allclose(target[:, :2], mesh[:, :2] @ m[:, :2].T + m[:, 2], atol=1e-4)


def test_displaced_targets_follow_the_crop():
    """A bright dot at one mesh point must land where the target puts that point."""
    meshes = _meshes(16, seed=2)
    images = np.zeros((16, 48, 48), np.uint8)
    for img, mesh in zip(images, meshes):
        x, y = mesh[1, :2]
        img[int(y) - 1 : int(y) + 2, int(x) - 1 : int(x) + 2] = 255
    tc = MeshTrainConfig(lost_share=0.0)
    crops, targets, _ = make_batch(images, meshes, np.arange(16), np.random.default_rng(3), tc, 48)
    for crop, target in zip(crops, targets):
        y, x = np.unravel_index(int(np.argmax(crop.astype(float) - crop.mean())), crop.shape)
        assert abs(x + 0.5 - target[1, 0]) <= 2.5 and abs(y + 0.5 - target[1, 1]) <= 2.5


def test_lost_examples_are_labelled_and_moved_away():
    meshes = _meshes(200, seed=4)
    images = np.zeros((200, 48, 48), np.uint8)
    tc = MeshTrainConfig(lost_share=0.5)
    _, targets, present = make_batch(images, meshes, np.arange(200), np.random.default_rng(5), tc, 48)
    assert 0.3 < present.mean() < 0.7
    nose = targets[:, 4, :2]  # the nose tip sits near the crop's centre unless the face was displaced far
    off = np.linalg.norm(nose - 24, axis=1)
    assert off[present == 0].min() > off[present == 1].max() * 0.9 or np.median(off[present == 0]) > 3 * np.median(off[present == 1])


def test_the_net_starts_at_the_mean_mesh_and_its_loss_falls():
    torch.manual_seed(0)
    meshes = _meshes(32, seed=6)
    images = np.random.default_rng(7).integers(0, 255, (32, 48, 48), dtype=np.uint8)
    net = MeshNet(TINY)
    net.mean_shape.copy_(torch.from_numpy(mean_mesh(meshes, aligned_by(meshes, 48))).float())
    crops, targets, present = (torch.from_numpy(a) for a in make_batch(
        images, meshes, np.arange(32), np.random.default_rng(8), MeshTrainConfig(), 48, aligned_by(meshes, 48)))
    aus = torch.rand(32, 17)
    net.eval()
    mesh, _, _ = net(crops)
    assert torch.allclose(mesh[0], net.mean_shape)  # zero-initialised head: the mean mesh
    net.train()
    opt = torch.optim.Adam(net.parameters(), 1e-2)
    first = None
    for _ in range(30):
        loss = net.loss(crops, targets, present, aus)["loss"]
        first = first if first is not None else loss.item()
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert loss.item() < 0.8 * first


@pytest.fixture
def tiny_mesh_cache(tiny_dataset, tmp_path):
    cache = tmp_path / "cache"
    cache.mkdir()
    for i, split in enumerate(("train", "valid", "test")):
        meshes = _meshes(256, seed=10 + i).astype(np.float16)
        meshes[3] = np.nan  # a face the mesh missed is left out
        np.savez(cache / f"{split}.npz", landmarks=meshes, names=np.array([f"{split}{k}.png" for k in range(256)]))
    return tiny_dataset, cache


def test_a_tiny_run_exports_weights_that_load_back_and_resumes(tiny_mesh_cache, tmp_path):
    from core.checkpoint import load_mesh_net
    from core.models.mesh_runtime import MeshRuntime

    data, cache = tiny_mesh_cache
    out = tmp_path / "run"
    tc = MeshTrainConfig(steps=3, batch_size=8)
    first = train_mesh_net(str(data), str(cache), str(out), TINY, tc, device="cpu")
    assert 0 <= first["valid_presence_acc"] <= 1 and np.isfinite(first["valid_nme"]) and 0 <= first["valid_au_mae"] <= 1
    tc.steps = 5
    train_mesh_net(str(data), str(cache), str(out), TINY, tc, resume=True, device="cpu")
    net, meta = load_mesh_net(path=out / "mesh_net.safetensors")
    assert meta["steps"] == 5 and net.config == TINY
    crops = np.random.default_rng(0).integers(0, 255, (3, 48, 48), dtype=np.uint8)
    torch_mesh, torch_present, torch_aus = MeshRuntime(net, onnx=False).run(crops)
    runtime = MeshRuntime.load(path=out / "mesh_net.safetensors")
    mesh, present, aus = runtime.run(crops)
    assert mesh.shape == (3, 478, 3) and present.shape == (3,) and aus.shape == (3, 17)
    assert runtime.runtime == "onnx"
    assert np.abs(mesh - torch_mesh).max() < 1e-3 and np.abs(present - torch_present).max() < 1e-4
    assert np.abs(aus - torch_aus).max() < 1e-4


def test_a_file_of_another_kind_is_refused(tmp_path):
    from core.checkpoint import export_recognizer, load_mesh_net
    from core.errors import WeightsError
    from core.models.recognizer import RecognizerConfig, RecognizerNet

    path = tmp_path / "r.safetensors"
    export_recognizer(path, RecognizerNet(RecognizerConfig(widths=(8, 16), depths=(1, 1), embed_dim=16)))
    with pytest.raises(WeightsError, match="not tracking mesh"):
        load_mesh_net(path=path)


def test_points_go_back_to_the_image_through_the_inverse_alignment():
    from core.face.mesh_tracking import to_image

    mesh = _meshes(1, seed=9)[0] * 5 + 100  # a face in a big frame
    m = alignment_matrix(mesh, 48)
    scale = np.sqrt(abs(np.linalg.det(m[:, :2])))
    crop_points = np.concatenate([mesh[:, :2] @ m[:, :2].T + m[:, 2], mesh[:, 2:] * scale], axis=1)
    np.testing.assert_allclose(to_image(crop_points, m), mesh, rtol=1e-4, atol=1e-3)


@pytest.mark.integration
def test_the_shipped_tracking_mesh_follows_a_gliding_face(recognizer):
    """Against MediaPipe's photo mesh on each frame; the figures for every clip: `python -m core.bench tracking`."""
    from core.benchmarks.common import face_photo
    from core.benchmarks.tracking import _place, compare

    photo = face_photo(260)
    frames = [_place(photo, i / 10) for i in range(30)]
    reference = [recognizer.predict(f) for f in frames]
    for reset_each_frame in (False, True):  # followed, and every frame fitted from the detector's keypoints (no tracking)
        report = compare(frames, "mesh-net", reference, recognizer, reset_each_frame=reset_each_frame)
        assert report["missed"] == 0 and report["extra_faces"] == 0 and report["nme_p90"] < 0.05
        assert report["nme_median"] < 0.04 and report["au_abs_error_mean"] < 0.12
        assert report["label_agreement"] >= 0.9


@pytest.mark.integration
def test_a_face_that_leaves_is_dropped_and_a_face_that_enters_is_found():
    from core.benchmarks.common import webcam_frame
    from core.face.detection import FaceDetector
    from core.face.stream_detection import CHECK_EVERY

    frame = webcam_frame()
    detector = FaceDetector(mode="video", max_faces=4)
    try:
        found = detector.detect(frame)  # the detector's keypoints, then the net's fit
        assert [f.detector for f in found] == ["mesh-net"] and found[0].aus is not None
        followed = detector.detect(frame)
        moved = np.linalg.norm(followed[0].landmarks[:, :2] - found[0].landmarks[:, :2], axis=1).mean()
        assert len(followed) == 1 and moved < 2.0  # a still face (145 px wide) stays put
        assert detector.detect(np.full_like(frame, 90)) == []
        assert len(detector.detect(frame)) == 1
        one = np.full_like(frame, 90)
        one[:, :320] = frame[:, 160:480]
        two = one.copy()
        two[:, 320:] = frame[:, 160:480]
        assert len(detector.detect(one)) == 1  # (the face jumped: found again on the same frame)
        counts = [len(detector.detect(two)) for _ in range(CHECK_EVERY + 1)]
        assert counts[-1] == 2 and max(counts) == 2  # the second face is found within CHECK_EVERY frames
        assert len(detector.detect(one)) == 1  # one of the two left: the other is still followed
    finally:
        detector.close()
    single = FaceDetector(mode="video", max_faces=1)
    try:
        assert [len(single.detect(two)) for _ in range(CHECK_EVERY + 1)] == [1] * (CHECK_EVERY + 1)
    finally:
        single.close()


@pytest.mark.integration
def test_a_face_at_a_new_place_every_frame_is_fitted_on_that_frame(recognizer):
    """No frame can be followed from the last: the short-range detector's keypoints seed the net on each one."""
    from core.benchmarks.common import moving_face_frames
    from core.face.detection import FaceDetector

    frames = moving_face_frames(count=8)
    detector = FaceDetector(mode="video", max_faces=4)
    detector._graphs()
    tracker, seeded = detector._mesh, []
    find = tracker._find

    def spy(rgb, followed, **options):
        found = find(rgb, followed, **options)
        seeded.append(len(found))
        return found

    tracker._find = spy
    try:
        for rgb in frames:
            found = detector.detect(rgb)
            gold = recognizer.predict(rgb)[0].landmarks
            assert len(found) == 1
            ocular = np.linalg.norm(gold[33, :2] - gold[263, :2])
            assert np.linalg.norm(found[0].landmarks[:, :2] - gold[:, :2], axis=1).mean() < 0.05 * ocular
        assert sum(seeded) >= len(frames) // 2  # (a face landing near its last place may be followed)
    finally:
        detector.close()


@pytest.mark.integration
def test_a_live_session_switches_to_mediapipe_and_back(recognizer):
    from core.benchmarks.common import webcam_frame
    from core.face.tracking import LiveSession

    frame = webcam_frame()
    session = LiveSession(recognizer)
    try:
        session.process(frame)
        first = session.process(frame)[0]
        session.use_tracker("mediapipe")
        precise = session.process(frame)[0]
        assert precise.track_id == first.track_id  # the same face keeps its id across the switch
        assert session._detector.tracker == "mediapipe"
        session.use_tracker("mesh-net")
        assert len(session.process(frame)) == 1
    finally:
        session.close()


class _FakeRuntime:
    """Fits every crop with `mesh` shifted by `shift` crop pixels; counts its passes."""

    input_size = 48

    def __init__(self, shift: float, present: float = 1.0):
        self.present = present
        self.mesh = _meshes(1, seed=11)[0].astype(np.float32)
        from core.face.alignment import ALIGN_LANDMARKS

        self.mesh[list(ALIGN_LANDMARKS), :2] = FER_TEMPLATE  # a fit that lands where the crop put the face
        self.mesh[:, 0] += shift
        self.calls = 0

    def run(self, crops):
        self.calls += 1
        n = len(crops)
        return np.repeat(self.mesh[None], n, 0), np.full(n, self.present, np.float32), np.full((n, 17), 0.5, np.float32)


def test_a_settled_fit_takes_one_pass_one_that_keeps_moving_is_lost_and_a_gone_face_is_not_refitted():
    from core.face.mesh_tracking import MAX_REFITS, follow

    frame = np.random.default_rng(0).integers(0, 255, (240, 320, 3), dtype=np.uint8)
    start = _meshes(1, seed=12)[0] * 3 + 60
    still = _FakeRuntime(0.0)
    _, present, aus = follow(still, frame, [start])
    assert still.calls == 1 and present[0] == 1.0 and aus.shape == (1, 17)
    moving = _FakeRuntime(6.0)  # every pass says the face is 6 px further right
    meshes, present, _ = follow(moving, frame, [start])
    assert moving.calls == MAX_REFITS and present[0] == 0.0
    assert meshes[0][:, 0].mean() > start[:, 0].mean()  # it did follow, then gave up
    gone = _FakeRuntime(6.0, present=0.01)  # the net sees no face there: not refitted
    _, present, _ = follow(gone, frame, [start])
    assert gone.calls == 1 and present[0] < 0.5


class _FakeFinder:
    """Reports a face at each of `keypoints` (the detector's first four keypoints [4, 2]) on every frame."""

    def __init__(self, keypoints: list[np.ndarray]):
        self.keypoints, self.calls = keypoints, 0

    def detect(self, rgb):
        from types import SimpleNamespace

        self.calls += 1
        return [SimpleNamespace(keypoints=k) for k in self.keypoints]

    def close(self):
        pass


def test_the_tracker_seeds_new_faces_follows_them_and_keeps_at_most_max_faces():
    from core.face.mesh_tracking import KEYPOINT_MESH_POINTS, TrackingMeshDetector
    from core.face.stream_detection import CHECK_EVERY

    runtime = _FakeRuntime(0.0)  # every fit lands where the crop put the face: settled at once
    runtime.mean_shape = runtime.mesh
    keypoints = np.array([runtime.mesh[list(points), :2].mean(axis=0) for points in KEYPOINT_MESH_POINTS])
    left, right = keypoints * 4 + [40, 60], keypoints * 4 + [320, 60]  # two faces about 150 px wide
    frame = np.zeros((400, 600, 3), np.uint8)

    finder = _FakeFinder([left, right, right])  # (the right face reported twice)
    tracker = TrackingMeshDetector(max_faces=4, runtime=runtime, finder=finder)
    assert len(tracker.detect(frame)) == 2 and finder.calls == 1
    boxes = [f.box for f in tracker.detect(frame)]
    assert finder.calls == 1 and len(boxes) == 2  # followed, no look on the next frame
    assert abs(boxes[0][0] - boxes[1][0]) > 200  # the two faces, not one face twice
    for _ in range(CHECK_EVERY):
        assert len(tracker.detect(frame)) == 2  # the look for newcomers finds only faces already followed
    assert finder.calls == 2

    tracker.reset()  # nothing followed any more: the next frame looks for faces and seeds them again
    assert len(tracker.detect(frame)) == 2 and finder.calls == 3

    full = TrackingMeshDetector(max_faces=1, runtime=runtime, finder=_FakeFinder([left, right]))
    assert [len(full.detect(frame)) for _ in range(CHECK_EVERY + 1)] == [1] * (CHECK_EVERY + 1)
    assert full._finder.calls == 1  # no look for newcomers with every place taken

    far = _FakeFinder([left])  # a face only the full-range model sees
    small = TrackingMeshDetector(runtime=runtime, finder=_FakeFinder([]), far_finder=far)
    assert len(small.detect(frame)) == 1 and far.calls == 1
    assert len(small.detect(frame)) == 1 and far.calls == 1  # followed: no look
    assert TrackingMeshDetector(runtime=runtime, finder=_FakeFinder([]), far_finder=_FakeFinder([])).detect(frame) == []
    near, far = _FakeFinder([]), _FakeFinder([])  # nobody there: the full-range model looks on frames 1, 5, 10
    empty = TrackingMeshDetector(runtime=runtime, finder=near, far_finder=far)
    assert [empty.detect(frame) for _ in range(2 * CHECK_EVERY)] == [[]] * (2 * CHECK_EVERY)
    assert near.calls == 2 * CHECK_EVERY and far.calls == 3

    gone = _FakeRuntime(0.0, present=0.0)
    gone.mean_shape = gone.mesh
    assert TrackingMeshDetector(runtime=gone, finder=_FakeFinder([left])).detect(frame) == []  # the net sees no face


@pytest.mark.integration
@pytest.mark.parametrize("tracker", ["mesh-net", "mediapipe"])
def test_a_reset_session_finds_the_face_again_as_a_new_track(recognizer, tracker):
    from core.benchmarks.common import webcam_frame
    from core.face.tracking import LiveSession

    frame = webcam_frame()
    session = LiveSession(recognizer, tracker=tracker)
    try:
        first = session.process(frame)[0]
        assert session.process(frame)[0].track_id == first.track_id
        session.reset()
        again = session.process(frame)
        assert len(again) == 1 and again[0].track_id != first.track_id
        ocular = np.linalg.norm(first.landmarks[33, :2] - first.landmarks[263, :2])
        assert np.linalg.norm(again[0].landmarks[:, :2] - first.landmarks[:, :2], axis=1).mean() < 0.05 * ocular
    finally:
        session.close()
