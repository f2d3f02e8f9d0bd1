"""``avnbench methods``: what is installed."""

from __future__ import annotations

import json

import click

from avnbench.cli import cli


@cli.group(invoke_without_command=True)
@click.pass_context
def methods(ctx: click.Context) -> None:
    """List the registered methods (``avnbench methods show NAME`` for one)."""
    if ctx.invoked_subcommand is not None:
        return
    from rich.table import Table

    from avnbench.cli.display import console, err_console
    from avnbench.plugins import load_registry

    registry = load_registry()
    table = Table(title="avnbench methods")
    for col in ("name", "task", "plugin", "version", "presets"):
        table.add_column(col)
    for name in registry.names():
        m = registry.methods[name]
        table.add_row(name, m.card.task, m.distribution or m.plugin, m.version or "-", ", ".join(m.cls.Config.PRESETS))
    console.print(table)
    for plugin, why in sorted(registry.failures.items()):
        err_console.print(f"[red]plugin {plugin!r} failed to load:[/red] {why}")
    if registry.disabled:
        err_console.print(f"disabled by AVNBENCH_DISABLE_PLUGINS: {', '.join(registry.disabled)}")


@methods.command("show")
@click.argument("name")
def show(name: str) -> None:
    """Show a method's card, citation and config schema with its presets."""
    from rich.panel import Panel
    from rich.syntax import Syntax

    from avnbench.cli.display import console
    from avnbench.plugins import load_registry

    entry = load_registry().get(name)
    card = entry.card
    body = (
        f"[bold]{card.name}[/bold] ({card.task})\n\n{card.description}\n\n"
        f"[bold]Citation:[/bold] {card.citation}\n"
        + (f"[bold]Reference:[/bold] {card.reference}\n" if card.reference else "")
        + (f"[bold]Classes:[/bold] {', '.join(card.classes)}\n" if card.classes else "")
        + f"[bold]Plugin:[/bold] {entry.distribution or entry.plugin} {entry.version or ''}"
    )
    console.print(Panel(body, title=card.name))
    console.print("[bold]Config schema[/bold]")
    console.print(Syntax(json.dumps(entry.cls.Config.model_json_schema(), indent=2), "json"))
    console.print("[bold]Presets[/bold] (fields they set; the rest are defaults)")
    console.print(Syntax(json.dumps(entry.cls.Config.PRESETS, indent=2), "json"))
