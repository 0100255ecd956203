import io
import struct
import warnings

import numpy as np
import pytest
from PIL import Image, ImageOps

from app.decode import _bomb, check_pixels, check_size, configure_pillow, decode_image
from app.errors import InvalidInput, ServingError, TooLarge, UnsupportedFormat
from app.responses import status_of
from tests.reliability.corpus import png_claiming
from tests.support.service import image_bytes


@pytest.fixture(autouse=True)
def _pillow_limits():
    configure_pillow(1_000_000)


def encoded(image: Image.Image, fmt: str = "PNG", **save) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format=fmt, **save)
    return buffer.getvalue()


@pytest.mark.parametrize("fmt", ["PNG", "JPEG", "WEBP", "BMP", "GIF"])
def test_allowed_formats_decode_to_rgb_uint8(fmt):
    rgb = decode_image(image_bytes(13, 7, fmt=fmt), 1000)
    assert rgb.shape == (7, 13, 3) and rgb.dtype == np.uint8


@pytest.mark.parametrize("mode", ["P", "L", "LA", "RGBA", "1", "I;16"])
def test_every_mode_becomes_rgb(mode):
    image = Image.new(mode, (6, 5))
    assert decode_image(encoded(image), 1000).shape == (5, 6, 3)


def test_cmyk_jpeg_becomes_rgb():
    assert decode_image(image_bytes(6, 5, mode="CMYK", fmt="JPEG"), 1000).shape == (5, 6, 3)


def test_sixteen_bit_is_scaled_not_clipped():
    array = np.array([[0, 257, 32768, 65535]], np.uint16)
    rgb = decode_image(encoded(Image.fromarray(array)), 1000)
    assert rgb.dtype == np.uint8 and rgb[0, :, 0].tolist() == [0, 1, 128, 255]
    assert (rgb[..., 0] == rgb[..., 2]).all()


def test_alpha_is_dropped_not_composited():
    rgb = decode_image(encoded(Image.new("RGBA", (3, 3), (10, 20, 30, 0))), 1000)
    assert rgb[0, 0].tolist() == [10, 20, 30]


def test_palette_with_transparency_gives_its_colours_without_a_warning():
    image = Image.fromarray(np.array([[0, 1], [1, 0]], np.uint8), mode="P")
    image.putpalette([200, 100, 50, 1, 2, 3])
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # Pillow warns when it must guess at the transparency
        rgb = decode_image(encoded(image, transparency=b"\x00\x80"), 1000)  # alpha per entry
    assert rgb.tolist() == [[[200, 100, 50], [1, 2, 3]], [[1, 2, 3], [200, 100, 50]]]


def test_exif_orientation_6_rotates_into_the_displayed_frame():
    array = np.zeros((20, 40, 3), np.uint8)
    array[:, :10] = 255  # a white band on the left, stored landscape
    exif = Image.Exif()
    exif[0x0112] = 6  # display rotated 90° clockwise
    rgb = decode_image(encoded(Image.fromarray(array), "JPEG", exif=exif, quality=95), 10_000)
    assert rgb.shape == (40, 20, 3)
    assert rgb[:10].mean() > 200 and rgb[-10:].mean() < 50  # the band is now on top


def test_exif_orientation_of_a_png_is_applied_too():
    """Pillow's route (every format but baseline JPEG) turns the image as its EXIF says."""
    array = np.zeros((20, 40, 3), np.uint8)
    array[:, :10] = 255
    exif = Image.Exif()
    exif[0x0112] = 6
    rgb = decode_image(encoded(Image.fromarray(array), "PNG", exif=exif), 10_000)
    assert rgb.shape == (40, 20, 3)
    assert rgb[:10].min() == 255 and rgb[10:].max() == 0


def photo_array(width: int, height: int, seed: int = 3) -> np.ndarray:
    """Smooth gradients with noise: JPEG's chroma subsampling and IDCT both have work to do."""
    rng = np.random.default_rng(seed)
    ys, xs = np.mgrid[:height, :width]
    base = np.stack([xs * 255 // max(width - 1, 1), ys * 255 // max(height - 1, 1),
                     (xs + ys) * 127 // max(width + height - 2, 1)], axis=-1)
    return (base + rng.integers(-20, 21, base.shape)).clip(0, 255).astype(np.uint8)


def pillow_rgb(data: bytes) -> np.ndarray:
    """Pillow's own route: load, EXIF transpose, RGB."""
    with Image.open(io.BytesIO(data)) as image:
        image.load()
        ImageOps.exif_transpose(image, in_place=True)
        return np.asarray(image.convert("RGB"))


@pytest.mark.parametrize(("mode", "subsampling"), [("RGB", 0), ("RGB", 2), ("L", 0)])
def test_a_jpeg_decodes_to_the_same_pixels_as_pillow(mode, subsampling):
    image = Image.fromarray(photo_array(37, 23)).convert(mode)
    data = encoded(image, "JPEG", quality=85, subsampling=subsampling)
    assert np.array_equal(decode_image(data, 10_000), pillow_rgb(data))


def test_a_progressive_jpeg_decodes_to_the_same_pixels_as_pillow():
    data = encoded(Image.fromarray(photo_array(40, 30)), "JPEG", quality=80, progressive=True)
    assert np.array_equal(decode_image(data, 10_000), pillow_rgb(data))


@pytest.mark.parametrize("orientation", range(1, 9))
def test_every_exif_orientation_of_a_jpeg_turns_as_pillow_turns_it(orientation):
    exif = Image.Exif()
    exif[0x0112] = orientation
    data = encoded(Image.fromarray(photo_array(24, 14)), "JPEG", exif=exif, quality=95)
    assert np.array_equal(decode_image(data, 10_000), pillow_rgb(data))


def test_a_jpeg_decodes_into_one_channels_last_block_that_preprocessing_takes_as_it_is():
    """No 4-byte-per-pixel decode buffer and no copy after it: preprocessing's channels-last
    view of the array needs no copy either."""
    rgb = decode_image(encoded(Image.fromarray(photo_array(30, 20)), "JPEG"), 10_000)
    assert rgb.shape == (20, 30, 3) and rgb.strides == (90, 3, 1)
    assert np.ascontiguousarray(rgb) is rgb


def test_a_jpeg_cut_inside_its_pixel_data_is_named_truncated():
    data = encoded(Image.fromarray(photo_array(64, 64)), "JPEG", quality=95)
    with pytest.raises(InvalidInput) as caught:
        decode_image(data[:len(data) // 2], 10_000)
    assert caught.value.message == ("the JPEG data is truncated or corrupt (Image is incomplete "
                                    "or truncated)")
    assert caught.value.code == "invalid_image"


def test_animated_gif_uses_the_first_frame():
    frames = [Image.new("RGB", (12, 10), c) for c in ((255, 0, 0), (0, 0, 255))]
    data = encoded(frames[0], "GIF", save_all=True, append_images=frames[1:])
    rgb = decode_image(data, 1000)
    assert rgb[0, 0, 0] > 200 and rgb[0, 0, 2] < 50


@pytest.mark.parametrize("data,status,code", [
    (b"", 400, "empty_file"),
    (b"hello, this is text", 400, "invalid_image"),
    (image_bytes(16, 16)[:60], 400, "invalid_image"),
    (image_bytes(16, 16, fmt="JPEG")[:200], 400, "invalid_image"),
    (image_bytes(8, 8, fmt="TIFF"), 415, "unsupported_format"),
    (image_bytes(40, 30), 413, "too_many_pixels"),
])
def test_bad_uploads_are_refused_with_a_status_and_code(data, status, code):
    with pytest.raises(ServingError) as info:
        decode_image(data, 1000)
    assert (status_of(info.value), info.value.code) == (status, code)


def test_pixel_limit_message_names_the_size_and_the_limit():
    with pytest.raises(ServingError, match=r"40×30 = 1,200 pixels; the limit is 1,000"):
        decode_image(image_bytes(40, 30), 1000)


def test_header_claiming_a_huge_size_is_refused_before_decoding():
    configure_pillow(40_000_000)
    data = png_claiming(20000, 20000)  # a 1×1 PNG whose IHDR says 20000×20000
    with pytest.raises(ServingError) as info:
        decode_image(data, 40_000_000)
    assert status_of(info.value) == 413 and "400,000,000 pixels" in info.value.message


def test_random_bytes_only_ever_raise_client_errors():
    rng = np.random.default_rng(0)
    for i in range(60):
        data = rng.integers(0, 256, int(rng.integers(1, 400)), dtype=np.uint8).tobytes()
        if i % 2:
            data = image_bytes(8, 8)[:16] + data  # a PNG signature and IHDR start, then junk
        with pytest.raises(ServingError) as info:
            decode_image(data, 1000)
        assert status_of(info.value) in (400, 413, 415)


@pytest.mark.parametrize("kind", [b"P1", b"P3", b"P6"])
def test_a_netpbm_image_is_refused_by_name_with_415(kind):
    data = kind + b"\n2 2\n255\n" + bytes(12)
    with pytest.raises(UnsupportedFormat, match="PNM images are not accepted; send JPEG"):
        decode_image(data, 1_000_000)


@pytest.mark.parametrize("data", [b"P7\n2 2\n", b"P6x2 2\n", b"Q6\n2 2\n", b"P"])
def test_bytes_that_only_resemble_netpbm_are_400_not_an_image(data):
    with pytest.raises(InvalidInput, match="not a readable image"):
        decode_image(data, 1_000_000)


def test_the_pixel_message_gives_the_limit_in_megapixels():
    with pytest.raises(TooLarge, match=r"the limit is 2,500,000 pixels \(2\.5 MP\)"):
        check_size(2000, 2000, 2_500_000)


def test_the_side_message_names_the_longest_side_and_the_limit():
    with pytest.raises(TooLarge, match="3,000 pixels and the limit is 2,048"):
        check_size(3000, 10, 10**9, max_side=2048)


@pytest.mark.parametrize("array", [np.zeros((4, 4, 4), np.uint8), np.zeros((4, 4), np.uint8),
                                   np.zeros((4, 4, 3), np.float32), np.zeros((4, 4, 1), np.uint8)])
def test_check_pixels_takes_only_uint8_rgb_arrays(array):
    with pytest.raises(InvalidInput, match=r"must be uint8 \(H, W, 3\); got") as caught:
        check_pixels(array, 1000)
    assert caught.value.code == "invalid_image"


def test_pillows_own_bomb_limit_is_reported_with_our_code_and_limits():
    named = _bomb(Image.DecompressionBombError("Image size (5000 pixels) exceeds limit"), 1000)
    unnamed = _bomb(Image.DecompressionBombError("too big"), 1000)
    assert named.code == unnamed.code == "too_many_pixels"
    assert named.message.startswith("the image is 5,000 pixels; the limit is 1,000 pixels")
    assert unnamed.message.startswith("the image is over 2,000 pixels; the limit is 1,000 pixels")
    assert "(0.001 MP)" in unnamed.message


def test_the_pixel_message_gives_a_small_limit_in_megapixels_exactly():
    with pytest.raises(TooLarge, match=r"the limit is 1,000 pixels \(0\.001 MP\)"):
        check_size(40, 40, 1000)


def test_a_p_followed_by_a_letter_is_not_taken_for_netpbm():
    with pytest.raises(InvalidInput, match="not a readable image"):
        decode_image(b"PX\n2 2\n255\n" + bytes(12), 1_000_000)


def test_check_pixels_applies_the_longest_side_limit():
    check_pixels(np.zeros((4, 64, 3), np.uint8), 1000, max_side=64)
    with pytest.raises(TooLarge, match="its longest side is 65 pixels and the limit is 64"):
        check_pixels(np.zeros((4, 65, 3), np.uint8), 1000, max_side=64)


def test_check_pixels_applies_the_pixel_limit():
    check_pixels(np.zeros((10, 100, 3), np.uint8), 1000)
    with pytest.raises(TooLarge, match="the limit is 1,000 pixels"):
        check_pixels(np.zeros((10, 101, 3), np.uint8), 1000)


def test_a_png_ending_in_a_few_stray_bytes_after_its_last_chunk_still_decodes():
    data = image_bytes(8, 8)
    cut = data.rfind(b"IEND") - 4  # IEND's length field
    assert decode_image(data[:cut] + b"\0\0", 1000).shape == (8, 8, 3)


def png_chunks(data: bytes) -> dict[bytes, int]:
    """Chunk type → its offset, walking the lengths (IHDR at 8, right after the signature)."""
    offsets, pos = {}, 8
    while pos < len(data):
        (length,) = struct.unpack_from(">I", data, pos)
        offsets[data[pos + 4:pos + 8]] = pos
        pos += 12 + length
    return offsets


def with_bad_crc(data: bytes, kind: bytes) -> bytes:
    pos = png_chunks(data)[kind]
    (length,) = struct.unpack_from(">I", data, pos)
    crc_at = pos + 8 + length
    return data[:crc_at] + bytes(b ^ 0xFF for b in data[crc_at:crc_at + 4]) + data[crc_at + 4:]


@pytest.mark.parametrize("kind", [b"IDAT", b"IEND"])  # IEND: the last 12 bytes of the file
def test_a_png_chunk_with_a_bad_crc_is_named_with_its_offset(kind):
    data = image_bytes(8, 8)
    with pytest.raises(InvalidInput) as caught:
        decode_image(with_bad_crc(data, kind), 1000)
    assert caught.value.code == "invalid_image"
    assert caught.value.message == (f"the PNG is corrupt: chunk {kind.decode()!r} at byte "
                                    f"{png_chunks(data)[kind]} fails its CRC check")


def test_bytes_after_iend_are_not_checked_as_chunks():
    data = image_bytes(8, 8)
    junk = struct.pack(">I", 1) + b"junk" + b"x" + b"\0\0\0\0"  # a chunk whose CRC is wrong
    assert decode_image(data + junk, 1000).shape == (8, 8, 3)


def test_a_chunk_length_past_the_end_is_left_to_the_decoder():
    """A length of 2³¹ (negative if read signed) runs past the data: not a CRC failure."""
    data = image_bytes(8, 8)
    broken = data[:33] + struct.pack(">I", 0x80000000) + b"tEXt" + b"abc"
    with pytest.raises(InvalidInput, match="the image header cannot be read"):
        decode_image(broken, 1000)


@pytest.mark.parametrize(("data", "message"), [
    (image_bytes(16, 16, fmt="JPEG")[:200], "the image header cannot be read (OSError)"),
    (image_bytes(16, 16)[:60],
     "the PNG data is truncated or corrupt (OSError: image file is truncated)"),
])
def test_unreadable_data_is_named_with_the_decoders_error(data, message):
    with pytest.raises(InvalidInput) as caught:
        decode_image(data, 1000)
    assert caught.value.message == message


@pytest.mark.parametrize(("width", "height"), [(0, 5), (5, 0), (0, 0)])
def test_an_image_without_pixels_is_invalid(width, height):
    with pytest.raises(InvalidInput) as caught:
        check_size(width, height, 1000)
    assert caught.value.code == "invalid_image"
    assert caught.value.message == f"the image is {width}×{height}; it needs pixels"


def test_pillows_backstop_at_twice_the_limit_fires_at_open_with_our_message():
    previous = Image.MAX_IMAGE_PIXELS
    try:
        configure_pillow(1000)
        with pytest.raises(TooLarge) as caught:
            decode_image(image_bytes(100, 100), 10**9)  # our own check would let it through
    finally:
        Image.MAX_IMAGE_PIXELS = previous
    assert caught.value.message.startswith("the image is 10,000 pixels; the limit is 1,000,000,000")
