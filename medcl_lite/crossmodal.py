"""Image-text contrast of LRCLR: global image-report pairs plus local region-sentence pairs.

In the one-idea table (docs/design.md, "The one idea"), LRCLR's positive for a report sentence
is "the image region it describes". Everything here is a positive mask handed to the shared
:func:`medcl_lite.losses.info_nce`; there is no second softmax loss.

- Global term (CLIP, Radford et al. 2021, Sec. 2.3 and Fig. 3): symmetric InfoNCE over matched
  image-report pairs of the batch (:func:`image_text_loss`).
- Local term (LRCLR, docs/methods.md, "LRCLR"): the cells of the last encoder map are regions
  (:func:`region_features`); a learned scorer keeps the top-k (:class:`RegionSelector`); the kept
  regions cross-attend to the report's sentences (:class:`CrossModalAttention`); every sentence is
  contrasted with the region it attends to most, against all other kept regions of the batch
  (:func:`region_sentence_loss`).
- Zero-shot evaluation, CheXzero-style (Tiu et al. 2022): positive vs. negative prompt similarity
  (:func:`zero_shot_scores`), AUC per finding (:func:`finding_auc`), heat maps
  (:func:`sentence_heatmap`) and the pointing game (:func:`pointing_game`).

Not published, our choices: k = 8 regions, embedding size 128, 4 attention heads, one cross-
attention block, τ = 0.07 (CLIP's initial value, fixed here), region weight 1, a report embedded
as the mean of its sentence embeddings (:func:`mean_by_owner`), regions = cells of
the deepest encoder map, identical reports / sentences count as positives (templated reports),
the region term uses the regions *after* cross-attention (so the attention block and the scorer
get a gradient), zero-shot scores use the global embedding only.

Shapes: ``B`` images, ``C`` encoder channels, ``(h, w)`` last feature map, ``N = h*w`` regions,
``k`` kept regions, ``D`` embedding size, ``S`` sentences in the batch, ``T`` tokens.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from sklearn.metrics import roc_auc_score
from torch import Tensor, nn

from medcl_lite.losses import info_nce
from medcl_lite.utils import as_numpy

__all__ = [
    "CrossModalAttention",
    "LRCLRModel",
    "RegionSelector",
    "finding_auc",
    "REPORT_FROM",
    "identical_rows",
    "image_text_loss",
    "mean_by_owner",
    "pack_sentences",
    "pointing_game",
    "region_features",
    "region_grid",
    "region_sentence_loss",
    "region_sentence_mask",
    "sentence_heatmap",
    "zero_shot_scores",
]


#: How :class:`LRCLRModel` embeds a report: mean of its sentences, or its tokens pooled.
REPORT_FROM = ("sentences", "tokens")


# ----------------------------------------------------------------------------- regions
def region_features(feature_map: Tensor) -> Tensor:
    """Each cell of the last encoder map as one region: ``[B, C, h, w] -> [B, h*w, C]``.

    Region ``n`` is cell ``(n // w, n % w)`` (row-major), the order of :func:`region_grid`.
    """
    if feature_map.ndim != 4:
        raise ValueError(f"feature_map must be [B, C, h, w], got shape {tuple(feature_map.shape)}")
    return feature_map.flatten(2).transpose(1, 2)


def region_grid(h: int, w: int) -> Tensor:
    """Centres of the ``h x w`` cells as ``[h*w, 2]`` (row, col) fractions of the image in (0, 1).

    Multiply by ``(H, W)`` for pixel coordinates; row ``n`` is region ``n`` of
    :func:`region_features`.
    """
    if h < 1 or w < 1:
        raise ValueError(f"region_grid: h and w must be >= 1, got h={h}, w={w}")
    rows = (torch.arange(h, dtype=torch.float32) + 0.5) / h
    cols = (torch.arange(w, dtype=torch.float32) + 0.5) / w
    return torch.stack(torch.meshgrid(rows, cols, indexing="ij"), dim=-1).reshape(h * w, 2)


class RegionSelector(nn.Module):
    """Keep the k most significant regions per image (LRCLR's region selection layer).

    A linear scorer gives every region a score; the top-k are kept. Top-k *indices* are not
    differentiable, so the kept features are multiplied by ``sigmoid(score)``: the loss then
    reaches the scorer through that gate (a gate that a scale-invariant cosine alone would cancel;
    the gradient comes through the cross-attention, which is not scale-invariant).

    Args:
        dim: region feature size D.
        k: regions kept per image (8, our choice).
    """

    def __init__(self, dim: int, k: int = 8) -> None:
        super().__init__()
        if dim < 1 or k < 1:
            raise ValueError(f"RegionSelector: dim and k must be >= 1, got dim={dim}, k={k}")
        self.k = k
        self.scorer = nn.Linear(dim, 1)

    def forward(self, regions: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """``regions [B, N, D]`` -> ``(selected [B, k, D], index [B, k], scores [B, N])``."""
        if regions.ndim != 3:
            raise ValueError(f"regions must be [B, N, D], got shape {tuple(regions.shape)}")
        if self.k > regions.shape[1]:
            raise ValueError(
                f"RegionSelector: k={self.k} exceeds the N={regions.shape[1]} regions per image"
            )
        scores = self.scorer(regions).squeeze(-1)  # [B, N]
        top, index = scores.topk(self.k, dim=1)  # sorted, highest first
        picked = regions.gather(1, index[..., None].expand(-1, -1, regions.shape[2]))
        return picked * torch.sigmoid(top)[..., None], index, scores


class CrossModalAttention(nn.Module):
    """Kept regions attend to the report's sentences (LRCLR's cross-modal interaction block).

    One ``nn.MultiheadAttention`` (query = regions, key = value = sentences) with a residual
    connection and LayerNorm (Transformer post-norm, Vaswani et al. 2017, Sec. 3.1).

    Args:
        dim: embedding size D (divisible by ``heads``).
        heads: attention heads (4, our choice).
    """

    def __init__(self, dim: int, heads: int = 4) -> None:
        super().__init__()
        if dim < 1 or heads < 1 or dim % heads:
            raise ValueError(
                f"CrossModalAttention: dim must be a positive multiple of heads, got dim={dim}, heads={heads}"
            )
        self.attn = nn.MultiheadAttention(dim, heads, batch_first=True)
        self.norm = nn.LayerNorm(dim)

    def forward(self, regions: Tensor, sentences: Tensor, valid: Tensor) -> tuple[Tensor, Tensor]:
        """Update the regions with the sentences they attend to.

        Args:
            regions: ``[B, k, D]`` kept regions.
            sentences: ``[B, S, D]`` sentence embeddings of each image's report, padded.
            valid: ``[B, S]`` bool, False at padding (never attended to).
        Returns:
            ``(updated [B, k, D], attention [B, k, S])``, attention averaged over heads, each
            row summing to 1 over the valid sentences.
        """
        if valid.shape != sentences.shape[:2]:
            raise ValueError(
                f"valid must be [B, S] = {tuple(sentences.shape[:2])}, got {tuple(valid.shape)}"
            )
        empty = ~valid.bool().any(dim=1)
        if bool(empty.any()):
            raise ValueError(
                f"CrossModalAttention: images {empty.nonzero().flatten().tolist()} have no sentence"
            )
        out, attention = self.attn(regions, sentences, sentences, key_padding_mask=~valid.bool())
        return self.norm(regions + out), attention


def pack_sentences(
    sentences: Tensor, owner: Tensor, batch_size: int
) -> tuple[Tensor, Tensor, Tensor]:
    """Group the flat sentences of a batch by image, padded: ``[S, D] -> [B, S_max, D]``.

    Args:
        sentences: ``[S, D]`` sentence embeddings.
        owner: ``[S]`` long, the image (0..B-1) each sentence belongs to.
        batch_size: B.
    Returns:
        ``(padded [B, S_max, D], valid [B, S_max] bool, slot [S])``: sentence ``s`` sits at
        ``padded[owner[s], slot[s]]``.
    """
    if owner.shape != sentences.shape[:1]:
        raise ValueError(f"owner must be [S] = [{sentences.shape[0]}], got {tuple(owner.shape)}")
    if owner.numel() and (int(owner.min()) < 0 or int(owner.max()) >= batch_size):
        raise ValueError(
            f"owner must lie in [0, {batch_size - 1}], got range [{int(owner.min())}, {int(owner.max())}]"
        )
    onehot = F.one_hot(owner.long(), batch_size)  # [S, B]
    slot = (onehot.cumsum(0) - 1).gather(1, owner.long()[:, None]).squeeze(1)
    s_max = max(int(onehot.sum(0).max()), 1)
    padded = sentences.new_zeros(batch_size, s_max, sentences.shape[1])
    padded = padded.index_put((owner.long(), slot), sentences)
    valid = torch.zeros(batch_size, s_max, dtype=torch.bool, device=sentences.device)
    valid[owner.long(), slot] = True
    return padded, valid, slot


def mean_by_owner(sentences: Tensor, owner: Tensor, batch_size: int) -> Tensor:
    """Mean of each image's sentence embeddings: ``[S, D] -> [B, D]`` (a report from its sentences).

    Every image needs at least one sentence (:func:`pack_sentences` groups them).
    """
    padded, valid, _ = pack_sentences(sentences, owner, batch_size)
    count = valid.sum(1, keepdim=True)
    if not bool((count > 0).all()):
        missing = (count[:, 0] == 0).nonzero().flatten().tolist()
        raise ValueError(f"mean_by_owner: images {missing} have no sentence")
    return (padded * valid.unsqueeze(2)).sum(1) / count


def identical_rows(ids: Tensor, mask: Tensor) -> Tensor:
    """``[B, B]`` bool: token sequences ``ids [B, T]`` equal where ``mask [B, T]`` is set.

    Marks identical (templated) reports or sentences, so they can count as positives.
    """
    if ids.shape != mask.shape or ids.ndim != 2:
        raise ValueError(
            f"ids and mask must both be [B, T], got {tuple(ids.shape)} and {tuple(mask.shape)}"
        )
    tokens = torch.where(mask.bool(), ids, torch.full_like(ids, -1))
    return (tokens[:, None, :] == tokens[None, :, :]).all(dim=2)


# ----------------------------------------------------------------------------- losses
def image_text_loss(
    image: Tensor, text: Tensor, temperature: float = 0.07, pos_mask: Tensor | None = None
) -> Tensor:
    """CLIP's symmetric InfoNCE over matched image-report pairs (CLIP Sec. 2.3, Fig. 3).

    Mean of image->text and text->image :func:`~medcl_lite.losses.info_nce`; the positive of
    image i is report i. ``pos_mask [B, B]`` (bool) adds positives: with templated reports many
    images share the *same* report, and treating those as negatives would push apart images the
    data says are alike (false negatives); :func:`identical_rows` builds that mask.

    Args:
        image: ``[B, D]`` image embeddings; text: ``[B, D]`` report embeddings.
    Returns:
        Scalar; ``log(B)`` for constant embeddings.
    """
    if image.shape != text.shape or image.ndim != 2:
        raise ValueError(
            f"image and text must both be [B, D], got {tuple(image.shape)} and {tuple(text.shape)}"
        )
    positives = torch.eye(image.shape[0], dtype=torch.bool, device=image.device)
    if pos_mask is not None:
        positives = positives | pos_mask.to(image.device).bool()
    i2t = info_nce(image, text, positives, temperature)
    t2i = info_nce(text, image, positives.T, temperature)
    return (i2t + t2i) / 2


def match_regions(
    regions: Tensor, sentences: Tensor, owner: Tensor, attention: Tensor | None
) -> Tensor:
    """For each sentence, the kept region of its own image it matches best: ``[S]`` in 0..k-1.

    Argmax over k of ``attention[owner[s], :, s]`` ("positives from the cross-attention
    matching"), or of the cosine similarity when ``attention`` is None. Not differentiable
    (an index), computed without gradient.
    """
    with torch.no_grad():
        if attention is None:
            own = F.normalize(regions[owner].float(), dim=2)  # [S, k, D]
            match = torch.einsum("skd,sd->sk", own, F.normalize(sentences.float(), dim=1))
        else:
            match = attention[owner, :, torch.arange(owner.numel(), device=owner.device)]  # [S, k]
        return match.argmax(dim=1)


def region_sentence_loss(
    regions: Tensor,
    sentences: Tensor,
    owner: Tensor,
    attention: Tensor | None = None,
    temperature: float = 0.07,
    same_text: Tensor | None = None,
) -> Tensor:
    """LRCLR's local term: each sentence against all kept regions of the batch.

    Positive of sentence s = the region of its own image it matches best (:func:`match_regions`,
    detached); negatives = every other kept region of the batch, via
    :func:`~medcl_lite.losses.info_nce` with a bool mask.

    Args:
        regions: ``[B, k, D]`` kept regions; sentences: ``[S, D]``.
        owner: ``[S]`` long, image of each sentence.
        attention: ``[B, k, S]`` region-to-sentence attention, or None (cosine matching).
        same_text: optional ``[S, S]`` bool of identical sentences; their matched regions are
            positives of each other too (no false negatives on templated sentences).
    Returns:
        Scalar loss.
    """
    b, k, d = regions.shape
    if sentences.ndim != 2 or sentences.shape[1] != d or owner.shape != sentences.shape[:1]:
        raise ValueError(
            f"sentences [S, {d}] and owner [S] expected, got {tuple(sentences.shape)} and {tuple(owner.shape)}"
        )
    if attention is not None and attention.shape != (b, k, sentences.shape[0]):
        raise ValueError(
            f"attention must be [B, k, S] = {(b, k, sentences.shape[0])}, got {tuple(attention.shape)}"
        )
    pos_mask = region_sentence_mask(regions, sentences, owner, attention, same_text)
    return info_nce(sentences, regions.reshape(b * k, d), pos_mask, temperature)


def region_sentence_mask(
    regions: Tensor,
    sentences: Tensor,
    owner: Tensor,
    attention: Tensor | None = None,
    same_text: Tensor | None = None,
) -> Tensor:
    """LRCLR's local positive mask ``[S, B*k]``: sentence s is positive with the kept region of its
    own image it matches best (:func:`match_regions`), column ``owner[s] * k + m*``, and, with
    ``same_text [S, S]``, with the matched regions of every identical sentence. The mask
    :func:`region_sentence_loss` hands to the one InfoNCE; shapes as there."""
    b, k, _ = regions.shape
    owner = owner.long()
    key = owner * k + match_regions(regions, sentences, owner, attention)  # [S] in 0..B*k-1
    pos_mask = F.one_hot(key, b * k).bool()  # [S, B*k]
    if same_text is not None:  # a sentence is always identical to itself
        same = same_text.to(pos_mask.device).bool() | torch.eye(len(key), dtype=torch.bool, device=key.device)
        pos_mask = (same.float() @ pos_mask.float()) > 0
    return pos_mask


# ----------------------------------------------------------------------------- model
def _last_map(features) -> Tensor:
    """Deepest map of an encoder output: a list of stage maps (smp) or one tensor."""
    return features[-1] if isinstance(features, list | tuple) else features


class LRCLRModel(nn.Module):
    """Image encoder + text encoder with LRCLR's region selection and cross-modal block.

    Global path (CLIP): GAP of the last encoder map -> Linear -> image embedding; pooled text ->
    Linear -> report embedding. Region path (``use_regions``): :func:`region_features` ->
    Linear(C, dim) -> :class:`RegionSelector` -> :class:`CrossModalAttention` with the report's
    sentence embeddings. Sentences, reports and prompts share the text encoder and projection,
    so local and global terms live in one text space. ``use_regions=False`` is the CLIP baseline.

    Args:
        image_encoder: ``[B, in, H, W] ->`` list of stage maps (an smp encoder) or one map.
        text_encoder: ``(ids [B, T], mask [B, T]) -> (tokens [B, T, Dt], pooled [B, Dt])``.
        dim: joint embedding size (128, our choice); k: kept regions (8, our choice).
        image_channels: C of the last map; default ``image_encoder.out_channels[-1]``.
        text_dim: Dt; default ``text_encoder.dim``.
        heads: cross-attention heads.
        region_level: encoder stage whose cells are the regions (-1: the last map, as LRCLR;
            -2: the stage before, twice as fine, e.g. 8x8 instead of 4x4 at 128², our option for
            small images where a last-map cell covers a quarter of a lung).
        report_from: how a report is embedded. ``"sentences"`` (default, our choice): the mean
            of its sentences' embeddings (:func:`mean_by_owner`), so a report lives in the space
            of one-sentence prompts and "No pleural effusion." weighs as much as any other
            finding; ``"tokens"``: the whole report through the text encoder, mean-pooled over
            its ~30 tokens, where a negation is one word among many. Measured on the phantom
            (chapter 05): with ``"tokens"`` zero-shot AUC stayed at chance.
    """

    def __init__(
        self,
        image_encoder: nn.Module,
        text_encoder: nn.Module,
        dim: int = 128,
        k: int = 8,
        use_regions: bool = True,
        image_channels: int | None = None,
        text_dim: int | None = None,
        heads: int = 4,
        region_level: int = -1,
        report_from: str = "sentences",
    ) -> None:
        super().__init__()
        if report_from not in REPORT_FROM:
            raise ValueError(f"report_from must be one of {REPORT_FROM}, got {report_from!r}")
        self.report_from = report_from
        stage_channels = image_channels or _attribute(image_encoder, "out_channels", "image_channels")
        if not isinstance(stage_channels, list | tuple):
            if region_level != -1:
                raise ValueError(f"region_level={region_level} needs an encoder with stages (out_channels list)")
            stage_channels = [stage_channels]
        if not -len(stage_channels) <= region_level < 0:
            raise ValueError(f"region_level must be in [-{len(stage_channels)}, -1], got {region_level}")
        channels = stage_channels[-1]
        self.region_level = region_level
        text_dim = text_dim or _attribute(text_encoder, "dim", "text_dim")
        self.image_encoder, self.text_encoder = image_encoder, text_encoder
        self.use_regions, self.dim = use_regions, dim
        self.image_proj = nn.Linear(channels, dim)
        self.text_proj = nn.Linear(text_dim, dim)
        if use_regions:
            self.region_proj = nn.Linear(stage_channels[region_level], dim)
            self.selector = RegionSelector(dim, k)
            self.cross = CrossModalAttention(dim, heads)

    def embed_text(self, ids: Tensor, mask: Tensor) -> Tensor:
        """Report, sentence or prompt tokens ``[B, T]`` -> embedding ``[B, dim]``."""
        return self.text_proj(self.text_encoder(ids, mask)[1])

    def embed_image(self, images: Tensor) -> tuple[Tensor, Tensor]:
        """``[B, in, H, W]`` -> ``(global embedding [B, dim], last map [B, C, h, w])``."""
        last = _last_map(self.image_encoder(images))
        return self.image_proj(last.mean(dim=(2, 3))), last

    def _embed_image_and_regions(self, images: Tensor) -> tuple[Tensor, Tensor]:
        """Global embedding ``[B, dim]`` and the ``region_level`` map ``[B, C_r, h, w]``, one pass."""
        features = self.image_encoder(images)
        last = _last_map(features)
        level = features[self.region_level] if isinstance(features, list | tuple) else features
        return self.image_proj(last.mean(dim=(2, 3))), level

    def forward(
        self,
        images: Tensor,
        sentence_ids: Tensor | None,
        sentence_mask: Tensor | None,
        owner: Tensor | None,
        report_ids: Tensor,
        report_mask: Tensor,
    ) -> dict:
        """Embeddings of a batch of images with their reports (flat sentences ``[S, T]``).

        Returns a dict: ``image``/``report`` ``[B, dim]``, ``same_report`` ``[B, B]``; with
        regions also ``regions`` (kept, before attention) and ``attended`` ``[B, k, dim]``,
        ``sentences`` ``[S, dim]``, ``owner`` ``[S]``, ``same_sentence`` ``[S, S]``, ``attention``
        ``[B, k, S]`` (zero where image b does not own sentence s), ``index`` ``[B, k]``,
        ``scores`` ``[B, N]``, ``grid`` ``(h, w)``.
        """
        image, last = self._embed_image_and_regions(images)
        out = {"image": image, "same_report": identical_rows(report_ids, report_mask)}
        needs_sentences = self.use_regions or self.report_from == "sentences"
        if needs_sentences and (sentence_ids is None or sentence_mask is None or owner is None):
            raise ValueError(
                f"LRCLRModel(use_regions={self.use_regions}, report_from={self.report_from!r}) "
                "needs sentence_ids, sentence_mask and owner"
            )
        sentences = self.embed_text(sentence_ids, sentence_mask) if needs_sentences else None
        if self.report_from == "sentences":
            out["report"] = mean_by_owner(sentences, owner.long(), images.shape[0])
        else:
            out["report"] = self.embed_text(report_ids, report_mask)
        if self.use_regions:
            out.update(self._region_path(last, sentences, sentence_ids, sentence_mask, owner.long()))
        return out

    def _region_path(
        self, last: Tensor, sentences: Tensor, ids: Tensor, mask: Tensor, owner: Tensor
    ) -> dict:
        """Select regions, let them attend to their report's sentences (see :meth:`forward`)."""
        regions = self.region_proj(region_features(last))
        selected, index, scores = self.selector(regions)
        padded, valid, slot = pack_sentences(sentences, owner, last.shape[0])
        attended, attention = self.cross(selected, padded, valid)
        per_sentence = attention[owner, :, slot]  # [S, k]
        flat = attention.new_zeros(last.shape[0], owner.numel(), selected.shape[1])
        flat[owner, torch.arange(owner.numel(), device=owner.device)] = per_sentence
        return {
            "regions": selected,
            "attended": attended,
            "sentences": sentences,
            "owner": owner,
            "same_sentence": identical_rows(ids, mask),
            "attention": flat.transpose(1, 2),
            "index": index,
            "scores": scores,
            "grid": tuple(last.shape[-2:]),
        }

    def loss(
        self,
        batch_out: dict,
        region_weight: float = 1.0,
        temperature: float = 0.07,
        identical_positive: bool = True,
    ) -> tuple[Tensor, dict[str, float]]:
        """``image_text_loss + region_weight * region_sentence_loss`` -> ``(loss, parts)``.

        The region term contrasts sentences with the regions *after* cross-attention, matched by
        that attention (our choice: the only route by which the attention block and the scorer
        learn; the attended regions also carry some of the sentences they attend to). With
        ``identical_positive`` identical reports / sentences are positives of each other.
        Global-only (CLIP) when ``use_regions=False``.
        """
        same_report = batch_out["same_report"] if identical_positive else None
        global_term = image_text_loss(
            batch_out["image"], batch_out["report"], temperature, same_report
        )
        parts = {"global": float(global_term.detach())}
        total = global_term
        if self.use_regions:
            local = region_sentence_loss(
                batch_out["attended"],
                batch_out["sentences"],
                batch_out["owner"],
                batch_out["attention"],
                temperature,
                batch_out["same_sentence"] if identical_positive else None,
            )
            parts["region"] = float(local.detach())
            total = total + region_weight * local
        parts["total"] = float(total.detach())
        return total, parts


def _attribute(module: nn.Module, name: str, parameter: str):
    """``module.<name>``, or an error asking for ``parameter``."""
    if not hasattr(module, name):
        raise ValueError(f"LRCLRModel: {type(module).__name__} has no .{name}; pass {parameter}=")
    return getattr(module, name)


# ----------------------------------------------------------------------------- zero-shot
def zero_shot_scores(
    model: LRCLRModel,
    images: Tensor,
    positive: tuple[Tensor, Tensor],
    negative: tuple[Tensor, Tensor],
) -> Tensor:
    """Zero-shot finding score per image, CheXzero-style (Tiu et al. 2022): ``[N]``.

    ``cos(image, mean positive prompt) - cos(image, mean negative prompt)``, prompts averaged
    after normalisation. Our choice: the *global* image embedding only, with or without
    ``use_regions``; the attended regions depend on the report text, which zero-shot has not.

    Args:
        images: ``[N, in, H, W]``; positive, negative: prompt ``(ids [P, T], mask [P, T])``.
    """
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            image = F.normalize(model.embed_image(images)[0], dim=1)
            pos = F.normalize(F.normalize(model.embed_text(*positive), dim=1).mean(0), dim=0)
            neg = F.normalize(F.normalize(model.embed_text(*negative), dim=1).mean(0), dim=0)
            return image @ pos - image @ neg
    finally:
        model.train(was_training)


def finding_auc(scores, labels) -> float:
    """ROC AUC of zero-shot ``scores [N]`` for binary ``labels [N]`` (1 = finding present)."""
    scores, labels = as_numpy(scores, "scores").ravel(), as_numpy(labels, "labels").ravel()
    if scores.shape != labels.shape:
        raise ValueError(
            f"scores and labels must have the same length, got {scores.size} and {labels.size}"
        )
    classes = np.unique(labels)
    if classes.size != 2:
        raise ValueError(
            f"finding_auc: labels must hold both classes 0 and 1, got {classes.tolist()}"
        )
    return float(roc_auc_score(labels, scores))


def sentence_heatmap(
    attention_or_scores: Tensor,
    index: Tensor,
    grid: tuple[int, int],
    image_size: tuple[int, int],
    mode: str = "nearest",
) -> Tensor:
    """What one sentence attends to, spread back over the image: ``[H, W]``.

    Args:
        attention_or_scores: ``[k]`` value per kept region (e.g. ``attention[b, :, s]``).
        index: ``[k]`` region index of each kept region (``forward(...)["index"][b]``).
        grid: ``(h, w)`` of the last encoder map; image_size: ``(H, W)``.
        mode: ``F.interpolate`` mode; ``"nearest"`` keeps each cell's value on its own block.
    Returns:
        ``[H, W]`` float map, zero outside the kept cells.
    """
    h, w = grid
    if attention_or_scores.shape != index.shape or index.ndim != 1:
        raise ValueError(
            f"attention_or_scores and index must both be [k], got {tuple(attention_or_scores.shape)} and {tuple(index.shape)}"
        )
    if int(index.max()) >= h * w or int(index.min()) < 0:
        raise ValueError(
            f"index must lie in [0, {h * w - 1}] for grid {grid}, got range [{int(index.min())}, {int(index.max())}]"
        )
    cells = attention_or_scores.new_zeros(h * w).float()
    cells[index.long()] = attention_or_scores.detach().float()
    return F.interpolate(cells.reshape(1, 1, h, w), size=tuple(image_size), mode=mode)[0, 0]


def pointing_game(
    attention_or_scores: Tensor,
    index: Tensor,
    grid: tuple[int, int],
    image_size: tuple[int, int],
    box: tuple[int, int, int, int],
) -> dict[str, float | bool]:
    """Pointing game (Zhang et al. 2018) at the resolution the model attends: one region per cell.

    A hit when the most attended kept cell overlaps the finding's box. The attention chooses among
    the kept cells only, so its chance level is the share of *kept* cells that overlap the box (the
    hit rate of attention spread uniformly over the same regions). Whether the region selector kept
    any cell of the box at all is reported apart (``kept``): a miss there is the selector's, not the
    attention's. Ties go to the first kept region.

    Args:
        attention_or_scores: ``[k]`` value per kept region (e.g. ``attention[b, :, s]``).
        index: ``[k]`` cell index ``row * w + col`` of each kept region.
        grid: ``(h, w)`` cells; image_size: ``(H, W)`` pixels, each cell ``H/h x W/w`` pixels.
        box: ``(r0, c0, r1, c1)`` pixel rows ``r0 <= r < r1`` and columns ``c0 <= c < c1``.
    Returns:
        ``{"hit": bool, "chance": float in [0, 1], "kept": bool}``.
    """
    (h, w), (height, width) = grid, image_size
    r0, c0, r1, c1 = (int(v) for v in box)
    if not (0 <= r0 < r1 <= height and 0 <= c0 < c1 <= width):
        raise ValueError(f"pointing_game: box {tuple(box)} is empty or outside the {height}x{width} image")
    if attention_or_scores.shape != index.shape or index.ndim != 1 or len(index) == 0:
        raise ValueError(
            f"attention_or_scores and index must both be [k], k >= 1, got {tuple(attention_or_scores.shape)} "
            f"and {tuple(index.shape)}"
        )
    rows, cols = index.long() // w, index.long() % w
    overlaps = (  # cell pixel rows [row*H/h, (row+1)*H/h) meet [r0, r1), columns likewise
        (rows * height < r1 * h) & ((rows + 1) * height > r0 * h) & (cols * width < c1 * w) & ((cols + 1) * width > c0 * w)
    )
    best = int(torch.argmax(attention_or_scores.detach().float()))
    return {"hit": bool(overlaps[best]), "chance": float(overlaps.float().mean()), "kept": bool(overlaps.any())}
