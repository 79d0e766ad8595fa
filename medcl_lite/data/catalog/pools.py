"""Temporal pretraining pools of chest X-rays: several studies per patient, no masks.

NIH ChestX-ray14, CheXpert and MIMIC-CXR-JPG. ``scan_<name>(source)`` reads the dataset's table
and says where each image should be; :func:`select_temporal` keeps the images of some views
(PA by default) of patients with at least ``min_times`` time points, the first ``max_patients``
patients by id; ``prepare_<name>`` reads those images one at a time into an unlabelled
:class:`SliceSet` whose ``time`` orders each patient's studies (CL-TCI's positives).
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from medcl_lite.data.catalog._common import Item, Scan, build_sliceset, read_table, source_folder
from medcl_lite.data.sliceset import SliceSet


def _find_table(source: Path, patterns: tuple[str, ...]) -> Path | None:
    for folder in (source, *sorted(p for p in source.iterdir() if p.is_dir())):
        for pattern in patterns:
            found = sorted(folder.glob(pattern))
            if found:
                return found[0]
    return None


def scan_nih_cxr14(source: str | Path) -> Scan:
    """``Data_Entry_2017*.csv`` and images ``images*/**/*.png`` (the 12 image archives)."""
    source = source_folder(source)
    csv = _find_table(source, ("Data_Entry_2017*.csv",))
    if csv is None:
        return Scan([f"no Data_Entry_2017.csv under {source} (or one folder below)"])
    columns = ["Image Index", "Follow-up #", "Patient ID", "View Position"]
    raw = read_table(csv, columns)
    files = {}
    for folder in [csv.parent, *sorted(csv.parent.iterdir())]:
        if folder.is_dir() and folder.name.lower().startswith("images"):
            files.update({p.name: p for p in folder.rglob("*.png")})
    problems = [] if files else [f"no images*/ folders with .png images next to {csv}"]
    table = pd.DataFrame(
        {
            "sample_id": raw["Image Index"].astype(str).str.removesuffix(".png"),
            "patient_id": "nih-" + raw["Patient ID"].astype(int).map("{:05d}".format),
            "time": raw["Follow-up #"].astype(int),
            "view": raw["View Position"].astype(str).str.upper(),
            "path": raw["Image Index"].astype(str).map(files.get),
        }
    )
    if "Finding Labels" in raw.columns:
        table["findings"] = raw["Finding Labels"].astype(str)
    notes = [f"{csv.name}: {len(table)} images listed, {table['path'].notna().sum()} found"]
    return Scan(problems, table=table, notes=notes)


def scan_chexpert(source: str | Path) -> Scan:
    """``train.csv`` (``Path`` like ``CheXpert-v1.0-small/train/patient00001/study1/
    view1_frontal.jpg``, ``Frontal/Lateral``, ``AP/PA``) with the images it names."""
    source = source_folder(source)
    csv = _find_table(source, ("train.csv",))
    if csv is None:
        return Scan(
            [f"no train.csv under {source} (or one folder below, e.g. CheXpert-v1.0-small/)"]
        )
    raw = read_table(csv, ["Path", "Frontal/Lateral", "AP/PA"])
    raw = raw[raw["Frontal/Lateral"].astype(str) == "Frontal"]
    parts = raw["Path"].astype(str).str.extract(r"(patient\d+)/study(\d+)/(view\d+_\w+)\.jpg$")
    bad = parts[0].isna()
    table = pd.DataFrame(
        {
            "sample_id": parts[0] + "_study" + parts[1] + "_" + parts[2],
            "patient_id": parts[0],
            "time": pd.to_numeric(parts[1]) - 1,  # study1 -> time 0
            "view": raw["AP/PA"].fillna("").astype(str).str.upper(),
            "path": [_chexpert_path(csv, p) for p in raw["Path"].astype(str)],
        }
    )[~bad]
    table["time"] = table["time"].astype(int)
    notes = [f"{csv.name}: {len(table)} frontal images listed"]
    if bad.any():
        notes.append(f"{int(bad.sum())} rows with an unexpected Path are left out")
    return Scan([], table=table, notes=notes)


def _chexpert_path(csv: Path, relative: str) -> Path:
    """``Path`` values start with the dataset folder (the folder holding train.csv)."""
    candidate = csv.parent.parent / relative
    if candidate.is_file():
        return candidate
    return csv.parent / Path(*Path(relative).parts[1:])


def scan_mimic_cxr(source: str | Path) -> Scan:
    """``mimic-cxr-2.0.0-metadata.csv(.gz)`` next to ``files/pXX/pSUBJECT/sSTUDY/DICOM_ID.jpg``."""
    source = source_folder(source)
    csv = _find_table(source, ("mimic-cxr-*-metadata.csv.gz", "mimic-cxr-*-metadata.csv"))
    if csv is None:
        return Scan([f"no mimic-cxr-2.0.0-metadata.csv(.gz) under {source} (or one folder below)"])
    columns = ["dicom_id", "subject_id", "study_id", "ViewPosition", "StudyDate", "StudyTime"]
    raw = read_table(csv, columns)
    problems = [] if (csv.parent / "files").is_dir() else [f"no files/ folder next to {csv}"]
    subject = raw["subject_id"].astype(int).astype(str)
    study = raw["study_id"].astype(int).astype(str)
    studies = raw.drop_duplicates("study_id").sort_values(
        ["subject_id", "StudyDate", "StudyTime", "study_id"]
    )
    rank = dict(zip(studies["study_id"], studies.groupby("subject_id").cumcount(), strict=True))
    table = pd.DataFrame(
        {
            "sample_id": raw["dicom_id"].astype(str),
            "patient_id": "p" + subject,
            "time": raw["study_id"].map(rank).astype(int),
            "view": raw["ViewPosition"].fillna("").astype(str).str.upper(),
            "path": [
                csv.parent / "files" / f"p{s[:2]}" / f"p{s}" / f"s{st}" / f"{d}.jpg"
                for s, st, d in zip(subject, study, raw["dicom_id"].astype(str), strict=True)
            ],
            "study_id": "s" + study,
        }
    )
    return Scan(problems, table=table, notes=[f"{csv.name}: {len(table)} images listed"])


def select_temporal(
    table: pd.DataFrame,
    name: str,
    views: tuple[str, ...] | list[str] = ("PA",),
    min_times: int = 2,
    max_patients: int | None = 1000,
    allow_missing: bool = False,
) -> tuple[list[Item], dict]:
    """Images of the ``views`` of the first ``max_patients`` patients (by id) that have at least
    ``min_times`` distinct time points; returns the items and a summary for ``info``.

    Raises:
        ValueError: bad options, no image left, or listed images missing (unless
            ``allow_missing``, which keeps to the images present).
    """
    views = tuple(str(v).upper() for v in ([views] if isinstance(views, str) else views))
    if not isinstance(min_times, int) or min_times < 1:
        raise ValueError(f"min_times must be an integer >= 1, got {min_times!r}")
    if max_patients is not None and (not isinstance(max_patients, int) or max_patients < 1):
        raise ValueError(f"max_patients must be None or an integer >= 1, got {max_patients!r}")
    chosen = table[table["view"].isin(views)]
    if chosen.empty:
        present = sorted(table["view"].unique())[:10]
        raise ValueError(
            f"{name}: no image with a view in {list(views)} (views present: {present})"
        )
    exists = chosen["path"].map(lambda p: p is not None and Path(p).is_file())
    if not exists.all() and not allow_missing:
        missing = chosen.loc[~exists, "sample_id"].tolist()
        raise ValueError(
            f"{name}: {len(missing)} of {len(chosen)} listed {'/'.join(views)} images are missing"
            f" (e.g. {missing[:3]}); download them, or pass allow_missing=True"
            " (CLI: -o allow_missing=true) to prepare from the images present"
        )
    chosen = chosen[exists]
    n_times = chosen.groupby("patient_id")["time"].nunique()
    patients = sorted(n_times.index[n_times >= min_times])[:max_patients]
    if not patients:
        raise ValueError(f"{name}: no patient has {min_times} or more time points in {list(views)}")
    chosen = chosen[chosen["patient_id"].isin(patients)]
    chosen = chosen.sort_values(["patient_id", "time", "sample_id"])
    extra_columns = [
        c for c in chosen.columns if c not in ("sample_id", "patient_id", "time", "path")
    ]
    items = [
        Item(
            sample_id=row["sample_id"],
            patient_id=row["patient_id"],
            time=int(row["time"]),
            image=Path(row["path"]),
            extra={c: row[c] for c in extra_columns},
        )
        for _, row in chosen.iterrows()
    ]
    summary = {
        "views": list(views),
        "min_times": min_times,
        "max_patients": max_patients,
        "patients": len(patients),
        "images": len(items),
        "listed_images_missing": int((~exists).sum()),
    }
    return items, summary


def _prepare_pool(name: str, scan: Scan, source: Path, size: int, progress: bool, **options):
    scan.raise_problems(name, source)
    items, summary = select_temporal(scan.table, name, **options)
    return build_sliceset(
        items,
        size,
        name=name,
        classes=("background",),
        info={"selection": summary, "notes": scan.notes},
        progress=progress,
    )


def prepare_nih_cxr14(
    source: str | Path,
    size: int = 256,
    views: tuple[str, ...] = ("PA",),
    min_times: int = 2,
    max_patients: int | None = 1000,
    allow_missing: bool = False,
    progress: bool = True,
) -> SliceSet:
    """NIH ChestX-ray14 temporal pool: time = ``Follow-up #``; no masks (see
    :func:`select_temporal`)."""
    source = source_folder(source)
    return _prepare_pool(
        "nih-cxr14",
        scan_nih_cxr14(source),
        source,
        size,
        progress,
        views=views,
        min_times=min_times,
        max_patients=max_patients,
        allow_missing=allow_missing,
    )


def prepare_chexpert(
    source: str | Path,
    size: int = 256,
    views: tuple[str, ...] = ("PA",),
    min_times: int = 2,
    max_patients: int | None = 1000,
    allow_missing: bool = False,
    progress: bool = True,
) -> SliceSet:
    """CheXpert temporal pool (frontal images of train.csv): patient from the path, time = study
    number - 1; no masks."""
    source = source_folder(source)
    return _prepare_pool(
        "chexpert",
        scan_chexpert(source),
        source,
        size,
        progress,
        views=views,
        min_times=min_times,
        max_patients=max_patients,
        allow_missing=allow_missing,
    )


def prepare_mimic_cxr(
    source: str | Path,
    size: int = 256,
    views: tuple[str, ...] = ("PA",),
    min_times: int = 2,
    max_patients: int | None = 1000,
    allow_missing: bool = False,
    progress: bool = True,
) -> SliceSet:
    """MIMIC-CXR-JPG temporal pool: time = rank of the study by StudyDate, StudyTime within the
    subject; no masks."""
    source = source_folder(source)
    return _prepare_pool(
        "mimic-cxr",
        scan_mimic_cxr(source),
        source,
        size,
        progress,
        views=views,
        min_times=min_times,
        max_patients=max_patients,
        allow_missing=allow_missing,
    )
