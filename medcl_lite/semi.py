"""IDEAL's two-stream semi-supervised fine-tuning (docs/methods.md, "IDEAL: fine-tuning").

One shared encoder feeds two decoders of different architecture: a U-Net decoder (stream
``"unet"``) and a second one chosen by ``SemiConfig.second_stream`` (default ``"linknet"``), each
with its own segmentation head. Labelled images train both streams with the supervised loss; on
unlabelled images each stream's confident hard prediction (stop-gradient) is the pseudo-label of
the other stream, in both directions, as in cross pseudo supervision (CPS, Chen et al., CVPR
2021). Inference averages the two streams.

Which second decoder (:data:`SECOND_STREAMS`): every choice reads the plain encoder's stages, the
features the U-Net decoder reads, and decodes them differently.

- ``"linknet"`` (LinkNet, Chaurasia & Culurciello 2017): skips *added*, not concatenated, light
  residual-style blocks (0.5 M parameters on ResNet-18), full resolution. The default: a cheap,
  different second opinion at full resolution.
- ``"unetplusplus"`` (UNet++, Zhou et al. 2018): nested dense skip pathways, full resolution;
  about 2.6x the U-Net decoder's time.
- ``"fpn"`` (FPN, as the paper's "DeepLab/FPN heads"): top-down pyramid predicting at 1/4
  resolution, upsampled x4. Measured on the 64² cardiac phantom: too coarse for the thin
  myocardium (stream Dice .26 vs .60 for the U-Net stream), and averaging with it lowered the
  result; use it at larger images.

DeepLabV3+ is not offered: smp makes its encoder dilated (output stride 16), so a shared encoder
would change for the U-Net stream too.

**(unpublished — our choices)**: the second decoder, the confidence threshold (0.9), the ramp-up
of the consistency weight (sigmoid, as Mean-Teacher and CPS) and the normalisation of the
pseudo-label loss (mean over all unlabelled pixels, unconfident ones counting 0, as FixMatch /
UniMatch).
"""

from __future__ import annotations

import copy
import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import NamedTuple

import numpy as np
import pandas as pd
import segmentation_models_pytorch as smp
import torch
from torch import Tensor, nn
from torch.utils.data import DataLoader, RandomSampler
from tqdm.auto import tqdm

from medcl_lite.checkpoint import atomic_write_text
from medcl_lite.config import ConfigError, check_choice, check_range, to_json
from medcl_lite.data.datasets import LabelledDataset
from medcl_lite.data.sliceset import SliceSet
from medcl_lite.data.transforms import joint_transform
from medcl_lite.models import build_segmenter, load_pretrained
from medcl_lite.train import (
    _make_optimization,
    _segmentation_loss,
    _update,
    evaluate,
    load_pretrained_encoder,
    predict,
)
from medcl_lite.utils import get_device, seed_everything

__all__ = [
    "SECOND_STREAMS",
    "PseudoLabels",
    "SemiConfig",
    "SemiResult",
    "StreamView",
    "TwoStreamSegmenter",
    "consistency_weight",
    "cross_pseudo_labels",
    "cross_pseudo_loss",
    "finetune_two_stream",
    "two_stream_loss",
]

#: smp architectures offered as the second stream (the first is always ``"unet"``).
SECOND_STREAMS: tuple[str, ...] = ("linknet", "unetplusplus", "fpn")


# --------------------------------------------------------------------------------------------
# The network
# --------------------------------------------------------------------------------------------
class TwoStreamSegmenter(nn.Module):
    """One shared smp encoder, a U-Net decoder and a ``second`` decoder, each with its own head
    (IDEAL, fine-tune).

    ``forward(x [B, in, H, W]) -> (logits_unet, logits_second)``, each ``[B, K, H, W]``, in the
    order of :attr:`streams`; :meth:`predict_logits` averages the streams' softmax (inference).
    ``encoder`` and ``decoder`` (the U-Net stream's) have the names
    :func:`medcl_lite.models.load_pretrained` reads, so a pretraining run's encoder (and U-Net
    decoder) loads as into a plain U-Net. The encoder's parameters exist once (``parameters()``
    and ``state_dict()`` hold them once).
    """

    def __init__(
        self, encoder: str = "resnet18", in_channels: int = 1, classes: int = 2, second: str = "linknet"
    ) -> None:
        super().__init__()
        if second not in SECOND_STREAMS:
            raise ValueError(f"second={second!r} is not one of {list(SECOND_STREAMS)}")
        unet = build_segmenter("unet", encoder, in_channels, classes)
        # smp's public constructor builds the second decoder for these encoder channels; its own
        # encoder is dropped (a one-time cost): the decoder reads the U-Net's encoder.
        other = smp.create_model(
            second, encoder_name=encoder, encoder_weights=None, in_channels=in_channels, classes=classes
        )
        self.streams: tuple[str, str] = ("unet", second)
        self.encoder = unet.encoder
        self.decoders = nn.ModuleDict({"unet": unet.decoder, second: other.decoder})
        self.heads = nn.ModuleDict({"unet": unet.segmentation_head, second: other.segmentation_head})

    @property
    def decoder(self) -> nn.Module:
        """The U-Net stream's decoder (where a pretrained decoder is loaded)."""
        return self.decoders["unet"]

    def _features(self, x: Tensor) -> list[Tensor]:
        """Encoder stages of ``x [B, in, H, W]``; H and W must be multiples of the output stride."""
        stride = self.encoder.output_stride
        if x.ndim != 4 or x.shape[-2] % stride or x.shape[-1] % stride:
            raise ValueError(
                f"x must be [B, C, H, W] with H, W multiples of {stride}, got {tuple(x.shape)}"
            )
        return self.encoder(x)

    def decode(self, features: list[Tensor], stream: str) -> Tensor:
        """Logits ``[B, K, H, W]`` of one stream (one of :attr:`streams`) from encoder stages."""
        if stream not in self.streams:
            raise ValueError(f"stream={stream!r} is not one of {list(self.streams)}")
        return self.heads[stream](self.decoders[stream](features))

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        features = self._features(x)
        return self.decode(features, self.streams[0]), self.decode(features, self.streams[1])

    def predict_logits(self, x: Tensor) -> Tensor:
        """Log of the streams' mean softmax ``[B, K, H, W]``: logits whose softmax is the average
        of the two streams' probabilities (IDEAL's inference), so their argmax is the label map."""
        logits_a, logits_b = self(x)
        log_probs = torch.stack([logits_a.float().log_softmax(1), logits_b.float().log_softmax(1)])
        return torch.logsumexp(log_probs, dim=0) - math.log(2)

    def stream(self, name: str) -> StreamView:
        """One-output view (a stream's name or ``"mean"``) for ``train.predict``, ``evaluate``."""
        return StreamView(self, name)


class StreamView(nn.Module):
    """``x -> logits [B, K, H, W]`` of one stream of a :class:`TwoStreamSegmenter`, or of their
    average (``"mean"``): what :func:`medcl_lite.train.predict` and ``evaluate`` expect.

    Shares the model's parameters and follows its train/eval mode at creation.
    """

    def __init__(self, model: TwoStreamSegmenter, name: str) -> None:
        super().__init__()
        if name not in (*model.streams, "mean"):
            raise ValueError(f"stream name={name!r} is not one of {[*model.streams, 'mean']}")
        self.model, self.name = model, name
        self.train(model.training)

    def forward(self, x: Tensor) -> Tensor:
        if self.name == "mean":
            return self.model.predict_logits(x)
        return self.model.decode(self.model._features(x), self.name)


# --------------------------------------------------------------------------------------------
# Cross pseudo supervision
# --------------------------------------------------------------------------------------------
class PseudoLabels(NamedTuple):
    """Hard pseudo-labels ``[B, H, W]`` (int64) and confidence masks ``[B, H, W]`` (bool) of
    each stream; no tensor requires grad."""

    labels_a: Tensor
    confident_a: Tensor
    labels_b: Tensor
    confident_b: Tensor


def _check_pair(logits_a: Tensor, logits_b: Tensor, threshold: float) -> None:
    if logits_a.ndim != 4 or logits_a.shape != logits_b.shape:
        raise ValueError(
            f"logits_a and logits_b must be [B, K, H, W] of one shape, got "
            f"{tuple(logits_a.shape)} and {tuple(logits_b.shape)}"
        )
    if not 0.0 <= threshold <= 1.0:
        raise ValueError(f"threshold must be in [0, 1], got {threshold}")


@torch.no_grad()
def cross_pseudo_labels(logits_a: Tensor, logits_b: Tensor, threshold: float) -> PseudoLabels:
    """Each stream's hard prediction (argmax) and where it is confident (max softmax >= threshold).

    Computed without gradient (stop-gradient, IDEAL fine-tune / CPS): the targets a stream
    produces never pass gradient back into it. ``logits_*``: ``[B, K, H, W]``.
    """
    _check_pair(logits_a, logits_b, threshold)
    conf_a, labels_a = logits_a.detach().float().softmax(1).max(1)
    conf_b, labels_b = logits_b.detach().float().softmax(1).max(1)
    return PseudoLabels(labels_a, conf_a >= threshold, labels_b, conf_b >= threshold)


def _masked_cross_entropy(logits: Tensor, target: Tensor, keep: Tensor) -> Tensor:
    """Cross-entropy ``[B, K, H, W]`` vs ``[B, H, W]`` summed over ``keep`` pixels, divided by
    all pixels (unconfident pixels count 0, as FixMatch / UniMatch); 0 when none is kept."""
    per_pixel = nn.functional.cross_entropy(logits.float(), target, reduction="none")
    return (per_pixel * keep).sum() / keep.numel()


def cross_pseudo_loss(logits_a: Tensor, logits_b: Tensor, threshold: float) -> Tensor:
    """Bidirectional pseudo-label loss: stream a learns b's confident labels and b learns a's.

    ``L = CE(a, ŷ_b | conf_b >= τ) + CE(b, ŷ_a | conf_a >= τ)`` (CPS eq. 3, with IDEAL's
    threshold), targets detached (:func:`cross_pseudo_labels`). Each term sums over the confident
    pixels and divides by all pixels, so it is 0 when nothing is confident (e.g. ``τ = 1``).
    Symmetric: swapping the streams gives the same value.
    """
    pseudo = cross_pseudo_labels(logits_a, logits_b, threshold)
    a_learns_b = _masked_cross_entropy(logits_a, pseudo.labels_b, pseudo.confident_b)
    b_learns_a = _masked_cross_entropy(logits_b, pseudo.labels_a, pseudo.confident_a)
    return a_learns_b + b_learns_a


def consistency_weight(step: int, rampup_steps: int, max_weight: float) -> float:
    """Ramped weight of the pseudo-label loss: ``max_weight * exp(-5 (1 - t)^2)``, ``t =
    min(1, step / rampup_steps)``: the sigmoid ramp-up of Mean-Teacher (Tarvainen & Valpola,
    2017, from Laine & Aila) that CPS also uses. ``rampup_steps=0``: ``max_weight`` at once."""
    if step < 0:
        raise ValueError(f"step must be >= 0, got {step}")
    if rampup_steps < 0:
        raise ValueError(f"rampup_steps must be >= 0, got {rampup_steps}")
    if max_weight < 0:
        raise ValueError(f"max_weight must be >= 0, got {max_weight}")
    if rampup_steps == 0:
        return float(max_weight)
    t = min(1.0, step / rampup_steps)
    return float(max_weight * math.exp(-5.0 * (1.0 - t) ** 2))


# --------------------------------------------------------------------------------------------
# Configuration and the training step
# --------------------------------------------------------------------------------------------
@dataclass
class SemiConfig:
    """Two-stream semi-supervised fine-tuning (IDEAL); fields as in ``FinetuneConfig`` where they
    mean the same. The encoder starts from ``pretrained_state`` / ``pretrained``, else at random."""

    encoder: str = "resnet18"
    in_channels: int = 1
    second_stream: str = "linknet"  # the second decoder (SECOND_STREAMS); the first is a U-Net
    pretrained: str = ""  # path to a pretraining run's encoder.pt; "" = random (or the argument)
    augment: str = "light"  # joint_transform strength, labelled and unlabelled: "none" | "light"
    max_steps: int = 300
    batch_size: int = 8  # labelled images per step
    unlabelled_batch: int = 8  # unlabelled images per step
    optimizer: str = "adam"
    lr: float = 1e-3
    weight_decay: float = 1e-4
    loss: str = "ce+dice"  # supervised loss of each stream: "ce" | "ce+dice"
    threshold: float = 0.9  # pseudo-label confidence τ (max softmax); 0 = every pixel (plain CPS)
    consistency: float = 1.0  # maximum weight of the pseudo-label loss
    rampup_steps: int = 100  # sigmoid ramp-up of that weight; 0 = none
    eval_every: int = 25  # steps between validation Dice checks (step choice)
    seed: int = 0
    device: str = "auto"
    amp: bool = True  # mixed precision on CUDA only
    num_workers: int = 0
    out_dir: str = ""
    progress: bool = True

    def __post_init__(self) -> None:
        name = type(self).__name__
        check_choice(name, "augment", self.augment, {"none", "light"})
        check_choice(name, "second_stream", self.second_stream, set(SECOND_STREAMS))
        check_choice(name, "loss", self.loss, {"ce", "ce+dice"})
        check_choice(name, "optimizer", self.optimizer, {"sgd", "adam"})
        for key in ("in_channels", "max_steps", "batch_size", "unlabelled_batch", "eval_every"):
            check_range(name, key, getattr(self, key), 1)
        check_range(name, "lr", self.lr, 1e-12)
        check_range(name, "weight_decay", self.weight_decay, 0.0)
        check_range(name, "threshold", self.threshold, 0.0, 1.0)
        check_range(name, "consistency", self.consistency, 0.0)
        check_range(name, "rampup_steps", self.rampup_steps, 0)


def two_stream_loss(
    model: TwoStreamSegmenter,
    x_labelled: Tensor,
    y_labelled: Tensor,
    x_unlabelled: Tensor,
    weight: float,
    cfg: SemiConfig,
) -> tuple[Tensor, dict[str, float]]:
    """One step's objective: ``L = L_sup(a) + L_sup(b) + w(t) · L_cps`` (IDEAL fine-tune, CPS).

    Labelled ``[Bl, in, H, W]`` (masks ``[Bl, H, W]``) and unlabelled ``[Bu, in, H, W]`` images go
    through the network in two passes, as in the CPS code: BatchNorm normalises each batch by its
    own statistics. Measured on the cardiac phantom (1 labelled patient, 200 steps, pseudo-label
    weight 0): one joint pass left the U-Net stream at Dice .32 per volume, two passes at .89
    (supervised-only U-Net: .89). Returns the loss and, for the history, its parts, the fraction
    of confident pseudo-labels and of unlabelled pixels where the streams disagree.
    """
    logits_a, logits_b = model(x_labelled)
    sup = _segmentation_loss(logits_a, y_labelled, cfg.loss) + _segmentation_loss(logits_b, y_labelled, cfg.loss)
    if len(x_unlabelled) == 0:  # every image labelled (the 100 % budget): the supervised loss alone
        return sup, {"sup_loss": float(sup.detach()), "cps_loss": 0.0, "confident": math.nan, "disagree": math.nan}
    un_a, un_b = model(x_unlabelled)
    cps = cross_pseudo_loss(un_a, un_b, cfg.threshold)
    pseudo = cross_pseudo_labels(un_a, un_b, cfg.threshold)
    parts = {
        "sup_loss": float(sup.detach()),
        "cps_loss": float(cps.detach()),
        "confident": float((pseudo.confident_a | pseudo.confident_b).float().mean()),
        "disagree": float((pseudo.labels_a != pseudo.labels_b).float().mean()),
    }
    return sup + weight * cps, parts


# --------------------------------------------------------------------------------------------
# The run
# --------------------------------------------------------------------------------------------
@dataclass
class SemiResult:
    """What :func:`finetune_two_stream` returns: the model at the best validation step and its
    scores. Predict with ``train.predict(result.model.stream("mean"), data, rows)``."""

    model: TwoStreamSegmenter
    metrics: dict
    history: pd.DataFrame
    config: SemiConfig
    test_pred: np.ndarray | None = field(default=None, repr=False)
    stream_preds: dict[str, np.ndarray] = field(default_factory=dict, repr=False)  # {stream: [N, H, W]}


def _build_model(
    cfg: SemiConfig, classes: int, pretrained_state: dict | None
) -> TwoStreamSegmenter:
    """The two-stream network; encoder (and U-Net decoder) from ``pretrained_state`` or
    ``cfg.pretrained`` when given (``models.load_pretrained``), else random."""
    model = TwoStreamSegmenter(cfg.encoder, cfg.in_channels, classes, cfg.second_stream)
    if pretrained_state is None and cfg.pretrained:
        pretrained_state = load_pretrained_encoder(cfg.pretrained)
    if pretrained_state is not None:
        load_pretrained(model, pretrained_state)
    return model


def _loader(
    data: SliceSet, index: np.ndarray, cfg: SemiConfig, batch: int, seed: int
) -> DataLoader:
    """``cfg.max_steps`` batches of ``batch`` rows of ``index``, drawn with replacement and
    augmented by ``joint_transform`` (masks served, used only for labelled rows)."""
    dataset = LabelledDataset(data, joint_transform(data.image_size[0], cfg.augment), index=index)
    generator = torch.Generator().manual_seed(seed)
    sampler = RandomSampler(
        dataset, replacement=True, num_samples=cfg.max_steps * batch, generator=generator
    )
    return DataLoader(dataset, batch_size=batch, sampler=sampler, num_workers=cfg.num_workers)


def _check_rows(name: str, index, allow_empty: bool = False) -> np.ndarray:
    index = np.asarray(index)
    if index.size == 0:  # np.asarray([]) is float: keep an empty selection usable as row indices
        index = index.astype(np.int64)
    if index.ndim != 1 or (len(index) == 0 and not allow_empty):
        kind = "1-D" if allow_empty else "non-empty 1-D"
        raise ValueError(f"finetune_two_stream: {name} must be a {kind} array of rows, got {index.shape}")
    return index


def _stream_metrics(
    model: TwoStreamSegmenter, data: SliceSet, test_index: np.ndarray
) -> tuple[dict, dict[str, np.ndarray]]:
    """Test Dice (per image, pooled, per volume when volumes) of each stream alone, and each
    stream's label maps ``{stream: [N, H, W]}``."""
    out, preds = {}, {}
    for stream in model.streams:
        scores, preds[stream] = evaluate(model.stream(stream), data, test_index)
        for key in ("dice", "dice_pooled", "dice_volume"):
            if key in scores:
                out[f"test_{stream}_{key}"] = scores[key]
    return out, preds


def _disagreement(model: TwoStreamSegmenter, data: SliceSet, index: np.ndarray) -> float:
    """Fraction of pixels of rows ``index`` (unaugmented) where the two streams' labels differ
    (NaN without rows)."""
    if len(index) == 0:
        return math.nan
    first, second = (predict(model.stream(s), data, index) for s in model.streams)
    return float((first != second).mean())


def _write_outputs(result: SemiResult, test_index) -> None:
    """``config.json``, ``history.csv``, ``test_pred.npz`` and ``metrics.json`` in ``out_dir``."""
    out = Path(result.config.out_dir)
    atomic_write_text(out / "config.json", to_json(result.config))
    atomic_write_text(out / "history.csv", result.history.to_csv(index=False))
    if result.test_pred is not None:
        streams = {f"pred_{name}": pred for name, pred in result.stream_preds.items()}
        np.savez_compressed(
            out / "test_pred.npz", pred=result.test_pred, index=np.asarray(test_index), **streams
        )
    atomic_write_text(out / "metrics.json", pd.Series(result.metrics).to_json(indent=2))


def finetune_two_stream(
    cfg: SemiConfig,
    data: SliceSet,
    labelled_index,
    unlabelled_index,
    val_index,
    test_index=None,
    pretrained_state: dict | None = None,
) -> SemiResult:
    """Fine-tune a :class:`TwoStreamSegmenter` on labelled and unlabelled rows of ``data`` (IDEAL).

    Each step: a labelled batch (supervised loss on both streams, ``train._segmentation_loss``)
    and an unlabelled batch (:func:`cross_pseudo_loss` times :func:`consistency_weight`), both
    with the same joint augmentation (the unlabelled rows' masks are never read). Selection as
    ``train.finetune``: validation Dice of the averaged streams every ``eval_every`` steps picks
    the step; the test rows are scored once at the end (averaged streams, and each stream alone),
    plus the fraction of unlabelled pixels where the streams disagree. Writes ``metrics.json``,
    ``history.csv``, ``config.json`` and ``test_pred.npz`` to ``cfg.out_dir`` if set.
    """
    if data.masks is None:
        raise ValueError(f"finetune_two_stream: dataset {data.name!r} has no masks")
    labelled_index = _check_rows("labelled_index", labelled_index)
    unlabelled_index = _check_rows("unlabelled_index", unlabelled_index, allow_empty=True)
    val_index = _check_rows("val_index", val_index)
    if cfg.in_channels != 1:
        raise ConfigError(
            f"SemiConfig: in_channels={cfg.in_channels}, but SliceSet images have 1 channel"
        )
    device = get_device(cfg.device)
    seed_everything(cfg.seed)
    model = _build_model(cfg, len(data.classes), pretrained_state).to(device)
    labelled = _loader(data, labelled_index, cfg, cfg.batch_size, cfg.seed)
    unlabelled = (
        _loader(data, unlabelled_index, cfg, cfg.unlabelled_batch, cfg.seed + 1)
        if len(unlabelled_index)
        else [None] * cfg.max_steps  # nothing unlabelled: supervised two-stream training
    )
    optimizer, scheduler, scaler, use_amp = _make_optimization(
        model.parameters(), cfg.optimizer, cfg.lr, 0.9, cfg.weight_decay, cfg.max_steps, 0, cfg.amp, device
    )

    history, best = [], {"val_dice": -1.0, "step": 0, "state": None}
    t0 = time.perf_counter()
    model.train()
    batches = tqdm(zip(labelled, unlabelled, strict=True), total=cfg.max_steps, disable=not cfg.progress,
                   desc="two-stream", mininterval=2.0)  # fmt: skip
    for step, (lab, unl) in enumerate(batches, 1):
        weight = consistency_weight(step - 1, cfg.rampup_steps, cfg.consistency)
        x, y = lab["image"].to(device), lab["mask"].to(device)
        xu = unl["image"].to(device) if unl is not None else x[:0]
        with torch.autocast(device.type, enabled=use_amp):
            loss, parts = two_stream_loss(model, x, y, xu, weight, cfg)
        _update(loss, optimizer, scaler, scheduler, where=f"two-stream step {step}")
        row = {"step": step, "loss": float(loss.detach()), **parts, "weight": weight}
        if step % cfg.eval_every == 0 or step == cfg.max_steps:
            row["val_dice"] = evaluate(model.stream("mean"), data, val_index)[0]["dice"]
            if row["val_dice"] > best["val_dice"]:
                best = {
                    "val_dice": row["val_dice"],
                    "step": step,
                    "state": copy.deepcopy(model.state_dict()),
                }
        row["seconds"] = time.perf_counter() - t0
        history.append(row)
    model.load_state_dict(best["state"])
    metrics = {
        "best_step": best["step"],
        "val_dice": best["val_dice"],
        "n_train": int(len(labelled_index)),
        "n_unlabelled": int(len(unlabelled_index)),
        "unlabelled_disagreement": _disagreement(model, data, unlabelled_index),
    }
    test_pred, stream_preds = None, {}
    if test_index is not None and len(test_index):
        test_index = np.asarray(test_index)
        test_metrics, test_pred = evaluate(model.stream("mean"), data, test_index, hd95=True)
        metrics.update({f"test_{k}": v for k, v in test_metrics.items()})
        stream_metrics, stream_preds = _stream_metrics(model, data, test_index)
        metrics.update(stream_metrics)
    result = SemiResult(model, metrics, pd.DataFrame(history), cfg, test_pred, stream_preds)
    if cfg.out_dir:
        _write_outputs(result, test_index)
    return result
