"""Networks: smp segmenters, the global projection head, the momentum (key) encoder.

segmentation-models-pytorch does the heavy lifting: ``model.encoder(x)`` returns the input and one
feature map per stage, ``model.decoder`` turns them into decoder features. Contrastive pretraining
trains ``model.encoder`` (+ a head that is thrown away); fine-tuning loads it and trains the whole
segmenter, the decoder from scratch (CL-TCI Sec. 3.3, PCL Sec. 2.3). Region losses (LRC) and
supervised pretraining also train ``model.decoder`` (:class:`SegmenterWithHeads`); fine-tuning then
loads both (:func:`load_pretrained`).
"""

from __future__ import annotations

import copy

import segmentation_models_pytorch as smp
import torch
from torch import Tensor, nn

__all__ = [
    "ARCHITECTURES",
    "DenseProjectionHead",
    "EncoderWithHead",
    "ProjectionHead",
    "RegionHead",
    "SegmenterWithHeads",
    "build_segmenter",
    "load_encoder",
    "load_pretrained",
    "momentum_copy",
    "momentum_update",
]

#: architecture name -> smp class. Only the encoder is transferred between them.
ARCHITECTURES = {
    "unet": smp.Unet,
    "deeplabv3": smp.DeepLabV3,
    "deeplabv3plus": smp.DeepLabV3Plus,
}


def build_segmenter(
    arch: str = "unet",
    encoder: str = "resnet18",
    in_channels: int = 1,
    classes: int = 2,
    encoder_weights: str | None = None,
    **kwargs,
) -> nn.Module:
    """An smp segmentation model; ``encoder_weights=None`` by default (nothing is downloaded).

    Args:
        arch: ``"unet"`` | ``"deeplabv3"`` | ``"deeplabv3plus"``.
        encoder: any smp encoder name (``"resnet18"``, ``"resnet50"`` ...).
        in_channels: 1 for X-ray / CT / MRI; smp adapts the first convolution.
        classes: output channels, background included.
        kwargs: passed to the smp class (e.g. ``decoder_channels``).
    Returns:
        The model; ``model(x [B, in, H, W]) -> logits [B, classes, H, W]``.
    """
    if arch not in ARCHITECTURES:
        raise ValueError(f"build_segmenter: unknown arch {arch!r}; choose from {sorted(ARCHITECTURES)}")
    if classes < 1 or in_channels < 1:
        raise ValueError(f"build_segmenter: classes and in_channels must be >= 1, got {classes}, {in_channels}")
    return ARCHITECTURES[arch](
        encoder_name=encoder,
        encoder_weights=encoder_weights,
        in_channels=in_channels,
        classes=classes,
        **kwargs,
    )


class ProjectionHead(nn.Module):
    """Global projection head: GAP -> Linear(C, C) -> ReLU -> Linear(C, out_dim) (CL-TCI Sec. 3.2, PCL).

    ``[B, C, h, w]`` encoder bottleneck -> ``[B, out_dim]`` embedding (512 in the papers' code).
    """

    def __init__(self, in_dim: int, out_dim: int = 512, hidden_dim: int | None = None) -> None:
        super().__init__()
        hidden_dim = hidden_dim or in_dim
        self.layers = nn.Sequential(
            nn.AdaptiveAvgPool2d(1),
            nn.Flatten(),
            nn.Linear(in_dim, hidden_dim),
            nn.ReLU(inplace=True),
            nn.Linear(hidden_dim, out_dim),
        )

    def forward(self, features: Tensor) -> Tensor:
        return self.layers(features)


class EncoderWithHead(nn.Module):
    """An smp encoder followed by a head on its deepest feature map: ``[B, in, H, W] -> [B, D]``."""

    def __init__(self, encoder: nn.Module, head: nn.Module) -> None:
        super().__init__()
        self.encoder, self.head = encoder, head

    def features(self, x: Tensor) -> Tensor:
        """Global-average-pooled bottleneck ``[B, C]`` (what the embedding plots show)."""
        return self.encoder(x)[-1].mean(dim=(2, 3))

    def forward(self, x: Tensor) -> Tensor:
        return self.head(self.encoder(x)[-1])


class RegionHead(nn.Module):
    """Projection of pooled region features (LRC): Linear(C, C) -> ReLU -> Linear(C, out_dim).

    ``[M, C]`` region vectors (decoder features averaged over a superpixel) -> ``[M, out_dim]``;
    the global :class:`ProjectionHead`'s MLP without its pooling.
    """

    def __init__(self, in_dim: int, out_dim: int = 128) -> None:
        super().__init__()
        self.layers = nn.Sequential(nn.Linear(in_dim, in_dim), nn.ReLU(inplace=True), nn.Linear(in_dim, out_dim))

    def forward(self, pooled: Tensor) -> Tensor:
        return self.layers(pooled)


class DenseProjectionHead(nn.Module):
    """IDEAL's dense projection (docs/methods.md, "IDEAL"): 1x1 convolutions, no pooling.

    ``[B, C, h, w] -> [B, dim, h, w]``: one embedding per location. ``hidden=None`` is one 1x1
    convolution (IDEAL: "a 1x1 convolution, no MLP"); ``hidden=n`` is DenseCL's dense head,
    conv1x1(C, n) -> ReLU -> conv1x1(n, dim) (no BatchNorm, as DenseCL). Every location is
    projected on its own, so an input change at one location changes only that output location.
    """

    def __init__(self, in_channels: int, dim: int = 128, hidden: int | None = None) -> None:
        super().__init__()
        for name, value in (("in_channels", in_channels), ("dim", dim), ("hidden", hidden)):
            if value is not None and (not isinstance(value, int) or value < 1):
                raise ValueError(f"DenseProjectionHead: {name} must be an int >= 1, got {value!r}")
        if hidden is None:
            self.layers = nn.Sequential(nn.Conv2d(in_channels, dim, kernel_size=1))
        else:
            self.layers = nn.Sequential(
                nn.Conv2d(in_channels, hidden, kernel_size=1),
                nn.ReLU(inplace=True),
                nn.Conv2d(hidden, dim, kernel_size=1),
            )

    def forward(self, features: Tensor) -> Tensor:
        if features.ndim != 4:
            raise ValueError(
                f"DenseProjectionHead: features must be [B, C, h, w], got {tuple(features.shape)}"
            )
        return self.layers(features)


class SegmenterWithHeads(nn.Module):
    """A whole smp segmenter with a global head on its bottleneck and a region head (LRC).

    ``dense_head`` (optional, IDEAL): :class:`DenseProjectionHead` on the decoder or bottleneck map.
    ``forward(x)`` -> ``[B, D]`` global embedding (as :class:`EncoderWithHead`, so the SimCLR and
    MoCo objectives are unchanged); ``forward_dense(x)`` -> that embedding and the decoder's
    feature map ``[B, C_dec, H, W]`` from one pass; ``segment(x)`` -> logits ``[B, K, H, W]``
    (supervised pretraining). Fine-tuning takes ``encoder`` and ``decoder`` (:func:`load_pretrained`).
    """

    def __init__(
        self, segmenter: nn.Module, head: nn.Module, region_head: nn.Module, dense_head: nn.Module | None = None
    ) -> None:
        super().__init__()
        self.encoder, self.decoder = segmenter.encoder, segmenter.decoder
        self.segmentation_head = segmenter.segmentation_head
        self.head, self.region_head, self.dense_head = head, region_head, dense_head

    def features(self, x: Tensor) -> Tensor:
        """Global-average-pooled bottleneck ``[B, C]`` (what the embedding plots show)."""
        return self.encoder(x)[-1].mean(dim=(2, 3))

    def forward(self, x: Tensor) -> Tensor:
        return self.head(self.encoder(x)[-1])

    def forward_dense(self, x: Tensor) -> tuple[Tensor, Tensor]:
        z, _, decoded = self.forward_levels(x)
        return z, decoded

    def forward_levels(self, x: Tensor, decode: bool = True) -> tuple[Tensor, Tensor, Tensor | None]:
        """One pass -> global embedding ``[B, D]``, bottleneck map ``[B, C_enc, h, w]`` and, with
        ``decode``, the decoder's map ``[B, C_dec, H, W]`` (IDEAL's dense term reads either level)."""
        stages = self.encoder(x)
        return self.head(stages[-1]), stages[-1], self.decoder(stages) if decode else None

    def segment(self, x: Tensor) -> Tensor:
        return self.segmentation_head(self.decoder(self.encoder(x)))


def momentum_copy(module: nn.Module) -> nn.Module:
    """A frozen copy of ``module`` to serve as MoCo's key encoder (updated only by EMA)."""
    key = copy.deepcopy(module)
    for p in key.parameters():
        p.requires_grad_(False)
    return key


@torch.no_grad()
def momentum_update(online: nn.Module, key: nn.Module, momentum: float = 0.999) -> None:
    """MoCo eq. 2: θ_k <- m θ_k + (1 - m) θ_q for every parameter (buffers stay the key's own).

    The public CL-TCI code never calls its update, so its key encoder stays at initialisation;
    ours is called every step (tested).
    """
    if not 0 <= momentum <= 1:
        raise ValueError(f"momentum must be in [0, 1], got {momentum}")
    for p_q, p_k in zip(online.parameters(), key.parameters(), strict=True):
        p_k.mul_(momentum).add_(p_q.detach(), alpha=1 - momentum)


def load_encoder(segmenter: nn.Module, encoder_state: dict[str, Tensor]) -> None:
    """Load pretrained encoder weights into a segmenter (every key and shape must match)."""
    own = segmenter.encoder.state_dict()
    missing = sorted(set(own) - set(encoder_state))
    unexpected = sorted(set(encoder_state) - set(own))
    wrong = sorted(k for k in set(own) & set(encoder_state) if own[k].shape != encoder_state[k].shape)
    if missing or unexpected or wrong:
        raise ValueError(
            "load_encoder: the pretrained encoder does not fit this segmenter "
            f"(missing {missing[:3]}, unexpected {unexpected[:3]}, other shapes {wrong[:3]}); "
            "encoder name and in_channels must match the pretraining run"
        )
    segmenter.encoder.load_state_dict(encoder_state)


def load_pretrained(segmenter: nn.Module, state: dict) -> list[str]:
    """Load a pretraining run's weights: a flat encoder ``state_dict`` (global contrast), or
    ``{"encoder": ..., "decoder": ...}`` (region losses and supervised pretraining also train the
    decoder). Returns the parts loaded. Every key and shape must match (architecture, encoder
    name, in_channels and decoder widths as in pretraining)."""
    if not state or not all(isinstance(v, dict) for v in state.values()):
        load_encoder(segmenter, state)
        return ["encoder"]
    unknown = sorted(set(state) - {"encoder", "decoder"})
    if unknown or "encoder" not in state:
        raise ValueError(f"load_pretrained: expected parts 'encoder' (and 'decoder'), got {sorted(state)}")
    load_encoder(segmenter, state["encoder"])
    if "decoder" in state:
        try:
            segmenter.decoder.load_state_dict(state["decoder"])
        except RuntimeError as error:
            raise ValueError(
                "load_pretrained: the pretrained decoder does not fit this segmenter (architecture"
                f" and decoder widths must match the pretraining run): {str(error)[:300]}"
            ) from None
    return list(state)

