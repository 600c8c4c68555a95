"""Bad input everywhere a user can send something, table-driven: through the Python API (core.InputError
subclasses with a clear message) and through gradio_client / plain HTTP against the running app (a message
naming the problem, never a stack trace or a server path)."""

import io
import json
import re
import urllib.request
import zipfile

import gradio as gr
import numpy as np
import pytest
from PIL import Image

import core
from core.errors import ImageDecodeError, ImageTooLargeError, UnknownLabelError
from core.face.images import load_image
from core.labels import AUS, EXPRESSIONS
from core.text import MAX_TEXT_CHARS, parse_text
from core.training.ingest import MAX_FILES, MAX_TOTAL_BYTES, UploadError, ingest_upload, read_label_csv, read_zip
from tests.reliability_cases import (
    IMAGE_CASES,
    BoxDetector,
    encode,
    end_record_claiming,
    make_zip,
    noise,
    set_declared_size,
    zip_with_raw_entries,
)

pytestmark = pytest.mark.reliability

BAD_IMAGES = [c for c in IMAGE_CASES if isinstance(c[3][0], type)]
GOOD_IMAGES = [c for c in IMAGE_CASES if not isinstance(c[3][0], type)]


def controls(values=None, intensity=1.0, use_aus=False, aus=None):
    expression = [(values or {"happiness": 1.0}).get(name, 0.0) for name in EXPRESSIONS]
    return expression + [intensity, use_aus] + [(aus or {}).get(name, 0.0) for name in AUS]


def assert_clear(message: str, pattern: str = "") -> None:
    """A message people can act on: it says what is wrong and shows no internals."""
    assert re.search(pattern, message, re.IGNORECASE), message
    for internal in ("Traceback", 'File "', "/tmp/", "_io.", "upstream Gradio app has raised"):
        assert internal not in message, message


# ---------------------------------------------------------------- images, Python API

@pytest.mark.parametrize("name,suffix,data,expected", IMAGE_CASES, ids=[c[0] for c in IMAGE_CASES])
def test_image_decoding_table(name, suffix, data, expected):
    if isinstance(expected[0], type):
        with pytest.raises(expected[0]) as caught:
            load_image(data)
        assert isinstance(caught.value, core.InputError)
        assert_clear(str(caught.value), expected[1])
    else:
        rgb = load_image(data)
        assert rgb.shape == (*expected, 3) and rgb.dtype == np.uint8


def test_odd_image_objects_are_typed_errors(tmp_path):
    cases = [(np.zeros((0, 0, 3), np.uint8), "too small"), (np.zeros((1, 1), np.uint8), "too small"),
             (np.zeros((8, 8, 2), np.uint8), "shape"), (np.full((8, 8), np.inf), "NaN or infinite"),
             (np.zeros((8, 8, 3), object), "dtype"), (12345, "give a path"), (None, "give a path"),
             (tmp_path, "no image file"), (str(tmp_path / "missing.png"), "no image file")]
    for source, pattern in cases:
        with pytest.raises(core.InputError) as caught:
            load_image(source)
        assert re.search(pattern, str(caught.value)), (source, caught.value)
    big = np.zeros((7000, 6000), np.uint8)  # 42 MP, refused from its shape before any conversion
    with pytest.raises(ImageTooLargeError, match="limit"):
        load_image(big)


def test_recognizer_on_bad_and_odd_photos(recognizer, grace_hopper):
    with pytest.raises(ImageDecodeError):
        recognizer.predict(b"GIF89a not really")
    assert recognizer.predict(np.full((120, 160, 3), 90, np.uint8)) == []  # no face: an empty list
    photo = Image.open(grace_hopper).convert("RGB")
    for variant in (photo.convert("CMYK"), photo.convert("LA"), photo.convert("P"), photo.rotate(90, expand=True)):
        assert len(recognizer.predict(variant)) == 1
    for bad in (np.zeros((3, 8)), np.zeros((2, 48, 48)) + np.nan, np.zeros((2, 48, 48), object)):
        with pytest.raises(core.InputError):
            recognizer.predict_crops(bad)


def test_thirty_faces_are_cut_to_the_largest_ten(monkeypatch):
    from core.face.detection import FaceDetector
    from tests.reliability_cases import BoxDetector as Box

    detector = FaceDetector(mode="photo")
    faces = [Box().detect(np.zeros((10 + i, 10 + i, 3)))[0] for i in range(30)]
    monkeypatch.setattr(detector, "_detect_photo", lambda rgb: list(faces))
    found = detector.detect(np.zeros((64, 64, 3), np.uint8))
    assert len(found) == detector.max_faces == 10
    assert [f.area for f in found] == sorted((f.area for f in faces), reverse=True)[:10]


# ---------------------------------------------------------------- webcam frames (the stream handler)

@pytest.mark.parametrize("frame,pattern", [
    (np.zeros((0, 0, 3), np.uint8), "too small"),
    (np.zeros((1, 1, 3), np.uint8), "too small"),
    (np.zeros((48, 64, 2), np.uint8), "shape"),
    (np.full((48, 64, 3), np.nan, np.float32), "NaN"),
    (np.zeros((6100, 7000, 3), np.uint8), "limit"),
    (np.zeros((30, 40_000, 3), np.uint8), "longest side"),  # would abort the process inside MediaPipe
], ids=["0x0", "1x1", "two-channels", "nan", "42-megapixels", "40000-wide"])
def test_bad_webcam_frames_are_skipped_with_a_reason(frame, pattern):
    from demo.live import SESSIONS, live_frame

    request = type("Request", (), {"session_hash": "reliability-frames"})()
    annotated, probs, status, _ = live_frame(frame, True, request)
    assert annotated is None and probs == {}
    assert status.startswith("Frame skipped") and re.search(pattern, status), status
    SESSIONS.close("reliability-frames")


def test_odd_but_valid_webcam_frames_are_analysed():
    from demo.live import SESSIONS, live_frame

    request = type("Request", (), {"session_hash": "reliability-frames-ok"})()
    for frame in (np.full((48, 64), 128, np.uint8), np.zeros((48, 64, 4), np.uint8), np.zeros((48, 64, 3), np.float32)):
        annotated, probs, status, _ = live_frame(frame, False, request)
        assert annotated.shape == (48, 64, 3) and "no face" in status
    SESSIONS.close("reliability-frames-ok")


# ---------------------------------------------------------------- zips and CSVs, Python API

def png(value=128, size=(64, 64)) -> bytes:
    return encode(Image.new("L", size, value))


def test_zip_member_table():
    """Every unsafe member is turned away with its reason; the rest of the zip is used."""
    bomb = make_zip({"happy/bomb.png": bytes(5 * 1024 * 1024)})  # 5 MB of zeros: ratio ~1000
    data = make_zip({
        "happy/ok.png": png(), "sad/ok.jpg": encode(noise(), "JPEG"),
        "../escape.png": png(), "/etc/absolute.png": png(), "C:/windows.png": png(), "happy/../../up.png": png(),
        "happy/inner.zip": bomb, "happy/inner.tar.gz": b"x", "happy/notes.txt": b"x", "happy/script.sh": b"x",
        "happy/not-really.png": b"MZ\x90\x00 an executable", "bored/x.png": png(), "happy/big-ratio.png": bytes(5 << 20),
        "__MACOSX/._ok.png": b"", ".DS_Store": b"",
    }, symlinks=("happy/link.png",))
    result = ingest_upload([("upload.zip", data)], BoxDetector())
    reasons = dict(result.rejected)
    assert sorted(result.names) == ["happy/ok.png", "sad/ok.jpg"]
    for name in ("../escape.png", "/etc/absolute.png", "C:/windows.png", "happy/../../up.png"):
        assert "unsafe path" in reasons[name]
    assert reasons["happy/link.png"] == "symbolic link"
    assert reasons["happy/inner.zip"] == reasons["happy/inner.tar.gz"] == "nested archive"
    assert reasons["happy/notes.txt"] == reasons["happy/script.sh"] == "not an image file"
    assert "not a readable image" in reasons["happy/not-really.png"]
    assert "unknown expression 'bored'" in reasons["bored/x.png"]
    assert "compression ratio" in reasons["happy/big-ratio.png"]
    assert not any("MACOSX" in n or "DS_Store" in n for n in reasons)  # clutter is skipped silently


def test_zip_names_duplicates_and_encodings():
    cp437 = zip_with_raw_entries([(b"happy/caf\x82.png", png()), (b"happy/a.png", png()), (b"happy/a.png", png(200))])
    files, rejected = read_zip(cp437)
    assert [n for n, _ in files] == ["happy/café.png", "happy/a.png"]
    assert rejected == [("happy/a.png", "duplicate name")]
    bad_utf8 = zip_with_raw_entries([(b"happy/\xff\xfe.png", png())], utf8_flag=True)
    with pytest.raises(UploadError, match="not a readable zip"):
        read_zip(bad_utf8)


def test_zip_bombs_by_declared_and_actual_size():
    honest = make_zip({"happy/a.png": png(), "happy/b.png": png()}, compression=zipfile.ZIP_STORED)
    with pytest.raises(UploadError, match="would unpack to .* the limit is 200 MB"):
        read_zip(set_declared_size(honest, 150 * 1024 * 1024))  # declares 300 MB in all
    lying = make_zip({"happy/a.png": bytes(3 * 1024 * 1024)})  # declares 100 bytes, inflates to 3 MB
    files, rejected = read_zip(set_declared_size(lying, 100))
    assert files == [] and "corrupt member" in rejected[0][1]
    with pytest.raises(UploadError, match="MB; the limit is 200 MB"):
        read_zip(b"PK" + bytes(MAX_TOTAL_BYTES))


def test_thousands_of_files_are_refused_quickly():
    import time

    many = make_zip({f"happy/{i}.png": b"x" for i in range(MAX_FILES + 1)})
    with pytest.raises(UploadError, match=f"limit is {MAX_FILES}"):
        read_zip(many)
    started = time.perf_counter()
    with pytest.raises(UploadError, match="entries"):
        read_zip(make_zip({f"{i}": b"" for i in range(3 * MAX_FILES)}))
    with pytest.raises(UploadError, match="entries"):
        read_zip(end_record_claiming(2_000_000))  # refused from the end record: nothing is parsed
    assert time.perf_counter() - started < 5
    with pytest.raises(UploadError, match=f"the limit is {MAX_FILES}"):
        ingest_upload([(f"{i}.png", b"x") for i in range(MAX_FILES + 1)], BoxDetector(), batch_label="happy")
    many_zips = [(f"{k}.zip", make_zip({f"happy/{k}-{i}.png": png() for i in range(700)})) for k in range(3)]
    with pytest.raises(UploadError, match=f"more than {MAX_FILES} files"):
        ingest_upload(many_zips, BoxDetector())


@pytest.mark.parametrize("content,expected", [
    ("\ufefffilename,label\na.png,happy\nb.png,sad\n", {"a.png": "happy", "b.png": "sad"}),
    ("a.png;surprised\nb.png;angry\n", {"a.png": "surprised", "b.png": "angry"}),
    ("file\tlabel\na.png\tfear\n", {"a.png": "fear"}),
    ("\r\n\r\nimages/A.PNG , Happy \r\n", {"a.png": "Happy"}),
    ("caf\xe9.png,happy\n".encode("latin-1"), {"café.png": "happy"}),
    ("a.png|happy\n", (UploadError, "two columns.*comma, semicolon or tab")),
    ("", (UploadError, "no filename,label rows")),
    ("filename,label\n", (UploadError, "no filename,label rows")),
    ("a.png," + "x" * 200_000 + "\n", (UploadError, "cannot be read")),
    ('a.png,"happy\n' + "x" * 200_000, (UploadError, "cannot be read")),
], ids=["bom-comma", "semicolon", "tab-header", "crlf-blank-lines", "latin-1", "pipe", "empty", "header-only",
        "huge-field", "unclosed-quote"])
def test_label_csv_table(content, expected):
    data = content if isinstance(content, bytes) else content.encode()
    if isinstance(expected, dict):
        assert read_label_csv(data) == expected
    else:
        with pytest.raises(expected[0]) as caught:
            read_label_csv(data)
        assert_clear(str(caught.value), expected[1])
        assert len(str(caught.value)) < 300


def test_csv_with_unknown_labels_missing_and_unlisted_files():
    csv_bytes = b"filename,label\na.png,happy\nb.png,bored\ngone1.png,sad\ngone2.png,sad\n"
    files = [("a.png", png()), ("b.png", png()), ("c.png", png()), ("labels.csv", csv_bytes)]
    result = ingest_upload(files, BoxDetector())
    reasons = dict(result.rejected)
    assert result.names == ["a.png"]
    assert "unknown expression 'bored'" in reasons["b.png"] and reasons["c.png"] == "not listed in the CSV"
    assert reasons["(CSV)"] == "2 listed file(s) not in the upload: gone1.png, gone2.png"
    with pytest.raises(UploadError, match="more than one CSV"):
        ingest_upload([("a.csv", csv_bytes), ("b.csv", csv_bytes)], BoxDetector())


def test_unreadable_upload_paths_and_stopping(tmp_path):
    with pytest.raises(UploadError, match="cannot read the upload"):
        ingest_upload([str(tmp_path / "gone.zip")], BoxDetector())
    with pytest.raises(UploadError, match="cannot read the upload"):
        ingest_upload([str(tmp_path)], BoxDetector())
    files = [(f"{i}.png", png()) for i in range(10)]
    with pytest.raises(UploadError, match="stopped after 0 of 10"):
        ingest_upload(files, BoxDetector(), batch_label="happy", should_stop=lambda: True)


# ---------------------------------------------------------------- text, sliders and synthesis, Python API

def test_text_table():
    for text in ("", "   ", "\x00\x01\x02", "😀" * MAX_TEXT_CHARS, "a happy man " * 40, "DROP TABLE faces;--"):
        reading = parse_text(text, use_embeddings=False)
        assert abs(sum(reading.expression.values()) - 1) < 1e-6
    for bad, pattern in ((None, "must be text"), (b"happy", "must be text"), (42, "must be text"),
                         ("x" * (MAX_TEXT_CHARS + 1), f"limit is {MAX_TEXT_CHARS}")):
        with pytest.raises(core.InputError, match=pattern):
            parse_text(bad)


def test_the_longest_text_is_read_in_bounded_time():
    import time

    started = time.perf_counter()
    parse_text("a " * (MAX_TEXT_CHARS // 2))  # the most words (windows to embed) the limit allows
    assert time.perf_counter() - started < 60


BAD_CONTROLS = [
    (dict(expression={"happiness": float("nan")}), "expression weight of 'happiness'"),
    (dict(expression={"happiness": -0.1}), r"\[0, 1\]"),
    (dict(expression={"happiness": 1.5}), r"\[0, 1\]"),
    (dict(expression={"bored": 1.0}), "unknown expression 'bored'"),
    (dict(expression=["happiness"]), "a name or a dict"),
    (dict(aus={"AU99": 0.5}), "unknown action unit"),
    (dict(aus={"AU12": float("inf")}), "intensity of AU12"),
    (dict(aus=[0.5]), "dict"),
    (dict(intensity=float("nan")), "intensity"),
    (dict(intensity="very"), "intensity"),
    (dict(guidance=-1.0), "guidance"),
    (dict(guidance=float("nan")), "guidance"),
    (dict(guidance=11), "guidance"),
]


@pytest.mark.parametrize("kwargs,pattern", BAD_CONTROLS, ids=[str(k) for k, _ in BAD_CONTROLS])
def test_synthesis_controls_table(kwargs, pattern):
    from core.synthesizer import check_controls

    with pytest.raises(core.InputError, match=pattern):
        check_controls(**kwargs)


def test_synthesizer_api_refuses_bad_input(tiny_synthesizer, grace_hopper):
    from core.synthesizer import NoFaceError

    s = tiny_synthesizer
    for kwargs in BAD_CONTROLS:
        with pytest.raises(core.InputError):
            s.generate(**kwargs[0])
    for kwargs in (dict(n=0), dict(n=65), dict(seed="7"), dict(seed=1.5), dict(seed=True)):
        with pytest.raises(core.InputError):
            s.generate(**kwargs)
    with pytest.raises(core.InputError, match="steps"):
        s.morph(steps=1)
    with pytest.raises(NoFaceError):
        s.edit(np.full((100, 100, 3), 128, np.uint8))
    with pytest.raises(ImageDecodeError):
        s.edit(b"not an image")
    assert len(s.generate(seed=2**70, n=2)) == 2  # any integer seed is fine


@pytest.mark.parametrize("seed,guidance,values,intensity,pattern", [
    (0, 0.0, {"happiness": float("nan")}, 1.0, "expression weight"),
    (0, 0.0, {"happiness": -1.0}, 1.0, r"\[0, 1\]"),
    (0, 0.0, {"happiness": 1.0}, 2.0, "intensity"),
    (0, float("nan"), {"happiness": 1.0}, 1.0, "guidance"),
    (float("nan"), 0.0, {"happiness": 1.0}, 1.0, "Invalid control value"),
    (float("inf"), 0.0, {"happiness": 1.0}, 1.0, "Invalid control value"),
    ("seven", 0.0, {"happiness": 1.0}, 1.0, "Invalid control value"),
    (None, 0.0, {"happiness": 1.0}, 1.0, "Invalid control value"),
], ids=["nan-weight", "negative-weight", "intensity-2", "nan-guidance", "nan-seed", "inf-seed", "text-seed",
        "no-seed"])
def test_synthesize_tab_names_bad_controls_without_loading_a_model(seed, guidance, values, intensity, pattern,
                                                                    monkeypatch):
    import demo.synthesize as tab

    monkeypatch.setattr(tab, "_synthesizer", lambda request=None: pytest.fail("a model was loaded"))
    with pytest.raises(gr.Error) as caught:
        tab.render_synthesis("New person", None, seed, guidance, 1.0, *controls(values, intensity))
    assert_clear(caught.value.message, pattern)
    with pytest.raises(gr.Error, match=f"expected {len(EXPRESSIONS) + 2 + len(AUS)} control values"):
        tab.render_synthesis("New person", None, 0, 0.0, 1.0, 0.5)


@pytest.mark.parametrize("name,suffix,data,expected", BAD_IMAGES, ids=[c[0] for c in BAD_IMAGES])
def test_my_face_photo_is_checked_before_any_model(name, suffix, data, expected, tmp_path, monkeypatch):
    import demo.synthesize as tab

    monkeypatch.setattr(tab, "_synthesizer", lambda request=None: pytest.fail("a model was loaded"))
    path = tmp_path / f"{name}.{suffix}"
    path.write_bytes(data)
    with pytest.raises(gr.Error) as caught:
        tab.render_synthesis("My face", str(path), 0, 0.0, 1.0, *controls())
    assert_clear(caught.value.message, expected[1])


def test_fine_tune_tab_checks_its_controls():
    from demo.finetune import MAX_STEPS, run_fine_tune

    upload = ["faces.zip"]
    for files, label, steps, pattern in (
        (None, None, 20, "Upload a zip"), ([], None, 20, "Upload a zip"),
        (upload, None, float("nan"), "between 10 and"), (upload, None, float("inf"), "between 10 and"),
        (upload, None, 5, "between 10 and"), (upload, None, MAX_STEPS + 1, "between 10 and"),
        (upload, None, "many", "must be a number"), (upload, None, None, "must be a number"),
        (upload, "bored", 20, "unknown expression 'bored'"),
    ):
        with pytest.raises(gr.Error) as caught:
            next(run_fine_tune(files, label, steps, False))
        assert_clear(caught.value.message, pattern)


def test_every_user_error_in_core_is_an_input_error():
    """core.InputError is the one class to catch: every exception core raises for bad input subclasses it."""
    import importlib
    import inspect

    user_facing = []
    for module in ("errors", "face.images", "training.ingest", "labels", "text", "synthesizer", "recognizer",
                   "face.detection", "face.alignment", "face.tracking", "training.data", "training.joint",
                   "training.finetune"):
        for _, cls in inspect.getmembers(importlib.import_module(f"core.{module}"), inspect.isclass):
            if issubclass(cls, Exception) and cls.__module__.startswith("core."):
                user_facing.append(cls)
    names = {cls.__name__ for cls in user_facing}
    assert {"ImageDecodeError", "ImageTooLargeError", "UnknownLabelError", "DatasetError", "UploadError",
            "NoFaceError"} <= names
    for cls in user_facing:
        if cls.__name__ not in ("ExpressionLabError", "WeightsError"):  # not the user's doing
            assert issubclass(cls, core.InputError), cls
    assert issubclass(UnknownLabelError, core.InputError) and core.InputError is core.errors.InputError


# ---------------------------------------------------------------- the running app, through gradio_client

@pytest.fixture(scope="module")
def client(app_url):
    from gradio_client import Client

    return Client(app_url, verbose=False, analytics_enabled=False)


def app_error(call) -> str:
    with pytest.raises(Exception) as caught:
        call()
    assert type(caught.value).__name__ == "AppError", caught.value
    return str(caught.value)


def test_photo_upload_table_through_the_app(client, tmp_path):
    from gradio_client import handle_file

    for name, suffix, data, expected in IMAGE_CASES:
        path = tmp_path / f"{name}.{suffix}"
        path.write_bytes(data)
        if isinstance(expected[0], type):
            message = app_error(lambda p=path: client.predict(handle_file(str(p)), api_name="/analyse_photo"))
            assert_clear(message, expected[1])
        else:
            _, _, summary = client.predict(handle_file(str(path)), api_name="/analyse_photo")
            assert summary == "No face found in this photo.", (name, summary)
    text = tmp_path / "notes.txt"
    text.write_text("hello")
    assert_clear(app_error(lambda: client.predict(handle_file(str(text)), api_name="/analyse_photo")),
                 "Invalid file type")
    assert_clear(app_error(lambda: client.predict(None, api_name="/analyse_photo")), "Upload a photo first")


def test_odd_real_photos_through_the_app(client, grace_hopper, tmp_path):
    from gradio_client import handle_file

    photo = Image.open(grace_hopper).convert("RGB")
    grid = Image.new("RGB", (6 * 250, 5 * 214), (90, 90, 90))
    for i in range(30):
        grid.paste(photo.resize((240, 205)), ((i % 6) * 250, (i // 6) * 214))
    exif = photo.getexif()
    exif[0x0112] = 8  # stored sideways, shown upright
    cases = {"thirty-faces.jpg": encode(grid, "JPEG"), "cmyk.jpg": encode(photo.convert("CMYK"), "JPEG"),
             "sideways.jpg": encode(photo.rotate(-90, expand=True), "JPEG", exif=exif.tobytes()),
             "palette.png": encode(photo.convert("P")), "large.jpg": encode(photo.resize((4800, 4096)), "JPEG")}
    for name, data in cases.items():
        (tmp_path / name).write_bytes(data)
        _, _, summary = client.predict(handle_file(str(tmp_path / name)), api_name="/analyse_photo")
        count = int(summary.split()[0])
        assert (1 <= count <= 10) if name.startswith("thirty") else count == 1, (name, summary)


def test_my_face_photo_table_through_the_app(client, tmp_path):
    from gradio_client import handle_file

    for name, suffix, data, expected in BAD_IMAGES:
        path = tmp_path / f"{name}.{suffix}"
        path.write_bytes(data)
        message = app_error(lambda p=path: client.predict("My face", handle_file(str(p)), 0, 0.0, 1.0, *controls(),
                                                          api_name="/synthesize"))
        assert_clear(message, "" if name in ("decompression-bomb", "zero-by-zero") else expected[1])
        assert "photo" in message or "image" in message


def test_sliders_and_numbers_through_the_app(client, app_url):
    from core.weights import REGISTRY

    for args, pattern in ((("New person", None, 0, 0.0, 1.0, *controls({"happiness": -1.0})), "less than minimum"),
                          (("New person", None, 0, 0.0, 1.0, *controls({"happiness": 1e308})), "greater than maximum"),
                          (("New person", None, -5, 0.0, 1.0, *controls()), "less than minimum"),
                          (("New person", None, 0, 99.0, 1.0, *controls()), "greater than maximum")):
        assert_clear(app_error(lambda a=args: client.predict(*a, api_name="/synthesize")), pattern)
    # NaN is not JSON, so gradio_client cannot send it; a plain HTTP client can (Python's json reads NaN).
    for endpoint, data, pattern in (
        ("synthesize", ["New person", None, 0, 0.0, 1.0, *controls({"happiness": float("nan")})], "expression weight"),
        ("synthesize", ["New person", None, 0, float("nan"), 1.0, *controls()], "guidance"),
        ("synthesize", ["New person", None, float("nan"), 0.0, 1.0, *controls()], "seed"),
    ):
        event = http_call(app_url, endpoint, data)
        assert event.startswith("event: error"), event
        assert_clear(event, pattern)
    args = ("New person", None, 0, 0.0, 1.0, *controls())
    if "generator" in REGISTRY:
        _, reading, *_ = client.predict(*args, api_name="/synthesize")
        assert reading["label"] in EXPRESSIONS
    else:  # good controls get as far as the generator, which is not shipped yet: said plainly
        assert_clear(app_error(lambda: client.predict(*args, api_name="/synthesize")), "generator is not available")


def http_call(app_url: str, endpoint: str, data: list) -> str:
    body = json.dumps({"data": data}).encode()  # allow_nan (the default) writes NaN
    request = urllib.request.Request(f"{app_url}gradio_api/call/{endpoint}", data=body,
                                     headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            event_id = json.load(response)["event_id"]
    except urllib.error.HTTPError as error:  # refused at the door (e.g. a file outside the upload folder)
        return f"event: error\ndata: {error.read().decode()}"
    with urllib.request.urlopen(f"{app_url}gradio_api/call/{endpoint}/{event_id}", timeout=60) as response:
        return response.read().decode()


def test_files_from_outside_the_upload_folder_are_refused(app_url, client, grace_hopper):
    """The HTTP API cannot make the app read a server file: gradio refuses the request before our code runs."""
    from gradio_client import handle_file

    from core.weights import WEIGHTS_DIR

    for endpoint, data in (
        ("analyse_photo", [{"path": "/etc/passwd", "meta": {"_type": "gradio.FileData"}}]),
        ("analyse_photo", [{"path": "../../../../etc/hostname", "meta": {"_type": "gradio.FileData"}}]),
        ("analyse_photo", [{"path": str(grace_hopper), "meta": {"_type": "gradio.FileData"}}]),
        ("fine_tune", [[{"path": str(WEIGHTS_DIR / "recognizer.safetensors"), "meta": {"_type": "gradio.FileData"}}],
                       "(from folders or CSV)", 10, False]),
        ("analyse_photo", ["a string, not a file"]),
    ):
        event = http_call(app_url, endpoint, data)
        assert event.startswith("event: error"), event
        assert "root:" not in event and "face(s)" not in event and "Traceback" not in event
    _, _, summary = client.predict(handle_file(str(grace_hopper)), api_name="/analyse_photo")
    assert summary == "1 face(s) found."  # and the app carries on


def test_text_through_the_app(client):
    assert_clear(app_error(lambda: client.predict("x" * 10_000, api_name="/parse_text")), "limit is 500")
    understood = client.predict("", api_name="/parse_text")[0]
    assert "neutral" in understood
    understood = client.predict("\x00 <script>alert(1)</script> 😀", api_name="/parse_text")[0]
    assert "<script>" not in understood  # shown as Markdown: the text itself is not echoed


def test_fine_tune_uploads_through_the_app(client, tmp_path):
    from gradio_client import handle_file

    def fine_tune(paths, label="(from folders or CSV)", steps=10):
        return lambda: client.predict([handle_file(str(p)) for p in paths], label, steps, False, api_name="/fine_tune")

    unsafe = tmp_path / "unsafe.zip"
    unsafe.write_bytes(make_zip({"../escape.png": png(), "/abs.png": png(), "happy/inner.zip": b"PK"},
                                symlinks=("happy/link.png",)))
    message = app_error(fine_tune([unsafe]))
    assert_clear(message, "Only 0 usable faces")
    assert "unsafe path" in message and "symbolic link" in message

    not_zip = tmp_path / "fake.zip"
    not_zip.write_bytes(b"this is not a zip")
    assert_clear(app_error(fine_tune([not_zip])), "not a readable zip")

    many = tmp_path / "many.zip"
    many.write_bytes(make_zip({f"happy/{i}.png": b"x" for i in range(MAX_FILES + 1)}))
    assert_clear(app_error(fine_tune([many])), f"limit is {MAX_FILES}")

    bomb = tmp_path / "bomb.zip"
    bomb.write_bytes(set_declared_size(make_zip({"happy/a.png": png()}, compression=zipfile.ZIP_STORED), 2**31))
    assert_clear(app_error(fine_tune([bomb])), "would unpack to")

    labels = tmp_path / "labels.csv"
    labels.write_bytes(b"a.png|happy\n")
    face = tmp_path / "a.png"
    face.write_bytes(png())
    assert_clear(app_error(fine_tune([face, labels])), "two columns")

    script = tmp_path / "run.sh"
    script.write_text("echo hi")
    assert_clear(app_error(fine_tune([script])), "Invalid file type")
    assert_clear(app_error(fine_tune([face], label="bored")), "not in the list of choices")
    assert_clear(app_error(fine_tune([face], steps=5)), "less than minimum")
    assert_clear(app_error(fine_tune([face], label="happiness")), "Only 0 usable faces.*no face found")


def test_user_text_in_messages_is_shown_as_typed(client, tmp_path):
    """gradio renders error messages as (sanitised) HTML: file names and CSV cells from an upload are escaped."""
    from gradio_client import handle_file

    markup = tmp_path / "markup.zip"
    markup.write_bytes(make_zip({"happy/<b>bold</b>.txt": b"x", "<img src=x onerror=alert(1)>/a.png": png()}))
    message = app_error(lambda: client.predict([handle_file(str(markup))], "(from folders or CSV)", 10, False,
                                               api_name="/fine_tune"))
    assert "&lt;b&gt;bold&lt;/b&gt;.txt" in message and "<b>" not in message and "<img" not in message
    labels = tmp_path / "labels.csv"
    labels.write_bytes(b"<i>a.png</i>|happy\n")
    face = tmp_path / "a.png"
    face.write_bytes(png())
    message = app_error(lambda: client.predict([handle_file(str(face)), handle_file(str(labels))],
                                               "(from folders or CSV)", 10, False, api_name="/fine_tune"))
    assert "&lt;i&gt;a.png&lt;/i&gt;" in message and "<i>" not in message


def test_upload_size_limit_is_configured_and_enforced(app_url, tmp_path):
    """The running app refuses uploads over MAX_TOTAL_BYTES; a copy launched with a tiny limit shows the message."""
    from gradio_client import Client, handle_file

    from demo.app import build_demo
    from tests.conftest import free_port

    with urllib.request.urlopen(f"{app_url}config", timeout=30) as response:
        assert json.load(response)["max_file_size"] == MAX_TOTAL_BYTES
    demo = build_demo()
    port = free_port()
    demo.launch(prevent_thread_lock=True, server_name="127.0.0.1", server_port=port, quiet=True, max_file_size=10_000)
    try:
        big = tmp_path / "big.png"
        big.write_bytes(encode(noise(200, 200)))
        small_app = Client(f"http://127.0.0.1:{port}/", verbose=False, analytics_enabled=False)
        with pytest.raises(Exception, match="exceeds the maximum file size of 10000 bytes"):
            small_app.predict(handle_file(str(big)), api_name="/analyse_photo")  # gradio_client checks first
        boundary = "reliability-boundary"  # the server checks too, for clients that do not
        body = (f'--{boundary}\r\nContent-Disposition: form-data; name="files"; filename="big.png"\r\n'
                f"Content-Type: image/png\r\n\r\n").encode() + big.read_bytes() + f"\r\n--{boundary}--\r\n".encode()
        request = urllib.request.Request(f"http://127.0.0.1:{port}/gradio_api/upload", data=body,
                                         headers={"Content-Type": f"multipart/form-data; boundary={boundary}"})
        with pytest.raises(urllib.error.HTTPError) as caught:
            urllib.request.urlopen(request, timeout=30)
        assert caught.value.code == 413 and "maximum allowed size" in caught.value.read().decode()
    finally:
        demo.close()


def test_queue_limits_are_set_on_the_app():
    from demo.app import DEFAULT_CONCURRENCY, QUEUE_MAX_SIZE, build_demo

    demo = build_demo()
    assert demo._queue.max_size == QUEUE_MAX_SIZE == 64
    assert demo._queue.default_concurrency_limit == DEFAULT_CONCURRENCY
    limits = {fn.api_name: fn.concurrency_limit for fn in demo.fns.values() if fn.api_name}
    assert limits["fine_tune"] == 1 and limits["analyse_photo"] == 4 and limits["synthesize"] == 2
    # every way into a handler shares its limit: a slider's release is not a second pool of renders
    for name, shared in (("render_synthesis", "synthesize"), ("analyse_photo", "photo"), ("run_fine_tune", "fine-tune")):
        events = [fn for fn in demo.fns.values() if fn.name == name]
        assert events and {fn.concurrency_id for fn in events} == {shared}, name


def test_zip_made_of_nested_zips_through_python():
    inner = make_zip({"happy/a.png": png()})
    outer = make_zip({"happy/inner.zip": inner, "happy/inner.png": inner})
    result = ingest_upload([("outer.zip", outer)], BoxDetector())
    assert result.names == [] and dict(result.rejected)["happy/inner.zip"] == "nested archive"
    assert "not a readable image" in dict(result.rejected)["happy/inner.png"]
    with pytest.raises(UploadError):
        ingest_upload([("x.zip", io.BytesIO(inner).getvalue()[:30])], BoxDetector())
