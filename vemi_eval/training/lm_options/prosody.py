"""Option ``prosody-cond`` (enhancement 6.1): explicit prosody conditioning of the LM.

What the corpus lets us teach: its model voice says every word with one fixed prosody (one festival clip
per word), so there is nothing to condition on until the data varies. The option renders, once and
cached, a prosodic copy of every training session's model channel: every answer pitch-shifted by the
session's ``st`` semitones (librosa's phase-vocoder pitch shift, duration kept, so the text stream and
its timing stay exact) at the session's gain ``gain_db``, tokenised with the corpus's codec. At each
step a share ``p`` of the batch items take their model audio streams from the copy, and every item gets
its requested prosody as features ``f = [st / 4, gain_db / 6]`` (zero for a plain item) through a learned
projection (zero at the start) added to the summed input embeddings at every frame, as Moshi's
conditioners add theirs. The request is a session-level style (a pitch offset and a level), not a
per-frame contour: a per-frame voicing or energy contour taken from the target speech would tell the
model *when* to answer, which is the task's turn-taking, so it is left out.

Export: the LM file is the plain model (features zero: exactly the plain model's behaviour, no key
added); the projection goes to ``<out stem>.prosody.safetensors`` beside it, which a measurement (or a
user) adds to the streamer's condition, ``streamer.condition = W f``.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import torch
from torch import nn

from .base import LMOption, OptionContext, OptionError

SHIFTS = tuple(s for s in range(-4, 5) if s != 0)  # semitones a copy may be shifted by
GAIN_DB = (-6.0, 6.0)
FEATURE_SCALE = (4.0, 6.0)  # st / 4, gain / 6: features within [-1, 1]


def features(st: float, gain_db: float) -> list[float]:
    return [st / FEATURE_SCALE[0], gain_db / FEATURE_SCALE[1]]


def prosody_file(lm_checkpoint: str | os.PathLike) -> Path:
    p = Path(lm_checkpoint)
    return p.with_name(p.stem + ".prosody.safetensors")


def load_projection(lm_checkpoint: str | os.PathLike | None) -> torch.Tensor | None:
    """The projection [dim, 2] shipped beside an LM checkpoint trained with the option (None: none)."""
    from safetensors.torch import load_file

    if lm_checkpoint is None or not prosody_file(lm_checkpoint).is_file():
        return None
    return load_file(str(prosody_file(lm_checkpoint)))["proj.weight"].float()


def session_style(session_id: str) -> tuple[int, float]:
    """The copy's (semitones, gain dB) of a session, from its id alone (every run draws the same)."""
    rng = np.random.default_rng(
        int.from_bytes(hashlib.sha256(f"prosody/{session_id}".encode()).digest()[:8], "little")
    )
    return int(SHIFTS[int(rng.integers(len(SHIFTS)))]), float(rng.uniform(*GAIN_DB))


def shifted_clip(folder: Path, word: str, st: int) -> np.ndarray:
    """The model voice's clip of ``word`` pitch-shifted by ``st`` semitones (cached beside the corpus's)."""
    import librosa

    from vemi_eval.data import dialogue as dlg

    def make() -> np.ndarray:
        clip = dlg._model_clip(folder, word)
        return librosa.effects.pitch_shift(clip, sr=dlg.SAMPLE_RATE, n_steps=st).astype(np.float32)

    return dlg._cached_clip(folder / "words" / f"model_{word}_st{st:+d}.npy", make)


def styled_model_audio(session, st: int, gain_db: float) -> np.ndarray:
    from vemi_eval.data.audio import dither

    out = np.zeros(session.n_samples, np.float32)
    for turn in session.turns:
        w = turn.answer
        clip = shifted_clip(session.folder, w.text, st)
        out[w.start : w.start + clip.size] += clip[: session.n_samples - w.start]
    return dither(out * np.float32(10 ** (gain_db / 20)), session.seed + 1) if out.size else out


def styled_copies(sessions, codec_checkpoint, dep_q: int, log) -> dict[str, torch.Tensor]:
    """Session id -> model audio codes [dep_q, T] of its prosodic copy (tokenised once, cached)."""
    from safetensors.torch import load_file, save_file

    from reference_model import bundled_codec_weights, load_codec
    from vemi_eval.data import dialogue as dlg

    ckpt = Path(codec_checkpoint) if codec_checkpoint else bundled_codec_weights("tiny")
    sha = dlg.codec_sha256(ckpt)[:16]
    ids = [s.id for s in sessions]
    key = hashlib.sha256(json.dumps([ids, SHIFTS, GAIN_DB, dep_q]).encode()).hexdigest()[:12]
    path = dlg.cache_folder() / f"prosody-{sha}" / f"{key}.safetensors"
    if path.is_file():
        return load_file(str(path))
    codec = load_codec("tiny", ckpt)
    out = {}
    for i, s in enumerate(sessions):
        st, gain = session_style(s.id)
        with torch.no_grad():
            codes = codec.encode(torch.from_numpy(styled_model_audio(s, st, gain)).view(1, 1, -1))
        out[s.id] = codes[0, :dep_q].to(torch.int16).contiguous()
        if (i + 1) % 40 == 0:
            log(f"prosody-cond: tokenised {i + 1}/{len(sessions)} prosodic copies")
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    save_file(out, str(tmp))
    os.replace(tmp, path)
    return out


class ProsodyConditioning(nn.Module):
    """feats -> ``scale * W feats``. W starts at zero (a warm start begins at the plain model); ``scale``
    multiplies its effective learning rate (AdamW moves a weight by about lr per step, and a warm start's
    lr is small). The shipped projection has the scale folded in."""

    def __init__(self, dim: int, scale: float = 1.0) -> None:
        super().__init__()
        self.proj = nn.Linear(2, dim, bias=False)
        nn.init.zeros_(self.proj.weight)
        self.scale = scale

    def forward(self, feats: torch.Tensor) -> torch.Tensor:
        """feats [B, 2] -> offsets [B, 1, dim]."""
        return self.scale * self.proj(feats)[:, None, :]


@dataclass
class ProsodyCond(LMOption):
    name: ClassVar[str] = "prosody-cond"
    p: float = 0.75  # share of batch items whose model audio comes from the prosodic copy
    lr_scale: float = 30.0  # the projection's learning-rate multiplier (see ProsodyConditioning)

    def __post_init__(self) -> None:
        if not 0.0 <= self.p <= 1.0:
            raise ValueError(f"p must be in [0, 1], got {self.p}")
        if self.lr_scale <= 0:
            raise ValueError(f"lr_scale must be > 0, got {self.lr_scale}")

    def setup(self, ctx: OptionContext) -> None:
        from vemi_eval.data import dialogue as dlg

        if ctx.corpus is None:
            raise OptionError(
                "prosody-cond renders the dialogue corpus's model voice; train on it (no --data)"
            )
        names = []
        for f in sorted(Path(ctx.train.source).glob("*.safetensors")):
            from safetensors import safe_open

            with safe_open(str(f), framework="pt") as h:
                names += sorted(h.keys())
        sessions = {s.id: s for s in dlg.dialogue_sessions(ctx.corpus.split, limit=ctx.corpus.train_sessions)}
        if len(names) != len(ctx.train.grids) or any(n not in sessions for n in names):
            raise OptionError(
                f"prosody-cond: the token grids of {ctx.train.source} are not the corpus's sessions"
            )
        self.ids = names
        self.dep_q = ctx.cfg.dep_q
        self.copies = styled_copies(
            [sessions[n] for n in names], ctx.corpus.codec_checkpoint, ctx.cfg.dep_q, ctx.log
        )
        self.styles = {n: session_style(n) for n in names}
        self.cond = ProsodyConditioning(ctx.cfg.dim, self.lr_scale)
        self.out_path = ctx.out_path
        self._feats: torch.Tensor | None = None
        self.styled_items = 0

    def recipe(self) -> dict[str, Any]:
        return {
            **super().recipe(),
            "shifts_st": list(SHIFTS),
            "gain_db": list(GAIN_DB),
            "features": "st/4, gain_db/6",
        }

    def trainable(self) -> nn.Module:
        return self.cond

    def transform(
        self, batch: torch.Tensor, plan: list[tuple[int, int]], grids: list[torch.Tensor]
    ) -> torch.Tensor:
        feats = torch.zeros(batch.shape[0], 2)
        for b, (i, start) in enumerate(plan):
            if self.rng.random() >= self.p:
                continue
            sid = self.ids[i]
            copy = self.copies[sid][:, start : start + batch.shape[2]].to(torch.long)
            n = min(copy.shape[1], int((batch[b, 1] != -1).sum()))
            batch[b, 1 : 1 + self.dep_q, :n] = copy[:, :n]
            feats[b] = torch.tensor(features(*self.styles[sid]))
            self.styled_items += 1
        self._feats = feats
        return batch

    def input_offset(self, lm, batch: torch.Tensor) -> torch.Tensor | None:
        if self._feats is None:
            return None
        return self.cond(self._feats.to(batch.device)).to(lm.dtype)

    def export(self, lm, tensors: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        from ..state import write_weights

        if self.out_path is not None:
            weight = {"proj.weight": self.cond.scale * self.cond.proj.weight.detach().float()}
            meta = {
                "features": "st/4, gain_db/6",
                "added_to": "the summed input embeddings (streamer.condition)",
            }
            write_weights(prosody_file(self.out_path), weight, meta)
        return tensors

    def report(self) -> dict[str, Any]:
        return {
            "prosody_file": None if self.out_path is None else prosody_file(self.out_path).name,
            "projection_norm": float(self.cond.scale * self.cond.proj.weight.detach().norm()),
            "styled_items": self.styled_items,
            "sessions_with_copies": len(self.copies),
        }
