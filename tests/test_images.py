"""Image reading: odd modes converted right, bad files refused with one line, preprocessing values."""

from __future__ import annotations

import io
import struct
import warnings
import zlib

import numpy as np
import pytest
import torch
from PIL import Image

import convscope
from convscope.errors import ImageError
from convscope.images import MAX_PIXELS, Preprocessing, load_image


def save(image: Image.Image, path, **kwargs):
    image.save(path, **kwargs)
    return path


# -- odd images that must work -----------------------------------------------------------------
def test_cmyk_jpeg_becomes_rgb(tmp_path):
    path = save(Image.new("CMYK", (8, 8), (0, 255, 255, 0)), tmp_path / "cmyk.jpg", quality=95)
    image = load_image(path)
    assert image.mode == "RGB"
    r, g, b = image.getpixel((4, 4))
    assert r > 240 and g < 15 and b < 15


def test_16bit_grayscale_png_is_scaled_not_clipped(tmp_path):
    values = np.array([[0, 65535], [32896, 16448]], dtype=np.uint16)  # 32896 = 128 * 257
    path = save(Image.fromarray(values), tmp_path / "gray16.png")
    assert Image.open(path).mode.startswith("I")
    pixels = np.asarray(load_image(path))
    assert pixels.shape == (2, 2, 3)
    np.testing.assert_array_equal(pixels[..., 0], [[0, 255], [128, 64]])
    assert (pixels[..., 0] == pixels[..., 2]).all()


def test_rgba_png_is_composited_on_white(tmp_path):
    rgba = np.zeros((1, 3, 4), dtype=np.uint8)
    rgba[0, 0] = (255, 0, 0, 255)      # opaque red
    rgba[0, 1] = (0, 0, 255, 0)        # fully transparent -> white
    rgba[0, 2] = (255, 0, 0, 128)      # half red over white
    path = save(Image.fromarray(rgba, "RGBA"), tmp_path / "rgba.png")
    pixels = np.asarray(load_image(path)).astype(int)
    np.testing.assert_array_equal(pixels[0, 0], [255, 0, 0])
    np.testing.assert_array_equal(pixels[0, 1], [255, 255, 255])
    np.testing.assert_allclose(pixels[0, 2], [255, 127, 127], atol=1)


def test_palette_gif(tmp_path):
    image = Image.new("P", (4, 4))
    image.putpalette([0, 0, 0, 0, 200, 0] + [0] * 762)
    image.putpixel((1, 1), 1)
    path = save(image, tmp_path / "palette.gif")
    pixels = np.asarray(load_image(path))
    np.testing.assert_array_equal(pixels[1, 1], [0, 200, 0])
    np.testing.assert_array_equal(pixels[0, 0], [0, 0, 0])


def test_exif_orientation_is_honoured(tmp_path):
    stored = np.zeros((16, 32, 3), dtype=np.uint8)
    stored[:, :16] = (255, 0, 0)   # left half red
    stored[:, 16:] = (0, 0, 255)   # right half blue
    exif = Image.Exif()
    exif[0x0112] = 6  # display rotated 90 degrees clockwise
    path = save(Image.fromarray(stored), tmp_path / "rotated.jpg", exif=exif, quality=95)
    image = load_image(path)
    assert image.size == (16, 32)  # width, height swapped
    pixels = np.asarray(image).astype(int)
    assert pixels[4, 8, 0] > 200 and pixels[4, 8, 2] < 60      # top is the old left: red
    assert pixels[28, 8, 2] > 200 and pixels[28, 8, 0] < 60    # bottom is the old right: blue


def test_one_pixel_and_large_images(tmp_path):
    tiny = save(Image.new("RGB", (1, 1), (10, 20, 30)), tmp_path / "one.png")
    model = convscope.load_model(torch.nn.Conv2d(3, 2, 1), input_size=8, mean=(0, 0, 0), std=(1, 1, 1))
    x = model.preprocess(tiny)
    assert x.shape == (1, 3, 8, 8)
    torch.testing.assert_close(x[0, :, 3, 5], torch.tensor([10, 20, 30]) / 255.0)
    big = save(Image.new("RGB", (4000, 2600), (0, 128, 0)), tmp_path / "big.jpg")
    assert load_image(big).size == (4000, 2600)


def test_grayscale_and_arrays():
    gray = Image.fromarray(np.full((3, 3), 77, dtype=np.uint8), "L")
    assert np.asarray(load_image(gray))[0, 0].tolist() == [77, 77, 77]
    floats = np.full((2, 2, 3), 0.5, dtype=np.float32)
    assert np.asarray(load_image(floats))[0, 0].tolist() == [128, 128, 128]
    u16 = np.full((2, 2), 65535, dtype=np.uint16)
    assert np.asarray(load_image(u16))[0, 0].tolist() == [255, 255, 255]
    with pytest.raises(ImageError, match="shape"):
        load_image(np.zeros((3, 4, 5)))
    with pytest.raises(ImageError, match="NaN"):
        load_image(np.full((2, 2), np.nan))


# -- bad images refused with one line naming the file ------------------------------------------
def _png_with_size(width: int, height: int) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (1, 1)).save(buffer, "PNG")
    data = bytearray(buffer.getvalue())
    ihdr = bytearray(data[12:29])  # b"IHDR" + 13 bytes of header
    ihdr[4:12] = struct.pack(">II", width, height)
    data[12:29] = ihdr
    data[29:33] = struct.pack(">I", zlib.crc32(bytes(ihdr)) & 0xFFFFFFFF)
    return bytes(data)


def _jpeg_bytes() -> bytes:
    buffer = io.BytesIO()
    rng = np.random.default_rng(0)
    Image.fromarray(rng.integers(0, 255, (64, 64, 3), dtype=np.uint8)).save(buffer, "JPEG")
    return buffer.getvalue()


def _png_bytes() -> bytes:
    buffer = io.BytesIO()
    rng = np.random.default_rng(0)
    Image.fromarray(rng.integers(0, 255, (64, 64, 3), dtype=np.uint8)).save(buffer, "PNG")
    return buffer.getvalue()


BAD_FILES = {
    "empty.jpg": (b"", "empty file"),
    "text.jpg": (b"hello, I am not a picture\n", "not a recognized image"),
    "truncated.jpg": (_jpeg_bytes()[:600], "truncated"),
    "truncated.png": (_png_bytes()[:300], "truncated|corrupt"),
    "bomb.png": (_png_with_size(10_000, 10_000), "decompression bomb"),
    "huge-bomb.png": (_png_with_size(100_000, 100_000), "decompression bomb"),
}


@pytest.mark.parametrize("name", sorted(BAD_FILES))
def test_bad_files_are_refused_with_one_line(tmp_path, name):
    content, reason = BAD_FILES[name]
    path = tmp_path / name
    path.write_bytes(content)
    with pytest.raises(ImageError, match=reason) as info:
        load_image(path)
    message = str(info.value)
    assert message.startswith(str(path)) and "\n" not in message


def test_bomb_limit_is_checked_from_the_header(tmp_path, monkeypatch):
    # 9500 x 9500 is over the limit but under twice it (where Pillow itself would refuse): our own check
    path = tmp_path / "big.png"
    path.write_bytes(_png_with_size(9_500, 9_500))
    assert 9_500 * 9_500 > MAX_PIXELS
    decoded = []
    monkeypatch.setattr(Image.Image, "load", lambda self: decoded.append(self))
    with pytest.raises(ImageError, match="over the limit of .* pixels"):
        load_image(path)
    assert not decoded  # refused from the header, nothing decoded


def test_missing_path_and_directory(tmp_path):
    with pytest.raises(ImageError, match="no such file"):
        load_image(tmp_path / "nope.png")
    with pytest.raises(ImageError, match="is a directory"):
        load_image(tmp_path)


# -- preprocessing -------------------------------------------------------------------------------
def test_preprocess_values_are_hand_computed():
    prep = Preprocessing((4, 6), mean=(0.5, 0.25, 0.0), std=(0.5, 0.25, 2.0))
    image = Image.new("RGB", (10, 10), (200, 100, 50))
    x = prep.to_tensor(image)
    assert x.shape == (3, 4, 6) and x.dtype == torch.float32
    expected = [(200 / 255 - 0.5) / 0.5, (100 / 255 - 0.25) / 0.25, (50 / 255 - 0.0) / 2.0]
    for channel, value in enumerate(expected):
        torch.testing.assert_close(x[channel], torch.full((4, 6), value))
    torch.testing.assert_close(prep.denormalize(x)[:, 0, 0], torch.tensor([200, 100, 50]) / 255)


def test_whole_image_is_kept_unless_crop():
    stripes = np.zeros((20, 60, 3), dtype=np.uint8)
    stripes[:, :20] = (255, 0, 0)
    stripes[:, 20:40] = (0, 255, 0)
    stripes[:, 40:] = (0, 0, 255)
    prep = Preprocessing((12, 12), (0, 0, 0), (1, 1, 1))
    whole = prep.to_tensor(Image.fromarray(stripes))
    assert whole[0, 6, 1] == 1.0 and whole[1, 6, 6] == 1.0 and whole[2, 6, 11] == 1.0
    cropped = prep.to_tensor(Image.fromarray(stripes), crop=True)
    assert (cropped[1] == 1.0).all() and (cropped[0] == 0).all()  # only the middle (green) third


def test_preprocess_many_kinds_at_once(tmp_path, tiny_model):
    path = save(Image.new("RGB", (5, 7), (1, 2, 3)), tmp_path / "a.png")
    batch = tiny_model.preprocess([path, Image.new("L", (3, 3), 9), np.zeros((4, 4, 3), np.uint8)])
    assert batch.shape == (3, 3, 16, 16) and batch.dtype == torch.float32
    assert tiny_model.preprocess(path).shape == (1, 3, 16, 16)


def test_squashed_images_get_a_warning_unless_cropped(tiny_model):
    from convscope.errors import ConvscopeWarning

    wide = Image.new("RGB", (500, 100), (10, 20, 30))
    with pytest.warns(ConvscopeWarning, match=r"500x100 is squashed to 16x16 \(the whole image is kept; crop"):
        tiny_model.preprocess(wide)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        tiny_model.preprocess(wide, crop=True)
        tiny_model.preprocess(Image.new("RGB", (400, 100)))  # exactly 4:1 is still fine


def test_crop_on_the_command_line(tmp_path, capsys):
    from convscope.cli.main import main

    path = save(Image.fromarray(np.random.default_rng(1).integers(0, 255, (60, 300, 3), dtype=np.uint8)),
                tmp_path / "wide.png")
    out = tmp_path / "out"
    assert main(["cam", str(path), "--model", "torchvision:squeezenet1_1", "--weights", "random",
                 "--out", str(out)]) == 0
    err = capsys.readouterr().err.strip()
    assert err == f"convscope: warning: {path}: 300x60 is squashed to 224x224 (the whole image is kept; crop the " \
                  "centre with --crop or crop=True)"
    assert main(["cam", str(path), "--crop", "--model", "torchvision:squeezenet1_1", "--weights", "random",
                 "--out", str(out)]) == 0
    assert capsys.readouterr().err == ""
    overlay = next((out / "cam").glob("wide_*_cam.jpg"))
    assert Image.open(overlay).size == (60, 60)  # the map over the centre the model saw
