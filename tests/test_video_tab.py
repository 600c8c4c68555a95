"""The Video tab through gradio_client: timeline, CSV and annotated video; bad files; nothing kept."""

import csv

import pytest

from core.benchmarks.common import write_face_video
from core.labels import AUS, EXPRESSIONS

pytestmark = pytest.mark.integration


def test_a_video_through_gradio_client(app_url, tmp_path):
    from gradio_client import Client, handle_file

    video = write_face_video(tmp_path / "clip.mp4", seconds=2.0, fps=30.0)
    client = Client(app_url, verbose=False)
    # the rows' gr.State stays on the server
    plot, face, table, annotated, summary = client.predict(handle_file(str(video)), api_name="/analyse_video")
    assert summary.startswith("Analysed 20 frames") and "1 face(s), 20 rows" in summary
    with open(table) as f:
        rows = list(csv.DictReader(f))
    assert tuple(rows[0]) == ("file", "frame", "time_s", "face_id", "x0", "y0", "x1", "y1", *EXPRESSIONS, *AUS)
    assert len(rows) == 20 and {r["face_id"] for r in rows} == {"0"}
    assert annotated.endswith(".annotated.mp4")
    import cv2

    capture = cv2.VideoCapture(annotated)
    assert int(capture.get(cv2.CAP_PROP_FRAME_COUNT)) == 20
    capture.release()
    # the timeline: one line per expression of the face, 20 points each
    assert plot["columns"] == ["time_s", "expression", "probability"] and len(plot["data"]) == 20 * len(EXPRESSIONS)

    bad = tmp_path / "notes.mp4"
    bad.write_text("not a video")
    with pytest.raises(Exception, match="not a video"):
        client.predict(handle_file(str(bad)), api_name="/analyse_video")


def test_results_are_deleted_with_the_session(tmp_path):
    from demo.video import JOBS, close_video_session

    request = type("Request", (), {"session_hash": "test-video"})()
    folder, _ = JOBS.start("test-video")
    (folder / "faces.csv").write_text("x")
    close_video_session(request)
    assert not folder.exists() and "test-video" not in JOBS


def test_cancel_stops_the_analysis(tmp_path):
    import threading

    from core.video import analyse_video

    video = write_face_video(tmp_path / "long.mp4", seconds=6.0, fps=30.0)
    stop = threading.Event()
    result = analyse_video(video, progress=lambda done, total: done >= 5 and stop.set(), cancelled=stop.is_set)
    assert result.cancelled and result.frames == 5
