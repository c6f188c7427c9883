"""The model spec that flows suite -> runner -> variant models -> results.json is a frozen ModelSpec, and
results.json's "model" keeps the keys it had as a dict (issue 35)."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import pytest

from vemi_eval.measurements import MeasurementSpec
from vemi_eval.suites import parse_suite
from vemi_eval.variant_models import ModelSpec, model_spec, variant_models

ROOT = Path(__file__).resolve().parents[1]
KINDS = {"weights": MeasurementSpec("weights", lambda ctx: [], params={})}


def _suite(model: str = "", variants: str = "") -> object:
    head = '[suite]\nname = "s"\ndescription = "d"\n'
    text = f'{head}[model]\n{model}\n[weights]\n[[variants]]\nname = "baseline"\n{variants}'
    return parse_suite(text, known_kinds=KINDS)


def test_results_model_keeps_the_keys_of_the_committed_quick_matrix() -> None:
    committed = json.loads((ROOT / "reports" / "matrix-tiny-quick" / "results.json").read_text())["model"]
    spec = model_spec(_suite())
    assert list(spec.to_dict()) == list(committed)  # the same keys, in the same order
    for key in ("lm", "codec", "lm_checkpoint", "codec_checkpoint", "dtype", "device"):
        assert spec.to_dict()[key] == committed[key]
    assert set(spec.to_dict()["weights"]) == {"lm", "codec"}


def test_sampling_settings_are_written_and_built_only_when_the_suite_sets_them() -> None:
    plain = model_spec(_suite())
    assert not {"temp", "top_k"} & set(plain.to_dict()) and "temp" not in plain.duplex_fields()
    hot = model_spec(_suite("temp = 0.5\ntop_k = 10"))
    assert hot.to_dict()["temp"] == 0.5 and hot.duplex_fields()["top_k"] == 10
    assert "weights" not in hot.duplex_fields()  # provenance is no field of the model that is built


def test_the_command_line_overrides_the_suite_and_the_spec_cannot_change_afterwards() -> None:
    spec = model_spec(_suite('dtype = "float32"'), preset="tiny", dtype="bfloat16", checkpoint="random")
    assert (spec.lm, spec.codec, spec.dtype, spec.lm_checkpoint) == ("tiny", "tiny", "bfloat16", "random")
    assert spec.weights is not None and spec.weights.lm == "random (asked for)"
    with pytest.raises(dataclasses.FrozenInstanceError):
        spec.lm = "moshi-7b"  # type: ignore[misc]


def test_a_variant_gets_a_spec_of_its_own_and_the_base_is_untouched() -> None:
    suite = _suite(variants='[[variants]]\nname = "bf16"\ndtype = "bfloat16"\n')
    base = model_spec(suite)
    models = variant_models(list(suite.variants), base)
    assert models["baseline"].spec == base and base.dtype == "float32"
    assert isinstance(models["bf16"].spec, ModelSpec) and models["bf16"].spec.dtype == "bfloat16"
    assert models["bf16"].spec.weights == base.weights  # found again for the variant's own fields
