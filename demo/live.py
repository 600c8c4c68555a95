"""Live tab: webcam recognition (streamed) and photo analysis."""

from __future__ import annotations

import threading
import time

import gradio as gr

from core import InputError, get_recognizer
from core.face.images import load_image
from demo.errors import UserError, shown
from demo.render import annotate, au_bars_html, probability_bars_html
from demo.session_models import SESSION_MODELS, session_key

STREAM_EVERY_S = 0.1
STREAM_TIME_LIMIT_S = 600  # a stream is cut after 10 minutes; the user presses record again
PREVIEW_SIDE = 480
# Gradio encodes every returned frame: WEBP (its default) cost several times JPEG's on 640x480 frames
# (`python -m core.bench live`: encode_ms).
LIVE_FORMAT = "jpeg"
# Stream handler calls processed at once; more streams queue. Set from `python -m core.bench streams
# --concurrency N` (docs/limits.md): 8 served the most streams on 2 cores (a call spends much of its time
# waiting for its MediaPipe graph's own threads, so fewer calls at once left the cores idle).
STREAM_CONCURRENCY = 8
# The camera preview is mirrored in the browser when "Mirror view" is ticked, like the recognised picture
# beside it; the frames sent for analysis never are (left and right stay the person's own).
# What the tracker choice trades (docs/limits.md, `python -m core.bench tracking`).
PRECISE_AUS_LABEL = ("Precise action units: MediaPipe's face mesh on every frame (about twice the time per frame); "
                     "off, a small network follows each face and reads its AUs less exactly")
MIRROR_CSS = "#live-webcam video { transform: scaleX(-1); } #live-webcam.unmirrored video { transform: none; }"
MIRROR_JS = "(mirror) => { document.querySelector('#live-webcam')?.classList.toggle('unmirrored', !mirror); }"


class LiveSessions:
    """One core.face.tracking.LiveSession per browser session (its own tracker), freed when the tab closes
    or, should that event be lost, after IDLE_S without frames."""

    IDLE_S = 300

    def __init__(self):
        self._sessions: dict[str, object] = {}
        self._last_used: dict[str, float] = {}
        self._lock = threading.Lock()

    def get(self, key: str):
        from core.face.tracking import LiveSession

        now = time.monotonic()
        with self._lock:
            stale = [k for k, t in self._last_used.items() if now - t > self.IDLE_S and k != key]
            if key not in self._sessions:
                self._sessions[key] = LiveSession(get_recognizer())
            self._last_used[key] = now
            session = self._sessions[key]
        for k in stale:
            self.close(k)
        return session

    def close(self, key: str) -> None:
        with self._lock:
            session = self._sessions.pop(key, None)
            self._last_used.pop(key, None)
        if session is not None:
            session.close()

    def __len__(self) -> int:
        return len(self._sessions)


SESSIONS = LiveSessions()


def live_frame(frame, mirror_view: bool, request: gr.Request, precise_aus: bool = False):
    """One webcam frame -> (annotated frame, top-face probabilities, status line, its AU bars).

    precise_aus: MediaPipe's mesh on every frame instead of the tracking mesh (core.face.tracking.LiveSession).
    """
    if frame is None:
        return None, {}, "Waiting for the camera…", ""
    key = session_key(request) or "anonymous"
    session = SESSIONS.get(key)
    session.recognizer = SESSION_MODELS.recognizer(key)  # the session's fine-tuned model, if switched on
    session.use_tracker("mediapipe" if precise_aus else "mesh-net")
    started = time.perf_counter()
    try:
        rgb = load_image(frame)  # grey, RGBA or float frames are drawn on as the RGB the model saw
        faces = session.process(rgb)
    except InputError as error:
        return None, {}, f"Frame skipped: {error}", ""
    elapsed_ms = (time.perf_counter() - started) * 1000
    annotated = annotate(rgb, faces, mirror=mirror_view)
    probs = faces[0].probs if faces else {}
    status = f"{session.fps:.1f} fps · {elapsed_ms:.0f} ms per frame · {len(faces)} face(s)"
    if not faces:
        status += " · no face in view"
    return annotated, probs, status, au_bars_html(faces[0].aus if faces else None)


def close_live_session(request: gr.Request) -> None:
    """The tab closed: free its tracker and drop its fine-tuned models and temp files."""
    key = session_key(request)
    if key:
        SESSIONS.close(key)
        SESSION_MODELS.reset(key)


def analyse_photo(image_path, request: gr.Request = None):
    """An uploaded photo -> (annotated photo, per-face cards, summary)."""
    if image_path is None:
        raise UserError("Upload a photo first.")
    try:
        rgb = load_image(image_path)
        faces = SESSION_MODELS.recognizer(session_key(request)).predict(rgb)
    except InputError as error:  # it names the uploaded file: escaped, as gradio renders the message as HTML
        raise UserError(shown(str(error))) from error
    summary = f"{len(faces)} face(s) found." if faces else "No face found in this photo."
    return annotate(rgb, faces, max_side=1600, numbered=True), probability_bars_html(faces), summary


def preview_photo(image_path):
    """The upload as a picture, at once (the analysis follows): a small copy, not the file's name."""
    if image_path is None:
        return None
    try:
        rgb = load_image(image_path)
    except InputError:
        return None  # the analysis says what is wrong with it
    return annotate(rgb, [], max_side=PREVIEW_SIDE)  # no faces to draw: just the shrunk copy


def build_live_tab() -> None:
    with gr.Tab("Live", id="live"):
        with gr.Tab("Webcam", id="webcam"):
            gr.Markdown("Turn on the camera: every face is boxed and its expression recognised, "
                        "smoothed over the last few frames. Nothing is stored or sent anywhere.")
            with gr.Row():
                with gr.Column():
                    webcam = gr.Image(
                        sources=["webcam"], streaming=True, type="numpy", label="Camera", elem_id="live-webcam",
                        webcam_options=gr.WebcamOptions(mirror=False),
                    )
                    mirror = gr.Checkbox(value=True, label="Mirror view (like a mirror; analysis is unaffected)")
                    mirror.change(None, inputs=mirror, js=MIRROR_JS, api_visibility="private")
                    precise = gr.Checkbox(value=False, label=PRECISE_AUS_LABEL, elem_id="live-precise-aus")
                with gr.Column():
                    annotated = gr.Image(label="Recognised", type="numpy", elem_id="live-annotated",
                                         format=LIVE_FORMAT)
                    probs = gr.Label(num_top_classes=8, label="Largest face", elem_id="live-probs")
                    status = gr.Markdown("Waiting for the camera…", elem_id="live-status")
                    with gr.Accordion("Action units of the largest face", open=False):
                        au_bars = gr.HTML(elem_id="live-aus")
            webcam.stream(
                live_frame, inputs=[webcam, mirror, precise], outputs=[annotated, probs, status, au_bars],
                stream_every=STREAM_EVERY_S, time_limit=STREAM_TIME_LIMIT_S, concurrency_limit=STREAM_CONCURRENCY,
                show_progress="hidden", api_visibility="private",
            )
        with gr.Tab("Photo", id="photo"):
            gr.Markdown("Upload a photo: every face is found (largest first) and given a probability chart.")
            with gr.Row():
                with gr.Column():
                    # A File, not an Image: gr.Image decodes uploads itself, before our checks
                    # (pixel limit, clear messages for non-images) could run.
                    photo = gr.File(file_types=["image"], type="filepath", label="Photo", elem_id="photo-input")
                    preview = gr.Image(label="Your photo", type="numpy", interactive=False, height=240,
                                       elem_id="photo-preview")
                    analyse = gr.Button("Analyse", variant="primary")
                with gr.Column():
                    photo_out = gr.Image(label="Faces", type="numpy", elem_id="photo-annotated")
                    photo_summary = gr.Markdown()
                    photo_cards = gr.HTML()
            # One limit for both ways in (button / API and upload): 4 photos analysed at once, the rest queue.
            analyse.click(analyse_photo, inputs=photo, outputs=[photo_out, photo_cards, photo_summary],
                          api_name="analyse_photo", concurrency_limit=4, concurrency_id="photo")
            photo.upload(preview_photo, inputs=photo, outputs=preview, api_visibility="private",
                         show_progress="hidden").then(
                analyse_photo, inputs=photo, outputs=[photo_out, photo_cards, photo_summary],
                api_visibility="private", concurrency_limit=4, concurrency_id="photo")
            photo.clear(lambda: (None, None, "", ""), outputs=[preview, photo_out, photo_cards, photo_summary],
                        api_visibility="private")
