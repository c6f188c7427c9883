"""The model's text stream ("inner monologue") as words with times, through one narrow tokenizer interface.

A Moshi-architecture LM emits one text token per 80 ms frame: padding while it has nothing to say, the
end-of-padding token the frame before a word, and the pieces of its words. Which ids are padding and
end-of-padding is the model's config (``existing_text_padding_id`` / ``existing_text_end_padding_id``,
read from the LM by :func:`padding_ids`), never a constant here.

Two tokenizers implement :class:`TextTokenizer`:

- :class:`WordVocabTokenizer`: the tiny LM's word vocabulary (``dialogue_vocab.json``), one word a token;
- :class:`SentencePieceTokenizer`: a SentencePiece model (Moshi's ``tokenizer_spm_32k_3.model``), read
  with the ``sentencepiece`` package. A piece that starts with "▁" (U+2581) starts a word, as Moshi's own
  decoding does (``moshi/server.py`` and ``moshi/run_inference.py`` turn "▁" into a space).

:func:`decode_words` joins the pieces into words: a word starts at the frame of its first piece and ends
at the end of the frame of its last piece; padding frames are silence (they neither start nor end a word,
so a word whose pieces are split by padding stays one word).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from . import DataError

WORD_START = "\u2581"  # SentencePiece's word-boundary marker


@dataclass(frozen=True)
class TimedWord:
    """A word with its start and end in seconds (of the stream it came from)."""

    text: str
    start: float
    end: float


class TextTokenizer(Protocol):
    """What the harness needs of a text tokenizer: the piece of an id, and how many ids there are."""

    name: str

    def piece(self, token: int) -> str | None:
        """The piece of ``token`` (a word-initial piece starts with "▁"); None for control, unknown and
        byte ids, and for ids outside the vocabulary."""
        ...

    def size(self) -> int:
        """Number of ids."""
        ...


@dataclass(frozen=True)
class WordVocabTokenizer:
    """The tiny LM's word vocabulary: every id is one whole word; names in angle brackets are special."""

    tokens: tuple[str, ...]
    name: str = "tiny word vocabulary (dialogue_vocab.json)"

    def piece(self, token: int) -> str | None:
        if not 0 <= token < len(self.tokens) or self.tokens[token].startswith("<"):
            return None
        return WORD_START + self.tokens[token]

    def size(self) -> int:
        return len(self.tokens)


class SentencePieceTokenizer:
    """A SentencePiece model file (``.model``), e.g. Moshi's ``tokenizer_spm_32k_3.model``."""

    def __init__(self, path: str | Path) -> None:
        path = Path(path)
        if not path.is_file():
            raise DataError(f"text tokenizer not found: {path}")
        try:
            import sentencepiece as spm
        except ImportError:
            raise DataError(
                "--text-tokenizer needs the sentencepiece package (pip install sentencepiece)"
            ) from None
        try:
            self._sp = spm.SentencePieceProcessor(model_file=str(path))
        except (OSError, RuntimeError) as e:
            raise DataError(f"{path}: not a SentencePiece model ({str(e).splitlines()[0]})") from None
        self.name = f"sentencepiece {path.name}"
        self.path = path

    def piece(self, token: int) -> str | None:
        sp = self._sp
        if not 0 <= token < sp.get_piece_size():
            return None
        if sp.is_control(token) or sp.is_unknown(token) or sp.is_byte(token):
            return None
        return sp.id_to_piece(token)

    def size(self) -> int:
        return int(self._sp.get_piece_size())


def padding_ids(lm) -> tuple[int, int]:
    """(padding id, end-of-padding id) from the LM (its config's ``existing_text_padding_id`` and
    ``existing_text_end_padding_id``)."""
    try:
        return int(lm.text_padding_token_id), int(lm.end_of_text_padding_id)
    except AttributeError:
        raise DataError("the model exposes no text padding ids (lm.text_padding_token_id)") from None


def decode_words(
    tokens: Sequence[int | None],
    tokenizer: TextTokenizer,
    pad_ids: tuple[int, int],
    frame_s: float,
    offset_s: float = 0.0,
) -> list[TimedWord]:
    """Words of a text stream, one token (or None: not generated yet) per frame; frame ``o`` starts at
    ``o * frame_s - offset_s`` seconds. Padding and end-of-padding are silence; ids without a piece are
    skipped like padding."""
    words: list[TimedWord] = []
    text, start, end = "", 0.0, 0.0
    for o, tok in enumerate(tokens):
        if tok is None or tok < 0 or tok in pad_ids:
            continue
        p = tokenizer.piece(int(tok))
        if not p:
            continue
        t0 = o * frame_s - offset_s
        if p.startswith(WORD_START) or not text:
            if text.strip():
                words.append(TimedWord(text.strip(), start, end))
            text, start = p.replace(WORD_START, " "), t0
        else:
            text += p.replace(WORD_START, " ")
        end = t0 + frame_s
    if text.strip():
        words.append(TimedWord(text.strip(), start, end))
    return words
