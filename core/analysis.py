"""Faces of images, folders and videos into one table (the library of `python -m core.analyse`)."""

from __future__ import annotations

import sys
import time
from pathlib import Path

from core.errors import InputError
from core.face.images import IMAGE_SUFFIXES
from core.video import DEFAULT_SAMPLE_FPS, VIDEO_SUFFIXES


def collect_inputs(inputs) -> list[Path]:
    """Files named, and the images and videos of folders named (recursively, sorted)."""
    found = []
    for item in map(Path, inputs):
        if item.is_dir():
            found += sorted(p for p in item.rglob("*")
                            if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES | set(VIDEO_SUFFIXES))
        elif item.is_file():
            found.append(item)
        else:
            raise InputError(f"{item}: no such file or folder")
    return found


def analyse_image(path: Path, recognizer) -> list[dict]:
    from core.results_table import face_row

    return [face_row(path.name, 0, None, i, face.box, face.probs, face.aus)
            for i, face in enumerate(recognizer.predict(path))]


def analyse_inputs(inputs, csv_path, annotated_dir=None, sample_fps: float = DEFAULT_SAMPLE_FPS,
                   show_progress: bool = True, tracker: str = "mesh-net") -> dict:
    """Write the table of every face to csv_path; return a summary (files, frames, faces, seconds, errors).

    A file that cannot be read is listed under errors with its message; the others are still analysed.
    Videos get an annotated copy in annotated_dir when it is given.
    """
    from tqdm import tqdm

    from core import get_recognizer
    from core.results_table import write_csv
    from core.video import analyse_video

    files = collect_inputs(inputs)
    recognizer = get_recognizer()
    rows, errors, frames, videos = [], [], 0, 0
    started = time.perf_counter()
    bar = tqdm(total=len(files), unit="file", file=sys.stderr, disable=not show_progress)
    for path in files:
        try:
            if path.suffix.lower() in VIDEO_SUFFIXES:
                out = Path(annotated_dir) / f"{path.stem}.annotated.mp4" if annotated_dir else None
                if out is not None:
                    out.parent.mkdir(parents=True, exist_ok=True)
                frame_bar = tqdm(unit="frame", file=sys.stderr, leave=False, desc=path.name,
                                 disable=not show_progress)
                result = analyse_video(path, recognizer, sample_fps, annotated=out,
                                       progress=lambda done, total, bar=frame_bar: _advance(bar, total),
                                       tracker=tracker)
                frame_bar.close()
                rows += result.rows
                frames += result.frames
                videos += 1
            else:
                rows += analyse_image(path, recognizer)
                frames += 1
        except InputError as error:
            errors.append({"file": str(path), "error": str(error)})
        bar.update(1)
    bar.close()
    write_csv(rows, csv_path)
    seconds = time.perf_counter() - started
    return {"files": len(files), "videos": videos, "images": len(files) - videos - len(errors), "frames": frames,
            "faces": len(rows), "seconds": round(seconds, 2),
            "frames_per_second": round(frames / seconds, 1) if seconds else None, "csv": str(csv_path),
            "runtime": recognizer.runtime, "errors": errors}


def _advance(bar, total: int) -> None:
    if total and bar.total != total:
        bar.total = total
    bar.update(1)
