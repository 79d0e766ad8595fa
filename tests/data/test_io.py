"""Tests of ``read_image``: formats, axis convention, spacing and clear errors."""

from __future__ import annotations

import gzip

import nibabel as nib
import numpy as np
import pytest
from PIL import Image as PILImage

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


def test_dicom_not_implemented_yet(tmp_path):
    path = tmp_path / "x.dcm"
    path.write_bytes(b"DICM")
    with pytest.raises(NotImplementedError, match="x.dcm"):
        read_image(path)
    with pytest.raises(NotImplementedError, match="folder"):
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
