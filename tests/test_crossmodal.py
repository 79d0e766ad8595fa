"""LRCLR image-text contrast: regions, selection, cross-attention, losses, zero-shot, heat maps."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from medcl_lite.crossmodal import (
    CrossModalAttention,
    LRCLRModel,
    RegionSelector,
    finding_auc,
    identical_rows,
    image_text_loss,
    mean_by_owner,
    pack_sentences,
    pointing_game,
    region_features,
    region_grid,
    region_sentence_loss,
    region_sentence_mask,
    sentence_heatmap,
    zero_shot_scores,
)
from medcl_lite.losses import info_nce
from medcl_lite.models import build_segmenter

VOCAB, TOKENS = 20, 5


class TinyText(nn.Module):
    """Stand-in for medcl_lite.text: embedding + masked mean, ``(ids, mask) -> (tokens, pooled)``."""

    def __init__(self, dim: int = 16) -> None:
        super().__init__()
        self.dim = dim
        self.embed = nn.Embedding(VOCAB, dim)

    def forward(self, ids, mask):
        tokens = self.embed(ids)
        m = mask.float()[..., None]
        return tokens, (tokens * m).sum(1) / m.sum(1).clamp_min(1)


class TinyConv(nn.Module):
    """Two stride-2 convolutions: 32x32 -> 8x8 last map (64 regions), smp-like list output."""

    out_channels = (1, 8, 16)

    def __init__(self) -> None:
        super().__init__()
        self.c1 = nn.Conv2d(1, 8, 3, stride=2, padding=1)
        self.c2 = nn.Conv2d(8, 16, 3, stride=2, padding=1)

    def forward(self, x):
        f1 = torch.relu(self.c1(x))
        return [x, f1, self.c2(f1)]


def toy_batch(b=4, seed=0):
    """Images, 1-3 sentences per image (flat, with owner) and a report = all its sentences."""
    g = torch.Generator().manual_seed(seed)
    images = torch.randn(b, 1, 32, 32, generator=g)
    counts = [1 + i % 3 for i in range(b)]
    owner = torch.repeat_interleave(torch.arange(b), torch.tensor(counts))
    s_ids = torch.randint(1, VOCAB, (owner.numel(), TOKENS), generator=g)
    s_mask = torch.ones_like(s_ids, dtype=torch.bool)
    s_mask[:, -1] = False
    r_ids = torch.randint(1, VOCAB, (b, TOKENS), generator=g)
    r_mask = torch.ones_like(r_ids, dtype=torch.bool)
    return images, s_ids, s_mask, owner, r_ids, r_mask


def tiny_model(use_regions=True, k=4, report_from="sentences"):
    torch.manual_seed(0)
    return LRCLRModel(TinyConv(), TinyText(16), dim=16, k=k, use_regions=use_regions, heads=2,
                      report_from=report_from)  # fmt: skip


# ----------------------------------------------------------------------------- regions
def test_region_features_and_grid_order():
    fmap = torch.randn(2, 3, 4, 5)
    regions = region_features(fmap)
    assert regions.shape == (2, 20, 3)
    assert torch.equal(regions[1, 2 * 5 + 3], fmap[1, :, 2, 3])  # region n = cell (n // w, n % w)
    grid = region_grid(4, 5)
    assert grid.shape == (20, 2)
    assert torch.allclose(grid[2 * 5 + 3], torch.tensor([2.5 / 4, 3.5 / 5]))
    with pytest.raises(ValueError, match="feature_map"):
        region_features(torch.randn(2, 3, 4))
    with pytest.raises(ValueError, match="h=0"):
        region_grid(0, 3)


def test_selector_topk_gate_and_errors():
    torch.manual_seed(0)
    sel = RegionSelector(6, k=3)
    regions = torch.randn(2, 10, 6)
    selected, index, scores = sel(regions)
    assert selected.shape == (2, 3, 6) and index.shape == (2, 3) and scores.shape == (2, 10)
    for b in range(2):
        assert set(index[b].tolist()) == set(scores[b].argsort(descending=True)[:3].tolist())
        for j in range(3):
            n = int(index[b, j])
            expected = regions[b, n] * torch.sigmoid(scores[b, n])
            assert torch.allclose(selected[b, j], expected)
    selected.pow(2).sum().backward()
    assert sel.scorer.weight.grad is not None and sel.scorer.weight.grad.abs().sum() > 0
    with pytest.raises(ValueError, match="k=11"):
        RegionSelector(6, k=11)(regions)
    with pytest.raises(ValueError, match="k=0"):
        RegionSelector(6, k=0)


# ----------------------------------------------------------------------------- attention
def test_pack_sentences_roundtrip():
    sentences = torch.randn(5, 3)
    owner = torch.tensor([1, 0, 1, 2, 1])
    padded, valid, slot = pack_sentences(sentences, owner, 3)
    assert padded.shape == (3, 3, 3)
    assert slot.tolist() == [0, 0, 1, 0, 2]
    assert valid.sum(1).tolist() == [1, 3, 1]
    assert torch.equal(padded[owner, slot], sentences)
    assert torch.all(padded[~valid] == 0)
    with pytest.raises(ValueError, match="owner"):
        pack_sentences(sentences, torch.tensor([0, 0, 0, 0, 3]), 3)


def test_cross_attention_rows_sum_to_one_and_ignore_padding():
    torch.manual_seed(0)
    block = CrossModalAttention(8, heads=2).eval()
    regions, sentences = torch.randn(2, 3, 8), torch.randn(2, 4, 8)
    valid = torch.tensor([[True, True, False, False], [True, True, True, True]])
    updated, attention = block(regions, sentences, valid)
    assert updated.shape == (2, 3, 8) and attention.shape == (2, 3, 4)
    assert torch.allclose(attention.sum(-1), torch.ones(2, 3), atol=1e-6)
    assert torch.all(attention[0, :, 2:] == 0)
    changed = sentences.clone()
    changed[0, 2:] = 100.0  # padded sentences must not matter
    updated2, attention2 = block(regions, changed, valid)
    assert torch.allclose(updated2[0], updated[0], atol=1e-6) and torch.allclose(
        attention2, attention, atol=1e-6
    )
    with pytest.raises(ValueError, match="no sentence"):
        block(regions, sentences, torch.tensor([[False] * 4, [True] * 4]))


# ----------------------------------------------------------------------------- losses
def test_image_text_loss_matches_cross_entropy_reference():
    torch.manual_seed(0)
    image, text, tau = torch.randn(5, 8), torch.randn(5, 8), 0.07
    logits = F.normalize(image, dim=1) @ F.normalize(text, dim=1).T / tau
    target = torch.arange(5)
    expected = (F.cross_entropy(logits, target) + F.cross_entropy(logits.T, target)) / 2
    assert torch.allclose(image_text_loss(image, text, tau), expected, atol=1e-5)


def test_image_text_loss_closed_form_and_pos_mask():
    const = torch.ones(6, 4)
    assert math.isclose(float(image_text_loss(const, const)), math.log(6), rel_tol=1e-6)
    torch.manual_seed(1)
    image, text = torch.randn(4, 8), torch.randn(4, 8)
    same = torch.zeros(4, 4, dtype=torch.bool)
    same[0, 1] = same[1, 0] = True
    pos = same | torch.eye(4, dtype=torch.bool)
    expected = (info_nce(image, text, pos, 0.1) + info_nce(text, image, pos.T, 0.1)) / 2
    assert torch.allclose(image_text_loss(image, text, 0.1, same), expected)
    assert not torch.allclose(image_text_loss(image, text, 0.1), expected)
    with pytest.raises(ValueError, match="image and text"):
        image_text_loss(image, text[:3])


def loop_region_sentence(regions, sentences, owner, attention, tau, same_text=None):
    """Plain loop reference: per sentence, -mean over positives of log softmax over all regions."""
    b, k, _ = regions.shape
    flat = F.normalize(regions.reshape(b * k, -1).double(), dim=1)
    matched = []
    for s in range(len(owner)):
        own = regions[owner[s]]
        if attention is None:
            sims = [F.cosine_similarity(own[j], sentences[s], dim=0) for j in range(k)]
            matched.append(int(owner[s]) * k + int(torch.stack(sims).argmax()))
        else:
            matched.append(int(owner[s]) * k + int(attention[owner[s], :, s].argmax()))
    total = 0.0
    for s in range(len(owner)):
        q = F.normalize(sentences[s].double(), dim=0)
        logits = flat @ q / tau
        log_p = logits - torch.logsumexp(logits, 0)
        pos = {
            matched[t]
            for t in range(len(owner))
            if t == s or (same_text is not None and same_text[s, t])
        }
        total += -sum(float(log_p[p]) for p in pos) / len(pos)
    return total / len(owner)


@pytest.mark.parametrize("use_attention", [True, False])
def test_region_sentence_loss_matches_loop(use_attention):
    torch.manual_seed(2)
    b, k, d = 3, 4, 6
    regions, sentences = torch.randn(b, k, d), torch.randn(5, d)
    owner = torch.tensor([0, 0, 1, 2, 2])
    attention = torch.rand(b, k, 5) if use_attention else None
    got = region_sentence_loss(regions, sentences, owner, attention, 0.1)
    assert math.isclose(
        float(got), loop_region_sentence(regions, sentences, owner, attention, 0.1), rel_tol=1e-5
    )
    same = torch.zeros(5, 5, dtype=torch.bool)
    same[1, 3] = same[3, 1] = True
    got = region_sentence_loss(regions, sentences, owner, attention, 0.1, same_text=same)
    ref = loop_region_sentence(regions, sentences, owner, attention, 0.1, same)
    assert math.isclose(float(got), ref, rel_tol=1e-5)


def test_region_sentence_loss_positive_follows_attention():
    regions = torch.eye(2)[None].repeat(2, 1, 1)  # [2 images, 2 regions, D=2]
    sentence = torch.tensor([[1.0, 0.0]])  # equals region 0
    owner = torch.tensor([0])
    attend_0 = torch.tensor([[[0.9], [0.1]], [[0.0], [0.0]]])
    attend_1 = torch.tensor([[[0.1], [0.9]], [[0.0], [0.0]]])
    low = region_sentence_loss(regions, sentence, owner, attend_0, 1.0)
    high = region_sentence_loss(regions, sentence, owner, attend_1, 1.0)
    denominator = math.log(2 * math.e + 2)
    assert math.isclose(float(low), denominator - 1, rel_tol=1e-6)
    assert math.isclose(float(high), denominator, rel_tol=1e-6)


def test_identical_rows_ignores_padding():
    ids = torch.tensor([[1, 2, 3], [1, 2, 9], [1, 2, 4]])
    mask = torch.tensor([[1, 1, 0], [1, 1, 0], [1, 1, 1]]).bool()
    same = identical_rows(ids, mask)
    assert same.tolist() == [[True, True, False], [True, True, False], [False, False, True]]


# ----------------------------------------------------------------------------- model
def test_model_forward_shapes_and_attention():
    model = tiny_model(k=4)
    batch = toy_batch()
    out = model(*batch)
    owner = batch[3]
    s = owner.numel()
    assert out["image"].shape == (4, 16) and out["report"].shape == (4, 16)
    assert out["regions"].shape == (4, 4, 16) and out["attended"].shape == (4, 4, 16)
    assert out["index"].shape == (4, 4) and out["scores"].shape == (4, 64) and out["grid"] == (8, 8)
    assert out["attention"].shape == (4, 4, s) and out["sentences"].shape == (s, 16)
    for b in range(4):  # each region's attention sums to 1 over its own image's sentences only
        assert torch.allclose(out["attention"][b][:, owner == b].sum(1), torch.ones(4), atol=1e-5)
        assert torch.all(out["attention"][b][:, owner != b] == 0)


def test_loss_gradient_reaches_scorer_and_cross_attention():
    model = tiny_model()
    loss, parts = model.loss(model(*toy_batch()), region_weight=1.0)
    loss.backward()
    assert set(parts) == {"global", "region", "total"}
    assert math.isclose(parts["total"], parts["global"] + parts["region"], rel_tol=1e-5)
    for param in (
        model.selector.scorer.weight,
        model.cross.attn.in_proj_weight,
        model.image_encoder.c1.weight,
    ):
        assert param.grad is not None and param.grad.abs().sum() > 0


def test_mean_by_owner_matches_loop_and_needs_a_sentence_per_image():
    sentences = torch.randn(6, 5)
    owner = torch.tensor([2, 0, 2, 1, 2, 0])
    expected = torch.stack([sentences[owner == b].mean(0) for b in range(3)])
    assert torch.allclose(mean_by_owner(sentences, owner, 3), expected, atol=1e-6)
    with pytest.raises(ValueError, match=r"images \[3\] have no sentence"):
        mean_by_owner(sentences, owner, 4)


@pytest.mark.parametrize("use_regions", [True, False])
def test_report_is_the_mean_of_its_sentences(use_regions):
    model = tiny_model(use_regions=use_regions)
    images, s_ids, s_mask, owner, r_ids, r_mask = toy_batch()
    out = model(images, s_ids, s_mask, owner, r_ids, r_mask)
    sentences = model.embed_text(s_ids, s_mask)
    for b in range(4):  # the report's own tokens play no part
        assert torch.allclose(out["report"][b], sentences[owner == b].mean(0), atol=1e-6)
    tokens = tiny_model(use_regions=use_regions, report_from="tokens")
    assert torch.allclose(tokens(images, s_ids, s_mask, owner, r_ids, r_mask)["report"],
                          tokens.embed_text(r_ids, r_mask), atol=1e-6)  # fmt: skip
    with pytest.raises(ValueError, match="report_from"):
        tiny_model(report_from="words")


def test_clip_baseline_with_smp_encoder():
    torch.manual_seed(0)
    encoder = build_segmenter("unet", "resnet18", classes=2).encoder
    model = LRCLRModel(encoder, TinyText(16), dim=16, use_regions=False, report_from="tokens")
    images, *_, r_ids, r_mask = toy_batch(b=2)
    out = model(images, None, None, None, r_ids, r_mask)  # whole reports need no sentences
    assert out["image"].shape == (2, 16) and "attention" not in out
    loss, parts = model.loss(out)
    assert set(parts) == {"global", "total"}
    expected = image_text_loss(out["image"], out["report"], 0.07, out["same_report"])
    assert math.isclose(loss.item(), expected.item())


def test_model_errors_name_parameters():
    with pytest.raises(ValueError, match="text_dim"):
        LRCLRModel(TinyConv(), nn.Identity())
    for use_regions in (True, False):  # sentence-mean reports need sentences even for CLIP
        with pytest.raises(ValueError, match="sentence_ids"):
            tiny_model(use_regions)(toy_batch()[0], None, None, None, *toy_batch()[4:])
    model = tiny_model(k=65)
    with pytest.raises(ValueError, match="k=65"):
        model(*toy_batch())


def test_few_steps_lower_the_loss():
    model = tiny_model()
    batch = toy_batch()
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-2)
    losses = []
    for _ in range(10):
        loss, _ = model.loss(model(*batch))
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    assert losses[-1] < 0.5 * losses[0]


# ----------------------------------------------------------------------------- zero-shot
def test_zero_shot_scores_closed_form():
    model = tiny_model()
    model.train()
    images = toy_batch()[0]
    pos = (torch.tensor([[1, 2, 3], [4, 5, 6]]), torch.ones(2, 3, dtype=torch.bool))
    neg = (torch.tensor([[7, 8, 0]]), torch.tensor([[True, True, False]]))
    scores = zero_shot_scores(model, images, pos, neg)
    assert scores.shape == (4,) and model.training  # mode restored
    with torch.no_grad():
        image = F.normalize(model.embed_image(images)[0], dim=1)
        p = F.normalize(model.embed_text(*pos), dim=1).mean(0)
        n = model.embed_text(*neg)[0]
    expected = F.cosine_similarity(image, p[None]) - F.cosine_similarity(image, n[None])
    assert torch.allclose(scores, expected, atol=1e-5)


def test_finding_auc_hand_case_and_errors():
    assert finding_auc([0.1, 0.4, 0.35, 0.8], [0, 0, 1, 1]) == pytest.approx(0.75)
    assert finding_auc(torch.tensor([0.9, 0.1]), torch.tensor([1, 0])) == 1.0
    with pytest.raises(ValueError, match="both classes"):
        finding_auc([0.1, 0.2, 0.3], [1, 1, 1])
    with pytest.raises(ValueError, match="same length"):
        finding_auc([0.1, 0.2], [0, 1, 1])


def test_sentence_heatmap_mass_at_selected_cells():
    values, index = torch.tensor([0.7, 0.3]), torch.tensor([0, 5])  # cells (0, 0) and (1, 1) of 4x4
    heat = sentence_heatmap(values, index, (4, 4), (32, 32))
    assert heat.shape == (32, 32)
    assert torch.all(heat[:8, :8] == 0.7) and torch.all(heat[8:16, 8:16] == 0.3)
    assert math.isclose(float(heat.sum()), 64 * 1.0, rel_tol=1e-6)  # only those two 8x8 blocks
    with pytest.raises(ValueError, match="index"):
        sentence_heatmap(values, torch.tensor([0, 16]), (4, 4), (32, 32))


def test_sentence_heatmap_from_model_output():
    model = tiny_model()
    out = model(*toy_batch())
    heat = sentence_heatmap(out["attention"][1, :, 1], out["index"][1], out["grid"], (32, 32))
    assert heat.shape == (32, 32)
    assert math.isclose(
        float(heat.sum()), out["attention"][1, :, 1].sum().item() * 16, rel_tol=1e-5
    )


def test_region_level_takes_a_finer_stage():
    from medcl_lite.crossmodal import LRCLRModel
    from medcl_lite.models import build_segmenter

    class Text(torch.nn.Module):
        dim = 8

        def __init__(self):
            super().__init__()
            self.emb = torch.nn.Embedding(20, 8)

        def forward(self, ids, mask):
            tokens = self.emb(ids) * mask[..., None]
            return tokens, tokens.sum(1) / mask.sum(1, keepdim=True)

    encoder = build_segmenter("unet", "resnet18", 1, classes=2).encoder
    model = LRCLRModel(encoder, Text(), dim=8, k=4, region_level=-2)
    ids, mask = torch.randint(1, 20, (3, 5)), torch.ones(3, 5, dtype=torch.bool)
    out = model(torch.rand(2, 1, 64, 64), ids, mask, torch.tensor([0, 0, 1]), ids[:2], mask[:2])
    assert out["grid"] == (4, 4) and out["scores"].shape == (2, 16)  # stride 16 at 64², not 2x2
    with pytest.raises(ValueError, match="region_level"):
        LRCLRModel(encoder, Text(), dim=8, k=4, region_level=-7)


def test_pointing_game_counts_a_box_smaller_than_a_cell():
    """A 4x4 box inside cell (1, 1) of a 4x4 grid over 32x32 pixels (cells of 8x8): attention on
    that cell is a hit although the cell's top-left pixel lies outside the box."""
    box = (10, 10, 14, 14)
    index = torch.tensor([0, 5, 15])  # kept cells (0, 0), (1, 1), (3, 3)
    hit = pointing_game(torch.tensor([0.2, 0.7, 0.1]), index, (4, 4), (32, 32), box)
    assert hit == {"hit": True, "chance": pytest.approx(1 / 3), "kept": True}
    miss = pointing_game(torch.tensor([0.6, 0.3, 0.1]), index, (4, 4), (32, 32), box)
    assert miss["hit"] is False and miss["kept"] is True


def test_pointing_game_box_across_cells_and_selector_misses():
    box = (6, 6, 10, 10)  # pixels 6..9: cells (0, 0), (0, 1), (1, 0), (1, 1)
    both = pointing_game(torch.tensor([0.1, 0.9]), torch.tensor([15, 1]), (4, 4), (32, 32), box)
    assert both == {"hit": True, "chance": 0.5, "kept": True}
    dropped = pointing_game(torch.tensor([0.5, 0.5]), torch.tensor([14, 15]), (4, 4), (32, 32), box)
    assert dropped == {"hit": False, "chance": 0.0, "kept": False}  # the selector kept no cell of it
    edge = pointing_game(torch.tensor([1.0]), torch.tensor([1]), (4, 4), (32, 32), (0, 0, 8, 8))
    assert edge["hit"] is False  # box ends where cell (0, 1) begins: touching is not overlapping


def test_pointing_game_refuses_bad_boxes():
    with pytest.raises(ValueError, match="box"):
        pointing_game(torch.tensor([1.0]), torch.tensor([0]), (4, 4), (32, 32), (5, 5, 5, 9))
    with pytest.raises(ValueError, match="box"):
        pointing_game(torch.tensor([1.0]), torch.tensor([0]), (4, 4), (32, 32), (0, 0, 40, 8))


def test_region_sentence_mask_one_own_region_per_sentence_plus_identical_sentences():
    b, k = 2, 3
    regions, sentences = torch.randn(b, k, 4), torch.randn(3, 4)
    owner = torch.tensor([0, 1, 1])
    attention = torch.zeros(b, k, 3)
    attention[0, 2, 0] = attention[1, 0, 1] = attention[1, 1, 2] = 1.0  # sentence 0 -> region 2 of image 0 ...
    mask = region_sentence_mask(regions, sentences, owner, attention)
    assert mask.shape == (3, b * k) and mask.nonzero().tolist() == [[0, 2], [1, 3], [2, 4]]
    same = torch.tensor([[True, False, True], [False, True, False], [True, False, True]])
    both = region_sentence_mask(regions, sentences, owner, attention, same)  # sentences 0 and 2 identical
    assert both.nonzero().tolist() == [[0, 2], [0, 4], [1, 3], [2, 2], [2, 4]]
