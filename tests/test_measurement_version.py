"""Measurements are declared one way (``@measurement(kind, params=..., version=N)``: a MeasurementSpec),
every record carries its kind's version, and the gate does not compare values measured under two
definitions of a kind: it reports "measurement redefined", neither a regression nor a pass. Results
written before versions read as version 1. The committed quick matrix is the data; no model runs here."""

from __future__ import annotations

import ast
import copy
import json
import xml.etree.ElementTree as ET

import pytest

from tests.test_gate_ratios import QUICK, ROOT, RULES
from vemi_eval import measurements
from vemi_eval.gate import REDEFINED, REGRESSION, compare, format_table, load_rules
from vemi_eval.gate_files import junit_xml
from vemi_eval.measurements import MeasurementSpec
from vemi_eval.records import MetricRecord


@pytest.fixture(scope="module")
def matrix() -> dict:
    return json.loads(QUICK.read_text(encoding="utf-8"))  # the committed quick matrix


def _with_version(doc: dict, kind: str | None, version: int) -> dict:
    """A copy whose records of ``kind`` (every record: None) carry ``version``."""
    out = copy.deepcopy(doc)
    for m in out["metrics"]:
        if kind is None or m.get("kind") == kind:
            m["measurement_version"] = version
    return out


def _verdicts(doc: dict, base: dict) -> list[tuple[str, str, str, str]]:
    rows = compare(doc, base, load_rules(RULES)).rows
    return [(r.variant, r.metric, json.dumps(r.condition, sort_keys=True), r.verdict) for r in rows]


def test_every_kind_is_a_spec_with_its_params_and_a_version() -> None:
    kinds = measurements.load_all()
    assert kinds, "no kind registered"
    for kind, spec in kinds.items():
        assert isinstance(spec, MeasurementSpec) and spec.kind == kind
        assert isinstance(spec.params, dict) and spec.version >= 1
        assert not hasattr(spec.measure, "params"), f"{kind}: parameters declared a second way"


def test_a_spec_stamps_its_version_and_refuses_a_bad_one() -> None:
    def one(ctx) -> list[MetricRecord]:
        return [MetricRecord("s", "v", "m", 1.0, "", 1)]

    assert [r.measurement_version for r in MeasurementSpec("k", one, params={}, version=3)(None)] == [3]
    for bad in (0, -1, 1.5, True):
        with pytest.raises(ValueError, match="version must be an integer"):
            MeasurementSpec("k", one, params={}, version=bad)


def test_a_record_without_a_version_reads_as_version_1() -> None:
    old = MetricRecord("s", "v", "m", 1.0, "", 1).to_dict()
    del old["measurement_version"]
    assert MetricRecord.from_dict(old).measurement_version == 1
    again = MetricRecord.from_dict({**old, "measurement_version": 2})
    assert MetricRecord.from_dict(again.to_dict()).measurement_version == 2


def test_the_same_version_compares_as_before(matrix: dict) -> None:
    """Results written before versions (no field) read as version 1: the version-1 records without their
    field, against themselves with it, give every verdict as before."""
    assert any(m.get("measurement_version", 1) == 1 for m in matrix["metrics"])
    unstamped = copy.deepcopy(matrix)
    for m in unstamped["metrics"]:
        if m.get("measurement_version") == 1:
            del m["measurement_version"]
    before = _verdicts(matrix, matrix)
    assert _verdicts(unstamped, matrix) == before
    assert _verdicts(matrix, unstamped) == before
    assert not any(v == REDEFINED for *_, v in before)


def test_a_redefined_kind_is_reported_not_compared(matrix: dict) -> None:
    now = next(m.get("measurement_version", 1) for m in matrix["metrics"] if m.get("kind") == "codec")
    run = _with_version(matrix, "codec", now + 1)
    for m in run["metrics"]:
        if m.get("kind") == "codec" and m["value"] is not None:
            m["value"] *= 0.5  # a new definition may move every value: no regression is called on it
    result = compare(run, matrix, load_rules(RULES))
    codec_rows = [r for r in result.rows if r.metric != "run status" and _kind_of(matrix, r) == "codec"]
    assert codec_rows and all(r.verdict == REDEFINED for r in codec_rows)
    assert f"version {now + 1} here and {now} in the baseline" in codec_rows[0].reason
    assert not result.failed  # not a failure of the model
    assert any("measurement redefined since the baseline: codec" in n for n in result.notes)
    others = [(r.variant, r.metric, r.verdict) for r in result.rows if _kind_of(matrix, r) != "codec"]
    unchanged = compare(matrix, matrix, load_rules(RULES)).rows
    assert others == [(r.variant, r.metric, r.verdict) for r in unchanged if _kind_of(matrix, r) != "codec"]
    assert "measurement redefined" in format_table(result)  # shown without --all, like a regression
    cases = ET.fromstring(junit_xml(result).split("\n", 1)[1]).iter("testcase")
    redefined = [
        c for c in cases if c.find("skipped") is not None and "redefined" in c.find("skipped").get("message")
    ]
    assert len(redefined) == len(codec_rows)  # JUnit: skipped, neither a failure nor a pass


def test_a_failed_metric_of_a_redefined_kind_still_fails(matrix: dict) -> None:
    run = _with_version(matrix, "codec", 2)
    m = next(m for m in run["metrics"] if m.get("kind") == "codec" and m["status"] == "ok")
    m.update(status="failed", value=None, reason="evaluator crashed")
    rows = [r for r in compare(run, matrix).rows if r.metric == m["metric"] and r.variant == m["variant"]]
    assert any(r.verdict == REGRESSION for r in rows)


def _kind_of(doc: dict, row) -> str:
    for m in doc["metrics"]:
        if (
            m["variant"] == row.variant
            and m["metric"] == row.metric
            and (m.get("condition") or {}) == row.condition
        ):
            return m.get("kind", "")
    return ""


def test_no_kind_imports_another_kind() -> None:
    """A kind's module reads the package's libraries (common, frame_loop, _duplex...) and the lower layers,
    never another kind's module; imports inside functions count too."""
    pkg = ROOT / "vemi_eval" / "measurements"
    kinds = {p.stem for p in pkg.glob("*.py") if "@measurement(" in p.read_text(encoding="utf-8")}
    assert {"codec", "latency", "preference"} <= kinds
    for path in pkg.glob("*.py"):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.ImportFrom) and node.level == 1:
                names = [node.module] if node.module else [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and (node.module or "").startswith(
                "vemi_eval.measurements."
            ):
                names = [node.module.rsplit(".", 1)[1]]
            else:
                continue
            assert not set(names) & kinds, f"{path.name} imports the kind module {set(names) & kinds}"
