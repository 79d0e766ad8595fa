"""Training loops: they run, they resume exactly, MoCo really uses its momentum encoder."""

import json

import numpy as np
import pytest
import torch

import medcl_lite.train as train
from medcl_lite.config import ConfigError, to_dict
from medcl_lite.models import momentum_copy
from medcl_lite.train import FinetuneConfig, PretrainConfig, finetune, pretrain, warmup_cosine


def _cfg(tmp_path=None, **kw):
    base = {"max_epochs": 2, "batch_size": 4, "progress": False, "proj_dim": 16}
    if tmp_path is not None:
        base["out_dir"] = str(tmp_path)
    return PretrainConfig(**{**base, **kw})


@pytest.mark.parametrize("framework, strategy", [("simclr", "instance"), ("simclr", "temporal"), ("moco", "temporal")])
def test_pretrain_runs_and_writes_files(tiny_set, tmp_path, framework, strategy):
    result = pretrain(_cfg(tmp_path, framework=framework, pairing=strategy, queue_size=8), tiny_set)
    assert len(result.history) == 2 * (len(tiny_set) // 4)
    assert np.isfinite(result.history.loss).all()
    for name in ("config.json", "history.csv", "checkpoint.pt", "encoder.pt"):
        assert (tmp_path / name).is_file(), name
    saved = train.load_pretrained_encoder(tmp_path / "encoder.pt")
    assert saved.keys() == result.encoder_state.keys()


def test_pretraining_changes_the_encoder(tiny_set):
    torch.manual_seed(0)
    before = train.build_contrastive(_cfg()).encoder.state_dict()
    after = pretrain(_cfg(max_epochs=1), tiny_set).encoder_state
    assert any(not torch.equal(before[k], after[k]) for k in before if before[k].is_floating_point())


def test_moco_key_encoder_follows_the_query_encoder(tiny_set, monkeypatch):
    """The key path must use momentum-updated weights (the public CL-TCI code never updates them)."""
    copies = []
    original = train.momentum_copy

    def spy(module):
        key = original(module)
        copies.append((key, {k: v.clone() for k, v in key.state_dict().items()}))
        return key

    monkeypatch.setattr(train, "momentum_copy", spy)
    pretrain(_cfg(framework="moco", moco_momentum=0.5, queue_size=8, max_epochs=1), tiny_set)
    key, initial = copies[0]
    changed = [k for k, v in key.state_dict().items() if v.is_floating_point() and not torch.equal(v, initial[k])]
    assert any("weight" in k for k in changed)
    assert momentum_copy is original


def test_moco_queue_stores_patient_codes(tiny_set, tmp_path):
    pretrain(_cfg(tmp_path, framework="moco", pairing="temporal", queue_size=8, max_epochs=1), tiny_set)
    state = torch.load(tmp_path / "checkpoint.pt", weights_only=True)
    patients = state["queue"]["meta_patient"]
    assert (patients >= 0).all() and set(patients.tolist()) <= set(tiny_set.codes("patient_id").tolist())


@pytest.mark.parametrize("framework", ["simclr", "moco"])
def test_resume_continues_exactly(tiny_set, tmp_path, monkeypatch, framework):
    """Crash after the first epoch's checkpoint; the resumed run's losses equal the uninterrupted run's."""
    _assert_resume_is_exact(tiny_set, tmp_path, monkeypatch, framework=framework, queue_size=8, max_epochs=2)


def _assert_resume_is_exact(data, tmp_path, monkeypatch, **kw):
    """Crash right after the first checkpoint, resume: the losses equal an uninterrupted run's."""
    full = pretrain(_cfg(tmp_path / "full", **kw), data).history
    real_save = train.save_checkpoint

    def crash_after_save(state, path):
        real_save(state, path)
        if path.name == "checkpoint.pt":
            raise KeyboardInterrupt("simulated crash")

    monkeypatch.setattr(train, "save_checkpoint", crash_after_save)
    with pytest.raises(KeyboardInterrupt):
        pretrain(_cfg(tmp_path / "crash", **kw), data)
    monkeypatch.setattr(train, "save_checkpoint", real_save)
    resumed = pretrain(_cfg(tmp_path / "crash", resume=True, **kw), data).history
    assert len(resumed) == len(full)
    np.testing.assert_array_equal(resumed.loss.to_numpy(), full.loss.to_numpy())


def test_resume_refuses_other_config(tiny_set, tmp_path):
    pretrain(_cfg(tmp_path, max_epochs=1), tiny_set)
    with pytest.raises(ConfigError, match="lr"):
        pretrain(_cfg(tmp_path, max_epochs=1, lr=0.5, resume=True), tiny_set)


def test_warmup_cosine_shape():
    assert warmup_cosine(0, 100, 10) == pytest.approx(0.1)
    assert warmup_cosine(9, 100, 10) == pytest.approx(1.0)
    assert warmup_cosine(10, 100, 10) == pytest.approx(1.0)
    assert warmup_cosine(100, 100, 10) == pytest.approx(0.0)


def test_finetune_metrics_and_files(tiny_set, tmp_path):
    idx = np.arange(len(tiny_set))
    cfg = FinetuneConfig(max_steps=6, eval_every=3, batch_size=4, progress=False, out_dir=str(tmp_path))
    result = finetune(cfg, tiny_set, idx[:6], idx[6:12], idx[12:])
    m = result.metrics
    assert m["best_step"] in (3, 6) and 0 <= m["test_dice"] <= 1 and 0 <= m["test_dice_pooled"] <= 1
    assert {"test_dice_disc", "test_dice_blob", "test_dice_site_A", "test_dice_site_B"} <= set(m)
    assert json.loads((tmp_path / "metrics.json").read_text())["best_step"] == m["best_step"]
    assert np.load(tmp_path / "test_pred.npz")["pred"].shape == (6, 32, 32)


def test_finetune_learns_the_tiny_task(tiny_set):
    idx = np.arange(len(tiny_set))
    cfg = FinetuneConfig(max_steps=60, eval_every=20, batch_size=6, progress=False, augment="none")
    assert finetune(cfg, tiny_set, idx[:9], idx[9:12], idx[12:]).metrics["test_dice"] > 0.5


def test_finetune_from_pretrained_encoder(tiny_set, tmp_path):
    pre = pretrain(_cfg(tmp_path / "pre", max_epochs=1), tiny_set)
    idx = np.arange(len(tiny_set))
    cfg = FinetuneConfig(init="pretrained", pretrained=str(tmp_path / "pre" / "encoder.pt"), max_steps=2,
                         eval_every=1, batch_size=2, progress=False, lr=1e-12)
    result = finetune(cfg, tiny_set, idx[:2], idx[2:4])
    for k, v in pre.encoder_state.items():
        if v.is_floating_point() and "running" not in k:
            torch.testing.assert_close(result.model.encoder.state_dict()[k], v, atol=1e-6, rtol=0)
    with pytest.raises(ConfigError, match="pretrained"):
        finetune(FinetuneConfig(init="pretrained", progress=False), tiny_set, idx[:2], idx[2:4])


def test_patient_sampler_batches_hold_same_patient_pairs(tiny_set):
    cfg = _cfg(sampler="patient", images_per_patient=3, batch_size=6)
    loader = train.pretrain_loader(cfg, tiny_set)
    for batch in loader:
        patients = batch["patient"].reshape(-1, 3)
        assert (patients == patients[:, :1]).all()  # tiny_set: 3 time points per patient


def test_patient_sampler_resumes_exactly(tiny_set, tmp_path, monkeypatch):
    _assert_resume_is_exact(tiny_set, tmp_path, monkeypatch, sampler="patient", images_per_patient=2,
                            max_epochs=2, pairing="temporal")


def test_sampler_config_is_checked():
    with pytest.raises(ConfigError, match="sampler"):
        _cfg(sampler="patients")
    with pytest.raises(ConfigError, match="images_per_patient"):
        _cfg(sampler="patient", images_per_patient=5)  # batch_size 4


@pytest.mark.parametrize("arch", ["deeplabv3", "deeplabv3plus"])
def test_deeplab_pretrain_then_finetune_transfers_only_the_encoder(tiny_set, tmp_path, arch):
    pre = pretrain(_cfg(tmp_path / "pre", arch=arch, max_epochs=1), tiny_set)
    idx = np.arange(len(tiny_set))
    cfg = FinetuneConfig(arch=arch, init="pretrained", pretrained=str(tmp_path / "pre" / "encoder.pt"),
                         max_steps=2, eval_every=1, batch_size=2, progress=False, lr=1e-12)
    model = finetune(cfg, tiny_set, idx[:4], idx[4:6]).model
    fresh = train.build_segmenter(arch, "resnet18", 1, classes=3)
    torch.manual_seed(0)
    for k, v in pre.encoder_state.items():
        if v.is_floating_point() and "running" not in k:
            torch.testing.assert_close(model.encoder.state_dict()[k], v, atol=1e-6, rtol=0)
    decoder_keys = [k for k in model.state_dict() if not k.startswith("encoder.")]
    assert decoder_keys and not any(k in pre.encoder_state for k in decoder_keys)
    assert model.decoder.state_dict().keys() == fresh.decoder.state_dict().keys()


def test_paper_selection_reports_the_best_test_step(tiny_set):
    idx = np.arange(len(tiny_set))
    cfg = FinetuneConfig(max_steps=9, eval_every=3, batch_size=4, progress=False, paper_selection=True)
    result = finetune(cfg, tiny_set, idx[:6], idx[6:12], idx[12:])
    m, scored = result.metrics, result.history.dropna(subset=["test_dice_pooled"])
    assert len(scored) == 3
    assert m["paper_test_dice_pooled"] == pytest.approx(scored["test_dice_pooled"].max())
    assert m["paper_test_dice_pooled"] >= m["test_dice_pooled"] - 1e-9  # the optimistic choice
    plain = finetune(FinetuneConfig(max_steps=3, batch_size=4, progress=False), tiny_set, idx[:6], idx[6:12], idx[12:])
    assert "paper_test_dice_pooled" not in plain.metrics


def test_finetune_epochs_scale_with_the_labelled_images(tiny_set):
    cfg = FinetuneConfig(max_epochs=2, batch_size=4, eval_every=100, progress=False)
    assert cfg.steps_for(9) == 6 and FinetuneConfig(max_steps=7).steps_for(9) == 7
    idx = np.arange(len(tiny_set))
    result = finetune(cfg, tiny_set, idx[:9], idx[9:12])
    assert len(result.history) == 6 and result.metrics["best_step"] == 6


def test_evaluate_reports_per_volume_dice_for_volume_slices(tiny_set):
    from medcl_lite.metrics import dice_per_volume

    model = train.build_segmenter("unet", "resnet18", 1, classes=3)
    idx = np.arange(len(tiny_set))
    assert "dice_volume" not in train.evaluate(model, tiny_set, idx)[0]  # 2-D images
    meta = tiny_set.meta.copy()
    meta["volume_id"] = meta["patient_id"]  # pretend each patient's images are one volume's slices
    volumes = type(tiny_set)(tiny_set.images, tiny_set.masks, meta, tiny_set.classes, "vol")
    metrics, pred = train.evaluate(model, volumes, idx)
    expected = dice_per_volume(pred, volumes.masks, meta["volume_id"], 3)["mean"].mean()
    assert metrics["dice_volume"] == pytest.approx(expected)


@pytest.mark.parametrize("framework, strategy", [("simclr", "positional"), ("moco", "positional"),
                                                 ("simclr", "partition"), ("moco", "partition")])
def test_pcl_and_gcl_pretraining_on_volume_slices(tmp_path, framework, strategy):
    """SimCLR-PCL, MoCo-PCL and the GCL partition baseline run; the MoCo queue keeps slice depths."""
    from medcl_lite.data.phantoms import make_cardiac_volumes

    volumes = make_cardiac_volumes(n_patients=2, size=32, slices=(6, 6), seed=0)
    cfg = _cfg(tmp_path, framework=framework, pairing=strategy, threshold=0.35, queue_size=8, max_epochs=1)
    result = pretrain(cfg, volumes)
    assert np.isfinite(result.history.loss).all() and len(result.history) == len(volumes) // 4
    if framework == "moco":
        depths = torch.load(tmp_path / "checkpoint.pt", weights_only=True)["queue"]["meta_depth"]
        stored = depths[torch.isfinite(depths)]
        grid = torch.tensor([(i + 1) / 6 for i in range(6)])  # (i + 1) / N, PCL eq. 1
        assert len(stored) == 8 and ((stored[:, None] - grid).abs().min(dim=1).values < 1e-6).all()


def test_pretrain_with_pcl_elastic_views(tmp_path):
    from medcl_lite.data.phantoms import make_cardiac_volumes

    volumes = make_cardiac_volumes(n_patients=2, size=32, slices=(6, 6), seed=0)
    result = pretrain(_cfg(pairing="positional", threshold=0.35, augment="pcl_elastic", max_epochs=1), volumes)
    assert np.isfinite(result.history.loss).all() and len(result.history) == 3


# --------------------------------------------------------------------------------------------- LRC
LRC = {"region_weight": 1.0, "regions_per_image": 4, "region_min_pixels": 4, "region_dim": 8,
       "sp_scale": 20.0, "sp_min_size": 10}


@pytest.mark.parametrize("framework", ["simclr", "moco", "supervised"])
def test_region_loss_trains_the_decoder_and_is_transferred(tiny_set, tmp_path, framework):
    cfg = _cfg(tmp_path / "pre", framework=framework, queue_size=8, **LRC)
    torch.manual_seed(0)
    before = train.build_contrastive(cfg, classes=3).decoder.state_dict()
    result = pretrain(cfg, tiny_set)
    h = result.history
    assert {"global_loss", "region_loss", "regions"} <= set(h.columns)
    assert np.isfinite(h.region_loss).all() and (h.regions >= 2).all()
    np.testing.assert_allclose(h.loss, h.global_loss + h.region_loss, rtol=1e-5)
    after = result.transfer_state["decoder"]
    assert any(not torch.equal(before[k], after[k]) for k in before if before[k].is_floating_point())
    assert list((tmp_path / "pre" / "superpixels").glob("felzenszwalb-*.npz"))  # cached next to the run
    saved = train.load_pretrained_encoder(tmp_path / "pre" / "encoder.pt")
    assert set(saved) == {"encoder", "decoder"}
    idx = np.arange(len(tiny_set))
    ft = finetune(FinetuneConfig(init="pretrained", max_steps=1, eval_every=1, batch_size=2, progress=False,
                                 lr=1e-12), tiny_set, idx[:2], idx[2:4], encoder_state=result.transfer_state)
    for k, v in after.items():
        if v.is_floating_point() and "running" not in k:
            torch.testing.assert_close(ft.model.decoder.state_dict()[k], v, atol=1e-6, rtol=0)


def test_supervised_pretraining_without_region_loss_uses_the_masks(tiny_set):
    cfg = _cfg(framework="supervised", max_epochs=1)
    result = pretrain(cfg, tiny_set)
    assert result.trains_decoder and "region_loss" not in result.history
    assert set(result.transfer_state) == {"encoder", "decoder"}
    unlabelled = type(tiny_set)(tiny_set.images, None, tiny_set.meta, ("background",), "unlabelled")
    with pytest.raises(ConfigError, match="needs masks"):
        pretrain(cfg, unlabelled)
    with pytest.raises(ConfigError, match="supervised"):
        _cfg(framework="supervised", pairing="temporal")


def test_supervised_pretraining_loss_choice(tiny_set):
    ce = pretrain(_cfg(framework="supervised", supervised_loss="ce", max_epochs=1), tiny_set).history.loss
    both = pretrain(_cfg(framework="supervised", supervised_loss="ce+dice", max_epochs=1), tiny_set).history.loss
    dice_term = both.iloc[0] - ce.iloc[0]  # same init and first batch: the CE parts are equal
    assert 0.05 < dice_term <= 1.0
    with pytest.raises(ConfigError, match="supervised_loss"):
        _cfg(framework="supervised", supervised_loss="dice")


def test_lrc_resume_continues_exactly(tiny_set, tmp_path, monkeypatch):
    _assert_resume_is_exact(tiny_set, tmp_path, monkeypatch, framework="moco", queue_size=8, max_epochs=2, **LRC)


# ------------------------------------------------------------------------------------------- IDEAL
DENSE = {"dense_weight": 1.0, "dense_per_image": 8, "dense_dim": 8}


@pytest.mark.parametrize("framework", ["simclr", "moco"])
def test_dense_loss_at_the_decoder_trains_and_transfers_it(tiny_set, tmp_path, framework):
    cfg = _cfg(tmp_path, framework=framework, queue_size=8, max_epochs=1, **DENSE)
    torch.manual_seed(0)
    before = train.build_contrastive(cfg).decoder.state_dict()
    result = pretrain(cfg, tiny_set)
    h = result.history
    assert np.isfinite(h.dense_loss).all() and (h.dense_pairs > 0).all()
    np.testing.assert_allclose(h.loss, h.global_loss + h.dense_loss, rtol=1e-5)
    assert result.trains_decoder and set(result.transfer_state) == {"encoder", "decoder"}
    after = result.transfer_state["decoder"]
    assert any(not torch.equal(before[k], after[k]) for k in before if before[k].is_floating_point())


def test_dense_loss_at_the_encoder_transfers_the_encoder_only(tiny_set):
    result = pretrain(_cfg(framework="moco", queue_size=8, max_epochs=1, dense_level="encoder", **DENSE), tiny_set)
    assert np.isfinite(result.history.dense_loss).all()
    assert not result.trains_decoder and "decoder" not in result.transfer_state


def test_dense_queue_resume_continues_exactly(tiny_set, tmp_path, monkeypatch):
    _assert_resume_is_exact(tiny_set, tmp_path, monkeypatch, framework="moco", queue_size=8, dense_queue_size=16,
                            **DENSE)
    state = torch.load(tmp_path / "full" / "checkpoint.pt", weights_only=True)
    assert state["dense_queue"]["keys"].shape == (16, 8) and int(state["dense_queue"]["filled"]) == 16


def test_dense_config_is_checked():
    with pytest.raises(ConfigError, match="dense_level"):
        _cfg(dense_weight=1.0, dense_level="bottleneck")
    with pytest.raises(ConfigError, match="dense_queue_size"):
        _cfg(framework="simclr", dense_weight=1.0, dense_queue_size=8)


def test_global_pretraining_transfers_the_encoder_only(tiny_set):
    result = pretrain(_cfg(max_epochs=1), tiny_set)
    assert not result.trains_decoder and result.transfer_state.keys() == result.encoder_state.keys()


def test_finetune_reports_hd95_per_volume_in_mm():
    from medcl_lite.data.phantoms import make_cardiac_volumes

    data = make_cardiac_volumes(n_patients=3, sites=("A",), size=32, slices=(4, 4), seed=0)
    rows = np.arange(len(data))
    ft = finetune(FinetuneConfig(max_steps=2, eval_every=1, batch_size=2, progress=False), data, rows[:4], rows[4:8],
                  rows[8:])
    m = ft.metrics
    assert {"test_hd95_volume", "test_hd95_undefined", "test_hd95_lv", "test_hd95_rv"} <= set(m)
    assert m["test_hd95_undefined"] >= 0 and (np.isnan(m["test_hd95_volume"]) or m["test_hd95_volume"] >= 0)
    from medcl_lite.metrics import hd95_per_volume, summarize_hd95

    meta = data.meta.iloc[rows[8:]]
    table = hd95_per_volume(ft.test_pred, data.masks[rows[8:]], meta.volume_id, meta.slice_index, 4, spacing=meta)
    np.testing.assert_equal(m["test_hd95_volume"], summarize_hd95(table)["mean"])
    assert "hd95_volume" not in train.evaluate(ft.model, data, rows[8:])[0]  # only on request


def test_resume_accepts_a_checkpoint_from_before_a_new_config_field():
    cfg = PretrainConfig(out_dir="run", resume=True)
    saved = to_dict(cfg)
    del saved["channels_last"]  # a field added later, at its default now
    train._check_same_run(saved, cfg)
    with pytest.raises(ConfigError, match=r"other values for \['channels_last'\]"):
        train._check_same_run(saved, PretrainConfig(out_dir="run", resume=True, channels_last=True))


def _plain_moco_loss(q, keys, positives, candidates, tau):
    """MoCo's InfoNCE by a loop: per query, mean over its positives of -log softmax over its candidates."""
    q, keys = torch.nn.functional.normalize(q, dim=1), torch.nn.functional.normalize(keys, dim=1)
    total = 0.0
    for i in range(len(q)):
        logits = {j: float(q[i] @ keys[j]) / tau for j in candidates[i]}
        log_z = float(torch.logsumexp(torch.tensor(list(logits.values())), dim=0))
        total += sum(log_z - logits[j] for j in positives[i]) / len(positives[i])
    return total / len(q)


@pytest.mark.parametrize("strategy", ["instance", "temporal"])
def test_moco_leaves_stale_own_keys_out_of_the_denominator(strategy):
    """A queue longer than the pool holds older keys of the query's own image: never a negative.
    Instance pairing drops them from the denominator; temporal pairing counts them as positives
    (same patient)."""
    g = torch.Generator().manual_seed(0)
    q, k, stale = torch.randn(2, 4, generator=g), torch.randn(2, 4, generator=g), torch.randn(3, 4, generator=g)
    queue = train.MoCoQueue(size=3, dim=4)
    queue.enqueue(stale, patient=torch.tensor([10, 12, 11]), depth=torch.full((3,), float("nan")),
                  sample=torch.tensor([0, 5, 1]))  # slot 0: query 0's image, slot 2: query 1's
    meta = {"patient": torch.tensor([10, 11]), "depth": torch.full((2,), float("nan")), "sample": torch.tensor([0, 1])}
    cfg = PretrainConfig(framework="moco", pairing=strategy, temperature=0.2, queue_size=3, proj_dim=4)
    loss = train.moco_objective(q, k, queue, meta, cfg)
    keys = torch.cat([k, stale])  # columns: batch keys 0, 1, then queue slots 2, 3, 4
    if strategy == "instance":
        positives, candidates = [[0], [1]], [[0, 1, 3, 4], [0, 1, 2, 3]]  # own stale key left out
    else:
        positives, candidates = [[0, 2], [1, 4]], [[0, 1, 2, 3, 4]] * 2
    assert loss.item() == pytest.approx(_plain_moco_loss(q, keys, positives, candidates, 0.2), rel=1e-5)
    assert queue.meta["sample"].tolist() == [0, 1, 1]  # this batch's rows enqueued (slots 0, 1)


def test_batch_meta_needs_the_sample_rows():
    with pytest.raises(KeyError, match="index"):
        train.batch_meta({"patient": torch.zeros(2), "depth": torch.zeros(2)}, "cpu")
