"""Encoder export and import (medcl_lite.export): plain smp models load an exported encoder
strictly, whatever the architecture; metadata is recorded; wrong models and files are refused by
name; ``medcl export`` writes it from a run folder; an encoder of one's own enters fine-tuning."""

import dataclasses
import json
import shutil

import numpy as np
import pytest
import segmentation_models_pytorch as smp
import torch
from conftest import make_tiny_set

import medcl_lite
from medcl_lite.export import FORMAT, export_encoder, load_encoder_into, load_exported
from medcl_lite.models import ARCHITECTURES, build_segmenter
from medcl_lite.repro import main as medcl
from medcl_lite.train import FinetuneConfig, PretrainConfig, build_contrastive, finetune, pretrain

PLAIN = {"unet": smp.Unet, "deeplabv3": smp.DeepLabV3, "deeplabv3plus": smp.DeepLabV3Plus}


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """arch -> (run folder, PretrainResult): one SimCLR step on 4 images of 32x32 each."""
    data, out = make_tiny_set(), {}
    for arch in ARCHITECTURES:
        folder = tmp_path_factory.mktemp(f"run-{arch}")
        cfg = PretrainConfig(arch=arch, max_epochs=1, batch_size=4, proj_dim=16, progress=False,
                             device="cpu", out_dir=str(folder))  # fmt: skip
        out[arch] = folder, pretrain(cfg, data, index=np.arange(4))
    return out


def _assert_plain(value):
    """Only what ``weights_only`` and the brief allow: tensors, str, int, float, dict, list."""
    if isinstance(value, dict):
        assert type(value) is dict and all(isinstance(k, str) for k in value)
        for v in value.values():
            _assert_plain(v)
    elif isinstance(value, list):
        for v in value:
            _assert_plain(v)
    else:
        assert isinstance(value, (torch.Tensor, str, int, float)), type(value)


def _assert_same(state, expected):
    assert state.keys() == expected.keys()
    for k, v in expected.items():
        assert torch.equal(state[k], v), k


def test_plain_smp_models_of_every_architecture_load_the_export(runs, tmp_path):
    assert set(PLAIN) == set(ARCHITECTURES)
    for arch, (folder, result) in runs.items():
        out = export_encoder(folder, tmp_path / f"{arch}.pt")
        saved = torch.load(out, weights_only=True)  # what a user without medcl_lite runs
        _assert_plain(saved)
        assert saved["format"] == FORMAT and saved["format_version"] == 1
        for target, cls in PLAIN.items():  # DeepLab dilates its encoder: strides, not weights
            model = cls(encoder_name="resnet18", in_channels=1, encoder_weights=None, classes=3)
            model.encoder.load_state_dict(saved["encoder"], strict=True)
            _assert_same(model.encoder.state_dict(), result.encoder_state)
            assert model.eval()(torch.rand(1, 1, 32, 32)).shape == (1, 3, 32, 32), (arch, target)


def test_metadata_is_recorded(runs, tmp_path):
    folder, _ = runs["deeplabv3plus"]
    meta = load_exported(export_encoder(folder, tmp_path / "e.pt"))["meta"]
    assert {k: meta[k] for k in ("encoder_name", "in_channels", "depth", "arch", "method")} == {
        "encoder_name": "resnet18", "in_channels": 1, "depth": 5, "arch": "deeplabv3plus",
        "method": "simclr/instance",
    }  # fmt: skip
    assert meta["medcl_lite_version"] == medcl_lite.__version__
    assert meta["smp_version"] == smp.__version__
    config = json.loads(meta["pretrain_config"])
    assert config["arch"] == "deeplabv3plus" and config["batch_size"] == 4
    assert "out_dir" not in config  # no path of the machine that ran it


def test_a_stopped_run_exports_from_its_checkpoint(runs, tmp_path):
    folder, result = runs["unet"]
    stopped = tmp_path / "stopped"
    shutil.copytree(folder, stopped)
    (stopped / "encoder.pt").unlink()  # written at the end only; checkpoint.pt every epoch
    out = export_encoder(stopped, tmp_path / "e.pt")
    _assert_same(load_exported(out)["encoder"], result.encoder_state)
    again = export_encoder(out, tmp_path / "again.pt")  # an exported file exports as it is
    assert load_exported(again)["meta"] == load_exported(out)["meta"]


def test_in_memory_sources(runs, tmp_path):
    _, result = runs["unet"]
    meta = load_exported(export_encoder(result, tmp_path / "r.pt"))["meta"]
    assert meta["method"] == "simclr/instance" and meta["arch"] == "unet"
    model = build_segmenter("deeplabv3", "resnet18", in_channels=1, classes=2)
    saved = load_exported(export_encoder(model, tmp_path / "m.pt"))
    assert saved["meta"]["arch"] == "deeplabv3" and saved["meta"]["method"] == ""
    _assert_same(saved["encoder"], model.encoder.state_dict())
    net = build_contrastive(PretrainConfig(proj_dim=16))  # encoder + head: no name to read
    with pytest.raises(ValueError, match="encoder_name"):
        export_encoder(net, tmp_path / "n.pt")
    assert load_exported(export_encoder(net, tmp_path / "n.pt", encoder_name="resnet18"))
    with pytest.raises(ValueError, match="'resnet18'.*encoder name 'resnet34'"):
        export_encoder(model, tmp_path / "x.pt", encoder_name="resnet34")


def test_load_encoder_into_checks_name_and_in_channels(runs, tmp_path):
    folder, result = runs["unet"]
    path = export_encoder(folder, tmp_path / "enc.pt")
    model = smp.Unet("resnet18", encoder_weights=None, in_channels=1, classes=4)
    assert load_encoder_into(model, path)["encoder_name"] == "resnet18"
    _assert_same(model.encoder.state_dict(), result.encoder_state)
    with pytest.raises(ValueError, match=r"enc\.pt holds a 'resnet18'.*encoder name 'resnet34'"):
        load_encoder_into(smp.Unet("resnet34", encoder_weights=None, in_channels=1), path)
    with pytest.raises(ValueError, match=r"enc\.pt .*=1, but the model has in_channels 3"):
        load_encoder_into(smp.DeepLabV3("resnet18", encoder_weights=None, in_channels=3), path)
    bare = build_segmenter("unet", "resnet18", 1).encoder  # no name to check: keys and shapes are
    load_encoder_into(bare, path)
    _assert_same(bare.state_dict(), result.encoder_state)


def test_corrupt_and_foreign_files_are_refused_by_name(runs, tmp_path):
    folder, _ = runs["unet"]
    good = export_encoder(folder, tmp_path / "good.pt")
    broken = tmp_path / "broken.pt"
    broken.write_bytes(good.read_bytes()[:200])
    with pytest.raises(ValueError, match=r"broken\.pt is unreadable or corrupt"):
        load_exported(broken)
    with pytest.raises(ValueError, match=r"encoder\.pt is not an encoder exported by medcl_lite"):
        load_exported(folder / "encoder.pt")  # a run's own file: export it first
    torch.save(torch.nn.Linear(2, 2), tmp_path / "module.pt")  # pickled code: never run
    with pytest.raises(ValueError, match=r"module\.pt is unreadable .* pickled Python objects"):
        load_exported(tmp_path / "module.pt")
    torch.save(torch.zeros(3), tmp_path / "tensor.pt")
    with pytest.raises(ValueError, match=r"tensor\.pt holds a Tensor"):
        load_exported(tmp_path / "tensor.pt")
    torch.save({"format": FORMAT, "format_version": 1, "encoder": {}}, tmp_path / "damaged.pt")
    with pytest.raises(ValueError, match=r"damaged\.pt is a damaged exported encoder"):
        load_exported(tmp_path / "damaged.pt")
    torch.save({"weights": {"a": torch.zeros(1)}}, tmp_path / "foreign.pt")
    with pytest.raises(ValueError, match=r"foreign\.pt is neither a pretraining run's"):
        export_encoder(tmp_path / "foreign.pt", tmp_path / "x.pt")
    with pytest.raises(FileNotFoundError, match="missing.pt"):
        load_exported(tmp_path / "missing.pt")
    (tmp_path / "empty").mkdir()
    with pytest.raises(FileNotFoundError, match="not a pretraining run folder"):
        export_encoder(tmp_path / "empty", tmp_path / "x.pt")


def test_cli_export_round_trip(runs, tmp_path, capsys):
    folder, result = runs["deeplabv3"]
    out = tmp_path / "exported" / "encoder.pt"
    assert medcl(["export", str(folder), "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert f"wrote {out}" in printed
    assert "resnet18 encoder, in_channels=1, simclr/instance" in printed
    _assert_same(torch.load(out, weights_only=True)["encoder"], result.encoder_state)
    (tmp_path / "empty").mkdir()
    assert medcl(["export", str(tmp_path / "empty"), "--out", str(tmp_path / "x.pt")]) == 2
    assert "empty holds no encoder.pt or checkpoint.pt" in capsys.readouterr().err
    run_file = str(folder / "encoder.pt")
    assert medcl(["export", run_file, "--out", run_file]) == 2  # never over the run's own file
    assert "is the file exported from" in capsys.readouterr().err


def _frozen_finetune(path) -> FinetuneConfig:
    """One step from ``path`` with a frozen encoder (weights and BatchNorm statistics): the
    encoder that fine-tuning returns is the one it started from."""
    return FinetuneConfig(init="pretrained", pretrained=str(path), encoder_lr_scale=0, max_steps=1,
                          eval_every=1, batch_size=2, progress=False, device="cpu")  # fmt: skip


@pytest.mark.parametrize("kind", ["exported", "state_dict"])
def test_an_encoder_of_ones_own_enters_finetuning_unchanged(tmp_path, kind):
    torch.manual_seed(123)
    mine = smp.Unet("resnet18", encoder_weights=None, in_channels=1, classes=5)
    with torch.no_grad():
        mine.encoder.bn1.running_mean.fill_(0.5)  # buffers travel too
    path = tmp_path / "mine.pt"
    if kind == "exported":
        export_encoder(mine, path)
    else:
        torch.save(mine.encoder.state_dict(), path)
    data, idx = make_tiny_set(), np.arange(4)
    result = finetune(_frozen_finetune(path), data, idx[:2], idx[2:4])
    _assert_same(result.model.encoder.state_dict(), mine.encoder.state_dict())


def test_finetuning_checks_the_encoder_a_file_records(runs, tmp_path):
    folder, result = runs["unet"]
    path = export_encoder(folder, tmp_path / "enc.pt")
    data, idx = make_tiny_set(), np.arange(4)
    for source in (path, folder / "encoder.pt"):  # exported, and the run's own file
        cfg = _frozen_finetune(source)
        model = finetune(cfg, data, idx[:2], idx[2:4]).model
        _assert_same(model.encoder.state_dict(), result.encoder_state)
        wrong = dataclasses.replace(cfg, in_channels=3)
        with pytest.raises(ValueError, match=r"\.pt holds a 'resnet18'.*Config has in_channels 3"):
            finetune(wrong, data, idx[:2], idx[2:4])
