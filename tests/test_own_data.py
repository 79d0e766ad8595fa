"""Your own data, end to end: a folder in a generic layout -> ``medcl data prepare folder`` -> a
chapter under papermill with ``-p semi_data DIR`` (issue: "your own data").

The folders are written from the built-in phantoms in the two layouts a user already has: the
nnU-Net / Decathlon raw layout of NIfTI volumes (chapter 02, PCL) and a folder of 2-D PNG
images and masks with a ``meta.csv`` of patients and time points (chapter 01, CL-TCI).
"""

from __future__ import annotations

import json
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
from PIL import Image as PILImage

from medcl_lite import repro
from medcl_lite.data import catalog
from medcl_lite.data.phantoms import make_cardiac_volumes, make_chest_xrays
from medcl_lite.data.prepared import read_prepared

NOTEBOOKS = Path(__file__).resolve().parents[1] / "notebooks"


def write_nnunet(data, root: Path, unlabelled: int = 0) -> Path:
    """Each volume of ``data`` as ``imagesTr/<id>_0000.nii.gz`` + ``labelsTr/<id>.nii.gz`` (the
    last ``unlabelled`` volumes as ``imagesTs/`` without labels), with a v2 ``dataset.json``."""
    volumes = list(dict.fromkeys(data.meta["volume_id"]))
    for k, volume in enumerate(volumes):
        rows = np.flatnonzero(data.meta["volume_id"].to_numpy() == volume)
        rows = rows[np.argsort(data.meta["slice_index"].to_numpy()[rows])]
        first = data.meta.iloc[rows[0]]
        affine = np.diag([first["spacing_x"], first["spacing_y"], first["spacing_z"], 1.0])
        split = "Ts" if k >= len(volumes) - unlabelled else "Tr"
        pairs = [(f"images{split}/{volume}_0000.nii.gz", (data.images[rows] * 1000).astype(np.int16))]
        if split == "Tr":
            pairs.append((f"labelsTr/{volume}.nii.gz", data.masks[rows].astype(np.uint8)))
        for name, array in pairs:
            (root / name).parent.mkdir(parents=True, exist_ok=True)
            nib.save(nib.Nifti1Image(np.ascontiguousarray(array.transpose(2, 1, 0)), affine), str(root / name))
    labels = {name: value for value, name in enumerate(data.classes)}
    (root / "dataset.json").write_text(json.dumps({"channel_names": {"0": "MRI"}, "labels": labels,
                                                   "file_ending": ".nii.gz"}))  # fmt: skip
    return root


def write_two_d(data, root: Path, unlabelled_sites=()) -> Path:
    """``images/<id>.png`` (8-bit), ``masks/<id>.png`` (class indices; none for the images of
    ``unlabelled_sites``) and ``meta.csv`` (case, patient_id, time, site)."""
    (root / "images").mkdir(parents=True)
    (root / "masks").mkdir()
    lines = ["case,patient_id,time,site"]
    for k, row in data.meta.iterrows():
        PILImage.fromarray((data.images[k] * 255).astype(np.uint8)).save(root / "images" / f"{row.sample_id}.png")
        if row.site not in unlabelled_sites:
            PILImage.fromarray(data.masks[k]).save(root / "masks" / f"{row.sample_id}.png")
        lines.append(f"{row.sample_id},{row.patient_id},{row.time},{row.site}")
    (root / "meta.csv").write_text("\n".join(lines) + "\n")
    return root


def _smoke(chapter: str, tmp_path: Path, **params) -> dict:
    merged = repro.load_params([str(NOTEBOOKS / f"params/{chapter}/smoke.yaml")])
    merged.update(params)
    return merged


@pytest.mark.notebook
def test_nnunet_folder_through_pcl(tmp_path):
    phantom = make_cardiac_volumes(n_patients=10, sites=("A",), size=48, slices=(6, 8), seed=3)
    source = write_nnunet(phantom, tmp_path / "Dataset100_Heart", unlabelled=2)
    out = catalog.prepare("folder", source, out=tmp_path / "heart", size=64, progress=False)
    assert read_prepared(out).classes == phantom.classes
    params = _smoke("pcl", tmp_path, semi_data=str(out), pretrain_data=f"{out}-pool",
                    reproduction={"settings": ["semi"]})  # fmt: skip
    run = repro.reproduce("02_pcl", params, name="own", runs_dir=tmp_path / "runs", progress=False)
    executed = (run / "02_pcl.ipynb").read_text().replace("\\n", "\n")
    volumes = phantom.meta["volume_id"].drop_duplicates()
    labelled_slices = phantom.meta["volume_id"].isin(volumes.iloc[:8]).sum()
    assert f"semi      Dataset100_Heart: {labelled_slices} slices, 8 volumes, 8 patients" in executed
    assert f"pretrain  Dataset100_Heart: {len(phantom)} slices, 10 volumes, 10 patients" in executed
    assert (run / "results.csv").is_file()


@pytest.mark.notebook
def test_image_folder_through_cl_tci(tmp_path):
    phantom = make_chest_xrays(n_patients=12, n_times=3, sites=("A", "B"), size=64, seed=2)
    source = write_two_d(phantom, tmp_path / "my_xrays", unlabelled_sites=("B",))
    out = catalog.prepare("folder", source, out=tmp_path / "xrays", size=64, progress=False,
                          classes=list(phantom.classes))  # fmt: skip
    labelled, pool = read_prepared(out), read_prepared(tmp_path / "xrays-pool")
    assert set(labelled.meta["site"]) == {"A"} and len(pool) == len(phantom)
    assert labelled.meta.groupby("patient_id")["time"].nunique().max() == 3  # temporal pairs kept
    params = _smoke("cl_tci", tmp_path, semi_data=str(out), pretrain_data=str(tmp_path / "xrays-pool"),
                    reproduction={"settings": ["semi"]})  # fmt: skip
    run = repro.reproduce("01_cl_tci", params, name="own", runs_dir=tmp_path / "runs", progress=False)
    assert (run / "results.csv").is_file()


@pytest.mark.notebook
def test_a_set_too_small_stops_before_pretraining(tmp_path):
    phantom = make_cardiac_volumes(n_patients=3, sites=("A",), size=48, slices=(6, 6), seed=1)
    out = catalog.prepare("folder", write_nnunet(phantom, tmp_path / "three"), out=tmp_path / "three_p",
                          size=64, progress=False)  # fmt: skip
    params = _smoke("pcl", tmp_path, semi_data=str(out), pretrain_data=str(out),
                    reproduction={"settings": ["semi"], "n_folds": 2}, label_counts=[1, 6])  # fmt: skip
    with pytest.raises(Exception, match=r"too small.*need 6") as caught:
        repro.reproduce("02_pcl", params, name="small", runs_dir=tmp_path / "runs", progress=False)
    assert "check_finetune_set" in str(caught.value)  # raised by the data cell
    cells = json.loads((tmp_path / "runs" / "small" / "02_pcl.ipynb").read_text())["cells"]
    pretraining = [c for c in cells if "pretrained[name] = pretrain(cfg" in "".join(c["source"])]
    assert pretraining and all(c.get("execution_count") is None for c in pretraining)
