"""Tests of ``read_image``: formats, axis convention, spacing and clear errors."""

from __future__ import annotations

import gzip
import re

import nibabel as nib
import numpy as np
import pydicom
import pytest
from PIL import Image as PILImage
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.encaps import encapsulate
from pydicom.pixels import get_decoder
from pydicom.uid import (
    ExplicitVRBigEndian,
    ExplicitVRLittleEndian,
    JPEGBaseline8Bit,
    JPEGLSLossless,
    SecondaryCaptureImageStorage,
    generate_uid,
)

from medcl_lite.data.io import Image, read_image


@pytest.fixture()
def ramp16() -> np.ndarray:
    return (np.arange(20 * 30, dtype=np.uint32).reshape(20, 30) * 97 % 65536).astype(np.uint16)


def test_png_16_bit_kept(tmp_path, ramp16):
    path = tmp_path / "a.png"
    PILImage.fromarray(ramp16).save(path)
    image = read_image(path)
    assert isinstance(image, Image) and image.path == path
    assert image.array.dtype == np.uint16 and image.array.shape == (20, 30)
    np.testing.assert_array_equal(image.array, ramp16)
    assert image.spacing == (1.0, 1.0)  # unknown


def test_png_8_bit_kept_and_dpi_spacing(tmp_path):
    array = np.arange(12 * 7, dtype=np.uint8).reshape(12, 7)
    path = tmp_path / "b.PNG"
    PILImage.fromarray(array).save(path, dpi=(254, 127))  # 0.1 mm wide, 0.2 mm high pixels
    image = read_image(str(path))
    assert image.array.dtype == np.uint8
    np.testing.assert_array_equal(image.array, array)
    np.testing.assert_allclose(image.spacing, (0.2, 0.1), rtol=0.02)


def test_grey_stored_as_rgb_is_read_exactly(tmp_path):
    grey = np.random.default_rng(0).integers(0, 256, (9, 11), dtype=np.uint8)
    path = tmp_path / "rgb.png"
    PILImage.fromarray(np.stack([grey] * 3, axis=-1)).save(path)
    np.testing.assert_array_equal(read_image(path).array, grey)


def test_jpeg(tmp_path):
    array = np.tile(np.linspace(0, 255, 32).astype(np.uint8), (16, 1))
    path = tmp_path / "c.jpg"
    PILImage.fromarray(array).save(path, quality=95)
    image = read_image(path)
    assert image.array.shape == (16, 32) and image.array.dtype == np.uint8
    assert np.abs(image.array.astype(int) - array).max() < 8


@pytest.mark.parametrize("suffix", [".nii", ".nii.gz"])
def test_nifti_volume_axes_and_spacing(tmp_path, suffix):
    data = np.random.default_rng(1).integers(0, 1000, (5, 4, 3)).astype(np.int16)  # [i, j, k]
    path = tmp_path / f"v{suffix}"
    nib.save(nib.Nifti1Image(data, np.diag([0.7, 0.8, 5.0, 1.0])), str(path))
    image = read_image(path)
    assert image.array.shape == (3, 4, 5)  # [D, H, W] = [k, j, i]
    assert image.array.dtype == np.int16
    assert image.array[2, 1, 4] == data[4, 1, 2]
    np.testing.assert_allclose(image.spacing, (5.0, 0.8, 0.7))


def test_nifti_2d_and_scaling(tmp_path):
    data = np.arange(6, dtype=np.int16).reshape(3, 2)  # [i, j]
    nifti = nib.Nifti1Image(data, np.diag([0.5, 0.25, 1.0, 1.0]))
    nifti.header.set_slope_inter(2.0, -1024.0)
    path = tmp_path / "slice.nii.gz"
    nib.save(nifti, str(path))
    image = read_image(path)
    assert image.array.shape == (2, 3)
    np.testing.assert_allclose(image.array, data.T * 2.0 - 1024.0)
    np.testing.assert_allclose(image.spacing, (0.25, 0.5))


def test_missing_file(tmp_path):
    with pytest.raises(FileNotFoundError, match="nope.png"):
        read_image(tmp_path / "nope.png")


def test_folder_is_read_as_dicom_series(tmp_path):
    """Folders go to ``volumes.read_dicom_series`` (tested in test_volumes.py)."""
    (tmp_path / "notes.txt").write_text("no DICOM here")
    with pytest.raises(ValueError, match=re.escape(f"folder {tmp_path} holds no DICOM file")):
        read_image(tmp_path)


def test_unknown_format(tmp_path):
    path = tmp_path / "x.tiff"
    path.write_bytes(b"II*\x00")
    with pytest.raises(ValueError, match=r"x\.tiff.*supported"):
        read_image(path)


@pytest.mark.parametrize("name", ["empty.png", "empty.nii.gz", "empty.jpg"])
def test_empty_file(tmp_path, name):
    (tmp_path / name).write_bytes(b"")
    with pytest.raises(ValueError, match=f"empty.*{name}"):
        read_image(tmp_path / name)


def test_truncated_png(tmp_path, ramp16):
    good = tmp_path / "good.png"
    PILImage.fromarray(ramp16).save(good)
    bad = tmp_path / "cut.png"
    bad.write_bytes(good.read_bytes()[: good.stat().st_size // 2])
    with pytest.raises(ValueError, match="cut.png"):
        read_image(bad)


def test_garbage_png(tmp_path):
    bad = tmp_path / "noise.png"
    bad.write_bytes(b"this is not an image at all" * 10)
    with pytest.raises(ValueError, match="noise.png"):
        read_image(bad)


@pytest.mark.parametrize("fraction", [0.5, 0.95])
def test_truncated_nifti_gz(tmp_path, fraction):
    data = np.random.default_rng(2).normal(size=(16, 16, 8)).astype(np.float32)
    good = tmp_path / "good.nii.gz"
    nib.save(nib.Nifti1Image(data, np.eye(4)), str(good))
    raw = good.read_bytes()
    bad = tmp_path / "cut.nii.gz"
    bad.write_bytes(raw[: int(len(raw) * fraction)])
    with pytest.raises(ValueError, match="cut.nii.gz"):
        read_image(bad)


def test_truncated_nifti_data(tmp_path):
    data = np.ones((16, 16, 8), np.float32)
    good = tmp_path / "good.nii"
    nib.save(nib.Nifti1Image(data, np.eye(4)), str(good))
    bad = tmp_path / "short.nii"
    bad.write_bytes(good.read_bytes()[:-100])
    with pytest.raises(ValueError, match="short.nii"):
        read_image(bad)
    header_only = tmp_path / "header.nii.gz"
    header_only.write_bytes(gzip.compress(good.read_bytes()[:352]))
    with pytest.raises(ValueError, match="header.nii.gz"):
        read_image(header_only)


def test_4d_nifti_is_refused(tmp_path):
    path = tmp_path / "cine.nii.gz"
    nib.save(nib.Nifti1Image(np.zeros((4, 4, 3, 2), np.float32), np.eye(4)), str(path))
    with pytest.raises(ValueError, match="cine.nii.gz"):
        read_image(path)


# --- DICOM ----------------------------------------------------------------------------------


def write_dicom(
    path,
    pixels,
    *,
    bits_stored=None,
    transfer_syntax=ExplicitVRLittleEndian,
    pixel_data=None,
    **attributes,
):
    """Write ``pixels`` ``[H, W]`` or ``[F, H, W]`` as a single DICOM file; returns ``path``."""
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = SecondaryCaptureImageStorage
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = transfer_syntax
    ds = Dataset()
    ds.file_meta = meta
    ds.SOPClassUID, ds.SOPInstanceUID = (
        SecondaryCaptureImageStorage,
        meta.MediaStorageSOPInstanceUID,
    )
    ds.Rows, ds.Columns = pixels.shape[-2:]
    if pixels.ndim == 3:
        ds.NumberOfFrames = pixels.shape[0]
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.BitsAllocated = pixels.dtype.itemsize * 8
    ds.BitsStored = bits_stored or ds.BitsAllocated
    ds.HighBit = ds.BitsStored - 1
    ds.PixelRepresentation = int(pixels.dtype.kind == "i")
    for keyword, value in attributes.items():
        setattr(ds, keyword, value)
    ds.PixelData = pixels.tobytes() if pixel_data is None else pixel_data
    ds.save_as(path, enforce_file_format=True)
    return path


@pytest.fixture()
def stored12() -> np.ndarray:
    return np.random.default_rng(3).integers(0, 4096, (6, 5)).astype(np.uint16)


@pytest.mark.parametrize("syntax", [ExplicitVRLittleEndian, ExplicitVRBigEndian])
def test_dicom_12_bit_round_trip(tmp_path, stored12, syntax):
    order = ">" if syntax == ExplicitVRBigEndian else "<"
    path = write_dicom(
        tmp_path / "a.dcm",
        stored12,
        bits_stored=12,
        transfer_syntax=syntax,
        pixel_data=stored12.astype(f"{order}u2").tobytes(),
        PixelSpacing=[0.5, 0.25],
    )
    image = read_image(path)
    assert image.array.dtype == np.dtype("=u2") and image.array.shape == (6, 5)
    np.testing.assert_array_equal(image.array, stored12)
    assert image.spacing == (0.5, 0.25) and image.path == path


@pytest.mark.parametrize(
    ("attributes", "spacing"),
    [
        ({"ImagerPixelSpacing": [0.15, 0.2]}, (0.15, 0.2)),
        ({"PixelSpacing": [0.3, 0.3], "ImagerPixelSpacing": [0.15, 0.2]}, (0.3, 0.3)),
        ({}, (1.0, 1.0)),
    ],
)
def test_dicom_spacing_sources(tmp_path, stored12, attributes, spacing):
    path = write_dicom(tmp_path / "s.dicom", stored12, bits_stored=12, **attributes)
    assert read_image(path).spacing == spacing


def test_dicom_monochrome1_is_inverted(tmp_path):
    stored = np.array([[0, 100], [4000, 4095]], np.uint16)
    path = write_dicom(
        tmp_path / "m1.dcm", stored, bits_stored=12, PhotometricInterpretation="MONOCHROME1"
    )
    image = read_image(path)
    assert image.array.dtype == np.uint16
    np.testing.assert_array_equal(image.array, [[4095, 3995], [95, 0]])  # brightest -> darkest


def test_dicom_monochrome1_signed_is_inverted(tmp_path):
    stored = np.array([[-32768, -1], [0, 32767]], np.int16)
    path = write_dicom(tmp_path / "m1s.dcm", stored, PhotometricInterpretation="MONOCHROME1")
    image = read_image(path)
    assert image.array.dtype == np.int16
    np.testing.assert_array_equal(image.array, [[32767, 0], [-1, -32768]])  # -1 - value


def test_dicom_rescale_to_hounsfield(tmp_path, stored12):
    path = write_dicom(
        tmp_path / "ct.dcm", stored12, bits_stored=12, RescaleSlope=1, RescaleIntercept=-1024
    )
    image = read_image(path)
    assert image.array.dtype == np.float32
    np.testing.assert_array_equal(image.array, stored12.astype(np.float32) - 1024)


def test_dicom_identity_rescale_keeps_integers(tmp_path, stored12):
    path = write_dicom(
        tmp_path / "id.dcm", stored12, bits_stored=12, RescaleSlope=1, RescaleIntercept=0
    )
    image = read_image(path)
    assert image.array.dtype == np.uint16
    np.testing.assert_array_equal(image.array, stored12)


def test_dicom_window_applied(tmp_path):
    # LINEAR (PS3.3 C.11.2.1.2): c = 2048.5 - 0.5, w = 1001 - 1; output range [0, 4095]
    stored = np.array([[0, 1548, 2048], [2298, 2548, 4095]], np.uint16)
    path = write_dicom(
        tmp_path / "w.dcm", stored, bits_stored=12, WindowCenter=2048.5, WindowWidth=1001
    )
    image = read_image(path)
    assert image.array.dtype == np.float32
    np.testing.assert_allclose(image.array, [[0, 0, 2047.5], [3071.25, 4095, 4095]])


def test_dicom_window_after_rescale_then_monochrome1(tmp_path):
    # HU = stored - 1024; window on HU (c = 40, w = 400); range [-1024, 3071]; then inverted
    stored = np.array([[0, 1064, 1164, 2000]], np.uint16)
    path = write_dicom(
        tmp_path / "ctw.dcm",
        stored,
        bits_stored=12,
        RescaleSlope=1,
        RescaleIntercept=-1024,
        WindowCenter=40.5,
        WindowWidth=401,
        PhotometricInterpretation="MONOCHROME1",
    )
    windowed = np.array([-1024, 0.5 * 4095 - 1024, 0.75 * 4095 - 1024, 3071])
    np.testing.assert_allclose(read_image(path).array, [(-1024 + 3071) - windowed])


def test_dicom_voi_lut_sequence_applied(tmp_path):
    item = Dataset()
    item.add_new("LUTDescriptor", "US", [4, 1000, 16])  # 4 entries from value 1000, 16 bits
    item.add_new("LUTData", "US", [10, 20, 30, 40])
    stored = np.array([[0, 1000], [1002, 4095]], np.uint16)
    path = write_dicom(
        tmp_path / "lut.dcm",
        stored,
        bits_stored=12,
        VOILUTSequence=[item],
        WindowCenter=100,  # ignored: the LUT wins
        WindowWidth=10,
    )
    image = read_image(path)
    assert image.array.dtype == np.float32
    np.testing.assert_array_equal(image.array, [[10, 10], [30, 40]])


def test_dicom_multi_frame_is_a_volume(tmp_path):
    frames = np.arange(3 * 4 * 5, dtype=np.uint16).reshape(3, 4, 5)
    path = write_dicom(
        tmp_path / "mf.dcm", frames, PixelSpacing=[0.7, 0.6], SpacingBetweenSlices=2.5
    )
    image = read_image(path)
    np.testing.assert_array_equal(image.array, frames)
    assert image.spacing == (2.5, 0.7, 0.6)


@pytest.mark.parametrize("name", ["IM0001", "1.2.840.113619.5"])
def test_dicom_detected_by_magic_without_suffix(tmp_path, stored12, name):
    path = write_dicom(tmp_path / name, stored12, bits_stored=12)
    np.testing.assert_array_equal(read_image(path).array, stored12)
    other = tmp_path / f"{name}x"
    other.write_bytes(b"\x00" * 200)
    with pytest.raises(ValueError, match=f"{name}x.*supported"):
        read_image(other)


def test_truncated_dicom(tmp_path, stored12):
    good = write_dicom(tmp_path / "good.dcm", stored12, bits_stored=12)
    bad = tmp_path / "cut.dcm"
    bad.write_bytes(good.read_bytes()[:-10])
    with pytest.raises(ValueError, match=r"cut\.dcm.*truncated.*50 bytes, expected 60"):
        read_image(bad)


def test_dicom_without_pixel_data(tmp_path, stored12):
    path = write_dicom(tmp_path / "nopix.dcm", stored12, bits_stored=12)
    ds = pydicom.dcmread(path)
    del ds.PixelData
    ds.save_as(path, enforce_file_format=True)
    with pytest.raises(ValueError, match=r"nopix\.dcm holds no pixel data"):
        read_image(path)


@pytest.mark.parametrize("content", [b"DICM", np.random.default_rng(4).bytes(600)])
def test_not_a_dicom_file(tmp_path, content):
    path = tmp_path / "noise.dcm"
    path.write_bytes(content)
    with pytest.raises(ValueError, match=r"noise\.dcm is not a DICOM file"):
        read_image(path)


def test_compressed_dicom_without_decoder(tmp_path, stored12):
    if get_decoder(JPEGLSLossless).is_available:
        pytest.skip("a JPEG-LS decoder is installed here")
    path = write_dicom(
        tmp_path / "jls.dcm",
        stored12,
        bits_stored=12,
        transfer_syntax=JPEGLSLossless,
        pixel_data=encapsulate([b"\xff\xd8\xff\xf7 not decoded \xff\xd9"]),
    )
    with pytest.raises(ValueError, match=r"jls\.dcm is compressed \(JPEG-LS.*install one of.*"):
        read_image(path)


def test_undecodable_compressed_dicom(tmp_path, stored12):
    path = write_dicom(
        tmp_path / "jpg.dcm",
        stored12.astype(np.uint8),
        transfer_syntax=JPEGBaseline8Bit,
        pixel_data=encapsulate([b"\xff\xd8\xff\xdb broken \xff\xd9"]),
    )
    with pytest.raises(ValueError, match=r"cannot decode the pixel data of DICOM file .*jpg\.dcm"):
        read_image(path)


def test_colour_and_enhanced_dicom_are_refused(tmp_path, stored12):
    rgb = write_dicom(tmp_path / "rgb.dcm", stored12, PhotometricInterpretation="PALETTE COLOR")
    with pytest.raises(NotImplementedError, match=r"rgb\.dcm.*PALETTE COLOR"):
        read_image(rgb)
    enhanced = write_dicom(
        tmp_path / "enh.dcm", stored12, SharedFunctionalGroupsSequence=[Dataset()]
    )
    with pytest.raises(NotImplementedError, match=r"enh\.dcm.*functional groups"):
        read_image(enhanced)


# --- JSRT -----------------------------------------------------------------------------------


def test_jsrt_round_trip_inverted(tmp_path):
    stored = np.random.default_rng(5).integers(0, 4096, (2048, 2048)).astype(np.uint16)
    stored[:100, :300] = 4000  # a dense (dark) film area, e.g. a lung, top-left and wide
    path = tmp_path / "JPCLN001.IMG"
    stored.astype(">u2").tofile(path)
    image = read_image(path)
    assert image.array.dtype == np.uint16 and image.array.shape == (2048, 2048)
    np.testing.assert_array_equal(image.array, 4095 - stored)
    assert (image.array[:100, :300] == 95).all()  # dark film -> dark image, not transposed
    assert image.spacing == (0.175, 0.175)


def test_jsrt_wrong_size(tmp_path):
    path = tmp_path / "small.img"
    np.zeros((1024, 1024), ">u2").tofile(path)
    with pytest.raises(ValueError, match=r"small\.img.*8388608 bytes.*2097152 bytes"):
        read_image(path)


def test_jsrt_little_endian_is_refused(tmp_path):
    path = tmp_path / "swapped.IMG"
    np.full((2048, 2048), 4095, "<u2").tofile(path)  # 0x0FFF read big-endian is 0xFF0F
    with pytest.raises(ValueError, match=r"swapped\.IMG.*12 bits"):
        read_image(path)
