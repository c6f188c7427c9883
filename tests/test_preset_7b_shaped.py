"""The 7B-shaped preset: the 7B's layers (temporal and depth) and cards, with 2 temporal layers."""

from __future__ import annotations

import json

from reference_model import model_info
from reference_model.config import LM_PRESETS, PRESETS_DIR, load_lm_config


def test_it_is_the_7b_with_two_temporal_layers() -> None:
    seven = json.loads((PRESETS_DIR / LM_PRESETS["moshi-7b"]).read_text())
    shaped = json.loads((PRESETS_DIR / LM_PRESETS["moshi-7b-shaped"]).read_text())
    assert shaped.pop("num_layers") == 2
    seven.pop("num_layers")
    assert shaped == seven
    cfg = load_lm_config("moshi-7b-shaped")
    assert (cfg.dim, cfg.num_heads, cfg.dim_feedforward, cfg.depformer_dim) == (4096, 32, 16896, 1024)


def test_model_info_says_what_it_needs() -> None:
    seven, shaped = model_info("moshi-7b"), model_info("moshi-7b-shaped")
    # Per temporal layer the same weights; the whole depth transformer, embeddings and heads of the 7B.
    out_norm = 4096  # counted with the temporal transformer, once
    per_layer = (shaped["parameters"]["temporal_transformer"] - out_norm) // 2
    assert per_layer * 32 + out_norm == seven["parameters"]["temporal_transformer"]
    for part in ("depth_transformer", "text_embedding", "audio_embeddings", "text_head", "audio_heads"):
        assert shaped["parameters"][part] == seven["parameters"][part]
    assert shaped["total_parameters"] == 1_521_856_512
    assert shaped["weight_bytes"]["fp32"] == 4 * 1_521_856_512  # 6.09 GB: fits a 16 GB CPU machine
