"""Right / left lung labels from lung masks, decided by where the lungs are in the image.

Datasets name their lung masks differently: one dataset's "left" folder holds the patient's left
lung, another's the lung on the image left (docs/methods.md, "CL-TCI: data": JSRT and
Montgomery label them in opposite order). Folder names are therefore not trusted. In a frontal
(PA or AP) radiograph shown in the radiological convention the patient's RIGHT lung is on the
image LEFT, so the mask whose centroid column is smaller becomes class 1 (``"right_lung"``) and
the other class 2 (``"left_lung"``), as in the phantom (:data:`XRAY_CLASSES`).
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage

from medcl_lite.data.phantoms.chest_xray import XRAY_CLASSES

RIGHT, LEFT = XRAY_CLASSES.index("right_lung"), XRAY_CLASSES.index("left_lung")

#: Overlap allowed between the two lung masks, as a fraction of the smaller one (annotation
#: slack at the mediastinum); more than this means the masks are not two separate lungs.
MAX_OVERLAP = 0.01
#: A one-piece mask is cut at its narrowest column only if that column holds at most this
#: fraction of the fullest column (two lungs touching), else it is not two lungs.
MAX_BRIDGE = 0.5


class LungSplitError(ValueError):
    """A one-piece lung mask that cannot be split into two lungs (no narrow bridge): a fault of
    that mask only, so preparers skip its image (other errors stop them)."""


def binary_mask(array: np.ndarray, source: object) -> np.ndarray:
    """``[H, W]`` bool: pixels above half the maximum (0/1, 0/255 and palette masks alike).

    Raises:
        ValueError: the mask is not 2-D or is empty (naming ``source``).
    """
    array = np.asarray(array)
    if array.ndim != 2:
        raise ValueError(f"{source}: a lung mask must be a 2-D image, got shape {array.shape}")
    peak = float(array.max()) if array.size else 0.0
    if peak <= 0:
        raise ValueError(f"{source}: the lung mask is empty (no foreground pixel)")
    return array > peak / 2


def lung_label_map(
    first: np.ndarray, second: np.ndarray, source: object
) -> tuple[np.ndarray, bool]:
    """Label map ``[H, W]`` uint8 (0 background, 1 right lung, 2 left lung) of two lung masks.

    The mask whose centroid column is smaller (image left) is the patient's right lung. Each
    centroid must lie on its own side of the image's vertical midline, and the masks may overlap
    by at most :data:`MAX_OVERLAP` of the smaller one (overlap pixels go to the lung on their
    side of the midpoint between the centroids).

    Returns:
        ``(labels, first_is_right)``: whether ``first`` became the right lung.

    Raises:
        ValueError: shapes differ, a mask is empty, the masks are on the same side or overlap;
            the message names ``source`` (the file(s) the masks came from).
    """
    first, second = np.asarray(first, bool), np.asarray(second, bool)
    if first.shape != second.shape or first.ndim != 2:
        raise ValueError(
            f"{source}: the two lung masks have shapes {first.shape} and {second.shape};"
            " expected the same 2-D shape"
        )
    for mask, which in ((first, "first"), (second, "second")):
        if not mask.any():
            raise ValueError(f"{source}: the {which} lung mask is empty")
    columns = np.arange(first.shape[1])
    centre_a = float((first.sum(axis=0) * columns).sum() / first.sum())
    centre_b = float((second.sum(axis=0) * columns).sum() / second.sum())
    midline = (first.shape[1] - 1) / 2
    if not min(centre_a, centre_b) < midline < max(centre_a, centre_b):
        raise ValueError(
            f"{source}: the two lung masks are not on opposite sides of the image midline"
            f" (centroid columns {centre_a:.1f} and {centre_b:.1f}, midline {midline:.1f});"
            " expected one lung on each side"
        )
    overlap = first & second
    smaller = min(int(first.sum()), int(second.sum()))
    if overlap.sum() > MAX_OVERLAP * smaller:
        raise ValueError(
            f"{source}: the two lung masks overlap in {int(overlap.sum())} pixels"
            f" ({overlap.sum() / smaller:.1%} of the smaller mask; at most {MAX_OVERLAP:.0%}"
            " allowed): they are not two separate lungs"
        )
    first_is_right = centre_a < centre_b
    right, left = (first, second) if first_is_right else (second, first)
    labels = np.zeros(first.shape, np.uint8)
    labels[right] = RIGHT
    labels[left] = LEFT
    if overlap.any():
        cut = (centre_a + centre_b) / 2
        labels[overlap & (columns[None, :] < cut)] = RIGHT
        labels[overlap & (columns[None, :] >= cut)] = LEFT
    return labels, first_is_right


def split_lungs(mask: np.ndarray, source: object) -> tuple[np.ndarray, np.ndarray]:
    """Split one binary mask holding both lungs into two masks ``(image left, image right)``.

    The two largest connected components are the lungs; any further piece joins the lung whose
    centroid column is nearer. A mask in one piece (lungs touching at the mediastinum) is cut at
    its narrowest column in the middle 40 % of its width, provided that column is a narrow bridge
    (at most :data:`MAX_BRIDGE` of the fullest column).

    Raises:
        ValueError: the mask is empty (naming ``source``).
        LungSplitError: the mask is one piece that cannot be split into two lungs.
    """
    mask = np.asarray(mask, bool)
    if not mask.any():
        raise ValueError(f"{source}: the lung mask is empty")
    components, count = ndimage.label(mask)
    columns = np.arange(mask.shape[1])
    if count >= 2:
        sizes = ndimage.sum_labels(mask, components, index=np.arange(1, count + 1))
        order = np.argsort(sizes)[::-1] + 1
        centres = ndimage.center_of_mass(mask, components, index=np.arange(1, count + 1))
        col = {k: centres[k - 1][1] for k in range(1, count + 1)}
        a, b = sorted(order[:2], key=lambda k: col[k])
        first = np.zeros_like(mask)
        for k in range(1, count + 1):
            if abs(col[k] - col[a]) <= abs(col[k] - col[b]):
                first |= components == k
        return first, mask & ~first
    occupied = np.flatnonzero(mask.any(axis=0))
    low, high = occupied[0], occupied[-1]
    band = np.arange(int(low + 0.3 * (high - low)), int(low + 0.7 * (high - low)) + 1)
    profile = mask.sum(axis=0)
    if len(band) == 0:
        raise LungSplitError(f"{source}: the lung mask is too narrow to hold two lungs")
    narrowest = band[profile[band] == profile[band].min()]
    cut = int(narrowest[len(narrowest) // 2])  # the middle of the narrowest run of columns
    if profile[cut] > MAX_BRIDGE * profile.max():
        raise LungSplitError(
            f"{source}: the lung mask is one piece without a narrow bridge between two lungs"
            f" (narrowest middle column {cut} holds {int(profile[cut])} pixels, the fullest"
            f" {int(profile.max())}); cannot split it into right and left lungs"
        )
    first = mask & (columns[None, :] < cut)
    return first, mask & ~first
