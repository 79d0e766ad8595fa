"""The diagnosis of why pretraining helps or not: state transforms (BatchNorm reset, stages kept),
the ablations around a recipe, and the paired table over them."""

import numpy as np
import pandas as pd
import pytest
import torch

from medcl_lite.diagnosis import (
    Ablation,
    default_ablations,
    diagnosis_table,
    keep_encoder_stages,
    reading,
    reset_batchnorm_statistics,
    run_diagnosis,
)
from medcl_lite.models import build_segmenter
from medcl_lite.train import FinetuneConfig


def _encoder_state(seed: int) -> dict:
    torch.manual_seed(seed)
    encoder = build_segmenter("unet", "resnet18", 1, classes=3).encoder
    encoder.train()
    with torch.no_grad():
        encoder(torch.randn(4, 1, 32, 32) * 3 + 1)  # running statistics away from 0 / 1
    return {k: v.clone() for k, v in encoder.state_dict().items()}


def test_reset_batchnorm_statistics_keeps_weights_and_resets_only_statistics():
    state = _encoder_state(0)
    reset = reset_batchnorm_statistics(state)
    assert set(reset) == set(state)
    for key, value in reset.items():
        if key.endswith("running_mean"):
            assert torch.equal(value, torch.zeros_like(value)) and not torch.equal(state[key], value)
        elif key.endswith("running_var"):
            assert torch.equal(value, torch.ones_like(value))
        elif key.endswith("num_batches_tracked"):
            assert int(value) == 0 and int(state[key]) == 1
        else:
            assert torch.equal(value, state[key])
    assert not torch.equal(state["bn1.running_mean"], reset["bn1.running_mean"])  # the input is not changed


def test_keep_encoder_stages_takes_shallow_stages_from_the_pretrained_state():
    pretrained, random = _encoder_state(1), _encoder_state(2)
    mixed = keep_encoder_stages(pretrained, 2, random)
    for key in pretrained:
        source = pretrained if key.startswith(("conv1.", "bn1.", "layer1.")) else random
        assert torch.equal(mixed[key], source[key]), key
    assert all(torch.equal(keep_encoder_stages(pretrained, 5, random)[k], pretrained[k]) for k in pretrained)
    assert all(torch.equal(keep_encoder_stages(pretrained, 0, random)[k], random[k]) for k in pretrained)
    with pytest.raises(ValueError, match="stages=6"):
        keep_encoder_stages(pretrained, 6, random)
    with pytest.raises(ValueError, match="different keys"):
        keep_encoder_stages(pretrained, 2, {"conv1.weight": random["conv1.weight"]})
    with pytest.raises(ValueError, match="ResNet encoders"):
        keep_encoder_stages({"features.0.weight": torch.zeros(1)}, 2, {"features.0.weight": torch.zeros(1)})


def test_default_ablations_change_one_thing_each():
    base = FinetuneConfig(max_steps=60, lr=1e-3)
    ablations = default_ablations(base, _encoder_state(2), short_pretraining="short", no_crop_pretraining="nocrop",
                                  scanner_view_pretraining="scanners")  # fmt: skip
    assert ablations["reference"] == Ablation("the recipe itself")
    assert ablations["lr 1e-4 (the papers')"].finetune == {"lr": 1e-4}
    assert ablations["300 steps"].finetune == {"max_steps": 300, "eval_every": 50}
    assert ablations["frozen encoder"].finetune == {"encoder_lr_scale": 0.0}
    assert ablations["decoder first, then all (LP-FT)"].finetune == {"frozen_encoder_steps": 30}
    assert ablations["all labels"].label_count == "all"
    assert ablations["encoder BN frozen"].finetune == {"encoder_bn": "frozen"}
    assert ablations["BN statistics per test site"] == Ablation("BatchNorm statistics", {"test_bn": "per_site"})
    assert ablations["shorter pretraining"].encoder == "short"
    assert ablations["pretrained without crops"].encoder == "nocrop"
    assert ablations["pretrained with scanner views"] == Ablation("augmentation mismatch", encoder="scanners")
    assert "shorter pretraining" not in default_ablations(base, _encoder_state(2))
    assert default_ablations(base, _encoder_state(2), longer=2)["120 steps"].finetune == {"max_steps": 120,
                                                                                          "eval_every": 20}
    with pytest.raises(ValueError, match="longer=1"):
        default_ablations(base, _encoder_state(2), longer=1)
    factors = {a.factor for a in ablations.values()}
    assert {"fine-tuning LR", "fine-tuning length", "frozen vs full", "BatchNorm statistics", "encoder-only transfer",
            "pretraining length", "augmentation mismatch", "label-budget ceiling"} <= factors  # fmt: skip


def test_run_diagnosis_pairs_every_ablation_on_the_same_images(tiny_set, tmp_path):
    from medcl_lite.data.datasets import make_protocol

    protocol = make_protocol(tiny_set.meta, labelled_sites=("A", "B"), val_fraction=0.2, test_fraction=0.3, seed=0)
    base = FinetuneConfig(max_steps=2, eval_every=1, batch_size=2, progress=False)
    pretrained = {"reference": _encoder_state(1), "other": _encoder_state(3)}
    ablations = {
        "reference": Ablation("the recipe itself"),
        "frozen, BN reset": Ablation("BatchNorm statistics", {"encoder_lr_scale": 0.0}, transform=reset_batchnorm_statistics),
        "other encoder": Ablation("pretraining length", encoder="other"),
        "all labels": Ablation("label-budget ceiling", label_count="all"),
    }
    rows = run_diagnosis(tiny_set, protocol, pretrained, base, ablations, 1, [0, 1], method="SimCLR",
                         out_dir=tmp_path, progress=False)  # fmt: skip
    assert len(rows) == 4 * 2 * 2 and set(rows.init) == {"random init", "SimCLR"}
    assert {p.name for p in tmp_path.iterdir()} == {"reference", "frozen_bn_reset", "other_encoder", "all_labels"}
    assert set(rows[rows.ablation == "all labels"].n_labelled) == {"all"}
    table = diagnosis_table(rows)
    assert list(table.ablation) == list(ablations) and (table.n_pairs == 2).all()
    reference = rows[rows.ablation == "reference"]
    mean = reference.groupby("init").test_dice.mean()
    first = table.iloc[0]
    assert first["random init"] == pytest.approx(mean["random init"]) and first.pretrained == pytest.approx(mean["SimCLR"])
    assert first.mean_diff == pytest.approx(mean["SimCLR"] - mean["random init"])
    # random init runs are the same in every ablation that keeps the recipe: the encoder side changed only
    same = rows[(rows.init == "random init") & rows.ablation.isin(["reference", "other encoder"])]
    assert same.groupby("seed").test_dice.nunique().eq(1).all()
    with pytest.raises(ValueError, match="names encoder 'missing'"):
        run_diagnosis(tiny_set, protocol, pretrained, base, {"x": Ablation("f", encoder="missing")}, 1, [0])


def test_diagnosis_table_recovers_a_known_shift():
    rows = pd.DataFrame([
        {"ablation": a, "factor": "f", "init": init, "n_labelled": "1", "seed": s,
         "test_dice": 0.5 + 0.01 * s + (shift if init == "SimCLR" else 0.0)}
        for a, shift in (("reference", -0.05), ("frozen", 0.02)) for s in range(4) for init in ("random init", "SimCLR")
    ])  # fmt: skip
    table = diagnosis_table(rows).set_index("ablation")
    assert np.allclose(table[["mean_diff", "ci_low", "ci_high"]].loc["reference"], -0.05)
    assert table.verdict.to_dict() == {"reference": "worse", "frozen": "better"}
    assert table.loc["frozen", "random init"] == pytest.approx(0.515)


def test_reading_is_computed_from_the_table():
    rows = pd.DataFrame([
        {"ablation": a, "factor": f, "init": init, "n_labelled": n, "seed": s,
         "test_dice": level + 0.01 * s + (shift if init == "SimCLR" else 0.0)}
        for a, f, n, level, shift in (("reference", "the recipe itself", "1", 0.70, -0.05),
                                      ("frozen encoder", "frozen vs full", "1", 0.60, 0.03),
                                      ("all labels", "label-budget ceiling", "all", 0.85, 0.0))
        for s in range(3) for init in ("random init", "SimCLR")
    ])  # fmt: skip
    text = reading(diagnosis_table(rows))
    assert "random init reaches 0.710 Dice at 1 labelled and 0.860 with all labels: +0.150 left to gain" in text
    assert "- **reference**: pretrained -0.050 vs random init [-0.050, -0.050], worse." in text
    assert "- frozen encoder (frozen vs full): +0.030 [+0.030, +0.030], better; +0.080 against" in text
    assert "beats random init (95 % interval above 0) under: frozen encoder." in text
    no_win = reading(diagnosis_table(rows[rows.ablation != "frozen encoder"]))
    assert "No row shows the pretrained encoder above random init" in no_win and "most favourable row is 'all labels' (+0.000)" in no_win
    with pytest.raises(ValueError, match="no 'reference' row"):
        reading(diagnosis_table(rows[rows.ablation != "reference"]))


def test_transforms_change_the_encoder_of_an_encoder_and_decoder_state():
    """Region and dense losses also train the decoder (``{"encoder", "decoder"}`` transfer states):
    an ablation's transform changes the encoder part only."""
    from medcl_lite.diagnosis import _on_encoder

    encoder = _encoder_state(1)
    decoder = {"blocks.0.conv1.0.weight": torch.ones(2, 2)}
    both = _on_encoder(reset_batchnorm_statistics, {"encoder": encoder, "decoder": decoder})
    assert both["decoder"] is decoder
    assert all(both["encoder"][k].eq(0).all() for k in encoder if k.endswith("running_mean"))
    alone = _on_encoder(reset_batchnorm_statistics, encoder)
    assert set(alone) == set(encoder) and all(torch.equal(alone[k], both["encoder"][k]) for k in encoder)


def test_site_table_reads_each_ablation_per_site():
    """A known shift per site is recovered: +0.1 on site A, -0.2 on site B, for every seed."""
    from medcl_lite.diagnosis import site_table

    rows = pd.DataFrame([
        {"ablation": ablation, "factor": "f", "init": init, "seed": seed, "n_labelled": "1", "test_dice": 0.5,
         "test_dice_site_A": 0.5 + seed / 10 + (0.1 if init == "SimCLR" else 0.0),
         "test_dice_site_B": 0.6 + seed / 10 - (0.2 if init == "SimCLR" else 0.0)}
        for ablation in ("reference", "frozen encoder") for init in ("random init", "SimCLR") for seed in range(3)
    ])  # fmt: skip
    table = site_table(rows)
    assert list(table.index) == ["reference", "frozen encoder"] and list(table.columns) == ["site A", "site B"]
    assert table.loc["reference", "site A"] == "+0.100 [+0.100, +0.100] better"
    assert table.loc["frozen encoder", "site B"] == "-0.200 [-0.200, -0.200] worse"
    one_seed = site_table(rows[rows.seed == 0])
    assert one_seed.loc["reference", "site A"] == "+0.100 (too few pairs)"


def test_site_means_per_ablation_and_init():
    """Closed form: the mean over seeds of each site's column, ablations in the order asked."""
    from medcl_lite.diagnosis import site_means

    rows = pd.DataFrame([
        {"ablation": ablation, "factor": "f", "init": init, "seed": seed, "n_labelled": "1", "test_dice": 0.5,
         "test_dice_site_A": 0.5 + seed / 10 + (0.1 if init == "SimCLR" else 0.0),
         "test_dice_site_B": 0.6 + seed / 10 - (0.2 if ablation == "reference" else 0.0)}
        for ablation in ("reference", "frozen encoder", "all labels") for init in ("random init", "SimCLR")
        for seed in range(3)
    ])  # fmt: skip
    table = site_means(rows, ["frozen encoder", "reference"])
    assert list(table.index) == [("frozen encoder", "random init"), ("frozen encoder", "SimCLR"),
                                 ("reference", "random init"), ("reference", "SimCLR")]  # fmt: skip
    assert list(table.columns) == ["site A", "site B"]
    assert table.loc[("reference", "SimCLR"), "site A"] == pytest.approx(0.7)
    assert table.loc[("reference", "random init"), "site B"] == pytest.approx(0.5)
    assert table.loc[("frozen encoder", "SimCLR"), "site B"] == pytest.approx(0.7)
    with pytest.raises(ValueError, match="BN statistics per test site"):
        site_means(rows, ["BN statistics per test site"])


def test_site_reading_moves_per_site_and_paired_gaps():
    """Closed form: SimCLR +0.1 on site A under the ablation only, random init unchanged."""
    from medcl_lite.diagnosis import site_reading

    rows = pd.DataFrame([
        {"ablation": ablation, "factor": "f", "init": init, "seed": seed, "n_labelled": "1", "test_dice": 0.5,
         "test_dice_site_A": 0.5 + seed / 10 + (0.1 if init == "SimCLR" and ablation == "BN" else 0.0)}
        for ablation in ("reference", "BN") for init in ("random init", "SimCLR") for seed in range(3)
    ])  # fmt: skip
    text = site_reading(rows, "BN")
    assert "- site A: random init 0.600 → 0.600, SimCLR 0.600 → 0.700" in text
    assert "- BN, site A: SimCLR +0.100 Dice vs random init over 3 pair(s), 95 % interval [+0.100, +0.100]: **better**" in text
    assert "- reference, site A: SimCLR +0.000" in text
    smoke = site_reading(rows, "BN", smoke=True)
    assert "noise" in smoke and "**better**" not in smoke


def test_reading_of_a_smoke_run_states_no_verdict():
    rows = pd.DataFrame([
        {"ablation": a, "factor": "f", "init": init, "n_labelled": "1", "seed": s,
         "test_dice": 0.5 + 0.01 * s + (0.05 if init == "SimCLR" else 0.0)}
        for a in ("reference", "frozen") for s in range(3) for init in ("random init", "SimCLR")
    ])  # fmt: skip
    text = reading(diagnosis_table(rows), smoke=True)
    assert "noise" in text and "better" not in text and "beats" not in text
    assert "- frozen (f): +0.050 [+0.050, +0.050], smoke run; +0.000 against" in text
