"""Property-based fuzzing (hypothesis) of image decoding and zip / CSV ingestion: random and mutated inputs are
each either processed or refused with core.InputError, never another exception, a hang or a crash.

Derandomized (the same examples on every run) and bounded: a few thousand examples in well under a minute.
"""

import io
import zipfile

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp
from PIL import Image

import core
from core.face.images import load_image
from core.labels import EXPRESSIONS
from core.text import parse_text
from core.training.ingest import ingest_upload, read_label_csv, read_zip
from tests.reliability_cases import IMAGE_CASES, BoxDetector, encode, make_zip, noise

pytestmark = [pytest.mark.reliability, pytest.mark.filterwarnings("ignore:Duplicate name"),
              pytest.mark.filterwarnings("ignore:Truncated File Read")]

FUZZ = settings(max_examples=300, deadline=None, derandomize=True, database=None,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])

SEEDS = [encode(noise(24, 18), fmt) for fmt in ("PNG", "JPEG", "GIF", "BMP", "WEBP", "TIFF")] + [
    data for _, _, data, expected in IMAGE_CASES if not isinstance(expected[0], type)]


@st.composite
def mutated(draw, seeds):
    """A valid file with bytes flipped, inserted, deleted, or cut short."""
    data = bytearray(draw(st.sampled_from(seeds)))
    for _ in range(draw(st.integers(1, 8))):
        op = draw(st.sampled_from(("flip", "insert", "delete", "truncate", "overwrite")))
        at = draw(st.integers(0, max(0, len(data) - 1)))
        if op == "flip" and data:
            data[at] ^= 1 << draw(st.integers(0, 7))
        elif op == "insert":
            data[at:at] = draw(st.binary(min_size=1, max_size=16))
        elif op == "delete":
            del data[at : at + draw(st.integers(1, 16))]
        elif op == "truncate":
            del data[at:]
        else:
            chunk = draw(st.binary(min_size=1, max_size=8))
            data[at : at + len(chunk)] = chunk
    return bytes(data)


def decodes_or_refuses(data) -> None:
    try:
        rgb = load_image(data)
    except core.InputError:
        return
    assert rgb.dtype == np.uint8 and rgb.ndim == 3 and rgb.shape[2] == 3 and min(rgb.shape[:2]) >= 2


@FUZZ
@given(st.binary(max_size=2048))
def test_random_bytes_decode_or_are_refused(data):
    decodes_or_refuses(data)


@FUZZ
@given(mutated(SEEDS))
def test_mutated_images_decode_or_are_refused(data):
    decodes_or_refuses(data)


@settings(FUZZ, max_examples=200)
@given(hnp.arrays(dtype=st.sampled_from([np.uint8, np.uint16, np.int16, np.int32, np.float32, np.float64, np.bool_,
                                         np.dtype(">u2")]),
                  shape=hnp.array_shapes(min_dims=1, max_dims=4, min_side=0, max_side=6)))
def test_random_arrays_decode_or_are_refused(array):
    decodes_or_refuses(array)


@settings(FUZZ, max_examples=100)
@given(st.sampled_from(["1", "L", "P", "RGB", "RGBA", "CMYK", "LA", "PA", "I", "F", "I;16", "YCbCr", "HSV", "LAB"]),
       st.integers(0, 5), st.integers(0, 5))
def test_every_pil_mode_decodes_or_is_refused(mode, width, height):
    decodes_or_refuses(Image.new(mode, (width, height)))


# ---------------------------------------------------------------- zips

NAMES = st.one_of(
    st.sampled_from(["happy/a.png", "sad/b.jpg", "../x.png", "/abs.png", "C:/w.png", "happy/../../y.png", "a.png",
                     "happy/a.png", "HAPPY/A.PNG", "labels.csv", "happy/in.zip", "__MACOSX/._a.png", "bored/c.png",
                     "happy/", "happy/x.txt", "neutral/nul\x00.png"]),
    st.text(min_size=1, max_size=30).map(lambda t: t + ".png"),
)
CONTENT = st.one_of(st.sampled_from(SEEDS), st.binary(max_size=256), st.just(b"filename,label\na.png,happy\n"),
                    st.just(bytes(300_000)))


@st.composite
def zips(draw):
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", draw(st.sampled_from([zipfile.ZIP_STORED, zipfile.ZIP_DEFLATED]))) as z:
        for name, content in draw(st.lists(st.tuples(NAMES, CONTENT), max_size=8)):
            try:
                z.writestr(name, content)
            except (ValueError, IndexError):  # zipfile itself refuses some names (NUL, empty): no one can upload them
                pass
    return buffer.getvalue()


ZIP_SEEDS = [make_zip({"happy/a.png": SEEDS[0], "sad/b.png": SEEDS[1], "labels.csv": b"a.png,happy\n"}),
             make_zip({"happy/a.png": SEEDS[0]}, symlinks=("happy/l.png",), compression=zipfile.ZIP_STORED)]


@FUZZ
@given(st.one_of(zips(), mutated(ZIP_SEEDS)))
def test_zips_are_read_or_refused(data):
    try:
        files, rejected = read_zip(data)
    except core.InputError:
        return
    for name, _ in files:
        assert not name.startswith("/") and ".." not in name.split("/")
    assert all(isinstance(reason, str) and reason for _, reason in rejected)


@settings(FUZZ, max_examples=150)
@given(st.one_of(zips(), mutated(ZIP_SEEDS)), st.sampled_from([None, "happy", "fear"]))
def test_uploads_are_ingested_or_refused_and_every_file_is_accounted_for(data, batch_label):
    try:
        result = ingest_upload([("upload.zip", data)], BoxDetector(), batch_label=batch_label)
    except core.InputError:
        return
    assert len(result.crops) == len(result.labels) == len(result.names)
    assert result.crops.dtype == np.uint8 and result.crops.shape[1:] == (48, 48)
    assert ((0 <= result.labels) & (result.labels < len(EXPRESSIONS))).all()
    files, _ = read_zip(data)
    images = [name for name, _ in files if not name.lower().endswith(".csv")]
    rejected = [name for name, _ in result.rejected]
    assert set(images) <= set(result.names) | set(rejected)  # used or turned away with a reason, never lost


# ---------------------------------------------------------------- CSVs and text

CSV_TEXT = st.one_of(
    st.text(max_size=400),
    st.lists(st.tuples(st.text(max_size=12), st.sampled_from(["happy", "sad", "bored", "", "Fear", "😀"]),
                       st.sampled_from([",", ";", "\t", "|", " "])), max_size=10)
    .map(lambda rows: "\n".join(f"{n}{d}{label}" for n, label, d in rows)),
)


@FUZZ
@given(st.one_of(CSV_TEXT.map(lambda t: t.encode("utf-8")), CSV_TEXT.map(lambda t: ("\ufeff" + t).encode("utf-8")),
                 st.binary(max_size=400)))
def test_label_csvs_are_read_or_refused(data):
    try:
        labels = read_label_csv(data)
    except core.InputError:
        return
    # None: the name was listed twice with different labels (ingest turns that file away)
    assert labels and all(isinstance(k, str) and (v is None or isinstance(v, str)) for k, v in labels.items())


@FUZZ
@given(st.text(max_size=600))
def test_text_is_read_or_refused(text):
    try:
        reading = parse_text(text, use_embeddings=False)
    except core.InputError:
        assert len(text) > 500
        return
    assert abs(sum(reading.expression.values()) - 1) < 1e-6 and 0 <= reading.intensity <= 1


@FUZZ
@given(st.dictionaries(st.sampled_from([*EXPRESSIONS, "bored", "happy", ""]),
                       st.one_of(st.floats(allow_nan=True, allow_infinity=True), st.integers(-5, 5), st.text(max_size=3)),
                       max_size=4),
       st.one_of(st.floats(allow_nan=True), st.integers(-2, 2)), st.one_of(st.floats(allow_nan=True), st.integers(-2, 12)))
def test_synthesis_controls_are_accepted_or_refused(expression, intensity, guidance):
    from core.synthesizer import check_controls

    try:
        check_controls(expression, None, intensity, guidance)
    except core.InputError:
        return
    assert all(0 <= float(v) <= 1 for v in expression.values()) and 0 <= intensity <= 1 and 0 <= guidance <= 10
