"""A supervised reference for zero-shot findings: the same image encoder trained *with labels*.

Zero-shot AUC (chapter 05, LRCLR) can only be as good as what the image side can see at the
run's size. This module answers "how much is there to see?": the image encoder of
:func:`medcl_lite.image_text.build_model` + a linear layer on its pooled last map, trained with
one binary cross-entropy per finding on the *same* training images, schedule, augmentation and
seed as the image-text run (:class:`~medcl_lite.image_text.ImageTextConfig`). It uses labels the
contrastive models never see, so it is a reference (roughly a ceiling at that budget), not a
competitor. Not in the LRCLR paper: our addition, to make a phantom table readable.

Shapes: ``B`` images, ``F`` findings, ``C`` channels of the encoder's last map.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.utils.data import DataLoader

from medcl_lite.crossmodal import finding_auc
from medcl_lite.data.sliceset import SliceSet
from medcl_lite.image_text import ImageTextConfig, ReportDataset
from medcl_lite.inference import map_images
from medcl_lite.models import build_segmenter
from medcl_lite.train import _make_optimization, _update
from medcl_lite.utils import get_device, seed_everything

__all__ = [
    "FindingClassifier",
    "finding_auc_table",
    "finding_probabilities",
    "train_finding_classifier",
]


class FindingClassifier(nn.Module):
    """Image encoder -> global average pool of the last map -> Linear(C, F): one logit per finding.

    ``findings`` names the outputs, in order.
    """

    def __init__(self, encoder: nn.Module, channels: int, findings: Sequence[str]) -> None:
        super().__init__()
        self.encoder, self.findings = encoder, list(findings)
        self.head = nn.Linear(channels, len(self.findings))

    def forward(self, images: Tensor) -> Tensor:
        """``[B, 1, H, W] -> [B, F]`` logits."""
        return self.head(self.encoder(images)[-1].mean(dim=(2, 3)))


def _labels(data: SliceSet, findings: Sequence[str]) -> np.ndarray:
    """``[N, F]`` float labels from the bool columns ``meta[finding]``, with a clear error."""
    missing = [f for f in findings if f not in data.meta]
    if missing:
        raise ValueError(f"train_finding_classifier: no label column {missing} in {data.name!r}")
    return data.meta[list(findings)].to_numpy(dtype=np.float32)


def train_finding_classifier(
    cfg: ImageTextConfig, data: SliceSet, index, findings: Sequence[str]
) -> FindingClassifier:
    """Train a :class:`FindingClassifier` on rows ``index`` of ``data`` with the labels ``findings``.

    ``cfg`` (an :class:`~medcl_lite.image_text.ImageTextConfig`) gives the encoder, epochs,
    batch size, learning rate, weight decay, warm-up, augmentation, seed and device: the schedule
    of the image-text run it is compared with. Loss: mean binary cross-entropy over findings.
    """
    if not findings:
        raise ValueError("train_finding_classifier: findings is empty")
    device = get_device(cfg.device)
    seed_everything(cfg.seed)
    labels = torch.tensor(_labels(data, findings))
    dataset = ReportDataset(data, index, cfg.augment)
    generator = torch.Generator().manual_seed(cfg.seed)
    loader = DataLoader(
        dataset, batch_size=cfg.batch_size, shuffle=True, drop_last=True, generator=generator
    )
    if len(loader) == 0:
        raise ValueError(
            f"train_finding_classifier: batch_size={cfg.batch_size} exceeds the {len(dataset)} images"
        )
    encoder = build_segmenter("unet", cfg.encoder, 1, classes=2).encoder
    model = FindingClassifier(encoder, encoder.out_channels[-1], findings).to(device)
    optimizer, scheduler, scaler, use_amp = _make_optimization(
        model.parameters(), "adam", cfg.lr, 0.9, cfg.weight_decay,
        cfg.epochs * len(loader), cfg.warmup_steps, cfg.amp, device,
    )  # fmt: skip
    model.train()
    for epoch in range(cfg.epochs):
        for step, batch in enumerate(loader):
            target = labels[batch["row"]].to(device)
            with torch.autocast(device.type, enabled=use_amp):
                logits = model(batch["image"].to(device))
            loss = F.binary_cross_entropy_with_logits(logits.float(), target)
            _update(
                loss,
                optimizer,
                scaler,
                scheduler,
                where=f"finding classifier, epoch {epoch}, step {step}",
            )
    return model.eval()


def finding_probabilities(
    model: FindingClassifier, data: SliceSet, index, batch_size: int = 64
) -> np.ndarray:
    """Sigmoid outputs ``[N, F]`` of ``model`` on rows ``index`` of ``data`` (eval mode)."""
    return map_images(lambda x: torch.sigmoid(model(x)), model, data, index, batch_size)


def finding_auc_table(model: FindingClassifier, data: SliceSet, rows_of) -> pd.DataFrame:
    """AUC of every finding of ``model``; ``rows_of(finding)`` gives its evaluation rows.

    Same columns as :func:`medcl_lite.image_text.zero_shot_table`: finding, auc, positives, images.
    """
    table = []
    for j, finding in enumerate(model.findings):
        rows = np.asarray(rows_of(finding))
        labels = _labels(data, [finding])[rows, 0].astype(bool)
        scores = finding_probabilities(model, data, rows)[:, j]
        table.append({"finding": finding, "auc": finding_auc(scores, labels),
                      "positives": int(labels.sum()), "images": len(rows)})  # fmt: skip
    return pd.DataFrame(table)
