"""CLI of the local stack: `strainwatch stack up|status|down|topics|jars`."""

from __future__ import annotations

import orjson
import typer

from strainwatch.stack.procs import StackError

stack_app = typer.Typer(no_args_is_help=True, help="Local infrastructure for the demo and the tests.")


def _echo(obj: object) -> None:
    typer.echo(orjson.dumps(obj, option=orjson.OPT_INDENT_2).decode())


@stack_app.command("up")
def up(
    broker: str = typer.Option(
        None, "--broker", help="tansu (default, in memory) or kafka (Apache Kafka 4.4)"
    ),
) -> None:
    """Start the broker, InfluxDB and Mosquitto (if not running), create topics and the database."""
    from strainwatch.stack.manager import Stack, StackConfig

    if broker is not None and broker not in ("tansu", "kafka"):
        raise typer.BadParameter(f"unknown broker {broker!r}: choose tansu or kafka", param_hint="--broker")
    try:
        _echo(Stack(StackConfig.from_settings(broker)).up())  # type: ignore[arg-type]
    except StackError as error:
        typer.echo(f"stack up failed: {error}", err=True)
        raise typer.Exit(1) from None


@stack_app.command("status")
def status() -> None:
    """Show what runs, with pids, ports and logs."""
    from strainwatch.stack.manager import Stack, StackConfig

    _echo(Stack(StackConfig.from_settings()).status())


@stack_app.command("down")
def down() -> None:
    """Stop everything `stack up` started in the state directory."""
    from strainwatch.stack.manager import Stack, StackConfig

    stopped = Stack(StackConfig.from_settings()).down()
    typer.echo(f"stopped: {', '.join(stopped) if stopped else 'nothing was running'}")


@stack_app.command("topics")
def topics(
    bootstrap: str = typer.Option(None, help="host:port of a broker (default STRAINWATCH_KAFKA_BOOTSTRAP)"),
    partitions: int = typer.Option(None, min=1, help="partitions of per-worker topics"),
) -> None:
    """Create strainwatch's topics on any broker (also the deploy/ init job)."""
    from strainwatch.config import get_settings
    from strainwatch.stack.topics import ensure_topics

    s = get_settings()
    try:
        _echo(
            ensure_topics(
                bootstrap or s.kafka_bootstrap,
                partitions or s.posture_partitions,
                int(s.raw_retention_days * 86_400_000),
            )
        )
    except StackError as error:
        typer.echo(str(error), err=True)
        raise typer.Exit(1) from None


@stack_app.command("jars")
def jars() -> None:
    """Fetch Apache Kafka's jars from Maven Central (once per machine)."""
    from strainwatch.stack.components import ensure_kafka_jars

    try:
        typer.echo(str(ensure_kafka_jars()))
    except StackError as error:
        typer.echo(str(error), err=True)
        raise typer.Exit(1) from None


def register(app: typer.Typer) -> None:
    app.add_typer(stack_app, name="stack")
