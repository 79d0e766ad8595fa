"""Real anatomy end to end: prepare -> pretrain -> export -> fine-tune -> Dice on a real MRI.

No registry package ships a multi-patient labelled medical dataset, but nilearn ships (inside its
wheel, nothing downloaded) the MNI ICBM152 2009a nonlinear symmetric template: a real T1 MRI, the
average of 152 adult brains registered together, with its grey- and white-matter tissue maps
(Fonov et al., NeuroImage 2011). Its labels are real tissue segmentations of real images: grey
matter where the grey-matter probability is at least 0.5, white matter likewise.

The template is one brain, so the "cases" of the nnU-Net folder written here are interleaved
axial slices of it (case k holds slices k, k + n, k + 2n ...). Neighbouring slices are alike:
the Dice below measures that the whole pipeline works on real images and real labels, not how
well a model generalises to new patients.
"""

from __future__ import annotations

import json
from importlib import resources
from pathlib import Path

import nibabel as nib
import numpy as np

from medcl_lite.data import catalog
from medcl_lite.data.prepared import read_prepared
from medcl_lite.export import export_encoder
from medcl_lite.train import FinetuneConfig, PretrainConfig, evaluate, finetune, pretrain

TEMPLATE = "mni_icbm152_{}_tal_nlin_sym_09a_converted.nii.gz"
STEP_MM = 3  # 1 mm template -> every 3rd voxel
N_CASES = 6
CLASSES = ("background", "grey_matter", "white_matter")


def _template(kind: str) -> np.ndarray:
    """One of nilearn's packaged template volumes (``t1``, ``gm``, ``wm``), ``[X, Y, Z]``."""
    path = resources.files("nilearn.datasets") / "data" / TEMPLATE.format(kind)
    with resources.as_file(path) as file:
        return np.asarray(nib.load(str(file)).dataobj, dtype=np.float32)[::STEP_MM, ::STEP_MM, ::STEP_MM]


def write_mni_cases(root: Path) -> Path:
    """The template as an nnU-Net raw folder of ``N_CASES`` interleaved axial cases."""
    t1, gm, wm = (_template(k) for k in ("t1", "gm", "wm"))
    labels = np.zeros(t1.shape, np.uint8)
    labels[(gm >= 0.5) & (gm >= wm)] = 1
    labels[(wm >= 0.5) & (wm > gm)] = 2
    brain = np.flatnonzero(labels.any(axis=(0, 1)))
    z = np.arange(brain[0], brain[-1] + 1)
    affine = np.diag([STEP_MM, STEP_MM, STEP_MM * N_CASES, 1.0])
    for k in range(N_CASES):
        for folder, name, volume in (("imagesTr", f"mni_{k}_0000", t1), ("labelsTr", f"mni_{k}", labels)):
            (root / folder).mkdir(parents=True, exist_ok=True)
            nib.save(nib.Nifti1Image(np.ascontiguousarray(volume[:, :, z[k::N_CASES]]), affine),
                     str(root / folder / f"{name}.nii.gz"))  # fmt: skip
    description = {"channel_names": {"0": "T1"}, "labels": {c: i for i, c in enumerate(CLASSES)}}
    (root / "dataset.json").write_text(json.dumps(description))
    return root


def test_mni_template_prepare_pretrain_finetune_dice(tmp_path):
    out = catalog.prepare("folder", write_mni_cases(tmp_path / "mni"), out=tmp_path / "mni_p",
                          size=64, progress=False)  # fmt: skip
    data = read_prepared(out)
    assert data.classes == CLASSES and data.meta["volume_id"].nunique() == N_CASES
    assert {1, 2} <= set(np.unique(data.masks))
    # PCL's positional pairs on the real slices, then the encoder leaves as a plain smp file
    result = pretrain(PretrainConfig(pairing="positional", threshold=0.1, max_epochs=2, batch_size=16,
                                     warmup_epochs=0, proj_dim=32, out_dir=str(tmp_path / "pcl"),
                                     progress=False), data)  # fmt: skip
    assert result.history["epoch"].nunique() == 2 and np.isfinite(result.history["loss"]).all()
    encoder = export_encoder(tmp_path / "pcl", tmp_path / "encoder.pt")
    volumes = data.meta["volume_id"].to_numpy()
    train = np.flatnonzero(np.isin(volumes, ["mni_0", "mni_1", "mni_2"]))
    val = np.flatnonzero(volumes == "mni_3")
    test = np.flatnonzero(np.isin(volumes, ["mni_4", "mni_5"]))
    scores = {}
    for init in ("random", "pretrained"):
        cfg = FinetuneConfig(init=init, pretrained=str(encoder) if init == "pretrained" else "",
                             max_steps=60, batch_size=8, eval_every=20, progress=False)  # fmt: skip
        fitted = finetune(cfg, data, train, val, test)
        metrics, pred = evaluate(fitted.model, data, test)
        scores[init] = metrics
        assert pred.shape == data.masks[test].shape
    print({init: round(m["dice_volume"], 3) for init, m in scores.items()})
    for init, metrics in scores.items():
        # all-background scores 0 and chance far less: both tissues are found on unseen slices
        assert metrics["dice_volume"] > 0.6, (init, metrics)
