"""The text stream decoded into timed words through one tokenizer interface: a SentencePiece model trained
here on a few sentences (Moshi's special ids: unk/EPAD 0, pad 3) and the tiny word vocabulary."""

from __future__ import annotations

import io
from types import SimpleNamespace

import pytest

from vemi_eval.data import DataError
from vemi_eval.data import dialogue as dlg
from vemi_eval.data.text_stream import (
    SentencePieceTokenizer,
    TimedWord,
    WordVocabTokenizer,
    decode_words,
    padding_ids,
)
from vemi_eval.measurements._duplex import text_tokenizer

SENTENCES = [
    "what comes after seven",
    "eight is the answer",
    "hello there how are you",
    "the number after nineteen is twenty",
    "so which number comes after three",
]
PAD, EPAD = 3, 0
FRAME = 0.08


@pytest.fixture(scope="module")
def spm_path(tmp_path_factory):
    import sentencepiece as spm

    buf = io.BytesIO()
    spm.SentencePieceTrainer.train(
        sentence_iterator=iter(SENTENCES * 5),
        model_writer=buf,
        vocab_size=32,
        model_type="unigram",
        character_coverage=1.0,
        unk_id=0,
        bos_id=1,
        eos_id=2,
        pad_id=3,  # Moshi's layout: padding 3, end-of-padding 0 (its <unk>)
        minloglevel=2,
    )
    path = tmp_path_factory.mktemp("spm") / "tiny.model"
    path.write_bytes(buf.getvalue())
    return path


def test_sentencepiece_stream_decodes_into_words_and_frame_times(spm_path):
    import sentencepiece as spm

    sp = spm.SentencePieceProcessor(model_file=str(spm_path))
    tok = SentencePieceTokenizer(spm_path)
    assert tok.size() == 32 and tok.piece(PAD) is None and tok.piece(EPAD) is None and tok.piece(99) is None
    # "eight is the answer": its pieces one a frame, after 3 frames of padding, an EPAD before the first
    # piece, and a padding frame inside "answer" (padding is silence, it does not split a word)
    ids = sp.encode("eight is the answer")
    answer = sp.encode("answer")
    head = ids[: len(ids) - len(answer)]
    stream: list[int | None] = [None, PAD, PAD, EPAD, *head, answer[0], PAD, *answer[1:], PAD, PAD]
    words = decode_words(stream, tok, (PAD, EPAD), FRAME)
    assert [w.text for w in words] == ["eight", "is", "the", "answer"]
    pieces_of = {w: len(sp.encode(w)) for w in ("eight", "is", "the")}
    start = 4  # the first piece's frame
    for w in words[:3]:
        assert w.start == pytest.approx(start * FRAME)
        assert w.end == pytest.approx((start + pieces_of[w.text]) * FRAME)
        start += pieces_of[w.text]
    last = words[3]
    assert last.start == pytest.approx(start * FRAME)
    assert last.end == pytest.approx((start + len(answer) + 1) * FRAME)  # one padding frame inside
    # a prepended silence moves every time back by its length
    shifted = decode_words(stream, tok, (PAD, EPAD), FRAME, offset_s=0.16)
    assert [w.start for w in shifted] == pytest.approx([w.start - 0.16 for w in words])


def test_padding_ids_come_from_the_model_not_constants(spm_path):
    import sentencepiece as spm

    the = spm.SentencePieceProcessor(model_file=str(spm_path)).piece_to_id("\u2581the")
    tok = SentencePieceTokenizer(spm_path)
    stream = [the, PAD, the]
    assert [w.text for w in decode_words(stream, tok, (PAD, EPAD), FRAME)] == ["the", "the"]
    # a model whose padding id is that piece's: the same stream is silence
    lm = SimpleNamespace(text_padding_token_id=the, end_of_text_padding_id=EPAD)
    assert padding_ids(lm) == (the, EPAD)
    assert decode_words(stream, tok, padding_ids(lm), FRAME) == []
    with pytest.raises(DataError, match="padding ids"):
        padding_ids(None)


def test_word_vocabulary_is_the_same_interface():
    v = dlg.vocab()
    tok = WordVocabTokenizer(v.tokens)
    stream = [None, v.pad_id, v.epad_id, v.id("eight"), v.pad_id, v.id("nine")]
    words = decode_words(stream, tok, (v.pad_id, v.epad_id), FRAME)
    want = [TimedWord("eight", 3 * FRAME, 4 * FRAME), TimedWord("nine", 5 * FRAME, 6 * FRAME)]
    assert [w.text for w in words] == [w.text for w in want]
    assert [t for w in words for t in (w.start, w.end)] == pytest.approx([0.24, 0.32, 0.4, 0.48])


def test_which_tokenizer_reads_a_model(spm_path, tmp_path):
    tiny = SimpleNamespace(lm=SimpleNamespace(text_card=32))
    assert isinstance(text_tokenizer(tiny, None), WordVocabTokenizer)
    assert isinstance(text_tokenizer(tiny, str(spm_path)), SentencePieceTokenizer)
    moshi = SimpleNamespace(lm=SimpleNamespace(text_card=32000))
    with pytest.raises(DataError, match="--text-tokenizer"):
        text_tokenizer(moshi, None)  # the word vocabulary cannot read a 32k text card
    small = SimpleNamespace(lm=SimpleNamespace(text_card=16))
    with pytest.raises(DataError, match="text card is only 16"):
        text_tokenizer(small, str(spm_path))
    bad = tmp_path / "not.model"
    bad.write_text("not a model")
    with pytest.raises(DataError, match="not a SentencePiece model"):
        SentencePieceTokenizer(bad)
    with pytest.raises(DataError, match="not found"):
        SentencePieceTokenizer(tmp_path / "missing.model")
