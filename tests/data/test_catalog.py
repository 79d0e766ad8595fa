"""Tests of the dataset catalog: preparers on tiny fake datasets, check, download, the CLI.

Every dataset here is written into tmp_path in its real folder layout; downloads go to a local
http.server on 127.0.0.1, never the internet.
"""

from __future__ import annotations

import gzip
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image as PILImage

from medcl_lite import repro
from medcl_lite.data import catalog
from medcl_lite.data.catalog import _lungs, pools, xray
from medcl_lite.data.download import ChecksumError
from medcl_lite.data.phantoms.chest_xray import XRAY_CLASSES
from medcl_lite.data.prepared import is_complete, read_prepared

SIZE = 16


# --- fake images ------------------------------------------------------------------------------


def _chest(height: int, width: int, seed: int = 0):
    """A bright chest with two dark lungs: ``(image uint8, image-left lung, image-right lung)``."""
    rng = np.random.default_rng(seed)
    rows, cols = np.mgrid[:height, :width]
    body = (rows >= 0.2 * height) & (rows < 0.8 * height)
    left = body & (cols >= 0.15 * width) & (cols < 0.42 * width)
    right = body & (cols >= 0.58 * width) & (cols < 0.85 * width)
    image = 190 + 10 * rng.random((height, width))
    image[left | right] = 40 + 10 * rng.random(int((left | right).sum()))
    return image.astype(np.uint8), left, right


def _png(path: Path, array: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    PILImage.fromarray(array).save(path)


def _mask_png(path: Path, mask: np.ndarray) -> None:
    _png(path, mask.astype(np.uint8) * 255)


def _write_montgomery(root: Path, n: int = 3, height: int = 24, width: int = 32) -> Path:
    """Montgomery layout; ``leftMask`` holds the lung on the IMAGE RIGHT (patient's left)."""
    base = root / "MontgomerySet"
    for i in range(1, n + 1):
        name = f"MCUCXR_{i:04d}_{i % 2}.png"
        image, image_left, image_right = _chest(height, width, seed=i)
        _png(base / "CXR_png" / name, image)
        _mask_png(base / "ManualMask" / "leftMask" / name, image_right)
        _mask_png(base / "ManualMask" / "rightMask" / name, image_left)
    return root


def _assert_lungs_aligned(data) -> None:
    """Class 1 on the image left, class 2 on the right, both on the lung pixels of the image."""
    assert data.classes == XRAY_CLASSES
    for image, mask in zip(data.images, data.masks, strict=True):
        right_cols, left_cols = np.nonzero(mask == 1)[1], np.nonzero(mask == 2)[1]
        assert len(right_cols) and len(left_cols)
        assert right_cols.mean() < SIZE / 2 - 2 and left_cols.mean() > SIZE / 2 + 1
        lungs, rest = image[mask > 0].mean(), image[(mask == 0) & (image > 0)].mean()
        assert lungs < rest - 0.3  # lungs are dark


# --- lungs ------------------------------------------------------------------------------------


def test_lung_label_map_uses_position_not_order():
    _, image_left, image_right = _chest(20, 30)
    labels, first_is_right = _lungs.lung_label_map(image_right, image_left, "x.png")
    assert not first_is_right
    assert set(np.unique(labels[image_left])) == {1} and set(np.unique(labels[image_right])) == {2}
    again, first_is_right = _lungs.lung_label_map(image_left, image_right, "x.png")
    assert first_is_right
    np.testing.assert_array_equal(labels, again)


def test_lung_label_map_rejects_same_side_and_overlap():
    _, image_left, image_right = _chest(20, 30)
    shifted = np.roll(image_left, 2, axis=1)
    with pytest.raises(ValueError, match=r"a\.gif.*not on opposite sides"):
        _lungs.lung_label_map(image_left, shifted, "a.gif")
    cols = np.arange(30)[None, :]
    spill = image_left | (image_right & (cols < 20))  # still left of the midline, but overlaps
    with pytest.raises(ValueError, match=r"b\.png.*overlap"):
        _lungs.lung_label_map(spill, image_right, "b.png")
    with pytest.raises(ValueError, match=r"c\.png.*empty"):
        _lungs.binary_mask(np.zeros((4, 4), np.uint8), "c.png")


def test_split_lungs_two_pieces_and_touching_lungs():
    _, image_left, image_right = _chest(20, 30)
    first, second = _lungs.split_lungs(image_left | image_right, "m.png")
    np.testing.assert_array_equal(first, image_left)
    np.testing.assert_array_equal(second, image_right)
    bridged = image_left | image_right
    bridged[9, 4:26] = True  # a one-row bridge joins the lungs
    first, second = _lungs.split_lungs(bridged, "m.png")
    assert first[image_left].all() and second[image_right].all() and not (first & second).any()
    blob = np.zeros((20, 30), bool)
    blob[4:16, 5:25] = True
    with pytest.raises(ValueError, match=r"blob\.png.*one piece"):
        _lungs.split_lungs(blob, "blob.png")


# --- segmentation sets ------------------------------------------------------------------------


def test_montgomery_prepared_with_classes_patients_and_padding(tmp_path):
    source = _write_montgomery(tmp_path / "src")
    data = xray.prepare_montgomery(source, size=SIZE, progress=False)
    assert data.images.shape == data.masks.shape == (3, SIZE, SIZE)
    assert data.images.dtype == np.float32 and 0 <= data.images.min() and data.images.max() <= 1
    assert data.meta["sample_id"].tolist() == ["MCUCXR_0001_1", "MCUCXR_0002_0", "MCUCXR_0003_1"]
    assert data.meta["patient_id"].tolist() == ["MCUCXR_0001", "MCUCXR_0002", "MCUCXR_0003"]
    assert data.meta["tb"].tolist() == [1, 0, 1]
    assert (data.meta["site"] == "montgomery").all() and (data.meta["time"] == 0).all()
    assert (data.meta["volume_id"] == "").all() and (data.meta["n_slices"] == 1).all()
    assert data.meta["orig_height"].tolist() == [24] * 3 and data.meta["orig_width"][0] == 32
    np.testing.assert_allclose(data.meta["pixel_spacing_mm"], 0.0875 * 32 / SIZE)
    # 24 x 32 padded to 32 x 32: 4 zero rows above and below -> 2 rows at size 16
    assert (data.images[:, :2] == 0).all() and (data.images[:, -2:] == 0).all()
    assert (data.masks[:, :2] == 0).all() and data.images[:, 2:-2].mean(axis=2).min() > 0.1
    right_cols, left_cols = np.nonzero(data.masks == 1)[2], np.nonzero(data.masks == 2)[2]
    assert right_cols.max() < SIZE / 2 <= left_cols.min()
    _assert_lungs_aligned(data)
    assert "'leftMask'" in data.info["left_right"] and "in 0 of 3" in data.info["left_right"]


def _write_jsrt(root: Path) -> Path:
    """Two 2048 x 2048 12-bit big-endian .IMG files, SCR masks 1024 x 1024 (GIF) in two folds;
    the SCR ``left lung`` folder holds the lung on the IMAGE LEFT (swapped w.r.t. Montgomery)."""
    for fold, name in (("fold1", "JPCLN001"), ("fold2", "JPCNN001")):
        image, image_left, image_right = _chest(1024, 1024, seed=len(name))
        film = 4095 - image.astype(np.uint16) * 16  # raw JSRT: dense (dark) film = high value
        raw = film.repeat(2, axis=0).repeat(2, axis=1)
        (root / "All247images").mkdir(parents=True, exist_ok=True)
        raw.astype(">u2").tofile(root / "All247images" / f"{name}.IMG")
        for side, mask in (("left lung", image_left), ("right lung", image_right)):
            folder = root / "scratch" / fold / "masks" / side
            folder.mkdir(parents=True, exist_ok=True)
            PILImage.fromarray(mask.astype(np.uint8) * 255).convert("P").save(
                folder / f"{name}.gif"
            )
    return root


def test_jsrt_prepared_from_img_and_gif_masks_with_swapped_folders(tmp_path):
    source = _write_jsrt(tmp_path / "jsrt")
    data = xray.prepare_jsrt(source, size=SIZE, progress=False)
    assert data.images.shape == (2, SIZE, SIZE)
    assert data.meta["sample_id"].tolist() == ["JPCLN001", "JPCNN001"]
    assert data.meta["nodule"].tolist() == [1, 0]
    assert data.meta["orig_height"].tolist() == [2048, 2048]
    _assert_lungs_aligned(data)  # read_image turns the film's dark = high values around
    assert "'left lung'" in data.info["left_right"] and "in 2 of 2" in data.info["left_right"]


def test_montgomery_and_jsrt_agree_on_classes(tmp_path):
    """Folder names say opposite things; both datasets put class 1 on the image left."""
    montgomery = xray.prepare_montgomery(_write_montgomery(tmp_path / "m", n=1), SIZE, False)
    jsrt = xray.prepare_jsrt(_write_jsrt(tmp_path / "j"), SIZE, False)
    for data in (montgomery, jsrt):
        assert np.nonzero(data.masks[0] == 1)[1].mean() < SIZE / 2
        assert np.nonzero(data.masks[0] == 2)[1].mean() > SIZE / 2


def test_same_side_masks_name_the_files(tmp_path):
    source = _write_montgomery(tmp_path / "src", n=2)
    _, image_left, _ = _chest(24, 32, seed=2)
    bad = tmp_path / "src" / "MontgomerySet" / "ManualMask" / "leftMask" / "MCUCXR_0002_0.png"
    _mask_png(bad, np.roll(image_left, 3, axis=1))  # both masks of image 2 on the image left
    with pytest.raises(ValueError, match=r"MCUCXR_0002_0\.png.*not on opposite sides"):
        xray.prepare_montgomery(source, size=SIZE, progress=False)


def _write_shenzhen(root: Path) -> Path:
    images = root / "ChinaSet_AllFiles" / "CXR_png"
    for i in (1, 2, 3):
        image, image_left, image_right = _chest(30, 24, seed=i)
        _png(images / f"CHNCXR_{i:04d}_{i % 2}.png", image)
        both = image_left | image_right
        if i == 2:
            both[15, 10:15] = True  # lungs touching: one connected piece
        if i != 3:  # image 3 has no mask in the mask release
            _mask_png(root / "mask" / f"CHNCXR_{i:04d}_{i % 2}_mask.png", both)
    return root


def test_shenzhen_splits_one_mask_into_right_and_left(tmp_path):
    source = _write_shenzhen(tmp_path / "sz")
    data = xray.prepare_shenzhen(source, size=SIZE, progress=False)
    assert data.meta["sample_id"].tolist() == ["CHNCXR_0001_1", "CHNCXR_0002_0"]
    assert data.meta["patient_id"].tolist() == ["CHNCXR_0001", "CHNCXR_0002"]
    assert data.meta["tb"].tolist() == [1, 0]
    assert (data.images[:, :, 0] == 0).all() and (data.images[:, :, -1] == 0).all()  # padded
    _assert_lungs_aligned(data)
    assert any("1 images have no lung mask" in note for note in data.info["notes"])


def test_shenzhen_skips_masks_that_cannot_be_split_into_two_lungs(tmp_path):
    """A few Shenzhen masks hold touching lungs in one piece without a narrow bridge: their
    images are skipped and listed; the others are prepared."""
    source = _write_shenzhen(tmp_path / "sz")
    image, _, _ = _chest(30, 24, seed=4)
    _png(source / "ChinaSet_AllFiles" / "CXR_png" / "CHNCXR_0004_0.png", image)
    blob = np.zeros((30, 24), bool)
    blob[6:24, 3:21] = True  # both lungs as one block: no column is a narrow bridge
    mask = source / "mask" / "CHNCXR_0004_0_mask.png"
    _mask_png(mask, blob)
    with pytest.warns(UserWarning, match=r"shenzhen: 1 of 3 images skipped"):
        data = xray.prepare_shenzhen(source, size=SIZE, progress=False)
    assert data.meta["sample_id"].tolist() == ["CHNCXR_0001_1", "CHNCXR_0002_0"]
    assert data.images.shape == data.masks.shape == (2, SIZE, SIZE)
    _assert_lungs_aligned(data)
    (skipped,) = data.info["skipped_images"]
    assert skipped["sample_id"] == "CHNCXR_0004_0" and skipped["file"] == str(mask)
    assert "cannot split it into right and left lungs" in skipped["reason"]
    assert any(note.startswith("1 of 3 images skipped") for note in data.info["notes"])
    with pytest.warns(UserWarning):
        out = catalog.prepare("shenzhen", source, out=tmp_path / "out", size=SIZE, progress=False)
    assert read_prepared(out).info["skipped_images"] == [skipped]


@pytest.mark.parametrize("fault", ["empty", "unreadable"])
def test_shenzhen_other_mask_errors_still_stop_naming_the_file(tmp_path, fault):
    source = _write_shenzhen(tmp_path / "sz")
    mask = source / "mask" / "CHNCXR_0002_0_mask.png"
    if fault == "empty":
        _mask_png(mask, np.zeros((30, 24), bool))
    else:
        mask.write_bytes(b"not a png")
    with pytest.raises(ValueError, match=r"CHNCXR_0002_0_mask\.png"):
        xray.prepare_shenzhen(source, size=SIZE, progress=False)


# --- temporal pools ---------------------------------------------------------------------------


def _jpg_or_png(path: Path, seed: int) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    PILImage.fromarray(_chest(20, 20, seed)[0]).save(path)


def _write_nih(root: Path) -> Path:
    rows = [  # (image, follow-up, patient, view)
        ("00000001_000.png", 0, 1, "PA"), ("00000001_001.png", 1, 1, "PA"),
        ("00000001_002.png", 2, 1, "PA"), ("00000002_000.png", 0, 2, "PA"),
        ("00000002_001.png", 1, 2, "AP"), ("00000003_000.png", 0, 3, "PA"),
        ("00000003_001.png", 1, 3, "PA"),
    ]  # fmt: skip
    table = pd.DataFrame(
        rows, columns=["Image Index", "Follow-up #", "Patient ID", "View Position"]
    )
    table.insert(1, "Finding Labels", "No Finding")
    root.mkdir(parents=True)
    table.to_csv(root / "Data_Entry_2017.csv", index=False)
    for i, (name, *_) in enumerate(rows):
        folder = "images_001" if i < 4 else "images_002"
        _jpg_or_png(root / folder / "images" / name, i)
    return root


def test_nih_selects_views_patients_and_times(tmp_path):
    source = _write_nih(tmp_path / "nih")
    data = pools.prepare_nih_cxr14(source, size=SIZE, progress=False)
    assert data.masks is None and data.classes == ("background",)
    assert data.meta["patient_id"].tolist() == ["nih-00001"] * 3 + ["nih-00003"] * 2
    assert data.meta["time"].tolist() == [0, 1, 2, 0, 1]
    assert data.meta["sample_id"][0] == "00000001_000" and (data.meta["view"] == "PA").all()
    assert data.images.shape == (5, SIZE, SIZE) and data.info["selection"]["patients"] == 2
    one = pools.prepare_nih_cxr14(source, size=SIZE, max_patients=1, progress=False)
    assert set(one.meta["patient_id"]) == {"nih-00001"}
    both_views = pools.prepare_nih_cxr14(source, size=SIZE, views=["PA", "AP"], progress=False)
    assert "nih-00002" in set(both_views.meta["patient_id"])


def test_nih_missing_images_error_or_allow_missing(tmp_path):
    source = _write_nih(tmp_path / "nih")
    (source / "images_002" / "images" / "00000003_001.png").unlink()
    with pytest.raises(ValueError, match=r"1 of 6 listed PA images are missing.*allow_missing"):
        pools.prepare_nih_cxr14(source, size=SIZE, progress=False)
    data = pools.prepare_nih_cxr14(source, size=SIZE, allow_missing=True, progress=False)
    assert set(data.meta["patient_id"]) == {"nih-00001"}  # patient 3 has one time point left


def test_chexpert_patient_and_study_from_path(tmp_path):
    root = tmp_path / "cx"
    rows = [
        ("patient00001/study1/view1_frontal.jpg", "Frontal", "PA"),
        ("patient00001/study1/view2_lateral.jpg", "Lateral", None),
        ("patient00001/study2/view1_frontal.jpg", "Frontal", "PA"),
        ("patient00002/study1/view1_frontal.jpg", "Frontal", "PA"),
    ]
    table = pd.DataFrame(
        [(f"CheXpert-v1.0-small/train/{p}", f, v) for p, f, v in rows],
        columns=["Path", "Frontal/Lateral", "AP/PA"],
    )
    (root / "CheXpert-v1.0-small").mkdir(parents=True)
    table.to_csv(root / "CheXpert-v1.0-small" / "train.csv", index=False)
    for i, path in enumerate(table["Path"]):
        _jpg_or_png(root / path, i)
    data = pools.prepare_chexpert(root, size=SIZE, progress=False)
    assert data.meta["sample_id"].tolist() == [
        "patient00001_study1_view1_frontal",
        "patient00001_study2_view1_frontal",
    ]
    assert data.meta["patient_id"].tolist() == ["patient00001"] * 2
    assert data.meta["time"].tolist() == [0, 1]


def test_mimic_time_is_study_rank_by_date(tmp_path):
    root = tmp_path / "mimic"
    rows = [  # study 2 was taken before study 1: time follows the date, not the id
        ("aa-1", 10000032, 50000001, "PA", 21800506, 120000.0),
        ("aa-2", 10000032, 50000002, "PA", 21800101, 90000.5),
        ("aa-3", 10000032, 50000002, "LATERAL", 21800101, 90000.5),
        ("bb-1", 10000033, 50000003, "PA", 21800101, 80000.0),
        ("bb-2", 10000033, 50000004, "PA", 21800101, 81000.0),
    ]
    columns = ["dicom_id", "subject_id", "study_id", "ViewPosition", "StudyDate", "StudyTime"]
    root.mkdir()
    with gzip.open(root / "mimic-cxr-2.0.0-metadata.csv.gz", "wt") as handle:
        pd.DataFrame(rows, columns=columns).to_csv(handle, index=False)
    for i, (dicom, subject, study, *_) in enumerate(rows):
        _jpg_or_png(root / "files" / "p10" / f"p{subject}" / f"s{study}" / f"{dicom}.jpg", i)
    data = pools.prepare_mimic_cxr(root, size=SIZE, progress=False)
    times = dict(zip(data.meta["sample_id"], data.meta["time"], strict=True))
    assert times == {"aa-2": 0, "aa-1": 1, "bb-1": 0, "bb-2": 1}
    assert set(data.meta["patient_id"]) == {"p10000032", "p10000033"}


# --- check, prepare, download -----------------------------------------------------------------


def test_check_without_source_gives_instructions():
    text = catalog.check("jsrt")
    assert "http://db.jsrt.or.jp/eng.php" in text and "left lung" in text and "registration" in text


def test_check_lists_missing_files_and_says_ready(tmp_path):
    source = _write_montgomery(tmp_path / "src", n=2)
    assert "ready to prepare" in catalog.check("montgomery", source)
    (source / "MontgomerySet" / "ManualMask" / "rightMask" / "MCUCXR_0002_0.png").unlink()
    with pytest.raises(ValueError, match=r"missing mask .*rightMask.*MCUCXR_0002_0\.png"):
        catalog.check("montgomery", source)
    with pytest.raises(ValueError, match=r"no SCR mask folder 'left lung'"):
        catalog.check("jsrt", tmp_path / "src")
    with pytest.raises(FileNotFoundError, match="nowhere"):
        catalog.check("montgomery", tmp_path / "nowhere")


def test_prepare_writes_prepared_folder_with_terms(tmp_path):
    source = _write_montgomery(tmp_path / "src", n=2)
    out = catalog.prepare("montgomery", source, out=tmp_path / "out", size=SIZE, progress=False)
    data = read_prepared(out)
    assert len(data) == 2 and data.classes == XRAY_CLASSES and data.name == "montgomery"
    assert "Jaeger" in data.info["citation"] and "NLM" in data.info["licence"]
    with pytest.raises(FileExistsError, match="overwrite"):
        catalog.prepare("montgomery", source, out=out, size=SIZE, progress=False)
    with pytest.raises(ValueError, match=r"unknown option 'max_patient'.*max_patients"):
        catalog.prepare("nih-cxr14", source, out=tmp_path / "o2", max_patient=3)


def test_registration_dataset_cannot_be_downloaded(tmp_path):
    with pytest.raises(ValueError, match=r"(?s)jsrt cannot be downloaded.*db\.jsrt\.or\.jp"):
        catalog.download("jsrt", home=tmp_path)


@pytest.fixture()
def served_montgomery(tmp_path, serve_dataset):
    source = _write_montgomery(tmp_path / "zipsrc", n=2)
    server, archive = serve_dataset("montgomery", source, "NLM-MontgomeryCXRSet.zip")
    yield server, archive


def test_download_end_to_end_then_no_request(tmp_path, served_montgomery):
    server, _ = served_montgomery
    home = tmp_path / "home"
    out = catalog.download("montgomery", home=home, size=SIZE, progress=False)
    assert out == home / "prepared" / f"montgomery-{SIZE}" and is_complete(out)
    assert server.requests == 1
    assert (home / "raw" / "montgomery" / "NLM-MontgomeryCXRSet.zip").is_file()
    _assert_lungs_aligned(read_prepared(out))
    assert catalog.download("montgomery", home=home, size=SIZE, progress=False) == out
    assert server.requests == 1


def test_corrupted_download_keeps_nothing(tmp_path, served_montgomery):
    server, archive = served_montgomery
    archive.write_bytes(archive.read_bytes()[:-10] + b"corrupted!")
    home = tmp_path / "home"
    with pytest.raises(ChecksumError):
        catalog.download("montgomery", home=home, size=SIZE, progress=False)
    assert server.requests == 1
    assert not (home / "raw" / "montgomery").exists()
    assert not (home / "prepared").exists() or not any((home / "prepared").iterdir())


# --- command line -----------------------------------------------------------------------------


def test_cli_check_prints_instructions(capsys):
    assert repro.main(["data", "check", "jsrt"]) == 0
    assert "db.jsrt.or.jp" in capsys.readouterr().out


def test_cli_unknown_dataset_suggests_a_name(capsys):
    assert repro.main(["data", "check", "montgomry"]) == 1
    err = capsys.readouterr().err
    assert err.startswith("error: ") and "did you mean 'montgomery'" in err
    assert "Traceback" not in err


def test_cli_list_and_prepare(tmp_path, capsys):
    assert repro.main(["data", "list"]) == 0
    out = capsys.readouterr().out
    assert "xray" in out and "montgomery" in out and "mimic-cxr" in out
    source = _write_nih(tmp_path / "nih")
    args = ["data", "prepare", "nih-cxr14", "--source", str(source), "--out", str(tmp_path / "o"),
            "--size", str(SIZE), "-o", "max_patients=1", "-o", "views=[PA, AP]", "--no-progress"]  # fmt: skip
    assert repro.main(args) == 0
    assert "prepared:" in capsys.readouterr().out
    assert set(read_prepared(tmp_path / "o").meta["patient_id"]) == {"nih-00001"}
    assert repro.main(args) == 1
    assert "overwrite" in capsys.readouterr().err
