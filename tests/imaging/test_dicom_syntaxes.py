"""DICOM as hospitals send it: every compressed transfer syntax decodes to the pixels of its
source, and the header's modality, body part, view and frame count reach the result."""
from __future__ import annotations

import io

import numpy as np
import pydicom
import pytest
from PIL import Image
from pydicom.data import get_testdata_file
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.encaps import encapsulate
from pydicom.uid import (JPEG2000, ExplicitVRLittleEndian, JPEG2000Lossless, JPEGBaseline8Bit, JPEGLSLossless,
                         JPEGLSNearLossless, RLELossless, generate_uid)

from pneumo_core.imaging import load_image
from plugins.datasets.synthetic.phantom import render_phantom


def _dataset(arr: np.ndarray, bits: int, **attrs) -> Dataset:
    ds = Dataset()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.file_meta.MediaStorageSOPClassUID = "1.2.840.10008.5.1.4.1.1.1.1"  # digital X-ray
    ds.file_meta.MediaStorageSOPInstanceUID = generate_uid()
    ds.SOPClassUID, ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPClassUID, ds.file_meta.MediaStorageSOPInstanceUID
    ds.Modality, ds.BodyPartExamined, ds.ViewPosition = "DX", "CHEST", "PA"
    ds.Rows, ds.Columns = arr.shape
    ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = (8 if bits == 8 else 16), bits, bits - 1, 0
    for key, value in attrs.items():
        setattr(ds, key, value)
    ds.PixelData = arr.tobytes()
    return ds


def _bytes(ds: Dataset) -> bytes:
    buf = io.BytesIO()
    ds.save_as(buf, enforce_file_format=True)
    return buf.getvalue()


def _source(bits: int) -> np.ndarray:
    img = render_phantom(1, 128, 17).astype(np.uint16)
    return img.astype(np.uint8) if bits == 8 else (img * 16 + (np.arange(128) % 16)).astype(np.uint16)


@pytest.mark.parametrize("bits", [8, 12])
@pytest.mark.parametrize("syntax, lossless, options", [
    (RLELossless, True, {}),
    (JPEGLSLossless, True, {}),
    (JPEG2000Lossless, True, {}),
    (JPEGLSNearLossless, False, {"jls_error": 2}),
    (JPEG2000, False, {"j2k_cr": [8]}),
], ids=["rle", "jpeg-ls", "jpeg2000-lossless", "jpeg-ls-near-lossless", "jpeg2000"])
def test_each_compressed_syntax_decodes_to_its_source(syntax, lossless, options, bits):
    arr = _source(bits)
    expected = load_image(_bytes(_dataset(arr, bits)), name="plain.dcm").pixels
    ds = _dataset(arr, bits)
    ds.compress(syntax, arr, **options)
    decoded = load_image(_bytes(ds), name="compressed.dcm")
    assert decoded.pixels.shape == expected.shape and not decoded.notes and not decoded.not_a_chest_xray
    err = decoded.pixels.astype(float) - expected.astype(float)
    if lossless:
        assert np.abs(err).max() == 0, f"{syntax.name} is lossless"
    else:
        psnr = 10 * np.log10(255 ** 2 / max(np.mean(err ** 2), 1e-9))
        assert psnr > 30, f"{syntax.name}: PSNR {psnr:.1f} dB"


def test_jpeg_baseline_in_dicom_matches_the_jpeg():
    img = render_phantom(0, 128, 3)
    buf = io.BytesIO()
    Image.fromarray(img).save(buf, format="JPEG", quality=92)
    ds = _dataset(img, 8)
    ds.file_meta.TransferSyntaxUID = JPEGBaseline8Bit
    ds.PixelData = encapsulate([buf.getvalue()])
    ds["PixelData"].VR = "OB"
    decoded = load_image(_bytes(ds), name="baseline.dcm").pixels
    direct = np.asarray(Image.open(io.BytesIO(buf.getvalue())))  # the same pixels, uncompressed in DICOM
    expected = load_image(_bytes(_dataset(np.ascontiguousarray(direct), 8)), name="plain.dcm").pixels
    assert np.abs(decoded.astype(int) - expected.astype(int)).max() <= 2  # libjpeg vs libjpeg-turbo IDCT


@pytest.mark.parametrize("name", ["JPGExtended.dcm", "MR_small_jpeg_ls_lossless.dcm", "JPEG2000.dcm",
                                  "JPEGLSNearLossless_16.dcm"])
def test_pydicoms_own_compressed_files_decode(name):
    """The files the issue found undecodable: 12-bit JPEG, JPEG-LS; pydicom's reference decode."""
    path = get_testdata_file(name)
    ds = pydicom.dcmread(path)
    decoded = load_image(path)
    assert decoded.pixels.shape == (ds.Rows, ds.Columns)
    assert decoded.pixels.std() > 5, "decoded to a flat image"
    reference = ds.pixel_array[0] if int(ds.get("NumberOfFrames", 1) or 1) > 1 else ds.pixel_array
    assert np.corrcoef(decoded.pixels.ravel(), reference.ravel().astype(float))[0, 1] > 0.99


def test_a_non_conformant_12_bit_jpeg_is_a_clear_error():
    """pydicom's JPEG-lossy.dcm has a misplaced marker that libjpeg refuses (only GDCM builds with
    12-bit JPEG read it): it must be a clear 400-class error, not a crash."""
    from pneumo_core.imaging import UnreadableImageError

    with pytest.raises(UnreadableImageError, match="JPEG Extended"):
        load_image(get_testdata_file("JPEG-lossy.dcm"))


@pytest.mark.parametrize("attrs, says", [
    ({"Modality": "CT"}, "Modality is CT"),
    ({"BodyPartExamined": "HAND"}, "BodyPartExamined is HAND"),
    ({"ViewPosition": "LL"}, "lateral view"),
])
def test_the_header_flags_what_is_not_a_frontal_chest_radiograph(attrs, says, smoke_artifact):
    from pneumo_core.inference import InputImage, PredictRequest, Predictor

    data = _bytes(_dataset(_source(8), 8, **attrs))
    assert any(says in w for w in load_image(data).not_a_chest_xray)
    result = Predictor(smoke_artifact, backend="torch", batching=False).predict(
        PredictRequest(images=[InputImage(name="x.dcm", data=data)])).results[0]
    assert result.out_of_distribution is True and any(says in w for w in result.warnings)


def test_a_multi_frame_file_says_only_the_first_frame_is_used():
    arr = _source(8)
    ds = _dataset(arr, 8, NumberOfFrames=3)
    ds.PixelData = np.stack([arr, arr[::-1], arr[:, ::-1]]).tobytes()
    decoded = load_image(_bytes(ds))
    assert decoded.pixels.shape == arr.shape and "3 frames" in decoded.notes[0]
    assert not decoded.not_a_chest_xray
