"""Tests of the abdominal CT preparers (BTCV, AMOS 2022) on tiny fake datasets in tmp_path.

Fake volumes are NIfTI files of 3 slices of 20 x 24 pixels (``[D, H, W]`` after reading) with
1.5 x 1.5 x 10 mm voxels, written in the datasets' real folder layouts (BTCV
``RawData/Training/{img,label}/``; AMOS ``amos22/{images,labels}{Tr,Va,Ts}/`` with
``dataset.json`` and the archive's ``__MACOSX`` debris).
"""

from __future__ import annotations

import json
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from medcl_lite import repro
from medcl_lite.data import catalog
from medcl_lite.data.catalog import abdomen
from medcl_lite.data.catalog.abdomen import ABDOMEN_CLASSES, AMOS_ORGANS, BTCV_ORGANS
from medcl_lite.data.prepared import read_prepared

DEPTH, HEIGHT, WIDTH = 3, 20, 24
AFFINE = np.diag([1.5, 1.5, 10.0, 1.0])
LIVER, KIDNEY_RIGHT = ABDOMEN_CLASSES.index("liver"), ABDOMEN_CLASSES.index("kidney_right")
#: stored label value -> pixels per slice of its block (distinct, so counts identify classes)
BTCV_BLOCKS = {6: 36, 2: 16, 11: 9}  # liver, right kidney, pancreas
AMOS_BLOCKS = {6: 36, 2: 16, 13: 9}  # liver, right kidney, duodenum


def _nifti(path: Path, volume: np.ndarray) -> Path:
    """Save ``volume [D, H, W]`` as NIfTI ``[W, H, D]``."""
    path.parent.mkdir(parents=True, exist_ok=True)
    nib.save(nib.Nifti1Image(np.ascontiguousarray(volume.transpose(2, 1, 0)), AFFINE), str(path))
    return path


def _ct(seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return (40 + 300 * rng.standard_normal((DEPTH, HEIGHT, WIDTH))).astype(np.int16)


def _labels(blocks: dict[int, int]) -> np.ndarray:
    """Square blocks (side sqrt(pixels)) of each value on every slice, apart from each other."""
    labels = np.zeros((DEPTH, HEIGHT, WIDTH), np.uint8)
    column = 1
    for value, pixels in blocks.items():
        side = int(round(pixels**0.5))
        labels[:, 2 : 2 + side, column : column + side] = value
        column += side + 1
    return labels


def _write_btcv(root: Path, numbers=(1, 2), testing=(61,)) -> Path:
    for number in numbers:
        _nifti(root / "RawData/Training/img" / f"img{number:04d}.nii.gz", _ct(number))
        _nifti(root / "RawData/Training/label" / f"label{number:04d}.nii.gz", _labels(BTCV_BLOCKS))
    for number in testing:
        _nifti(root / "RawData/Testing/img" / f"img{number:04d}.nii.gz", _ct(number))
    return root


def _write_amos(root: Path, train=(1, 3), val=(2,), mri=(507,), test=(100,)) -> Path:
    base = root / "amos22"
    for split, numbers in (("Tr", (*train, *mri)), ("Va", val)):
        for number in numbers:
            name = f"amos_{number:04d}.nii.gz"
            _nifti(base / f"images{split}" / name, _ct(number))
            _nifti(base / f"labels{split}" / name, _labels(AMOS_BLOCKS))
    for number in test:
        _nifti(base / "imagesTs" / f"amos_{number:04d}.nii.gz", _ct(number))
    labels = {"0": "background", **{str(v): name for v, name in AMOS_ORGANS.items()}}
    (base / "dataset.json").write_text(json.dumps({"name": "AMOS", "labels": labels}))
    debris = root / "__MACOSX" / "amos22" / "imagesTr" / "._amos_0009.nii.gz"
    debris.parent.mkdir(parents=True)
    debris.write_bytes(b"not a nifti")
    return root


def _counts(mask: np.ndarray) -> dict[int, int]:
    values, counts = np.unique(mask, return_counts=True)
    return {int(v): int(c) for v, c in zip(values, counts, strict=True) if v}


# --- label maps -------------------------------------------------------------------------------


def test_organ_label_maps_phantom_and_all():
    label_map, classes = abdomen.organ_label_map(BTCV_ORGANS, "phantom")
    assert classes == ABDOMEN_CLASSES
    assert label_map[6] == LIVER and label_map[2] == KIDNEY_RIGHT
    assert label_map[3] == ABDOMEN_CLASSES.index("kidney_left")
    assert label_map[1] == ABDOMEN_CLASSES.index("spleen")
    assert label_map[7] == ABDOMEN_CLASSES.index("stomach")
    assert {label_map[v] for v in (4, 5, 8, 9, 10, 11, 12, 13)} == {0}
    label_map, classes = abdomen.organ_label_map(AMOS_ORGANS, "all")
    assert len(classes) == 16 and classes[9] == "inferior_vena_cava" and classes[13] == "duodenum"
    assert label_map == {v: v for v in range(16)}
    with pytest.raises(ValueError, match="classes must be one of"):
        abdomen.organ_label_map(BTCV_ORGANS, "organs")


# --- BTCV -------------------------------------------------------------------------------------


def test_btcv_phantom_classes(tmp_path):
    source = _write_btcv(tmp_path / "btcv")
    data = abdomen.prepare_btcv(source, size=WIDTH, progress=False)
    assert data.images.shape == (2 * DEPTH, WIDTH, WIDTH) and data.classes == ABDOMEN_CLASSES
    assert set(data.meta["volume_id"]) == {"btcv_0001", "btcv_0002"}
    assert set(data.meta["modality"]) == {"ct"} and data.info["classes_mode"] == "phantom"
    assert np.allclose(data.meta["depth"][:DEPTH], [1 / 3, 2 / 3, 1])
    # 24 px wide: padded 20 -> 24 rows and not resized, so block pixel counts are kept;
    # value 6 (liver) -> class 1, 2 (right kidney) -> kidney_right, 11 (pancreas) -> background
    for mask in data.masks:
        assert _counts(mask) == {LIVER: 36, KIDNEY_RIGHT: 16}
    assert data.meta["source_file"].iloc[0] == "RawData/Training/img/img0001.nii.gz"


def test_btcv_all_classes_keep_every_organ(tmp_path):
    source = _write_btcv(tmp_path / "btcv", numbers=(1,))
    data = abdomen.prepare_btcv(source, size=WIDTH, progress=False, classes="all")
    assert data.classes == ("background", *BTCV_ORGANS.values()) and len(data.classes) == 14
    assert data.classes[6] == "liver" and data.classes[11] == "pancreas"
    assert _counts(data.masks[0]) == BTCV_BLOCKS


def test_btcv_scan_pairs_by_number_skips_testing_and_lists_missing(tmp_path):
    source = _write_btcv(tmp_path / "btcv", numbers=(1, 2, 3))
    scan = abdomen.scan_btcv(source)
    assert not scan.problems and [i.volume_id for i in scan.items] == [
        "btcv_0001", "btcv_0002", "btcv_0003"]  # fmt: skip
    assert any("1 Testing images skipped" in note for note in scan.notes)
    text = catalog.check("btcv", source)
    assert "ready to prepare" in text and "3 volumes found" in text
    (source / "RawData/Training/label/label0002.nii.gz").unlink()
    (source / "RawData/Training/img/img0003.nii.gz").unlink()
    with pytest.raises(ValueError) as error:
        catalog.check("btcv", source)
    assert "missing label label0002.nii.gz for image" in str(error.value)
    assert "label0003.nii.gz has no image img0003.nii.gz" in str(error.value)
    with pytest.raises(ValueError, match="no BTCV images imgNNNN.nii.gz"):
        abdomen.scan_btcv(source / "RawData" / "Training" / "label").raise_problems("btcv", source)


def test_btcv_unknown_label_value_names_the_file(tmp_path):
    source = _write_btcv(tmp_path / "btcv", numbers=(1,))
    _nifti(source / "RawData/Training/label/label0001.nii.gz", _labels({6: 36, 14: 9}))
    with pytest.raises(ValueError, match=r"label0001.nii.gz holds values \[14\]"):
        abdomen.prepare_btcv(source, size=16, progress=False)


def test_btcv_cli_prepare_round_trip(tmp_path, capsys):
    assert repro.main(["data", "list"]) == 0
    out = capsys.readouterr().out
    assert "btcv" in out and "amos" in out
    source = _write_btcv(tmp_path / "btcv", numbers=(1, 2))
    args = ["data", "prepare", "btcv", "--source", str(source), "--out", str(tmp_path / "o"),
            "--size", "16", "-o", "classes=all", "-o", "max_patients=1", "--no-progress"]  # fmt: skip
    assert repro.main(args) == 0
    assert "prepared:" in capsys.readouterr().out
    data = read_prepared(tmp_path / "o")
    assert data.classes == ("background", *BTCV_ORGANS.values())
    assert set(data.meta["volume_id"]) == {"btcv_0001"} and data.info["dataset"] == "btcv"
    assert data.info["options"] == {"classes": "all", "max_patients": 1}
    bad = ["data", "prepare", "btcv", "--source", str(source), "--out", str(tmp_path / "o2"),
           "-o", "classes=organs", "--no-progress"]  # fmt: skip
    assert repro.main(bad) == 1
    assert "classes must be one of" in capsys.readouterr().err


def test_btcv_cannot_be_downloaded():
    assert catalog.get_entry("btcv").access == "registration"
    with pytest.raises(ValueError, match="cannot be downloaded automatically"):
        catalog.download("btcv")


# --- AMOS -------------------------------------------------------------------------------------


def test_amos_ct_only_phantom_classes(tmp_path):
    source = _write_amos(tmp_path / "amos")
    data = abdomen.prepare_amos(source, size=WIDTH, progress=False)
    assert set(data.meta["volume_id"]) == {"amos_0001", "amos_0002", "amos_0003"}
    assert data.classes == ABDOMEN_CLASSES and set(data.meta["modality"]) == {"ct"}
    split = data.meta.groupby("volume_id")["split"].first().to_dict()
    assert split == {"amos_0001": "train", "amos_0002": "validation", "amos_0003": "train"}
    for mask in data.masks:  # 13 (duodenum) -> background
        assert _counts(mask) == {LIVER: 36, KIDNEY_RIGHT: 16}
    first = abdomen.prepare_amos(source, size=16, progress=False, max_patients=1, classes="all")
    assert set(first.meta["volume_id"]) == {"amos_0001"} and len(first.classes) == 16


def test_amos_check_notes_skipped_mri_and_test_and_lists_missing(tmp_path):
    source = _write_amos(tmp_path / "amos", mri=(507, 600), test=(100, 101))
    text = catalog.check("amos", source)
    assert "3 volumes found" in text
    assert "2 MRI images skipped" in text and "2 imagesTs CT images skipped" in text
    (source / "amos22/labelsVa/amos_0002.nii.gz").unlink()
    with pytest.raises(ValueError, match=r"missing label .*labelsVa/amos_0002.nii.gz"):
        catalog.check("amos", source)


def test_amos_dataset_json_with_other_labels_is_a_problem(tmp_path):
    source = _write_amos(tmp_path / "amos")
    (source / "amos22/dataset.json").write_text(json.dumps({"labels": {"0": "bg", "1": "liver"}}))
    with pytest.raises(ValueError, match=r"dataset.json lists label values \[0, 1\]"):
        abdomen.prepare_amos(source, size=16, progress=False)


def test_amos_pinned_download_end_to_end(tmp_path, serve_dataset):
    (file,) = catalog.get_entry("amos").files  # the real pin: Zenodo, sha256 from torch-em
    assert file.url == "https://zenodo.org/records/7155725/files/amos22.zip"
    assert len(file.sha256) == 64 and int(file.sha256, 16) >= 0
    _write_amos(tmp_path / "zipsrc", train=(1,), val=(), mri=(507,), test=())
    server, _ = serve_dataset("amos", tmp_path / "zipsrc", "amos22.zip")
    home = tmp_path / "home"
    out = catalog.download("amos", home=home, size=16, progress=False)
    assert out == home / "prepared" / "amos-16" and server.requests == 1
    data = read_prepared(out)
    assert set(data.meta["volume_id"]) == {"amos_0001"} and data.classes == ABDOMEN_CLASSES
    assert data.info["dataset"] == "amos" and data.masks.max() == KIDNEY_RIGHT
