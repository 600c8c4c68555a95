"""Bad (and odd but valid) inputs shared by the reliability tests: images, zips, CSVs, frames."""

from __future__ import annotations

import io
import struct
import zipfile
import zlib

import numpy as np
from PIL import Image

from core.errors import ImageDecodeError, ImageTooLargeError
from core.face.detection import NUM_LANDMARKS, DetectedFace


def encode(image: Image.Image, fmt: str = "PNG", **kwargs) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format=fmt, **kwargs)
    return buffer.getvalue()


def noise(width: int = 64, height: int = 48, mode: str = "RGB", seed: int = 0) -> Image.Image:
    rng = np.random.default_rng(seed)
    return Image.fromarray(rng.integers(0, 256, (height, width, 3), dtype=np.uint8)).convert(mode)


def _png_chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)


def png_header_only(width: int, height: int) -> bytes:
    """A PNG that declares its size and holds no pixels: decoding it would allocate width x height."""
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + _png_chunk(b"IHDR", ihdr) + _png_chunk(b"IEND", b"")


def exif_rotated_jpeg() -> bytes:
    image = Image.new("RGB", (30, 10), (200, 10, 10))
    exif = image.getexif()
    exif[0x0112] = 6  # displayed rotated 90 degrees: 10 wide, 30 high
    return encode(image, "JPEG", exif=exif.tobytes())


def animated_gif() -> bytes:
    frames = [Image.new("L", (16, 16), v) for v in (10, 200, 90)]
    buffer = io.BytesIO()
    frames[0].save(buffer, format="GIF", save_all=True, append_images=frames[1:], loop=0)
    return buffer.getvalue()


def multipage_tiff() -> bytes:
    pages = [Image.new("RGB", (20, 12), (v, v, v)) for v in (30, 220)]
    buffer = io.BytesIO()
    pages[0].save(buffer, format="TIFF", save_all=True, append_images=pages[1:])
    return buffer.getvalue()


def palette_with_alpha() -> bytes:
    image = Image.new("P", (20, 20), 0)
    image.putpalette([0, 0, 0, 255, 255, 255] * 128)
    return encode(image, "PNG", transparency=0)


def _truncated(data: bytes) -> bytes:
    return data[: len(data) // 2]


def _corrupt_body(data: bytes) -> bytes:
    middle = len(data) // 2
    return data[:middle] + bytes(255 - b for b in data[middle : middle + 64]) + data[middle + 64 :]


# (name, file suffix, bytes, expected): expected is (height, width) for images that must decode, or
# (exception class, message pattern) for inputs that must be refused with a typed, clear error.
IMAGE_CASES: list[tuple[str, str, bytes, tuple]] = [
    ("rgb", "png", encode(noise()), (48, 64)),
    ("cmyk", "jpg", encode(noise(mode="CMYK"), "JPEG"), (48, 64)),
    ("grey-16-bit", "png", encode(Image.fromarray(np.full((12, 20), 40000, np.uint16))), (12, 20)),
    ("palette-with-alpha", "png", palette_with_alpha(), (20, 20)),
    ("grey-alpha", "png", encode(noise(mode="LA")), (48, 64)),
    ("rgba", "png", encode(noise(mode="RGBA")), (48, 64)),
    ("exif-rotated", "jpg", exif_rotated_jpeg(), (30, 10)),
    ("animated", "gif", animated_gif(), (16, 16)),
    ("multi-page", "tiff", multipage_tiff(), (12, 20)),
    ("webp", "webp", encode(noise(), "WEBP"), (48, 64)),
    ("bmp", "bmp", encode(noise(), "BMP"), (48, 64)),
    ("text", "png", b"this is not an image\n" * 20, (ImageDecodeError, "not a readable image")),
    ("empty", "png", b"", (ImageDecodeError, "not a readable image")),
    ("html", "jpg", b"<html><script>alert(1)</script></html>", (ImageDecodeError, "not a readable image")),
    ("svg", "png", b'<svg xmlns="http://www.w3.org/2000/svg" width="9" height="9"/>', (ImageDecodeError, "not a readable image")),
    ("ppm", "png", encode(noise(), "PPM"), (ImageDecodeError, "supported formats")),
    ("truncated-png", "png", _truncated(encode(noise(256, 256))), (ImageDecodeError, "")),
    ("truncated-jpeg", "jpg", _truncated(encode(noise(256, 256), "JPEG")), (ImageDecodeError, "")),
    ("corrupt-png", "png", _corrupt_body(encode(noise(256, 256))), (ImageDecodeError, "")),
    ("corrupt-jpeg", "jpg", encode(noise(256, 256), "JPEG")[:400] + bytes(2000), (ImageDecodeError, "")),
    ("zero-by-zero", "png", png_header_only(0, 0), (ImageDecodeError, "")),
    ("one-by-one", "png", encode(Image.new("RGB", (1, 1))), (ImageDecodeError, "too small")),
    ("one-pixel-high", "png", encode(Image.new("RGB", (500, 1))), (ImageDecodeError, "too small")),
    ("over-the-limit", "png", png_header_only(7000, 6000), (ImageTooLargeError, "limit is 40,000,000")),
    ("decompression-bomb", "png", png_header_only(50_000, 50_000), (ImageTooLargeError, "limit of 40,000,000")),
    ("too-long-a-side", "png", png_header_only(40_000, 30), (ImageTooLargeError, "longest side allowed is 30,000")),
]


class BoxDetector:
    """Finds one face filling the middle of any image (no MediaPipe: fast)."""

    def detect(self, rgb):
        h, w = rgb.shape[:2]
        return [DetectedFace((w * 0.2, h * 0.2, w * 0.8, h * 0.8), np.full((NUM_LANDMARKS, 3), np.nan), 1.0, "test")]


def make_zip(entries: dict[str, bytes], symlinks: tuple[str, ...] = (), compression=zipfile.ZIP_DEFLATED) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", compression) as z:
        for name, content in entries.items():
            z.writestr(name, content)
        for link in symlinks:
            info = zipfile.ZipInfo(link)
            info.external_attr = 0o120777 << 16
            z.writestr(info, "/etc/passwd")
    return buffer.getvalue()


def zip_with_raw_entries(entries: list[tuple[bytes, bytes]], utf8_flag: bool = False) -> bytes:
    """A stored zip whose names are raw bytes (not UTF-8, duplicates...), written by hand."""
    local, central, offset = b"", b"", 0
    flags = 0x800 if utf8_flag else 0
    for name, content in entries:
        crc = zlib.crc32(content) & 0xFFFFFFFF
        header = struct.pack("<IHHHHHIIIHH", 0x04034B50, 20, flags, 0, 0, 0, crc, len(content), len(content),
                             len(name), 0) + name
        central += struct.pack("<IHHHHHHIIIHHHHHII", 0x02014B50, 20, 20, flags, 0, 0, 0, crc, len(content),
                               len(content), len(name), 0, 0, 0, 0, 0, offset) + name
        local += header + content
        offset += len(header) + len(content)
    end = struct.pack("<IHHHHIIH", 0x06054B50, 0, 0, len(entries), len(entries), len(central), offset, 0)
    return local + central + end


def set_declared_size(data: bytes, size: int) -> bytes:
    """Rewrite every member's declared uncompressed size (local headers and central directory)."""
    out = bytearray(data)
    for signature, field in ((b"PK\x03\x04", 22), (b"PK\x01\x02", 24)):
        start = 0
        while (at := out.find(signature, start)) >= 0:
            out[at + field : at + field + 4] = struct.pack("<I", size)
            start = at + 4
    return bytes(out)


def end_record_claiming(entries: int) -> bytes:
    """An empty zip whose end record claims `entries` members (and a directory to match)."""
    return struct.pack("<IHHHHIIH", 0x06054B50, 0, 0, min(entries, 0xFFFF), min(entries, 0xFFFF), entries * 46, 0, 0)
