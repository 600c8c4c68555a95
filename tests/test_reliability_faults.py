"""Faults: cancelled, crashed and abandoned requests, closed tabs, failed saves. The app keeps serving, each
session keeps the models it had, workers and temp files are freed; weights are verified, never unpickled."""

import os
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import gradio as gr
import pytest

from tests.conftest import ROOT

pytestmark = pytest.mark.reliability


def wait_for(condition, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return
        time.sleep(0.1)
    pytest.fail(f"gave up after {timeout:.0f} s waiting for {what}")


def fine_tune_workers(key: str) -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name in (f"fine-tune-{key}", f"fine-tune-read-{key}")]


@pytest.fixture(scope="module")
def faces_zip(data_dir, tmp_path_factory) -> Path:
    from core.benchmarks.finetune import fer_upload_zip

    path = tmp_path_factory.mktemp("faults") / "faces.zip"
    path.write_bytes(fer_upload_zip(str(data_dir), 16)[0])
    return path


def connect(app_url):
    from gradio_client import Client

    return Client(app_url, verbose=False, analytics_enabled=False)


def fine_tune_args(faces_zip: Path, steps: int):
    from gradio_client import handle_file

    return [handle_file(str(faces_zip))], "(from folders or CSV)", steps, False


def test_cancelled_fine_tune_leaves_the_session_on_its_previous_models(app_url, faces_zip, grace_hopper):
    from gradio_client import handle_file

    from demo.session_models import SESSION_MODELS

    client = connect(app_url)
    key = client.session_hash
    *_, download = client.predict(*fine_tune_args(faces_zip, 10), api_name="/fine_tune")
    assert [Path(p).name for p in download] == ["recognizer-finetuned.safetensors"]  # not joint: no generator
    assert Path(SESSION_MODELS._entries[key].temp_dir).is_relative_to(tempfile.gettempdir())  # never weights/
    client.predict(True, api_name="/use_fine_tuned")
    tuned = SESSION_MODELS._entries[key].recognizer
    _, cards_before, _ = client.predict(handle_file(str(grace_hopper)), api_name="/analyse_photo")

    job = client.submit(*fine_tune_args(faces_zip, 400), api_name="/fine_tune")
    wait_for(lambda: any(t.name == f"fine-tune-{key}" for t in fine_tune_workers(key)) and len(job.outputs()) >= 2,
             60, "the second fine-tune to be training")
    job.cancel()
    wait_for(lambda: not fine_tune_workers(key), 30, "the cancelled fine-tune's worker to stop")
    entry = SESSION_MODELS._entries[key]
    assert entry.recognizer is tuned and entry.active  # the previous fine-tuned model, still switched on
    _, cards_after, _ = client.predict(handle_file(str(grace_hopper)), api_name="/analyse_photo")
    assert cards_after == cards_before
    # the fine-tune slot is free again: another visitor's fine-tune runs to the end
    outputs = connect(app_url).predict(*fine_tune_args(faces_zip, 10), api_name="/fine_tune")
    assert outputs[3].startswith("**After:**")


CLIENT_SCRIPT = """
import sys, time
from gradio_client import Client, handle_file
client = Client(sys.argv[1], verbose=False, analytics_enabled=False)
if sys.argv[2] == "fine_tune":
    job = client.submit([handle_file(sys.argv[3])], "(from folders or CSV)", 400, False, api_name="/fine_tune")
else:
    job = client.submit(handle_file(sys.argv[3]), api_name="/analyse_photo")
print(client.session_hash, flush=True)
while True:
    time.sleep(1)
"""


def start_client(app_url, endpoint: str, path: Path) -> tuple[subprocess.Popen, str]:
    env = {**os.environ, "GRADIO_ANALYTICS_ENABLED": "False", "HF_HUB_OFFLINE": "1"}
    process = subprocess.Popen([sys.executable, "-c", CLIENT_SCRIPT, app_url, endpoint, str(path)], cwd=ROOT, env=env,
                               stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    return process, process.stdout.readline().strip()


def test_a_client_killed_mid_fine_tune_frees_its_worker_and_the_app_keeps_serving(app_url, faces_zip, grace_hopper,
                                                                                  tmp_path):
    from gradio_client import handle_file
    from PIL import Image

    from demo.session_models import SESSION_MODELS

    process, key = start_client(app_url, "fine_tune", faces_zip)
    try:
        assert key, "the client did not start"
        wait_for(lambda: any(t.name == f"fine-tune-{key}" for t in fine_tune_workers(key)), 60,
                 "the killed client's fine-tune to be training")
    finally:
        process.send_signal(signal.SIGKILL)
        process.wait(timeout=30)
    wait_for(lambda: not fine_tune_workers(key), 60, "the abandoned fine-tune's worker to stop")
    entry = SESSION_MODELS._entries.get(key)
    assert entry is None or entry.recognizer is None  # nothing was kept for a client that went away

    big = tmp_path / "big.jpg"  # a request that takes a while, abandoned as it runs
    Image.open(grace_hopper).convert("RGB").resize((4800, 4096)).save(big, quality=90)
    process, _ = start_client(app_url, "analyse_photo", big)
    time.sleep(1.0)
    process.send_signal(signal.SIGKILL)
    process.wait(timeout=30)

    client = connect(app_url)
    _, _, summary = client.predict(handle_file(str(grace_hopper)), api_name="/analyse_photo")
    assert summary == "1 face(s) found."
    outputs = client.predict(*fine_tune_args(faces_zip, 10), api_name="/fine_tune")
    assert outputs[3].startswith("**After:**")  # the fine-tune slot was given back


def test_crashed_or_unsaved_fine_tunes_keep_the_session_models(app_url, faces_zip, grace_hopper, monkeypatch):
    import core.training.finetune
    import demo.finetune
    from core import get_recognizer
    from demo.session_models import SESSION_MODELS

    client = connect(app_url)
    key = client.session_hash
    previous = get_recognizer()
    SESSION_MODELS.set(key, previous, None)
    SESSION_MODELS.entry(key).active = True
    real_fine_tune = core.training.finetune.fine_tune

    def crash(recognizer, synthesizer, images, labels, config, on_step=None, should_stop=None, **kwargs):
        on_step({"step": 1, "loss_real": 1.0})
        raise RuntimeError("simulated crash in training")

    monkeypatch.setattr(core.training.finetune, "fine_tune", crash)
    with pytest.raises(Exception, match=r"Fine-tuning failed; your models are unchanged \(RuntimeError\)") as caught:
        client.predict(*fine_tune_args(faces_zip, 10), api_name="/fine_tune")
    assert "simulated crash" not in str(caught.value)  # the exception's own text stays in the server log
    assert SESSION_MODELS._entries[key].recognizer is previous and not fine_tune_workers(key)

    monkeypatch.setattr(core.training.finetune, "fine_tune", real_fine_tune)
    def disk_full(key, recognizer):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(demo.finetune, "_export", disk_full)
    with pytest.raises(Exception, match="Saving the fine-tuned model failed; your models are unchanged"):
        client.predict(*fine_tune_args(faces_zip, 10), api_name="/fine_tune")
    assert SESSION_MODELS._entries[key].recognizer is previous

    monkeypatch.setattr(previous.__class__, "predict", lambda self, image, detector=None: 1 / 0)
    from gradio_client import handle_file
    from gradio_client.exceptions import AppError

    with pytest.raises(AppError):  # an unexpected failure: this request fails, nothing else does
        client.predict(handle_file(str(grace_hopper)), api_name="/analyse_photo")
    monkeypatch.undo()
    _, _, summary = client.predict(handle_file(str(grace_hopper)), api_name="/analyse_photo")
    assert summary == "1 face(s) found."
    client.predict(api_name="/reset_models")


def test_closing_the_tab_frees_the_session(app_url, monkeypatch):
    """A browser that goes away drops its heartbeat connection: gradio runs the unload event, which frees the
    session's webcam tracker, fine-tuned models and temp dir."""
    import http.client
    import urllib.parse

    from core import get_recognizer
    from demo.live import SESSIONS
    from demo.session_models import SESSION_MODELS

    monkeypatch.setenv("GRADIO_HEARTBEAT_INTERVAL", "0.3")  # read per connection: notice the close quickly
    key = "reliability-closed-tab"
    SESSIONS.get(key)
    SESSION_MODELS.set(key, get_recognizer(), None)
    temp_dir = Path(SESSION_MODELS.entry(key).temp_dir)
    (temp_dir / "recognizer-finetuned.safetensors").write_bytes(b"x")
    url = urllib.parse.urlparse(app_url)
    connection = http.client.HTTPConnection(url.hostname, url.port, timeout=10)
    connection.request("GET", f"/gradio_api/heartbeat/{key}")
    response = connection.getresponse()
    assert response.status == 200 and b"ALIVE" in response.readline()
    connection.sock.shutdown(2)
    connection.close()
    wait_for(lambda: key not in SESSION_MODELS._entries and not temp_dir.exists(), 30, "the unload event")
    assert key not in SESSIONS._sessions


def test_idle_sessions_are_freed(monkeypatch):
    """API clients never close a tab: their fine-tuned models and temp files go after SessionModels.IDLE_S."""
    from demo.session_models import SessionModels

    models = SessionModels()
    stale = Path(models.entry("stale").temp_dir)
    monkeypatch.setattr(SessionModels, "IDLE_S", -1)
    fresh = Path(models.entry("fresh").temp_dir)
    assert not stale.exists() and fresh.exists() and len(models) == 1
    models.reset("fresh")
    assert not fresh.exists() and len(models) == 0


def test_saving_weights_is_atomic(tmp_path, monkeypatch):
    import torch

    import core.weights as weights
    from core.weights import read_safetensors, save_safetensors, sha256_of

    path = tmp_path / "model.safetensors"
    save_safetensors(path, {"w": torch.ones(3)}, {"kind": "test"})
    digest = sha256_of(path)

    def fail_midway(tensors, filename, metadata=None):
        Path(filename).write_bytes(b"half a file")
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(weights, "save_file", fail_midway)
    with pytest.raises(OSError):
        save_safetensors(path, {"w": torch.zeros(3)}, {"kind": "test"})
    assert sha256_of(path) == digest and read_safetensors(path)[0]["w"].sum() == 3  # the old file, whole
    assert [p.name for p in tmp_path.iterdir()] == ["model.safetensors"]  # no temp file left behind


def test_shipped_weights_are_verified_and_untouched(tmp_path, monkeypatch):
    import core.weights as weights
    from core.errors import WeightsError
    from core.weights import REGISTRY, WEIGHTS_DIR, load_weights, sha256_of

    for info in REGISTRY.values():
        assert sha256_of(WEIGHTS_DIR / info.file) == info.sha256  # after everything the suite did
    tampered = bytearray((WEIGHTS_DIR / REGISTRY["recognizer"].file).read_bytes())
    tampered[len(tampered) // 2] ^= 0x01
    (tmp_path / REGISTRY["recognizer"].file).write_bytes(bytes(tampered))
    monkeypatch.setattr(weights, "WEIGHTS_DIR", tmp_path)
    with pytest.raises(WeightsError, match="sha256"):
        load_weights("recognizer")


def test_nothing_is_unpickled(tmp_path):
    """No pickle, torch.load or allow_pickle in our code; and torch's default loader, should anything underneath
    call it, is weights-only: it refuses code in a pickle."""
    import pickle

    import torch

    sources = [*(ROOT / "core").glob("*.py"), *(ROOT / "demo").glob("*.py"), ROOT / "app.py"]
    for path in sources:
        text = path.read_text()
        for needle in ("import pickle", "pickle.load", "torch.load(", "allow_pickle=True", "joblib", "dill",
                       "marshal.load", "weights_only=False"):
            assert needle not in text, f"{path.name} uses {needle}"

    class Exploit:
        def __reduce__(self):
            return (os.system, (f"touch {tmp_path / 'pwned'}",))

    bad = tmp_path / "bad.pt"
    bad.write_bytes(pickle.dumps(Exploit(), protocol=2))
    with pytest.raises(pickle.UnpicklingError):
        torch.load(bad)
    assert not (tmp_path / "pwned").exists()


def test_ingestion_writes_nothing_to_disk(monkeypatch):
    """Uploads are read in memory: not one file is opened for writing while a hostile zip is ingested."""
    import builtins

    from core.training.ingest import ingest_upload
    from tests.reliability_cases import BoxDetector, encode, make_zip, noise

    data = make_zip({"../../escape.png": encode(noise()), "/tmp/abs.png": encode(noise()), "happy/a.png": encode(noise()),
                     "happy/b.csv": b"a.png,happy\n"}, symlinks=("happy/link.png",))
    writes = []
    real_open, real_os_open = builtins.open, os.open

    def guarded_open(file, mode="r", *args, **kwargs):
        if any(c in mode for c in "wax+"):
            writes.append(file)
        return real_open(file, mode, *args, **kwargs)

    def guarded_os_open(path, flags, *args, **kwargs):
        if flags & (os.O_WRONLY | os.O_RDWR | os.O_CREAT):
            writes.append(path)
        return real_os_open(path, flags, *args, **kwargs)

    monkeypatch.setattr(builtins, "open", guarded_open)
    monkeypatch.setattr(os, "open", guarded_os_open)
    result = ingest_upload([("upload.zip", data)], BoxDetector())
    monkeypatch.undo()
    assert result.names == ["happy/a.png"] and writes == []


def test_a_fine_tune_stops_at_its_wall_time(monkeypatch, faces_zip):
    """MAX_SECONDS bounds a fine-tune, reading included, whatever its steps."""
    import core.training.finetune
    import demo.finetune as tab
    from demo.session_models import SESSION_MODELS

    monkeypatch.setattr(tab, "MAX_SECONDS", 0)
    with pytest.raises(gr.Error, match="time limit .* reached while reading the upload"):
        for _ in tab.run_fine_tune([str(faces_zip)], None, 400, False):
            pass

    monkeypatch.setattr(tab, "MAX_SECONDS", 300)
    real_fine_tune = core.training.finetune.fine_tune

    def out_of_time_once_training(*args, **kwargs):
        monkeypatch.setattr(tab, "MAX_SECONDS", 0)
        return real_fine_tune(*args, **kwargs)

    monkeypatch.setattr(core.training.finetune, "fine_tune", out_of_time_once_training)
    try:
        *_, last = tab.run_fine_tune([str(faces_zip)], None, 400, False)
    finally:
        SESSION_MODELS.reset("anonymous")
    after = last[3]
    assert "stopped at the time limit" in after and int(after.split("(")[1].split()[0]) < 400


def test_a_late_cancel_or_a_reset_during_a_fine_tune_installs_nothing(monkeypatch, faces_zip):
    """Cancel pressed after training ended (gradio can no longer interrupt the run) or Reset pressed while it
    trains: the run finishes without switching the session to its models."""
    import core.training.finetune
    import demo.finetune as tab
    from core import get_recognizer
    from demo.session_models import SESSION_MODELS

    previous = get_recognizer()
    real_fine_tune = core.training.finetune.fine_tune

    def cancelled_as_it_ends(*args, **kwargs):
        result = real_fine_tune(*args, **kwargs)
        tab.cancel_fine_tune(None)
        return result

    def reset_while_training(*args, on_step=None, **kwargs):
        def step(record):
            on_step(record)
            if record["step"] == 2:
                tab.reset_models(None)
        return real_fine_tune(*args, on_step=step, **kwargs)

    try:
        SESSION_MODELS.set("anonymous", previous, None)
        monkeypatch.setattr(core.training.finetune, "fine_tune", cancelled_as_it_ends)
        with pytest.raises(gr.Error, match="Cancelled: your models are unchanged"):
            for _ in tab.run_fine_tune([str(faces_zip)], None, 10, False):
                pass
        entry = SESSION_MODELS._entries["anonymous"]
        assert entry.recognizer is previous and not list(Path(entry.temp_dir).iterdir())

        monkeypatch.setattr(core.training.finetune, "fine_tune", reset_while_training)
        updates = []
        with pytest.raises(gr.Error, match="Cancelled: your models are unchanged"):
            for update in tab.run_fine_tune([str(faces_zip)], None, 400, False):
                updates.append(update)
        assert SESSION_MODELS._entries.get("anonymous") is None  # the reset stands
        assert not fine_tune_workers("anonymous")
    finally:
        SESSION_MODELS.reset("anonymous")


def test_output_images_are_replaced_not_rewritten(tmp_path):
    """Two users who get the same picture share gradio's content-addressed file: it is swapped in by a rename,
    so a download already reading it keeps the whole old file (gradio 6.31 truncated it in place)."""
    import numpy as np
    from gradio import processing_utils
    from PIL import Image

    from demo.app import write_output_images_atomically

    write_output_images_atomically()
    image = Image.fromarray(np.full((32, 32, 3), 120, np.uint8))
    path = processing_utils.save_pil_to_cache(image, str(tmp_path))
    size = os.path.getsize(path)
    with open(path, "rb") as reading:
        inode = os.fstat(reading.fileno()).st_ino
        assert processing_utils.save_pil_to_cache(image, str(tmp_path)) == path
        assert os.stat(path).st_ino != inode and len(reading.read()) == size
    assert sorted(p.name for p in Path(path).parent.iterdir()) == [Path(path).name]  # no staging file left
