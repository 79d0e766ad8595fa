"""BatchNorm statistics re-estimated for one site: the model sees each scanner in its own units.

A BatchNorm layer normalises its input with running statistics (mean and variance per channel)
that it estimated on the training images. When the labelled images all come from one site and a
test site's scanner is brighter, noisier or sharper, the first layers' activations there have other
statistics, and every later layer reads features in the wrong units. AdaBN (Li et al., "Revisiting
Batch Normalization For Practical Domain Adaptation", ICLR-W 2017) keeps every weight and
re-estimates the statistics on the new site's unlabelled images; done on the test images
themselves it is prediction-time BatchNorm (Nado et al., 2020; Schneider et al., NeurIPS 2020).
No label of the site is used.

:func:`adapt_batchnorm` does it for a copy of a segmenter's encoder with PyTorch's own
``torch.optim.swa_utils.update_bn`` (the cumulative average of every batch's statistics);
:func:`predict_per_site` scores each site with its own copy (``FinetuneConfig.test_bn="per_site"``).

A frozen *random* encoder has never estimated its statistics (running mean 0, variance 1): its
decoder learned on unnormalised features, and adapting them changes what it reads. Compare the
fully fine-tuned models, whose encoder statistics come from the labelled site.
"""

from __future__ import annotations

import copy
from collections.abc import Callable

import numpy as np
from torch import nn
from torch.optim.swa_utils import update_bn

from medcl_lite.data.sliceset import SliceSet
from medcl_lite.inference import image_batches

__all__ = ["adapt_batchnorm", "predict_per_site"]


def adapt_batchnorm(model: nn.Module, data: SliceSet, index, batch_size: int = 32) -> nn.Module:
    """A copy of the segmenter ``model`` (with an ``encoder``) whose encoder BatchNorm running
    statistics are estimated anew on the images ``index`` of ``data`` ``[N, H, W]``, as the
    cumulative average over batches of ``batch_size``; weights, decoder and ``model`` itself are
    unchanged. The copy is in eval mode."""
    index = np.asarray(index)
    if len(index) == 0:
        raise ValueError(f"adapt_batchnorm: no rows of {data.name!r} to estimate the statistics on (empty index)")
    if not any(isinstance(m, nn.modules.batchnorm._BatchNorm) for m in model.encoder.modules()):
        raise ValueError(f"adapt_batchnorm: the encoder of {type(model).__name__} has no BatchNorm layer to adapt")
    adapted = copy.deepcopy(model)
    batches = image_batches(data, index, batch_size, next(adapted.parameters()).device)
    update_bn(batches, adapted.encoder)  # resets, then averages every batch's mean and variance
    return adapted.eval()


def predict_per_site(predict_fn: Callable[[nn.Module, SliceSet, np.ndarray], np.ndarray], model: nn.Module,
                     data: SliceSet, index, batch_size: int = 32) -> np.ndarray:  # fmt: skip
    """``predict_fn(model_s, data, rows_s)`` for the rows ``index`` of every site ``s`` (the
    ``site`` column of ``data.meta``), each with :func:`adapt_batchnorm` on that site's rows of
    ``index``; returns the outputs ``[N, ...]`` in the order of ``index``."""
    index = np.asarray(index)
    sites = data.meta["site"].astype(str).to_numpy()[index]
    out = None
    for site in sorted(set(sites)):
        where = np.flatnonzero(sites == site)
        part = predict_fn(adapt_batchnorm(model, data, index[where], batch_size), data, index[where])
        if out is None:
            out = np.empty((len(index), *part.shape[1:]), part.dtype)
        out[where] = part
    return out
