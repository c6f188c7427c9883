"""Build a :class:`DuplexModel` variant from a :class:`DuplexSpec`: load, transform, allocate state."""

from __future__ import annotations

import torch

from .duplex import DuplexModel, DuplexSpec
from .enhancements import FLAGS, parse_flags
from .report import FlagReport


def check_weights(spec: DuplexSpec) -> None:
    """Check the spec's LM and codec checkpoints against their configs from the files' headers alone
    (models built on ``meta``, no weight read): a missing file, a pickle, a missing, extra, mis-shaped or
    mis-typed key raises CheckpointError before any work. Random and bundled weights need no check; the
    configs always are (an unknown preset, a missing or malformed config JSON: ConfigError)."""
    from .checkpoint import check_checkpoint
    from .codec.config import codec_config
    from .codec.load import with_checkpoint_structure
    from .codec.model import MimiCodec
    from .config import load_lm_config
    from .lm.model import LMModel

    load_lm_config(spec.lm)
    codec_config(spec.codec)

    def codec_of_file() -> MimiCodec:
        return MimiCodec(with_checkpoint_structure(codec_config(spec.codec), spec.codec_checkpoint))

    parts = (
        ("LM checkpoint", spec.lm_checkpoint, lambda: LMModel(load_lm_config(spec.lm))),
        ("codec checkpoint", spec.codec_checkpoint, codec_of_file),
    )
    for what, path, build in parts:
        if path is None or str(path) == "random":
            continue
        with torch.device("meta"):
            model = build()
        check_checkpoint(model, path, what=what)


def build_duplex(spec: DuplexSpec) -> DuplexModel:
    """Load LM and codec, apply the spec's flags in their canonical order (model stage, then runtime
    stage), return the variant; ``duplex.report()`` says what every flag did.

    Flags are parsed and checked before any weight is loaded, so a bad flag costs nothing.
    """
    from .codec import CodecStreamer, load_codec
    from .codec.load import resolved_checkpoint as codec_file
    from .lm import Streamer, load_lm
    from .lm.load import resolved_checkpoint as lm_file
    from .pairing import check_pair

    flags = parse_flags(spec.flags, device=spec.device)  # canonical order
    # an LM reads its own codec's codes: a mismatched pair is refused before any weight is loaded
    lm_path = lm_file(spec.lm, spec.lm_checkpoint)
    codec_path = codec_file(spec.codec, spec.codec_checkpoint)
    pair = check_pair(*(None if p is None or str(p) == "random" else p for p in (lm_path, codec_path)))
    torch.manual_seed(spec.seed)
    lm = load_lm(spec.lm, spec.lm_checkpoint, device=spec.device, dtype=spec.dtype)
    codec = load_codec(spec.codec, spec.codec_checkpoint, device=spec.device, dtype=spec.codec_dtype)
    reports: dict[str, FlagReport] = {}
    for flag in flags:
        if FLAGS[flag.name].stage == "model":
            reports[flag.name] = FLAGS[flag.name].load_apply()(lm, codec, flag.value)
    torch.manual_seed(spec.seed)  # sampling starts from the same state whatever the flags did
    streamer = Streamer(
        lm,
        temp=spec.temp,
        temp_text=spec.temp_text,
        top_k=spec.top_k,
        top_k_text=spec.top_k_text,
        batch_size=spec.batch_size,
    )
    codec_streamer = CodecStreamer(codec, batch_size=spec.batch_size)
    duplex = DuplexModel(lm, codec, streamer, codec_streamer, spec, flags)
    duplex.flag_reports.update(reports)
    duplex.pairing = pair
    for flag in flags:
        if FLAGS[flag.name].stage == "runtime":
            duplex.flag_reports[flag.name] = FLAGS[flag.name].load_apply()(duplex, flag.value)
    return duplex
