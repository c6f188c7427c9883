"""Moshi's LM objective on token grids: the data (a folder of grids), crops and batches, the delayed
teacher-forced forward, the loss and its held-out evaluation. The trainer (``training/lm.py``), its
options (``training/lm_options``) and the held-out measurement import it; it imports none of them.

See ``training/lm.py`` for the objective's definition and the data format.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.nn import functional as F

from reference_model.checkpoint import read_safetensors
from reference_model.config import LMConfig
from reference_model.lm.model import LMModel
from vemi_eval.errors import DataError, one_line
from vemi_eval.stats import counts_by_group

ZERO = -1  # Moshi's zero token: zero embedding as input, masked as target


class TrainDataError(DataError):
    """Unusable training data (one line; the CLI exits 2). A resume state of another recipe raises
    training.state.RecipeMismatchError, for both trainers."""


# --- data ------------------------------------------------------------------------------------------
@dataclass
class TokenData:
    """Token grids [1 + n_q, T] (int64) and where they came from."""

    grids: list[torch.Tensor]
    sha256: str
    source: str
    manifest: dict[str, Any] = field(default_factory=dict)
    names: list[str] = field(default_factory=list)  # each grid's tensor name (a session id), or empty

    def groups(self, entry_name: str = "groups") -> tuple[str, list[str]] | None:
        """(what the groups are, each grid's group) from the manifest's ``groups`` entry
        ({"by": "user voice", "of": {name: group}}; the dialogue corpus's ``engine_groups`` by user
        engine), or None when it has none or misses a grid."""
        entry = self.manifest.get(entry_name)
        if not isinstance(entry, dict) or len(self.names) != len(self.grids):
            return None
        of = entry.get("of") or {}
        if not all(n in of for n in self.names):
            return None
        return str(entry.get("by", "group")), [str(of[n]) for n in self.names]

    @property
    def frames(self) -> int:
        return sum(int(g.shape[1]) for g in self.grids)


def load_token_folder(folder: str | os.PathLike, num_streams: int) -> TokenData:
    """Every tensor of every ``*.safetensors`` in ``folder`` (sorted by file, then tensor name)."""
    folder = Path(folder)
    files = sorted(folder.glob("*.safetensors")) if folder.is_dir() else []
    if not files:
        raise TrainDataError(f"no .safetensors token grids in {folder}")
    h = hashlib.sha256()
    grids, names = [], []
    for f in files:
        h.update(f.name.encode())
        h.update(f.read_bytes())
        for name, t in sorted(read_safetensors(f).items()):
            if t.dtype.is_floating_point or t.dim() != 2 or t.shape[0] != num_streams or t.shape[1] < 1:
                raise TrainDataError(
                    f"{f.name}:{name} is {t.dtype} {list(t.shape)}; expected an integer grid "
                    f"[{num_streams}, T] (1 text + n_q audio streams, T >= 1 frames)"
                )
            if bool((t == ZERO).all()):  # nothing to predict nor to condition on
                raise TrainDataError(f"{f.name}:{name} holds only -1 (ignored frames): no token to train on")
            grids.append(t.to(torch.long))
            names.append(name)
    return TokenData(grids, h.hexdigest(), str(folder), read_manifest(folder / "manifest.json"), names)


def read_manifest(path: Path) -> dict[str, Any]:
    """A token folder's optional ``manifest.json``: a JSON object, or TrainDataError naming the file."""
    if not path.is_file():
        return {}
    try:
        manifest = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError) as exc:
        raise TrainDataError(f"cannot read {path}: {one_line(exc)}") from None
    if not isinstance(manifest, dict):
        raise TrainDataError(f"{path} is a JSON {type(manifest).__name__}; expected an object")
    return manifest


def check_token_range(data: TokenData, cfg: LMConfig) -> None:
    for i, g in enumerate(data.grids):
        text, audio = g[0], g[1:]
        bad_text = ((text < ZERO) | (text >= cfg.text_card)).any()
        bad_audio = ((audio < ZERO) | (audio >= cfg.card)).any()
        if bad_text or bad_audio:
            what = "text" if bad_text else "audio"
            raise TrainDataError(
                f"grid {i} of {data.source} has {what} tokens outside [-1, "
                f"{cfg.text_card if bad_text else cfg.card}) (text_card {cfg.text_card}, card {cfg.card})"
            )


def crop_plan(
    grids: list[torch.Tensor], rng: np.random.Generator, batch_size: int, seq_len: int
) -> list[tuple[int, int]]:
    """(grid index, start frame) per batch item: a random grid, a random crop of ``seq_len`` frames."""
    plan = []
    for _ in range(batch_size):
        i = int(rng.integers(len(grids)))
        T = grids[i].shape[1]
        plan.append((i, int(rng.integers(0, T - seq_len + 1)) if T > seq_len else 0))
    return plan


def crops(grids: list[torch.Tensor], plan: list[tuple[int, int]], seq_len: int) -> torch.Tensor:
    """The planned crops as a batch [B, K, seq_len]; shorter grids padded with -1."""
    out = torch.full((len(plan), grids[0].shape[0], seq_len), ZERO, dtype=torch.long)
    for b, (i, start) in enumerate(plan):
        crop = grids[i][:, start : start + seq_len]
        out[b, :, : crop.shape[1]] = crop
    return out


def sample_batch(
    grids: list[torch.Tensor], rng: np.random.Generator, batch_size: int, seq_len: int
) -> torch.Tensor:
    """A random crop of ``seq_len`` frames of a random grid per item; shorter grids padded with -1."""
    return crops(grids, crop_plan(grids, rng, batch_size, seq_len), seq_len)


def drop_user_tokens(codes: torch.Tensor, dep_q: int, p: float, rng: np.random.Generator) -> None:
    """In place: each user-stream token becomes the zero token with probability ``p`` (a regulariser
    against memorising voices; user streams are inputs only, never targets)."""
    if p <= 0:
        return
    user = codes[:, 1 + dep_q :]
    mask = torch.from_numpy(rng.random(tuple(user.shape)) < p)
    user.masked_fill_(mask, ZERO)


def eval_windows(grids: list[torch.Tensor], seq_len: int) -> list[torch.Tensor]:
    """Consecutive windows of every grid (deterministic), each [1, K, <= seq_len]."""
    return [g[None, :, s : s + seq_len] for g in grids for s in range(0, g.shape[1], seq_len)]


# --- the objective -----------------------------------------------------------------------------------
def delay_grid(lm: LMModel, codes: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """codes [B, K, T] -> (inputs, targets), both [B, K, T], as Moshi's ``LMModel.forward``: stream k is
    shifted right by its delay with the start token in front, the sequence opens with a column of start
    tokens, and inputs are that sequence without its last column."""
    B, K, T = codes.shape
    initial = torch.tensor([lm.text_card] + [lm.card] * lm.n_q, device=codes.device).view(1, K, 1)
    delayed = initial.expand(B, K, T).clone()
    for k, d in enumerate(lm.delays):
        delayed[:, k, d:] = codes[:, k, : T - d]
    inputs = torch.cat([initial.expand(B, K, 1), delayed[:, :, :-1]], dim=2)
    return inputs, delayed


def temporal_forward(
    lm: LMModel, codes: torch.Tensor, input_offset: torch.Tensor | None = None
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """codes [B, K, T] -> (temporal hidden states [B, T, dim], text logits [B, T, text_card], delayed
    targets [B, K, T]): the teacher-forced temporal transformer alone (what the text stream needs).
    ``input_offset`` (broadcastable to [B, T, dim]) is added to the summed input embeddings (a recipe
    option's conditioning)."""
    inputs, targets = delay_grid(lm, codes)
    B, K, T = codes.shape
    x = lm.embed(inputs)
    if input_offset is not None:
        x = x + input_offset
    cos, sin = lm.transformer.rope_angles(torch.arange(T, device=codes.device).expand(B, T))
    for layer in lm.transformer.layers:
        x = layer.forward_sequence(x, cos, sin)
    hidden = lm.out_norm(x)
    return hidden, lm.text_linear(hidden), targets


def teacher_forced_logits(
    lm: LMModel,
    codes: torch.Tensor,
    depth_frames: torch.Tensor | None = None,
    input_offset: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """codes [B, K, T] -> (text logits [B, T, text_card], audio logits [F, dep_q, card], delayed targets
    [B, K, T]). Text position t predicts column t of the delayed grid. The depth transformer runs on the
    flat frames ``depth_frames`` (indices into B * T; every frame when None), in that order."""
    hidden, text_logits, targets = temporal_forward(lm, codes, input_offset)
    B, K, T = codes.shape
    # Depth stage, per frame: codebook k sees the delayed true token of stream k (text for k = 0).
    depth_in = targets[:, : lm.dep_q].transpose(1, 2).reshape(B * T, lm.dep_q)
    flat_hidden = hidden.reshape(B * T, -1)
    if depth_frames is not None:
        depth_in, flat_hidden = depth_in[depth_frames], flat_hidden[depth_frames]
    audio_logits = lm.depformer_forward_parallel(flat_hidden, depth_in)
    return text_logits, audio_logits, targets


def valid_targets(lm: LMModel, targets: torch.Tensor) -> torch.Tensor:
    """Targets that carry a token: not a start-token fill (t < delay) and not the zero token."""
    T = targets.shape[2]
    t = torch.arange(T, device=targets.device).view(1, 1, T)
    delays = torch.tensor(lm.delays, device=targets.device).view(1, -1, 1)
    return (t >= delays) & (targets != ZERO)


@dataclass
class LossWeights:
    text_padding_weight: float = 0.5  # moshi-finetune's text_padding_weight (PAD and EPAD targets)
    first_codebook_weight: float = 10.0  # moshi-finetune's first_codebook_weight_multiplier


@dataclass
class LossParts:
    total: torch.Tensor
    text: float
    audio: float
    audio_per_codebook: list[float]
    text_word_correct: int  # argmax hits on targets that are words (not padding), for accuracy
    text_words: int
    # What the loss was computed from, for the options that add a term to it (distillation): the
    # logits and each position's weight in the hard-label loss (0 where masked).
    text_logits: torch.Tensor | None = None  # [B, T, text_card]
    audio_logits: torch.Tensor | None = None  # [F, dep_q, card]
    text_weight: torch.Tensor | None = None  # [B, T]
    audio_weight: torch.Tensor | None = None  # [F, dep_q]


@dataclass
class TextTerms:
    """The text stream's part of the objective, per position [B, T]."""

    targets: torch.Tensor
    ok: torch.Tensor  # a real target (not a start-token fill, not the zero token)
    is_pad: torch.Tensor  # PAD or EPAD target
    weight: torch.Tensor  # its weight in the loss (padding at text_padding_weight, 0 where not ok)
    ce: torch.Tensor  # cross-entropy [B * T]
    loss: torch.Tensor  # the weighted mean


def text_terms(
    lm: LMModel, text_logits: torch.Tensor, targets: torch.Tensor, valid: torch.Tensor, weights: LossWeights
) -> TextTerms:
    pad_ids = (lm.text_padding_token_id, lm.end_of_text_padding_id)
    text_t, text_ok = targets[:, 0], valid[:, 0]
    is_pad = (text_t == pad_ids[0]) | (text_t == pad_ids[1])
    w_text = text_ok.float() * torch.where(is_pad, weights.text_padding_weight, 1.0)
    ce_text = F.cross_entropy(
        text_logits.reshape(-1, lm.text_card).float(),
        text_t.masked_fill(~text_ok, 0).reshape(-1),
        reduction="none",
    )
    text_loss = (ce_text * w_text.reshape(-1)).sum() / w_text.sum().clamp(min=1e-9)
    return TextTerms(text_t, text_ok, is_pad, w_text, ce_text, text_loss)


def pick_depth_frames(codes: torch.Tensor, fraction: float, rng: np.random.Generator) -> torch.Tensor | None:
    """A uniform random share of the frames that are not padding (None: all frames). The depth
    transformer is per frame, so a subset is an unbiased estimate of its loss at a fraction of the cost."""
    if fraction >= 1.0:
        return None
    B, _, T = codes.shape
    real = torch.nonzero((codes[:, 1] != ZERO).reshape(-1)).view(-1).cpu().numpy()
    n = max(1, int(round(fraction * len(real))))
    return torch.from_numpy(np.sort(rng.permutation(real)[:n])).to(codes.device)


def moshi_loss(
    lm: LMModel,
    codes: torch.Tensor,
    weights: LossWeights,
    depth_frames: torch.Tensor | None = None,
    input_offset: torch.Tensor | None = None,
) -> LossParts:
    text_logits, audio_logits, targets = teacher_forced_logits(lm, codes, depth_frames, input_offset)
    valid = valid_targets(lm, targets)
    B, K, T = targets.shape
    text = text_terms(lm, text_logits, targets, valid, weights)
    text_t, text_ok, is_pad, w_text, text_loss = text.targets, text.ok, text.is_pad, text.weight, text.loss

    audio_t = targets[:, 1 : 1 + lm.dep_q].transpose(1, 2).reshape(B * T, lm.dep_q)
    audio_valid = valid[:, 1 : 1 + lm.dep_q].transpose(1, 2).reshape(B * T, lm.dep_q)
    if depth_frames is not None:
        audio_t, audio_valid = audio_t[depth_frames], audio_valid[depth_frames]
    audio_ok = audio_valid.float()
    ce_audio = F.cross_entropy(
        audio_logits.reshape(-1, lm.card).float(),
        audio_t.masked_fill(~audio_valid, 0).reshape(-1),
        reduction="none",
    ).view_as(audio_ok)
    cb_w = torch.ones(lm.dep_q, device=codes.device)
    cb_w[0] = weights.first_codebook_weight
    w_audio = audio_ok * cb_w.view(1, -1)
    audio_loss = (ce_audio * w_audio).sum() / w_audio.sum().clamp(min=1e-9)
    per_cb = (ce_audio * audio_ok).sum(dim=0) / audio_ok.sum(dim=0).clamp(min=1)

    words = text_ok & ~is_pad
    hits = (text_logits.argmax(-1) == text_t) & words
    return LossParts(
        text_loss + audio_loss,
        float(text_loss.detach()),
        float(audio_loss.detach()),
        [float(v) for v in per_cb.detach()],
        int(hits.sum()),
        int(words.sum()),
        text_logits,
        audio_logits,
        w_text,
        w_audio,
    )


@torch.no_grad()
def evaluate(
    lm: LMModel,
    grids: list[torch.Tensor],
    seq_len: int,
    weights: LossWeights,
    groups: tuple[str, list[str]] | None = None,
    engines: tuple[str, list[str]] | None = None,
) -> dict[str, Any]:
    """Teacher-forced figures on held-out grids: losses (mean over windows) and the text stream's word
    accuracy (argmax at the frames where a word token is the target). With ``groups`` (what they are,
    each grid's group: the user voice of each held-out session), the accuracy per group too: a pooled
    figure hides the few voices the model does not generalise to. ``engines`` likewise, per speech engine."""
    was = lm.training
    lm.eval()
    text, audio, per_cb, hits, words, n = 0.0, 0.0, None, 0, 0, 0
    tallies: list[tuple[int, int, int]] = []  # (grid, word hits, words) per window
    for i, g in enumerate(grids):
        for w in eval_windows([g], seq_len):
            parts = moshi_loss(lm, w.to(lm.device), weights)
            text += parts.text
            audio += parts.audio
            per_cb = (
                parts.audio_per_codebook
                if per_cb is None
                else [a + b for a, b in zip(per_cb, parts.audio_per_codebook)]
            )
            hits += parts.text_word_correct
            words += parts.text_words
            n += 1
            tallies.append((i, parts.text_word_correct, parts.text_words))
    lm.train(was)
    if n == 0:
        return {"windows": 0}
    out: dict[str, Any] = {
        "windows": n,
        "text_loss": text / n,
        "audio_loss": audio / n,
        "audio_ce_per_codebook": [v / n for v in per_cb or []],
        "text_word_accuracy_teacher_forced": hits / words if words else None,
        "text_words": words,
    }
    for key, grouping in (("text_word_accuracy_by_group", groups), ("text_word_accuracy_by_engine", engines)):
        if grouping is not None:
            of = counts_by_group(((grouping[1][i], c, w) for i, c, w in tallies), total="words")
            out[key] = {
                "by": grouping[0],
                "of": {
                    k: {**t, "accuracy": t["correct"] / t["words"] if t["words"] else None}
                    for k, t in of.items()
                },
            }
    return out


# --- recipe, state -----------------------------------------------------------------------------------
