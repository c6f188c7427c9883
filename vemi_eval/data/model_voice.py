"""The model's own voice as codec training audio: the dialogue corpus's model voice (festival's
``ked_diphone``) reading random English sentences, built once per recipe and cached like the codec corpus.

Why: the tiny duplex model always speaks in this one voice, and the codec decoder renders every answer it
says, but the codec corpus holds the voice out (it is one of its held-out festival voices), so the decoder
never trained on the speech it exists to render. Through the bundled codec the corpus's own spoken answers
read at a mean ASR word error of 1.58 on whole answer windows (0.151 as synthesised): the answer-WER target
of the LM issue waits on this voice. A decoder recipe with ``model_voice_share`` > 0 draws that share of its
crops from here.

The sentences are the codec corpus's kind (random words of Debian's wamerican), from their own seed, with
the dialogue corpus's answer words left out: the decoder never hears this voice say an answer, so the
answers through the codec stay a held-out check of it. The voice reads at its own rate (Duration_Stretch 1,
as the dialogue corpus's answers are said) and each sentence is levelled as the codec corpus's are.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass

import numpy as np

from ..storage import cache_home
from . import DataError
from .audio import resample
from .codec_corpus import (
    WORDLIST,
    CodecCorpus,
    english_words,
    festival_batch,
    normalise_level,
    read_split,
    sentence,
    write_split,
)
from .dialogue.spec import MODEL_VOICE, NUMBERS
from .festival import voice

RECIPE_VERSION = 1
SEED = 1_000_003  # not the codec corpus's seed: other sentences


@dataclass(frozen=True)
class ModelVoiceSize:
    utterances: int = 400


def recipe(size: ModelVoiceSize, sample_rate: int) -> dict:
    return {
        "recipe_version": RECIPE_VERSION,
        "voice": MODEL_VOICE,
        "stretch": 1.0,
        "utterances": size.utterances,
        "seed": SEED,
        "excluded_words": sorted(NUMBERS),
        "wordlist_sha256": hashlib.sha256(WORDLIST.read_bytes()).hexdigest() if WORDLIST.is_file() else None,
        "sample_rate": sample_rate,
    }


def sentences(n: int) -> list[str]:
    """``n`` random sentences without the dialogue corpus's answer words (nor the other numbers)."""
    numbers = {w.lower() for w in NUMBERS}
    words = [w for w in english_words() if w not in numbers]
    rng = np.random.default_rng(SEED)
    return [sentence(rng, "latin", words) for _ in range(n)]


def model_voice_audio(
    *, size: ModelVoiceSize = ModelVoiceSize(), sample_rate: int = 24000, log=print
) -> CodecCorpus:
    """The model voice's sentences as one int16 array with offsets (built once, then read from the cache
    under ``$VEMI_CACHE/model_voice/<recipe hash>/``)."""
    rec = recipe(size, sample_rate)
    digest = hashlib.sha256(json.dumps(rec, sort_keys=True).encode()).hexdigest()[:16]
    folder = cache_home() / "model_voice" / digest
    if not (folder / "done.json").is_file():
        folder.mkdir(parents=True, exist_ok=True)
        texts = sentences(size.utterances)
        audios, items = [], []
        said = festival_batch(voice(MODEL_VOICE), texts, [1.0] * len(texts))  # None: a sentence it cannot say
        for text, got in zip(texts, said):
            a = None if got is None else normalise_level(resample(got[0], got[1], sample_rate))
            if a is not None:
                audios.append(a)
                items.append(
                    {"engine": "festival", "voice": MODEL_VOICE, "speaker": MODEL_VOICE, "text": text}
                )
        if log:
            log(f"[model voice] {MODEL_VOICE}: {len(audios)} of {len(texts)} sentences")
        if not audios:
            raise DataError(f"festival {MODEL_VOICE} said none of the model voice's sentences")
        write_split(folder, "voice", audios, items)
        (folder / "recipe.json").write_text(json.dumps(rec, indent=1))
        (folder / "done.json").write_text(json.dumps({"digest": digest, "utterances": len(items)}))
    return read_split(folder, "voice", sample_rate, digest)
