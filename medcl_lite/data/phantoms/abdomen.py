"""Multi-organ abdominal CT phantom: axial contrast CT of the upper abdomen (LRC chapter).

Why it looks like this (docs/design.md, "Data"; docs/methods.md, "PCL" and "LRC"): what an axial
slice shows depends on its normalised depth ``(slice_index + 1) / n_slices``, and its organs have
textured interiors and boundaries for Felzenszwalb superpixels to find. Each volume runs from the
dome of the liver (depth near 0, superior) to below the kidneys (depth 1, inferior):

* top: lung bases (air) around the liver dome, the inferior tip of the heart;
* upper: a large liver (patient's right), spleen (posterior left), stomach (anterior left) with
  fluid or food and often an air-fluid level, ribs;
* middle: the liver tapers, gallbladder, pancreas (unlabelled), kidneys appear;
* lower: kidneys (the right one a little lower), bowel loops (unlabelled), psoas muscles.

Context on every slice (unlabelled): body outline, subcutaneous fat, abdominal wall muscle,
vertebral body and spinal canal, paraspinal muscles, aorta and inferior vena cava. Patients differ
in body size and fat, organ sizes, positions and depth ranges, rotation and slice count.
Room for pretraining to help (docs/methods.md, "Built-in data: room for pretraining to help"):
body habitus, organ size (hepato- and splenomegaly), organ position and rotation vary beyond what
fine-tuning's light augmentation undoes (zoom 0.9-1.1), and about half the livers hold hypodense
lesions (:data:`LIVER_LESIONS`: metastases or cysts, labelled liver as annotators do), which one
labelled volume may not show.
Radiological display: anterior up, the patient's right on the image LEFT (liver image left,
spleen and stomach image right). Coordinates below are the patient's in the display frame
(:mod:`._draw`): ``x < 0`` is the patient's right, ``y < 0`` anterior.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd
import scipy.fft as sfft
from scipy import ndimage

from medcl_lite.data.phantoms import _common, _draw
from medcl_lite.data.sliceset import SliceSet

ABDOMEN_CLASSES = ("background", "liver", "spleen", "kidney_right", "kidney_left", "stomach")
LIVER, SPLEEN, KIDNEY_RIGHT, KIDNEY_LEFT, STOMACH = 1, 2, 3, 4, 5
TISSUES = ("air", "lung", "fat", "muscle", "bone", "marrow", "csf", "aorta", "ivc", "heart",
           "liver", "hepatic_vessel", "spleen", "renal_cortex", "renal_medulla", "stomach_wall",
           "gastric_fluid", "gastric_food", "pancreas", "bile", "bowel_wall",
           "bowel_content", "oral_contrast", "faeces", "liver_lesion")  # fmt: skip
#: Unenhanced / phase-independent tissues, Hounsfield units (enhanced ones come from the site).
CT_HU = {"air": -1000.0, "lung": -850.0, "fat": -100.0, "muscle": 50.0, "bone": 700.0,
         "marrow": 230.0, "csf": 10.0, "heart": 90.0, "stomach_wall": 60.0,
         "gastric_fluid": 8.0, "gastric_food": 35.0, "pancreas": 95.0, "bile": 5.0,
         "bowel_wall": 55.0, "bowel_content": 15.0, "oral_contrast": 260.0,
         "faeces": -60.0, "liver_lesion": 30.0}  # fmt: skip
#: Correlation lengths (Gaussian sd, pixels at 128 px) of the texture fields: fine, medium, coarse.
TEXTURE_FIELDS_PX = (1.0, 2.5, 6.0)
#: Texture per tissue: (field index into TEXTURE_FIELDS_PX, amplitude in HU).
TEXTURE = {"lung": (1, 40.0), "fat": (1, 14.0), "muscle": (0, 10.0), "marrow": (0, 70.0),
           "liver": (1, 12.0), "spleen": (1, 10.0), "renal_cortex": (0, 14.0),
           "renal_medulla": (0, 10.0), "gastric_fluid": (2, 8.0), "gastric_food": (0, 45.0),
           "pancreas": (0, 20.0), "bowel_content": (1, 10.0), "oral_contrast": (1, 40.0),
           "faeces": (0, 120.0), "heart": (1, 15.0), "liver_lesion": (0, 12.0)}  # fmt: skip
#: CT display window mapped to [0, 1]: ``HU = lo + image * (hi - lo)`` inside the window.
CT_WINDOW_HU = (-200.0, 300.0)
#: Slice spacing; a patient's craniocaudal extent is ``n_slices`` times it (more slices: longer).
SLICE_SPACING_MM = 5.0
#: Amplitude (sd, normalised units) of the smooth displacement that bends every outline.
WARP = 0.025
#: Hypodense liver lesions (metastases, cysts; 30 HU, darker than enhanced liver, labelled liver):
#: the share of patients that have any, how many (both ends included) and their radius range.
LIVER_LESIONS = {"share": 0.5, "count": (1, 4), "radius": (0.04, 0.12)}
#: Rotation of the patient in the image: standard deviation and clip (degrees).
ROTATION_DEG = (6.0, 15.0)


@dataclass(frozen=True)
class AbdomenSite:
    """Scanner / protocol profile of a site (enhanced tissues in HU, noise, kernel)."""

    description: str
    aorta_hu: float
    ivc_hu: float
    hepatic_vessel_hu: float  # portal and hepatic veins inside the liver
    liver_hu: float
    spleen_hu: float
    spleen_heterogeneity_hu: float  # arterial-phase arciform pattern (coarse field amplitude)
    renal_cortex_hu: float
    renal_medulla_hu: float
    noise_hu: float  # noise sd
    blur_px: float  # reconstruction kernel / partial volume at 128 px (larger: softer)
    texture: float  # multiplies every tissue texture amplitude


#: Site profiles; "A" is the reference scanner and protocol.
ABDOMEN_SITES: dict[str, AbdomenSite] = {
    "A": AbdomenSite(
        description="portal venous phase (70 s), standard kernel, low noise",
        aorta_hu=170.0,
        ivc_hu=155.0,
        hepatic_vessel_hu=175.0,
        liver_hu=105.0,
        spleen_hu=112.0,
        spleen_heterogeneity_hu=4.0,
        renal_cortex_hu=180.0,
        renal_medulla_hu=150.0,
        noise_hu=10.0,
        blur_px=0.5,
        texture=1.0,
    ),
    "B": AbdomenSite(
        description="late arterial phase (35 s) on another scanner: bright aorta and renal"
        " cortex, dark medulla, heterogeneous spleen, liver barely enhanced; soft kernel, more"
        " noise",
        aorta_hu=320.0,
        ivc_hu=75.0,
        hepatic_vessel_hu=120.0,
        liver_hu=75.0,
        spleen_hu=125.0,
        spleen_heterogeneity_hu=45.0,
        renal_cortex_hu=250.0,
        renal_medulla_hu=85.0,
        noise_hu=24.0,
        blur_px=1.1,
        texture=1.3,
    ),
}


@dataclass(frozen=True)
class AbdomenAnatomy:
    """What makes a patient (normalised display units; z: 0 at the liver dome, 1 below the
    kidneys). Organ extents are ``(top, bottom)`` in z; sizes are factors around 1."""

    body_radii: tuple[float, float]
    body_scale: float  # magnification of the whole patient in the image
    subcutaneous_fat: float
    lung_end: float
    liver: tuple[float, float]
    liver_size: float
    spleen: tuple[float, float]
    spleen_size: float
    stomach: tuple[float, float]
    stomach_size: float
    stomach_air: float  # fraction of the stomach's height filled with air (0: none)
    stomach_food: bool
    kidney_left: tuple[float, float]
    kidney_right: tuple[float, float]
    kidney_size: float
    gallbladder: tuple[float, float] | None
    organ_shift: tuple[float, float]  # common offset of the organs against the body
    liver_lesions: tuple[tuple[float, float, float, float], ...]  # x, y, z centre, radius
    bowel: tuple[tuple[float, ...], ...]  # x, y, z centre, z half-extent, radius, content code
    oral_contrast: bool  # positive oral contrast in the small bowel
    rib_phase: float
    coverage: tuple[float, float]  # z of the first and last slice
    body_width_mm: float


def _sample_anatomy(rng: np.random.Generator) -> AbdomenAnatomy:
    kidney_left_top = rng.uniform(0.36, 0.44)
    kidney_left_end = rng.uniform(0.82, 0.9)
    drop = rng.uniform(0.03, 0.08)  # the right kidney lies lower (under the liver)
    n_loops = int(rng.integers(14, 22))
    loops = [
        (rng.uniform(-0.5, 0.5), rng.uniform(-0.4, 0.12), rng.uniform(0.42, 1.05),
         rng.uniform(0.08, 0.22), rng.uniform(0.05, 0.1), int(rng.random() < 0.3))
        for _ in range(n_loops)
    ]  # fmt: skip
    colon = [  # ascending (patient's right) and descending colon: faeces with gas
        (rng.uniform(-0.58, -0.48), rng.uniform(-0.05, 0.08), 1.0, rng.uniform(0.3, 0.45),
         rng.uniform(0.08, 0.11), 2),
        (rng.uniform(0.5, 0.6), rng.uniform(0.0, 0.12), 1.0, rng.uniform(0.4, 0.55),
         rng.uniform(0.06, 0.09), 2),
    ]  # fmt: skip
    has_gallbladder = rng.random() < 0.75
    gb_top = rng.uniform(0.32, 0.42)
    liver_extent = (rng.uniform(-0.03, 0.04), rng.uniform(0.62, 0.74))
    n_lesions = int(rng.integers(LIVER_LESIONS["count"][0], LIVER_LESIONS["count"][1] + 1))
    lesions = [
        (rng.uniform(-0.6, -0.2), rng.uniform(-0.22, 0.2), rng.uniform(liver_extent[0] + 0.05, 0.6),
         rng.uniform(*LIVER_LESIONS["radius"]))
        for _ in range(n_lesions if rng.random() < LIVER_LESIONS["share"] else 0)
    ]  # fmt: skip
    return AbdomenAnatomy(
        body_radii=(rng.uniform(0.82, 0.9), rng.uniform(0.58, 0.68)),
        body_scale=rng.uniform(0.78, 1.15),
        subcutaneous_fat=rng.uniform(0.02, 0.1),
        lung_end=rng.uniform(0.1, 0.2),
        liver=liver_extent,
        liver_size=rng.uniform(0.75, 1.3),
        spleen=(rng.uniform(0.04, 0.1), rng.uniform(0.42, 0.54)),
        spleen_size=rng.uniform(0.65, 1.6),
        stomach=(rng.uniform(0.08, 0.14), rng.uniform(0.48, 0.58)),
        stomach_size=rng.uniform(0.75, 1.2),
        stomach_air=float(rng.uniform(0.15, 0.45)) if rng.random() < 0.65 else 0.0,
        stomach_food=bool(rng.random() < 0.3),
        kidney_left=(kidney_left_top, kidney_left_end),
        kidney_right=(kidney_left_top + drop, min(kidney_left_end + drop, 0.97)),
        kidney_size=rng.uniform(0.85, 1.15),
        gallbladder=(gb_top, gb_top + rng.uniform(0.12, 0.2)) if has_gallbladder else None,
        organ_shift=(rng.normal(0.0, 0.04), rng.normal(0.0, 0.04)),
        liver_lesions=tuple(lesions),
        bowel=tuple(loops + colon),
        oral_contrast=bool(rng.random() < 0.3),
        rib_phase=rng.uniform(0.0, 1.0),
        coverage=(rng.uniform(-0.04, 0.0), rng.uniform(0.99, 1.04)),
        body_width_mm=rng.uniform(300.0, 380.0),
    )


def _profile(z: float, extent: tuple[float, float], rise: float = 0.3) -> float:
    """Cross-section size factor of an organ at ``z``: 0 outside ``extent``, a dome inside
    (reaches 1 after ``rise`` of the extent, tapers to 0 at its bottom)."""
    top, end = extent
    t = (z - top) / (end - top)
    if not 0.0 < t < 1.0:
        return 0.0
    return float(np.sqrt(min(t / rise, 1.0)) * np.sqrt(min((1.0 - t) / (1.0 - rise), 1.0)))


Window = tuple[slice, slice]


class _Canvas:
    """Tissue and label maps ``[H, W]`` of one slice, painted with ellipses in patient
    coordinates. Each shape is evaluated only in the image window around it (speed)."""

    def __init__(self, x: np.ndarray, y: np.ndarray, view: tuple[float, tuple, float]):
        self.x, self.y, self.view = x, y, view  # view: (angle_deg, shift, scale) of to_patient
        self.size = x.shape[0]
        self.tissue = np.zeros(x.shape, np.int8)  # air
        self.labels = np.zeros(x.shape, np.uint8)

    def window(self, center: tuple[float, float], reach: float) -> Window:
        """Rows and columns of the image within ``reach`` (patient units) of ``center``."""
        cx, cy = _draw.to_image(center[0], center[1], *self.view)
        half = (reach + 3 * WARP) * self.view[2] * self.size / 2 + 2.0  # warp: clipped at 3 sd
        col, row = (cx + 1.0) / 2.0 * self.size, (cy + 1.0) / 2.0 * self.size
        n = self.size
        return (
            slice(min(max(int(row - half), 0), n), min(max(int(row + half) + 1, 0), n)),
            slice(min(max(int(col - half), 0), n), min(max(int(col + half) + 1, 0), n)),
        )

    def r2(
        self, win: Window, center: tuple[float, float], radii: tuple[float, float], tilt=0.0
    ) -> np.ndarray:
        """Normalised squared radius of an ellipse (< 1 inside) on the window, float32."""
        x, y = self.x[win], self.y[win]
        dx, dy = x - np.float32(center[0]), y - np.float32(center[1])
        if tilt:
            a = np.deg2rad(tilt)
            c, s = np.float32(np.cos(a)), np.float32(np.sin(a))
            dx, dy = c * dx + s * dy, c * dy - s * dx
        u, v = dx * np.float32(1.0 / radii[0]), dy * np.float32(1.0 / radii[1])
        return u * u + v * v

    def ellipse(
        self, center: tuple[float, float], radii: tuple[float, float], tilt: float = 0.0
    ) -> tuple[Window, np.ndarray]:
        """Window around an ellipse and its inside ``[h, w]`` (bool) on the window."""
        win = self.window(center, max(radii))
        return win, self.r2(win, center, radii, tilt) < 1.0

    def paint(self, win: Window, region: np.ndarray, name: str, label: int | None = 0) -> None:
        """Paint ``region`` of ``win`` with tissue ``name``; set its label (None: keep)."""
        self.tissue[win][region] = TISSUES.index(name)
        if label is not None:
            self.labels[win][region] = label

    def has(self, win: Window, name: str) -> np.ndarray:
        """Where the window already shows tissue ``name``."""
        return self.tissue[win] == TISSUES.index(name)


def _slice(anat: AbdomenAnatomy, z: float, canvas: _Canvas) -> None:
    """Paint the axial slice at depth ``z`` onto an empty ``canvas``."""
    full = (slice(None), slice(None))
    rx, ry = anat.body_radii
    body = (canvas.r2(full, (0.0, 0.02), (rx, ry)) < 1) & (canvas.y < 0.02 + 0.93 * ry)  # table
    canvas.paint(full, body, "fat")
    fat = anat.subcutaneous_fat
    wall_radii = (rx - fat, ry - 0.7 * fat)
    canvas.paint(full, canvas.r2(full, (0.0, 0.02), wall_radii) < 1, "muscle")
    cavity_radii = (wall_radii[0] - 0.04, wall_radii[1] - 0.035)
    cavity = canvas.r2(full, (0.0, 0.02), cavity_radii) < 1
    canvas.paint(full, cavity, "fat")  # intra-abdominal and retroperitoneal fat
    spine_y = 0.02 + cavity_radii[1] - 0.22  # centre of the vertebral body
    _spine_and_ribs(anat, z, canvas, wall_radii, spine_y)
    ox, oy = anat.organ_shift
    # Lung bases (posterior costophrenic recesses) and the heart's inferior tip at the top.
    lung = 1.0 - z / anat.lung_end if z < anat.lung_end else 0.0
    if lung > 0:
        for side in (-1.0, 1.0):
            win, inside = canvas.ellipse((side * 0.42, 0.22), (0.36 * lung + 0.08,) * 2)
            canvas.paint(win, inside & cavity[win], "lung")
        win, inside = canvas.ellipse((0.12 + ox, -0.22 + oy), (0.3 * lung, 0.2 * lung + 0.01))
        canvas.paint(win, inside, "heart")
    _bowel(anat, z, canvas, cavity)
    # Pancreas (unlabelled, liver-like density): head by the duodenum, body and tail to the
    # splenic hilum (higher).
    tail = _profile(z, (0.32, 0.56))
    if tail > 0:
        win, inside = canvas.ellipse((0.18 + ox, 0.02 + oy), (0.26, 0.055 * tail + 0.01), -15.0)
        canvas.paint(win, inside, "pancreas")
    head = _profile(z, (0.42, 0.66))
    if head > 0:
        win, inside = canvas.ellipse((-0.1 + ox, 0.0 + oy), (0.09 * head + 0.01, 0.08 * head))
        canvas.paint(win, inside, "pancreas")
    _liver(anat, z, canvas, cavity)
    # Spleen: posterior left (image right), a crescent with the hilum medially.
    spleen = _profile(z, anat.spleen) * anat.spleen_size
    if spleen > 0:
        radii = (0.11 * spleen + 0.02, 0.25 * spleen + 0.02)
        win, inside = canvas.ellipse((0.52 + ox, 0.2 + oy), radii, 35.0)
        hilum = canvas.r2(win, (0.4 + ox, 0.12 + oy), (0.08 * spleen, 0.1 * spleen), 35.0)
        canvas.paint(win, inside & (hilum > 1) & cavity[win], "spleen", SPLEEN)
    _stomach(anat, z, canvas, cavity)
    # Kidneys: posterior, beside the spine; cortex, medulla, sinus fat at the medial hilum.
    for extent, side, label in ((anat.kidney_right, -1.0, KIDNEY_RIGHT),
                                (anat.kidney_left, 1.0, KIDNEY_LEFT)):  # fmt: skip
        k = _profile(z, extent, rise=0.45) * anat.kidney_size
        if k <= 0:
            continue
        centre = (side * 0.31 + ox, spine_y - 0.03 + oy)
        radii = (0.1 * k + 0.015, 0.15 * k + 0.015)
        win = canvas.window(centre, max(radii))
        r2 = canvas.r2(win, centre, radii, side * 35.0)
        canvas.paint(win, r2 < 1, "renal_cortex", label)
        canvas.paint(win, r2 < 0.45, "renal_medulla", label)
        if k > 0.6:  # the hilum opens medially and anteriorly: sinus fat, unlabelled
            sinus = canvas.r2(win, (centre[0] - side * 0.08 * k, centre[1] - 0.02), (0.05 * k,) * 2)
            canvas.paint(win, sinus < 1, "fat")
    # Great vessels in front of the spine (the IVC runs behind and through the liver).
    canvas.paint(*canvas.ellipse((0.05, spine_y - 0.15), (0.05, 0.05)), "aorta")
    canvas.paint(*canvas.ellipse((-0.11 + ox, spine_y - 0.16 + oy), (0.065, 0.05)), "ivc")
    canvas.paint(full, ~body, "air")


def _spine_and_ribs(
    anat: AbdomenAnatomy, z: float, canvas: _Canvas, wall_radii: tuple, spine_y: float
) -> None:
    """Vertebra, spinal canal, paraspinal and psoas muscles, and rib cross-sections."""
    for side in (-1.0, 1.0):
        canvas.paint(*canvas.ellipse((side * 0.12, spine_y + 0.22), (0.1, 0.09)), "muscle")
    psoas = _profile(z, (0.45, 1.4), rise=0.4)
    if psoas > 0:
        for side in (-1.0, 1.0):
            radii = (0.06 * psoas + 0.01, 0.07 * psoas + 0.01)
            canvas.paint(*canvas.ellipse((side * 0.13, spine_y + 0.01), radii), "muscle")
    win = canvas.window((0.0, spine_y + 0.05), 0.2)
    vertebra = canvas.r2(win, (0.0, spine_y), (0.1, 0.085))
    canvas.paint(win, vertebra < 1, "bone")
    canvas.paint(win, vertebra < 0.65, "marrow")
    canvas.paint(win, canvas.r2(win, (0.0, spine_y + 0.135), (0.06, 0.05)) < 1, "bone")
    canvas.paint(win, canvas.r2(win, (0.0, spine_y + 0.125), (0.035, 0.03)) < 1, "csf")
    if z < 0.7:  # lateral and posterior ribs that come and go with z
        for k, angle in enumerate((20.0, 45.0, 70.0, 110.0, 135.0, 160.0, 200.0)):
            if np.sin(2 * np.pi * (2.5 * z + anat.rib_phase + 0.37 * k)) > 0.2:
                a = np.deg2rad(angle)
                c = ((wall_radii[0] - 0.02) * np.cos(a), 0.02 + (wall_radii[1] - 0.02) * np.sin(a))
                canvas.paint(*canvas.ellipse(c, (0.03, 0.022), angle), "bone")


def _bowel(anat: AbdomenAnatomy, z: float, canvas: _Canvas, cavity: np.ndarray) -> None:
    """Small bowel loops (fluid, gas or oral contrast) and colon (faeces), unlabelled."""
    ox, oy = anat.organ_shift
    fluid = "oral_contrast" if anat.oral_contrast else "bowel_content"
    for bx, by, bz, half, radius, content in anat.bowel:
        f = 1.0 - ((z - bz) / half) ** 2
        if f <= 0:
            continue
        r = radius * np.sqrt(f) + 0.01
        win = canvas.window((bx + ox, by + oy), r)
        r2 = canvas.r2(win, (bx + ox, by + oy), (r, 0.8 * r))
        canvas.paint(win, (r2 < 1) & cavity[win], "bowel_wall")
        inside = (fluid, "air", "faeces")[int(content)]
        canvas.paint(win, (r2 < 0.5) & cavity[win], inside)


def _liver(anat: AbdomenAnatomy, z: float, canvas: _Canvas, cavity: np.ndarray) -> None:
    """Liver (right lobe against the right wall, left lobe over the midline up top), its
    vessels (labelled liver, as annotated) and the gallbladder (unlabelled)."""
    liver = _profile(z, anat.liver, rise=0.18) * anat.liver_size
    ox, oy = anat.organ_shift
    if liver > 0:
        t = (z - anat.liver[0]) / (anat.liver[1] - anat.liver[0])
        centre = (-0.38 - 0.1 * t + ox, 0.0 - 0.06 * t + oy)
        radii = (0.46 * liver + 0.02, 0.44 * liver + 0.02)
        win, inside = canvas.ellipse(centre, radii, -20.0)
        canvas.paint(win, inside & cavity[win], "liver", LIVER)
        left_lobe = liver * max(1.0 - t / 0.5, 0.0)
        if left_lobe > 0:
            radii = (0.4 * left_lobe + 0.01, 0.16 * left_lobe + 0.01)
            win, inside = canvas.ellipse((0.02 + ox, -0.24 + oy), radii, 8.0)
            canvas.paint(win, inside & cavity[win], "liver", LIVER)
        for vx, vy, vr in ((-0.32, -0.06, 0.035), (-0.16, 0.0, 0.03), (-0.48, 0.08, 0.025),
                           (-0.05, -0.2, 0.025)):  # fmt: skip
            win, inside = canvas.ellipse((vx + ox, vy + oy), (vr, vr))
            canvas.paint(win, inside & canvas.has(win, "liver"), "hepatic_vessel", None)
        for lx, ly, lz, radius in anat.liver_lesions:  # spheres (z: 1 unit ~ 100 mm, in-plane ~ 170)
            r = radius * np.sqrt(max(1.0 - ((z - lz) / (1.7 * radius)) ** 2, 0.0))
            if r > 0.005:
                win, inside = canvas.ellipse((lx + ox, ly + oy), (r, r))
                canvas.paint(win, inside & canvas.has(win, "liver"), "liver_lesion", None)
    gb = 0.0 if anat.gallbladder is None else _profile(z, anat.gallbladder)
    if gb > 0:
        win, inside = canvas.ellipse((-0.2 + ox, -0.2 + oy), (0.07 * gb + 0.01, 0.09 * gb + 0.01))
        canvas.paint(win, inside, "bile")


def _stomach(anat: AbdomenAnatomy, z: float, canvas: _Canvas, cavity: np.ndarray) -> None:
    """Stomach, anterior left: wall, fluid or food, an air-fluid level (supine: air anterior)."""
    stomach = _profile(z, anat.stomach, rise=0.35) * anat.stomach_size
    if stomach <= 0:
        return
    ox, oy = anat.organ_shift
    t = (z - anat.stomach[0]) / (anat.stomach[1] - anat.stomach[0])
    centre = (0.34 - 0.22 * t + ox, -0.12 - 0.16 * t + oy)
    radii = (0.22 * stomach + 0.02, 0.18 * stomach + 0.02)
    win = canvas.window(centre, max(radii))
    r2 = canvas.r2(win, centre, radii, -25.0)
    outer = (r2 < 1) & cavity[win]
    inner = outer & (canvas.r2(win, centre, (radii[0] - 0.035, radii[1] - 0.035), -25.0) < 1)
    canvas.paint(win, outer, "stomach_wall", STOMACH)
    canvas.paint(win, inner, "gastric_food" if anat.stomach_food else "gastric_fluid", STOMACH)
    if anat.stomach_air > 0:
        level = centre[1] - radii[1] + 2 * radii[1] * anat.stomach_air
        canvas.paint(win, inner & (canvas.y[win] < level), "air", STOMACH)


def _tissue_tables(site: AbdomenSite) -> tuple[np.ndarray, np.ndarray]:
    """Per-tissue mean HU ``[T]`` and texture amplitude per field ``[3, T]`` (HU) for ``site``."""
    hu = dict(CT_HU)
    hu.update(
        aorta=site.aorta_hu,
        ivc=site.ivc_hu,
        hepatic_vessel=site.hepatic_vessel_hu,
        liver=site.liver_hu,
        spleen=site.spleen_hu,
        renal_cortex=site.renal_cortex_hu,
        renal_medulla=site.renal_medulla_hu,
    )
    values = np.array([hu[t] for t in TISSUES], np.float32)
    amplitude = np.zeros((len(TEXTURE_FIELDS_PX), len(TISSUES)), np.float32)
    for name, (field, amp) in TEXTURE.items():
        amplitude[field, TISSUES.index(name)] = site.texture * amp
    amplitude[2, TISSUES.index("spleen")] += site.spleen_heterogeneity_hu  # patchy enhancement
    return values, amplitude


def _texture_fields(rng: np.random.Generator, n: int, size: int) -> np.ndarray:
    """Smooth random fields ``[F, n, size, size]`` (zero mean, unit sd per slice), one per
    correlation length in :data:`TEXTURE_FIELDS_PX` (scaled to ``size``); periodic, via FFT."""
    sigmas = np.asarray(TEXTURE_FIELDS_PX, np.float32) * (size / 128)
    noise = rng.standard_normal((len(sigmas), n, size, size), dtype=np.float32)
    f2 = np.fft.fftfreq(size)[:, None] ** 2 + np.fft.rfftfreq(size)[None, :] ** 2
    gain = np.exp(-2.0 * np.pi**2 * sigmas[:, None, None] ** 2 * f2).astype(np.float32)
    fields = sfft.irfft2(sfft.rfft2(noise) * gain[:, None], s=(size, size))
    fields -= fields.mean(axis=(2, 3), keepdims=True)
    fields /= fields.std(axis=(2, 3), keepdims=True) + 1e-8
    return fields


def _render_volume(
    anat: AbdomenAnatomy, site: AbdomenSite, n_slices: int, size: int, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray]:
    """Images ``[D, H, W]`` in [0, 1] (CT window) and labels ``[D, H, W]`` of one volume."""
    angle = float(np.clip(rng.normal(0.0, ROTATION_DEG[0]), -ROTATION_DEG[1], ROTATION_DEG[1]))
    view = (angle, (rng.normal(0.0, 0.03), rng.normal(0.0, 0.03)), anat.body_scale)
    x, y = _draw.to_patient(*_draw.grid(size), *view)
    # A smooth per-patient displacement makes outlines less geometric (the same on every slice).
    warp = [np.clip(_draw.smooth_noise(rng, (size, size), 12.0 * size / 128), -3, 3) for _ in "xy"]
    x, y = x + WARP * warp[0], y + WARP * warp[1]
    values, amplitude = _tissue_tables(site)
    z_first, z_last = anat.coverage
    zs = z_first + (np.arange(n_slices) + 0.5) / n_slices * (z_last - z_first)
    fields = _texture_fields(rng, n_slices, size)
    raw = np.empty((n_slices, size, size), np.float32)
    labels = np.empty((n_slices, size, size), np.uint8)
    for k, z in enumerate(zs):
        canvas = _Canvas(x, y, view)
        _slice(anat, float(z), canvas)
        t = canvas.tissue
        raw[k] = values[t] + sum(amplitude[f][t] * fields[f, k] for f in range(len(fields)))
        labels[k] = canvas.labels
    blur = site.blur_px * size / 128
    raw = ndimage.gaussian_filter(raw, (0.0, blur, blur))
    raw += site.noise_hu * rng.standard_normal(raw.shape, dtype=np.float32)
    lo, hi = CT_WINDOW_HU
    return np.clip((raw - lo) / (hi - lo), 0.0, 1.0).astype(np.float32), labels


def make_abdominal_volumes(
    n_patients: int = 24,
    sites: tuple[str, ...] = ("A", "B"),
    size: int = 128,
    slices: tuple[int, int] = (16, 28),
    seed: int = 0,
) -> SliceSet:
    """Axial contrast CT volumes of the upper abdomen as slices ``[N, size, size]`` with masks.

    Classes :data:`ABDOMEN_CLASSES` (liver, spleen, right and left kidney, stomach; the
    patient's right kidney is on the image left). One volume per patient (patient ``p`` at
    ``sites[p % len(sites)]``, profiles in :data:`ABDOMEN_SITES`), from the liver dome (first
    slice) to below the kidneys (last slice), with ``n_slices`` drawn from ``slices`` (both ends
    included). Each row carries ``volume_id``, ``slice_index``, ``n_slices``, ``depth =
    (slice_index + 1) / n_slices`` (PCL, eq. 1), ``spacing_x``, ``spacing_y``, ``spacing_z``
    (mm) and ``modality`` ("ct"). Images are the CT window ``info["hu_window"]`` mapped to
    [0, 1] (HU = lo + image * (hi - lo) inside it).
    """
    _common.check_ints(n_patients=(n_patients, 1), size=(size, 32))
    sites = _common.check_sites(sites, ABDOMEN_SITES)
    lo, hi = _common.check_slices(slices)
    images, masks, rows = [], [], []
    for p, site_name, patient_seed in _common.patients(seed, n_patients, sites):
        rng = np.random.default_rng(patient_seed)
        anat = _sample_anatomy(rng)
        n_slices = int(rng.integers(lo, hi + 1))
        volume, labels = _render_volume(anat, ABDOMEN_SITES[site_name], n_slices, size, rng)
        images.append(volume)
        masks.append(labels)
        spacing_xy = anat.body_width_mm / (anat.body_radii[0] * anat.body_scale * size)
        rows += _common.volume_rows(
            f"abdomen-ct-p{p:03d}", f"abdomen-p{p:03d}", site_name, n_slices,
            spacing_xy, SLICE_SPACING_MM, "ct",
        )  # fmt: skip
    info = {
        "modality": "ct",
        "source": "medcl_lite built-in phantom (procedural; no patient data)",
        "view": "axial, liver dome (superior) to below the kidneys (inferior), radiological"
        " display (patient's right on the image left)",
        "seed": int(seed),
        "sites": {name: ABDOMEN_SITES[name].description for name in sites},
        "hu_window": list(CT_WINDOW_HU),
    }
    return SliceSet(
        np.concatenate(images),
        np.concatenate(masks),
        pd.DataFrame(rows),
        ABDOMEN_CLASSES,
        "phantom_abdomen_ct",
        info,
    )
