"""Evaluation protocols beside full fine-tuning: a frozen encoder, discriminative fine-tuning
(``encoder_lr_scale``) and the linear probe of encoder features."""

import numpy as np
import pandas as pd
import pytest
import torch

from medcl_lite.config import ConfigError
from medcl_lite.models import build_segmenter
from medcl_lite.probe import coarse_masks, encoder_features, linear_probe
from medcl_lite.train import FinetuneConfig, finetune, finetune_param_groups


def _encoder_state(seed: int = 3) -> dict:
    torch.manual_seed(seed)
    return build_segmenter("unet", "resnet18", 1, classes=3).encoder.state_dict()


def _finetune(tiny_set, scale: float, **kwargs):
    cfg = FinetuneConfig(init="pretrained", max_steps=1, eval_every=1, batch_size=4, optimizer="sgd",
                         lr=0.05, augment="none", progress=False, encoder_lr_scale=scale, **kwargs)  # fmt: skip
    idx = np.arange(len(tiny_set))
    return finetune(cfg, tiny_set, idx[:4], idx[4:8], encoder_state=_encoder_state())


def _delta(after: dict, before: dict) -> torch.Tensor:
    return torch.cat([(after[k].float() - before[k].float()).flatten() for k in before if before[k].is_floating_point()])


def test_frozen_encoder_keeps_weights_and_batchnorm_statistics(tiny_set):
    start = _encoder_state()
    result = _finetune(tiny_set, 0.0)
    after = result.model.encoder.state_dict()
    for key, value in start.items():  # running means / variances included, and the step counter
        assert torch.equal(after[key].cpu(), value), key
    assert not any(p.requires_grad for p in result.model.encoder.parameters())
    moved = _finetune(tiny_set, 1.0).model.encoder.state_dict()
    assert _delta(moved, start).abs().max() > 0  # the same run with scale 1 does move it


def test_frozen_batchnorm_keeps_the_pretrained_statistics_while_the_weights_learn(tiny_set):
    start = _encoder_state()
    after = _finetune(tiny_set, 1.0, encoder_bn="frozen").model.encoder.state_dict()
    stats = [k for k in start if "running" in k or "num_batches" in k]
    weights = [k for k in start if k not in stats]
    assert all(torch.equal(after[k].cpu(), start[k]) for k in stats)
    assert _delta({k: after[k].cpu() for k in weights}, {k: start[k] for k in weights}).abs().max() > 0
    trained = _finetune(tiny_set, 1.0).model.encoder.state_dict()  # "train": the statistics move
    assert any(not torch.equal(trained[k].cpu(), start[k]) for k in stats if "running_mean" in k)
    with pytest.raises(ConfigError, match="encoder_bn"):
        FinetuneConfig(encoder_bn="eval")


def test_encoder_lr_scale_scales_the_first_encoder_update(tiny_set):
    """SGD's first step is lr x (gradient + weight decay x weight): an encoder at 0.1 x lr moves
    exactly 0.1 as far, from the same batch; the decoder moves the same."""
    start = _encoder_state()
    full, tenth = _finetune(tiny_set, 1.0).model, _finetune(tiny_set, 0.1).model
    weights = {k for k, v in start.items() if "running" not in k and "num_batches" not in k}
    d_full = _delta({k: full.encoder.state_dict()[k].cpu() for k in weights}, {k: start[k] for k in weights})
    d_tenth = _delta({k: tenth.encoder.state_dict()[k].cpu() for k in weights}, {k: start[k] for k in weights})
    # float32 rounding of (w - step) - w limits the agreement of single elements; in norm it is
    # within 1 % (a wrong scale would be off by 900 %)
    assert (d_tenth - 0.1 * d_full).norm() < 0.01 * (0.1 * d_full).norm()
    for a, b in zip(full.decoder.parameters(), tenth.decoder.parameters(), strict=True):
        assert torch.allclose(a, b, atol=1e-6)


def test_param_groups_and_config_check():
    model = build_segmenter("unet", "resnet18", 1, classes=2)
    n_all = sum(1 for _ in model.parameters())
    groups = finetune_param_groups(model, 1e-3, 0.1)
    assert [g["lr"] for g in groups] == [1e-3, pytest.approx(1e-4)]
    assert sum(len(g["params"]) for g in groups) == n_all
    groups = finetune_param_groups(model, 1e-3, 0.0)
    assert len(groups) == 1 and len(groups[0]["params"]) == n_all - sum(1 for _ in model.encoder.parameters())
    with pytest.raises(ConfigError, match="encoder_lr_scale=-0.5"):
        FinetuneConfig(encoder_lr_scale=-0.5)


def test_coarse_masks_take_each_cells_majority():
    mask = np.zeros((1, 4, 4), dtype=np.uint8)
    mask[0, :2, :2] = 1  # top-left cell all class 1
    mask[0, :2, 2:] = [[2, 2], [2, 0]]  # top-right: 3 of 4 are class 2
    mask[0, 2:, :2] = [[1, 1], [2, 2]]  # bottom-left: a tie, the lower class wins
    assert coarse_masks(mask, (2, 2), 3).tolist() == [[[1, 2], [1, 0]]]


def test_encoder_features_stages(tiny_set):
    encoder = build_segmenter("unet", "resnet18", 1, classes=3).encoder
    assert encoder_features(encoder, tiny_set, [0, 1], stage=3).shape == (2, 128, 4, 4)  # 32² / 8
    assert encoder_features(encoder, tiny_set, [0], stage=-1).shape == (1, 512, 1, 1)
    assert encoder_features(encoder, tiny_set, [0], stage=0).shape == (1, 1, 32, 32)  # the input
    with pytest.raises(ValueError, match="stage=6: the encoder has stages 0..5"):
        encoder_features(encoder, tiny_set, [0], stage=6)


def test_linear_probe_learns_and_reads_the_given_encoder(tiny_set):
    idx = np.arange(len(tiny_set))
    # stage 0 is the image itself: intensity separates the (bright) foreground from the background
    pixels = linear_probe(tiny_set, idx[:12], idx[12:], stage=0, steps=300, lr=0.1)
    assert pixels.feature_shape == (1, 32, 32) and pixels.losses[-1] < 0.5 * pixels.losses[0]
    # the probe finds the disc; the blob is as bright as the disc, so intensity cannot tell it:
    # Dice about 0.9 and 0, mean over the two foreground classes about 0.45
    assert 0.4 < pixels.dice < 0.5
    state = _encoder_state()
    a = linear_probe(tiny_set, idx[:12], idx[12:], encoder_state=state, steps=5)
    b = linear_probe(tiny_set, idx[:12], idx[12:], encoder_state={"encoder": state}, steps=5)
    assert a.dice == b.dice and a.losses == b.losses  # deterministic, and both state forms load
    assert 0.0 <= a.dice <= 1.0 and a.feature_shape == (128, 4, 4)
    with pytest.raises(ValueError, match="must not be empty"):
        linear_probe(tiny_set, [], idx)


def test_protocol_grid_runs_each_protocol_in_its_folder_on_the_same_images(tiny_set, tmp_path):
    from medcl_lite.data.datasets import cross_validation_folds
    from medcl_lite.experiment import run_protocol_grid
    from medcl_lite.paired import paired_comparison

    folds = cross_validation_folds(tiny_set.meta, k=2, seed=0)
    base = FinetuneConfig(max_steps=2, eval_every=1, batch_size=2, progress=False)
    protocols = {"full": {}, "frozen encoder": {"encoder_lr_scale": 0.0}}
    rows = run_protocol_grid(tiny_set, folds, {"random init": None, "pretrained": _encoder_state()}, [1], [0, 1],
                             base, protocols, tmp_path, progress=False)  # fmt: skip
    assert len(rows) == 2 * 2 * 2 * 2 and set(rows.protocol) == set(protocols)
    assert {p.name for p in tmp_path.iterdir()} == set(protocols)
    frozen = rows[rows.protocol == "frozen encoder"]
    assert (frozen.n_images == 1).all()
    table = paired_comparison(rows, groups=["protocol", "n_labelled"])
    assert list(table.n_pairs) == [4, 4]  # 2 folds x 2 seeds in each protocol
    with pytest.raises(ValueError, match="protocols is empty"):
        run_protocol_grid(tiny_set, folds, {"random init": None}, [1], [0], base, {}, tmp_path)


def test_probe_grid_rows_pair_with_the_finetuning_grid(tiny_set):
    from medcl_lite.data.datasets import make_protocol
    from medcl_lite.experiment import run_probe_grid

    protocol = make_protocol(tiny_set.meta, labelled_sites=("A", "B"), val_fraction=0.2, test_fraction=0.3, seed=0)
    rows = run_probe_grid(tiny_set, protocol, {"random init": None, "pretrained": _encoder_state()}, [2, "all"], [0],
                          steps=3)  # fmt: skip
    assert len(rows) == 4 and set(rows.protocol) == {"linear probe"} and "fold" not in rows
    assert rows.test_dice.between(0, 1).all()
    assert rows[rows.n_labelled == "2"].n_images.tolist() == [2, 2]


def test_evaluation_protocols_by_name_pair_across_protocols(tiny_set, tmp_path):
    from medcl_lite.data.datasets import cross_validation_folds
    from medcl_lite.experiment import EVALUATION_PROTOCOLS, run_evaluation_protocols
    from medcl_lite.paired import paired_comparison

    folds = cross_validation_folds(tiny_set.meta, k=2, seed=0)
    base = FinetuneConfig(max_steps=2, eval_every=1, batch_size=2, progress=False)
    encoders = {"random init": None, "pretrained": _encoder_state()}
    names = ["frozen encoder", "linear probe"]
    rows = run_evaluation_protocols(tiny_set, folds, encoders, [1], [0], base, names, tmp_path, progress=False)
    assert set(rows.protocol) == set(names) and len(rows) == 2 * 2 * 2  # protocols x folds x inits
    assert {p.name for p in tmp_path.iterdir()} == {"frozen encoder"}  # the probe trains no network to keep
    keys = ["init", "fold", "seed", "n_images"]
    assert rows[rows.protocol == names[0]][keys].values.tolist() == rows[rows.protocol == names[1]][keys].values.tolist()
    assert list(paired_comparison(rows, groups=["protocol", "n_labelled"]).n_pairs) == [2, 2]
    assert EVALUATION_PROTOCOLS["frozen encoder"] == {"encoder_lr_scale": 0.0}
    assert run_evaluation_protocols(tiny_set, folds, encoders, [1], [0], base, []).empty
    with pytest.raises(ValueError, match="unknown protocol.*'frozen'"):
        run_evaluation_protocols(tiny_set, folds, encoders, [1], [0], base, ["frozen"])


def _runs(protocol: str, shift: float, settings=("semi",)) -> pd.DataFrame:
    """Fake runs: random init scores 0.5 + fold / 10, the pretrained encoder ``shift`` more."""
    rows = pd.DataFrame([
        {"setting": s, "init": init, "n_labelled": "1", "fold": f, "seed": 0,
         "test_dice": 0.5 + f / 10 + (shift if init == "pretrained" else 0.0)}
        for s in settings for init in ("random init", "pretrained") for f in range(3)
    ])  # fmt: skip
    return rows.assign(protocol=protocol) if protocol else rows


def test_protocol_report_joins_the_grid_and_pairs_within_each_protocol():
    from medcl_lite.experiment import protocol_report

    full = _runs("", -0.02)  # the grid's own rows carry no protocol column
    extra = pd.concat([_runs("frozen encoder", 0.1), _runs("linear probe", 0.0)])
    report = protocol_report(full, extra, ["setting"])
    assert report.rows.protocol.tolist()[:6] == ["full"] * 6 and len(report.rows) == 18
    assert list(report.means.columns) == ["full", "frozen encoder", "linear probe"]
    assert list(report.means.index) == [("semi", "random init"), ("semi", "pretrained")]
    assert report.means.loc[("semi", "pretrained"), "frozen encoder"] == "0.700 ± 0.100"
    got = report.comparison.set_index("protocol")
    assert got.mean_diff.round(6).to_dict() == {"full": -0.02, "frozen encoder": 0.1, "linear probe": 0.0}
    assert got.verdict.to_dict() == {"full": "worse", "frozen encoder": "better", "linear probe": "no evidence"}
    assert got.ci_low["frozen encoder"] == pytest.approx(0.1)  # a constant shift: a zero-width interval
    assert "semi, frozen encoder, 1: pretrained +0.100 Dice" in report.text()
    assert report.text(label=lambda r: r.protocol).startswith("- full: pretrained -0.020")
    no_extra = protocol_report(full, pd.DataFrame(), ["setting"])  # no protocol asked for: full only
    assert list(no_extra.means.columns) == ["full"] and list(no_extra.comparison.protocol) == ["full"]
    with pytest.raises(ValueError, match="one label budget at a time.*'1', 'all'"):
        protocol_report(full, extra.assign(n_labelled="all"), ["setting"])


def test_decoder_first_keeps_the_encoder_for_its_steps_then_all_learn(tiny_set):
    """LP-FT (``frozen_encoder_steps``): while the encoder waits, the run is the frozen-encoder run
    step for step (same decoder); after it, the encoder's weights and statistics move."""
    idx = np.arange(len(tiny_set))

    def run(**kwargs):
        cfg = FinetuneConfig(init="pretrained", max_steps=3, eval_every=3, batch_size=4, optimizer="sgd", lr=0.05,
                             augment="none", progress=False, **kwargs)  # fmt: skip
        return finetune(cfg, tiny_set, idx[:4], idx[4:8], encoder_state=_encoder_state()).model

    start = _encoder_state()
    waiting, frozen = run(frozen_encoder_steps=3), run(encoder_lr_scale=0.0)
    assert all(torch.equal(waiting.encoder.state_dict()[k].cpu(), v) for k, v in start.items())
    for a, b in zip(waiting.decoder.parameters(), frozen.decoder.parameters(), strict=True):
        assert torch.allclose(a, b, atol=1e-6)
    assert all(p.requires_grad for p in waiting.encoder.parameters())  # only its updates were dropped
    moved = run(frozen_encoder_steps=2).encoder.state_dict()
    assert _delta({k: moved[k].cpu() for k in start}, start).abs().max() > 0
    assert any(not torch.equal(moved[k].cpu(), start[k]) for k in start if "running_mean" in k)
    with pytest.raises(ConfigError, match="frozen_encoder_steps"):
        FinetuneConfig(frozen_encoder_steps=-1)
