"""Exact decoding: every image file becomes the uint8 RGB image a person would see."""
import struct
import zlib

import numpy as np
import pytest
from PIL import Image, ImageOps

from facekd.data.faces import FaceDataError, decode_image, read_image


def _png16_rgb(path, arr):
    """A 16-bit RGB PNG (PIL cannot write one), from an H x W x 3 uint16 array."""
    h, w, _ = arr.shape
    raw = b"".join(b"\x00" + arr[y].astype(">u2").tobytes() for y in range(h))

    def chunk(kind, data):
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", w, h, 16, 2, 0, 0, 0))
                     + chunk(b"IDAT", zlib.compress(raw)) + chunk(b"IEND", b""))
    return path


def _grey(img):
    """The single grey channel of an RGB image whose three channels must be equal."""
    assert img.dtype == np.uint8 and img.ndim == 3 and img.shape[2] == 3
    assert (img[..., 0] == img[..., 1]).all() and (img[..., 1] == img[..., 2]).all()
    return img[..., 0]


SIXTEEN = np.array([[0, 255, 256, 32896, 65535]], dtype=np.uint16)
EIGHT = np.array([[0, 0, 1, 128, 255]], dtype=np.uint8)  # value >> 8


def test_16bit_grey_png_is_scaled_not_clipped(tmp_path):
    path = tmp_path / "grey16.png"
    Image.fromarray(SIXTEEN).save(path)
    with Image.open(path) as im:
        assert im.mode == "I;16"
    np.testing.assert_array_equal(_grey(read_image(path)), EIGHT)


@pytest.mark.parametrize("mode,dtype", [("I;16B", ">u2"), ("I;16L", "<u2"), ("I;16", "<u2")])
def test_16bit_modes_in_any_byte_order(mode, dtype):
    im = Image.frombytes(mode, (SIXTEEN.shape[1], 1), SIXTEEN.astype(dtype).tobytes())
    np.testing.assert_array_equal(_grey(decode_image(im)), EIGHT)


def test_32bit_integer_mode_is_read_as_16bit(tmp_path):
    im = Image.fromarray(np.array([[-5, 0, 32896, 65535, 70000]], dtype=np.int32))
    assert im.mode == "I"
    np.testing.assert_array_equal(_grey(decode_image(im)), [[0, 0, 128, 255, 255]])
    path = tmp_path / "grey16.pgm"  # a 16-bit PGM opens as mode I
    Image.fromarray(SIXTEEN).save(path)
    with Image.open(path) as opened:
        assert opened.mode == "I"
    np.testing.assert_array_equal(_grey(read_image(path)), EIGHT)


def test_16bit_rgb_png(tmp_path):
    arr = np.array([[[65535, 32896, 0], [256, 255, 40000]]], dtype=np.uint16)
    img = read_image(_png16_rgb(tmp_path / "rgb16.png", arr))
    np.testing.assert_array_equal(img, arr >> 8)
    assert img.dtype == np.uint8


def _quadrants(h=2, w=3):
    return (np.arange(h * w * 3, dtype=np.uint8).reshape(h, w, 3) * 5)


@pytest.mark.parametrize("orientation", range(1, 9))
def test_exif_orientation_is_applied(tmp_path, orientation):
    arr = _quadrants()
    im = Image.fromarray(arr)
    exif = im.getexif()
    exif[0x0112] = orientation
    path = tmp_path / f"o{orientation}.png"
    im.save(path, exif=exif)
    with Image.open(path) as opened:
        expected = np.asarray(ImageOps.exif_transpose(opened).convert("RGB"))
    got = read_image(path)
    np.testing.assert_array_equal(got, expected)
    if orientation == 6:  # rotated 90 degrees clockwise for display
        np.testing.assert_array_equal(got, np.rot90(arr, k=-1))


def test_portrait_phone_jpeg_stands_upright(tmp_path):
    arr = np.zeros((16, 32, 3), np.uint8)  # stored landscape: left half black, right half white
    arr[:, 16:] = 255
    im = Image.fromarray(arr)
    exif = im.getexif()
    exif[0x0112] = 6
    path = tmp_path / "phone.jpg"
    im.save(path, exif=exif, quality=95)
    img = read_image(path)
    assert img.shape == (32, 16, 3)  # portrait
    assert img[:12].mean() < 20 and img[20:].mean() > 235  # the left edge is now on top


def test_modes_decode_to_what_a_person_sees(tmp_path):
    la = Image.fromarray(np.array([[[100, 255], [100, 0], [0, 128]]], np.uint8), mode="LA")
    la.save(tmp_path / "la.png")
    np.testing.assert_array_equal(_grey(read_image(tmp_path / "la.png")), [[100, 255, 127]])  # onto white

    rgba = Image.fromarray(np.array([[[10, 20, 30, 255], [10, 20, 30, 0], [200, 0, 0, 128]]], np.uint8), mode="RGBA")
    rgba.save(tmp_path / "rgba.png")
    np.testing.assert_array_equal(read_image(tmp_path / "rgba.png"),
                                  [[[10, 20, 30], [255, 255, 255], [227, 127, 127]]])

    p = Image.new("P", (3, 1))
    p.putpalette([0, 0, 0, 255, 0, 0, 0, 0, 255] + [0] * (768 - 9))
    for x, index in enumerate([1, 2, 0]):
        p.putpixel((x, 0), index)
    p.save(tmp_path / "p.png")
    np.testing.assert_array_equal(read_image(tmp_path / "p.png"), [[[255, 0, 0], [0, 0, 255], [0, 0, 0]]])
    p.save(tmp_path / "p_transparent.png", transparency=2)  # palette entry 2 is transparent
    np.testing.assert_array_equal(read_image(tmp_path / "p_transparent.png"),
                                  [[[255, 0, 0], [255, 255, 255], [0, 0, 0]]])
    p.save(tmp_path / "p.gif")
    np.testing.assert_array_equal(read_image(tmp_path / "p.gif"), [[[255, 0, 0], [0, 0, 255], [0, 0, 0]]])

    pa = p.convert("PA")
    assert pa.mode == "PA"
    np.testing.assert_array_equal(decode_image(pa), [[[255, 0, 0], [0, 0, 255], [0, 0, 0]]])

    cmyk = Image.fromarray(np.array([[[0, 0, 0, 0], [255, 0, 0, 0], [0, 0, 0, 255], [0, 255, 0, 0]]], np.uint8),
                           mode="CMYK")
    cmyk.save(tmp_path / "cmyk.tif")
    np.testing.assert_array_equal(read_image(tmp_path / "cmyk.tif"),
                                  [[[255, 255, 255], [0, 255, 255], [0, 0, 0], [255, 0, 255]]])

    grey_key = Image.fromarray(np.array([[0, 7, 200]], np.uint8))
    grey_key.save(tmp_path / "l_trns.png", transparency=7)  # colour-key transparency
    np.testing.assert_array_equal(_grey(read_image(tmp_path / "l_trns.png")), [[0, 255, 200]])

    one = Image.fromarray(np.array([[True, False]]))
    one.save(tmp_path / "one.png")
    np.testing.assert_array_equal(_grey(read_image(tmp_path / "one.png")), [[255, 0]])

    f = Image.fromarray(np.array([[12.4, 300.0, -5.0, 254.6]], np.float32))
    f.save(tmp_path / "f.tif")
    np.testing.assert_array_equal(_grey(read_image(tmp_path / "f.tif")), [[12, 255, 0, 255]])

    ycbcr = Image.fromarray(np.array([[[100, 50, 200]]], np.uint8)).convert("YCbCr")
    np.testing.assert_array_equal(decode_image(ycbcr), np.asarray(ycbcr.convert("RGB")))

    rgb = np.array([[[1, 2, 3], [250, 251, 252]]], np.uint8)
    Image.fromarray(rgb).save(tmp_path / "rgb.png")
    got = read_image(tmp_path / "rgb.png")
    np.testing.assert_array_equal(got, rgb)
    assert got.dtype == np.uint8 and got.flags.c_contiguous


def test_grey_8bit_is_unchanged(tmp_path):
    grey = np.array([[0, 1, 128, 254, 255]], np.uint8)
    Image.fromarray(grey).save(tmp_path / "g.pgm")
    np.testing.assert_array_equal(_grey(read_image(tmp_path / "g.pgm")), grey)


def test_truncated_jpeg_is_refused_in_full_naming_it(tmp_path):
    rng = np.random.default_rng(0)
    Image.fromarray(rng.integers(0, 255, (32, 32, 3), dtype=np.uint8)).save(tmp_path / "whole.jpg")
    data = (tmp_path / "whole.jpg").read_bytes()
    path = tmp_path / "cut.jpg"
    path.write_bytes(data[: len(data) - 40])  # the header is intact, the pixels are not
    with Image.open(path) as im:
        im.verify()  # the header alone looks fine
    with pytest.raises(FaceDataError) as e:
        read_image(path)
    msg = str(e.value)
    assert msg.startswith(f"cannot read image {path}: OSError: image file is truncated")
    assert msg.endswith("The file is damaged or not an image: replace or delete it, or set data.on_corrupt=skip "
                        "to leave unreadable images out")
