"""Output of CLI commands: rich tables for people, JSON with ``--json`` for scripts."""

from __future__ import annotations

import json
import sys
from collections.abc import Mapping, Sequence
from typing import Any

from rich.console import Console
from rich.markup import escape
from rich.table import Table

console = Console()


def emit_json(data: Any) -> None:
    sys.stdout.write(json.dumps(data, indent=2, sort_keys=True) + "\n")


def key_values(title: str, rows: Mapping[str, Any]) -> None:
    table = Table(title=escape(title), show_header=False, title_justify="left")
    table.add_column(style="bold")
    table.add_column(overflow="fold")
    for key, value in rows.items():
        table.add_row(
            escape(key),
            escape("\n".join(map(str, value)) if isinstance(value, list) else str(value)),
        )
    console.print(table)


def peers_table(peers: Sequence[Mapping[str, Any]]) -> None:
    if not peers:
        console.print("no connected peers")
        return
    table = Table(title=f"{len(peers)} connected peer(s)", title_justify="left")
    table.add_column("peer id", overflow="fold")
    table.add_column("latency", justify="right")
    table.add_column("addresses", overflow="fold")
    for peer in peers:
        latency = peer.get("latency_ms")
        table.add_row(
            peer["peer_id"],
            "-" if latency is None else f"{latency:.2f} ms",
            "\n".join(peer.get("addrs", [])),
        )
    console.print(table)


def line(text: str) -> None:
    """Print plain text (no rich markup interpretation, no highlighting)."""
    console.print(text, markup=False, highlight=False, soft_wrap=True)


def error(message: str) -> None:
    Console(stderr=True).print(f"[bold red]error:[/] {escape(message)}", highlight=False, soft_wrap=True)
