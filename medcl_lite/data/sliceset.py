"""``SliceSet``: the one in-memory form of every dataset, built-in phantoms and real data alike.

A SliceSet is N 2-D images (chest X-rays, or slices of CT/MRI volumes) with optional label maps
and one metadata row per image. Pairing strategies read the metadata (patient, time, depth), so
the same training code serves every paper (docs/design.md, "Data").
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import pandas as pd

#: Metadata columns every SliceSet carries, with their meaning and the value used when unknown.
META_COLUMNS: dict[str, str] = {
    "sample_id": "unique id of the 2-D image (str)",
    "patient_id": "patient the image belongs to (str); splits are made by it",
    "site": "acquisition site / scanner / dataset (str); the transfer setting changes it",
    "time": "time point of the patient's study, 0, 1, ... (int; 0 for single studies)",
    "volume_id": "volume the slice comes from (str; '' for 2-D images)",
    "slice_index": "index of the slice in its volume (int; 0 for 2-D images)",
    "n_slices": "number of slices of the volume (int; 1 for 2-D images)",
    "depth": "normalised depth (slice_index + 1) / n_slices, PCL eq. 1 (float; NaN for 2-D)",
}


@dataclass
class SliceSet:
    """N images with optional masks and metadata.

    Attributes:
        images: ``[N, H, W]`` float32 in [0, 1].
        masks: ``[N, H, W]`` uint8 class indices into ``classes``, or None (unlabelled).
        meta: N rows with at least the columns of :data:`META_COLUMNS`; extra columns are kept.
        classes: class names, index 0 the background.
        name: a short name for tables and figure titles.
        info: free-form dataset facts (modality, source, licence, spacing unit ...).
    """

    images: np.ndarray
    masks: np.ndarray | None
    meta: pd.DataFrame
    classes: tuple[str, ...] = ("background",)
    name: str = "dataset"
    info: dict = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.images.ndim != 3:
            raise ValueError(f"SliceSet {self.name!r}: images must be [N, H, W], got {self.images.shape}")
        if self.masks is not None and self.masks.shape != self.images.shape:
            raise ValueError(
                f"SliceSet {self.name!r}: masks {self.masks.shape} do not match images {self.images.shape}"
            )
        if len(self.meta) != len(self.images):
            raise ValueError(
                f"SliceSet {self.name!r}: {len(self.meta)} metadata rows for {len(self.images)} images"
            )
        if not np.isfinite(self.images).all():
            bad = np.flatnonzero(~np.isfinite(self.images).reshape(len(self.images), -1).all(axis=1))
            raise ValueError(f"SliceSet {self.name!r}: images {bad[:5].tolist()} contain NaN or inf")
        missing = [c for c in META_COLUMNS if c not in self.meta.columns]
        if missing:
            raise ValueError(f"SliceSet {self.name!r}: metadata lacks columns {missing}")
        self.meta = self.meta.reset_index(drop=True)

    def __len__(self) -> int:
        return len(self.images)

    @property
    def image_size(self) -> tuple[int, int]:
        return self.images.shape[1], self.images.shape[2]

    def subset(self, index) -> SliceSet:
        """A new SliceSet with the rows ``index`` (integer array, list or boolean mask)."""
        index = np.asarray(index)
        if index.dtype == bool:
            index = np.flatnonzero(index)
        return SliceSet(
            images=self.images[index],
            masks=None if self.masks is None else self.masks[index],
            meta=self.meta.iloc[index].reset_index(drop=True),
            classes=self.classes,
            name=self.name,
            info=dict(self.info),
        )

    def codes(self, column: str) -> np.ndarray:
        """Integer codes of a metadata column (e.g. patient ids), stable for this SliceSet.

        Pairing masks compare these integers, so equal strings get equal codes.
        """
        values = self.meta[column].astype(str).to_numpy()
        _, codes = np.unique(values, return_inverse=True)
        return codes.astype(np.int64)


def concat(sets: list[SliceSet], name: str | None = None) -> SliceSet:
    """Stack SliceSets of the same image size and classes (e.g. two sites)."""
    if not sets:
        raise ValueError("concat needs at least one SliceSet")
    first = sets[0]
    for s in sets[1:]:
        if s.image_size != first.image_size or s.classes != first.classes:
            raise ValueError(f"cannot concat {s.name!r} with {first.name!r}: size or classes differ")
    has_masks = all(s.masks is not None for s in sets)
    return SliceSet(
        images=np.concatenate([s.images for s in sets]),
        masks=np.concatenate([s.masks for s in sets]) if has_masks else None,
        meta=pd.concat([s.meta for s in sets], ignore_index=True),
        classes=first.classes,
        name=name or first.name,
        info=dict(first.info),
    )
