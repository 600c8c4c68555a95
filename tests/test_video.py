"""Video files: the reader's limits and bad inputs, the table's columns, core.analyse on a generated video."""

import csv
import json

import numpy as np
import pytest

from core.benchmarks.common import write_face_video
from core.errors import EmptyVideoError, InputError, NotAVideoError, VideoDecodeError, VideoTooLargeError
from core.labels import AUS, EXPRESSIONS


@pytest.fixture(scope="module")
def face_video(tmp_path_factory):
    return write_face_video(tmp_path_factory.mktemp("video") / "faces.mp4", seconds=2.0, fps=30.0, faces=2)


def test_a_video_is_probed_and_sampled(face_video):
    from core.video import probe_video, read_frames

    info = probe_video(face_video)
    assert (info.width, info.height, info.frames) == (640, 480, 60) and info.fps == pytest.approx(30)
    sampled = [(i, t, rgb.shape) for i, t, rgb in read_frames(info, sample_fps=10)]
    assert [i for i, _, _ in sampled] == list(range(0, 60, 3))  # 10 of each second's 30 frames
    assert sampled[1][1] == pytest.approx(0.1) and sampled[0][2] == (480, 640, 3)


def test_not_a_video(tmp_path):
    from core.video import probe_video

    text = tmp_path / "notes.mp4"
    text.write_text("hello, this is not a video at all")
    with pytest.raises(NotAVideoError, match="not a video"):
        probe_video(text)
    from PIL import Image

    image = tmp_path / "photo.mov"
    Image.new("RGB", (64, 64)).save(image, format="PNG")
    with pytest.raises(NotAVideoError):
        probe_video(image)
    with pytest.raises(NotAVideoError, match="no such file"):
        probe_video(tmp_path / "missing.mp4")
    assert issubclass(NotAVideoError, InputError)


def test_corrupt_video(tmp_path, face_video):
    from core.video import analyse_video

    data = face_video.read_bytes()
    truncated = tmp_path / "truncated.mp4"
    truncated.write_bytes(data[:2000])  # the header box, then nothing
    garbled = tmp_path / "garbled.mp4"
    garbled.write_bytes(data[:32] + bytes(np.random.default_rng(0).integers(0, 256, 50_000, dtype=np.uint8)))
    for bad in (truncated, garbled):
        with pytest.raises(VideoDecodeError):
            analyse_video(bad)


@pytest.mark.parametrize("suffix, fourcc", [("mp4", "mp4v"), ("avi", "MJPG")])
def test_zero_frames(tmp_path, suffix, fourcc):
    import cv2

    from core.video import analyse_video

    empty = tmp_path / f"empty.{suffix}"
    writer = cv2.VideoWriter(str(empty), cv2.VideoWriter_fourcc(*fourcc), 10, (64, 64))
    writer.release()  # a container without a frame
    with pytest.raises(EmptyVideoError, match="has no frames"):
        analyse_video(empty)


def test_too_big(tmp_path, face_video, monkeypatch):
    import cv2

    from core import video

    wide = tmp_path / "wide.mp4"
    writer = cv2.VideoWriter(str(wide), cv2.VideoWriter_fourcc(*"mp4v"), 10, (2560, 64))
    for _ in range(3):
        writer.write(np.zeros((64, 2560, 3), np.uint8))
    writer.release()
    with pytest.raises(VideoTooLargeError, match="2560x64"):
        video.probe_video(wide)
    monkeypatch.setattr(video, "MAX_DURATION_S", 1.0)
    with pytest.raises(VideoTooLargeError, match="s long"):
        video.probe_video(face_video)
    monkeypatch.setattr(video, "MAX_VIDEO_BYTES", 1000)
    with pytest.raises(VideoTooLargeError, match="MB"):
        video.probe_video(face_video)


def test_the_csv_columns():
    from core.results_table import COLUMNS, face_row

    assert COLUMNS == ("file", "frame", "time_s", "face_id", "x0", "y0", "x1", "y1", *EXPRESSIONS, *AUS)
    assert len(EXPRESSIONS) == 8 and len(AUS) == 17
    row = face_row("a.mp4", 3, 0.1, 2, (1, 2, 3, 4), dict.fromkeys(EXPRESSIONS, 0.125), None)
    assert tuple(row) == COLUMNS and row["AU12"] == "" and row["time_s"] == 0.1


@pytest.mark.integration
def test_analyse_command_on_a_video_an_image_and_a_folder(tmp_path, face_video, grace_hopper, capsys):
    import shutil

    from core.analyse import main

    folder = tmp_path / "photos"
    folder.mkdir()
    shutil.copy(grace_hopper, folder / "grace.jpg")
    (folder / "notes.txt").write_text("ignored: not an image or a video")
    out = tmp_path / "faces.csv"
    assert main([str(face_video), str(folder), "--csv", str(out), "--annotated", str(tmp_path / "ann"),
                 "--no-progress"]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["files"] == 2 and summary["videos"] == 1 and summary["frames"] == 21 and summary["errors"] == []
    with open(out) as f:
        rows = list(csv.DictReader(f))
    assert tuple(rows[0]) == ("file", "frame", "time_s", "face_id", "x0", "y0", "x1", "y1", *EXPRESSIONS, *AUS)
    video_rows = [r for r in rows if r["file"] == "faces.mp4"]
    assert len(video_rows) == 40 == summary["faces"] - 1  # one row per face per frame: 2 faces x 20 frames
    assert {r["face_id"] for r in video_rows} == {"0", "1"}  # ids stable across frames
    # the two faces keep their side of the frame, so an id that swapped sides would show here
    for face_id in ("0", "1"):
        xs = [float(r["x0"]) for r in video_rows if r["face_id"] == face_id]
        assert max(xs) < 320 or min(xs) >= 320
    for r in video_rows:
        assert abs(sum(float(r[name]) for name in EXPRESSIONS) - 1) < 1e-3 and r["AU12"] != ""
    assert [r["time_s"] for r in rows if r["file"] == "grace.jpg"] == [""]
    assert (tmp_path / "ann" / "faces.annotated.mp4").stat().st_size > 10_000


@pytest.mark.integration
def test_analyse_command_reports_a_bad_file(tmp_path, capsys):
    from core.analyse import main

    bad = tmp_path / "bad.mp4"
    bad.write_text("not a video")
    assert main([str(bad), "--csv", str(tmp_path / "out.csv"), "--no-progress"]) == 1
    summary = json.loads(capsys.readouterr().out)
    assert summary["errors"][0]["file"].endswith("bad.mp4") and "not a video" in summary["errors"][0]["error"]
