"""Image–report training (CLIP baseline and LRCLR) and zero-shot evaluation on tiny data."""

import numpy as np
import pytest
import torch
from conftest import single_image_meta

from medcl_lite.config import ConfigError
from medcl_lite.data.sliceset import SliceSet
from medcl_lite.image_text import (
    ImageTextConfig,
    ReportDataset,
    collate_reports,
    train_image_text,
    zero_shot_table,
)
from medcl_lite.text import Tokenizer

REPORTS = ["Patchy opacity in the right lower zone. Heart size is normal.",
           "The heart is enlarged. No pleural effusion.", "The lungs are clear. Heart size is normal.",
           "Left pleural effusion. Heart size is normal."]


@pytest.fixture
def reports_set():
    rng = np.random.default_rng(0)
    n = 12
    images = rng.random((n, 64, 64), dtype=np.float32)
    texts = [REPORTS[i % 4] for i in range(n)]
    for i, text in enumerate(texts):  # an image cue per finding, so there is something to learn
        images[i, :16, :16] += 0.5 * ("opacity" in text)
        images[i, 40:, 40:] += 0.5 * ("effusion" in text and "No" not in text)
    meta = single_image_meta(n, report=texts, opacity=["opacity" in t for t in texts],
                             effusion=[("effusion" in t and "No" not in t) for t in texts])  # fmt: skip
    return SliceSet(images, None, meta, ("background",), "reports")


def _cfg(tmp_path=None, **kw):
    base = dict(dim=16, regions=2, text_dim=16, text_layers=1, text_heads=2, max_len=24, epochs=2, batch_size=4,
                progress=False, augment="none")
    return ImageTextConfig(**{**base, **kw}, out_dir=str(tmp_path) if tmp_path else "")


def test_collate_groups_sentences_by_report(reports_set):
    tok = Tokenizer.fit(REPORTS)
    items = [ReportDataset(reports_set)[i] for i in range(3)]
    batch = collate_reports(items, tok, 24)
    assert batch["images"].shape == (3, 1, 64, 64) and batch["report_ids"].shape[0] == 3
    assert batch["owner"].tolist() == [0, 0, 1, 1, 2, 2]
    assert batch["sentence_ids"].shape[0] == 6 and tok.decode(batch["sentence_ids"][2]) == "the heart is enlarged."


@pytest.mark.parametrize("use_regions", [True, False])
def test_training_lowers_the_loss_and_writes_files(reports_set, tmp_path, use_regions):
    result = train_image_text(_cfg(tmp_path, use_regions=use_regions, epochs=6, lr=1e-3), reports_set)
    h = result.history
    assert len(h) == 6 * 3 and np.isfinite(h.loss).all()
    assert ("region" in h) == use_regions
    assert h.loss.iloc[-3:].mean() < h.loss.iloc[:3].mean()
    for name in ("config.json", "history.csv", "tokenizer.json", "model.pt"):
        assert (tmp_path / name).is_file(), name
    state = torch.load(tmp_path / "model.pt", weights_only=True)["model"]
    assert any("selector" in k for k in state) == use_regions


def test_zero_shot_table_scores_every_finding(reports_set):
    result = train_image_text(_cfg(epochs=1), reports_set)
    table, scores = zero_shot_table(result, reports_set, np.arange(12), ["opacity", "effusion"])
    assert list(table.finding) == ["opacity", "effusion"] and table.auc.between(0, 1).all()
    assert (table.positives == [3, 3]).all() and scores["opacity"].shape == (12,)
    with pytest.raises(ValueError, match="no label column 'nodule'"):
        zero_shot_table(result, reports_set, np.arange(12), ["nodule"])


@pytest.mark.parametrize("report_embedding", ["sentences", "tokens"])
def test_report_embedding_reaches_the_model(reports_set, report_embedding):
    result = train_image_text(_cfg(report_embedding=report_embedding, use_regions=False, epochs=1), reports_set)
    assert result.model.report_from == report_embedding and np.isfinite(result.history.loss).all()


def test_bad_input_is_named(reports_set):
    with pytest.raises(ConfigError, match="report_embedding"):
        _cfg(report_embedding="words")
    with pytest.raises(ConfigError, match="text_dim"):
        _cfg(text_dim=10, text_heads=4)
    with pytest.raises(ConfigError, match="batch_size"):
        train_image_text(_cfg(batch_size=16), reports_set)
    no_reports = SliceSet(reports_set.images, None, reports_set.meta.drop(columns="report"), ("background",), "x")
    with pytest.raises(ValueError, match="no 'report' column"):
        ReportDataset(no_reports)


def test_resume_loads_a_finished_run_instead_of_training(reports_set, tmp_path):
    first = train_image_text(_cfg(tmp_path, seed=1), reports_set)
    again = train_image_text(_cfg(tmp_path, seed=1, resume=True, progress=True), reports_set)
    assert again.loaded and not first.loaded
    assert again.history.equals(first.history)
    assert again.seconds == pytest.approx(float(first.history.seconds.iloc[-1]))  # its training time
    for name, value in first.model.state_dict().items():
        assert torch.equal(again.model.state_dict()[name], value), name
    assert again.tokenizer.vocab_size == first.tokenizer.vocab_size


@pytest.mark.parametrize("change", [{"lr": 1e-3}, {"index": np.arange(8)}])
def test_resume_trains_anew_when_the_run_differs(reports_set, tmp_path, change):
    train_image_text(_cfg(tmp_path, seed=1), reports_set)  # 12 images
    index = change.pop("index", None)
    result = train_image_text(_cfg(tmp_path, seed=1, resume=True, **change), reports_set, index)
    assert not result.loaded


def test_resume_needs_an_out_dir():
    with pytest.raises(ConfigError, match="resume"):
        ImageTextConfig(resume=True)
