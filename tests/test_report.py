"""The HTML report: self-contained, every metric present, several runs side by side, problems listed."""

from __future__ import annotations

import base64
import json
import re
from html.parser import HTMLParser
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from vemi_eval.records import MetricRecord
from vemi_eval.report import build_report
from vemi_eval.results import RESULTS_FILE, SAMPLES_FILE, SCHEMA, SCHEMA_VERSION

VOID = {"meta", "img", "br", "hr", "link", "input", "col", "area", "base", "source", "wbr"}


class TagChecker(HTMLParser):
    """Balanced tags, and every URL-bearing attribute collected."""

    def __init__(self) -> None:
        super().__init__()
        self.stack: list[str] = []
        self.urls: list[str] = []
        self.errors: list[str] = []
        self.tags: list[str] = []

    def handle_starttag(self, tag, attrs):
        self.tags.append(tag)
        for name, value in attrs:
            if name in ("src", "href", "action", "poster", "data") and value:
                self.urls.append(value)
        if tag not in VOID:
            self.stack.append(tag)

    def handle_endtag(self, tag):
        if tag in VOID:
            return
        if not self.stack or self.stack[-1] != tag:
            self.errors.append(f"unexpected </{tag}> (open: {self.stack[-3:]})")
            return
        self.stack.pop()


def record(variant: str, metric: str, value: float | None, **kw) -> dict:
    kw.setdefault("unit", "ms")
    kw.setdefault("n", 50)
    return MetricRecord(
        suite=kw.pop("suite", "latency"), variant=variant, metric=metric, value=value, **kw
    ).to_dict()


def write_run(
    path: Path, *, status: str = "VALID", scale: float = 1.0, reasons: tuple[str, ...] = ()
) -> None:
    path.mkdir(parents=True)
    rng = np.random.default_rng(0)
    metrics, rows = [], []
    for v, f in (("baseline", 1.0), ("int8", 0.7)):
        for stage in ("encode", "lm", "decode", "total"):
            m = record(
                v,
                "frame_time_p50_ms",
                50.0 * f * scale,
                condition={"stage": stage},
                ci_low=45.0,
                ci_high=55.0,
            )
            if v == "int8":
                m.update(ratio_to_baseline=0.7, ratio_ci_low=0.6, ratio_ci_high=0.8, higher_is_better=False)
            metrics.append(m)
        for n in (1, 2, 4, 8):
            m = record(v, "frames_per_second", 10.0 * n / f, unit="frames/s", condition={"batch_size": n})
            m["higher_is_better"] = True
            metrics.append(m)
        metrics.append(
            record(v, "weight_bytes", 1e8 * f, unit="bytes", n=1, condition={"component": "total"})
        )
        for i in range(30):
            t = float(rng.uniform(40, 100) * f)
            rows.append(
                {"suite": "latency", "variant": v, "kind": "latency", "frame": i,
                 "phase": "measured" if i else "first",
                 "encode_ms": 5.0, "lm_ms": t - 15, "decode_ms": 10.0, "total_ms": t}
            )  # fmt: skip
    metrics.append(record("int8", "wer", None, status="failed", reason="ASR evaluator crashed: bad audio"))
    metrics.append(
        record("int8", "jitter_std_ms", 3.0, status="invalid", reason="40 measured frames < min_frames 200")
    )
    doc = {
        "schema": SCHEMA,
        "schema_version": SCHEMA_VERSION,
        "suite": {
            "name": "latency",
            "path": "suites/latency.toml",
            "sha256": "ab" * 32,
            "content": "[suite]\n",
        },
        "model": {"lm": "tiny", "codec": "tiny", "device": "cpu", "dtype": "float32"},
        "variants": [
            {"name": "baseline", "flags": [], "is_baseline": True},
            {"name": "int8", "flags": ["int8"], "is_baseline": False},
        ],
        "seed": 0,
        "quick": True,
        "threads": 1,
        "status": status,
        "invalid_reasons": list(reasons),
        "errors": [],
        "missing": [],
        "environment": {"git_commit": "deadbeef", "torch": "2.13.0+cpu", "packages": {"numpy": "2.4"}},
        "evaluators": {"whisper-tiny.en": {"version": "1", "weights_sha256": "cd" * 32}},
        "data": {"espeak-heldout": "ef" * 32},
        "metrics": metrics,
    }
    (path / RESULTS_FILE).write_text(json.dumps(doc))
    pd.DataFrame(rows).to_csv(path / SAMPLES_FILE, index=False)


@pytest.fixture
def two_runs(tmp_path: Path) -> list[Path]:
    a, b = tmp_path / "run-a", tmp_path / "run-b"
    write_run(a)
    write_run(b, status="INVALID", scale=1.2, reasons=("latency/int8: 40 measured frames < min_frames 200",))
    return [a, b]


def test_report_is_self_contained_and_complete(two_runs: list[Path], tmp_path: Path):
    out = build_report(two_runs, tmp_path / "out" / "report.html")
    text = out.read_text(encoding="utf-8")

    checker = TagChecker()
    checker.feed(text)
    checker.close()
    assert not checker.errors, checker.errors[:5]
    assert not checker.stack, f"unclosed tags: {checker.stack}"
    # nothing fetched: every src/href is a data URI or an in-page anchor; no scripts, stylesheets or fonts
    external = [u for u in checker.urls if not (u.startswith("data:image/png;base64,") or u.startswith("#"))]
    assert not external, external[:3]
    assert not re.search(r"""(src|href)\s*=\s*["']?\s*(https?:)?//""", text, re.I)
    assert not re.search(r"url\(\s*['\"]?(https?:)?//", text, re.I)
    assert "script" not in checker.tags and "link" not in checker.tags and "@import" not in text

    images = [u for u in checker.urls if u.startswith("data:image/png")]
    assert len(images) >= 4  # forest plots, a sweep, the latency histogram/CDF and series
    for uri in images:
        assert base64.b64decode(uri.split(",", 1)[1])[:8] == b"\x89PNG\r\n\x1a\n"

    for metric in ("frame_time_p50_ms", "frames_per_second", "weight_bytes", "wer", "jitter_std_ms"):
        assert metric in text
    assert "run-a: baseline" in text and "run-b: int8" in text  # side by side
    assert ">VALID<" in text and ">INVALID<" in text
    assert "40 measured frames &lt; min_frames 200" in text  # invalid reason in the header and the list
    assert "ASR evaluator crashed: bad audio" in text  # failures listed with their reason
    assert "frames_per_second against batch_size" in text
    assert "deadbeef" in text and "ef" * 32 in text  # environment and data hashes
    # an INVALID run opens the page: a red banner naming it and its reasons, before anything measured
    opening = r'<div class="banner INVALID" role="alert"><b>run-b: INVALID.</b>(.*?)</div>'
    banner = re.search(opening, text, re.S)
    assert banner and banner.start() < text.index('id="lead"')
    assert "40 measured frames &lt; min_frames 200" in banner.group(1)
    assert 'class="banner' not in text.replace(banner.group(0), "")  # run-a is VALID: no banner
    # a ratio says which baseline value it was taken against
    assert re.search(r'class="ratio [a-z]*">x[\d.]+ \[[\d.]+, [\d.]+\] of [\d.]+ ms<', text)
    # wide tables scroll instead of being cut
    assert '<div class="scroll"><table>' in text and ".scroll{overflow-x:auto" in text


def test_report_single_run_and_bad_input(two_runs: list[Path], tmp_path: Path):
    out = build_report(two_runs[:1], tmp_path / "single.html")
    assert "run-a" in out.read_text(encoding="utf-8")
    from vemi_eval.errors import ResultsError

    with pytest.raises(ResultsError):
        build_report([tmp_path / "nowhere"], tmp_path / "x.html")
    with pytest.raises(ValueError, match="at least one run"):
        build_report([], tmp_path / "x.html")


EVIL = "<script>alert(\"x\")</script><marquee onmouseover='y'>&"


def test_every_user_string_is_escaped(tmp_path: Path):
    """Suite name and text, variant names, metric names, conditions, reasons, skipped inputs, model and
    environment strings: none may become markup (a tag, an attribute) in the page."""
    run = tmp_path / "evil"
    write_run(run, reasons=(EVIL,))
    doc = json.loads((run / RESULTS_FILE).read_text())
    doc["suite"].update(name="s" + EVIL, content=EVIL, path=EVIL)
    doc["variants"][1]["name"] = "v" + EVIL
    doc["model"]["lm"] = EVIL
    doc["environment"]["hostname"] = EVIL
    doc["skipped_inputs"] = [{"kind": "codec", "variant": "v", "input": EVIL, "reason": EVIL}]
    doc["errors"] = [{"kind": "k", "variant": "v", "error": EVIL}]
    for m in doc["metrics"]:
        if m["variant"] == "int8":
            m["variant"] = "v" + EVIL
    doc["metrics"].append(
        record("baseline", "m" + EVIL, 1.0, condition={"c": EVIL}, status="invalid", reason=EVIL, unit=EVIL)
    )
    doc["metrics"].append(record("baseline", "f" + EVIL, None, status="failed", reason=EVIL))
    (run / RESULTS_FILE).write_text(json.dumps(doc))
    text = build_report([run], tmp_path / "r.html").read_text(encoding="utf-8")
    checker = TagChecker()
    checker.feed(text)
    assert not checker.errors and not checker.stack
    assert "script" not in checker.tags and "marquee" not in checker.tags
    assert "onmouseover" not in text.replace("onmouseover=&#39;y&#39;", "")  # only as escaped text
    assert "&lt;script&gt;alert(&#34;x&#34;)&lt;/script&gt;" in text


def test_answer_accuracy_per_engine_and_per_voice_tables():
    """The dialogue records' per-engine and per-voice counts become tables, engine first; a cell below the
    engine target (0.80) or below 0.5 for a voice is marked; noisy conditions are left out."""
    from vemi_eval.report import view

    def rec(snr, by_engine, by_voice):
        return {
            "variant": "baseline",
            "metric": "answer_accuracy",
            "condition": {"snr_db": snr, "source": "text"},
            "extra": {"by_engine": by_engine, "by_voice": by_voice},
        }

    engines = {"espeak": {"correct": 9, "turns": 10}, "festival": {"correct": 7, "turns": 10}}
    voices = {"slt": {"correct": 2, "turns": 5}, "en+f2": {"correct": 5, "turns": 5}}
    noisy = {"espeak": {"correct": 0, "turns": 10}}
    runs = [{"label": "r", "metrics": [rec("clean", engines, voices), rec(10, noisy, {})]}]
    table = view.by_engine_table(runs)
    assert table["header"] == ["user engine", "baseline: answer_accuracy"]
    cells = {row["voice"]: row["cells"][0] for row in table["rows"]}
    assert cells["espeak"] == {"text": "0.90 (9/10)", "low": False}
    assert cells["festival"] == {"text": "0.70 (7/10)", "low": True}  # below the 0.80 target
    by_voice = {row["voice"]: row["cells"][0]["low"] for row in view.by_voice_table(runs)["rows"]}
    assert by_voice == {"en+f2": False, "slt": True}
    assert view.by_engine_table([{"label": "r", "metrics": [rec("clean", None, voices)]}]) is None
