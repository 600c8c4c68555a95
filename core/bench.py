"""Benchmarks that print JSON. Timings are wall-clock on this machine, median and p90.

    python -m core.bench live --json    # detect + align + recognize, 640x480 frame, one face
    python -m core.bench synth --json   # generate one face; edit the face of a photo
    python -m core.bench finetune --json  # ingest a 500-image upload; fine-tune on 100 faces
    python -m core.bench load --json    # 8 gradio clients for 60 s (photos, synthesis) + 2 queued fine-tunes
"""

from __future__ import annotations

import argparse
import dataclasses
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


def bench_finetune(data_dir: str, steps: int = 150, uploads: int = 500, frozen_stages: int | None = None) -> dict:
    """Ingest a 500-image upload; joint fine-tuning (the tab's settings) on 100 uploaded faces.

    The rest of the upload is held out: accuracy on it before and after shows what the speed costs.
    """
    from core import get_recognizer
    from core.errors import WeightsError
    from core.ingest import ingest_upload
    from core.joint import evaluate_crops, fine_tune, fine_tune_config

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
    config = fine_tune_config(steps, 100, synthesizer is not None)
    if frozen_stages is not None:
        config = dataclasses.replace(config, frozen_stages=frozen_stages)  # validated again
    # As the tab would with 125 uploaded faces: 100 to train on, 25 held out and read for its accuracy curve.
    curve = np.asarray(data.crops[100:125]), np.asarray(data.labels[100:125])
    t0 = time.perf_counter()
    tuned = fine_tune(recognizer, synthesizer, list(data.crops[:100]), list(data.labels[:100]), config,
                      valid=curve)
    finetune_s = time.perf_counter() - t0
    held_out = np.asarray(data.crops[100:]), np.asarray(data.labels[100:])
    before, after = (evaluate_crops(r.net, *held_out, r.device)["accuracy"] if len(held_out[1]) else None
                     for r in (recognizer, tuned.recognizer))
    return {"finetune_100_s": round(finetune_s, 2), f"ingest_{uploads}_s": round(ingest_s, 2),
            "faces_ingested": len(data.labels), "steps": steps, "joint": synthesizer is not None,
            "generator_every": config.generator_every, "frozen_stages": config.frozen_stages,
            "curve_faces": len(curve[1]), "held_out_faces": len(held_out[1]), "held_out_acc_before": before,
            "held_out_acc_after": after}


def serve_app(timeout: float = 120.0):
    """Start `python app.py` on a free loopback port; returns (process, url) once it answers."""
    import socket
    import subprocess
    import urllib.request

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    root = Path(__file__).resolve().parent.parent
    env = {**os.environ, "GRADIO_SERVER_NAME": "127.0.0.1", "GRADIO_SERVER_PORT": str(port),
           "GRADIO_ANALYTICS_ENABLED": "False"}
    process = subprocess.Popen([sys.executable, "app.py"], cwd=root, env=env, stdout=subprocess.DEVNULL,
                               stderr=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}/"
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"the app exited with code {process.returncode} while starting")
        try:
            with urllib.request.urlopen(url, timeout=2) as response:
                if response.status == 200:
                    return process, url
        except OSError:
            time.sleep(0.3)
    process.kill()
    raise RuntimeError(f"the app did not answer on {url} within {timeout:.0f} s")


def load_inputs(workdir: Path, data_dir: str | None) -> tuple[list[Path], Path]:
    """Photos to analyse (grace_hopper, a FER face shown large) and a small labelled zip to fine-tune on."""
    import io
    import zipfile

    from PIL import Image, ImageOps

    photos = [sample_face_photo()]
    if data_dir and (Path(data_dir) / "valid.npz").is_file():
        archive, _ = fer_upload_zip(data_dir, 16)
        with zipfile.ZipFile(io.BytesIO(archive)) as z:
            first = next(n for n in z.namelist() if n.endswith(".png"))
            (workdir / "fer_face.png").write_bytes(z.read(first))
        photos.append(workdir / "fer_face.png")
    else:  # no FER data: the sample photo, mirrored and re-lit, stands in for labelled faces
        buffer = io.BytesIO()
        base = Image.open(sample_face_photo()).convert("RGB")
        with zipfile.ZipFile(buffer, "w") as z:
            for i in range(16):
                variant = ImageOps.mirror(base) if i % 2 else base
                variant = variant.point(lambda v, k=i: min(255, int(v * (0.8 + 0.03 * k))))
                png = io.BytesIO()
                variant.save(png, format="PNG")
                z.writestr(f"{('happy', 'neutral')[i % 2]}/{i}.png", png.getvalue())
        archive = buffer.getvalue()
    upload = workdir / "faces.zip"
    upload.write_bytes(archive)
    return photos, upload


def bench_load(clients: int = 8, seconds: float = 60.0, url: str | None = None, data_dir: str | None = None,
               fine_tunes: int = 2, fine_tune_steps: int = 10, timeout: float = 180.0) -> dict:
    """Many users at once through gradio_client: every client alternates photo analysis and synthesis for
    `seconds`, while `fine_tunes` fine-tunes wait their turn in the fine-tune queue (one runs at a time).

    Synthesis is the Synthesize tab's render (/synthesize) when a generator is shipped, otherwise the part of
    the tab that works without one (/parse_text). url: an app already running; else `python app.py` is started.
    """
    import tempfile
    import threading

    os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
    from gradio_client import Client, handle_file

    from core.labels import AUS, EXPRESSIONS
    from core.weights import REGISTRY, WEIGHTS_DIR

    process, app_start_s = None, None
    if url is None:
        started = time.perf_counter()
        process, url = serve_app()
        app_start_s = round(time.perf_counter() - started, 2)  # `python app.py` until the page answers
    workdir = Path(tempfile.mkdtemp(prefix="expressionlab-load-"))
    try:
        photos, upload = load_inputs(workdir, data_dir)
        shipped = "generator" in REGISTRY and (WEIGHTS_DIR / REGISTRY["generator"].file).is_file()
        sentences = ["a slightly surprised woman raising her eyebrows", "a very happy man with a broad smile",
                     "an angry face, frowning", "someone looking sad"]

        def synthesis_args(i: int) -> tuple[tuple, str]:
            if shipped:
                controls = [1.0 if k == i % len(EXPRESSIONS) else 0.0 for k in range(len(EXPRESSIONS))]
                return ("New person", None, i % 1000, 0.0, *controls, 1.0, False, *[0.0] * len(AUS)), "/synthesize"
            return (sentences[i % len(sentences)],), "/parse_text"

        def connect() -> Client:
            return Client(url, verbose=False, analytics_enabled=False, download_files=str(workdir / "downloads"))

        # Warm-up (not counted): load the models each endpoint needs once.
        warm = connect()
        for photo in photos:
            warm.predict(handle_file(str(photo)), api_name="/analyse_photo")
        args, endpoint = synthesis_args(0)
        warm.predict(*args, api_name=endpoint)

        # Fine-tunes first, so they queue behind each other while the load runs.
        tune_clients = [connect() for _ in range(fine_tunes)]
        tune_jobs, tune_started = [], time.monotonic()
        for client in tune_clients:
            tune_jobs.append(client.submit([handle_file(str(upload))], "(from folders or CSV)", fine_tune_steps, False,
                                           api_name="/fine_tune"))
        queued_at: dict[int, float] = {}
        running_at: dict[int, float] = {}
        finished_at: dict[int, float] = {}
        watching = threading.Event()

        def watch():  # what each fine-tune's client was told: waiting in the queue (with its rank), running, done
            while not watching.is_set() and len(finished_at) < len(tune_jobs):
                for k, job in enumerate(tune_jobs):
                    now = time.monotonic() - tune_started
                    code = "FINISHED" if job.done() else job.status().code.value
                    if code == "IN_QUEUE":
                        queued_at.setdefault(k, now)
                    elif code in ("PROCESSING", "ITERATING", "PROGRESS"):
                        running_at.setdefault(k, now)
                    elif code == "FINISHED":
                        finished_at.setdefault(k, now)
                time.sleep(0.1)

        watcher = threading.Thread(target=watch, daemon=True)
        watcher.start()

        latencies: dict[str, list[float]] = {"/analyse_photo": [], endpoint: []}
        errors: list[str] = []
        unanswered = [0]
        lock = threading.Lock()
        deadline = time.monotonic() + seconds

        def user(index: int):
            try:
                client = connect()
            except Exception as error:  # noqa: BLE001 -- counted, reported
                with lock:
                    errors.append(f"connect: {type(error).__name__}: {error}")
                return
            i = index
            while time.monotonic() < deadline:
                if i % 2 == 0:
                    name, args = "/analyse_photo", (handle_file(str(photos[(i // 2) % len(photos)])),)
                else:
                    args, name = synthesis_args(i)
                started = time.perf_counter()
                try:
                    client.submit(*args, api_name=name).result(timeout=timeout)
                    with lock:
                        latencies[name].append((time.perf_counter() - started) * 1000)
                except TimeoutError:
                    with lock:
                        unanswered[0] += 1
                except Exception as error:  # noqa: BLE001 -- counted, reported
                    with lock:
                        errors.append(f"{name}: {type(error).__name__}: {error}"[:300])
                i += 1

        threads = [threading.Thread(target=user, args=(k,), daemon=True) for k in range(clients)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        load_seconds = time.monotonic() - (deadline - seconds)

        tune_errors = []
        for job in tune_jobs:
            try:
                outputs = job.result(timeout=timeout)
                if not str(outputs[3]).startswith("**After:**"):
                    tune_errors.append(f"no result: {str(outputs[3])[:200]}")
            except Exception as error:  # noqa: BLE001 -- counted, reported
                tune_errors.append(f"{type(error).__name__}: {error}"[:300])
        watching.set()
        watcher.join(timeout=5)

        everything = [v for values in latencies.values() for v in values]
        requests = len(everything) + len(errors) + unanswered[0]
        return {
            "app_start_s": app_start_s,
            "clients": clients,
            "seconds": round(load_seconds, 1),
            "requests": requests,
            "errors": len(errors) + unanswered[0] + len(tune_errors),
            "unanswered": unanswered[0],
            "p95_ms": round(float(np.percentile(everything, 95)), 1) if everything else None,
            "median_ms": round(float(np.median(everything)), 1) if everything else None,
            "by_endpoint": {name: {"n": len(v), "median_ms": round(float(np.median(v)), 1) if v else None,
                                   "p95_ms": round(float(np.percentile(v, 95)), 1) if v else None}
                            for name, v in latencies.items()},
            "synthesis": endpoint if shipped else "/parse_text (no generator shipped)",
            "fine_tunes": {"submitted": len(tune_jobs), "completed": len(tune_jobs) - len(tune_errors),
                           "steps": fine_tune_steps, "waited_in_queue": [k in queued_at for k in range(len(tune_jobs))],
                           **{f"{name}_after_s": [round(when[k], 1) if k in when else None for k in range(len(tune_jobs))]
                              for name, when in (("started", running_at), ("finished", finished_at))}},
            "error_messages": (errors + tune_errors)[:5],
        }
    finally:
        import shutil

        shutil.rmtree(workdir, ignore_errors=True)
        if process is not None:
            process.terminate()
            try:
                process.wait(timeout=30)
            except Exception:  # noqa: BLE001 -- it would not stop: make it
                process.kill()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m core.bench")
    parser.add_argument("what", choices=("live", "synth", "finetune", "load"))
    parser.add_argument("--data", default=str(Path(__file__).resolve().parent.parent.parent / "shared" / "data"
                                              / "fer2013plus"))
    parser.add_argument("--frames", type=int, default=200)
    parser.add_argument("--steps", type=int, default=150, help="finetune: joint steps (the tab's default)")
    parser.add_argument("--uploads", type=int, default=500, help="finetune: images in the upload to ingest")
    parser.add_argument("--frozen-stages", type=int, default=None, help="finetune: override the tab's frozen R stages")
    parser.add_argument("--clients", type=int, default=8, help="load: concurrent gradio clients")
    parser.add_argument("--seconds", type=float, default=60.0, help="load: how long the clients keep calling")
    parser.add_argument("--url", default=None, help="load: a running app (default: start python app.py)")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args(argv)
    result = {"live": lambda: bench_live(args.frames), "synth": lambda: bench_synth(args.frames // 2),
              "finetune": lambda: bench_finetune(args.data, args.steps, args.uploads, args.frozen_stages),
              "load": lambda: bench_load(args.clients, args.seconds, args.url, args.data)}[args.what]()
    sys.stdout.write(json.dumps(result if args.json else result, indent=None if args.json else 2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
