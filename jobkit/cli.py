"""The `jobkit` command."""

from __future__ import annotations

import dataclasses
import importlib
import os
import sys
from urllib.parse import urlsplit, urlunsplit

import click

from jobkit.config import configure, default_config_path, load_settings, parse_queue
from jobkit.errors import ConfigError

__all__ = ["main"]


@click.group()
@click.version_option(package_name="jobkit")
def main() -> None:
    """jobkit: background jobs on Celery + Redis, the Rails way."""


@main.command(context_settings={"ignore_unknown_options": True})
@click.option("-C", "--config", "config_path", type=click.Path(dir_okay=False),
              help="YAML settings file (config/jobkit.yml).")
@click.option("-e", "--environment", help="Section of the file to use (default: JOBKIT_ENV, "
              "APP_ENV, then development).")
@click.option("-c", "--concurrency", type=click.IntRange(min=1), help="Processes or threads.")
@click.option("-q", "--queue", "queues", multiple=True, metavar="QUEUE[,WEIGHT]",
              help="A queue to consume; repeat for more (default: the configured queues).")
@click.option("-r", "--require", multiple=True, metavar="MODULE", help="Import at start.")
@click.option("-P", "--pool", type=click.Choice(["prefork", "threads", "solo"]))
@click.option("-l", "--loglevel", default="INFO", show_default=True)
@click.option("-n", "--hostname", help="Node name (Celery's %h/%n forms work).")
@click.argument("celery_args", nargs=-1, type=click.UNPROCESSED)
def worker(config_path: str | None, environment: str | None, concurrency: int | None,
           queues: tuple[str, ...], require: tuple[str, ...], pool: str | None, loglevel: str,
           hostname: str | None, celery_args: tuple[str, ...]) -> None:
    """Run a worker: a Celery worker on jobkit's app. Extra arguments go to Celery."""
    try:
        settings = configure(
            config_path, environment, concurrency=concurrency, pool=pool,
            queues=[parse_queue(q, "-q") for q in queues] or None,
        )
    except ConfigError as exc:
        raise click.ClickException(str(exc)) from None
    sys.path.insert(0, os.getcwd())  # jobs of the app in the current directory, as Celery's -A
    for module in (*settings.require, *require):
        try:
            importlib.import_module(module)
        except ImportError as exc:
            raise click.ClickException(f"cannot import {module!r} (from -r / require): {exc}"
                                       ) from None
    from jobkit.celery_app import app, apply_settings

    apply_settings(app, settings)
    argv = ["worker", "-Q", ",".join(settings.queue_names), "-c", str(settings.concurrency),
            "-P", settings.pool, "-l", loglevel]
    if hostname:
        argv += ["-n", hostname]
    app.worker_main(argv=[*argv, *celery_args])


@main.group()
def config() -> None:
    """Inspect settings."""


@config.command("check")
@click.option("-C", "--config", "config_path", type=click.Path(dir_okay=False),
              help="YAML settings file (default: JOBKIT_CONFIG, then config/jobkit.yml).")
@click.option("-e", "--environment", help="Environment section to resolve.")
def config_check(config_path: str | None, environment: str | None) -> None:
    """Validate the settings and print them as resolved (secrets in URLs masked)."""
    path = config_path or default_config_path()
    try:
        settings = load_settings(path, environment)
    except ConfigError as exc:
        click.echo(f"error: {exc}", err=True)
        sys.exit(1)
    click.echo(f"# {path or '(no file: defaults and environment)'}, "
               f"environment {settings.environment}: OK")
    for field in dataclasses.fields(settings):
        value = getattr(settings, field.name)
        if field.name == "redis_url":
            value = mask_url(value)
        elif field.name == "queues":
            value = ", ".join(f"{name}" if weight == 1 else f"{name},{weight}"
                              for name, weight in value)
        click.echo(f"{field.name}: {value}")


def mask_url(url: str) -> str:
    """The URL with any password replaced by ****."""
    parts = urlsplit(url)
    if not parts.password:
        return url
    netloc = parts.netloc.replace(f":{parts.password}@", ":****@", 1)
    return urlunsplit(parts._replace(netloc=netloc))
