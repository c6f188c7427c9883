"""The dialogue corpus's sessions: each planned from seeded generators (words, pauses, the answer's onset,
gain, noise, the user's perturbation), rendered on demand from the cached words, and hashed."""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from .. import DataError, espeak_mix, festival
from ..audio import dither
from ..noise import make_noise, mix_at_snr
from ..seeds import seed_of
from .spec import (
    AFTER_ANSWER_S,
    ANSWER_GAP_S,
    ASKED,
    ESPEAK,
    FESTIVAL,
    FRAME_SIZE,
    GAIN_DB,
    HELDOUT_PROMPTS,
    LEAD_SILENCE_S,
    MODEL_VOICE,
    NO_AUGMENT,
    NUMBERS,
    PAUSE_S,
    SAMPLE_RATE,
    SPLITS,
    TAIL_SILENCE_S,
    TRAIN_PROMPTS,
    WORD_GAP_S,
    Augment,
    Turn,
    UserVoice,
    Word,
    align_text,
    n_frames,
)
from .synth import _model_clip, _user_clip, cache_folder, split_hash
from .voices import _voice_split, espeak_variants, mixed_variants, session_engine, voices


@dataclass
class Session:
    id: str
    split: str
    voice: UserVoice
    turns: tuple[Turn, ...]
    n_samples: int
    gain_db: float
    noise: tuple[str, float] | None  # (kind, SNR dB) on the user channel
    seed: int
    folder: Path
    augment: Augment = NO_AUGMENT

    @property
    def duration_s(self) -> float:
        return self.n_samples / SAMPLE_RATE

    def user_audio(self, with_noise: bool = True) -> np.ndarray:
        out = np.zeros(self.n_samples, np.float32)
        for turn in self.turns:
            for w in turn.words:
                out[w.start : w.end] += self.augment.word(_user_clip(self.folder, self.voice, w.text))
        out = self.augment.channel(out) * 10 ** (self.gain_db / 20)
        if with_noise and self.noise is not None:
            kind, snr = self.noise
            out = mix_at_snr(out, make_noise(kind, out.size, SAMPLE_RATE, self.seed), snr, SAMPLE_RATE)
        return dither(out, self.seed)

    def model_audio(self) -> np.ndarray:
        out = np.zeros(self.n_samples, np.float32)
        for turn in self.turns:
            w = turn.answer
            out[w.start : w.end] += _model_clip(self.folder, w.text)
        return dither(out, self.seed + 1)

    def text_tokens(self, frame_size: int = 1920) -> np.ndarray:
        """The model's text stream [frames]: a word's token at its onset frame, EPAD before, PAD elsewhere."""
        return align_text([t.answer for t in self.turns], n_frames(self.n_samples, frame_size), frame_size)


# --- the session plan ---------------------------------------------------------------------------------
def _plan_session(
    split: str, index: int, pool: list[UserVoice], folder: Path, plan_key: str, gap_s: float = ANSWER_GAP_S
) -> Session:
    cfg = SPLITS[split]
    seed = seed_of(plan_key, split, index) % (2**31)
    rng = np.random.default_rng(seed)
    engine = session_engine(split, index)  # first: the engine, by its quota; then a voice of it
    candidates = [v for v in pool if v.engine == engine]
    if not candidates:
        raise DataError(f"the dialogue split {split} has no {engine} users")
    voice = candidates[int(rng.integers(len(candidates)))]
    prompts = TRAIN_PROMPTS if _voice_split(split) == "train" else HELDOUT_PROMPTS
    augment = _draw_augment(cfg.get("augment"), plan_key, split, index)
    lo, hi = cfg["turns"]
    n_turns = int(rng.integers(lo, hi + 1))

    def s(rng_range: tuple[float, float]) -> int:
        return int(round(rng.uniform(*rng_range) * SAMPLE_RATE))

    t = s(LEAD_SILENCE_S)
    turns = []
    for k in range(n_turns):
        number = int(ASKED[int(rng.integers(len(ASKED)))])
        prompt = prompts[int(rng.integers(len(prompts)))]
        has_pause = (k % 2 == index % 2) if split == "heldout" else bool(rng.random() < cfg["pause_p"])
        words: list[Word] = []
        pause = None
        for text in prompt.format(n=NUMBERS[number]).split():
            if text == NUMBERS[number] and has_pause:
                gap = s(PAUSE_S)
                pause = (t, t + gap)
                t += gap
            n = augment.word(_user_clip(folder, voice, text)).size
            words.append(Word(text, t, t + n))
            t += n + s(WORD_GAP_S)
        # The answer starts on the first frame boundary at least the gap after the user's end, as a
        # streaming model's output does (and the same word then always gives the same codes).
        start = -(-(words[-1].end + int(round(gap_s * SAMPLE_RATE))) // FRAME_SIZE) * FRAME_SIZE
        answer_text = NUMBERS[number + 1]
        answer = Word(answer_text, start, start + _model_clip(folder, answer_text).size)
        turns.append(Turn(prompt, number, tuple(words), pause, answer))
        t = answer.end + s(AFTER_ANSWER_S)
    n_samples = turns[-1].answer.end + int(TAIL_SILENCE_S * SAMPLE_RATE)
    noise = None
    if rng.random() < cfg["noise_p"]:
        noise = (("white", "pink")[int(rng.integers(2))], float(rng.uniform(*cfg["snr_db"])))
    gain = float(rng.uniform(*GAIN_DB))
    return Session(
        f"{split}-{index:05d}", split, voice, tuple(turns), n_samples, gain, noise, seed, folder, augment
    )


def _draw_augment(cfg: dict[str, Any] | None, plan_key: str, split: str, index: int) -> Augment:
    """A session's voice perturbation, from its own generator (the rest of the plan draws as without)."""
    if not cfg:
        return NO_AUGMENT
    rng = np.random.default_rng(seed_of(plan_key, split, index, "augment"))
    if rng.random() >= cfg["p"]:
        return NO_AUGMENT
    speed = round(float(rng.uniform(*cfg["speed"])), 2)  # to the percent: a short resampling filter
    tilt = round(float(rng.uniform(*cfg["tilt"])), 3)
    if "echo_p" not in cfg or rng.random() >= cfg["echo_p"]:  # drawn after: train_aug's plan is unchanged
        return Augment(speed, tilt)
    delay = round(float(rng.uniform(*cfg["echo_delay_s"])), 3)
    return Augment(speed, tilt, delay, round(float(rng.uniform(*cfg["echo_gain"])), 3))


def dialogue_sessions(
    split: str = "heldout",
    *,
    limit: int | None = None,
    cache_dir: str | Path | None = None,
    answer_gap_s: float | None = None,
    workers: int = 1,
) -> list[Session]:
    """The sessions of a split (the first ``limit`` of them); words are synthesised on first use (in
    ``workers`` processes when > 1: the plan is the same, each session being drawn from its own seed).

    ``answer_gap_s``: the model answers this long after the user ends (default ``ANSWER_GAP_S``). The
    plan is drawn from the same seeds whatever the gap (same voices, words, pauses, noise): only the
    answers and what follows them move, so sessions at several gaps differ in the gap alone."""
    if split not in SPLITS:
        raise DataError(f"unknown dialogue split {split!r} (expected one of {', '.join(SPLITS)})")
    gap = check_gap(answer_gap_s)
    folder = cache_folder(cache_dir)
    plan_key = split_hash(split, json.loads((folder / "recipe.json").read_text()))
    variants = espeak_variants()
    pool = voices(split, variants)
    # every festival voice this split needs is installed, before a word is said
    festival.check_voices(sorted({v.variant for v in pool if v.engine == FESTIVAL} | {MODEL_VOICE}))
    mixed = mixed_variants(split, variants)
    if mixed:
        espeak_mix.data_dir(folder, mixed)
    n = SPLITS[split]["sessions"] if limit is None else min(limit, SPLITS[split]["sessions"])
    jobs = [(split, i, pool, folder, plan_key, gap) for i in range(n)]
    if workers > 1 and n > 1:
        import multiprocessing as mp

        with mp.get_context("spawn").Pool(min(workers, n)) as procs:
            return procs.starmap(_plan_session, jobs, chunksize=16)
    return [_plan_session(*job) for job in jobs]


def check_gap(answer_gap_s: float | None) -> float:
    """The answer gap to use, to the millisecond (what its cache folder is named by; the corpus's default
    for None); a negative or absurd gap is an error."""
    if answer_gap_s is None:
        return ANSWER_GAP_S
    gap = round(float(answer_gap_s), 3)
    if not 0.0 <= gap <= 5.0:
        raise DataError(f"answer gap must be within 0..5 s, got {answer_gap_s}")
    return gap


def gap_suffix(answer_gap_s: float | None) -> str:
    """Cache-folder suffix of a non-default gap ("" for the default: the default corpus is unchanged)."""
    ms = int(round(check_gap(answer_gap_s) * 1000))
    return "" if ms == int(round(ANSWER_GAP_S * 1000)) else f"-gap{ms}ms"


def sessions_sha256(sessions: list[Session]) -> str:
    """Hash of the plan (ids, voices, word timings, noise) of the sessions used."""
    h = hashlib.sha256()
    for s in sessions:
        h.update(
            json.dumps(
                [
                    s.id,
                    s.voice.id,
                    s.n_samples,
                    s.gain_db,
                    s.noise,
                    # only when perturbed: unaugmented splits keep the hashes they had before it existed
                    *([] if s.augment.identity else [_augment_key(s.augment)]),
                    [
                        [
                            t.prompt,
                            t.number,
                            [(w.text, w.start, w.end) for w in t.words],
                            t.pause,
                            (t.answer.text, t.answer.start, t.answer.end),
                        ]
                        for t in s.turns
                    ],
                ]
            ).encode()
        )
    return h.hexdigest()


def _augment_key(a: Augment) -> list[float]:
    """What a perturbation adds to the plan hash (no echo: what train_aug's hash was before echoes)."""
    return [a.speed, a.tilt, *([a.echo_delay_s, a.echo_gain] if a.has_echo else [])]


def corpus_figures(sessions: list[Session]) -> dict[str, Any]:
    return {
        "sessions": len(sessions),
        "turns": sum(len(s.turns) for s in sessions),
        "hours": round(sum(s.duration_s for s in sessions) / 3600, 3),
        "voices": len({s.voice.variant for s in sessions}),
        "voice_styles": len({s.voice.id for s in sessions}),
        "sessions_by_engine": {e: sum(s.voice.engine == e for s in sessions) for e in (ESPEAK, FESTIVAL)},
        "turns_with_pause": sum(t.pause is not None for s in sessions for t in s.turns),
        "sha256": sessions_sha256(sessions),
    }
