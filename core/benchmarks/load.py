"""Load benchmark: gradio clients against the served app."""

from __future__ import annotations

import os
import sys
import threading
import time
from dataclasses import dataclass, field
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


SENTENCES = ["a slightly surprised woman raising her eyebrows", "a very happy man with a broad smile",
             "an angry face, frowning", "someone looking sad"]


def synthesis_request(i: int, shipped: bool) -> tuple[tuple, str]:
    """(arguments, endpoint) of the i-th synthesis call: the Synthesize render, or the text parser without G."""
    from core.labels import AUS, EXPRESSIONS

    if shipped:
        controls = [1.0 if k == i % len(EXPRESSIONS) else 0.0 for k in range(len(EXPRESSIONS))]
        return ("New person", None, i % 1000, 0.0, *controls, 1.0, False, *[0.0] * len(AUS)), "/synthesize"
    return (SENTENCES[i % len(SENTENCES)],), "/parse_text"


def warm_up(client, photos: list[Path], shipped: bool) -> None:
    """Not counted: load the models each endpoint needs once."""
    from gradio_client import handle_file

    for photo in photos:
        client.predict(handle_file(str(photo)), api_name="/analyse_photo")
    args, endpoint = synthesis_request(0, shipped)
    client.predict(*args, api_name=endpoint)


@dataclass
class FineTuneQueue:
    """Fine-tunes submitted at once (they queue behind each other), and what each one's client was told when."""
    jobs: list
    started: float = field(default_factory=time.monotonic)
    queued_at: dict[int, float] = field(default_factory=dict)
    running_at: dict[int, float] = field(default_factory=dict)
    finished_at: dict[int, float] = field(default_factory=dict)
    stop: threading.Event = field(default_factory=threading.Event)

    @classmethod
    def submit(cls, clients: list, upload: Path, steps: int) -> FineTuneQueue:
        from gradio_client import handle_file

        queue = cls([])
        for client in clients:
            queue.jobs.append(client.submit([handle_file(str(upload))], "(from folders or CSV)", steps, False,
                                            api_name="/fine_tune"))
        return queue

    def watch(self) -> None:
        """Thread body: waiting in the queue (with its rank), running, done; polled every 0.1 s."""
        while not self.stop.is_set() and len(self.finished_at) < len(self.jobs):
            for k, job in enumerate(self.jobs):
                now = time.monotonic() - self.started
                code = "FINISHED" if job.done() else job.status().code.value
                if code == "IN_QUEUE":
                    self.queued_at.setdefault(k, now)
                elif code in ("PROCESSING", "ITERATING", "PROGRESS"):
                    self.running_at.setdefault(k, now)
                elif code == "FINISHED":
                    self.finished_at.setdefault(k, now)
            time.sleep(0.1)

    def results(self, timeout: float) -> list[str]:
        """Wait for every fine-tune; the errors (a run without an "After" result counts as one)."""
        errors = []
        for job in self.jobs:
            try:
                outputs = job.result(timeout=timeout)
                if not str(outputs[3]).startswith("**After:**"):
                    errors.append(f"no result: {str(outputs[3])[:200]}")
            except Exception as error:  # noqa: BLE001 -- counted, reported
                errors.append(f"{type(error).__name__}: {error}"[:300])
        return errors

    def summary(self, steps: int, errors: list[str]) -> dict:
        n = len(self.jobs)
        return {"submitted": n, "completed": n - len(errors), "steps": steps,
                "waited_in_queue": [k in self.queued_at for k in range(n)],
                **{f"{name}_after_s": [round(when[k], 1) if k in when else None for k in range(n)]
                   for name, when in (("started", self.running_at), ("finished", self.finished_at))}}


@dataclass
class LoadTally:
    """Latencies by endpoint, errors and unanswered requests of the clients, under one lock."""
    latencies: dict[str, list[float]]
    errors: list[str] = field(default_factory=list)
    unanswered: int = 0
    lock: threading.Lock = field(default_factory=threading.Lock)


def user(index: int, connect, photos: list[Path], shipped: bool, deadline: float, timeout: float,
         tally: LoadTally) -> None:
    """One client until the deadline: even calls analyse a photo, odd calls synthesise."""
    from gradio_client import handle_file

    try:
        client = connect()
    except Exception as error:  # noqa: BLE001 -- counted, reported
        with tally.lock:
            tally.errors.append(f"connect: {type(error).__name__}: {error}")
        return
    i = index
    while time.monotonic() < deadline:
        if i % 2 == 0:
            name, args = "/analyse_photo", (handle_file(str(photos[(i // 2) % len(photos)])),)
        else:
            args, name = synthesis_request(i, shipped)
        started = time.perf_counter()
        try:
            client.submit(*args, api_name=name).result(timeout=timeout)
            with tally.lock:
                tally.latencies[name].append((time.perf_counter() - started) * 1000)
        except TimeoutError:
            with tally.lock:
                tally.unanswered += 1
        except Exception as error:  # noqa: BLE001 -- counted, reported
            with tally.lock:
                tally.errors.append(f"{name}: {type(error).__name__}: {error}"[:300])
        i += 1


def run_clients(clients: int, seconds: float, connect, photos: list[Path], shipped: bool, timeout: float
                ) -> tuple[LoadTally, float]:
    """`clients` users at once for `seconds`; (their tally, the seconds the load actually lasted)."""
    _, endpoint = synthesis_request(0, shipped)
    tally = LoadTally({"/analyse_photo": [], endpoint: []})
    deadline = time.monotonic() + seconds
    threads = [threading.Thread(target=user, args=(k, connect, photos, shipped, deadline, timeout, tally), daemon=True)
               for k in range(clients)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return tally, time.monotonic() - (deadline - seconds)


def _latency(values: list[float]) -> dict:
    return {"median_ms": round(float(np.median(values)), 1) if values else None,
            "p95_ms": round(float(np.percentile(values, 95)), 1) if values else None}


def load_summary(app_start_s: float | None, clients: int, load_seconds: float, tally: LoadTally, shipped: bool,
                 tunes: dict, tune_errors: list[str]) -> dict:
    """The bench's JSON report."""
    everything = [v for values in tally.latencies.values() for v in values]
    overall = _latency(everything)
    _, endpoint = synthesis_request(0, shipped)
    return {
        "app_start_s": app_start_s,
        "clients": clients,
        "seconds": round(load_seconds, 1),
        "requests": len(everything) + len(tally.errors) + tally.unanswered,
        "errors": len(tally.errors) + tally.unanswered + len(tune_errors),
        "unanswered": tally.unanswered,
        "p95_ms": overall["p95_ms"],
        "median_ms": overall["median_ms"],
        "by_endpoint": {name: {"n": len(v), **_latency(v)} for name, v in tally.latencies.items()},
        "synthesis": endpoint if shipped else "/parse_text (no generator shipped)",
        "fine_tunes": tunes,
        "error_messages": (tally.errors + tune_errors)[:5],
    }


def stop_app(process) -> None:
    process.terminate()
    try:
        process.wait(timeout=30)
    except Exception:  # noqa: BLE001 -- it would not stop: make it
        process.kill()


def bench_load(clients: int = 8, seconds: float = 60.0, url: str | None = None, data_dir: str | None = None,
               fine_tunes: int = 2, fine_tune_steps: int = 10, timeout: float = 180.0) -> dict:
    """Many users at once through gradio_client: every client alternates photo analysis and synthesis for
    `seconds`, while `fine_tunes` fine-tunes wait their turn in the fine-tune queue (one runs at a time).

    Synthesis is the Synthesize tab's render (/synthesize) when a generator is shipped, otherwise the part of
    the tab that works without one (/parse_text). url: an app already running; else `python app.py` is started.
    """
    import shutil
    import tempfile

    os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
    from gradio_client import Client

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

        def connect() -> Client:
            return Client(url, verbose=False, analytics_enabled=False, download_files=str(workdir / "downloads"))

        warm_up(connect(), photos, shipped)
        # Fine-tunes first, so they queue behind each other while the load runs.
        tunes = FineTuneQueue.submit([connect() for _ in range(fine_tunes)], upload, fine_tune_steps)
        watcher = threading.Thread(target=tunes.watch, daemon=True)
        watcher.start()
        tally, load_seconds = run_clients(clients, seconds, connect, photos, shipped, timeout)
        tune_errors = tunes.results(timeout)
        tunes.stop.set()
        watcher.join(timeout=5)
        return load_summary(app_start_s, clients, load_seconds, tally, shipped,
                            tunes.summary(fine_tune_steps, tune_errors), tune_errors)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
        if process is not None:
            stop_app(process)
