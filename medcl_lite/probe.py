"""A linear probe: how much of the masks an encoder's features already hold.

Self-supervised papers measure a representation with a linear classifier on frozen features (SimCLR
Sec. 2.3, MoCo Sec. 4.1); nothing but the classifier learns, so the score is the features'. The dense
analogue for segmentation is a 1x1 convolution on one encoder stage ``s``: for each cell ``c`` of the
feature map ``f_s [C, h, w]``

    p(k | c) = softmax_k( W_k · f_s(c) + b_k )

trained by cross-entropy against the mask reduced to ``h x w`` (each cell's majority class), then
scored at full resolution: the logits upsampled bilinearly to ``H x W``, argmax, Dice per image
(mean over images and foreground classes, as :func:`medcl_lite.train.evaluate`). Features are
computed once, in eval mode (pretrained BatchNorm statistics), so a probe costs seconds.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from medcl_lite.data.sliceset import SliceSet
from medcl_lite.inference import map_images
from medcl_lite.metrics import dice_per_image
from medcl_lite.models import build_segmenter, load_pretrained
from medcl_lite.utils import get_device, seed_everything

__all__ = ["ProbeResult", "coarse_masks", "encoder_features", "linear_probe"]


@dataclass
class ProbeResult:
    """What :func:`linear_probe` returns: the test Dice, the probe, and the stage it read."""

    dice: float  # per image, mean over images and foreground classes (full resolution)
    probe: nn.Conv2d  # the trained 1x1 convolution, [K, C, 1, 1]
    stage: int
    feature_shape: tuple[int, int, int]  # [C, h, w] of that stage
    losses: list[float]  # training cross-entropy per step


def encoder_features(encoder: nn.Module, data: SliceSet, index, stage: int, batch_size: int = 64) -> Tensor:
    """Stage ``stage`` of an smp encoder (its list of features: 0 = the input, 1..5 = strides 2..32;
    negative counts from the deepest) for rows ``index``: ``[N, C, h, w]`` float32 on the CPU."""
    n_stages = len(encoder.out_channels)
    if not -n_stages <= stage < n_stages:
        raise ValueError(f"stage={stage}: the encoder has stages 0..{n_stages - 1} (or -{n_stages}..-1)")
    return torch.from_numpy(map_images(lambda x: encoder(x)[stage], encoder, data, index, batch_size))


def coarse_masks(masks, size: tuple[int, int], num_classes: int) -> Tensor:
    """Label maps ``[N, H, W]`` reduced to ``size`` = ``(h, w)``: each cell's majority class (the
    class with the largest area in it; ties go to the lower class). Returns ``[N, h, w]`` int64."""
    masks = torch.as_tensor(np.asarray(masks), dtype=torch.long)
    one_hot = F.one_hot(masks, num_classes).permute(0, 3, 1, 2).float()  # [N, K, H, W]
    return F.adaptive_avg_pool2d(one_hot, size).argmax(dim=1)


def linear_probe(
    data: SliceSet,
    train_index,
    test_index,
    encoder_state: dict | None = None,
    arch: str = "unet",
    encoder: str = "resnet18",
    stage: int = 3,
    steps: int = 300,
    lr: float = 1e-2,
    seed: int = 0,
    device: str = "auto",
) -> ProbeResult:
    """Train a 1x1-conv probe on frozen encoder features of ``train_index`` and score it on
    ``test_index`` (module docstring).

    Args:
        data: a labelled SliceSet.
        encoder_state: the encoder's weights (a pretraining run's ``encoder_state``, or
            ``{"encoder": ...}``); None = a randomly initialised encoder (the baseline).
        arch, encoder: the segmenter whose encoder is probed (as in pretraining).
        stage: which encoder stage (default 3: stride 8, 8x8 cells at 64²).
        steps, lr: full-batch Adam steps on the training features, and its learning rate.
        seed: the random encoder's and the probe's initialisation.
    """
    if data.masks is None:
        raise ValueError(f"linear_probe: dataset {data.name!r} has no masks")
    if len(train_index) == 0 or len(test_index) == 0:
        raise ValueError("linear_probe: train_index and test_index must not be empty")
    seed_everything(seed)
    run_device = get_device(device)
    classes = len(data.classes)
    model = build_segmenter(arch, encoder, in_channels=1, classes=classes)
    if encoder_state is not None:
        load_pretrained(model, encoder_state)
    net = model.encoder.to(run_device)
    train_x = encoder_features(net, data, train_index, stage).to(run_device)
    test_x = encoder_features(net, data, test_index, stage).to(run_device)
    train_y = coarse_masks(data.masks[np.asarray(train_index)], train_x.shape[-2:], classes).to(run_device)
    probe = nn.Conv2d(train_x.shape[1], classes, kernel_size=1).to(run_device)
    optimizer = torch.optim.Adam(probe.parameters(), lr=lr)
    losses = []
    for _ in range(steps):
        loss = F.cross_entropy(probe(train_x), train_y)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        losses.append(float(loss.detach()))
    with torch.no_grad():
        logits = F.interpolate(probe(test_x), size=data.image_size, mode="bilinear", align_corners=False)
    pred = logits.argmax(dim=1).cpu().numpy()
    per_image = dice_per_image(pred, data.masks[np.asarray(test_index)], classes)
    return ProbeResult(float(np.nanmean(per_image)), probe.cpu(), stage, tuple(train_x.shape[1:]), losses)
