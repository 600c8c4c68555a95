import io

import numpy as np
import pytest
from PIL import Image

from core.errors import ImageDecodeError, ImageTooLargeError, InputError
from core.face.images import load_image, to_grey


def _png_bytes(image: Image.Image, fmt: str = "PNG", **kwargs) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format=fmt, **kwargs)
    return buffer.getvalue()


def test_rgb_grey_rgba_16bit_and_float_arrays_become_rgb_uint8():
    rgb = np.zeros((10, 12, 3), np.uint8)
    rgb[..., 0] = 200
    assert load_image(rgb).shape == (10, 12, 3)
    grey = np.full((10, 12), 77, np.uint8)
    assert (load_image(grey) == 77).all()
    rgba = np.zeros((10, 12, 4), np.uint8)  # fully transparent -> white background
    assert (load_image(rgba) == 255).all()
    sixteen = np.full((10, 12), 65535, np.uint16)
    assert (load_image(sixteen) == 255).all()
    floats = np.full((10, 12, 3), 0.5, np.float32)
    assert (load_image(floats) == 128).all()


def test_pil_modes_and_bytes(tmp_path):
    for mode in ("L", "P", "CMYK", "LA", "RGBA", "I;16", "1"):
        image = Image.new(mode, (20, 16))
        out = load_image(image)
        assert out.shape == (16, 20, 3) and out.dtype == np.uint8
    data = _png_bytes(Image.new("RGB", (20, 16), (1, 2, 3)))
    assert (load_image(data)[0, 0] == (1, 2, 3)).all()
    path = tmp_path / "x.png"
    path.write_bytes(data)
    assert load_image(path).shape == (16, 20, 3)
    assert load_image(str(path)).shape == (16, 20, 3)


def test_exif_rotation_is_applied():
    image = Image.new("RGB", (30, 10), (0, 0, 0))
    exif = image.getexif()
    exif[0x0112] = 6  # rotate 90 degrees clockwise to display
    data = _png_bytes(image, "JPEG", exif=exif.tobytes())
    assert load_image(data).shape == (30, 10, 3)


def test_animated_gif_gives_first_frame():
    frames = [Image.new("L", (8, 8), v) for v in (10, 200)]
    buffer = io.BytesIO()
    frames[0].save(buffer, format="GIF", save_all=True, append_images=frames[1:])
    out = load_image(buffer.getvalue())
    assert out.shape == (8, 8, 3) and abs(int(out[0, 0, 0]) - 10) < 3


@pytest.mark.parametrize("bad", [b"", b"not an image at all", b"\x89PNG\r\n\x1a\n" + b"\0" * 20])
def test_not_an_image_is_a_typed_error(bad):
    with pytest.raises(ImageDecodeError):
        load_image(bad)


def test_truncated_image_is_a_typed_error():
    data = _png_bytes(Image.effect_noise((64, 64), 50).convert("RGB"))
    with pytest.raises(ImageDecodeError):
        load_image(data[: len(data) // 2])


def test_tiny_and_huge_and_odd_inputs():
    with pytest.raises(ImageDecodeError, match="too small"):
        load_image(np.zeros((1, 1, 3), np.uint8))
    with pytest.raises(ImageDecodeError):
        load_image(np.zeros((0, 0), np.uint8))
    with pytest.raises(ImageTooLargeError, match="limit"):
        load_image(_png_bytes(Image.new("L", (200, 200))), max_pixels=100 * 100)
    with pytest.raises(ImageDecodeError, match="shape"):
        load_image(np.zeros((4, 4, 2), np.uint8))
    with pytest.raises(ImageDecodeError, match="NaN"):
        load_image(np.full((4, 4), np.nan))
    with pytest.raises(ImageDecodeError):
        load_image(12345)
    with pytest.raises(ImageDecodeError, match="no image file"):
        load_image("/no/such/file.png")
    assert issubclass(ImageTooLargeError, InputError)


def test_to_grey_matches_pil():
    rgb = np.random.default_rng(0).integers(0, 256, (16, 16, 3)).astype(np.uint8)
    ours = to_grey(rgb).astype(int)
    pils = np.asarray(Image.fromarray(rgb).convert("L")).astype(int)
    assert np.abs(ours - pils).max() <= 1


def test_big_endian_16_bit_and_signed_arrays():
    big_endian = np.full((4, 4), 65535, dtype=">u2")
    assert (load_image(big_endian) == 255).all()
    half = np.full((4, 4), 32896, dtype=">u2")
    assert (load_image(half) == 128).all()
    assert (load_image(np.full((4, 4), -5, np.int16)) == 0).all()


def test_corrupt_tiff_is_a_typed_error():
    data = _png_bytes(Image.new("L", (16, 16)), "TIFF")
    corrupt = data[:8] + bytes(len(data) - 8)
    with pytest.raises(ImageDecodeError):
        load_image(corrupt)
