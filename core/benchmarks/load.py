"""Load benchmark: gradio clients against the served app."""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path

import numpy as np

from core.benchmarks.common import sample_face_photo
from core.benchmarks.finetune import fer_upload_zip


def serve_app(timeout: float = 120.0):
    """Start `python app.py` on a free loopback port; returns (process, url) once it answers."""
    import socket
    import subprocess
    import urllib.request

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    root = Path(__file__).resolve().parents[2]
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
