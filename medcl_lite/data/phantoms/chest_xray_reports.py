"""Chest X-rays with findings and the reports that describe them (docs/methods.md, "LRCLR").

The patients, sites and rendering of :mod:`medcl_lite.data.phantoms.chest_xray`, plus four
findings a report can name and a model can be asked about zero-shot: an opacity in a named lung
zone, a nodule, an enlarged heart and a pleural effusion at a costophrenic angle. Each study gets
a templated report with paraphrases and negations, one bool meta column per finding, its side,
and a bounding box of where the phantom drew it (for the localisation picture).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, replace

import numpy as np
import pandas as pd

from medcl_lite.data.phantoms import _common, _draw
from medcl_lite.data.phantoms.chest_xray import (
    FIELD_OF_VIEW_MM,
    XRAY_CLASSES,
    XRAY_SITES,
    ChestAnatomy,
    Lesion,
    Study,
    XraySite,
    _Body,
    _body,
    _detector,
    _devices,
    _heart,
    _image_row,
    _lesion,
    _lung_base,
    _sample_acquisition,
    _sample_anatomy,
    _sample_inspiration,
    _sample_lesion,
    _xray_info,
)
from medcl_lite.data.sliceset import SliceSet

#: The zero-shot label set of :func:`make_chest_xray_reports`, one bool meta column each.
FINDINGS = ("opacity", "nodule", "cardiomegaly", "effusion")
#: Probability of each finding per study (cardiomegaly: per patient at a PA site; AP: never).
DEFAULT_FINDING_RATES = {"opacity": 0.25, "nodule": 0.25, "cardiomegaly": 0.4, "effusion": 0.25}
#: Paraphrases of each positive sentence; ``{side}``/``{Side}``, ``{zone}``, ``{mm}``, ``{size}``
#: (the first letter of a sentence is capitalised).
POSITIVE_SENTENCES = {
    "opacity": (
        "Patchy opacity in the {side} {zone}.",
        "Airspace shadowing in the {side} {zone}.",
        "{Side} {zone} consolidation.",
        "Ill-defined airspace opacity projected over the {side} {zone}.",
    ),
    "nodule": (
        "{mm} mm nodule in the {side} {zone}.",
        "Rounded {mm} mm nodule projected over the {side} {zone}.",
        "Solitary pulmonary nodule in the {side} {zone}, {mm} mm.",
        "Small well-defined nodule in the {side} {zone}.",
    ),
    "cardiomegaly": (
        "The heart is enlarged.",
        "Cardiomegaly.",
        "Enlarged cardiac silhouette.",
        "The cardiothoracic ratio is increased.",
    ),
    "effusion": (
        "{size} {side} pleural effusion.",
        "Blunting of the {side} costophrenic angle, in keeping with a pleural effusion.",
        "{Side} pleural effusion with a meniscus at the lung base.",
        "Fluid layering at the {side} lung base (pleural effusion).",
    ),
}
#: Sentences that deny a finding; a report only uses them for absent findings.
NEGATED_SENTENCES = {
    "opacity": ("No focal consolidation.", "No airspace opacity.", "No focal airspace shadowing."),
    "nodule": ("No pulmonary nodule.", "No nodules or masses.", "No suspicious nodule."),
    "cardiomegaly": (
        "Heart size is normal.",
        "The cardiac silhouette is normal in size.",
        "Normal heart size.",
    ),
    "effusion": ("No pleural effusion.", "No effusion.", "The costophrenic angles are clear."),
}
_ZONE_WORDS = {
    "upper": ("upper zone", "upper lung zone", "upper lung"),
    "middle": ("middle zone", "mid zone", "midlung"),
    "lower": ("lower zone", "lower lung zone", "lung base"),
}
_DEVICE_SENTENCES = {
    "et_tube": "Endotracheal tube in situ.",
    "ng_tube": "Nasogastric tube tip below the diaphragm.",
    "central_line": "Right central venous catheter tip in the SVC.",
    "ecg_lead": "ECG leads overlie the chest.",
}
_NEGATION_RATE = 0.6  # chance that a report denies a given absent finding


@dataclass(frozen=True)
class Effusion:
    """Pleural fluid at one lung base: level above the costophrenic angle and meniscus rise."""

    side: str  # "right" | "left"
    depth: float  # fluid height at the mediastinal end, above the costophrenic angle
    meniscus: float  # how much higher the fluid climbs at the lateral chest wall
    density: float  # fraction of the lung air it replaces


def _check_rates(finding_rates: float | Mapping[str, float] | None) -> dict[str, float]:
    """Rates for every finding: the defaults, overridden by a mapping or set to one number."""
    if finding_rates is None:
        return dict(DEFAULT_FINDING_RATES)
    if isinstance(finding_rates, (int, float)):
        finding_rates = {name: finding_rates for name in FINDINGS}
    unknown = sorted(set(finding_rates) - set(FINDINGS))
    if unknown:
        raise ValueError(f"finding_rates: unknown findings {unknown}, known {list(FINDINGS)}")
    rates = {**DEFAULT_FINDING_RATES, **finding_rates}
    for name, rate in rates.items():
        if not 0.0 <= float(rate) <= 1.0:
            raise ValueError(f"finding_rates[{name!r}] must be in [0, 1], got {rate!r}")
    return {name: float(rate) for name, rate in rates.items()}


def _with_heart(anat: ChestAnatomy, enlarged: bool) -> ChestAnatomy:
    """The patient with a normal (CTR 0.38-0.48) or enlarged (CTR 0.56-0.68) heart, keeping the
    rank of their sampled cardiothoracic ratio."""
    rank = (anat.cardiothoracic_ratio - 0.38) / 0.2
    ratio = 0.56 + 0.12 * rank if enlarged else 0.38 + 0.1 * rank
    return replace(anat, cardiothoracic_ratio=float(ratio))


def _sample_focal(
    anat: ChestAnatomy,
    site: XraySite,
    inspiration: float,
    kind: str,
    rate: float,
    rng: np.random.Generator,
) -> Lesion | None:
    """With probability ``rate`` a ``kind`` lesion, in up to 4 random zones until one is visible."""
    if rng.random() >= rate:
        return None
    for _ in range(4):
        lesion = _sample_lesion(anat, site, inspiration, kind, rng)
        if lesion is not None:
            return lesion
    return None


def _sample_effusion(rate: float, rng: np.random.Generator) -> Effusion | None:
    if rng.random() >= rate:
        return None
    side = ("right", "left")[int(rng.integers(2))]
    return Effusion(side, rng.uniform(0.1, 0.32), rng.uniform(0.05, 0.12), rng.uniform(0.8, 1.0))


def _effusion(
    anat: ChestAnatomy, effusion: Effusion, inspiration: float, body: _Body
) -> tuple[np.ndarray, np.ndarray]:
    """Added attenuation ``[H, W]`` of pleural fluid filling the lung base from the costophrenic
    angle up to a meniscus (higher laterally), and its visible region ``[H, W]`` bool."""
    side_index = ("right", "left").index(effusion.side)
    u = (body.px - anat.midline) * (1.0 if side_index else -1.0)
    base = _lung_base(anat, side_index, inspiration)
    medial, width = anat.mediastinal_edge[1], anat.lung_width[side_index]
    lateral = np.clip((u - medial) / (width - medial), 0.0, 1.0)
    top = base - effusion.depth - effusion.meniscus * lateral**2
    fluid = _draw.smoothstep(top - 0.015, top + 0.015, body.py) * (u > 0) * body.lung_field
    added = effusion.density * anat.lung_lucency * body.tissue * fluid
    return added, (fluid >= 0.5) & (body.labels == side_index + 1)


def _heart_region(
    anat: ChestAnatomy, inspiration: float, site: XraySite, body: _Body
) -> np.ndarray:
    """The cardiac silhouette ``[H, W]`` bool."""
    center, radii, tilt = _heart(anat, inspiration, site)
    return _draw.ellipse(body.px, body.py, center, radii, -tilt) < 1.0


def _box(region: np.ndarray) -> tuple[int, int, int, int] | None:
    """Bounding box ``(row0, col0, row1, col1)`` of a bool ``[H, W]`` region, half-open like a
    NumPy slice ``image[row0:row1, col0:col1]``; None when the region is empty."""
    rows, cols = np.flatnonzero(region.any(axis=1)), np.flatnonzero(region.any(axis=0))
    if len(rows) == 0:
        return None
    return int(rows[0]), int(cols[0]), int(rows[-1]) + 1, int(cols[-1]) + 1


def _positive_sentence(finding: str, where: dict, rng: np.random.Generator) -> str:
    """One paraphrase of ``finding`` naming its location ``where`` (side, zone, mm, size)."""
    template = str(rng.choice(POSITIVE_SENTENCES[finding]))
    side = where.get("side", "")
    zone = str(rng.choice(_ZONE_WORDS[where["zone"]])) if where.get("zone") else ""
    text = template.format(
        side=side,
        Side=side.capitalize(),
        zone=zone,
        mm=where.get("mm", ""),
        size=where.get("size", ""),
    )
    return text[0].upper() + text[1:]


def _findings_report(
    found: dict[str, dict], projection: str, devices: tuple[str, ...], rng: np.random.Generator
) -> tuple[str, dict[str, str]]:
    """Report of a study with the positive ``found`` findings (name -> location): one paraphrased
    sentence per positive finding, random negations of absent ones, shuffled; then devices.

    Returns the report and the positive sentence of each finding ('' when absent)."""
    positive = {name: "" for name in FINDINGS}
    clinical = ["No pneumothorax."]
    for name in FINDINGS:
        if name in found:
            positive[name] = _positive_sentence(name, found[name], rng)
            clinical.append(positive[name])
        elif name == "cardiomegaly" and projection == "AP":
            clinical.append("Heart size cannot be assessed on an AP film.")
        elif rng.random() < _NEGATION_RATE:
            clinical.append(str(rng.choice(NEGATED_SENTENCES[name])))
    order = rng.permutation(len(clinical))
    parts = [clinical[i] for i in order] + [_DEVICE_SENTENCES[d] for d in sorted(set(devices))]
    return " ".join(parts), positive


def _finding_columns(
    found: dict[str, dict], boxes: dict[str, tuple], sentences: dict[str, str]
) -> dict[str, object]:
    """Meta columns of the findings: ``<f>`` bool, ``<f>_side``, ``<f>_zone`` (opacity, nodule),
    ``<f>_box`` (half-open pixel box or None) and ``<f>_sentence`` ('' when absent)."""
    columns: dict[str, object] = {}
    for name in FINDINGS:
        where = found.get(name, {})
        columns[name] = name in found
        columns[f"{name}_side"] = where.get("side", "")
        if name in ("opacity", "nodule"):
            columns[f"{name}_zone"] = where.get("zone", "")
        columns[f"{name}_box"] = boxes.get(name) if name in found else None
        columns[f"{name}_sentence"] = sentences[name]
    return columns


def _render_findings(
    anat: ChestAnatomy,
    site: XraySite,
    study: Study,
    body: _Body,
    lesions: dict[str, tuple[Lesion | None, np.random.Generator]],
    effusion: Effusion | None,
    enlarged: bool,
) -> tuple[dict[str, np.ndarray], dict[str, dict]]:
    """Add the findings to ``body.attenuation`` (in place); their regions and locations."""
    regions, where = {}, {}
    for name, (lesion, rng) in lesions.items():
        if lesion is not None:
            added, regions[name] = _lesion(anat, lesion, body, rng)
            body.attenuation += added
            mm = round(lesion.radius * FIELD_OF_VIEW_MM)  # as make_chest_xrays reports it
            where[name] = {"side": lesion.side, "zone": lesion.zone, "mm": mm}
    if effusion is not None:
        added, regions["effusion"] = _effusion(anat, effusion, study.inspiration, body)
        body.attenuation += added
        where["effusion"] = {
            "side": effusion.side,
            "size": "small" if effusion.depth < 0.2 else "moderate",
        }
    if enlarged:
        regions["cardiomegaly"] = _heart_region(anat, study.inspiration, site, body)
        where["cardiomegaly"] = {}
    return regions, where


def make_chest_xray_reports(
    n_patients: int = 200,
    n_times: int = 1,
    sites: tuple[str, ...] = ("A", "B", "C"),
    size: int = 128,
    seed: int = 0,
    finding_rates: float | Mapping[str, float] | None = None,
) -> SliceSet:
    """Chest X-rays ``[N, size, size]`` with several findings each and the reports naming them.

    The LRCLR phantom (docs/methods.md, "LRCLR"): anatomy, sites, devices and lung masks as
    :func:`make_chest_xrays`; each study independently carries each finding of :data:`FINDINGS`
    with its rate (``finding_rates``: one number, or a mapping overriding
    :data:`DEFAULT_FINDING_RATES`):

    - ``opacity``: irregular airspace filling in a named side and zone (upper/middle/lower);
    - ``nodule``: a small sphere (sized in mm in the report) in a side and zone;
    - ``cardiomegaly``: a patient-level enlarged heart (CTR 0.56-0.68, normal 0.38-0.48), drawn
      only at PA sites (the rate is per PA patient); AP reports say heart size is not assessable;
    - ``effusion``: fluid filling one lung base from the costophrenic angle, meniscus upper edge.

    A finding is labelled only where it is visible (a pixel of it, in the exposed field); the
    report has one paraphrase (:data:`POSITIVE_SENTENCES`) per positive finding with its location,
    random negations (:data:`NEGATED_SENTENCES`) of absent findings, in shuffled order, then the
    devices. Findings use their own random streams: changing one rate leaves the rest of every
    image unchanged.

    Meta columns beyond :func:`make_chest_xrays`' ids: per finding ``f``: ``f`` (bool),
    ``f_side`` ('right'/'left'/''), ``f_zone`` (opacity and nodule), ``f_box`` (pixel box
    ``(row0, col0, row1, col1)``, half-open like ``image[row0:row1, col0:col1]``, None when
    absent: the pointing-game target), ``f_sentence`` (its sentence in the report, '' when
    absent); and ``projection``, ``cardiothoracic_ratio``, ``devices``, ``report``, ``exposure``,
    ``rotation_deg``, ``inspiration``.
    """
    _common.check_ints(n_patients=(n_patients, 1), n_times=(n_times, 1), size=(size, 32))
    sites = _common.check_sites(sites, XRAY_SITES)
    rates = _check_rates(finding_rates)
    images = np.empty((n_patients * n_times, size, size), np.float32)
    masks = np.empty((n_patients * n_times, size, size), np.uint8)
    rows = []
    for p, site_name, patient_seed in _common.patients(seed, n_patients, sites):
        site = XRAY_SITES[site_name]
        anat = _sample_anatomy(np.random.default_rng(patient_seed))
        study_seeds = patient_seed.spawn(n_times)
        heart_rng = np.random.default_rng(patient_seed.spawn(1)[0])
        enlarged = heart_rng.random() < rates["cardiomegaly"] and site.projection == "PA"
        anat = _with_heart(anat, enlarged)
        texture = _draw.smooth_noise(
            np.random.default_rng(anat.texture_seed), (size, size), size / 128
        )
        for t, study_seed in enumerate(study_seeds):
            acquisition, report, opacity, nodule, fluid = map(
                np.random.default_rng, study_seed.spawn(5)
            )
            inspiration = _sample_inspiration(site, acquisition)
            study = _sample_acquisition(anat, site, inspiration, None, acquisition)
            lesions = {
                name: (_sample_focal(anat, site, inspiration, name, rates[name], rng), rng)
                for name, rng in (("opacity", opacity), ("nodule", nodule))
            }
            effusion = _sample_effusion(rates["effusion"], fluid)
            body = _body(anat, study, site, size, texture)
            regions, where = _render_findings(anat, site, study, body, lesions, effusion, enlarged)
            a = body.attenuation + _devices(anat, study, size, body.px, body.py, acquisition)
            i = p * n_times + t
            images[i], exposed = _detector(a, study, site, acquisition)
            masks[i] = body.labels * exposed
            boxes = {name: _box(region & exposed) for name, region in regions.items()}
            found = {name: where[name] for name in where if boxes[name] is not None}
            text, sentences = _findings_report(found, site.projection, study.devices, report)
            rows.append(
                {
                    **_image_row(p, t, site_name),
                    **_finding_columns(found, boxes, sentences),
                    "projection": site.projection,
                    "cardiothoracic_ratio": anat.cardiothoracic_ratio,
                    "devices": len(study.devices),
                    "report": text,
                    "exposure": study.exposure,
                    "rotation_deg": study.rotation_deg,
                    "inspiration": study.inspiration,
                }
            )
    info = {
        **_xray_info(size, seed, sites),
        "findings": FINDINGS,
        "finding_rates": rates,
        "box_format": "(row0, col0, row1, col1), half-open: image[row0:row1, col0:col1]",
    }
    meta = pd.DataFrame(rows)
    return SliceSet(images, masks, meta, XRAY_CLASSES, "phantom_xray_reports", info)
