"""The text side of LRCLR: report sentences, a word tokenizer, a small text encoder, prompts.

LRCLR (docs/methods.md, "LRCLR") contrasts image regions with report sentences and scores findings
zero-shot against positive and negative prompts. The paper builds on a pretrained image-text
model; here everything is trained from scratch, locally (no hub downloads).

Not published, our choices: a word-level tokenizer fitted on the training reports (the reports
are short and templated, so sub-words buy nothing), and a small pre-norm Transformer
(dim 128, 2 layers, 4 heads, up to 64 tokens) pooled by a masked mean; LRCLR does not publish its
text encoder sizes, ours is small so that it trains on a CPU in minutes. The prompt wording in
:data:`PROMPT_TEMPLATES` follows the phantom reports (:mod:`medcl_lite.data.phantoms.chest_xray`).

Shapes: ``B`` texts, ``T`` tokens (with ``[CLS]`` and ``[SEP]``), ``dim`` feature channels.
"""

from __future__ import annotations

import json
import re
import string
from collections import Counter
from collections.abc import Iterable, Sequence
from pathlib import Path

import torch
from torch import Tensor, nn

from medcl_lite.checkpoint import atomic_write_text

__all__ = [
    "PROMPT_TEMPLATES",
    "SPECIAL_TOKENS",
    "TextEncoder",
    "Tokenizer",
    "normalise",
    "prompts",
    "split_sentences",
    "tokenize",
]

# ---------------------------------------------------------------------------------------------
# Sentences
# ---------------------------------------------------------------------------------------------

#: Words (lowercase, without their final ".") whose trailing period does not end a sentence.
ABBREVIATIONS = frozenset(
    {"approx", "e.g", "i.e", "vs", "cf", "incl", "resp", "dr", "mr", "mrs", "ms", "prof", "fig"}
)
_SENTENCE_END = re.compile(r"[.!?]+(?=\s|$)")


def split_sentences(report: str) -> list[str]:
    """Split a radiology report into sentences (LRCLR's local terms pair regions with sentences).

    A sentence ends at a run of ``.``, ``!`` or ``?`` followed by whitespace or the end of the
    text. Decimals ("2.5 cm") never match (no space after the point); a period ending a known
    abbreviation (:data:`ABBREVIATIONS`: "approx.", "e.g.", "vs.", ...) does not end a sentence.
    Sentences are stripped and empty ones dropped; text after the last stop is kept as a sentence.
    """
    if not isinstance(report, str):
        raise TypeError(f"split_sentences: report must be a str, got {type(report).__name__}")
    sentences, start = [], 0
    for match in _SENTENCE_END.finditer(report):
        if match.group() == "." and _is_abbreviation(report, match.start()):
            continue
        sentences.append(report[start : match.end()])
        start = match.end()
    sentences.append(report[start:])
    return [s.strip() for s in sentences if s.strip()]


def _is_abbreviation(text: str, dot: int) -> bool:
    """Whether the word just before the period at index ``dot`` is a known abbreviation."""
    word = text[:dot].split()[-1] if text[:dot].split() else ""
    return word.lower().lstrip("([\"'") in ABBREVIATIONS


# ---------------------------------------------------------------------------------------------
# Tokenizer
# ---------------------------------------------------------------------------------------------

PAD, UNK, CLS, SEP = "[PAD]", "[UNK]", "[CLS]", "[SEP]"
#: Special tokens; their ids are their positions ("[PAD]" = 0).
SPECIAL_TOKENS = (PAD, UNK, CLS, SEP)
_FORMAT = "medcl_lite.text.Tokenizer"
# A decimal number, a run of letters/digits, or any single other visible character.
_TOKEN = re.compile(r"\d+\.\d+|[^\W_]+|\S")
_NO_SPACE_BEFORE = frozenset(".,;:!?)]%")
_NO_SPACE_AFTER = frozenset("([")


def tokenize(text: str) -> list[str]:
    """Lowercase word tokens: words, numbers ("2.5" is one token) and single punctuation marks."""
    if not isinstance(text, str):
        raise TypeError(f"tokenize: text must be a str, got {type(text).__name__}")
    return _TOKEN.findall(text.lower())


def _detokenize(tokens: Sequence[str]) -> str:
    """Join tokens with spaces, except before closing punctuation and after opening brackets."""
    out = ""
    for i, tok in enumerate(tokens):
        glue = i == 0 or tok in _NO_SPACE_BEFORE or tokens[i - 1] in _NO_SPACE_AFTER
        out += tok if glue else " " + tok
    return out


def normalise(text: str) -> str:
    """The canonical form :meth:`Tokenizer.decode` returns: lowercase, tokens re-joined.

    ``"The  heart is ENLARGED ."`` -> ``"the heart is enlarged."``; idempotent.
    """
    return _detokenize(tokenize(text))


class Tokenizer:
    """Word-level tokenizer: ``[CLS] w1 w2 [SEP]``, unknown words -> ``[UNK]``, pad id 0.

    Args:
        words: the vocabulary without special tokens, in id order (ids start after
            :data:`SPECIAL_TOKENS`). Usually built by :meth:`fit`.
    """

    def __init__(self, words: Sequence[str]):
        words = list(words)
        bad = [w for w in words if not isinstance(w, str) or not w or w in SPECIAL_TOKENS]
        if bad:
            raise ValueError(
                f"Tokenizer: words must be non-empty, non-special strings, got {bad[:5]}"
            )
        if len(set(words)) != len(words):
            dup = sorted(w for w, c in Counter(words).items() if c > 1)
            raise ValueError(f"Tokenizer: duplicate words {dup[:5]}")
        self.itos: list[str] = [*SPECIAL_TOKENS, *words]
        self.stoi: dict[str, int] = {w: i for i, w in enumerate(self.itos)}
        self.pad_id, self.unk_id, self.cls_id, self.sep_id = (self.stoi[s] for s in SPECIAL_TOKENS)

    @classmethod
    def fit(
        cls, texts: Iterable[str], min_count: int = 1, max_size: int | None = None
    ) -> Tokenizer:
        """Vocabulary of the words seen at least ``min_count`` times, most frequent first.

        Ties are broken alphabetically, so the result does not depend on the order of ``texts``.
        ``max_size`` caps the number of words (special tokens not counted).
        """
        if isinstance(texts, str):
            raise TypeError("Tokenizer.fit: texts must be an iterable of str, not one str")
        if min_count < 1:
            raise ValueError(f"Tokenizer.fit: min_count must be >= 1, got {min_count}")
        if max_size is not None and max_size < 0:
            raise ValueError(f"Tokenizer.fit: max_size must be >= 0 or None, got {max_size}")
        counts = Counter(tok for text in texts for tok in tokenize(text))
        for special in SPECIAL_TOKENS:  # "[pad]" etc. cannot come out of tokenize; be safe
            counts.pop(special, None)
        ranked = sorted(
            (w for w, c in counts.items() if c >= min_count), key=lambda w: (-counts[w], w)
        )
        return cls(ranked if max_size is None else ranked[:max_size])

    @property
    def vocab_size(self) -> int:
        """Number of ids, special tokens included (the embedding table's size)."""
        return len(self.itos)

    def encode(self, text: str, max_len: int | None = None) -> list[int]:
        """Ids of ``[CLS] tokens [SEP]``; truncated to ``max_len`` ids, always ending in ``[SEP]``."""
        if max_len is not None and max_len < 2:
            raise ValueError(f"encode: max_len must be >= 2 ([CLS] and [SEP]), got {max_len}")
        ids = [self.stoi.get(tok, self.unk_id) for tok in tokenize(text)]
        if max_len is not None:
            ids = ids[: max_len - 2]
        return [self.cls_id, *ids, self.sep_id]

    def encode_batch(
        self, texts: Sequence[str], max_len: int | None = None
    ) -> tuple[Tensor, Tensor]:
        """Encode and right-pad to the longest text (at most ``max_len`` ids).

        Returns:
            ``ids`` LongTensor ``[B, T]`` (pad id 0) and ``mask`` BoolTensor ``[B, T]``, True at
            real tokens (``[CLS]`` and ``[SEP]`` included).
        """
        if isinstance(texts, str) or len(texts) == 0:
            raise ValueError("encode_batch: texts must be a non-empty sequence of str")
        encoded = [self.encode(t, max_len) for t in texts]
        length = max(len(e) for e in encoded)
        ids = torch.full((len(encoded), length), self.pad_id, dtype=torch.long)
        mask = torch.zeros((len(encoded), length), dtype=torch.bool)
        for row, e in enumerate(encoded):
            ids[row, : len(e)] = torch.tensor(e, dtype=torch.long)
            mask[row, : len(e)] = True
        return ids, mask

    def decode(self, ids: Sequence[int] | Tensor) -> str:
        """Text of ``ids`` (1-D): ``[PAD]``, ``[CLS]`` and ``[SEP]`` dropped, ``[UNK]`` kept visible.

        ``decode(encode(t)) == normalise(t)`` for text whose words are all in the vocabulary.
        """
        if isinstance(ids, Tensor):
            if ids.ndim != 1:
                raise ValueError(f"decode: ids must be 1-D, got shape {tuple(ids.shape)}")
            ids = ids.tolist()
        bad = [i for i in ids if not 0 <= int(i) < self.vocab_size]
        if bad:
            raise ValueError(f"decode: ids out of range [0, {self.vocab_size}): {bad[:5]}")
        drop = {self.pad_id, self.cls_id, self.sep_id}
        return _detokenize([self.itos[int(i)] for i in ids if int(i) not in drop])

    def save(self, path: str | Path) -> Path:
        """Write the vocabulary as JSON, atomically."""
        payload = {
            "format": _FORMAT,
            "version": 1,
            "specials": list(SPECIAL_TOKENS),
            "words": self.itos[4:],
        }
        return atomic_write_text(path, json.dumps(payload, indent=1) + "\n")

    @classmethod
    def load(cls, path: str | Path) -> Tokenizer:
        """Read a file written by :meth:`save`; a clear error for a missing, corrupt or foreign file."""
        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(f"Tokenizer.load: no such file: {path}")
        try:
            payload = json.loads(path.read_text())
        except (json.JSONDecodeError, UnicodeDecodeError) as err:
            raise ValueError(f"Tokenizer.load: {path} is not valid JSON: {err}") from err
        if not isinstance(payload, dict) or payload.get("format") != _FORMAT:
            raise ValueError(f"Tokenizer.load: {path} is not a {_FORMAT} file")
        if payload.get("version") != 1 or payload.get("specials") != list(SPECIAL_TOKENS):
            raise ValueError(
                f"Tokenizer.load: {path} has version {payload.get('version')!r} and specials "
                f"{payload.get('specials')!r}; expected version 1 and {list(SPECIAL_TOKENS)}"
            )
        words = payload.get("words")
        if not isinstance(words, list):
            raise ValueError(f"Tokenizer.load: {path} has no 'words' list")
        try:
            return cls(words)
        except ValueError as err:
            raise ValueError(f"Tokenizer.load: {path}: {err}") from err

    def __repr__(self) -> str:
        return f"Tokenizer(vocab_size={self.vocab_size})"


# ---------------------------------------------------------------------------------------------
# Encoder
# ---------------------------------------------------------------------------------------------


class TextEncoder(nn.Module):
    """Small Transformer text encoder trained from scratch (LRCLR's report branch, our sizes).

    Token + learned position embeddings, ``layers`` pre-norm (``norm_first``) GELU Transformer
    layers with key-padding masks, and a final LayerNorm. Padding never changes the real tokens:
    they do not attend to pads, positions count from 0 and pad outputs are set to zero.

    ``pooled`` is the mean of the real tokens rather than the ``[CLS]`` output: trained from
    scratch on short reports, a mean gives every token a direct gradient path and a usable
    sentence vector from the first steps, whereas a ``[CLS]`` vector must first learn to gather
    the sentence (BERT learns it in large-scale pretraining that we do not have).
    """

    def __init__(
        self,
        vocab_size: int,
        dim: int = 128,
        layers: int = 2,
        heads: int = 4,
        max_len: int = 64,
        dropout: float = 0.1,
    ):
        super().__init__()
        for name, value in (("vocab_size", vocab_size), ("dim", dim), ("layers", layers)):
            if value < 1:
                raise ValueError(f"TextEncoder: {name} must be >= 1, got {value}")
        if heads < 1 or dim % heads:
            raise ValueError(f"TextEncoder: heads must divide dim={dim}, got heads={heads}")
        if max_len < 2:
            raise ValueError(f"TextEncoder: max_len must be >= 2, got {max_len}")
        if not 0.0 <= dropout < 1.0:
            raise ValueError(f"TextEncoder: dropout must be in [0, 1), got {dropout}")
        self.dim, self.max_len = dim, max_len
        self.token_embedding = nn.Embedding(vocab_size, dim, padding_idx=0)
        self.position_embedding = nn.Embedding(max_len, dim)
        self.dropout = nn.Dropout(dropout)
        layer = nn.TransformerEncoderLayer(
            dim, heads, 4 * dim, dropout, activation="gelu", batch_first=True, norm_first=True
        )
        self.transformer = nn.TransformerEncoder(layer, layers, enable_nested_tensor=False)
        self.norm = nn.LayerNorm(dim)
        nn.init.normal_(self.token_embedding.weight, std=0.02)
        nn.init.normal_(self.position_embedding.weight, std=0.02)
        with torch.no_grad():
            self.token_embedding.weight[0].zero_()

    def forward(self, ids: Tensor, mask: Tensor) -> tuple[Tensor, Tensor]:
        """Encode token ids.

        Args:
            ids: ``[B, T]`` integer ids, ``T <= max_len``.
            mask: ``[B, T]`` bool, True at real tokens; every row needs at least one.
        Returns:
            ``tokens [B, T, dim]`` (zero at pads) and ``pooled [B, dim]`` (masked mean).
        """
        self._check_inputs(ids, mask)
        positions = torch.arange(ids.shape[1], device=ids.device)
        x = self.token_embedding(ids) + self.position_embedding(positions)
        x = self.transformer(self.dropout(x), src_key_padding_mask=~mask)
        keep = mask.unsqueeze(-1).to(x.dtype)
        tokens = self.norm(x) * keep
        pooled = tokens.sum(1) / keep.sum(1)
        return tokens, pooled

    def _check_inputs(self, ids: Tensor, mask: Tensor) -> None:
        """Clear errors for bad shapes, dtypes, lengths and empty rows."""
        if ids.ndim != 2 or ids.dtype.is_floating_point:
            raise ValueError(
                f"TextEncoder: ids must be an integer [B, T] tensor, got {ids.dtype} {tuple(ids.shape)}"
            )
        if mask.shape != ids.shape or mask.dtype != torch.bool:
            raise ValueError(
                f"TextEncoder: mask must be a bool tensor of shape {tuple(ids.shape)}, "
                f"got {mask.dtype} {tuple(mask.shape)}"
            )
        if ids.shape[1] > self.max_len:
            raise ValueError(
                f"TextEncoder: sequence length {ids.shape[1]} exceeds max_len={self.max_len}"
            )
        if not bool(mask.any(1).all()):
            raise ValueError("TextEncoder: every row of mask needs at least one real token")


# ---------------------------------------------------------------------------------------------
# Zero-shot prompts
# ---------------------------------------------------------------------------------------------

SIDES = ("right", "left")
ZONES = ("upper", "middle", "lower")

#: finding -> (positive templates, negative templates). Placeholders: ``{side}``, ``{Side}``
#: (capitalised), ``{zone}``; a template is used when its placeholders are exactly the location
#: given to :func:`prompts` (none: the location-free variants). Negatives name no location.
PROMPT_TEMPLATES: dict[str, tuple[list[str], list[str]]] = {
    "opacity": (
        [
            "There is an opacity in the {side} {zone} zone.",
            "{Side} {zone} zone consolidation.",
            "Opacity in the {side} {zone} zone.",
            "Opacity in the {side} lung.",
            "There is an opacity in the {side} lung.",
            "There is a focal opacity.",
            "Focal consolidation.",
        ],
        ["No focal consolidation.", "The lungs are clear.", "No focal lung opacity."],
    ),
    "nodule": (
        [
            "Nodule in the {side} {zone} zone.",
            "There is a nodule in the {side} {zone} zone.",
            "Nodule in the {side} lung.",
            "There is a lung nodule.",
            "Pulmonary nodule.",
        ],
        ["No lung nodule.", "The lungs are clear."],
    ),
    "cardiomegaly": (
        ["The heart is enlarged.", "Cardiomegaly."],
        ["Heart size is normal.", "The heart is not enlarged."],
    ),
    "effusion": (
        ["{Side} pleural effusion.", "There is a {side} pleural effusion.", "Pleural effusion."],
        ["No pleural effusion.", "No effusion."],
    ),
}


def prompts(
    finding: str, side: str | None = None, zone: str | None = None
) -> tuple[list[str], list[str]]:
    """Positive and negative zero-shot prompts for ``finding`` (LRCLR's prompt scoring).

    ``side`` ("right"/"left") and ``zone`` ("upper"/"middle"/"lower") pick the templates that name
    exactly that location; ``None`` or ``""`` (the phantom's "no location") picks the location-free
    ones. A location the finding has no template for is an error.
    """
    if finding not in PROMPT_TEMPLATES:
        raise ValueError(f"prompts: unknown finding {finding!r}; known: {sorted(PROMPT_TEMPLATES)}")
    side, zone = side or None, zone or None
    if side is not None and side not in SIDES:
        raise ValueError(f"prompts: side must be one of {SIDES} or None, got {side!r}")
    if zone is not None and zone not in ZONES:
        raise ValueError(f"prompts: zone must be one of {ZONES} or None, got {zone!r}")
    given = {name for name, value in (("side", side), ("zone", zone)) if value is not None}
    values = {"side": side or "", "Side": (side or "").capitalize(), "zone": zone or ""}
    positives, negatives = PROMPT_TEMPLATES[finding]
    chosen = [t.format(**values) for t in positives if _fields(t) == given]
    if not chosen:
        raise ValueError(
            f"prompts: finding {finding!r} has no template for location {sorted(given)} "
            f"(side={side!r}, zone={zone!r})"
        )
    return chosen, [t.format(**values) for t in negatives if not _fields(t)]


def _fields(template: str) -> set[str]:
    """Location placeholders of a template, lowercased (``{Side}`` counts as ``side``)."""
    return {f.lower() for _, f, _, _ in string.Formatter().parse(template) if f}
