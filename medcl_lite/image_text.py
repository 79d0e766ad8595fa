"""Training and zero-shot evaluation of image–report models (docs/methods.md, "LRCLR").

:func:`train_image_text` trains a :class:`~medcl_lite.crossmodal.LRCLRModel` on images whose
``meta["report"]`` holds their report: the CLIP baseline (``use_regions=False``: image vs report)
or LRCLR (+ region selection, cross-modal attention and the region–sentence term). The loop is
written out on purpose, like :mod:`medcl_lite.train`. :func:`zero_shot_table` scores every
finding zero-shot on held-out images with prompt pairs (:func:`medcl_lite.text.prompts`) and
reports the AUC.

Shapes: ``B`` images, ``S`` sentences of the batch, ``T`` tokens, ``D`` embedding size.
"""

from __future__ import annotations

import json
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from torch import Tensor
from torch.utils.data import DataLoader, Dataset
from tqdm.auto import tqdm

from medcl_lite.checkpoint import atomic_write_text, load_checkpoint, save_checkpoint
from medcl_lite.config import (
    ConfigError,
    changed_fields,
    check_choice,
    check_range,
    to_dict,
    to_json,
)
from medcl_lite.crossmodal import REPORT_FROM, LRCLRModel, finding_auc, zero_shot_scores
from medcl_lite.data.sliceset import SliceSet
from medcl_lite.data.transforms import joint_transform
from medcl_lite.inference import map_images
from medcl_lite.models import build_segmenter
from medcl_lite.text import PROMPT_TEMPLATES, TextEncoder, Tokenizer, prompts, split_sentences
from medcl_lite.train import _make_optimization, _update
from medcl_lite.utils import get_device, seed_everything

__all__ = [
    "ImageTextConfig",
    "ImageTextResult",
    "ReportDataset",
    "build_model",
    "collate_reports",
    "load_finished",
    "train_image_text",
    "zero_shot_table",
]


@dataclass
class ImageTextConfig:
    """Image–report contrastive training (unpublished sizes in LRCLR: ours, chapter 05)."""

    use_regions: bool = True  # False: the CLIP baseline (global image–report term only)
    encoder: str = "resnet18"  # smp encoder of the image side
    dim: int = 128  # joint embedding
    regions: int = 8  # k regions kept by the selector
    region_level: int = -1  # encoder stage whose cells are regions (-1 last, as LRCLR; -2 twice as fine)
    report_embedding: str = "sentences"  # a report = mean of its sentence embeddings, or "tokens" pooled
    region_weight: float = 1.0  # weight of the region–sentence term
    temperature: float = 0.07  # CLIP's initial τ, fixed here
    identical_positive: bool = True  # identical (templated) reports / sentences are positives
    text_dim: int = 128
    text_layers: int = 2
    text_heads: int = 4
    max_len: int = 48  # tokens per report or sentence, [CLS] and [SEP] included
    augment: str = "light"  # joint_transform strength: "none" | "light" (no flips: sides are findings)
    epochs: int = 20
    batch_size: int = 32
    lr: float = 3e-4  # AdamW, cosine
    weight_decay: float = 1e-4
    warmup_steps: int = 20
    seed: int = 0
    device: str = "auto"
    amp: bool = True  # mixed precision on CUDA only
    out_dir: str = ""  # "" = keep nothing on disk
    resume: bool = False  # load a finished run of the same configuration from out_dir instead of training
    progress: bool = True

    def __post_init__(self) -> None:
        name = type(self).__name__
        if self.resume and not self.out_dir:
            raise ConfigError(f"{name}: resume=True needs an out_dir to load a finished run from")
        check_choice(name, "augment", self.augment, {"none", "light"})
        check_choice(name, "report_embedding", self.report_embedding, set(REPORT_FROM))
        for key in ("dim", "regions", "text_dim", "text_layers", "text_heads", "epochs", "batch_size"):
            check_range(name, key, getattr(self, key), 1)
        check_range(name, "batch_size", self.batch_size, 2)
        check_range(name, "max_len", self.max_len, 4)
        check_range(name, "warmup_steps", self.warmup_steps, 0)
        check_range(name, "region_weight", self.region_weight, 0.0)
        for key in ("temperature", "lr"):
            check_range(name, key, getattr(self, key), 1e-12)
        if self.text_dim % self.text_heads:
            raise ConfigError(f"{name}: text_dim={self.text_dim} must be a multiple of text_heads={self.text_heads}")


class ReportDataset(Dataset):
    """Images ``[1, H, W]`` (optionally augmented) with their report text, rows ``index`` of ``data``."""

    def __init__(self, data: SliceSet, index=None, augment: str = "none") -> None:
        if "report" not in data.meta:
            raise ValueError(f"SliceSet {data.name!r} has no 'report' column in its meta")
        self.index = np.arange(len(data)) if index is None else np.asarray(index)
        self.images = torch.from_numpy(np.ascontiguousarray(data.images, dtype=np.float32))
        self.reports = data.meta["report"].astype(str).to_numpy()
        empty = [int(r) for r in self.index if not self.reports[r].strip()]
        if empty:
            raise ValueError(f"SliceSet {data.name!r}: rows {empty[:5]} have an empty report")
        self.transform = joint_transform(data.image_size[0], augment) if augment != "none" else None

    def __len__(self) -> int:
        return len(self.index)

    def __getitem__(self, i: int) -> dict:
        row = int(self.index[i])
        image = self.images[row].unsqueeze(0)
        if self.transform is not None:  # geometry and intensity; the dummy mask is dropped
            image, _ = self.transform(image, torch.zeros(image.shape[1:], dtype=torch.int64))
        return {"image": image, "report": str(self.reports[row]), "row": row}


def collate_reports(items: Sequence[dict], tokenizer: Tokenizer, max_len: int) -> dict[str, Tensor]:
    """A batch: ``images [B, 1, H, W]``, reports ``(report_ids, report_mask) [B, T]``, every
    sentence of every report flat ``(sentence_ids, sentence_mask) [S, T]`` with ``owner [S]``."""
    reports = [item["report"] for item in items]
    sentences = [split_sentences(r) or [r] for r in reports]
    flat = [s for group in sentences for s in group]
    owner = torch.tensor([b for b, group in enumerate(sentences) for _ in group], dtype=torch.long)
    report_ids, report_mask = tokenizer.encode_batch(reports, max_len)
    sentence_ids, sentence_mask = tokenizer.encode_batch(flat, max_len)
    return {
        "images": torch.stack([item["image"] for item in items]),
        "report_ids": report_ids,
        "report_mask": report_mask,
        "sentence_ids": sentence_ids,
        "sentence_mask": sentence_mask,
        "owner": owner,
    }


def build_model(cfg: ImageTextConfig, vocab_size: int) -> LRCLRModel:
    """The image encoder (``cfg.encoder`` of an smp U-Net, random init) + a text encoder from
    scratch + LRCLR's heads (global only when ``use_regions=False``)."""
    image_encoder = build_segmenter("unet", cfg.encoder, 1, classes=2).encoder
    text_encoder = TextEncoder(vocab_size, cfg.text_dim, cfg.text_layers, cfg.text_heads, cfg.max_len)
    return LRCLRModel(image_encoder, text_encoder, cfg.dim, cfg.regions, cfg.use_regions,
                      region_level=cfg.region_level, report_from=cfg.report_embedding)  # fmt: skip


@dataclass
class ImageTextResult:
    """What :func:`train_image_text` returns: the model, its tokenizer and the loss history."""

    model: LRCLRModel
    tokenizer: Tokenizer
    history: pd.DataFrame
    config: ImageTextConfig
    seconds: float = 0.0  # training time (of the original run when loaded)
    loaded: bool = False  # True: a finished run loaded from out_dir, not trained now


#: Fields that do not change what a finished run learned (ignored when comparing configurations).
_RUN_FREE = {"resume", "progress", "device", "amp", "out_dir"}


def load_finished(cfg: ImageTextConfig, n_train: int, device: torch.device | str = "cpu") -> ImageTextResult | None:
    """The finished run in ``cfg.out_dir`` if it was trained with the same configuration (fields of
    :data:`_RUN_FREE` aside; a field added to the package since counts as its default) on
    ``n_train`` images (its step count must match), else None. A corrupt ``model.pt`` is an error."""
    out = Path(cfg.out_dir)
    files = [out / name for name in ("config.json", "history.csv", "tokenizer.json", "model.pt")]
    if not cfg.out_dir or not all(f.is_file() for f in files):
        return None
    if changed_fields(json.loads(files[0].read_text()), cfg, _RUN_FREE):
        return None
    history = pd.read_csv(files[1])
    if len(history) != cfg.epochs * (n_train // cfg.batch_size):  # another training set, or unfinished
        return None
    tokenizer = Tokenizer.load(files[2])
    model = build_model(cfg, tokenizer.vocab_size)
    model.load_state_dict(load_checkpoint(files[3])["model"])
    seconds = float(history["seconds"].iloc[-1]) if len(history) else 0.0
    return ImageTextResult(model.to(device), tokenizer, history, cfg, seconds, loaded=True)


def _fit_tokenizer(data: SliceSet, index: np.ndarray) -> Tokenizer:
    """Vocabulary of the training reports plus every prompt, so zero-shot prompts have no [UNK]."""
    texts = list(data.meta["report"].astype(str).to_numpy()[index])
    for finding in PROMPT_TEMPLATES:
        positives, negatives = prompts(finding)
        texts += positives + negatives
    return Tokenizer.fit(texts)


def train_image_text(
    cfg: ImageTextConfig, data: SliceSet, index=None, tokenizer: Tokenizer | None = None
) -> ImageTextResult:
    """Train image and text encoders together on the rows ``index`` of ``data`` (image + report).

    Each step: a batch of images and their reports -> :class:`LRCLRModel` -> its loss
    (symmetric image–report InfoNCE, + ``region_weight`` x region–sentence InfoNCE with
    ``use_regions``). AdamW with warm-up and cosine decay. ``tokenizer``: default fitted on the
    training reports and the zero-shot prompts. Writes ``config.json``, ``history.csv``,
    ``tokenizer.json`` and ``model.pt`` to ``cfg.out_dir`` when set; with ``cfg.resume`` a finished
    run of the same configuration there is loaded instead (:func:`load_finished`).
    """
    device = get_device(cfg.device)
    seed_everything(cfg.seed)
    index = np.arange(len(data)) if index is None else np.asarray(index)
    if cfg.resume and (finished := load_finished(cfg, len(index), device)) is not None:
        return finished
    dataset = ReportDataset(data, index, cfg.augment)
    if len(dataset) < cfg.batch_size:
        raise ConfigError(f"ImageTextConfig: batch_size={cfg.batch_size} exceeds the {len(dataset)} images")
    tokenizer = tokenizer or _fit_tokenizer(data, index)
    generator = torch.Generator().manual_seed(cfg.seed)
    loader = DataLoader(dataset, batch_size=cfg.batch_size, shuffle=True, drop_last=True, generator=generator,
                        collate_fn=lambda items: collate_reports(items, tokenizer, cfg.max_len))  # fmt: skip
    model = build_model(cfg, tokenizer.vocab_size).to(device)
    total = cfg.epochs * len(loader)
    optimizer, scheduler, scaler, use_amp = _make_optimization(
        model.parameters(), "adam", cfg.lr, 0.9, cfg.weight_decay, total, cfg.warmup_steps, cfg.amp, device
    )
    history, t0 = [], time.perf_counter()
    bar = tqdm(total=total, disable=not cfg.progress, desc="LRCLR" if cfg.use_regions else "CLIP", mininterval=2.0)
    model.train()
    for epoch in range(cfg.epochs):
        for batch in loader:
            batch = {k: v.to(device) for k, v in batch.items()}
            with torch.autocast(device.type, enabled=use_amp):
                out = model(batch["images"], batch["sentence_ids"], batch["sentence_mask"], batch["owner"],
                            batch["report_ids"], batch["report_mask"])  # fmt: skip
                loss, parts = model.loss(out, cfg.region_weight, cfg.temperature, cfg.identical_positive)
            _update(loss, optimizer, scaler, scheduler, where=f"epoch {epoch}, step {len(history)}")
            history.append({"epoch": epoch, "step": len(history), "loss": parts.pop("total"), **parts,
                            "lr": optimizer.param_groups[0]["lr"], "seconds": time.perf_counter() - t0})
            bar.update(1)
    bar.close()
    result = ImageTextResult(model, tokenizer, pd.DataFrame(history), cfg, time.perf_counter() - t0)
    if cfg.out_dir:
        out = Path(cfg.out_dir)
        atomic_write_text(out / "config.json", to_json(cfg))
        atomic_write_text(out / "history.csv", result.history.to_csv(index=False))
        tokenizer.save(out / "tokenizer.json")
        save_checkpoint({"model": model.state_dict(), "config": to_dict(cfg)}, out / "model.pt")
    return result


def zero_shot_table(
    result: ImageTextResult, data: SliceSet, index, findings: Sequence[str], batch_size: int = 64
) -> tuple[pd.DataFrame, dict[str, np.ndarray]]:
    """Zero-shot AUC of every finding on rows ``index``: score = cos(image, positive prompts) -
    cos(image, negative prompts) (:func:`medcl_lite.crossmodal.zero_shot_scores`), labels from the
    bool column ``meta[finding]``. Returns the table (finding, AUC, positives, images) and the
    scores per finding ``{finding: [N]}`` (for ROC curves)."""
    model, tokenizer = result.model, result.tokenizer
    device = next(model.parameters()).device
    index = np.asarray(index)
    rows, scores = [], {}
    for finding in findings:
        if finding not in data.meta:
            raise ValueError(f"zero_shot_table: no label column {finding!r} in {data.name!r}")
        positives, negatives = prompts(finding)
        pos = tuple(t.to(device) for t in tokenizer.encode_batch(positives, result.config.max_len))
        neg = tuple(t.to(device) for t in tokenizer.encode_batch(negatives, result.config.max_len))
        scores[finding] = map_images(lambda x, pos=pos, neg=neg: zero_shot_scores(model, x, pos, neg),
                                     model, data, index, batch_size)  # fmt: skip
        labels = data.meta[finding].to_numpy(dtype=bool)[index]
        rows.append({"finding": finding, "auc": finding_auc(scores[finding], labels),
                     "positives": int(labels.sum()), "images": len(index)})  # fmt: skip
    return pd.DataFrame(rows), scores
