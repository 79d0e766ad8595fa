"""Cardiac short-axis volume phantom (MRI or contrast CT) whose anatomy depends on depth.

Why it looks like this (docs/design.md, "Data"; docs/methods.md, "PCL"): PCL calls slices at
similar normalised depth ``(slice_index + 1) / n_slices`` positives, so what a slice shows must
depend on its depth. Each volume runs from above the base of the heart to below the apex:

* above the base: atria, aortic root and pulmonary trunk (blood, but *not* labelled);
* basal slices: a large LV cavity, its myocardium and a large RV;
* mid slices: the LV ring with the RV as a crescent and papillary muscles (labelled LV);
* apical slices: a small LV; the RV ends before the apex; then a myocardial cap;
* below the apex: liver and stomach (unlabelled).

Patients differ in heart size, position, orientation, wall thickness and body shape; tissues
are textured (Felzenszwalb superpixels of the LRC chapter have boundaries to find).
Short-axis display: the RV lies to the image left of the LV.

Room for pretraining to help (docs/methods.md, "Built-in data: room for pretraining to help"):
as in ACDC, every patient belongs to one of five diagnostic groups (:data:`CARDIAC_GROUPS`:
normal, dilated and hypertrophic cardiomyopathy, previous infarction, abnormal right ventricle)
that change the heart's size, wall and RV far beyond what one labelled patient shows, and the
field of view (so the heart's size in pixels) and the short-axis orientation vary by patient
more than fine-tuning's light augmentation undoes (zoom 0.9-1.1, rotation 10 degrees).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd
from scipy import ndimage

from medcl_lite.data.phantoms import _common, _draw
from medcl_lite.data.sliceset import SliceSet

CARDIAC_CLASSES = ("background", "lv", "myocardium", "rv")
TISSUES = ("air", "fat", "muscle", "lung", "blood", "myocardium", "liver", "fluid", "cortex",
           "marrow", "rv_blood")  # fmt: skip
#: bSSFP-like signal (before bias field and noise): bright blood, dark myocardium.
MRI_SIGNAL = {"air": 0.02, "fat": 0.78, "muscle": 0.27, "lung": 0.06, "blood": 0.9,
              "myocardium": 0.3, "liver": 0.42, "fluid": 0.7, "cortex": 0.08, "marrow": 0.55,
              "rv_blood": 0.9}  # fmt: skip
#: Contrast-enhanced CT, Hounsfield units.
CT_HU = {"air": -1000.0, "fat": -100.0, "muscle": 45.0, "lung": -820.0, "blood": 330.0,
         "myocardium": 110.0, "liver": 85.0, "fluid": 15.0, "cortex": 900.0, "marrow": 250.0,
         "rv_blood": 330.0}  # fmt: skip
#: CT display window mapped to [0, 1]: ``HU = lo + image * (hi - lo)`` inside the window.
CT_WINDOW_HU = (-250.0, 550.0)
#: ACDC's five diagnostic groups, drawn with equal chance, as factor ranges on the normal heart:
#: ``heart`` (LV cavity radius), ``wall`` (myocardial thickness relative to the cavity), ``rv``
#: (RV size). Dilated (DCM): a large cavity with a thin wall; hypertrophic (HCM): a small cavity
#: with a thick wall; previous infarction (MINF): a dilated LV with a thinned wall; abnormal RV
#: (ARV): a large RV.
CARDIAC_GROUPS: dict[str, dict[str, tuple[float, float]]] = {
    "NOR": {"heart": (1.0, 1.0), "wall": (1.0, 1.0), "rv": (1.0, 1.0)},
    "DCM": {"heart": (1.3, 1.5), "wall": (0.55, 0.75), "rv": (1.0, 1.2)},
    "HCM": {"heart": (0.7, 0.85), "wall": (1.6, 2.2), "rv": (0.8, 1.0)},
    "MINF": {"heart": (1.1, 1.3), "wall": (0.65, 0.85), "rv": (1.0, 1.1)},
    "ARV": {"heart": (0.9, 1.0), "wall": (1.0, 1.0), "rv": (1.5, 1.9)},
}
#: Field of view (mm) drawn per patient; the image shows ``REFERENCE_FOV_MM / fov_mm`` times the
#: anatomy (ACDC's pixel spacing spans 0.7-1.9 mm: fields of view differ widely).
FOV_MM = (280.0, 420.0)
REFERENCE_FOV_MM = 340.0
#: Rotation of the short axis in the image: standard deviation and clip (degrees).
ROTATION_DEG = (10.0, 25.0)


@dataclass(frozen=True)
class CardiacSite:
    """Scanner / protocol profile of a site."""

    description: str
    blood_enhancement: float  # blood - myocardium contrast relative to the reference protocol
    right_heart_enhancement: float  # RV blood relative to LV blood (CT contrast timing)
    bias_field: float  # MRI coil sensitivity: amplitude of the smooth multiplicative field
    noise: float  # noise sd (MRI: fraction of blood signal; CT: HU)
    blur_px: float  # partial volume / reconstruction kernel at 128 px
    gamma: float  # display / intensity curve
    texture: float  # tissue texture amplitude


#: Site profiles per modality; site "A" is the reference protocol.
CARDIAC_SITES: dict[str, dict[str, CardiacSite]] = {
    "mri": {
        "A": CardiacSite(
            description="1.5 T bSSFP cine, phased-array coil, mild bias field",
            blood_enhancement=1.0,
            right_heart_enhancement=1.0,
            bias_field=0.15,
            noise=0.03,
            blur_px=0.6,
            gamma=1.0,
            texture=0.06,
        ),
        "B": CardiacSite(
            description="3 T bSSFP: strong coil bias field, more noise, lower blood-myocardium"
            " contrast, softer images",
            blood_enhancement=0.75,
            right_heart_enhancement=1.0,
            bias_field=0.45,
            noise=0.06,
            blur_px=1.1,
            gamma=0.8,
            texture=0.1,
        ),
    },
    "ct": {
        "A": CardiacSite(
            description="coronary CT angiography, soft kernel, good LV and RV enhancement",
            blood_enhancement=1.0,
            right_heart_enhancement=1.0,
            bias_field=0.0,
            noise=15.0,
            blur_px=0.6,
            gamma=1.0,
            texture=0.04,
        ),
        "B": CardiacSite(
            description="late arterial timing, sharp kernel: weaker enhancement, RV less enhanced,"
            " more noise",
            blood_enhancement=0.7,
            right_heart_enhancement=0.6,
            bias_field=0.0,
            noise=40.0,
            blur_px=0.3,
            gamma=1.0,
            texture=0.06,
        ),
    },
}


@dataclass(frozen=True)
class CardiacAnatomy:
    """What makes a patient (normalised in-plane units; z: 0 at the base, 1 at the apex)."""

    body_radii: tuple[float, float]
    subcutaneous_fat: float
    lv_center: tuple[float, float]
    heart_size: float  # basal LV cavity radius
    wall_thickness: float
    rv_direction_deg: float  # where the RV lies around the LV (180: image left)
    rv_size: float
    rv_end: float  # z where the RV ends (before the apex)
    apical_cap: float  # z extent of the myocardial cap below the LV cavity
    liver_top: float  # z where the liver dome appears
    stomach_top: float
    coverage: tuple[float, float]  # z of the first and last slice
    long_axis_mm: float
    fov_mm: float
    texture_seed: int
    group: str  # diagnostic group (CARDIAC_GROUPS)


def _sample_anatomy(rng: np.random.Generator) -> CardiacAnatomy:
    group = str(rng.choice(list(CARDIAC_GROUPS)))
    change = {key: rng.uniform(*bounds) for key, bounds in CARDIAC_GROUPS[group].items()}
    normal = rng.uniform(0.16, 0.23)
    size = normal * change["heart"]
    return CardiacAnatomy(
        body_radii=(rng.uniform(0.76, 0.92), rng.uniform(0.52, 0.68)),
        subcutaneous_fat=rng.uniform(0.02, 0.09),
        lv_center=(rng.uniform(0.0, 0.18), rng.uniform(-0.12, 0.05)),
        heart_size=size,
        wall_thickness=rng.uniform(0.3, 0.45) * normal * change["wall"],
        rv_direction_deg=rng.uniform(155.0, 200.0),
        rv_size=rng.uniform(0.8, 1.3) * change["rv"],
        rv_end=rng.uniform(0.68, 0.85),
        apical_cap=rng.uniform(0.06, 0.12),
        liver_top=rng.uniform(0.75, 1.0),
        stomach_top=rng.uniform(0.95, 1.15),
        coverage=(rng.uniform(-0.45, -0.25), rng.uniform(1.2, 1.4)),
        long_axis_mm=rng.uniform(80.0, 100.0) * size / 0.165,
        fov_mm=rng.uniform(*FOV_MM),
        texture_seed=int(rng.integers(2**31)),
        group=group,
    )


def _slice(
    anat: CardiacAnatomy, z: float, x: np.ndarray, y: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Tissue map and label map ``[H, W]`` of the slice at long-axis position ``z``."""
    tissue = np.zeros(x.shape, np.int8)  # air
    labels = np.zeros(x.shape, np.uint8)
    idx = {name: i for i, name in enumerate(TISSUES)}
    body = _draw.ellipse(x, y, (0.0, 0.05), anat.body_radii)
    inner_radii = tuple(r - anat.subcutaneous_fat for r in anat.body_radii)
    thorax_radii = tuple(r - 0.05 for r in inner_radii)
    tissue[body < 1] = idx["fat"]
    tissue[_draw.ellipse(x, y, (0.0, 0.05), inner_radii) < 1] = idx["muscle"]
    tissue[_draw.ellipse(x, y, (0.0, 0.03), thorax_radii) < 1] = idx["lung"]
    # Spine, spinal canal, paraspinal muscles and descending aorta (every slice).
    spine_y = 0.05 + anat.body_radii[1] - 0.2
    for sx in (-0.13, 0.13):
        tissue[_draw.ellipse(x, y, (sx, spine_y + 0.06), (0.09, 0.07)) < 1] = idx["muscle"]
    vertebra = _draw.ellipse(x, y, (0.0, spine_y - 0.02), (0.085, 0.075))
    tissue[vertebra < 1] = idx["cortex"]
    tissue[vertebra < 0.7] = idx["marrow"]
    tissue[_draw.ellipse(x, y, (0.0, spine_y + 0.09), (0.03, 0.03)) < 1] = idx["fluid"]
    tissue[_draw.ellipse(x, y, (0.12, spine_y - 0.1), (0.045, 0.045)) < 1] = idx["blood"]
    # Below the heart: liver dome (patient's right = image left) and stomach.
    if z > anat.liver_top:
        grow = np.sqrt(min((z - anat.liver_top) / 0.35, 1.0))
        liver = _draw.ellipse(x, y, (-0.3, 0.12), (0.38 * grow + 0.02, 0.32 * grow + 0.02), 20)
        tissue[(liver < 1) & (tissue == idx["lung"])] = idx["liver"]
    if z > anat.stomach_top:
        grow = np.sqrt(min((z - anat.stomach_top) / 0.25, 1.0))
        stomach = _draw.ellipse(x, y, (0.38, 0.0), (0.22 * grow + 0.01, 0.2 * grow + 0.01))
        tissue[(stomach < 1) & (tissue == idx["lung"])] = idx["fluid"]
        tissue[(stomach < 1) & (y < -0.1 * grow) & (tissue == idx["fluid"])] = idx["air"]
    cx, cy = anat.lv_center
    a = np.deg2rad(anat.rv_direction_deg)
    direction = np.array([np.cos(a), -np.sin(a)])
    if z < 0:  # above the base: atria and great vessels, unlabelled
        fade = np.clip(1.0 + z / 0.5, 0.0, 1.0)
        mediastinum = _draw.ellipse(x, y, (cx - 0.06, cy + 0.03), (0.26, 0.2))
        tissue[mediastinum < 1] = idx["fat"]
        atrium_left = _draw.ellipse(x, y, (cx + 0.02, cy + 0.14), (0.16 * fade + 0.03, 0.09))
        atrium_right = _draw.ellipse(x, y, (cx - 0.18, cy + 0.06), (0.1 * fade + 0.03, 0.1))
        for region in (atrium_left, atrium_right):
            tissue[region < 1.35] = idx["myocardium"]
        for region in (atrium_left, atrium_right):
            tissue[region < 1] = idx["blood"]
        aorta = _draw.ellipse(x, y, (cx - 0.05, cy - 0.04), (0.06, 0.06))
        trunk = _draw.ellipse(x, y, (cx + 0.06, cy - 0.16), (0.055, 0.055))
        tissue[(aorta < 1) | (trunk < 1)] = idx["blood"]
        return tissue, labels
    # Ventricles (z >= 0).
    r_endo = anat.heart_size * np.sqrt(max(1.0 - z**2.2, 0.0)) * (1.0 - 0.1 * z)
    wall = anat.wall_thickness * (1.0 - 0.35 * min(z, 1.0))
    if z <= 1.0:
        r_epi = r_endo + wall
    else:
        r_epi = (
            0.65 * anat.wall_thickness * np.sqrt(max(1.0 - ((z - 1.0) / anat.apical_cap) ** 2, 0))
        )
    if r_epi <= 0.0:
        return tissue, labels
    tilt = anat.rv_direction_deg
    rv_scale = np.sqrt(max(1.0 - (z / anat.rv_end) ** 2, 0.0))
    free_wall = 0.55 * anat.heart_size * anat.rv_size * rv_scale  # RV cavity depth
    fat_centre = (cx + direction[0] * free_wall / 2, cy + direction[1] * free_wall / 2)
    fat_radii = (r_epi + free_wall / 2 + 0.03, 1.05 * r_epi + 0.03)
    tissue[_draw.ellipse(x, y, fat_centre, fat_radii, -tilt) < 1] = idx["fat"]  # epicardial fat
    if free_wall > 0.01:
        half = 0.5 * (1.15 * r_epi + free_wall)  # along the LV-RV axis, from inside the septum
        width = 1.0 * r_epi + 0.4 * free_wall  # across it: the crescent's horns
        centre = np.array([cx, cy]) + direction * (r_epi + free_wall - half)
        rv_outer = _draw.ellipse(x, y, tuple(centre), (half + 0.015, width + 0.015), -tilt)
        rv = _draw.ellipse(x, y, tuple(centre), (half, width), -tilt)
        tissue[rv_outer < 1] = idx["myocardium"]  # thin RV free wall (not labelled)
        tissue[rv < 1] = idx["rv_blood"]
        labels[rv < 1] = 3
    epi = _draw.ellipse(x, y, (cx, cy), (1.05 * r_epi, 0.95 * r_epi), -tilt)
    tissue[epi < 1] = idx["myocardium"]
    labels[epi < 1] = 2
    if z < 1.0 and r_endo > 0:
        endo = _draw.ellipse(x, y, (cx, cy), (1.05 * r_endo, 0.95 * r_endo), -tilt)
        tissue[endo < 1] = idx["blood"]
        labels[endo < 1] = 1
        if 0.2 < z < 0.8:  # papillary muscles: myocardial signal, labelled LV (as in ACDC)
            for angle in (tilt + 110.0, tilt + 230.0):
                t = np.deg2rad(angle)
                p = (cx + 0.55 * r_endo * np.cos(t), cy - 0.55 * r_endo * np.sin(t))
                tissue[_draw.ellipse(x, y, p, (0.22 * r_endo,) * 2) < 1] = idx["myocardium"]
    return tissue, labels


def _intensities(modality: str, site: CardiacSite) -> np.ndarray:
    """Per-tissue mean value in the modality's raw unit (MRI signal or HU)."""
    table = MRI_SIGNAL if modality == "mri" else CT_HU
    values = np.array([table[t] for t in TISSUES], np.float32)
    blood, myo = table["blood"], table["myocardium"]
    enhanced = myo + site.blood_enhancement * (blood - myo)
    values[TISSUES.index("blood")] = enhanced
    values[TISSUES.index("rv_blood")] = myo + site.right_heart_enhancement * (enhanced - myo)
    return values


def _render_volume(
    anat: CardiacAnatomy,
    site: CardiacSite,
    modality: str,
    n_slices: int,
    size: int,
    rng: np.random.Generator,
) -> tuple[np.ndarray, np.ndarray]:
    """Images ``[D, H, W]`` in [0, 1] and labels ``[D, H, W]`` of one volume."""
    x, y = _draw.grid(size)
    angle = float(np.clip(rng.normal(0.0, ROTATION_DEG[0]), -ROTATION_DEG[1], ROTATION_DEG[1]))
    shift = (rng.normal(0, 0.03), rng.normal(0, 0.03))
    x, y = _draw.to_patient(x, y, angle, shift, REFERENCE_FOV_MM / anat.fov_mm)
    values = _intensities(modality, site)
    scale = size / 128
    z_first, z_last = anat.coverage
    zs = z_first + (np.arange(n_slices) + 0.5) / n_slices * (z_last - z_first)
    raw = np.empty((n_slices, size, size), np.float32)
    labels = np.empty((n_slices, size, size), np.uint8)
    texture_rng = np.random.default_rng(anat.texture_seed)
    if modality == "mri":
        coil = 0.6 * _draw.smooth_noise(texture_rng, (size, size), 25 * scale) - 0.8 * y
        bias = 1.0 + site.bias_field * coil  # brighter near the anterior coil
    for k, z in enumerate(zs):
        tissue, labels[k] = _slice(anat, float(z), x, y)
        image = values[tissue]
        texture = _draw.smooth_noise(rng, (size, size), 1.2 * scale)
        if modality == "mri":
            image = image * (1.0 + site.texture * texture)
        else:
            image = image + 500.0 * site.texture * texture
        image = ndimage.gaussian_filter(image, site.blur_px * scale)
        if modality == "mri":
            sd = site.noise * MRI_SIGNAL["blood"]
            image = image * bias
            real = image + sd * rng.standard_normal(image.shape)
            image = np.hypot(real, sd * rng.standard_normal(image.shape))  # Rician magnitude
        else:
            image = image + site.noise * rng.standard_normal(image.shape)
        raw[k] = image
    if modality == "mri":
        images = np.clip(raw / np.percentile(raw, 99.5), 0.0, 1.0)
    else:
        lo, hi = CT_WINDOW_HU
        images = np.clip((raw - lo) / (hi - lo), 0.0, 1.0)
    return (images**site.gamma).astype(np.float32), labels


def make_cardiac_volumes(
    n_patients: int = 24,
    sites: tuple[str, ...] = ("A", "B"),
    size: int = 128,
    slices: tuple[int, int] = (10, 18),
    seed: int = 0,
    modality: str = "mri",
) -> SliceSet:
    """Cardiac short-axis volumes as 2-D slices ``[N, size, size]`` with LV, myocardium, RV masks.

    One volume per patient (patient ``p`` at ``sites[p % len(sites)]``, profiles in
    :data:`CARDIAC_SITES`), with ``n_slices`` drawn from ``slices`` (both ends included). Each row
    carries ``volume_id``, ``slice_index``, ``n_slices`` and ``depth = (slice_index + 1) /
    n_slices`` (PCL, eq. 1), plus ``spacing_x``, ``spacing_y``, ``spacing_z`` (mm) and
    ``modality``. ``modality="mri"`` gives bSSFP-like images normalised per volume;
    ``modality="ct"`` gives contrast CT in the window ``info["hu_window"]`` (HU = lo + image *
    (hi - lo) inside it).
    """
    _common.check_ints(n_patients=(n_patients, 1), size=(size, 32))
    if modality not in CARDIAC_SITES:
        raise ValueError(f"modality must be one of {sorted(CARDIAC_SITES)}, got {modality!r}")
    profiles = CARDIAC_SITES[modality]
    sites = _common.check_sites(sites, profiles)
    lo, hi = _common.check_slices(slices)
    images, masks, rows = [], [], []
    for p, site_name, patient_seed in _common.patients(seed, n_patients, sites):
        rng = np.random.default_rng(patient_seed)
        anat = _sample_anatomy(rng)
        n_slices = int(rng.integers(lo, hi + 1))
        volume, labels = _render_volume(anat, profiles[site_name], modality, n_slices, size, rng)
        images.append(volume)
        masks.append(labels)
        spacing_z = (anat.coverage[1] - anat.coverage[0]) * anat.long_axis_mm / n_slices
        rows += _common.volume_rows(
            f"{modality}-p{p:03d}", f"cardiac-p{p:03d}", site_name, n_slices,
            anat.fov_mm / size, spacing_z, modality,
        )  # fmt: skip
    info = {
        "modality": modality,
        "source": "medcl_lite built-in phantom (procedural; no patient data)",
        "view": "short axis, base to apex with slices above the base and below the apex",
        "seed": int(seed),
        "sites": {name: profiles[name].description for name in sites},
    }
    if modality == "ct":
        info["hu_window"] = list(CT_WINDOW_HU)
    return SliceSet(
        np.concatenate(images),
        np.concatenate(masks),
        pd.DataFrame(rows),
        CARDIAC_CLASSES,
        f"phantom_cardiac_{modality}",
        info,
    )
