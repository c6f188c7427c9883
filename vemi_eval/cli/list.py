"""`vemi-eval list suites|flags`: the suites, and the enhancement registry with its flags."""

from __future__ import annotations

import json
from typing import Any

import click

from ..errors import EXIT_OK, one_line
from ..text_table import echo_table
from .options import EXIT_CODES_HELP


@click.command("list", epilog=EXIT_CODES_HELP)
@click.argument("what", type=click.Choice(["suites", "flags"]))
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
def list_cmd(what: str, as_json: bool) -> int:
    """List the suites (suites/*.toml) or the enhancement registry and its flags."""
    if what == "suites":
        rows = _suite_rows()
        if as_json:
            click.echo(json.dumps(rows, indent=1))
        else:
            echo_table(rows, ["name", "kinds", "variants", "description"])
        return EXIT_OK
    from ..registry_listing import flag_table, registry_table

    entries, flags = registry_table(), flag_table()
    if as_json:
        click.echo(json.dumps({"enhancements": entries, "flags": flags}, indent=1))
        return EXIT_OK
    rows = []
    for e in entries:
        claims = "; ".join(c["text"] for c in e["claims"])
        status = "yes" if e["status"] == "implemented" else "no"
        rows.append(
            {
                "id": e["id"],
                "title": e["title"],
                "priority": e["priority"],
                "flags": ",".join(e["flags"]) or "-",
                "implemented": status,
                "claims": claims,
                "suites": ",".join(e["suites"]) or "-",
            }
        )
    click.echo(f"The document's {len(entries)} enhancements:")
    echo_table(rows, ["id", "title", "priority", "flags", "implemented", "suites", "claims"], wrap=90)
    missing = [e for e in entries if e["status"] != "implemented"]
    if missing:
        click.echo(f"\nNot implemented here ({len(missing)}), and why:")
        for e in missing:
            click.echo(f"  {e['id']}  {e['reason']}")
    click.echo(f"\nFlags ({len(flags)}, each implemented; write name or name=value, comma-separated):")
    echo_table(
        [
            {
                "flag": f["name"] + (f"={f['default']}" if f["default"] else ""),
                "enh": f["enhancement"] or "-",
                "stage": f["stage"],
                "cuda": "yes" if f["requires_cuda"] else "",
                "summary": f["summary"],
            }
            for f in flags
        ],
        ["flag", "enh", "stage", "cuda", "summary"],
        wrap=80,
    )
    return EXIT_OK


def _suite_rows() -> list[dict[str, Any]]:
    from ..registry_listing import _AnyKind
    from ..suites import SuiteError, available_suites, load_suite

    rows = []
    for name, path in sorted(available_suites().items()):
        try:
            s = load_suite(str(path), known_kinds=_AnyKind(), check_flags=False)
            rows.append(
                {
                    "name": name,
                    "path": str(path),
                    "kinds": ",".join(s.kinds),
                    "variants": ",".join(v.name for v in s.variants),
                    "description": s.description,
                }
            )
        except SuiteError as exc:
            rows.append(
                {
                    "name": name,
                    "path": str(path),
                    "kinds": "",
                    "variants": "",
                    "description": f"INVALID: {one_line(exc)}",
                }
            )
    return rows
