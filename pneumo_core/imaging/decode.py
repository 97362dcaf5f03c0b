"""The one image decoder: JPEG, PNG or DICOM bytes in, an 8-bit grayscale array out.

Training, the CLI, the REST API and the RunPod handler all call :func:`load_image`, so an image
is decoded the same way wherever it comes from. Every failure is an :class:`ImageError` whose
message names the source, says what is wrong and what to do; no other exception escapes.
"""
from __future__ import annotations

import os
import struct
import zlib
from dataclasses import dataclass
from io import BytesIO

import numpy as np
import pydicom
import simplejpeg
from PIL import Image, ImageOps, UnidentifiedImageError
from pydicom.pixels import apply_modality_lut, apply_voi, apply_windowing, pixel_array
from pydicom.uid import (DeflatedExplicitVRLittleEndian, ExplicitVRBigEndian, ExplicitVRLittleEndian,
                         ImplicitVRLittleEndian)

from pneumo_core.imaging.budget import BUDGET, DecoderBusyError
from pneumo_core.errors import PneumoError

_UPLOAD_HINT = "Upload a JPEG, PNG or DICOM file."
_OTHER_FORMATS = [(b"GIF87a", "GIF"), (b"GIF89a", "GIF"), (b"BM", "BMP"), (b"II*\x00", "TIFF"),
                  (b"MM\x00*", "TIFF"), (b"%PDF", "PDF"), (b"\x00\x00\x00\x0cjP  ", "JPEG 2000")]
_PIXEL_KEYWORDS = ("PixelData", "FloatPixelData", "DoubleFloatPixelData")
_SYNTAX_BY_ENCODING = {(True, True): ImplicitVRLittleEndian, (False, True): ExplicitVRLittleEndian,
                       (False, False): ExplicitVRBigEndian}


class ImageError(PneumoError, ValueError):
    """An image cannot be used; ``str(e)`` names ``source``, the reason, and what to do."""

    code = "unreadable_image"
    http_status = 400
    prefix = ""
    hint = _UPLOAD_HINT

    def __init__(self, source: str, reason: str, hint: str | None = None) -> None:
        self.source, self.reason, self.hint = source, reason.rstrip(". "), hint or self.hint
        super().__init__(f"{source}: {self.prefix}{self.reason}. {self.hint}")

    def __reduce__(self):  # keep the fields when pickled (e.g. across DataLoader workers)
        return type(self), (self.source, self.reason, self.hint)


class UnreadableImageError(ImageError):
    """Corrupt, truncated, empty, too small, or a DICOM file without (decodable) pixel data."""

    code = "unreadable_image"
    prefix = "cannot read image: "
    hint = "Check that the file is a complete, uncorrupted JPEG, PNG or DICOM image and try again."


class UnsupportedFormatError(ImageError):
    """Not JPEG, PNG or DICOM by its magic bytes (whatever the file name says)."""

    code = "unsupported_media_type"
    http_status = 415


class ImageTooLargeError(ImageError):
    """Over ``max_bytes`` or ``max_pixels`` (this includes decompression bombs)."""

    code = "image_too_large"
    http_status = 413
    prefix = "image too large: "
    hint = "Downscale the image or export it at a lower resolution, then try again."


@dataclass(frozen=True)
class ImageLimits:
    """What :func:`load_image` accepts; anything outside raises before pixels are decoded."""

    max_bytes: int = 50 * 1024 * 1024
    max_pixels: int = 40_000_000  # width * height
    min_side: int = 8  # a smaller side raises UnreadableImageError


@dataclass(frozen=True, eq=False)
class DecodedImage:
    """A decoded image: ``pixels`` is an HxW C-contiguous uint8 grayscale array.

    ``width``/``height`` are the decoded size (after EXIF orientation), before any resizing.
    ``was_color`` is True only when the colour channels actually differ somewhere.
    ``not_a_chest_xray`` lists what a DICOM header says against a frontal chest radiograph
    (another modality, body part or a lateral view); ``notes`` other things worth saying (several
    frames, of which the first is used).
    """

    pixels: np.ndarray
    format: str  # "jpeg" | "png" | "dicom"
    source: str
    original_mode: str  # PIL mode ("L", "I;16", "RGB", ...) or DICOM PhotometricInterpretation
    bit_depth: int  # bits per stored sample (DICOM: BitsStored)
    was_color: bool
    width: int
    height: int
    not_a_chest_xray: tuple[str, ...] = ()
    notes: tuple[str, ...] = ()


def sniff_format(data: bytes) -> str | None:
    """Return "jpeg", "png" or "dicom" from the magic bytes of ``data``, else None."""
    if data[:3] == b"\xff\xd8\xff":
        return "jpeg"
    if data[:8] == b"\x89PNG\r\n\x1a\n":
        return "png"
    if data[128:132] == b"DICM":
        return "dicom"
    return None


def load_image(source: str | os.PathLike | bytes, *, name: str | None = None,
               limits: ImageLimits = ImageLimits()) -> DecodedImage:
    """Decode a JPEG, PNG or DICOM file (path) or its bytes to 8-bit grayscale.

    ``name`` labels the image in errors (default: the file name, or "<upload>" for bytes).
    The format comes from the content, never the extension. Raises :class:`ImageError`
    (one of its three subclasses), or DecoderBusyError when the process's decode memory
    budget (``imaging.budget``) stays full, and nothing else.
    """
    is_bytes = isinstance(source, (bytes, bytearray, memoryview))
    label = name or ("<upload>" if is_bytes else os.path.basename(os.fspath(source)))
    data = bytes(source) if is_bytes else _read_file(source, label, limits)
    if len(data) > limits.max_bytes:
        raise ImageTooLargeError(label, f"{len(data):,} bytes, limit {limits.max_bytes:,}")
    if not data:
        raise UnreadableImageError(label, "the file is empty")
    try:
        fmt = sniff_format(data)
        if fmt in ("jpeg", "png"):
            return _decode_pil(data, fmt, label, limits)
        if fmt == "dicom":
            return _decode_dicom(data, label, limits, forced=False)
        if _maybe_headerless_dicom(data, label):
            return _decode_dicom(data, label, limits, forced=True)
        raise UnsupportedFormatError(label, f"unsupported image format ({_describe(data)})")
    except (ImageError, DecoderBusyError):
        raise
    except Image.DecompressionBombError as e:  # over PIL's own hard limit, before our check ran
        raise ImageTooLargeError(label, f"the header claims over {2 * Image.MAX_IMAGE_PIXELS:,} "
                                 "pixels (possible decompression bomb)") from e
    except MemoryError as e:
        raise ImageTooLargeError(label, "not enough memory to decode it") from e
    except Exception as e:  # any decoder failure is a property of the file, not a crash
        raise UnreadableImageError(label, str(e) or type(e).__name__) from e


def _read_file(path: str | os.PathLike, label: str, limits: ImageLimits) -> bytes:
    try:
        size = os.stat(path).st_size
        if size > limits.max_bytes:
            raise ImageTooLargeError(label, f"{size:,} bytes, limit {limits.max_bytes:,}")
        with open(path, "rb") as f:
            return f.read(limits.max_bytes + 1)
    except OSError as e:
        raise UnreadableImageError(label, e.strerror or str(e), "Check the path and try again.") from e


def _describe(data: bytes) -> str:
    for magic, fmt in _OTHER_FORMATS:
        if data.startswith(magic):
            return fmt
    if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return "WEBP"
    try:
        data[:1024].decode("utf-8")
        return "text, not an image"
    except UnicodeDecodeError:
        return "unrecognised content"


def _maybe_headerless_dicom(data: bytes, label: str) -> bool:
    """A DICOM file without the 128-byte preamble: only tried for .dcm names or a DICOM-like start."""
    if os.path.splitext(label)[1].lower() in (".dcm", ".dicom"):
        return True
    # first element a group 0002 or 0008 tag (little endian), as in real headerless files
    return data[:2] in (b"\x02\x00", b"\x08\x00") and data[3:4] == b"\x00"


def _check_size(label: str, width: int, height: int, limits: ImageLimits) -> None:
    if width * height > limits.max_pixels:
        raise ImageTooLargeError(
            label, f"{width}x{height} = {width * height:,} pixels, limit {limits.max_pixels:,}")
    if min(width, height) < limits.min_side:
        raise UnreadableImageError(
            label, f"{width}x{height} is too small to classify (minimum side {limits.min_side})",
            "Upload the full-resolution X-ray.")


def _to_uint8(arr: np.ndarray, lo: float | None = None, hi: float | None = None) -> np.ndarray:
    """Map [lo, hi] (default: the array's own min and max) linearly onto [0, 255], clipping."""
    a = arr.astype(np.float32)
    lo = float(a.min()) if lo is None else float(lo)
    hi = float(a.max()) if hi is None else float(hi)
    if hi == lo:  # constant image: nothing to scale
        return np.zeros(a.shape, np.uint8)
    a = (a - lo) * (255.0 / (hi - lo))
    return np.clip(np.rint(a), 0, 255).astype(np.uint8)


def _differs(rgb: np.ndarray) -> bool:
    r, g, b = rgb[..., 0], rgb[..., 1], rgb[..., 2]
    return not (np.array_equal(r, g) and np.array_equal(g, b))


def _decode_pil(data: bytes, fmt: str, label: str, limits: ImageLimits) -> DecodedImage:
    try:
        img = Image.open(BytesIO(data), formats=[fmt.upper()])  # lazy: reads the header only
    except UnidentifiedImageError as e:
        raise UnreadableImageError(label, f"the {fmt.upper()} header is corrupt or incomplete") from e
    _check_size(label, img.width, img.height, limits)
    # PIL's copies while loading, compositing and converting, per pixel: a palette or grey image
    # with alpha becomes RGBA, is composited over black, then converted to RGB and to grey
    if img.mode in ("1", "L"):
        per_pixel = 3
    elif img.mode in ("I", "F") or img.mode.startswith("I;16"):
        per_pixel = 4 * 3 + 1  # 32-bit array, float copies for scaling, the 8-bit result
    else:
        per_pixel = 4 * 4 + 3 + 1  # RGBA x4 (decoded, black, composite, converted), RGB, grey
    with BUDGET.reserve(img.width * img.height * per_pixel, label):
        return _decode_pil_pixels(data, img, fmt, label)


def _decode_pil_pixels(data: bytes, img: Image.Image, fmt: str, label: str) -> DecodedImage:
    mode = img.mode
    if fmt == "jpeg":
        if mode == "L" and "xmp" not in img.info:
            gray = _decode_gray_jpeg(data, label, img.getexif().get(0x0112, 1))
            if gray is not None:
                return _result(gray, fmt, label, mode, 8, False)
        else:
            _check_jpeg_data(data, label)
    img.load()  # raises on truncated data (we never set ImageFile.LOAD_TRUNCATED_IMAGES)
    ImageOps.exif_transpose(img, in_place=True)
    was_color = False
    if mode in ("1", "L"):
        gray = np.asarray(img if mode == "L" else img.convert("L"))
    elif mode in ("I", "F") or mode.startswith("I;16"):
        gray = _to_uint8(np.asarray(img))  # stored range -> 0..255
    else:
        if img.mode == "P":
            img = img.convert("RGBA" if "transparency" in img.info else "RGB")
        if img.mode in ("RGBA", "RGBa", "LA", "La", "PA"):  # over black: transparent = no signal
            black = Image.new("RGBA", img.size, (0, 0, 0, 255))
            img = Image.alpha_composite(black, img.convert("RGBA"))
        img = img.convert("RGB")
        was_color = _differs(np.asarray(img))
        gray = np.asarray(img.convert("L"))  # ITU-R 601 luma
    bits = {"1": 1, "I": 32, "F": 32}.get(mode, 16 if mode.startswith("I;16") else 8)
    return _result(gray, fmt, label, mode, bits, was_color)


# libjpeg's "recoverable" errors: it fills what it could not decode with grey and carries on;
# PIL and OpenCV both return such an image without a word. pneumo refuses it instead.
_CORRUPT_JPEG = ("Corrupt JPEG data", "Premature end of JPEG file")
# EXIF orientation -> numpy steps that undo it (as PIL's exif_transpose does)
_ORIENT = {2: lambda a: a[:, ::-1], 3: lambda a: a[::-1, ::-1], 4: lambda a: a[::-1], 5: lambda a: a.T,
           6: lambda a: np.rot90(a, -1), 7: lambda a: np.rot90(a, 2).T, 8: lambda a: np.rot90(a)}


def _strict_jpeg(data: bytes, label: str, colorspace: str = "GRAY", min_factor: int = 1) -> np.ndarray | None:
    """Decode with libjpeg-turbo (simplejpeg) in strict mode: corrupt or truncated data raises
    UnreadableImageError; an encoding it cannot decode gives None (PIL decides and names it)."""
    try:
        return simplejpeg.decode_jpeg(data, colorspace=colorspace, strict=True, min_factor=min_factor)
    except ValueError as e:
        if str(e).startswith(_CORRUPT_JPEG):
            raise UnreadableImageError(label, f"the JPEG data is corrupt or truncated ({e})") from None
        return None


def _decode_gray_jpeg(data: bytes, label: str, orientation: int) -> np.ndarray | None:
    """A grayscale JPEG through simplejpeg, EXIF orientation applied; None if it cannot decode it.

    Why not PIL here: the pixels are the same (both use libjpeg-turbo; checked on every Kermany
    train image and in tests), but PIL, like OpenCV, returns corrupt data as an image, and this
    is the format of every Kermany image, on every request's path. Not for JPEGs with XMP
    metadata, whose orientation PIL applies.
    """
    gray = _strict_jpeg(data, label)
    if gray is None:
        return None
    gray = gray[..., 0]
    return _ORIENT[orientation](gray) if orientation in _ORIENT else gray


def _check_jpeg_data(data: bytes, label: str) -> None:
    """Refuse a corrupt or truncated JPEG that PIL would decode anyway (scaled down 8x: the whole
    entropy-coded data is still read, the pixels are not needed)."""
    _strict_jpeg(data, label, min_factor=8)


_LONG_VRS = {b"OB", b"OD", b"OF", b"OL", b"OV", b"OW", b"SQ", b"SV", b"UC", b"UN", b"UR", b"UT", b"UV"}


def _meta_syntax_and_end(data: bytes) -> tuple[str, int]:
    """The transfer syntax UID in a file's meta group (explicit VR little endian by the standard;
    after the preamble, or at the very start of a file without one) and the offset where the
    dataset starts; ("", 0) when it cannot be read."""
    pos = 132 if data[128:132] == b"DICM" else 0
    syntax = ""
    while pos + 8 <= len(data):
        group, element = struct.unpack_from("<HH", data, pos)
        if group != 0x0002:
            return syntax, pos
        vr = data[pos + 4:pos + 6]
        if vr in _LONG_VRS:
            if pos + 12 > len(data):
                break
            length, value_at = struct.unpack_from("<I", data, pos + 8)[0], pos + 12
        else:
            length, value_at = struct.unpack_from("<H", data, pos + 6)[0], pos + 8
        if element == 0x0010:
            syntax = data[value_at:value_at + length].rstrip(b"\0 ").decode("ascii", "replace")
        pos = value_at + length
    return syntax, 0


def _check_inflated_size(data: bytes, label: str, limits: ImageLimits) -> None:
    """Refuse a deflated DICOM whose dataset inflates past ``limits.max_bytes``, inflating in
    bounded chunks that are thrown away. Hand-rolled because pydicom inflates the whole dataset
    in one ``zlib.decompress`` call before anything can check it (a 1 MB upload became 2 GB)."""
    syntax, start = _meta_syntax_and_end(data)
    if syntax != DeflatedExplicitVRLittleEndian or not start:
        return
    inflater, total, chunk = zlib.decompressobj(-zlib.MAX_WBITS), 0, 1 << 20
    pending = data[start:]
    try:
        while pending:
            total += len(inflater.decompress(pending, chunk))
            pending = inflater.unconsumed_tail
            if total > limits.max_bytes:
                raise ImageTooLargeError(label, f"the deflated DICOM dataset inflates to more than "
                                                f"{limits.max_bytes:,} bytes (a decompression bomb?)")
    except zlib.error as e:
        raise UnreadableImageError(label, f"the deflated DICOM dataset is corrupt ({e})") from e


def _decode_dicom(data: bytes, label: str, limits: ImageLimits, forced: bool) -> DecodedImage:
    _check_inflated_size(data, label, limits)
    try:
        ds = pydicom.dcmread(BytesIO(data), force=forced)
    except Exception as e:
        if forced:
            raise UnsupportedFormatError(label, f"unsupported image format ({_describe(data)})") from e
        raise UnreadableImageError(label, f"invalid DICOM file ({e})") from e
    if not any(k in ds and ds[k].value for k in _PIXEL_KEYWORDS):  # absent, or present but empty
        if forced:  # force=True parses almost anything; only pixel data makes it an image
            raise UnsupportedFormatError(label, f"unsupported image format ({_describe(data)})")
        raise UnreadableImageError(label, "the DICOM file has no pixel data",
                                   "Send an image DICOM (e.g. CR/DX), or a JPEG or PNG export.")
    cols, rows = int(ds.get("Columns") or 0), int(ds.get("Rows") or 0)
    _check_size(label, cols, rows, limits)
    # the stored array, float64 copies for the modality LUT and the windowing, the 8-bit result
    stored = int(ds.get("SamplesPerPixel") or 1) * max(1, int(ds.get("BitsAllocated") or 16) // 8)
    with BUDGET.reserve(cols * rows * (stored + 3 * 8 + 1), label):
        return _decode_dicom_pixels(ds, label)


def _decode_dicom_pixels(ds: pydicom.Dataset, label: str) -> DecodedImage:
    if not ds.file_meta.get("TransferSyntaxUID"):  # headerless file: use the encoding it was read in
        ds.file_meta.TransferSyntaxUID = _SYNTAX_BY_ENCODING[ds.original_encoding]
    syntax = ds.file_meta.TransferSyntaxUID
    try:
        arr = pixel_array(ds, index=0)  # first frame only
    except Exception as e:
        if not syntax.is_compressed:
            raise
        raise UnreadableImageError(
            label, f"no decoder could read pixel data compressed as '{syntax.name}'",
            "`pip install pylibjpeg pylibjpeg-libjpeg pylibjpeg-openjpeg` may help, "
            "or send an uncompressed DICOM, JPEG or PNG.") from e
    photometric = str(ds.get("PhotometricInterpretation", "MONOCHROME2")).strip().upper()
    bits = int(ds.get("BitsStored") or ds.get("BitsAllocated") or 8)
    was_color = False
    if photometric in ("MONOCHROME1", "MONOCHROME2") and arr.ndim == 2:
        gray = _dicom_window(apply_modality_lut(arr, ds), ds)
        if photometric == "MONOCHROME1":  # stored inverted: low values are white
            gray = 255 - gray
    elif arr.ndim == 3 and arr.shape[-1] == 3:  # RGB, or YBR already converted to RGB
        was_color = _differs(arr)
        luma = arr.astype(np.float32) @ np.array([0.299, 0.587, 0.114], np.float32)
        gray = _to_uint8(luma, 0, 2**bits - 1)
    else:
        raise UnreadableImageError(
            label, f"DICOM photometric interpretation '{photometric}' is not supported",
            "Send a MONOCHROME1, MONOCHROME2 or RGB image.")
    return _result(gray, "dicom", label, photometric, bits, was_color, ds)


def _dicom_window(arr: np.ndarray, ds: pydicom.Dataset) -> np.ndarray:
    """Apply the VOI LUT or window (if any) and map the result to uint8; else min-max."""
    voi_seq = ds.get("VOILUTSequence")
    if voi_seq and "LUTDescriptor" in voi_seq[0] and "LUTData" in voi_seq[0]:
        return _to_uint8(apply_voi(arr, ds))
    if "WindowCenter" in ds and "WindowWidth" in ds:
        try:
            windowed = apply_windowing(arr, ds)
            # the window's output range, found by windowing values far below and above it
            with np.errstate(over="ignore"):
                lo, hi = apply_windowing(np.array([-1e30, 1e30]), ds)
            return _to_uint8(windowed, lo, hi)
        except ValueError:  # a broken window (e.g. width 0): fall back to the stored range
            pass
    return _to_uint8(arr)


def _result(gray: np.ndarray, fmt: str, label: str, mode: str, bits: int,
            was_color: bool, ds: pydicom.Dataset | None = None) -> DecodedImage:
    pixels = np.require(gray, np.uint8, ["C", "W"])
    foreign, notes = _header_checks(ds) if ds is not None else ((), ())
    return DecodedImage(pixels=pixels, format=fmt, source=label, original_mode=mode,
                        bit_depth=bits, was_color=was_color,
                        width=pixels.shape[1], height=pixels.shape[0], not_a_chest_xray=foreign, notes=notes)


_XRAY_MODALITIES = {"CR", "DX", "DR", "RG", "PX"}
_LATERAL_VIEWS = {"LL", "RL", "LAT", "LATERAL", "LLD", "RLD"}


def _header_checks(ds: pydicom.Dataset) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """What the DICOM header says about the image a chest classifier was trained on."""
    foreign, notes = [], []
    modality = str(ds.get("Modality", "") or "").strip().upper()
    if modality and modality not in _XRAY_MODALITIES:
        foreign.append(f"DICOM Modality is {modality}, not a radiograph (CR or DX)")
    part = str(ds.get("BodyPartExamined", "") or "").strip().upper()
    if part and "CHEST" not in part and "THORAX" not in part and part not in ("LUNG", "TORSO"):
        foreign.append(f"DICOM BodyPartExamined is {part}, not CHEST")
    view = str(ds.get("ViewPosition", "") or "").strip().upper()
    if view in _LATERAL_VIEWS:
        foreign.append(f"DICOM ViewPosition is {view}: a lateral view; the model reads frontal (PA/AP) views")
    frames = int(ds.get("NumberOfFrames", 1) or 1)
    if frames > 1:
        notes.append(f"multi-frame DICOM ({frames} frames): only the first frame is classified")
    return tuple(foreign), tuple(notes)
