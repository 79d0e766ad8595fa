"""IDEAL's two-stream fine-tuning: one shared encoder, stop-gradient cross pseudo-labels, the run."""

import json
import math

import numpy as np
import pytest
import torch

from medcl_lite.checkpoint import save_checkpoint
from medcl_lite.config import ConfigError, from_params
from medcl_lite.models import build_segmenter, load_pretrained
from medcl_lite.semi import (
    SECOND_STREAMS,
    SemiConfig,
    TwoStreamSegmenter,
    consistency_weight,
    cross_pseudo_labels,
    cross_pseudo_loss,
    finetune_two_stream,
    two_stream_loss,
)
from medcl_lite.train import _segmentation_loss, predict


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    return TwoStreamSegmenter("resnet18", 1, classes=3)


def _grads(module):
    return [p.grad for p in module.parameters()]


def _numel(module):
    return sum(p.numel() for p in module.parameters())


# ------------------------------------------------------------------------------------- network
def test_encoder_is_shared_and_counted_once(model):
    parts = [model.encoder, *model.decoders.values(), *model.heads.values()]
    assert _numel(model) == sum(_numel(m) for m in parts)
    assert sum(k.startswith("encoder.") for k in model.state_dict()) == len(
        model.encoder.state_dict()
    )
    assert model.decoder is model.decoders["unet"]


def test_both_streams_send_gradient_into_the_one_encoder(model):
    x = torch.rand(2, 1, 32, 32)
    model.eval()  # BatchNorm in eval mode: the three passes compute the same function
    per_stream = []
    for i, other in enumerate(("linknet", "unet")):
        model.zero_grad(set_to_none=True)
        model(x)[i].square().mean().backward()
        assert all(g is None for g in _grads(model.decoders[other]))  # the other decoder: untouched
        per_stream.append([p.grad.clone() for p in model.encoder.parameters()])
    model.zero_grad(set_to_none=True)
    a, b = model(x)
    (a.square().mean() + b.square().mean()).backward()
    assert per_stream[0][0].abs().sum() > 0 and per_stream[1][0].abs().sum() > 0
    for p, g_a, g_b in zip(model.encoder.parameters(), *per_stream, strict=True):
        torch.testing.assert_close(p.grad, g_a + g_b, rtol=1e-4, atol=1e-6)
    model.zero_grad(set_to_none=True)
    model.train()


@pytest.mark.parametrize("second", SECOND_STREAMS)
def test_every_second_stream_shares_the_encoder_at_full_resolution(second):
    torch.manual_seed(0)
    model = TwoStreamSegmenter("resnet18", 1, classes=3, second=second)
    assert model.streams == ("unet", second) and set(model.decoders) == {"unet", second}
    assert _numel(model) == sum(
        _numel(m) for m in (model.encoder, *model.decoders.values(), *model.heads.values())
    )
    a, b = model(torch.rand(2, 1, 64, 64))
    assert a.shape == b.shape == (2, 3, 64, 64)
    b.square().mean().backward()
    assert all(p.grad is None for p in model.decoders["unet"].parameters())
    assert next(model.encoder.parameters()).grad.abs().sum() > 0


def test_unknown_second_stream_is_refused():
    with pytest.raises(ValueError, match="deeplabv3plus"):
        TwoStreamSegmenter("resnet18", 1, classes=3, second="deeplabv3plus")
    with pytest.raises(ConfigError, match="second_stream='deeplabv3plus'"):
        SemiConfig(second_stream="deeplabv3plus")


def test_forward_shapes_and_averaged_inference(model):
    model.eval()
    x = torch.rand(2, 1, 32, 32)
    with torch.no_grad():
        a, b = model(x)
        mean = model.predict_logits(x)
    model.train()
    assert a.shape == b.shape == mean.shape == (2, 3, 32, 32)
    torch.testing.assert_close(mean.softmax(1), (a.softmax(1) + b.softmax(1)) / 2)
    assert not torch.equal(a, b)  # two different decoders
    with pytest.raises(ValueError, match="multiples of 32"):
        model(torch.rand(1, 1, 30, 32))


def test_stream_views_predict_label_maps(model, tiny_set):
    model.eval()
    x = torch.from_numpy(tiny_set.images[:3]).unsqueeze(1)
    with torch.no_grad():
        a, b = model(x)
        expected = model.predict_logits(x).argmax(1).numpy()
    np.testing.assert_array_equal(
        predict(model.stream("unet"), tiny_set, np.arange(3)), a.argmax(1).numpy()
    )
    np.testing.assert_array_equal(
        predict(model.stream("linknet"), tiny_set, np.arange(3)), b.argmax(1).numpy()
    )
    np.testing.assert_array_equal(predict(model.stream("mean"), tiny_set, np.arange(3)), expected)
    assert not model.training  # the views keep the model's mode
    model.train()
    with pytest.raises(ValueError, match="deeplab"):
        model.stream("deeplab")


@pytest.mark.parametrize("nested", [False, True])
def test_pretrained_encoder_and_unet_decoder_load(nested):
    torch.manual_seed(1)
    unet = build_segmenter("unet", "resnet18", 1, classes=3)
    state = {"encoder": unet.encoder.state_dict(), "decoder": unet.decoder.state_dict()}
    model = TwoStreamSegmenter("resnet18", 1, classes=3)
    second_before = {k: v.clone() for k, v in model.decoders["linknet"].state_dict().items()}
    assert load_pretrained(model, state if nested else state["encoder"]) == (
        ["encoder", "decoder"] if nested else ["encoder"]
    )
    for k, v in state["encoder"].items():
        torch.testing.assert_close(model.encoder.state_dict()[k], v)
    loaded = model.decoders["unet"].state_dict()
    assert all(torch.equal(loaded[k], v) for k, v in state["decoder"].items()) == nested
    assert all(torch.equal(model.decoders["linknet"].state_dict()[k], v) for k, v in second_before.items())


# --------------------------------------------------------------------------- pseudo supervision
def _logits(seed, shape=(2, 3, 4, 4), scale=2.0):
    return scale * torch.randn(shape, generator=torch.Generator().manual_seed(seed))


def test_cross_pseudo_labels_are_detached_argmax_and_confidence():
    a, b = _logits(0).requires_grad_(), _logits(1).requires_grad_()
    pseudo = cross_pseudo_labels(a, b, 0.6)
    torch.testing.assert_close(pseudo.labels_a, a.argmax(1))
    torch.testing.assert_close(pseudo.labels_b, b.argmax(1))
    torch.testing.assert_close(pseudo.confident_a, a.softmax(1).amax(1) >= 0.6)
    torch.testing.assert_close(pseudo.confident_b, b.softmax(1).amax(1) >= 0.6)
    assert 0 < pseudo.confident_a.sum() < pseudo.confident_a.numel()  # the threshold really masks
    assert not any(t.requires_grad for t in pseudo)
    with pytest.raises(ValueError, match="threshold"):
        cross_pseudo_labels(a, b, 1.5)
    with pytest.raises(ValueError, match="logits_a and logits_b"):
        cross_pseudo_labels(a, b[:, :2], 0.5)


def test_confidence_threshold_is_inclusive():
    tie = torch.zeros(1, 2, 3, 3)  # softmax exactly 0.5 everywhere
    assert cross_pseudo_labels(tie, tie, 0.5).confident_a.all()
    assert not cross_pseudo_labels(tie, tie, 0.51).confident_b.any()


def _loop_reference(a, b, threshold):
    """Pixel by pixel: -log softmax(student)[teacher's argmax] where the teacher is confident."""
    total = 0.0
    for student, teacher in ((a, b), (b, a)):
        p_teacher, log_p = teacher.softmax(1), student.log_softmax(1)
        n, _, h, w = student.shape
        for i in range(n):
            for y in range(h):
                for x in range(w):
                    if p_teacher[i, :, y, x].max() >= threshold:
                        total -= float(log_p[i, p_teacher[i, :, y, x].argmax(), y, x])
    return total / a[:, 0].numel()


@pytest.mark.parametrize("threshold", [0.0, 0.5, 0.8])
def test_cross_pseudo_loss_matches_a_loop_and_is_symmetric(threshold):
    a, b = _logits(2), _logits(3)
    loss = cross_pseudo_loss(a, b, threshold)
    assert float(loss) == pytest.approx(_loop_reference(a, b, threshold), rel=1e-5)
    assert float(cross_pseudo_loss(b, a, threshold)) == pytest.approx(float(loss), rel=1e-6)


def test_threshold_one_masks_everything():
    a, b = _logits(4).requires_grad_(), _logits(5).requires_grad_()
    loss = cross_pseudo_loss(a, b, 1.0)
    assert float(loss.detach()) == 0.0
    loss.backward()
    assert not a.grad.any() and not b.grad.any()


def test_targets_are_stop_gradient_per_decoder(model):
    """The gradient reaching each decoder is exactly its own student term's: none comes from the
    targets it produced for the other stream."""
    x = torch.rand(2, 1, 32, 32)
    model.eval()  # no dropout: the three passes compute the same function

    def decoder_grads(loss_fn):
        model.zero_grad(set_to_none=True)
        a, b = model(x)
        loss_fn(a, b).backward()
        return {
            s: [
                torch.zeros_like(p) if p.grad is None else p.grad.clone()
                for p in model.decoders[s].parameters()
            ]
            for s in ("unet", "linknet")
        }

    def student(logits, teacher):
        target = teacher.detach().argmax(1)
        return torch.nn.functional.cross_entropy(logits, target, reduction="sum") / target.numel()

    both = decoder_grads(lambda a, b: cross_pseudo_loss(a, b, 0.0))
    a_only = decoder_grads(lambda a, b: student(a, b))
    b_only = decoder_grads(lambda a, b: student(b, a))
    for got, want in zip(both["unet"], a_only["unet"], strict=True):
        torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-7)
    for got, want in zip(both["linknet"], b_only["linknet"], strict=True):
        torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-7)
    assert any(g.abs().sum() > 0 for g in both["unet"]) and any(
        g.abs().sum() > 0 for g in both["linknet"]
    )
    assert not any(g.any() for g in a_only["linknet"])  # a's term alone never reaches b's decoder
    model.zero_grad(set_to_none=True)
    model.train()


def test_step_objective_is_both_supervised_losses_plus_weighted_cps(model):
    torch.manual_seed(3)
    x, xu = torch.rand(2, 1, 32, 32), torch.rand(3, 1, 32, 32)
    y = torch.randint(0, 3, (2, 32, 32))
    cfg = SemiConfig(threshold=0.4)
    model.eval()  # no dropout: the reference pass computes the same function
    loss, parts = two_stream_loss(model, x, y, xu, 0.3, cfg)
    with torch.no_grad():
        a, b = (torch.cat(pair) for pair in zip(model(x), model(xu), strict=True))
    sup = _segmentation_loss(a[:2], y, "ce+dice") + _segmentation_loss(b[:2], y, "ce+dice")
    cps = cross_pseudo_loss(a[2:], b[2:], 0.4)
    assert parts["sup_loss"] == pytest.approx(float(sup), rel=1e-5)
    assert parts["cps_loss"] == pytest.approx(float(cps), rel=1e-5)
    assert float(loss.detach()) == pytest.approx(float(sup + 0.3 * cps), rel=1e-5)
    assert parts["disagree"] == pytest.approx(
        float((a[2:].argmax(1) != b[2:].argmax(1)).float().mean())
    )
    model.train()


def test_labelled_and_unlabelled_images_are_normalised_apart(model):
    """Two passes (as the CPS code): in training mode BatchNorm normalises the labelled batch by
    its own statistics, so the supervised term does not depend on the unlabelled images."""
    torch.manual_seed(4)
    x, y = torch.rand(2, 1, 32, 32), torch.randint(0, 3, (2, 32, 32))
    cfg = SemiConfig(threshold=0.4)
    model.train()
    sups = [two_stream_loss(model, x, y, 3 * torch.rand(3, 1, 32, 32), 0.3, cfg)[1]["sup_loss"] for _ in range(2)]
    alone = two_stream_loss(model, x, y, x[:0], 0.3, cfg)[1]["sup_loss"]
    assert sups[0] == pytest.approx(sups[1], rel=1e-6) and sups[0] == pytest.approx(alone, rel=1e-6)


def test_consistency_weight_sigmoid_rampup():
    assert consistency_weight(0, 100, 2.0) == pytest.approx(2.0 * math.exp(-5))
    assert consistency_weight(50, 100, 2.0) == pytest.approx(2.0 * math.exp(-1.25))
    assert consistency_weight(100, 100, 2.0) == pytest.approx(2.0)
    assert consistency_weight(500, 100, 2.0) == pytest.approx(2.0)
    assert consistency_weight(0, 0, 0.5) == 0.5
    weights = [consistency_weight(s, 10, 1.0) for s in range(11)]
    assert all(w1 < w2 for w1, w2 in zip(weights, weights[1:], strict=False))
    for bad, match in [
        ((-1, 10, 1.0), "step"),
        ((0, -1, 1.0), "rampup_steps"),
        ((0, 10, -1.0), "max_weight"),
    ]:
        with pytest.raises(ValueError, match=match):
            consistency_weight(*bad)


# ------------------------------------------------------------------------------------------ runs
def _cfg(**kw):
    base = {
        "max_steps": 4,
        "eval_every": 2,
        "batch_size": 2,
        "unlabelled_batch": 2,
        "rampup_steps": 4,
        "threshold": 0.5,
        "progress": False,
    }
    return SemiConfig(**{**base, **kw})


def test_finetune_two_stream_runs_and_writes_files(tiny_set, tmp_path):
    idx = np.arange(len(tiny_set))
    result = finetune_two_stream(
        _cfg(out_dir=str(tmp_path)), tiny_set, idx[:3], idx[3:7], idx[12:15], idx[15:]
    )
    m, h = result.metrics, result.history
    assert m["best_step"] in (2, 4) and m["n_train"] == 3 and m["n_unlabelled"] == 4
    for key in (
        "val_dice",
        "test_dice",
        "test_dice_pooled",
        "test_unet_dice",
        "test_linknet_dice",
        "test_unet_dice_pooled",
        "test_dice_disc",
        "unlabelled_disagreement",
    ):
        assert 0 <= m[key] <= 1 and np.isfinite(m[key]), key
    assert list(h.step) == [1, 2, 3, 4] and h.val_dice.notna().sum() == 2
    assert {"sup_loss", "cps_loss", "weight", "confident", "disagree"} <= set(h.columns)
    assert np.isfinite(h[["loss", "sup_loss", "cps_loss"]].to_numpy()).all()
    np.testing.assert_allclose(h.weight, [consistency_weight(s, 4, 1.0) for s in range(4)])
    np.testing.assert_allclose(h.loss, h.sup_loss + h.weight * h.cps_loss, rtol=1e-5)
    assert result.test_pred.shape == (3, 32, 32)
    assert json.loads((tmp_path / "metrics.json").read_text())["best_step"] == m["best_step"]
    assert {"config.json", "history.csv", "test_pred.npz"} <= {p.name for p in tmp_path.iterdir()}


def test_finetune_two_stream_loads_a_pretrained_encoder(tiny_set, tmp_path):
    torch.manual_seed(2)
    encoder = build_segmenter("unet", "resnet18", 1, classes=3).encoder.state_dict()
    save_checkpoint({"encoder": encoder, "config": {}}, tmp_path / "encoder.pt")
    idx = np.arange(len(tiny_set))
    cfg = _cfg(max_steps=1, eval_every=1, lr=1e-12, pretrained=str(tmp_path / "encoder.pt"))
    model = finetune_two_stream(cfg, tiny_set, idx[:2], idx[2:4], idx[4:6]).model
    for k, v in encoder.items():
        if v.is_floating_point() and "running" not in k:
            torch.testing.assert_close(model.encoder.state_dict()[k], v, atol=1e-6, rtol=0)


def test_finetune_two_stream_checks_rows(tiny_set):
    idx = np.arange(len(tiny_set))
    with pytest.raises(ValueError, match="labelled_index"):
        finetune_two_stream(_cfg(), tiny_set, idx[:0], idx[2:4], idx[4:6])
    with pytest.raises(ValueError, match="unlabelled_index"):
        finetune_two_stream(_cfg(), tiny_set, idx[:2], idx[None, 2:4], idx[4:6])


def test_finetune_two_stream_without_unlabelled_rows_is_supervised(tiny_set):
    idx = np.arange(len(tiny_set))
    result = finetune_two_stream(_cfg(max_steps=2, eval_every=1), tiny_set, idx[:2], idx[:0], idx[4:6], idx[6:8])
    assert (result.history.cps_loss == 0).all() and result.history.disagree.isna().all()
    assert np.isnan(result.metrics["unlabelled_disagreement"]) and result.metrics["n_unlabelled"] == 0
    assert 0 <= result.metrics["test_dice"] <= 1


@pytest.mark.parametrize("key, value", [("threshold", 1.5), ("threshold", -0.1), ("consistency", -1.0),
                                        ("rampup_steps", -1), ("unlabelled_batch", 0), ("batch_size", 0),
                                        ("max_steps", 0), ("lr", 0.0), ("loss", "dice"), ("augment", "heavy"),
                                        ("optimizer", "lamb")])  # fmt: skip
def test_bad_config_values_raise(key, value):
    with pytest.raises(ConfigError, match=key):
        SemiConfig(**{key: value})


def test_config_from_params_names_unknown_parameters():
    assert from_params(SemiConfig, {"threshold": 1, "rampup_steps": 0}).threshold == 1.0
    with pytest.raises(ConfigError, match="threshold"):
        from_params(SemiConfig, {"treshold": 0.5})
