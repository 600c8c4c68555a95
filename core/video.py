"""Video files: checked, decoded (OpenCV's FFmpeg build, already pinned for images), analysed frame by frame.

Faces are tracked across frames by core.face.tracking.LiveSession, the webcam's tracker (ids stay while a
face's box overlaps its last one), with smoothing off: every row holds that frame's own probabilities.
Every limit is checked before decoding where the header tells (size, resolution, duration) and again while
reading (a header can lie); docs/limits.md lists them.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from core.errors import EmptyVideoError, NotAVideoError, VideoDecodeError, VideoTooLargeError

VIDEO_SUFFIXES = (".mp4", ".m4v", ".mov", ".webm", ".mkv", ".avi")
MAX_VIDEO_BYTES = 200 * 1024 * 1024  # the app's upload limit
MAX_DURATION_S = 600.0
MAX_VIDEO_SIDE = 1920  # long side; 1080p at most (1920x1080 pixels)
MAX_VIDEO_PIXELS = 1920 * 1080
DEFAULT_SAMPLE_FPS = 10.0  # frames analysed per second of video (the webcam's rate)
MAX_SAMPLE_FPS = 30.0
# The annotated copy: MPEG-4 Part 2 in MP4, 2 ms a 640x480 frame (VP8 WebM took 32 ms); VLC, players and
# most browsers but not all play it.
ANNOTATED_FOURCC = "mp4v"


@dataclass(frozen=True)
class VideoInfo:
    path: str
    width: int
    height: int
    fps: float  # as the container says; 0 when it does not
    frames: int  # as the container says; 0 when it does not
    duration_s: float  # frames / fps, or 0 when unknown


def _container_signature(head: bytes) -> bool:
    """MP4 / MOV (an ISO box at the start), Matroska / WebM (EBML magic) or AVI (RIFF)."""
    return (head[4:8] in (b"ftyp", b"moov", b"mdat", b"free", b"wide", b"skip")
            or head[:4] == b"\x1a\x45\xdf\xa3" or (head[:4] == b"RIFF" and head[8:12] == b"AVI "))


def _empty_iso_media(path: Path) -> bool:
    """An MP4 / MOV whose media data box is empty: a container written without a frame (FFmpeg cannot open it)."""
    import struct

    boxes = {}
    with open(path, "rb") as f:
        while len(header := f.read(8)) == 8:
            size, kind = struct.unpack(">I4s", header)
            if size == 1:  # 64-bit size follows
                size = struct.unpack(">Q", f.read(8))[0] - 8
            boxes.setdefault(kind, size)
            if size < 8:
                break
            f.seek(size - 8, 1)
    return b"moov" in boxes and boxes.get(b"mdat", 8) <= 8


def probe_video(path: str | Path) -> VideoInfo:
    """The checked header of a video file; typed VideoError subclasses say what is wrong."""
    import cv2

    path = Path(path)
    name = path.name
    if not path.is_file():
        raise NotAVideoError(f"{name}: no such file")
    size = path.stat().st_size
    if size > MAX_VIDEO_BYTES:
        raise VideoTooLargeError(f"{name}: {size / 2**20:.0f} MB; videos up to {MAX_VIDEO_BYTES // 2**20} MB are read")
    with open(path, "rb") as f:
        head = f.read(12)
    if not _container_signature(head):
        raise NotAVideoError(f"{name} is not a video (MP4, MOV, WebM, MKV or AVI)")
    capture = cv2.VideoCapture(str(path), cv2.CAP_FFMPEG)
    try:
        if not capture.isOpened():
            if _empty_iso_media(path):
                raise EmptyVideoError(f"{name} has no frames")
            raise VideoDecodeError(f"{name}: the video cannot be opened (truncated or corrupt?)")
        width, height = int(capture.get(cv2.CAP_PROP_FRAME_WIDTH)), int(capture.get(cv2.CAP_PROP_FRAME_HEIGHT))
        fps = float(capture.get(cv2.CAP_PROP_FPS) or 0.0)
        frames = max(0, int(capture.get(cv2.CAP_PROP_FRAME_COUNT) or 0))
    finally:
        capture.release()
    if width <= 0 or height <= 0:
        raise VideoDecodeError(f"{name}: no video stream could be read (truncated or corrupt?)")
    _check_resolution(name, width, height)
    fps = fps if 0 < fps < 1000 else 0.0
    duration = frames / fps if fps else 0.0
    if duration > MAX_DURATION_S:
        raise VideoTooLargeError(f"{name}: {duration:.0f} s long; videos up to {MAX_DURATION_S:.0f} s are analysed")
    return VideoInfo(str(path), width, height, fps, frames, duration)


def _check_resolution(name: str, width: int, height: int) -> None:
    if max(width, height) > MAX_VIDEO_SIDE or width * height > MAX_VIDEO_PIXELS:
        raise VideoTooLargeError(f"{name}: {width}x{height}; videos up to 1920x1080 are analysed")


def read_frames(info: VideoInfo, sample_fps: float = DEFAULT_SAMPLE_FPS) -> Iterator[tuple[int, float, np.ndarray]]:
    """(frame index, time in s, RGB frame) of the frames analysed: at most sample_fps per second of video.

    The RGB array is reused from one frame to the next: copy it to keep it.
    """
    import cv2

    if not 0 < sample_fps <= MAX_SAMPLE_FPS:
        raise ValueError(f"sample_fps must be in (0, {MAX_SAMPLE_FPS:g}]")
    name = Path(info.path).name
    capture = cv2.VideoCapture(info.path, cv2.CAP_FFMPEG)
    rgb, next_due, index, yielded = None, 0.0, -1, 0
    try:
        while True:
            if not capture.grab():  # decodes; the colour conversion is paid only for analysed frames
                break
            index += 1
            t = index / info.fps if info.fps else capture.get(cv2.CAP_PROP_POS_MSEC) / 1000
            if t > MAX_DURATION_S:
                raise VideoTooLargeError(f"{name}: longer than {MAX_DURATION_S:.0f} s; videos up to that are analysed")
            if t + 1e-6 < next_due:
                continue
            ok, bgr = capture.retrieve()
            if not ok or bgr is None or bgr.ndim != 3:
                raise VideoDecodeError(f"{name}: frame {index} cannot be decoded (corrupt video?)")
            _check_resolution(name, bgr.shape[1], bgr.shape[0])
            if rgb is None or rgb.shape != bgr.shape:
                rgb = np.empty_like(bgr)
            cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB, dst=rgb)
            next_due = max(next_due + 1.0 / sample_fps, t)  # no burst after a gap in the timestamps
            yielded += 1
            yield index, t, rgb
    finally:
        capture.release()
    if yielded == 0:
        if index < 0 and info.frames > 0:
            raise VideoDecodeError(f"{name}: no frame could be decoded (truncated or corrupt?)")
        raise EmptyVideoError(f"{name} has no frames")


@dataclass
class VideoAnalysis:
    info: VideoInfo
    rows: list[dict] = field(default_factory=list)  # core.results_table rows, one per face per analysed frame
    frames: int = 0  # frames analysed
    seconds: float = 0.0  # wall-clock time of the analysis
    cancelled: bool = False


def analyse_video(path, recognizer=None, sample_fps: float = DEFAULT_SAMPLE_FPS, annotated: str | Path | None = None,
                  progress: Callable[[int, int], None] | None = None,
                  cancelled: Callable[[], bool] | None = None, tracker: str = "mesh-net") -> VideoAnalysis:
    """Faces, expressions and AUs of every analysed frame; `annotated` also writes a copy with boxes and ids.
    tracker as for core.face.tracking.LiveSession ("mediapipe": AUs measured on MediaPipe's mesh every frame).

    progress(frames done, frames expected or 0) is called after each analysed frame; cancelled() is asked
    before each: when it says True the analysis stops and returns what it has (cancelled=True).
    """
    import time

    from core import get_recognizer
    from core.face.tracking import LiveSession
    from core.results_table import face_row

    info = probe_video(path)
    expected = int(info.duration_s * min(sample_fps, info.fps or sample_fps)) if info.duration_s else 0
    session = LiveSession(recognizer or get_recognizer(), smoothing=0.0, tracker=tracker)
    result, writer, started = VideoAnalysis(info), None, time.perf_counter()
    file = Path(path).name
    try:
        for index, t, rgb in read_frames(info, sample_fps):
            if cancelled is not None and cancelled():
                result.cancelled = True
                break
            faces = session.process(rgb, now=t)
            result.rows += [face_row(file, index, t, f.track_id, f.box, f.raw_probs, f.aus) for f in faces]
            if annotated is not None:
                writer = writer or _writer(annotated, rgb.shape, min(sample_fps, info.fps or sample_fps))
                _write_annotated(writer, rgb, faces)
            result.frames += 1
            if progress is not None:
                progress(result.frames, expected)
    finally:
        session.close()
        if writer is not None:
            writer.release()
    result.seconds = time.perf_counter() - started
    return result


def _writer(path, shape, fps: float):
    import cv2

    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*ANNOTATED_FOURCC), fps, (shape[1], shape[0]))
    if not writer.isOpened():
        raise OSError(f"cannot write the annotated video {path}")
    return writer


def _write_annotated(writer, rgb: np.ndarray, faces) -> None:
    import cv2

    from core.face.drawing import annotate

    drawn = annotate(rgb, faces, ids=[f.track_id for f in faces])
    writer.write(cv2.cvtColor(drawn, cv2.COLOR_RGB2BGR))
