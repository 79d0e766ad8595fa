"""What the phantom makers share: argument checks, the per-patient seeds and sites, slice rows.

Every maker draws patient ``p`` from the ``p``-th child of ``SeedSequence(seed)`` and puts it at
``sites[p % len(sites)]``, so patient ``p`` is the same whatever ``n_patients`` is.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping

import numpy as np


def check_ints(**minimums: tuple[object, int]) -> None:
    """Raise ``ValueError`` naming the first ``name=(value, low)`` whose value is not an integer
    ``>= low``."""
    for name, (value, low) in minimums.items():
        if not isinstance(value, (int, np.integer)) or value < low:
            raise ValueError(f"{name} must be an integer >= {low}, got {value!r}")


def check_sites(sites: tuple[str, ...], profiles: Mapping[str, object]) -> tuple[str, ...]:
    """``sites`` as a tuple; ``ValueError`` unless they are distinct keys of ``profiles``."""
    sites = tuple(sites)
    unknown = [s for s in sites if s not in profiles]
    if not sites or unknown or len(set(sites)) != len(sites):
        raise ValueError(f"sites must be distinct names from {sorted(profiles)}, got {sites!r}")
    return sites


def check_slices(slices: tuple[int, int]) -> tuple[int, int]:
    """``(min, max)`` slices per volume as ints; ``ValueError`` unless ``2 <= min <= max``."""
    if len(tuple(slices)) != 2 or not 2 <= int(slices[0]) <= int(slices[1]):
        raise ValueError(f"slices must be (min, max) with 2 <= min <= max, got {slices!r}")
    return int(slices[0]), int(slices[1])


def patients(
    seed: int, n_patients: int, sites: tuple[str, ...]
) -> Iterator[tuple[int, str, np.random.SeedSequence]]:
    """``(p, site, seed_sequence)`` of each patient: the ``p``-th child of ``SeedSequence(seed)``
    at site ``sites[p % len(sites)]``."""
    for p, patient_seed in enumerate(np.random.SeedSequence(seed).spawn(n_patients)):
        yield p, sites[p % len(sites)], patient_seed


def volume_rows(
    volume_id: str,
    patient_id: str,
    site: str,
    n_slices: int,
    spacing_xy: float,
    spacing_z: float,
    modality: str,
) -> list[dict]:
    """Meta rows of a volume's ``n_slices`` slices: ids, ``slice_index``, ``n_slices``, ``depth =
    (slice_index + 1) / n_slices`` (PCL, eq. 1), spacings (mm) and ``modality``; ``time`` 0."""
    return [
        {
            "sample_id": f"{volume_id}-s{k:02d}",
            "patient_id": patient_id,
            "site": site,
            "time": 0,
            "volume_id": volume_id,
            "slice_index": k,
            "n_slices": n_slices,
            "depth": (k + 1) / n_slices,
            "spacing_x": spacing_xy,
            "spacing_y": spacing_xy,
            "spacing_z": spacing_z,
            "modality": modality,
        }
        for k in range(n_slices)
    ]
