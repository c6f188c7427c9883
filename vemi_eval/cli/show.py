"""`vemi-eval show RUN_DIR`: every record of a finished run, then its summary (what `run` prints too)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import click

from ..errors import EXIT_OK
from ..text_table import echo_table
from .options import EXIT_CODES_HELP


def print_summary(doc: dict[str, Any], out_dir: Path, report: Path | None) -> None:
    """What the run found, in at most 40 lines: status and reasons, claims, headline figures, the report."""
    from ..run_summary import summary_lines

    click.echo("\n".join(summary_lines(doc, out_dir, report)))


@click.command("show", epilog=EXIT_CODES_HELP)
@click.argument("run_dir", type=click.Path())
def show_cmd(run_dir: str) -> int:
    """Every record of a finished run (value, interval, ratio to the baseline, status), then its summary."""
    from ..results import read_results, results_path

    doc = read_results(run_dir)
    folder = results_path(run_dir).parent
    print_metrics(doc.get("metrics", []))
    click.echo("")
    report = folder / "report.html"
    print_summary(doc, folder, report if report.is_file() else None)
    return EXIT_OK


def print_metrics(metrics: list[dict[str, Any]]) -> None:
    from ..run_summary import baseline_value, number

    first = metrics[0]["variant"] if metrics else ""
    base = {f"{m['metric']}|{json.dumps(m.get('condition') or {}, sort_keys=True, default=str)}": m
            for m in metrics if m["variant"] == first}  # fmt: skip
    rows = []
    for m in metrics:

        def f(x: Any) -> str:
            return "" if x is None else f"{x:.4g}"

        ci = f"[{f(m['ci_low'])}, {f(m['ci_high'])}]" if m.get("ci_low") is not None else ""
        ratio = ""
        if m.get("ratio_to_baseline") is not None:
            ratio = f"x{m['ratio_to_baseline']:.3g}"
            if m.get("ratio_ci_low") is not None:
                ratio += f" [{m['ratio_ci_low']:.3g}, {m['ratio_ci_high']:.3g}]"
            against = baseline_value(m, base)  # the interleaved twin where the ratio was paired
            if against is not None:
                ratio += f" of {number(against, m.get('unit') or '')}"
        cond = ",".join(f"{k}={v}" for k, v in (m.get("condition") or {}).items())
        value = f(m.get("value")) + (f" {m['unit']}" if m.get("unit") and m.get("value") is not None else "")
        rows.append(
            {
                "variant": m["variant"],
                "metric": m["metric"],
                "condition": cond,
                "value": value,
                "95% CI": ci,
                "vs baseline": ratio,
                "status": m["status"] + (f": {m['reason']}" if m.get("reason") else ""),
            }
        )
    if rows:
        echo_table(
            rows, ["variant", "metric", "condition", "value", "95% CI", "vs baseline", "status"], wrap=60
        )
