"""Decompression bombs: a deflated DICOM is refused while it inflates, in the decoder and every adapter."""
from __future__ import annotations

import base64
import io
import subprocess
import sys
import zlib

import numpy as np
import pytest
from pydicom.dataset import FileDataset, FileMetaDataset
from pydicom.uid import DeflatedExplicitVRLittleEndian, generate_uid

from pneumo_core.imaging import ImageLimits, ImageTooLargeError, UnreadableImageError, load_image

IMAGE = (np.arange(64 * 64, dtype=np.uint16).reshape(64, 64) % 4096)


def deflated_dicom(arr: np.ndarray) -> bytes:
    meta = FileMetaDataset()
    meta.TransferSyntaxUID = DeflatedExplicitVRLittleEndian
    meta.MediaStorageSOPClassUID = "1.2.840.10008.5.1.4.1.1.1"
    meta.MediaStorageSOPInstanceUID = generate_uid()
    ds = FileDataset(None, {}, file_meta=meta, preamble=b"\0" * 128)
    ds.SOPClassUID, ds.SOPInstanceUID = meta.MediaStorageSOPClassUID, meta.MediaStorageSOPInstanceUID
    ds.Rows, ds.Columns = arr.shape
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 12, 11, 0
    ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
    ds.PixelData = arr.astype(np.uint16).tobytes()
    buf = io.BytesIO()
    ds.save_as(buf, enforce_file_format=True)
    return buf.getvalue()


def deflate_bomb(inflated_mb: int) -> bytes:
    """A valid file meta, then a raw-deflate dataset: one OW pixel element of ``inflated_mb`` MB of zeros."""
    small = deflated_dicom(IMAGE)
    meta_end = 144 + int.from_bytes(small[140:144], "little")
    size = inflated_mb * 1024 * 1024
    packer = zlib.compressobj(9, zlib.DEFLATED, -zlib.MAX_WBITS)
    header = b"\x28\x00\x10\x00US\x02\x00\x00\x40" + b"\x28\x00\x11\x00US\x02\x00\x00\x40"  # rows, columns
    header += b"\xe0\x7f\x10\x00OW\x00\x00" + size.to_bytes(4, "little")
    parts = [packer.compress(header)]
    zeros = bytes(1 << 20)
    parts += [packer.compress(zeros) for _ in range(inflated_mb)]
    parts.append(packer.flush())
    return small[:meta_end] + b"".join(parts)


def test_a_small_deflated_dicom_still_decodes():
    img = load_image(deflated_dicom(IMAGE), name="ok.dcm")
    assert img.format == "dicom" and img.pixels.shape == (64, 64)
    assert np.corrcoef(img.pixels.ravel(), IMAGE.ravel())[0, 1] > 0.999  # the stored range, min-max scaled


def test_deflate_bomb_is_refused_while_inflating():
    bomb = deflate_bomb(300)
    assert len(bomb) < 400_000  # 300 MB of pixel data in a few hundred kB
    with pytest.raises(ImageTooLargeError, match="inflates to more than"):
        load_image(bomb, name="bomb.dcm", limits=ImageLimits(max_bytes=20 * 1024 * 1024))


def test_refusing_a_bomb_keeps_memory_bounded(tmp_path):
    """Peak memory of a fresh process that refuses a 300 MB bomb, against one that only imports."""
    (tmp_path / "bomb.dcm").write_bytes(deflate_bomb(300))
    probe = ("import resource, sys\nfrom pneumo_core.imaging import ImageLimits, load_image\n"
             "if sys.argv[1] == 'decode':\n"
             "    try:\n        load_image(sys.argv[2], limits=ImageLimits(max_bytes=20 * 1024 * 1024))\n"
             "    except Exception as exc:\n        print(type(exc).__name__, file=sys.stderr)\n"
             "print(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)\n")
    peaks = {}
    for mode in ("import", "decode"):
        out = subprocess.run([sys.executable, "-c", probe, mode, str(tmp_path / "bomb.dcm")], capture_output=True,
                             text=True, timeout=120)
        assert out.returncode == 0, out.stderr
        peaks[mode] = int(out.stdout.split()[-1]) / 1024
    assert "ImageTooLargeError" in out.stderr
    assert peaks["decode"] - peaks["import"] < 100, f"refusing the bomb took {peaks['decode'] - peaks['import']:.0f} MB"


def test_a_bomb_without_the_preamble_is_refused_too():
    headerless = deflate_bomb(300)[132:]  # pydicom reads a meta group at the very start as well
    with pytest.raises(ImageTooLargeError, match="inflates to more than"):
        load_image(headerless, name="bomb.dcm", limits=ImageLimits(max_bytes=5 * 1024 * 1024))


def test_corrupt_deflate_stream_is_unreadable():
    small = deflated_dicom(IMAGE)
    meta_end = 144 + int.from_bytes(small[140:144], "little")
    with pytest.raises(UnreadableImageError, match="deflated DICOM dataset is corrupt"):
        load_image(small[:meta_end] + b"\xff" * 64, name="bad.dcm")


def test_rest_refuses_the_bomb_with_413(smoke_artifact):
    from adapters.flask_app.app import create_app
    from adapters.flask_app.settings import Settings

    client = create_app(Settings(artifact=str(smoke_artifact))).test_client()
    resp = client.post("/api/v1/predict", data={"file": (io.BytesIO(deflate_bomb(300)), "bomb.dcm")},
                       content_type="multipart/form-data")
    assert resp.status_code == 413 and resp.get_json()["error"] == "image_too_large"


def test_runpod_refuses_the_bomb(rp_like_settings):
    from adapters.runpod.handler import process

    predictor, settings = rp_like_settings
    out = process({"image": base64.b64encode(deflate_bomb(300)).decode()}, predictor, settings)
    assert out["error"].startswith("image_too_large:") and "inflates to more than" in out["error"]


@pytest.fixture()
def rp_like_settings(smoke_artifact):
    from adapters.runpod.settings import RunpodSettings
    from pneumo_core.inference import Predictor

    return Predictor(smoke_artifact, batching=False), RunpodSettings.from_env({"PNEUMO_ARTIFACT": str(smoke_artifact)})
