"""Scoring of the dialogue task's answers, shared by the ``dialogue`` and ``preference`` measurements and
the ``dpo`` training option: per turn, the first word of the text stream in the turn's answer window
(right or wrong, how late) and the words said during its mid-turn pause; and the automatic reward that
the ``preference`` kind reports and the ``dpo`` option ranks its pairs by (the reward's definition:
vemi_eval/measurements/preference.py). Here, below both, so that training never imports measurements.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from ..data import dialogue as dlg
from ..data.text_stream import TimedWord, WordVocabTokenizer, decode_words
from . import EvaluatorError


@dataclass
class TurnResult:
    session: str
    turn: int
    snr_db: str
    expected: str
    said: str | None  # first word of the text stream in the answer window
    latency_text_s: float | None
    pause_words: int | None  # word tokens during the mid-turn pause (None: the turn has no pause)
    window: tuple[int, int]  # answer window in samples [user end, next turn's start)

    @property
    def correct(self) -> bool:
        return self.said == self.expected


def answer_windows(session: dlg.Session) -> list[tuple[int, int]]:
    """[end of the user's turn, start of the next turn) for every turn (the last: the session's end)."""
    starts = [t.words[0].start for t in session.turns[1:]] + [session.n_samples]
    return [(t.user_end, nxt) for t, nxt in zip(session.turns, starts)]


def score_text(
    session: dlg.Session, words: list[TimedWord], snr: str, frame_size: int, sr: int
) -> list[TurnResult]:
    """Per turn: the first text-stream word whose first frame overlaps the answer window, and the words
    that start inside the turn's pause (word times in seconds, on frame boundaries)."""
    at = [(int(round(w.start * sr)), normalize_word(w.text)) for w in words]
    out = []
    for k, (turn, (lo, hi)) in enumerate(zip(session.turns, answer_windows(session))):
        said, latency = None, None
        for t0, w in at:
            if t0 < hi and t0 + frame_size > lo:
                said, latency = w, max(0.0, (t0 - lo) / sr)
                break
        pause_words = None
        if turn.pause is not None:
            p0, p1 = turn.pause
            pause_words = sum(1 for t0, _ in at if p0 <= t0 < p1)
        out.append(TurnResult(session.id, k, snr, turn.expected, said, latency, pause_words, (lo, hi)))
    return out


def corpus_words(tokens: list[int | None], frame_s: float) -> list[TimedWord]:
    """Words of a text stream in the dialogue corpus's own vocabulary (its padding ids are the corpus's,
    ``dialogue_vocab.json``): the tiny LM's training data, as the preference trainer scores it."""
    v = dlg.vocab()
    return decode_words(tokens, WordVocabTokenizer(v.tokens), (v.pad_id, v.epad_id), frame_s)


def normalize_word(text: str) -> str:
    """Lower case without punctuation (a SentencePiece word may carry it: "Eight.")."""
    return "".join(c for c in text.lower() if c.isalnum() or c in "'-")


LATENCY_SCALE_S = 0.3  # a second late scores exp(-1 / 0.3) = 0.04
MIN_WINDOW_S = 1.2  # a turn is scored when this much of its answer window lies inside the frames


@dataclass(frozen=True)
class RewardWeights:
    correct: float = 0.6
    latency: float = 0.3
    speaker: float = 0.1


@dataclass(frozen=True)
class Reward:
    correct: float  # share of the turns answered right (and not during the pause)
    latency: float  # mean latency score over the turns
    speaker: float | None  # similarity of the answers to the voice's reference (None: not computed)
    turns: int
    total: float


def score_turns(
    session: dlg.Session, tokens: list[int | None], frame_size: int, sr: int
) -> list[tuple[bool, float]]:
    """(correct, latency score) per turn whose answer window lies inside the streamed frames."""
    end = len(tokens) * frame_size
    out = []
    for t in score_text(session, corpus_words(tokens, frame_size / sr), "clean", frame_size, sr):
        lo, _ = t.window
        if lo + MIN_WINDOW_S * sr > end:
            continue
        turn = session.turns[t.turn]
        correct = t.correct and not t.pause_words
        if t.latency_text_s is None:
            lat = 0.0
        else:
            gap = (turn.answer.start - turn.user_end) / sr
            lat = math.exp(-max(0.0, t.latency_text_s - gap) / LATENCY_SCALE_S)
        out.append((correct, lat))
    return out


def answers_audio(session: dlg.Session, audio: np.ndarray, sr: int) -> np.ndarray:
    """The model's audio in the answer windows that lie inside ``audio``, concatenated."""
    pieces = [
        audio[lo : min(hi, audio.size)]
        for lo, hi in answer_windows(session)
        if lo + MIN_WINDOW_S * sr <= audio.size
    ]
    return np.concatenate(pieces) if pieces else np.zeros(0, np.float32)


def speaker_score(audio: np.ndarray, sr: int, reference: np.ndarray) -> float:
    """Cosine of the answers' embedding to the reference's; 0 when there is no speech to embed."""
    from ..evaluators import speaker as spk

    try:
        return spk.similarity(spk.embed(audio, sr), reference)
    except EvaluatorError:
        return 0.0


def reward(
    session: dlg.Session,
    tokens: list[int | None],
    frame_size: int,
    sr: int,
    weights: RewardWeights,
    speaker: float | None = None,
) -> Reward:
    turns = score_turns(session, tokens, frame_size, sr)
    correct = float(np.mean([c for c, _ in turns])) if turns else 0.0
    latency = float(np.mean([lat for _, lat in turns])) if turns else 0.0
    total = weights.correct * correct + weights.latency * latency + weights.speaker * (speaker or 0.0)
    return Reward(correct, latency, speaker, len(turns), total)


def reference_embedding() -> np.ndarray:
    from ..evaluators import speaker as spk

    return spk.embed(dlg.model_reference_audio(), dlg.SAMPLE_RATE)
