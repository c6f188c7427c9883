"""The dialogue corpus's user channel under noise or reverberation, tokenised by a codec and cached.

Only the user's audio changes (the model's channel and its text stream are the corpus's), so only the
user's codes are computed: ``[codebooks, frames]`` per session, the frames of the session's clean token
grid (vemi_eval.data.dialogue.token_grid), so they replace the grid's user rows one for one. Used by the
``lm_heldout`` measurement (a fixed condition along an SNR / RT60 ladder) and by the LM trainer's
``noise-aug`` option (a condition drawn per session and copy).

A condition is applied to the user's clean speech (``Session.user_audio(with_noise=False)``): noise is
mixed at an exact active-speech SNR (vemi_eval.data.noise), reverberation convolves with a synthetic
RIR of the given RT60. Babble is a mix of espeak-corpus training speakers' utterances (never a held-out
dialogue voice); the measurement and the augmentation draw different speakers (``babble_offset``).
Cached by (corpus recipe hash, codec sha256, split, limit, gap, the conditions' hash).
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from ..storage import write_atomic
from . import DataError
from . import dialogue as dlg
from .seeds import seed_of

NOISE_KINDS = ("white", "pink", "brown", "babble", "reverb")
BABBLE_TALKERS = 4
PARTIAL_SAVE_EVERY = 128  # sessions between saves of an unfinished tokenising (~2 min on one thread)


@dataclass(frozen=True)
class UserCondition:
    """What is done to one session's user channel: noise at an SNR, or reverberation at an RT60."""

    kind: str  # one of NOISE_KINDS
    snr_db: float | None = None  # noises
    rt60_s: float | None = None  # reverb
    seed: int = 0

    def __post_init__(self) -> None:
        if self.kind not in NOISE_KINDS:
            raise DataError(f"unknown user-channel condition {self.kind!r} (known: {', '.join(NOISE_KINDS)})")
        if self.kind == "reverb" and (self.rt60_s is None or self.rt60_s <= 0):
            raise DataError(f"reverb needs an RT60 > 0 s, got {self.rt60_s}")
        if self.kind != "reverb" and self.snr_db is None:
            raise DataError(f"{self.kind} noise needs an SNR")


def condition_seed(*parts: object) -> int:
    return seed_of(*parts, nbytes=4)


def babble_talkers(sample_rate: int, offset: int, n: int = BABBLE_TALKERS) -> list[np.ndarray]:
    """One utterance of each of ``n`` espeak-corpus training speakers, from the ``offset``-th on."""
    from .corpus import espeak_corpus

    seen: dict[str, np.ndarray] = {}
    for u in espeak_corpus("train", quick=True, sample_rate=sample_rate):
        if u.speaker not in seen:
            seen[u.speaker] = u.audio
        if len(seen) == offset + n:
            break
    talkers = list(seen.values())[offset:]
    if len(talkers) < n:
        raise DataError(f"the espeak corpus has fewer than {offset + n} training speakers for babble")
    return talkers


def apply_condition(
    audio: np.ndarray, cond: UserCondition, sample_rate: int, talkers: list[np.ndarray]
) -> np.ndarray:
    from .noise import make_noise, mix_at_snr, reverberate

    if cond.kind == "reverb":
        return reverberate(audio, float(cond.rt60_s), sample_rate, cond.seed)  # type: ignore[arg-type]
    noise = make_noise(cond.kind, audio.size, sample_rate, cond.seed, talkers=talkers)
    return mix_at_snr(audio, noise, float(cond.snr_db), sample_rate)  # type: ignore[arg-type]


def user_codes(
    split: str,
    conditions: Callable[[dlg.Session], UserCondition],
    key: dict,
    codec_checkpoint: str | os.PathLike | None = None,
    *,
    limit: int | None = None,
    codebooks: int = 8,
    answer_gap_s: float | None = None,
    babble_offset: int = 0,
    cache_dir: str | Path | None = None,
    log: Callable[[str], None] = print,
    save_every: int = PARTIAL_SAVE_EVERY,
) -> list[np.ndarray]:
    """The user's codes [codebooks, frames] (int64) of every session of the split (in session order) under
    ``conditions(session)``. ``key`` names the conditions (it is hashed into the cache path: the same
    key must mean the same conditions). Every ``save_every`` sessions the work so far is saved beside the
    cache file (``.partial``): an interrupted run (a training stopped while it tokenises its noisy copies,
    ~45 min for 3,200 sessions on one thread) goes on from there instead of from the first session."""
    import torch
    from safetensors.numpy import load_file
    from safetensors.numpy import save as save_bytes

    from reference_model import bundled_codec_weights, load_codec

    ckpt = Path(codec_checkpoint) if codec_checkpoint else bundled_codec_weights("tiny")
    if not ckpt.is_file():
        raise DataError(f"codec checkpoint not found: {ckpt}")
    sessions = dlg.dialogue_sessions(split, limit=limit, cache_dir=cache_dir, answer_gap_s=answer_gap_s)
    full_key = {**key, "babble_offset": babble_offset, "codebooks": codebooks}
    khash = hashlib.sha256(json.dumps(full_key, sort_keys=True).encode()).hexdigest()[:16]
    sha = dlg.codec_sha256(ckpt)
    name = (split if limit is None else f"{split}-{limit}") + dlg.gap_suffix(answer_gap_s)
    path = dlg.cache_folder(cache_dir) / f"tokens-{sha[:16]}" / f"{name}-user-{khash}.safetensors"
    if path.is_file():
        stored = load_file(str(path))
        return [stored[s.id].astype(np.int64) for s in sessions]
    partial = path.with_name(path.stem + ".partial.safetensors")
    out, manifest = _resume_partial(partial, full_key, sessions, conditions, log)
    codec = load_codec("tiny", ckpt)
    sr = int(codec.sample_rate)
    talkers: list[np.ndarray] | None = None

    def save(target: Path) -> None:  # atomic: a kill mid-write leaves the previous file whole
        target.parent.mkdir(parents=True, exist_ok=True)
        meta = {"key": json.dumps(full_key), "conditions": json.dumps(manifest)}
        write_atomic(target, save_bytes(out, metadata=meta))

    for i, s in enumerate(sessions):
        if s.id in out:
            continue
        cond = conditions(s)
        if cond.kind == "babble" and talkers is None:
            talkers = babble_talkers(sr, babble_offset)
        audio = apply_condition(s.user_audio(with_noise=False), cond, sr, talkers or [])
        frames = dlg.n_frames(s.n_samples, codec.frame_size)
        with torch.no_grad():
            codes = codec.encode(torch.from_numpy(audio).view(1, 1, -1))[0, :codebooks].numpy()
        if codes.shape[0] < codebooks:
            raise DataError(f"the codec gives {codes.shape[0]} codebooks; {codebooks} are needed")
        out[s.id] = codes[:, :frames].astype(np.int16)
        manifest.append({"session": s.id, **asdict(cond)})
        if (i + 1) % 16 == 0 or i + 1 == len(sessions):
            log(f"user channel under {key.get('name', 'conditions')}: {i + 1}/{len(sessions)} sessions")
        if len(out) % save_every == 0 and len(out) < len(sessions):
            save(partial)
    save(path)
    partial.unlink(missing_ok=True)
    return [out[s.id].astype(np.int64) for s in sessions]


def _resume_partial(
    partial: Path,
    full_key: dict,
    sessions: Sequence[dlg.Session],
    conditions: Callable[[dlg.Session], UserCondition],
    log: Callable[[str], None],
) -> tuple[dict[str, np.ndarray], list[dict]]:
    """The sessions an interrupted run finished, when its partial file is for these conditions (the
    key, and each kept session's condition drawn again, must match); otherwise nothing."""
    from safetensors import safe_open

    if not partial.is_file():
        return {}, []
    try:
        with safe_open(str(partial), framework="numpy") as f:
            meta = f.metadata() or {}
            kept = {name: f.get_tensor(name) for name in f.keys()}
        manifest = json.loads(meta.get("conditions", "[]"))
        same_key = json.loads(meta.get("key", "null")) == json.loads(json.dumps(full_key))
    except (OSError, ValueError, json.JSONDecodeError):
        same_key = False
    by_id = {s.id: s for s in sessions}
    if not same_key or any(
        m["session"] not in by_id or {"session": m["session"], **asdict(conditions(by_id[m["session"]]))} != m
        for m in manifest
    ):
        log(f"ignoring {partial.name}: it was made under other conditions")
        return {}, []
    log(f"resuming the user channel's tokens: {len(manifest)}/{len(sessions)} sessions done ({partial.name})")
    return {m["session"]: kept[m["session"]] for m in manifest}, manifest


def ladder_conditions(
    noises: Sequence[str], snrs: Sequence[float], rt60s: Sequence[float]
) -> list[UserCondition]:
    """The measurement's ladder: every noise at every SNR, then reverberation at every RT60 (seed 0:
    each session's own seed is mixed in by ``fixed``)."""
    out = [UserCondition(k, snr_db=float(s)) for k in noises for s in snrs]
    return out + [UserCondition("reverb", rt60_s=float(t)) for t in rt60s]


def fixed(cond: UserCondition) -> Callable[[dlg.Session], UserCondition]:
    """The same condition for every session, with a per-session noise draw (the session's seed)."""

    def pick(s: dlg.Session) -> UserCondition:
        return UserCondition(cond.kind, cond.snr_db, cond.rt60_s, condition_seed(s.seed, cond.kind))

    return pick
