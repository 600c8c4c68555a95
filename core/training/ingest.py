"""Labelled face uploads -> aligned crops and labels, with a reason for every file turned away.

Three layouts: a zip of class folders (happy/img1.jpg, ...), images plus a CSV (filename,label),
or images with one label for the whole batch. Everything is read in memory: nothing a user
uploads is written to disk here. Zip members are checked before they are read: no absolute paths
or "..", no links, no nested archives, bounded counts and sizes (declared and actual), bounded
compression ratio.
"""

from __future__ import annotations

import csv
import io
import lzma
import stat
import zipfile
import zlib
from dataclasses import dataclass, field
from pathlib import PurePosixPath

import numpy as np

from core.errors import InputError
from core.face.images import IMAGE_SUFFIXES, load_image

MB = 2**20  # sizes are binary megabytes, in the limits and in the messages alike
MAX_FILES = 2000
MAX_FILE_BYTES = 20 * MB
MAX_TOTAL_BYTES = 200 * MB
MAX_COMPRESSION_RATIO = 200  # a zip bomb inflates thousands of times; photos barely compress
MAX_DIRECTORY_BYTES = 2 * MAX_FILES * 1024  # a zip's central directory: about 1 KB per entry, folders included


class UploadError(InputError):
    """An upload that cannot be read at all (not a zip, too large, no usable file)."""


@dataclass
class Ingested:
    crops: np.ndarray  # uint8 [N, S, S], FER framing
    labels: np.ndarray  # int64 [N], index into EXPRESSIONS
    names: list[str]
    rejected: list[tuple[str, str]] = field(default_factory=list)  # (file name, reason)


def read_zip(data: bytes) -> tuple[list[tuple[str, bytes]], list[tuple[str, str]]]:
    """Image members of a zip as (path, bytes), and (path, reason) for members turned away."""
    if len(data) > MAX_TOTAL_BYTES:
        raise UploadError(f"the upload is {len(data) / MB:.0f} MB; the limit is {MAX_TOTAL_BYTES // MB} MB")
    _check_directory(io.BytesIO(data))
    try:
        archive = zipfile.ZipFile(io.BytesIO(data))
    except Exception as error:  # noqa: BLE001 -- a corrupt directory raises many types (NotImplementedError...)
        raise UploadError(f"the upload is not a readable zip file ({error})") from error
    members = [m for m in archive.infolist() if not m.is_dir()]
    if len(members) > MAX_FILES:
        raise UploadError(f"the zip holds {len(members)} files; the limit is {MAX_FILES}")
    declared = sum(m.file_size for m in members)
    if declared > MAX_TOTAL_BYTES:
        raise UploadError(f"the zip would unpack to {declared / MB:.0f} MB; the limit is {MAX_TOTAL_BYTES // MB} MB")
    files, rejected, seen, total = [], [], set(), 0
    for member in members:
        name = member.filename
        path = PurePosixPath(name.replace("\\", "/"))
        reason = None
        if path.is_absolute() or ".." in path.parts or (path.parts and ":" in path.parts[0]):
            reason = "unsafe path (absolute or with '..')"
        elif stat.S_ISLNK(member.external_attr >> 16):
            reason = "symbolic link"
        elif path.suffix.lower() in {".zip", ".tar", ".gz", ".7z", ".rar"}:
            reason = "nested archive"
        elif path.name.startswith(".") or "__MACOSX" in path.parts:
            continue  # system clutter, not the user's data
        elif path.suffix.lower() not in IMAGE_SUFFIXES and path.suffix.lower() != ".csv":
            reason = "not an image file"
        elif member.file_size > MAX_FILE_BYTES:
            reason = f"larger than {MAX_FILE_BYTES // MB} MB"
        elif member.compress_size and member.file_size / member.compress_size > MAX_COMPRESSION_RATIO:
            reason = "suspicious compression ratio (zip bomb?)"
        elif str(path).lower() in seen:
            reason = "duplicate name"
        if reason:
            rejected.append((name, reason))
            continue
        seen.add(str(path).lower())
        try:
            with archive.open(member) as f:
                content = f.read(MAX_FILE_BYTES + 1)  # never trust the declared size alone
        except (zipfile.BadZipFile, OSError, RuntimeError, ValueError, EOFError, zlib.error, lzma.LZMAError) as error:
            rejected.append((name, f"corrupt member ({type(error).__name__})"))
            continue
        if len(content) > MAX_FILE_BYTES:
            rejected.append((name, f"larger than {MAX_FILE_BYTES // MB} MB"))
            continue
        total += len(content)
        if total > MAX_TOTAL_BYTES:
            raise UploadError(f"the zip unpacks to more than {MAX_TOTAL_BYTES // MB} MB")
        files.append((str(path), content))
    return files, rejected


def _check_directory(stream) -> None:
    """Refuse a zip whose directory is too long from its end record alone: ZipFile builds an object
    per entry before they can be counted (2 million empty entries fit in 200 MB: minutes, gigabytes)."""
    end_record = getattr(zipfile, "_EndRecData", None)  # private but stable; handles zip64
    if end_record is None:
        return
    try:
        end = end_record(stream)
    except Exception:  # noqa: BLE001 -- ZipFile reports what is wrong with it
        return
    if end is None:
        return
    entries, size = end[zipfile._ECD_ENTRIES_TOTAL], end[zipfile._ECD_SIZE]
    if entries > 2 * MAX_FILES or size > MAX_DIRECTORY_BYTES:
        raise UploadError(f"the zip holds {entries} entries ({size / MB:.1f} MB of names); the limit is "
                          f"{MAX_FILES} files")


def read_label_csv(data: bytes) -> dict[str, str | None]:
    """filename,label rows (header optional; comma, semicolon or tab; UTF-8 with or without BOM).

    Files are matched by name (folders dropped, any case). A name listed twice with different labels
    maps to None: which label is meant cannot be known, so that file is turned away, not guessed.
    """
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError:
        text = data.decode("latin-1")
    try:
        dialect = csv.Sniffer().sniff(text[:4096], delimiters=",;\t")
    except csv.Error:
        dialect = csv.excel
    try:
        rows = [row for row in csv.reader(io.StringIO(text), dialect) if any(cell.strip() for cell in row)]
    except csv.Error as error:  # e.g. a field longer than csv's limit, an unclosed quote
        raise UploadError(f"the CSV cannot be read as filename,label rows ({error})") from error
    if rows and [c.strip().lower() for c in rows[0][:2]] in (["filename", "label"], ["file", "label"],
                                                            ["image", "label"], ["name", "label"]):
        rows = rows[1:]
    labels = {}
    for row in rows:
        if len(row) < 2:
            raise UploadError(f"CSV row {str(row)[:80]} does not have two columns (filename,label): "
                              "separate them with a comma, semicolon or tab")
        name, label = PurePosixPath(row[0].strip().replace("\\", "/")).name.lower(), row[1].strip()
        if name in labels and (labels[name] is None or labels[name].lower() != label.lower()):
            label = None
        labels[name] = label
    if not labels:
        raise UploadError("the CSV has no filename,label rows")
    return labels


def label_files(files: list[tuple[str, bytes]], csv_labels: dict[str, str | None] | None, batch_label: str | None
                ) -> tuple[list[tuple[str, bytes, int]], list[tuple[str, str]]]:
    """Attach a class index to every image: from the CSV, the batch label, or its class folder."""
    from core.labels import expression_index

    labelled, rejected, seen = [], [], set()
    for name, content in files:
        path = PurePosixPath(name)
        if path.suffix.lower() == ".csv":
            continue
        seen.add(path.name.lower())
        if csv_labels is not None:
            if path.name.lower() not in csv_labels:
                rejected.append((name, "not listed in the CSV"))
                continue
            label = csv_labels[path.name.lower()]
            if label is None:
                rejected.append((name, "listed in the CSV more than once, with different labels"))
                continue
        elif batch_label is not None:
            label = batch_label
        elif len(path.parts) >= 2:
            label = path.parts[-2]
        else:
            rejected.append((name, "no label: put it in a class folder, list it in a CSV or pick a batch label"))
            continue
        try:
            labelled.append((name, content, expression_index(label)))
        except InputError as error:
            rejected.append((name, str(error)))
    missing = sorted(set(csv_labels or ()) - seen)
    if missing:  # one line for all of them: a CSV may list far more files than were uploaded
        rejected.append(("(CSV)", f"{len(missing)} listed file(s) not in the upload: {', '.join(missing[:5])}"
                                  + (", ..." if len(missing) > 5 else "")))
    return labelled, rejected


def ingest(files: list[tuple[str, bytes]], detector, size: int = 48, csv_labels: dict[str, str | None] | None = None,
           batch_label: str | None = None, max_pixels: int | None = None, should_stop=None) -> Ingested:
    """Detect and align the largest face of every labelled image.

    should_stop() -> True (cancelled, out of time) ends the work with an UploadError.
    """
    from core.face.alignment import align_face
    from core.face.images import MAX_PIXELS, to_grey

    labelled, rejected = label_files(files, csv_labels, batch_label)
    crops, labels, names = [], [], []
    for i, (name, content, label) in enumerate(labelled):
        if should_stop is not None and should_stop():
            raise UploadError(f"reading stopped after {i} of {len(labelled)} images")
        try:
            rgb = load_image(content, max_pixels=max_pixels or MAX_PIXELS)
        except InputError as error:
            rejected.append((name, str(error)))
            continue
        faces = detector.detect(rgb)
        if not faces:
            rejected.append((name, "no face found"))
            continue
        crops.append(align_face(to_grey(rgb), faces[0], size))
        labels.append(label)
        names.append(name)
    return Ingested(np.stack(crops) if crops else np.zeros((0, size, size), np.uint8),
                    np.array(labels, np.int64), names, rejected)


def ingest_upload(paths_or_files, detector, size: int = 48, batch_label: str | None = None,
                  should_stop=None) -> Ingested:
    """Uploaded files (zip of class folders, or images with a CSV or a batch label) -> Ingested."""
    items = list(paths_or_files)
    if len(items) > MAX_FILES:
        raise UploadError(f"{len(items)} files were uploaded; the limit is {MAX_FILES}")
    files: list[tuple[str, bytes]] = []
    rejected: list[tuple[str, str]] = []
    total = 0
    for item in items:
        name, content = _read_upload(item)
        if name.lower().endswith(".zip"):
            members, turned_away = read_zip(content)
            files += members
            rejected += turned_away
        else:
            members = [(name, content)]
            files += members
        # the limits hold for the whole upload, not per zip
        total += sum(len(c) for _, c in members)
        if total > MAX_TOTAL_BYTES:
            raise UploadError(f"the upload adds up to more than {MAX_TOTAL_BYTES // MB} MB")
        if len(files) > MAX_FILES:
            raise UploadError(f"the upload holds more than {MAX_FILES} files")
    csvs = [content for name, content in files if name.lower().endswith(".csv")]
    if len(csvs) > 1:
        raise UploadError("more than one CSV file: upload one filename,label list")
    csv_labels = read_label_csv(csvs[0]) if csvs else None
    result = ingest(files, detector, size, csv_labels=csv_labels, batch_label=batch_label, should_stop=should_stop)
    result.rejected = rejected + result.rejected
    return result


def _read_upload(item) -> tuple[str, bytes]:
    if isinstance(item, tuple):
        return item
    from pathlib import Path

    path = Path(item)
    try:
        if path.stat().st_size > MAX_TOTAL_BYTES:
            raise UploadError(f"{path.name} is larger than {MAX_TOTAL_BYTES // MB} MB")
        return path.name, path.read_bytes()
    except OSError as error:  # gone (cache cleaned), a folder, unreadable
        raise UploadError(f"cannot read the upload {path.name}: {error.strerror or error}; upload it again") from error
