"""load_image: every supported encoding decodes to HxW uint8; every bad input is an ImageError."""
import io
import pickle
import struct
import zlib

import numpy as np
import pytest
from PIL import Image, ImageFile, ImageOps
from pydicom.dataset import FileDataset, FileMetaDataset
from pydicom.encaps import encapsulate
from pydicom.uid import JPEG2000Lossless, ExplicitVRLittleEndian, generate_uid

import pneumo_core.imaging.decode as decode_module
from pneumo_core.imaging import (DecodedImage, ImageError, ImageLimits, ImageTooLargeError,
                                 UnreadableImageError, UnsupportedFormatError, load_image,
                                 sniff_format)

GRADIENT = np.tile(np.arange(0, 256, 4, dtype=np.uint8), (32, 1))  # 32x64, left dark, right bright


def encode(img: Image.Image, fmt: str, **kw) -> bytes:
    buf = io.BytesIO()
    img.save(buf, format=fmt, **kw)
    return buf.getvalue()


def write(tmp_path, name: str, data: bytes):
    path = tmp_path / name
    path.write_bytes(data)
    return path


def dicom_bytes(arr, photometric="MONOCHROME2", bits_stored=12, syntax=ExplicitVRLittleEndian,
                pixel_data=None, preamble=True, **attrs) -> bytes:
    meta = FileMetaDataset()
    meta.TransferSyntaxUID = syntax
    meta.MediaStorageSOPClassUID = "1.2.840.10008.5.1.4.1.1.1"  # CR image storage
    meta.MediaStorageSOPInstanceUID = generate_uid()
    ds = FileDataset(None, {}, file_meta=meta, preamble=b"\0" * 128)
    ds.SOPClassUID, ds.SOPInstanceUID = meta.MediaStorageSOPClassUID, meta.MediaStorageSOPInstanceUID
    ds.Rows, ds.Columns = arr.shape[:2]
    ds.BitsAllocated = arr.dtype.itemsize * 8
    ds.BitsStored, ds.HighBit, ds.PixelRepresentation = bits_stored, bits_stored - 1, 0
    ds.SamplesPerPixel = 3 if arr.ndim == 3 else 1
    if arr.ndim == 3:
        ds.PlanarConfiguration = 0
    ds.PhotometricInterpretation = photometric
    for key, value in attrs.items():
        setattr(ds, key, value)
    if pixel_data is not False:
        ds.PixelData = arr.tobytes() if pixel_data is None else pixel_data
    buf = io.BytesIO()
    ds.save_as(buf, enforce_file_format=True)
    data = buf.getvalue()
    return data if preamble else data[132 + _meta_length(data):]


def _meta_length(data: bytes) -> int:  # (0002,0000) group length value + its own 12 bytes
    return 12 + struct.unpack("<I", data[140:144])[0]


def png_claiming(width: int, height: int) -> bytes:
    def chunk(kind: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b""))
            + chunk(b"IEND", b""))


def check_error(exc_info, cls, code: str, source: str) -> None:
    assert type(exc_info.value) is cls
    assert exc_info.value.code == code
    assert exc_info.value.source == source
    assert str(exc_info.value).startswith(f"{source}: ")


# ---- supported inputs ---------------------------------------------------------------------

def test_png_8bit_gray_is_exact(tmp_path):
    out = load_image(write(tmp_path, "g.png", encode(Image.fromarray(GRADIENT), "PNG")))
    assert isinstance(out, DecodedImage)
    assert (out.format, out.source, out.original_mode, out.bit_depth) == ("png", "g.png", "L", 8)
    assert out.pixels.dtype == np.uint8 and out.pixels.flags.c_contiguous
    assert (out.width, out.height) == (64, 32) and not out.was_color
    np.testing.assert_array_equal(out.pixels, GRADIENT)


def test_jpeg_8bit_gray(tmp_path):
    out = load_image(write(tmp_path, "g.jpg", encode(Image.fromarray(GRADIENT), "JPEG", quality=95)))
    assert (out.format, out.original_mode, out.pixels.shape) == ("jpeg", "L", (32, 64))
    assert np.abs(out.pixels.astype(int) - GRADIENT).max() <= 8


def test_png_16bit_is_stretched_and_keeps_order(tmp_path):
    arr = np.full((16, 16), 1000, np.uint16)
    arr[0, 0], arr[5, 5], arr[9, 9] = 3000, 1500, 2000
    out = load_image(write(tmp_path, "d.png", encode(Image.fromarray(arr), "PNG")))
    assert out.original_mode.startswith("I") and out.bit_depth >= 16
    px = out.pixels
    assert (px.min(), px.max()) == (0, 255) and px[0, 0] == 255 and px[1, 1] == 0
    assert px[0, 0] > px[9, 9] > px[5, 5] > px[1, 1]


def test_constant_16bit_png_does_not_divide_by_zero(tmp_path):
    out = load_image(encode(Image.fromarray(np.full((16, 16), 777, np.uint16)), "PNG"))
    assert out.pixels.shape == (16, 16) and out.pixels.dtype == np.uint8


def test_rgb_colour_and_rgb_encoded_gray():
    colour = np.zeros((16, 16, 3), np.uint8)
    colour[..., 0] = 200
    out = load_image(encode(Image.fromarray(colour), "PNG"))
    assert out.was_color and out.original_mode == "RGB"
    assert out.pixels[0, 0] == round(200 * 0.299)
    gray3 = np.repeat(GRADIENT[..., None], 3, axis=2)
    out = load_image(encode(Image.fromarray(gray3), "PNG"))
    assert not out.was_color and out.original_mode == "RGB"
    np.testing.assert_array_equal(out.pixels, GRADIENT)


@pytest.mark.parametrize("mode", ["RGBA", "LA"])
def test_alpha_composites_over_black(mode):
    img = Image.new(mode, (16, 16), (255, 0) if mode == "LA" else (255, 255, 255, 0))
    img.paste((255, 255) if mode == "LA" else (255, 255, 255, 255), (0, 0, 8, 16))  # left opaque
    out = load_image(encode(img, "PNG"))
    assert out.original_mode == mode and not out.was_color
    assert out.pixels[0, 0] == 255 and out.pixels[0, 15] == 0


def test_palette_image():
    img = Image.fromarray(np.array([[0, 1] * 8] * 16, np.uint8), mode="L").convert("P")
    img.putpalette([0, 0, 0, 255, 0, 0] + [0] * 762)  # index 0 black, 1 red
    out = load_image(encode(img, "PNG"))
    assert out.original_mode == "P" and out.was_color
    assert out.pixels[0, 0] == 0 and out.pixels[0, 1] == round(255 * 0.299)


def test_exif_orientation_is_applied():
    img = Image.fromarray(GRADIENT)  # 64 wide, 32 high
    exif = Image.Exif()
    exif[0x0112] = 6  # stored rotated; display needs a 90 degree turn
    out = load_image(encode(img, "JPEG", exif=exif, quality=95))
    assert out.pixels.shape == (64, 32) and (out.width, out.height) == (32, 64)


@pytest.mark.parametrize("options", [{"quality": 90}, {"quality": 60, "progressive": True},
                                     {"quality": 75, "optimize": True}])
@pytest.mark.parametrize("orientation", range(1, 9))
def test_grayscale_jpeg_pixels_match_pil(options, orientation, monkeypatch):
    """Grayscale JPEGs skip PIL's decoder; the pixels must be exactly PIL's, EXIF turn included."""
    rng = np.random.default_rng(orientation)
    img = Image.fromarray(rng.integers(0, 256, (37, 53), np.uint8)).resize((211, 157))
    exif = Image.Exif()
    exif[0x0112] = orientation
    data = encode(img, "JPEG", exif=exif, **options)
    with Image.open(io.BytesIO(data)) as pil:
        expected = np.asarray(ImageOps.exif_transpose(pil))
    fast = _spy_fast_jpeg(monkeypatch)
    out = load_image(data)
    assert fast == [True]  # the simplejpeg path decoded it
    assert (out.original_mode, out.was_color, out.bit_depth) == ("L", False, 8)
    assert out.pixels.flags.c_contiguous and (out.height, out.width) == expected.shape
    np.testing.assert_array_equal(out.pixels, expected)


def _spy_fast_jpeg(monkeypatch) -> list[bool]:
    """Record whether each decode took the simplejpeg path for grayscale JPEGs (and it succeeded)."""
    calls: list[bool] = []
    real = decode_module._decode_gray_jpeg

    def spy(data: bytes, label: str, orientation: int):
        out = real(data, label, orientation)
        calls.append(out is not None)
        return out

    monkeypatch.setattr(decode_module, "_decode_gray_jpeg", spy)
    return calls


def test_xmp_orientation_is_applied(monkeypatch):
    """PIL also turns an image by the orientation in XMP metadata; simplejpeg would not, so such
    files keep the PIL path."""
    xmp = (b'<x:xmpmeta xmlns:x="adobe:ns:meta/"><rdf:RDF xmlns:rdf="http://www.w3.org/1999/02/'
           b'22-rdf-syntax-ns#"><rdf:Description xmlns:tiff="http://ns.adobe.com/tiff/1.0/" '
           b'tiff:Orientation="6"/></rdf:RDF></x:xmpmeta>')
    fast = _spy_fast_jpeg(monkeypatch)
    out = load_image(encode(Image.fromarray(GRADIENT), "JPEG", xmp=xmp, quality=95))
    assert out.pixels.shape == (64, 32) and fast == []


def test_bytes_input_uses_name_or_upload():
    data = encode(Image.fromarray(GRADIENT), "PNG")
    assert load_image(data).source == "<upload>"
    assert load_image(data, name="chest.png").source == "chest.png"
    assert sniff_format(data) == "png"


# ---- DICOM ---------------------------------------------------------------------------------

RAMP12 = np.tile(np.linspace(0, 4095, 32).astype(np.uint16), (16, 1))  # 16x32, 12-bit ramp


def test_dicom_monochrome2_12bit(tmp_path):
    out = load_image(write(tmp_path, "cr.dcm", dicom_bytes(RAMP12)))
    assert (out.format, out.original_mode, out.bit_depth) == ("dicom", "MONOCHROME2", 12)
    assert out.pixels.dtype == np.uint8 and out.pixels.shape == (16, 32)
    assert (out.pixels[0, 0], out.pixels[0, -1]) == (0, 255)
    assert np.all(np.diff(out.pixels[0].astype(int)) > 0)


def test_dicom_monochrome1_is_inverted():
    mono2 = load_image(dicom_bytes(RAMP12, "MONOCHROME2")).pixels
    mono1 = load_image(dicom_bytes(RAMP12, "MONOCHROME1")).pixels
    np.testing.assert_array_equal(mono1, 255 - mono2)


def test_dicom_window_clips_outside_values():
    out = load_image(dicom_bytes(RAMP12, WindowCenter=2000, WindowWidth=1000)).pixels[0]
    values = RAMP12[0]
    assert np.all(out[values < 1500] == 0) and np.all(out[values > 2500] == 255)
    inside = (values > 1600) & (values < 2400)
    assert inside.any() and np.all((out[inside] > 0) & (out[inside] < 255))


def test_dicom_rescale_then_window():
    # stored 0..4095 -> HU -1024..3071; window centred at HU 0 is stored value 1024
    out = load_image(dicom_bytes(RAMP12, RescaleSlope=1, RescaleIntercept=-1024,
                                 WindowCenter=0, WindowWidth=400)).pixels[0]
    hu = RAMP12[0].astype(int) - 1024
    assert np.all(out[hu < -200] == 0) and np.all(out[hu > 200] == 255)


def test_dicom_multiframe_takes_first_frame():
    frames = np.stack([RAMP12, RAMP12[:, ::-1]])  # second frame is mirrored
    out = load_image(dicom_bytes(RAMP12, NumberOfFrames=2, pixel_data=frames.tobytes()))
    assert out.pixels.shape == (16, 32) and out.pixels[0, 0] < out.pixels[0, -1]


def test_dicom_rgb():
    rgb = np.zeros((16, 16, 3), np.uint8)
    rgb[..., 1] = 100
    out = load_image(dicom_bytes(rgb, "RGB", bits_stored=8))
    assert out.was_color and out.pixels[0, 0] == round(100 * 0.587)


def test_headerless_dicom_named_dcm_is_accepted():
    out = load_image(dicom_bytes(RAMP12, preamble=False), name="raw.dcm")
    assert out.format == "dicom" and out.pixels.shape == (16, 32)


def test_dicom_without_pixel_data(tmp_path):
    path = write(tmp_path, "sr.dcm", dicom_bytes(RAMP12, pixel_data=False))
    with pytest.raises(ImageError) as e:
        load_image(path)
    check_error(e, UnreadableImageError, "unreadable_image", "sr.dcm")
    assert "no pixel data" in str(e.value)
    with pytest.raises(UnreadableImageError, match="no pixel data"):  # the element present but empty
        load_image(dicom_bytes(RAMP12, pixel_data=b""), name="empty.dcm")


def test_dicom_compressed_without_decoder_names_syntax():
    data = dicom_bytes(RAMP12, syntax=JPEG2000Lossless, pixel_data=encapsulate([b"\x00" * 64]))
    with pytest.raises(ImageError) as e:
        load_image(data, name="j2k.dcm")
    check_error(e, UnreadableImageError, "unreadable_image", "j2k.dcm")
    assert "JPEG 2000" in str(e.value) and "pylibjpeg" in str(e.value)


# ---- bad inputs ----------------------------------------------------------------------------

@pytest.mark.parametrize("fmt,name", [("JPEG", "cut.jpg"), ("PNG", "cut.png")])
def test_truncated_image(tmp_path, fmt, name):
    noise = np.random.default_rng(0).integers(0, 256, (64, 64), np.uint8)
    data = encode(Image.fromarray(noise), fmt)
    with pytest.raises(ImageError) as e:
        load_image(write(tmp_path, name, data[: len(data) // 2]))
    check_error(e, UnreadableImageError, "unreadable_image", name)
    assert ImageFile.LOAD_TRUNCATED_IMAGES is False


@pytest.mark.parametrize("mode", ["L", "RGB"])
def test_jpeg_cut_anywhere_is_refused(mode):
    """A truncated JPEG is refused wherever it is cut, with or without an end marker appended
    (PIL and OpenCV decode those, grey where data is missing)."""
    noise = np.random.default_rng(3).integers(0, 256, (64, 64, 3), np.uint8)
    data = encode(Image.fromarray(noise).convert(mode), "JPEG", quality=90)
    for end in range(len(data) // 3, len(data) - 1, 97):
        for cut in (data[:end], data[:end] + b"\xff\xd9"):
            with pytest.raises(UnreadableImageError, match="corrupt or truncated|truncated"):
                load_image(cut, name="cut.jpg")


@pytest.mark.parametrize("mode", ["L", "RGB"])
def test_jpeg_with_corrupt_scan_data_is_refused(mode):
    smooth = np.tile(np.arange(0, 256, 2, dtype=np.uint8), (128, 1))
    data = bytearray(encode(Image.fromarray(np.dstack([smooth] * 3)).convert(mode), "JPEG", quality=90))
    data[len(data) // 2:len(data) // 2 + 64] = np.random.default_rng(4).integers(0, 256, 64, np.uint8).tobytes()
    with pytest.raises(UnreadableImageError, match="the JPEG data is corrupt or truncated") as e:
        load_image(bytes(data), name="scan.jpg")
    check_error(e, UnreadableImageError, "unreadable_image", "scan.jpg")


@pytest.mark.parametrize("data,name,cls,code,words", [
    (np.random.default_rng(1).bytes(4096), "noise.bin", UnsupportedFormatError,
     "unsupported_media_type", "unrecognised"),
    (np.random.default_rng(2).bytes(4096), "noise.dcm", UnsupportedFormatError,
     "unsupported_media_type", "unsupported"),
    (b"", "empty.png", UnreadableImageError, "unreadable_image", "empty"),
    (b"GIF89a" + b"\x00" * 64, "scan.gif", UnsupportedFormatError, "unsupported_media_type", "(GIF)"),
    (b"patient: 42\nnot an image\n", "notes.png", UnsupportedFormatError,
     "unsupported_media_type", "text"),
])
def test_bad_content(tmp_path, data, name, cls, code, words):
    with pytest.raises(ImageError) as e:
        load_image(write(tmp_path, name, data))
    check_error(e, cls, code, name)
    assert words in str(e.value) and "JPEG, PNG or DICOM" in str(e.value)


@pytest.mark.parametrize("width,height", [(100_000, 100_000), (7_000, 7_000)])
def test_decompression_bomb_is_rejected_from_the_header(width, height):
    """The file holds no pixel data at all: only a check of the header can call it too large
    (a decoder would fail on the missing data instead)."""
    with pytest.raises(ImageError) as e:
        load_image(png_claiming(width, height), name="bomb.png")
    check_error(e, ImageTooLargeError, "image_too_large", "bomb.png")


def test_dicom_pixel_limit_checked_before_decoding():
    with pytest.raises(ImageError) as e:
        load_image(dicom_bytes(RAMP12), name="big.dcm", limits=ImageLimits(max_pixels=100))
    check_error(e, ImageTooLargeError, "image_too_large", "big.dcm")


def test_max_bytes(tmp_path):
    data = encode(Image.fromarray(GRADIENT), "PNG")
    limits = ImageLimits(max_bytes=len(data) - 1)
    for source in (write(tmp_path, "big.png", data), data):
        with pytest.raises(ImageError) as e:
            load_image(source, name="big.png", limits=limits)
        check_error(e, ImageTooLargeError, "image_too_large", "big.png")


def test_too_small_image():
    with pytest.raises(ImageError) as e:
        load_image(encode(Image.new("L", (4, 40)), "PNG"), name="tiny.png")
    check_error(e, UnreadableImageError, "unreadable_image", "tiny.png")
    assert "too small" in str(e.value)


def test_missing_file(tmp_path):
    with pytest.raises(ImageError) as e:
        load_image(tmp_path / "nope.png")
    check_error(e, UnreadableImageError, "unreadable_image", "nope.png")


def test_error_is_a_value_error_and_pickles():
    err = ImageTooLargeError("x.png", "9x9 pixels")
    copy = pickle.loads(pickle.dumps(err))
    assert isinstance(copy, ValueError) and str(copy) == str(err)
    assert (copy.code, copy.source) == ("image_too_large", "x.png")


def test_sniff_format():
    assert sniff_format(b"\xff\xd8\xff\xe0") == "jpeg"
    assert sniff_format(b"\0" * 128 + b"DICM") == "dicom"
    assert sniff_format(b"GIF89a") is None and sniff_format(b"") is None
