"""BatchNorm statistics re-estimated per site (AdaBN): closed forms, nothing else changed."""

import copy
from dataclasses import replace

import numpy as np
import pandas as pd
import pytest
import torch
from conftest import make_tiny_set
from torch import nn

from medcl_lite.batchnorm import adapt_batchnorm, predict_per_site
from medcl_lite.config import ConfigError
from medcl_lite.data.sliceset import SliceSet
from medcl_lite.models import build_segmenter
from medcl_lite.train import FinetuneConfig, evaluate, finetune, predict


@pytest.fixture
def model():
    torch.manual_seed(0)
    net = build_segmenter("unet", "resnet18", 1, classes=3)
    net.train()
    with torch.no_grad():  # running statistics of some training batches, not the fresh 0 / 1
        net(torch.rand(4, 1, 32, 32))
    return net.eval()


def _two_scanners() -> SliceSet:
    """Site A: the tiny set's images; site B: the same images with twice the contrast."""
    data = make_tiny_set()
    meta_a = data.meta.assign(site="A")
    meta_b = data.meta.assign(site="B", sample_id=data.meta.sample_id + "_b")
    return SliceSet(np.concatenate([data.images, 2 * data.images]), np.concatenate([data.masks, data.masks]),
                    pd.concat([meta_a, meta_b], ignore_index=True), data.classes, "two scanners")  # fmt: skip


def test_statistics_are_those_of_the_rows_closed_form(model, tiny_set):
    rows = np.arange(10)
    adapted = adapt_batchnorm(model, tiny_set, rows, batch_size=64)  # one batch: the plain mean and variance
    x = torch.from_numpy(tiny_set.images[rows]).unsqueeze(1)
    with torch.no_grad():
        y = model.encoder.conv1(x)  # what the first BatchNorm sees
    torch.testing.assert_close(adapted.encoder.bn1.running_mean, y.mean(dim=(0, 2, 3)))
    torch.testing.assert_close(adapted.encoder.bn1.running_var, y.transpose(0, 1).flatten(1).var(dim=1))
    assert not adapted.training


def test_only_the_encoder_statistics_change(model, tiny_set):
    before = copy.deepcopy(model.state_dict())
    adapted = adapt_batchnorm(model, tiny_set, np.arange(8), batch_size=3)
    after = adapted.state_dict()
    for key, value in before.items():
        torch.testing.assert_close(model.state_dict()[key], value)  # the original is untouched
        moved = key.startswith("encoder.") and key.endswith(("running_mean", "running_var", "num_batches_tracked"))
        if not moved:
            torch.testing.assert_close(after[key], value)
    assert not torch.equal(after["encoder.bn1.running_mean"], before["encoder.bn1.running_mean"])


def test_a_scanner_with_twice_the_contrast_is_undone(model):
    data = _two_scanners()
    n = len(data) // 2
    index = np.arange(len(data))

    def logits_of(m, d, rows):
        with torch.no_grad():
            return m(torch.from_numpy(d.images[rows]).unsqueeze(1)).numpy()

    # conv1 has no bias: 2x the images -> 2x its output, which the site's own statistics divide out
    # (up to BatchNorm's eps, 1e-5 beside the variances)
    adapted = predict_per_site(logits_of, model, data, index)
    assert np.abs(adapted[n:] - adapted[:n]).max() < 0.02
    plain = logits_of(model, data, index)  # one set of statistics: the sites differ
    assert np.abs(plain[n:] - plain[:n]).max() > 0.5


def test_per_site_keeps_the_order_of_the_rows(model):
    data = _two_scanners()
    index = np.random.default_rng(0).permutation(len(data))[:20]
    got = predict_per_site(predict, model, data, index)
    sites = data.meta.site.to_numpy()[index]
    for site in "AB":
        rows = index[sites == site]
        np.testing.assert_array_equal(got[sites == site], predict(adapt_batchnorm(model, data, rows), data, rows))


def test_evaluate_per_site_bn_scores_each_site_with_its_own_statistics(model):
    data = _two_scanners()
    index = np.arange(len(data))
    metrics, pred = evaluate(model, data, index, per_site_bn=True)
    for site in "AB":
        rows = np.flatnonzero(data.meta.site == site)
        alone = evaluate(adapt_batchnorm(model, data, rows), data, rows)[0]
        assert metrics[f"dice_site_{site}"] == pytest.approx(alone["dice"])


def test_finetune_with_per_site_statistics_changes_the_test_score_only(tiny_set):
    from medcl_lite.data.datasets import make_protocol

    protocol = make_protocol(tiny_set.meta, labelled_sites=("A",), val_fraction=0.2, test_fraction=0.4, seed=0)
    cfg = FinetuneConfig(max_steps=3, eval_every=1, batch_size=2, progress=False, device="cpu")
    plain = finetune(cfg, tiny_set, protocol.label_pool[:2], protocol.val, protocol.test)
    adapted = finetune(replace(cfg, test_bn="per_site"), tiny_set, protocol.label_pool[:2], protocol.val, protocol.test)
    assert adapted.metrics["val_dice"] == plain.metrics["val_dice"]
    np.testing.assert_array_equal(adapted.history.to_numpy(), plain.history.to_numpy())
    expected = evaluate(plain.model, tiny_set, protocol.test, per_site_bn=True)[0]
    assert adapted.metrics["test_dice"] == pytest.approx(expected["dice"])
    assert adapted.metrics["test_dice"] != plain.metrics["test_dice"]


def test_bad_input_is_named(model, tiny_set):
    with pytest.raises(ValueError, match="empty index"):
        adapt_batchnorm(model, tiny_set, [])
    no_bn = build_segmenter("unet", "resnet18", 1, classes=3)
    no_bn.encoder = nn.Sequential(nn.Conv2d(1, 2, 3))
    with pytest.raises(ValueError, match="no BatchNorm"):
        adapt_batchnorm(no_bn, tiny_set, [0])
    with pytest.raises(ConfigError, match="test_bn"):
        FinetuneConfig(test_bn="site")
