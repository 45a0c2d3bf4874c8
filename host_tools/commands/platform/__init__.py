"""`doorctl platform`: the reference platform. This package owns the command group; each module
adds its commands to it (`register(app)`), in the order `doorctl platform --help` lists them:
the service and its events (run), the broker's access control (broker), cards and doors
(cards). The modules never import this one, so nothing depends on import order."""

from __future__ import annotations

import typer

from host_tools.commands.platform import broker, cards, run

app = typer.Typer(help="The reference platform: ingest events from door controllers over "
                  "MQTT and keep them in SQLite (or PostgreSQL).", no_args_is_help=True)

for _module in (run, broker, cards):
    _module.register(app)


def register(root: typer.Typer) -> None:
    root.add_typer(app, name="platform")
