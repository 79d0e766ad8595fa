"""Batched inference over the images of a :class:`~medcl_lite.data.sliceset.SliceSet`.

One loop serves every "run the model over these rows" of the package: label maps
(:func:`medcl_lite.train.predict`), embeddings for plots (:func:`medcl_lite.train.embed`), zero-shot
scores (:func:`medcl_lite.image_text.zero_shot_table`) and the supervised finding reference
(:func:`medcl_lite.finding_classifier.finding_probabilities`).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator

import numpy as np
import torch
from torch import Tensor, nn

from medcl_lite.data.sliceset import SliceSet

__all__ = ["image_batches", "map_images"]


def image_batches(data: SliceSet, index: np.ndarray, batch_size: int, device: torch.device) -> Iterator[Tensor]:
    """The images of rows ``index`` as float32 tensors ``[b, 1, H, W]`` on ``device``, ``batch_size``
    at a time, one batch in memory at once."""
    for start in range(0, len(index), batch_size):
        rows = index[start : start + batch_size]
        yield torch.from_numpy(np.ascontiguousarray(data.images[rows], dtype=np.float32)).unsqueeze(1).to(device)


@torch.no_grad()
def map_images(
    fn: Callable[[Tensor], Tensor],
    model: nn.Module,
    data: SliceSet,
    index=None,
    batch_size: int = 64,
) -> np.ndarray:
    """``fn(x)`` for the rows ``index`` of ``data`` (all rows when ``None``), ``batch_size`` at a time.

    ``x`` is ``[b, 1, H, W]`` float32 on ``model``'s device; ``fn`` returns ``[b, ...]``. ``model``
    is put in eval mode for the loop and back to its mode after; no gradients; mixed precision on
    CUDA. Returns the outputs concatenated along dim 0, ``[N, ...]`` numpy (float16 from autocast is
    returned as float32). Raises on an empty ``index``: there is no output shape to give.
    """
    index = np.arange(len(data)) if index is None else np.asarray(index)
    if len(index) == 0:
        raise ValueError(f"map_images: no rows of {data.name!r} to run the model on (empty index)")
    if batch_size < 1:
        raise ValueError(f"map_images: batch_size={batch_size} must be >= 1")
    device = next(model.parameters()).device
    was_training = model.training
    model.eval()
    try:
        parts = []
        for x in image_batches(data, index, batch_size, device):
            with torch.autocast(device.type, enabled=device.type == "cuda"):
                y = fn(x)
            parts.append((y.float() if y.is_floating_point() else y).cpu())
        return torch.cat(parts).numpy()
    finally:
        model.train(was_training)
