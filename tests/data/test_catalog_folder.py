"""Tests of the generic layouts (``medcl data prepare folder``) on tiny folders in tmp_path.

Volumes: the Decathlon (v1) and nnU-Net v2 raw layouts, 3 slices of 20 x 24 pixels with
1.5 x 1.5 x 10 mm voxels. 2-D: PNG images with PNG masks and an optional ``meta.csv``.
"""

from __future__ import annotations

import json
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
from PIL import Image as PILImage

from medcl_lite.data import catalog
from medcl_lite.data.catalog import folder
from medcl_lite.data.prepared import load_role, read_prepared
from medcl_lite.repro import main

DEPTH, HEIGHT, WIDTH = 3, 20, 24
AFFINE = np.diag([1.5, 1.5, 10.0, 1.0])


def _nifti(path: Path, volume: np.ndarray, affine: np.ndarray = AFFINE) -> Path:
    """Save ``volume [D, H, W]`` (or ``[D, H, W, C]``) as NIfTI ``[W, H, D(, C)]``."""
    path.parent.mkdir(parents=True, exist_ok=True)
    data = volume.transpose(2, 1, 0) if volume.ndim == 3 else volume.transpose(2, 1, 0, 3)
    nib.save(nib.Nifti1Image(np.ascontiguousarray(data), affine), str(path))
    return path


def _image(seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return (100 + 50 * rng.standard_normal((DEPTH, HEIGHT, WIDTH))).astype(np.float32)


def _labels(values=(1, 2)) -> np.ndarray:
    labels = np.zeros((DEPTH, HEIGHT, WIDTH), np.uint8)
    labels[:, 4:10, 4:10] = values[0]
    labels[:, 12:18, 12:20] = values[1]
    return labels


def _nnunet(root: Path, cases=4, test_cases=1, channels=1, labels=None, json_labels=None) -> Path:
    """nnU-Net v2 raw layout: ``imagesTr/case_NNN_000C.nii.gz``, ``labelsTr/``, ``imagesTs/``."""
    for k in range(cases + test_cases):
        split = "Tr" if k < cases else "Ts"
        for c in range(channels):
            _nifti(root / f"images{split}" / f"case_{k:03d}_{c:04d}.nii.gz", _image(10 * k + c))
        if split == "Tr":
            _nifti(root / "labelsTr" / f"case_{k:03d}.nii.gz", _labels() if labels is None else labels)
    description = {
        "channel_names": {str(c): ("CT" if c == 0 else "T2") for c in range(channels)},
        "labels": json_labels or {"background": 0, "liver": 1, "tumour": 2},
        "numTraining": cases,
        "file_ending": ".nii.gz",
    }
    (root / "dataset.json").write_text(json.dumps(description))
    return root


def _msd(root: Path, cases=3) -> Path:
    """Decathlon (v1) layout: ``imagesTr/NAME.nii.gz`` (no channel suffix), labels value -> name."""
    for k in range(cases):
        _nifti(root / "imagesTr" / f"hippocampus_{k:03d}.nii.gz", _image(k))
        _nifti(root / "labelsTr" / f"hippocampus_{k:03d}.nii.gz", _labels((1, 3)))
    # macOS debris as in the real Decathlon tarballs
    (root / "imagesTr" / "._hippocampus_000.nii.gz").write_bytes(b"\x00\x05\x16\x07")
    description = {"name": "Hippocampus", "modality": {"0": "MRI"},
                   "labels": {"0": "background", "1": "anterior", "3": "posterior"}}  # fmt: skip
    (root / "dataset.json").write_text(json.dumps(description))
    return root


def _png(path: Path, array: np.ndarray) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    PILImage.fromarray(array).save(path)
    return path


def _two_d(root: Path, n=5, unlabelled=2, mask_values=(0, 255)) -> Path:
    """``images/img_K.png`` with ``masks/img_K.png`` (or ``img_K_mask.png``) for the first n."""
    rng = np.random.default_rng(0)
    for k in range(n + unlabelled):
        _png(root / "images" / f"img {k}.png", rng.integers(0, 255, (30, 40), dtype=np.uint8))
        if k < n:
            mask = np.full((30, 40), mask_values[0], np.uint8)
            mask[5:20, 10:30] = mask_values[1]
            ending = "_mask" if k % 2 else ""
            _png(root / "masks" / f"img {k}{ending}.png", mask)
    return root


# --- volumes ------------------------------------------------------------------------------------


def test_nnunet_layout_labelled_set_and_pool(tmp_path):
    source = _nnunet(tmp_path / "Dataset001_Liver")
    out = catalog.prepare("folder", source, out=tmp_path / "liver", size=16, progress=False)
    data = read_prepared(out)
    assert data.classes == ("background", "liver", "tumour")
    assert data.images.shape == (4 * DEPTH, 16, 16) and set(np.unique(data.masks)) == {0, 1, 2}
    assert data.meta["volume_id"].nunique() == 4 and data.meta["patient_id"].nunique() == 4
    first = data.meta[data.meta["volume_id"] == "case_000"]
    assert np.allclose(first["depth"], [1 / 3, 2 / 3, 1.0])
    assert data.info["modality"] == "ct" and data.info["channel_name"] == "CT"
    assert data.info["dataset"] == "folder" and data.info["source"] == str(source)
    parts = catalog.prepared_parts(out)
    assert set(parts) == {"", "-pool"} and parts["-pool"] == tmp_path / "liver-pool"
    pool = read_prepared(parts["-pool"])
    assert pool.masks is None and pool.meta["volume_id"].nunique() == 5
    assert set(pool.meta["volume_id"]) == {f"case_{k:03d}" for k in range(5)}
    assert set(pool.meta["split"]) == {"train", "test"}
    # the notebooks' data parameters accept both folders
    role, rows = load_role(str(out), None, "A")
    assert len(rows) == len(role) == 4 * DEPTH and role.masks is not None


def test_default_out_is_named_after_the_source_folder(tmp_path):
    source = _nnunet(tmp_path / "Dataset002_Mine", cases=2, test_cases=0)
    out = catalog.prepare("folder", source, size=16, progress=False, home=tmp_path / "home")
    assert out == tmp_path / "home" / "prepared" / "Dataset002_Mine-16"
    assert catalog.prepared_parts(out) == {"": out}  # all labelled: no pool folder


def test_msd_layout_values_and_hidden_files(tmp_path):
    source = _msd(tmp_path / "Task04_Hippocampus")
    data = folder.prepare_folder(source, size=16, progress=False)[""]
    assert data.classes == ("background", "anterior", "posterior")
    assert set(np.unique(data.masks)) == {0, 1, 2}  # stored 3 -> class index 2
    assert data.info["modality"] == "mri" and data.name == "Task04_Hippocampus"


def test_channel_choice(tmp_path):
    source = _nnunet(tmp_path / "two", cases=2, test_cases=0, channels=2)
    scan = folder.scan_folder(source, channel=1)
    assert not scan.problems and any("2 files of other channels skipped" in n for n in scan.notes)
    data = folder.prepare_folder(source, size=16, progress=False, channel=1)[""]
    assert data.info["channel"] == 1 and data.info["modality"] == "mri"
    zero = folder.prepare_folder(source, size=16, progress=False, channel=0)[""]
    assert not np.allclose(data.images, zero.images)


def test_meta_csv_sets_patients_time_and_site(tmp_path):
    source = _nnunet(tmp_path / "m", cases=4, test_cases=0)
    (source / "meta.csv").write_text(
        "case,patient_id,time,site\ncase_000,p1,0,X\ncase_001,p1,1,X\ncase_002,p2,0,Y\ncase_003,p3,0,Y\n"
    )
    data = folder.prepare_folder(source, size=16, progress=False)[""]
    meta = data.meta.drop_duplicates("volume_id").set_index("volume_id")
    assert meta.loc["case_001", "patient_id"] == "p1" and meta.loc["case_001", "time"] == 1
    assert meta.loc["case_002", "site"] == "Y" and data.meta["patient_id"].nunique() == 3


@pytest.mark.parametrize(
    "damage, named",
    [
        ("label_value", "labelsTr/case_001.nii.gz"),
        ("shape", "labelsTr/case_001.nii.gz"),
        ("spacing", "labelsTr/case_001.nii.gz"),
        ("fractional", "labelsTr/case_001.nii.gz"),
        ("unreadable", "imagesTr/case_001_0000.nii.gz"),
        ("orphan_label", "labelsTr/case_009.nii.gz"),
        ("four_d", "imagesTr/case_001_0000.nii.gz"),
        ("meta_missing", "meta.csv"),
    ],
)
def test_bad_volumes_are_refused_naming_the_file(tmp_path, damage, named):
    source = _nnunet(tmp_path / "bad", cases=3, test_cases=1)
    label = source / "labelsTr" / "case_001.nii.gz"
    image = source / "imagesTr" / "case_001_0000.nii.gz"
    if damage == "label_value":
        _nifti(label, _labels((1, 5)))
    elif damage == "shape":
        _nifti(label, np.zeros((DEPTH, HEIGHT, WIDTH + 2), np.uint8))
    elif damage == "spacing":
        _nifti(label, _labels(), np.diag([1.5, 1.5, 5.0, 1.0]))
    elif damage == "fractional":
        _nifti(label, _labels().astype(np.float32) * 0.5)
    elif damage == "unreadable":
        image.write_bytes(b"not a nifti file")
    elif damage == "orphan_label":
        _nifti(source / "labelsTr" / "case_009.nii.gz", _labels())
    elif damage == "four_d":
        _nifti(image, np.stack([_image(1), _image(2)], axis=-1))
    elif damage == "meta_missing":
        (source / "meta.csv").write_text("case,patient_id\ncase_000,p1\n")
    out = tmp_path / "out"
    with pytest.raises(ValueError, match=named.replace(".", r"\.")):
        catalog.prepare("folder", source, out=out, size=16, progress=False)
    assert not out.exists() and not (tmp_path / "out-pool").exists()  # nothing half-written


def test_empty_and_unknown_folders_are_refused(tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match="neither dataset.json"):
        folder.prepare_folder(tmp_path / "empty", progress=False)
    (tmp_path / "noimg" / "imagesTr").mkdir(parents=True)
    (tmp_path / "noimg" / "dataset.json").write_text(json.dumps({"labels": {"background": 0, "a": 1}}))
    with pytest.raises(ValueError, match="no NIfTI images"):
        folder.prepare_folder(tmp_path / "noimg", progress=False)


@pytest.mark.parametrize(
    "labels, message",
    [
        ({"background": 0, "liver": [1, 2]}, "region-based"),
        ({"liver": 1}, "include 0"),
        ({}, "no 'labels'"),
    ],
)
def test_bad_dataset_json(tmp_path, labels, message):
    path = tmp_path / "dataset.json"
    path.write_text(json.dumps({"labels": labels}))
    with pytest.raises(ValueError, match=message):
        folder.read_dataset_json(path)


# --- 2-D ----------------------------------------------------------------------------------------


def test_two_d_binary_masks_and_pool(tmp_path):
    source = _two_d(tmp_path / "lungs")
    out = catalog.prepare("folder", source, out=tmp_path / "p", size=16, progress=False,
                          classes="background, lung")  # fmt: skip
    data = read_prepared(out)
    assert data.classes == ("background", "lung") and set(np.unique(data.masks)) == {0, 1}
    assert len(data) == 5 and data.meta["sample_id"].tolist()[0] == "img_0"
    assert "0/255 read as 0/1 in 5 masks" in data.info["mask_values"]
    pool = read_prepared(tmp_path / "p-pool")
    assert len(pool) == 7 and pool.masks is None and pool.classes == data.classes


def test_two_d_class_indices_without_names(tmp_path):
    source = _two_d(tmp_path / "idx", unlabelled=0, mask_values=(0, 2))
    data = folder.prepare_folder(source, size=16, progress=False)[""]
    assert data.classes == ("background", "label_1", "label_2")


def test_two_d_meta_csv(tmp_path):
    source = _two_d(tmp_path / "t", n=3, unlabelled=0)
    (source / "meta.csv").write_text(
        "image,patient_id,time,site\nimg 0.png,a,0,S1\nimg 1.png,a,1,S1\nimg 2.png,b,0,S2\n"
    )
    data = folder.prepare_folder(source, size=16, progress=False, classes=["bg", "lung"])[""]
    assert data.meta["patient_id"].tolist() == ["a", "a", "b"]
    assert data.meta["time"].tolist() == [0, 1, 0] and data.meta["site"].tolist() == ["S1", "S1", "S2"]


def test_two_d_refusals(tmp_path):
    source = _two_d(tmp_path / "v", n=2, unlabelled=0, mask_values=(0, 3))
    with pytest.raises(ValueError, match=r"img 0\.png holds values \[3\]"):
        folder.prepare_folder(source, size=16, progress=False, classes="background,lung")
    _png(source / "masks" / "stray.png", np.zeros((30, 40), np.uint8))
    with pytest.raises(ValueError, match=r"mask .*stray\.png has no image"):
        folder.prepare_folder(source, size=16, progress=False)
    (source / "masks" / "stray.png").unlink()
    (source / "images" / "img 1.png").write_bytes(b"broken")
    with pytest.raises(ValueError, match=r"img 1\.png"):
        folder.prepare_folder(source, size=16, progress=False)


def test_cli_prepare_and_check(tmp_path, capsys):
    source = _two_d(tmp_path / "cli")
    assert main(["data", "check", "folder", "--source", str(source)]) == 0
    assert "5 images with masks and 2 without" in capsys.readouterr().out
    code = main(["data", "prepare", "folder", "--source", str(source), "--out", str(tmp_path / "o"),
                 "--size", "16", "--classes", "background,lung", "--no-progress"])  # fmt: skip
    printed = capsys.readouterr().out
    assert code == 0 and f"prepared: {tmp_path / 'o'}" in printed
    assert f"prepared (pool): {tmp_path / 'o-pool'}" in printed
    assert "folder" in {row["name"] for row in catalog.list_datasets()}


def test_two_d_dicom_images(tmp_path):
    from test_io import write_dicom

    source = tmp_path / "dcm"
    rng = np.random.default_rng(1)
    for k in range(3):
        (source / "images").mkdir(parents=True, exist_ok=True)
        write_dicom(source / "images" / f"cr{k}.dcm", rng.integers(0, 4095, (30, 40), dtype=np.uint16),
                    bits_stored=12, PixelSpacing=[0.2, 0.2])  # fmt: skip
        mask = np.zeros((30, 40), np.uint8)
        mask[10:20, 5:15] = 1
        _png(source / "masks" / f"cr{k}.png", mask)
    data = folder.prepare_folder(source, size=16, progress=False, classes="background,nodule")[""]
    assert len(data) == 3 and data.masks.max() == 1 and 0 <= data.images.min() < data.images.max() <= 1
