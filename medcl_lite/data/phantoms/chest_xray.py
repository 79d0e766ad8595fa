"""Chest X-ray phantom: patients who keep their anatomy over several studies, at three sites.

Why it looks like this (docs/design.md, "Data"; docs/methods.md, "CL-TCI"): CL-TCI treats every
image of a patient as a positive, so a patient keeps lung shape, heart size, body habitus, ribs
and clavicles over time, while inspiration, rotation, positioning, exposure, noise, findings and
devices change between studies. The sites differ the way real departments do (detector, display
curve, projection, devices), so a model trained on a few images of one site has something to
learn from unlabelled images of the others.

Images are projections: each structure adds to (bone, soft tissue, devices) or removes from
(air in lungs, trachea, gastric bubble) an attenuation map, and a site's detector turns that map
into a displayed image (bright = attenuating). Radiological convention: the patient's RIGHT lung
is on the image LEFT.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd
from scipy import ndimage

from medcl_lite.data.phantoms import _common, _draw
from medcl_lite.data.sliceset import SliceSet

XRAY_CLASSES = ("background", "right_lung", "left_lung")
#: The [-1, 1] field spans about one PA detector (JSRT: 2048 px of 0.175 mm = 358 mm).
FIELD_OF_VIEW_MM = 360.0
ZONES = ("upper", "middle", "lower")


@dataclass(frozen=True)
class XraySite:
    """Acquisition profile of a site: projection, detector, display and patient population."""

    description: str
    projection: str  # "PA" (standing, department) or "AP" (supine/portable)
    exposure_index: float  # mean relative dose: > 1 penetrates more, the image darkens
    exposure_jitter: float  # relative spread of exposure between studies
    detector_gamma: float  # display LUT gamma
    window_contrast: float  # slope of the display window around mid-grey
    scatter_haze: float  # veiling glare without an anti-scatter grid (fraction of grey)
    quantum_noise: float  # noise standard deviation at mid-grey
    blur_px: float  # detector/resampling blur at 128 px (scaled with the size)
    edge_enhancement: float  # unsharp-mask amount of the vendor post-processing
    heel_effect: float  # left-right brightness gradient of the anode heel effect
    collimation: float  # mean width of the collimator shutter edges (0: none)
    rotation_sd_deg: float  # patient rotation between studies
    positioning_sd: float  # patient shift between studies (normalised units)
    inspiration_mean: float  # lung height relative to full inspiration
    inspiration_sd: float
    devices_per_image: float  # mean number of tubes, lines and ECG leads
    heart_magnification: float  # AP projection magnifies the (anterior) heart
    markers: tuple[str, ...]  # burned-in text (lead side markers, "PORTABLE")


#: Site profiles: "A" is the labelled site of the default protocol; B and C shift the domain.
XRAY_SITES: dict[str, XraySite] = {
    "A": XraySite(
        description="standard PA department: flat-panel detector, anti-scatter grid, good"
        " inspiration (the labelled site)",
        projection="PA",
        exposure_index=1.0,
        exposure_jitter=0.06,
        detector_gamma=1.0,
        window_contrast=1.0,
        scatter_haze=0.0,
        quantum_noise=0.012,
        blur_px=0.6,
        edge_enhancement=0.0,
        heel_effect=0.0,
        collimation=0.0,
        rotation_sd_deg=1.5,
        positioning_sd=0.02,
        inspiration_mean=1.0,
        inspiration_sd=0.04,
        devices_per_image=0.15,
        heart_magnification=1.0,
        markers=("R",),
    ),
    "B": XraySite(
        description="other department: computed-radiography plate, flat LUT, vendor edge"
        " enhancement, lower resolution, higher dose",
        projection="PA",
        exposure_index=1.5,
        exposure_jitter=0.12,
        detector_gamma=1.4,
        window_contrast=0.75,
        scatter_haze=0.05,
        quantum_noise=0.045,
        blur_px=2.0,
        edge_enhancement=0.8,
        heel_effect=0.05,
        collimation=0.0,
        rotation_sd_deg=2.0,
        positioning_sd=0.03,
        inspiration_mean=0.97,
        inspiration_sd=0.05,
        devices_per_image=0.3,
        heart_magnification=1.0,
        markers=("L",),
    ),
    "C": XraySite(
        description="portable / ICU: supine AP, no grid (scatter), collimator edges, rotation,"
        " poor inspiration, tubes and lines",
        projection="AP",
        exposure_index=0.8,
        exposure_jitter=0.18,
        detector_gamma=1.3,
        window_contrast=0.7,
        scatter_haze=0.18,
        quantum_noise=0.025,
        blur_px=1.0,
        edge_enhancement=0.0,
        heel_effect=0.12,
        collimation=0.06,
        rotation_sd_deg=4.0,
        positioning_sd=0.05,
        inspiration_mean=0.86,
        inspiration_sd=0.07,
        devices_per_image=2.2,
        heart_magnification=1.15,
        markers=("PORTABLE", "AP"),
    ),
}


@dataclass(frozen=True)
class ChestAnatomy:
    """What stays with a patient between studies (normalised units; u: distance from midline)."""

    body_size: float  # projected size on the detector (child ... large adult)
    centering: tuple[float, float]  # where the radiographer centred this patient
    midline: float  # body midline (x)
    apex_level: float  # y of the lung apices
    lung_height: float  # apex to costophrenic angle at full inspiration
    lung_width: tuple[float, float]  # lateral extent (u) of the (right, left) lung
    apex_roundness: float  # exponent of the lateral lung edge near the apex (small: blunt apex)
    widest_level: float  # fraction of the lung height where the lung is widest
    mediastinal_edge: tuple[float, float]  # u of the medial lung edge at the apex / at the base
    costophrenic_sharpness: float  # exponent of the diaphragm curve (small: sharp angle)
    diaphragm_dome: float  # height of the hemidiaphragm domes
    right_hemidiaphragm_rise: float  # the right hemidiaphragm sits higher (liver)
    cardiothoracic_ratio: float  # heart width / thoracic width (> 0.5: cardiomegaly)
    heart_tilt_deg: float
    aortic_knob_radius: float
    chest_wall: float  # soft tissue between lung and skin (habitus)
    soft_tissue_density: float  # body attenuation (habitus)
    lung_lucency: float  # fraction of tissue replaced by air in the lungs (emphysema: high)
    interstitial_markings: float  # strength of vessel / interstitial markings
    breast_shadow: float  # 0 for none
    gastric_bubble: float  # radius, 0 for none
    rib_spacing: float
    rib_slope: float  # posterior ribs rise laterally ...
    rib_curvature: float  # ... then curve down to the chest wall
    rib_phase: float
    clavicle_level: float
    clavicle_slope: float
    texture_seed: int  # lung markings and parenchyma texture


@dataclass(frozen=True)
class Study:
    """What changes between a patient's time points."""

    rotation_deg: float
    shift: tuple[float, float]
    inspiration: float
    exposure: float
    finding: str  # "none" | "opacity" | "nodule"
    finding_side: str  # "right" | "left" | ""
    finding_zone: str  # "upper" | "middle" | "lower" | ""
    finding_center: tuple[float, float]  # patient coordinates
    finding_radius: float
    finding_density: float
    devices: tuple[str, ...]


def _sample_anatomy(rng: np.random.Generator) -> ChestAnatomy:
    # Habitus and positioning vary beyond what fine-tuning's light augmentation undoes (zoom
    # 0.9-1.1, shift 5 %): one labelled patient then shows one body size, lung shape and centring,
    # and the unlabelled pool shows the rest (measured: docs/methods.md,
    # "Built-in data: room for pretraining to help").
    lung_width = rng.uniform(0.45, 0.74)
    chest_wall = rng.uniform(0.05, 0.3)
    return ChestAnatomy(
        body_size=rng.uniform(0.68, 1.14),
        centering=(rng.normal(0.0, 0.1), rng.normal(0.0, 0.08)),
        midline=rng.normal(0.0, 0.025),
        apex_level=rng.uniform(-0.8, -0.66),
        lung_height=rng.uniform(1.02, 1.55),
        lung_width=(lung_width + rng.normal(0, 0.02), lung_width - abs(rng.normal(0.01, 0.02))),
        apex_roundness=rng.uniform(0.35, 0.65),
        widest_level=rng.uniform(0.65, 0.9),
        mediastinal_edge=(rng.uniform(0.05, 0.08), rng.uniform(0.08, 0.14)),
        costophrenic_sharpness=rng.uniform(0.45, 1.3),
        diaphragm_dome=rng.uniform(0.06, 0.14),
        right_hemidiaphragm_rise=rng.uniform(0.0, 0.06),
        cardiothoracic_ratio=rng.uniform(0.38, 0.58),
        heart_tilt_deg=rng.uniform(15.0, 40.0),
        aortic_knob_radius=rng.uniform(0.03, 0.05),
        chest_wall=chest_wall,
        soft_tissue_density=rng.uniform(0.85, 1.3) + 2.0 * (chest_wall - 0.07),
        lung_lucency=rng.uniform(0.55, 0.85),
        interstitial_markings=rng.uniform(0.5, 2.0),
        breast_shadow=rng.uniform(0.2, 0.5) if rng.random() < 0.35 else 0.0,
        gastric_bubble=rng.uniform(0.05, 0.11) if rng.random() < 0.7 else 0.0,
        rib_spacing=rng.uniform(0.115, 0.145),
        rib_slope=rng.uniform(0.1, 0.35),
        rib_curvature=rng.uniform(0.6, 1.0),
        rib_phase=rng.uniform(0.0, 1.0),
        clavicle_level=rng.uniform(0.0, 0.1),
        clavicle_slope=rng.uniform(0.1, 0.3),
        texture_seed=int(rng.integers(2**31)),
    )


def _lateral_edge(anat: ChestAnatomy, side: int, t: np.ndarray) -> np.ndarray:
    """u of the lateral lung edge at relative height ``t`` (rounded apex, widest low down)."""
    top = anat.mediastinal_edge[0]
    rise = np.sin(0.5 * np.pi * np.clip(t / anat.widest_level, 0.0, 1.0)) ** anat.apex_roundness
    return top + (anat.lung_width[side] - top) * rise


def _medial_edge(anat: ChestAnatomy, t: np.ndarray) -> np.ndarray:
    top, base = anat.mediastinal_edge
    return top + (base - top) * np.clip(t, 0.0, 1.0)


def _lung_base(anat: ChestAnatomy, side: int, inspiration: float) -> float:
    base = anat.apex_level + anat.lung_height * inspiration
    return base - anat.right_hemidiaphragm_rise if side == 0 else base


def _heart(anat: ChestAnatomy, inspiration: float, site: XraySite) -> tuple[tuple, tuple, float]:
    """Heart ellipse (center, radii, tilt): width from the CTR, resting on the left hemidiaphragm.

    Deep inspiration pulls the heart down and makes it narrower; AP films magnify it.
    """
    thoracic_width = sum(anat.lung_width)
    half_extent = 0.5 * anat.cardiothoracic_ratio * thoracic_width * site.heart_magnification
    half_extent *= 1.0 + 0.6 * (1.0 - inspiration)
    tilt = np.deg2rad(anat.heart_tilt_deg)
    aspect = 0.9
    long_axis = half_extent / np.sqrt(np.cos(tilt) ** 2 + (aspect * np.sin(tilt)) ** 2)
    radii = (long_axis, aspect * long_axis)
    vertical_extent = np.sqrt((radii[0] * np.sin(tilt)) ** 2 + (radii[1] * np.cos(tilt)) ** 2)
    base = _lung_base(anat, 1, inspiration) - anat.diaphragm_dome
    center = (anat.midline + 0.3 * half_extent, base - 0.3 * vertical_extent)
    return center, radii, anat.heart_tilt_deg


def _lung_masks(
    anat: ChestAnatomy, inspiration: float, site: XraySite, px: np.ndarray, py: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Boolean masks of the right and left lung fields on patient coordinates ``px, py``."""
    center, radii, tilt = _heart(anat, inspiration, site)
    heart = _draw.ellipse(px, py, center, radii, -tilt) < 1.0
    knob_center = (
        anat.midline + anat.mediastinal_edge[0] + 0.6 * anat.aortic_knob_radius,
        anat.apex_level + 0.38 * anat.lung_height,
    )
    knob = _draw.ellipse(px, py, knob_center, (anat.aortic_knob_radius,) * 2) < 1.0
    masks = []
    for side, sign in ((0, -1.0), (1, 1.0)):
        u = sign * (px - anat.midline)
        base = _lung_base(anat, side, inspiration)
        t = (py - anat.apex_level) / (base - anat.apex_level)
        width, medial_base = anat.lung_width[side], anat.mediastinal_edge[1]
        s = np.clip((width - u) / (width - medial_base), 0.0, 1.0)
        diaphragm = base - anat.diaphragm_dome * np.sin(0.5 * np.pi * s) ** (
            anat.costophrenic_sharpness
        )
        lung = (t >= 0) & (u >= _medial_edge(anat, t)) & (u <= _lateral_edge(anat, side, t))
        lung &= (py <= diaphragm) & ~heart
        masks.append(lung & ~knob if side == 1 else lung)
    return masks[0], masks[1]


@dataclass(frozen=True)
class Lesion:
    """A focal lung finding: an ``"opacity"`` or a ``"nodule"`` in a lung zone."""

    kind: str  # "opacity" | "nodule"
    side: str  # "right" | "left"
    zone: str  # "upper" | "middle" | "lower"
    center: tuple[float, float]  # patient coordinates
    radius: float
    density: float


def _sample_inspiration(site: XraySite, rng: np.random.Generator) -> float:
    return float(np.clip(rng.normal(site.inspiration_mean, site.inspiration_sd), 0.78, 1.06))


#: Radius and density ranges of a lesion: focal opacities (the report phantom's findings), the
#: lobar consolidations of :func:`make_chest_xrays`, dense enough to look like soft tissue, so that
#: only the lung's outline and context say they are lung, and nodules.
FOCAL_OPACITY = {"radius": (0.1, 0.28), "density": (0.5, 1.0)}
CONSOLIDATION = {"radius": (0.18, 0.45), "density": (0.9, 1.5)}
NODULE = {"radius": (0.022, 0.045), "density": (0.5, 1.0)}


def _sample_lesion(
    anat: ChestAnatomy,
    site: XraySite,
    inspiration: float,
    kind: str,
    rng: np.random.Generator,
    opacity: dict = FOCAL_OPACITY,
) -> Lesion | None:
    """A ``kind`` lesion in a random lung zone, centred inside the lung; None if the zone is hidden
    (huge heart, poor inspiration). ``opacity``: radius and density ranges of an opacity."""
    side_index = int(rng.integers(2))
    side, zone = ("right", "left")[side_index], ZONES[int(rng.integers(3))]
    span = {"upper": (0.12, 0.33), "middle": (0.36, 0.63), "lower": (0.66, 0.88)}[zone]
    base = _lung_base(anat, side_index, inspiration)
    # Candidate centres in that zone; keep the first inside the lung (not behind the heart).
    t = rng.uniform(*span, size=64)
    u_medial, u_lateral = _medial_edge(anat, t), _lateral_edge(anat, side_index, t)
    u = u_medial + rng.uniform(0.4, 0.97, size=64) * (u_lateral - u_medial)
    px = anat.midline + (u if side_index else -u)
    py = anat.apex_level + t * (base - anat.apex_level)
    inside = np.flatnonzero(_lung_masks(anat, inspiration, site, px, py)[side_index])
    first = inside[0] if len(inside) else 0
    center = (float(px[first]), float(py[first]))
    ranges = opacity if kind == "opacity" else NODULE
    radius, density = rng.uniform(*ranges["radius"]), rng.uniform(*ranges["density"])
    if len(inside) == 0:
        return None
    return Lesion(kind, side, zone, center, float(radius), float(density))


def _sample_acquisition(
    anat: ChestAnatomy,
    site: XraySite,
    inspiration: float,
    lesion: Lesion | None,
    rng: np.random.Generator,
) -> Study:
    """The study around ``lesion`` (or none): devices, rotation, positioning and exposure."""
    n_devices = min(int(rng.poisson(site.devices_per_image)), 4)
    pool = ("et_tube", "ng_tube", "central_line", "ecg_lead", "ecg_lead", "ecg_lead")
    devices = tuple(sorted(str(d) for d in rng.choice(pool, size=n_devices, replace=False)))
    return Study(
        rotation_deg=float(rng.normal(0.0, site.rotation_sd_deg)),
        shift=(
            anat.centering[0] + float(rng.normal(0.0, site.positioning_sd)),
            anat.centering[1] + float(rng.normal(0.0, site.positioning_sd)),
        ),
        inspiration=inspiration,
        exposure=float(site.exposure_index * np.exp(rng.normal(0.0, site.exposure_jitter))),
        finding=lesion.kind if lesion else "none",
        finding_side=lesion.side if lesion else "",
        finding_zone=lesion.zone if lesion else "",
        finding_center=lesion.center if lesion else (0.0, 0.0),
        finding_radius=lesion.radius if lesion else 0.0,
        finding_density=lesion.density if lesion else 0.0,
        devices=devices,
    )


def _sample_study(anat: ChestAnatomy, site: XraySite, rng: np.random.Generator) -> Study:
    """One study of :func:`make_chest_xrays`: ~70 % carry one finding, a consolidation
    (:data:`CONSOLIDATION`, 75 %) or a nodule (25 %)."""
    inspiration = _sample_inspiration(site, rng)
    lesion = None
    if rng.random() < 0.7:
        kind = "opacity" if rng.random() < 0.75 else "nodule"
        lesion = _sample_lesion(anat, site, inspiration, kind, rng, opacity=CONSOLIDATION)
    return _sample_acquisition(anat, site, inspiration, lesion, rng)


def _bones(anat: ChestAnatomy, px: np.ndarray, py: np.ndarray, body_half: np.ndarray) -> np.ndarray:
    """Spine, posterior and anterior ribs and clavicles (attenuation)."""
    xc = px - anat.midline
    vertebrae = 0.75 + 0.25 * np.cos(2 * np.pi * (py / anat.rib_spacing - anat.rib_phase))
    bone = 0.4 * _draw.band(xc, 0.065) * vertebrae
    u = np.abs(xc)
    lateral = _draw.smoothstep(body_half, body_half - 0.06, u)
    # Posterior ribs: parallel curved bands, one phase period per rib (all ribs in one expression).
    centre = anat.apex_level - 0.1 - anat.rib_slope * u + anat.rib_curvature * u**2
    phase = (py - centre) / anat.rib_spacing + anat.rib_phase
    frac, thick = np.mod(phase, 1.0), 0.42
    inside = np.clip(frac / thick, 0.0, 1.0)
    profile = np.clip(np.sin(np.pi * inside), 0.0, 1.0) ** 0.35 * (
        0.75 + 0.25 * np.abs(2 * inside - 1) ** 4
    )
    ribs = profile * ((phase > 0) & (phase < 10.5)) * _draw.smoothstep(0.03, 0.09, u) * lateral
    # Anterior ribs: fainter, running down towards the sternum, ending at the costal cartilage.
    front_phase = (py - anat.apex_level + 0.05 - 0.45 * (0.65 - u)) / (1.1 * anat.rib_spacing)
    front = np.clip(np.sin(np.pi * np.clip(np.mod(front_phase, 1.0) / 0.35, 0.0, 1.0)), 0, 1) ** 0.5
    front *= ((front_phase > 0) & (front_phase < 6)) * _draw.smoothstep(0.18, 0.28, u) * lateral
    # Clavicles: from the sternoclavicular joints rising laterally.
    clav_centre = (
        anat.apex_level + anat.clavicle_level - anat.clavicle_slope * u + 0.3 * (u - 0.3) ** 2
    )
    clavicles = _draw.band(py - clav_centre, 0.03) * _draw.smoothstep(0.03, 0.07, u)
    clavicles *= _draw.smoothstep(0.7, 0.6, u)
    return bone + 0.3 * ribs + 0.13 * front + 0.45 * clavicles


def _lung_markings(anat: ChestAnatomy, px: np.ndarray, py: np.ndarray) -> np.ndarray:
    """Hilar shadows and vessels radiating from the hila, fading to the periphery."""
    xc = px - anat.midline
    u = np.abs(xc)
    hilum_u = anat.mediastinal_edge[1] + 0.09
    hilum_y = anat.apex_level + 0.45 * anat.lung_height
    theta = np.arctan2(py - hilum_y, u - hilum_u)
    r = np.hypot(py - hilum_y, u - hilum_u)
    phases = np.random.default_rng(anat.texture_seed).uniform(0, 2 * np.pi, 4)
    side = np.where(xc < 0, phases[2], phases[3])
    vessels = (0.5 + 0.5 * np.cos(13 * theta + 4 * r + phases[0] + side)) ** 8
    vessels += (0.5 + 0.5 * np.cos(21 * theta - 6 * r + phases[1] - side)) ** 10
    hila = _draw.dome(_draw.ellipse(u, py, (hilum_u, hilum_y), (0.07, 0.13)))
    return 0.15 * vessels * np.exp(-r / 0.3) + 0.25 * hila


def _devices(
    anat: ChestAnatomy,
    study: Study,
    size: int,
    px: np.ndarray,
    py: np.ndarray,
    rng: np.random.Generator,
) -> np.ndarray:
    """Tubes, lines and ECG leads (attenuation), drawn in patient space so they move with it."""
    tubes, wires = np.zeros((size, size), np.float32), np.zeros((size, size), np.float32)
    extra = np.zeros((size, size), np.float32)
    mid, apex, height = anat.midline, anat.apex_level, anat.lung_height
    carina = apex + 0.36 * height * study.inspiration
    left_base = _lung_base(anat, 1, study.inspiration)
    n = 6 * size

    def put(canvas: np.ndarray, control: list) -> None:
        pts = _draw.bezier(np.asarray(control), n)
        ix, iy = _draw.to_image(
            pts[:, 0], pts[:, 1], study.rotation_deg, study.shift, anat.body_size
        )
        _draw.splat(canvas, np.stack([ix, iy], axis=1))

    for device in study.devices:
        if device == "et_tube":
            put(
                tubes,
                [(mid + 0.01, -1.3), (mid + 0.02, -0.8), (mid, carina - rng.uniform(0.05, 0.15))],
            )
        elif device == "ng_tube":
            put(
                wires,
                [
                    (mid - 0.02, -1.3),
                    (mid + 0.03, 0.0),
                    (mid + 0.05, left_base + 0.05),
                    (mid + 0.45, left_base + 0.1),
                    (mid + 0.25, left_base + 0.22),
                ],
            )
        elif device == "central_line":
            put(
                wires,
                [
                    (mid - 0.5, -1.1),
                    (mid - 0.2, -0.8),
                    (mid - 0.06, -0.55),
                    (mid - 0.06, apex + rng.uniform(0.45, 0.6) * height),
                ],
            )
        else:  # ECG lead: an electrode (ring + snap) and its wire leaving the field
            cx = mid + rng.uniform(-0.65, 0.65)
            cy = apex + rng.uniform(0.05, 1.0) * height
            r = np.sqrt(_draw.ellipse(px, py, (cx, cy), (0.035, 0.035)))
            extra += _draw.band(r - 1.0, 0.3) + _draw.dome(r**2 * 9.0)
            end = (np.sign(cx - mid) * rng.uniform(1.2, 1.6), rng.uniform(-1.4, 0.4))
            put(wires, [(cx, cy), (cx + rng.uniform(-0.3, 0.3), cy + rng.uniform(-0.4, 0.4)), end])
    scale = size / 128
    return 0.9 * _draw.lines(tubes, 1.1 * scale) + 1.2 * _draw.lines(wires, 0.45 * scale) + extra


@dataclass
class _Body:
    """Attenuation of the patient without findings and devices, with what findings are drawn on."""

    attenuation: np.ndarray  # [H, W]
    labels: np.ndarray  # [H, W] 0 background, 1 right, 2 left lung
    tissue: np.ndarray  # [H, W] soft-tissue thickness profile
    lung_field: np.ndarray  # [H, W] slightly blurred lung mask
    px: np.ndarray  # [H, W] patient coordinates of the pixels
    py: np.ndarray


def _body(
    anat: ChestAnatomy, study: Study, site: XraySite, size: int, texture: np.ndarray
) -> _Body:
    """Body, lungs, mediastinum, heart, bones and soft tissue of one study (no findings)."""
    x, y = _draw.grid(size)
    px, py = _draw.to_patient(x, y, study.rotation_deg, study.shift, anat.body_size)
    right, left = _lung_masks(anat, study.inspiration, site, px, py)
    labels = right.astype(np.uint8) + 2 * left.astype(np.uint8)
    scale = size / 128
    lungs = (labels > 0).astype(np.float32)
    lung_field = ndimage.gaussian_filter(lungs, 0.7 * scale)
    lung_core = ndimage.gaussian_filter(lungs, 5.0 * scale)
    d = anat.soft_tissue_density
    xc = px - anat.midline
    body_half = max(anat.lung_width) + anat.chest_wall
    shoulders = 0.25 * _draw.smoothstep(anat.apex_level + 0.15, anat.apex_level - 0.25, py)
    body_half = body_half + shoulders
    tissue = d * _draw.dome((xc / body_half) ** 2) ** 0.6
    a = tissue * (1.0 - anat.lung_lucency * lung_field * (0.7 + 0.3 * lung_core))
    # Mediastinum, heart, aortic knob, trachea, gastric bubble.
    center, radii, tilt = _heart(anat, study.inspiration, site)
    a += 0.3 * d * _draw.dome(_draw.ellipse(px, py, center, radii, -tilt))
    knob = (
        anat.midline + anat.mediastinal_edge[0] + 0.6 * anat.aortic_knob_radius,
        anat.apex_level + 0.38 * anat.lung_height,
    )
    a += 0.3 * d * _draw.dome(_draw.ellipse(px, py, knob, (anat.aortic_knob_radius,) * 2))
    carina = anat.apex_level + 0.36 * anat.lung_height * study.inspiration
    a -= 0.35 * d * _draw.band(xc, 0.03) * _draw.smoothstep(carina + 0.02, carina - 0.04, py)
    if anat.gastric_bubble > 0:
        bubble = (anat.midline + 0.32, _lung_base(anat, 1, study.inspiration) + 0.06)
        radii_bubble = (anat.gastric_bubble, 0.7 * anat.gastric_bubble)
        a -= 0.5 * d * _draw.dome(_draw.ellipse(px, py, bubble, radii_bubble)) ** 0.5
    markings = anat.interstitial_markings * _lung_markings(anat, px, py)
    a += d * lung_field * (markings + 0.05 * _sample(texture, px, py))
    a += _bones(anat, px, py, body_half)
    if anat.breast_shadow > 0:
        for sign in (-1.0, 1.0):
            c = (anat.midline + sign * 0.36, _lung_base(anat, 1, study.inspiration) - 0.12)
            a += anat.breast_shadow * _draw.dome(_draw.ellipse(px, py, c, (0.32, 0.24))) ** 0.5
    if site.projection == "AP":  # scapulae project over the upper lateral lungs
        for sign in (-1.0, 1.0):
            c = (anat.midline + sign * (max(anat.lung_width) - 0.02), anat.apex_level + 0.3)
            a += 0.2 * _draw.dome(_draw.ellipse(px, py, c, (0.12, 0.3), sign * 15.0))
    return _Body(a, labels, tissue, lung_field, px, py)


def _lesion(
    anat: ChestAnatomy, lesion: Lesion, body: _Body, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray]:
    """Added attenuation ``[H, W]`` of an opacity (irregular airspace filling, edges from ``rng``)
    or a nodule (a small sphere), and its visible region ``[H, W]`` bool."""
    px, py, lung_field = body.px, body.py, body.lung_field
    shape = _draw.ellipse(px, py, lesion.center, (lesion.radius,) * 2)
    if lesion.kind == "opacity":
        scale = px.shape[0] / 128
        shape = shape + 0.4 * _draw.smooth_noise(rng, px.shape, 3.0 * scale)
        patch = _draw.smoothstep(1.1, 0.5, shape) * lung_field
        return lesion.density * anat.lung_lucency * body.tissue * patch, patch >= 0.5
    d = anat.soft_tissue_density
    return lesion.density * d * _draw.dome(shape) * lung_field, (shape < 1.0) & (lung_field > 0.5)


def _attenuation(
    anat: ChestAnatomy,
    study: Study,
    site: XraySite,
    size: int,
    texture: np.ndarray,
    rng: np.random.Generator,
) -> tuple[np.ndarray, np.ndarray]:
    """Attenuation map ``[H, W]`` and label map ``[H, W]`` (0 background, 1 right, 2 left lung)."""
    body = _body(anat, study, site, size, texture)
    a = body.attenuation
    if study.finding != "none":
        lesion = Lesion(
            study.finding,
            study.finding_side,
            study.finding_zone,
            study.finding_center,
            study.finding_radius,
            study.finding_density,
        )
        a += _lesion(anat, lesion, body, rng)[0]
    a += _devices(anat, study, size, body.px, body.py, rng)
    return a, body.labels


def _sample(field: np.ndarray, px: np.ndarray, py: np.ndarray) -> np.ndarray:
    """Bilinear sample of a patient-fixed field ``[S, S]`` at patient coordinates."""
    size = field.shape[0]
    coords = np.stack([(py + 1.0) * size / 2 - 0.5, (px + 1.0) * size / 2 - 0.5])
    return ndimage.map_coordinates(field, coords, order=1, mode="reflect")


def _detector(
    a: np.ndarray, study: Study, site: XraySite, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray]:
    """Displayed image ``[H, W]`` in [0, 1] and the exposed-field mask (False under shutters)."""
    size = a.shape[0]
    scale = size / 128
    x, y = _draw.grid(size)
    v = 1.0 - np.exp(-1.6 / study.exposure * a)
    v = np.clip(v, 0.0, 1.0) ** site.detector_gamma
    v = 0.5 + (v - 0.5) * site.window_contrast
    v = (1.0 - site.scatter_haze) * v + site.scatter_haze * 0.6
    v *= 1.0 - site.heel_effect * (x + 1.0) / 2.0
    v = ndimage.gaussian_filter(v, site.blur_px * scale)
    if site.edge_enhancement > 0:
        v += site.edge_enhancement * (v - ndimage.gaussian_filter(v, 4.0 * scale))
    v += site.quantum_noise * (0.5 + v) * rng.standard_normal(v.shape).astype(np.float32)
    exposed = np.ones_like(v, dtype=bool)
    if site.collimation > 0:
        tx, ty = _draw.to_patient(x, y, rng.normal(0.0, 2.0), (0.0, 0.0))
        margins = rng.uniform(0.3, 1.7, 4) * site.collimation
        exposed = (tx > -1 + margins[0]) & (tx < 1 - margins[1])
        exposed &= (ty > -1 + margins[2]) & (ty < 1 - margins[3])
        v = np.where(exposed, v, 0.9 + 0.02 * rng.standard_normal(v.shape))
    height = max(5, round(0.055 * size))
    for i, text in enumerate(site.markers):
        stamp = _draw.text_stamp(text, height)
        row = round(rng.uniform(0.02, 0.06) * size) + (height + 2) * (i // 2)
        col = round(rng.uniform(0.03, 0.08) * size)
        col = col if i % 2 == 0 else size - col - stamp.shape[1]
        _draw.paste_max(v, 0.97 * stamp, row, col)
    return np.clip(v, 0.0, 1.0).astype(np.float32), exposed


def _report(anat: ChestAnatomy, study: Study, site: XraySite, rng: np.random.Generator) -> str:
    """Templated radiology report naming the finding and its location (LRCLR chapter)."""
    if study.finding == "opacity":
        kind = rng.choice(["Opacity", "Patchy opacity", "Airspace opacity"])
        parts = [f"{kind} in the {study.finding_side} {study.finding_zone} zone."]
    elif study.finding == "nodule":
        mm = round(study.finding_radius * FIELD_OF_VIEW_MM)
        parts = [f"{mm} mm nodule in the {study.finding_side} {study.finding_zone} zone."]
    else:
        parts = [
            str(
                rng.choice(
                    ["The lungs are clear.", "No focal consolidation.", "No focal lung opacity."]
                )
            )
        ]
    if site.projection == "AP":
        parts.append("Heart size cannot be assessed on an AP film.")
    else:
        enlarged = anat.cardiothoracic_ratio > 0.5
        parts.append("The heart is enlarged." if enlarged else "Heart size is normal.")
    sentences = {
        "et_tube": "Endotracheal tube in situ.",
        "ng_tube": "Nasogastric tube tip below the diaphragm.",
        "central_line": "Right central venous catheter tip in the SVC.",
        "ecg_lead": "ECG leads overlie the chest.",
    }
    parts += [sentences[d] for d in sorted(set(study.devices))]
    parts.append("No pneumothorax.")
    return " ".join(parts)


def make_chest_xrays(
    n_patients: int = 60,
    n_times: int = 4,
    sites: tuple[str, ...] = ("A", "B", "C"),
    size: int = 128,
    seed: int = 0,
) -> SliceSet:
    """Chest X-ray phantom: ``n_patients`` x ``n_times`` images ``[N, size, size]`` with lung masks.

    Classes ``("background", "right_lung", "left_lung")``; radiological convention: the patient's
    RIGHT lung is on the image LEFT. Patient ``p`` belongs to ``sites[p % len(sites)]`` (profiles
    in :data:`XRAY_SITES`). A patient keeps their anatomy (:class:`ChestAnatomy`) over time points;
    each :class:`Study` changes inspiration, rotation, position, exposure, noise, findings
    (~70 %: a consolidation or a nodule inside a lung; lung labels include them) and devices.
    Patient ``p`` gets the same anatomy for a given ``seed`` whatever ``n_patients`` is.

    Extra meta columns: ``finding``, ``finding_side``, ``finding_zone``, ``devices`` (count),
    ``report`` (templated text), ``exposure``, ``rotation_deg``, ``inspiration``.
    """
    _common.check_ints(n_patients=(n_patients, 1), n_times=(n_times, 1), size=(size, 32))
    sites = _common.check_sites(sites, XRAY_SITES)
    images = np.empty((n_patients * n_times, size, size), np.float32)
    masks = np.empty((n_patients * n_times, size, size), np.uint8)
    rows = []
    for p, site_name, patient_seed in _common.patients(seed, n_patients, sites):
        site = XRAY_SITES[site_name]
        anat = _sample_anatomy(np.random.default_rng(patient_seed))
        texture = _draw.smooth_noise(
            np.random.default_rng(anat.texture_seed), (size, size), size / 128
        )
        for t, study_seed in enumerate(patient_seed.spawn(n_times)):
            rng = np.random.default_rng(study_seed)
            study = _sample_study(anat, site, rng)
            a, labels = _attenuation(anat, study, site, size, texture, rng)
            i = p * n_times + t
            images[i], exposed = _detector(a, study, site, rng)
            masks[i] = labels * exposed
            rows.append(
                {
                    **_image_row(p, t, site_name),
                    "finding": study.finding,
                    "finding_side": study.finding_side,
                    "finding_zone": study.finding_zone,
                    "devices": len(study.devices),
                    "report": _report(anat, study, site, rng),
                    "exposure": study.exposure,
                    "rotation_deg": study.rotation_deg,
                    "inspiration": study.inspiration,
                }
            )
    return SliceSet(images, masks, pd.DataFrame(rows), XRAY_CLASSES, "phantom_xray", _xray_info(size, seed, sites))


def _image_row(p: int, t: int, site: str) -> dict:
    """The meta columns every 2-D X-ray row shares (no volume: depth NaN, one slice)."""
    return {
        "sample_id": f"cxr-p{p:03d}-t{t}",
        "patient_id": f"cxr-p{p:03d}",
        "site": site,
        "time": t,
        "volume_id": "",
        "slice_index": 0,
        "n_slices": 1,
        "depth": np.nan,
    }


def _xray_info(size: int, seed: int, sites: tuple[str, ...]) -> dict:
    """``SliceSet.info`` of the chest X-ray phantoms."""
    return {
        "modality": "xray",
        "source": "medcl_lite built-in phantom (procedural; no patient data)",
        "convention": "radiological: patient's right on the image left",
        "pixel_spacing_mm": FIELD_OF_VIEW_MM / size,
        "seed": int(seed),
        "sites": {name: XRAY_SITES[name].description for name in sites},
    }
