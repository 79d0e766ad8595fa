"""Built-in synthetic datasets (phantoms): chest X-rays over time, cardiac and abdominal volumes."""

from __future__ import annotations

from pathlib import Path

from medcl_lite.data.phantoms.abdomen import (
    ABDOMEN_CLASSES,
    ABDOMEN_SITES,
    make_abdominal_volumes,
)
from medcl_lite.data.phantoms.cardiac import CARDIAC_SITES, make_cardiac_volumes
from medcl_lite.data.phantoms.chest_xray import XRAY_SITES, make_chest_xrays
from medcl_lite.data.phantoms.chest_xray_reports import FINDINGS, make_chest_xray_reports

__all__ = [
    "ABDOMEN_CLASSES",
    "ABDOMEN_SITES",
    "CARDIAC_SITES",
    "FINDINGS",
    "PHANTOM_KINDS",
    "XRAY_SITES",
    "make_abdominal_volumes",
    "make_cardiac_volumes",
    "make_chest_xray_reports",
    "make_chest_xrays",
    "make_phantom",
    "write_phantoms",
]

#: ``kind`` -> what :func:`write_phantoms` writes for it (``medcl data list`` prints these).
PHANTOM_KINDS = {
    "xray": "chest X-rays, 60 patients x 4 time points, sites A/B/C -> phantom_xray/",
    "cardiac": "cardiac short-axis MRI volumes, 24 patients, sites A/B -> phantom_cardiac_mri/",
    "abdomen": "abdominal CT volumes (liver, spleen, kidneys, stomach), 24 patients, sites A/B"
    " -> phantom_abdomen_ct/",
    "all": "all of the above",
}
_FOLDERS = {
    "xray": "phantom_xray",
    "cardiac": "phantom_cardiac_mri",
    "abdomen": "phantom_abdomen_ct",
}


def make_phantom(kind: str, size: int = 128, seed: int = 0):
    """The default phantom of one ``kind`` (``"xray"`` | ``"cardiac"`` (MRI) | ``"abdomen"``) as a
    :class:`~medcl_lite.data.sliceset.SliceSet`, images ``[N, size, size]``."""
    makers = {
        "xray": lambda: make_chest_xrays(size=size, seed=seed),
        "cardiac": lambda: make_cardiac_volumes(size=size, seed=seed, modality="mri"),
        "abdomen": lambda: make_abdominal_volumes(size=size, seed=seed),
    }
    if kind not in makers:
        raise ValueError(f"phantom kind must be one of {sorted(makers)}, got {kind!r}")
    return makers[kind]()


def write_phantoms(
    out: str | Path, kind: str = "all", size: int = 128, seed: int = 0, overwrite: bool = False
) -> list[Path]:
    """Generate the default phantoms and write them in the prepared format under ``out``.

    ``kind="xray"`` writes ``out/phantom_xray``, ``"cardiac"`` ``out/phantom_cardiac_mri``,
    ``"abdomen"`` ``out/phantom_abdomen_ct``, ``"all"`` all three (see
    :mod:`medcl_lite.data.prepared`). Returns the folders written.
    """
    from medcl_lite.data.prepared import write_prepared

    if kind not in PHANTOM_KINDS:
        raise ValueError(f"kind must be one of {sorted(PHANTOM_KINDS)}, got {kind!r}")
    kinds = list(_FOLDERS) if kind == "all" else [kind]
    out = Path(out)
    return [
        write_prepared(make_phantom(k, size, seed), out / _FOLDERS[k], overwrite=overwrite)
        for k in kinds
    ]
