"""`vemi-eval matrix RUN_DIR...`: the document's priority matrix beside what the runs measured."""

from __future__ import annotations

import json

import click

from ..errors import EXIT_OK
from ..text_table import echo_table
from .options import EXIT_CODES_HELP


@click.command("matrix", epilog=EXIT_CODES_HELP)
@click.argument("run_dirs", nargs=-1, required=True, type=click.Path())
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
@click.option(
    "--markdown",
    is_flag=True,
    help="One Markdown table row per measured claim and context (the table of docs/results.md).",
)
def matrix_cmd(run_dirs: tuple[str, ...], as_json: bool, markdown: bool) -> int:
    """The document's priority matrix beside what the runs measured (claims met, short, inconclusive)."""
    from ..registry import priority_matrix, priority_order
    from ..report.matrix_markdown import matrix_markdown
    from ..results import read_results
    from ..run_summary import claim_lines, interval

    if as_json and markdown:
        raise click.UsageError("--json and --markdown exclude each other")
    rows = priority_matrix([read_results(d) for d in run_dirs])
    order = priority_order()  # the document's priority-matrix order, as the report leads with it
    rows.sort(key=lambda r: order.index(r["id"]))
    if as_json:
        click.echo(json.dumps(rows, indent=1))
        return EXIT_OK
    if markdown:
        click.echo(matrix_markdown(rows))
        return EXIT_OK
    out = []
    for r in rows:
        for c in r["claims"]:
            base = {
                "id": r["id"],
                "title": r["title"],
                "priority": r["priority"],
                "status": r["status"],
                "claim": c["text"],
                "bar": "" if c["threshold"] is None else f"{c['threshold']:.3g}",
            }
            if not c["rows"]:
                out.append({**base, "context": "", "measured": "", "MDE": "", "verdict": c["verdict"]})
            for row in c["rows"]:  # one line per context: values of two contexts are never one range
                first = row["measurements"][0]  # the first with its interval, then how many more
                more = len(row["measurements"]) - 1
                measured = f"{first['measured']:.3g}{interval(first.get('ci_low'), first.get('ci_high'), 3)}"
                measured += f" (+{more})" if more else ""
                mde = "" if row["mde"] is None else f"{row['mde']:.0%}"
                out.append({**base, "context": row["context"], "measured": measured, "MDE": mde,
                            "verdict": row["verdict"]})  # fmt: skip
    # the verdict keeps its reason and the context comes last, whole: neither is cut
    cols = ["id", "title", "priority", "status", "claim", "bar", "measured", "MDE", "verdict", "context"]
    echo_table(out, cols)
    click.echo("")
    click.echo(claim_lines(rows)[0])
    return EXIT_OK
