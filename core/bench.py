"""Benchmarks that print JSON. Timings are wall-clock on this machine, median and p90.

    python -m core.bench live --json    # detect + align + recognize, 640x480 frame, one face
    python -m core.bench synth --json   # generate one face; edit the face of a photo
    python -m core.bench finetune --json  # ingest a 500-image upload; fine-tune on 100 faces
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

import numpy as np


def sample_face_photo() -> Path:
    """grace_hopper.jpg, which matplotlib ships: a real face available offline."""
    import matplotlib

    return Path(matplotlib.__file__).parent / "mpl-data" / "sample_data" / "grace_hopper.jpg"


def webcam_frame(width: int = 640, height: int = 480) -> np.ndarray:
    """A 640x480 RGB frame with one real face, as a webcam would send."""
    from PIL import Image

    photo = Image.open(sample_face_photo()).convert("RGB")
    scale = min(width / photo.width, height / photo.height)
    photo = photo.resize((int(photo.width * scale), int(photo.height * scale)), Image.BILINEAR)
    canvas = Image.new("RGB", (width, height), (90, 90, 90))
    canvas.paste(photo, ((width - photo.width) // 2, (height - photo.height) // 2))
    return np.asarray(canvas).copy()


def stats(values_ms: list[float]) -> dict:
    a = np.asarray(values_ms)
    return {"median": round(float(np.median(a)), 3), "p90": round(float(np.percentile(a, 90)), 3),
            "mean": round(float(a.mean()), 3), "n": int(a.size)}


def bench_live(frames: int = 200, warmup: int = 20) -> dict:
    import torch

    from core import get_recognizer
    from core.faces import FaceDetector, align_face
    from core.images import load_image, to_grey

    recognizer = get_recognizer()
    detector = FaceDetector(mode="video", max_faces=4)
    frame = webcam_frame()
    stages = {"decode_ms": [], "detect_ms": [], "align_ms": [], "recognize_ms": [], "live_frame_ms": []}
    faces_found = []
    for i in range(warmup + frames):
        t0 = time.perf_counter()
        rgb = load_image(frame)
        t1 = time.perf_counter()
        faces = detector.detect(rgb)
        t2 = time.perf_counter()
        grey = to_grey(rgb)
        crops = np.stack([align_face(grey, f, recognizer.config.input_size) for f in faces]) if faces else None
        t3 = time.perf_counter()
        if crops is not None:
            recognizer.predict_crops(crops)
        t4 = time.perf_counter()
        if i >= warmup:
            for key, value in zip(stages, (t1 - t0, t2 - t1, t3 - t2, t4 - t3, t4 - t0)):
                stages[key].append(value * 1000)
            faces_found.append(len(faces))
    # The same work through the public API (Recognizer.predict with a video detector).
    api = []
    for _ in range(frames // 2):
        t0 = time.perf_counter()
        recognizer.predict(frame, detector=detector)
        api.append((time.perf_counter() - t0) * 1000)
    detector.close()
    return {
        **{key: stats(values) for key, values in stages.items()},
        "predict_api_ms": stats(api),
        "frame": [640, 480],
        "faces_per_frame": float(np.mean(faces_found)),
        "torch_threads": torch.get_num_threads(),
        "cpu_count": os.cpu_count(),
    }


def bench_synth(runs: int = 100, warmup: int = 10, synthesizer=None) -> dict:
    """Generate (one new face) and edit (the face of a 640x480 photo), each end to end."""
    import torch

    from core import get_synthesizer

    synth = synthesizer or get_synthesizer()
    frame = webcam_frame()
    generate, edit = [], []
    for i in range(warmup + runs):
        t0 = time.perf_counter()
        synth.generate(expression={"happiness": 1.0}, aus={"AU12": 0.8}, seed=i, n=1)
        t1 = time.perf_counter()
        if i >= warmup:
            generate.append((t1 - t0) * 1000)
    for i in range(warmup + runs // 2):
        t0 = time.perf_counter()
        synth.edit(frame, expression={"surprise": 1.0})
        t1 = time.perf_counter()
        if i >= warmup:
            edit.append((t1 - t0) * 1000)
    return {"generate_ms": stats(generate), "edit_ms": stats(edit), "torch_threads": torch.get_num_threads()}


def fer_upload_zip(data_dir: str, n: int) -> tuple[bytes, np.ndarray]:
    """A zip of n real FER valid faces shown large on a grey canvas, in class folders."""
    import io
    import zipfile

    from PIL import Image

    from core.data import load_split
    from core.labels import EXPRESSIONS

    valid = load_split(data_dir, "valid")
    index = np.flatnonzero(valid.ferplus_label >= 0)[:n]
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as z:
        for i in index:
            canvas = Image.new("L", (400, 360), 128)
            canvas.paste(Image.fromarray(valid.images[i]).resize((220, 220), Image.BICUBIC), (90, 70))
            png = io.BytesIO()
            canvas.save(png, format="PNG")
            z.writestr(f"{EXPRESSIONS[valid.ferplus_label[i]]}/{i}.png", png.getvalue())
    return buffer.getvalue(), valid.ferplus_label[index]


def bench_finetune(data_dir: str, steps: int = 150, uploads: int = 500) -> dict:
    """Ingest a 500-image upload; joint fine-tuning (the tab's default steps) on 100 uploaded faces."""
    from core import get_recognizer
    from core.errors import WeightsError
    from core.ingest import ingest_upload
    from core.joint import JointConfig, fine_tune

    recognizer = get_recognizer()
    archive, _ = fer_upload_zip(data_dir, uploads)
    t0 = time.perf_counter()
    data = ingest_upload([("upload.zip", archive)], recognizer.detector, recognizer.config.input_size)
    ingest_s = time.perf_counter() - t0
    try:
        from core import get_synthesizer

        synthesizer = get_synthesizer()
    except WeightsError:
        synthesizer = None
    config = JointConfig(steps=steps, intra_weight=0.1 if synthesizer else 0.0, use_synthetic=synthesizer is not None)
    t0 = time.perf_counter()
    fine_tune(recognizer, synthesizer, list(data.crops[:100]), list(data.labels[:100]), config)
    finetune_s = time.perf_counter() - t0
    return {"finetune_100_s": round(finetune_s, 2), f"ingest_{uploads}_s": round(ingest_s, 2),
            "faces_ingested": len(data.labels),
            "steps": steps, "joint": synthesizer is not None}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m core.bench")
    parser.add_argument("what", choices=("live", "synth", "finetune"))
    parser.add_argument("--data", default=str(Path(__file__).resolve().parent.parent.parent / "shared" / "data"
                                              / "fer2013plus"))
    parser.add_argument("--frames", type=int, default=200)
    parser.add_argument("--steps", type=int, default=150, help="finetune: joint steps (the tab's default)")
    parser.add_argument("--uploads", type=int, default=500, help="finetune: images in the upload to ingest")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args(argv)
    result = {"live": lambda: bench_live(args.frames), "synth": lambda: bench_synth(args.frames // 2),
              "finetune": lambda: bench_finetune(args.data, args.steps, args.uploads)}[args.what]()
    sys.stdout.write(json.dumps(result if args.json else result, indent=None if args.json else 2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
