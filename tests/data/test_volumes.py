"""Tests of volume reading: NIfTI reorientation, DICOM series and image/label pairs."""

from __future__ import annotations

import nibabel as nib
import numpy as np
import pytest
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import CTImageStorage, ExplicitVRLittleEndian, generate_uid

from medcl_lite.data.io import read_image
from medcl_lite.data.volumes import read_dicom_series, read_nifti_volume, read_volume_pair

ZOOMS = (0.7, 0.8, 2.5)  # mm along voxel axes i, j, k


@pytest.fixture()
def voxels() -> np.ndarray:
    """A volume indexed ``[i, j, k]`` (RAS+ order), all values distinct."""
    return np.random.default_rng(0).permutation(4 * 5 * 6).reshape(4, 5, 6).astype(np.int16)


def save_nifti(path, data, affine):
    nib.save(nib.Nifti1Image(data, affine), str(path))
    return path


# --- NIfTI ------------------------------------------------------------------------------------


def test_same_anatomy_with_flipped_or_permuted_affine_reads_identical(tmp_path, voxels):
    zx, zy, zz = ZOOMS
    identity = save_nifti(tmp_path / "ras.nii.gz", voxels, np.diag([zx, zy, zz, 1.0]))
    # i stored right-to-left: the data flipped along i, the affine's first column negated
    flipped = save_nifti(tmp_path / "flip.nii.gz", voxels[::-1], np.diag([-zx, zy, zz, 1.0]))
    # stored as [k, i, j]: voxel axis 0 runs along z, 1 along x, 2 along y (and z flipped)
    permuted_affine = np.array(
        [[0, zx, 0, 0], [0, 0, zy, 0], [-zz, 0, 0, 0], [0, 0, 0, 1]], dtype=float
    )
    permuted = save_nifti(tmp_path / "perm.nii", voxels.transpose(2, 0, 1)[::-1], permuted_affine)
    expected = voxels.transpose(2, 1, 0)  # [D, H, W] = [k, j, i]
    for path in (identity, flipped, permuted):
        image = read_nifti_volume(path)
        np.testing.assert_array_equal(image.array, expected, err_msg=str(path))
        np.testing.assert_allclose(image.spacing, (zz, zy, zx), rtol=1e-6)
        assert image.array.dtype == np.int16 and image.path == path
        # read_image canonicalises in the same way, and both agree with nibabel
        np.testing.assert_array_equal(read_image(path).array, expected)
        canonical = nib.as_closest_canonical(nib.load(str(path)))
        np.testing.assert_array_equal(np.asarray(canonical.dataobj).T, image.array)


def test_scaled_nifti_is_reoriented_after_scaling(tmp_path, voxels):
    nifti = nib.Nifti1Image(voxels[:, ::-1], np.diag([1.0, -2.0, 3.0, 1.0]))
    nifti.header.set_slope_inter(2.0, -1024.0)
    path = tmp_path / "scaled.nii.gz"
    nib.save(nifti, str(path))
    image = read_nifti_volume(path)
    np.testing.assert_allclose(image.array, voxels.T * 2.0 - 1024.0)
    np.testing.assert_allclose(image.spacing, (3.0, 2.0, 1.0))


def test_2d_nifti_reoriented_as_one_slice(tmp_path):
    data = np.arange(12, dtype=np.int16).reshape(3, 4)  # [i, j]
    path = save_nifti(tmp_path / "flat.nii.gz", data[::-1], np.diag([-0.5, 0.25, 1.0, 1.0]))
    image = read_image(path)
    np.testing.assert_array_equal(image.array, data.T)
    np.testing.assert_allclose(image.spacing, (0.25, 0.5))
    with pytest.raises(ValueError, match=r"flat\.nii\.gz.*2-D"):
        read_nifti_volume(path)


def test_nifti_without_orientation_keeps_stored_order(tmp_path, voxels):
    nifti = nib.Nifti1Image(voxels, None)
    nifti.header.set_zooms(ZOOMS)
    path = tmp_path / "noorient.nii"
    nib.save(nifti, str(path))
    assert nib.load(str(path)).affine[0, 0] < 0  # nibabel's fall-back affine flips x ...
    image = read_nifti_volume(path)
    np.testing.assert_array_equal(image.array, voxels.T)  # ... the stored order is kept
    np.testing.assert_allclose(image.spacing, ZOOMS[::-1], rtol=1e-6)


def test_singular_affine_is_refused(tmp_path, voxels):
    nifti = nib.Nifti1Image(voxels, np.eye(4))
    nifti.set_qform(None, code=0)
    nifti.set_sform(np.diag([1.0, 1.0, 0.0, 1.0]), code=2)  # k has no direction
    path = tmp_path / "flat_affine.nii.gz"
    nib.save(nifti, str(path))
    with pytest.raises(ValueError, match=r"flat_affine\.nii\.gz.*axis 2"):
        read_nifti_volume(path)


# --- DICOM series -----------------------------------------------------------------------------

PIXEL_SPACING = (0.6, 0.7)  # (dy, dx)
DZ = 2.5


@pytest.fixture()
def stored() -> np.ndarray:
    """Stored CT values ``[slice, row, column]``, slice 0 lowest along the normal."""
    return np.random.default_rng(1).integers(0, 3000, (6, 5, 4)).astype(np.uint16)


def write_ct_slice(path, pixels, z, *, series, instance, normal_down=False, **attributes):
    """One single-frame CT file at height ``z`` (mm); rows run to P (or A if ``normal_down``)."""
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = CTImageStorage
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = Dataset()
    ds.file_meta = meta
    ds.SOPClassUID, ds.SOPInstanceUID = CTImageStorage, meta.MediaStorageSOPInstanceUID
    ds.Modality = "CT"
    ds.SeriesInstanceUID = series
    ds.InstanceNumber = instance
    ds.ImageOrientationPatient = [1, 0, 0, 0, -1 if normal_down else 1, 0]
    first_row_y = -20.0 + (pixels.shape[0] - 1) * PIXEL_SPACING[0] if normal_down else -20.0
    ds.ImagePositionPatient = [-10.0, first_row_y, z]
    ds.PixelSpacing = list(PIXEL_SPACING)
    ds.SliceThickness = DZ
    ds.Rows, ds.Columns = pixels.shape
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 12, 11, 0
    ds.RescaleIntercept, ds.RescaleSlope = -1024, 1
    ds.WindowCenter, ds.WindowWidth = 40, 400  # must NOT be applied to a volume
    for keyword, value in attributes.items():
        setattr(ds, keyword, value)
    ds.PixelData = pixels.tobytes()
    ds.save_as(path, enforce_file_format=True)
    return path


def write_series(folder, stored, *, seed=2, normal_down=False, z0=-40.0):
    """Write ``stored`` as a series in shuffled order, names and InstanceNumbers.

    Returns the SeriesInstanceUID and the path of each slice index.
    """
    folder.mkdir(exist_ok=True)
    rng = np.random.default_rng(seed)
    series = generate_uid()
    order = rng.permutation(len(stored))
    instances = rng.permutation(len(stored)) + 1
    names = [f"x{value:03d}{'.dcm' if value % 2 else ''}" for value in rng.permutation(100)]
    paths = []
    for rank, index in enumerate(order):
        pixels = stored[index][::-1] if normal_down else stored[index]  # rows run to A instead
        paths.append(
            write_ct_slice(
                folder / names[rank],
                pixels,
                z0 + DZ * index,  # with the normal along -z, position order is descending z
                series=series,
                instance=int(instances[rank]),
                normal_down=normal_down,
            )
        )
    return series, {int(index): path for index, path in zip(order, paths, strict=True)}


def ras(stored: np.ndarray) -> np.ndarray:
    """HU ``[slice, row, column]`` of an axial LPS series in RAS+ ``[D, H, W]`` order."""
    return (stored.astype(np.float32) - 1024)[:, ::-1, ::-1]  # rows P->A, columns L->R


def test_series_sorted_by_position_in_hu(tmp_path, stored):
    write_series(tmp_path / "ct", stored)
    (tmp_path / "ct" / "README.txt").write_text("not DICOM")
    image = read_dicom_series(tmp_path / "ct")
    assert image.array.shape == (6, 5, 4) and image.path == tmp_path / "ct"
    np.testing.assert_array_equal(image.array, ras(stored))  # HU, not windowed to 0..4095
    np.testing.assert_allclose(image.spacing, (DZ, *PIXEL_SPACING))
    np.testing.assert_array_equal(read_image(tmp_path / "ct").array, image.array)


def test_series_with_downward_normal_reads_the_same(tmp_path, stored):
    """Same anatomy, acquired with the other row direction: the same RAS+ array."""
    write_series(tmp_path / "up", stored)
    write_series(tmp_path / "down", stored, normal_down=True, seed=5)
    np.testing.assert_array_equal(
        read_dicom_series(tmp_path / "down").array, read_dicom_series(tmp_path / "up").array
    )


def test_series_matches_nifti_of_same_anatomy(tmp_path, stored):
    write_series(tmp_path / "ct", stored)
    hu = stored.astype(np.float32) - 1024  # [slice, row, column] in LPS
    dy, dx = PIXEL_SPACING
    affine = np.diag([-dx, -dy, DZ, 1.0])  # [column, row, slice] -> RAS: L->R and P->A flipped
    label = save_nifti(tmp_path / "label.nii.gz", (hu > 0).astype(np.uint8).T, affine)
    image, mask = read_volume_pair(tmp_path / "ct", label)
    np.testing.assert_array_equal(mask.array, (image.array > 0).astype(np.uint8))
    assert mask.array.dtype == np.uint8


def test_series_dz_from_positions_not_slice_thickness(tmp_path, stored):
    folder = tmp_path / "thin"
    folder.mkdir()
    series = generate_uid()
    for index in range(3):  # SliceThickness says 2.5 mm, positions are 1.25 mm apart
        write_ct_slice(folder / f"s{index}", stored[index], 1.25 * index, series=series, instance=1)
    np.testing.assert_allclose(read_dicom_series(folder).spacing, (1.25, *PIXEL_SPACING))


def test_missing_middle_slice_is_a_gap(tmp_path, stored):
    _, paths = write_series(tmp_path / "gap", stored)
    paths[3].unlink()
    with pytest.raises(ValueError, match=r"gap.*1 missing slice.*-35\.0000 mm.*-30\.0000 mm"):
        read_dicom_series(tmp_path / "gap")


def test_two_series_in_one_folder(tmp_path, stored):
    write_series(tmp_path / "mix", stored)
    other = generate_uid()
    write_ct_slice(tmp_path / "mix" / "other.dcm", stored[0], 100.0, series=other, instance=1)
    with pytest.raises(ValueError, match=rf"mix holds 2 DICOM series.*{other}: 1 files"):
        read_dicom_series(tmp_path / "mix")


def test_file_with_other_rows(tmp_path, stored):
    series, _ = write_series(tmp_path / "rows", stored[:3])
    assert read_dicom_series(tmp_path / "rows").array.shape == (3, 5, 4)  # fine before
    write_ct_slice(tmp_path / "rows" / "zz_odd", stored[3][:4], -32.5, series=series, instance=9)
    with pytest.raises(ValueError, match=r"zz_odd has Rows 4 but .* has 5"):
        read_dicom_series(tmp_path / "rows")


def test_folder_without_dicom(tmp_path):
    (tmp_path / "notes.txt").write_text("nothing here" * 20)
    with pytest.raises(ValueError, match="holds no DICOM file"):
        read_image(tmp_path)


# --- pairs ------------------------------------------------------------------------------------


def test_pair_shape_mismatch_names_both_files(tmp_path, voxels):
    image = save_nifti(tmp_path / "img.nii.gz", voxels, np.diag([*ZOOMS, 1.0]))
    label = save_nifti(
        tmp_path / "lab.nii.gz", (voxels[:3] > 0).astype(np.uint8), np.diag([*ZOOMS, 1.0])
    )
    with pytest.raises(ValueError, match=r"img\.nii\.gz.*\(6, 5, 4\).*lab\.nii\.gz.*\(6, 5, 3\)"):
        read_volume_pair(image, label)


def test_pair_spacing_mismatch_names_both_files(tmp_path, voxels):
    image = save_nifti(tmp_path / "img.nii.gz", voxels, np.diag([*ZOOMS, 1.0]))
    label = save_nifti(
        tmp_path / "lab.nii.gz", (voxels > 0).astype(np.uint8), np.diag([0.7, 0.8, 5.0, 1.0])
    )
    with pytest.raises(ValueError, match=r"img\.nii\.gz.*spacing.*lab\.nii\.gz"):
        read_volume_pair(image, label)


def test_pair_nan_image(tmp_path, voxels):
    data = voxels.astype(np.float32)
    data[1, 2, 3] = np.nan
    image = save_nifti(tmp_path / "nan.nii.gz", data, np.diag([*ZOOMS, 1.0]))
    label = save_nifti(
        tmp_path / "lab.nii.gz", (voxels > 0).astype(np.uint8), np.diag([*ZOOMS, 1.0])
    )
    with pytest.raises(ValueError, match=r"nan\.nii\.gz holds 1 NaN"):
        read_volume_pair(image, label)


def test_pair_non_integer_label(tmp_path, voxels):
    image = save_nifti(tmp_path / "img.nii.gz", voxels, np.diag([*ZOOMS, 1.0]))
    labels = (voxels % 3).astype(np.float32)
    labels[0, 0, 0] = 1.5
    label = save_nifti(tmp_path / "soft.nii.gz", labels, np.diag([*ZOOMS, 1.0]))
    with pytest.raises(ValueError, match=r"soft\.nii\.gz holds 1 non-integer.*1\.5"):
        read_volume_pair(image, label)


def test_pair_float_integer_label_becomes_integer(tmp_path, voxels):
    image = save_nifti(tmp_path / "img.nii.gz", voxels, np.diag([*ZOOMS, 1.0]))
    label = save_nifti(
        tmp_path / "lab.nii.gz", (voxels % 3).astype(np.float32), np.diag([*ZOOMS, 1.0])
    )
    _, mask = read_volume_pair(image, label)
    assert mask.array.dtype == np.uint8
    np.testing.assert_array_equal(mask.array, (voxels % 3).T)
