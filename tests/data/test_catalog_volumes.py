"""Tests of the cardiac volume preparers (ACDC, CT NIfTI pairs) on tiny fake datasets in tmp_path.

Fake volumes are NIfTI files of 3 slices of 20 x 24 pixels (``[D, H, W]`` after reading) with
1.5 x 1.5 x 10 mm voxels, written in the datasets' real folder layouts.
"""

from __future__ import annotations

from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from medcl_lite.data import catalog
from medcl_lite.data.catalog import volumes
from medcl_lite.data.phantoms.cardiac import CARDIAC_CLASSES
from medcl_lite.data.prepared import read_prepared

DEPTH, HEIGHT, WIDTH = 3, 20, 24
AFFINE = np.diag([1.5, 1.5, 10.0, 1.0])  # x, y, z spacing in mm
LV, MYO, RV = (CARDIAC_CLASSES.index(c) for c in ("lv", "myocardium", "rv"))


def _nifti(path: Path, volume: np.ndarray, affine: np.ndarray = AFFINE) -> Path:
    """Save ``volume [D, H, W]`` (or ``[T, D, H, W]``) as NIfTI ``[W, H, D(, T)]``."""
    path.parent.mkdir(parents=True, exist_ok=True)
    data = volume.transpose(2, 1, 0) if volume.ndim == 3 else volume.transpose(3, 2, 1, 0)
    nib.save(nib.Nifti1Image(np.ascontiguousarray(data), affine), str(path))
    return path


def _image(seed: int, frames: int | None = None) -> np.ndarray:
    rng = np.random.default_rng(seed)
    shape = (DEPTH, HEIGHT, WIDTH) if frames is None else (frames, DEPTH, HEIGHT, WIDTH)
    return (100 + 50 * rng.standard_normal(shape)).astype(np.float32)


def _acdc_labels() -> np.ndarray:
    """Slice 0 holds ACDC value 3 (LV), slice 1 value 1 (RV), slice 2 value 2 (MYO)."""
    labels = np.zeros((DEPTH, HEIGHT, WIDTH), np.uint8)
    for k, value in enumerate((3, 1, 2)):
        labels[k, 6:14, 8:16] = value
    return labels


def _write_acdc(root: Path, patients=(1, 2), ed: int = 1, es: int = 4, frames: int = 5) -> Path:
    for number in patients:
        patient = f"patient{number:03d}"
        folder = root / "database" / "training" / patient
        folder.mkdir(parents=True)
        (folder / "Info.cfg").write_text(
            f"ED: {ed}\nES: {es}\nGroup: NOR\nHeight: 180.0\nNbFrame: {frames}\nWeight: 80.0\n"
        )
        for frame in (ed, es):
            _nifti(folder / f"{patient}_frame{frame:02d}.nii.gz", _image(number * 10 + frame))
            _nifti(folder / f"{patient}_frame{frame:02d}_gt.nii.gz", _acdc_labels())
        _nifti(folder / f"{patient}_4d.nii.gz", _image(number, frames))
    return root


# --- ACDC -------------------------------------------------------------------------------------


def test_acdc_labelled_shapes_meta_and_resampling(tmp_path):
    source = _write_acdc(tmp_path / "acdc")
    data = volumes.prepare_acdc(source, size=32, progress=False)
    assert data.images.shape == (2 * 2 * DEPTH, 32, 32) and data.images.dtype == np.float32
    assert data.masks.shape == data.images.shape and data.classes == CARDIAC_CLASSES
    assert 0.0 <= data.images.min() and data.images.max() <= 1.0
    meta = data.meta
    first = meta[meta["volume_id"] == "patient001_frame04"]
    assert first["slice_index"].tolist() == [0, 1, 2]
    assert first["n_slices"].tolist() == [3, 3, 3]
    assert np.allclose(first["depth"], [1 / 3, 2 / 3, 1.0])
    assert set(first["phase"]) == {"ES"} and set(first["frame"]) == {4}
    assert set(meta["patient_id"]) == {"patient001", "patient002"}
    assert set(meta["split"]) == {"training"} and set(meta["group"]) == {"NOR"}
    # in-plane resampling from 1.5 mm to 1.25 mm: the prepared pixels are 1.25 mm
    assert np.allclose(meta["spacing_x"], 1.25) and np.allclose(meta["spacing_y"], 1.25)
    assert np.allclose(meta["spacing_z"], 10.0) and np.allclose(meta["orig_spacing_x"], 1.5)
    # the 8 x 8 px label block (12 x 12 mm) covers 9.6 x 9.6 px at 1.25 mm
    assert 81 <= int((data.masks[0] > 0).sum()) <= 110


def test_acdc_class_mapping_to_phantom_order(tmp_path):
    data = volumes.prepare_acdc(_write_acdc(tmp_path / "acdc", patients=(1,)), size=32)
    meta = data.meta
    for slice_index, expected in ((0, LV), (1, RV), (2, MYO)):
        row = meta.index[(meta["phase"] == "ED") & (meta["slice_index"] == slice_index)][0]
        assert set(np.unique(data.masks[row])) == {0, expected}


def test_acdc_without_resampling_pads_and_resizes(tmp_path):
    source = _write_acdc(tmp_path / "acdc", patients=(1,))
    data = volumes.prepare_acdc(source, size=16, spacing_mm=None, progress=False)
    assert data.images.shape == (2 * DEPTH, 16, 16)
    assert np.allclose(data.meta["spacing_x"], 1.5 * WIDTH / 16)


def test_acdc_all_frames_unlabelled(tmp_path):
    source = _write_acdc(tmp_path / "acdc", frames=5)
    data = volumes.prepare_acdc(source, size=16, frames="all", max_patients=1, progress=False)
    assert data.masks is None
    assert data.images.shape == (5 * DEPTH, 16, 16)
    meta = data.meta
    assert sorted(set(meta["frame"])) == [1, 2, 3, 4, 5]
    assert set(meta["volume_id"]) == {f"patient001_t{t:02d}" for t in range(1, 6)}
    assert set(meta.loc[meta["frame"] == 1, "phase"]) == {"ED"}
    assert set(meta.loc[meta["frame"] == 4, "phase"]) == {"ES"}
    assert set(meta.loc[meta["frame"] == 2, "phase"]) == {""}
    assert np.allclose(meta.loc[meta["volume_id"] == "patient001_t03", "depth"], [1 / 3, 2 / 3, 1])
    # each frame is normalised on its own: frames differ
    assert not np.allclose(data.images[0], data.images[DEPTH])


def test_acdc_check_lists_missing_files(tmp_path):
    source = _write_acdc(tmp_path / "acdc")
    assert "ready to prepare" in catalog.check("acdc", source)
    (source / "database/training/patient002/patient002_frame04_gt.nii.gz").unlink()
    (source / "database/training/patient001/Info.cfg").unlink()
    with pytest.raises(ValueError) as error:
        catalog.check("acdc", source)
    assert "patient002_frame04_gt.nii.gz" in str(error.value)
    assert "patient001/Info.cfg" in str(error.value)
    with pytest.raises(ValueError, match="no patientXXX folders"):
        volumes.prepare_acdc(source / "database" / "training" / "patient001", size=16)


def test_acdc_label_shape_mismatch_names_both_files(tmp_path):
    source = _write_acdc(tmp_path / "acdc", patients=(1,))
    folder = source / "database/training/patient001"
    _nifti(folder / "patient001_frame01_gt.nii.gz", np.zeros((DEPTH, HEIGHT, WIDTH + 2), np.uint8))
    with pytest.raises(ValueError) as error:
        volumes.prepare_acdc(source, size=16, progress=False)
    assert "patient001_frame01.nii.gz" in str(error.value)
    assert "patient001_frame01_gt.nii.gz" in str(error.value)


def test_acdc_unknown_label_value_is_an_error(tmp_path):
    source = _write_acdc(tmp_path / "acdc", patients=(1,))
    labels = _acdc_labels()
    labels[0, 0, 0] = 7
    _nifti(source / "database/training/patient001/patient001_frame04_gt.nii.gz", labels)
    with pytest.raises(ValueError, match=r"patient001_frame04_gt.nii.gz holds values \[7\]"):
        volumes.prepare_acdc(source, size=16, progress=False)


def test_acdc_through_catalog_prepare_round_trip(tmp_path):
    source = _write_acdc(tmp_path / "acdc", patients=(1,))
    out = catalog.prepare("acdc", source, out=tmp_path / "out", size=16, progress=False)
    data = read_prepared(out)
    assert data.masks.shape == (2 * DEPTH, 16, 16) and data.classes == CARDIAC_CLASSES
    assert np.allclose(data.meta["spacing_x"], 1.25) and data.info["dataset"] == "acdc"
    with pytest.raises(ValueError, match="unknown option 'frame'"):
        catalog.prepare("acdc", source, out=tmp_path / "o2", size=16, frame="all")


# --- intensity --------------------------------------------------------------------------------


def test_to_unit_zscore_clip_and_constant_error(tmp_path):
    volume = np.linspace(-1, 1, 1000).reshape(10, 10, 10)
    volume[0, 0, 0] = 1000.0  # an outlier: z far above 3, clipped to 1
    unit = volumes.to_unit(volume, tmp_path / "v.nii.gz", "mri")
    assert unit.dtype == np.float32 and unit.min() >= 0 and unit.max() == 1.0
    assert abs(float(np.median(unit)) - 0.5) < 0.01
    with pytest.raises(ValueError, match=r"v.nii.gz is constant"):
        volumes.to_unit(np.full((2, 3, 3), 5.0), tmp_path / "v.nii.gz", "mri")


def test_ct_percentile_clip_removes_outlier_influence(tmp_path):
    rng = np.random.default_rng(0)
    volume = rng.normal(0, 100, (4, 20, 20))
    volume[0, 0, :5] = 30000.0  # metal: above the 99.5th percentile
    ct, mri = (volumes.to_unit(volume, tmp_path / "v", m) for m in ("ct", "mri"))
    assert ct.std() > 1.5 * mri.std()  # without the clip, the outlier squeezes the contrast


# --- CT pairs ---------------------------------------------------------------------------------


def _write_pairs(root: Path, values=(1, 2), image_suffix="_image", label_suffix="_label"):
    for i, name in enumerate(("ct_1001", "ct_1002")):
        labels = np.zeros((DEPTH, HEIGHT, WIDTH), np.int16)
        labels[:, 4:10, 4:10], labels[:, 12:18, 12:20] = values
        _nifti(root / "sub" / f"{name}{image_suffix}.nii.gz", _image(i) * 4 - 500)
        _nifti(root / "sub" / f"{name}{label_suffix}.nii.gz", labels)
    return root


def test_chd_pairs_keep_label_values(tmp_path):
    source = _write_pairs(tmp_path / "chd", values=(1, 7))
    data = volumes.prepare_chd(source, size=16, progress=False)
    assert data.images.shape == (2 * DEPTH, 16, 16)
    assert data.classes == ("background", *(f"label_{i}" for i in range(1, 8)))
    assert set(np.unique(data.masks)) == {0, 1, 7}
    assert set(data.meta["volume_id"]) == {"ct_1001", "ct_1002"}
    assert set(data.meta["modality"]) == {"ct"}
    assert np.allclose(data.meta["spacing_x"], 1.5 * WIDTH / 16)
    assert np.allclose(data.meta["spacing_z"], 10.0)


def test_pairs_missing_label_is_listed(tmp_path):
    source = _write_pairs(tmp_path / "chd")
    (source / "sub" / "ct_1002_label.nii.gz").unlink()
    with pytest.raises(ValueError, match="missing label .*ct_1002_label.nii.gz"):
        catalog.check("chd", source)


def test_mmwhs_label_values_map_to_classes(tmp_path):
    source = _write_pairs(tmp_path / "mmwhs", values=(500, 600))
    data = volumes.prepare_mmwhs(source, size=16, progress=False)
    assert data.classes[:4] == CARDIAC_CLASSES
    assert set(np.unique(data.masks)) == {0, LV, RV}
    bad = _write_pairs(tmp_path / "bad", values=(500, 421))
    with pytest.raises(ValueError, match=r"ct_100\d_label.nii.gz holds values \[421\]"):
        volumes.prepare_mmwhs(bad, size=16, progress=False)


def test_hvsmr_dash_label_layout(tmp_path):
    source = _write_pairs(tmp_path / "hvsmr", image_suffix="", label_suffix="-label")
    data = volumes.prepare_hvsmr(source, size=16, progress=False)
    assert set(data.meta["volume_id"]) == {"ct_1001", "ct_1002"}
    assert set(data.meta["modality"]) == {"mri"} and data.masks is not None


def test_catalog_lists_the_cardiac_entries():
    for name in ("acdc", "chd", "mmwhs", "hvsmr"):
        entry = catalog.get_entry(name)
        assert not entry.files  # no invented checksums
    with pytest.raises(ValueError, match="cannot be downloaded automatically"):
        catalog.download("acdc")


def test_acdc_cine_frame_matches_its_labelled_volume(tmp_path):
    """Frame ED of the 4-D file and the ED file hold the same pixels: both paths must agree,
    also with a flipped affine (reoriented to RAS+ in both)."""
    source = _write_acdc(tmp_path / "acdc", patients=(1,), ed=1, es=2, frames=2)
    folder = source / "database/training/patient001"
    cine, flipped = _image(5, frames=2), np.diag([-1.5, 1.5, 10.0, 1.0])
    _nifti(folder / "patient001_4d.nii.gz", cine, flipped)
    _nifti(folder / "patient001_frame01.nii.gz", cine[0], flipped)
    _nifti(folder / "patient001_frame01_gt.nii.gz", _acdc_labels(), flipped)
    labelled = volumes.prepare_acdc(source, size=32, progress=False)
    cine_data = volumes.prepare_acdc(source, size=32, frames="all", progress=False)
    ed = labelled.meta["volume_id"] == "patient001_frame01"
    first = cine_data.meta["volume_id"] == "patient001_t01"
    assert np.allclose(labelled.images[ed.to_numpy()], cine_data.images[first.to_numpy()])
    assert not np.allclose(cine_data.images[first.to_numpy()][:, :, ::-1],
                           labelled.images[ed.to_numpy()])  # fmt: skip
