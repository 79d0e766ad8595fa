"""Batch samplers for pretraining: plain shuffling, or k images of each patient per batch.

CL-TCI (docs/methods.md, "CL-TCI") makes every image of the same patient a positive. With a plain
shuffle, same-patient partners meet in a SimCLR batch only by chance: with P patients of T
images each and batch size B, an image has on average about (T - 1)(B - 1)/(P·T - 1) partners
in its batch. :class:`PatientBatchSampler` puts ``k`` images of each patient side by side, so
every anchor has ``k - 1`` same-patient positives besides its own second view. MoCo needs it
less: its queue holds thousands of keys, many from the same patient.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence

import numpy as np
import torch
from torch.utils.data import Sampler

__all__ = ["PatientBatchSampler", "same_patient_rate"]


class PatientBatchSampler(Sampler[list[int]]):
    """Batches of dataset positions in which patients come in groups of ``k`` images.

    Each epoch every image is used once: each patient's images are shuffled and cut into chunks
    of ``k`` (the last chunk of a patient may be shorter), the chunks are shuffled, laid end to
    end and cut into batches of ``batch_size`` (the incomplete last batch is dropped, as in the
    plain loader). Randomness comes from ``generator`` only, so checkpoints that save its state
    resume the same batches.

    Args:
        patients: ``[N]`` patient code of each dataset position (any integers or strings).
        batch_size: images per batch; a multiple of ``k`` keeps the groups whole.
        k: images of one patient per group (2 = pairs of time points).
        generator: a seeded ``torch.Generator``.
    """

    def __init__(
        self,
        patients: Sequence | np.ndarray,
        batch_size: int,
        k: int = 2,
        generator: torch.Generator | None = None,
    ) -> None:
        patients = np.asarray(patients)
        if patients.ndim != 1 or len(patients) == 0:
            raise ValueError(f"patients must be a non-empty 1-D array, got shape {patients.shape}")
        if not 1 <= k <= batch_size:
            raise ValueError(f"images_per_patient k={k} must be in [1, batch_size={batch_size}]")
        if batch_size > len(patients):
            raise ValueError(f"batch_size={batch_size} exceeds the {len(patients)} images")
        self.batch_size, self.k = int(batch_size), int(k)
        self.generator = generator if generator is not None else torch.Generator()
        _, codes = np.unique(patients, return_inverse=True)
        order = np.argsort(codes, kind="stable")
        self._groups = np.split(order, np.cumsum(np.bincount(codes))[:-1])  # positions per patient

    def __len__(self) -> int:
        return sum(len(g) for g in self._groups) // self.batch_size

    def _permutation(self, n: int) -> np.ndarray:
        return torch.randperm(n, generator=self.generator).numpy()

    def __iter__(self) -> Iterator[list[int]]:
        chunks = []
        for group in self._groups:
            shuffled = group[self._permutation(len(group))]
            chunks += [shuffled[s : s + self.k] for s in range(0, len(shuffled), self.k)]
        flat = np.concatenate([chunks[i] for i in self._permutation(len(chunks))])
        for b in range(len(self)):
            yield flat[b * self.batch_size : (b + 1) * self.batch_size].tolist()


def same_patient_rate(batches: Sequence[Sequence[int]], patients: Sequence | np.ndarray) -> float:
    """Fraction of images whose batch holds at least one other image of the same patient.

    ``batches`` are lists of dataset positions (a batch sampler's output); ``patients`` the
    patient code of each position. This is the fraction of anchors that get a temporal positive
    besides their own second view.
    """
    patients = np.asarray(patients)
    hits = total = 0
    for batch in batches:
        codes = patients[np.asarray(batch)]
        _, inverse, counts = np.unique(codes, return_inverse=True, return_counts=True)
        hits += int((counts[inverse] > 1).sum())
        total += len(codes)
    return hits / total if total else float("nan")
