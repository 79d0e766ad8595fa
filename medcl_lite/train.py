"""Training loops: contrastive pretraining (SimCLR | MoCo x any pairing) and fine-tuning.

These loops are written out on purpose: they are what the notebooks teach. One step of each
framework is a short function (:func:`simclr_loss`, :func:`moco_loss`) that a notebook can print
with ``inspect.getsource``. Runs are configured by :class:`PretrainConfig` / :class:`FinetuneConfig`,
write their files under ``out_dir`` and, with ``resume=True``, continue exactly where a crash
stopped them (checkpoints at epoch ends, RNG states included).
"""

from __future__ import annotations

import copy
import math
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from torch import Tensor, nn
from torch.utils.data import BatchSampler, DataLoader, RandomSampler
from tqdm.auto import tqdm

from medcl_lite import distributed, pairing
from medcl_lite.batchnorm import predict_per_site
from medcl_lite.checkpoint import (
    atomic_write_text,
    get_rng_state,
    load_checkpoint,
    save_checkpoint,
    set_rng_state,
)
from medcl_lite.config import (
    ConfigError,
    changed_fields,
    check_choice,
    check_range,
    to_dict,
    to_json,
)
from medcl_lite.data.datasets import LabelledDataset, TwoViewDataset
from medcl_lite.data.samplers import PatientBatchSampler
from medcl_lite.data.sliceset import SliceSet
from medcl_lite.data.superpixels import FelzenszwalbParams, superpixels
from medcl_lite.data.transforms import joint_transform, view_transform
from medcl_lite.dense import dense_loss
from medcl_lite.export import check_encoder, recorded_encoder
from medcl_lite.inference import map_images
from medcl_lite.losses import MoCoQueue, info_nce, nt_xent
from medcl_lite.metrics import (
    dice_per_image,
    dice_per_volume,
    dice_pooled,
    hd95_per_volume,
    summarize_hd95,
)
from medcl_lite.models import (
    DenseProjectionHead,
    EncoderWithHead,
    ProjectionHead,
    RegionHead,
    SegmenterWithHeads,
    build_segmenter,
    load_pretrained,
    momentum_copy,
    momentum_update,
)
from medcl_lite.regions import region_loss
from medcl_lite.utils import get_device, seed_everything

__all__ = [
    "FinetuneConfig",
    "FinetuneResult",
    "PretrainConfig",
    "PretrainResult",
    "build_contrastive",
    "local_loss",
    "embed",
    "finetune",
    "finetune_param_groups",
    "moco_loss",
    "moco_objective",
    "predict",
    "pretrain",
    "simclr_loss",
    "simclr_objective",
]

# Fields that may change between a run and its resumption without changing what is computed.
_RESUME_FREE = {"resume", "progress", "max_epochs", "out_dir", "num_workers", "device", "superpixel_cache"}


# --------------------------------------------------------------------------------------------
# Configuration
# --------------------------------------------------------------------------------------------
@dataclass
class PretrainConfig:
    """Contrastive pretraining of a segmenter's encoder (the papers' values in the presets)."""

    framework: str = "simclr"  # "simclr" | "moco" | "supervised" (masks of the data, LRC Sec. 4)
    supervised_loss: str = "ce+dice"  # framework="supervised": "ce" | "ce+dice" (as fine-tuning's loss)
    pairing: str = "instance"  # "instance" | "temporal" | "positional" | "partition"
    threshold: float = 0.1  # positional: |Δdepth| < θ (PCL: 0.1 CHD, 0.35 ACDC)
    parts: int = 4  # partition: depth bins per volume (GCL: 4)
    arch: str = "unet"  # whose encoder: "unet" | "deeplabv3" | "deeplabv3plus"
    encoder: str = "resnet18"
    in_channels: int = 1
    augment: str = "quickstart"  # preset of medcl_lite.data.transforms.PRESETS
    max_epochs: int = 20
    batch_size: int = 32  # images per step (2x views)
    sampler: str = "random"  # "random" (papers) | "patient": k images per patient per batch
    images_per_patient: int = 2  # k of the "patient" sampler (CL-TCI's same-patient positives)
    optimizer: str = "sgd"  # "sgd" (papers) | "adam"
    lr: float = 0.1
    momentum: float = 0.9
    weight_decay: float = 1e-5
    warmup_epochs: int = 1  # linear warm-up, then cosine (CL-TCI: 10 of 500)
    temperature: float = 0.1
    proj_dim: int = 128  # 512 in the papers' code
    queue_size: int = 3072  # MoCo
    moco_momentum: float = 0.999  # MoCo
    # LRC (unpublished choices, ours: chapter 03): L = L_global + region_weight * L_region
    region_weight: float = 0.0  # λ; 0 = no region term (global methods train the encoder only)
    regions_per_image: int = 8  # R regions sampled per image ("contrastive sampling")
    region_min_pixels: int = 16  # regions smaller than this in either view are skipped
    region_temperature: float = 0.1
    region_dim: int = 128  # region embedding size
    sp_scale: float = 50.0  # Felzenszwalb scale / sigma / min_size (FelzenszwalbParams defaults)
    sp_sigma: float = 0.5
    sp_min_size: int = 20
    superpixel_cache: str = ""  # folder of cached superpixels; "" = <out_dir>/superpixels (none without out_dir)
    # IDEAL (unpublished choices, ours: chapter 04, medcl_lite.dense): + dense_weight * L_dense
    dense_weight: float = 0.0  # λ_dense; 0 = no dense term
    dense_level: str = "decoder"  # feature map of the dense head: "decoder" (last U-Net stage) | "encoder"
    dense_per_image: int = 64  # query locations sampled per image
    dense_temperature: float = 0.2
    dense_dim: int = 128  # dense embedding size (1x1 conv)
    dense_queue_size: int = 0  # MoCo: queue of dense keys (0 = negatives from the batch only)
    seed: int = 0
    device: str = "auto"
    amp: bool = True  # mixed precision on CUDA only
    channels_last: bool = False  # NHWC memory format (faster convolutions on CUDA with AMP)
    num_workers: int = 0
    out_dir: str = ""  # "" = keep nothing on disk
    resume: bool = False
    checkpoint_every: int = 1  # epochs
    progress: bool = True

    @property
    def trains_decoder(self) -> bool:
        """Whether a loss reaches the decoder: supervised, region (LRC) or decoder-level dense (IDEAL)."""
        dense_decoder = self.dense_weight > 0 and self.dense_level == "decoder"
        return self.framework == "supervised" or self.region_weight > 0 or dense_decoder

    @property
    def uses_feature_maps(self) -> bool:
        """Whether pretraining needs the whole segmenter (:class:`SegmenterWithHeads`)."""
        return self.trains_decoder or self.dense_weight > 0

    def __post_init__(self) -> None:
        name = type(self).__name__
        check_choice(name, "framework", self.framework, {"simclr", "moco", "supervised"})
        check_choice(name, "pairing", self.pairing, set(pairing.STRATEGIES))
        check_choice(name, "optimizer", self.optimizer, {"sgd", "adam"})
        check_choice(name, "sampler", self.sampler, {"random", "patient"})
        check_choice(name, "supervised_loss", self.supervised_loss, {"ce", "ce+dice"})
        check_range(name, "threshold", self.threshold, 1e-6, 1.0)
        for key in ("parts", "max_epochs", "batch_size", "proj_dim", "queue_size", "checkpoint_every"):
            check_range(name, key, getattr(self, key), 1)
        check_range(name, "batch_size", self.batch_size, 2)
        if self.sampler == "patient":
            check_range(name, "images_per_patient", self.images_per_patient, 1, self.batch_size)
        for key in ("lr", "temperature"):
            check_range(name, key, getattr(self, key), 1e-12)
        check_range(name, "moco_momentum", self.moco_momentum, 0.0, 1.0)
        check_range(name, "warmup_epochs", self.warmup_epochs, 0)
        check_range(name, "region_weight", self.region_weight, 0.0)
        check_range(name, "dense_weight", self.dense_weight, 0.0)
        check_choice(name, "dense_level", self.dense_level, {"decoder", "encoder"})
        for key in ("dense_per_image", "dense_dim"):
            check_range(name, key, getattr(self, key), 1)
        check_range(name, "dense_temperature", self.dense_temperature, 1e-12)
        check_range(name, "dense_queue_size", self.dense_queue_size, 0)
        if self.dense_queue_size and self.framework != "moco":
            raise ConfigError(f"{name}: dense_queue_size needs framework='moco', got {self.framework!r}")
        for key in ("regions_per_image", "region_min_pixels", "region_dim", "sp_min_size"):
            check_range(name, key, getattr(self, key), 1)
        for key in ("region_temperature", "sp_scale"):
            check_range(name, key, getattr(self, key), 1e-12)
        check_range(name, "sp_sigma", self.sp_sigma, 0.0)
        if self.framework == "supervised" and self.pairing != "instance":
            raise ConfigError(f"{name}: framework='supervised' uses the masks, not a pairing (got {self.pairing!r})")
        if self.resume and not self.out_dir:
            raise ConfigError(f"{name}: resume=True needs an out_dir to resume from")


@dataclass
class FinetuneConfig:
    """Supervised fine-tuning of a whole segmenter on the labelled images."""

    arch: str = "unet"
    encoder: str = "resnet18"
    in_channels: int = 1
    decoder_channels: tuple[int, ...] = ()  # U-Net decoder widths; () = smp's (256, 128, 64, 32, 16)
    init: str = "random"  # "random" | "pretrained" (encoder from `pretrained` or the argument)
    pretrained: str = ""  # a run's encoder.pt, an exported encoder or a model.encoder.state_dict()
    augment: str = "light"  # joint_transform strength: "none" | "light"
    max_steps: int = 300
    max_epochs: int = 0  # > 0: train for epochs over the labelled images instead (papers: 100-200)
    batch_size: int = 8
    optimizer: str = "adam"
    lr: float = 1e-3
    weight_decay: float = 1e-4
    loss: str = "ce+dice"  # "ce" (papers) | "ce+dice"
    eval_every: int = 25  # steps between validation Dice checks (epoch choice)
    # Also score the test rows at every check and report the best pooled Dice: the papers' public
    # code picks the epoch on the held-out fold (selection on test data, optimistic). Reported as
    # ``paper_test_dice_pooled`` next to the honest ``test_dice`` (step chosen on validation).
    paper_selection: bool = False
    # The evaluation protocol: 1 = full fine-tuning; 0 < s < 1 = discriminative fine-tuning (the
    # encoder learns at s x lr, the decoder at lr); 0 = frozen encoder (its weights and BatchNorm
    # statistics kept: only the decoder and head learn, what the encoder already holds is measured).
    encoder_lr_scale: float = 1.0
    # The encoder's BatchNorm layers: "train" normalise each batch with its own statistics and
    # update the running ones (the default); "frozen" keep the pretrained running statistics (eval
    # mode, the "frozen BN" of detection fine-tuning), which a batch of augmented copies of one
    # labelled image cannot estimate. A frozen encoder (encoder_lr_scale=0) always has frozen BN.
    encoder_bn: str = "train"
    # Decoder first (LP-FT: Kumar et al., "Fine-Tuning can Distort Pretrained Features and
    # Underperform Out-of-Distribution", ICLR 2022): the first `frozen_encoder_steps` steps train the
    # decoder and head on the frozen encoder (weights and BatchNorm statistics), then the whole
    # network learns. A random decoder's first gradients otherwise reach the pretrained encoder and
    # fit it to the few labelled images' own scanner. 0 = off.
    frozen_encoder_steps: int = 0
    # The encoder's BatchNorm statistics at test time: "train" those of the training images (the
    # labelled site); "per_site" re-estimated on each test site's own images, no label used (AdaBN,
    # prediction-time BatchNorm: medcl_lite.batchnorm). The test score only; validation picks the
    # step with the training statistics.
    test_bn: str = "train"
    seed: int = 0
    device: str = "auto"
    amp: bool = True
    num_workers: int = 0
    out_dir: str = ""
    progress: bool = True

    def __post_init__(self) -> None:
        name = type(self).__name__
        check_range(name, "encoder_lr_scale", self.encoder_lr_scale, 0.0)
        check_range(name, "frozen_encoder_steps", self.frozen_encoder_steps, 0)
        check_choice(name, "init", self.init, {"random", "pretrained"})
        check_choice(name, "encoder_bn", self.encoder_bn, {"train", "frozen"})
        check_choice(name, "test_bn", self.test_bn, {"train", "per_site"})
        check_choice(name, "augment", self.augment, {"none", "light"})
        check_choice(name, "loss", self.loss, {"ce", "ce+dice"})
        check_choice(name, "optimizer", self.optimizer, {"sgd", "adam"})
        if self.decoder_channels and (self.arch != "unet" or len(self.decoder_channels) != 5):
            raise ConfigError(f"{name}: decoder_channels needs arch='unet' and 5 widths, got {self.decoder_channels}")
        for key in ("max_steps", "batch_size", "eval_every"):
            check_range(name, key, getattr(self, key), 1)
        check_range(name, "max_epochs", self.max_epochs, 0)
        check_range(name, "lr", self.lr, 1e-12)

    def steps_for(self, n_train: int) -> int:
        """Optimiser steps for ``n_train`` labelled images: ``max_steps``, or ``max_epochs``
        passes over them (``ceil(n_train / batch_size)`` steps each) when ``max_epochs > 0``."""
        return self.max_epochs * math.ceil(n_train / self.batch_size) if self.max_epochs else self.max_steps


# --------------------------------------------------------------------------------------------
# One step of each framework: what the notebooks print
# --------------------------------------------------------------------------------------------
def batch_meta(batch: dict[str, Tensor], device: torch.device) -> dict[str, Tensor]:
    """The metadata the losses read, on ``device``, each ``[B]``: patient codes and depths (for
    the pairing strategies) and the sample rows (``index``, for MoCo's stale own keys)."""
    if "index" not in batch:
        raise KeyError("batch_meta: the batch has no 'index' (row of each image), as TwoViewDataset yields it")
    return {
        "patient": batch["patient"].to(device),
        "depth": batch["depth"].to(device).float(),
        "sample": batch["index"].to(device).long(),
    }


def simclr_loss(net: nn.Module, batch: dict[str, Tensor], cfg: PretrainConfig, device) -> Tensor:
    """SimCLR (+ pairing): embed both views in one pass, NT-Xent with the strategy's positives."""
    v1, v2 = batch["view1"].to(device), batch["view2"].to(device)
    z1, z2 = net(torch.cat([v1, v2])).chunk(2)  # one pass: BatchNorm sees both views
    return simclr_objective(z1, z2, batch_meta(batch, device), cfg)


def simclr_objective(z1: Tensor, z2: Tensor, meta: dict[str, Tensor], cfg: PretrainConfig) -> Tensor:
    """NT-Xent of the two views' embeddings ``[B, D]`` with the pairing strategy's extra positives.

    In a distributed run the embeddings (with their gradient) and metadata of every process are
    gathered first (:func:`medcl_lite.distributed.gather`): the loss covers the whole batch.
    """
    z1, z2, meta = distributed.gather(z1, grad=True), distributed.gather(z2, grad=True), distributed.gather_meta(meta)
    extra = pairing.positives(cfg.pairing, meta, threshold=cfg.threshold, parts=cfg.parts)
    return nt_xent(z1, z2, cfg.temperature, pos_mask=None if cfg.pairing == "instance" else extra)


def moco_loss(
    net: nn.Module,
    key_net: nn.Module,
    queue: MoCoQueue,
    batch: dict[str, Tensor],
    cfg: PretrainConfig,
    device,
) -> Tensor:
    """MoCo (+ pairing): query from view 1, key from view 2 by the momentum encoder.

    Keys = this batch's keys, then the queue. Positives: the own key, plus every batch key or
    queue entry the pairing strategy marks (e.g. the same patient, CL-TCI). The other batch keys
    act as extra negatives, as they would one step later from the queue.
    """
    v1, v2 = batch["view1"].to(device), batch["view2"].to(device)
    q = net(v1)
    with torch.no_grad():
        momentum_update(net, key_net, cfg.moco_momentum)
        k = key_net(v2)
    return moco_objective(q, k, queue, batch_meta(batch, device), cfg)


def moco_objective(q: Tensor, k: Tensor, queue: MoCoQueue, meta: dict[str, Tensor], cfg: PretrainConfig) -> Tensor:
    """InfoNCE of queries ``[B, D]`` against the batch's keys and the queue, then enqueue the keys.

    A queue longer than the data set (``queue_size`` > pool) holds older keys of the query's own
    image. They are not negatives (the same image) nor the positive MoCo defines (the key of this
    step's other view): they are left out of the denominator, unless the pairing strategy counts
    them as positives anyway (temporal, positional and partition pairing do). ``meta["sample"]``
    ``[B]`` holds the image rows (:func:`batch_meta`).

    In a distributed run the keys and metadata of every process are gathered (no gradient): each
    query meets the whole batch's keys, and every process enqueues the same keys (one queue).
    """
    params = {"threshold": cfg.threshold, "parts": cfg.parts}
    keys, key_meta = distributed.gather(k.float()), distributed.gather_meta(meta)
    own = distributed.own_key_mask(len(q), len(keys), device=q.device)
    queue_positive = pairing.positives(cfg.pairing, meta, queue.meta, **params)
    stale_own = pairing.equal_codes(meta["sample"], queue.meta["sample"]) & ~queue_positive
    mask = torch.cat([own | pairing.positives(cfg.pairing, meta, key_meta, **params), queue_positive], dim=1)
    exclude = torch.cat([torch.zeros_like(own), stale_own], dim=1)
    loss = info_nce(q, torch.cat([keys, queue.keys.clone()]), mask, cfg.temperature, exclude=exclude)
    queue.enqueue(keys, **key_meta)
    return loss


def local_loss(
    net: SegmenterWithHeads,
    key_net: SegmenterWithHeads | None,
    queues: dict[str, MoCoQueue],
    batch: dict[str, Tensor],
    cfg: PretrainConfig,
    device,
    image_width: int,
) -> tuple[Tensor, dict[str, float]]:
    """A step with feature-map terms: L = L_global + λ·L_region + λ_dense·L_dense.

    L_global is SimCLR's or MoCo's objective above on the bottleneck embedding, or, with
    ``framework="supervised"``, the segmentation loss on both views' masks (``cfg.supervised_loss``:
    cross-entropy alone lets a short run settle on background and the largest organ).
    L_region (LRC Sec. 3, :func:`medcl_lite.regions.region_loss`) contrasts superpixel regions
    pooled from the decoder features; L_dense (IDEAL, :func:`medcl_lite.dense.dense_loss`)
    contrasts locations of the dense projection, the corresponding location of the other view
    being the positive. With MoCo the key view's maps come from the momentum network.
    ``queues``: ``"global"`` (MoCo) and ``"dense"`` (MoCo with ``dense_queue_size``).
    Returns the loss and its parts for the history.
    """
    v1, v2 = batch["view1"].to(device), batch["view2"].to(device)
    meta = batch_meta(batch, device)
    decode = cfg.region_weight > 0 or cfg.framework == "supervised" or cfg.dense_level == "decoder"
    if cfg.framework == "supervised" or key_net is None:
        z, bottleneck, decoded = net.forward_levels(torch.cat([v1, v2]), decode)
        b1, b2 = bottleneck.chunk(2)
        d1, d2 = decoded.chunk(2) if decoded is not None else (None, None)
        if cfg.framework == "supervised":
            masks = torch.cat([batch["mask1"], batch["mask2"]]).to(device).long()
            main = _segmentation_loss(net.segmentation_head(decoded), masks, cfg.supervised_loss)
        else:
            main = simclr_objective(*z.chunk(2), meta, cfg)
        dense_key_net = net
    else:
        q, b1, d1 = net.forward_levels(v1, decode)
        with torch.no_grad():
            momentum_update(net, key_net, cfg.moco_momentum)
            k, b2, d2 = key_net.forward_levels(v2, decode)
        main = moco_objective(q, k, queues["global"], meta, cfg)
        dense_key_net = key_net
    loss, parts = main, {"global_loss": float(main.detach())}
    if cfg.region_weight > 0:
        region, n_regions = region_loss(
            d1.float(), d2.float(), batch["regions1"].to(device), batch["regions2"].to(device), net.region_head,
            per_image=cfg.regions_per_image, min_pixels=cfg.region_min_pixels, temperature=cfg.region_temperature,
        )  # fmt: skip
        parts.update(region_loss=float(region.detach()), regions=n_regions)
        loss = loss + cfg.region_weight * region
    if cfg.dense_weight > 0:
        f1, f2 = (d1, d2) if cfg.dense_level == "decoder" else (b1, b2)
        k_map = dense_key_net.dense_head(f2.float())
        dense_queue = queues.get("dense")
        out = dense_loss(
            net.dense_head(f1.float()), k_map, batch["pixels1"].to(device), batch["pixels2"].to(device),
            per_image=cfg.dense_per_image, temperature=cfg.dense_temperature,
            queue=dense_queue.keys.clone() if dense_queue is not None else None, image_width=image_width,
        )  # fmt: skip
        if dense_queue is not None and out.n_pairs:
            dense_queue.enqueue(out.keys)
        parts.update(dense_loss=float(out.loss.detach()), dense_pairs=out.n_pairs)
        loss = loss + cfg.dense_weight * out.loss
    return loss, parts


# --------------------------------------------------------------------------------------------
# Pretraining
# --------------------------------------------------------------------------------------------
@dataclass
class PretrainResult:
    """What :func:`pretrain` returns: the trained encoder+head, its history, where files went."""

    net: EncoderWithHead
    history: pd.DataFrame
    config: PretrainConfig
    out_dir: Path | None = None
    seconds: float = 0.0

    @property
    def encoder_state(self) -> dict[str, Tensor]:
        """The encoder's weights (what global contrast trains; ``load_encoder``)."""
        return _cpu_state(self.net.encoder)

    @property
    def transfer_state(self) -> dict:
        """What fine-tuning should load (``load_pretrained``): the encoder, and the decoder too when
        pretraining trained it (region loss or supervised pretraining)."""
        if not self.trains_decoder:
            return self.encoder_state
        return {"encoder": self.encoder_state, "decoder": _cpu_state(self.net.decoder)}

    @property
    def trains_decoder(self) -> bool:
        return self.config.trains_decoder


def _cpu_state(module: nn.Module) -> dict[str, Tensor]:
    return {k: v.detach().cpu().clone() for k, v in module.state_dict().items()}


def warmup_cosine(step: int, total: int, warmup: int) -> float:
    """Learning-rate factor: linear warm-up for ``warmup`` steps, then cosine decay to 0."""
    if step < warmup:
        return (step + 1) / warmup
    progress = (step - warmup) / max(1, total - warmup)
    return 0.5 * (1 + math.cos(math.pi * min(1.0, progress)))


def _make_optimizer(params, name: str, lr: float, momentum: float, weight_decay: float):
    if name == "sgd":
        return torch.optim.SGD(params, lr=lr, momentum=momentum, weight_decay=weight_decay)
    return torch.optim.AdamW(params, lr=lr, weight_decay=weight_decay)


def _make_optimization(
    params, optimizer: str, lr: float, momentum: float, weight_decay: float,
    total_steps: int, warmup_steps: int, amp: bool, device: torch.device,
):  # fmt: skip
    """What every training loop here steps: the optimizer, its warm-up + cosine schedule over
    ``total_steps`` (per step), a ``GradScaler``, and whether mixed precision is on (CUDA only).

    Returns ``(optimizer, scheduler, scaler, use_amp)``.
    """
    optimizer = _make_optimizer(params, optimizer, lr, momentum, weight_decay)
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda s: warmup_cosine(s, total_steps, warmup_steps)
    )
    use_amp = amp and device.type == "cuda"
    return optimizer, scheduler, torch.amp.GradScaler("cuda", enabled=use_amp), use_amp


def build_contrastive(cfg: PretrainConfig, classes: int = 1) -> EncoderWithHead | SegmenterWithHeads:
    """The network ``pretrain`` trains, at initialisation: ``cfg.arch``'s encoder + projection
    head; the whole segmenter with a region head when the decoder is trained too (region loss,
    or supervised pretraining with ``classes`` output classes)."""
    segmenter = build_segmenter(cfg.arch, cfg.encoder, cfg.in_channels, classes=classes)
    head = ProjectionHead(segmenter.encoder.out_channels[-1], cfg.proj_dim)
    if not cfg.uses_feature_maps:
        return EncoderWithHead(segmenter.encoder, head)
    decoder_channels = segmenter.segmentation_head[0].in_channels
    dense_head = None
    if cfg.dense_weight > 0:
        level = decoder_channels if cfg.dense_level == "decoder" else segmenter.encoder.out_channels[-1]
        dense_head = DenseProjectionHead(level, cfg.dense_dim)
    return SegmenterWithHeads(segmenter, head, RegionHead(decoder_channels, cfg.region_dim), dense_head)


def pretrain(cfg: PretrainConfig, data: SliceSet, index=None, regions: np.ndarray | None = None) -> PretrainResult:
    """Pretraining of ``cfg.arch``'s encoder on ``data`` rows ``index`` (labels unused, except by
    ``framework="supervised"``); with ``region_weight > 0`` (LRC) the decoder too.

    ``regions``: superpixel maps ``[len(data), H, W]`` for the region loss; by default computed
    with the config's Felzenszwalb parameters and cached (:func:`medcl_lite.data.superpixels.superpixels`).
    Files in ``cfg.out_dir`` (if set): ``config.json``, ``history.csv``, ``checkpoint.pt`` (everything
    needed to resume) and ``encoder.pt`` (the weights fine-tuning loads; ``decoder`` too when trained).

    Under ``torchrun`` (a process group, :mod:`medcl_lite.distributed`), ``cfg.batch_size`` is the
    global batch, split over the processes, with global BatchNorm, gathered SimCLR negatives, one
    MoCo queue and DDP; rank 0 alone writes files.
    """
    device = get_device(cfg.device)
    seed_everything(cfg.seed)
    out = Path(cfg.out_dir) if cfg.out_dir else None
    rank, n_proc = distributed.world()
    _check_distributable(cfg, n_proc)
    if cfg.framework == "supervised" and data.masks is None:
        raise ConfigError(f"PretrainConfig: framework='supervised' needs masks; {data.name!r} has none")
    if cfg.region_weight > 0 and regions is None:
        cache = cfg.superpixel_cache or (str(out / "superpixels") if out is not None else None)
        params = FelzenszwalbParams(scale=cfg.sp_scale, sigma=cfg.sp_sigma, min_size=cfg.sp_min_size)
        regions = superpixels(data, params, cache_dir=cache, progress=cfg.progress)
    generator = torch.Generator().manual_seed(cfg.seed)
    loader = pretrain_loader(cfg, data, index, regions, generator)
    net = build_contrastive(cfg, classes=len(data.classes) if cfg.framework == "supervised" else 1).to(device)
    if cfg.channels_last:  # convolutions then run NHWC (inputs follow the weights' format)
        net = net.to(memory_format=torch.channels_last)
    if n_proc > 1:
        net = distributed.convert_global_batchnorm(net)
    key_net = momentum_copy(net) if cfg.framework == "moco" else None
    queue = MoCoQueue(cfg.queue_size, cfg.proj_dim).to(device) if key_net is not None else None
    queues = {"global": queue} if queue is not None else {}
    if cfg.dense_queue_size:
        queues["dense"] = MoCoQueue(cfg.dense_queue_size, cfg.dense_dim, fields=()).to(device)
    steps_per_epoch = len(loader)
    total = cfg.max_epochs * steps_per_epoch
    optimizer, scheduler, scaler, use_amp = _make_optimization(
        net.parameters(), cfg.optimizer, cfg.lr, cfg.momentum, cfg.weight_decay,
        total, cfg.warmup_epochs * steps_per_epoch, cfg.amp, device,
    )  # fmt: skip
    history: list[dict] = []
    start_epoch = 0

    if cfg.resume and out is not None and (out / "checkpoint.pt").is_file():
        state = load_checkpoint(out / "checkpoint.pt", map_location=device)
        _check_same_run(state["config"], cfg)
        net.load_state_dict(state["net"])
        if key_net is not None:
            key_net.load_state_dict(state["key_net"])
            for name, q in queues.items():
                q.load_state_dict(state[_queue_key(name)])
        optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
        scaler.load_state_dict(state["scaler"])
        set_rng_state(state["rng"], generator)
        history = pd.DataFrame(state["history"]).to_dict("records")
        start_epoch = int(state["epoch"])
    writes = out is not None and rank == 0  # files and logs from rank 0 only
    if writes:
        atomic_write_text(out / "config.json", to_json(cfg))
    model = distributed.wrap(net, device)  # DDP in a distributed run (averages gradients)

    t0 = time.perf_counter() - (history[-1]["seconds"] if history else 0.0)  # cumulative over resumes
    net.train()
    bar = tqdm(
        total=total, initial=start_epoch * steps_per_epoch, disable=not cfg.progress or rank != 0,
        desc=f"{cfg.framework}/{cfg.pairing}", mininterval=2.0,
    )
    for epoch in range(start_epoch, cfg.max_epochs):
        distributed.seed_augmentations(cfg.seed, epoch)
        for batch in loader:
            parts = {}
            with torch.autocast(device.type, enabled=use_amp):
                if isinstance(net, SegmenterWithHeads):
                    loss, parts = local_loss(net, key_net, queues, batch, cfg, device, data.image_size[1])
                elif key_net is None:
                    loss = simclr_loss(model, batch, cfg, device)
                else:
                    loss = moco_loss(model, key_net, queue, batch, cfg, device)
            _update(loss, optimizer, scaler, scheduler, where=f"epoch {epoch}, step {len(history)}")
            history.append(
                {
                    "epoch": epoch,
                    "step": len(history),
                    "loss": distributed.mean_over_ranks(loss),
                    **parts,
                    "lr": optimizer.param_groups[0]["lr"],
                    "seconds": time.perf_counter() - t0,
                }
            )
            bar.update(1)
            bar.set_postfix(loss=f"{history[-1]['loss']:.3f}", refresh=False)
        done = epoch + 1
        if writes and (done % cfg.checkpoint_every == 0 or done == cfg.max_epochs):
            state = {
                "net": net.state_dict(),
                "optimizer": optimizer.state_dict(),
                "scheduler": scheduler.state_dict(),
                "scaler": scaler.state_dict(),
                "rng": get_rng_state(generator),
                "epoch": done,
                "history": pd.DataFrame(history).to_dict("list"),
                "config": to_dict(cfg),
            }
            if key_net is not None:
                state["key_net"] = key_net.state_dict()
                for name, q in queues.items():
                    state[_queue_key(name)] = q.state_dict()
            save_checkpoint(state, out / "checkpoint.pt")
        distributed.barrier()  # the checkpoint is on disk before any process goes on
    bar.close()
    result = PretrainResult(net, pd.DataFrame(history), cfg, out, time.perf_counter() - t0)
    if writes:
        weights = result.transfer_state if result.trains_decoder else {"encoder": result.encoder_state}
        save_checkpoint({**weights, "config": to_dict(cfg)}, out / "encoder.pt")
        atomic_write_text(out / "history.csv", result.history.to_csv(index=False))
    distributed.barrier()
    return result


def _queue_key(name: str) -> str:
    """Checkpoint key of a MoCo queue: ``"queue"`` (global, as before dense queues) or ``"<name>_queue"``."""
    return "queue" if name == "global" else f"{name}_queue"


def pretrain_loader(
    cfg: PretrainConfig, data: SliceSet, index=None, regions: np.ndarray | None = None, generator=None
) -> DataLoader:
    """The batches :func:`pretrain` trains on: two augmented views of rows ``index`` of ``data``
    (with region maps for LRC, masks for supervised pretraining, pixel indices for IDEAL's dense
    correspondences), shuffled (``sampler="random"``) or ``images_per_patient`` images of each
    patient side by side (``"patient"``, :class:`~medcl_lite.data.samplers.PatientBatchSampler`).

    In a distributed run every process draws the same batches and keeps its slice
    (:class:`medcl_lite.distributed.RankSlices`).
    """
    dataset = TwoViewDataset(
        data, view_transform(data.image_size[0], cfg.augment), index=index,
        regions=regions if cfg.region_weight > 0 else None, masks=cfg.framework == "supervised",
        correspondence=cfg.dense_weight > 0,
    )  # fmt: skip
    if len(dataset) < cfg.batch_size:
        raise ConfigError(f"PretrainConfig: batch_size={cfg.batch_size} exceeds the {len(dataset)} images")
    generator = generator if generator is not None else torch.Generator().manual_seed(cfg.seed)
    workers = {"num_workers": cfg.num_workers, "persistent_workers": cfg.num_workers > 0}
    if cfg.sampler == "patient":
        patients = dataset.patient[dataset.index]
        batches = PatientBatchSampler(patients, cfg.batch_size, cfg.images_per_patient, generator)
    else:  # what DataLoader(shuffle=True, drop_last=True) builds, spelled out to slice it
        batches = BatchSampler(RandomSampler(dataset, generator=generator), cfg.batch_size, drop_last=True)
    return DataLoader(dataset, batch_sampler=distributed.share(batches), **workers)


def _check_distributable(cfg: PretrainConfig, n_proc: int) -> None:
    """Refuse, with the reason, what a distributed pretraining run cannot do."""
    if n_proc == 1:
        return
    if cfg.batch_size % n_proc:
        raise ConfigError(
            f"PretrainConfig: batch_size={cfg.batch_size} (the global batch) must be a multiple of the "
            f"{n_proc} processes"
        )
    if cfg.uses_feature_maps:
        raise ConfigError(
            "PretrainConfig: distributed pretraining runs the global SimCLR / MoCo objectives (any "
            f"pairing); region, dense and supervised terms run on one process (framework="
            f"{cfg.framework!r}, region_weight={cfg.region_weight}, dense_weight={cfg.dense_weight})"
        )


def _update(loss: Tensor, optimizer, scaler, scheduler, where: str, keep=()) -> None:
    """One optimiser step: backward (loss scaled for mixed precision on CUDA), step, schedule.

    Stops at the first NaN/inf loss instead of training on garbage; ``where`` names the step.
    Parameters in ``keep`` are left as they are this step (their gradients dropped: the
    optimiser skips a parameter without one, its moments untouched).
    """
    if not torch.isfinite(loss.detach()):
        raise FloatingPointError(f"loss is {float(loss)} at {where}: lower lr, check the inputs for NaN")
    optimizer.zero_grad(set_to_none=True)
    scaler.scale(loss).backward()
    for param in keep:
        param.grad = None
    scaler.step(optimizer)
    scaler.update()
    scheduler.step()


def _check_same_run(saved: dict, cfg: PretrainConfig) -> None:
    """Refuse to resume a checkpoint written by a different configuration. A field the saved
    configuration lacks (added to ``PretrainConfig`` since) counts as its default value."""
    diff = changed_fields(saved, cfg, _RESUME_FREE)
    if diff:
        raise ConfigError(
            f"resume: checkpoint in {cfg.out_dir} was written with other values for {sorted(diff)}; "
            "use a new out_dir or resume=False"
        )


def load_pretrained_encoder(
    path: str | Path, encoder: str | None = None, in_channels: int | None = None
) -> dict:
    """The weights saved by :func:`pretrain` as ``encoder.pt``: the encoder ``state_dict``, or
    ``{"encoder": ..., "decoder": ...}`` when pretraining trained the decoder (``load_pretrained``).
    Also an exported encoder (:mod:`medcl_lite.export`) or a plain ``model.encoder.state_dict()``
    file. A file that records its encoder name and in_channels must have ``encoder`` /
    ``in_channels`` when given (``FinetuneConfig``'s)."""
    saved = load_checkpoint(path)
    if saved and all(isinstance(v, Tensor) for v in saved.values()):
        return saved  # torch.save(model.encoder.state_dict(), path): nothing recorded to check
    if not isinstance(saved.get("encoder"), dict):
        raise ValueError(
            f"{path} holds no encoder weights (keys {sorted(map(str, saved))[:6]}): expected a "
            "pretraining run's encoder.pt, an exported encoder (medcl export) or a "
            "model.encoder.state_dict() file"
        )
    recorded = recorded_encoder(saved)
    if recorded is not None:
        check_encoder(recorded, encoder, in_channels, str(path), against="the FinetuneConfig")
    return {k: saved[k] for k in ("encoder", "decoder")} if "decoder" in saved else saved["encoder"]


# --------------------------------------------------------------------------------------------
# Fine-tuning, prediction, embeddings
# --------------------------------------------------------------------------------------------
@dataclass
class FinetuneResult:
    """What :func:`finetune` returns: the model at the best validation step and its scores."""

    model: nn.Module
    metrics: dict
    history: pd.DataFrame
    config: FinetuneConfig
    test_pred: np.ndarray | None = field(default=None, repr=False)


def _segmentation_loss(logits: Tensor, target: Tensor, kind: str) -> Tensor:
    """Cross-entropy (papers), or cross-entropy + soft Dice over foreground classes."""
    ce = nn.functional.cross_entropy(logits.float(), target)
    if kind == "ce":
        return ce
    prob = logits.float().softmax(dim=1)[:, 1:]
    onehot = nn.functional.one_hot(target, logits.shape[1]).permute(0, 3, 1, 2)[:, 1:].float()
    inter = (prob * onehot).sum(dim=(0, 2, 3))
    denom = prob.sum(dim=(0, 2, 3)) + onehot.sum(dim=(0, 2, 3))
    return ce + (1 - (2 * inter + 1) / (denom + 1)).mean()


def predict(model: nn.Module, data: SliceSet, index=None, batch_size: int = 64) -> np.ndarray:
    """Label maps ``[N, H, W]`` uint8 for the rows ``index`` of ``data`` (argmax of the logits)."""
    if index is not None and len(index) == 0:
        return np.zeros((0, *data.image_size), np.uint8)
    return map_images(lambda x: model(x).argmax(dim=1).to(torch.uint8), model, data, index, batch_size)


def embed(net: EncoderWithHead, data: SliceSet, index=None, batch_size: int = 128) -> np.ndarray:
    """Pooled bottleneck features ``[N, C]`` of the (pretrained) encoder, for embedding plots."""
    return map_images(net.features, net, data, index, batch_size)


def evaluate(model: nn.Module, data: SliceSet, index, hd95: bool = False,
             per_site_bn: bool = False) -> tuple[dict, np.ndarray]:  # fmt: skip
    """Dice of ``model`` on rows ``index``: per image (mean over images and classes), pooled over
    all slices (the papers' way) and, when every row is a slice of a volume, per 3-D volume
    (``dice_volume``: mean over volumes of the volume's mean class Dice, the honest number).

    With ``hd95`` (volumes only): HD95 of every stacked volume and class in mm when the rows carry
    ``spacing_x/y/z`` (:func:`~medcl_lite.metrics.hd95_per_volume`): ``hd95_volume``, the mean of
    the defined values, ``hd95_undefined``, how many (volume, class) cases had an empty prediction
    or truth, and ``hd95_<class>``.

    With ``per_site_bn`` each site's rows are predicted by a copy of ``model`` whose encoder
    BatchNorm statistics were estimated on those rows (:func:`medcl_lite.batchnorm.predict_per_site`)."""
    pred = predict_per_site(predict, model, data, index) if per_site_bn else predict(model, data, index)
    target = data.masks[np.asarray(index)]
    per_image = dice_per_image(pred, target, len(data.classes))  # [N, K], NaN = absent in both
    pooled = dice_pooled(pred, target, len(data.classes))
    metrics = {
        "dice": float(np.nanmean(per_image)),
        "dice_pooled": float(np.nanmean(pooled)),
    }
    volumes = data.meta["volume_id"].astype(str).to_numpy()[np.asarray(index)]
    if len(volumes) and (volumes != "").all():
        metrics["dice_volume"] = float(dice_per_volume(pred, target, volumes, len(data.classes))["mean"].mean())
        if hd95:
            metrics.update(_hd95_metrics(pred, target, data, np.asarray(index), volumes))
    for k, name in enumerate(data.classes[1:]):
        metrics[f"dice_{name}"] = float(np.nanmean(per_image[:, k]))
    sites = data.meta["site"].to_numpy()[np.asarray(index)]
    for site in sorted(set(sites)):
        metrics[f"dice_site_{site}"] = float(np.nanmean(per_image[sites == site]))
    return metrics, pred


def _hd95_metrics(pred: np.ndarray, target: np.ndarray, data: SliceSet, index: np.ndarray, volumes) -> dict:
    """``hd95_volume``, ``hd95_undefined`` and ``hd95_<class>`` of the stacked test volumes."""
    meta = data.meta.iloc[index]
    spacing = meta if {"spacing_x", "spacing_y", "spacing_z"} <= set(meta.columns) else None
    table = hd95_per_volume(pred, target, volumes, meta["slice_index"].to_numpy(), len(data.classes),
                            spacing=spacing, class_names=data.classes)  # fmt: skip
    summary = summarize_hd95(table)
    out = {"hd95_volume": summary["mean"], "hd95_undefined": summary["n_undefined"]}
    return out | {f"hd95_{name.removeprefix('hd95_')}": v for name, v in summary["per_class"].items()}


def finetune_param_groups(model: nn.Module, lr: float, encoder_lr_scale: float) -> list[dict]:
    """Optimizer parameter groups of a segmenter: decoder and head at ``lr``, the encoder at
    ``encoder_lr_scale`` x ``lr``; with scale 0 the encoder is frozen (``requires_grad`` off) and
    left out of the optimizer."""
    encoder = list(model.encoder.parameters())
    own = {id(p) for p in encoder}
    groups = [{"params": [p for p in model.parameters() if id(p) not in own], "lr": lr}]
    if encoder_lr_scale == 0:
        model.encoder.requires_grad_(False)
        return groups
    return [*groups, {"params": encoder, "lr": lr * encoder_lr_scale}]


def _train_mode(model: nn.Module, frozen_bn: bool) -> None:
    """Training mode, except the encoder's BatchNorm layers when ``frozen_bn`` (a frozen encoder,
    or ``encoder_bn="frozen"``): they normalise with the pretrained running statistics and do not
    update them."""
    model.train()
    if frozen_bn:
        for module in model.encoder.modules():
            if isinstance(module, nn.modules.batchnorm._BatchNorm):
                module.eval()


def finetune(
    cfg: FinetuneConfig,
    data: SliceSet,
    train_index,
    val_index,
    test_index=None,
    encoder_state: dict[str, Tensor] | None = None,
) -> FinetuneResult:
    """Train a segmenter on the labelled rows ``train_index``, pick the step by validation Dice.

    The encoder starts from ``encoder_state`` (or ``cfg.pretrained``) when ``cfg.init ==
    "pretrained"``, else at random; the decoder starts at random unless
    ``encoder_state`` also holds a pretrained decoder (``{"encoder": ..., "decoder": ...}``, as region
    losses and supervised pretraining write; :func:`medcl_lite.models.load_pretrained`). The model is scored on
    ``val_index`` every ``eval_every`` steps; the best is kept and scored once on ``test_index``
    (never used for choices). With ``cfg.paper_selection`` the test rows are also scored at every
    check, and the best of those (the papers' optimistic protocol) is reported separately as
    ``paper_test_dice_pooled``. Writes ``metrics.json`` and ``history.csv`` to ``cfg.out_dir``.

    Under ``torchrun`` each step's ``batch_size`` images are split over the processes (DDP, global
    BatchNorm); every process evaluates the same model and returns the same result, and rank 0
    alone writes files.
    """
    if data.masks is None:
        raise ValueError(f"finetune: dataset {data.name!r} has no masks")
    device = get_device(cfg.device)
    seed_everything(cfg.seed)
    rank, n_proc = distributed.world()
    if cfg.batch_size % n_proc:
        raise ConfigError(f"FinetuneConfig: batch_size={cfg.batch_size} must be a multiple of the {n_proc} processes")
    extra = {"decoder_channels": tuple(cfg.decoder_channels)} if cfg.decoder_channels else {}
    model = build_segmenter(cfg.arch, cfg.encoder, cfg.in_channels, classes=len(data.classes), **extra)
    if cfg.init == "pretrained":
        if encoder_state is None:
            if not cfg.pretrained:
                raise ConfigError("FinetuneConfig: init='pretrained' needs `pretrained` or encoder_state")
            encoder_state = load_pretrained_encoder(cfg.pretrained, cfg.encoder, cfg.in_channels)
        load_pretrained(model, encoder_state)
    if n_proc > 1:
        model = distributed.convert_global_batchnorm(model)
    model.to(device)
    train_index = np.asarray(train_index)
    transform = joint_transform(data.image_size[0], cfg.augment)
    dataset = LabelledDataset(data, transform, index=train_index)
    generator = torch.Generator().manual_seed(cfg.seed)
    steps = cfg.steps_for(len(train_index))
    sampler = RandomSampler(dataset, replacement=True, num_samples=steps * cfg.batch_size, generator=generator)
    batches = BatchSampler(sampler, cfg.batch_size, drop_last=False)  # what batch_size=... builds
    loader = DataLoader(dataset, batch_sampler=distributed.share(batches), num_workers=cfg.num_workers)
    frozen = cfg.encoder_lr_scale == 0
    frozen_bn = frozen or cfg.encoder_bn == "frozen"
    optimizer, scheduler, scaler, use_amp = _make_optimization(
        finetune_param_groups(model, cfg.lr, cfg.encoder_lr_scale), cfg.optimizer, cfg.lr, 0.9,
        cfg.weight_decay, steps, 0, cfg.amp, device,
    )  # fmt: skip

    paper = cfg.paper_selection and test_index is not None and len(test_index) > 0
    history, best = [], {"val_dice": -1.0, "step": 0, "state": None}
    trained = distributed.wrap(model, device)  # DDP in a distributed run
    distributed.seed_augmentations(cfg.seed, 0)
    # Decoder first (LP-FT): the encoder's gradients are dropped and its BatchNorm statistics kept
    # for `warmup` steps. (Its weights keep requires_grad, so a DDP run all-reduces them all along.)
    warmup = 0 if frozen else min(cfg.frozen_encoder_steps, steps)
    encoder_params = list(model.encoder.parameters()) if warmup else []
    _train_mode(model, frozen_bn or warmup > 0)
    bar = tqdm(loader, disable=not cfg.progress or rank != 0, desc="finetune", mininterval=2.0)
    for step, batch in enumerate(bar, 1):
        if warmup and step == warmup + 1:  # the decoder has learned to read the encoder: now all learn
            _train_mode(model, frozen_bn)
        x, y = batch["image"].to(device), batch["mask"].to(device)
        with torch.autocast(device.type, enabled=use_amp):
            loss = _segmentation_loss(trained(x), y, cfg.loss)
        _update(loss, optimizer, scaler, scheduler, where=f"fine-tuning step {step}",
                keep=encoder_params if step <= warmup else ())  # fmt: skip
        row = {"step": step, "loss": distributed.mean_over_ranks(loss)}
        if step % cfg.eval_every == 0 or step == steps:
            row["val_dice"] = evaluate(model, data, val_index)[0]["dice"]
            if row["val_dice"] > best["val_dice"]:
                best = {"val_dice": row["val_dice"], "step": step, "state": copy.deepcopy(model.state_dict())}
            if paper:
                row["test_dice_pooled"] = evaluate(model, data, test_index)[0]["dice_pooled"]
            _train_mode(model, frozen_bn or step <= warmup)  # evaluation restored train mode on the whole model
        history.append(row)
    model.load_state_dict(best["state"])
    metrics = {"best_step": best["step"], "val_dice": best["val_dice"], "n_train": int(len(train_index))}
    if paper:
        scored = pd.DataFrame(history).dropna(subset=["test_dice_pooled"])
        top = scored.loc[scored["test_dice_pooled"].idxmax()]
        metrics.update(paper_test_dice_pooled=float(top["test_dice_pooled"]), paper_best_step=int(top["step"]))
    test_pred = None
    if test_index is not None and len(test_index):
        test_metrics, test_pred = evaluate(model, data, test_index, hd95=True, per_site_bn=cfg.test_bn == "per_site")
        metrics.update({f"test_{k}": v for k, v in test_metrics.items()})
    result = FinetuneResult(model, metrics, pd.DataFrame(history), cfg, test_pred)
    if cfg.out_dir and rank == 0:
        out = Path(cfg.out_dir)
        atomic_write_text(out / "config.json", to_json(cfg))
        atomic_write_text(out / "history.csv", result.history.to_csv(index=False))
        if test_pred is not None:  # the test predictions, for overlays without re-training
            np.savez_compressed(out / "test_pred.npz", pred=test_pred, index=np.asarray(test_index))
        atomic_write_text(out / "metrics.json", pd.Series(metrics).to_json(indent=2))
    return result
