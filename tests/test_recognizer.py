import numpy as np
import pytest
from PIL import Image

from core import EXPRESSIONS, InputError, Recognizer
from core.errors import WeightsError
from core.weights import REGISTRY, WEIGHTS_DIR, load_weights, sha256_of

pytestmark = pytest.mark.integration


def test_shipped_weights_match_their_registered_sha256():
    info = REGISTRY["recognizer"]
    assert sha256_of(WEIGHTS_DIR / info.file) == info.sha256
    assert (WEIGHTS_DIR / info.file).stat().st_size < 10 * 1024 * 1024


def test_tampered_or_foreign_weights_are_refused(tmp_path, monkeypatch):
    import core.weights as weights

    copy = tmp_path / "recognizer.safetensors"
    data = bytearray((WEIGHTS_DIR / "recognizer.safetensors").read_bytes())
    data[-1] ^= 0xFF
    copy.write_bytes(bytes(data))
    monkeypatch.setattr(weights, "WEIGHTS_DIR", tmp_path)
    with pytest.raises(WeightsError, match="sha256"):
        load_weights("recognizer")
    with pytest.raises(WeightsError, match="unknown weights"):
        load_weights("nope")
    (tmp_path / "junk.safetensors").write_bytes(b"\x00" * 64)
    with pytest.raises(WeightsError):
        Recognizer.load(path=tmp_path / "junk.safetensors")


def test_predict_on_a_real_photo(recognizer, grace_hopper):
    faces = recognizer.predict(grace_hopper)
    assert len(faces) == 1
    face = faces[0]
    width, height = Image.open(grace_hopper).size
    x0, y0, x1, y1 = face.box
    assert 0 <= x0 < x1 <= width and 0 <= y0 < y1 <= height
    assert face.landmarks.shape == (478, 3)
    assert set(face.probs) == set(EXPRESSIONS) and abs(sum(face.probs.values()) - 1) < 1e-5
    assert face.label == max(face.probs, key=face.probs.get)
    assert face.crop.shape == (48, 48) and face.crop.dtype == np.uint8
    # The same face through PIL, RGBA and grey inputs gives the same answer.
    pil = Image.open(grace_hopper)
    for variant in (pil, pil.convert("RGBA"), np.asarray(pil.convert("L"))):
        again = recognizer.predict(variant)
        assert len(again) == 1 and np.allclose(again[0].box, face.box, atol=12)


def test_no_face_gives_an_empty_list_and_garbage_a_typed_error(recognizer):
    assert recognizer.predict(np.full((240, 320, 3), 200, np.uint8)) == []
    with pytest.raises(InputError):
        recognizer.predict(b"definitely not an image")


def test_predict_crops_on_fer_test_faces(recognizer, fer_test):
    labelled = np.flatnonzero(fer_test.ferplus_label >= 0)[:300]
    probs = recognizer.predict_crops(fer_test.images[labelled])
    assert probs.shape == (300, 8) and np.allclose(probs.sum(axis=1), 1, atol=1e-5)
    accuracy = (probs.argmax(axis=1) == fer_test.ferplus_label[labelled]).mean()
    assert accuracy > 0.75
    # Other crop sizes are resized to the model's input; bad shapes are typed errors.
    assert recognizer.predict_crops(np.zeros((2, 96, 96), np.uint8)).shape == (2, 8)
    with pytest.raises(InputError):
        recognizer.predict_crops(np.zeros((48, 48), np.uint8))


def test_aligned_real_faces_are_recognised_like_their_fer_crops(recognizer, fer_test):
    """A FER face pasted large into a photo, found and aligned by the pipeline, keeps its label."""
    labelled = np.flatnonzero(fer_test.ferplus_label >= 0)[:40]
    agree, found = 0, 0
    for i in labelled:
        crop = fer_test.images[i]
        photo = Image.fromarray(crop).resize((240, 240), Image.BICUBIC)
        canvas = Image.new("L", (480, 400), 128)
        canvas.paste(photo, (120, 80))
        faces = recognizer.predict(canvas)
        if not faces:
            continue
        found += 1
        agree += faces[0].label == EXPRESSIONS[int(recognizer.predict_crops(crop[None]).argmax())]
    assert found >= 30
    assert agree / found > 0.7
