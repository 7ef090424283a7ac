"""Long documents as overlapping windows, so the vector leg sees all of a document, not its first part.

An embedding model reads a fixed number of word pieces (256 for all-MiniLM-L6-v2) and ignores the rest:
on SciFact 71% of the documents are longer. A document that fits is embedded whole, as without
chunking; a longer one becomes windows of ``tokens`` word pieces of its longest text field, ``stride``
apart (so consecutive windows overlap by ``tokens - stride``), each headed by the other text fields (the
title, by default), and the vector leg scores it by its best window. BM25 still scores the whole text.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from .documents import LONE_SURROGATE, document_text

if TYPE_CHECKING:
    from tokenizers import Tokenizer

DEFAULT_TOKENS = 128
DEFAULT_STRIDE = 64
"""Chosen on SciFact's train queries (``bench/relevance_bench.py chunking``): see the README's results."""
MIN_WINDOW = 16
"""Word pieces of body a window keeps even when a very long heading leaves less room."""
LONG_SHARE = 0.5
"""A new index gets windows by default where more than this share of its documents is longer than the model
reads. Measured (docs/results.md, RRF nDCG@10 whole -> 128/64 windows): SciFact, 71% longer, +0.007;
Cranfield, 30% longer, -0.009; CISI, 9% longer, -0.001. Windows pay where most documents lose their end."""
RULE_SAMPLE = 2000
"""Documents whose length the rule counts (spread evenly over the corpus): a few seconds at most."""


@dataclass(frozen=True)
class Chunking:
    """Window length and step, in the model's word pieces."""

    tokens: int = DEFAULT_TOKENS
    stride: int = DEFAULT_STRIDE

    def __post_init__(self) -> None:
        if self.tokens < 8:
            raise ValueError(f"chunk tokens must be at least 8, got {self.tokens}")
        if not 1 <= self.stride <= self.tokens:
            raise ValueError(f"chunk stride must be between 1 and the chunk tokens ({self.tokens}), "
                             f"got {self.stride}")

    @classmethod
    def parse(cls, text: str) -> Chunking:
        """``TOKENS`` or ``TOKENS/STRIDE`` (stride defaults to half the window)."""
        tokens, _, stride = text.partition("/")
        try:
            size = int(tokens)
            return cls(size, int(stride) if stride else max(1, size // 2))
        except ValueError as error:
            raise ValueError(f"chunking must be TOKENS or TOKENS/STRIDE, e.g. 200/100 ({error})") from None

    def __str__(self) -> str:
        return f"{self.tokens}/{self.stride}"


def plain(tokenizer: Tokenizer) -> Tokenizer:
    """A copy of ``tokenizer`` that neither truncates nor pads (an encoder's own does both)."""
    from tokenizers import Tokenizer

    copy = Tokenizer.from_str(tokenizer.to_str())
    copy.no_truncation()
    copy.no_padding()
    return copy


def windows(fields: Mapping[str, Any], text_fields: Sequence[str], chunking: Chunking, tokenizer: Tokenizer,
            max_tokens: int) -> list[str]:
    """The texts to embed for one document: its whole text if the model reads all of it (``max_tokens``
    word pieces, special tokens included), else windows of its longest text field, each headed by the
    other text fields. A window is cut shorter than ``chunking.tokens`` where heading and window would
    not fit in ``max_tokens``: the model would silently drop the window's end. ``tokenizer`` must not
    truncate."""
    text = document_text(fields, text_fields)
    if len(tokenizer.encode(_encodable(text)).ids) <= max_tokens:
        return [text]
    longest = max(text_fields, key=lambda name: len(str(fields.get(name) or "")))
    heading = document_text(fields, [name for name in text_fields if name != longest])
    body = str(fields.get(longest) or "")
    room = max_tokens - len(tokenizer.encode(_encodable(f"{heading}\n")).ids)  # the heading's and special tokens
    size = min(chunking.tokens, max(room, MIN_WINDOW))
    stride = min(chunking.stride, size)
    offsets = tokenizer.encode(_encodable(body), add_special_tokens=False).offsets
    spans = []
    for start in range(0, len(offsets), stride):
        end = min(start + size, len(offsets))
        spans.append(body[offsets[start][0] : offsets[end - 1][1]])
        if end == len(offsets):
            break
    return [f"{heading}\n{span}" if heading else span for span in spans] or [text]


def _encodable(text: str) -> str:
    """The tokenizer refuses lone surrogates; U+FFFD, as the encoders embed them, keeps every offset."""
    return LONE_SURROGATE.sub("\ufffd", text)


def longer_share(texts: Sequence[str], tokenizer: Tokenizer, max_tokens: int) -> float:
    """The share of ``texts`` (the caller samples them: ``RULE_SAMPLE``) longer than ``max_tokens`` word
    pieces, special tokens included; ``tokenizer`` must not truncate."""
    if not texts:
        return 0.0
    return sum(len(tokenizer.encode(_encodable(text)).ids) > max_tokens for text in texts) / len(texts)


def default_chunking(share_longer: float) -> Chunking | None:
    """Windows (``Chunking()``) for a corpus where most documents are longer than the model reads, else None
    (whole documents): see ``LONG_SHARE``."""
    return Chunking() if share_longer > LONG_SHARE else None
