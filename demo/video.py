"""Video tab: a video file's faces over time (core/video.py): timeline per face, CSV, annotated copy.

Each browser session's results live in a temp folder of its own, replaced by its next analysis and deleted
when the tab closes (or at exit); gradio's copies of the downloads go with its cache (10 minutes).
"""

from __future__ import annotations

import atexit
import shutil
import tempfile
import threading
from pathlib import Path

import gradio as gr

from core import InputError
from core.labels import EXPRESSIONS
from demo.errors import UserError, shown
from demo.live import PRECISE_AUS_LABEL
from demo.session_models import SESSION_MODELS, session_key

PROGRESS_EVERY_S = 0.5
VIDEO_TYPES = [".mp4", ".webm", ".mov"]


class VideoJobs:
    """Per session: the temp folder of its last results and the cancel flag of its running analysis."""

    def __init__(self):
        self._folders: dict[str, str] = {}
        self._cancel: dict[str, threading.Event] = {}
        self._lock = threading.Lock()

    def start(self, key: str) -> tuple[Path, threading.Event]:
        self.close(key)
        folder, cancel = tempfile.mkdtemp(prefix="expressionlab-video-"), threading.Event()
        with self._lock:
            self._folders[key], self._cancel[key] = folder, cancel
        return Path(folder), cancel

    def cancel(self, key: str) -> None:
        with self._lock:
            event = self._cancel.get(key)
        if event is not None:
            event.set()

    def close(self, key: str) -> None:
        with self._lock:
            folder = self._folders.pop(key, None)
            event = self._cancel.pop(key, None)
        if event is not None:
            event.set()
        if folder:
            shutil.rmtree(folder, ignore_errors=True)

    def close_all(self) -> None:
        for key in list(self._folders):
            self.close(key)

    def __contains__(self, key: str) -> bool:
        return key in self._folders


JOBS = VideoJobs()
atexit.register(JOBS.close_all)


def timeline(rows: list[dict], face: str | None):
    """Long-format table for gr.LinePlot: one line per expression of the chosen face."""
    import pandas as pd

    chosen = [r for r in rows if face is not None and str(r["face_id"]) == str(face)]
    return pd.DataFrame([{"time_s": r["time_s"], "expression": name, "probability": r[name]}
                         for r in chosen for name in EXPRESSIONS],
                        columns=["time_s", "expression", "probability"])


def analyse_upload(path, precise_aus: bool = False, request: gr.Request = None, progress=gr.Progress()):  # noqa: B008
    """A generator: progress while the analysis runs, then (plot, face choices, rows, CSV, video, summary).

    precise_aus: MediaPipe's mesh on every frame instead of the tracking mesh (core.video.analyse_video)."""
    from core.results_table import write_csv
    from core.video import analyse_video

    if path is None:
        raise UserError("Upload a video first.")
    key = session_key(request) or "anonymous"
    folder, cancel = JOBS.start(key)
    state = {"done": 0, "total": 0}
    box: dict = {}
    stem = Path(path).stem[:60] or "video"

    def work():
        try:
            box["result"] = analyse_video(
                path, SESSION_MODELS.recognizer(key), annotated=folder / f"{stem}.annotated.mp4",
                progress=lambda done, total: state.update(done=done, total=total), cancelled=cancel.is_set,
                tracker="mediapipe" if precise_aus else "mesh-net")
        except Exception as error:  # re-raised in the handler's thread, where gradio reports it
            box["error"] = error

    worker = threading.Thread(target=work, daemon=True)
    worker.start()
    try:
        while worker.is_alive():
            worker.join(PROGRESS_EVERY_S)
            total = max(state["total"], state["done"], 1)
            progress((state["done"], total), desc="analysing frames", unit="frames")
            yield gr.skip(), gr.skip(), gr.skip(), gr.skip(), gr.skip(), f"Analysing… frame {state['done']}"
    finally:
        cancel.set()  # stopped by the Cancel button or a closed tab: the worker ends at its next frame
    if "error" in box:
        error = box["error"]
        if isinstance(error, InputError):
            raise UserError(shown(str(error))) from error
        raise error
    result = box["result"]
    csv = write_csv(result.rows, folder / f"{stem}.faces.csv")
    faces = sorted({r["face_id"] for r in result.rows})
    first = str(faces[0]) if faces else None
    summary = (f"{'Cancelled after' if result.cancelled else 'Analysed'} {result.frames} frames in "
               f"{result.seconds:.1f} s: {len(faces)} face(s), {len(result.rows)} rows.")
    video = folder / f"{stem}.annotated.mp4"
    yield (timeline(result.rows, first), gr.update(choices=[str(f) for f in faces], value=first), result.rows,
           str(csv), str(video) if video.is_file() else None, summary)


def cancel_analysis(request: gr.Request = None) -> str:
    JOBS.cancel(session_key(request) or "anonymous")
    return "Cancelled."


def close_video_session(request: gr.Request) -> None:
    key = session_key(request)
    if key:
        JOBS.close(key)


def build_video_tab() -> None:
    with gr.Tab("Video", id="video"):
        gr.Markdown("Upload a video (MP4, WebM or MOV; up to 10 minutes, 1920x1080 and 200 MB): every face is "
                    "tracked, 10 frames per second of video are analysed, and you get each face's expressions "
                    "over time, a table (CSV) and an annotated copy. Nothing is kept after you leave.")
        with gr.Row():
            with gr.Column():
                upload = gr.File(file_types=VIDEO_TYPES, type="filepath", label="Video", elem_id="video-input")
                precise = gr.Checkbox(value=False, label=PRECISE_AUS_LABEL, elem_id="video-precise-aus")
                with gr.Row():
                    analyse = gr.Button("Analyse", variant="primary")
                    cancel = gr.Button("Cancel", variant="stop")
                summary = gr.Markdown(elem_id="video-summary")
                csv = gr.File(label="Table (CSV)", interactive=False, elem_id="video-csv")
                annotated = gr.File(label="Annotated video (MP4)", interactive=False, elem_id="video-annotated")
            with gr.Column():
                face = gr.Dropdown(choices=[], label="Face", elem_id="video-face")
                # no fixed height: a fixed one cuts the legend off
                plot = gr.LinePlot(x="time_s", y="probability", color="expression", x_title="time (s)",
                                   y_title="probability", label="Expressions over time", elem_id="video-plot")
        rows = gr.State([])
        run = analyse.click(analyse_upload, inputs=[upload, precise], outputs=[plot, face, rows, csv, annotated, summary],
                            api_name="analyse_video", concurrency_limit=1, concurrency_id="video")
        cancel.click(cancel_analysis, outputs=summary, cancels=[run], api_name="cancel_video")
        face.change(timeline, inputs=[rows, face], outputs=plot, api_visibility="private")
