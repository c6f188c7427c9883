"""A synthetic full-duplex conversation corpus for the tiny LM: "what comes after seven" -> "eight".

Every session is two 24 kHz channels. The *user* (one voice per session: an espeak-ng voice variant with its
own pitch and rate, or one of festival's recorded voices at its own rate; optional noise) asks several times
what number comes after one of one..nineteen; the *model* (always the same voice: festival's ked_diphone, a
recorded human diphone voice) answers with the next number on the first frame boundary at least
``ANSWER_GAP_S`` after the user's last word ends (so the gap is 0.32-0.40 s), and is silent otherwise. Some
user turns have a pause *before* the number ("what comes after ... seven"), so a model that answers at the
first silence has not heard the number yet.

Users come from two speech engines, so that held-out accuracy is not only that of espeak-ng at other
settings: espeak-ng's voice variants and festival's recorded voices (the festvox voices that say the
English prompt words intelligibly, measured once by ASR: ``festival_intelligibility.json``, written by
scripts/festival_intelligibility.py; ked_diphone, the model's voice, is never a user). A session's engine
is chosen first, by a fixed quota (``festival_share`` of a split's sessions), then its voice among that
engine's, so the few festival voices are not drowned by the ~600 espeak styles.

Words are synthesised one at a time (trimmed of the synthesiser's silences), so every word's onset and end
are known to the sample. The model's text stream (its "inner monologue", as Moshi's) holds the answer's
token at the frame where the answer word starts, the end-of-padding token the frame before it, and the
padding token elsewhere. The word-level vocabulary is data: ``dialogue_vocab.json``.

Held out: whole user voices of each engine (never in training, with their own styles; festival's are voices
the codec corpus never trains on, so a held-out user is unseen by codec and LM alike) and carrier phrasings
never in training ("so which number comes after N"). The session plan is drawn from seeded generators; word
clips are cached under ``$VEMI_CACHE/dialogue/<recipe hash>/words`` and sessions are rendered from them on
demand. Token grids (text, model audio, user audio; the trainer's data format) are cached by (recipe hash,
codec checkpoint sha256) in ``.../tokens-<codec sha>/<split>/``.
"""

from __future__ import annotations

# The corpus's parts, one job each; every public name of the former module stays importable here.
from .sessions import Session, check_gap, corpus_figures, dialogue_sessions, gap_suffix, sessions_sha256
from .spec import (
    AFTER_ANSWER_S,
    ANSWER_GAP_S,
    ASKED,
    BASE_VOICES,
    ECHO_TAPS,
    ESPEAK,
    FESTIVAL,
    FESTIVAL_STRETCH,
    FRAME_RATE,
    FRAME_SIZE,
    GAIN_DB,
    HELDOUT_EVERY,
    HELDOUT_PROMPTS,
    LEAD_SILENCE_S,
    MODEL_VOICE,
    NO_AUGMENT,
    NUMBERS,
    PAUSE_S,
    RECIPE_VERSION,
    SAMPLE_RATE,
    SPLITS,
    STYLES_PER_VOICE,
    TAIL_SILENCE_S,
    TARGET_RMS_DB,
    TRAIN_PROMPTS,
    VOCAB_PATH,
    WORD_GAP_S,
    Augment,
    Turn,
    UserVoice,
    Vocab,
    Word,
    align_text,
    n_frames,
    vocab,
)

# private helpers other modules, scripts and tests call through the package (as they did the module)
from .synth import _cached_clip as _cached_clip
from .synth import _espeak_say as _espeak_say
from .synth import _model_clip as _model_clip
from .synth import _trim_and_level as _trim_and_level
from .synth import (
    cache_folder,
    check_bases_take_variants,
    festival_say,
    model_reference_audio,
    recipe,
    recipe_hash,
    split_hash,
    tool_versions,
)
from .tokens import codec_sha256, token_grid, tokenised_split
from .voices import (
    FestivalUser,
    espeak_variants,
    festival_users,
    mixed_variants,
    session_engine,
    user_words,
    voices,
)

__all__ = [
    "AFTER_ANSWER_S",
    "ANSWER_GAP_S",
    "ASKED",
    "Augment",
    "BASE_VOICES",
    "ECHO_TAPS",
    "ESPEAK",
    "FESTIVAL",
    "FESTIVAL_STRETCH",
    "FRAME_RATE",
    "FRAME_SIZE",
    "FestivalUser",
    "GAIN_DB",
    "HELDOUT_EVERY",
    "HELDOUT_PROMPTS",
    "LEAD_SILENCE_S",
    "MODEL_VOICE",
    "NO_AUGMENT",
    "NUMBERS",
    "PAUSE_S",
    "RECIPE_VERSION",
    "SAMPLE_RATE",
    "SPLITS",
    "STYLES_PER_VOICE",
    "Session",
    "TAIL_SILENCE_S",
    "TARGET_RMS_DB",
    "TRAIN_PROMPTS",
    "Turn",
    "UserVoice",
    "VOCAB_PATH",
    "Vocab",
    "WORD_GAP_S",
    "Word",
    "align_text",
    "cache_folder",
    "check_bases_take_variants",
    "check_gap",
    "codec_sha256",
    "corpus_figures",
    "dialogue_sessions",
    "espeak_variants",
    "festival_say",
    "festival_users",
    "gap_suffix",
    "mixed_variants",
    "model_reference_audio",
    "n_frames",
    "recipe",
    "recipe_hash",
    "session_engine",
    "sessions_sha256",
    "split_hash",
    "token_grid",
    "tokenised_split",
    "tool_versions",
    "user_words",
    "vocab",
    "voices",
]
