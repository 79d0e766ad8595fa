"""The supervised reference of chapter 05: same encoder and schedule, trained with finding labels."""

import numpy as np
import pytest
import torch
from conftest import single_image_meta

from medcl_lite.data.sliceset import SliceSet
from medcl_lite.finding_classifier import (
    FindingClassifier,
    finding_auc_table,
    finding_probabilities,
    train_finding_classifier,
)
from medcl_lite.image_text import ImageTextConfig


def cue_set(n=32, seed=0):
    """Noise images; 'opacity' brightens the top-left corner, 'effusion' is unrelated to the image."""
    rng = np.random.default_rng(seed)
    images = rng.random((n, 32, 32), dtype=np.float32)
    opacity = np.arange(n) % 2 == 0
    images[opacity, :12, :12] += 2.0
    meta = single_image_meta(n, report="Some report.", opacity=opacity, effusion=rng.random(n) < 0.5)
    return SliceSet(images, None, meta, ("background",), "cues")


def _cfg(**kw):
    base = dict(
        epochs=8, batch_size=8, lr=1e-3, warmup_steps=0, augment="none", progress=False, seed=0
    )
    return ImageTextConfig(**{**base, **kw})


def test_learns_a_visible_finding():
    data = cue_set()
    train, test = np.arange(0, 24), np.arange(24, 32)
    model = train_finding_classifier(_cfg(), data, train, ["opacity", "effusion"])
    assert isinstance(model, FindingClassifier) and not model.training
    table = finding_auc_table(model, data, lambda finding: test)
    assert list(table.columns) == ["finding", "auc", "positives", "images"]
    assert table.set_index("finding").auc["opacity"] == 1.0  # the cue is unmissable
    probabilities = finding_probabilities(model, data, test)
    assert (
        probabilities.shape == (8, 2) and (probabilities >= 0).all() and (probabilities <= 1).all()
    )


def test_same_seed_same_model_and_rows_per_finding():
    data = cue_set(16)
    a = train_finding_classifier(_cfg(epochs=1), data, np.arange(16), ["opacity"])
    b = train_finding_classifier(_cfg(epochs=1), data, np.arange(16), ["opacity"])
    for x, y in zip(a.state_dict().values(), b.state_dict().values(), strict=True):
        assert torch.equal(x, y)
    table = finding_auc_table(a, data, lambda finding: np.arange(4))
    assert table.images.tolist() == [4] and table.positives.tolist() == [2]


def test_bad_input_is_named():
    data = cue_set(16)
    with pytest.raises(ValueError, match="cardiomegaly"):
        train_finding_classifier(_cfg(), data, np.arange(16), ["cardiomegaly"])
    with pytest.raises(ValueError, match="findings is empty"):
        train_finding_classifier(_cfg(), data, np.arange(16), [])
    with pytest.raises(ValueError, match="batch_size=8 exceeds the 4 images"):
        train_finding_classifier(_cfg(), data, np.arange(4), ["opacity"])
