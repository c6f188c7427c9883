"""`vemi-eval model info NAME`: parameters, bytes and KV-cache bytes of a model configuration."""

from __future__ import annotations

import json
from typing import Any

import click

from ..errors import EXIT_OK
from ..text_table import echo_table
from .options import EXIT_CODES_HELP


@click.group("model")
def model_group() -> None:
    """Facts about a model configuration."""


@model_group.command("info", epilog=EXIT_CODES_HELP)
@click.argument("name")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
def model_info_cmd(name: str, as_json: bool) -> int:
    """Parameters by component, bytes per dtype and KV-cache bytes of NAME (preset or config JSON); for a
    .safetensors weights file, its tensors' parameters by dtype and by top-level component."""
    from reference_model import model_info

    info = model_info(name)
    if as_json:
        click.echo(json.dumps(info, indent=1, default=str))
        return EXIT_OK
    rows = [{"field": k, "value": _human(k, v)} for k, v in _flatten(info)]
    echo_table(rows, ["field", "value"], wrap=90)
    return EXIT_OK


def _flatten(d: Any, prefix: str = "") -> list[tuple[str, Any]]:
    if isinstance(d, dict):
        out: list[tuple[str, Any]] = []
        for k, v in d.items():
            out += _flatten(v, f"{prefix}.{k}" if prefix else str(k))
        return out
    return [(prefix, d)]


def _human(key: str, v: Any) -> str:
    if isinstance(v, bool) or not isinstance(v, (int, float)):
        return str(v)
    if "bytes" in key.lower() and v >= 1024:
        return f"{v:,} ({v / 2**30:.3f} GiB)" if v >= 2**30 else f"{v:,} ({v / 2**20:.2f} MiB)"
    return f"{v:,}" if isinstance(v, int) else f"{v:.6g}"
