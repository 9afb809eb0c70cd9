"""`summarize limits`: the global limit of API calls in flight, kept by the
Prefect API (`flows.limits`)."""

from __future__ import annotations

import click

from pipelines.cli.common import UserError, prefect_environment


@click.command("limits")
@click.argument("backend", required=False, type=click.Choice(["openai", "anthropic"]))
@click.argument("calls", required=False, type=click.IntRange(min=1))
def limits_command(backend, calls) -> None:
    """Show or set the global limit of API calls in flight (all flows together).

    `summarize limits openai 8` sets it; `summarize limits` lists them. Flows
    only occupy the limit; it is set here or by `summarize serve --api-limit`.
    Needs the Prefect API the flows use (PREFECT_API_URL, or the local one)."""
    prefect_environment()
    from flows.limits import read_limits, set_limit

    if backend and calls:
        set_limit(backend, calls)
    elif backend:
        raise UserError("give the number of calls too, e.g. `summarize limits openai 8`")
    configured = read_limits()
    for name in ("openai", "anthropic"):
        click.echo(f"{name}: {configured.get(name, 'no limit')}")
