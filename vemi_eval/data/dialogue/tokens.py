"""The dialogue corpus tokenised through a codec: the trainer's token grids (text, model audio, user audio),
cached by recipe hash and codec sha256, built by worker processes."""

from __future__ import annotations

import json
import os
from functools import lru_cache
from pathlib import Path

import numpy as np

from ...storage import file_sha256
from .. import DataError
from .sessions import Session, check_gap, corpus_figures, dialogue_sessions, gap_suffix
from .spec import FRAME_RATE, vocab
from .synth import _atomic_write, cache_folder


# --- tokenisation through a codec ---------------------------------------------------------------------
def codec_sha256(checkpoint: str | os.PathLike) -> str:
    return file_sha256(checkpoint)


def token_grid(session: Session, codec, codebooks: int = 8) -> np.ndarray:
    """[1 + 2 * codebooks, frames]: text, model audio codes, user audio codes (not delayed)."""
    import torch

    def encode(audio: np.ndarray) -> np.ndarray:
        with torch.no_grad():
            codes = codec.encode(torch.from_numpy(audio).view(1, 1, -1))
        if codes.shape[1] < codebooks:
            raise DataError(f"the codec gives {codes.shape[1]} codebooks; {codebooks} are needed")
        return codes[0, :codebooks].numpy()

    model = encode(session.model_audio())
    user = encode(session.user_audio())
    text = session.text_tokens(codec.frame_size)[None]
    T = min(text.shape[1], model.shape[1], user.shape[1])
    return np.concatenate([text[:, :T], model[:, :T], user[:, :T]], axis=0).astype(np.int16)


def tokenised_split(
    split: str,
    codec_checkpoint: str | os.PathLike | None = None,
    *,
    limit: int | None = None,
    codebooks: int = 8,
    cache_dir: str | Path | None = None,
    shard_size: int = 64,
    answer_gap_s: float | None = None,
    workers: int = 1,
    log=print,
) -> Path:
    """Tokenise a split with the tiny codec (its bundled weights unless ``codec_checkpoint``); returns the
    folder of safetensors shards (one tensor per session) plus ``manifest.json``. Cached by
    (recipe hash, codec sha256, split, limit, answer gap); shards already written are kept, so an
    interrupted run continues. ``workers`` > 1 plans (synthesises) the sessions and tokenises the shards in
    that many processes (one torch thread each); the shards are the same bytes whatever the count."""
    import torch

    from reference_model import bundled_codec_weights, load_codec

    ckpt = Path(codec_checkpoint) if codec_checkpoint else bundled_codec_weights("tiny")
    if not ckpt.is_file():
        raise DataError(f"codec checkpoint not found: {ckpt}")
    if workers < 1:
        raise DataError(f"workers must be >= 1, got {workers}")
    sha = codec_sha256(ckpt)
    name = (split if limit is None else f"{split}-{limit}") + gap_suffix(answer_gap_s)
    folder = cache_folder(cache_dir) / f"tokens-{sha[:16]}" / name
    manifest_path = folder / "manifest.json"
    # before planning: a cache hit starts no worker and reads no clip. A manifest from before the
    # per-session voices were recorded is rewritten (its shards are kept: they are the same bytes).
    if manifest_path.is_file() and {"groups", "engine_groups"} <= set(json.loads(manifest_path.read_text())):
        return folder
    sessions = dialogue_sessions(
        split, limit=limit, cache_dir=cache_dir, answer_gap_s=answer_gap_s, workers=workers
    )
    folder.mkdir(parents=True, exist_ok=True)
    todo = [
        (folder / f"shard_{start // shard_size:04d}.safetensors", sessions[start : start + shard_size])
        for start in range(0, len(sessions), shard_size)
    ]
    todo = [(shard, part) for shard, part in todo if not shard.exists()]
    if workers > 1 and len(todo) > 1:
        import multiprocessing as mp

        # spawn, not fork: a forked torch inherits the parent's thread pool state
        with mp.get_context("spawn").Pool(min(workers, len(todo))) as pool:
            for done, shard in enumerate(
                pool.imap_unordered(_tokenise_shard, [(str(ckpt), codebooks, sh, part) for sh, part in todo]),
                1,
            ):
                log(f"tokenised shard {done}/{len(todo)} of {split} ({Path(shard).name})")
    elif todo:
        codec = load_codec("tiny", ckpt)
        for shard, part in todo:
            _write_shard(shard, {s.id: torch.from_numpy(token_grid(s, codec, codebooks)) for s in part})
            log(f"tokenised {shard.name} of {split} ({len(todo)} shards to write)")
    manifest = {
        "format": "token grids [1 + 2 x codebooks, frames] int16: row 0 text, then model, then user codes",
        "corpus": "vemi_eval.data.dialogue",
        "recipe_hash": folder.parent.parent.name,
        "split": split,
        "codec_checkpoint": ckpt.name,
        "codec_sha256": sha,
        "codebooks": codebooks,
        "frame_rate": FRAME_RATE,
        "vocab": list(vocab().tokens),
        **({"answer_gap_s": check_gap(answer_gap_s)} if gap_suffix(answer_gap_s) else {}),
        **corpus_figures(sessions),
        # which user voice (and engine) each session has, so that the trainer reports held-out accuracy
        # per voice (and per engine)
        "groups": {"by": "user voice", "of": {s.id: s.voice.variant for s in sessions}},
        "engine_groups": {"by": "user engine", "of": {s.id: s.voice.engine for s in sessions}},
    }
    _atomic_write(manifest_path, json.dumps(manifest, indent=1).encode())
    return folder


def _write_shard(shard: Path, grids: dict) -> None:
    from safetensors.torch import save_file

    tmp = shard.with_name(shard.name + ".tmp")
    save_file(grids, str(tmp))
    os.replace(tmp, shard)


def _tokenise_shard(job: tuple[str, int, Path, list[Session]]) -> str:
    """One shard in a worker process (module level, so that a spawned process can import it)."""
    import torch

    torch.set_num_threads(1)
    ckpt, codebooks, shard, part = job
    codec = _worker_codec(ckpt)
    _write_shard(shard, {s.id: torch.from_numpy(token_grid(s, codec, codebooks)) for s in part})
    return str(shard)


@lru_cache(maxsize=1)
def _worker_codec(ckpt: str):
    from reference_model import load_codec

    return load_codec("tiny", ckpt)
