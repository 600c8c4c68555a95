import io
import zipfile

import numpy as np
import pytest
from PIL import Image

from core.face.detection import NUM_LANDMARKS, DetectedFace
from core.labels import EXPRESSIONS
from core.training.ingest import MAX_FILES, UploadError, ingest_upload, read_label_csv, read_zip


class BoxDetector:
    """Finds one face filling the middle of any image (no MediaPipe: fast unit tests)."""

    def detect(self, rgb):
        h, w = rgb.shape[:2]
        return [DetectedFace((w * 0.2, h * 0.2, w * 0.8, h * 0.8), np.full((NUM_LANDMARKS, 3), np.nan), 1.0, "test")]


def png(value=128, size=(64, 64)) -> bytes:
    buffer = io.BytesIO()
    Image.new("L", size, value).save(buffer, format="PNG")
    return buffer.getvalue()


def make_zip(entries: dict[str, bytes], symlink: str | None = None) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as z:
        for name, content in entries.items():
            z.writestr(name, content)
        if symlink:
            info = zipfile.ZipInfo(symlink)
            info.external_attr = (0o120777 << 16)
            z.writestr(info, "/etc/passwd")
    return buffer.getvalue()


def test_zip_of_class_folders_with_synonyms_and_rejections():
    data = make_zip({
        "faces/happy/a.png": png(), "faces/Angry/b.png": png(), "faces/sad/c.jpg": png(),
        "faces/bored/d.png": png(), "faces/happy/notes.txt": b"x", "../evil.png": png(), "/abs.png": png(),
        "faces/inner.zip": b"PK", "faces/broken/e.png": b"garbage", "__MACOSX/._a.png": b"",
    }, symlink="faces/happy/link.png")
    result = ingest_upload([("upload.zip", data)], BoxDetector())
    assert sorted(EXPRESSIONS[k] for k in result.labels) == ["anger", "happiness", "sadness"]
    reasons = dict(result.rejected)
    assert "unsafe path" in reasons["../evil.png"] and "unsafe path" in reasons["/abs.png"]
    assert reasons["faces/happy/link.png"] == "symbolic link"
    assert reasons["faces/inner.zip"] == "nested archive"
    assert reasons["faces/happy/notes.txt"] == "not an image file"
    assert "unknown expression 'bored'" in reasons["faces/bored/d.png"]
    assert "unknown expression 'broken'" in reasons["faces/broken/e.png"]
    assert result.crops.shape == (3, 48, 48)


def test_zip_bombs_and_huge_archives_are_refused():
    bomb = make_zip({"happy/a.png": b"\0" * (30 * 1024 * 1024)})
    files, rejected = read_zip(bomb)
    assert files == [] and ("larger than" in rejected[0][1] or "compression" in rejected[0][1])
    many = make_zip({f"happy/{i}.png": b"x" for i in range(MAX_FILES + 1)})
    with pytest.raises(UploadError, match="limit"):
        read_zip(many)
    with pytest.raises(UploadError, match="not a readable zip"):
        read_zip(b"not a zip")


def test_images_with_a_csv_bom_semicolons_and_missing_files():
    csv_bytes = "\ufefffilename;label\na.png;happy\nb.png;surprised\nmissing.png;sad\nc.png;bored\n".encode()
    assert read_label_csv(csv_bytes)["b.png"] == "surprised"
    files = [("a.png", png()), ("b.png", png()), ("c.png", png()), ("d.png", png()), ("labels.csv", csv_bytes)]
    result = ingest_upload(files, BoxDetector())
    assert [EXPRESSIONS[k] for k in result.labels] == ["happiness", "surprise"]
    reasons = dict(result.rejected)
    assert reasons["d.png"] == "not listed in the CSV" and "bored" in reasons["c.png"]
    with pytest.raises(UploadError, match="two columns"):
        read_label_csv(b"just-one-column\n")


def test_batch_label_and_unlabelled_files():
    result = ingest_upload([("a.png", png()), ("b.png", png())], BoxDetector(), batch_label="fear")
    assert list(result.labels) == [6, 6]
    result = ingest_upload([("a.png", png())], BoxDetector())
    assert len(result.labels) == 0 and "no label" in result.rejected[0][1]


def test_a_file_listed_twice_with_different_labels_is_turned_away():
    csv_bytes = b"a.png,happy\nA.PNG,Happy\nx/b.png,sad\ny/b.png,angry\nb.png,sad\n"
    assert read_label_csv(csv_bytes) == {"a.png": "Happy", "b.png": None}  # the same label twice is fine
    result = ingest_upload([("a.png", png()), ("b.png", png()), ("labels.csv", csv_bytes)], BoxDetector())
    assert [EXPRESSIONS[k] for k in result.labels] == ["happiness"]
    assert dict(result.rejected)["b.png"] == "listed in the CSV more than once, with different labels"
