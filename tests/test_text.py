"""Tests of medcl_lite.text: sentences, tokenizer, text encoder, zero-shot prompts."""

import json

import pytest
import torch

from medcl_lite.text import (
    PROMPT_TEMPLATES,
    SPECIAL_TOKENS,
    TextEncoder,
    Tokenizer,
    normalise,
    prompts,
    split_sentences,
    tokenize,
)

REPORTS = [
    "Opacity in the right upper zone. Heart size is normal. No pneumothorax.",
    "The lungs are clear. The heart is enlarged. No pneumothorax.",
    "4 mm nodule in the left lower zone. ECG leads overlie the chest.",
]


# --- sentences -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("report", "expected"),
    [
        ("The lungs are clear. No effusion.", ["The lungs are clear.", "No effusion."]),
        ("Nodule measuring 2.5 cm. Stable.", ["Nodule measuring 2.5 cm.", "Stable."]),
        ("Approx. 3 mm nodule. Stable.", ["Approx. 3 mm nodule.", "Stable."]),
        (
            "Small densities, e.g. scars, vs. nodules. Follow up.",
            ["Small densities, e.g. scars, vs. nodules.", "Follow up."],
        ),
        ("Is this new? Yes! Compare.", ["Is this new?", "Yes!", "Compare."]),
        (
            "  Clear lungs.   \n\n  Normal heart...  Done",
            ["Clear lungs.", "Normal heart...", "Done"],
        ),
        ("Value 0.5.Next", ["Value 0.5.Next"]),  # no space after the stop: not a boundary
        ("", []),
        (" . ", ["."]),
    ],
)
def test_split_sentences(report, expected):
    assert split_sentences(report) == expected


def test_split_sentences_rejects_non_str():
    with pytest.raises(TypeError, match="report"):
        split_sentences(["a."])


# --- tokenizer -----------------------------------------------------------------------------------


def test_tokenize_lowercase_punctuation_numbers():
    assert tokenize("Nodule, 2.5 cm (left)!") == ["nodule", ",", "2.5", "cm", "(", "left", ")", "!"]
    assert tokenize("T12 ill-defined") == ["t12", "ill", "-", "defined"]


def test_normalise_is_idempotent():
    for text in ["The  HEART is enlarged .", "Nodule (2.5 cm), e.g. old...", "a - b ( c )"]:
        once = normalise(text)
        assert normalise(once) == once
    assert normalise("The  heart is ENLARGED .") == "the heart is enlarged."


def test_fit_order_count_then_alphabet_and_deterministic():
    tok = Tokenizer.fit(["b a c b", "c b"])
    assert tok.itos == [*SPECIAL_TOKENS, "b", "c", "a"]
    assert tok.stoi["[PAD]"] == 0 and tok.pad_id == 0
    assert tok.vocab_size == 7
    assert Tokenizer.fit(list(reversed(REPORTS))).itos == Tokenizer.fit(REPORTS).itos


def test_fit_min_count_and_max_size():
    tok = Tokenizer.fit(["b a c b", "c b"], min_count=2)
    assert tok.itos[4:] == ["b", "c"]
    assert Tokenizer.fit(["b a c b", "c b"], max_size=1).itos[4:] == ["b"]
    with pytest.raises(ValueError, match="min_count"):
        Tokenizer.fit(["a"], min_count=0)
    with pytest.raises(ValueError, match="max_size"):
        Tokenizer.fit(["a"], max_size=-1)
    with pytest.raises(TypeError, match="texts"):
        Tokenizer.fit("a b")


def test_encode_decode_round_trip():
    tok = Tokenizer.fit(REPORTS)
    for text in REPORTS + ["HEART  size is normal . No pneumothorax ."]:
        ids = tok.encode(text)
        assert ids[0] == tok.cls_id and ids[-1] == tok.sep_id
        assert tok.decode(ids) == normalise(text)
    assert tok.decode(torch.tensor(tok.encode(REPORTS[0]))) == normalise(REPORTS[0])


def test_unknown_words():
    tok = Tokenizer.fit(["the heart"])
    ids = tok.encode("The spleen heart")
    assert ids == [tok.cls_id, tok.stoi["the"], tok.unk_id, tok.stoi["heart"], tok.sep_id]
    assert tok.decode(ids) == "the [UNK] heart"


def test_truncation_keeps_sep():
    tok = Tokenizer.fit(["a b c d e"])
    assert tok.encode("a b c d e", max_len=4) == [
        tok.cls_id,
        tok.stoi["a"],
        tok.stoi["b"],
        tok.sep_id,
    ]
    assert tok.encode("a", max_len=4) == [tok.cls_id, tok.stoi["a"], tok.sep_id]
    assert tok.encode("a b", max_len=2) == [tok.cls_id, tok.sep_id]
    with pytest.raises(ValueError, match="max_len"):
        tok.encode("a", max_len=1)


def test_encode_batch_padding_and_mask():
    tok = Tokenizer.fit(["a b c d e"])
    ids, mask = tok.encode_batch(["a b c", "d", "a b c d e"], max_len=5)
    assert ids.dtype == torch.long and mask.dtype == torch.bool
    assert ids.shape == mask.shape == (3, 5)
    assert mask.sum(1).tolist() == [5, 3, 5]
    assert (ids[~mask] == tok.pad_id).all()
    assert ids[1].tolist() == [tok.cls_id, tok.stoi["d"], tok.sep_id, 0, 0]
    assert ids[2, -1] == tok.sep_id
    assert tok.encode_batch(["a", "b"])[0].shape == (2, 3)  # pads to the longest, not max_len
    with pytest.raises(ValueError, match="texts"):
        tok.encode_batch([])


def test_decode_rejects_bad_ids():
    tok = Tokenizer.fit(["a"])
    with pytest.raises(ValueError, match="out of range"):
        tok.decode([99])


def test_constructor_rejects_duplicates_and_specials():
    with pytest.raises(ValueError, match="duplicate"):
        Tokenizer(["a", "a"])
    with pytest.raises(ValueError, match="special"):
        Tokenizer(["[PAD]"])


def test_save_load_round_trip(tmp_path):
    tok = Tokenizer.fit(REPORTS)
    path = tok.save(tmp_path / "sub" / "vocab.json")
    loaded = Tokenizer.load(path)
    assert loaded.itos == tok.itos
    assert loaded.encode(REPORTS[1]) == tok.encode(REPORTS[1])
    assert [p.name for p in path.parent.iterdir()] == ["vocab.json"]  # no temp file left behind


@pytest.mark.parametrize(
    ("content", "match"),
    [
        ('{"format": "medcl_lite.text.Tok', "not valid JSON"),
        ("[1, 2]", "is not a"),
        ('{"format": "something.else", "words": []}', "is not a"),
        (
            '{"format": "medcl_lite.text.Tokenizer", "version": 1, "specials": ["[PAD]"], "words": []}',
            "specials",
        ),
        (
            '{"format": "medcl_lite.text.Tokenizer", "version": 2, "specials": ["[PAD]", "[UNK]", "[CLS]", "[SEP]"], "words": []}',
            "version",
        ),
        (
            '{"format": "medcl_lite.text.Tokenizer", "version": 1, "specials": ["[PAD]", "[UNK]", "[CLS]", "[SEP]"], "words": "ab"}',
            "words",
        ),
        (
            '{"format": "medcl_lite.text.Tokenizer", "version": 1, "specials": ["[PAD]", "[UNK]", "[CLS]", "[SEP]"], "words": ["a", "a"]}',
            "duplicate",
        ),
    ],
)
def test_load_corrupt_file(tmp_path, content, match):
    path = tmp_path / "vocab.json"
    path.write_text(content)
    with pytest.raises(ValueError, match=match) as info:
        Tokenizer.load(path)
    assert str(path) in str(info.value)


def test_load_missing_file(tmp_path):
    with pytest.raises(FileNotFoundError, match="nope.json"):
        Tokenizer.load(tmp_path / "nope.json")


def test_saved_file_is_plain_json(tmp_path):
    tok = Tokenizer.fit(["b a"])
    payload = json.loads(tok.save(tmp_path / "v.json").read_text())
    assert payload["words"] == ["a", "b"] and payload["specials"] == list(SPECIAL_TOKENS)


# --- encoder -------------------------------------------------------------------------------------


def _small_encoder(vocab_size=20, **kw):
    torch.manual_seed(0)
    return TextEncoder(vocab_size, dim=16, layers=2, heads=2, max_len=12, **kw)


def test_encoder_shapes_and_zero_pads():
    tok = Tokenizer.fit(REPORTS)
    enc = _small_encoder(tok.vocab_size).eval()
    ids, mask = tok.encode_batch(REPORTS, max_len=12)
    tokens, pooled = enc(ids, mask)
    assert tokens.shape == (3, ids.shape[1], 16) and pooled.shape == (3, 16)
    assert (tokens[~mask] == 0).all()
    expected = tokens[1, mask[1]].mean(0)  # masked mean, by a direct reference
    torch.testing.assert_close(pooled[1], expected)


def test_encoder_padding_invariance():
    tok = Tokenizer.fit(["the heart is enlarged", "a b c d e f g h"])
    enc = _small_encoder(tok.vocab_size).eval()
    ids = torch.tensor([tok.encode("the heart is enlarged")])
    short = torch.cat([ids, torch.zeros(1, 1, dtype=torch.long)], 1)
    long = torch.cat([ids, torch.zeros(1, 5, dtype=torch.long)], 1)
    n = ids.shape[1]
    with torch.no_grad():
        tok_a, pool_a = enc(short, short != 0)
        tok_b, pool_b = enc(long, long != 0)
        tok_c, pool_c = enc(ids, torch.ones_like(ids, dtype=torch.bool))
    torch.testing.assert_close(tok_a[:, :n], tok_b[:, :n], atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(tok_a[:, :n], tok_c, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(pool_a, pool_b, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(pool_a, pool_c, atol=1e-5, rtol=1e-5)


def test_encoder_padding_changes_output_without_mask():
    """The invariance above comes from the mask: attending to pads does change the output."""
    enc = _small_encoder().eval()
    ids = torch.tensor([[2, 5, 6, 3, 0, 0]])
    with torch.no_grad():
        _, masked = enc(ids, ids != 0)
        _, unmasked = enc(ids, torch.ones_like(ids, dtype=torch.bool))
    assert not torch.allclose(masked, unmasked, atol=1e-4)


def test_encoder_gradient_reaches_embeddings():
    enc = _small_encoder()
    ids = torch.tensor([[2, 5, 6, 3, 0], [2, 7, 3, 0, 0]])
    _, pooled = enc(ids, ids != 0)
    pooled.pow(2).sum().backward()
    grad = enc.token_embedding.weight.grad
    assert grad is not None and grad[[5, 6, 7]].abs().sum(1).gt(0).all()
    assert grad[8:].abs().sum() == 0  # unused words get no gradient
    assert enc.position_embedding.weight.grad[:4].abs().sum() > 0


def test_encoder_errors():
    enc = _small_encoder()
    long = torch.ones(1, 13, dtype=torch.long)
    with pytest.raises(ValueError, match="max_len=12"):
        enc(long, long.bool())
    ids = torch.ones(2, 4, dtype=torch.long)
    with pytest.raises(ValueError, match="mask"):
        enc(ids, torch.ones(2, 3, dtype=torch.bool))
    with pytest.raises(ValueError, match="at least one real token"):
        enc(ids, torch.tensor([[True] * 4, [False] * 4]))
    with pytest.raises(ValueError, match="heads"):
        TextEncoder(10, dim=10, heads=4)
    with pytest.raises(ValueError, match="vocab_size"):
        TextEncoder(0)


def test_encoder_defaults():
    enc = TextEncoder(50)
    assert enc.dim == 128 and enc.max_len == 64 and len(enc.transformer.layers) == 2
    layer = enc.transformer.layers[0]
    assert layer.norm_first and layer.self_attn.num_heads == 4 and layer.self_attn.batch_first


# --- prompts -------------------------------------------------------------------------------------

LOCATIONS = {
    "opacity": [(s, z) for s in ("right", "left") for z in ("upper", "middle", "lower")]
    + [("left", None)],
    "nodule": [(s, z) for s in ("right", "left") for z in ("upper", "middle", "lower")]
    + [("right", None)],
    "cardiomegaly": [],
    "effusion": [("right", None), ("left", None)],
}


@pytest.mark.parametrize("finding", sorted(PROMPT_TEMPLATES))
def test_prompts_without_location(finding):
    pos, neg = prompts(finding)
    assert pos and neg
    for text in pos + neg:
        assert "{" not in text and "right" not in text.lower() and "left" not in text.lower()
    assert set(pos).isdisjoint(neg)
    assert prompts(finding, side="", zone="") == (pos, neg)  # the phantom's "no location"


@pytest.mark.parametrize("finding", sorted(PROMPT_TEMPLATES))
def test_prompts_with_location(finding):
    for side, zone in LOCATIONS[finding]:
        pos, neg = prompts(finding, side=side, zone=zone)
        assert pos and neg == prompts(finding)[1]
        for text in pos:
            assert "{" not in text and side in text.lower()
            assert zone is None or zone in text
            assert text[0].isupper()


def test_prompts_examples():
    pos, neg = prompts("opacity", side="left", zone="lower")
    assert pos[:2] == [
        "There is an opacity in the left lower zone.",
        "Left lower zone consolidation.",
    ]
    assert neg[:2] == ["No focal consolidation.", "The lungs are clear."]
    assert prompts("cardiomegaly") == (
        ["The heart is enlarged.", "Cardiomegaly."],
        ["Heart size is normal.", "The heart is not enlarged."],
    )
    assert prompts("effusion", side="right")[0][0] == "Right pleural effusion."
    assert prompts("effusion")[1][0] == "No pleural effusion."


def test_prompts_errors():
    with pytest.raises(
        ValueError, match=r"unknown finding 'mass'.*cardiomegaly.*effusion.*nodule.*opacity"
    ):
        prompts("mass")
    with pytest.raises(ValueError, match="side"):
        prompts("opacity", side="middle")
    with pytest.raises(ValueError, match="zone"):
        prompts("opacity", side="left", zone="apex")
    with pytest.raises(ValueError, match="no template"):
        prompts("cardiomegaly", side="left")
    with pytest.raises(ValueError, match="no template"):
        prompts("effusion", side="left", zone="upper")
    with pytest.raises(ValueError, match="no template"):
        prompts("opacity", zone="upper")
