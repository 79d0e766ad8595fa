"""One masked, multi-positive InfoNCE, and the SimCLR and MoCo forms built on it.

For anchor i with positives P(i) and candidates A(i) (docs/methods.md, "Shared loss")::

    L_i = -1/|P(i)| Σ_{p∈P(i)} log( exp(s(z_i, z_p)/τ) / Σ_{a∈A(i)} exp(s(z_i, z_a)/τ) )

With P(i) = {the other view} this is SimCLR's NT-Xent (Chen et al. 2020, eq. 1); with P(i) = {own
key} and the queue as negatives it is MoCo (He et al. 2020, eq. 1); a pairing mask
(:mod:`medcl_lite.pairing`) adds the positives of CL-TCI, PCL and GCL (supervised-contrastive form,
Khosla et al. 2020, eq. 2 "L_out"). The public CL-TCI/PCL code also multiplies by τ/0.07, a constant
factor we leave out.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

__all__ = ["MoCoQueue", "info_nce", "nt_xent"]


def info_nce(
    query: Tensor,
    keys: Tensor,
    pos_mask: Tensor,
    temperature: float = 0.1,
    exclude: Tensor | None = None,
) -> Tensor:
    """Multi-positive InfoNCE of queries against keys (the loss every method here uses).

    Args:
        query: ``[N, D]`` embeddings (normalised here; cosine similarity).
        keys: ``[M, D]`` embeddings (MoCo: own keys of the batch, then the queue).
        pos_mask: ``[N, M]`` bool, True for positives; every row needs at least one.
        temperature: τ > 0.
        exclude: optional ``[N, M]`` bool of pairs left out of the denominator entirely (NT-Xent:
            an anchor with itself).
    Returns:
        Scalar: mean over queries of the mean over positives of -log softmax.
    """
    if temperature <= 0:
        raise ValueError(f"temperature must be > 0, got {temperature}")
    if query.ndim != 2 or keys.ndim != 2 or query.shape[1] != keys.shape[1]:
        raise ValueError(f"query [N, D] and keys [M, D] expected, got {tuple(query.shape)} and {tuple(keys.shape)}")
    if pos_mask.shape != (query.shape[0], keys.shape[0]):
        raise ValueError(f"pos_mask must be [N, M] = {(query.shape[0], keys.shape[0])}, got {tuple(pos_mask.shape)}")
    pos_mask = pos_mask.bool()
    if exclude is not None:
        pos_mask = pos_mask & ~exclude
    n_pos = pos_mask.sum(dim=1)
    if bool((n_pos == 0).any()):
        raise ValueError(f"info_nce: {int((n_pos == 0).sum())} queries have no positive key")
    q = F.normalize(query.float(), dim=1)
    k = F.normalize(keys.float(), dim=1)
    logits = q @ k.T / temperature  # [N, M]
    if exclude is not None:
        logits = logits.masked_fill(exclude, float("-inf"))
    log_prob = logits - torch.logsumexp(logits, dim=1, keepdim=True)  # stable log-softmax
    log_prob_pos = torch.where(pos_mask, log_prob, torch.zeros_like(log_prob))
    return -(log_prob_pos.sum(dim=1) / n_pos).mean()


def nt_xent(z1: Tensor, z2: Tensor, temperature: float = 0.1, pos_mask: Tensor | None = None) -> Tensor:
    """SimCLR's NT-Xent over the 2N views of N samples, optionally multi-positive.

    Args:
        z1, z2: ``[N, D]`` embeddings of the two views (row i of each comes from sample i).
        temperature: τ (0.1 in CL-TCI / PCL).
        pos_mask: optional ``[N, N]`` bool of extra positive *samples* (a pairing strategy's mask);
            sample j positive for i makes both views of j positives of both views of i.
    Returns:
        Scalar loss; identical embeddings give exactly ``log(2N - 1)`` with ``pos_mask=None``.
    """
    if z1.shape != z2.shape:
        raise ValueError(f"z1 and z2 must have the same shape, got {tuple(z1.shape)} and {tuple(z2.shape)}")
    n = z1.shape[0]
    eye = torch.eye(n, dtype=torch.bool, device=z1.device)
    samples = eye if pos_mask is None else (pos_mask.to(z1.device).bool() | eye)
    views_pos = samples.repeat(2, 2)  # [2N, 2N]: view a of i ~ view b of j
    z = torch.cat([z1, z2], dim=0)
    self_pairs = torch.eye(2 * n, dtype=torch.bool, device=z1.device)
    return info_nce(z, z, views_pos, temperature, exclude=self_pairs)


class MoCoQueue(nn.Module):
    """First-in-first-out queue of MoCo keys *with their metadata* (MoCo Sec. 3.2).

    Storing the metadata (patient code, depth ...) lets a pairing strategy mark queue entries as
    positives (CL-TCI's same-patient keys), and the sample row lets the loss recognise older keys
    of the query's own image, which a queue longer than the data set holds
    (:func:`medcl_lite.train.moco_objective`). Everything lives in buffers, so the queue is saved
    in and restored from checkpoints with the model (unlike lightly's memory bank). Slots not yet
    filled hold random unit keys (as reference MoCo) and metadata ``-1`` / NaN that match nothing;
    a checkpoint written before a field existed loads with that field unknown.

    Args:
        size: number of keys K (3072 in the public CL-TCI code).
        dim: key dimension D.
        fields: metadata names stored per key; ``"depth"`` is float, the others long.
    """

    def __init__(
        self, size: int, dim: int, fields: tuple[str, ...] = ("patient", "depth", "sample")
    ) -> None:
        super().__init__()
        if size < 1 or dim < 1:
            raise ValueError(f"MoCoQueue: size and dim must be >= 1, got size={size}, dim={dim}")
        self.size, self.dim, self.fields = size, dim, tuple(fields)
        self.register_buffer("keys", F.normalize(torch.randn(size, dim), dim=1))
        self.register_buffer("ptr", torch.zeros((), dtype=torch.long))
        self.register_buffer("filled", torch.zeros((), dtype=torch.long))
        for name in self.fields:
            self.register_buffer(f"meta_{name}", self._unknown(name, size))

    @staticmethod
    def _unknown(name: str, size: int) -> Tensor:
        """``[size]`` metadata that matches nothing: NaN depths, ``-1`` codes."""
        if name == "depth":
            return torch.full((size,), float("nan"))
        return torch.full((size,), -1, dtype=torch.long)

    def _load_from_state_dict(self, state_dict, prefix, local_metadata, strict, missing_keys, *args):
        for name in self.fields:  # a field added since the checkpoint was written: unknown
            key = f"{prefix}meta_{name}"
            if key not in state_dict and f"{prefix}keys" in state_dict:
                state_dict[key] = self._unknown(name, self.size)
        super()._load_from_state_dict(state_dict, prefix, local_metadata, strict, missing_keys, *args)

    @property
    def meta(self) -> dict[str, Tensor]:
        """Metadata of all K slots, ``{field: [K]}``, aligned with :attr:`keys`."""
        return {name: getattr(self, f"meta_{name}") for name in self.fields}

    @torch.no_grad()
    def enqueue(self, keys: Tensor, **meta: Tensor) -> None:
        """Replace the oldest entries with ``keys [B, D]`` and their metadata (wraps around)."""
        if keys.ndim != 2 or keys.shape[1] != self.dim:
            raise ValueError(f"MoCoQueue.enqueue: keys must be [B, {self.dim}], got {tuple(keys.shape)}")
        missing = set(self.fields) - set(meta)
        if missing:
            raise ValueError(f"MoCoQueue.enqueue: metadata {sorted(missing)} missing")
        b = keys.shape[0]
        if b > self.size:  # only the newest `size` keys survive
            keys, meta, b = keys[-self.size :], {k: v[-self.size :] for k, v in meta.items()}, self.size
        slots = (self.ptr + torch.arange(b, device=self.keys.device)) % self.size
        self.keys[slots] = F.normalize(keys.detach().float(), dim=1)
        for name in self.fields:
            buf = getattr(self, f"meta_{name}")
            buf[slots] = meta[name].detach().to(buf.device, buf.dtype)
        self.ptr.fill_(int((self.ptr + b) % self.size))
        self.filled.fill_(min(self.size, int(self.filled) + b))
