"""Several processes, one training run: ``torchrun`` + ``torch.distributed`` (issue 8).

Launch ``torchrun --nproc_per_node N -m medcl_lite.pretrain_cli -f pretrain.yaml`` (one process per
GPU, or N CPU processes with the gloo backend): :func:`setup` joins the process group that
torchrun describes in the environment (``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK``, ``MASTER_ADDR``),
and :func:`medcl_lite.train.pretrain` / ``finetune`` then split every batch over the processes.
Without a process group every function here is the identity, so one-process runs are untouched.

What changes when the batch is split (each process holds ``B / N`` of the ``B`` images):

- **SimCLR** needs every other image of the batch as a negative: the embeddings of all processes
  are gathered *with their gradient* (:func:`gather` with ``grad=True`` sends each process the
  gradient of its own rows, summed over the processes that used them).
  Every process then computes the same loss over the whole batch.
- **MoCo** keeps one queue: the keys (and their metadata) of all processes are gathered (no
  gradient) and every process enqueues the same ``B`` keys in the same order, so the queues stay
  identical (tested) and equal to a one-process queue.
- **BatchNorm**: a process sees only ``B / N`` images, so plain BatchNorm would normalise with
  other statistics than one process holding the batch, and MoCo's key encoder could "cheat" with
  statistics of a small batch. MoCo v1 answers with *shuffle-BN* (keys computed on a shuffled
  split); SimCLR and MoCo v3 with *global (synchronised) BN*. **We choose global BN**
  (:class:`GlobalBatchNorm`) for every framework: a run on N processes then computes exactly what
  one process computes on the whole batch (tested for SimCLR and MoCo), so results do not depend on
  the number of GPUs, and one rule serves all methods. ``torch.nn.SyncBatchNorm`` refuses CPU
  tensors, so the layer is written here (two all-reduces per layer); it also runs on CUDA.
- **DDP** (``DistributedDataParallel``) averages the gradients over processes; fine-tuning uses it
  too. Logging, files and checkpoints come from rank 0 only (:func:`is_main`); every process reads a
  checkpoint on resume (a filesystem all processes see is assumed).

Equal shares: ``batch_size`` is the *global* batch and must be a multiple of the number of
processes; every process draws the same order of batches (same seed) and keeps its slice
(:class:`RankSlices`); the augmentations differ per process (:func:`seed_augmentations`).
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Iterator, Mapping

import numpy as np
import torch
import torch.distributed as dist
from torch import Tensor, nn

__all__ = [
    "GlobalBatchNorm",
    "RankSlices",
    "barrier",
    "cleanup",
    "convert_global_batchnorm",
    "gather",
    "gather_meta",
    "is_main",
    "mean_over_ranks",
    "own_key_mask",
    "seed_augmentations",
    "setup",
    "share",
    "sum_over_ranks",
    "world",
    "wrap",
]


def world() -> tuple[int, int]:
    """``(rank, world_size)`` of this process; ``(0, 1)`` without a process group."""
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def is_main() -> bool:
    """Whether this process logs and writes files (rank 0, or no process group)."""
    return world()[0] == 0


def setup(backend: str | None = None) -> bool:
    """Join the process group torchrun describes (env ``WORLD_SIZE`` > 1); a no-op otherwise.

    Backend: ``"nccl"`` when CUDA is available (each process then uses GPU ``LOCAL_RANK``), else
    ``"gloo"`` (CPU). Returns whether this run is distributed.
    """
    size = int(os.environ.get("WORLD_SIZE", "1"))
    if size <= 1 or (dist.is_available() and dist.is_initialized()):
        return world()[1] > 1
    if not dist.is_available():
        raise RuntimeError("WORLD_SIZE > 1 but this torch build has no torch.distributed")
    cuda = torch.cuda.is_available()
    if cuda:
        torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")))
    dist.init_process_group(backend or ("nccl" if cuda else "gloo"))
    return True


def barrier() -> None:
    """Wait until every process gets here (e.g. rank 0 has written a checkpoint the others may
    read next); nothing on one process."""
    if world()[1] > 1:
        dist.barrier()


def cleanup() -> None:
    """Leave the process group (if any)."""
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


# --------------------------------------------------------------------------------------------
# Collectives that carry gradients
# --------------------------------------------------------------------------------------------
class _GatherWithGrad(torch.autograd.Function):
    """``x [n, ...] -> (x of rank 0, ..., x of rank N-1)``; backward: every process used every
    part, so the gradient of this process's part is the sum over processes of the gradient
    each computed for it (all-reduce of the stacked gradients, keep our slice)."""

    @staticmethod
    def forward(ctx, x: Tensor) -> tuple[Tensor, ...]:
        parts = [torch.empty_like(x) for _ in range(dist.get_world_size())]
        dist.all_gather(parts, x.contiguous())
        return tuple(parts)

    @staticmethod
    def backward(ctx, *grads: Tensor) -> Tensor:
        summed = torch.stack(grads).contiguous()
        dist.all_reduce(summed)
        return summed[dist.get_rank()]


class _SumWithGrad(torch.autograd.Function):
    """``x -> Σ_processes x``; backward likewise sums the gradients over processes."""

    @staticmethod
    def forward(ctx, x: Tensor) -> Tensor:
        total = x.clone().contiguous()
        dist.all_reduce(total)
        return total

    @staticmethod
    def backward(ctx, grad: Tensor) -> Tensor:
        total = grad.clone().contiguous()
        dist.all_reduce(total)
        return total


def gather(x: Tensor, grad: bool = False) -> Tensor:
    """Rows of every process, rank order: ``[n, ...] -> [N * n, ...]`` (identity on one process).

    ``grad=True`` keeps the graph: the gradient of each process's rows flows back to that process,
    summed over the processes that used them. All processes must pass the same shape.
    """
    _, size = world()
    if size == 1:
        return x
    if grad:
        return torch.cat(_GatherWithGrad.apply(x), dim=0)
    parts = [torch.empty_like(x) for _ in range(size)]
    dist.all_gather(parts, x.detach().contiguous())
    return torch.cat(parts, dim=0)


def sum_over_ranks(x: Tensor) -> Tensor:
    """``Σ`` of ``x`` over processes, differentiable (identity on one process)."""
    return x if world()[1] == 1 else _SumWithGrad.apply(x)


def gather_meta(meta: Mapping[str, Tensor]) -> dict[str, Tensor]:
    """:func:`gather` of every metadata tensor ``[n]`` (patient codes, depths ...) -> ``[N * n]``."""
    return {name: gather(value) for name, value in meta.items()}


def own_key_mask(n_queries: int, n_keys: int, device=None) -> Tensor:
    """``[n, M]`` bool: query i of this process is positive with key ``rank * n + i`` (its own
    key among the gathered keys; ``eye`` on one process)."""
    rank, _ = world()
    mask = torch.zeros(n_queries, n_keys, dtype=torch.bool, device=device)
    rows = torch.arange(n_queries, device=device)
    mask[rows, rank * n_queries + rows] = True
    return mask


def mean_over_ranks(value: Tensor) -> float:
    """Mean of a scalar over processes (for logging: every process logs the same number)."""
    value = value.detach().float().reshape(())
    _, size = world()
    if size > 1:
        value = value.clone()
        dist.all_reduce(value)
        value /= size
    return float(value)


# --------------------------------------------------------------------------------------------
# Global BatchNorm
# --------------------------------------------------------------------------------------------
class GlobalBatchNorm(nn.BatchNorm2d):
    """BatchNorm2d whose training statistics cover the images of *every* process.

    Mean and (biased) variance per channel over all processes' ``[B, C, H, W]`` inputs, two passes
    (``mean = Σx / n``, then ``var = Σ(x - mean)² / n``), each summed across processes by an
    all-reduce that carries the gradient (:func:`sum_over_ranks`). Running
    statistics update as BatchNorm's (unbiased variance), identically on every process. On one
    process, or in eval mode, it *is* ``nn.BatchNorm2d`` (same state-dict keys).
    """

    def forward(self, x: Tensor) -> Tensor:
        _, size = world()
        if not self.training or size == 1:
            return super().forward(x)
        xf = x.float()
        n = sum_over_ranks(torch.tensor(float(xf.numel() // xf.shape[1]), device=x.device))
        mean = sum_over_ranks(xf.sum(dim=(0, 2, 3))) / n
        centred = xf - mean[None, :, None, None]
        var = sum_over_ranks(centred.square().sum(dim=(0, 2, 3))) / n
        if self.track_running_stats:
            self._update_running_stats(mean.detach(), var.detach(), float(n))
        y = centred * torch.rsqrt(var + self.eps)[None, :, None, None]
        if self.affine:
            y = y * self.weight[None, :, None, None] + self.bias[None, :, None, None]
        return y.to(x.dtype)

    @torch.no_grad()
    def _update_running_stats(self, mean: Tensor, var: Tensor, n: float) -> None:
        self.num_batches_tracked.add_(1)
        momentum = 1.0 / float(self.num_batches_tracked) if self.momentum is None else self.momentum
        unbiased = var * n / max(n - 1.0, 1.0)
        self.running_mean.mul_(1 - momentum).add_(mean.to(self.running_mean.dtype), alpha=momentum)
        self.running_var.mul_(1 - momentum).add_(unbiased.to(self.running_var.dtype), alpha=momentum)


def convert_global_batchnorm(module: nn.Module) -> nn.Module:
    """Replace every ``nn.BatchNorm2d`` of ``module`` by a :class:`GlobalBatchNorm` with the same
    parameters and buffers (in place for children; returns the module, or the new layer)."""
    if isinstance(module, nn.BatchNorm2d) and not isinstance(module, GlobalBatchNorm):
        layer = GlobalBatchNorm(
            module.num_features, module.eps, module.momentum, module.affine, module.track_running_stats
        ).to(next(module.buffers(), torch.empty(0)).device)
        layer.load_state_dict(module.state_dict())
        layer.train(module.training)
        return layer
    for name, child in module.named_children():
        setattr(module, name, convert_global_batchnorm(child))
    return module


def wrap(net: nn.Module, device: torch.device) -> nn.Module:
    """The module a training step calls: ``DistributedDataParallel(net)`` in a distributed run
    (gradients averaged over processes), else ``net`` itself. Convert BatchNorm first."""
    if world()[1] == 1:
        return net
    ids = [device.index if device.index is not None else torch.cuda.current_device()] if device.type == "cuda" else None
    # buffers need no syncing at each forward: global BatchNorm keeps them equal on every process
    return nn.parallel.DistributedDataParallel(net, device_ids=ids, forward_sync_buffers=False)


# --------------------------------------------------------------------------------------------
# Splitting the data
# --------------------------------------------------------------------------------------------
class RankSlices:
    """This process's share of every batch of a batch sampler: slice ``rank`` of ``world`` equal
    slices. Every process iterates the same batches (same generator seed), so together they see
    exactly the batches one process would. Batches must be divisible by the world size."""

    def __init__(self, batches: Iterable[list[int]], rank: int, size: int) -> None:
        if not 0 <= rank < size:
            raise ValueError(f"RankSlices: rank={rank} must be in [0, {size})")
        self.batches, self.rank, self.size = batches, rank, size

    def __iter__(self) -> Iterator[list[int]]:
        for batch in self.batches:
            batch = list(batch)
            if len(batch) % self.size:
                raise ValueError(
                    f"a batch of {len(batch)} images cannot be split over {self.size} processes: "
                    "make batch_size a multiple of the number of processes"
                )
            share = len(batch) // self.size
            yield batch[self.rank * share : (self.rank + 1) * share]

    def __len__(self) -> int:
        return len(self.batches)  # type: ignore[arg-type]


def share(batches: Iterable[list[int]]) -> Iterable[list[int]]:
    """This process's share of a batch sampler's batches (:class:`RankSlices`); the batches
    themselves on one process."""
    rank, size = world()
    return batches if size == 1 else RankSlices(batches, rank, size)


def seed_augmentations(seed: int, epoch: int) -> None:
    """Seed torch's global generator (the augmentations' randomness) from ``(seed, epoch, rank)``
    in a distributed run, so processes draw different augmentations and a resumed epoch draws the
    same ones; does nothing on one process (its random stream stays as it was)."""
    rank, size = world()
    if size > 1:
        torch.manual_seed(int(np.random.SeedSequence([seed, epoch, rank]).generate_state(1)[0]))
