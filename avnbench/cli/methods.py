"""``avnbench methods``: what is installed, and what went wrong with the plugins."""

from __future__ import annotations

import json
from collections.abc import Collection

import click

from avnbench.cli import cli


def print_plugin_problems(registry, *, running: Collection[str] | None = None) -> None:
    """One line on stderr per plugin failure, refused method name, disabled item and warning.

    ``running``: the methods a command goes on to run; their problems become warnings, and a
    refused name among them is left to the command's own error. Every line is printed unwrapped
    and without rich markup, so that it stays one line whatever a plugin's message contains.
    """
    from rich.markup import escape

    from avnbench.cli.display import err_console
    from avnbench.plugins import DISABLE_ENV

    def say(label: str, text: str) -> None:
        err_console.print(f"{label} {escape(text)}" if label else escape(text), soft_wrap=True)

    label = "[red]error:[/red]" if running is None else "[yellow]warning:[/yellow]"
    after = "" if running is None else "; running the others"
    for plugin in sorted(registry.failures):
        say(label, registry.failure_message(plugin) + after)
    for name in sorted(set(registry.conflicts) - set(running or ())):
        say(label, registry.conflict_message(name))
    disabled = [f"plugin {registry.describe(p)}" for p in registry.disabled]
    disabled += [f"method {m!r}" for m in registry.disabled_methods]
    if disabled:
        say("", f"disabled by {DISABLE_ENV}: {', '.join(disabled)}")
    for warning in registry.warnings:
        say("[yellow]warning:[/yellow]", warning)


@cli.group(invoke_without_command=True)
@click.pass_context
def methods(ctx: click.Context) -> None:
    """List the registered methods (``avnbench methods show NAME`` for one)."""
    if ctx.invoked_subcommand is not None:
        return
    from rich.table import Table

    from avnbench.cli.display import console
    from avnbench.plugins import load_registry

    registry = load_registry()
    table = Table(title="avnbench methods")
    for col in ("name", "task", "plugin", "version", "presets"):
        table.add_column(col)
    for name in registry.names():
        m = registry.methods[name]
        table.add_row(name, m.card.task, m.distribution or m.plugin, m.version or "-", ", ".join(m.cls.Config.PRESETS))
    console.print(table)
    print_plugin_problems(registry)


def card_text(entry) -> str:
    """A method's card as rich text: what it is, what it builds on and needs, where it comes from."""
    from rich.markup import escape

    card = entry.card
    lines = [f"[bold]{escape(card.name)}[/bold] ({card.task})", "", escape(card.description), "",
             f"[bold]Citation:[/bold] {escape(card.citation)}"]
    if card.reference:
        lines.append(f"[bold]Reference:[/bold] {escape(card.reference)}")
    if card.classes:
        lines.append(f"[bold]Classes:[/bold] {escape(', '.join(card.classes))}")
    if card.predicts:
        lines.append(f"[bold]Predicts:[/bold] {escape(card.predicts)}")
    lines.append(f"[bold]Builds on:[/bold] {escape(', '.join(card.builds_on)) if card.builds_on else 'nothing'}")
    lines.append("[bold]Uses landmarks:[/bold] " + (
        "yes (at prediction time; only landmarks not derived from the reference label)" if card.uses_landmarks else "no"
    ))
    lines.append(f"[bold]Plugin:[/bold] {escape(entry.distribution or entry.plugin)} {escape(entry.version or '')}".rstrip())
    return "\n".join(lines)


@methods.command("show")
@click.argument("name")
def show(name: str) -> None:
    """Show a method's card, citation and config schema with its presets."""
    from rich.panel import Panel
    from rich.syntax import Syntax

    from avnbench.cli.display import console
    from avnbench.plugins import load_registry

    entry = load_registry().get(name)
    console.print(Panel(card_text(entry), title=entry.card.name))
    console.print("[bold]Config schema[/bold]")
    console.print(Syntax(json.dumps(entry.cls.Config.model_json_schema(), indent=2), "json"))
    console.print("[bold]Presets[/bold] (fields they set; the rest are defaults)")
    console.print(Syntax(json.dumps(entry.cls.Config.PRESETS, indent=2), "json"))
