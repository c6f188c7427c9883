"""model_info: parameter counts against the published 7B figure and moshi's own module tree."""

from __future__ import annotations

import json

import pytest
import torch

from reference_model import ConfigError
from reference_model.config import PRESETS_DIR
from reference_model.info import model_info


def test_moshi_7b_total_and_components() -> None:
    info = model_info("moshi-7b")
    assert info["total_parameters"] == 7_687_729_152
    assert sum(info["parameters"].values()) == info["total_parameters"]
    assert info["parameters"]["temporal_transformer"] == 6_576_934_912
    assert info["weight_bytes"]["bf16"] == 2 * 7_687_729_152
    assert info["weight_bytes"]["int4"] == 7_687_729_152 // 2
    # 32 layers x (K + V) x 32 heads x 128 x 3000 positions x 2 bytes, plus the depformer's 8 slots.
    temporal = 32 * 2 * 32 * 128 * 3000 * 2
    depth = 6 * 2 * 16 * 64 * 8 * 2
    assert info["kv_cache_bytes_per_stream"]["bf16"] == temporal + depth


@pytest.mark.parametrize("preset", ["moshi-2b", "tiny"])
def test_total_matches_moshi_module_tree(preset: str) -> None:
    from moshi.models.loaders import get_moshi_lm

    name = {"moshi-2b": "moshi-2b.json", "tiny": "tiny_lm.json"}[preset]
    cfg = json.loads((PRESETS_DIR / name).read_text())
    ref = get_moshi_lm(None, lm_kwargs=cfg, device="meta", dtype=torch.bfloat16)
    assert model_info(preset)["total_parameters"] == sum(p.numel() for p in ref.parameters())


def test_bad_config_is_a_config_error() -> None:
    with pytest.raises(ConfigError):
        model_info("no-such-model")


def _config(num_layers: int, depformer_num_layers: int | None = None) -> dict:
    cfg = json.loads((PRESETS_DIR / "tiny_lm.json").read_text())
    cfg["num_layers"] = num_layers
    if depformer_num_layers is not None:
        cfg["depformer_num_layers"] = depformer_num_layers
    return cfg


def test_counts_equal_a_full_build_of_every_layer() -> None:
    from reference_model.config import load_lm_config
    from reference_model.lm.model import LMModel

    cfg = _config(5, 3)
    with torch.device("meta"):
        full = LMModel(load_lm_config(cfg))
    info = model_info(cfg)
    assert info == model_info(full)  # the one-layer stand-in counts what every layer built would
    assert info["kv_cache"]["layers"] == 5


def test_a_million_layers_are_described_without_building_them(monkeypatch) -> None:
    # `model info` on num_layers = 1,000,000 built a million modules (minutes); it builds one of each
    from reference_model.lm import transformer

    built = []
    init = transformer.TransformerLayer.__init__

    def counting(self, *args, **kwargs):
        built.append(1)
        if len(built) > 10:
            raise AssertionError("model_info builds every layer of the config")
        init(self, *args, **kwargs)

    monkeypatch.setattr(transformer.TransformerLayer, "__init__", counting)
    one, two, big = (model_info(_config(n))["total_parameters"] for n in (1, 2, 1_000_000))
    assert big == one + (1_000_000 - 1) * (two - one)
    assert model_info(_config(1_000_000))["kv_cache"]["layers"] == 1_000_000
