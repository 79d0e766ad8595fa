"""Tests of the prepared format: exact round trips, atomic writes and clear errors."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import nibabel as nib
import numpy as np
import pandas as pd
import pytest
from PIL import Image as PILImage

from medcl_lite.data import prepared
from medcl_lite.data.io import read_image
from medcl_lite.data.phantoms import make_cardiac_volumes, make_chest_xrays
from medcl_lite.data.prepared import MARKER, open_prepared, read_prepared, write_prepared
from medcl_lite.data.sliceset import SliceSet

QUANTUM = 0.5 / 65535 + 1e-7


@pytest.fixture(scope="module")
def xrays() -> SliceSet:
    return make_chest_xrays(n_patients=3, n_times=2, size=32, seed=0)


@pytest.fixture(scope="module")
def volumes() -> SliceSet:
    return make_cardiac_volumes(n_patients=2, size=32, slices=(4, 6), seed=0)


def _assert_same(a: SliceSet, b: SliceSet) -> None:
    assert np.abs(a.images - b.images).max() <= QUANTUM
    if a.masks is None:
        assert b.masks is None
    else:
        np.testing.assert_array_equal(a.masks, b.masks)
    pd.testing.assert_frame_equal(a.meta, b.meta)
    assert (a.classes, a.name, a.info) == (b.classes, b.name, b.info)


def test_round_trip_2d(tmp_path, xrays):
    root = write_prepared(xrays, tmp_path / "xray")
    assert root == tmp_path / "xray" and (root / MARKER).is_file()
    manifest = pd.read_csv(root / "manifest.csv", keep_default_na=False)
    assert manifest["image"].iloc[0] == f"images/{xrays.meta['sample_id'].iloc[0]}.png"
    first = read_image(root / manifest["image"].iloc[0]).array
    assert first.dtype == np.uint16 and first.shape == (32, 32)
    description = json.loads((root / "dataset.json").read_text())
    assert description["format_version"] == prepared.FORMAT_VERSION
    assert description["classes"] == list(xrays.classes)
    _assert_same(xrays, read_prepared(root))


def test_round_trip_volumes(tmp_path, volumes):
    root = write_prepared(volumes, tmp_path / "cardiac")
    assert sorted(p.name for p in (root / "volumes").iterdir()) == [
        f"{v}.nii.gz" for v in sorted(volumes.meta["volume_id"].unique())
    ]
    assert not (root / "images").exists()
    first = volumes.meta.iloc[0]
    nifti = nib.load(str(root / "volumes" / f"{first['volume_id']}.nii.gz"))
    np.testing.assert_allclose(
        nifti.header.get_zooms(),
        first[["spacing_x", "spacing_y", "spacing_z"]].astype(float),
        rtol=1e-5,
    )
    assert (
        read_image(root / "labels" / f"{first['volume_id']}.nii.gz").array.shape[0]
        == (first["n_slices"])
    )
    _assert_same(volumes, read_prepared(root))


def test_round_trip_unlabelled(tmp_path, xrays):
    unlabelled = SliceSet(xrays.images, None, xrays.meta, xrays.classes, "u", {"k": [1, 2]})
    root = write_prepared(unlabelled, tmp_path / "u")
    assert not (root / "masks").exists()
    _assert_same(unlabelled, read_prepared(root))


def test_existing_folder_needs_overwrite(tmp_path, xrays):
    root = write_prepared(xrays, tmp_path / "ds")
    with pytest.raises(FileExistsError, match="overwrite"):
        write_prepared(xrays.subset([0, 1]), root)
    assert len(read_prepared(root)) == len(xrays)
    write_prepared(xrays.subset([0, 1]), root, overwrite=True)
    assert len(read_prepared(root)) == 2
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ds"]  # no temporary leftovers


def test_foreign_folder_is_never_replaced(tmp_path, xrays):
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "notes.txt").write_text("keep me")
    with pytest.raises(FileExistsError, match="not a prepared"):
        write_prepared(xrays, tmp_path / "mine", overwrite=True)
    assert (tmp_path / "mine" / "notes.txt").read_text() == "keep me"
    (tmp_path / "empty").mkdir()
    write_prepared(xrays, tmp_path / "empty")  # an empty folder is fine
    assert prepared.is_complete(tmp_path / "empty")


def test_failed_write_leaves_old_folder_and_no_temp(tmp_path, xrays, monkeypatch):
    root = write_prepared(xrays, tmp_path / "ds")

    def explode(*args, **kwargs):
        raise RuntimeError("disk full")

    monkeypatch.setattr(prepared, "_save_nifti", explode)
    with pytest.raises(RuntimeError, match="disk full"):
        write_prepared(make_cardiac_volumes(1, size=32, slices=(3, 3)), root, overwrite=True)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ds"]
    _assert_same(xrays, read_prepared(root))


@pytest.mark.parametrize("problem", ["nan", "duplicate", "partial_volume", "unsafe_id"])
def test_write_errors(tmp_path, xrays, volumes, problem):
    data, match = xrays, ""
    if problem == "nan":
        data = SliceSet(xrays.images.copy(), xrays.masks, xrays.meta, xrays.classes)
        data.images[0, 0, 0] = np.nan  # SliceSet checks at construction; arrays can change later
        match = "NaN"
    elif problem == "duplicate":
        meta = xrays.meta.copy()
        meta.loc[1, "sample_id"] = meta.loc[0, "sample_id"]
        data, match = SliceSet(xrays.images, xrays.masks, meta, xrays.classes), "duplicate"
    elif problem == "partial_volume":
        data, match = volumes.subset(np.arange(1, len(volumes))), "incomplete"
    else:
        meta = xrays.meta.copy()
        meta.loc[0, "sample_id"] = "../escape"
        data, match = SliceSet(xrays.images, xrays.masks, meta, xrays.classes), "safe"
    with pytest.raises(ValueError, match=match):
        write_prepared(data, tmp_path / "ds")
    assert not (tmp_path / "ds").exists()


def test_read_missing_folder_and_marker(tmp_path, xrays):
    with pytest.raises(FileNotFoundError, match="not found"):
        read_prepared(tmp_path / "absent")
    root = write_prepared(xrays, tmp_path / "ds")
    (root / MARKER).unlink()
    with pytest.raises(ValueError, match="incomplete"):
        read_prepared(root)


def test_read_missing_manifest(tmp_path, xrays):
    root = write_prepared(xrays, tmp_path / "ds")
    (root / "manifest.csv").unlink()
    with pytest.raises(FileNotFoundError, match="manifest.csv"):
        read_prepared(root)


def _edit_manifest(root, edit) -> None:
    manifest = pd.read_csv(root / "manifest.csv", dtype=str, keep_default_na=False)
    edit(manifest).to_csv(root / "manifest.csv", index=False)


def test_read_missing_column(tmp_path, xrays):
    root = write_prepared(xrays, tmp_path / "ds")
    _edit_manifest(root, lambda m: m.drop(columns=["patient_id"]))
    with pytest.raises(ValueError, match="patient_id"):
        read_prepared(root)


def test_read_empty_required_value(tmp_path, xrays):
    root = write_prepared(xrays, tmp_path / "ds")
    _edit_manifest(root, lambda m: m.assign(patient_id=["NaN"] + list(m["patient_id"][1:])))
    with pytest.raises(ValueError, match="patient_id.*cxr-p000-t0"):
        read_prepared(root)


def test_read_missing_image_file(tmp_path, xrays):
    root = write_prepared(xrays, tmp_path / "ds")
    (root / "images" / "cxr-p001-t1.png").unlink()
    with pytest.raises(FileNotFoundError, match="images/cxr-p001-t1.png"):
        read_prepared(root)


def test_read_mask_shape_mismatch(tmp_path, xrays):
    root = write_prepared(xrays, tmp_path / "ds")
    PILImage.fromarray(np.zeros((16, 32), np.uint8)).save(root / "masks" / "cxr-p002-t0.png")
    with pytest.raises(ValueError, match=r"images/cxr-p002-t0.png.*masks/cxr-p002-t0.png"):
        read_prepared(root)


def test_read_nan_in_volume(tmp_path, volumes):
    root = write_prepared(volumes, tmp_path / "ds")
    volume_id = volumes.meta["volume_id"].iloc[0]
    path = root / "volumes" / f"{volume_id}.nii.gz"
    data = np.asarray(nib.load(str(path)).dataobj).astype(np.float32)
    data[0, 0, 0] = np.nan
    nib.save(nib.Nifti1Image(data, np.eye(4)), str(path))
    with pytest.raises(ValueError, match=f"{volume_id}.nii.gz.*NaN"):
        read_prepared(root)


def _make_phantoms_main():
    path = Path(__file__).resolve().parents[2] / "data_scripts" / "make_phantoms.py"
    spec = importlib.util.spec_from_file_location("make_phantoms", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.main


def test_make_phantoms_script(tmp_path, capsys):
    main = _make_phantoms_main()
    assert main(["--out", str(tmp_path), "--size", "32", "--seed", "1"]) == 0
    printed = capsys.readouterr().out
    xray, cardiac = (
        read_prepared(tmp_path / "phantom_xray"),
        read_prepared(tmp_path / "phantom_cardiac_mri"),
    )
    assert str(tmp_path / "phantom_xray") in printed and "phantom_cardiac_mri" in printed
    assert xray.image_size == (32, 32) and len(xray) == 240
    assert xray.classes == ("background", "right_lung", "left_lung")
    assert cardiac.meta["volume_id"].nunique() == 24
    np.testing.assert_allclose(xray.images, make_chest_xrays(size=32, seed=1).images, atol=QUANTUM)
    assert main(["--out", str(tmp_path), "--kind", "xray", "--size", "32"]) == 1  # exists
    assert "overwrite" in capsys.readouterr().err
    assert main(["--out", str(tmp_path), "--kind", "xray", "--size", "32", "--overwrite"]) == 0
    assert len(read_prepared(tmp_path / "phantom_xray")) == 240
    with pytest.raises(SystemExit):
        main(["--out", str(tmp_path), "--kind", "ct"])


def test_open_prepared_by_path_or_name(tmp_path, xrays, monkeypatch):
    folder = write_prepared(xrays, tmp_path / "home" / "prepared" / "xr-32")
    assert len(open_prepared(folder)) == len(xrays)
    assert len(open_prepared("xr-32", home=tmp_path / "home")) == len(xrays)
    monkeypatch.setenv("MEDCL_DATA", str(tmp_path / "home"))
    assert open_prepared("xr-32").name == xrays.name
    with pytest.raises(FileNotFoundError, match="'nope-32' not found.*prepared"):
        open_prepared("nope-32")


def test_load_role_phantom_site_or_prepared_folder(tmp_path, xrays):
    from medcl_lite.data.prepared import load_role

    data, rows = load_role("phantom", xrays, "A")
    assert data is xrays and (xrays.meta.site.iloc[rows] == "A").all() and 0 < len(rows) <= len(xrays)
    folder = write_prepared(xrays, tmp_path / "xr")
    data, rows = load_role(str(folder), None, "A")
    assert len(rows) == len(data) == len(xrays)
    with pytest.raises(ValueError, match="needs the phantom"):
        load_role("phantom", None, "A")
