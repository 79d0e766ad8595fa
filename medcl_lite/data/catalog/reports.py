"""Chest X-rays with their radiology reports (LRCLR chapter): IU X-ray (OpenI) and MIMIC-CXR.

Both become the format of the built-in report phantom (:func:`make_chest_xray_reports`): one
frontal image per study, a ``report`` text column (FINDINGS + IMPRESSION) and one bool column per
chapter finding (:data:`FINDINGS`), so the LRCLR notebook reads real data unchanged.

- **IU X-ray** (Demner-Fushman et al. 2016): ``ecgen-radiology/*.xml`` reports whose
  ``parentImage`` ids name the PNGs. The collection states no view, and the captions read
  "Xray Chest PA and Lateral" for both images, so the frontal image is told from the pixels: a
  frontal film is close to left-right mirror symmetric (spine in the middle, two lungs), a lateral
  one is not (:func:`mirror_symmetry`). The most symmetric image of each report is kept. Limits:
  a report with a single image keeps it even if it is a lateral; a rotated frontal film scores
  lower. Finding columns are **weak labels** from :func:`keyword_labels`.
- **MIMIC-CXR** (Johnson et al. 2019): MIMIC-CXR-JPG images (``ViewPosition`` PA/AP) joined to
  the study's report ``files/pXX/pSUBJECT/sSTUDY.txt`` (:func:`report_sections`); the finding
  columns come from ``mimic-cxr-2.0.0-chexpert.csv.gz`` when present (1 -> True; 0, -1 and blank
  -> False), else from :func:`keyword_labels`.
"""

from __future__ import annotations

import re
import xml.etree.ElementTree as ET
import zipfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from medcl_lite.data.catalog import pools
from medcl_lite.data.catalog._common import (
    Item,
    Scan,
    build_sliceset,
    find_files,
    normalise,
    pad_to_square,
    read_array,
    read_table,
    resize_image,
    source_folder,
)
from medcl_lite.data.phantoms.chest_xray_reports import FINDINGS
from medcl_lite.data.sliceset import SliceSet
from medcl_lite.text import split_sentences

#: The chapter's findings, one bool meta column each (as the report phantom's ``FINDINGS``).
# FINDINGS: the label set of the report phantom (medcl_lite.data.phantoms.FINDINGS), so real and
# phantom data carry the same columns.

#: Keyword rules of :func:`keyword_labels`: a finding is present when one of its patterns
#: matches a clause outside a negation's scope.
KEYWORDS = {
    "opacity": (r"opacit(?:y|ies)", r"consolidat(?:ion|ions|ed)", r"air[- ]?space disease"),
    "nodule": (r"nodules?\b",),
    "cardiomegaly": (
        r"cardiomegaly",
        r"(?:heart|cardiac silhouette)(?: size)? (?:is|are|appears|remains) "
        r"(?:(?:mildly|moderately|markedly|severely|slightly) )?enlarged",
        r"enlarged (?:heart|cardiac silhouette)",
    ),
    "effusion": (r"effusions?\b",),
}
#: A negation cue before the term in the same clause ("no", "without", "negative for" ...).
NEGATION_CUES = r"\b(?:no|not|without|negative for|free of|clear of|resolution of)\b"
#: A negation after the term ("the effusion has resolved").
POST_NEGATION = r"\b(?:resolved|is absent|are absent)\b"
#: Phrases that look like negations but are not ("no change in the effusion").
PSEUDO_NEGATIONS = r"\bno (?:significant |interval |appreciable )?(?:change|increase|decrease)\b"
#: Words that end a negation's scope inside a sentence.
_CLAUSE_BREAK = re.compile(r",? but |,? however|,? although |;|, with ")

#: CheXpert columns (mimic-cxr-2.0.0-chexpert.csv) behind each finding; any of them = 1 is True.
CHEXPERT_COLUMNS = {
    "opacity": ("Lung Opacity", "Consolidation"),
    "nodule": ("Lung Lesion",),
    "cardiomegaly": ("Cardiomegaly",),
    "effusion": ("Pleural Effusion",),
}
WEAK_LABELS = (
    "weak labels (not radiologist labels): keyword rules with negation handling on the report"
    " text (medcl_lite.data.catalog.reports.keyword_labels)"
)


# --- report text ------------------------------------------------------------------------------


@dataclass(frozen=True)
class IuReport:
    """One IU X-ray report: its id, FINDINGS and IMPRESSION texts, and its image ids."""

    report_id: str
    findings: str
    impression: str
    images: tuple[str, ...]

    @property
    def text(self) -> str:
        """FINDINGS then IMPRESSION, each ending in a stop ('' when both are empty)."""
        return join_sections(self.findings, self.impression)


def join_sections(*parts: str) -> str:
    """Non-empty texts joined by a space, each ending with a full stop."""
    cleaned = [" ".join(p.split()) for p in parts if p and p.strip()]
    return " ".join(p if p[-1] in ".!?" else p + "." for p in cleaned)


def parse_iu_report(xml_text: str, fallback_id: str = "") -> IuReport:
    """Parse one OpenI ``ecgen-radiology`` XML report (Demner-Fushman et al. 2016).

    Texts come from ``AbstractText`` with ``Label`` FINDINGS / IMPRESSION, the report id from
    ``uId/@id`` (else ``fallback_id``), the image ids from ``parentImage/@id`` in order.

    Raises:
        ValueError: malformed XML, or no report id.
    """
    try:
        root = ET.fromstring(xml_text)
    except ET.ParseError as error:
        raise ValueError(f"report {fallback_id or '?'}: malformed XML: {error}") from error
    sections = {}
    for node in root.iter("AbstractText"):
        label = node.get("Label", "").strip().upper()
        sections[label] = " ".join("".join(node.itertext()).split())
    uid = root.find(".//uId")
    report_id = (uid.get("id", "") if uid is not None else "") or fallback_id
    if not report_id:
        raise ValueError("IU report without a uId and without a fallback id")
    images = tuple(n.get("id", "") for n in root.iter("parentImage") if n.get("id"))
    return IuReport(report_id, sections.get("FINDINGS", ""), sections.get("IMPRESSION", ""), images)


_HEADING = re.compile(r"^\s*([A-Z][A-Z /&()-]*[A-Z)])\s*:", re.MULTILINE)


def report_sections(text: str) -> dict[str, str]:
    """Sections of a free-text report (MIMIC-CXR ``sSTUDY.txt``) by their UPPER-CASE heading.

    A heading is an upper-case phrase at the start of a line followed by ``:`` ("FINDINGS:",
    "IMPRESSION:"); its section runs to the next heading. Whitespace is collapsed.
    """
    matches = list(_HEADING.finditer(text))
    sections = {}
    for match, following in zip(matches, [*matches[1:], None], strict=True):
        end = following.start() if following is not None else len(text)
        sections[match.group(1).strip()] = " ".join(text[match.end() : end].split())
    return sections


def keyword_labels(text: str) -> dict[str, bool]:
    """Weak finding labels of a report by keyword rules with negation (a tiny NegEx).

    Each sentence (:func:`medcl_lite.text.split_sentences`) is cut into clauses at "but",
    "however", "although", ";" and ", with". A finding is True when one of its
    :data:`KEYWORDS` matches a clause and the clause has no :data:`NEGATION_CUES` before the
    match and no :data:`POST_NEGATION` after it; :data:`PSEUDO_NEGATIONS` ("no change in") are
    ignored. Hedged mentions ("possible effusion") count as present. Not radiologist labels.
    """
    labels = dict.fromkeys(FINDINGS, False)
    for sentence in split_sentences(text.lower()):
        for clause in _CLAUSE_BREAK.split(sentence):
            clause = re.sub(PSEUDO_NEGATIONS, " ", clause)
            for finding, patterns in KEYWORDS.items():
                labels[finding] |= _affirmed(clause, patterns)
    return labels


def _affirmed(clause: str, patterns: tuple[str, ...]) -> bool:
    """Whether a pattern matches ``clause`` outside a negation's scope."""
    for pattern in patterns:
        for match in re.finditer(pattern, clause):
            before, after = clause[: match.start()], clause[match.end() :]
            if not re.search(NEGATION_CUES, before) and not re.search(POST_NEGATION, after):
                return True
    return False


# --- frontal views ----------------------------------------------------------------------------


def mirror_symmetry(image: np.ndarray, size: int = 64) -> float:
    """Left-right mirror symmetry of a radiograph ``[H, W]``: the Pearson correlation of the
    image (min-max normalised, padded to a square, resized to ``size``) with its mirror image.

    Frontal chest films score high (the spine in the middle, a lung on each side), lateral
    films low. A heuristic, not a view classifier.
    """
    small = resize_image(pad_to_square(normalise(image, Path("image"))), size).astype(np.float64)
    a, b = small.ravel(), small[:, ::-1].ravel()
    a, b = a - a.mean(), b - b.mean()
    return float((a * b).sum() / np.sqrt((a * a).sum() * (b * b).sum()))


def most_frontal(scores: dict[str, float]) -> str:
    """The image id with the highest mirror symmetry (ties: the first id in sorted order)."""
    if not scores:
        raise ValueError("most_frontal: no images to choose from")
    return max(sorted(scores), key=lambda k: scores[k])


# --- IU X-ray ---------------------------------------------------------------------------------


def scan_iu_xray(source: str | Path) -> Scan:
    """Reports ``**/*.xml`` (NLMCXR_reports.tgz: ``ecgen-radiology/N.xml``) and images
    ``**/*.png`` (NLMCXR_png.tgz) anywhere below ``source``; one item per listed image found.

    Reports without text or without images, and listed images that are missing, are counted in
    the notes (the OpenI release is known not to match one-to-one), not problems.
    """
    source = source_folder(source)
    xml_files, pngs = find_files(source, [".xml"]), find_files(source, [".png"])
    problems = []
    if not xml_files:
        problems.append(f"no report XML files under {source} (unpack NLMCXR_reports.tgz there)")
    if not pngs:
        problems.append(f"no .png images under {source} (unpack NLMCXR_png.tgz there)")
    if problems:
        return Scan(problems)
    paths = {p.stem: p for p in pngs}
    items, counts = [], {"no_text": 0, "no_images": 0, "missing_images": 0}
    for path in xml_files:
        report = parse_iu_report(path.read_text(encoding="utf-8", errors="replace"), path.stem)
        if not report.text or not report.images:
            counts["no_text" if not report.text else "no_images"] += 1
            continue
        counts["missing_images"] += sum(i not in paths for i in report.images)
        items += [_iu_item(report, paths[i]) for i in report.images if i in paths]
    notes = [
        f"{len(xml_files)} reports, {len(pngs)} images: {counts['no_text']} reports without"
        f" FINDINGS/IMPRESSION and {counts['no_images']} without images skipped;"
        f" {counts['missing_images']} listed images not found"
    ]
    if not items:
        problems.append(f"no report under {source} has text and an image found as .png")
    return Scan(problems, items, notes=notes)


def _iu_item(report: IuReport, image: Path) -> Item:
    return Item(
        sample_id=image.stem,
        patient_id=report.report_id,
        time=0,
        image=image,
        extra={"site": "IU", "report": report.text, **keyword_labels(report.text)},
    )


def select_frontal(items: list[Item], score: Callable[[Path], float]) -> list[Item]:
    """The most symmetric image (``score``) of each patient (report); its score goes into the
    ``frontal_score`` column, the number of images of the report into ``n_views``."""
    by_report: dict[str, list[Item]] = {}
    for item in items:
        by_report.setdefault(item.patient_id, []).append(item)
    chosen = []
    for group in by_report.values():
        scores = {item.sample_id: score(item.image) for item in group}
        best = next(i for i in group if i.sample_id == most_frontal(scores))
        best.extra.update({"frontal_score": scores[best.sample_id], "n_views": len(group)})
        chosen.append(best)
    return chosen


def prepare_iu_xray(
    source: str | Path,
    size: int = 256,
    views: str = "frontal",
    max_reports: int | None = None,
    progress: bool = True,
) -> SliceSet:
    """IU X-ray (OpenI) with reports -> SliceSet: one image per report (``views="frontal"``, the
    most mirror-symmetric one) or every image (``views="all"``), ``report`` text, weak labels.

    Raises:
        ValueError: bad ``views`` / ``max_reports``, or a source without usable reports.
    """
    if views not in ("frontal", "all"):
        raise ValueError(f"views must be 'frontal' or 'all', got {views!r}")
    _check_max(max_reports, "max_reports")
    source = source_folder(source)
    found = scan_iu_xray(source)
    found.raise_problems("iu-xray", source)
    items = found.items
    if max_reports is not None:
        keep = sorted({i.patient_id for i in items}, key=_natural)[:max_reports]
        items = [i for i in items if i.patient_id in set(keep)]
    if views == "frontal":
        items = select_frontal(items, lambda path: mirror_symmetry(read_array(path)))
    data = build_sliceset(
        items,
        size,
        name="iu-xray",
        classes=("background",),
        info={"views": views, "labels": WEAK_LABELS, "notes": found.notes},
        progress=progress,
    )
    return _with_bool_findings(data)


def _natural(text: str) -> tuple:
    """Sort key with numbers compared as numbers ("CXR2" < "CXR10")."""
    return tuple(int(t) if t.isdigit() else t for t in re.split(r"(\d+)", text))


def _check_max(value: int | None, name: str) -> None:
    if value is not None and (not isinstance(value, int) or isinstance(value, bool) or value < 1):
        raise ValueError(f"{name} must be None or an integer >= 1, got {value!r}")


def _with_bool_findings(data: SliceSet) -> SliceSet:
    """Finding columns as bool (written and read back as bool by the prepared format)."""
    for finding in FINDINGS:
        data.meta[finding] = data.meta[finding].astype(bool)
    return data


# --- MIMIC-CXR with reports -------------------------------------------------------------------

REPORTS_ZIP = "mimic-cxr-reports.zip"
_CHEXPERT_CSV = ("mimic-cxr-*-chexpert.csv.gz", "mimic-cxr-*-chexpert.csv")


def scan_mimic_cxr_reports(source: str | Path) -> Scan:
    """MIMIC-CXR-JPG (as :func:`pools.scan_mimic_cxr`) plus the reports: ``sSTUDY.txt`` next to
    each ``files/pXX/pSUBJECT/sSTUDY/`` folder (mimic-cxr-reports.zip unpacked into the same
    folder) or the zip itself; the CheXpert label table is optional. One item per study: its
    first frontal image (PA before AP)."""
    return _scan_mimic(source)[0]


def _scan_mimic(source: str | Path) -> tuple[Scan, pd.DataFrame | None, Path]:
    """The scan, the image table of :func:`pools.scan_mimic_cxr` and the folder holding it."""
    source = source_folder(source)
    images = pools.scan_mimic_cxr(source)
    problems = list(images.problems)
    if images.table is None:
        return Scan([*problems, _no_reports(source)]), None, source
    base = _mimic_base(images.table, source)
    items = mimic_study_items(images.table, ("PA", "AP"))
    if _report_reader(base, items) is None:
        problems.append(_no_reports(base))
    labels = _find_chexpert(base)
    notes = [
        *images.notes,
        f"{len(items)} studies with a PA/AP image",
        f"labels: {labels.name}" if labels else f"labels: no {_CHEXPERT_CSV[0]}; keyword rules",
    ]
    return Scan(problems, items, notes=notes), images.table, base


def _no_reports(folder: Path) -> str:
    return (
        f"no MIMIC-CXR reports: neither files/pXX/pSUBJECT/sSTUDY.txt next to the image folders"
        f" nor {REPORTS_ZIP} in {folder} (get it from https://physionet.org/content/mimic-cxr/)"
    )


def _mimic_base(table: pd.DataFrame, source: Path) -> Path:
    """The folder holding the metadata table and ``files/`` (paths are
    ``base/files/pXX/pSUBJECT/sSTUDY/DICOM.jpg``)."""
    return Path(table["path"].iloc[0]).parents[4] if len(table) else source


def mimic_study_items(table: pd.DataFrame, views: tuple[str, ...]) -> list[Item]:
    """One item per study: its first image in ``views`` order, then by dicom id."""
    rank = {view: i for i, view in enumerate(views)}
    chosen = table[table["view"].isin(views)].assign(rank=lambda t: t["view"].map(rank))
    chosen = chosen.sort_values(["patient_id", "time", "study_id", "rank", "sample_id"])
    chosen = chosen.drop_duplicates("study_id")
    return [
        Item(
            sample_id=row.sample_id,
            patient_id=row.patient_id,
            time=int(row.time),
            image=Path(row.path),
            extra={"site": "MIMIC", "study_id": row.study_id, "view": row.view},
        )
        for row in chosen.itertuples()
    ]


def _report_reader(base: Path, items: list[Item]) -> Callable[[Item], str | None] | None:
    """``reader(item) -> report text or None``; None when no report source is found."""
    archive = base / REPORTS_ZIP
    if archive.is_file():
        zf = zipfile.ZipFile(archive)  # kept open by the reader; closed when it is collected
        names = {"/".join(Path(n).parts[-2:]): n for n in zf.namelist() if n.endswith(".txt")}

        def from_zip(item: Item) -> str | None:
            name = names.get(f"{item.patient_id}/{item.extra['study_id']}.txt")
            return None if name is None else zf.read(name).decode("utf-8", errors="replace")

        return from_zip

    def from_folder(item: Item) -> str | None:
        path = item.image.parent.with_suffix(".txt")
        return path.read_text(encoding="utf-8", errors="replace") if path.is_file() else None

    if any(item.image.parent.with_suffix(".txt").is_file() for item in items[:200]):
        return from_folder
    return None


def _find_chexpert(base: Path) -> Path | None:
    for pattern in _CHEXPERT_CSV:
        found = sorted(base.glob(pattern))
        if found:
            return found[0]
    return None


def chexpert_findings(table: pd.DataFrame) -> pd.DataFrame:
    """Finding columns per ``study_id`` ("s<id>") from the MIMIC-CXR CheXpert labels:
    True where a :data:`CHEXPERT_COLUMNS` column is 1; 0 (negative), -1 (uncertain) and blank
    (not mentioned) are False."""
    missing = sorted({c for cols in CHEXPERT_COLUMNS.values() for c in cols} - set(table.columns))
    if missing or "study_id" not in table.columns:
        raise ValueError(f"CheXpert label table lacks columns {missing or ['study_id']}")
    out = pd.DataFrame(index="s" + table["study_id"].astype(int).astype(str))
    for finding, columns in CHEXPERT_COLUMNS.items():
        out[finding] = (table[list(columns)].to_numpy() == 1).any(axis=1)
    return out[~out.index.duplicated()]


def prepare_mimic_cxr_reports(
    source: str | Path,
    size: int = 256,
    views: tuple[str, ...] = ("PA", "AP"),
    max_studies: int | None = 1000,
    labels: str = "auto",
    allow_missing: bool = False,
    progress: bool = True,
) -> SliceSet:
    """MIMIC-CXR-JPG with reports -> SliceSet: one frontal image per study (``views`` in order of
    preference), ``report`` = FINDINGS + IMPRESSION (studies with neither are skipped), time =
    study rank, finding columns from CheXpert (``labels="chexpert"``; ``"auto"`` when the table
    is there) or keyword rules (``"keywords"``). The first ``max_studies`` studies by patient.

    Raises:
        ValueError: bad options, layout problems, missing images (unless ``allow_missing``).
    """
    views = tuple(str(v).upper() for v in ([views] if isinstance(views, str) else views))
    if labels not in ("auto", "chexpert", "keywords"):
        raise ValueError(f"labels must be 'auto', 'chexpert' or 'keywords', got {labels!r}")
    _check_max(max_studies, "max_studies")
    source = source_folder(source)
    found, table, base = _scan_mimic(source)
    found.raise_problems("mimic-cxr-reports", source)
    items = _present(mimic_study_items(table, views), allow_missing)
    csv = _find_chexpert(base) if labels != "keywords" else None
    if labels == "chexpert" and csv is None:
        raise ValueError(f"labels='chexpert' but no {_CHEXPERT_CSV[0]} in {base}")
    findings = chexpert_findings(read_table(csv, ["study_id"])) if csv else None
    items, skipped = _with_reports(items, _report_reader(base, items), findings, max_studies)
    data = build_sliceset(
        items,
        size,
        name="mimic-cxr-reports",
        classes=("background",),
        info={
            "views": list(views),
            "labels": f"CheXpert labeler ({csv.name}): 1 -> True; 0, -1, blank -> False"
            if csv
            else WEAK_LABELS,
            "studies_without_report_text": skipped,
            "notes": found.notes,
        },
        progress=progress,
    )
    return _with_bool_findings(data)


def _present(items: list[Item], allow_missing: bool) -> list[Item]:
    missing = [i.sample_id for i in items if not i.image.is_file()]
    if missing and not allow_missing:
        raise ValueError(
            f"mimic-cxr-reports: {len(missing)} of {len(items)} chosen images are missing (e.g."
            f" {missing[:3]}); download them, or pass allow_missing=True (CLI: -o"
            " allow_missing=true) to prepare from the images present"
        )
    return [i for i in items if i.image.is_file()]


def _with_reports(items, reader, findings, max_studies) -> tuple[list[Item], int]:
    """Items with their ``report`` and finding columns, up to ``max_studies``; and the number
    of studies skipped for lack of FINDINGS / IMPRESSION text."""
    kept, skipped = [], 0
    for item in items:
        if max_studies is not None and len(kept) >= max_studies:
            break
        sections = report_sections(reader(item) or "")
        text = join_sections(sections.get("FINDINGS", ""), sections.get("IMPRESSION", ""))
        if not text:
            skipped += 1
            continue
        study = item.extra["study_id"]
        if findings is not None and study in findings.index:
            labels = findings.loc[study].to_dict()
        elif findings is not None:
            labels = dict.fromkeys(FINDINGS, False)
        else:
            labels = keyword_labels(text)
        item.extra.update({"report": text, **{k: bool(v) for k, v in labels.items()}})
        kept.append(item)
    return kept, skipped
