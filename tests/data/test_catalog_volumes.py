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
    # stored slices run inferior->superior (AFFINE): prepared slice 0 is stored slice 2
    for slice_index, expected in ((0, MYO), (1, RV), (2, LV)):
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


def test_acdc_skips_macosx_debris_and_hidden_folders(tmp_path):
    """A zip unpacked on macOS: __MACOSX/ACDC/database/training/patientXXX/ holds AppleDouble
    files (._name) and no Info.cfg; a hidden folder holds another patientXXX/."""
    source = _write_acdc(tmp_path / "unzipped" / "ACDC", patients=(1, 2)).parent
    for patient in ("patient001", "patient002"):
        debris = source / "__MACOSX" / "ACDC" / "database" / "training" / patient
        debris.mkdir(parents=True)
        (debris / "._Info.cfg").write_bytes(b"\x00\x05\x16\x07 AppleDouble")
        (debris / f"._{patient}_frame01.nii.gz").write_bytes(b"\x00\x05\x16\x07")
    (source / ".Trash" / "patient003").mkdir(parents=True)
    scan = volumes.scan_acdc(source)
    assert not scan.problems and len(scan.items) == 4
    assert all("__MACOSX" not in str(item.image) for item in scan.items)
    assert "ready to prepare" in catalog.check("acdc", source)
    data = volumes.prepare_acdc(source, size=16, progress=False)
    assert set(data.meta["patient_id"]) == {"patient001", "patient002"}
    assert len(data) == 2 * 2 * DEPTH


def test_acdc_licence_is_cc_by_nc_sa():
    entry = catalog.get_entry("acdc")
    assert "CC BY-NC-SA 4.0" in entry.licence and "cite Bernard et al. 2018" in entry.licence
    assert f"licence:  {entry.licence}" in catalog.describe("acdc")


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


def _write_pairs(
    root: Path, values=(1, 2), image_suffix="_image", label_suffix="_label", names=None
):
    for i, name in enumerate(names or ("ct_1001", "ct_1002")):
        labels = np.zeros((DEPTH, HEIGHT, WIDTH), np.int16)
        labels[:, 4:10, 4:10], labels[:, 12:18, 12:20] = values
        _nifti(root / "sub" / f"{name}{image_suffix}.nii.gz", _image(i) * 4 - 500)
        _nifti(root / "sub" / f"{name}{label_suffix}.nii.gz", labels)
    return root


def test_pairs_keep_label_values(tmp_path):
    source = _write_pairs(tmp_path / "ct", values=(1, 7))
    data = volumes.prepare_nifti_pairs(source, size=16, progress=False)
    assert data.images.shape == (2 * DEPTH, 16, 16)
    assert data.classes == ("background", *(f"label_{i}" for i in range(1, 8)))
    assert set(np.unique(data.masks)) == {0, 1, 7}
    assert set(data.meta["volume_id"]) == {"ct_1001", "ct_1002"}
    assert set(data.meta["modality"]) == {"ct"}
    assert np.allclose(data.meta["spacing_x"], 1.5 * WIDTH / 16)
    assert np.allclose(data.meta["spacing_z"], 10.0)


def _write_imagechd(root: Path) -> Path:
    """ImageCHD release: ct_XXXX_image.nii.gz / ct_XXXX_label.nii.gz in one folder. Value v in
    1..7 (LV, RV, LA, RA, myocardium, aorta, pulmonary artery) fills 2 rows x v columns of every
    slice; other structures: value 14 (3 x 4 pixels) in both volumes, 9 (2 x 2) in ct_1001."""
    for i, name in enumerate(("ct_1001", "ct_1002")):
        labels = np.zeros((DEPTH, HEIGHT, WIDTH), np.int16)
        for value in range(1, 8):
            labels[:, 2 * value : 2 * value + 2, 2 : 2 + value] = value
        labels[:, 16:19, 10:14] = 14
        if i == 0:
            labels[:, 16:18, 2:4] = 9
        _nifti(root / "ImageCHD_dataset" / f"{name}_image.nii.gz", _image(i) * 4 - 500)
        _nifti(root / "ImageCHD_dataset" / f"{name}_label.nii.gz", labels)
    return root


def test_chd_labels_in_mmwhs_order_other_structures_background(tmp_path):
    source = _write_imagechd(tmp_path / "chd")
    data = volumes.prepare_chd(source, size=WIDTH, progress=False)
    assert data.classes == volumes.MMWHS_CLASSES
    structures = ("lv", "rv", "la", "ra", "myocardium", "aorta", "pulmonary_artery")
    for value, name in enumerate(structures, 1):  # 2 x value pixels per slice, 6 slices
        assert (data.masks == data.classes.index(name)).sum() == 2 * value * DEPTH * 2, name
    assert int((data.masks > 0).sum()) == 2 * sum(range(1, 8)) * DEPTH * 2  # 14, 9: background
    assert data.info["set_to_background"] == [
        {"value": 9, "voxels": 4 * DEPTH, "volumes": 1},
        {"value": 14, "voxels": 12 * DEPTH * 2, "volumes": 2},
    ]
    mmwhs = _write_pairs(tmp_path / "mmwhs", values=(500, 850), names=("ct_train_1001",))
    assert volumes.prepare_mmwhs(mmwhs, size=16, progress=False).classes == data.classes
    out = catalog.prepare("chd", source, out=tmp_path / "out", size=16, progress=False)
    stored = read_prepared(out)
    assert stored.classes == data.classes and stored.info["set_to_background"][1]["value"] == 14
    entry = catalog.get_entry("chd")
    assert entry.labels.startswith(", ".join(volumes.MMWHS_CLASSES))
    assert "above 7" in entry.labels and "ct_XXXX_image.nii.gz" in entry.instructions
    labels = np.zeros((DEPTH, HEIGHT, WIDTH), np.int16)
    labels[0, 0, 0] = -1
    _nifti(source / "ImageCHD_dataset" / "ct_1002_label.nii.gz", labels)
    with pytest.raises(ValueError, match=r"ct_1002_label.nii.gz holds values \[-1\]"):
        volumes.prepare_chd(source, size=16, progress=False)


def test_pairs_missing_label_is_listed(tmp_path):
    source = _write_pairs(tmp_path / "chd")
    (source / "sub" / "ct_1002_label.nii.gz").unlink()
    with pytest.raises(ValueError, match="missing label .*ct_1002_label.nii.gz"):
        catalog.check("chd", source)


def test_mmwhs_label_values_map_to_classes(tmp_path):
    names = ("ct_train_1001", "ct_train_1002")
    source = _write_pairs(tmp_path / "mmwhs", values=(500, 600), names=names)
    data = volumes.prepare_mmwhs(source, size=16, progress=False)
    assert data.classes[:4] == CARDIAC_CLASSES
    assert set(np.unique(data.masks)) == {0, LV, RV}
    bad = _write_pairs(tmp_path / "bad", values=(500, 421), names=names)
    with pytest.raises(ValueError, match=r"ct_train_100\d_label.nii.gz holds values \[421\]"):
        volumes.prepare_mmwhs(bad, size=16, progress=False)


def test_hvsmr_any_names_with_view_none(tmp_path):
    source = _write_pairs(tmp_path / "hvsmr", image_suffix="", label_suffix="-label")
    with pytest.raises(ValueError, match="no HVSMR images named training_sa_crop_patN"):
        volumes.prepare_hvsmr(source, size=16, progress=False)
    data = volumes.prepare_hvsmr(source, size=16, progress=False, view=None)
    assert set(data.meta["volume_id"]) == {"ct_1001", "ct_1002"}
    assert set(data.meta["modality"]) == {"mri"} and data.masks is not None


def test_catalog_lists_the_cardiac_entries():
    (acdc,) = catalog.get_entry("acdc").files  # public, sha256 pinned by torch-em
    assert acdc.url.startswith("https://humanheart-project.creatis.insa-lyon.fr/")
    assert len(acdc.sha256) == 64 and int(acdc.sha256, 16) >= 0
    for name in ("chd", "mmwhs", "hvsmr"):  # behind an account: check + prepare only
        assert not catalog.get_entry(name).files
        with pytest.raises(ValueError, match="cannot be downloaded automatically"):
            catalog.download(name)


def test_acdc_download_end_to_end(tmp_path, serve_dataset):
    """The real archive's layout (ACDC/database/training/patientXXX), served on 127.0.0.1 with
    its sha256 pinned: downloaded, verified, extracted and prepared in one call."""
    source = _write_acdc(tmp_path / "zipsrc" / "ACDC", patients=(1, 2))
    server, _ = serve_dataset("acdc", tmp_path / "zipsrc", "ACDC.zip")
    home = tmp_path / "home"
    out = catalog.download("acdc", home=home, size=WIDTH, progress=False)
    assert out == home / "prepared" / f"acdc-{WIDTH}" and server.requests == 1
    data = read_prepared(out)
    assert set(data.meta["phase"]) == {"ED", "ES"} and data.meta["patient_id"].nunique() == 2
    assert source.is_dir() and data.masks is not None


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


# --- orientation: display order of prepared slices ------------------------------------------

MARK_LABEL = 5  # label value of the marker block (kept as stored by prepare_nifti_pairs)


def _ras_anatomy() -> tuple[np.ndarray, np.ndarray]:
    """Image and labels ``[x, y, z]`` on an RAS+ grid (x towards the patient's right, y anterior,
    z superior), 24 x 20 x 3 voxels: a bright 3 x 3 marker (label 5; 0.6 % of the voxels, above
    the CT 99.5th percentile clip) at the anterior-right corner of the most superior slice, and
    a label-1 block at the posterior-left of the most inferior slice."""
    image = np.linspace(100, 160, WIDTH * HEIGHT * DEPTH).reshape(WIDTH, HEIGHT, DEPTH)
    labels = np.zeros((WIDTH, HEIGHT, DEPTH), np.uint8)
    image[-3:, -3:, -1], labels[-3:, -3:, -1] = 1000.0, MARK_LABEL
    labels[:4, :4, 0] = 1
    return image.astype(np.float32), labels


def _save_as(path: Path, array: np.ndarray, codes: tuple[str, str, str], *, frames: int = 0):
    """Save RAS+ ``array [x, y, z]`` stored with voxel axes pointing to ``codes`` (same anatomy,
    affine to match); ``frames`` > 0 repeats it as a 4-D cine file."""
    from nibabel.orientations import axcodes2ornt, io_orientation, ornt_transform

    affine = np.diag([1.5, 1.5, 10.0, 1.0])
    image = nib.Nifti1Image(array, affine)
    image = image.as_reoriented(ornt_transform(io_orientation(affine), axcodes2ornt(codes)))
    data = np.asarray(image.dataobj)
    if frames:
        data = np.repeat(data[..., None], frames, axis=3)
    path.parent.mkdir(parents=True, exist_ok=True)
    nib.save(nib.Nifti1Image(np.ascontiguousarray(data), image.affine), str(path))
    return path


STORED_LAYOUTS = [("R", "A", "S"), ("L", "P", "S"), ("I", "L", "P")]


@pytest.mark.parametrize("codes", STORED_LAYOUTS, ids="".join)
def test_pair_display_orientation_anterior_up_right_on_left_superior_first(tmp_path, codes):
    image, labels = _ras_anatomy()
    _save_as(tmp_path / "ct" / "ct_1001_image.nii.gz", image, codes)
    _save_as(tmp_path / "ct" / "ct_1001_label.nii.gz", labels, codes)
    # 1.5 mm pixels are kept (no resampling); 20 rows are zero-padded to 24 (2 above)
    data = volumes.prepare_nifti_pairs(tmp_path / "ct", WIDTH, progress=False, spacing_mm=1.5)
    assert data.info["orientation"] == volumes.DISPLAY_ORIENTATION
    assert "unoriented_volumes" not in data.info
    top = 2  # first image row after padding
    first, last = data.images[0], data.images[DEPTH - 1]
    assert np.allclose(first[top : top + 3, :3], 1.0)  # z clipped to +3 -> 1.0
    assert (first > 0.99).sum() == 9 and (last > 0.99).sum() == 0
    # the mask moves with the image: marker under the bright pixels, the other block at the
    # posterior (bottom) - left (image right) corner of the last (most inferior) slice
    assert set(np.unique(data.masks[0][first > 0.99])) == {MARK_LABEL}
    assert (data.masks[0] == MARK_LABEL).sum() == 9
    assert np.all(data.masks[DEPTH - 1][top + HEIGHT - 4 : top + HEIGHT, -4:] == 1)
    assert (data.masks[DEPTH - 1] > 0).sum() == 16
    assert np.allclose(data.meta["spacing_z"], 10.0) and np.allclose(data.meta["spacing_x"], 1.5)
    assert data.meta["orig_height"].tolist() == [HEIGHT] * DEPTH
    assert data.meta["orig_width"].tolist() == [WIDTH] * DEPTH


@pytest.mark.parametrize("codes", STORED_LAYOUTS, ids="".join)
def test_cine_frames_display_orientation_and_match_labelled(tmp_path, codes):
    image, labels = _ras_anatomy()
    folder = tmp_path / "acdc" / "training" / "patient001"
    folder.mkdir(parents=True)
    (folder / "Info.cfg").write_text("ED: 1\nES: 2\nGroup: NOR\n")
    _save_as(folder / "patient001_4d.nii.gz", image, codes, frames=2)
    for frame in (1, 2):
        _save_as(folder / f"patient001_frame{frame:02d}.nii.gz", image, codes)
        _save_as(folder / f"patient001_frame{frame:02d}_gt.nii.gz", labels.clip(0, 1), codes)
    cine = volumes.prepare_acdc(tmp_path / "acdc", size=WIDTH, frames="all", spacing_mm=1.5)
    assert cine.images.shape == (2 * DEPTH, WIDTH, WIDTH)
    for frame in range(2):
        first = cine.images[frame * DEPTH]
        assert (first > 0.99).sum() == 9 and np.allclose(first[2:5, :3], 1.0)
    labelled = volumes.prepare_acdc(tmp_path / "acdc", size=WIDTH, spacing_mm=1.5)
    assert np.allclose(labelled.images, cine.images)
    assert labelled.info["orientation"] == cine.info["orientation"]
    # ACDC value 1 (RV) marks the bright corner of slice 0 and the other block of slice 2
    rv = CARDIAC_CLASSES.index("rv")
    assert np.all(labelled.masks[0][labelled.images[0] > 0.99] == rv)
    assert np.all(labelled.masks[DEPTH - 1][2 + HEIGHT - 4 : 2 + HEIGHT, -4:] == rv)


def test_unoriented_nifti_keeps_stored_order(tmp_path):
    image, labels = _ras_anatomy()
    for name, array in (("ct_1001_image", image), ("ct_1001_label", labels)):
        nifti = nib.Nifti1Image(array, np.diag([1.5, 1.5, 10.0, 1.0]))
        nifti.set_sform(None, code=0)
        nifti.set_qform(None, code=0)
        nib.save(nifti, str(tmp_path / f"{name}.nii.gz"))
    data = volumes.prepare_nifti_pairs(tmp_path, size=WIDTH, progress=False, spacing_mm=1.5)
    assert data.info["unoriented_volumes"] == ["ct_1001"]
    # stored order: [D, H, W] = array.T; the marker stays in the last slice, last rows/columns
    last = data.images[DEPTH - 1]
    assert (last > 0.99).sum() == 9 and np.allclose(last[2 + HEIGHT - 3 : 2 + HEIGHT, -3:], 1)
    assert (data.images[0] > 0.99).sum() == 0


def _tilted(angle_deg: float) -> np.ndarray:
    """A short-axis-like affine: 1.5 mm pixels, 10 mm slices, the slice axis tilted
    ``angle_deg`` from superior towards anterior (60 degrees: closer to anterior)."""
    angle = np.deg2rad(angle_deg)
    affine = np.eye(4)
    rotation = np.array([[1, 0, 0], [0, np.cos(angle), np.sin(angle)], [0, -np.sin(angle), np.cos(angle)]])
    affine[:3, :3] = rotation @ np.diag([1.5, 1.5, 10.0])
    return affine


def _stored_slices() -> tuple[np.ndarray, np.ndarray]:
    """``[D, H, W]`` as stored: slice k has a bright marker in column k (image) and label k + 1."""
    image = np.full((DEPTH, HEIGHT, WIDTH), 100.0, np.float32) + np.arange(HEIGHT)[None, :, None]
    labels = np.zeros((DEPTH, HEIGHT, WIDTH), np.uint8)
    for k in range(DEPTH):
        image[k, 5:8, 3 + 4 * k : 6 + 4 * k] = 1000.0
        labels[k, 5:8, 3 + 4 * k : 6 + 4 * k] = k + 1
    return image, labels


@pytest.mark.parametrize("angle", [60, 120])  # slice axis pointing superior (60) / inferior (120)
def test_oblique_stack_keeps_its_slices_superior_first(tmp_path, angle):
    image, labels = _stored_slices()
    _nifti(tmp_path / "ct_1001_image.nii.gz", image, _tilted(angle))
    _nifti(tmp_path / "ct_1001_label.nii.gz", labels, _tilted(angle))
    data = volumes.prepare_nifti_pairs(tmp_path, size=WIDTH, progress=False, spacing_mm=1.5)
    assert data.info["oblique_stacks"] == ["ct_1001"] and len(data) == DEPTH  # never cut across
    stored_order = [2, 1, 0] if angle == 60 else [0, 1, 2]  # slice 0 = the most superior
    for row, k in enumerate(stored_order):
        assert set(np.unique(data.masks[row])) == {0, k + 1}
        bright = data.images[row] > 0.99
        assert np.all(data.masks[row][bright] == k + 1) and bright.sum() == 9
    assert data.meta.spacing_z.tolist() == [10.0] * DEPTH


def test_oblique_cine_stack_matches_its_labelled_frame(tmp_path):
    folder = tmp_path / "acdc" / "training" / "patient001"
    folder.mkdir(parents=True)
    (folder / "Info.cfg").write_text("ED: 1\nES: 2\n")
    image, labels = _stored_slices()
    _nifti(folder / "patient001_4d.nii.gz", np.stack([image, image]), _tilted(60))
    for frame in (1, 2):
        _nifti(folder / f"patient001_frame{frame:02d}.nii.gz", image, _tilted(60))
        _nifti(folder / f"patient001_frame{frame:02d}_gt.nii.gz", np.minimum(labels, 3), _tilted(60))
    cine = volumes.prepare_acdc(tmp_path / "acdc", size=WIDTH, frames="all", progress=False, spacing_mm=1.5)
    labelled = volumes.prepare_acdc(tmp_path / "acdc", size=WIDTH, progress=False, spacing_mm=1.5)
    assert cine.info["oblique_stacks"] == ["patient001"]
    assert labelled.info["oblique_stacks"] == ["patient001_frame01", "patient001_frame02"]
    np.testing.assert_allclose(cine.images, labelled.images)
    columns = np.flatnonzero((labelled.images[0] > 0.99).any(0))
    assert columns.tolist() == [11, 12, 13]  # the marker of stored slice 2: it comes first


def test_image_and_label_stored_in_different_axis_orders_is_an_error(tmp_path):
    image, labels = _ras_anatomy()
    _save_as(tmp_path / "ct_1001_image.nii.gz", image, ("R", "A", "S"))
    nifti = nib.Nifti1Image(labels[::-1], np.diag([1.5, 1.5, 10.0, 1.0]))
    nifti.set_sform(None, code=0)
    nifti.set_qform(None, code=0)
    nib.save(nifti, str(tmp_path / "ct_1001_label.nii.gz"))
    nib.save(  # flipped x with a matching affine: same anatomy, different storage
        nib.Nifti1Image(image[::-1], np.diag([-1.5, 1.5, 10.0, 1.0])),
        str(tmp_path / "ct_1001_image.nii.gz"),
    )
    with pytest.raises(ValueError) as error:
        volumes.prepare_chd(tmp_path, size=16, progress=False)
    assert "ct_1001_image.nii.gz" in str(error.value) and "ct_1001_label.nii.gz" in str(error.value)
    assert "only one carries an orientation" in str(error.value)


# --- real folder layouts ------------------------------------------------------------------------


def test_hvsmr_real_layout_training_views_and_ground_truth_folder(tmp_path):
    """HVSMR 2016: training_{axial_full,axial_crop,sa_crop}_patN.nii.gz in one folder, their
    -label files in another (e.g. GroundTruth/), testing_* volumes without labels."""
    root = tmp_path / "HVSMR2016"
    for patient in (0, 1):
        for view in volumes.HVSMR_VIEWS:
            name = f"training_{view}_pat{patient}"
            _nifti(root / "Training dataset" / f"{name}.nii.gz", _image(patient))
            _nifti(root / "GroundTruth" / f"{name}-label.nii.gz", _acdc_labels().clip(0, 2))
    _nifti(root / "Testing dataset" / "testing_axial_crop_pat10.nii.gz", _image(10))
    scan = volumes.scan_hvsmr(root)
    assert not scan.problems
    assert [i.volume_id for i in scan.items] == ["training_sa_crop_pat0", "training_sa_crop_pat1"]
    assert [i.patient_id for i in scan.items] == ["pat0", "pat1"]
    assert all(i.label.parent.name == "GroundTruth" for i in scan.items)
    assert any("1 testing_* volumes skipped" in note for note in scan.notes)
    assert "ready to prepare" in catalog.check("hvsmr", root)
    data = volumes.prepare_hvsmr(root, size=16, progress=False, view="axial_crop")
    assert set(data.meta["view"]) == {"axial_crop"} and data.info["view"] == "axial_crop"
    assert set(data.meta["patient_id"]) == {"pat0", "pat1"}
    out = catalog.prepare("hvsmr", root, out=tmp_path / "out", size=16, progress=False, view=None)
    stored = read_prepared(out)
    assert stored.info["orientation"] == volumes.DISPLAY_ORIENTATION
    assert stored.info["view"] == "all" and len(stored.images) == 6 * DEPTH
    every = volumes.scan_hvsmr(root, view=None)
    assert len(every.items) == 6 and {i.patient_id for i in every.items} == {"pat0", "pat1"}
    with pytest.raises(ValueError, match="view must be one of"):
        volumes.scan_hvsmr(root, view="axial")
    (root / "GroundTruth" / "training_sa_crop_pat1-label.nii.gz").unlink()
    with pytest.raises(ValueError, match="no training_sa_crop_pat1-label.nii.gz below"):
        catalog.check("hvsmr", root)


def test_mmwhs_real_names_with_image_and_label_folders(tmp_path):
    """MM-WHS: ct_train_1001_image.nii.gz / ct_train_1001_label.nii.gz, next to each other
    (ct_train/) or, as often re-packed, in image/ and label/ folders."""
    for number in (1001, 1002):
        labels = np.zeros((DEPTH, HEIGHT, WIDTH), np.int16)
        labels[:, 4:10, 4:10], labels[:, 12:18, 12:20] = 205, 850
        _nifti(tmp_path / "image" / f"ct_train_{number}_image.nii.gz", _image(number))
        _nifti(tmp_path / "label" / f"ct_train_{number}_label.nii.gz", labels)
    data = volumes.prepare_mmwhs(tmp_path, size=16, progress=False)
    assert set(data.meta["volume_id"]) == {"ct_train_1001", "ct_train_1002"}
    assert set(np.unique(data.masks)) == {0, MYO, volumes.MMWHS_CLASSES.index("pulmonary_artery")}
    _nifti(tmp_path / "copy" / "ct_train_1002_label.nii.gz", np.zeros((DEPTH, HEIGHT, WIDTH)))
    with pytest.raises(ValueError, match="several labels named ct_train_1002_label.nii.gz"):
        catalog.check("mmwhs", tmp_path)


def test_hvsmr_default_sa_crop_with_named_classes(tmp_path):
    """HVSMR 2016 labels: 1 myocardium, 2 blood pool; PCL's view sa_crop is the default."""
    root = tmp_path / "HVSMR2016"
    for view in volumes.HVSMR_VIEWS:
        name = f"training_{view}_pat0"
        _nifti(root / "Training dataset" / f"{name}.nii.gz", _image(0))
        _nifti(root / "GroundTruth" / f"{name}-label.nii.gz", _acdc_labels().clip(0, 2))
    data = volumes.prepare_hvsmr(root, size=16, progress=False)
    assert data.info["view"] == "sa_crop"
    assert set(data.meta["volume_id"]) == {"training_sa_crop_pat0"}
    assert data.classes == volumes.HVSMR_CLASSES == ("background", "myocardium", "blood_pool")
    assert set(np.unique(data.masks)) == {0, 1, 2}
    assert catalog.get_entry("hvsmr").labels == "background, myocardium, blood_pool"
    assert "view=sa_crop, the default" in catalog.describe("hvsmr")
    labels = _acdc_labels()  # holds 3, not an HVSMR value
    _nifti(root / "GroundTruth" / "training_sa_crop_pat0-label.nii.gz", labels)
    with pytest.raises(ValueError, match=r"training_sa_crop_pat0-label.nii.gz holds values \[3\]"):
        volumes.prepare_hvsmr(root, size=16, progress=False)


def test_mmwhs_whole_release_takes_ct_train_only(tmp_path):
    """The MM-WHS 2017 release unpacked whole: ct_train/, mr_train/ (image and label pairs),
    ct_test/ and mr_test/ (images only)."""
    root = tmp_path / "MM-WHS 2017 Dataset"
    labels = np.zeros((DEPTH, HEIGHT, WIDTH), np.int16)
    labels[:, 4:10, 4:10], labels[:, 12:18, 12:20] = 500, 820
    for number in (1001, 1002):
        _nifti(root / "ct_train" / f"ct_train_{number}_image.nii.gz", _image(number) * 4)
        _nifti(root / "ct_train" / f"ct_train_{number}_label.nii.gz", labels)
    _nifti(root / "mr_train" / "mr_train_1001_image.nii.gz", _image(3))
    _nifti(root / "mr_train" / "mr_train_1001_label.nii.gz", labels)
    for number in (2001, 2002):
        _nifti(root / "ct_test" / f"ct_test_{number}_image.nii.gz", _image(number))
    _nifti(root / "mr_test" / "mr_test_2001_image.nii.gz", _image(4))
    note = "2 ct_test_*, 1 mr_test_* and 1 mr_train_* volumes skipped (only ct_train_* is prepared)"
    scan = volumes.scan_mmwhs(root)
    assert not scan.problems and note in scan.notes
    assert [i.volume_id for i in scan.items] == ["ct_train_1001", "ct_train_1002"]
    assert catalog.get_entry("mmwhs").scan is volumes.scan_mmwhs
    assert f"note: {note}" in catalog.check("mmwhs", root)
    data = volumes.prepare_mmwhs(root, size=16, progress=False)
    assert set(data.meta["volume_id"]) == {"ct_train_1001", "ct_train_1002"}
    assert data.info["skipped_volumes"] == {"ct_test_*": 2, "mr_test_*": 1, "mr_train_*": 1}
    assert note in data.info["notes"]
    for folder in ("ct_train", "mr_train"):
        for path in (root / folder).iterdir():
            path.unlink()
    with pytest.raises(ValueError, match="no MM-WHS CT training images ct_train_XXXX_image"):
        catalog.check("mmwhs", root)
