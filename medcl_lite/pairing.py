"""Positive-mask builders: each method's answer to "which pairs are positive?"
(docs/design.md, "The one idea").

Every function returns a boolean mask ``[Nq, Nk]``: entry (i, j) is True when key j is a positive
for query i *in addition to* the query's own other view (SimCLR) or own key (MoCo), which the
losses always count. Keys default to the queries (the in-batch case); pass the queue's metadata
as keys for MoCo. The one masked InfoNCE in :mod:`medcl_lite.losses` consumes these masks.

===========  ==========================================  ========================
strategy     positives of an anchor                      paper
===========  ==========================================  ========================
instance     only its own other view / key               SimCLR, MoCo
temporal     every image of the same patient             CL-TCI (Sec. 3.1)
positional   every slice with ``|Δdepth|`` < θ           PCL (Sec. 2.2, eq. 2)
partition    every slice in the same of P depth bins     GCL "G^D" (Chaitanya 2020)
===========  ==========================================  ========================
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
import torch
from torch import Tensor

__all__ = [
    "DEPTH_TOLERANCE",
    "STRATEGIES",
    "equal_codes",
    "instance",
    "partition",
    "partition_index",
    "positional",
    "positives",
    "temporal",
]


def _as_tensor(x, dtype: torch.dtype) -> Tensor:
    """Codes or depths as a tensor; arrays are copied (a read-only pandas column stays untouched)."""
    return x.to(dtype) if isinstance(x, Tensor) else torch.tensor(np.asarray(x), dtype=dtype)


def instance(n: int, m: int | None = None, device: torch.device | str | None = None) -> Tensor:
    """Identity mask ``[n, m]``: sample i is positive only with itself (SimCLR / MoCo).

    Use it to see the instance-discrimination answer as a picture; the losses add the own view
    themselves, so as *extra* positives instance pairing contributes nothing.
    """
    return torch.eye(n, n if m is None else m, dtype=torch.bool, device=device)


def equal_codes(codes_q, codes_k=None) -> Tensor:
    """``[Nq, Nk]`` bool: True where two integer codes are equal and known (``>= 0``).

    The rule behind :func:`temporal` (patient codes), :func:`partition` (depth bins) and MoCo's
    stale own keys (sample rows, :func:`medcl_lite.train.moco_objective`). Negative codes mean
    "unknown" (e.g. empty queue slots) and never match.
    """
    q = _as_tensor(codes_q, torch.long)
    k = q if codes_k is None else _as_tensor(codes_k, torch.long).to(q.device)
    return (q[:, None] == k[None, :]) & (q[:, None] >= 0) & (k[None, :] >= 0)


def temporal(patient_ids_q, patient_ids_k=None) -> Tensor:
    """CL-TCI: images of the same patient (any time point) are positives.

    Args:
        patient_ids_q: ``[Nq]`` integer patient codes; negative codes mean "unknown" (e.g. empty
            queue slots) and never match.
        patient_ids_k: ``[Nk]`` codes of the keys (queue entries); defaults to the queries.
    Returns:
        ``[Nq, Nk]`` bool, True where the patient codes are equal and known.
    """
    return equal_codes(patient_ids_q, patient_ids_k)


#: Depth differences this close to θ count as exactly θ (float32 rounding of ``(i + 1) / N``).
DEPTH_TOLERANCE = 1e-5


def positional(depth_q, depth_k=None, threshold: float = 0.1) -> Tensor:
    """PCL: slices whose normalised depths differ by less than ``threshold`` are positives.

    Depth is ``(i + 1) / N`` of the slice's own volume (PCL eq. 1), so slices at the same relative
    position of *different* volumes match. θ = 0.1 for CHD CT, 0.35 for ACDC MRI (PCL Sec. 3).
    NaN depths (2-D images, empty queue slots) never match. A slice exactly θ away is a negative:
    depths are float32, in which ``(i + 1) / N`` is rarely exact (0.6 - 0.5 > 0.1 but 0.5 - 0.4 <
    0.1), so differences within :data:`DEPTH_TOLERANCE` of θ count as θ.
    """
    if not 0 < threshold <= 1:
        raise ValueError(f"positional: threshold must be in (0, 1], got {threshold}")
    q = _as_tensor(depth_q, torch.float32)
    k = q if depth_k is None else _as_tensor(depth_k, torch.float32).to(q.device)
    margin = min(DEPTH_TOLERANCE, threshold / 2)
    return (q[:, None] - k[None, :]).abs() < threshold - margin  # NaN compares False


def partition_index(depth, parts: int = 4) -> Tensor:
    """Index 0..parts-1 of the depth bin of each slice; -1 for NaN depth (GCL's partitions).

    Slice ``i`` of ``N`` (depth ``d = (i + 1) / N``) is in bin ``k`` when ``k / parts < d <= (k + 1) /
    parts``, i.e. ``k = ceil(d * parts) - 1``: the depth axis is cut into ``parts`` equal ranges, and
    the volume into ``parts`` runs of consecutive slices (of equal length when ``parts`` divides
    ``N``, else differing by one slice).
    """
    if parts < 1:
        raise ValueError(f"partition: parts must be >= 1, got {parts}")
    d = _as_tensor(depth, torch.float32)
    idx = (torch.ceil(d * parts - 1e-4) - 1).clamp(0, parts - 1)
    return torch.where(torch.isnan(d), torch.full_like(d, -1), idx).long()


def partition(depth_q, depth_k=None, parts: int = 4) -> Tensor:
    """GCL (Chaitanya et al. 2020, strategy G^D): slices in the same depth partition are positives."""
    q = partition_index(depth_q, parts)
    k = q if depth_k is None else partition_index(depth_k, parts).to(q.device)
    return equal_codes(q, k)  # equal, known codes: the same rule as patient ids


def _instance_extra(meta_q: Mapping[str, Tensor], meta_k: Mapping[str, Tensor] | None, **_) -> Tensor:
    n = len(meta_q["patient"])
    m = n if meta_k is None else len(meta_k["patient"])
    return torch.zeros(n, m, dtype=torch.bool, device=meta_q["patient"].device)


#: strategy name -> builder of the extra-positive mask from batch / queue metadata dicts.
STRATEGIES = {
    "instance": _instance_extra,
    "temporal": lambda q, k, **_: temporal(q["patient"], None if k is None else k["patient"]),
    "positional": lambda q, k, threshold=0.1, **_: positional(
        q["depth"], None if k is None else k["depth"], threshold
    ),
    "partition": lambda q, k, parts=4, **_: partition(
        q["depth"], None if k is None else k["depth"], parts
    ),
}


def positives(
    strategy: str,
    meta_q: Mapping[str, Tensor],
    meta_k: Mapping[str, Tensor] | None = None,
    **params,
) -> Tensor:
    """The extra-positive mask ``[Nq, Nk]`` of a named strategy from metadata dicts.

    ``meta_q`` / ``meta_k`` hold ``"patient"`` (long codes) and ``"depth"`` (float) tensors, as the
    datasets yield them and :class:`~medcl_lite.losses.MoCoQueue` stores them. ``params`` are the
    strategy's own (``threshold`` for positional, ``parts`` for partition).
    """
    if strategy not in STRATEGIES:
        raise ValueError(f"unknown pairing strategy {strategy!r}; choose from {sorted(STRATEGIES)}")
    return STRATEGIES[strategy](meta_q, meta_k, **params)
