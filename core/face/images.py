"""Image input: paths, bytes, PIL images and arrays to RGB uint8, with size limits checked before decoding."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from core.errors import ImageDecodeError, ImageTooLargeError

MAX_PIXELS = 40_000_000  # 40 megapixels: larger than any phone photo, far below a bomb


MIN_SIDE = 2


MAX_SIDE = 30_000  # MediaPipe's OpenCV aborts the whole process on a side of 32,767 pixels or more


IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".webp", ".tif", ".tiff", ".gif"}


# Decoders tried on uploaded bytes: the formats above and no others, so a file cannot reach PIL's
# rarer decoders (EPS would start Ghostscript). Phones' multi-picture JPEGs open as JPEG.
FORMATS = ("PNG", "JPEG", "BMP", "WEBP", "TIFF", "GIF")


def load_image(source, max_pixels: int = MAX_PIXELS) -> np.ndarray:
    """Decode `source` (path, bytes, PIL image or array) into an RGB uint8 array [H, W, 3].

    EXIF orientation is applied; alpha is composited onto white; 16-bit and float images are
    rescaled to 8 bits; animated or multi-page files give their first frame.
    """
    if isinstance(source, np.ndarray):
        return array_to_rgb(source, max_pixels)
    if isinstance(source, Image.Image):
        return pil_to_rgb(source, max_pixels)
    if isinstance(source, (bytes, bytearray, memoryview)):
        return _open_and_convert(io.BytesIO(bytes(source)), "the uploaded bytes", max_pixels)
    if isinstance(source, (str, Path)):
        path = Path(source)
        if not path.is_file():
            raise ImageDecodeError(f"no image file at {str(path)!r}")
        try:
            with open(path, "rb") as f:
                return _open_and_convert(f, path.name, max_pixels)
        except OSError as error:
            raise ImageDecodeError(f"cannot read {path.name}: {error.strerror or error}") from error
    raise ImageDecodeError(f"cannot read an image from a {type(source).__name__}; give a path, bytes, PIL image or array")


def _open_and_convert(stream, what: str, max_pixels: int) -> np.ndarray:
    try:
        with Image.open(stream, formats=FORMATS) as image:
            _check_size(image.size, max_pixels)
            return pil_to_rgb(image, max_pixels)
    except (ImageDecodeError, ImageTooLargeError):
        raise
    except Image.DecompressionBombError as error:
        raise ImageTooLargeError(f"{what} has more pixels than the limit of {max_pixels:,}") from error
    except UnidentifiedImageError as error:  # its message names the server's temp file: say it plainly
        raise ImageDecodeError(f"{what} is not a readable image (supported formats: {', '.join(FORMATS)})") from error
    except MemoryError:
        raise
    except Exception as error:  # noqa: BLE001 -- decoders raise many types on corrupt files; all mean "unreadable"
        raise ImageDecodeError(f"{what} is not a readable image ({type(error).__name__}: {error})") from error


def _check_size(size: tuple[int, int], max_pixels: int) -> None:
    width, height = size
    if width < MIN_SIDE or height < MIN_SIDE:
        raise ImageDecodeError(f"the image is {width}x{height} pixels: too small to hold a face")
    if width > MAX_SIDE or height > MAX_SIDE:
        raise ImageTooLargeError(f"the image is {width}x{height} pixels; the longest side allowed is {MAX_SIDE:,}")
    if width * height > max_pixels:
        raise ImageTooLargeError(
            f"the image is {width}x{height} = {width * height:,} pixels; the limit is {max_pixels:,}"
        )


def pil_to_rgb(image: Image.Image, max_pixels: int = MAX_PIXELS) -> np.ndarray:
    _check_size(image.size, max_pixels)
    try:
        if image.tell() != 0:  # tell, not n_frames: counting pages walks the whole file (a TIFF may hold millions)
            image.seek(0)
        image.load()
        image = ImageOps.exif_transpose(image)
    except MemoryError:
        raise
    except Exception as error:  # noqa: BLE001 -- see _open_and_convert
        raise ImageDecodeError(f"the image could not be decoded ({type(error).__name__}: {error})") from error
    if image.mode in ("I;16", "I;16B", "I;16L", "I", "F"):
        return array_to_rgb(np.asarray(image), max_pixels)
    if image.mode in ("RGBA", "LA", "PA") or (image.mode == "P" and "transparency" in image.info):
        rgba = image.convert("RGBA")
        white = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        image = Image.alpha_composite(white, rgba)
    return np.asarray(image.convert("RGB"), dtype=np.uint8).copy()


def array_to_rgb(array: np.ndarray, max_pixels: int = MAX_PIXELS) -> np.ndarray:
    """Grey [H,W], [H,W,1], RGB [H,W,3] or RGBA [H,W,4] of any numeric dtype -> RGB uint8."""
    a = np.asarray(array)
    if a.ndim == 3 and a.shape[2] == 1:
        a = a[:, :, 0]
    if a.ndim not in (2, 3) or (a.ndim == 3 and a.shape[2] not in (3, 4)):
        raise ImageDecodeError(f"an image array must be [H,W], [H,W,3] or [H,W,4]; got shape {a.shape}")
    _check_size((a.shape[1], a.shape[0]), max_pixels)
    a = to_uint8(a)
    if a.ndim == 2:
        return np.repeat(a[:, :, None], 3, axis=2)
    if a.shape[2] == 4:
        alpha = a[:, :, 3:4].astype(np.float32) / 255.0
        rgb = a[:, :, :3].astype(np.float32) * alpha + 255.0 * (1.0 - alpha)
        return np.round(rgb).astype(np.uint8)
    return np.ascontiguousarray(a)


def to_uint8(a: np.ndarray) -> np.ndarray:
    if a.dtype == np.uint8:
        return a
    if a.dtype == np.bool_:
        return a.astype(np.uint8) * 255
    if np.issubdtype(a.dtype, np.floating):
        if not np.isfinite(a).all():
            raise ImageDecodeError("the image array contains NaN or infinite values")
        scale = 255.0 if a.size and float(a.max()) <= 1.0 else 1.0
        return np.clip(np.round(a * scale), 0, 255).astype(np.uint8)
    if a.dtype.byteorder not in ("=", "|"):
        a = a.astype(a.dtype.newbyteorder("="))  # big-endian 16-bit TIFFs and PNGs
    if a.dtype == np.uint16:
        return (a // 257).astype(np.uint8)
    if a.dtype == np.int16:
        return np.clip(a.astype(np.int32) // 128, 0, 255).astype(np.uint8)
    if np.issubdtype(a.dtype, np.integer):
        if a.dtype in (np.uint16, np.int32, np.uint32, np.int64, np.uint64) and a.size and a.max() > 255:
            return np.clip(a // 257 if a.max() <= 65535 else a * 255.0 / a.max(), 0, 255).astype(np.uint8)
        return np.clip(a, 0, 255).astype(np.uint8)
    raise ImageDecodeError(f"unsupported image array dtype {a.dtype}")


def to_grey(rgb: np.ndarray) -> np.ndarray:
    """ITU-R 601 luma, as PIL's convert("L") and FER2013's grey pixels use (OpenCV: 40x faster than numpy)."""
    import cv2

    return cv2.cvtColor(np.ascontiguousarray(rgb), cv2.COLOR_RGB2GRAY)
