"""What every command module of the CLI shares: the global settings, the client, ``--json``."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import click
from pydantic import BaseModel

from accel_node.home import NodeHome

if TYPE_CHECKING:
    from accel_node.client import Client

DEFAULT_TIMEOUT_S = 30.0

json_option = click.option("--json", "as_json", is_flag=True, help="Print JSON instead of a table.")


@dataclass(frozen=True)
class Settings:
    home: NodeHome
    log_format: str | None
    log_level: str | None


def settings(ctx: click.Context) -> Settings:
    obj = ctx.find_root().obj
    assert isinstance(obj, Settings)
    return obj


def client(ctx: click.Context, timeout_s: float = DEFAULT_TIMEOUT_S) -> Client:
    """The typed client of the daemon on the selected home (imported here: ``run`` never needs it)."""
    from accel_node.client import Client

    return Client.for_home(settings(ctx).home, timeout_s=timeout_s)


def dump(model: BaseModel) -> dict[str, Any]:
    """A response model as the JSON the daemon sent (for --json and the renderers)."""
    return model.model_dump(mode="json")
