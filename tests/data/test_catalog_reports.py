"""Tests of the report datasets (IU X-ray, MIMIC-CXR with reports): parsing, weak labels, the
frontal-view heuristic, download + prepare from a local server, check and prepare of MIMIC.

Nothing touches the internet: archives are served from tmp_path on 127.0.0.1.
"""

from __future__ import annotations

import dataclasses
import gzip
import hashlib
import tarfile
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image as PILImage

from medcl_lite.data import catalog
from medcl_lite.data.catalog import reports
from medcl_lite.data.download import RemoteFile
from medcl_lite.data.prepared import open_prepared

SIZE = 16

IU_XML = """<?xml version="1.0" encoding="utf-8"?>
<eCitation>
  <uId id="CXR{n}"/>
  <MedlineCitation><Article><Abstract>
    <AbstractText Label="COMPARISON">None.</AbstractText>
    <AbstractText Label="FINDINGS">{findings}</AbstractText>
    <AbstractText Label="IMPRESSION">{impression}</AbstractText>
  </Abstract></Article></MedlineCitation>
  {images}
</eCitation>
"""


def _iu_xml(n: int, findings: str, impression: str, images: list[str]) -> str:
    tags = "\n".join(
        f'<parentImage id="{i}"><caption>Xray Chest PA and Lateral</caption></parentImage>'
        for i in images
    )
    return IU_XML.format(n=n, findings=findings, impression=impression, images=tags)


def _frontal(size: int = 40) -> np.ndarray:
    """Mirror-symmetric chest: bright body, two dark lungs."""
    rows, cols = np.mgrid[:size, :size]
    cols = np.abs(cols - (size - 1) / 2)  # distance from the midline
    image = np.full((size, size), 200.0)
    image[(rows > 8) & (rows < 32) & (cols > 4) & (cols < 16)] = 40
    return image.astype(np.uint8)


def _lateral(size: int = 40) -> np.ndarray:
    """Asymmetric: one dark lung field on the left, a bright spine on the right."""
    rows, cols = np.mgrid[:size, :size]
    image = np.full((size, size), 120.0)
    image[(rows > 6) & (rows < 34) & (cols > 4) & (cols < 22)] = 30
    image[:, 30:36] = 250
    return image.astype(np.uint8)


# --- report parsing and weak labels -----------------------------------------------------------


def test_parse_iu_report_sections_id_and_images():
    xml = _iu_xml(
        7,
        "Heart size normal.  Lungs\n clear",
        "No acute disease.",
        ["CXR7_1_IM-1-1001", "CXR7_1_IM-1-2001"],
    )
    report = reports.parse_iu_report(xml, "7")
    assert report.report_id == "CXR7"
    assert report.findings == "Heart size normal. Lungs clear"
    assert report.images == ("CXR7_1_IM-1-1001", "CXR7_1_IM-1-2001")
    assert report.text == "Heart size normal. Lungs clear. No acute disease."
    empty = reports.parse_iu_report('<eCitation><AbstractText Label="FINDINGS"/></eCitation>', "9")
    assert empty.report_id == "9" and empty.text == "" and empty.images == ()
    with pytest.raises(ValueError, match="report 3: malformed XML"):
        reports.parse_iu_report("<eCitation>", "3")


@pytest.mark.parametrize(
    ("text", "finding", "expected"),
    [
        ("No pleural effusion.", "effusion", False),
        ("Small left effusion.", "effusion", True),
        ("The heart size is normal.", "cardiomegaly", False),
        ("The heart is enlarged.", "cardiomegaly", True),
        ("Mild cardiomegaly.", "cardiomegaly", True),
        ("The heart is not enlarged.", "cardiomegaly", False),
        ("There are no XXXX of a pleural effusion.", "effusion", False),
        ("No pneumothorax, but there is a small right effusion.", "effusion", True),
        ("No change in the small left pleural effusion.", "effusion", True),
        ("The right effusion has resolved.", "effusion", False),
        ("No focal airspace disease.", "opacity", False),
        ("Patchy right lower lobe consolidation.", "opacity", True),
        ("Streaky opacities in the left base.", "opacity", True),
        ("No suspicious pulmonary nodules.", "nodule", False),
        ("A 5 mm nodule in the right upper lobe.", "nodule", True),
    ],
)
def test_keyword_labels_with_negation(text, finding, expected):
    assert reports.keyword_labels(text)[finding] is expected


def test_keyword_labels_are_per_sentence_and_cover_all_findings():
    labels = reports.keyword_labels("No effusion. Cardiomegaly. No nodule or consolidation.")
    assert labels == {"opacity": False, "nodule": False, "cardiomegaly": True, "effusion": False}


def test_report_sections_of_a_free_text_report():
    text = (
        "  FINAL REPORT\n EXAMINATION: CHEST (PA AND LAT)\n\n FINDINGS: \n Heart is enlarged.\n"
        " No effusion.\n\n IMPRESSION: \n Cardiomegaly.\n"
    )
    sections = reports.report_sections(text)
    assert sections["FINDINGS"] == "Heart is enlarged. No effusion."
    assert sections["IMPRESSION"] == "Cardiomegaly."
    assert sections["EXAMINATION"] == "CHEST (PA AND LAT)"


def test_mirror_symmetry_tells_frontal_from_lateral():
    frontal, lateral = reports.mirror_symmetry(_frontal()), reports.mirror_symmetry(_lateral())
    assert frontal == pytest.approx(1.0, abs=1e-6) and lateral < 0.5
    assert reports.most_frontal({"b": 0.9, "a": 0.9, "c": 0.2}) == "a"
    with pytest.raises(ValueError, match="no images"):
        reports.most_frontal({})


def test_chexpert_findings_map_one_to_true_only():
    table = pd.DataFrame(
        {
            "subject_id": [1, 1, 2],
            "study_id": [11, 12, 21],
            "Lung Opacity": [1.0, 0.0, np.nan],
            "Consolidation": [np.nan, 1.0, -1.0],
            "Lung Lesion": [-1.0, np.nan, 1.0],
            "Cardiomegaly": [0.0, 1.0, np.nan],
            "Pleural Effusion": [1.0, -1.0, 0.0],
        }
    )
    out = reports.chexpert_findings(table)
    assert out.loc["s11"].tolist() == [True, False, False, True]
    assert out.loc["s12"].tolist() == [True, False, True, False]
    assert out.loc["s21"].tolist() == [False, True, False, False]
    with pytest.raises(ValueError, match="Cardiomegaly"):
        reports.chexpert_findings(table.drop(columns="Cardiomegaly"))


# --- IU X-ray: scan, prepare, download --------------------------------------------------------


def _write_iu(root: Path) -> tuple[Path, Path]:
    """Reports folder and png folder as the two OpenI archives unpack."""
    xml_dir, png_dir = root / "reports" / "ecgen-radiology", root / "png"
    xml_dir.mkdir(parents=True)
    png_dir.mkdir(parents=True)
    cases = [
        (1, "Heart size is normal. No pleural effusion.", "Normal chest.", 2),
        (2, "The heart is enlarged. Small left effusion.", "Cardiomegaly.", 2),
        (3, "Right lower lobe consolidation.", "Pneumonia.", 1),
        (4, "", "", 1),  # no text: skipped
    ]
    for n, findings, impression, n_images in cases:
        ids = [f"CXR{n}_1_IM-000{n}-{k}001" for k in range(1, n_images + 1)]
        (xml_dir / f"{n}.xml").write_text(_iu_xml(n, findings, impression, ids), encoding="utf-8")
        for k, image_id in enumerate(ids):  # the lateral first, so order does not decide
            image = _lateral() if (n_images == 2 and k == 0) else _frontal()
            PILImage.fromarray(image).save(png_dir / f"{image_id}.png")
    return xml_dir.parent, png_dir


def test_iu_prepare_keeps_frontal_with_report_and_weak_labels(tmp_path):
    _write_iu(tmp_path / "src")
    assert "ready to prepare" in catalog.check("iu-xray", tmp_path / "src")
    out = catalog.prepare(
        "iu-xray", tmp_path / "src", out=tmp_path / "out", size=SIZE, progress=False
    )
    data = open_prepared(out)
    meta = data.meta.set_index("patient_id")
    assert list(meta.index) == ["CXR1", "CXR2", "CXR3"] and data.images.shape == (3, SIZE, SIZE)
    assert meta.loc["CXR1", "sample_id"] == "CXR1_1_IM-0001-2001"  # the symmetric one
    assert set(data.meta["site"]) == {"IU"} and set(data.meta["time"]) == {0}
    assert meta.loc["CXR2", "report"] == "The heart is enlarged. Small left effusion. Cardiomegaly."
    assert meta["cardiomegaly"].dtype == bool
    assert meta["cardiomegaly"].tolist() == [False, True, False]
    assert meta["effusion"].tolist() == [False, True, False]
    assert meta["opacity"].tolist() == [False, False, True]
    assert meta["n_views"].tolist() == [2, 2, 1]
    assert "weak labels" in data.info["labels"] and "CC BY-NC-ND" in data.info["licence"]
    everything = reports.prepare_iu_xray(tmp_path / "src", size=SIZE, views="all", progress=False)
    assert len(everything) == 5
    with pytest.raises(ValueError, match="views must be"):
        reports.prepare_iu_xray(tmp_path / "src", size=SIZE, views="lateral")


def test_iu_check_names_what_is_missing(tmp_path):
    _, png_dir = _write_iu(tmp_path / "src")
    for png in png_dir.glob("*.png"):
        png.unlink()
    with pytest.raises(ValueError, match=r"no \.png images.*NLMCXR_png\.tgz"):
        catalog.check("iu-xray", tmp_path / "src")


def _tgz(folder: Path, archive: Path) -> None:
    with tarfile.open(archive, "w:gz") as tar:
        for path in sorted(folder.rglob("*")):
            tar.add(path, path.relative_to(folder).as_posix(), recursive=False)


def test_iu_download_and_prepare_from_local_server(tmp_path, serve_dataset, monkeypatch):
    reports_dir, png_dir = _write_iu(tmp_path / "src")
    (tmp_path / "dummy").mkdir()
    server, placeholder = serve_dataset("iu-xray", tmp_path / "dummy", "unused.zip")
    web = placeholder.parent
    _tgz(png_dir, web / "NLMCXR_png.tgz")
    _tgz(reports_dir, web / "NLMCXR_reports.tgz")
    files = tuple(
        RemoteFile(
            name, f"{server.url}/{name}", hashlib.sha256((web / name).read_bytes()).hexdigest()
        )
        for name in ("NLMCXR_png.tgz", "NLMCXR_reports.tgz")
    )
    entry = dataclasses.replace(catalog.CATALOG["iu-xray"], files=files)
    monkeypatch.setitem(catalog.CATALOG, "iu-xray", entry)
    home = tmp_path / "home"
    out = catalog.download("iu-xray", home=home, size=SIZE, progress=False)
    assert server.requests == 2
    data = open_prepared(out)
    assert len(data) == 3 and "report" in data.meta and data.meta["effusion"].any()
    assert (home / "raw" / "iu-xray" / "NLMCXR_reports" / "ecgen-radiology" / "1.xml").is_file()


def test_iu_entry_is_unpinned_and_refused_without_allow_unpinned(tmp_path):
    entry = catalog.get_entry("iu-xray")
    assert [f.name for f in entry.files] == ["NLMCXR_png.tgz", "NLMCXR_reports.tgz"]
    assert all(f.url.startswith("https://openi.nlm.nih.gov/") for f in entry.files)
    with pytest.raises(ValueError, match="no pinned sha256"):
        catalog.download("iu-xray", home=tmp_path, progress=False)


# --- MIMIC-CXR with reports -------------------------------------------------------------------


def _write_mimic(root: Path, *, reports_as: str = "txt", chexpert: bool = True) -> Path:
    """Two subjects; study s1 with PA + LATERAL, s2 with AP, s3 (LATERAL only), s4 no text."""
    rows = [
        ("d1pa", 10000001, 1, "PA", 20100101), ("d1lat", 10000001, 1, "LATERAL", 20100101),
        ("d2ap", 10000001, 2, "AP", 20120101), ("d3lat", 10000002, 3, "LATERAL", 20110101),
        ("d4pa", 10000002, 4, "PA", 20130101),
    ]  # fmt: skip
    texts = {
        1: "FINDINGS: The heart is enlarged. No effusion.\nIMPRESSION: Cardiomegaly.",
        2: "FINDINGS: Small left effusion.\n\nIMPRESSION: Effusion.",
        3: "FINDINGS: Normal.",
        4: "INDICATION: Cough.",
    }
    table = pd.DataFrame(
        rows, columns=["dicom_id", "subject_id", "study_id", "ViewPosition", "StudyDate"]
    )
    table["StudyTime"] = 0
    root.mkdir(parents=True)
    with gzip.open(root / "mimic-cxr-2.0.0-metadata.csv.gz", "wt") as f:
        table.to_csv(f, index=False)
    for d, subject, study, _, _ in rows:
        folder = root / "files" / f"p{str(subject)[:2]}" / f"p{subject}"
        (folder / f"s{study}").mkdir(parents=True, exist_ok=True)
        PILImage.fromarray(_frontal()).save(folder / f"s{study}" / f"{d}.jpg")
        if reports_as == "txt":
            (folder / f"s{study}.txt").write_text(texts[study], encoding="utf-8")
    if reports_as == "zip":
        import zipfile

        with zipfile.ZipFile(root / "mimic-cxr-reports.zip", "w") as zf:
            for _, subject, study, _, _ in rows[1:]:  # d1pa and d1lat share study 1
                zf.writestr(f"files/p{str(subject)[:2]}/p{subject}/s{study}.txt", texts[study])
    if chexpert:
        labels = pd.DataFrame(
            {"subject_id": [10000001, 10000001], "study_id": [1, 2], "Lung Opacity": [1.0, 0.0],
             "Consolidation": [np.nan, np.nan], "Lung Lesion": [np.nan, -1.0],
             "Cardiomegaly": [1.0, np.nan], "Pleural Effusion": [0.0, 1.0]}
        )  # fmt: skip
        with gzip.open(root / "mimic-cxr-2.0.0-chexpert.csv.gz", "wt") as f:
            labels.to_csv(f, index=False)
    return root


def test_mimic_reports_check_says_what_is_missing(tmp_path):
    with pytest.raises(
        ValueError, match=r"(?s)no mimic-cxr-2\.0\.0-metadata.*no MIMIC-CXR reports"
    ):
        catalog.check("mimic-cxr-reports", _empty(tmp_path / "empty"))
    source = _write_mimic(tmp_path / "m", reports_as="none")
    with pytest.raises(ValueError, match=r"no MIMIC-CXR reports.*mimic-cxr-reports\.zip"):
        catalog.check("mimic-cxr-reports", source)
    text = catalog.check("mimic-cxr-reports", _write_mimic(tmp_path / "ok"))
    assert "ready to prepare" in text and "3 images found" in text and "chexpert" in text


def _empty(folder: Path) -> Path:
    folder.mkdir()
    return folder


@pytest.mark.parametrize("reports_as", ["txt", "zip"])
def test_mimic_reports_prepare_joins_frontal_images_to_reports(tmp_path, reports_as):
    source = _write_mimic(tmp_path / "m", reports_as=reports_as)
    out = catalog.prepare(
        "mimic-cxr-reports", source, out=tmp_path / "o", size=SIZE, progress=False
    )
    data = open_prepared(out)
    meta = data.meta.set_index("sample_id")
    assert list(meta.index) == ["d1pa", "d2ap"]  # s3 has no frontal image, s4 no text
    assert meta.loc["d1pa", "report"] == "The heart is enlarged. No effusion. Cardiomegaly."
    assert meta["time"].tolist() == [0, 1] and set(meta["site"]) == {"MIMIC"}
    assert meta["opacity"].tolist() == [True, False]  # CheXpert, not keywords
    assert meta["effusion"].tolist() == [False, True] and meta["nodule"].tolist() == [False, False]
    assert data.info["studies_without_report_text"] == 1 and "CheXpert" in data.info["labels"]


def test_mimic_reports_keyword_labels_and_options(tmp_path):
    source = _write_mimic(tmp_path / "m", chexpert=False)
    data = reports.prepare_mimic_cxr_reports(source, size=SIZE, max_studies=1, progress=False)
    assert len(data) == 1 and data.meta["cardiomegaly"].tolist() == [True]
    assert data.meta["opacity"].tolist() == [False] and "weak labels" in data.info["labels"]
    with pytest.raises(ValueError, match="labels='chexpert' but no"):
        reports.prepare_mimic_cxr_reports(source, size=SIZE, labels="chexpert", progress=False)
    with pytest.raises(ValueError, match="max_studies must be"):
        reports.prepare_mimic_cxr_reports(source, size=SIZE, max_studies=0, progress=False)
    (source / "files" / "p10" / "p10000001" / "s2" / "d2ap.jpg").unlink()
    with pytest.raises(ValueError, match=r"1 of 3 chosen images are missing.*allow_missing"):
        reports.prepare_mimic_cxr_reports(source, size=SIZE, progress=False)
    kept = reports.prepare_mimic_cxr_reports(source, size=SIZE, allow_missing=True, progress=False)
    assert kept.meta["sample_id"].tolist() == ["d1pa"]
